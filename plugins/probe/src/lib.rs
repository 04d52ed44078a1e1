//! A metric provider for the sandbox tests: it GETs the configured `url` and
//! returns the body as its value, or misbehaves as `fault` asks.
//!
//! Configuration: `{"url": "http://127.0.0.1:8080/value", "fault": "none"}`.

use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::http::{self, HttpError};
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, MeasurementPhase, Metric,
};

struct Probe;

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    fault: Option<String>,
    /// For `huge-value`: the value's size in bytes.
    #[serde(default)]
    size: Option<usize>,
}

fn measure(_run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> {
    let cfg: Config =
        weir_plugin_sdk::parse_config("probe provider configuration", &metric.config)?;
    let done = |value: String| Measurement {
        phase: MeasurementPhase::Successful,
        value: Some(value),
        message: None,
        metadata: vec![],
        resume_after_ms: None,
    };
    match cfg.fault.as_deref().unwrap_or("none") {
        "none" => {}
        "panic" => panic!("probe provider: deliberate panic in metric {}", metric.name),
        "loop" => loop {
            std::hint::black_box(0u8);
        },
        "garbage-value" => return Ok(done("{not json".into())),
        // A JSON string value of `size` bytes.
        "huge-value" => {
            let text = "v".repeat(cfg.size.unwrap_or(1 << 20));
            return Ok(done(serde_json::Value::String(text).to_string()));
        }
        // Still running, and asks to be resumed at once, every time.
        "resume-now" => {
            return Ok(Measurement {
                phase: MeasurementPhase::Running,
                value: None,
                message: Some("not yet".into()),
                metadata: vec![],
                resume_after_ms: Some(0),
            });
        }
        other => {
            return Err(PluginError::InvalidConfig(format!(
                "unknown fault {other:?}"
            )));
        }
    }
    let url = cfg
        .url
        .ok_or_else(|| PluginError::InvalidConfig("probe: `url` is required".into()))?;
    let response = http::send(&http::Request::get(&url)).map_err(|e| match e {
        HttpError::Denied(m) => PluginError::Denied(format!("GET {url}: {m}")),
        HttpError::InvalidUrl(m) => PluginError::InvalidConfig(m),
        HttpError::Failed(m) => PluginError::Transient(format!("GET {url}: {m}")),
    })?;
    if !(200..300).contains(&response.status) {
        return Err(PluginError::Transient(format!(
            "GET {url}: status {}",
            response.status
        )));
    }
    let text = String::from_utf8_lossy(&response.body).trim().to_string();
    let value = if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
        text
    } else {
        serde_json::Value::String(text).to_string()
    };
    Ok(done(value))
}

fn metadata(metric: &Metric) -> Vec<(String, String)> {
    vec![("config".into(), metric.config.clone())]
}

weir_plugin_sdk::export_instant_metric_provider!(Probe, measure, metadata);
