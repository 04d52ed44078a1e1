//! Contracts 0.1 and 0.2 on a 0.3 host.
//!
//! - **Host interfaces.** 0.2's `log`, `registration` and `cluster`, and
//!   0.1's `log` and `cluster`, are served by the same code as 0.3's (the
//!   Store's data does not know which version called): 0.1 through 0.2,
//!   0.2 through 0.3.
//! - **Values.** 0.2's records are 0.3's but for `rollout`, which carries
//!   the whole object as text: the others are carried across through their
//!   serde form (the same field and case names on both sides), the error
//!   and the object references field by field. 0.1's records are 0.2's,
//!   but for the metric provider's, which live in its own interface.

use super::bindings::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, MeasurementPhase, Metric,
};
use super::bindings::types::PluginError as ReportedError;
use super::bindings::v0_1::provider::exports::weir::plugin::metric_provider as provider01;
use super::bindings::v0_1::router::weir::plugin::{cluster as cluster01, log as log01};
use super::bindings::v0_2::router::weir::plugin::{
    cluster as cluster02, log as log02, registration as registration02, types as types02,
};
use super::bindings::{cluster, log, registration};
use super::state::CallState;
use super::subject::Rollout;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A 0.1 measurement.
pub(crate) type Measurement01 = provider01::Measurement;

/// 0.2's (and 0.1's) error.
pub(crate) type ReportedError02 = types02::PluginError;

type ImportResult02<T> = wasmtime::Result<Result<T, ReportedError02>>;

/// A 0.2 (or 0.1) plugin's error in 0.3's terms.
pub(crate) fn error_from_02(error: ReportedError02) -> ReportedError {
    match error {
        ReportedError02::InvalidConfig(m) => ReportedError::InvalidConfig(m),
        ReportedError02::NotFound(m) => ReportedError::NotFound(m),
        ReportedError02::Conflict(m) => ReportedError::Conflict(m),
        ReportedError02::Denied(m) => ReportedError::Denied(m),
        ReportedError02::Transient(m) => ReportedError::Transient(m),
        ReportedError02::Internal(m) => ReportedError::Internal(m),
    }
}

fn error_to_02(error: ReportedError) -> ReportedError02 {
    match error {
        ReportedError::InvalidConfig(m) => ReportedError02::InvalidConfig(m),
        ReportedError::NotFound(m) => ReportedError02::NotFound(m),
        ReportedError::Conflict(m) => ReportedError02::Conflict(m),
        ReportedError::Denied(m) => ReportedError02::Denied(m),
        ReportedError::Transient(m) => ReportedError02::Transient(m),
        ReportedError::Internal(m) => ReportedError02::Internal(m),
    }
}

/// A 0.3 import's answer as 0.2 spells it.
fn answer_to_02<T>(answer: wasmtime::Result<Result<T, ReportedError>>) -> ImportResult02<T> {
    answer.map(|r| r.map_err(error_to_02))
}

/// A record carried to the same-shaped record of another contract version,
/// through its serde form. The shapes are the same by construction (the
/// frozen WIT and the current one spell them alike), so a failure is a bug
/// in Weir, reported as a host error rather than a panic.
pub(crate) fn carried<A: Serialize, B: DeserializeOwned>(value: &A) -> wasmtime::Result<B> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| wasmtime::format_err!("carrying a value across contract versions: {e}"))
}

/// The Rollout as 0.1 and 0.2 receive it: the whole object, as text.
pub(crate) fn rollout_to_02(rollout: &Rollout) -> types02::Rollout {
    types02::Rollout {
        namespace: rollout.namespace.clone(),
        name: rollout.name.clone(),
        uid: rollout.uid.clone(),
        stable_service: rollout.stable_service.clone(),
        canary_service: rollout.canary_service.clone(),
        config: rollout.config.clone(),
        object: rollout.object_text(),
    }
}

impl types02::Host for CallState {}

