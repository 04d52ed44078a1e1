//! The typed handle of a loaded metric-provider plugin.

use super::bindings::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, Metric,
};
use super::error::{CallError, CallErrorKind};
use super::runtime::{Plugin, PluginInfo};
use super::sandbox::{Call, Reply, execute};
use super::stats::StatsSnapshot;
use std::sync::Arc;

/// A loaded metric provider. Cheap to clone; every call runs in a fresh sandbox.
#[derive(Clone)]
pub struct MetricProvider {
    plugin: Arc<Plugin>,
}

impl MetricProvider {
    pub(crate) fn new(plugin: Arc<Plugin>) -> Self {
        MetricProvider { plugin }
    }

    /// Why the plugin is in quarantine, while it is.
    pub fn quarantined(&self) -> Option<String> {
        self.plugin.quarantined()
    }

    /// What the registration's shadow candidate has done, if it has one.
    pub fn shadow_report(&self) -> Option<crate::plugin::ShadowReport> {
        self.plugin.shadow_report()
    }

    /// Facts about the plugin.
    pub fn info(&self) -> PluginInfo {
        self.plugin.info()
    }

    /// Call counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.plugin.stats.snapshot()
    }

    fn unexpected(&self, method: &'static str, reply: Reply) -> CallError {
        CallError {
            plugin: self.plugin.spec.name.clone(),
            method,
            kind: CallErrorKind::Host(format!("unexpected reply {reply:?}")),
            recording: None,
        }
    }

    async fn measurement(&self, call: Call<'_>) -> Result<Measurement, CallError> {
        let method = call.method();
        match execute(&self.plugin, call).await? {
            Reply::Measurement(m) => Ok(m),
            other => Err(self.unexpected(method, other)),
        }
    }

    /// `run`: starts a measurement.
    pub async fn run(&self, run: &AnalysisRun, metric: &Metric) -> Result<Measurement, CallError> {
        self.measurement(Call::Run { run, metric }).await
    }

    /// `resume`: continues a running measurement.
    pub async fn resume(
        &self,
        run: &AnalysisRun,
        metric: &Metric,
        measurement: &Measurement,
    ) -> Result<Measurement, CallError> {
        self.measurement(Call::Resume {
            run,
            metric,
            measurement,
        })
        .await
    }

    /// `terminate`: stops a running measurement.
    pub async fn terminate(
        &self,
        run: &AnalysisRun,
        metric: &Metric,
        measurement: &Measurement,
    ) -> Result<Measurement, CallError> {
        self.measurement(Call::Terminate {
            run,
            metric,
            measurement,
        })
        .await
    }

    /// `garbage-collect`: keeps the last `limit` measurements' leftovers.
    pub async fn garbage_collect(
        &self,
        run: &AnalysisRun,
        metric: &Metric,
        limit: u32,
    ) -> Result<(), CallError> {
        match execute(&self.plugin, Call::GarbageCollect { run, metric, limit }).await? {
            Reply::Unit => Ok(()),
            other => Err(self.unexpected("garbage-collect", other)),
        }
    }

    /// `metadata`.
    pub async fn metadata(&self, metric: &Metric) -> Result<Vec<(String, String)>, CallError> {
        match execute(&self.plugin, Call::Metadata { metric }).await? {
            Reply::Metadata(m) => Ok(m),
            other => Err(self.unexpected("metadata", other)),
        }
    }
}
