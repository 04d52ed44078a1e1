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
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Handles one ReplicaSet: ready now, later (a timer re-syncs it), or never.
async fn handle(cluster: &Arc<dyn Cluster>, key: ObjectKey, pending: &Pending) {
    let Ok(rs) = cluster.get(&key).await else {
        return;
    };
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

/// Runs until `shutdown`: every ReplicaSet in the store gets the status its
/// controller would give it, now and whenever it changes.
pub async fn run(cluster: Arc<dyn Cluster>, shutdown: impl std::future::Future<Output = ()>) {
    let Some(mut events) = cluster.watch() else {
        tracing::warn!("the store cannot be watched: no simulated ReplicaSet readiness");
        return;
    };
    tokio::pin!(shutdown);
    let pending: Pending = Arc::default();
    let mut resync = true;
    loop {
        if resync {
            resync = false;
            if let Ok(all) = cluster.list("apps", "ReplicaSet", "", &[]).await {
                for rs in all {
                    if let Ok(key) = ObjectKey::of(&rs) {
                        handle(&cluster, key, &pending).await;
                    }
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            event = events.recv() => match event {
                Ok(event) if event.key.group == "apps" && event.key.kind == "ReplicaSet" && !event.deleted => {
                    handle(&cluster, event.key, &pending).await;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => resync = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
