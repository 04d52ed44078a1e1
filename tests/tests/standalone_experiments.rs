//! Experiments created directly (not by a Rollout), reconciled on their own
//! as Argo's experiment controller does: their templates' ReplicaSets and
//! Services owned by the Experiment, their analyses measured through the
//! real web provider against a loopback server, the verdict (duration
//! elapsed, a failed analysis), `terminate experiment`, and `weir get
//! experiment`. Runs on the embedded store and, with
//! `WEIR_E2E_BACKEND=kubernetes`, on the simulated API server.

use serde_json::Value;
use std::time::{Duration, Instant};
use weir::controller::actions::terminate_experiment;
use weir_e2e::controller::{Backend, Harness, rate_template, web_registration};
use weir_e2e::{Answer, ScriptedServer};

/// Experiment `shop/name`: a baseline and a candidate (with a Service), the
/// `rate` analysis, and `duration` (YAML, or `null`).
fn experiment(name: &str, duration: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Experiment
metadata: {{name: {name}, namespace: shop}}
spec:
  duration: {duration}
  templates:
    - name: baseline
      replicas: 2
      selector: {{matchLabels: {{app: {name}-baseline}}}}
      template:
        metadata: {{labels: {{app: {name}-baseline}}}}
        spec: {{containers: [{{name: app, image: "app:1", ports: [{{containerPort: 8080}}]}}]}}
    - name: candidate
      replicas: 1
      selector: {{matchLabels: {{app: {name}-candidate}}}}
      service: {{}}
      template:
        metadata: {{labels: {{app: {name}-candidate}}}}
        spec: {{containers: [{{name: app, image: "app:2", ports: [{{containerPort: 8080}}]}}]}}
  analyses:
    - name: rate
      templateName: rate
"#
    )
}

async fn get(h: &Harness, kind: &str, name: &str) -> Value {
    let api = if kind == "ReplicaSet" {
        "apps/v1"
    } else if kind == "Service" {
        "v1"
    } else {
        "argoproj.io/v1alpha1"
    };
    h.get(api, kind, name).await
}

/// Waits (up to 30 s) until Experiment `name`'s phase is final.
async fn verdict(h: &Harness, name: &str) -> Value {
    let started = Instant::now();
    loop {
        let experiment = get(h, "Experiment", name).await;
        let phase = experiment["status"]["phase"].as_str().unwrap_or("");
        if matches!(phase, "Successful" | "Failed" | "Error" | "Inconclusive") {
            return experiment;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} has no verdict after 30 s: {experiment}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn owner_kind(object: &Value) -> &str {
    object["metadata"]["ownerReferences"][0]["kind"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_created_directly_runs_its_templates_and_analysis_for_its_duration() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.99}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&web_registration(server.addr.port(), "")).await;
    h.apply(&rate_template("rate", server.addr.port(), 2)).await;
    let started = Instant::now();
    h.apply(&experiment("smoke", "2s")).await;

    // While it runs: its pods, owned by it, and a Service for the candidate.
    let baseline = h
        .wait_exists("apps/v1", "ReplicaSet", "smoke-baseline")
        .await;
    assert_eq!(baseline["spec"]["replicas"], 2);
    assert_eq!(owner_kind(&baseline), "Experiment");
    let service = h.wait_exists("v1", "Service", "smoke-candidate").await;
    assert_eq!(owner_kind(&service), "Experiment");

    let done = verdict(&h, "smoke").await;
    assert_eq!(done["status"]["phase"], "Successful", "{done}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "ended after {:?}, before its 2 s duration",
        started.elapsed()
    );
    let run = get(&h, "AnalysisRun", "smoke-rate").await;
    assert_eq!(run["status"]["phase"], "Successful", "{run}");
    assert_eq!(owner_kind(&run), "Experiment");
    // Over: its pods go.
    assert_eq!(
        get(&h, "ReplicaSet", "smoke-baseline").await["spec"]["replicas"],
        0
    );
    assert_eq!(
        get(&h, "ReplicaSet", "smoke-candidate").await["spec"]["replicas"],
        0
    );
    let replica_sets = vec![
        get(&h, "ReplicaSet", "smoke-baseline").await,
        get(&h, "ReplicaSet", "smoke-candidate").await,
    ];
    let text = weir::controller::view::render_experiment(&done, &replica_sets, &[run]);
    assert!(text.contains("Status:          ✔ Successful"), "{text}");
    assert!(text.contains("app:2 (Σ:candidate)"), "{text}");
    assert!(text.contains("smoke-rate"), "{text}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_analysis_fails_a_standalone_experiment() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.40}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&web_registration(server.addr.port(), "")).await;
    h.apply(&rate_template("rate", server.addr.port(), 2)).await;
    h.apply(&experiment("regression", "1h")).await;
    let done = verdict(&h, "regression").await;
    assert_eq!(done["status"]["phase"], "Failed", "{done}");
    assert_eq!(
        get(&h, "AnalysisRun", "regression-rate").await["status"]["phase"],
        "Failed"
    );
    assert_eq!(
        get(&h, "ReplicaSet", "regression-baseline").await["spec"]["replicas"],
        0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_standalone_experiment_ends_it_and_its_analysis() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.99}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&web_registration(server.addr.port(), "")).await;
    // Far more measurements than the test waits for, and no duration.
    h.apply(&rate_template("rate", server.addr.port(), 1000))
        .await;
    h.apply(&experiment("long", "null")).await;
    let started = Instant::now();
    while server.hits.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no measurement"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let said = terminate_experiment(h.cluster.as_ref(), "shop", "long")
        .await
        .expect("terminate");
    assert!(said.contains("terminated"), "{said}");
    let done = verdict(&h, "long").await;
    assert_eq!(done["status"]["phase"], "Successful", "{done}");
    assert_eq!(done["status"]["message"], "Experiment terminated");
    let run = get(&h, "AnalysisRun", "long-rate").await;
    assert_eq!(run["status"]["phase"], "Successful", "{run}");
    let taken = run["status"]["metricResults"][0]["count"]
        .as_i64()
        .unwrap_or(0);
    assert!((2..1000).contains(&taken), "{taken} measurements");
    assert_eq!(
        get(&h, "ReplicaSet", "long-candidate").await["spec"]["replicas"],
        0
    );
    let again = terminate_experiment(h.cluster.as_ref(), "shop", "long")
        .await
        .expect("terminate again");
    assert!(again.contains("over already"), "{again}");
    h.stop().await;
}
