//! One line per change of a Rollout's phase, step or weights (and of an
//! Istio VirtualService's weights), as `weir run` and `weir demo` print them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use weir::cluster::{Cluster, ObjectKey};
use weir::controller::status::RolloutStatus;

/// A one-line summary of a Rollout.
pub fn rollout_line(object: &serde_json::Value) -> String {
    let status = RolloutStatus::of(object);
    let steps = object
        .pointer("/spec/strategy/canary/steps")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    let weights = status
        .canary
        .weights
        .as_ref()
        .map(|w| {
            format!(
                " weights canary {} / stable {}",
                w.canary.weight, w.stable.weight
            )
        })
        .unwrap_or_default();
    format!(
        "{} step {}/{steps}{weights}: {}",
        status.phase.as_deref().unwrap_or("Pending"),
        status.step_index().min(steps),
        status.message.as_deref().unwrap_or("")
    )
}

/// A one-line summary of a VirtualService's HTTP route weights.
pub fn virtual_service_line(object: &serde_json::Value) -> String {
    let routes = object
        .pointer("/spec/http")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    routes
        .iter()
        .map(|route| {
            let name = route.get("name").and_then(|n| n.as_str()).unwrap_or("-");
            let destinations = route
                .get("route")
                .and_then(|r| r.as_array())
                .map(|list| {
                    list.iter()
                        .map(|d| {
                            format!(
                                "{}={}",
                                d.pointer("/destination/host")
                                    .and_then(|h| h.as_str())
                                    .unwrap_or("?"),
                                d.get("weight").and_then(|w| w.as_i64()).unwrap_or(0)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            format!("route {name}: {destinations}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Prints a line whenever a watched Rollout or VirtualService changes, until the watch ends.
pub async fn print_changes(cluster: Arc<dyn Cluster>, started: Instant) {
    let Some(mut events) = cluster.watch() else {
        return;
    };
    let mut last: HashMap<ObjectKey, String> = HashMap::new();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let render: fn(&serde_json::Value) -> String =
            match (event.key.group.as_str(), event.key.kind.as_str()) {
                ("argoproj.io", "Rollout") => rollout_line,
                ("networking.istio.io", "VirtualService") => virtual_service_line,
                _ => continue,
            };
        let Ok(object) = cluster.get(&event.key).await else {
            continue;
        };
        let line = render(&object);
        if last.get(&event.key) != Some(&line) {
            println!(
                "[{:>6.2}s] {} {}/{}: {line}",
                started.elapsed().as_secs_f64(),
                event.key.kind,
                event.key.namespace,
                event.key.name
            );
            last.insert(event.key, line);
        }
    }
}
