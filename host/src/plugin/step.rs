//! The typed handle of a loaded step plugin.

use super::bindings::step::exports::weir::plugin::step::{StepContext, StepResult};
use super::error::{CallError, CallErrorKind};
use super::runtime::{Plugin, PluginInfo};
use super::sandbox::{Call, Reply, execute};
use super::stats::StatsSnapshot;
use super::subject::Rollout;
use std::sync::Arc;

/// A loaded step plugin. Cheap to clone; every call runs in a fresh sandbox.
#[derive(Clone)]
pub struct StepPlugin {
    plugin: Arc<Plugin>,
}

impl StepPlugin {
    pub(crate) fn new(plugin: Arc<Plugin>) -> Self {
        StepPlugin { plugin }
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

    async fn result(&self, call: Call<'_>) -> Result<StepResult, CallError> {
        let method = call.method();
        match execute(&self.plugin, call).await? {
            Reply::Step(r) => Ok(r),
            other => Err(CallError {
                plugin: self.plugin.spec.name.clone(),
                method,
                kind: CallErrorKind::Host(format!("unexpected reply {other:?}")),
                recording: None,
            }),
        }
    }

    /// `run`: starts or continues the step.
    pub async fn run(
        &self,
        rollout: &Rollout,
        context: &StepContext,
    ) -> Result<StepResult, CallError> {
        self.result(Call::StepRun { rollout, context }).await
    }

    /// `terminate`: stops a running step the Rollout left early.
    pub async fn terminate(
        &self,
        rollout: &Rollout,
        context: &StepContext,
    ) -> Result<StepResult, CallError> {
        self.result(Call::StepTerminate { rollout, context }).await
    }

    /// `abort`: undoes the step because the Rollout aborted.
    pub async fn abort(
        &self,
        rollout: &Rollout,
        context: &StepContext,
    ) -> Result<StepResult, CallError> {
        self.result(Call::StepAbort { rollout, context }).await
    }
}
