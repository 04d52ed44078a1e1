//! The control loop: a queue of Rollouts due for a reconcile, fed by watch
//! events, requeue times and periodic resyncs; several reconciles at once,
//! never two of one Rollout; and the panic boundary.
//!
//! Each reconcile runs in its own task. If one panics (it should not: the
//! reconcile is written and property-tested not to), the panic is caught at
//! the task boundary, recorded on that Rollout as a `ReconcileFailed`
//! condition, and retried with backoff, while every other Rollout goes on.
//! Argo Rollouts 1.6.6 instead crashed the whole controller and crash-looped.

mod events;
mod panics;
mod queue;

use super::metrics::Metrics;
use super::rollout::{Outcome, Reconciler};
use super::standalone::{experiment_completed, is_completed, is_owned, is_rollout_experiment};
use crate::cluster::{Cluster, ClusterError, ObjectKey};
use async_trait::async_trait;
use events::{is_rollout, is_standalone_experiment, is_standalone_run, owning_rollout};
use panics::record_panic;
use queue::Queue;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Something that reconciles one Rollout (the real [`Reconciler`], or a test double).
#[async_trait]
pub trait Reconcile: Send + Sync + 'static {
    /// One reconcile of the Rollout at `key`.
    async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Outcome>, ClusterError>;
}

#[async_trait]
impl Reconcile for Reconciler {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Outcome>, ClusterError> {
        Reconciler::reconcile(self, key).await
    }
}

/// Reconciles in flight at once unless told otherwise: Argo Rollouts'
/// `--rollout-threads` default. On the embedded store, writers in flight
/// together share each commit's fsync (docs/benchmarks.md, the fleet).
pub const DEFAULT_WORKERS: usize = 10;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Reconciles in flight at once.
    pub workers: usize,
    /// How often every Rollout is looked at even without events.
    pub resync: Duration,
    /// First backoff after a failed reconcile; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Argo's instance id: with one, only Rollouts labelled
    /// `argo-rollouts.argoproj.io/controller-instance-id: <id>` are
    /// reconciled; without, only Rollouts without that label, exactly as an
    /// Argo Rollouts controller selects them, so the two never share one.
    pub instance_id: Option<String>,
    /// Largest serialised AnalysisRun the controller writes (see
    /// [`crate::analysis::fit`]): well under the API server's ~1.5 MiB.
    pub max_run_bytes: usize,
}

/// The label Argo Rollouts uses to assign a Rollout to a controller instance.
pub const INSTANCE_ID_LABEL: &str = "argo-rollouts.argoproj.io/controller-instance-id";

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            workers: DEFAULT_WORKERS,
            resync: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            instance_id: None,
            max_run_bytes: crate::analysis::fit::DEFAULT_MAX_RUN_BYTES,
        }
    }
}

/// Notified when the plugin registration ConfigMap changes.
#[async_trait]
pub trait OnConfigChange: Send + Sync + 'static {
    /// Re-reads the registration; returns whether rollouts should be requeued.
    async fn config_changed(&self) -> bool;
}

/// The control loop.
pub struct Controller {
    cluster: Arc<dyn Cluster>,
    /// Subscribed when the controller is built, so no change made after
    /// that (say, a registration applied right away) can be missed.
    events: Option<tokio::sync::broadcast::Receiver<crate::cluster::WatchEvent>>,
    reconciler: Arc<dyn Reconcile>,
    metrics: Arc<Metrics>,
    settings: ControllerSettings,
    config: Option<(ObjectKey, Arc<dyn OnConfigChange>)>,
    /// Cancel in-flight reconciles when stopped, instead of letting them finish.
    cancel_on_stop: bool,
}

