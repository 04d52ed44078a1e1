//! Argo Rollouts' `cloudWatch` block and the `GetMetricData` request it
//! becomes, in CloudWatch's Query protocol (form-encoded parameters).

use serde::Deserialize;
use serde_json::Value;
use weir_plugin_sdk::http::encode_pairs;

/// CloudWatch's own limit on queries per `GetMetricData` call.
pub const MAX_QUERIES: usize = 500;

/// `provider.cloudWatch`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The window, ending now (default `5m`).
    #[serde(default)]
    pub interval: Option<String>,
    /// The queries, in the order given.
    pub metric_data_queries: Vec<DataQuery>,
}

/// One `metricDataQueries` entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataQuery {
    /// The query's id (a lowercase letter first), used in expressions.
    pub id: String,
    /// Metric math or a Metrics Insights query.
    #[serde(default)]
    pub expression: Option<String>,
    /// A label for the result.
    #[serde(default)]
    pub label: Option<String>,
    /// One metric and a statistic over it.
    #[serde(default)]
    pub metric_stat: Option<MetricStat>,
    /// The period of an `expression`, in seconds.
    #[serde(default)]
    pub period: Option<Value>,
    /// `false`: an intermediate result, not returned.
    #[serde(default)]
    pub return_data: Option<bool>,
}

/// `metricStat`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricStat {
    /// The metric.
    pub metric: Metric,
    /// The period in seconds (an int, or a string holding one).
    #[serde(default)]
    pub period: Option<Value>,
    /// `Sum`, `Average`, `p99`...
    pub stat: String,
    /// A standard unit such as `Count`.
    #[serde(default)]
    pub unit: Option<String>,
}

/// `metricStat.metric`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metric {
    /// Name/value pairs that pick one series.
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
    /// The metric's name.
    pub metric_name: String,
    /// Its namespace (`AWS/ApplicationELB`, `app`...).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// One dimension.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    /// The dimension's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A period: seconds as an int or a string holding one (Argo's
/// IntOrString); anything else is named.
fn period(value: &Value, at: &str) -> Result<u64, String> {
    let seconds = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    seconds
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{at} {value} is not a number of seconds (at least 1)"))
}

/// Checks the block as CloudWatch would, before anything is sent.
pub fn check(config: &Config) -> Result<(), String> {
    if config.metric_data_queries.is_empty() {
        return Err("metricDataQueries is empty".into());
    }
    if config.metric_data_queries.len() > MAX_QUERIES {
        return Err(format!(
            "metricDataQueries has {} entries; CloudWatch takes at most {MAX_QUERIES}",
            config.metric_data_queries.len()
        ));
    }
    for (i, q) in config.metric_data_queries.iter().enumerate() {
        let at = format!("metricDataQueries[{i}]");
        if !q.id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            || !q.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "{at}.id {:?} must start with a lowercase letter and hold only letters, digits and _",
                q.id
            ));
        }
        match (&q.expression, &q.metric_stat) {
            (Some(_), Some(_)) => {
                return Err(format!("{at}: set expression or metricStat, not both"));
            }
            (None, None) => return Err(format!("{at}: set expression or metricStat")),
            (None, Some(stat)) => {
                let Some(p) = &stat.period else {
                    return Err(format!("{at}.metricStat.period is required"));
                };
                period(p, &format!("{at}.metricStat.period"))?;
            }
            (Some(_), None) => {
                if let Some(p) = &q.period {
                    period(p, &format!("{at}.period"))?;
                }
            }
        }
    }
    Ok(())
}

