//! Which watch events are worth which reconcile: the object's own, or its
//! owner's (a ReplicaSet's Rollout).

use crate::cluster::ObjectKey;
use crate::controller::standalone::OWNED_RUN_LABEL;

pub(super) fn is_rollout(key: &ObjectKey) -> bool {
    key.group == "argoproj.io" && key.kind == "Rollout"
}

/// An AnalysisRun event worth a reconcile of the run itself: one no
/// Rollout or Experiment made (those carry [`OWNED_RUN_LABEL`] and are
/// advanced by their owner; the reconcile checks the owner too).
pub(super) fn is_standalone_run(event: &crate::cluster::WatchEvent) -> bool {
    event.key.group == "argoproj.io"
        && event.key.kind == "AnalysisRun"
        && !event.labels.iter().any(|(k, _)| k == OWNED_RUN_LABEL)
}

/// An Experiment event worth a reconcile of the experiment itself: one no
/// Rollout made (a Rollout's carry the pod-template hash label; the
/// reconcile checks the owner too).
pub(super) fn is_standalone_experiment(event: &crate::cluster::WatchEvent) -> bool {
    event.key.group == "argoproj.io"
        && event.key.kind == "Experiment"
        && !event
            .labels
            .iter()
            .any(|(k, _)| k == crate::controller::children::HASH_LABEL)
}

/// The Rollout that owns a ReplicaSet, by the names Weir gives them
/// (`<rollout>-<pod-template-hash>`, the hash also in its labels).
pub(super) fn owning_rollout(event: &crate::cluster::WatchEvent) -> Option<ObjectKey> {
    if event.key.group != "apps" || event.key.kind != "ReplicaSet" {
        return None;
    }
    let hash = event
        .labels
        .iter()
        .find(|(k, _)| k == crate::controller::children::HASH_LABEL)
        .map(|(_, v)| v)?;
    let rollout = event
        .key
        .name
        .strip_suffix(hash.as_str())?
        .strip_suffix('-')?;
    Some(ObjectKey {
        group: "argoproj.io".into(),
        kind: "Rollout".into(),
        namespace: event.key.namespace.clone(),
        name: rollout.into(),
    })
}
