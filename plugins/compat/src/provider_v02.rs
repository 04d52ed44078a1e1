// The metric provider against `weir:plugin@0.2.0` (`provider-0-2`):
// included by lib.rs. It measures `value` from its configuration (an
// invalid-config error without one) and keeps the run's name and its
// contract in the measurement's metadata.

wit_bindgen::generate!({
    path: "../../wit/v0.2",
    world: "weir:plugin/metric-provider-plugin@0.2.0",
    generate_all,
});

use exports::weir::plugin::metric_provider::{
    AnalysisRun, Guest, Measurement, MeasurementPhase, Metric,
};
use weir::plugin::types::PluginError;

struct CompatProvider;

impl Guest for CompatProvider {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn run(run: AnalysisRun, metric: Metric) -> Result<Measurement, PluginError> {
        let config: serde_json::Value = serde_json::from_str(&metric.config)
            .map_err(|e| PluginError::InvalidConfig(format!("config: {e}")))?;
        let Some(value) = config.get("value") else {
            return Err(PluginError::InvalidConfig(
                "compat provider: `value` is required".into(),
            ));
        };
        Ok(Measurement {
            phase: MeasurementPhase::Successful,
            value: Some(value.to_string()),
            message: None,
            metadata: vec![
                ("contract".into(), "0.2.0".into()),
                ("run".into(), run.name),
            ],
            resume_after_ms: None,
        })
    }

    fn resume(
        _run: AnalysisRun,
        _metric: Metric,
        measurement: Measurement,
    ) -> Result<Measurement, PluginError> {
        Ok(measurement)
    }

    fn terminate(
        _run: AnalysisRun,
        _metric: Metric,
        measurement: Measurement,
    ) -> Result<Measurement, PluginError> {
        Ok(measurement)
    }

    fn garbage_collect(_run: AnalysisRun, _metric: Metric, _limit: u32) -> Result<(), PluginError> {
        Ok(())
    }

    fn metadata(_metric: Metric) -> Vec<(String, String)> {
        vec![("contract".into(), "0.2.0".into())]
    }
}

export!(CompatProvider);
