//! The dashboard `weir run` serves: one page of plain HTML and a small
//! script (in `assets/`, compiled into the binary), the JSON state it
//! polls, and the operator actions its buttons post.
//!
//! It has the object API's authentication: the page is served only to a
//! browser that came with the token (`/dashboard?token=...`, the address
//! `weir run` prints), which then holds it in an HttpOnly, SameSite=Strict
//! cookie; actions also need an `X-Weir-Action` header, which a page of
//! another origin cannot send without the browser asking first.
//!
//! Bounded: the state holds at most [`MAX_ROLLOUTS`] rollouts,
//! [`MAX_RUNS`] analysis runs (the newest), [`MAX_EXPERIMENTS`]
//! experiments and [`MAX_MEASUREMENTS`] measurements per metric.

use crate::cluster::{Cluster, ClusterError};
use crate::controller::actions::{Action, act};
use crate::controller::registry::PluginRegistry;
use crate::controller::status::RolloutStatus;
use serde_json::{Value, json};

/// Most rollouts the state lists.
pub const MAX_ROLLOUTS: usize = 500;
/// Most analysis runs (the newest).
pub const MAX_RUNS: usize = 100;
/// Most experiments.
pub const MAX_EXPERIMENTS: usize = 100;
/// Most measurements per metric (the newest).
pub const MAX_MEASUREMENTS: usize = 60;

/// The cookie the token travels in after sign-in.
pub const COOKIE: &str = "weir_token";

/// The header an action must carry.
pub const ACTION_HEADER: &str = "x-weir-action";

/// A static asset: its content type and text.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/dashboard" | "/dashboard/" => Some((
            "text/html; charset=utf-8",
            include_str!("assets/index.html"),
        )),
        "/dashboard/app.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("assets/app.js"),
        )),
        "/dashboard/style.css" => {
            Some(("text/css; charset=utf-8", include_str!("assets/style.css")))
        }
        _ => None,
    }
}

/// The page a browser without the token gets.
pub const SIGN_IN_PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Weir: sign in</title></head><body><main><h1>Not signed in</h1><p>Open the dashboard address <code>weir run</code> printed: it carries the controller's token (also in <code>STORE.token</code>, readable only by the user that runs the controller).</p></main></body></html>";

