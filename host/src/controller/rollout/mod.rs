//! One reconcile of one Rollout: read it and its children, move it as far
//! as it can go now through its strategy, and write the status back.
//!
//! Level-triggered and idempotent: every effect (a ReplicaSet's scale, a
//! Service's selector, a router's weight) is re-asserted from the spec and
//! the stored status, children are named deterministically, and the status
//! is written last with the Rollout's resourceVersion. A controller killed at
//! any point redoes at most the effects of the pass it was in, each of which
//! lands on the same value, and never creates a second AnalysisRun or
//! Experiment for one step while one runs or has passed (a retry after an
//! abort gets fresh ones, and so does a run that failed in a pass whose
//! status write was then lost: its verdict is taken again).
//!
//! - [`pass`]: the state of one pass, and what every strategy does with it.
//! - [`revision`]: the template's hash, new revisions, rollbacks, restarts.
//! - [`replicas`]: the stable ReplicaSet and the ones retiring.
//! - [`names`]: the names of the runs and experiments a rollout starts.
//! - `canary/`, `bluegreen/`: what each strategy owns.

mod bluegreen;
mod canary;
mod names;
mod pass;
mod replicas;
mod revision;
mod workload_scale;

use super::context::Context;
use super::registry::PluginRegistry;
use super::spec::{RolloutView, Strategy};
use super::status::{RolloutPhase, RolloutStatus, condition, make_condition};
use super::workload::{self, ResolveError, Workload};
use crate::analysis::condition::ConditionEvaluator;
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, resource_version};
use chrono::Utc;
use pass::{DEADLINE_EXCEEDED, Pass, Stop};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Reconciles Rollouts (and the AnalysisRuns created on their own).
#[derive(Clone)]
pub struct Reconciler {
    cluster: Arc<dyn Cluster>,
    registry: Arc<PluginRegistry>,
    evaluator: ConditionEvaluator,
}

/// What one reconcile decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Look again after this long; `None`: only when something changes.
    pub requeue: Option<Duration>,
    /// The pass failed (a plugin fault, a missing template): back off.
    pub failed: bool,
    /// The phase written.
    pub phase: String,
    /// The Rollout's resourceVersion after this reconcile's status write
    /// (`None` when nothing was written), so its watch echo can be ignored.
    pub written_version: Option<String>,
    /// The rollout waits for a ReplicaSet's pods to become available: a
    /// change to one of its ReplicaSets is worth a reconcile.
    pub waits_on_pods: bool,
    /// The Deployment the rollout takes its template from
    /// (`spec.workloadRef`): a change to it is worth a reconcile.
    pub workload: Option<ObjectKey>,
}

impl Outcome {
    /// A pass the store refused (a conflict: someone else wrote first):
    /// nothing is wrong with the rollout, so look again soon from what is
    /// stored.
    fn refused(error: &ClusterError, phase: String, waits_on_pods: bool) -> Self {
        let delay = match error {
            ClusterError::Conflict { .. } | ClusterError::AlreadyExists(_) => {
                Duration::from_millis(20)
            }
            _ => Duration::from_secs(2),
        };
        Outcome {
            requeue: Some(delay),
            failed: true,
            phase,
            waits_on_pods,
            ..Outcome::default()
        }
    }
}

impl Reconciler {
    /// A reconciler over `cluster`, calling plugins from `registry`.
    pub fn new(
        cluster: Arc<dyn Cluster>,
        registry: Arc<PluginRegistry>,
        evaluator: ConditionEvaluator,
    ) -> Self {
        Reconciler {
            cluster,
            registry,
            evaluator,
        }
    }

