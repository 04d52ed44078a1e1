//! The New Relic metric provider, with Argo Rollouts' `newRelic` block
//! (`metricproviders/newrelic`): `query` (NRQL, required), `profile` (the
//! credentials Secret, default `newrelic`), `timeout` (the NRQL timeout in
//! seconds, default 5).
//!
//! Credentials are read as Argo reads them: Secret `profile` with
//! `personal-api-key`, `account-id`, optionally `region` (`us`, the
//! default, `eu`, `jp`, `gov`/`fedramp`, `staging`) and
//! `base-url-nerdgraph` (the whole URL to POST to, e.g. a proxy). Argo
//! reads it from its controller's namespace; Weir from the namespace the
//! registration names (`args: [secretNamespace=<ns>]`), which must also be
//! in its `grant.namespaces`, with `grant.read` of Secrets. The key is sent
//! only as the `Api-Key` header.
//!
//! The query goes to NerdGraph (`POST …/graphql`, the `nrql` field of the
//! account, with the NRQL, account id and timeout as GraphQL variables).
//! One result row is the value as a map (`result.count`,
//! `result['average.duration']`); several rows (`FACET`, `TIMESERIES`) a
//! list of maps (`result[0].count`); none is an error, as in Argo.
//!
//! Requests go through `wasi:http` to hosts on `http.allowHosts` only.
//! Tested against a loopback server speaking NerdGraph's documented API
//! (`tests/tests/vendor_providers.rs`); New Relic itself was not reached.

use serde::Deserialize;
use serde_json::{Value, json};
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::http;
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, Metric,
};
use weir_plugin_sdk::secrets::Secret;

const DEFAULT_SECRET: &str = "newrelic";
const DEFAULT_NRQL_TIMEOUT_S: i64 = 5;
/// The HTTP timeout of New Relic's Go client, which Argo uses.
const HTTP_TIMEOUT_MS: u64 = 30_000;
/// The NerdGraph query Argo sends: the NRQL, the account and the timeout
/// are variables, so nothing in the NRQL can change the GraphQL around it.
const NRQL_GRAPHQL: &str = "query($query: Nrql!, $accountId: Int!, $timeout: Seconds!) { actor { account(id: $accountId) { nrql(query: $query, timeout: $timeout) { results } } } }";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    query: String,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    timeout: Option<i64>,
}

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::InvalidConfig(format!("newRelic provider: {}", message.into()))
}

struct Credentials {
    api_key: String,
    account_id: i64,
    url: String,
}

/// NerdGraph's URL for a `region` (case-insensitive), as New Relic's
/// client maps it.
fn nerdgraph_url(region: &str) -> Result<&'static str, PluginError> {
    match region.to_ascii_lowercase().as_str() {
        "us" => Ok("https://api.newrelic.com/graphql"),
        "eu" => Ok("https://api.eu.newrelic.com/graphql"),
        "jp" => Ok("https://api.jp.newrelic.com/graphql"),
        "gov" | "fedramp" => Ok("https://gov-api.newrelic.com/graphql"),
        "staging" => Ok("https://staging-api.newrelic.com/graphql"),
        other => Err(invalid(format!(
            "region {other:?} is not one of us, eu, jp, gov, fedramp, staging"
        ))),
    }
}

fn credentials(config: &Config) -> Result<Credentials, PluginError> {
    let name = config
        .profile
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_SECRET);
    let secret = Secret::read_from_registration("newRelic provider", name)?;
    let api_key = secret.require("personal-api-key")?;
    let account = secret.require("account-id")?;
    let account_id = account.parse::<i64>().map_err(|_| {
        invalid(format!(
            "Secret {}: account-id is not a number",
            secret.describe()
        ))
    })?;
    let url = match secret.get("base-url-nerdgraph")? {
        Some(url) => url,
        None => nerdgraph_url(secret.get("region")?.as_deref().unwrap_or("us"))?.to_string(),
    };
    Ok(Credentials {
        api_key,
        account_id,
        url,
    })
}

