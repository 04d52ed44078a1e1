//! Experiment objects for a Rollout's experiment steps: a ReplicaSet per
//! template (and a Service for each weighted one, so routers can send it
//! traffic), analyses as AnalysisRuns, and a phase that ends after
//! `duration` or when the analyses finish.
//!
//! The Experiment is read back as untrusted JSON: the weights it adds come
//! from [`super::experiment::weight_destinations_from_experiment`], which
//! tolerates every gap Argo Rollouts 1.6.6 crashed on.

use super::analysis_runs::{
    RunKind, RunRequest, ensure_and_advance, resolve_value_from, terminate_run,
};
use super::children::{HASH_LABEL, ensure_replica_set, owner_reference, pod_template_hash};
use super::context::{ChildError, Context};
use super::spec::{RolloutView, TemplateRef};
use crate::analysis::types::{Argument, Phase, parse_duration};
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, resource_version, time_at};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

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

/// The step's analyses with their arguments' `valueFrom`
/// (`podTemplateHashValue`, `fieldRef`) resolved, as Argo resolves them
/// when it makes the Experiment.
fn resolved_analyses(
    step_analyses: Option<&Value>,
    view: &RolloutView,
    canary_hash: &str,
    stable_hash: &str,
) -> Result<Value, String> {
    let mut analyses = step_analyses.cloned().unwrap_or_else(|| json!([]));
    for analysis in analyses.as_array_mut().into_iter().flatten() {
        let Some(args) = analysis.get("args").filter(|a| !a.is_null()) else {
            continue;
        };
        let name = analysis
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let parsed: Vec<Argument> = serde_json::from_value(args.clone())
            .map_err(|e| format!("experiment analysis {name}: args: {e}"))?;
        let resolved = resolve_value_from(&parsed, view, canary_hash, stable_hash)
            .map_err(|e| format!("experiment analysis {name}: {e}"))?;
        analysis["args"] = serde_json::to_value(resolved)
            .map_err(|e| format!("experiment analysis {name}: args: {e}"))?;
    }
    Ok(analyses)
}

