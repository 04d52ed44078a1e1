//! Experiment objects for a Rollout's experiment steps: a ReplicaSet per
//! template (and a Service for each weighted one, so routers can send it
//! traffic), analyses as AnalysisRuns, and a phase that ends after
//! `duration` or when the analyses finish.
//!
//! The Experiment is read back as untrusted JSON: the weights it adds come
//! from [`super::experiment::weight_destinations_from_experiment`], which
//! tolerates every gap Argo Rollouts 1.6.6 crashed on.

mod analyses;
mod services;
mod values;

use super::analysis_runs::terminate_run;
use super::children::{HASH_LABEL, ensure_replica_set, owner_reference, pod_template_hash};
use super::context::{ChildError, Context};
use super::spec::RolloutView;
use crate::analysis::types::{Phase, parse_duration};
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, resource_version, time_at};
use analyses::{analyses_of, run_analyses};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use services::ensure_service;
use values::resolved_analyses;

/// The Experiment's phase as stored.
pub fn phase_of(experiment: &Value) -> &str {
    experiment
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
}

/// The pod-template hash of an experiment's template: its own, not the
/// Rollout's (a `specRef: canary` template is the canary's template), so the
/// canary and stable Services never select an experiment's pods and an
/// experiment's weight is a real split (Argo issue #380).
pub fn experiment_hash(experiment: &str, template: &str, pod_template: &Value) -> String {
    pod_template_hash(&json!({"experiment": experiment, "template": template, "pod": pod_template}))
}

/// How many templates, and how many analyses, one Experiment may have:
/// each is a ReplicaSet (and maybe a Service) or an AnalysisRun written
/// in one pass, so the count is checked before any is.
pub const MAX_EXPERIMENT_PARTS: usize = 32;

/// Refuses an experiment with more than [`MAX_EXPERIMENT_PARTS`]
/// templates or analyses, naming the limit.
fn check_counts(experiment: &Value) -> Result<(), String> {
    for field in ["templates", "analyses"] {
        let count = experiment
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if count > MAX_EXPERIMENT_PARTS {
            return Err(format!(
                "spec.{field} has {count} entries; an Experiment may have at most {MAX_EXPERIMENT_PARTS} (MAX_EXPERIMENT_PARTS): split it"
            ));
        }
    }
    Ok(())
}