/// The token a request carries in its cookie, if any.
pub fn cookie_token(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The action a button names.
pub fn parse_action(name: &str) -> Option<Action> {
    match name {
        "promote" => Some(Action::Promote),
        "promote-full" => Some(Action::PromoteFull),
        "abort" => Some(Action::Abort),
        "retry" => Some(Action::Retry),
        "pause" => Some(Action::Pause),
        _ => None,
    }
}

/// Runs a button's action on a rollout.
pub async fn run_action(
    cluster: &dyn Cluster,
    namespace: &str,
    name: &str,
    action: &str,
) -> Result<String, ClusterError> {
    let action = parse_action(action).ok_or_else(|| {
        ClusterError::Invalid(format!(
            "unknown action {action:?}: promote, promote-full, abort, retry or pause"
        ))
    })?;
    act(cluster, namespace, name, action).await
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn named(object: &Value) -> (String, String) {
    (
        str_at(object, "/metadata/namespace")
            .unwrap_or_default()
            .to_string(),
        str_at(object, "/metadata/name")
            .unwrap_or_default()
            .to_string(),
    )
}

fn rollout_summary(object: &Value) -> Value {
    let (namespace, name) = named(object);
    let status = RolloutStatus::of(object);
    let steps = object
        .pointer("/spec/strategy/canary/steps")
        .and_then(Value::as_array)
        .map(Vec::len);
    let weights = status.canary.weights.as_ref().map(
        |w| json!({"canary": w.canary.weight, "stable": w.stable.weight, "verified": w.verified}),
    );
    let problems: Vec<Value> = status
        .conditions
        .iter()
        .filter(|c| {
            (c.status == "True"
                && c.kind != "Healthy"
                && c.kind != "Progressing"
                && c.kind != "Available"
                && c.kind != "Completed"
                && c.kind != "Paused")
                || (c.kind == "Progressing" && c.status == "False")
        })
        .map(|c| {
            json!({"type": c.kind, "reason": c.reason, "message": c.message,
                   "plugin": c.plugin, "call": c.call, "recording": c.recording})
        })
        .collect();
    json!({
        "namespace": namespace,
        "name": name,
        "phase": status.phase,
        "message": status.message,
        "step": status.current_step_index,
        "steps": steps,
        "weights": weights,
        "problems": problems,
    })
}

fn run_summary(object: &Value) -> Value {
    let (namespace, name) = named(object);
    let specs = object
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let results = object
        .pointer("/status/metricResults")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let metrics: Vec<Value> = specs
        .iter()
        .map(|spec| {
            let metric = str_at(spec, "/name").unwrap_or_default();
            let result = results.iter().find(|r| str_at(r, "/name") == Some(metric));
            let measurements: Vec<Value> = result
                .and_then(|r| r.get("measurements"))
                .and_then(Value::as_array)
                .map(|all| {
                    let skip = all.len().saturating_sub(MAX_MEASUREMENTS);
                    all.iter()
                        .skip(skip)
                        .map(|m| {
                            json!({"value": m.get("value"), "phase": m.get("phase"),
                                   "finishedAt": m.get("finishedAt")})
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "name": metric,
                "successCondition": spec.get("successCondition"),
                "failureCondition": spec.get("failureCondition"),
                "phase": result.and_then(|r| r.get("phase")),
                "measurements": measurements,
            })
        })
        .collect();
    json!({
        "namespace": namespace,
        "name": name,
        "phase": str_at(object, "/status/phase"),
        "message": str_at(object, "/status/message"),
        "metrics": metrics,
    })
}

/// The sandbox faults among call outcomes.
const FAULT_KINDS: [&str; 9] = [
    "timeout",
    "memory-limit",
    "table-limit",
    "limit-exceeded",
    "stack-overflow",
    "trap",
    "invalid-output",
    "output-too-large",
    "capability-denied",
];

/// Everything the page shows, as JSON.
pub async fn state(
    cluster: &dyn Cluster,
    registry: Option<&PluginRegistry>,
) -> Result<Value, ClusterError> {
    let mut rollouts = cluster.list("argoproj.io", "Rollout", "", &[]).await?;
    rollouts.truncate(MAX_ROLLOUTS);
    let mut runs = cluster.list("argoproj.io", "AnalysisRun", "", &[]).await?;
    // Newest first (RFC 3339 timestamps sort as text).
    runs.sort_by(|a, b| {
        str_at(b, "/metadata/creationTimestamp").cmp(&str_at(a, "/metadata/creationTimestamp"))
    });
    runs.truncate(MAX_RUNS);
    let mut experiments = cluster.list("argoproj.io", "Experiment", "", &[]).await?;
    experiments.truncate(MAX_EXPERIMENTS);
    let plugins = match registry {
        Some(registry) => registry
            .statuses()
            .await
            .into_iter()
            .map(|p| {
                let mut calls = 0;
                let mut faults = serde_json::Map::new();
                for ((_, outcome), counter) in &p.stats.calls {
                    calls += counter.count;
                    if FAULT_KINDS.contains(&outcome.as_str()) {
                        let n = faults.get(outcome).and_then(Value::as_u64).unwrap_or(0);
                        faults.insert(outcome.clone(), json!(n + counter.count));
                    }
                }
                let shadow = p.shadow.map(|s| {
                    let t = s.totals();
                    json!({"agreed": t.agreed, "disagreed": t.disagreed, "dropped": t.dropped,
                           "candidate": s.candidate_location})
                });
                json!({"name": p.name, "kind": p.kind.label(), "calls": calls,
                       "faults": faults, "quarantined": p.quarantined, "shadow": shadow})
            })
            .collect(),
        None => vec![],
    };
    Ok(json!({
        "rollouts": rollouts.iter().map(rollout_summary).collect::<Vec<_>>(),
        "analysisRuns": runs.iter().map(run_summary).collect::<Vec<_>>(),
        "experiments": experiments.iter().map(|e| {
            let (namespace, name) = named(e);
            json!({"namespace": namespace, "name": name,
                   "phase": str_at(e, "/status/phase"), "message": str_at(e, "/status/message")})
        }).collect::<Vec<_>>(),
        "plugins": plugins,
    }))
}
