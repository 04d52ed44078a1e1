//! One reconcile of one canary Rollout (Argo's `rolloutCanary`): read the
//! Rollout and its children, move through as many steps as can complete
//! now, call the routers, and write the status back.
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

use super::adoption::same_pod_template;
use super::analysis_runs::{Advanced, RunKind, RunRequest, ensure_and_advance, terminate_run};
use super::children::{
    Revision, ensure_revision, owned_by, pod_template_hash, replica_set_name, replica_set_of,
    scale, scale_down_others, select_hash,
};
use super::experiment::weight_destinations_from_experiment;
use super::experiments::{advance_experiment, ensure_experiment, finish, phase_of};
use super::registry::PluginRegistry;
use super::restart;
use super::retiring;
use super::routes::{header_route, mirror_route};
use super::routing::{PluginFailure, RouterSet};
use super::spec::{RolloutView, StepKind};
use super::status::{
    AnalysisRunRef, PauseCondition, RolloutStatus, TrafficWeights, WeightDestination as Dest,
    condition, make_condition, phase,
};
use crate::analysis::condition::ConditionEvaluator;
use crate::analysis::types::Phase;
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, resource_version, time_at};
use crate::plugin::WeightDestination;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Pause reasons (Argo's).
const PAUSE_STEP: &str = "CanaryPauseStep";
const PAUSE_INCONCLUSIVE: &str = "InconclusiveAnalysisRun";
const PAUSE_SPEC: &str = "PausedBySpec";

/// When nothing else says when to look again at a waiting rollout.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Reconciles Rollouts.
#[derive(Clone)]
pub struct Reconciler {
    cluster: Arc<dyn Cluster>,
    registry: Arc<PluginRegistry>,
    evaluator: ConditionEvaluator,
}

/// What one reconcile decided.
#[derive(Debug, Clone, PartialEq)]
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
}

