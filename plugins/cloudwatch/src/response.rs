//! CloudWatch's XML answers (Query protocol): `GetMetricDataResponse`
//! as the list of `MetricDataResult`s Argo's conditions read (Go's field
//! names: `Id`, `Label`, `StatusCode`, `Timestamps`, `Values`,
//! `Messages`), and `ErrorResponse` as its code and message.

use roxmltree::{Document, Node};
use serde_json::{Value, json};

/// A successful answer.
#[derive(Debug, PartialEq)]
pub struct MetricData {
    /// One entry per returned query.
    pub results: Vec<Value>,
    /// The call's own messages (`Code: Value`).
    pub messages: Vec<String>,
    /// Whether more pages exist (Argo reads only the first, and so does
    /// Weir).
    pub next_token: bool,
}

/// CloudWatch's error answer.
#[derive(Debug, PartialEq)]
pub struct AwsError {
    /// e.g. `InvalidParameterValue`, `SignatureDoesNotMatch`.
    pub code: String,
    /// Its message.
    pub message: String,
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text(node: Option<Node<'_, '_>>) -> Option<String> {
    node.and_then(|n| n.text()).map(|t| t.trim().to_string())
}

fn members<'a, 'i>(node: Option<Node<'a, 'i>>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.into_iter().flat_map(|n| {
        n.children()
            .filter(|c| c.is_element() && c.tag_name().name() == "member")
    })
}

fn messages(node: Option<Node<'_, '_>>) -> Vec<Value> {
    members(node)
        .map(|m| json!({"Code": text(child(m, "Code")), "Value": text(child(m, "Value"))}))
        .collect()
}

/// Parses a `GetMetricDataResponse`.
pub fn metric_data(xml: &str) -> Result<MetricData, String> {
    let doc = Document::parse(xml).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if root.tag_name().name() != "GetMetricDataResponse" {
        return Err(format!(
            "the answer is a {}, not a GetMetricDataResponse",
            root.tag_name().name()
        ));
    }
    let result = child(root, "GetMetricDataResult")
        .ok_or("GetMetricDataResponse has no GetMetricDataResult")?;
    let mut results = Vec::new();
    for member in members(child(result, "MetricDataResults")) {
        let mut values = Vec::new();
        for v in members(child(member, "Values")) {
            let t = text(Some(v)).unwrap_or_default();
            let number: f64 = t
                .parse()
                .map_err(|_| format!("value {t:?} is not a number"))?;
            values.push(
                serde_json::Number::from_f64(number)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
            );
        }
        let timestamps: Vec<Value> = members(child(member, "Timestamps"))
            .map(|t| Value::from(text(Some(t)).unwrap_or_default()))
            .collect();
        results.push(json!({
            "Id": text(child(member, "Id")),
            "Label": text(child(member, "Label")),
            "StatusCode": text(child(member, "StatusCode")),
            "Timestamps": timestamps,
            "Values": values,
            "Messages": messages(child(member, "Messages")),
        }));
    }
    let messages = messages(child(result, "Messages"))
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["Code"].as_str().unwrap_or(""),
                m["Value"].as_str().unwrap_or("")
            )
        })
        .collect();
    Ok(MetricData {
        results,
        messages,
        next_token: text(child(result, "NextToken")).is_some_and(|t| !t.is_empty()),
    })
}

/// Parses an `ErrorResponse`, if the text is one.
pub fn aws_error(xml: &str) -> Option<AwsError> {
    let doc = Document::parse(xml).ok()?;
    let error = child(doc.root_element(), "Error")?;
    Some(AwsError {
        code: text(child(error, "Code")).unwrap_or_default(),
        message: text(child(error, "Message")).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_in_argos_field_names() {
        let xml = r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">
  <GetMetricDataResult>
    <MetricDataResults>
      <member>
        <Id>rate</Id><Label>rate</Label><StatusCode>Complete</StatusCode>
        <Timestamps><member>2026-12-01T00:05:00Z</member><member>2026-12-01T00:00:00Z</member></Timestamps>
        <Values><member>0.004</member><member>0.01</member></Values>
        <Messages/>
      </member>
    </MetricDataResults>
    <Messages><member><Code>MaxQueryTimeRangeExceed</Code><Value>clipped</Value></member></Messages>
  </GetMetricDataResult>
  <ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>
</GetMetricDataResponse>"#;
        let data = metric_data(xml).expect("parse");
        assert_eq!(
            data.results,
            vec![
                json!({"Id": "rate", "Label": "rate", "StatusCode": "Complete",
                "Timestamps": ["2026-12-01T00:05:00Z", "2026-12-01T00:00:00Z"],
                "Values": [0.004, 0.01], "Messages": []})
            ]
        );
        assert_eq!(data.messages, vec!["MaxQueryTimeRangeExceed: clipped"]);
        assert!(!data.next_token);
    }

    #[test]
    fn errors_and_garbage() {
        let error = r#"<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>bad signature</Message></Error><RequestId>x</RequestId></ErrorResponse>"#;
        assert_eq!(
            aws_error(error),
            Some(AwsError {
                code: "SignatureDoesNotMatch".into(),
                message: "bad signature".into()
            })
        );
        assert!(metric_data(error).is_err());
        assert!(metric_data("not xml").is_err());
        let bad_value = "<GetMetricDataResponse><GetMetricDataResult><MetricDataResults><member><Values><member>lots</member></Values></member></MetricDataResults></GetMetricDataResult></GetMetricDataResponse>";
        assert!(metric_data(bad_value).is_err_and(|e| e.contains("\"lots\"")));
    }
}
