//! `weir get rollout`: a Rollout at a glance, in the spirit of
//! `kubectl argo rollouts get rollout`: phase, step, weights, steps with
//! progress marks, analysis, errors with their plugin and call, ReplicaSets.

mod children;

use super::children::HASH_LABEL;
use super::spec::{RolloutView, Strategy};
use super::status::{AnalysisRunRef, RolloutStatus};
use children::symbol_of_run;
pub use children::{render_experiment, render_run};
use serde_json::Value;
use std::fmt::Write as _;

fn symbol(phase: &str) -> &'static str {
    match phase {
        "Healthy" => "✔",
        "Progressing" => "◌",
        "Paused" => "॥",
        "Degraded" => "✖",
        _ => "?",
    }
}

/// Where `weir status` stops watching, as `kubectl argo rollouts status`
/// does: `Some(true)` Healthy, `Some(false)` Degraded, `None` still going
/// (or the status is for an older generation of the spec).
pub fn settled(object: &Value) -> Option<bool> {
    let status = RolloutStatus::of(object);
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .map(|g| g.to_string());
    if generation.is_some()
        && status.observed_generation.is_some()
        && generation != status.observed_generation
    {
        return None;
    }
    match status.phase.as_deref() {
        Some("Healthy") => Some(true),
        Some("Degraded") => Some(false),
        _ => None,
    }
}

/// One line per Rollout, as `kubectl argo rollouts list rollouts`: name,
/// status, step, set weight, desired / available replicas.
pub fn list(rollouts: &[Value]) -> String {
    let mut out =
        String::from("NAME                 STATUS        STEP   SET-WEIGHT  DESIRED  AVAILABLE\n");
    for object in rollouts {
        let status = RolloutStatus::of(object);
        let view = RolloutView::parse(object).ok();
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let steps = view.as_ref().map_or(0, |v| v.canary.steps.len());
        let step = format!("{}/{steps}", status.step_index().min(steps));
        let weight = status
            .canary
            .weights
            .as_ref()
            .map_or(0, |w| w.canary.weight);
        let desired = view.as_ref().map_or(0, |v| v.replicas);
        let _ = writeln!(
            out,
            "{name:<20} {:<13} {step:<6} {weight:<11} {desired:<8} {}",
            status.phase.as_deref().unwrap_or("Unknown"),
            status.available_replicas
        );
    }
    out
}

