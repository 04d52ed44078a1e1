//! A canary through the shipped Gateway API router
//! (`argoproj-labs/gatewayAPI`) end to end: weights on an HTTPRoute's
//! backendRefs, a header route as a rule of its own while the canary is
//! paused, both gone at promotion (and at an abort), with the in-progress
//! label on the route only while the canary has traffic.

use serde_json::Value;
use weir::controller::actions::{Action, act};
use weir_e2e::controller::{Backend, Harness, services};

const LABEL: &str = "rollouts.argoproj.io/gatewayapi-canary";

/// Services and an HTTPRoute for app `name` in namespace `shop`.
fn objects(name: &str) -> String {
    format!(
        r#"{}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{{name: eg}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /}}}}]
      backendRefs:
        - {{name: {name}-stable, kind: Service, port: 80}}
        - {{name: {name}-canary, kind: Service, port: 80}}
"#,
        services(name)
    )
}

/// `trafficRouting` through the Gateway API router, with one managed route.
fn routing(name: &str) -> String {
    format!(
        "        managedRoutes: [{{name: beta}}]\n        plugins:\n          argoproj-labs/gatewayAPI: {{httpRoute: {name}, namespace: shop}}"
    )
}

const STEPS: &str = "        - setWeight: 20
        - setHeaderRoute:
            name: beta
            match:
              - headerName: X-Beta
                headerValue: {exact: \"1\"}
        - pause: {}
        - setWeight: 60";

async fn route(h: &Harness, name: &str) -> Value {
    h.get("gateway.networking.k8s.io/v1", "HTTPRoute", name)
        .await
}

/// (stable, canary) weights of the route's first rule.
fn weights(route: &Value) -> (i64, i64) {
    let refs = &route["spec"]["rules"][0]["backendRefs"];
    (
        refs[0]["weight"].as_i64().unwrap_or(-1),
        refs[1]["weight"].as_i64().unwrap_or(-1),
    )
}

fn rule_names(route: &Value) -> Vec<String> {
    route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_goes_through_gateway_api_with_a_header_route_step() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&objects("checkout")).await;
    h.deploy_then_update("checkout", &routing("checkout"), STEPS)
        .await;

    let paused = h.wait_phase("checkout", "Paused").await;
    assert_eq!(paused.step_index(), 2);
    let weights_seen = paused.canary.weights.expect("weights");
    assert_eq!(weights_seen.canary.weight, 20);
    assert_eq!(
        weights_seen.verified,
        Some(true),
        "read back from the route"
    );
    let during = route(&h, "checkout").await;
    assert_eq!(weights(&during), (80, 20));
    assert_eq!(
        rule_names(&during),
        vec!["".to_string(), "beta".to_string()]
    );
    let beta = &during["spec"]["rules"][1];
    assert_eq!(
        beta["matches"][0]["headers"][0],
        serde_json::json!({"name": "X-Beta", "type": "Exact", "value": "1"})
    );
    assert_eq!(beta["matches"][0]["path"]["value"], "/");
    assert_eq!(beta["backendRefs"][0]["name"], "checkout-canary");
    assert!(beta["backendRefs"][0].get("weight").is_none());
    assert_eq!(during["metadata"]["labels"][LABEL], "in-progress");

    act(h.cluster.as_ref(), "shop", "checkout", Action::Promote)
        .await
        .expect("promote");
    let done = h
        .wait("checkout", 30, "Healthy", |s| {
            s.phase.as_deref() == Some("Healthy") && s.stable_rs == s.current_pod_hash
        })
        .await;
    assert_eq!(done.step_index(), 4);
    let after = route(&h, "checkout").await;
    assert_eq!(weights(&after), (100, 0));
    assert_eq!(
        rule_names(&after),
        vec!["".to_string()],
        "header route removed"
    );
    assert!(after["metadata"]["labels"].get(LABEL).is_none(), "{after}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_takes_the_header_route_out_and_the_traffic_back() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&objects("payments")).await;
    h.deploy_then_update("payments", &routing("payments"), STEPS)
        .await;
    h.wait_phase("payments", "Paused").await;
    assert_eq!(rule_names(&route(&h, "payments").await).len(), 2);

    act(h.cluster.as_ref(), "shop", "payments", Action::Abort)
        .await
        .expect("abort");
    h.wait_aborted("payments").await;
    let after = route(&h, "payments").await;
    assert_eq!(weights(&after), (100, 0));
    assert_eq!(rule_names(&after), vec!["".to_string()]);
    h.stop().await;
}
