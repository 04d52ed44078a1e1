//! Bindings for writing Weir plugins in Rust.
//!
//! A traffic router implements [`router::exports::weir::plugin::traffic_router::Guest`]
//! and registers it with [`export_traffic_router!`]; a metric provider implements
//! [`provider::exports::weir::plugin::metric_provider::Guest`] and registers it with
//! [`export_metric_provider!`]; a step plugin implements
//! [`step::exports::weir::plugin::step::Guest`] and registers it with
//! [`export_step_plugin!`]. All build with `cargo build --target wasm32-wasip2`.
//! The contract itself, with every rule a plugin lives by, is `wit/weir-plugin.wit`
//! (`weir:plugin@0.3.0`; this SDK's version line follows it).

/// Bindings for the `traffic-router-plugin` world.
pub mod router {
    wit_bindgen::generate!({
        path: "wit",
        world: "weir:plugin/traffic-router-plugin@0.3.0",
        pub_export_macro: true,
        export_macro_name: "export_traffic_router",
        default_bindings_module: "weir_plugin_sdk::router",
    });
}

/// Bindings for the `metric-provider-plugin` world (including `wasi:http`).
pub mod provider {
    wit_bindgen::generate!({
        path: "wit",
        world: "weir:plugin/metric-provider-plugin@0.3.0",
        pub_export_macro: true,
        export_macro_name: "export_metric_provider",
        default_bindings_module: "weir_plugin_sdk::provider",
        with: {
            "weir:plugin/types@0.3.0": crate::router::weir::plugin::types,
            "weir:plugin/log@0.3.0": crate::router::weir::plugin::log,
            "weir:plugin/registration@0.3.0": crate::router::weir::plugin::registration,
            "weir:plugin/cluster@0.3.0": crate::router::weir::plugin::cluster,
        },
        generate_all,
    });
}

/// Bindings for the `step-plugin` world (including `wasi:http`, shared
/// with [`provider`], so [`http`] works in step plugins too).
pub mod step {
    wit_bindgen::generate!({
        path: "wit",
        world: "weir:plugin/step-plugin@0.3.0",
        pub_export_macro: true,
        export_macro_name: "export_step_plugin",
        default_bindings_module: "weir_plugin_sdk::step",
        with: {
            "weir:plugin/types@0.3.0": crate::router::weir::plugin::types,
            "weir:plugin/log@0.3.0": crate::router::weir::plugin::log,
            "weir:plugin/registration@0.3.0": crate::router::weir::plugin::registration,
            "weir:plugin/cluster@0.3.0": crate::router::weir::plugin::cluster,
            "weir:plugin/rollout-object@0.3.0": crate::router::weir::plugin::rollout_object,
            "wasi:http/types@0.2.12": crate::provider::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.12": crate::provider::wasi::http::outgoing_handler,
            "wasi:io/error@0.2.12": crate::provider::wasi::io::error,
            "wasi:io/poll@0.2.12": crate::provider::wasi::io::poll,
            "wasi:io/streams@0.2.12": crate::provider::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::provider::wasi::clocks::monotonic_clock,
        },
    });
}

pub mod duration;
pub mod http;
pub mod objects;
pub mod secrets;

pub use provider::export_metric_provider;
pub use router::export_traffic_router;
pub use router::weir::plugin::cluster;
pub use router::weir::plugin::log;
pub use router::weir::plugin::registration;
pub use router::weir::plugin::rollout_object;
pub use router::weir::plugin::types;
pub use step::export_step_plugin;
pub use types::PluginError;

/// Parses a plugin's JSON configuration into `T`, turning a parse failure into
/// an `invalid-config` error that says what was wrong and where.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    what: &str,
    json: &str,
) -> Result<T, PluginError> {
    serde_json::from_str(json).map_err(|e| PluginError::InvalidConfig(format!("{what}: {e}")))
}

