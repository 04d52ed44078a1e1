//! Blue-green Rollouts end to end through the real controller: the active
//! and preview Services, auto and manual promotion, `autoPromotionSeconds`,
//! `previewReplicaCount`, pre- and post-promotion analysis through the real
//! web provider against a loopback server (failure aborts, and after the
//! switch swaps back), the scale-down delays, pod metadata and
//! anti-affinity, and a panicking metric plugin contained to its rollout.
//! Runs on the embedded store, and on the simulated API server with
//! `WEIR_E2E_BACKEND=kubernetes` (scripts/test.sh runs both).

use serde_json::Value;
use std::time::{Duration, Instant};
use weir::controller::actions::{Action, act};
use weir::controller::children::HASH_LABEL;
use weir::controller::retiring::SCALE_DOWN_DEADLINE;
use weir::controller::status::RolloutStatus;
use weir_e2e::controller::{Backend, Harness, plugins_dir, rate_template, web_registration};
use weir_e2e::{Answer, ScriptedServer};

/// The active and preview Services of app `name`.
fn services(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}-active, namespace: shop}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}-preview, namespace: shop}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
    )
}

/// A blue-green Rollout `shop/name` running `image`, with `fields` (YAML
/// under `blueGreen:`, indented six spaces) besides its two Services.
fn blue_green(name: &str, image: &str, fields: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: "{image}"}}]
  strategy:
    blueGreen:
      activeService: {name}-active
      previewService: {name}-preview
{fields}
"#
    )
}