/// Renders the Rollout `object` with the ReplicaSets and AnalysisRuns it owns.
pub fn render(object: &Value, replica_sets: &[Value], runs: &[Value]) -> String {
    let status = RolloutStatus::of(object);
    let mut out = String::new();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let phase = status.phase.as_deref().unwrap_or("Unknown");
    let _ = writeln!(out, "Name:            {name}");
    let _ = writeln!(out, "Namespace:       {namespace}");
    let _ = writeln!(out, "Status:          {} {phase}", symbol(phase));
    if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
        let _ = writeln!(out, "Message:         {message}");
    }
    let view = RolloutView::parse(object).ok();
    if let Some(view) = view.as_ref().filter(|v| v.strategy == Strategy::BlueGreen) {
        let blue_green = &status.blue_green;
        let _ = writeln!(out, "Strategy:        BlueGreen");
        let _ = writeln!(
            out,
            "  ActiveService:  {} → {}",
            view.blue_green.active_service,
            blue_green.active_selector.as_deref().unwrap_or("-")
        );
        if !view.blue_green.preview_service.is_empty() {
            let _ = writeln!(
                out,
                "  PreviewService: {} → {}",
                view.blue_green.preview_service,
                blue_green.preview_selector.as_deref().unwrap_or("-")
            );
        }
    }
    if let Some(view) = view.as_ref().filter(|v| v.strategy == Strategy::Canary) {
        let steps = view.canary.steps.len();
        let index = status.step_index();
        let _ = writeln!(out, "Strategy:        Canary");
        let _ = writeln!(out, "  Step:          {}/{steps}", index.min(steps));
        let _ = writeln!(
            out,
            "  SetWeight:     {}",
            if index >= steps {
                100
            } else {
                view.canary.weight_at(index)
            }
        );
    }
    if let Some(weights) = &status.canary.weights {
        let verified = match weights.verified {
            Some(true) => " (verified)",
            Some(false) => " (not verified yet)",
            None => "",
        };
        let _ = writeln!(
            out,
            "  ActualWeight:  canary {} / stable {}{verified}",
            weights.canary.weight, weights.stable.weight
        );
        for extra in &weights.additional {
            let _ = writeln!(
                out,
                "                 {} {}",
                extra.service_name, extra.weight
            );
        }
    }
    let _ = writeln!(
        out,
        "Replicas:        desired {}  updated {}  ready {}  available {}",
        status.replicas, status.updated_replicas, status.ready_replicas, status.available_replicas
    );
    if let Some(view) = &view
        && !view.canary.steps.is_empty()
    {
        let _ = writeln!(out, "Steps:");
        let index = status.step_index();
        for (i, step) in view.canary.steps.iter().enumerate() {
            let mark = if i < index {
                "✔"
            } else if i == index && phase != "Healthy" {
                if status.abort { "✖" } else { "▶" }
            } else {
                "·"
            };
            let _ = writeln!(out, "  {mark} {i:>2}  {}", step.describe());
            show_plugin_step(&mut out, &status, i);
        }
    }
    for (label, run) in [
        (
            "Step analysis",
            &status.canary.current_step_analysis_run_status,
        ),
        (
            "Background",
            &status.canary.current_background_analysis_run_status,
        ),
    ] {
        if let Some(run) = run {
            show_run(&mut out, label, run);
        }
    }
    for (label, run) in [
        (
            "PrePromotion",
            &status.blue_green.pre_promotion_analysis_run_status,
        ),
        (
            "PostPromotion",
            &status.blue_green.post_promotion_analysis_run_status,
        ),
    ] {
        if let Some(run) = run {
            show_run(&mut out, label, run);
        }
    }
    if let Some(experiment) = &status.canary.current_experiment {
        let _ = writeln!(out, "Experiment:      {experiment}");
    }
    let problems: Vec<_> = status
        .conditions
        .iter()
        .filter(|c| c.status == "True" || c.kind == "Progressing")
        .filter(|c| c.kind != "Healthy")
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(out, "Errors:");
        for c in problems {
            let origin = match (&c.plugin, &c.call) {
                (Some(p), Some(call)) => format!(" [plugin {p}, call {call}]"),
                _ => String::new(),
            };
            let _ = writeln!(out, "  {} ({}){origin}: {}", c.kind, c.reason, c.message);
        }
    }
    if !replica_sets.is_empty() {
        let _ = writeln!(out, "ReplicaSets:");
        for rs in replica_sets {
            let rs_name = rs
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let hash = rs
                .pointer(&format!("/metadata/labels/{HASH_LABEL}"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let role = role_of(&status, view.as_ref(), hash);
            let replicas = rs
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let _ = writeln!(out, "  {rs_name:<32} {role:<14} {replicas} replicas");
        }
    }
    if !runs.is_empty() {
        let _ = writeln!(out, "AnalysisRuns:");
        for run in runs {
            let run_name = run
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let run_phase = run
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Pending");
            let _ = writeln!(
                out,
                "  {run_name:<32} {} {run_phase}",
                symbol_of_run(run_phase)
            );
        }
    }
    out
}

/// One line for a rollout's AnalysisRun.
fn show_run(out: &mut String, label: &str, run: &AnalysisRunRef) {
    let message = if run.message.is_empty() {
        String::new()
    } else {
        format!(": {}", run.message)
    };
    let _ = writeln!(out, "{label}:   {} {}{message}", run.name, run.status);
}

/// A ReplicaSet's role, as `kubectl argo rollouts get rollout` tags it:
/// `stable`, and for blue-green `active` or `preview` (the Services'
/// selectors; active wins), for a canary `canary`; `old` otherwise.
fn role_of(status: &RolloutStatus, view: Option<&RolloutView>, hash: &str) -> String {
    let hash = Some(hash);
    let stable = hash == status.stable_rs.as_deref();
    let blue_green = view.is_some_and(|v| v.strategy == Strategy::BlueGreen);
    let mut roles: Vec<&str> = Vec::new();
    if stable {
        roles.push("stable");
    }
    if blue_green {
        if hash == status.blue_green.active_selector.as_deref() {
            roles.push("active");
        } else if hash == status.blue_green.preview_selector.as_deref() {
            roles.push("preview");
        }
    } else if !stable && hash == status.current_pod_hash.as_deref() {
        roles.push("canary");
    }
    if roles.is_empty() {
        roles.push("old");
    }
    roles.join(",")
}

/// Under a `plugin` step: what each of its calls left (run, terminate,
/// abort), with the plugin's message.
fn show_plugin_step(out: &mut String, status: &RolloutStatus, index: usize) {
    use crate::controller::status::step_plugins::StepOperation;
    let entries = status
        .canary
        .step_plugin_statuses
        .iter()
        .filter(|e| usize::try_from(e.index).ok() == Some(index));
    for entry in entries {
        let operation = match entry.operation {
            StepOperation::Run => "run",
            StepOperation::Terminate => "terminate",
            StepOperation::Abort => "abort",
        };
        let phase = match (entry.disabled, entry.phase) {
            (true, _) => "skipped (plugin disabled)".to_string(),
            (false, Some(phase)) => format!("{phase:?}"),
            (false, None) => "-".to_string(),
        };
        let calls = if entry.operation == StepOperation::Run && entry.executions > 0 {
            format!(", {} call(s)", entry.executions)
        } else {
            String::new()
        };
        let next = entry
            .backoff
            .as_deref()
            .map(|b| format!(", again after {b}"))
            .unwrap_or_default();
        let message = if entry.message.is_empty() {
            String::new()
        } else {
            format!(": {}", cut(&entry.message, 160))
        };
        let _ = writeln!(out, "           {operation} {phase}{calls}{next}{message}");
    }
}

/// `text` cut to at most `max` characters, with a marker when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", text.get(..at).unwrap_or(text)),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_steps_weights_and_plugin_errors() {
        let rollout = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"replicas": 4, "template": {"metadata": {"labels": {"app": "c"}}},
                     "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]}}},
            "status": {"phase": "Degraded", "currentStepIndex": 1, "replicas": 4,
                "canary": {"weights": {"canary": {"weight": 20}, "stable": {"weight": 80}, "verified": true}},
                "conditions": [{"type": "PluginFailed", "status": "True", "reason": "Trap",
                                "message": "trapped (wasm unreachable)", "plugin": "weir/faulty", "call": "set-weight"}]}});
        let text = render(&rollout, &[], &[]);
        assert!(text.contains("✖ Degraded"), "{text}");
        assert!(text.contains("Step:          1/3"), "{text}");
        assert!(text.contains("canary 20 / stable 80 (verified)"), "{text}");
        assert!(text.contains("✔  0  setWeight: 20"), "{text}");
        assert!(text.contains("▶  1  pause: until promoted"), "{text}");
        assert!(
            text.contains("[plugin weir/faulty, call set-weight]"),
            "{text}"
        );
    }

    #[test]
    fn shows_what_each_plugin_step_call_left() {
        let rollout = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "c"}}},
                     "strategy": {"canary": {"steps": [
                         {"plugin": {"name": "acme/off"}},
                         {"plugin": {"name": "http-gate", "config": {"url": "http://gate/ready"}}},
                         {"setWeight": 50}]}}},
            "status": {"phase": "Progressing", "currentStepIndex": 1, "replicas": 2,
                "canary": {"stepPluginStatuses": [
                    {"index": 0, "name": "acme/off", "operation": "Run", "disabled": true},
                    {"index": 1, "name": "http-gate", "operation": "Run", "phase": "Running",
                     "executions": 3, "backoff": "10s",
                     "message": "waiting for GET http://gate/ready: attempt 3 answered 503"}]}}});
        let text = render(&rollout, &[], &[]);
        assert!(text.contains("✔  0  plugin: acme/off"), "{text}");
        assert!(text.contains("run skipped (plugin disabled)"), "{text}");
        assert!(text.contains("▶  1  plugin: http-gate"), "{text}");
        assert!(
            text.contains("run Running, 3 call(s), again after 10s: waiting for GET http://gate/ready: attempt 3 answered 503"),
            "{text}"
        );
    }
}