/// The form-encoded `GetMetricData` body for the window `start..end`
/// (ISO 8601), every query as `MetricDataQueries.member.N.…`.
pub fn form_body(config: &Config, start: &str, end: &str) -> Result<String, String> {
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), "GetMetricData".into()),
        ("Version".into(), "2010-08-01".into()),
        ("StartTime".into(), start.into()),
        ("EndTime".into(), end.into()),
    ];
    for (i, q) in config.metric_data_queries.iter().enumerate() {
        let at = format!("metricDataQueries[{i}]");
        let member = format!("MetricDataQueries.member.{}", i + 1);
        params.push((format!("{member}.Id"), q.id.clone()));
        if let Some(e) = &q.expression {
            params.push((format!("{member}.Expression"), e.clone()));
        }
        if let Some(l) = &q.label {
            params.push((format!("{member}.Label"), l.clone()));
        }
        if let Some(p) = &q.period {
            params.push((
                format!("{member}.Period"),
                period(p, &format!("{at}.period"))?.to_string(),
            ));
        }
        if let Some(r) = q.return_data {
            params.push((format!("{member}.ReturnData"), r.to_string()));
        }
        if let Some(stat) = &q.metric_stat {
            let s = format!("{member}.MetricStat");
            if let Some(ns) = &stat.metric.namespace {
                params.push((format!("{s}.Metric.Namespace"), ns.clone()));
            }
            params.push((
                format!("{s}.Metric.MetricName"),
                stat.metric.metric_name.clone(),
            ));
            for (j, d) in stat.metric.dimensions.iter().enumerate() {
                let dim = format!("{s}.Metric.Dimensions.member.{}", j + 1);
                params.push((format!("{dim}.Name"), d.name.clone()));
                params.push((format!("{dim}.Value"), d.value.clone()));
            }
            if let Some(p) = &stat.period {
                params.push((
                    format!("{s}.Period"),
                    period(p, &format!("{at}.metricStat.period"))?.to_string(),
                ));
            }
            params.push((format!("{s}.Stat"), stat.stat.clone()));
            if let Some(u) = &stat.unit {
                params.push((format!("{s}.Unit"), u.clone()));
            }
        }
    }
    Ok(encode_pairs(&params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml_json: &str) -> Config {
        serde_json::from_str(yaml_json).expect("config")
    }

    #[test]
    fn argo_docs_example_becomes_the_query_protocol_form() {
        let c = config(
            r#"{"interval": "30m", "metricDataQueries": [
                {"id": "rate", "expression": "errors / requests"},
                {"id": "errors", "metricStat": {"metric": {"namespace": "app", "metricName": "errors",
                  "dimensions": [{"name": "Service", "value": "cart api"}]},
                  "period": "300", "stat": "Sum", "unit": "Count"}, "returnData": false}]}"#,
        );
        assert_eq!(check(&c), Ok(()));
        let body = form_body(&c, "2026-12-01T00:00:00Z", "2026-12-01T00:30:00Z").expect("body");
        assert_eq!(
            body,
            "Action=GetMetricData&Version=2010-08-01&StartTime=2026-12-01T00%3A00%3A00Z&EndTime=2026-12-01T00%3A30%3A00Z\
&MetricDataQueries.member.1.Id=rate&MetricDataQueries.member.1.Expression=errors%20%2F%20requests\
&MetricDataQueries.member.2.Id=errors&MetricDataQueries.member.2.ReturnData=false\
&MetricDataQueries.member.2.MetricStat.Metric.Namespace=app&MetricDataQueries.member.2.MetricStat.Metric.MetricName=errors\
&MetricDataQueries.member.2.MetricStat.Metric.Dimensions.member.1.Name=Service\
&MetricDataQueries.member.2.MetricStat.Metric.Dimensions.member.1.Value=cart%20api\
&MetricDataQueries.member.2.MetricStat.Period=300&MetricDataQueries.member.2.MetricStat.Stat=Sum\
&MetricDataQueries.member.2.MetricStat.Unit=Count"
        );
    }

    #[test]
    fn what_cloudwatch_would_refuse_is_named_first() {
        let cases = [
            (r#"{"metricDataQueries": []}"#, "is empty"),
            (
                r#"{"metricDataQueries": [{"id": "Rate", "expression": "1"}]}"#,
                "lowercase",
            ),
            (
                r#"{"metricDataQueries": [{"id": "r"}]}"#,
                "set expression or metricStat",
            ),
            (
                r#"{"metricDataQueries": [{"id": "r", "metricStat": {"metric": {"metricName": "m"}, "stat": "Sum"}}]}"#,
                "metricStat.period is required",
            ),
            (
                r#"{"metricDataQueries": [{"id": "r", "metricStat": {"metric": {"metricName": "m"}, "stat": "Sum", "period": "5m"}}]}"#,
                "not a number of seconds",
            ),
        ];
        for (json, expected) in cases {
            let error = check(&config(json)).expect_err(json);
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
