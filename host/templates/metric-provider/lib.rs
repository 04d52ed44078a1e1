//! {{name}}: a Weir metric provider.
//!
//! It reads a value from a ConfigMap key (`configMap`, `key` in the metric's
//! provider block) and returns it as the measurement; the host then applies
//! the metric's success and failure conditions. Replace the body with your
//! own measurement (HTTP through `weir_plugin_sdk::http`, say).
//! The contract is `wit/weir-plugin.wit` in the Weir repository.

use serde::Deserialize;
use weir_plugin_sdk::objects;
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Guest, Measurement, MeasurementPhase, Metric,
};
use weir_plugin_sdk::types::PluginError;

/// The metric's provider block.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    config_map: String,
    key: String,
}

fn measure(run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> {
    let config: Config = weir_plugin_sdk::parse_config("{{name}} configuration", &metric.config)?;
    let target = objects::object_ref("v1", "ConfigMap", &run.namespace, &config.config_map);
    let object = objects::get_required(&target)?;
    let raw = object["data"][&config.key].as_str().ok_or_else(|| {
        PluginError::NotFound(format!("ConfigMap {} has no key {:?}", config.config_map, config.key))
    })?;
    // Numbers stay numbers; anything else becomes a JSON string.
    let value = match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v) => v.to_string(),
        Err(_) => serde_json::Value::String(raw.to_string()).to_string(),
    };
    Ok(Measurement {
        phase: MeasurementPhase::Successful,
        value: Some(value),
        message: None,
        metadata: vec![],
        resume_after_ms: None,
    })
}

struct Plugin;

impl Guest for Plugin {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }
    fn run(run: AnalysisRun, metric: Metric) -> Result<Measurement, PluginError> {
        measure(&run, &metric)
    }
    fn resume(run: AnalysisRun, metric: Metric, _: Measurement) -> Result<Measurement, PluginError> {
        measure(&run, &metric)
    }
    fn terminate(_: AnalysisRun, _: Metric, measurement: Measurement) -> Result<Measurement, PluginError> {
        Ok(measurement)
    }
    fn garbage_collect(_: AnalysisRun, _: Metric, _: u32) -> Result<(), PluginError> {
        Ok(())
    }
    fn metadata(metric: Metric) -> Vec<(String, String)> {
        vec![("source".into(), metric.config)]
    }
}

weir_plugin_sdk::export_metric_provider!(Plugin);
