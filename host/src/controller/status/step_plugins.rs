//! `status.canary.stepPluginStatuses`: what each step plugin call left, in
//! Argo's shape (`StepPluginStatus`), one entry per step and operation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which call an entry records (Argo's `StepPluginOperation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOperation {
    /// `run`, called until the step finishes.
    Run,
    /// `terminate`, once, when a running step is left early.
    Terminate,
    /// `abort`, once, when the Rollout aborts.
    Abort,
}

/// Where a step plugin call stands (Argo's `StepPluginPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepPluginPhase {
    /// Not finished; called again after `backoff`.
    Running,
    /// Done.
    Successful,
    /// Done, and the Rollout aborts.
    Failed,
    /// The call failed (a fault or a reported error); retried after `backoff`.
    Error,
}

/// One entry of `status.canary.stepPluginStatuses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepPluginStatus {
    /// The step's index (0-based).
    pub index: i32,
    /// The plugin's registered name.
    pub name: String,
    /// The call this entry records.
    pub operation: StepOperation,
    /// Where it stands (absent for a disabled plugin's entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StepPluginPhase>,
    /// The plugin's message, or the error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// First call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Last call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// When it finished (Successful or Failed; always for terminate and abort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// How long after `updatedAt` the next `run` is due (a Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// How many times `run` was called.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub executions: i32,
    /// The plugin is registered `disabled: true`; the step was skipped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// The plugin's own state, handed back on its next call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl StepPluginStatus {
    /// A fresh entry for `operation` on step `index`.
    pub fn new(index: i32, name: &str, operation: StepOperation) -> Self {
        StepPluginStatus {
            index,
            name: name.to_string(),
            operation,
            phase: None,
            message: String::new(),
            started_at: None,
            updated_at: None,
            finished_at: None,
            backoff: None,
            executions: 0,
            disabled: false,
            status: None,
        }
    }
}

/// The entry for step `index` and `operation`, if there is one.
pub fn find(
    entries: &[StepPluginStatus],
    index: i32,
    operation: StepOperation,
) -> Option<&StepPluginStatus> {
    entries
        .iter()
        .find(|e| e.index == index && e.operation == operation)
}

/// Replaces the entry for the same step and operation in place, or appends.
pub fn upsert(entries: &mut Vec<StepPluginStatus>, entry: StepPluginStatus) {
    match entries
        .iter_mut()
        .find(|e| e.index == entry.index && e.operation == entry.operation)
    {
        Some(slot) => *slot = entry,
        None => entries.push(entry),
    }
}
