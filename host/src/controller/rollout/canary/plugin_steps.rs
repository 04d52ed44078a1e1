//! `plugin` steps (Argo's step plugins): `run` until the step finishes,
//! `terminate` when a running step is left by a full promotion, `abort`
//! for every step that ran when the Rollout aborts. Each call goes through
//! the sandbox; what it returns is kept in `status.canary.stepPluginStatuses`
//! in Argo's shape.
//!
//! As in Argo: `Failed` aborts the Rollout; terminate and abort are called
//! once each and never retried; a new revision or a retry starts with no
//! statuses. Unlike Argo: a call that faults (trap, timeout, limit) or
//! reports an error marks the Rollout with a typed `PluginFailed`
//! condition, kept until the step is tried again after its back-off.

use super::super::pass::{Pass, StepResult, Stop};
use crate::controller::registry::StepPluginEntry;
use crate::controller::routing::PluginFailure;
use crate::controller::spec::PluginStep;
use crate::controller::status::step_plugins::{
    StepOperation, StepPluginPhase, StepPluginStatus, find, upsert,
};
use crate::plugin::{Rollout, StepContext, StepPhase, StepResult as Reply};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

/// Wait before calling `run` again when a running step names no time (Argo's).
const DEFAULT_REQUEUE: Duration = Duration::from_secs(30);
/// The shortest wait between `run` calls of a running step.
const MIN_REQUEUE: Duration = Duration::from_secs(1);
/// Wait before calling `run` again after a call failed (Argo's).
const ERROR_BACKOFF: Duration = Duration::from_secs(30);

/// A duration as a Go duration string (`30s`, `1500ms`).
fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn phase_of(phase: StepPhase) -> StepPluginPhase {
    match phase {
        StepPhase::Running => StepPluginPhase::Running,
        StepPhase::Successful => StepPluginPhase::Successful,
        StepPhase::Failed => StepPluginPhase::Failed,
        StepPhase::Error => StepPluginPhase::Error,
    }
}

/// The plugin's status text: JSON it returned, `null` when none.
fn status_text(entry: &StepPluginStatus) -> String {
    entry
        .status
        .as_ref()
        .map_or_else(|| "null".to_string(), Value::to_string)
}

/// The status document a reply carries (checked JSON by the sandbox's
/// output validation); empty or `null` keeps nothing.
fn kept_status(reply: &Reply) -> Option<Value> {
    let text = reply.status.trim();
    if text.is_empty() {
        return None;
    }
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(|v| !v.is_null())
}

