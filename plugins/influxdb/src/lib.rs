//! The InfluxDB metric provider, with Argo Rollouts' `influxdb` block
//! (`metricproviders/influxdb`): `query` (Flux; its `range()` is the
//! window) and `profile` (the credentials Secret, default `influxdb`).
//!
//! Credentials are read as Argo reads them: Secret `profile` with
//! `address` (e.g. `http://influxdb:8086`), `authToken` and `org`, all
//! required. Argo reads it from its controller's namespace; Weir from the
//! namespace the registration names (`args: [secretNamespace=<ns>]`),
//! which must also be in its `grant.namespaces`, with `grant.read` of
//! Secrets. The token is sent only as `Authorization: Token …`.
//!
//! The query is `POST {address}/api/v2/query?org=<org>` with the body
//! InfluxDB's Go client sends (`type: flux`, the annotated-CSV dialect).
//! The value is the list of the `_value` column of every row of every
//! table, so conditions read `result[0]`, as in Argo; no rows is an error.
//! An error InfluxDB reports inside the answer is an error too (Argo
//! evaluates whatever was read before it).
//!
//! Requests go through `wasi:http` to hosts on `http.allowHosts` only.
//! Tested against a loopback server speaking InfluxDB's documented v2
//! query API (`tests/tests/vendor_providers.rs`); InfluxDB itself was not
//! reached.

mod csv_tables;

use csv_tables::TablesError;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::http::{self, encode_query_component};
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, Metric,
};
use weir_plugin_sdk::secrets::Secret;

const DEFAULT_SECRET: &str = "influxdb";
/// The effective limit of Argo's client (InfluxDB's Go client's 20 s).
const TIMEOUT_MS: u64 = 20_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    query: String,
    #[serde(default)]
    profile: Option<String>,
}

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::InvalidConfig(format!("influxdb provider: {}", message.into()))
}

struct Credentials {
    address: String,
    token: String,
    org: String,
}

fn credentials(config: &Config) -> Result<Credentials, PluginError> {
    let name = config
        .profile
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_SECRET);
    let secret = Secret::read_from_registration("influxdb provider", name)?;
    Ok(Credentials {
        address: secret.require("address")?.trim_end_matches('/').to_string(),
        token: secret.require("authToken")?,
        org: secret.require("org")?,
    })
}

fn request(config: &Config, creds: &Credentials) -> http::Request {
    let body = json!({
        "dialect": {"annotations": ["datatype", "group", "default"], "delimiter": ",", "header": true},
        "query": config.query,
        "type": "flux",
    });
    http::Request {
        method: "POST".into(),
        url: format!(
            "{}/api/v2/query?org={}",
            creds.address,
            encode_query_component(&creds.org)
        ),
        headers: vec![
            ("Authorization".into(), format!("Token {}", creds.token)),
            ("Content-Type".into(), "application/json".into()),
            ("Accept".into(), "application/csv".into()),
        ],
        body: Some(body.to_string().into_bytes()),
        timeout_ms: Some(TIMEOUT_MS),
        insecure: false,
    }
}

/// InfluxDB's error answer: its JSON `message`, else the text.
fn error_text(body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    http::excerpt(message.as_bytes())
}

fn measure(_run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> {
    let config: Config = weir_plugin_sdk::parse_config("influxdb provider", &metric.config)?;
    if config.query.trim().is_empty() {
        return Err(invalid("query is empty"));
    }
    let creds = credentials(&config)?;
    let response =
        http::send(&request(&config, &creds)).map_err(|e| e.into_plugin_error(&creds.address))?;
    match response.status {
        200..=299 => {}
        400 => {
            return Err(invalid(format!(
                "InfluxDB refused the query: {}",
                error_text(&response.body)
            )));
        }
        401 | 403 => {
            return Err(PluginError::Denied(format!(
                "InfluxDB answered {}: {}",
                response.status,
                error_text(&response.body)
            )));
        }
        other => {
            return Err(PluginError::Transient(format!(
                "InfluxDB answered {other}: {}",
                error_text(&response.body)
            )));
        }
    }
    let values = csv_tables::values(&response.body).map_err(|e| match e {
        TablesError::Malformed(m) => {
            PluginError::Internal(format!("InfluxDB's answer is not annotated CSV: {m}"))
        }
        TablesError::Query(m) => invalid(format!("the Flux query failed: {m}")),
    })?;
    if values.is_empty() {
        return Err(PluginError::NotFound(
            "no results returned from flux query".into(),
        ));
    }
    Ok(weir_plugin_sdk::measured(
        Value::from(values).to_string(),
        vec![],
    ))
}

struct Influxdb;

weir_plugin_sdk::export_instant_metric_provider!(Influxdb, measure);