/// The value of `key=value` among the registration's `args` (the last
/// one given wins), if any.
pub fn registration_arg(key: &str) -> Option<String> {
    registration::args()
        .iter()
        .rev()
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

/// A successful measurement of `value` (JSON text) with `metadata`, for
/// the host to judge against the metric's conditions.
pub fn measured(
    value: String,
    metadata: Vec<(String, String)>,
) -> provider::exports::weir::plugin::metric_provider::Measurement {
    provider::exports::weir::plugin::metric_provider::Measurement {
        phase: provider::exports::weir::plugin::metric_provider::MeasurementPhase::Successful,
        value: Some(value),
        message: None,
        metadata,
        resume_after_ms: None,
    }
}

/// Logs one line at `info` level.
pub fn info(message: &str) {
    log::log(log::Level::Info, message);
}

/// Exports a metric provider whose measurements finish within one call:
/// `run` and `resume` both call `measure(&run, &metric)`, `terminate`
/// returns the measurement as it was, `garbage-collect` has nothing to
/// clean, and `metadata` calls `metadata(&metric)`.
///
/// ```ignore
/// struct Mine;
/// fn measure(run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> { ... }
/// fn metadata(metric: &Metric) -> Vec<(String, String)> { vec![] }
/// weir_plugin_sdk::export_instant_metric_provider!(Mine, measure, metadata);
/// ```
/// With two arguments, `metadata` returns none.
#[macro_export]
macro_rules! export_instant_metric_provider {
    ($ty:ident, $measure:path) => {
        fn __weir_no_metadata(
            _metric: &$crate::provider::exports::weir::plugin::metric_provider::Metric,
        ) -> ::std::vec::Vec<(::std::string::String, ::std::string::String)> {
            ::std::vec::Vec::new()
        }
        $crate::export_instant_metric_provider!($ty, $measure, __weir_no_metadata);
    };
    ($ty:ident, $measure:path, $metadata:path) => {
        impl $crate::provider::exports::weir::plugin::metric_provider::Guest for $ty {
            fn init(
                _args: ::std::vec::Vec<::std::string::String>,
            ) -> ::std::result::Result<(), $crate::PluginError> {
                Ok(())
            }
            fn run(
                run: $crate::provider::exports::weir::plugin::metric_provider::AnalysisRun,
                metric: $crate::provider::exports::weir::plugin::metric_provider::Metric,
            ) -> ::std::result::Result<
                $crate::provider::exports::weir::plugin::metric_provider::Measurement,
                $crate::PluginError,
            > {
                $measure(&run, &metric)
            }
            fn resume(
                run: $crate::provider::exports::weir::plugin::metric_provider::AnalysisRun,
                metric: $crate::provider::exports::weir::plugin::metric_provider::Metric,
                _measurement: $crate::provider::exports::weir::plugin::metric_provider::Measurement,
            ) -> ::std::result::Result<
                $crate::provider::exports::weir::plugin::metric_provider::Measurement,
                $crate::PluginError,
            > {
                $measure(&run, &metric)
            }
            fn terminate(
                _run: $crate::provider::exports::weir::plugin::metric_provider::AnalysisRun,
                _metric: $crate::provider::exports::weir::plugin::metric_provider::Metric,
                measurement: $crate::provider::exports::weir::plugin::metric_provider::Measurement,
            ) -> ::std::result::Result<
                $crate::provider::exports::weir::plugin::metric_provider::Measurement,
                $crate::PluginError,
            > {
                Ok(measurement)
            }
            fn garbage_collect(
                _run: $crate::provider::exports::weir::plugin::metric_provider::AnalysisRun,
                _metric: $crate::provider::exports::weir::plugin::metric_provider::Metric,
                _limit: u32,
            ) -> ::std::result::Result<(), $crate::PluginError> {
                Ok(())
            }
            fn metadata(
                metric: $crate::provider::exports::weir::plugin::metric_provider::Metric,
            ) -> ::std::vec::Vec<(::std::string::String, ::std::string::String)> {
                $metadata(&metric)
            }
        }
        $crate::export_metric_provider!($ty);
    };
}
