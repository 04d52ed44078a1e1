//! `weir get experiment` and `weir get analysisrun`: a rollout's children
//! (or ones created on their own) at a glance.

use serde_json::Value;
use std::fmt::Write as _;

/// `weir get experiment`: an Experiment at a glance, as `kubectl argo
/// rollouts get experiment` shows it: phase and message, images, then its
/// templates' ReplicaSets and its AnalysisRuns.
pub fn render_experiment(experiment: &Value, replica_sets: &[Value], runs: &[Value]) -> String {
    let text = |object: &Value, pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let phase = match text(experiment, "/status/phase").as_str() {
        "" => "Pending".to_string(),
        p => p.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Name:            {}",
        text(experiment, "/metadata/name")
    );
    let _ = writeln!(
        out,
        "Namespace:       {}",
        text(experiment, "/metadata/namespace")
    );
    let _ = writeln!(out, "Status:          {} {phase}", symbol_of_run(&phase));
    let message = text(experiment, "/status/message");
    if !message.is_empty() {
        let _ = writeln!(out, "Message:         {message}");
    }
    let images: Vec<String> = experiment
        .pointer("/spec/templates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|t| {
            let template = text(t, "/name");
            t.pointer("/template/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(move |c| format!("{} (Σ:{template})", text(c, "/image")))
                .collect::<Vec<_>>()
        })
        .collect();
    if !images.is_empty() {
        let _ = writeln!(out, "Images:          {}", images.join(", "));
    }
    if !replica_sets.is_empty() {
        let _ = writeln!(out, "ReplicaSets:");
        for rs in replica_sets {
            let replicas = rs
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let available = rs
                .pointer("/status/availableReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "  {:<32} {replicas} replicas, {available} available",
                text(rs, "/metadata/name")
            );
        }
    }
    if !runs.is_empty() {
        let _ = writeln!(out, "AnalysisRuns:");
        for run in runs {
            let run_phase = match text(run, "/status/phase").as_str() {
                "" => "Pending".to_string(),
                p => p.to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<32} {} {run_phase}",
                text(run, "/metadata/name"),
                symbol_of_run(&run_phase)
            );
        }
    }
    out
}

/// `weir get analysisrun`: an AnalysisRun at a glance, as `kubectl argo
/// rollouts get analysisrun` would show it: phase and message, then each
/// metric's phase, counts and latest value or message.
pub fn render_run(run: &Value) -> String {
    let text = |pointer: &str| run.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let phase = match text("/status/phase") {
        "" => "Pending",
        p => p,
    };
    let mut out = String::new();
    let _ = writeln!(out, "Name:            {}", text("/metadata/name"));
    let _ = writeln!(out, "Namespace:       {}", text("/metadata/namespace"));
    let _ = writeln!(out, "Status:          {} {phase}", symbol_of_run(phase));
    if !text("/status/message").is_empty() {
        let _ = writeln!(out, "Message:         {}", text("/status/message"));
    }
    let results = run
        .pointer("/status/metricResults")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let _ = writeln!(out, "Metrics:");
    let metrics = run
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for metric in &metrics {
        let name = metric.get("name").and_then(Value::as_str).unwrap_or("?");
        let result = results
            .iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(name));
        let count = |field: &str| {
            result
                .and_then(|r| r.get(field))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let metric_phase = result
            .and_then(|r| r.get("phase"))
            .and_then(Value::as_str)
            .unwrap_or("Pending");
        let _ = writeln!(
            out,
            "  {name:<24} {} {metric_phase:<12} successful {} failed {} inconclusive {} error {}",
            symbol_of_run(metric_phase),
            count("successful"),
            count("failed"),
            count("inconclusive"),
            count("error")
        );
        let last = result
            .and_then(|r| r.get("measurements"))
            .and_then(Value::as_array)
            .and_then(|m| m.last());
        if let Some(last) = last {
            let value = last.get("value").and_then(Value::as_str).unwrap_or("");
            let message = last.get("message").and_then(Value::as_str).unwrap_or("");
            let shown = if message.is_empty() { value } else { message };
            if !shown.is_empty() {
                let _ = writeln!(out, "    last: {shown}");
            }
        }
    }
    out
}

pub(super) fn symbol_of_run(phase: &str) -> &'static str {
    match phase {
        "Successful" => "✔",
        "Failed" | "Error" => "✖",
        "Inconclusive" => "⚠",
        _ => "◌",
    }
}
