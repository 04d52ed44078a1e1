//! Contract 0.1 on a 0.2 host: the 0.1 `log` and `cluster` imports served
//! by the same code as 0.2's (the Store's data does not know which version
//! called), and the metric provider's records carried across. The two
//! versions' shapes are identical, so every conversion is field by field
//! and total.

use super::bindings::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, MeasurementPhase, Metric,
};
use super::bindings::types::PluginError as ReportedError;
use super::bindings::v0_1::provider::exports::weir::plugin::metric_provider as provider01;
use super::bindings::v0_1::router::weir::plugin::{cluster as cluster01, log as log01};
use super::bindings::{cluster, log};
use super::state::CallState;

/// A 0.1 measurement.
pub(crate) type Measurement01 = provider01::Measurement;

type ImportResult<T> = wasmtime::Result<Result<T, ReportedError>>;

fn object_ref(r: cluster01::ObjectRef) -> cluster::ObjectRef {
    cluster::ObjectRef {
        api_version: r.api_version,
        kind: r.kind,
        namespace: r.namespace,
        name: r.name,
    }
}

impl log01::Host for CallState {
    async fn log(&mut self, level: log01::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log01::Level::Trace => log::Level::Trace,
            log01::Level::Debug => log::Level::Debug,
            log01::Level::Info => log::Level::Info,
            log01::Level::Warn => log::Level::Warn,
            log01::Level::Error => log::Level::Error,
        };
        log::Host::log(self, level, message).await
    }
}

impl cluster01::Host for CallState {
    async fn get(&mut self, object: cluster01::ObjectRef) -> ImportResult<String> {
        cluster::Host::get(self, object_ref(object)).await
    }

    async fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: String,
        label_selector: Option<String>,
    ) -> ImportResult<Vec<String>> {
        cluster::Host::list(self, api_version, kind, namespace, label_selector).await
    }

    async fn create(&mut self, object: String) -> ImportResult<String> {
        cluster::Host::create(self, object).await
    }

    async fn update(&mut self, object: String) -> ImportResult<String> {
        cluster::Host::update(self, object).await
    }

    async fn patch(
        &mut self,
        object: cluster01::ObjectRef,
        patch_type: cluster01::PatchType,
        patch: String,
    ) -> ImportResult<String> {
        let patch_type = match patch_type {
            cluster01::PatchType::Merge => cluster::PatchType::Merge,
            cluster01::PatchType::Json => cluster::PatchType::Json,
        };
        cluster::Host::patch(self, object_ref(object), patch_type, patch).await
    }

    async fn delete(&mut self, object: cluster01::ObjectRef) -> ImportResult<()> {
        cluster::Host::delete(self, object_ref(object)).await
    }
}

/// An AnalysisRun as 0.1 spells it.
pub(crate) fn run_to_01(run: &AnalysisRun) -> provider01::AnalysisRun {
    provider01::AnalysisRun {
        namespace: run.namespace.clone(),
        name: run.name.clone(),
        uid: run.uid.clone(),
        object: run.object.clone(),
    }
}

/// A metric as 0.1 spells it.
pub(crate) fn metric_to_01(metric: &Metric) -> provider01::Metric {
    provider01::Metric {
        name: metric.name.clone(),
        config: metric.config.clone(),
        object: metric.object.clone(),
    }
}

/// A measurement as 0.1 spells it.
pub(crate) fn measurement_to_01(m: &Measurement) -> provider01::Measurement {
    provider01::Measurement {
        phase: match m.phase {
            MeasurementPhase::Running => provider01::MeasurementPhase::Running,
            MeasurementPhase::Successful => provider01::MeasurementPhase::Successful,
            MeasurementPhase::Failed => provider01::MeasurementPhase::Failed,
            MeasurementPhase::Error => provider01::MeasurementPhase::Error,
            MeasurementPhase::Inconclusive => provider01::MeasurementPhase::Inconclusive,
        },
        value: m.value.clone(),
        message: m.message.clone(),
        metadata: m.metadata.clone(),
        resume_after_ms: m.resume_after_ms,
    }
}

/// A 0.1 measurement in the host's (0.2) types.
pub(crate) fn measurement_from_01(m: provider01::Measurement) -> Measurement {
    Measurement {
        phase: match m.phase {
            provider01::MeasurementPhase::Running => MeasurementPhase::Running,
            provider01::MeasurementPhase::Successful => MeasurementPhase::Successful,
            provider01::MeasurementPhase::Failed => MeasurementPhase::Failed,
            provider01::MeasurementPhase::Error => MeasurementPhase::Error,
            provider01::MeasurementPhase::Inconclusive => MeasurementPhase::Inconclusive,
        },
        value: m.value,
        message: m.message,
        metadata: m.metadata,
        resume_after_ms: m.resume_after_ms,
    }
}
