//! `spec.restartAt` (`kubectl argo rollouts restart`, `weir restart`): the
//! rollout's pods created before that time are evicted, a few at a time,
//! as Argo's pod restarter does.
//!
//! Once the time has come and `status.restartedAt` does not equal it yet,
//! each pass lists the rollout's pods (by its selector, kept only when a
//! ReplicaSet the Rollout owns owns them) and evicts old ones while the
//! available pods stay at or above `max(spec.replicas, total) -
//! max(maxUnavailable, 1)`. Eviction honours PodDisruptionBudgets; one it
//! refuses is tried again later. When no pod is older than `restartAt`,
//! `status.restartedAt` is set to it and nothing more happens until it
//! changes. A pass that evicted ends there, as Argo's does: the
//! availability counts it read are no longer true.

use super::children::owned_by;
use super::spec::RolloutView;
use crate::cluster::{Cluster, ClusterError, ObjectKey, time_at};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// What [`restart`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Pods evicted by this pass.
    pub evicted: usize,
    /// Pods still older than `restartAt` after it.
    pub remaining: usize,
}

/// Whether a restart is due: `restartAt` has passed and is not the one
/// `restartedAt` records. `Err(at)` when it is still ahead (wake then).
pub fn due(
    view: &RolloutView,
    restarted_at: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, DateTime<Utc>> {
    let Some(at) = view.restart_at else {
        return Ok(None);
    };
    let recorded = restarted_at
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    if recorded == Some(at) {
        return Ok(None);
    }
    if now <= at {
        return Err(at);
    }
    Ok(Some(at))
}

/// Whether a pod counts as available: Ready for `min_ready` seconds and
/// not being deleted (Kubernetes' `IsPodAvailable`).
fn available(pod: &Value, min_ready: u32, now: DateTime<Utc>) -> bool {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return false;
    }
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        });
    let Some(ready) = ready.filter(|c| c.get("status").and_then(Value::as_str) == Some("True"))
    else {
        return false;
    };
    if min_ready == 0 {
        return true;
    }
    time_at(ready, "/lastTransitionTime")
        .is_some_and(|since| since + chrono::Duration::seconds(i64::from(min_ready)) <= now)
}

/// Evicts what may go now of the rollout's pods created before `at`.
pub async fn restart(
    cluster: &dyn Cluster,
    view: &RolloutView,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Progress, ClusterError> {
    let labels = super::children::selector_labels(view);
    let replica_sets: Vec<Value> = cluster
        .list("apps", "ReplicaSet", &view.namespace, &labels)
        .await?
        .into_iter()
        .filter(|rs| owned_by(rs, view))
        .collect();
    let uids: Vec<&str> = replica_sets
        .iter()
        .filter_map(|rs| rs.pointer("/metadata/uid").and_then(Value::as_str))
        .collect();
    let total: i64 = replica_sets
        .iter()
        .filter_map(|rs| rs.pointer("/spec/replicas").and_then(Value::as_i64))
        .sum();
    let mut pods: Vec<Value> = cluster
        .list("", "Pod", &view.namespace, &labels)
        .await?
        .into_iter()
        .filter(|pod| {
            pod.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|owners| {
                    owners.iter().any(|o| {
                        o.get("uid")
                            .and_then(Value::as_str)
                            .is_some_and(|uid| uids.contains(&uid))
                    })
                })
        })
        .collect();
    pods.sort_by(|a, b| {
        let name = |p: &Value| {
            p.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        name(a).cmp(&name(b))
    });
    let available_now = pods
        .iter()
        .filter(|p| available(p, view.min_ready_seconds, now))
        .count() as i64;
    let concurrent = i64::from(view.canary.max_unavailable(view.replicas).max(1));
    let min_available = i64::from(view.replicas).max(total) - concurrent;
    let mut may_evict = available_now - min_available;
    let mut progress = Progress::default();
    let mut old = 0;
    for pod in &pods {
        // Created at or after restartAt: already restarted (Argo's test).
        if time_at(pod, "/metadata/creationTimestamp").is_some_and(|created| created >= at) {
            continue;
        }
        old += 1;
        if may_evict <= 0 || pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let key = ObjectKey::of(pod)?;
        match cluster.evict(&key).await {
            Ok(()) => {
                tracing::info!(rollout = %view.name, pod = %key.name, "evicted for restartAt");
                progress.evicted += 1;
                may_evict -= 1;
            }
            // A disruption budget does not allow it yet; gone already.
            Err(ClusterError::TooManyRequests(why)) => {
                tracing::info!(rollout = %view.name, pod = %key.name, %why, "eviction refused for now");
            }
            Err(ClusterError::NotFound(_)) => {
                progress.evicted += 1;
            }
            Err(e) => return Err(e),
        }
    }
    progress.remaining = old - progress.evicted;
    Ok(progress)
}