impl Pass<'_> {
    /// What a call for `step` is made with: the contract's Rollout record
    /// and the step context, with the status `entry` (its `run`) kept.
    fn step_call(&self, step: &PluginStep, entry: &StepPluginStatus) -> (Rollout, StepContext) {
        let config = step
            .config
            .as_ref()
            .map_or_else(|| "null".to_string(), Value::to_string);
        let record = Rollout {
            namespace: self.view.namespace.clone(),
            name: self.view.name.clone(),
            uid: self.view.uid.clone(),
            stable_service: self.view.canary.stable_service.clone(),
            canary_service: self.view.canary.canary_service.clone(),
            config: config.clone(),
            object: self.view.object.clone(),
        };
        let context = StepContext {
            plugin_name: step.name.clone(),
            config,
            status: status_text(entry),
        };
        (record, context)
    }

    /// The plugin a step names, loaded; a missing or unloadable plugin
    /// stops the pass with a typed failure, and leaves no status entry.
    async fn step_plugin(&self, name: &str) -> Result<StepPluginEntry, Stop> {
        self.ctx
            .registry
            .step(name)
            .await
            .map_err(|message| Stop::Plugin(load_failure(name, message)))
    }

    /// One pass at the `plugin` step `index`.
    pub(super) async fn plugin_step(
        &mut self,
        index: usize,
        step: &PluginStep,
    ) -> Result<StepResult, Stop> {
        let at = i32::try_from(index).unwrap_or(i32::MAX);
        let entries = &self.status.canary.step_plugin_statuses;
        let previous = find(entries, at, StepOperation::Run).filter(|e| !e.disabled);
        match previous.and_then(|e| e.phase) {
            Some(StepPluginPhase::Successful) => return Ok(StepResult::Next),
            // Already aborting (the abort branch calls the plugins).
            Some(StepPluginPhase::Failed) => {
                return Ok(StepResult::Abort(failed_message(index, previous)));
            }
            _ => {}
        }
        if let Some(due) = previous.and_then(|e| self.next_run(e))
            && due > self.ctx.now
        {
            let failure = previous
                .filter(|e| e.phase == Some(StepPluginPhase::Error))
                .map(|e| failure_of(&step.name, e));
            self.wake(due);
            return match failure {
                // The failure stays on the Rollout until the retry.
                Some(failure) => Err(Stop::Plugin(failure)),
                None => Ok(StepResult::Wait),
            };
        }
        let plugin = match self.step_plugin(&step.name).await? {
            StepPluginEntry::Enabled(plugin) => plugin,
            StepPluginEntry::Disabled => {
                let mut entry = StepPluginStatus::new(at, &step.name, StepOperation::Run);
                entry.disabled = true;
                upsert(&mut self.status.canary.step_plugin_statuses, entry);
                return Ok(StepResult::Next);
            }
        };
        let mut entry = previous.cloned().unwrap_or_else(|| {
            let mut e = StepPluginStatus::new(at, &step.name, StepOperation::Run);
            e.phase = Some(StepPluginPhase::Running);
            e.started_at = Some(self.now_text.clone());
            e
        });
        let (record, context) = self.step_call(step, &entry);
        let reply = plugin.run(&record, &context).await;
        entry.executions = entry.executions.saturating_add(1);
        entry.updated_at = Some(self.now_text.clone());
        entry.backoff = None;
        let outcome = match reply {
            Ok(reply) => {
                let phase = phase_of(reply.phase);
                entry.phase = Some(phase);
                entry.message = reply.message.clone();
                if phase != StepPluginPhase::Error {
                    entry.status = kept_status(&reply);
                }
                match phase {
                    StepPluginPhase::Successful => {
                        entry.finished_at = Some(self.now_text.clone());
                        Ok(StepResult::Next)
                    }
                    StepPluginPhase::Failed => {
                        entry.finished_at = Some(self.now_text.clone());
                        Ok(StepResult::Abort(failed_message(index, Some(&entry))))
                    }
                    StepPluginPhase::Running => {
                        let wait = reply
                            .requeue_after_ms
                            .map_or(DEFAULT_REQUEUE, Duration::from_millis)
                            .max(MIN_REQUEUE);
                        entry.backoff = Some(go_duration(wait));
                        self.wake_after(wait);
                        Ok(StepResult::Wait)
                    }
                    // The plugin could not decide: tried again later, and
                    // said on the Rollout meanwhile.
                    StepPluginPhase::Error => {
                        entry.backoff = Some(go_duration(ERROR_BACKOFF));
                        self.wake_after(ERROR_BACKOFF);
                        Err(Stop::Plugin(PluginFailure {
                            plugin: step.name.clone(),
                            call: "run".into(),
                            reason: "Error".into(),
                            message: reply.message.clone(),
                            recording: None,
                        }))
                    }
                }
            }
            Err(error) => {
                let failure = PluginFailure::from_call(error);
                entry.phase = Some(StepPluginPhase::Error);
                entry.message = format!("{}: {}", failure.reason, failure.message);
                entry.backoff = Some(go_duration(ERROR_BACKOFF));
                self.wake_after(ERROR_BACKOFF);
                Err(Stop::Plugin(failure))
            }
        };
        upsert(&mut self.status.canary.step_plugin_statuses, entry);
        outcome
    }

    /// When a Running or Error entry's next `run` is due.
    fn next_run(&self, entry: &StepPluginStatus) -> Option<DateTime<Utc>> {
        if entry.executions == 0 {
            return None;
        }
        let updated = DateTime::parse_from_rfc3339(entry.updated_at.as_deref()?)
            .ok()?
            .with_timezone(&Utc);
        let backoff = entry
            .backoff
            .as_deref()
            .and_then(|b| crate::analysis::types::parse_duration(b).ok())?;
        updated.checked_add_signed(chrono::Duration::from_std(backoff).ok()?)
    }

    /// The Rollout aborts: `abort` for every plugin step whose `run` was
    /// Running or Successful, last step first, once each (as Argo). A
    /// failing abort (or a plugin that does not load) is recorded (phase
    /// Error) and does not hold the abort up.
    pub(super) async fn abort_plugin_steps(&mut self) {
        let due: Vec<StepPluginStatus> = self
            .status
            .canary
            .step_plugin_statuses
            .iter()
            .rev()
            .filter(|e| e.operation == StepOperation::Run && !e.disabled)
            .filter(|e| {
                matches!(
                    e.phase,
                    Some(StepPluginPhase::Running | StepPluginPhase::Successful)
                )
            })
            .filter(|e| {
                find(
                    &self.status.canary.step_plugin_statuses,
                    e.index,
                    StepOperation::Abort,
                )
                .is_none()
            })
            .cloned()
            .collect();
        for run in due {
            self.finish_plugin_step(&run, StepOperation::Abort).await;
        }
    }

    /// A full promotion leaves a running plugin step: `terminate` the last
    /// one still Running, once (as Argo); a failure is recorded and does
    /// not hold the promotion up.
    pub(super) async fn terminate_plugin_steps(&mut self) {
        let entries = &self.status.canary.step_plugin_statuses;
        let mut target = None;
        for e in entries.iter().rev() {
            if e.operation == StepOperation::Terminate {
                break;
            }
            if e.operation == StepOperation::Run
                && !e.disabled
                && e.phase == Some(StepPluginPhase::Running)
            {
                target = Some(e.clone());
                break;
            }
        }
        if let Some(run) = target
            && find(entries, run.index, StepOperation::Terminate).is_none()
        {
            self.finish_plugin_step(&run, StepOperation::Terminate)
                .await;
        }
    }

    /// One `terminate` or `abort` call for the step `run` records, its
    /// result appended; `Running` counts as Failed (neither may wait).
    async fn finish_plugin_step(&mut self, run: &StepPluginStatus, operation: StepOperation) {
        let index = usize::try_from(run.index).unwrap_or(usize::MAX);
        let Some(step) = self.view.step(index).and_then(|s| s.plugin.clone()) else {
            return;
        };
        let reply: Result<Reply, PluginFailure> = match self.ctx.registry.step(&step.name).await {
            Ok(StepPluginEntry::Disabled) => return,
            Ok(StepPluginEntry::Enabled(plugin)) => {
                let (record, context) = self.step_call(&step, run);
                match operation {
                    StepOperation::Abort => plugin.abort(&record, &context).await,
                    _ => plugin.terminate(&record, &context).await,
                }
                .map_err(PluginFailure::from_call)
            }
            Err(message) => Err(load_failure(&step.name, message)),
        };
        let mut entry = StepPluginStatus::new(run.index, &step.name, operation);
        entry.started_at = Some(self.now_text.clone());
        entry.updated_at = Some(self.now_text.clone());
        entry.finished_at = Some(self.now_text.clone());
        match reply {
            Ok(reply) => {
                entry.phase = Some(match phase_of(reply.phase) {
                    StepPluginPhase::Running => StepPluginPhase::Failed,
                    other => other,
                });
                entry.message = reply.message.clone();
                entry.status = kept_status(&reply);
            }
            Err(failure) => {
                tracing::warn!(rollout = %self.view.name, plugin = %step.name, ?operation, %failure, "step plugin call failed");
                entry.phase = Some(StepPluginPhase::Error);
                entry.message = format!("{}: {}", failure.reason, failure.message);
            }
        }
        upsert(&mut self.status.canary.step_plugin_statuses, entry);
    }
}

/// A step plugin that could not be loaded (not registered, or faulty).
fn load_failure(plugin: &str, message: String) -> PluginFailure {
    PluginFailure {
        plugin: plugin.to_string(),
        call: "load".into(),
        reason: "LoadFailed".into(),
        message,
        recording: None,
    }
}

/// The abort message for a Failed step (Argo's wording).
fn failed_message(index: usize, entry: Option<&StepPluginStatus>) -> String {
    let (name, message) = entry.map_or(("", ""), |e| (e.name.as_str(), e.message.as_str()));
    format!("Step Plugin {} ({name}) failed: {message}", index + 1)
}

/// The failure an Error entry records, as the Rollout's condition shows it.
fn failure_of(plugin: &str, entry: &StepPluginStatus) -> PluginFailure {
    let (reason, message) = entry
        .message
        .split_once(": ")
        .filter(|(reason, _)| !reason.is_empty() && !reason.contains(' '))
        .map_or(("Error", entry.message.as_str()), |(r, m)| (r, m));
    PluginFailure {
        plugin: plugin.to_string(),
        call: "run".into(),
        reason: reason.to_string(),
        message: message.to_string(),
        recording: None,
    }
}
