//! The state of one pass over one Rollout, and what every strategy does
//! with it: waking later, waiting on pods, pausing, naming and running
//! AnalysisRuns.

use super::names::fresh_name;
use crate::cluster::ClusterError;
use crate::controller::analysis_runs::{
    Advanced, RunKind, RunRequest, ensure_and_advance, terminate_run,
};
use crate::controller::children::{replica_set_name, select_hash};
use crate::controller::context::{ChildError, Context};
use crate::controller::routing::PluginFailure;
use crate::controller::spec::{RolloutAnalysis, RolloutView, Strategy};
use crate::controller::status::{
    AnalysisRunRef, PauseCondition, RolloutPhase, RolloutStatus, condition, make_condition,
};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Pause reasons (Argo's).
pub(super) const PAUSE_STEP: &str = "CanaryPauseStep";
pub(super) const PAUSE_INCONCLUSIVE: &str = "InconclusiveAnalysisRun";
pub(super) const PAUSE_SPEC: &str = "PausedBySpec";
pub(super) const PAUSE_BLUE_GREEN: &str = "BlueGreenPause";

/// When nothing else says when to look again at a waiting rollout.
pub(super) const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The Progressing reason while pods are not yet available (Argo's).
pub(super) const NOT_AVAILABLE: &str = "ReplicaSetNotAvailable";
/// The Progressing reason once the progress deadline has passed (Argo's).
pub(super) const DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// The state of one pass over one rollout.
pub(super) struct Pass<'a> {
    /// The store, the plugins, and now.
    pub ctx: Context<'a>,
    /// The Rollout as read.
    pub view: &'a RolloutView,
    /// The status being built (written once, at the end).
    pub status: RolloutStatus,
    /// `ctx.now` as the status writes times.
    pub now_text: String,
    /// The earliest time something this pass waits on is due.
    pub wake_at: Option<DateTime<Utc>>,
    /// A final phase and message (Healthy, or Degraded after an abort).
    pub settled: Option<(RolloutPhase, String)>,
    /// What the pass waits on (pods to become available), if anything.
    pub waiting: Option<String>,
}

/// Why a pass stopped early.
#[derive(Debug)]
pub(super) enum Stop {
    /// A router or provider failed.
    Plugin(PluginFailure),
    /// The store refused or failed a write; nothing about the rollout is wrong.
    Cluster(ClusterError),
    /// Something the rollout names is wrong or missing.
    Failed {
        reason: &'static str,
        message: String,
    },
}

impl From<ClusterError> for Stop {
    fn from(e: ClusterError) -> Self {
        match e {
            // Not transient: the operator must grant something. Say so on the rollout.
            ClusterError::Forbidden(message) => Stop::Failed {
                reason: "Forbidden",
                message,
            },
            // Not transient either: the server (or the store) refuses what
            // the rollout asks for. Retrying unchanged cannot help; say what
            // and which field, and back off.
            ClusterError::Invalid(message) => Stop::Failed {
                reason: "Invalid",
                message,
            },
            other => Stop::Cluster(other),
        }
    }
}

impl From<PluginFailure> for Stop {
    fn from(e: PluginFailure) -> Self {
        Stop::Plugin(e)
    }
}

/// A spec that does not hold (`reason` is the condition's reason).
pub(super) fn failed(reason: &'static str) -> impl Fn(String) -> Stop {
    move |message| Stop::Failed { reason, message }
}

/// An AnalysisRun or Experiment that could not be made or advanced: a
/// store error keeps its retry policy (a conflict is retried quietly,
/// wherever it happened); anything else is the rollout's `reason`.
pub(super) fn child_failed(reason: &'static str) -> impl Fn(ChildError) -> Stop {
    move |e| match e {
        ChildError::Cluster(e) => Stop::from(e),
        ChildError::Invalid(message) => Stop::Failed { reason, message },
    }
}

/// A Service the rollout names is missing: say which.
pub(super) fn missing_service(e: ClusterError) -> Stop {
    match e {
        ClusterError::NotFound(message) => Stop::Failed {
            reason: "ServiceNotFound",
            message,
        },
        other => Stop::from(other),
    }
}

/// What a step decided.
pub(super) enum StepResult {
    Next,
    Wait,
    Abort(String),
}

/// Whether the pods a step needs are there.
pub(super) enum Availability {
    /// Available.
    Ready,
    /// Not yet; the rollout waits (and is told when to look again).
    Waiting,
    /// Not within `progressDeadlineSeconds`, and the rollout aborts.
    Abort(String),
}

impl Pass<'_> {
    pub(super) fn wake(&mut self, at: DateTime<Utc>) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    pub(super) fn wake_after(&mut self, d: Duration) {
        let at = chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| self.ctx.now.checked_add_signed(d))
            .unwrap_or(self.ctx.now);
        self.wake(at);
    }

    pub(super) fn steps(&self) -> usize {
        self.view.canary.steps.len()
    }

    /// Whether `desired` pods of the ReplicaSet of `hash` are available, as
    /// its controller reports: nothing moves to pods that are not (Argo
    /// gives no weight to a canary, and scales no old ReplicaSet down,
    /// before the new one is available). While waiting, the Progressing
    /// condition says so; past `progressDeadlineSeconds` it says the
    /// deadline was exceeded, and with `progressDeadlineAbort` the rollout
    /// aborts.
    pub(super) async fn availability(
        &mut self,
        hash: &str,
        desired: i32,
    ) -> Result<Availability, Stop> {
        let available =
            crate::controller::children::available_replicas(self.ctx.cluster, self.view, hash)
                .await?;
        Ok(self.availability_of(hash, desired, available))
    }

    /// [`Self::availability`] from a count already read.
    pub(super) fn availability_of(
        &mut self,
        hash: &str,
        desired: i32,
        available: i64,
    ) -> Availability {
        if available >= i64::from(desired) {
            return Availability::Ready;
        }
        let name = replica_set_name(&self.view.name, hash);
        let waiting =
            format!("waiting for ReplicaSet {name} to be available ({available}/{desired} pods)");
        // When the wait began: the condition's transition time, kept while
        // it stays this condition.
        let since = self
            .status
            .condition(condition::PROGRESSING)
            .filter(|c| c.reason == NOT_AVAILABLE || c.reason == DEADLINE_EXCEEDED)
            .and_then(|c| DateTime::parse_from_rfc3339(&c.last_transition_time).ok())
            .map(|t| t.with_timezone(&Utc));
        let deadline = chrono::Duration::from_std(self.view.progress_deadline)
            .unwrap_or(chrono::Duration::MAX);
        let exceeded = since.is_some_and(|t| self.ctx.now - t >= deadline);
        let (status_true, reason) = if exceeded {
            (false, DEADLINE_EXCEEDED)
        } else {
            (true, NOT_AVAILABLE)
        };
        if since.is_none() {
            self.status.clear_condition(condition::PROGRESSING);
        }
        // The transition time of the wait survives the switch to exceeded.
        let began = self
            .status
            .condition(condition::PROGRESSING)
            .map(|c| c.last_transition_time.clone());
        self.status.set_condition(
            make_condition(condition::PROGRESSING, status_true, reason, waiting.clone()),
            &self.now_text,
        );
        if let (Some(began), Some(c)) = (
            began,
            self.status
                .conditions
                .iter_mut()
                .find(|c| c.kind == condition::PROGRESSING),
        ) {
            c.last_transition_time = began;
        }
        if exceeded {
            let message = format!(
                "{reason}: ReplicaSet {name} has not been available for {}s ({available}/{desired} pods)",
                self.view.progress_deadline.as_secs()
            );
            if self.view.progress_deadline_abort {
                return Availability::Abort(message);
            }
            self.waiting = Some(message);
        } else {
            self.waiting = Some(waiting);
            if let Some(t) = since {
                self.wake(t + deadline);
            }
        }
        // A change to the ReplicaSet wakes the rollout (see the manager);
        // this is the fallback should that event be missed.
        self.wake_after(Duration::from_secs(5));
        Availability::Waiting
    }

    pub(super) fn has_pause(&self, reason: &str) -> bool {
        self.status
            .pause_conditions
            .iter()
            .any(|p| p.reason == reason)
    }

    pub(super) fn add_pause(&mut self, reason: &str) {
        self.status.pause_conditions.push(PauseCondition {
            reason: reason.into(),
            start_time: self.now_text.clone(),
        });
        self.status.controller_pause = true;
    }

    /// A promote cleared the controller's pause.
    pub(super) fn promoted_past_pause(&self) -> bool {
        self.status.controller_pause && self.status.pause_conditions.is_empty()
    }

    /// The name of the AnalysisRun or Experiment for `base` (see
    /// [`fresh_name`]), `current` being the one the status names.
    pub(super) async fn name_for(
        &self,
        kind: &str,
        base: &str,
        current: Option<&str>,
    ) -> Result<String, Stop> {
        fresh_name(self.ctx.cluster, &self.view.namespace, kind, base, current)
            .await
            .map_err(Stop::from)
    }

    /// Sets `status.currentStepIndex` (a canary's; a blue-green rollout
    /// has no steps, and Argo writes none).
    pub(super) fn set_step(&mut self, index: usize) {
        if self.view.strategy == Strategy::Canary {
            self.status.set_step_index(index);
        }
    }

    /// The status of an aborted update (by the operator, or for `reason`):
    /// Degraded with `RolloutAborted: ...` (a reason given earlier is
    /// kept), the time it happened, no pause.
    pub(super) fn mark_aborted(&mut self, reason: Option<String>) {
        let message = match reason {
            Some(r) => format!("RolloutAborted: {r}"),
            None => self
                .status
                .message
                .clone()
                .filter(|m| m.starts_with("RolloutAborted"))
                .unwrap_or_else(|| "RolloutAborted: Rollout aborted by user".into()),
        };
        if !self.status.abort {
            tracing::warn!(rollout = %self.view.name, %message, "aborted");
        }
        self.status.abort = true;
        if self.status.aborted_at.is_none() {
            self.status.aborted_at = Some(self.now_text.clone());
        }
        self.status.pause_conditions.clear();
        self.status.controller_pause = false;
        self.status.updated_replicas = 0;
        self.settled = Some((RolloutPhase::Degraded, message));
    }

    pub(super) fn healthy(&mut self, hash: &str) {
        self.set_step(self.steps());
        self.status.pause_conditions.clear();
        self.status.controller_pause = false;
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.promote_full = false;
        self.status.canary.current_experiment = None;
        self.status.updated_replicas = self.view.replicas;
        self.status.ready_replicas = self.view.replicas;
        self.status.available_replicas = self.view.replicas;
        self.settled = Some((
            RolloutPhase::Healthy,
            format!(
                "fully promoted: {} runs {hash}",
                replica_set_name(&self.view.name, hash)
            ),
        ));
    }

    pub(super) async fn terminate(&self, run: &str) -> Result<(), Stop> {
        terminate_run(&self.ctx, &self.view.namespace, run)
            .await
            .map_err(child_failed("AnalysisRunError"))
    }

    /// Names (see [`fresh_name`]; `current` is the run the status
    /// names), creates once and advances the AnalysisRun for `base` from
    /// `analysis`; its name, its outcome, and the reference the status
    /// keeps to it. `hashes`: the canary's (or new) and the stable's.
    pub(super) async fn analyse(
        &self,
        base: &str,
        current: Option<&str>,
        analysis: &RolloutAnalysis,
        hashes: (&str, &str),
        kind: RunKind,
    ) -> Result<(String, Advanced, AnalysisRunRef), Stop> {
        let name = self.name_for("AnalysisRun", base, current).await?;
        let request = RunRequest {
            name: &name,
            templates: &analysis.templates,
            args: &analysis.args,
            dry_run: &analysis.dry_run,
            measurement_retention: &analysis.measurement_retention,
            canary_hash: hashes.0,
            stable_hash: hashes.1,
            kind,
        };
        let advanced = ensure_and_advance(&self.ctx, self.view, &request)
            .await
            .map_err(child_failed("AnalysisRunError"))?;
        let reference = AnalysisRunRef {
            name: name.clone(),
            status: advanced.phase.as_str().to_string(),
            message: advanced.message.clone(),
        };
        Ok((name, advanced, reference))
    }

    /// Points the Service `service` (when named) at the pods of `hash`.
    pub(super) async fn select(&self, service: &str, hash: &str) -> Result<(), Stop> {
        if service.is_empty() {
            return Ok(());
        }
        select_hash(self.ctx.cluster, &self.view.namespace, service, hash)
            .await
            .map_err(missing_service)
    }
}
