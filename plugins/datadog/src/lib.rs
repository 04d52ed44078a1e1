//! The Datadog metric provider, with Argo Rollouts' `datadog` block
//! (`metricproviders/datadog`): `apiVersion` `v1` (default; `query`) or
//! `v2` (`query`, or `queries` with a `formula`; `aggregator`, default
//! `last`), `interval` (the window, default `5m`), `requestTimeout`
//! (default `10s`), `secretRef {name, namespaced}`.
//!
//! Credentials are read as Argo reads them: a Secret with `api-key`,
//! `app-key` and optionally `address` (default `https://api.datadoghq.com`),
//! named by `secretRef.name` (default `datadog`); in the AnalysisRun's
//! namespace with `secretRef.namespaced: true`, otherwise in the namespace
//! the registration names (`args: [secretNamespace=<ns>]`, Weir's stand-in
//! for Argo's controller namespace), which must also be in its
//! `grant.namespaces`, with `grant.read` of Secrets. The keys are sent as
//! `DD-API-KEY` / `DD-APPLICATION-KEY` and never logged or returned.
//!
//! v1: `GET /api/v1/query?from=&query=&to=` (seconds); the last point of
//! the first series. v2: `POST /api/v2/query/scalar` (milliseconds); the
//! first number column: one value, or with `by {tag}` groups the list of
//! values, the groups in the measurement's `groups` metadata (at most 100:
//! the 50 lowest and 50 highest). No data is the value `null` (use
//! `default(result, 0)`), as in Argo.
//!
//! Requests go through `wasi:http` to hosts on `http.allowHosts` only.
//! Tested against a loopback server speaking Datadog's documented API
//! (`tests/tests/vendor_providers.rs`); Datadog itself was not reached.

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::duration::parse_go_duration;
use weir_plugin_sdk::http::{self, encode_query_component};
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, Metric,
};
use weir_plugin_sdk::secrets::Secret;

const DEFAULT_ADDRESS: &str = "https://api.datadoghq.com";
const DEFAULT_SECRET: &str = "datadog";
const MAX_GROUPS_IN_METADATA: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    queries: BTreeMap<String, String>,
    #[serde(default)]
    formula: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    aggregator: Option<String>,
    #[serde(default)]
    secret_ref: Option<SecretRef>,
    #[serde(default)]
    request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretRef {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespaced: bool,
}

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::InvalidConfig(format!("datadog provider: {}", message.into()))
}

/// Argo's `validateIncomingProps`, plus the version and aggregator names.
fn check(config: &Config, v2: bool) -> Result<(), PluginError> {
    match (&config.query, config.queries.is_empty()) {
        (None, true) => return Err(invalid("set `query` or `queries`")),
        (Some(_), false) => return Err(invalid("set `query` or `queries`, not both")),
        _ => {}
    }
    if !v2 {
        if config.query.is_none() {
            return Err(invalid("apiVersion v1 needs `query` (`queries` need v2)"));
        }
        if config.aggregator.is_some() {
            return Err(invalid("`aggregator` needs apiVersion v2"));
        }
    }
    if config.formula.is_some() && config.queries.is_empty() {
        return Err(invalid("`formula` needs `queries`"));
    }
    if config.queries.len() > 1 && config.formula.is_none() {
        return Err(invalid("more than one query needs a `formula`"));
    }
    if let Some(a) = &config.aggregator
        && !matches!(
            a.as_str(),
            "avg" | "min" | "max" | "sum" | "last" | "percentile" | "mean" | "l2norm" | "area"
        )
    {
        return Err(invalid(format!(
            "aggregator {a:?} is not one of avg, min, max, sum, last, percentile, mean, l2norm, area"
        )));
    }
    Ok(())
}

struct Credentials {
    api_key: String,
    app_key: String,
    address: String,
}

