//! A stand-in for Kubernetes' ReplicaSet controller and kubelet on the
//! embedded store, where no pods run: it writes each ReplicaSet's
//! `status.replicas`, `readyReplicas` and `availableReplicas` as the real
//! controllers would once its pods start, so the rollout controller reads
//! availability the same way on both backends (one code path) and never
//! writes a ReplicaSet's status itself.
//!
//! Pods become ready at once, unless the pod template says otherwise with
//! the annotation [`SIMULATED_READINESS`]: a Go duration (`"5s"`: ready that
//! long after the ReplicaSet is scaled) or `never` (an image that never
//! starts). Ready pods count as available once they have been ready for
//! the ReplicaSet's `spec.minReadySeconds`, as the real controller counts
//! them. On Kubernetes this does not run; the cluster's own controllers
//! write the status.

use crate::cluster::{Cluster, ClusterError, ObjectKey, Write};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// The pod-template annotation that delays or withholds simulated readiness.
pub const SIMULATED_READINESS: &str = "weir.dev/simulated-readiness";

/// When a ReplicaSet's pods become ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    After(Duration),
    Never,
}

fn readiness_of(rs: &Value) -> Readiness {
    let annotation = rs
        .pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(SIMULATED_READINESS))
        .and_then(Value::as_str);
    match annotation {
        Some("never") => Readiness::Never,
        Some(d) => Readiness::After(crate::analysis::types::parse_duration(d).unwrap_or_default()),
        None => Readiness::After(Duration::ZERO),
    }
}

/// `spec.minReadySeconds`.
fn min_ready_of(rs: &Value) -> Duration {
    Duration::from_secs(
        rs.pointer("/spec/minReadySeconds")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    )
}

/// Whether a ReplicaSet's pods are ready, and whether they have been for
/// its `minReadySeconds` (available).
#[derive(Debug, Clone, Copy)]
struct Pods {
    ready: bool,
    available: bool,
}