impl log02::Host for CallState {
    async fn log(&mut self, level: log02::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log02::Level::Trace => log::Level::Trace,
            log02::Level::Debug => log::Level::Debug,
            log02::Level::Info => log::Level::Info,
            log02::Level::Warn => log::Level::Warn,
            log02::Level::Error => log::Level::Error,
        };
        log::Host::log(self, level, message).await
    }
}

impl registration02::Host for CallState {
    async fn args(&mut self) -> wasmtime::Result<Vec<String>> {
        registration::Host::args(self).await
    }
}

fn object_ref_02(r: cluster02::ObjectRef) -> cluster::ObjectRef {
    cluster::ObjectRef {
        api_version: r.api_version,
        kind: r.kind,
        namespace: r.namespace,
        name: r.name,
    }
}

impl cluster02::Host for CallState {
    async fn get(&mut self, object: cluster02::ObjectRef) -> ImportResult02<String> {
        answer_to_02(cluster::Host::get(self, object_ref_02(object)).await)
    }

    async fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: String,
        label_selector: Option<String>,
    ) -> ImportResult02<Vec<String>> {
        answer_to_02(cluster::Host::list(self, api_version, kind, namespace, label_selector).await)
    }

    async fn create(&mut self, object: String) -> ImportResult02<String> {
        answer_to_02(cluster::Host::create(self, object).await)
    }

    async fn update(&mut self, object: String) -> ImportResult02<String> {
        answer_to_02(cluster::Host::update(self, object).await)
    }

    async fn patch(
        &mut self,
        object: cluster02::ObjectRef,
        patch_type: cluster02::PatchType,
        patch: String,
    ) -> ImportResult02<String> {
        let patch_type = match patch_type {
            cluster02::PatchType::Merge => cluster::PatchType::Merge,
            cluster02::PatchType::Json => cluster::PatchType::Json,
        };
        answer_to_02(cluster::Host::patch(self, object_ref_02(object), patch_type, patch).await)
    }

    async fn delete(&mut self, object: cluster02::ObjectRef) -> ImportResult02<()> {
        answer_to_02(cluster::Host::delete(self, object_ref_02(object)).await)
    }
}

fn object_ref_01(r: cluster01::ObjectRef) -> cluster02::ObjectRef {
    cluster02::ObjectRef {
        api_version: r.api_version,
        kind: r.kind,
        namespace: r.namespace,
        name: r.name,
    }
}

impl log01::Host for CallState {
    async fn log(&mut self, level: log01::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log01::Level::Trace => log02::Level::Trace,
            log01::Level::Debug => log02::Level::Debug,
            log01::Level::Info => log02::Level::Info,
            log01::Level::Warn => log02::Level::Warn,
            log01::Level::Error => log02::Level::Error,
        };
        log02::Host::log(self, level, message).await
    }
}

impl cluster01::Host for CallState {
    async fn get(&mut self, object: cluster01::ObjectRef) -> ImportResult02<String> {
        cluster02::Host::get(self, object_ref_01(object)).await
    }

    async fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: String,
        label_selector: Option<String>,
    ) -> ImportResult02<Vec<String>> {
        cluster02::Host::list(self, api_version, kind, namespace, label_selector).await
    }

    async fn create(&mut self, object: String) -> ImportResult02<String> {
        cluster02::Host::create(self, object).await
    }

    async fn update(&mut self, object: String) -> ImportResult02<String> {
        cluster02::Host::update(self, object).await
    }

    async fn patch(
        &mut self,
        object: cluster01::ObjectRef,
        patch_type: cluster01::PatchType,
        patch: String,
    ) -> ImportResult02<String> {
        let patch_type = match patch_type {
            cluster01::PatchType::Merge => cluster02::PatchType::Merge,
            cluster01::PatchType::Json => cluster02::PatchType::Json,
        };
        cluster02::Host::patch(self, object_ref_01(object), patch_type, patch).await
    }

    async fn delete(&mut self, object: cluster01::ObjectRef) -> ImportResult02<()> {
        cluster02::Host::delete(self, object_ref_01(object)).await
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

/// A 0.1 measurement in the host's types.
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
