//! Argo's `setHeaderRoute` and `setMirrorRoute` step shapes, read into the
//! contract's records.

use crate::plugin::{HeaderMatch, HeaderRoute, MirrorMatch, MirrorRoute, StringMatch};
use serde_json::Value;

fn string_match(value: &Value, what: &str) -> Result<StringMatch, String> {
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
    match (field("exact"), field("prefix"), field("regex")) {
        (Some(v), None, None) => Ok(StringMatch::Exact(v)),
        (None, Some(v), None) => Ok(StringMatch::Prefix(v)),
        (None, None, Some(v)) => Ok(StringMatch::Regex(v)),
        _ => Err(format!("{what} needs exactly one of exact, prefix, regex")),
    }
}

fn name_of(step: &Value, what: &str) -> Result<String, String> {
    step.get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("{what}.name is required: the name of a managedRoutes entry"))
}

/// Reads each entry of the step's `match` list with `read` (none: empty).
fn each_match<T>(
    step: &Value,
    read: impl Fn(&Value) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    step.get("match")
        .and_then(Value::as_array)
        .map_or(Ok(Vec::new()), |list| list.iter().map(read).collect())
}

fn header_match(m: &Value) -> Result<HeaderMatch, String> {
    let header = m
        .get("headerName")
        .and_then(Value::as_str)
        .ok_or("setHeaderRoute.match[].headerName is required")?;
    let value = m
        .get("headerValue")
        .ok_or("setHeaderRoute.match[].headerValue is required")?;
    Ok(HeaderMatch {
        name: header.to_string(),
        value: string_match(value, "setHeaderRoute.match[].headerValue")?,
    })
}

fn mirror_match(m: &Value) -> Result<MirrorMatch, String> {
    let optional =
        |field: &str, what: &str| m.get(field).map(|v| string_match(v, what)).transpose();
    let headers = m.get("headers").and_then(Value::as_object).map_or(
        Ok::<_, String>(Vec::new()),
        |headers| {
            headers
                .iter()
                .map(|(name, v)| {
                    Ok(HeaderMatch {
                        name: name.clone(),
                        value: string_match(v, "setMirrorRoute.match[].headers")?,
                    })
                })
                .collect()
        },
    )?;
    Ok(MirrorMatch {
        method: optional("method", "setMirrorRoute.match[].method")?,
        path: optional("path", "setMirrorRoute.match[].path")?,
        headers,
    })
}

/// `setHeaderRoute: {name, match: [{headerName, headerValue: {exact|prefix|regex}}]}`.
/// No `match` removes the route.
pub fn header_route(step: &Value) -> Result<HeaderRoute, String> {
    Ok(HeaderRoute {
        name: name_of(step, "setHeaderRoute")?,
        matches: each_match(step, header_match)?,
    })
}

/// `setMirrorRoute: {name, percentage, match: [{method, path, headers: {name: match}}]}`.
/// No `match` removes the route.
pub fn mirror_route(step: &Value) -> Result<MirrorRoute, String> {
    let name = name_of(step, "setMirrorRoute")?;
    let percentage = match step.get("percentage") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| (0..=100).contains(p))
                .ok_or_else(|| format!("setMirrorRoute.percentage must be 0..=100, not {p}"))?,
        ),
    };
    Ok(MirrorRoute {
        name,
        percentage,
        matches: each_match(step, mirror_match)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argo_header_route() {
        let route = header_route(&json!({"name": "h", "match": [{"headerName": "x-canary", "headerValue": {"exact": "yes"}}]}))
            .expect("valid");
        assert_eq!(route.matches.len(), 1);
        assert!(header_route(&json!({"name": "h", "match": [{"headerName": "x"}]})).is_err());
        assert!(header_route(&json!({"match": []})).is_err());
    }

    #[test]
    fn argo_mirror_route() {
        let route = mirror_route(&json!({"name": "m", "percentage": 35,
            "match": [{"method": {"exact": "GET"}, "headers": {"x": {"prefix": "a"}}}]}))
        .expect("valid");
        assert_eq!(route.percentage, Some(35));
        assert_eq!(route.matches[0].headers.len(), 1);
        assert!(mirror_route(&json!({"name": "m", "percentage": 300})).is_err());
    }
}
