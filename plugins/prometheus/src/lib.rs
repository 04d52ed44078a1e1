//! The Prometheus metric provider, with Argo Rollouts' fields
//! (`metricproviders/prometheus`): `address`, `query`, `timeout` (seconds),
//! `headers: [{key, value}]`, `authentication.basicAuth: {username, password}`,
//! `rangeQuery: {start, end, step}`.
//!
//! A scalar becomes a number, a vector or matrix a list of numbers (NaN and
//! infinities travel as the strings `"NaN"`, `"+Inf"`, `"-Inf"`); anything
//! else is an error. The host applies the metric's conditions.

mod time;

use serde::Deserialize;
use serde_json::{Value, json};
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::http::{self, HttpError, encode_query_component};
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, MeasurementPhase, Metric,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    address: String,
    query: String,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    headers: Vec<Header>,
    #[serde(default)]
    authentication: Option<Authentication>,
    #[serde(default)]
    range_query: Option<RangeQuery>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    key: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Authentication {
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuth {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    start: String,
    end: String,
    step: String,
}

/// Argo's default timeout, in seconds.
const DEFAULT_TIMEOUT_SECONDS: u64 = 30;

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn request_url(config: &Config) -> Result<String, PluginError> {
    let address = config.address.trim_end_matches('/');
    if address.is_empty() {
        return Err(PluginError::InvalidConfig(
            "prometheus: `address` is required".into(),
        ));
    }
    let query = encode_query_component(&config.query);
    Ok(match &config.range_query {
        None => format!("{address}/api/v1/query?query={query}"),
        Some(range) => {
            let start = time::evaluate(&range.start).map_err(|e| {
                PluginError::InvalidConfig(format!("prometheus rangeQuery.start: {e}"))
            })?;
            let end = time::evaluate(&range.end).map_err(|e| {
                PluginError::InvalidConfig(format!("prometheus rangeQuery.end: {e}"))
            })?;
            let step = encode_query_component(&range.step);
            format!(
                "{address}/api/v1/query_range?query={query}&start={start}&end={end}&step={step}"
            )
        }
    })
}

/// A Prometheus sample value: a number, or the non-finite spellings as strings.
fn sample(value: &Value) -> Result<Value, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("sample value {value} is not a string"))?;
    match text {
        "NaN" => Ok(json!("NaN")),
        "+Inf" | "Inf" => Ok(json!("+Inf")),
        "-Inf" => Ok(json!("-Inf")),
        _ => text
            .parse::<f64>()
            .map(|f| json!(f))
            .map_err(|_| format!("sample value {text:?} is not a number")),
    }
}

/// Turns a successful response's `data` into the measured value.
fn value_of(data: &Value) -> Result<Value, String> {
    match data["resultType"].as_str() {
        Some("scalar") => sample(&data["result"][1]),
        Some("vector") => data["result"]
            .as_array()
            .ok_or("vector result is not a list")?
            .iter()
            .map(|s| sample(&s["value"][1]))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Some("matrix") => {
            let mut values = Vec::new();
            for series in data["result"]
                .as_array()
                .ok_or("matrix result is not a list")?
            {
                for point in series["values"]
                    .as_array()
                    .ok_or("matrix series has no values")?
                {
                    values.push(sample(&point[1])?);
                }
            }
            Ok(Value::Array(values))
        }
        Some(other) => Err(format!("Prometheus metric type not supported: {other}")),
        None => Err("the response has no data.resultType".into()),
    }
}

fn measure(_run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> {
    let config: Config = weir_plugin_sdk::parse_config("prometheus provider", &metric.config)?;
    let url = request_url(&config)?;
    let mut headers: Vec<(String, String)> = config
        .headers
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    if let Some(auth) = config
        .authentication
        .as_ref()
        .and_then(|a| a.basic_auth.as_ref())
    {
        let token = base64(format!("{}:{}", auth.username, auth.password).as_bytes());
        headers.push(("Authorization".into(), format!("Basic {token}")));
    }
    let timeout_ms = config
        .timeout
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
        .saturating_mul(1000);
    let request = http::Request {
        method: "GET".into(),
        url: url.clone(),
        headers,
        body: None,
        timeout_ms: Some(timeout_ms),
        insecure: config.insecure,
    };
    let response = http::send(&request).map_err(|e| match e {
        HttpError::Denied(m) => {
            PluginError::Denied(format!("prometheus at {}: {m}", config.address))
        }
        HttpError::InvalidUrl(m) => PluginError::InvalidConfig(format!("prometheus address: {m}")),
        HttpError::Failed(m) => {
            PluginError::Transient(format!("querying prometheus at {}: {m}", config.address))
        }
    })?;
    let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
        PluginError::Transient(format!(
            "prometheus answered status {} with a body that is not JSON: {e}",
            response.status
        ))
    })?;
    if body["status"] != "success" {
        let kind = body["errorType"].as_str().unwrap_or("error");
        let message = body["error"].as_str().unwrap_or("no message");
        return Err(PluginError::InvalidConfig(format!(
            "prometheus query failed ({kind}, status {}): {message}",
            response.status
        )));
    }
    let value = value_of(&body["data"]).map_err(PluginError::Internal)?;
    Ok(Measurement {
        phase: MeasurementPhase::Successful,
        value: Some(value.to_string()),
        message: None,
        metadata: vec![("ResolvedPrometheusQuery".into(), config.query)],
        resume_after_ms: None,
    })
}

struct Prometheus;

fn metadata(metric: &Metric) -> Vec<(String, String)> {
    let query = serde_json::from_str::<Value>(&metric.config)
        .ok()
        .and_then(|c| c["query"].as_str().map(str::to_string))
        .unwrap_or_default();
    vec![("ResolvedPrometheusQuery".into(), query)]
}

weir_plugin_sdk::export_instant_metric_provider!(Prometheus, measure, metadata);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
