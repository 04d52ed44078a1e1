//! `rangeQuery.start` / `end`: Argo evaluates them as expr with `now()` and
//! `duration()`. This supports the forms Argo documents: `now()`,
//! `now() - duration("10m")`, `now() + duration("1h")`, and RFC 3339 or
//! Unix-seconds timestamps. The result is Unix seconds, as Prometheus takes.

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn duration_seconds(text: &str) -> Result<f64, String> {
    let mut total = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..n]
            .parse()
            .map_err(|_| format!("bad duration {text:?}"))?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("bad duration unit {other:?} in {text:?}")),
        };
        total += number * scale;
        rest = &rest[u..];
    }
    Ok(total)
}

/// Evaluates a start or end expression to Unix seconds (as text).
pub fn evaluate(expr: &str) -> Result<String, String> {
    let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some(rest) = compact.strip_prefix("now()") {
        let offset = if rest.is_empty() {
            0.0
        } else {
            let (sign, inner) = match rest.split_at(1) {
                ("-", r) => (-1.0, r),
                ("+", r) => (1.0, r),
                _ => return Err(format!("unsupported expression {expr:?}")),
            };
            let arg = inner
                .strip_prefix("duration(")
                .and_then(|r| r.strip_suffix(')'))
                .map(|a| a.trim_matches(['"', '\'']))
                .ok_or_else(|| {
                    format!("unsupported expression {expr:?}: use now() - duration(\"10m\")")
                })?;
            sign * duration_seconds(arg)?
        };
        return Ok(format!("{:.3}", now_seconds() + offset));
    }
    if compact.parse::<f64>().is_ok() {
        return Ok(compact);
    }
    // RFC 3339: Prometheus accepts it as is.
    if compact.len() >= 20 && compact.as_bytes().get(10) == Some(&b'T') {
        return Ok(weir_plugin_sdk::http::encode_query_component(&compact));
    }
    Err(format!(
        "unsupported time {expr:?}: use now(), now() - duration(\"10m\"), RFC 3339 or Unix seconds"
    ))
}