/// What a reconcile task returns: the rollout, its result, how long it took.
type TaskResult = (ObjectKey, Result<Option<Outcome>, ClusterError>, Duration);

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl Controller {
    /// A controller over `cluster` driving `reconciler`.
    pub fn new(
        cluster: Arc<dyn Cluster>,
        reconciler: Arc<dyn Reconcile>,
        metrics: Arc<Metrics>,
        settings: ControllerSettings,
    ) -> Self {
        Controller {
            events: cluster.watch(),
            cluster,
            reconciler,
            metrics,
            settings,
            config: None,
            cancel_on_stop: false,
        }
    }

    /// When stopped, cancels the reconciles in flight instead of letting
    /// them finish: for a leader that lost its lease, which must stop
    /// writing before another replica may take over.
    #[must_use]
    pub fn cancel_in_flight_on_stop(mut self) -> Self {
        self.cancel_on_stop = true;
        self
    }

    /// Watches the ConfigMap `key` and calls `handler` when it changes.
    pub fn with_config(mut self, key: ObjectKey, handler: Arc<dyn OnConfigChange>) -> Self {
        self.config = Some((key, handler));
        self
    }

    /// Whether this instance owns a Rollout with these labels.
    fn selects(&self, labels: &[(String, String)]) -> bool {
        let assigned = labels
            .iter()
            .find(|(k, _)| k == INSTANCE_ID_LABEL)
            .map(|(_, v)| v.as_str());
        assigned == self.settings.instance_id.as_deref()
    }

    /// The `kind` objects this controller selects (Argo's instance id) for
    /// which `keep` holds, for a resync; none when the list fails.
    async fn list_selected(&self, kind: &str, keep: impl Fn(&Value) -> bool) -> Vec<ObjectKey> {
        // With an instance id the server filters by its label; without one
        // (no "label absent" selector here) the filter below does.
        let labels: Vec<(String, String)> = self
            .settings
            .instance_id
            .iter()
            .map(|id| (INSTANCE_ID_LABEL.to_string(), id.clone()))
            .collect();
        match self.cluster.list("argoproj.io", kind, "", &labels).await {
            Ok(list) => list
                .iter()
                .filter(|o| keep(o) && self.selects(&crate::cluster::labels_of(o)))
                .filter_map(|o| ObjectKey::of(o).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(%kind, error = %e, "listing failed; retrying at the next resync");
                Vec::new()
            }
        }
    }

    async fn list_rollouts(&self) -> Vec<ObjectKey> {
        self.list_selected("Rollout", |_| true).await
    }

    /// The standalone AnalysisRuns still running.
    async fn list_standalone_runs(&self) -> Vec<ObjectKey> {
        self.list_selected("AnalysisRun", |o| !is_owned(o) && !is_completed(o))
            .await
    }

    /// The Experiments no Rollout made that have not ended.
    async fn list_standalone_experiments(&self) -> Vec<ObjectKey> {
        self.list_selected("Experiment", |o| {
            !is_rollout_experiment(o) && !experiment_completed(o)
        })
        .await
    }

    /// Runs until `shutdown` resolves; in-flight reconciles are finished first.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut events = self.events.take();
        let mut queue = Queue::default();
        let mut tasks: JoinSet<TaskResult> = JoinSet::new();
        let mut task_keys: HashMap<tokio::task::Id, ObjectKey> = HashMap::new();
        let mut next_resync = Instant::now();
        tokio::pin!(shutdown);
        loop {
            let now = Instant::now();
            if now >= next_resync {
                // Level-triggered: re-read the registration too (it is
                // skipped when its resourceVersion has not changed).
                if let Some((_, handler)) = &self.config {
                    handler.config_changed().await;
                }
                let mut keys = self.list_rollouts().await;
                keys.extend(self.list_standalone_runs().await);
                keys.extend(self.list_standalone_experiments().await);
                for key in keys {
                    // A resync does not cut a failing rollout's backoff
                    // short; a change to it (a watch event) still does.
                    if !queue.backing_off(&key, now) {
                        queue.schedule(key, now);
                    }
                }
                next_resync = now + self.settings.resync;
            }
            while tasks.len() < self.settings.workers.max(1) {
                let Some(key) = queue.pop_due(now) else { break };
                let reconciler = self.reconciler.clone();
                let task_key = key.clone();
                let handle = tasks.spawn(async move {
                    let started = Instant::now();
                    let result = reconciler.reconcile(&task_key).await;
                    (task_key, result, started.elapsed())
                });
                task_keys.insert(handle.id(), key);
            }
            let wake = queue.next_due().unwrap_or(next_resync).min(next_resync);
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    self.finished(joined, &mut queue, &mut task_keys).await;
                }
                event = async {
                    match events.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match event {
                    Ok(event) => {
                        let reconciled = is_rollout(&event.key)
                            || is_standalone_run(&event)
                            || is_standalone_experiment(&event);
                        if reconciled && !event.deleted && self.selects(&event.labels) {
                            let echo = event.resource_version.is_some()
                                && queue.own_writes.get(&event.key) == event.resource_version.as_ref();
                            if echo {
                                queue.own_writes.remove(&event.key);
                            } else {
                                queue.schedule(event.key, Instant::now());
                            }
                        } else if let Some(rollout) = owning_rollout(&event)
                            && queue.waiting_on_pods.contains(&rollout)
                        {
                            queue.schedule(rollout, Instant::now());
                        } else if event.key.group == "apps" && event.key.kind == "Deployment" {
                            // A workloadRef's Deployment changed (its
                            // template, or its size).
                            let referring: Vec<ObjectKey> = queue
                                .referring
                                .get(&event.key)
                                .map(|r| r.iter().cloned().collect())
                                .unwrap_or_default();
                            for rollout in referring {
                                queue.schedule(rollout, Instant::now());
                            }
                        } else if self.config.as_ref().is_some_and(|(k, _)| *k == event.key)
                            && let Some((_, handler)) = &self.config
                            && handler.config_changed().await
                        {
                            for key in self.list_rollouts().await {
                                queue.schedule(key, Instant::now());
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "watch lagged; resyncing");
                        next_resync = Instant::now();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => events = None,
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        if self.cancel_on_stop {
            // Leadership lost: another replica may already act, so in-flight
            // reconciles stop at their next await rather than write on.
            tasks.abort_all();
        }
        // Let in-flight reconciles finish: each ends with one status write.
        while let Some(joined) = tasks.join_next_with_id().await {
            self.finished(joined, &mut queue, &mut task_keys).await;
        }
    }

    async fn finished(
        &self,
        joined: Result<(tokio::task::Id, TaskResult), tokio::task::JoinError>,
        queue: &mut Queue,
        task_keys: &mut HashMap<tokio::task::Id, ObjectKey>,
    ) {
        let now = Instant::now();
        match joined {
            Ok((id, (key, result, elapsed))) => {
                task_keys.remove(&id);
                queue.finish(&key);
                match result {
                    Ok(None) => {
                        // Gone: forget it.
                        queue.waiting_on_pods.remove(&key);
                        queue.set_workload(&key, None);
                        queue.own_writes.remove(&key);
                        queue.failures.remove(&key);
                        self.metrics.reconciled("ok", elapsed);
                    }
                    Ok(Some(outcome)) => {
                        match &outcome.written_version {
                            Some(v) => queue.own_writes.insert(key.clone(), v.clone()),
                            None => queue.own_writes.remove(&key),
                        };
                        if outcome.waits_on_pods {
                            queue.waiting_on_pods.insert(key.clone());
                        } else {
                            queue.waiting_on_pods.remove(&key);
                        }
                        queue.set_workload(&key, outcome.workload.clone());
                        let requeue = if outcome.failed {
                            self.metrics.reconciled("failed", elapsed);
                            let delay = self.backoff(queue, &key);
                            // A requeue the reconciler chose (a write conflict) wins over backoff.
                            Some(outcome.requeue.unwrap_or(delay))
                        } else {
                            self.metrics.reconciled("ok", elapsed);
                            queue.failures.remove(&key);
                            outcome.requeue
                        };
                        if let Some(after) = requeue {
                            queue.schedule(key, now + after);
                        }
                    }
                    Err(e) => {
                        self.metrics.reconciled("failed", elapsed);
                        tracing::warn!(rollout = %key, error = %e, "reconcile failed");
                        let delay = self.backoff(queue, &key);
                        queue.schedule(key, now + delay);
                    }
                }
            }
            Err(join_error) => {
                let Some(key) = task_keys.remove(&join_error.id()) else {
                    return;
                };
                queue.finish(&key);
                if join_error.is_cancelled() {
                    // Stopped on purpose (leadership lost): nothing to record,
                    // and nothing may be written by a controller that stopped.
                    return;
                }
                self.metrics.reconciled("panic", Duration::ZERO);
                let message = if join_error.is_panic() {
                    panic_message(join_error.into_panic().as_ref())
                } else {
                    "the reconcile task was cancelled".into()
                };
                tracing::error!(rollout = %key, %message, "reconcile panicked; contained to this rollout");
                // Recorded on Rollouts; a run's panic is in the log only
                // (its status has no such condition).
                if is_rollout(&key)
                    && let Err(e) = record_panic(self.cluster.as_ref(), &key, &message).await
                {
                    tracing::warn!(rollout = %key, error = %e, "could not record the panic on the rollout");
                }
                let delay = self.backoff(queue, &key);
                queue.schedule(key, now + delay);
            }
        }
    }

    fn backoff(&self, queue: &mut Queue, key: &ObjectKey) -> Duration {
        let failures = queue.failures.entry(key.clone()).or_insert(0);
        *failures = failures.saturating_add(1);
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.settings
            .backoff
            .saturating_mul(factor)
            .min(self.settings.max_backoff)
    }
}
