//! What an operator does to a Rollout (`weir promote`, `weir abort`,
//! `weir retry`),
//! written as Argo's kubectl plugin writes it, so the controller picks it up
//! on its next reconcile.

use super::status::RolloutStatus;
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write};
use serde_json::Value;

/// An operator action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Unpause, or skip the current step when not paused.
    Promote,
    /// Skip every remaining step.
    PromoteFull,
    /// All traffic back to stable, canary scaled down.
    Abort,
    /// Run an aborted update again from its first step.
    Retry,
    /// Pause the rollout (`spec.paused`, as `kubectl argo rollouts pause`).
    Pause,
}

/// A Rollout's key.
pub fn rollout_key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new("argoproj.io/v1alpha1", "Rollout", namespace, name)
}

/// What an edit decided: write the edited object, or nothing to write.
enum Edit {
    /// Write it; the message says what was done.
    Write(String),
    /// Leave it as it is; the message says why.
    Unchanged(String),
}

/// Reads the object at `key`, applies `edit` and writes it conditionally
/// on the version read, reading again after a write conflict with the
/// controller (up to five times).
async fn edit_with_retry(
    cluster: &dyn Cluster,
    key: &ObjectKey,
    mut edit: impl FnMut(&mut Value) -> Result<Edit, ClusterError>,
) -> Result<String, ClusterError> {
    let mut last = None;
    for _ in 0..5 {
        let mut object = cluster.get(key).await?;
        let done = match edit(&mut object)? {
            Edit::Write(done) => done,
            Edit::Unchanged(why) => return Ok(why),
        };
        match cluster.apply(vec![Write::update_as_read(object)]).await {
            Ok(_) => return Ok(done),
            Err(e @ ClusterError::Conflict { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ClusterError::Unavailable("no attempt was made".into())))
}

/// Sets the image of `container` in the Rollout's pod template, as
/// `kubectl argo rollouts set image` does: a new revision. The error names
/// the containers there are when none is called `container`.
pub async fn set_image(
    cluster: &dyn Cluster,
    namespace: &str,
    name: &str,
    container: &str,
    image: &str,
) -> Result<String, ClusterError> {
    let rollout = cluster.get(&rollout_key(namespace, name)).await?;
    let (key, place) = match template_source(cluster, &rollout).await? {
        Some(workload) => (workload.key.clone(), in_workload(&workload)),
        None => (rollout_key(namespace, name), String::new()),
    };
    edit_with_retry(cluster, &key, |object| {
        let mut names = Vec::new();
        let mut found = false;
        for list in ["containers", "initContainers"] {
            let pointer = format!("/spec/template/spec/{list}");
            for c in object
                .pointer_mut(&pointer)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let this = c.get("name").and_then(Value::as_str).unwrap_or("");
                names.push(this.to_string());
                if this == container {
                    c["image"] = Value::String(image.to_string());
                    found = true;
                }
            }
        }
        if !found {
            return Err(ClusterError::Invalid(format!(
                "{key} has no container {container:?} (it has {names:?})"
            )));
        }
        Ok(Edit::Write(format!(
            "container {container} set to {image}{place}"
        )))
    })
    .await
}

/// The Deployment a Rollout's `spec.workloadRef` takes its template from
/// (`None` without one), as [`super::workload::resolve`] reads it: the
/// template operator verbs edit, as Argo's kubectl plugin does.
async fn template_source(
    cluster: &dyn Cluster,
    rollout: &Value,
) -> Result<Option<super::workload::Workload>, ClusterError> {
    match super::workload::resolve(cluster, rollout).await {
        Ok(resolved) => Ok(resolved.map(|(_, workload)| workload)),
        Err(super::workload::ResolveError::Invalid(message)) => Err(ClusterError::Invalid(message)),
        Err(super::workload::ResolveError::Cluster(e)) => Err(e),
    }
}

/// What the operator is told about an edit that went to the Deployment.
fn in_workload(workload: &super::workload::Workload) -> String {
    format!(
        " (in Deployment {}/{}, the Rollout's workloadRef)",
        workload.key.namespace, workload.key.name
    )
}

/// Restarts the Rollout's pods, as `kubectl argo rollouts restart` does:
/// sets `spec.restartAt` to `at` (whole seconds), after which the
/// controller evicts the pods created before it, a few at a time.
pub async fn restart(
    cluster: &dyn Cluster,
    namespace: &str,
    name: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<String, ClusterError> {
    let key = rollout_key(namespace, name);
    let text = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    edit_with_retry(cluster, &key, |object| {
        match object.get_mut("spec").and_then(Value::as_object_mut) {
            Some(spec) => spec.insert("restartAt".into(), Value::String(text.clone())),
            None => return Err(ClusterError::Invalid(format!("{key} has no spec"))),
        };
        Ok(Edit::Write(format!("restarts at {text}")))
    })
    .await
}

/// Stops an AnalysisRun, as `kubectl argo rollouts terminate analysisrun`
/// does (`spec.terminate: true`): no new measurement starts, one in
/// progress is terminated, and the run ends with what it measured so far
/// ("Run Terminated"). A run already over is left as it is.
pub async fn terminate_analysis_run(
    cluster: &dyn Cluster,
    namespace: &str,
    name: &str,
) -> Result<String, ClusterError> {
    let key = ObjectKey::new("argoproj.io/v1alpha1", "AnalysisRun", namespace, name);
    terminate(
        cluster,
        &key,
        super::standalone::is_completed,
        "terminated: it ends with what it has measured",
    )
    .await
}

/// `kubectl argo rollouts terminate experiment`: `spec.terminate` on an
/// Experiment; it ends Successful, its pods scaled down, its analyses
/// ended with what they measured. One already over is left as it is.
pub async fn terminate_experiment(
    cluster: &dyn Cluster,
    namespace: &str,
    name: &str,
) -> Result<String, ClusterError> {
    let key = ObjectKey::new("argoproj.io/v1alpha1", "Experiment", namespace, name);
    terminate(
        cluster,
        &key,
        super::standalone::experiment_completed,
        "terminated: its pods go, its analyses end with what they measured",
    )
    .await
}

/// Sets `spec.terminate` on the object at `key` unless `completed` says
/// it is over; `done` is what the operator is told.
async fn terminate(
    cluster: &dyn Cluster,
    key: &ObjectKey,
    completed: fn(&Value) -> bool,
    done: &str,
) -> Result<String, ClusterError> {
    edit_with_retry(cluster, key, |object| {
        if completed(object) {
            return Ok(Edit::Unchanged(
                "is over already: nothing to terminate".into(),
            ));
        }
        match object.get_mut("spec").and_then(Value::as_object_mut) {
            Some(spec) => spec.insert("terminate".into(), Value::Bool(true)),
            None => return Err(ClusterError::Invalid(format!("{key} has no spec"))),
        };
        Ok(Edit::Write(done.to_string()))
    })
    .await
}

/// Rolls the Rollout's pod template back to that of an earlier revision,
/// as `kubectl argo rollouts undo` does: the ReplicaSet numbered
/// `to_revision`, or by default the second newest; the template is copied
/// without its hash label, which makes a new revision (or, to the stable's
/// template, an immediate return to it).
pub async fn undo(
    cluster: &dyn Cluster,
    namespace: &str,
    name: &str,
    to_revision: Option<u64>,
) -> Result<String, ClusterError> {
    let key = rollout_key(namespace, name);
    let object = cluster.get(&key).await?;
    let workload = template_source(cluster, &object).await?;
    // The template the Rollout goes by: its own, or its Deployment's.
    let mut resolved = object.clone();
    if let (Some(workload), Some(spec)) = (
        &workload,
        resolved.get_mut("spec").and_then(Value::as_object_mut),
    ) {
        let template = workload
            .deployment
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        spec.insert("template".into(), template);
    }
    let view = super::spec::RolloutView::parse(&resolved)
        .map_err(|e| ClusterError::Invalid(format!("{key}: {e}")))?;
    let mut numbered: Vec<(u64, Value)> = super::children::owned_replica_sets(cluster, &view)
        .await?
        .into_iter()
        .filter_map(|rs| super::children::revision_of(&rs).map(|r| (r, rs)))
        .collect();
    numbered.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    let (revision, rs) = match to_revision {
        Some(wanted) => numbered
            .into_iter()
            .find(|(r, _)| *r == wanted)
            .ok_or_else(|| {
                ClusterError::Invalid(format!(
                    "{key}: unable to find revision {wanted} in its ReplicaSets"
                ))
            })?,
        None => numbered.into_iter().nth(1).ok_or_else(|| {
            ClusterError::Invalid(format!("{key}: no earlier revision to go back to"))
        })?,
    };
    let mut template = rs
        .pointer("/spec/template")
        .cloned()
        .ok_or_else(|| ClusterError::Invalid(format!("revision {revision} has no template")))?;
    if super::adoption::same_pod_template(&template, &view.template) {
        return Ok(format!(
            "skipped rollback (the template already matches revision {revision})"
        ));
    }
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(super::children::HASH_LABEL);
    }
    // A workloadRef's template is its Deployment's: that is what changes.
    let (mut target, place) = match workload {
        Some(workload) => {
            let place = in_workload(&workload);
            (workload.deployment, place)
        }
        None => (object, String::new()),
    };
    if let Some(spec) = target.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("template".into(), template);
    }
    cluster.apply(vec![Write::update_as_read(target)]).await?;
    Ok(format!("rolled back to revision {revision}{place}"))
}

