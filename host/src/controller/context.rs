//! What every part of a reconcile works with, passed as one value, and the
//! error the parts that make children (AnalysisRuns, Experiments) return.

use super::registry::PluginRegistry;
use crate::analysis::condition::ConditionEvaluator;
use crate::cluster::{Cluster, ClusterError};
use chrono::{DateTime, SecondsFormat, Utc};

/// The store, the plugins, the condition evaluator, and the time the pass
/// reads as now (one clock reading per pass, so every deadline in it
/// agrees).
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The store.
    pub cluster: &'a dyn Cluster,
    /// The plugins.
    pub registry: &'a PluginRegistry,
    /// Argo's condition language.
    pub evaluator: &'a ConditionEvaluator,
    /// Now, for this pass.
    pub now: DateTime<Utc>,
}

impl Context<'_> {
    /// `now` as the status writes times (RFC 3339, whole seconds).
    pub fn now_text(&self) -> String {
        self.now.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// Why an AnalysisRun or Experiment could not be made or advanced.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The store refused or failed: kept typed so the retry policy sees a
    /// conflict as a conflict, wherever it happened.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Something the rollout or the child names is wrong or missing (a
    /// template, an argument, a malformed stored object): the message names
    /// it and the fix.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for ChildError {
    fn from(message: String) -> Self {
        ChildError::Invalid(message)
    }
}

impl From<&str> for ChildError {
    fn from(message: &str) -> Self {
        ChildError::Invalid(message.to_string())
    }
}
