//! The typed handle of Weir's condition evaluator: every condition runs in
//! a fresh instance of `plugins/condition` under the evaluator's limits.

pub use super::bindings::condition::exports::weir::condition::evaluator::ConditionError as ConditionFailure;
use super::error::{CallError, CallErrorKind};
use super::runtime::{Plugin, PluginInfo};
use super::sandbox::{Call, Reply, execute};
use super::stats::StatsSnapshot;
use std::sync::Arc;

/// A loaded condition evaluator. Cheap to clone.
#[derive(Clone)]
pub struct ConditionPlugin {
    plugin: Arc<Plugin>,
}

impl ConditionPlugin {
    pub(crate) fn new(plugin: Arc<Plugin>) -> Self {
        ConditionPlugin { plugin }
    }

    /// Facts about the component.
    pub fn info(&self) -> PluginInfo {
        self.plugin.info()
    }

    /// Call counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.plugin.stats.snapshot()
    }

    /// The limits each evaluation runs under.
    pub fn limits(&self) -> &super::Limits {
        &self.plugin.spec.limits
    }

    /// Evaluates `condition` with `result` bound to `measured` (JSON text):
    /// the verdict or why there is none, or why the sandbox stopped it.
    pub async fn evaluate(
        &self,
        condition: &str,
        measured: &str,
    ) -> Result<Result<bool, ConditionFailure>, CallError> {
        match execute(
            &self.plugin,
            Call::Evaluate {
                condition,
                measured,
            },
        )
        .await?
        {
            Reply::Verdict(verdict) => Ok(verdict),
            other => Err(CallError {
                plugin: self.plugin.spec.name.clone(),
                method: "evaluate",
                kind: CallErrorKind::Host(format!("unexpected reply {other:?}")),
                recording: None,
            }),
        }
    }
}