fn request(config: &Config, creds: &Credentials) -> Result<http::Request, PluginError> {
    let timeout = config.timeout.unwrap_or(DEFAULT_NRQL_TIMEOUT_S);
    if timeout < 0 {
        return Err(invalid("timeout must not be negative"));
    }
    let body = json!({
        "query": NRQL_GRAPHQL,
        "variables": {"accountId": creds.account_id, "query": config.query, "timeout": timeout},
    });
    let timeout_ms = u64::try_from(timeout)
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(5_000)
        .max(HTTP_TIMEOUT_MS);
    Ok(http::Request {
        method: "POST".into(),
        url: creds.url.clone(),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Api-Key".into(), creds.api_key.clone()),
            ("User-Agent".into(), "weir newRelic provider".into()),
        ],
        body: Some(body.to_string().into_bytes()),
        timeout_ms: Some(timeout_ms),
        insecure: false,
    })
}

fn echo(text: &str) -> String {
    http::excerpt(text.as_bytes())
}

/// NerdGraph's `errors`, as one plugin error: a bad key is `denied`, a
/// timeout or server error `transient`, bad input `invalid-config`.
fn graphql_error(errors: &[Value]) -> PluginError {
    let classes: Vec<&str> = errors
        .iter()
        .filter_map(|e| e.pointer("/extensions/errorClass").and_then(Value::as_str))
        .collect();
    let message = echo(
        &errors
            .iter()
            .map(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
            })
            .collect::<Vec<_>>()
            .join("; "),
    );
    let message = format!("NerdGraph: {message}");
    if classes
        .iter()
        .any(|c| matches!(*c, "BAD_API_KEY" | "FORBIDDEN"))
    {
        PluginError::Denied(message)
    } else if classes
        .iter()
        .any(|c| matches!(*c, "TIMEOUT" | "INTERNAL_SERVER_ERROR" | "SERVER_ERROR"))
    {
        PluginError::Transient(message)
    } else if classes.contains(&"INVALID_INPUT") {
        PluginError::InvalidConfig(message)
    } else {
        PluginError::Internal(message)
    }
}

/// The measurement's value: one row as a map, several as a list.
fn value_of(body: &Value) -> Result<Value, PluginError> {
    if let Some(errors) = body
        .get("errors")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    {
        return Err(graphql_error(errors));
    }
    let results = body
        .pointer("/data/actor/account/nrql/results")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            PluginError::Internal(format!(
                "NerdGraph's answer has no data.actor.account.nrql.results: {}",
                echo(&body.to_string())
            ))
        })?;
    match results.as_slice() {
        [] => Err(PluginError::NotFound(
            "no results returned from NRQL query".into(),
        )),
        [row] if row.as_object().is_none_or(|m| m.is_empty()) => Err(PluginError::NotFound(
            "no results returned from NRQL query".into(),
        )),
        [row] => Ok(row.clone()),
        rows => Ok(Value::from(rows.to_vec())),
    }
}

fn measure(_run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> {
    let config: Config = weir_plugin_sdk::parse_config("newRelic provider", &metric.config)?;
    let creds = credentials(&config)?;
    let request = request(&config, &creds)?;
    let response = http::send(&request).map_err(|e| e.into_plugin_error(&creds.url))?;
    let text = echo(&String::from_utf8_lossy(&response.body));
    match response.status {
        200..=299 => {}
        401 | 403 => {
            return Err(PluginError::Denied(format!(
                "NerdGraph answered {}: {text}",
                response.status
            )));
        }
        other => {
            return Err(PluginError::Transient(format!(
                "NerdGraph answered {other}: {text}"
            )));
        }
    }
    let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
        PluginError::Internal(format!("NerdGraph's answer is not JSON: {e}: {text}"))
    })?;
    let value = value_of(&body)?;
    Ok(weir_plugin_sdk::measured(value.to_string(), vec![]))
}

/// Argo's `ResolvedNewRelicQuery`: the NRQL after argument substitution.
fn metadata(metric: &Metric) -> Vec<(String, String)> {
    serde_json::from_str::<Config>(&metric.config)
        .map(|c| vec![("ResolvedNewRelicQuery".to_string(), c.query)])
        .unwrap_or_default()
}

struct NewRelic;

weir_plugin_sdk::export_instant_metric_provider!(NewRelic, measure, metadata);