/// Why a pass stopped early.
#[derive(Debug)]
enum Stop {
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

/// How many AnalysisRuns or Experiments one step may leave behind across
/// retries (`base`, `base.1`, ...) before a retry is refused.
const MAX_RETRIES: usize = 32;

/// The name of the AnalysisRun or Experiment (`kind`) a step (or the
/// background analysis) uses: `current`, the one the status names, when it
/// is one of `base`'s; otherwise the first of `base`, `base.1`, `base.2`,
/// ... that does not exist, is still running, or passed. One that ended
/// otherwise (failed, or stopped by an abort) is what a retry must not
/// reuse, so the retry gets the next name, as Argo's collision counter
/// gives it.
async fn fresh_name(
    cluster: &dyn Cluster,
    namespace: &str,
    kind: &str,
    base: &str,
    current: Option<&str>,
) -> Result<String, ClusterError> {
    let numbered = |n: &str| {
        n == base
            || n.strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(current) = current.filter(|c| numbered(c)) {
        return Ok(current.to_string());
    }
    for k in 0..MAX_RETRIES {
        let name = if k == 0 {
            base.to_string()
        } else {
            format!("{base}.{k}")
        };
        let key = ObjectKey::new("argoproj.io/v1alpha1", kind, namespace, &name);
        let stored = match cluster.get(&key).await {
            Ok(stored) => stored,
            Err(ClusterError::NotFound(_)) => return Ok(name),
            Err(e) => return Err(e),
        };
        let phase = stored
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let terminated = stored
            .pointer("/spec/terminate")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let usable = match phase {
            "" | "Pending" | "Running" => true,
            "Successful" => !terminated,
            _ => false,
        };
        if usable {
            return Ok(name);
        }
    }
    Err(ClusterError::Invalid(format!(
        "{kind} {namespace}/{base}: {MAX_RETRIES} earlier ones ended without passing; delete old ones to retry again"
    )))
}

fn failed(reason: &'static str) -> impl Fn(String) -> Stop {
    move |message| Stop::Failed { reason, message }
}

/// What a step decided.
enum StepResult {
    Next,
    Wait,
    Abort(String),
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

    /// Reconciles the Rollout at `key` as of now. `Ok(None)` when it no longer exists.
    pub async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Outcome>, ClusterError> {
        if key.kind == "AnalysisRun" {
            return super::standalone::reconcile_run(
                self.cluster.as_ref(),
                &self.registry,
                &self.evaluator,
                key,
            )
            .await;
        }
        let object = match self.cluster.get(key).await {
            Ok(o) => o,
            Err(ClusterError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let now = Utc::now();
        let before = RolloutStatus::of(&object);
        let mut status = before.clone();
        let now_text = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut outcome = Outcome {
            requeue: None,
            failed: false,
            phase: String::new(),
            written_version: None,
            waits_on_pods: false,
        };
        match RolloutView::parse(&object) {
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
                status.phase = Some(phase::DEGRADED.into());
                status.message = Some(format!("InvalidSpec: {message}"));
            }
            Ok(view) => {
                status.clear_condition(condition::INVALID_SPEC);
                let mut pass = Pass {
                    rec: self,
                    view: &view,
                    status,
                    now,
                    now_text: now_text.clone(),
                    wake_at: None,
                    settled: None,
                    waiting: None,
                };
                let result = pass.drive().await;
                let wake_at = pass.wake_at;
                let settled = pass.settled.take();
                let waiting = pass.waiting.take();
                status = pass.status;
                match result {
                    Ok(()) => {
                        status.clear_condition(condition::PLUGIN_FAILED);
                        // Waiting on pods keeps its Progressing condition:
                        // its transition time is when the wait began.
                        if waiting.is_none() {
                            status.clear_condition(condition::PROGRESSING);
                        }
                        outcome.waits_on_pods = waiting.is_some();
                        let (p, message) = settled
                            .or_else(|| {
                                let exceeded = status
                                    .condition(condition::PROGRESSING)
                                    .is_some_and(|c| c.reason == DEADLINE_EXCEEDED);
                                waiting.map(|w| {
                                    let phase = if exceeded {
                                        phase::DEGRADED
                                    } else {
                                        phase::PROGRESSING
                                    };
                                    (phase.into(), w)
                                })
                            })
                            .unwrap_or_else(|| progress_phase(&view, &status));
                        status.phase = Some(p);
                        status.message = Some(message);
                        outcome.requeue = wake_at.map(|t| (t - now).to_std().unwrap_or_default());
                    }
                    Err(Stop::Cluster(e)) => {
                        // Nothing is wrong with the rollout; try again soon
                        // from what is stored (a conflict means someone
                        // else, e.g. a promote, wrote first).
                        tracing::debug!(rollout = %key, error = %e, "store refused a write; requeued");
                        let delay = match e {
                            ClusterError::Conflict { .. } | ClusterError::AlreadyExists(_) => {
                                Duration::from_millis(20)
                            }
                            _ => Duration::from_secs(2),
                        };
                        return Ok(Some(Outcome {
                            requeue: Some(delay),
                            failed: true,
                            phase: before.phase.unwrap_or_default(),
                            written_version: None,
                            waits_on_pods: false,
                        }));
                    }
                    Err(Stop::Plugin(p)) => {
                        // The message names the plugin and the call too:
                        // a CRD that prunes Weir's `plugin` / `call`
                        // fields (Argo's) keeps them there.
                        let mut c = make_condition(
                            condition::PLUGIN_FAILED,
                            true,
                            &p.reason,
                            p.to_string(),
                        );
                        c.plugin = Some(p.plugin.clone());
                        c.call = Some(p.call.clone());
                        status.set_condition(c, &now_text);
                        status.phase = Some(phase::DEGRADED.into());
                        status.message = Some(format!("PluginFailed: {p}"));
                        outcome.failed = true;
                    }
                    Err(Stop::Failed { reason, message }) => {
                        status.set_condition(
                            make_condition(condition::PROGRESSING, false, reason, message.clone()),
                            &now_text,
                        );
                        status.phase = Some(phase::DEGRADED.into());
                        status.message = Some(format!("{reason}: {message}"));
                        outcome.failed = true;
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
        if !status.says_no_more_than(&before) {
            let mut updated = object.clone();
            let status_json = serde_json::to_value(&status)
                .map_err(|e| ClusterError::Invalid(format!("status: {e}")))?;
            match updated.as_object_mut() {
                Some(map) => {
                    map.insert("status".into(), status_json);
                }
                None => return Err(ClusterError::Invalid(format!("{key} is not an object"))),
            }
            let written = self
                .cluster
                .apply(vec![Write::Update {
                    expected_version: resource_version(&object).map(str::to_string),
                    object: updated,
                }])
                .await;
            match written {
                Ok(stored) => {
                    outcome.written_version = stored
                        .first()
                        .and_then(Option::as_ref)
                        .and_then(|o| resource_version(o))
                        .map(str::to_string);
                }
                Err(ClusterError::Conflict { .. }) => {
                    return Ok(Some(Outcome {
                        requeue: Some(Duration::from_millis(20)),
                        failed: true,
                        phase: outcome.phase,
                        written_version: None,
                        waits_on_pods: outcome.waits_on_pods,
                    }));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(Some(outcome))
    }
}

/// `spec.selector.matchLabels` as a label-selector string, sorted (what
/// the scale subresource reports as the pods' selector).
fn label_selector(rollout: &Value) -> Option<String> {
    let labels = rollout
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)?;
    let mut terms: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    terms.sort();
    Some(terms.join(","))
}

/// Progressing or Paused, with a message saying where the rollout is.
fn progress_phase(view: &RolloutView, status: &RolloutStatus) -> (String, String) {
    let steps = view.canary.steps.len();
    let index = status.step_index();
    if let Some(pause) = status.pause_conditions.first() {
        return (phase::PAUSED.into(), pause.reason.clone());
    }
    let step = view
        .step(index)
        .map(|s| s.describe())
        .unwrap_or_else(|| "promoting".into());
    (
        phase::PROGRESSING.into(),
        format!("step {}/{steps}: {step}", (index + 1).min(steps.max(1))),
    )
}

/// The state of one pass over one rollout.
struct Pass<'a> {
    rec: &'a Reconciler,
    view: &'a RolloutView,
    status: RolloutStatus,
    now: DateTime<Utc>,
    now_text: String,
    /// The earliest time something this pass waits on is due.
    wake_at: Option<DateTime<Utc>>,
    /// A final phase and message (Healthy, or Degraded after an abort).
    settled: Option<(String, String)>,
    /// What the pass waits on (pods to become available), if anything.
    waiting: Option<String>,
}

/// Whether the pods a step needs are there.
enum Availability {
    /// Available.
    Ready,
    /// Not yet; the rollout waits (and is told when to look again).
    Waiting,
    /// Not within `progressDeadlineSeconds`, and the rollout aborts.
    Abort(String),
}

/// How soon a restart still waiting on pods looks again (Argo: 30 s); a
/// ReplicaSet's status change wakes the rollout sooner.
const RESTART_CHECK: Duration = Duration::from_secs(2);

/// The Progressing reason while pods are not yet available (Argo's).
const NOT_AVAILABLE: &str = "ReplicaSetNotAvailable";
/// The Progressing reason once the progress deadline has passed (Argo's).
const DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

impl Pass<'_> {
    fn cluster(&self) -> &dyn Cluster {
        self.rec.cluster.as_ref()
    }

    fn wake(&mut self, at: DateTime<Utc>) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn wake_after(&mut self, d: Duration) {
        let at = chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| self.now.checked_add_signed(d))
            .unwrap_or(self.now);
        self.wake(at);
    }

    fn steps(&self) -> usize {
        self.view.canary.steps.len()
    }

    /// Whether `desired` pods of the ReplicaSet of `hash` are available, as
    /// its controller reports: nothing moves to pods that are not (Argo
    /// gives no weight to a canary, and scales no old ReplicaSet down,
    /// before the new one is available). While waiting, the Progressing
    /// condition says so; past `progressDeadlineSeconds` it says the
    /// deadline was exceeded, and with `progressDeadlineAbort` the rollout
    /// aborts.
    async fn availability(&mut self, hash: &str, desired: i32) -> Result<Availability, Stop> {
        let available =
            super::children::available_replicas(self.cluster(), self.view, hash).await?;
        Ok(self.availability_of(hash, desired, available))
    }

    /// [`Self::availability`] from a count already read.
    fn availability_of(&mut self, hash: &str, desired: i32, available: i64) -> Availability {
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
        let exceeded = since.is_some_and(|t| self.now - t >= deadline);
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

    fn max_weight(&self) -> i32 {
        self.view.canary.max_weight()
    }

    /// Whether any step manages header or mirror routes.
    fn uses_managed_routes(&self) -> bool {
        self.view
            .canary
            .steps
            .iter()
            .any(|s| s.set_header_route.is_some() || s.set_mirror_route.is_some())
    }

    /// The hash the rollout's template goes by: Weir's, unless the
    /// rollout's current or stable ReplicaSet runs the same template under
    /// another hash (made by Argo Rollouts before Weir took over): then
    /// that one, so a takeover moves nothing. Costs a read only while the
    /// stored hashes are not Weir's.
    async fn template_hash(&self) -> Result<String, Stop> {
        let computed = pod_template_hash(&self.view.template);
        let mut known: Vec<&String> = [&self.status.current_pod_hash, &self.status.stable_rs]
            .into_iter()
            .flatten()
            .filter(|h| !h.is_empty())
            .collect();
        known.dedup();
        if known.is_empty() || known.contains(&&computed) {
            return Ok(computed);
        }
        for candidate in known {
            let Some(rs) = replica_set_of(self.cluster(), self.view, candidate).await? else {
                continue;
            };
            let same = owned_by(&rs, self.view)
                && rs
                    .pointer("/spec/template")
                    .is_some_and(|t| same_pod_template(t, &self.view.template));
            if same {
                return Ok(candidate.clone());
            }
        }
        Ok(computed)
    }

    async fn drive(&mut self) -> Result<(), Stop> {
        let hash = self.template_hash().await?;
        let routers = RouterSet::of(self.view, &self.rec.registry).await?;
        self.status.replicas = self.view.replicas;
        self.status.hpa_replicas = self.view.replicas;
        self.status.selector = label_selector(&self.view.object);
        let Some(stable) = self.status.stable_rs.clone() else {
            return self.first_deploy(&routers, &hash).await;
        };
        if self.status.current_pod_hash.as_deref() != Some(hash.as_str()) {
            self.start_revision(&routers, &hash, &stable).await?;
        }
        if self.restart_pods().await? {
            // Argo's restarter ends the pass too: the availability counts
            // read so far no longer hold. The phase stays what it was.
            if let (Some(phase), Some(message)) =
                (self.status.phase.clone(), self.status.message.clone())
            {
                self.settled = Some((phase, message));
            }
            return Ok(());
        }
        if hash == stable {
            return self.settle_on_stable(&routers, &stable).await;
        }

        if !self.status.abort && self.status.aborted_at.is_some() {
            self.retry();
        }
        let canary_target = if self.status.abort && self.view.canary.traffic_routing.is_none() {
            &stable
        } else {
            &hash
        };
        self.point_services(canary_target, &stable).await?;
        let holder = self.ensure_stable(&stable).await?;
        self.scale_down_retired(&stable, holder.as_ref()).await?;
        let additional = self.experiment_destinations().await?;
        routers.update_hash(&hash, &stable, &additional).await?;
        if self.status.abort {
            return self.abort(&routers, &hash, &stable, None).await;
        }
        if self.view.paused {
            if !self.has_pause(PAUSE_SPEC) {
                self.add_pause(PAUSE_SPEC);
            }
            return Ok(());
        }
        self.status
            .pause_conditions
            .retain(|p| p.reason != PAUSE_SPEC);
        if self.status.promote_full {
            self.status.set_step_index(self.steps());
        }
        if let Some(message) = self.background_analysis(&hash, &stable).await? {
            return self.abort(&routers, &hash, &stable, Some(message)).await;
        }
        while self.status.step_index() < self.steps() {
            let index = self.status.step_index();
            match self.step(index, &routers, &hash, &stable).await? {
                StepResult::Next => self.status.set_step_index(index + 1),
                StepResult::Wait => break,
                StepResult::Abort(message) => {
                    return self.abort(&routers, &hash, &stable, Some(message)).await;
                }
            }
        }
        self.end_passed_experiment(&routers, &hash, &stable).await?;
        if self.status.step_index() >= self.steps() {
            return self.promote(&routers, &hash, &stable).await;
        }
        let index = self.status.step_index();
        let canary = self.canary_replicas(index);
        self.scale_canary(&hash, canary).await?;
        Ok(())
    }

    /// `spec.restartAt`: evicts what may go of the pods older than it
    /// (see [`restart`]); true when this pass evicted some.
    async fn restart_pods(&mut self) -> Result<bool, Stop> {
        let at = match restart::due(self.view, self.status.restarted_at.as_deref(), self.now) {
            Ok(Some(at)) => at,
            Ok(None) => return Ok(false),
            Err(ahead) => {
                self.wake(ahead);
                return Ok(false);
            }
        };
        let progress = restart::restart(self.cluster(), self.view, at, self.now).await?;
        if progress.remaining == 0 {
            self.status.restarted_at = Some(at.to_rfc3339_opts(SecondsFormat::Secs, true));
        } else {
            self.wake_after(RESTART_CHECK);
        }
        Ok(progress.evicted > 0)
    }

    /// No stable yet: the first template goes straight to stable, as in Argo.
    async fn first_deploy(&mut self, routers: &RouterSet, hash: &str) -> Result<(), Stop> {
        self.status.current_pod_hash = Some(hash.to_string());
        let name = replica_set_name(&self.view.name, hash);
        ensure_revision(
            self.cluster(),
            self.view,
            &name,
            &self.view.template,
            hash,
            self.view.replicas,
            Revision::First,
        )
        .await?;
        // A template that never became stable (its first deploy failed) is replaced.
        scale_down_others(self.cluster(), self.view, &[hash]).await?;
        self.point_services(hash, hash).await?;
        routers.update_hash(hash, hash, &[]).await?;
        let verified = routers.set_weight(0, &[]).await?;
        self.status.stable_rs = Some(hash.to_string());
        self.status.current_pod_hash = Some(hash.to_string());
        self.record_weights(0, hash, hash, &[], verified);
        match self.availability(hash, self.view.replicas).await? {
            Availability::Ready => self.healthy(hash),
            // Healthy once its pods are available; nothing else to move.
            Availability::Waiting | Availability::Abort(_) => {
                self.status.set_step_index(self.steps());
            }
        }
        Ok(())
    }

    /// A new pod template: start from the first step.
    async fn start_revision(
        &mut self,
        routers: &RouterSet,
        hash: &str,
        stable: &str,
    ) -> Result<(), Stop> {
        let old = self.status.current_pod_hash.clone();
        if let Some(run) = self.status.canary.current_step_analysis_run_status.take() {
            self.terminate(&run.name).await?;
        }
        if let Some(run) = self
            .status
            .canary
            .current_background_analysis_run_status
            .take()
        {
            self.terminate(&run.name).await?;
        }
        if let Some(name) = self.status.canary.current_experiment.take() {
            self.finish_experiment(&name).await?;
        }
        // The canary being replaced (not the stable) goes away: its traffic
        // first goes back to the stable (the new canary has no pods yet),
        // and its pods after the scale-down delay, once routers have
        // stopped sending to them.
        if let Some(old) = &old
            && old != stable
            && old != hash
        {
            if self.view.canary.traffic_routing.is_some() {
                let verified = routers.set_weight(0, &[]).await?;
                self.record_weights(0, old, stable, &[], verified);
            }
            let retired = retiring::retire(
                self.cluster(),
                self.view,
                stable,
                &[old.as_str()],
                self.view.canary.scale_down_delay(),
                self.now,
            )
            .await?;
            if let Some(at) = retired.earliest {
                self.wake(at);
            }
        }
        tracing::info!(rollout = %self.view.name, from = ?old, to = hash, "new revision");
        self.status.current_pod_hash = Some(hash.to_string());
        // A new revision's pods are all new (Argo's resetRolloutStatus).
        self.status.restarted_at = self
            .view
            .restart_at
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true));
        self.status.set_step_index(0);
        self.status.pause_conditions.clear();
        self.status.controller_pause = false;
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.promote_full = false;
        if self.rollback_within_window(hash, stable).await? {
            tracing::info!(rollout = %self.view.name, to = hash, "rollback within the rollback window: steps skipped");
            self.status.set_step_index(self.steps());
        }
        Ok(())
    }

    /// Argo's `isRollbackWithinWindow`: the ReplicaSet of `hash` exists and
    /// was created before the stable's, and fewer than
    /// `rollbackWindow.revisions` of the Rollout's ReplicaSets were created
    /// between them (by `creationTimestamp`, strictly, as Argo compares).
    async fn rollback_within_window(&self, hash: &str, stable: &str) -> Result<bool, Stop> {
        if self.view.rollback_window == 0 {
            return Ok(false);
        }
        let replica_sets = super::children::owned_replica_sets(self.cluster(), self.view).await?;
        let created = |rs: &Value| time_at(rs, "/metadata/creationTimestamp");
        let created_of = |h: &str| {
            let name = replica_set_name(&self.view.name, h);
            replica_sets
                .iter()
                .find(|rs| {
                    rs.pointer("/metadata/name").and_then(Value::as_str) == Some(name.as_str())
                })
                .and_then(created)
        };
        let (Some(target), Some(current)) = (created_of(hash), created_of(stable)) else {
            return Ok(false);
        };
        if target >= current {
            return Ok(false);
        }
        let between = replica_sets
            .iter()
            .filter_map(created)
            .filter(|t| *t > target && *t < current)
            .count() as u64;
        Ok(between < self.view.rollback_window)
    }

    /// The template is the stable one (fully promoted, or rolled back).
    async fn settle_on_stable(&mut self, routers: &RouterSet, stable: &str) -> Result<(), Stop> {
        // No canary: the stable has every replica (a basic canary's share
        // applies only while a canary runs).
        let holder = self.size_stable(stable, self.view.replicas).await?;
        self.scale_down_retired(stable, holder.as_ref()).await?;
        // Healthy only with every pod available, as Argo has it (a first
        // deploy whose pods are starting, or a stable just scaled up).
        let available = holder
            .as_ref()
            .and_then(|rs| rs.pointer("/status/availableReplicas"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let ready = holder.is_none()
            || match self.availability_of(stable, self.view.replicas, available) {
                Availability::Ready => true,
                Availability::Waiting => false,
                // Nothing to abort to: the deadline shows as Degraded.
                Availability::Abort(message) => {
                    self.waiting = Some(message);
                    false
                }
            };
        self.point_services(stable, stable).await?;
        routers.update_hash(stable, stable, &[]).await?;
        let verified = routers.set_weight(0, &[]).await?;
        if self.uses_managed_routes() {
            routers.remove_managed_routes().await?;
        }
        if let Some(run) = self
            .status
            .canary
            .current_background_analysis_run_status
            .clone()
            && run.status != "Successful"
        {
            self.terminate(&run.name).await?;
        }
        self.record_weights(0, stable, stable, &[], verified);
        if ready {
            self.healthy(stable);
        } else {
            self.status.set_step_index(self.steps());
        }
        Ok(())
    }

    /// `kubectl argo rollouts retry` (or `weir retry`) cleared `abort` on
    /// an aborted update: it runs again from the first step (where the
    /// abort left it), with new AnalysisRuns and Experiments for the ones
    /// the abort ended.
    fn retry(&mut self) {
        tracing::info!(rollout = %self.view.name, "retried after an abort");
        self.status.aborted_at = None;
        self.status.set_step_index(0);
        self.status.pause_conditions.clear();
        self.status.controller_pause = false;
        self.status.canary.current_step_analysis_run_status = None;
        self.status.canary.current_background_analysis_run_status = None;
        self.status.canary.current_experiment = None;
    }

    /// The name of the AnalysisRun or Experiment for `base` (see
    /// [`fresh_name`]), `current` being the one the status names.
    async fn name_for(
        &self,
        kind: &str,
        base: &str,
        current: Option<&str>,
    ) -> Result<String, Stop> {
        fresh_name(self.cluster(), &self.view.namespace, kind, base, current)
            .await
            .map_err(Stop::from)
    }

    fn healthy(&mut self, hash: &str) {
        self.status.set_step_index(self.steps());
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
            phase::HEALTHY.into(),
            format!(
                "fully promoted: {} runs {hash}",
                replica_set_name(&self.view.name, hash)
            ),
        ));
    }

    async fn promote(&mut self, routers: &RouterSet, hash: &str, stable: &str) -> Result<(), Stop> {
        let name = replica_set_name(&self.view.name, hash);
        ensure_revision(
            self.cluster(),
            self.view,
            &name,
            &self.view.template,
            hash,
            self.view.replicas,
            Revision::After(stable),
        )
        .await?;
        // The stable Service moves, and the old pods go, only once the new
        // ReplicaSet is available at full size.
        match self.availability(hash, self.view.replicas).await? {
            Availability::Ready => {}
            Availability::Waiting => return Ok(()),
            Availability::Abort(message) => {
                return self.abort(routers, hash, stable, Some(message)).await;
            }
        }
        // Point the stable Service at the new pods before taking the canary
        // weight away, so no request goes to pods about to be scaled down.
        self.point_services(hash, hash).await?;
        routers.update_hash(hash, hash, &[]).await?;
        let verified = routers.set_weight(0, &[]).await?;
        if self.uses_managed_routes() {
            routers.remove_managed_routes().await?;
        }
        if stable != hash {
            // The old stable's pods go after the scale-down delay.
            let retired = retiring::retire(
                self.cluster(),
                self.view,
                hash,
                &[stable],
                self.view.canary.scale_down_delay(),
                self.now,
            )
            .await?;
            if let Some(at) = retired.earliest {
                self.wake(at);
            }
            self.scale_down_retired(hash, retired.holder.as_ref())
                .await?;
            // Old revisions beyond spec.revisionHistoryLimit go.
            super::children::prune_history(self.cluster(), self.view, hash).await?;
        }
        if let Some(run) = self
            .status
            .canary
            .current_background_analysis_run_status
            .clone()
        {
            self.terminate(&run.name).await?;
        }
        tracing::info!(rollout = %self.view.name, from = stable, to = hash, "promoted");
        self.status.stable_rs = Some(hash.to_string());
        self.record_weights(0, hash, hash, &[], verified);
        self.healthy(hash);
        Ok(())
    }

    async fn abort(
        &mut self,
        routers: &RouterSet,
        hash: &str,
        stable: &str,
        reason: Option<String>,
    ) -> Result<(), Stop> {
        let verified = routers.set_weight(0, &[]).await?;
        if self.uses_managed_routes() {
            routers.remove_managed_routes().await?;
        }
        // Without a router the canary Service is the split: as Argo, it
        // selects the stable's pods before the canary's go.
        if self.view.canary.traffic_routing.is_none() {
            self.point_services(stable, stable).await?;
        }
        // A basic canary took replicas from the stable: give them back.
        let holder = if stable != hash {
            self.size_stable(stable, self.view.replicas).await?
        } else {
            None
        };
        self.scale_down_aborted(hash, stable, holder.as_ref())
            .await?;
        if let Some(run) = self.status.canary.current_step_analysis_run_status.clone() {
            self.terminate(&run.name).await?;
        }
        if let Some(run) = self
            .status
            .canary
            .current_background_analysis_run_status
            .clone()
        {
            self.terminate(&run.name).await?;
        }
        if let Some(name) = self.status.canary.current_experiment.clone() {
            self.finish_experiment(&name).await?;
        }
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
        // As Argo: an aborted update starts again from its first step
        // should it be retried.
        self.status.set_step_index(0);
        if self.status.aborted_at.is_none() {
            self.status.aborted_at = Some(self.now_text.clone());
        }
        self.status.pause_conditions.clear();
        self.status.controller_pause = false;
        self.record_weights(0, hash, stable, &[], verified);
        self.status.updated_replicas = 0;
        self.settled = Some((phase::DEGRADED.into(), message));
        Ok(())
    }

    async fn point_services(&self, canary: &str, stable: &str) -> Result<(), Stop> {
        let c = &self.view.canary;
        if !c.canary_service.is_empty() {
            select_hash(
                self.cluster(),
                &self.view.namespace,
                &c.canary_service,
                canary,
            )
            .await
            .map_err(missing_service)?;
        }
        if !c.stable_service.is_empty() {
            select_hash(
                self.cluster(),
                &self.view.namespace,
                &c.stable_service,
                stable,
            )
            .await
            .map_err(missing_service)?;
        }
        Ok(())
    }

    /// Sizes the stable ReplicaSet for the current step; returns it as read.
    async fn ensure_stable(&mut self, stable: &str) -> Result<Option<Value>, Stop> {
        // Traffic routing keeps the stable at full size; a basic canary
        // shares the replicas between the two, until an abort gives the
        // stable all of them back.
        let replicas = if self.view.canary.traffic_routing.is_some() || self.status.abort {
            self.view.replicas
        } else {
            let canary = self.canary_replicas(self.status.step_index());
            self.view.replicas.saturating_sub(canary).max(0)
        };
        self.size_stable(stable, replicas).await
    }

    /// Scales the stable ReplicaSet to `replicas`; returns it as read.
    /// A stable ReplicaSet deleted by hand cannot be rebuilt without its
    /// template: the canary goes on regardless.
    async fn size_stable(&mut self, stable: &str, replicas: i32) -> Result<Option<Value>, Stop> {
        let rs = replica_set_of(self.cluster(), self.view, stable).await?;
        if let Some(rs) = &rs {
            scale(self.cluster(), rs.clone(), replicas).await?;
        }
        Ok(rs)
    }

    /// Scales down the ReplicaSets the stable lists as retiring whose
    /// delay is over, and looks again at the next deadline.
    async fn scale_down_retired(
        &mut self,
        stable: &str,
        holder: Option<&Value>,
    ) -> Result<(), Stop> {
        let Some(holder) = holder else {
            return Ok(());
        };
        let current = self.status.current_pod_hash.clone().unwrap_or_default();
        let due = retiring::due(
            self.cluster(),
            self.view,
            stable,
            holder,
            &[stable, current.as_str()],
            self.view.canary.scale_down_delay_revision_limit(),
            self.now,
        )
        .await?;
        if let Some(at) = due.next {
            self.wake(at);
        }
        if due.scaled > 0 {
            super::children::prune_history(self.cluster(), self.view, stable).await?;
        }
        Ok(())
    }

    /// An aborted canary's pods go as Argo has it: at once for a basic
    /// canary; with traffic routing `abortScaleDownDelaySeconds` after the
    /// stable is available at full size again (so it can take all the
    /// traffic), or not at all with 0 (until the next update). `holder` is
    /// the stable ReplicaSet as this pass read it.
    async fn scale_down_aborted(
        &mut self,
        hash: &str,
        stable: &str,
        holder: Option<&Value>,
    ) -> Result<(), Stop> {
        let delay = match self.view.canary.abort_scale_down_delay() {
            None => return Ok(()),
            Some(d) if d.is_zero() || hash == stable => return self.scale_canary(hash, 0).await,
            Some(d) => d,
        };
        let Some(rs) = replica_set_of(self.cluster(), self.view, hash).await? else {
            return Ok(());
        };
        if rs.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0) {
            return Ok(());
        }
        match retiring::deadline_of(&rs) {
            Some(at) if at <= self.now => self.scale_canary(hash, 0).await,
            Some(at) => {
                self.wake(at);
                Ok(())
            }
            None => {
                let available = holder
                    .and_then(|rs| rs.pointer("/status/availableReplicas"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if available >= i64::from(self.view.replicas) {
                    let at = retiring::mark(
                        self.cluster(),
                        rs,
                        retiring::deadline_after(self.now, delay),
                    )
                    .await?;
                    self.wake(at);
                } else {
                    // The stable's ReplicaSet events wake the rollout; this
                    // is the fallback.
                    self.wake_after(Duration::from_secs(5));
                }
                Ok(())
            }
        }
    }

    fn canary_replicas(&self, index: usize) -> i32 {
        let replicas = self.view.replicas;
        let scaled = |percent: i64, of: i64| -> i32 {
            let total = i64::from(replicas).saturating_mul(percent);
            let value = if of <= 0 { 0 } else { (total + of - 1) / of };
            i32::try_from(value.clamp(0, i64::from(replicas))).unwrap_or(replicas)
        };
        let from_weight = scaled(
            i64::from(self.view.canary.weight_at(index)),
            i64::from(self.max_weight()),
        );
        let canary = &self.view.canary;
        match canary.canary_scale_at(index) {
            Some(scale) => match (scale.replicas, scale.weight) {
                // An explicit count is taken as it is, as Argo does.
                (Some(r), _) => r.clamp(0, replicas),
                (None, Some(w)) => canary.with_min_pods(scaled(i64::from(w), 100), replicas),
                (None, None) => canary.with_min_pods(from_weight, replicas),
            },
            None => canary.with_min_pods(from_weight, replicas),
        }
    }

    async fn scale_canary(&mut self, hash: &str, replicas: i32) -> Result<(), Stop> {
        let name = replica_set_name(&self.view.name, hash);
        // A new revision's number follows the stable's.
        let stable = self.status.stable_rs.clone();
        let revision = match stable.as_deref() {
            Some(stable) if stable != hash => Revision::After(stable),
            _ => Revision::Unnumbered,
        };
        ensure_revision(
            self.cluster(),
            self.view,
            &name,
            &self.view.template,
            hash,
            replicas,
            revision,
        )
        .await?;
        self.status.updated_replicas = replicas;
        let stable = if self.view.canary.traffic_routing.is_some() {
            self.view.replicas
        } else {
            self.view.replicas.saturating_sub(replicas).max(0)
        };
        self.status.ready_replicas = stable.saturating_add(replicas);
        self.status.available_replicas = self.status.ready_replicas;
        Ok(())
    }

    fn record_weights(
        &mut self,
        weight: i32,
        canary: &str,
        stable: &str,
        additional: &[WeightDestination],
        verified: bool,
    ) {
        let c = &self.view.canary;
        let extra: i32 = additional.iter().map(|d| d.weight).sum();
        self.status.canary.weights = Some(TrafficWeights {
            canary: Dest {
                weight,
                service_name: c.canary_service.clone(),
                pod_template_hash: canary.into(),
            },
            stable: Dest {
                weight: self
                    .max_weight()
                    .saturating_sub(weight)
                    .saturating_sub(extra)
                    .max(0),
                service_name: c.stable_service.clone(),
                pod_template_hash: stable.into(),
            },
            additional: additional
                .iter()
                .map(|d| Dest {
                    weight: d.weight,
                    service_name: d.service_name.clone(),
                    pod_template_hash: d.pod_template_hash.clone(),
                })
                .collect(),
            verified: Some(verified),
        });
    }

    fn has_pause(&self, reason: &str) -> bool {
        self.status
            .pause_conditions
            .iter()
            .any(|p| p.reason == reason)
    }

    fn add_pause(&mut self, reason: &str) {
        self.status.pause_conditions.push(PauseCondition {
            reason: reason.into(),
            start_time: self.now_text.clone(),
        });
        self.status.controller_pause = true;
    }

    /// A promote cleared the controller's pause.
    fn promoted_past_pause(&self) -> bool {
        self.status.controller_pause && self.status.pause_conditions.is_empty()
    }

    async fn terminate(&self, run: &str) -> Result<(), Stop> {
        terminate_run(
            self.cluster(),
            &self.rec.registry,
            &self.rec.evaluator,
            &self.view.namespace,
            run,
            self.now,
        )
        .await
        .map_err(failed("AnalysisRunError"))
    }

    async fn finish_experiment(&self, name: &str) -> Result<(), Stop> {
        let key = ObjectKey::new(
            "argoproj.io/v1alpha1",
            "Experiment",
            &self.view.namespace,
            name,
        );
        let stored = match self.cluster().get(&key).await {
            Ok(e) => e,
            Err(ClusterError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !matches!(phase_of(&stored), "Pending" | "Running") {
            return Ok(());
        }
        let mut experiment = stored.clone();
        finish(
            self.cluster(),
            &self.rec.registry,
            &self.rec.evaluator,
            self.view,
            &mut experiment,
            "Failed",
            "the rollout stopped it",
            self.now,
        )
        .await
        .map_err(failed("ExperimentError"))?;
        self.cluster()
            .apply(vec![Write::Update {
                expected_version: resource_version(&stored).map(str::to_string),
                object: experiment,
            }])
            .await?;
        Ok(())
    }

    /// The last experiment step at or before the current one (Argo's
    /// `GetCurrentExperimentStep`), with its index.
    fn experiment_step(&self) -> Option<(usize, &Value)> {
        let index = self.status.step_index().min(self.steps());
        (0..=index)
            .rev()
            .filter_map(|i| Some((i, self.raw_step(i)?)))
            .find(|(_, step)| step.get("experiment").is_some())
    }

    /// The destinations the current experiment adds while it runs, with
    /// the weights of the last experiment step (none otherwise): a rollout
    /// moved past that step keeps them until the experiment has ended, as
    /// Argo's `calculateWeightDestinationsFromExperiment` does.
    async fn experiment_destinations(&self) -> Result<Vec<WeightDestination>, Stop> {
        let Some(name) = &self.status.canary.current_experiment else {
            return Ok(vec![]);
        };
        let Some((_, step)) = self.experiment_step() else {
            return Ok(vec![]);
        };
        let key = ObjectKey::new(
            "argoproj.io/v1alpha1",
            "Experiment",
            &self.view.namespace,
            name,
        );
        match self.cluster().get(&key).await {
            Ok(experiment) if matches!(phase_of(&experiment), "Pending" | "Running") => {
                Ok(weight_destinations_from_experiment(step, &experiment))
            }
            Ok(_) | Err(ClusterError::NotFound(_)) => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends an experiment the rollout has moved past (a promote skipped its
    /// step, or a full promote), as Argo cancels it: its traffic share goes
    /// back to the canary first, then its pods go.
    async fn end_passed_experiment(
        &mut self,
        routers: &RouterSet,
        hash: &str,
        stable: &str,
    ) -> Result<(), Stop> {
        let Some(name) = self.status.canary.current_experiment.clone() else {
            return Ok(());
        };
        let index = self.status.step_index();
        let at_its_step = self
            .raw_step(index)
            .is_some_and(|step| step.get("experiment").is_some());
        if at_its_step {
            return Ok(());
        }
        if !self.experiment_destinations().await?.is_empty() {
            let weight = self.view.canary.weight_at(index.min(self.steps()));
            routers.update_hash(hash, stable, &[]).await?;
            let verified = routers.set_weight(weight, &[]).await?;
            self.record_weights(weight, hash, stable, &[], verified);
        }
        self.finish_experiment(&name).await?;
        tracing::info!(rollout = %self.view.name, experiment = %name, "experiment ended: the rollout moved past its step");
        self.status.canary.current_experiment = None;
        Ok(())
    }

    fn raw_step(&self, index: usize) -> Option<&Value> {
        self.view
            .object
            .pointer("/spec/strategy/canary/steps")
            .and_then(Value::as_array)
            .and_then(|steps| steps.get(index))
    }

    /// Creates (once) and advances the run `request` names; its outcome
    /// and the reference the status keeps to it.
    async fn run_analysis(
        &self,
        request: &RunRequest<'_>,
    ) -> Result<(Advanced, AnalysisRunRef), Stop> {
        let advanced = ensure_and_advance(
            self.cluster(),
            &self.rec.registry,
            &self.rec.evaluator,
            self.view,
            request,
            self.now,
        )
        .await
        .map_err(failed("AnalysisRunError"))?;
        let reference = AnalysisRunRef {
            name: request.name.to_string(),
            status: format!("{:?}", advanced.phase),
            message: advanced.message.clone(),
        };
        Ok((advanced, reference))
    }

    async fn background_analysis(
        &mut self,
        hash: &str,
        stable: &str,
    ) -> Result<Option<String>, Stop> {
        let Some(background) = self.view.canary.analysis.clone() else {
            return Ok(None);
        };
        if background.templates.is_empty() {
            return Ok(None);
        }
        let starting = background
            .starting_step
            .and_then(|s| usize::try_from(s).ok())
            .unwrap_or(0);
        if self.status.step_index() < starting {
            return Ok(None);
        }
        let base = format!("{}-{hash}-background", self.view.name);
        let current = self
            .status
            .canary
            .current_background_analysis_run_status
            .as_ref()
            .map(|r| r.name.clone());
        let name = self
            .name_for("AnalysisRun", &base, current.as_deref())
            .await?;
        let request = RunRequest {
            name: &name,
            templates: &background.templates,
            args: &background.args,
            canary_hash: hash,
            stable_hash: stable,
            kind: RunKind::Background,
        };
        let (advanced, reference) = self.run_analysis(&request).await?;
        self.status.canary.current_background_analysis_run_status = Some(reference);
        if let Some(next) = advanced.next {
            self.wake(next);
        }
        Ok(match advanced.phase {
            Phase::Failed | Phase::Error => Some(format!(
                "background analysis {name} {:?}: {}",
                advanced.phase, advanced.message
            )),
            _ => None,
        })
    }

    async fn step(
        &mut self,
        index: usize,
        routers: &RouterSet,
        hash: &str,
        stable: &str,
    ) -> Result<StepResult, Stop> {
        let Some(step) = self.view.step(index).cloned() else {
            return Ok(StepResult::Next);
        };
        let kind = step.kind().map_err(failed("InvalidSpec"))?;
        match kind {
            StepKind::SetWeight => {
                let weight = step.set_weight.unwrap_or(0);
                let canary = self.canary_replicas(index);
                self.scale_canary(hash, canary).await?;
                // No traffic to canary pods that are not available: the
                // weight stays where it was until they are.
                if weight > 0 {
                    match self.availability(hash, canary.max(1)).await? {
                        Availability::Ready => {}
                        Availability::Waiting => return Ok(StepResult::Wait),
                        Availability::Abort(message) => return Ok(StepResult::Abort(message)),
                    }
                }
                let verified = routers.set_weight(weight, &[]).await?;
                self.record_weights(weight, hash, stable, &[], verified);
                if !verified {
                    self.wake_after(Duration::from_secs(1));
                    return Ok(StepResult::Wait);
                }
                Ok(StepResult::Next)
            }
            StepKind::Pause => {
                let duration = step
                    .pause
                    .as_ref()
                    .map(|p| p.duration())
                    .transpose()
                    .map_err(failed("InvalidSpec"))?
                    .flatten();
                if self.promoted_past_pause() {
                    self.status.controller_pause = false;
                    return Ok(StepResult::Next);
                }
                let started = self
                    .status
                    .pause_conditions
                    .iter()
                    .find(|p| p.reason == PAUSE_STEP)
                    .map(|p| p.start_time.clone());
                let Some(started) = started else {
                    if duration == Some(Duration::ZERO) {
                        return Ok(StepResult::Next);
                    }
                    self.add_pause(PAUSE_STEP);
                    if let Some(d) = duration {
                        self.wake_after(d);
                    }
                    return Ok(StepResult::Wait);
                };
                let Some(d) = duration else {
                    return Ok(StepResult::Wait);
                };
                let start = DateTime::parse_from_rfc3339(&started)
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or(self.now);
                let end = chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| start.checked_add_signed(d))
                    .unwrap_or(start);
                if self.now >= end {
                    self.status
                        .pause_conditions
                        .retain(|p| p.reason != PAUSE_STEP);
                    self.status.controller_pause = false;
                    Ok(StepResult::Next)
                } else {
                    self.wake(end);
                    Ok(StepResult::Wait)
                }
            }
            StepKind::Analysis => {
                if self.promoted_past_pause() {
                    // Promoted past an inconclusive analysis.
                    self.status.controller_pause = false;
                    return Ok(StepResult::Next);
                }
                let analysis = step.analysis.clone().unwrap_or_default();
                let base = format!("{}-{hash}-{index}", self.view.name);
                let current = self
                    .status
                    .canary
                    .current_step_analysis_run_status
                    .as_ref()
                    .map(|r| r.name.clone());
                let name = self
                    .name_for("AnalysisRun", &base, current.as_deref())
                    .await?;
                let request = RunRequest {
                    name: &name,
                    templates: &analysis.templates,
                    args: &analysis.args,
                    canary_hash: hash,
                    stable_hash: stable,
                    kind: RunKind::Step,
                };
                let (advanced, reference) = self.run_analysis(&request).await?;
                self.status.canary.current_step_analysis_run_status = Some(reference);
                match advanced.phase {
                    Phase::Successful => Ok(StepResult::Next),
                    Phase::Failed | Phase::Error => Ok(StepResult::Abort(format!(
                        "analysis {name} {:?}: {}",
                        advanced.phase, advanced.message
                    ))),
                    Phase::Inconclusive => {
                        if !self.has_pause(PAUSE_INCONCLUSIVE) {
                            self.add_pause(PAUSE_INCONCLUSIVE);
                        }
                        Ok(StepResult::Wait)
                    }
                    Phase::Pending | Phase::Running => {
                        match advanced.next {
                            Some(next) => self.wake(next),
                            None => self.wake_after(DEFAULT_WAIT),
                        }
                        Ok(StepResult::Wait)
                    }
                }
            }
            StepKind::Experiment => {
                let base = format!("{}-{hash}-{index}", self.view.name);
                let current = self.status.canary.current_experiment.clone();
                let name = self
                    .name_for("Experiment", &base, current.as_deref())
                    .await?;
                let raw = self.raw_step(index).cloned().unwrap_or(Value::Null);
                let stable_template = self.stable_template(stable).await?;
                let stored = ensure_experiment(
                    self.cluster(),
                    self.view,
                    &name,
                    &raw,
                    hash,
                    (stable, &stable_template),
                )
                .await
                .map_err(failed("ExperimentError"))?;
                let (experiment, next) = advance_experiment(
                    self.cluster(),
                    &self.rec.registry,
                    &self.rec.evaluator,
                    self.view,
                    &stored,
                    self.now,
                )
                .await
                .map_err(failed("ExperimentError"))?;
                self.status.canary.current_experiment = Some(name.clone());
                let weight = self.view.canary.weight_at(index);
                match phase_of(&experiment) {
                    "Successful" => {
                        self.status.canary.current_experiment = None;
                        let verified = routers.set_weight(weight, &[]).await?;
                        self.record_weights(weight, hash, stable, &[], verified);
                        Ok(StepResult::Next)
                    }
                    phase @ ("Failed" | "Error" | "Inconclusive") => {
                        let message = experiment
                            .pointer("/status/message")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        Ok(StepResult::Abort(format!(
                            "experiment {name} {phase}: {message}"
                        )))
                    }
                    _ => {
                        let additional = weight_destinations_from_experiment(&raw, &experiment);
                        routers.update_hash(hash, stable, &additional).await?;
                        let verified = routers.set_weight(weight, &additional).await?;
                        self.record_weights(weight, hash, stable, &additional, verified);
                        match next {
                            Some(next) => self.wake(next),
                            None => self.wake_after(DEFAULT_WAIT),
                        }
                        Ok(StepResult::Wait)
                    }
                }
            }
            StepKind::SetCanaryScale => Ok(StepResult::Next),
            StepKind::SetHeaderRoute => {
                let route = header_route(step.set_header_route.as_ref().unwrap_or(&Value::Null))
                    .map_err(failed("InvalidSpec"))?;
                routers.set_header_route(&route).await?;
                Ok(StepResult::Next)
            }
            StepKind::SetMirrorRoute => {
                let route = mirror_route(step.set_mirror_route.as_ref().unwrap_or(&Value::Null))
                    .map_err(failed("InvalidSpec"))?;
                routers.set_mirror_route(&route).await?;
                Ok(StepResult::Next)
            }
        }
    }

    async fn stable_template(&self, stable: &str) -> Result<Value, Stop> {
        let key = ObjectKey::new(
            "apps/v1",
            "ReplicaSet",
            &self.view.namespace,
            &replica_set_name(&self.view.name, stable),
        );
        match self.cluster().get(&key).await {
            Ok(rs) => Ok(rs.pointer("/spec/template").cloned().unwrap_or(Value::Null)),
            Err(ClusterError::NotFound(_)) => Ok(self.view.template.clone()),
            Err(e) => Err(e.into()),
        }
    }
}

fn missing_service(e: ClusterError) -> Stop {
    match e {
        ClusterError::NotFound(message) => Stop::Failed {
            reason: "ServiceNotFound",
            message: format!("{message} not found"),
        },
        other => Stop::Cluster(other),
    }
}
