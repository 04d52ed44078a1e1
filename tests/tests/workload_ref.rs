//! `spec.workloadRef` end to end through the real controller: the template
//! read from a Deployment (never written into the Rollout), a change to
//! the Deployment starting a new revision, each `scaleDown` mode, and a
//! missing Deployment or a Rollout with both a template and a reference
//! refused with a condition that names the fix. Runs on the embedded store
//! and, with `WEIR_E2E_BACKEND=kubernetes`, on the simulated API server.

use serde_json::Value;
use weir_e2e::controller::{Backend, Harness};

/// Deployment `shop/checkout` running `image` (`annotations`: YAML for its
/// pod template's annotations).
fn deployment(image: &str, annotations: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: checkout, namespace: shop}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: checkout}}}}
  template:
    metadata: {{labels: {{app: checkout}}, annotations: {{{annotations}}}}}
    spec:
      containers: [{{name: app, image: "{image}"}}]
"#
    )
}

/// A blue-green Rollout referring to Deployment `checkout` with
/// `scale_down`, and its two Services.
fn rollout(scale_down: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: checkout-active, namespace: shop}}
spec: {{selector: {{app: checkout}}, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: checkout-preview, namespace: shop}}
spec: {{selector: {{app: checkout}}, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: checkout, namespace: shop}}
spec:
  replicas: 4
  workloadRef: {{apiVersion: apps/v1, kind: Deployment, name: checkout, scaleDown: "{scale_down}"}}
  strategy:
    blueGreen:
      activeService: checkout-active
      previewService: checkout-preview
"#
    )
}