/// Deploys `app:1` and waits for Healthy; then applies `app:2`. Returns
/// the first revision's hash.
async fn deploy_then_update(h: &Harness, name: &str, fields: &str) -> String {
    h.apply(&services(name)).await;
    h.apply(&blue_green(name, "app:1", fields)).await;
    let first = h
        .wait(name, 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await;
    let v1 = first
        .stable_rs
        .clone()
        .expect("a stable after the first deploy");
    assert_eq!(selected(h, &format!("{name}-active")).await, v1);
    assert_eq!(selected(h, &format!("{name}-preview")).await, v1);
    h.apply(&blue_green(name, "app:2", fields)).await;
    v1
}

/// The pod-template hash Service `name` selects ("" for none).
async fn selected(h: &Harness, service: &str) -> String {
    h.get("v1", "Service", service).await["spec"]["selector"][HASH_LABEL]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn replica_set(h: &Harness, name: &str, hash: &str) -> Value {
    h.get("apps/v1", "ReplicaSet", &format!("{name}-{hash}"))
        .await
}

/// Waits until `done` holds for ReplicaSet `name-hash`.
async fn wait_for_replica_set(
    h: &Harness,
    name: &str,
    hash: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    h.wait_for(
        "apps/v1",
        "ReplicaSet",
        &format!("{name}-{hash}"),
        what,
        done,
    )
    .await
}

/// Waits until the pods of `hash` exist and all carry label `key=value`.
async fn wait_for_pods(h: &Harness, hash: &str, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pods = h
            .cluster
            .list(
                "",
                "Pod",
                "shop",
                &[(HASH_LABEL.to_string(), hash.to_string())],
            )
            .await
            .expect("list pods");
        let labelled = pods.iter().all(|p| p["metadata"]["labels"][key] == value);
        if !pods.is_empty() && labelled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pods of {hash} without {key}={value}: {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn promoted_from(v1: &str) -> impl Fn(&RolloutStatus) -> bool + '_ {
    move |s| {
        s.phase.as_deref() == Some("Healthy")
            && s.stable_rs.as_deref().is_some_and(|h| h != v1)
            && s.current_pod_hash == s.stable_rs
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_promotion_switches_the_active_service_and_the_old_pods_stay_for_the_delay() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let v1 = deploy_then_update(&h, "checkout", "      scaleDownDelaySeconds: 3").await;

    let done = h
        .wait("checkout", 30, "v2 Healthy", promoted_from(&v1))
        .await;
    let v2 = done.stable_rs.clone().expect("stable");
    assert_eq!(selected(&h, "checkout-active").await, v2);
    assert_eq!(selected(&h, "checkout-preview").await, v2);
    assert_eq!(
        done.blue_green.active_selector.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(
        done.current_step_index, None,
        "a blue-green status has no steps"
    );
    assert!(done.canary.weights.is_none(), "no router was called");
    // The old active keeps its pods for scaleDownDelaySeconds, marked with
    // the deadline, so connections the Service sent it can drain.
    let old = replica_set(&h, "checkout", &v1).await;
    assert_eq!(old["spec"]["replicas"], 4, "kept for the delay: {old}");
    assert!(
        old["metadata"]["annotations"][SCALE_DOWN_DEADLINE].is_string(),
        "{old}"
    );
    let new = replica_set(&h, "checkout", &v2).await;
    assert_eq!(new["spec"]["replicas"], 4);
    wait_for_replica_set(&h, "checkout", &v1, "old scaled down", |rs| {
        rs["spec"]["replicas"] == 0
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_promotion_waits_with_the_preview_on_the_new_pods_and_the_active_on_the_old() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let fields = "      autoPromotionEnabled: false\n      previewReplicaCount: 1";
    let v1 = deploy_then_update(&h, "checkout", fields).await;

    let paused = h.wait_phase("checkout", "Paused").await;
    assert_eq!(paused.pause_conditions[0].reason, "BlueGreenPause");
    let v2 = paused.current_pod_hash.clone().expect("new hash");
    assert_ne!(v2, v1);
    assert_eq!(selected(&h, "checkout-preview").await, v2);
    assert_eq!(selected(&h, "checkout-active").await, v1, "not yet");
    assert_eq!(
        replica_set(&h, "checkout", &v2).await["spec"]["replicas"],
        1,
        "previewReplicaCount"
    );
    assert_eq!(
        replica_set(&h, "checkout", &v1).await["spec"]["replicas"],
        4
    );
    // `weir get rollout` shows which ReplicaSet each Service selects.
    let rollout = h.get("argoproj.io/v1alpha1", "Rollout", "checkout").await;
    let replica_sets = h
        .cluster
        .list("apps", "ReplicaSet", "shop", &[])
        .await
        .expect("list");
    let text = weir::controller::view::render(&rollout, &replica_sets, &[]);
    assert!(text.contains("Strategy:        BlueGreen"), "{text}");
    assert!(
        text.contains(&format!("ActiveService:  checkout-active → {v1}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("PreviewService: checkout-preview → {v2}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("checkout-{v1}")) && text.contains("stable,active"),
        "{text}"
    );
    assert!(text.contains("preview "), "{text}");
    // It stays paused.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.status("checkout").await.phase.as_deref(), Some("Paused"));
    assert_eq!(selected(&h, "checkout-active").await, v1);

    let said = act(h.cluster.as_ref(), "shop", "checkout", Action::Promote)
        .await
        .expect("promote");
    assert!(said.contains("pause is over"), "{said}");
    let done = h.wait("checkout", 30, "promoted", promoted_from(&v1)).await;
    assert_eq!(done.stable_rs.as_deref(), Some(v2.as_str()));
    assert_eq!(selected(&h, "checkout-active").await, v2);
    assert_eq!(
        replica_set(&h, "checkout", &v2).await["spec"]["replicas"],
        4,
        "scaled to full before the switch"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_promotion_seconds_holds_the_pause_that_long_then_promotes_by_itself() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let v1 = deploy_then_update(&h, "checkout", "      autoPromotionSeconds: 2").await;
    let paused = h.wait_phase("checkout", "Paused").await;
    let began = Instant::now();
    assert_eq!(paused.pause_conditions[0].reason, "BlueGreenPause");
    assert_eq!(selected(&h, "checkout-active").await, v1);
    h.wait("checkout", 30, "promoted by itself", promoted_from(&v1))
        .await;
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "promoted after {waited:?}: the pause is 2 s"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_promotion_analysis_aborts_with_traffic_left_on_the_old_active() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.40}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&web_registration(server.addr.port(), "")).await;
    h.apply(&rate_template("success-rate", server.addr.port(), 2))
        .await;
    let fields = "      prePromotionAnalysis: {templates: [{templateName: success-rate}]}\n      abortScaleDownDelaySeconds: 1";
    let v1 = deploy_then_update(&h, "checkout", fields).await;

    let aborted = h.wait_aborted("checkout").await;
    let message = aborted.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("RolloutAborted: pre-promotion analysis") && message.contains("Failed"),
        "{message}"
    );
    assert_eq!(aborted.stable_rs.as_deref(), Some(v1.as_str()));
    assert_eq!(selected(&h, "checkout-active").await, v1, "never switched");
    let v2 = aborted.current_pod_hash.clone().expect("new hash");
    let run = h
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("checkout-{v2}-pre"),
        )
        .await;
    assert_eq!(run["status"]["phase"], "Failed");
    assert_eq!(run["metadata"]["labels"]["rollout-type"], "PrePromotion");
    assert!(server.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    // The preview's pods go after abortScaleDownDelaySeconds.
    wait_for_replica_set(&h, "checkout", &v2, "preview scaled down", |rs| {
        rs["spec"]["replicas"] == 0
    })
    .await;
    assert_eq!(
        replica_set(&h, "checkout", &v1).await["spec"]["replicas"],
        4
    );

    // A retry runs the preview through a fresh analysis (which passes now).
    server.set(vec![Answer::json(r#"{"rate": 0.99}"#)]);
    act(h.cluster.as_ref(), "shop", "checkout", Action::Retry)
        .await
        .expect("retry");
    let done = h
        .wait(
            "checkout",
            30,
            "promoted after the retry",
            promoted_from(&v1),
        )
        .await;
    assert_eq!(done.stable_rs.as_deref(), Some(v2.as_str()));
    assert_eq!(selected(&h, "checkout-active").await, v2);
    let retried = h
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("checkout-{v2}-pre.1"),
        )
        .await;
    assert_eq!(retried["status"]["phase"], "Successful");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_post_promotion_analysis_switches_the_active_service_back() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.40}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&web_registration(server.addr.port(), "")).await;
    h.apply(&rate_template("success-rate", server.addr.port(), 2))
        .await;
    let fields = "      postPromotionAnalysis: {templates: [{templateName: success-rate}]}";
    let v1 = deploy_then_update(&h, "checkout", fields).await;

    let aborted = h.wait_aborted("checkout").await;
    let message = aborted.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("RolloutAborted: post-promotion analysis"),
        "{message}"
    );
    let v2 = aborted.current_pod_hash.clone().expect("new hash");
    // The post-promotion run exists only once the active Service selected
    // the new pods; the abort put it back on the old ones, still stable.
    let run = h
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("checkout-{v2}-post"),
        )
        .await;
    assert_eq!(run["status"]["phase"], "Failed");
    assert_eq!(run["metadata"]["labels"]["rollout-type"], "PostPromotion");
    assert_eq!(aborted.stable_rs.as_deref(), Some(v1.as_str()));
    assert_eq!(selected(&h, "checkout-active").await, v1, "swapped back");
    assert_eq!(
        aborted.blue_green.active_selector.as_deref(),
        Some(v1.as_str())
    );
    assert_eq!(
        replica_set(&h, "checkout", &v1).await["spec"]["replicas"],
        4
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_metric_plugin_aborts_only_its_rollout() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.99}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let probe = format!(
        "    - name: acme/probe\n      location: file://{}\n      limits: {{timeoutMs: 500}}",
        plugins_dir().join("weir_plugin_probe.wasm").display()
    );
    h.apply(&web_registration(server.addr.port(), &probe)).await;
    h.apply(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: probe, namespace: shop}
spec:
  metrics:
    - name: probe
      interval: 0s
      count: 1
      consecutiveErrorLimit: 0
      provider:
        plugin:
          acme/probe: {fault: panic}
"#,
    )
    .await;
    let faulty = "      prePromotionAnalysis: {templates: [{templateName: probe}]}";
    let v1 = deploy_then_update(&h, "checkout", faulty).await;
    let other = deploy_then_update(&h, "payments", "").await;

    let aborted = h.wait_aborted("checkout").await;
    let message = aborted.message.clone().unwrap_or_default();
    assert!(message.contains("pre-promotion analysis"), "{message}");
    assert!(message.contains("Error"), "{message}");
    assert_eq!(selected(&h, "checkout-active").await, v1);
    let v2 = aborted.current_pod_hash.clone().expect("hash");
    let run = h
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("checkout-{v2}-pre"),
        )
        .await;
    let measured = run["status"]["metricResults"][0]["measurements"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(measured.contains("acme/probe"), "{run}");
    // The other rollout went on.
    h.wait("payments", 30, "payments promoted", promoted_from(&other))
        .await;
    assert!(
        h.metrics
            .render()
            .contains(r#"weir_plugin_faults_total{plugin="acme/probe",kind="trap"}"#),
        "the fault is counted"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_and_active_metadata_follow_the_role_and_anti_affinity_keeps_off_the_stable() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let fields = "      autoPromotionEnabled: false
      activeMetadata: {labels: {role: active}}
      previewMetadata: {labels: {role: preview}, annotations: {note: under-test}}
      antiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: {weight: 40}}";
    let v1 = deploy_then_update(&h, "checkout", fields).await;
    let paused = h.wait_phase("checkout", "Paused").await;
    let v2 = paused.current_pod_hash.clone().expect("hash");
    let preview = wait_for_replica_set(&h, "checkout", &v2, "preview metadata", |rs| {
        rs["spec"]["template"]["metadata"]["labels"]["role"] == "preview"
    })
    .await;
    let template = &preview["spec"]["template"];
    assert_eq!(template["metadata"]["annotations"]["note"], "under-test");
    assert_eq!(
        template["metadata"]["labels"]["app"], "checkout",
        "the rollout's own labels stay"
    );
    let term = &template["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0];
    assert_eq!(term["weight"], 40, "{template}");
    assert_eq!(
        term["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"][0],
        v1.as_str()
    );
    assert_eq!(
        term["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let active = replica_set(&h, "checkout", &v1).await;
    assert_eq!(
        active["spec"]["template"]["metadata"]["labels"]["role"],
        "active"
    );
    // On the API server, the live pods carry their role too.
    if matches!(backend, Backend::Simulated { .. }) {
        wait_for_pods(&h, &v2, "role", "preview").await;
    }
    // The ReplicaSets still select their pods by hash only.
    assert!(
        preview["spec"]["selector"]["matchLabels"]
            .get("role")
            .is_none()
    );

    act(h.cluster.as_ref(), "shop", "checkout", Action::Promote)
        .await
        .expect("promote");
    h.wait("checkout", 30, "promoted", promoted_from(&v1)).await;
    let now_active = wait_for_replica_set(&h, "checkout", &v2, "active metadata", |rs| {
        rs["spec"]["template"]["metadata"]["labels"]["role"] == "active"
    })
    .await;
    assert!(
        now_active["spec"]["template"]["metadata"]["annotations"]
            .get("note")
            .is_none(),
        "the preview's annotation went: {now_active}"
    );
    if matches!(backend, Backend::Simulated { .. }) {
        wait_for_pods(&h, &v2, "role", "active").await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_blue_green_spec_is_degraded_with_the_field_named() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&services("checkout")).await;
    let same = blue_green("checkout", "app:1", "").replace(
        "previewService: checkout-preview",
        "previewService: checkout-active",
    );
    h.apply(&same).await;
    let degraded = h
        .wait("checkout", 30, "InvalidSpec", |s| {
            s.phase.as_deref() == Some("Degraded")
        })
        .await;
    let message = degraded.message.unwrap_or_default();
    assert!(
        message.contains("activeService and previewService"),
        "{message}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollouts_own_dry_run_and_measurement_retention_reach_its_run() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.40}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&web_registration(server.addr.port(), "")).await;
    h.apply(&rate_template("success-rate", server.addr.port(), 2))
        .await;
    // The metric fails, but the rollout's analysis only dry-runs it, and
    // keeps one measurement of each metric.
    let fields = r#"      prePromotionAnalysis:
        templates: [{templateName: success-rate}]
        dryRun: [{metricName: success-rate}]
        measurementRetention: [{metricName: "*", limit: 1}]"#;
    let v1 = deploy_then_update(&h, "checkout", fields).await;
    let done = h
        .wait(
            "checkout",
            30,
            "promoted past a dry-run failure",
            promoted_from(&v1),
        )
        .await;
    let v2 = done.stable_rs.clone().expect("stable");
    let run = h
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("checkout-{v2}-pre"),
        )
        .await;
    assert_eq!(run["status"]["phase"], "Successful", "{run}");
    assert_eq!(run["spec"]["dryRun"][0]["metricName"], "success-rate");
    assert_eq!(run["spec"]["measurementRetention"][0]["limit"], 1);
    let result = &run["status"]["metricResults"][0];
    assert_eq!(result["phase"], "Failed", "measured, and failed: {run}");
    assert_eq!(
        result["measurements"].as_array().map(Vec::len),
        Some(1),
        "{run}"
    );
    h.stop().await;
}