/// Gets the experiment, creating it from the step when it does not exist.
pub async fn ensure_experiment(
    cluster: &dyn Cluster,
    view: &RolloutView,
    name: &str,
    step: &Value,
    canary_hash: &str,
    stable: (&str, &Value),
) -> Result<Value, ChildError> {
    let (stable_hash, stable_template) = stable;
    let key = ObjectKey::new("argoproj.io/v1alpha1", "Experiment", &view.namespace, name);
    match cluster.get(&key).await {
        Ok(e) => return Ok(e),
        Err(ClusterError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let experiment = step.get("experiment").cloned().unwrap_or(Value::Null);
    let templates = experiment
        .get("templates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if templates.is_empty() {
        return Err("experiment step has no templates".into());
    }
    // The step's experiment is the Experiment's spec: refused before it is made.
    check_counts(&json!({"spec": experiment}))?;
    let mut spec_templates = Vec::new();
    for t in &templates {
        let tname = t.get("name").and_then(Value::as_str).unwrap_or("");
        if tname.is_empty() {
            return Err("an experiment template has no name".into());
        }
        let pod_template = match t.get("specRef").and_then(Value::as_str) {
            Some("stable") => stable_template.clone(),
            Some("canary") => view.template.clone(),
            other => {
                return Err(ChildError::Invalid(format!(
                    "experiment template {tname}: specRef must be stable or canary, not {other:?}"
                )));
            }
        };
        let replicas = t.get("replicas").and_then(Value::as_i64).unwrap_or(1);
        // Argo's schema requires a selector per template: the step's own,
        // or the Rollout's (as Argo fills it in).
        let selector = t
            .get("selector")
            .or_else(|| view.object.pointer("/spec/selector"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let mut entry = json!({"name": tname, "replicas": replicas, "selector": selector,
                               "template": pod_template});
        if t.get("weight").is_some() {
            entry["service"] = json!({});
        }
        spec_templates.push(entry);
    }
    let object = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {
            "name": name,
            "namespace": view.namespace,
            "labels": {HASH_LABEL: canary_hash},
            "ownerReferences": owner_reference(view),
        },
        "spec": {
            "duration": experiment.get("duration").cloned().unwrap_or(Value::Null),
            "templates": spec_templates,
            "analyses": resolved_analyses(experiment.get("analyses"), view, canary_hash, stable_hash)?,
        },
        "status": {"phase": "Pending"},
    });
    cluster
        .apply(vec![Write::Create(object)])
        .await?
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| "the store returned no object".into())
}

/// One reconcile of an experiment; returns the stored experiment and when
/// it wants to be looked at again.
pub(crate) async fn advance_experiment(
    ctx: &Context<'_>,
    view: &RolloutView,
    stored: &Value,
) -> Result<(Value, Option<DateTime<Utc>>), ChildError> {
    let Context { cluster, now, .. } = *ctx;
    check_counts(stored)?;
    let mut experiment = stored.clone();
    let name = experiment
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let templates = experiment
        .pointer("/spec/templates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let phase = phase_of(&experiment).to_string();
    let mut next = None;
    match phase.as_str() {
        "Pending" => {
            let mut statuses = Vec::new();
            for t in &templates {
                let tname = t.get("name").and_then(Value::as_str).unwrap_or("");
                let pod_template = t.get("template").cloned().unwrap_or(json!({}));
                let hash = experiment_hash(&name, tname, &pod_template);
                let replicas = t
                    .get("replicas")
                    .and_then(Value::as_i64)
                    .and_then(|r| i32::try_from(r).ok())
                    .unwrap_or(1);
                let rs_name = format!("{name}-{tname}");
                ensure_replica_set(cluster, view, &rs_name, &pod_template, &hash, replicas).await?;
                let mut status = json!({"name": tname, "status": "Running", "podTemplateHash": hash,
                                        "replicas": replicas, "availableReplicas": replicas});
                if t.get("service").is_some() {
                    ensure_service(cluster, view, &rs_name, &pod_template, &hash).await?;
                    status["serviceName"] = json!(rs_name);
                }
                statuses.push(status);
            }
            let Some(map) = experiment.as_object_mut() else {
                return Err(ChildError::Invalid(format!(
                    "Experiment {name} is not an object"
                )));
            };
            map.insert(
                "status".into(),
                json!({
                    "phase": "Running",
                    "availableAt": now.to_rfc3339(),
                    "templateStatuses": statuses,
                }),
            );
        }
        "Running" => {
            let (verdict, analyses_next) = run_analyses(ctx, view, &experiment).await?;
            next = analyses_next;
            let duration = match experiment.pointer("/spec/duration") {
                Some(Value::String(d)) => {
                    Some(parse_duration(d).map_err(|e| format!("experiment duration: {e}"))?)
                }
                Some(Value::Number(n)) => n.as_u64().map(std::time::Duration::from_secs),
                _ => None,
            };
            let available_at = time_at(&experiment, "/status/availableAt").unwrap_or(now);
            let ends = duration.and_then(|d| {
                chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| available_at.checked_add_signed(d))
            });
            let finished = match (verdict, ends) {
                (Some(Phase::Failed), _) => Some(("Failed", "an analysis failed")),
                (Some(Phase::Error), _) => Some(("Error", "an analysis errored")),
                (Some(Phase::Inconclusive), _) => {
                    Some(("Inconclusive", "an analysis was inconclusive"))
                }
                (_, Some(end)) if now >= end => Some(("Successful", "duration elapsed")),
                (Some(Phase::Successful), None) => Some(("Successful", "analyses succeeded")),
                (_, Some(end)) => {
                    next = Some(next.map_or(end, |n: DateTime<Utc>| n.min(end)));
                    None
                }
                _ => None,
            };
            if let Some((phase, message)) = finished {
                finish(ctx, view, &mut experiment, phase, message).await?;
            }
        }
        _ => {}
    }
    if &experiment != stored {
        let written = cluster
            .apply(vec![Write::Update {
                expected_version: resource_version(stored).map(str::to_string),
                object: experiment,
            }])
            .await?;
        experiment = written.into_iter().next().flatten().unwrap_or_default();
    }
    Ok((experiment, next))
}

/// Ends the experiment (`phase`), scaling its ReplicaSets down and
/// stopping its analyses.
pub(crate) async fn finish(
    ctx: &Context<'_>,
    view: &RolloutView,
    experiment: &mut Value,
    phase: &str,
    message: &str,
) -> Result<(), ChildError> {
    let cluster = ctx.cluster;
    check_counts(experiment)?;
    let name = experiment
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    for t in experiment
        .pointer("/spec/templates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let tname = t.get("name").and_then(Value::as_str).unwrap_or("");
        let pod_template = t.get("template").cloned().unwrap_or(json!({}));
        let hash = experiment_hash(&name, tname, &pod_template);
        ensure_replica_set(
            cluster,
            view,
            &format!("{name}-{tname}"),
            &pod_template,
            &hash,
            0,
        )
        .await?;
    }
    for analysis in analyses_of(experiment) {
        terminate_run(ctx, &view.namespace, &format!("{name}-{}", analysis.0)).await?;
    }
    if let Some(status) = experiment.get_mut("status").and_then(Value::as_object_mut) {
        status.insert("phase".into(), json!(phase));
        status.insert("message".into(), json!(message));
        if let Some(Value::Array(ts)) = status.get_mut("templateStatuses") {
            let template_phase = if phase == "Successful" {
                "Successful"
            } else {
                "Failed"
            };
            for t in ts.iter_mut().filter_map(Value::as_object_mut) {
                t.insert("status".into(), json!(template_phase));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_experiment_with_too_many_parts_is_refused_naming_the_limit() {
        let parts = |n: usize| Value::Array(vec![json!({"name": "t"}); n]);
        let ok = json!({"spec": {"templates": parts(MAX_EXPERIMENT_PARTS), "analyses": parts(2)}});
        assert!(check_counts(&ok).is_ok());
        let too_many =
            json!({"spec": {"templates": parts(2), "analyses": parts(MAX_EXPERIMENT_PARTS + 1)}});
        let error = check_counts(&too_many).expect_err("refused");
        assert!(
            error.contains("spec.analyses") && error.contains("MAX_EXPERIMENT_PARTS"),
            "{error}"
        );
    }
}