async fn replicas_of_deployment(h: &Harness) -> i64 {
    h.get("apps/v1", "Deployment", "checkout").await["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

async fn image_of_stable(h: &Harness) -> String {
    let status = h.status("checkout").await;
    let hash = status.stable_rs.unwrap_or_default();
    h.get("apps/v1", "ReplicaSet", &format!("checkout-{hash}"))
        .await["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn wait_for_deployment_replicas(h: &Harness, want: i64) {
    h.wait_for(
        "apps/v1",
        "Deployment",
        "checkout",
        &format!("{want} replicas"),
        |d| d["spec"]["replicas"].as_i64() == Some(want),
    )
    .await;
}

fn healthy(s: &weir::controller::status::RolloutStatus) -> bool {
    s.phase.as_deref() == Some("Healthy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_comes_from_the_deployment_which_is_left_alone_with_scale_down_never() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&deployment("app:1", "")).await;
    h.apply(&rollout("never")).await;
    let first = h.wait("checkout", 30, "Healthy", healthy).await;
    assert_eq!(image_of_stable(&h).await, "app:1");
    assert_eq!(first.workload_observed_generation.as_deref(), Some("1"));
    // The template is read, never written into the Rollout.
    let stored = h.get("argoproj.io/v1alpha1", "Rollout", "checkout").await;
    assert!(stored["spec"].get("template").is_none(), "{stored}");
    let before = h.get("apps/v1", "Deployment", "checkout").await;

    // A change to the Deployment's template is a new revision.
    h.apply(&deployment("app:2", "")).await;
    let v1 = first.stable_rs.clone().unwrap_or_default();
    let done = h
        .wait("checkout", 30, "the new revision promoted", |s| {
            healthy(s) && s.stable_rs.as_deref().is_some_and(|h| h != v1)
        })
        .await;
    assert_eq!(image_of_stable(&h).await, "app:2");
    assert_eq!(done.workload_observed_generation.as_deref(), Some("2"));
    let after = h.get("apps/v1", "Deployment", "checkout").await;
    assert_eq!(after["spec"]["replicas"], 4, "never scaled");
    assert_eq!(
        after["metadata"]["generation"].as_i64(),
        before["metadata"]["generation"].as_i64().map(|g| g + 1),
        "only the test's own template change"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_onsuccess_scales_the_deployment_to_zero_once_the_rollout_is_healthy() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    // The Rollout's pods take 1 s to start: the Deployment keeps its pods
    // until then.
    h.apply(&deployment(
        "app:1",
        r#""weir.dev/simulated-readiness": "1s""#,
    ))
    .await;
    h.apply(&rollout("onsuccess")).await;
    h.wait("checkout", 30, "waiting for pods", |s| {
        s.phase.as_deref() == Some("Progressing")
    })
    .await;
    assert_eq!(replicas_of_deployment(&h).await, 4, "not before Healthy");
    h.wait("checkout", 30, "Healthy", healthy).await;
    wait_for_deployment_replicas(&h, 0).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_progressively_follows_the_rollouts_available_pods() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&deployment(
        "app:1",
        r#""weir.dev/simulated-readiness": "1s""#,
    ))
    .await;
    h.apply(&rollout("progressively")).await;
    let waiting = h
        .wait("checkout", 30, "waiting for pods", |s| {
            s.phase.as_deref() == Some("Progressing")
        })
        .await;
    assert_eq!(waiting.available_replicas, 0);
    // None of the Rollout's pods is available: the Deployment keeps all 4.
    assert_eq!(replicas_of_deployment(&h).await, 4);
    h.wait("checkout", 30, "Healthy", healthy).await;
    wait_for_deployment_replicas(&h, 0).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_deployment_is_named_and_the_rollout_recovers_once_it_exists() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&rollout("never")).await;
    let degraded = h.wait_phase("checkout", "Degraded").await;
    let message = degraded.message.unwrap_or_default();
    assert!(
        message.contains("Deployment shop/checkout not found")
            && message.contains("workloadRef.name"),
        "{message}"
    );
    h.apply(&deployment("app:1", "")).await;
    h.wait("checkout", 30, "Healthy once it exists", healthy)
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_beside_a_workload_ref_and_an_unknown_scale_down_are_refused_by_name() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&deployment("app:1", "")).await;
    let both = rollout("never").replace(
        "  strategy:",
        "  template: {metadata: {labels: {app: checkout}}, spec: {containers: [{name: app, image: x}]}}\n  strategy:",
    );
    h.apply(&both).await;
    let degraded = h.wait_phase("checkout", "Degraded").await;
    let message = degraded.message.unwrap_or_default();
    assert!(
        message.contains("spec.template must be empty with spec.workloadRef"),
        "{message}"
    );
    h.apply(&rollout("sometimes")).await;
    let refused = h
        .wait("checkout", 30, "scaleDown refused", |s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("scaleDown"))
        })
        .await;
    let message: Value = refused.message.unwrap_or_default().into();
    assert!(
        message.as_str().is_some_and(
            |m| m.contains("\"sometimes\" is not one of never, onsuccess, progressively")
        ),
        "{message}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_image_and_undo_edit_the_deployment_as_argos_plugin_does() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&deployment("app:1", "")).await;
    h.apply(&rollout("never")).await;
    let first = h.wait("checkout", 30, "Healthy", healthy).await;
    let v1 = first.stable_rs.clone().unwrap_or_default();

    let said = weir::controller::actions::set_image(
        h.cluster.as_ref(),
        "shop",
        "checkout",
        "app",
        "app:2",
    )
    .await
    .expect("set image");
    assert!(said.contains("in Deployment shop/checkout"), "{said}");
    let image = |d: &Value| {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        image(&h.get("apps/v1", "Deployment", "checkout").await),
        "app:2"
    );
    let stored = h.get("argoproj.io/v1alpha1", "Rollout", "checkout").await;
    assert!(stored["spec"].get("template").is_none(), "{stored}");
    h.wait("checkout", 30, "app:2 promoted", |s| {
        healthy(s) && s.stable_rs.as_deref().is_some_and(|h| h != v1)
    })
    .await;
    assert_eq!(image_of_stable(&h).await, "app:2");

    let said = weir::controller::actions::undo(h.cluster.as_ref(), "shop", "checkout", None)
        .await
        .expect("undo");
    assert!(said.contains("rolled back to revision 1"), "{said}");
    assert_eq!(
        image(&h.get("apps/v1", "Deployment", "checkout").await),
        "app:1"
    );
    h.wait("checkout", 30, "back on app:1", |s| {
        healthy(s) && s.stable_rs.as_deref() == Some(v1.as_str())
    })
    .await;
    h.stop().await;
}
