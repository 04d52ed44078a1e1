//! A metric provider written in Python (componentize-py) under the same host,
//! sandbox and limits as the Rust plugins, with its faults contained the
//! same way: an exception is a trap carrying the traceback, a loop is
//! stopped at the deadline, unbounded allocation hits the memory cap.

use std::time::{Duration, Instant};
use weir::cluster::{Cluster, Write};
use weir::plugin::{
    AnalysisRun, CallErrorKind, MeasurementPhase, Metric, MetricProvider, PluginSpec, ReportedError,
};
use weir_e2e::{plugin_wasm, python_spec, runtime};

async fn python_provider() -> (weir::plugin::PluginRuntime, MetricProvider) {
    let (runtime, cluster) = runtime();
    let seed = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "checkout-metrics", "namespace": "shop"},
        "data": {"success-rate": "0.97"}
    });
    cluster
        .apply(vec![Write::Create(seed)])
        .await
        .expect("seed");
    let mut spec = python_spec("test/python");
    spec.limits.timeout_ms = 2_000;
    let provider = runtime
        .load_provider(spec)
        .await
        .expect("load the Python provider");
    (runtime, provider)
}

fn run() -> AnalysisRun {
    AnalysisRun {
        namespace: "shop".into(),
        name: "checkout-run".into(),
        uid: "u".into(),
        object: "{}".into(),
    }
}

fn metric(config: serde_json::Value) -> Metric {
    Metric {
        name: "success-rate".into(),
        config: config.to_string(),
        object: "{}".into(),
    }
}

async fn healthy(provider: &MetricProvider) {
    let m = provider
        .run(
            &run(),
            &metric(serde_json::json!({"configMap": "checkout-metrics", "key": "success-rate"})),
        )
        .await
        .expect("a healthy Python call");
    assert_eq!(m.phase, MeasurementPhase::Successful);
    assert_eq!(m.value.as_deref(), Some("0.97"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_measures_and_its_faults_are_contained() {
    let (_runtime, provider) = python_provider().await;
    healthy(&provider).await;

    let error = provider
        .run(
            &run(),
            &metric(serde_json::json!({"configMap": "nowhere", "key": "k"})),
        )
        .await
        .expect_err("missing ConfigMap");
    assert!(
        matches!(&error.kind, CallErrorKind::Reported(ReportedError::NotFound(why)) if why.contains("nowhere")),
        "{error}"
    );

    let error = provider
        .run(&run(), &metric(serde_json::json!({"fault": "raise"})))
        .await
        .expect_err("exception");
    match &error.kind {
        CallErrorKind::Trap { guest_output, .. } => {
            assert!(guest_output.contains("Traceback"), "{guest_output}");
            assert!(
                guest_output.contains("RuntimeError: python provider: deliberate failure"),
                "{guest_output}"
            );
        }
        other => panic!("expected a trap with the traceback, got {other}"),
    }
    healthy(&provider).await;

    let started = Instant::now();
    let error = provider
        .run(&run(), &metric(serde_json::json!({"fault": "loop"})))
        .await
        .expect_err("loop");
    assert!(
        matches!(error.kind, CallErrorKind::Timeout { .. }),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped near its 2 s deadline"
    );
    healthy(&provider).await;

    let error = provider
        .run(&run(), &metric(serde_json::json!({"fault": "hoard"})))
        .await
        .expect_err("hoard");
    assert!(
        matches!(error.kind, CallErrorKind::MemoryLimit { .. }),
        "{error}"
    );
    healthy(&provider).await;

    let error = provider.run(&run(), &metric(serde_json::json!({"configMap": "checkout-metrics", "key": "success-rate", "fault": "none"})))
        .await;
    assert!(
        error.is_ok(),
        "unknown fault names are ignored by this plugin"
    );
    assert_eq!(provider.stats().logs_dropped, 0);
}

#[tokio::test]
async fn python_plugin_needs_its_memory_cap_and_says_so() {
    let (runtime, _cluster) = runtime();
    let mut spec = PluginSpec::new(
        "test/python",
        plugin_wasm("weir-plugin-python").display().to_string(),
    );
    spec.limits.memory_mib = 8;
    let error = runtime
        .load_provider(spec)
        .await
        .err()
        .expect("8 MiB is below CPython's initial memory");
    let message = error.to_string();
    assert!(
        message.contains("memory limit") && message.contains("memoryMiB"),
        "{message}"
    );
}