/// Argo's `ResolveExperimentArgsValue`: `{{templates.<name>.podTemplateHash}}`,
/// `{{templates.<name>.replicaset.name}}`, `{{experiment.availableAt}}` and
/// `{{experiment.finishedAt}}` in an analysis argument's value; any other
/// `{{...}}` is an error naming it.
fn resolve_experiment_value(value: &str, experiment: &Value) -> Result<String, String> {
    let name = experiment
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let lookup = |tag: &str| -> Option<String> {
        if let Some(rest) = tag.strip_prefix("templates.") {
            let (template, field) = rest
                .rsplit_once('.')
                .filter(|(_, f)| *f == "podTemplateHash")
                .or_else(|| {
                    rest.strip_suffix(".replicaset.name")
                        .map(|t| (t, "replicaset.name"))
                })?;
            let status = experiment
                .pointer("/status/templateStatuses")
                .and_then(Value::as_array)?
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(template))?;
            return match field {
                "podTemplateHash" => status
                    .get("podTemplateHash")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => Some(format!("{name}-{template}")),
            };
        }
        let available = experiment
            .pointer("/status/availableAt")
            .and_then(Value::as_str)?;
        match tag {
            "experiment.availableAt" => Some(available.to_string()),
            "experiment.finishedAt" => {
                let start = DateTime::parse_from_rfc3339(available).ok()?;
                let duration = match experiment.pointer("/spec/duration")? {
                    Value::String(d) => parse_duration(d).ok()?,
                    Value::Number(n) => std::time::Duration::from_secs(n.as_u64()?),
                    _ => return None,
                };
                let end = start.checked_add_signed(chrono::Duration::from_std(duration).ok()?)?;
                Some(
                    end.with_timezone(&Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )
            }
            _ => None,
        }
    };
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(open) = rest.find("{{") {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let Some(close) = after.find("}}") else {
            return Err(format!("unterminated {{{{ in {value:?}"));
        };
        let tag = after.get(2..close).unwrap_or("").trim();
        let resolved = lookup(tag).ok_or_else(|| format!("failed to resolve {{{{{tag}}}}}"))?;
        out.push_str(&resolved);
        rest = after.get(close + 2..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
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

fn analyses_of(experiment: &Value) -> Vec<(String, TemplateRef, Vec<Argument>)> {
    experiment
        .pointer("/spec/analyses")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| {
                    let name = a.get("name")?.as_str()?.to_string();
                    let template = TemplateRef {
                        template_name: a.get("templateName")?.as_str()?.to_string(),
                        cluster_scope: a
                            .get("clusterScope")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    };
                    let args = a
                        .get("args")
                        .and_then(|v| serde_json::from_value(v.clone()).ok())
                        .unwrap_or_default();
                    Some((name, template, args))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the experiment's analyses; the worst completed phase (or
/// Successful when all succeeded), and when to look again.
async fn run_analyses(
    ctx: &Context<'_>,
    view: &RolloutView,
    experiment: &Value,
) -> Result<(Option<Phase>, Option<DateTime<Utc>>), ChildError> {
    let name = experiment
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let canary_hash = experiment
        .pointer(&format!("/metadata/labels/{HASH_LABEL}"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let analyses = analyses_of(experiment);
    if analyses.is_empty() {
        return Ok((None, None));
    }
    let mut worst: Option<Phase> = Some(Phase::Successful);
    let mut next: Option<DateTime<Utc>> = None;
    for (analysis, template, args) in &analyses {
        let run_name = format!("{name}-{analysis}");
        let templates = [template.clone()];
        let args = args
            .iter()
            .map(|arg| {
                let mut arg = arg.clone();
                if let Some(value) = &arg.value {
                    arg.value = Some(resolve_experiment_value(value, experiment).map_err(|e| {
                        format!("experiment analysis {analysis}: args.{}: {e}", arg.name)
                    })?);
                }
                Ok(arg)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let args = &args;
        let request = RunRequest {
            name: &run_name,
            templates: &templates,
            args,
            canary_hash,
            stable_hash: "",
            kind: RunKind::Experiment,
        };
        let advanced = ensure_and_advance(ctx, view, &request).await?;
        if let Some(n) = advanced.next {
            next = Some(next.map_or(n, |m| m.min(n)));
        }
        worst = match (worst, advanced.phase) {
            (_, p) if !p.completed() => worst.map(|_| Phase::Running),
            (Some(w), p) if p.is_worse_than(w) => Some(p),
            (w, _) => w,
        };
    }
    Ok((worst.filter(|p| p.completed()), next))
}

/// The Service ports for a template, as Argo makes them: one per container
/// port, on the same number (port 80 when the template declares none, as a
/// Service needs one).
fn service_ports(pod_template: &Value) -> Vec<Value> {
    let ports: Vec<Value> = pod_template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| {
            let number = p.get("containerPort")?.as_i64()?;
            let mut port = json!({"port": number, "targetPort": number,
                "protocol": p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")});
            if let Some(name) = p.get("name").and_then(Value::as_str) {
                port["name"] = json!(name);
            }
            Some(port)
        })
        .collect();
    if ports.is_empty() {
        vec![json!({"port": 80, "targetPort": 80, "protocol": "TCP"})]
    } else {
        ports
    }
}

async fn ensure_service(
    cluster: &dyn Cluster,
    view: &RolloutView,
    name: &str,
    pod_template: &Value,
    hash: &str,
) -> Result<(), ChildError> {
    let key = ObjectKey::new("v1", "Service", &view.namespace, name);
    match cluster.get(&key).await {
        Ok(_) => return Ok(()),
        Err(ClusterError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut selector = pod_template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    selector.insert(HASH_LABEL.into(), json!(hash));
    cluster
        .apply(vec![Write::Create(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": view.namespace, "ownerReferences": owner_reference(view)},
            "spec": {"selector": selector, "ports": service_ports(pod_template)},
        }))])
        .await
        .map(drop)
        .map_err(ChildError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_services_take_the_templates_container_ports() {
        let template = json!({"spec": {"containers": [
            {"name": "app", "ports": [{"name": "http", "containerPort": 8081}, {"containerPort": 9090, "protocol": "UDP"}]},
            {"name": "sidecar"}]}});
        assert_eq!(
            service_ports(&template),
            vec![
                json!({"port": 8081, "targetPort": 8081, "protocol": "TCP", "name": "http"}),
                json!({"port": 9090, "targetPort": 9090, "protocol": "UDP"}),
            ]
        );
        assert_eq!(service_ports(&json!({}))[0]["port"], 80);
    }

    #[test]
    fn experiment_values_resolve_as_argos_do() {
        let experiment = json!({
            "metadata": {"name": "exp"},
            "spec": {"duration": "30s"},
            "status": {"availableAt": "2026-11-30T18:00:00Z",
                       "templateStatuses": [{"name": "canary", "podTemplateHash": "abc"}]},
        });
        let resolve = |v: &str| resolve_experiment_value(v, &experiment);
        assert_eq!(
            resolve("h={{templates.canary.podTemplateHash}}").as_deref(),
            Ok("h=abc")
        );
        assert_eq!(
            resolve("{{ templates.canary.replicaset.name }}").as_deref(),
            Ok("exp-canary")
        );
        assert_eq!(
            resolve("{{experiment.finishedAt}}").as_deref(),
            Ok("2026-11-30T18:00:30Z")
        );
        assert_eq!(resolve("plain").as_deref(), Ok("plain"));
        let unknown = resolve("{{templates.missing.podTemplateHash}}").expect_err("unknown");
        assert!(
            unknown.contains("templates.missing.podTemplateHash"),
            "{unknown}"
        );
        assert!(resolve("{{args.x").is_err());
        // Distinct from the Rollout's hash of the same template.
        let t = json!({"spec": {"containers": [{"image": "a:1"}]}});
        assert_ne!(experiment_hash("exp", "canary", &t), pod_template_hash(&t));
    }
}
