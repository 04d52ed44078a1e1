//! Entry points for fuzzing every input that crosses a trust boundary, one
//! function per target (`fuzz/fuzz_targets/*.rs` call them; the test suite
//! replays the committed corpora and every crash found through them). Each
//! takes arbitrary bytes and must return without panicking, whatever they
//! are: an error is a fine answer, a panic is a bug.

use crate::analysis::ConditionEvaluator;
use crate::analysis::fit;
use crate::analysis::types::{AnalysisRun, AnalysisTemplate, Measurement, Phase};
use crate::cluster::document::DocumentLimits;
use crate::cluster::patch::{self, Patch};
use crate::cluster::{Cluster, MemoryCluster, ObjectKey, StagedCluster, Write, manifests};
use crate::controller::spec::RolloutView;
use crate::controller::{PluginRegistry, Reconciler};
use crate::plugin::{Limits, PluginRuntime, RuntimeConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The built components the sandboxed targets load (`WEIR_PLUGINS_DIR`, or
/// the workspace's `target/wasm32-wasip2/plugin`).
fn plugins_dir() -> std::path::PathBuf {
    std::env::var_os("WEIR_PLUGINS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin")
        })
}

/// What the sandboxed targets share in one thread: a runtime, a reconciler
/// over an in-memory cluster, the condition evaluator.
struct World {
    tokio: tokio::runtime::Runtime,
    cluster: Arc<MemoryCluster>,
    reconciler: Reconciler,
    evaluator: ConditionEvaluator,
}

fn world() -> World {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("fuzzing needs a tokio runtime: {e}"));
    let cluster = Arc::new(MemoryCluster::new());
    let runtime = tokio
        .block_on(async { PluginRuntime::new(RuntimeConfig::default(), cluster.clone()) })
        .unwrap_or_else(|e| panic!("fuzzing needs a plugin runtime: {e}"));
    let dir = plugins_dir();
    let evaluator = tokio.block_on(ConditionEvaluator::load(
        &runtime,
        &dir.join(crate::analysis::condition::COMPONENT_FILE)
            .display()
            .to_string(),
    ));
    let registry = Arc::new(PluginRegistry::new(runtime, dir, "argo-rollouts"));
    let reconciler = Reconciler::new(cluster.clone(), registry, evaluator.clone());
    World {
        tokio,
        cluster,
        reconciler,
        evaluator,
    }
}

thread_local! {
    static WORLD: World = world();
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The plugin registration: `argo-rollouts-config`'s plugin lists.
pub fn registration(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let config = serde_json::json!({"data": {
        "trafficRouterPlugins": text,
        "metricProviderPlugins": text,
    }});
    let _ = crate::controller::registry::parse_config_map(&config);
    if let Ok(object) = serde_json::from_str::<Value>(text) {
        let _ = crate::controller::registry::parse_config_map(&object);
    }
}

/// Manifests as `weir apply` reads them, applied to a store, then one
/// reconcile of every Rollout among them.
pub fn manifests(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(objects) = manifests::parse(text, std::path::Path::new("fuzz.yaml")) else {
        return;
    };
    for object in &objects {
        let _ = RolloutView::parse(object);
        let _ = serde_json::from_value::<AnalysisTemplate>(object.clone());
        let _ = serde_json::from_value::<AnalysisRun>(object.clone());
    }
    WORLD.with(|w| {
        w.tokio.block_on(async {
            // A fresh namespace per input, so inputs do not meet.
            let namespace = format!(
                "fuzz{}",
                w.cluster
                    .list("", "Namespace", "", &[])
                    .await
                    .map_or(0, |l| l.len())
            );
            let mut keys = Vec::new();
            let mut writes = Vec::new();
            for mut object in objects {
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("namespace".into(), Value::String(namespace.clone()));
                }
                if let Ok(key) = ObjectKey::of(&object) {
                    keys.push(key);
                }
                writes.push(Write::Create(object));
            }
            let marker = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace}});
            let _ = w.cluster.apply(vec![Write::Create(marker)]).await;
            if w.cluster.apply(writes).await.is_err() {
                return;
            }
            for key in keys.iter().filter(|k| k.kind == "Rollout") {
                let _ = tokio::time::timeout(Duration::from_secs(10), w.reconciler.reconcile(key))
                    .await;
            }
            // Whatever happened, the store reads back.
            for key in &keys {
                let _ = w.cluster.get(key).await;
            }
        })
    });
}

/// A measurement as a plugin returns it: checked, recorded into a run,
/// kept under the run's size, stored and read back.
pub fn plugin_output(data: &[u8]) {
    let Ok(reply) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let text_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    let measurement = crate::plugin::Measurement {
        phase: match reply.get("phase").and_then(Value::as_str) {
            Some("running") => crate::plugin::MeasurementPhase::Running,
            Some("failed") => crate::plugin::MeasurementPhase::Failed,
            Some("error") => crate::plugin::MeasurementPhase::Error,
            Some("inconclusive") => crate::plugin::MeasurementPhase::Inconclusive,
            _ => crate::plugin::MeasurementPhase::Successful,
        },
        value: reply.get("value").and_then(text_of),
        message: reply.get("message").and_then(text_of),
        metadata: reply
            .get("metadata")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), text_of(v).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
        resume_after_ms: reply.get("resumeAfterMs").and_then(Value::as_u64),
    };
    let limits = Limits::default();
    if crate::plugin::validate::measurement(&measurement, limits.output_bytes).is_err() {
        return;
    }
    let Ok(mut run) = serde_json::from_value::<AnalysisRun>(serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "r", "namespace": "fuzz"},
        "spec": {"metrics": [{"name": "m", "provider": {"web": {}}}]}
    })) else {
        return;
    };
    run.status
        .metric_results
        .push(crate::analysis::MetricResult {
            name: "m".into(),
            measurements: vec![
                Measurement {
                    phase: Phase::Successful,
                    value: measurement.value.clone(),
                    message: measurement.message.clone(),
                    metadata: measurement.metadata.iter().cloned().collect(),
                    ..Measurement::default()
                };
                12
            ],
            ..Default::default()
        });
    fit::fit(&mut run, fit::DEFAULT_MAX_RUN_BYTES);
    let Ok(object) = serde_json::to_value(&run) else {
        return;
    };
    let cluster = MemoryCluster::new();
    let stored = block_on(cluster.apply(vec![Write::Create(object)]));
    assert!(
        stored.is_ok(),
        "a fitted AnalysisRun must be storable: {stored:?}"
    );
}

