//! The web metric provider, with Argo Rollouts' fields
//! (`metricproviders/webmetric`): `method` (GET, POST, PUT), `url`,
//! `headers: [{key, value}]`, `body` or `jsonBody`, `timeoutSeconds`
//! (default 10), `jsonPath` in Kubernetes JSONPath template form
//! (`{$.data.ok}`, default `{$}`).

mod jsonpath;

use serde::Deserialize;
use serde_json::Value;
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::http::{self, HttpError};
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, MeasurementPhase, Metric,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    #[serde(default)]
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: Vec<Header>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    json_body: Option<Value>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    #[serde(default)]
    json_path: Option<String>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    key: String,
    value: String,
}

fn invalid(message: String) -> PluginError {
    PluginError::InvalidConfig(format!("web provider: {message}"))
}

fn measure(_run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> {
    let config: Config = weir_plugin_sdk::parse_config("web provider", &metric.config)?;
    let method = config
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT") {
        return Err(invalid(format!(
            "method {method:?} is not one of GET, POST, PUT"
        )));
    }
    let mut headers: Vec<(String, String)> = config
        .headers
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    let body = match (&config.body, &config.json_body) {
        (Some(_), Some(_)) => return Err(invalid("set `body` or `jsonBody`, not both".into())),
        (Some(_), _) | (_, Some(_)) if method == "GET" => {
            return Err(invalid("a body needs method POST or PUT".into()));
        }
        (Some(text), None) => Some(text.as_bytes().to_vec()),
        (None, Some(json)) => {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            Some(json.to_string().into_bytes())
        }
        (None, None) => None,
    };
    let path =
        jsonpath::Path::parse(config.json_path.as_deref().unwrap_or("{$}")).map_err(invalid)?;
    let timeout_ms = config.timeout_seconds.unwrap_or(10).saturating_mul(1000);
    let request = http::Request {
        method,
        url: config.url.clone(),
        headers,
        body,
        timeout_ms: Some(timeout_ms),
        insecure: config.insecure,
    };
    let response = http::send(&request).map_err(|e| match e {
        HttpError::Denied(m) => PluginError::Denied(format!("{}: {m}", config.url)),
        HttpError::InvalidUrl(m) => invalid(m),
        HttpError::Failed(m) => PluginError::Transient(format!("{}: {m}", config.url)),
    })?;
    if !(200..300).contains(&response.status) {
        return Err(PluginError::Transient(format!(
            "received non 2xx response code: {}",
            response.status
        )));
    }
    let document: Value = serde_json::from_slice(&response.body)
        .map_err(|e| PluginError::Internal(format!("could not parse JSON body: {e}")))?;
    let value = path.find(&document).ok_or_else(|| {
        PluginError::NotFound(format!(
            "JSONPath {} found nothing in the response",
            path.text()
        ))
    })?;
    Ok(Measurement {
        phase: MeasurementPhase::Successful,
        value: Some(value.to_string()),
        message: None,
        metadata: vec![],
        resume_after_ms: None,
    })
}

struct Web;

fn metadata(_metric: &Metric) -> Vec<(String, String)> {
    vec![]
}

weir_plugin_sdk::export_instant_metric_provider!(Web, measure, metadata);
