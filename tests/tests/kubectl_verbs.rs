//! kubectl-argo-rollouts against Weir: each verb's exact request, as the
//! plugin sends it (its merge patches on the Rollout and its `status`
//! subresource, `undo`'s JSON patch, `set image`'s update), sent over HTTP
//! to the simulated API server (a real one cannot run here), with the
//! real controller and the real Istio router reacting. The patches are
//! the plugin's own texts (pkg/kubectl-argo-rollouts/cmd/*). Run with
//! Weir's CRDs and with Argo's.

use http::Method;
use serde_json::{Value, json};
use weir::controller::children::HASH_LABEL;
use weir::controller::status::RolloutStatus;
use weir_e2e::controller::{
    Backend, Harness, istio_objects, istio_routing, primary_weights, rollout,
};
use weir_e2e::fake_apiserver::{FakeApiServer, send_bytes};

const ROLLOUT: &str = "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout";
const MERGE: &str = "application/merge-patch+json";
const STEPS: &str = "        - setWeight: 25
        - pause: {}
        - setWeight: 50
        - pause: {}
        - setWeight: 75
        - pause: {}";

/// Sends what kubectl-argo-rollouts sends; a `status` patch goes to the
/// status subresource, as the plugin sends it when the CRD has one.
async fn kubectl(server: &FakeApiServer, method: Method, path: &str, kind: &str, body: &str) {
    let (code, reply) = send_bytes(
        &server.admin_client(),
        method.clone(),
        path,
        kind,
        body.as_bytes().to_vec(),
    )
    .await;
    assert!(
        (200..300).contains(&code),
        "{method} {path} {body}: {code} {reply}"
    );
}

/// The plugin's merge patch on the Rollout's `status` subresource.
async fn patch_status(server: &FakeApiServer, body: &str) {
    kubectl(
        server,
        Method::PATCH,
        &format!("{ROLLOUT}/status"),
        MERGE,
        body,
    )
    .await;
}

/// The plugin's merge patch on the Rollout itself.
async fn patch_spec(server: &FakeApiServer, body: &str) {
    kubectl(server, Method::PATCH, ROLLOUT, MERGE, body).await;
}

async fn istio_weights(h: &Harness) -> (i64, i64) {
    primary_weights(
        &h.get("networking.istio.io/v1beta1", "VirtualService", "checkout")
            .await,
    )
}

async fn at_step(h: &Harness, index: i32, what: &str) -> RolloutStatus {
    h.wait("checkout", 30, what, |s| {
        s.current_step_index == Some(index) && !s.pause_conditions.is_empty()
    })
    .await
}