/// The status a ReplicaSet's controller would write for `pods`.
fn status_of(rs: &Value, pods: Pods) -> Value {
    let desired = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let count = |on: bool| if on { desired } else { 0 };
    json!({
        "replicas": desired,
        "readyReplicas": count(pods.ready),
        "availableReplicas": count(pods.ready && pods.available),
        "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    })
}

/// Writes `rs`'s status if it is not what its controller would write now.
async fn sync(cluster: &dyn Cluster, rs: Value, pods: Pods) -> Result<(), ClusterError> {
    let status = status_of(&rs, pods);
    let current = rs.get("status").cloned().unwrap_or(Value::Null);
    let same = ["replicas", "readyReplicas", "availableReplicas"]
        .iter()
        .all(|f| current.get(*f) == status.get(*f));
    if same {
        return Ok(());
    }
    let mut object = rs;
    if let Some(map) = object.as_object_mut() {
        map.insert("status".into(), status);
    }
    cluster
        .apply(vec![Write::update_as_read(object)])
        .await
        .map(drop)
}

/// ReplicaSets with a readiness timer running.
type Pending = Arc<Mutex<BTreeSet<ObjectKey>>>;

/// Handles the ReplicaSet `key` as it is now (see [`handle_object`]).
async fn handle(cluster: &Arc<dyn Cluster>, key: ObjectKey, pending: &Pending) {
    let Ok(rs) = cluster.get(&key).await else {
        return;
    };
    handle_object(cluster, key, rs, pending).await;
}

/// Handles one ReplicaSet, as read: ready now, later (a timer re-syncs
/// it), or never.
async fn handle_object(cluster: &Arc<dyn Cluster>, key: ObjectKey, rs: Value, pending: &Pending) {
    let min_ready = min_ready_of(&rs);
    let none = Pods {
        ready: false,
        available: false,
    };
    let outcome = match readiness_of(&rs) {
        Readiness::Never => sync(cluster.as_ref(), rs, none).await,
        Readiness::After(d) if d.is_zero() && min_ready.is_zero() => {
            let all = Pods {
                ready: true,
                available: true,
            };
            sync(cluster.as_ref(), rs, all).await
        }
        Readiness::After(d) => {
            let scaled_and_not_available =
                rs.pointer("/status/availableReplicas") != rs.pointer("/spec/replicas");
            let start = scaled_and_not_available
                && pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone());
            if start {
                // Not ready until the delay has passed since it was scaled,
                // nor available until minReadySeconds after that.
                let now = Pods {
                    ready: d.is_zero(),
                    available: false,
                };
                let _ = sync(cluster.as_ref(), rs, now).await;
                let (cluster, pending, key) = (cluster.clone(), pending.clone(), key.clone());
                tokio::spawn(async move {
                    let stages = [
                        (
                            d,
                            Pods {
                                ready: true,
                                available: min_ready.is_zero(),
                            },
                        ),
                        (
                            min_ready,
                            Pods {
                                ready: true,
                                available: true,
                            },
                        ),
                    ];
                    for (wait, pods) in stages {
                        if wait.is_zero() {
                            continue;
                        }
                        tokio::time::sleep(wait).await;
                        // Read again: it may have changed while the pods started.
                        if let Ok(rs) = cluster.get(&key).await {
                            let _ = sync(cluster.as_ref(), rs, pods).await;
                        }
                    }
                    pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                });
            }
            Ok(())
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(replica_set = %key, error = %e, "simulated readiness not written; next change retries");
    }
}

/// ReplicaSets handled at once. Their status writes then share commits
/// (the embedded store commits concurrent batches together): handled one
/// after another, a fleet of thousands waited on one fsync per ReplicaSet.
const MAX_IN_FLIGHT: usize = 32;

/// Which ReplicaSets to handle, at most [`MAX_IN_FLIGHT`] at once and never
/// one twice at the same time (a change seen while it is handled is handled
/// again after).
#[derive(Default)]
struct Work {
    backlog: VecDeque<(ObjectKey, Option<Value>)>,
    queued: HashSet<ObjectKey>,
    in_flight: HashSet<ObjectKey>,
    again: HashSet<ObjectKey>,
    tasks: JoinSet<()>,
    /// Which ReplicaSet each task handles (known even if a task fails).
    task_keys: HashMap<tokio::task::Id, ObjectKey>,
}

impl Work {
    /// Handles `key` (as listed, when `listed` is given) once a slot is free.
    fn submit(&mut self, key: ObjectKey, listed: Option<Value>) {
        if self.in_flight.contains(&key) {
            self.again.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.backlog.push_back((key, listed));
        }
    }

    /// Starts queued work while slots are free.
    fn pump(&mut self, cluster: &Arc<dyn Cluster>, pending: &Pending) {
        while self.tasks.len() < MAX_IN_FLIGHT {
            let Some((key, listed)) = self.backlog.pop_front() else {
                return;
            };
            self.queued.remove(&key);
            self.in_flight.insert(key.clone());
            let (cluster, pending, task_key) = (cluster.clone(), pending.clone(), key.clone());
            let task = self.tasks.spawn(async move {
                match listed {
                    Some(rs) => handle_object(&cluster, task_key, rs, &pending).await,
                    None => handle(&cluster, task_key, &pending).await,
                }
            });
            self.task_keys.insert(task.id(), key);
        }
    }

    /// Task `id` ended; if its ReplicaSet changed meanwhile, it is handled
    /// again (a failed task is not retried: the next change tries again).
    fn finished(&mut self, id: tokio::task::Id, failed: bool) {
        let Some(key) = self.task_keys.remove(&id) else {
            return;
        };
        if failed {
            tracing::warn!(replica_set = %key, "simulated readiness task failed");
        }
        self.in_flight.remove(&key);
        if self.again.remove(&key) {
            self.submit(key, None);
        }
    }
}

/// Runs until `shutdown`: every ReplicaSet in the store gets the status its
/// controller would give it, now and whenever it changes.
pub async fn run(cluster: Arc<dyn Cluster>, shutdown: impl std::future::Future<Output = ()>) {
    let Some(mut events) = cluster.watch() else {
        tracing::warn!("the store cannot be watched: no simulated ReplicaSet readiness");
        return;
    };
    tokio::pin!(shutdown);
    let pending: Pending = Arc::default();
    let mut work = Work::default();
    let mut resync = true;
    loop {
        if resync {
            resync = false;
            // Handled as listed (a lagging stand-in in a large fleet
            // re-syncs often: no second read of each).
            if let Ok(all) = cluster.list("apps", "ReplicaSet", "", &[]).await {
                for rs in all {
                    if let Ok(key) = ObjectKey::of(&rs) {
                        work.submit(key, Some(rs));
                    }
                }
            }
        }
        work.pump(&cluster, &pending);
        tokio::select! {
            _ = &mut shutdown => {
                work.tasks.abort_all();
                return;
            }
            Some(done) = work.tasks.join_next_with_id(), if !work.tasks.is_empty() => {
                match done {
                    Ok((id, ())) => work.finished(id, false),
                    Err(e) => work.finished(e.id(), true),
                }
            }
            event = events.recv() => match event {
                Ok(event) if event.key.group == "apps" && event.key.kind == "ReplicaSet" && !event.deleted => {
                    work.submit(event.key, None);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => resync = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
