//! InfluxDB's annotated CSV (the answer of `/api/v2/query` with the
//! `datatype`, `group` and `default` annotations): every table's `_value`
//! column, typed by its `#datatype`, an empty cell taking its `#default`.
//! An in-band error table (`error`, `reference` columns) is an error.

use serde_json::Value;

/// Why an answer could not be read.
#[derive(Debug, PartialEq)]
pub enum TablesError {
    /// The CSV itself is malformed.
    Malformed(String),
    /// InfluxDB reported an error inside the answer.
    Query(String),
}

/// One table's layout: its header and annotations.
#[derive(Default)]
struct Layout {
    datatypes: Vec<String>,
    defaults: Vec<String>,
    header: Option<Vec<String>>,
}

/// The `_value` of every row of every table, in order.
pub fn values(csv_text: &[u8]) -> Result<Vec<Value>, TablesError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_text);
    let mut layout = Layout::default();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| TablesError::Malformed(e.to_string()))?;
        let cells: Vec<&str> = record.iter().collect();
        let first = cells.first().copied().unwrap_or("");
        if cells.iter().all(|c| c.is_empty()) {
            // A blank line ends a table; the next brings its own layout.
            layout = Layout::default();
            continue;
        }
        if let Some(annotation) = first.strip_prefix('#') {
            let rest = cells.iter().skip(1).map(|c| c.to_string()).collect();
            match annotation {
                "datatype" => {
                    layout = Layout {
                        datatypes: rest,
                        ..Layout::default()
                    }
                }
                "default" => layout.defaults = rest,
                _ => {}
            }
            continue;
        }
        let Some(header) = &layout.header else {
            layout.header = Some(cells.iter().skip(1).map(|c| c.to_string()).collect());
            continue;
        };
        let row: Vec<&str> = cells.iter().skip(1).copied().collect();
        if let Some(error_at) = header.iter().position(|h| h == "error") {
            let message = row.get(error_at).copied().unwrap_or("(no message)");
            return Err(TablesError::Query(message.to_string()));
        }
        let Some(at) = header.iter().position(|h| h == "_value") else {
            continue;
        };
        let cell = match row.get(at).copied() {
            Some("") | None => layout.defaults.get(at).map(String::as_str).unwrap_or(""),
            Some(cell) => cell,
        };
        let datatype = layout.datatypes.get(at).map(String::as_str).unwrap_or("");
        out.push(typed(cell, datatype)?);
    }
    Ok(out)
}

/// A cell as the InfluxDB client types it; an empty cell is null.
fn typed(cell: &str, datatype: &str) -> Result<Value, TablesError> {
    if cell.is_empty() {
        return Ok(Value::Null);
    }
    let bad = || TablesError::Malformed(format!("_value {cell:?} is not a {datatype}"));
    match datatype {
        "double" => match cell {
            "+Inf" | "-Inf" | "NaN" => Ok(Value::String(cell.to_string())),
            _ => cell
                .parse::<f64>()
                .map_err(|_| bad())
                .map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)),
        },
        "long" => cell.parse::<i64>().map(Value::from).map_err(|_| bad()),
        "unsignedLong" => cell.parse::<u64>().map(Value::from).map_err(|_| bad()),
        "boolean" => match cell {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        // No annotation: a number when it reads as one.
        "" => Ok(cell
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(cell.to_string()), Value::Number)),
        // string, dateTime:RFC3339, duration, base64Binary.
        _ => Ok(Value::String(cell.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_value_of_every_table_typed_by_its_annotations() {
        let answer = b"#datatype,string,long,dateTime:RFC3339,double,string\n\
#group,false,false,false,false,true\n\
#default,_result,,,,\n\
,result,table,_time,_value,host\n\
,,0,2026-12-01T00:00:00Z,0.5,a\n\
,,1,2026-12-01T00:00:00Z,0.75,\"b,c\"\n\
\n\
#datatype,string,long,long\n\
#group,false,false,false\n\
#default,_result,,7\n\
,result,table,_value\n\
,,2,3\n\
,,2,\n";
        assert_eq!(
            values(answer).expect("values"),
            vec![json!(0.5), json!(0.75), json!(3), json!(7)]
        );
    }

    #[test]
    fn an_error_table_is_an_error() {
        let answer = b"#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,\"type error: undefined identifier r\",\n";
        assert_eq!(
            values(answer),
            Err(TablesError::Query(
                "type error: undefined identifier r".into()
            ))
        );
    }

    #[test]
    fn a_cell_that_is_not_its_type_is_named() {
        let answer = b"#datatype,string,long,double\n,result,table,_value\n,,0,fast\n";
        assert!(matches!(values(answer), Err(TablesError::Malformed(m)) if m.contains("\"fast\"")));
    }
}
