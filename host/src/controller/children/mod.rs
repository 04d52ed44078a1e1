//! A Rollout's children: ReplicaSets named by pod-template hash, and the
//! canary and stable Services whose selectors carry those hashes.
//!
//! Weir writes a ReplicaSet's spec only; its status (how many pods are
//! ready and available) is written by the cluster's ReplicaSet controller,
//! or on the embedded store by its stand-in ([`super::readiness`]).

mod hash;
mod services;

use super::spec::RolloutView;
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, string_pairs_at};
pub use hash::{HASH_LABEL, pod_template_hash, replica_set_name};
use serde_json::{Value, json};
pub use services::select_hash;

fn labels_with_hash(template: &Value, hash: &str) -> Value {
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), Value::String(hash.into()));
    Value::Object(labels)
}

/// An owner reference to `view` (the Rollout, or a standalone Experiment).
pub fn owner_reference(view: &RolloutView) -> Value {
    json!([{
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": view.owner_kind,
        "name": view.name,
        "uid": view.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// A ReplicaSet object for `template` under `hash`.
pub fn replica_set(
    view: &RolloutView,
    name: &str,
    template: &Value,
    hash: &str,
    replicas: i32,
) -> Value {
    let labels = labels_with_hash(template, hash);
    let mut pod_template = template.clone();
    if let Some(map) = pod_template.as_object_mut() {
        let metadata = map.entry("metadata").or_insert_with(|| json!({}));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert("labels".into(), labels.clone());
        }
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": view.namespace,
            "labels": labels,
            "ownerReferences": owner_reference(view),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": pod_template,
        },
    })
}

/// The pod-template hash an object is labelled with ("" when none).
fn hash_label(object: &Value) -> &str {
    object
        .pointer(&format!("/metadata/labels/{HASH_LABEL}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The ReplicaSet of `view` for `hash`, if it exists.
pub(crate) async fn replica_set_of(
    cluster: &dyn Cluster,
    view: &RolloutView,
    hash: &str,
) -> Result<Option<Value>, ClusterError> {
    let key = ObjectKey::new(
        "apps/v1",
        "ReplicaSet",
        &view.namespace,
        &replica_set_name(&view.name, hash),
    );
    match cluster.get(&key).await {
        Ok(rs) => Ok(Some(rs)),
        Err(ClusterError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How many of the ReplicaSet of `hash`'s pods are available (its
/// controller's `status.availableReplicas`; 0 when it does not exist).
pub async fn available_replicas(
    cluster: &dyn Cluster,
    view: &RolloutView,
    hash: &str,
) -> Result<i64, ClusterError> {
    Ok(replica_set_of(cluster, view, hash)
        .await?
        .and_then(|rs| {
            rs.pointer("/status/availableReplicas")
                .and_then(Value::as_i64)
        })
        .unwrap_or(0))
}

/// The annotation numbering a Rollout's ReplicaSets in the order they were
/// created (Argo's, which its tools read too).
pub const REVISION_ANNOTATION: &str = "rollout.argoproj.io/revision";

/// A ReplicaSet's revision number, if it has one.
pub fn revision_of(rs: &Value) -> Option<u64> {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
}

/// Which revision number a ReplicaSet gets if it has to be created.
#[derive(Debug, Clone, Copy)]
pub enum Revision<'a> {
    /// None (an Experiment's ReplicaSets).
    Unnumbered,
    /// The first (a first deploy).
    First,
    /// One more than the stable ReplicaSet of this hash (a new revision;
    /// read only when the ReplicaSet is created).
    After(&'a str),
}

/// Creates the ReplicaSet `name` or scales it to `replicas`; writes nothing
/// when it is already so.
pub async fn ensure_replica_set(
    cluster: &dyn Cluster,
    view: &RolloutView,
    name: &str,
    template: &Value,
    hash: &str,
    replicas: i32,
) -> Result<(), ClusterError> {
    ensure_revision(
        cluster,
        view,
        name,
        template,
        hash,
        replicas,
        Revision::Unnumbered,
    )
    .await
}

/// [`ensure_replica_set`], numbering a ReplicaSet it creates as `revision` says.
pub async fn ensure_revision(
    cluster: &dyn Cluster,
    view: &RolloutView,
    name: &str,
    template: &Value,
    hash: &str,
    replicas: i32,
    revision: Revision<'_>,
) -> Result<(), ClusterError> {
    let key = ObjectKey::new("apps/v1", "ReplicaSet", &view.namespace, name);
    // The Rollout's own ReplicaSets (numbered ones) follow its
    // minReadySeconds, as Argo's do; an Experiment's keep their own.
    let min_ready = match revision {
        Revision::Unnumbered => None,
        Revision::First | Revision::After(_) => Some(view.min_ready_seconds),
    };
    match cluster.get(&key).await {
        Ok(existing) => resize(cluster, existing, replicas, min_ready).await,
        Err(ClusterError::NotFound(_)) => {
            let number = match revision {
                Revision::Unnumbered => None,
                Revision::First => Some(1),
                Revision::After(stable) => {
                    let before = replica_set_of(cluster, view, stable)
                        .await?
                        .and_then(|rs| revision_of(&rs))
                        .unwrap_or(1);
                    Some(before.saturating_add(1))
                }
            };
            let mut object = replica_set(view, name, template, hash, replicas);
            if let Some(m) = min_ready.filter(|m| *m > 0) {
                object["spec"]["minReadySeconds"] = json!(m);
            }
            if let Some(n) = number {
                object["metadata"]["annotations"] = json!({REVISION_ANNOTATION: n.to_string()});
            }
            cluster.apply(vec![Write::Create(object)]).await.map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Scales `existing` to `replicas`. A ReplicaSet sized here is in use, so
/// a scale-down deadline it carried (see [`super::retiring`]) goes.
pub(crate) async fn scale(
    cluster: &dyn Cluster,
    existing: Value,
    replicas: i32,
) -> Result<(), ClusterError> {
    resize(cluster, existing, replicas, None).await
}

/// [`scale`], also setting `spec.minReadySeconds` when `min_ready` is given.
async fn resize(
    cluster: &dyn Cluster,
    mut existing: Value,
    replicas: i32,
    min_ready: Option<u32>,
) -> Result<(), ClusterError> {
    let current = existing.pointer("/spec/replicas").and_then(Value::as_i64);
    let marked = super::retiring::deadline_of(&existing).is_some();
    let min_ready_differs = min_ready.is_some_and(|m| {
        existing
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            != u64::from(m)
    });
    if current == Some(i64::from(replicas)) && !marked && !min_ready_differs {
        return Ok(());
    }
    if marked {
        super::retiring::remove_annotation(&mut existing, super::retiring::SCALE_DOWN_DEADLINE);
    }
    if let Some(spec) = existing
        .as_object_mut()
        .map(|map| map.entry("spec").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        spec.insert("replicas".into(), json!(replicas));
        if let Some(m) = min_ready.filter(|_| min_ready_differs) {
            spec.insert("minReadySeconds".into(), json!(m));
        }
    }
    cluster
        .apply(vec![Write::update_as_read(existing)])
        .await
        .map(drop)
}

/// Scales the ReplicaSet of `hash` to zero, if it exists.
pub async fn scale_down(
    cluster: &dyn Cluster,
    view: &RolloutView,
    hash: &str,
) -> Result<(), ClusterError> {
    match replica_set_of(cluster, view, hash).await? {
        Some(rs) => scale(cluster, rs, 0).await,
        None => Ok(()),
    }
}

/// Scales to zero every ReplicaSet owned by `view` whose hash is not in
/// `keep`. This lists the namespace's ReplicaSets, so the reconcile uses it
/// only on a first deploy (to catch leftovers whose status was lost); after
/// that every ReplicaSet it creates is scaled down by name.
pub async fn scale_down_others(
    cluster: &dyn Cluster,
    view: &RolloutView,
    keep: &[&str],
) -> Result<(), ClusterError> {
    for rs in owned_replica_sets(cluster, view).await? {
        if !keep.contains(&hash_label(&rs)) {
            scale(cluster, rs, 0).await?;
        }
    }
    Ok(())
}

/// Deletes the oldest scaled-down ReplicaSets owned by `view` beyond its
/// `revisionHistoryLimit`, as Argo does after a promotion: `current` (the
/// stable) is never counted nor deleted, nor is a ReplicaSet that still
/// has replicas. Returns how many were deleted.
pub async fn prune_history(
    cluster: &dyn Cluster,
    view: &RolloutView,
    current: &str,
) -> Result<usize, ClusterError> {
    // Revisions are numbered from 1, so revision r leaves at most r - 1
    // old ones: no need to look (list) until that passes the limit.
    let revision = replica_set_of(cluster, view, current)
        .await?
        .and_then(|rs| revision_of(&rs));
    if let Some(r) = revision
        && usize::try_from(r.saturating_sub(1)).unwrap_or(usize::MAX) <= view.revision_history_limit
    {
        return Ok(0);
    }
    let mut old: Vec<Value> = owned_replica_sets(cluster, view)
        .await?
        .into_iter()
        .filter(|rs| hash_label(rs) != current)
        .collect();
    let excess = old.len().saturating_sub(view.revision_history_limit);
    if excess == 0 {
        return Ok(0);
    }
    // Oldest first: by revision; ReplicaSets without one (made before
    // Weir numbered them) first, by creation time.
    old.sort_by_key(|rs| {
        (
            revision_of(rs).unwrap_or(0),
            rs.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    });
    let scaled_down = |rs: &Value| rs.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0);
    let doomed: Vec<Write> = old
        .iter()
        .filter(|rs| scaled_down(rs))
        .take(excess)
        .filter_map(|rs| ObjectKey::of(rs).ok())
        .map(|key| Write::Delete {
            key,
            expected_version: None,
        })
        .collect();
    let count = doomed.len();
    if count > 0 {
        cluster.apply(doomed).await?;
    }
    Ok(count)
}

/// `spec.selector.matchLabels`, as (key, value) pairs: every ReplicaSet
/// of the Rollout carries them (its template's labels must match).
pub fn selector_labels(view: &RolloutView) -> Vec<(String, String)> {
    string_pairs_at(&view.object, "/spec/selector/matchLabels")
}

/// The ReplicaSets whose controller owner is `view`. Listed by the
/// Rollout's selector, as Argo's informer does: a namespace of many
/// rollouts is not read whole for each one (a fleet's first deploy was
/// quadratic in it).
pub async fn owned_replica_sets(
    cluster: &dyn Cluster,
    view: &RolloutView,
) -> Result<Vec<Value>, ClusterError> {
    Ok(cluster
        .list(
            "apps",
            "ReplicaSet",
            &view.namespace,
            &selector_labels(view),
        )
        .await?
        .into_iter()
        .filter(|rs| owned_by(rs, view))
        .collect())
}

/// Whether `object` names `view` as its Rollout owner.
pub fn owned_by(object: &Value, view: &RolloutView) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners.iter().any(|o| {
                o.get("kind").and_then(Value::as_str) == Some(view.owner_kind)
                    && o.get("name").and_then(Value::as_str) == Some(view.name.as_str())
            })
        })
}
