//! The Prometheus provider against a real Prometheus server (Debian's
//! `prometheus`, installed by scripts/setup-prometheus.sh) on loopback,
//! scraping a small exporter this test serves with values it controls.

use chrono::Utc;
use serde_json::json;
use std::time::{Duration, Instant};
use weir::analysis::AnalysisEngine;
use weir::analysis::types::{AnalysisRun, AnalysisTemplate, Phase};
use weir::plugin::{
    CallErrorKind, FaultPolicy, HttpPolicy, MetricProvider, PluginRuntime, PluginSpec,
    ReportedError,
};
use weir_e2e::prometheus::{free_port, start as start_prometheus};
use weir_e2e::{
    Answer, ScriptedServer, contract_metric as metric, contract_run as run, plugin_wasm, runtime,
};

async fn provider(runtime: &PluginRuntime, allow: &str) -> MetricProvider {
    let mut spec = PluginSpec::new(
        "argoproj/prometheus",
        plugin_wasm("weir-plugin-prometheus").display().to_string(),
    );
    spec.http = HttpPolicy {
        allow_hosts: vec![allow.to_string()],
        ..HttpPolicy::default()
    };
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    runtime.load_provider(spec).await.expect("load prometheus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_provider_against_a_real_prometheus() {
    let exporter = ScriptedServer::start(vec![Answer::json("demo_success_rate 0.97\n")]).await;
    let prometheus = start_prometheus(exporter.addr, "demo_success_rate").await;
    let address = format!("http://{}", prometheus.addr);
    let (runtime, _cluster) = runtime();
    let p = provider(&runtime, &prometheus.addr).await;

    // Instant query: a vector becomes a list of numbers.
    let m = p
        .run(
            &run(),
            &metric(json!({"address": address, "query": "demo_success_rate"})),
        )
        .await
        .expect("vector");
    assert_eq!(m.value.as_deref(), Some("[0.97]"));
    // A scalar becomes a number; NaN travels as "NaN".
    let m = p
        .run(
            &run(),
            &metric(json!({"address": address, "query": "scalar(demo_success_rate)"})),
        )
        .await
        .expect("scalar");
    assert_eq!(m.value.as_deref(), Some("0.97"));
    let m = p
        .run(
            &run(),
            &metric(json!({"address": address, "query": "scalar(nonexistent_series)"})),
        )
        .await
        .expect("NaN");
    assert_eq!(m.value.as_deref(), Some("\"NaN\""));
    // An empty vector is an empty list.
    let m = p
        .run(
            &run(),
            &metric(json!({"address": address, "query": "nonexistent_series"})),
        )
        .await
        .expect("empty");
    assert_eq!(m.value.as_deref(), Some("[]"));
    // Range query: a matrix flattened to its values.
    let range = json!({"address": address, "query": "demo_success_rate",
        "rangeQuery": {"start": "now() - duration(\"30s\")", "end": "now()", "step": "1s"}});
    let m = p.run(&run(), &metric(range)).await.expect("range");
    let values: Vec<f64> =
        serde_json::from_str(m.value.as_deref().unwrap_or("[]")).expect("numbers");
    assert!(
        !values.is_empty() && values.iter().all(|v| (*v - 0.97).abs() < 1e-9),
        "{values:?}"
    );

    // A query error is reported with Prometheus' own message.
    let error = p
        .run(
            &run(),
            &metric(json!({"address": address, "query": "sum(demo_success_rate"})),
        )
        .await
        .expect_err("bad query");
    match &error.kind {
        CallErrorKind::Reported(ReportedError::InvalidConfig(why)) => assert!(
            why.contains("bad_data") && why.contains("parse error"),
            "{why}"
        ),
        other => panic!("expected invalid-config, got {other}"),
    }
    // An unreachable address is a transient error.
    let dead = format!("127.0.0.1:{}", free_port());
    let p_dead = provider(&runtime, &dead).await;
    let error = p_dead
        .run(
            &run(),
            &metric(json!({"address": format!("http://{dead}"), "query": "up", "timeout": 2})),
        )
        .await
        .expect_err("unreachable");
    assert!(
        matches!(
            &error.kind,
            CallErrorKind::Reported(ReportedError::Transient(_))
        ),
        "{error}"
    );
    // A host off the allow-list is denied, naming the host and the setting.
    let p_denied = provider(&runtime, "prometheus.monitoring.svc:9090").await;
    let error = p_denied
        .run(&run(), &metric(json!({"address": address, "query": "up"})))
        .await
        .expect_err("denied");
    match &error.kind {
        CallErrorKind::CapabilityDenied(why) => assert!(
            why.contains("127.0.0.1") && why.contains("allowHosts"),
            "{why}"
        ),
        other => panic!("expected a denial, got {other}"),
    }

    // Through the analysis engine: an AnalysisTemplate as users write it.
    let template: AnalysisTemplate = serde_yaml_ng::from_str(&format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: success-rate}}
spec:
  args: [{{name: service-name}}]
  metrics:
  - name: success-rate
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: {address}
        query: demo_success_rate{{job="{{{{args.service-name}}}}"}}
"#
    ))
    .expect("template");
    let args = [weir::analysis::types::Argument {
        name: "service-name".into(),
        value: Some("demo".into()),
        value_from: None,
    }];
    let mut engine = AnalysisEngine::new(weir_e2e::evaluator().await);
    engine.register("prometheus", p.clone());
    let mut analysis = AnalysisRun::from_template(&template, "run-1", "shop", "uid-1", &args);
    assert_eq!(engine.reconcile(&mut analysis, Utc::now()).await, None);
    assert_eq!(
        analysis.status.phase,
        Phase::Successful,
        "{:?}",
        analysis.status
    );

    // The exporter's value drops; the next analysis fails.
    exporter.set(vec![Answer::json("demo_success_rate 0.42\n")]);
    let started = Instant::now();
    loop {
        let m = p
            .run(
                &run(),
                &metric(json!({"address": address, "query": "demo_success_rate"})),
            )
            .await
            .expect("query");
        if m.value.as_deref() == Some("[0.42]") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "prometheus never saw the new value"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut analysis = AnalysisRun::from_template(&template, "run-2", "shop", "uid-2", &args);
    engine.reconcile(&mut analysis, Utc::now()).await;
    assert_eq!(analysis.status.phase, Phase::Failed);
}