    /// The store.
    pub fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.cluster
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.registry
    }

    fn context(&self) -> Context<'_> {
        Context {
            cluster: self.cluster.as_ref(),
            registry: &self.registry,
            evaluator: &self.evaluator,
            now: Utc::now(),
        }
    }

    /// Reconciles the object at `key` (a Rollout, or a standalone
    /// AnalysisRun or Experiment) as of now. `Ok(None)` when it no longer
    /// exists or is not this controller's to move.
    pub async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Outcome>, ClusterError> {
        let ctx = self.context();
        match key.kind.as_str() {
            "AnalysisRun" => return super::standalone::reconcile_run(&ctx, key).await,
            "Experiment" => return super::standalone::reconcile_experiment(&ctx, key).await,
            _ => {}
        }
        let object = match self.cluster.get(key).await {
            Ok(o) => o,
            Err(ClusterError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let before = RolloutStatus::of(&object);
        let now_text = ctx.now_text();
        let mut outcome = Outcome::default();
        let mut status = before.clone();
        // A workloadRef's template is read now and never written back.
        let (view, workload) = match workload::resolve(ctx.cluster, &object).await {
            Ok(Some((resolved, workload))) => (RolloutView::parse(&resolved), Some(workload)),
            Ok(None) => (RolloutView::parse(&object), None),
            Err(ResolveError::Invalid(message)) => (Err(message), None),
            Err(ResolveError::Cluster(e)) => {
                return Ok(Some(Outcome::refused(
                    &e,
                    before.phase.unwrap_or_default(),
                    false,
                )));
            }
        };
        outcome.workload = workload.as_ref().map(|w| w.key.clone());
        status.workload_observed_generation = workload.as_ref().and_then(Workload::generation);
        match view {
            Err(message) => {
                status.set_condition(
                    make_condition(
                        condition::INVALID_SPEC,
                        true,
                        "InvalidSpec",
                        message.clone(),
                    ),
                    &now_text,
                );
                status.set_phase(RolloutPhase::Degraded, format!("InvalidSpec: {message}"));
            }
            Ok(view) => {
                status.clear_condition(condition::INVALID_SPEC);
                match run_pass(ctx, &view, workload.as_ref(), status, &mut outcome).await {
                    Ok(after) => status = after,
                    Err(e) => {
                        tracing::debug!(rollout = %key, error = %e, "store refused a write; requeued");
                        return Ok(Some(Outcome::refused(
                            &e,
                            before.phase.unwrap_or_default(),
                            false,
                        )));
                    }
                }
            }
        }
        // Every rollout may use a registered plugin: a registration that is
        // not in force is shown on each, until it is fixed.
        match self.registry.registration_error() {
            Some(error) => status.set_condition(
                make_condition(
                    condition::REGISTRATION_INVALID,
                    true,
                    "InvalidRegistration",
                    format!(
                        "{error}; the last valid registration stays in force until this is fixed"
                    ),
                ),
                &now_text,
            ),
            None => status.clear_condition(condition::REGISTRATION_INVALID),
        }
        if let Some(generation) = object
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
        {
            status.observed_generation = Some(generation.to_string());
        }
        outcome.phase = status.phase.clone().unwrap_or_default();
        if status.says_no_more_than(&before) {
            return Ok(Some(outcome));
        }
        match self.write_status(key, &object, &status).await {
            Ok(version) => outcome.written_version = version,
            Err(e @ ClusterError::Conflict { .. }) => {
                return Ok(Some(Outcome::refused(
                    &e,
                    outcome.phase,
                    outcome.waits_on_pods,
                )));
            }
            Err(other) => return Err(other),
        }
        Ok(Some(outcome))
    }

    /// Writes `status` onto `object` (as read); the new resourceVersion.
    async fn write_status(
        &self,
        key: &ObjectKey,
        object: &Value,
        status: &RolloutStatus,
    ) -> Result<Option<String>, ClusterError> {
        let mut updated = object.clone();
        let status_json = serde_json::to_value(status)
            .map_err(|e| ClusterError::Invalid(format!("status: {e}")))?;
        match updated.as_object_mut() {
            Some(map) => {
                map.insert("status".into(), status_json);
            }
            None => return Err(ClusterError::Invalid(format!("{key} is not an object"))),
        }
        let stored = self
            .cluster
            .apply(vec![Write::Update {
                expected_version: resource_version(object).map(str::to_string),
                object: updated,
            }])
            .await?;
        Ok(stored
            .first()
            .and_then(Option::as_ref)
            .and_then(|o| resource_version(o))
            .map(str::to_string))
    }
}

/// Runs one pass of `view`'s strategy over `status`, and concludes it: the
/// phase, the message and the conditions the pass's end calls for. A store
/// error is returned as is (nothing is wrong with the rollout: the caller
/// requeues); every other failure is written on the status.
async fn run_pass(
    ctx: Context<'_>,
    view: &RolloutView,
    workload: Option<&Workload>,
    status: RolloutStatus,
    outcome: &mut Outcome,
) -> Result<RolloutStatus, ClusterError> {
    let mut pass = Pass {
        ctx,
        view,
        status,
        now_text: ctx.now_text(),
        wake_at: None,
        settled: None,
        waiting: None,
    };
    let mut result = match view.strategy {
        Strategy::Canary => pass.drive_canary().await,
        Strategy::BlueGreen => pass.drive_blue_green().await,
    };
    if let (Ok(()), Some(workload)) = (&result, workload) {
        result = pass.scale_workload(workload).await;
    }
    let Pass {
        mut status,
        wake_at,
        settled,
        waiting,
        now_text,
        ..
    } = pass;
    match result {
        Ok(()) => {
            status.clear_condition(condition::PLUGIN_FAILED);
            // Waiting on pods keeps its Progressing condition: its
            // transition time is when the wait began.
            if waiting.is_none() {
                status.clear_condition(condition::PROGRESSING);
            }
            outcome.waits_on_pods = waiting.is_some();
            let (phase, message) = settled
                .or_else(|| {
                    let exceeded = status
                        .condition(condition::PROGRESSING)
                        .is_some_and(|c| c.reason == DEADLINE_EXCEEDED);
                    waiting.map(|w| {
                        let phase = if exceeded {
                            RolloutPhase::Degraded
                        } else {
                            RolloutPhase::Progressing
                        };
                        (phase, w)
                    })
                })
                .unwrap_or_else(|| match view.strategy {
                    Strategy::Canary => canary::progress_phase(view, &status),
                    Strategy::BlueGreen => bluegreen::progress_phase(view, &status),
                });
            status.set_phase(phase, message);
            outcome.requeue = wake_at.map(|t| (t - ctx.now).to_std().unwrap_or_default());
        }
        Err(Stop::Cluster(e)) => return Err(e),
        Err(Stop::Plugin(p)) => {
            // The message names the plugin and the call too: a CRD that
            // prunes Weir's `plugin` / `call` fields (Argo's) keeps them there.
            let mut c = make_condition(condition::PLUGIN_FAILED, true, &p.reason, p.to_string());
            c.plugin = Some(p.plugin.clone());
            c.call = Some(p.call.clone());
            c.recording = p.recording.clone();
            status.set_condition(c, &now_text);
            status.set_phase(RolloutPhase::Degraded, format!("PluginFailed: {p}"));
            outcome.failed = true;
        }
        Err(Stop::Failed { reason, message }) => {
            status.set_condition(
                make_condition(condition::PROGRESSING, false, reason, message.clone()),
                &now_text,
            );
            status.set_phase(RolloutPhase::Degraded, format!("{reason}: {message}"));
            outcome.failed = true;
        }
    }
    Ok(status)
}