async fn every_verb(server: FakeApiServer) {
    let backend = Backend::simulated_on(server);
    let Backend::Simulated { server, .. } = &backend else {
        unreachable!("simulated")
    };
    let h = Harness::on(&backend).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&rollout(
        "checkout",
        "app:1",
        &istio_routing("checkout"),
        STEPS,
    ))
    .await;
    let first = h
        .wait("checkout", 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await;
    let v1 = first.stable_rs.clone().expect("stable");

    // set image: GET, change the container's image, PUT (an update).
    let mut object = h.get("argoproj.io/v1alpha1", "Rollout", "checkout").await;
    object["spec"]["template"]["spec"]["containers"][0]["image"] = json!("app:2");
    kubectl(
        server,
        Method::PUT,
        ROLLOUT,
        "application/json",
        &object.to_string(),
    )
    .await;
    let paused = at_step(&h, 1, "paused after setWeight 25").await;
    let v2 = paused.current_pod_hash.clone().expect("canary");
    assert_ne!(v1, v2);
    assert_eq!(istio_weights(&h).await, (75, 25));

    // promote (paused by a step): the pause conditions cleared on status.
    patch_status(server, r#"{"status":{"pauseConditions":null}}"#).await;
    at_step(&h, 3, "paused after setWeight 50").await;
    assert_eq!(istio_weights(&h).await, (50, 50));

    // abort: status.abort on the status subresource.
    patch_status(server, r#"{"status":{"abort":true}}"#).await;
    let aborted = h
        .wait("checkout", 30, "aborted", |s| {
            s.abort && s.phase.as_deref() == Some("Degraded")
        })
        .await;
    assert_eq!(aborted.stable_rs.as_deref(), Some(v1.as_str()));
    assert_eq!(istio_weights(&h).await, (100, 0));

    // retry rollout: status.abort false; the update runs again.
    patch_status(server, r#"{"status":{"abort":false}}"#).await;
    at_step(&h, 1, "paused at the first pause again").await;
    assert_eq!(istio_weights(&h).await, (75, 25));

    // pause: spec.paused. A promote's status patch alone does not move a
    // rollout paused by its spec.
    patch_spec(server, r#"{"spec":{"paused":true}}"#).await;
    h.wait("checkout", 30, "paused by spec", |s| {
        s.pause_conditions
            .iter()
            .any(|p| p.reason == "PausedBySpec")
    })
    .await;
    // promote of a rollout paused by its spec: the plugin unpauses the
    // spec and clears the pause conditions.
    patch_status(server, r#"{"status":{"pauseConditions":null}}"#).await;
    patch_spec(server, r#"{"spec":{"paused":false}}"#).await;
    at_step(&h, 3, "past the first pause after the promote").await;
    assert_eq!(istio_weights(&h).await, (50, 50));

    // promote --full: status.promoteFull.
    patch_status(server, r#"{"status":{"promoteFull":true}}"#).await;
    let promoted = h
        .wait("checkout", 30, "fully promoted", |s| {
            s.phase.as_deref() == Some("Healthy") && s.stable_rs.as_deref() == Some(v2.as_str())
        })
        .await;
    assert!(!promoted.promote_full, "promoteFull is cleared once done");
    assert_eq!(istio_weights(&h).await, (100, 0));

    // restart: spec.restartAt (RFC 3339, whole seconds); every older pod
    // is evicted, then status.restartedAt records it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let evicted_before = server.evictions().len();
    // The new stable's pods and the old stable's, still up for the
    // scale-down delay: Argo restarts every ReplicaSet's pods.
    let older = server.objects("", "pods", "shop").len();
    assert_eq!(older, 8);
    kubectl(
        server,
        Method::PATCH,
        ROLLOUT,
        MERGE,
        &format!("{{\n\t\"spec\": {{\n\t\t\"restartAt\": \"{at}\"\n\t}}\n}}"),
    )
    .await;
    h.wait("checkout", 30, "restarted", |s| {
        s.restarted_at.as_deref() == Some(at.as_str())
    })
    .await;
    assert_eq!(server.evictions().len() - evicted_before, older);

    // undo: a JSON patch replacing spec.template with the previous
    // revision's template (without its hash label).
    let old = h
        .get(
            "apps/v1",
            "ReplicaSet",
            &weir::controller::children::replica_set_name("checkout", &v1),
        )
        .await;
    let mut template = old["spec"]["template"].clone();
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
    }
    let undo = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
    kubectl(
        server,
        Method::PATCH,
        ROLLOUT,
        "application/json-patch+json",
        &undo.to_string(),
    )
    .await;
    let back = at_step(&h, 1, "the old template rolled out as a canary").await;
    // Its hash is the old ReplicaSet's: the same pods come back.
    assert_eq!(back.current_pod_hash.as_deref(), Some(v1.as_str()));
    assert_eq!(back.stable_rs.as_deref(), Some(v2.as_str()));
    assert_eq!(istio_weights(&h).await, (75, 25));
    let image: Value = h.get("argoproj.io/v1alpha1", "Rollout", "checkout").await["spec"]
        ["template"]["spec"]["containers"][0]["image"]
        .clone();
    assert_eq!(image, "app:1");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kubectl_argo_rollouts_verb_works_on_weirs_crds() {
    every_verb(FakeApiServer::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kubectl_argo_rollouts_verb_works_on_argos_crds() {
    every_verb(FakeApiServer::new().with_argo_crds()).await;
}
