//! An experiment's analyses, run as AnalysisRuns `<experiment>-<analysis>`
//! through the same engine and sandboxed providers as a rollout's.

use super::values::resolve_experiment_value;
use crate::analysis::types::{Argument, Phase};
use crate::controller::analysis_runs::{RunKind, RunRequest, ensure_and_advance};
use crate::controller::children::HASH_LABEL;
use crate::controller::context::{ChildError, Context};
use crate::controller::spec::{RolloutView, TemplateRef};
use chrono::{DateTime, Utc};
use serde_json::Value;

pub(super) fn analyses_of(experiment: &Value) -> Vec<(String, TemplateRef, Vec<Argument>)> {
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
pub(super) async fn run_analyses(
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
            dry_run: &[],
            measurement_retention: &[],
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