/// Applies `action` to the Rollout, retrying on write conflicts with the
/// controller. Returns what was done, for the operator.
pub async fn act(
    cluster: &dyn Cluster,
    namespace: &str,
    name: &str,
    action: Action,
) -> Result<String, ClusterError> {
    let key = rollout_key(namespace, name);
    edit_with_retry(cluster, &key, |object| {
        let mut status = RolloutStatus::of(object);
        let paused_by_spec = object
            .pointer("/spec/paused")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let done = match action {
            Action::Abort => {
                status.abort = true;
                "aborted: all traffic goes back to stable".to_string()
            }
            Action::Pause => {
                if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("paused".into(), Value::Bool(true));
                }
                "paused: it stays where it is until promoted".to_string()
            }
            Action::Retry => {
                if !status.abort {
                    return Err(ClusterError::Invalid(format!(
                        "{key} is not aborted: nothing to retry"
                    )));
                }
                status.abort = false;
                "retried: the update runs again from its first step".to_string()
            }
            Action::PromoteFull => {
                status.promote_full = true;
                status.pause_conditions.clear();
                "fully promoted: the remaining steps are skipped".to_string()
            }
            Action::Promote => {
                if paused_by_spec {
                    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("paused".into(), Value::Bool(false));
                    }
                    "unpaused (spec.paused was set)".to_string()
                } else if !status.pause_conditions.is_empty() {
                    status.pause_conditions.clear();
                    "promoted: the pause is over".to_string()
                } else if object.pointer("/spec/strategy/blueGreen").is_some() {
                    // Blue-green has no steps to skip (Argo's promote
                    // only ends a pause).
                    "not paused: the blue-green rollout goes on by itself".to_string()
                } else {
                    let next = status.step_index().saturating_add(1);
                    status.set_step_index(next);
                    format!("promoted: skipped to step {}", next + 1)
                }
            }
        };
        let status =
            serde_json::to_value(&status).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        match object.as_object_mut() {
            Some(map) => map.insert("status".into(), status),
            None => return Err(ClusterError::Invalid(format!("{key} is not an object"))),
        };
        Ok(Edit::Write(done))
    })
    .await
}
