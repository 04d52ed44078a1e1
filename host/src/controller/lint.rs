//! `weir lint`: Argo-shaped manifests checked offline, with the errors the
//! controller would put on them (an `InvalidSpec` naming the field), before
//! they reach a cluster. Rollouts are read as the reconcile reads them;
//! AnalysisTemplates and ClusterAnalysisTemplates as the analysis engine
//! does, each metric checked as Argo's `ValidateMetrics` checks it. Other
//! kinds are not checked.

use super::spec::RolloutView;
use crate::analysis::types::AnalysisTemplate;
use serde_json::Value;

/// What lint found for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `Kind namespace/name`.
    pub object: String,
    /// `None` when it is fine (or not a kind lint checks), else why not.
    pub error: Option<String>,
    /// Whether lint checks this kind.
    pub checked: bool,
}

fn describe(object: &Value) -> String {
    let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    let namespace = text("/metadata/namespace");
    let name = text("/metadata/name");
    let kind = text("/kind");
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

fn check_template(object: &Value) -> Result<(), String> {
    let template: AnalysisTemplate =
        serde_json::from_value(object.clone()).map_err(|e| format!("spec: {e}"))?;
    if template.spec.metrics.is_empty() {
        return Err("spec.metrics: at least one metric is required".into());
    }
    for metric in &template.spec.metrics {
        metric.validate()?;
    }
    Ok(())
}

/// Checks each of `objects`.
pub fn lint(objects: &[Value]) -> Vec<Finding> {
    objects
        .iter()
        .map(|object| {
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
            let (checked, outcome) = match kind {
                "Rollout" => (true, RolloutView::parse(object).map(drop)),
                "AnalysisTemplate" | "ClusterAnalysisTemplate" => (true, check_template(object)),
                _ => (false, Ok(())),
            };
            Finding {
                object: describe(object),
                error: outcome.err(),
                checked,
            }
        })
        .collect()
}
