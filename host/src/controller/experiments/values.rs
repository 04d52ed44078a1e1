//! The values an experiment's analyses get: `valueFrom` resolved when the
//! Experiment is made, `{{templates...}}` and `{{experiment...}}` when its
//! runs start (Argo's `ResolveExperimentArgsValue`).

use crate::analysis::types::{Argument, parse_duration};
use crate::controller::analysis_runs::resolve_value_from;
use crate::controller::spec::RolloutView;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// The step's analyses with their arguments' `valueFrom`
/// (`podTemplateHashValue`, `fieldRef`) resolved, as Argo resolves them
/// when it makes the Experiment.
pub(super) fn resolved_analyses(
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
pub(super) fn resolve_experiment_value(value: &str, experiment: &Value) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::children::pod_template_hash;
    use crate::controller::experiments::experiment_hash;

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