/// The credentials Secret, found as the module doc says.
fn credentials(run: &AnalysisRun, config: &Config) -> Result<Credentials, PluginError> {
    let secret_ref = config.secret_ref.as_ref();
    let name = secret_ref
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| DEFAULT_SECRET.to_string());
    let secret = if secret_ref.is_some_and(|r| r.namespaced) {
        if secret_ref.and_then(|r| r.name.as_ref()).is_none() {
            return Err(invalid("secretRef.namespaced needs secretRef.name"));
        }
        Secret::read(&run.namespace, &name)?
    } else {
        Secret::read_from_registration("datadog provider", &name).map_err(|e| match e {
            PluginError::InvalidConfig(m) => PluginError::InvalidConfig(format!(
                "{m}, or use secretRef: {{name, namespaced: true}}"
            )),
            other => other,
        })?
    };
    let (api_key, app_key) = match (secret.get("api-key")?, secret.get("app-key")?) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(invalid(format!(
                "Secret {} needs both api-key and app-key",
                secret.describe()
            )));
        }
    };
    let address = secret
        .get("address")?
        .unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
    Ok(Credentials {
        api_key,
        app_key,
        address: address.trim_end_matches('/').to_string(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(what: &str, text: Option<&str>, default: u64) -> Result<u64, PluginError> {
    match text {
        None => Ok(default),
        Some(t) => parse_go_duration(t)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| invalid(format!("{what}: {e}"))),
    }
}

fn request(config: &Config, creds: &Credentials, v2: bool) -> Result<http::Request, PluginError> {
    let window = millis("interval", config.interval.as_deref(), 5 * 60 * 1000)?;
    let timeout = millis("requestTimeout", config.request_timeout.as_deref(), 10_000)?;
    if timeout == 0 {
        return Err(invalid("requestTimeout must be more than 0"));
    }
    let to = now_ms();
    let from = to.saturating_sub(window);
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("DD-API-KEY".to_string(), creds.api_key.clone()),
        ("DD-APPLICATION-KEY".to_string(), creds.app_key.clone()),
    ];
    let (method, url, body) = if v2 {
        let aggregator = config.aggregator.clone().unwrap_or_else(|| "last".into());
        let queries: Vec<Value> = match &config.query {
            Some(q) => vec![json!({"aggregator": aggregator, "data_source": "metrics", "name": "query", "query": q})],
            None => config
                .queries
                .iter()
                .map(|(name, q)| json!({"aggregator": aggregator, "data_source": "metrics", "name": name, "query": q}))
                .collect(),
        };
        let formulas: Vec<Value> = config
            .formula
            .iter()
            .map(|f| json!({"formula": f}))
            .collect();
        let body = json!({"data": {"type": "scalar_request", "attributes": {
            "from": from, "to": to, "queries": queries, "formulas": formulas}}});
        (
            "POST",
            format!("{}/api/v2/query/scalar", creds.address),
            Some(body.to_string().into_bytes()),
        )
    } else {
        let query = config.query.as_deref().unwrap_or("");
        (
            "GET",
            format!(
                "{}/api/v1/query?from={}&query={}&to={}",
                creds.address,
                from / 1000,
                encode_query_component(query),
                to / 1000
            ),
            None,
        )
    };
    Ok(http::Request {
        method: method.into(),
        url,
        headers,
        body,
        timeout_ms: Some(timeout),
        insecure: false,
    })
}

/// v1: the last point `[ts, value]` of the first series; none: null.
fn value_v1(body: &Value) -> Result<Value, PluginError> {
    let Some(points) = body
        .pointer("/series/0/pointlist")
        .and_then(Value::as_array)
    else {
        return Ok(Value::Null);
    };
    let Some(last) = points.last() else {
        return Ok(Value::Null);
    };
    let value = last
        .as_array()
        .filter(|p| p.len() == 2)
        .and_then(|p| p.get(1))
        .ok_or_else(|| {
            PluginError::Internal(format!("datadog point {last} is not [timestamp, value]"))
        })?;
    Ok(if value.is_null() {
        json!(0.0)
    } else {
        value.clone()
    })
}

/// v2: the first number column's values, with the group labels.
fn value_v2(body: &Value) -> Result<(Value, Vec<(String, String)>), PluginError> {
    let columns = body
        .pointer("/data/attributes/columns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(numbers) = columns
        .iter()
        .find(|c| matches!(c.get("type").and_then(Value::as_str), None | Some("number")))
    else {
        return Ok((Value::Null, vec![]));
    };
    let values = numbers
        .get("values")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let groups: Vec<&Value> = columns
        .iter()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("group"))
        .collect();
    if groups.is_empty() {
        let first = values
            .iter()
            .find(|v| !v.is_null())
            .cloned()
            .unwrap_or(Value::Null);
        if !(first.is_null() || first.is_number()) {
            return Err(PluginError::Internal(format!(
                "datadog value {first} is not a number"
            )));
        }
        return Ok((first, vec![]));
    }
    let mut kept: Vec<(String, f64)> = Vec::new();
    for (row, value) in values.iter().enumerate() {
        let Some(number) = value.as_f64() else {
            if value.is_null() {
                continue;
            }
            return Err(PluginError::Internal(format!(
                "datadog value {value} is not a number"
            )));
        };
        let label = groups
            .iter()
            .map(|g| {
                g.pointer(&format!("/values/{row}"))
                    .map(|v| match v {
                        Value::Array(tags) => tags
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(",");
        kept.push((label, number));
    }
    let list = Value::from(kept.iter().map(|(_, v)| *v).collect::<Vec<_>>());
    let mut metadata_groups = kept.clone();
    let mut metadata = vec![];
    if metadata_groups.len() > MAX_GROUPS_IN_METADATA {
        metadata_groups.sort_by(|a, b| a.1.total_cmp(&b.1));
        let half = MAX_GROUPS_IN_METADATA / 2;
        let high = metadata_groups.split_off(metadata_groups.len() - half);
        metadata_groups.truncate(half);
        metadata_groups.extend(high);
        metadata.push(("groups_truncated".to_string(), "true".to_string()));
    }
    let groups_json: Vec<Value> = metadata_groups
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    metadata.push(("groups".to_string(), Value::from(groups_json).to_string()));
    Ok((list, metadata))
}

fn measure(run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> {
    let config: Config = weir_plugin_sdk::parse_config("datadog provider", &metric.config)?;
    let v2 = match config.api_version.as_deref().unwrap_or("v1") {
        "v1" => false,
        "v2" => true,
        other => return Err(invalid(format!("apiVersion {other:?} is not v1 or v2"))),
    };
    check(&config, v2)?;
    let creds = credentials(run, &config)?;
    let request = request(&config, &creds, v2)?;
    let response = http::send(&request).map_err(|e| e.into_plugin_error(&creds.address))?;
    let text = http::excerpt(&response.body);
    match response.status {
        200 => {}
        401 | 403 => {
            return Err(PluginError::Denied(format!(
                "received authentication error response code: {} {text}",
                response.status
            )));
        }
        other => {
            return Err(PluginError::Transient(format!(
                "received non 2xx response code: {other} {text}"
            )));
        }
    }
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|e| PluginError::Internal(format!("could not parse JSON body: {e}")))?;
    let (value, metadata) = if v2 {
        value_v2(&body)?
    } else {
        (value_v1(&body)?, vec![])
    };
    Ok(weir_plugin_sdk::measured(value.to_string(), metadata))
}

struct Datadog;

weir_plugin_sdk::export_instant_metric_provider!(Datadog, measure);
