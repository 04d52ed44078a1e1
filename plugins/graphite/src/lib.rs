//! The Graphite metric provider, with Argo Rollouts' `graphite` block
//! (`metricproviders/graphite`): `address` (the Graphite web URL) and
//! `query`, a raw render-API query string (`target=...&from=-5min`).
//!
//! As Argo: all whitespace is removed from the query (so a multi-line
//! `target=` reads as one), `format=json` is forced, nothing else is added
//! (no `from`: put one in the query, or Graphite's default of 24 hours
//! applies), and only the first target's datapoints count: the value is
//! the list of its non-null values, oldest first (`result[0]`, `10 in
//! result`). No datapoints at all is an error. Graphite has no
//! credentials in Argo, nor here.
//!
//! Requests go through `wasi:http` to hosts on the registration's
//! `http.allowHosts` only. Tested against a loopback server speaking the
//! render API (`tests/tests/vendor_providers.rs`); Graphite itself was not
//! reached.

use serde::Deserialize;
use serde_json::Value;
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::http;
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, Metric,
};

/// The request timeout (Argo's).
const TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    address: String,
    query: String,
}

fn invalid(message: String) -> PluginError {
    PluginError::InvalidConfig(format!("graphite provider: {message}"))
}

/// Decodes a query component as Go's `url.ParseQuery` does (`%XX`, and
/// `+` for a space); a malformed escape is kept as written.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The render URL: `address` + `/render?format=json&` + the query with
/// every whitespace character removed and each parameter re-encoded.
fn render_url(config: &Config) -> Result<String, PluginError> {
    let address = config.address.trim_end_matches('/');
    if !(address.starts_with("http://") || address.starts_with("https://")) {
        return Err(invalid(format!(
            "address {:?} is not a valid URL (http:// or https://)",
            config.address
        )));
    }
    let query: String = config
        .query
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut params = vec![("format".to_string(), "json".to_string())];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "format" {
            continue;
        }
        params.push((decode(key), decode(value)));
    }
    if !params.iter().any(|(k, _)| k == "target") {
        return Err(invalid("query has no target= parameter".into()));
    }
    Ok(format!("{address}/render?{}", http::encode_pairs(&params)))
}

/// A datapoint's value: a number, a numeric string, or null (missing).
fn value_of(point: &Value) -> Result<Option<f64>, PluginError> {
    let pair = point.as_array().filter(|p| p.len() == 2).ok_or_else(|| {
        PluginError::Internal(format!("datapoint {point} is not [value, timestamp]"))
    })?;
    match pair.first() {
        Some(Value::Null) | None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| PluginError::Internal(format!("datapoint value {s:?} is not a number"))),
        Some(other) => Err(PluginError::Internal(format!(
            "datapoint value {other} is not a number"
        ))),
    }
}

fn measure(_run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> {
    let config: Config = weir_plugin_sdk::parse_config("graphite provider", &metric.config)?;
    let url = render_url(&config)?;
    let mut request = http::Request::get(&url);
    request.timeout_ms = Some(TIMEOUT_MS);
    let response = http::send(&request).map_err(|e| e.into_plugin_error(&config.address))?;
    if response.status >= 400 {
        let body = http::excerpt(&response.body);
        return Err(PluginError::Transient(format!(
            "graphite answered {}: {body}",
            response.status
        )));
    }
    let targets: Vec<Value> = serde_json::from_slice(&response.body).map_err(|e| {
        PluginError::Internal(format!(
            "graphite's answer is not the render API's JSON: {e}"
        ))
    })?;
    let first = targets.first().ok_or_else(|| {
        PluginError::NotFound("graphite returned no values (no target matched)".into())
    })?;
    let points = first
        .get("datapoints")
        .and_then(Value::as_array)
        .ok_or_else(|| PluginError::Internal("graphite's first target has no datapoints".into()))?;
    let mut values = Vec::with_capacity(points.len());
    for point in points {
        if let Some(v) = value_of(point)? {
            values.push(v);
        }
    }
    Ok(weir_plugin_sdk::measured(
        Value::from(values).to_string(),
        vec![],
    ))
}

struct Graphite;

weir_plugin_sdk::export_instant_metric_provider!(Graphite, measure);