/// Runs a future to completion on a throwaway current-thread runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(future),
        Err(e) => panic!("fuzzing needs a tokio runtime: {e}"),
    }
}

/// What a guest hands the `cluster` import: a sequence of creates, updates,
/// patches and deletes (as JSON), each document checked as the host checks
/// it, staged, committed, and the store read back.
pub fn staged(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let limits = Limits::default();
    let documents: DocumentLimits = limits.documents();
    if documents.check_text(text).is_err() {
        return;
    }
    let Ok(Value::Array(ops)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let base = Arc::new(MemoryCluster::new());
    block_on(async {
        let _ = base
            .apply(vec![Write::Create(serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "seed", "namespace": "fuzz"}, "data": {"a": {"b": [1, 2]}}}))])
            .await;
        let mut staged = StagedCluster::new(base.clone(), limits.staging());
        let deadline = Instant::now() + Duration::from_secs(2);
        for op in ops {
            let kind = op
                .get("op")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let object = op.get("object").cloned().unwrap_or(Value::Null);
            let result = match kind.as_str() {
                "create" => staged.create(object).await.map(drop),
                "update" => staged.update(object).await.map(drop),
                "delete" => match ObjectKey::of(&object) {
                    Ok(key) => staged.delete(&key).await,
                    Err(_) => Ok(()),
                },
                "patch" | "merge" => {
                    let Ok(key) = ObjectKey::of(&object) else {
                        continue;
                    };
                    let api_version = object
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("v1");
                    let Ok(current) = staged.get(&key, api_version).await else {
                        continue;
                    };
                    let body = op.get("patch").cloned().unwrap_or(Value::Null);
                    let patch = if kind == "merge" {
                        Patch::Merge(body)
                    } else {
                        match serde_json::from_value(body) {
                            Ok(ops) => Patch::Json(ops),
                            Err(_) => continue,
                        }
                    };
                    match patch::apply_blocking(current, patch, documents, deadline).await {
                        Ok(patched) if ObjectKey::of(&patched).ok().as_ref() == Some(&key) => {
                            staged.update(patched).await.map(drop)
                        }
                        _ => Ok(()),
                    }
                }
                _ => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        let _ = staged.commit(deadline).await;
        // Nothing stored is unreadable.
        let listed = base.list("", "ConfigMap", "fuzz", &[]).await;
        assert!(listed.is_ok(), "the store reads back: {listed:?}");
        if let Ok(objects) = listed {
            for object in objects {
                let text = object.to_string();
                assert!(
                    serde_json::from_str::<Value>(&text).is_ok(),
                    "a stored object reads back as JSON"
                );
            }
        }
    });
}

/// A condition and a measured value, evaluated in the sandbox. The first
/// line is the condition, the rest the value (JSON; `null` when not).
pub fn condition(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let (condition, value) = text.split_once('\n').unwrap_or((text, "null"));
    let result = serde_json::from_str::<Value>(value).unwrap_or(Value::Null);
    WORLD.with(|w| {
        let _ = w.tokio.block_on(w.evaluator.evaluate(condition, &result));
    });
}

/// A fixture file for `weir plugin test`.
pub fn fixture(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let path = std::path::Path::new("fuzz.yaml");
    let Ok(fixture) = crate::fixture::Fixture::parse(text, path) else {
        return;
    };
    // Everything the runner builds from it before calling a plugin.
    let _ = fixture.rollout.as_ref().map(|r| r.to_rollout());
    let _ = fixture.analysis_run.as_ref().map(|r| r.to_run());
    let _ = fixture.metric.as_ref().map(|m| m.to_metric());
    for call in &fixture.calls {
        let _: Vec<_> = call.additional.iter().map(|d| d.to_destination()).collect();
        if let Some(route) = &call.route {
            let _ = route.to_header_route();
            let _ = route.to_mirror_route();
        }
        if let Some(m) = &call.measurement {
            let _ = m.to_measurement();
        }
    }
}

/// A request body of the object API's `apply`: writes, applied to a store
/// and read back.
pub fn api_request(data: &[u8]) {
    let Ok(writes) = serde_json::from_slice::<Vec<Write>>(data) else {
        return;
    };
    let cluster = MemoryCluster::new();
    block_on(async {
        let keys: Vec<ObjectKey> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Create(o) | Write::Update { object: o, .. } => ObjectKey::of(o).ok(),
                Write::Delete { key, .. } => Some(key.clone()),
            })
            .collect();
        let _ = cluster.apply(writes).await;
        for key in keys {
            let _ = cluster.get(&key).await;
            let listed = cluster
                .list(&key.group, &key.kind, &key.namespace, &[])
                .await;
            assert!(listed.is_ok(), "the store reads back: {listed:?}");
        }
    });
}
