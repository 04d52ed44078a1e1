//! The controller end to end through the real Istio, web and faulty
//! plugins: the success path, an analysis failure aborting to stable, pause
//! and promote, a faulty router contained to its rollout, the seed case
//! through a real experiment step, the panic boundary, registration changes
//! picked up without a restart, and pods that start late or never. The
//! suite runs on the embedded store (redb) and again on the simulated
//! Kubernetes API server (`WEIR_E2E_BACKEND=kubernetes`, see
//! `weir_e2e::controller::Backend`); scripts/test.sh runs both.

use std::sync::Arc;
use weir::cluster::{ClusterError, ObjectKey};
use weir::controller::Outcome;
use weir::controller::actions::{Action, act};
use weir::controller::children::HASH_LABEL;
use weir::controller::retiring::{RETIRING, SCALE_DOWN_DEADLINE};
use weir::controller::status::RolloutStatus;
use weir::controller::{Reconcile, assemble};
use weir_e2e::controller::{
    Backend, Harness, analysis_template, config, istio_objects, istio_routing, plugins_dir,
    primary_weights, rollout,
};
use weir_e2e::{Answer, ScriptedServer};

/// The registration ConfigMap: the web provider may reach `port` on
/// loopback; `extra_routers` is YAML list items for trafficRouterPlugins.
fn registration(port: u16, extra_routers: &str) -> String {
    registration_granting(port, "{}", extra_routers)
}

/// [`registration`] with the web provider's `grant` (YAML).
fn registration_granting(port: u16, grant: &str, extra_routers: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: argo-rollouts-config, namespace: weir-system}}
data:
  metricProviderPlugins: |
    - name: web
      http: {{allowHosts: ["127.0.0.1:{port}"]}}
      grant: {grant}
  trafficRouterPlugins: |
    []
{extra_routers}
"#
    )
}

const ANALYSIS_STEPS: &str = "        - setWeight: 25
        - analysis: {templates: [{templateName: success-rate}]}
        - setWeight: 75
        - pause: {duration: 0s}";

/// Seconds from now to a ReplicaSet's scale-down deadline.
fn seconds_until_scale_down(rs: &serde_json::Value) -> i64 {
    let text = rs["metadata"]["annotations"][SCALE_DOWN_DEADLINE]
        .as_str()
        .unwrap_or_else(|| panic!("no scale-down deadline on {rs}"));
    let at = chrono::DateTime::parse_from_rfc3339(text).expect("RFC 3339 deadline");
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
}

/// Waits (up to 30 s) for ReplicaSet `shop/name` to satisfy `done`.
async fn wait_for_replica_set(
    h: &Harness,
    name: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let rs = h.get("apps/v1", "ReplicaSet", name).await;
        if done(&rs) {
            return rs;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "ReplicaSet {name}: no {what} after 30 s: {rs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Registers the web provider for `server`, deploys `shop/checkout` with
/// [`ANALYSIS_STEPS`] on Istio and starts its update to `app:2`: returns
/// the status after the first deploy.
async fn analysis_canary(h: &Harness, server: &ScriptedServer) -> RolloutStatus {
    let port = server.addr.port();
    h.apply(&registration(port, "")).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&analysis_template(port)).await;
    h.deploy_then_update("checkout", &istio_routing("checkout"), ANALYSIS_STEPS)
        .await
}

/// `shop/checkout`'s VirtualService and the destinations of its first route.
async fn checkout_routes(h: &Harness) -> (serde_json::Value, Vec<serde_json::Value>) {
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    let routes = vs["spec"]["http"][0]["route"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (vs, routes)
}

/// Waits for `shop/checkout`'s experiment to run with weighted destinations.
async fn experiment_running(h: &Harness) -> RolloutStatus {
    h.wait("checkout", 30, "experiment running", |s| {
        s.canary.current_experiment.is_some()
            && s.canary
                .weights
                .as_ref()
                .is_some_and(|w| !w.additional.is_empty())
    })
    .await
}

fn hash_of(rs: &serde_json::Value) -> String {
    rs["metadata"]["labels"][HASH_LABEL]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_with_a_passing_analysis_reaches_healthy_on_the_new_version() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.99}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let v1 = analysis_canary(&h, &server).await;
    let v1_hash = v1.stable_rs.clone().expect("stable");

    let done = h
        .wait("checkout", 30, "v2 Healthy", |s| {
            s.phase.as_deref() == Some("Healthy")
                && s.stable_rs.as_deref() != Some(v1_hash.as_str())
        })
        .await;
    let v2_hash = done.stable_rs.clone().expect("stable");
    assert_eq!(done.current_pod_hash.as_deref(), Some(v2_hash.as_str()));
    assert_eq!(done.step_index(), 4, "every step done");

    // All traffic on the stable Service, which now selects the new pods.
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (100, 0));
    let stable_svc = h.get("v1", "Service", "checkout-stable").await;
    assert_eq!(stable_svc["spec"]["selector"][HASH_LABEL], v2_hash.as_str());
    // The new ReplicaSet is full; the old one keeps its pods for Argo's
    // default scale-down delay (30 s with traffic routing), marked with
    // its deadline and listed on the new stable.
    let old = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{v1_hash}"))
        .await;
    let new = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{v2_hash}"))
        .await;
    assert_eq!(new["spec"]["replicas"], 4);
    assert_eq!(hash_of(&new), v2_hash);
    assert_eq!(old["spec"]["replicas"], 4, "kept for the scale-down delay");
    let ahead = seconds_until_scale_down(&old);
    assert!((25..=31).contains(&ahead), "deadline {ahead}s ahead: {old}");
    // Listed with the same deadline, so a pass need not read it.
    let deadline = old["metadata"]["annotations"][SCALE_DOWN_DEADLINE]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        new["metadata"]["annotations"][RETIRING],
        format!("{v1_hash}@{deadline}").as_str(),
        "{new}"
    );
    // The analysis ran against the loopback server and passed.
    let run = h
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("checkout-{v2_hash}-1"),
        )
        .await;
    assert_eq!(run["status"]["phase"], "Successful");
    assert!(server.hits.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert!(
        h.metrics.render().contains(
            r#"weir_plugin_calls_total{plugin="istio",method="set-weight",outcome="ok"}"#
        )
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_analysis_aborts_and_sends_all_traffic_back_to_stable() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.40}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let v1 = analysis_canary(&h, &server).await;

    let aborted = h
        .wait("checkout", 30, "aborted", |s| {
            s.abort && s.phase.as_deref() == Some("Degraded")
        })
        .await;
    let message = aborted.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("RolloutAborted") && message.contains("Failed"),
        "{message}"
    );
    assert_eq!(aborted.stable_rs, v1.stable_rs, "stable is unchanged");
    assert_eq!(
        aborted.step_index(),
        0,
        "as Argo, an aborted update goes back to its first step"
    );
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (100, 0), "all traffic back to stable");
    // The canary keeps its pods for Argo's default abort delay (30 s),
    // counted from when the stable can take all the traffic again.
    let canary = aborted.current_pod_hash.clone().expect("canary hash");
    let canary_rs = wait_for_replica_set(&h, &format!("checkout-{canary}"), "a deadline", |rs| {
        rs["metadata"]["annotations"][SCALE_DOWN_DEADLINE].is_string()
    })
    .await;
    assert_eq!(canary_rs["spec"]["replicas"], 1, "kept for the abort delay");
    let ahead = seconds_until_scale_down(&canary_rs);
    assert!((25..=31).contains(&ahead), "deadline {ahead}s ahead");
    let stable_rs = h
        .get(
            "apps/v1",
            "ReplicaSet",
            &format!("checkout-{}", v1.stable_rs.unwrap_or_default()),
        )
        .await;
    assert_eq!(stable_rs["spec"]["replicas"], 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_without_duration_waits_for_promote() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let steps = "        - setWeight: 30\n        - pause: {}\n        - setWeight: 60";
    h.deploy_then_update("checkout", &istio_routing("checkout"), steps)
        .await;

    let paused = h
        .wait("checkout", 30, "paused", |s| {
            s.phase.as_deref() == Some("Paused")
        })
        .await;
    assert_eq!(paused.step_index(), 1);
    assert_eq!(paused.pause_conditions[0].reason, "CanaryPauseStep");
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (70, 30));
    // It stays paused: several resyncs and reconciles later, nothing moved.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(h.status("checkout").await.phase.as_deref(), Some("Paused"));

    let done = act(h.cluster.as_ref(), "shop", "checkout", Action::Promote)
        .await
        .expect("promote");
    assert!(done.contains("pause is over"), "{done}");
    let healthy = h
        .wait("checkout", 30, "promoted to Healthy", |s| {
            s.phase.as_deref() == Some("Healthy") && s.current_pod_hash == s.stable_rs
        })
        .await;
    assert_eq!(healthy.step_index(), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_router_degrades_its_rollout_with_a_typed_error_while_another_completes() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let faulty = plugins_dir().join("weir_plugin_faulty.wasm");
    let routers = format!(
        "    - name: acme/faulty\n      location: file://{}\n      limits: {{timeoutMs: 300}}",
        faulty.display()
    );
    let registration = registration(1, "").replace("    []\n", &format!("{routers}\n"));
    h.apply(&registration).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&istio_objects("payments")).await;
    let steps = "        - setWeight: 50\n        - pause: {duration: 0s}";
    let faulty_routing = "        plugins:\n          acme/faulty: {fault: loop}";
    h.apply(&rollout("payments", "pay:1", faulty_routing, steps))
        .await;
    h.deploy_then_update("checkout", &istio_routing("checkout"), steps)
        .await;

    let degraded = h
        .wait("payments", 30, "Degraded by the plugin", |s| {
            s.phase.as_deref() == Some("Degraded")
        })
        .await;
    let condition = degraded
        .condition("PluginFailed")
        .expect("PluginFailed condition");
    // Named in the message on any CRD (Argo's prunes the `plugin` and
    // `call` fields Weir's keeps).
    assert!(
        condition
            .message
            .starts_with("plugin acme/faulty: update-hash: "),
        "{}",
        condition.message
    );
    assert_eq!(condition.reason, "Timeout");
    assert!(
        condition.message.contains("timeoutMs"),
        "{}",
        condition.message
    );
    let healthy = h
        .wait("checkout", 30, "checkout completes", |s| {
            s.phase.as_deref() == Some("Healthy")
                && s.current_pod_hash == s.stable_rs
                && s.step_index() == 2
        })
        .await;
    assert!(healthy.condition("PluginFailed").is_none());
    let metrics = h.metrics.render();
    assert!(
        metrics.contains(r#"weir_plugin_faults_total{plugin="acme/faulty",kind="timeout"}"#),
        "{metrics}"
    );
    h.stop().await;
}

/// The seed case through the controller: Argo Rollouts 1.6.6 crashed in
/// `calculateWeightDestinationsFromExperiment` on an experiment template
/// without a weight. Here the unweighted template gets no traffic, the
/// weighted one does, and the rollout completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calculate_weight_destinations_from_experiment_unweighted_template_keeps_the_rollout_progressing()
 {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let steps = "        - setWeight: 20
        - experiment:
            duration: 1s
            templates:
              - {name: baseline, specRef: stable}
              - {name: candidate, specRef: canary, weight: 10}
        - setWeight: 60";
    h.deploy_then_update("checkout", &istio_routing("checkout"), steps)
        .await;

    let running = experiment_running(&h).await;
    let weights = running.canary.weights.clone().expect("weights");
    assert_eq!(
        weights.additional.len(),
        1,
        "only the weighted template: {weights:?}"
    );
    assert_eq!(weights.additional[0].weight, 10);
    assert_eq!(weights.canary.weight, 20);
    assert_eq!(weights.stable.weight, 70);
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    let hosts: Vec<_> = vs["spec"]["http"][0]["route"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|d| d["destination"]["host"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        hosts.iter().any(|h| h.ends_with("-candidate"))
            && !hosts.iter().any(|h| h.ends_with("-baseline")),
        "{hosts:?}"
    );
    let done = h
        .wait("checkout", 30, "completes after the experiment", |s| {
            s.phase.as_deref() == Some("Healthy") && s.current_pod_hash == s.stable_rs
        })
        .await;
    assert!(done.canary.current_experiment.is_none());
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(
        vs["spec"]["http"][0]["route"].as_array().map(Vec::len),
        Some(2),
        "experiment route removed"
    );
    h.stop().await;
}

/// Panics for one rollout, delegates the others to the real reconciler.
struct PanicsFor {
    name: &'static str,
    real: Arc<dyn Reconcile>,
}

#[async_trait::async_trait]
impl Reconcile for PanicsFor {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Outcome>, ClusterError> {
        if key.name == self.name {
            panic!("deliberate panic in the reconcile of {}", key.name);
        }
        self.real.reconcile(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_rollouts_reconcile_is_recorded_there_and_the_others_go_on() {
    let backend = Backend::from_env();
    let cluster = backend.controller_cluster();
    let assembled = assemble(cluster.clone(), config()).await.expect("assemble");
    let real: Arc<dyn Reconcile> = assembled.reconciler.clone();
    let h = Harness::on_assembled(
        &backend,
        cluster,
        assembled,
        Some(Arc::new(PanicsFor { name: "boom", real })),
    )
    .await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&istio_objects("boom")).await;
    let steps = "        - setWeight: 50";
    h.apply(&rollout("boom", "b:1", &istio_routing("boom"), steps))
        .await;
    h.apply(&rollout(
        "checkout",
        "app:1",
        &istio_routing("checkout"),
        steps,
    ))
    .await;
    let boom = h
        .wait("boom", 30, "the panic recorded", |s| {
            s.condition("ReconcileFailed").is_some()
        })
        .await;
    assert_eq!(boom.phase.as_deref(), Some("Degraded"));
    let c = boom.condition("ReconcileFailed").expect("condition");
    assert!(c.message.contains("deliberate panic"), "{}", c.message);
    h.apply(&rollout(
        "checkout",
        "app:2",
        &istio_routing("checkout"),
        steps,
    ))
    .await;
    h.wait("checkout", 30, "the other rollout completes", |s| {
        s.phase.as_deref() == Some("Healthy")
            && s.current_pod_hash == s.stable_rs
            && s.step_index() == 1
    })
    .await;
    assert!(
        h.metrics
            .render()
            .contains(r#"weir_reconciles_total{outcome="panic"}"#)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_change_is_picked_up_without_a_restart() {
    let backend = Backend::from_env();
    // On Kubernetes the plugin's grant needs a rule in Weir's ClusterRole too.
    backend.grant("", &["configmaps"], &["get", "create", "update"]);
    let h = Harness::on(&backend).await;
    let faulty = plugins_dir().join("weir_plugin_faulty.wasm");
    let register = |args: &str| {
        registration(1, "").replace(
            "    []\n",
            &format!(
                "    - name: acme/router\n      location: file://{}\n      args: [{args}]\n      grant: {{write: [{{kind: ConfigMap}}]}}\n",
                faulty.display()
            ),
        )
    };
    h.apply(&register("fail-init")).await;
    h.apply(&istio_objects("checkout")).await;
    let routing = "        plugins:\n          acme/router: {}";
    h.apply(&rollout(
        "checkout",
        "app:1",
        routing,
        "        - setWeight: 50",
    ))
    .await;
    let degraded = h
        .wait("checkout", 30, "load failure reported", |s| {
            s.condition("PluginFailed").is_some()
        })
        .await;
    let c = degraded.condition("PluginFailed").expect("condition");
    assert_eq!(c.reason, "LoadFailed");
    assert!(
        c.message.starts_with("plugin acme/router: load: "),
        "{}",
        c.message
    );
    assert!(c.message.contains("fail-init"), "{}", c.message);

    // Fix the registration: the controller reloads the plugin and goes on.
    h.apply(&register("")).await;
    let healthy = h
        .wait("checkout", 30, "Healthy after the fix", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await;
    assert!(healthy.condition("PluginFailed").is_none());
    // The reloaded plugin did its work: it records weights in a ConfigMap.
    let weights = h.get("v1", "ConfigMap", "checkout-weights").await;
    assert_eq!(weights["data"]["canary"], "0");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_rollout_is_degraded_with_the_field_named_and_others_go_on() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&rollout(
        "checkout",
        "app:1",
        &istio_routing("checkout"),
        "        - setWieght: 50",
    ))
    .await;
    let s = h
        .wait("checkout", 30, "InvalidSpec", |s| {
            s.condition("InvalidSpec").is_some()
        })
        .await;
    assert_eq!(s.phase.as_deref(), Some("Degraded"));
    let message = &s.condition("InvalidSpec").expect("condition").message;
    assert!(
        message.contains("steps[0]") && message.contains("setWieght"),
        "{message}"
    );
    h.stop().await;
}

/// An SMI weight: a number, or a Kubernetes quantity string (v1alpha1).
fn quantity(v: &serde_json::Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_get_every_weight_canary_scale_holds_then_a_full_promote() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let routing = format!("{}\n        smi: {{}}", istio_routing("checkout"));
    let steps = "        - setCanaryScale: {replicas: 1}
        - setWeight: 40
        - pause: {}
        - setWeight: 70";
    h.deploy_then_update("checkout", &routing, steps).await;

    let paused = h
        .wait("checkout", 30, "paused", |s| {
            s.phase.as_deref() == Some("Paused")
        })
        .await;
    assert_eq!(paused.step_index(), 2);
    // setCanaryScale holds the canary at one replica whatever its weight.
    let canary = paused.current_pod_hash.clone().expect("canary");
    let rs = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{canary}"))
        .await;
    assert_eq!(rs["spec"]["replicas"], 1);
    // Both routers got the weight.
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (60, 40));
    let split = h
        .get("split.smi-spec.io/v1alpha2", "TrafficSplit", "checkout")
        .await;
    let weight_of = |service: &str| {
        split["spec"]["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .find(|b| b["service"] == service)
            .and_then(|b| quantity(&b["weight"]))
    };
    assert_eq!(weight_of("checkout-canary"), Some(40));
    assert_eq!(weight_of("checkout-stable"), Some(60));

    act(h.cluster.as_ref(), "shop", "checkout", Action::PromoteFull)
        .await
        .expect("full promote");
    let done = h
        .wait("checkout", 30, "fully promoted", |s| {
            s.phase.as_deref() == Some("Healthy") && s.current_pod_hash == s.stable_rs
        })
        .await;
    assert!(!done.promote_full, "the request is consumed");
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (100, 0));
    let split = h
        .get("split.smi-spec.io/v1alpha2", "TrafficSplit", "checkout")
        .await;
    let canary_weight = split["spec"]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["service"] == "checkout-canary")
        .and_then(|b| quantity(&b["weight"]));
    assert_eq!(canary_weight, Some(0));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_route_step_reaches_the_virtual_service_and_is_removed_at_promotion() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let routing = format!(
        "{}\n        managedRoutes: [{{name: canary-header}}]",
        istio_routing("checkout")
    );
    let steps = "        - setWeight: 20
        - setHeaderRoute:
            name: canary-header
            match: [{headerName: x-canary, headerValue: {exact: \"yes\"}}]
        - pause: {}";
    h.deploy_then_update("checkout", &routing, steps).await;

    h.wait("checkout", 30, "paused after the header route", |s| {
        s.phase.as_deref() == Some("Paused")
    })
    .await;
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    let http = vs["spec"]["http"].as_array().expect("http");
    assert_eq!(http[0]["name"], "canary-header", "{vs}");
    assert_eq!(http[0]["match"][0]["headers"]["x-canary"]["exact"], "yes");
    act(h.cluster.as_ref(), "shop", "checkout", Action::Promote)
        .await
        .expect("promote");
    h.wait("checkout", 30, "promoted", |s| {
        s.phase.as_deref() == Some("Healthy") && s.current_pod_hash == s.stable_rs
    })
    .await;
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    let names: Vec<_> = vs["spec"]["http"]
        .as_array()
        .expect("http")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, vec!["primary".to_string()], "managed routes removed");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_preloads_every_shipped_and_registered_plugin() {
    let backend = Backend::from_env();
    let broken = "    - name: acme/broken\n      location: file:///nonexistent/broken.wasm";
    weir_e2e::controller::apply(
        backend.cluster().as_ref(),
        &registration(1, "").replace("    []\n", &format!("{broken}\n")),
    )
    .await;
    let assembled = assemble(backend.controller_cluster(), config())
        .await
        .expect("assemble");
    let (loaded, failures) = assembled.registry.preload().await;
    assert_eq!(
        loaded, 13,
        "istio, nginx, smi, prometheus, web, job, datadog, newRelic, influxdb, cloudWatch, graphite, gatewayAPI, http-gate"
    );
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "acme/broken");
    assert!(
        failures[0].1.contains("/nonexistent/broken.wasm"),
        "{}",
        failures[0].1
    );
    // Loaded means ready: a router answers at once.
    let router = assembled.registry.router("istio").await.expect("istio");
    assert_eq!(router.info().name, "istio");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_basic_canary_gives_the_stable_all_its_replicas_back() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&istio_objects("checkout")).await;
    // No traffic routing: the canary's weight is its share of the replicas.
    let basic = rollout(
        "checkout",
        "app:1",
        "",
        "        - setWeight: 50\n        - pause: {}",
    )
    .replace("      trafficRouting:\n\n", "");
    h.apply(&basic).await;
    let v1 = h
        .wait("checkout", 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await
        .stable_rs
        .expect("stable");
    h.apply(&basic.replace("app:1", "app:2")).await;
    h.wait("checkout", 30, "paused at 50%", |s| {
        s.phase.as_deref() == Some("Paused")
    })
    .await;
    let stable = format!("checkout-{v1}");
    assert_eq!(
        h.get("apps/v1", "ReplicaSet", &stable).await["spec"]["replicas"],
        2,
        "half the replicas went to the canary"
    );
    act(h.cluster.as_ref(), "shop", "checkout", Action::Abort)
        .await
        .expect("abort");
    h.wait("checkout", 30, "aborted", |s| {
        s.phase.as_deref() == Some("Degraded") && s.abort
    })
    .await;
    assert_eq!(
        h.get("apps/v1", "ReplicaSet", &stable).await["spec"]["replicas"],
        4,
        "the stable is back at full size"
    );
    h.stop().await;
}

/// `rollout(...)` with `annotation` on its pod template and a progress
/// deadline of `deadline_seconds` that aborts.
fn with_readiness(yaml: &str, readiness: &str, deadline_seconds: u32) -> String {
    yaml.replace(
        "    metadata: {labels: {app: checkout}}\n    spec:",
        &format!(
            "    metadata: {{labels: {{app: checkout}}, annotations: {{weir.dev/simulated-readiness: \"{readiness}\"}}}}\n    spec:"
        ),
    )
    .replace(
        "spec:\n  replicas: 4\n",
        &format!("spec:\n  replicas: 4\n  progressDeadlineSeconds: {deadline_seconds}\n  progressDeadlineAbort: true\n"),
    )
}

/// Registers the plugins, deploys `checkout` (image `app:1`, Istio
/// routing, `steps`) and waits for its first deploy: returns the manifest
/// and the stable hash.
async fn deploy_checkout(h: &Harness, steps: &str) -> (String, String) {
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let v1 = rollout("checkout", "app:1", &istio_routing("checkout"), steps);
    h.apply(&v1).await;
    let first = h
        .wait("checkout", 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await
        .stable_rs
        .expect("stable");
    (v1, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_pods_never_become_available_gets_no_traffic_and_aborts_at_its_deadline() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let (v1, first) = deploy_checkout(&h, "        - setWeight: 50\n        - pause: {}").await;
    // Version 2's image never starts.
    let v2 = with_readiness(&v1.replace("app:1", "app:2"), "never", 3);
    assert!(
        v2.contains("never") && v2.contains("progressDeadlineSeconds"),
        "{v2}"
    );
    h.apply(&v2).await;
    let waiting = h
        .wait("checkout", 30, "waiting for the canary's pods", |s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("waiting for ReplicaSet"))
        })
        .await;
    println!("readiness row: {:?}", waiting.message);
    // No traffic moves to pods that are not available.
    for _ in 0..10 {
        let vs = h
            .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
            .await;
        assert_eq!(primary_weights(&vs), (100, 0), "no weight to unready pods");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let aborted = h
        .wait("checkout", 30, "aborted at the progress deadline", |s| {
            s.abort && s.phase.as_deref() == Some("Degraded")
        })
        .await;
    println!("readiness row: {:?}", aborted.message);
    assert!(
        aborted
            .message
            .as_deref()
            .is_some_and(|m| m.contains("ProgressDeadlineExceeded")),
        "{:?}",
        aborted.message
    );
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (100, 0));
    assert_eq!(
        h.get("apps/v1", "ReplicaSet", &format!("checkout-{first}"))
            .await["spec"]["replicas"],
        4
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_and_promotion_wait_for_pods_that_take_time_to_start() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let (v1, first) = deploy_checkout(&h, "        - setWeight: 50").await;
    // Version 2's pods are ready two seconds after each scaling.
    let started = std::time::Instant::now();
    h.apply(&with_readiness(&v1.replace("app:1", "app:2"), "2s", 600))
        .await;
    let mut first_weight = None;
    loop {
        let vs = h
            .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
            .await;
        if primary_weights(&vs).1 > 0 && first_weight.is_none() {
            first_weight = Some(started.elapsed());
        }
        let s = h.status("checkout").await;
        if s.phase.as_deref() == Some("Healthy") && s.stable_rs.as_deref() != Some(first.as_str()) {
            break;
        }
        // Until promoted, the old pods stay.
        let old = h
            .get("apps/v1", "ReplicaSet", &format!("checkout-{first}"))
            .await;
        assert_eq!(
            old["spec"]["replicas"], 4,
            "old pods kept until the new are available"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{s:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let first_weight = first_weight.expect("the canary got weight");
    println!(
        "readiness row: canary weight after {first_weight:?}, promoted after {:?}",
        started.elapsed()
    );
    assert!(
        first_weight >= std::time::Duration::from_millis(1900),
        "no weight before the canary's pods were ready: {first_weight:?}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(3800),
        "promotion waited for the full-size ReplicaSet to be ready"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_revisions_beyond_the_revision_history_limit_are_deleted() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let steps = "        - setWeight: 50\n        - pause: {duration: 0s}";
    let with_limit = |image: &str| {
        with_canary_fields(
            &rollout("checkout", image, &istio_routing("checkout"), steps),
            "scaleDownDelaySeconds: 0",
        )
        .replace(
            "  replicas: 4\n",
            "  replicas: 4\n  revisionHistoryLimit: 1\n",
        )
    };
    let mut hashes = Vec::new();
    for image in ["app:1", "app:2", "app:3"] {
        h.apply(&with_limit(image)).await;
        let done = h
            .wait("checkout", 30, &format!("{image} Healthy"), |s| {
                s.phase.as_deref() == Some("Healthy")
                    && s.stable_rs.is_some()
                    && !hashes.contains(s.stable_rs.as_ref().expect("stable"))
            })
            .await;
        hashes.push(done.stable_rs.expect("stable"));
    }
    // The stable and one old revision stay; the oldest is gone.
    let replica_sets: Vec<String> = h
        .cluster
        .list("apps", "ReplicaSet", "shop", &[])
        .await
        .expect("list")
        .iter()
        .map(hash_of)
        .collect();
    let mut expected = vec![hashes[1].clone(), hashes[2].clone()];
    expected.sort();
    let mut found = replica_sets.clone();
    found.sort();
    assert_eq!(found, expected, "kept {replica_sets:?} of {hashes:?}");
    // Numbered as Argo numbers them, which is what the order follows.
    let newest = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{}", hashes[2]))
        .await;
    assert_eq!(
        newest["metadata"]["annotations"]["rollout.argoproj.io/revision"],
        "3"
    );
    h.stop().await;
}

/// `yaml` (from `rollout(...)`) with `fields` (one line of YAML) added
/// to `spec.strategy.canary`.
fn with_canary_fields(yaml: &str, fields: &str) -> String {
    yaml.replace("    canary:\n", &format!("    canary:\n      {fields}\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_pods_stay_for_the_scale_down_delay_and_an_interrupted_canary_gives_its_traffic_back_first()
 {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let manifest = |image: &str, steps: &str| {
        with_canary_fields(
            &rollout("checkout", image, &istio_routing("checkout"), steps),
            "scaleDownDelaySeconds: 2",
        )
    };
    let quick = "        - setWeight: 50\n        - pause: {duration: 0s}";
    h.apply(&manifest("app:1", quick)).await;
    let v1 = h
        .wait("checkout", 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await
        .stable_rs
        .expect("stable");
    h.apply(&manifest("app:2", quick)).await;
    let v2 = h
        .wait("checkout", 30, "v2 Healthy", |s| {
            s.phase.as_deref() == Some("Healthy") && s.stable_rs.as_deref() != Some(v1.as_str())
        })
        .await
        .stable_rs
        .expect("stable");
    let promoted = std::time::Instant::now();
    let old_name = format!("checkout-{v1}");
    let old = h.get("apps/v1", "ReplicaSet", &old_name).await;
    assert_eq!(old["spec"]["replicas"], 4, "old pods kept at promotion");
    wait_for_replica_set(&h, &old_name, "scale-down", |rs| {
        rs["spec"]["replicas"] == 0
    })
    .await;
    let kept = promoted.elapsed();
    println!("scale-down delay row: 2 s delay, old pods went {kept:?} after Healthy was seen");
    assert!(
        kept >= std::time::Duration::from_millis(900),
        "scaled down before its deadline: {kept:?}"
    );
    // Nothing is left retiring (the mark is cleared by the pass after the
    // scale-down, a separate write: wait for it).
    wait_for_replica_set(
        &h,
        &format!("checkout-{v2}"),
        "retiring mark cleared",
        |rs| rs["metadata"]["annotations"][RETIRING].is_null(),
    )
    .await;

    // Version 3 gets half the traffic and pauses; version 4 (whose pods
    // never start) interrupts it.
    let held = "        - setWeight: 50\n        - pause: {}";
    h.apply(&manifest("app:3", held)).await;
    let v3 = h
        .wait("checkout", 30, "v3 paused at 50%", |s| {
            s.phase.as_deref() == Some("Paused")
        })
        .await
        .current_pod_hash
        .expect("canary");
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (50, 50));
    let v4_manifest = manifest("app:4", held).replace(
        "    metadata: {labels: {app: checkout}}\n    spec:",
        "    metadata: {labels: {app: checkout}, annotations: {weir.dev/simulated-readiness: never}}\n    spec:",
    );
    assert!(v4_manifest.contains("never"), "{v4_manifest}");
    h.apply(&v4_manifest).await;
    let interrupted = std::time::Instant::now();
    let v4 = h
        .wait("checkout", 30, "v4 started", |s| {
            s.current_pod_hash.as_deref().is_some_and(|c| c != v3)
        })
        .await
        .current_pod_hash
        .expect("canary");
    // The canary Service now selects version 4's pods, which are not
    // ready: the weight went back to the stable before it moved.
    let canary_svc = h.get("v1", "Service", "checkout-canary").await;
    assert_eq!(canary_svc["spec"]["selector"][HASH_LABEL], v4.as_str());
    for _ in 0..10 {
        let vs = h
            .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
            .await;
        assert_eq!(
            primary_weights(&vs),
            (100, 0),
            "no weight to v4's unready pods"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Version 3's pods, which had half the traffic, stay for the delay.
    let v3_name = format!("checkout-{v3}");
    let v3_rs = h.get("apps/v1", "ReplicaSet", &v3_name).await;
    if interrupted.elapsed() < std::time::Duration::from_millis(900) {
        assert_eq!(v3_rs["spec"]["replicas"], 2, "{v3_rs}");
    }
    assert!(
        v3_rs["metadata"]["annotations"][SCALE_DOWN_DEADLINE].is_string(),
        "{v3_rs}"
    );
    wait_for_replica_set(&h, &v3_name, "scale-down", |rs| rs["spec"]["replicas"] == 0).await;
    println!(
        "scale-down delay row: interrupted canary's pods went {:?} after the new revision",
        interrupted.elapsed()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_down_delay_revision_limit_keeps_only_the_newest_old_revisions() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let steps = "        - setWeight: 50\n        - pause: {duration: 0s}";
    let manifest = |image: &str| {
        with_canary_fields(
            &rollout("checkout", image, &istio_routing("checkout"), steps),
            "scaleDownDelayRevisionLimit: 1",
        )
    };
    let mut hashes: Vec<String> = Vec::new();
    for image in ["app:1", "app:2", "app:3"] {
        h.apply(&manifest(image)).await;
        let done = h
            .wait("checkout", 30, &format!("{image} Healthy"), |s| {
                s.phase.as_deref() == Some("Healthy")
                    && s.stable_rs.as_ref().is_some_and(|h| !hashes.contains(h))
            })
            .await;
        hashes.push(done.stable_rs.expect("stable"));
    }
    // Within the 30 s default delay, only the newest old revision is up.
    let oldest = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{}", hashes[0]))
        .await;
    let previous = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{}", hashes[1]))
        .await;
    assert_eq!(oldest["spec"]["replicas"], 0, "over the limit: {oldest}");
    assert_eq!(previous["spec"]["replicas"], 4, "{previous}");
    assert!(seconds_until_scale_down(&previous) > 20);
    let stable = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{}", hashes[2]))
        .await;
    let listed = stable["metadata"]["annotations"][RETIRING]
        .as_str()
        .unwrap_or_default();
    assert!(
        listed.starts_with(&format!("{}@", hashes[1])) && !listed.contains(','),
        "only the previous revision is listed: {listed}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_canary_keeps_its_pods_with_an_abort_delay_of_zero_and_goes_after_a_set_one() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let held = "        - setWeight: 50\n        - pause: {}";
    let manifest = |image: &str, delay: u32| {
        with_canary_fields(
            &rollout("checkout", image, &istio_routing("checkout"), held),
            &format!("abortScaleDownDelaySeconds: {delay}"),
        )
    };
    h.apply(&manifest("app:1", 0)).await;
    h.wait("checkout", 30, "first deploy", |s| {
        s.phase.as_deref() == Some("Healthy")
    })
    .await;
    h.apply(&manifest("app:2", 0)).await;
    let canary = h
        .wait("checkout", 30, "paused at 50%", |s| {
            s.phase.as_deref() == Some("Paused")
        })
        .await
        .current_pod_hash
        .expect("canary");
    act(h.cluster.as_ref(), "shop", "checkout", Action::Abort)
        .await
        .expect("abort");
    h.wait("checkout", 30, "aborted", |s| {
        s.phase.as_deref() == Some("Degraded") && s.abort
    })
    .await;
    // abortScaleDownDelaySeconds: 0 keeps the canary's pods (no traffic).
    let name = format!("checkout-{canary}");
    for _ in 0..15 {
        let rs = h.get("apps/v1", "ReplicaSet", &name).await;
        assert_eq!(rs["spec"]["replicas"], 2, "kept: {rs}");
        assert!(rs["metadata"]["annotations"][SCALE_DOWN_DEADLINE].is_null());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (100, 0));
    // A delay of one second set while aborted: the pods go after it.
    h.apply(&manifest("app:2", 1)).await;
    let set = std::time::Instant::now();
    wait_for_replica_set(&h, &name, "scale-down", |rs| rs["spec"]["replicas"] == 0).await;
    println!(
        "abort delay row: canary scaled down {:?} after a 1 s delay was set",
        set.elapsed()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_count_as_available_only_after_min_ready_seconds() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let manifest = |image: &str| {
        rollout(
            "checkout",
            image,
            &istio_routing("checkout"),
            "        - setWeight: 50\n        - pause: {}",
        )
        .replace("  replicas: 4\n", "  replicas: 4\n  minReadySeconds: 2\n")
    };
    let started = std::time::Instant::now();
    h.apply(&manifest("app:1")).await;
    let first = h
        .wait("checkout", 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await
        .stable_rs
        .expect("stable");
    let healthy_after = started.elapsed();
    let rs = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{first}"))
        .await;
    assert_eq!(rs["spec"]["minReadySeconds"], 2, "copied to the ReplicaSet");
    // Ready pods are not available before minReadySeconds (whole seconds
    // on Kubernetes: between one and two).
    assert!(
        healthy_after >= std::time::Duration::from_millis(900),
        "Healthy after {healthy_after:?}"
    );
    let updated = std::time::Instant::now();
    h.apply(&manifest("app:2")).await;
    loop {
        let vs = h
            .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
            .await;
        if primary_weights(&vs).1 > 0 {
            break;
        }
        assert!(
            updated.elapsed() < std::time::Duration::from_secs(30),
            "no weight"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let weighted_after = updated.elapsed();
    println!(
        "minReadySeconds row: 2 s; Healthy after {healthy_after:?}, canary weight after {weighted_after:?}"
    );
    assert!(
        weighted_after >= std::time::Duration::from_millis(900),
        "weight to pods not yet available: {weighted_after:?}"
    );
    h.stop().await;
}

/// A Service's selector hash.
async fn selected_hash(h: &Harness, service: &str) -> String {
    h.get("v1", "Service", service).await["spec"]["selector"][HASH_LABEL]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Puts in the store what Argo Rollouts leaves behind for a Healthy
/// `shop/checkout` it deployed from `manifest`: its ReplicaSet under Argo's
/// hash (the pod template as the API server stores it, with its defaults;
/// Argo's labels, annotations and owner reference; all pods available),
/// the Services selecting it, and the Rollout's status as Argo writes it.
async fn leave_what_argo_leaves(cluster: &dyn weir::cluster::Cluster, manifest: &str, hash: &str) {
    use serde_json::json;
    use weir::cluster::Write;
    weir_e2e::controller::apply(cluster, manifest).await;
    let rollout_key = ObjectKey::new("argoproj.io/v1alpha1", "Rollout", "shop", "checkout");
    let rollout = cluster.get(&rollout_key).await.expect("rollout");
    let labels = json!({"app": "checkout", HASH_LABEL: hash});
    let replica_set = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("checkout-{hash}"), "namespace": "shop", "labels": labels,
            "annotations": {"rollout.argoproj.io/revision": "3",
                            "rollout.argoproj.io/desired-replicas": "4"},
            "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                                 "name": "checkout", "uid": rollout["metadata"]["uid"],
                                 "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": labels},
                "spec": {
                    "containers": [{"name": "app", "image": "app:1", "imagePullPolicy": "IfNotPresent",
                                    "resources": {}, "terminationMessagePath": "/dev/termination-log",
                                    "terminationMessagePolicy": "File"}],
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                    "schedulerName": "default-scheduler", "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
        "status": {"replicas": 4, "readyReplicas": 4, "availableReplicas": 4},
    });
    cluster
        .apply(vec![Write::Create(replica_set)])
        .await
        .expect("Argo's ReplicaSet");
    for service in ["checkout-canary", "checkout-stable"] {
        let key = ObjectKey::new("v1", "Service", "shop", service);
        let mut svc = cluster.get(&key).await.expect("service");
        svc["spec"]["selector"][HASH_LABEL] = json!(hash);
        let expected_version = weir::cluster::resource_version(&svc).map(str::to_string);
        cluster
            .apply(vec![Write::Update {
                object: svc,
                expected_version,
            }])
            .await
            .expect("service selector");
    }
    let mut rollout = cluster.get(&rollout_key).await.expect("rollout");
    let weights = json!({
        "canary": {"podTemplateHash": hash, "serviceName": "checkout-canary", "weight": 0},
        "stable": {"podTemplateHash": hash, "serviceName": "checkout-stable", "weight": 100},
    });
    rollout["status"] = json!({
        "stableRS": hash, "currentPodHash": hash, "currentStepIndex": 2,
        "phase": "Healthy", "message": "", "observedGeneration": "1",
        "replicas": 4, "updatedReplicas": 4, "readyReplicas": 4, "availableReplicas": 4,
        "selector": format!("app=checkout,{HASH_LABEL}={hash}"),
        "canary": {"weights": weights},
        "conditions": [{"type": "Healthy", "status": "True", "reason": "RolloutHealthy",
                        "message": "Rollout is healthy",
                        "lastTransitionTime": "2026-11-01T00:00:00Z",
                        "lastUpdateTime": "2026-11-01T00:00:00Z"}],
    });
    let expected_version = weir::cluster::resource_version(&rollout).map(str::to_string);
    cluster
        .apply(vec![Write::Update {
            object: rollout,
            expected_version,
        }])
        .await
        .expect("Argo's status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_argo_deployed_is_taken_over_without_moving_anything_until_its_template_changes()
{
    let backend = Backend::from_env();
    let admin = backend.cluster();
    weir_e2e::controller::apply(admin.as_ref(), &registration(1, "")).await;
    weir_e2e::controller::apply(admin.as_ref(), &istio_objects("checkout")).await;
    let steps = "        - setWeight: 50\n        - pause: {}";
    let v1 = rollout("checkout", "app:1", &istio_routing("checkout"), steps);
    let argo = "6c9f8d7b5";
    leave_what_argo_leaves(admin.as_ref(), &v1, argo).await;
    let vs_key = ObjectKey::new(
        "networking.istio.io/v1beta1",
        "VirtualService",
        "shop",
        "checkout",
    );
    let vs_before = admin.get(&vs_key).await.expect("vs");

    let h = Harness::on(&backend).await;
    let taken = h
        .wait("checkout", 30, "Weir's first pass", |s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("fully promoted"))
        })
        .await;
    assert_eq!(taken.phase.as_deref(), Some("Healthy"));
    assert_eq!(
        taken.stable_rs.as_deref(),
        Some(argo),
        "Argo's ReplicaSet kept"
    );
    assert_eq!(taken.current_pod_hash.as_deref(), Some(argo));
    // A few more passes change nothing either.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let replica_sets = h
        .cluster
        .list("apps", "ReplicaSet", "shop", &[])
        .await
        .expect("list");
    let hashes: Vec<String> = replica_sets.iter().map(hash_of).collect();
    assert_eq!(hashes, vec![argo.to_string()], "no new ReplicaSet");
    assert_eq!(replica_sets[0]["spec"]["replicas"], 4);
    assert_eq!(selected_hash(&h, "checkout-stable").await, argo);
    assert_eq!(selected_hash(&h, "checkout-canary").await, argo);
    let vs = h.cluster.get(&vs_key).await.expect("vs");
    assert_eq!(primary_weights(&vs), (100, 0), "no traffic moved");
    assert_eq!(
        vs["spec"], vs_before["spec"],
        "the VirtualService is as Argo left it"
    );

    // A changed template is a new revision, run as a normal canary.
    h.apply(&v1.replace("app:1", "app:2")).await;
    let paused = h
        .wait("checkout", 30, "v2 paused at 50%", |s| {
            s.phase.as_deref() == Some("Paused")
        })
        .await;
    let v2 = paused.current_pod_hash.clone().expect("canary");
    assert_ne!(v2, argo);
    assert_eq!(paused.stable_rs.as_deref(), Some(argo));
    let vs = h.cluster.get(&vs_key).await.expect("vs");
    assert_eq!(primary_weights(&vs), (50, 50));
    let new = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{v2}"))
        .await;
    assert_eq!(
        new["metadata"]["annotations"]["rollout.argoproj.io/revision"], "4",
        "numbered after Argo's revision 3"
    );
    assert_eq!(
        h.get("apps/v1", "ReplicaSet", &format!("checkout-{argo}"))
            .await["spec"]["replicas"],
        4,
        "the stable keeps its pods"
    );
    h.stop().await;
}

/// Istio subset-level splitting: one host, a DestinationRule whose
/// `canary` / `stable` subsets the routes name, and no canary or stable
/// Service (Argo's `istio-subset-split` example).
fn istio_subset_objects() -> &'static str {
    r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: checkout, namespace: shop}
spec:
  hosts: [checkout]
  http:
    - name: primary
      route:
        - destination: {host: checkout, subset: stable}
          weight: 100
        - destination: {host: checkout, subset: canary}
          weight: 0
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: checkout, namespace: shop}
spec:
  host: checkout
  subsets:
    - name: canary
      labels: {app: checkout}
    - name: stable
      labels: {app: checkout}
"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_subset_level_splitting_needs_no_canary_or_stable_service() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(istio_subset_objects()).await;
    let routing = "        istio:\n          virtualService: {name: checkout, routes: [primary]}\n          destinationRule: {name: checkout, canarySubsetName: canary, stableSubsetName: stable}";
    let manifest = |image: &str| {
        rollout(
            "checkout",
            image,
            routing,
            "        - setWeight: 30\n        - pause: {}",
        )
        .replace("      canaryService: checkout-canary\n", "")
        .replace("      stableService: checkout-stable\n", "")
    };
    let v1 = manifest("app:1");
    assert!(
        !v1.contains("canaryService") && !v1.contains("stableService"),
        "{v1}"
    );
    h.apply(&v1).await;
    let stable = h
        .wait("checkout", 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await
        .stable_rs
        .expect("stable");
    h.apply(&manifest("app:2")).await;
    let paused = h
        .wait("checkout", 30, "paused at 30%", |s| {
            s.phase.as_deref() == Some("Paused")
        })
        .await;
    let canary = paused.current_pod_hash.clone().expect("canary");
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (70, 30));
    // The subsets select the two ReplicaSets' pods by hash.
    let dr = h
        .get("networking.istio.io/v1beta1", "DestinationRule", "checkout")
        .await;
    let subset = |name: &str| {
        dr["spec"]["subsets"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .map(|s| {
                s["labels"][HASH_LABEL]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    };
    assert_eq!(subset("canary"), canary, "{dr}");
    assert_eq!(subset("stable"), stable, "{dr}");
    act(h.cluster.as_ref(), "shop", "checkout", Action::Promote)
        .await
        .expect("promote");
    let done = h
        .wait("checkout", 30, "promoted", |s| {
            s.phase.as_deref() == Some("Healthy") && s.stable_rs.as_deref() == Some(canary.as_str())
        })
        .await;
    assert_eq!(done.stable_rs.as_deref(), Some(canary.as_str()));
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (100, 0));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiments_pods_are_its_own_and_its_analysis_gets_their_hashes() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.99}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let port = server.addr.port();
    h.apply(&registration(port, "")).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: hashes, namespace: shop}}
spec:
  args: [{{name: candidate-hash}}, {{name: baseline-rs}}, {{name: stable-hash}}]
  metrics:
    - name: reachable
      successCondition: result >= 0.95
      provider:
        web:
          url: "http://127.0.0.1:{port}/rate?c={{{{args.candidate-hash}}}}&s={{{{args.stable-hash}}}}"
          jsonPath: "{{$.rate}}"
"#
    ))
    .await;
    let steps = r#"        - setWeight: 20
        - experiment:
            duration: 1s
            templates:
              - {name: baseline, specRef: stable}
              - {name: candidate, specRef: canary, weight: 10}
            analyses:
              - name: compare
                templateName: hashes
                args:
                  - {name: candidate-hash, value: "{{templates.candidate.podTemplateHash}}"}
                  - {name: baseline-rs, value: "{{templates.baseline.replicaset.name}}"}
                  - name: stable-hash
                    valueFrom: {podTemplateHashValue: Stable}
        - pause: {}"#;
    let v1 = h
        .deploy_then_update("checkout", &istio_routing("checkout"), steps)
        .await;
    let stable = v1.stable_rs.clone().expect("stable");
    let running = h
        .wait("checkout", 30, "experiment running", |s| {
            s.canary.current_experiment.is_some()
        })
        .await;
    let experiment = running
        .canary
        .current_experiment
        .clone()
        .expect("experiment");
    let canary = running.current_pod_hash.clone().expect("canary");
    let candidate_rs = h
        .get("apps/v1", "ReplicaSet", &format!("{experiment}-candidate"))
        .await;
    let candidate = hash_of(&candidate_rs);
    assert!(
        !candidate.is_empty() && candidate != canary,
        "the experiment's own hash: {candidate} vs canary {canary}"
    );
    // The canary Service selects the canary's pods, the experiment's
    // Service its own: the 10% is a real split.
    assert_eq!(selected_hash(&h, "checkout-canary").await, canary);
    assert_eq!(
        selected_hash(&h, &format!("{experiment}-candidate")).await,
        candidate
    );
    h.wait("checkout", 30, "paused after the experiment", |s| {
        s.phase.as_deref() == Some("Paused")
    })
    .await;
    let run = h
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("{experiment}-compare"),
        )
        .await;
    let arg = |name: &str| {
        run["spec"]["args"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .map(|x| x["value"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(arg("candidate-hash"), candidate, "{run}");
    assert_eq!(arg("baseline-rs"), format!("{experiment}-baseline"));
    assert_eq!(arg("stable-hash"), stable);
    assert_eq!(run["status"]["phase"], "Successful", "{run}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_abort_runs_the_update_again_with_a_new_analysis_run() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.40}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let v1 = analysis_canary(&h, &server).await;
    let aborted = h
        .wait("checkout", 30, "aborted by the analysis", |s| {
            s.abort && s.phase.as_deref() == Some("Degraded")
        })
        .await;
    let canary = aborted.current_pod_hash.clone().expect("canary");
    let first_run = format!("checkout-{canary}-1");
    // Retrying an aborted rollout is what `kubectl argo rollouts retry`
    // writes: status.abort = false. The metric is healthy now.
    server.set(vec![Answer::json(r#"{"rate": 0.99}"#)]);
    let done = act(h.cluster.as_ref(), "shop", "checkout", Action::Retry)
        .await
        .expect("retry");
    assert!(done.contains("retried"), "{done}");
    let healthy = h
        .wait(
            "checkout",
            30,
            "Healthy on the new version after the retry",
            |s| {
                s.phase.as_deref() == Some("Healthy")
                    && s.stable_rs.as_deref() == Some(canary.as_str())
            },
        )
        .await;
    assert!(!healthy.abort);
    assert_ne!(healthy.stable_rs, v1.stable_rs);
    // The failed run is kept; the retry made its own, which passed.
    let failed = h
        .get("argoproj.io/v1alpha1", "AnalysisRun", &first_run)
        .await;
    assert_eq!(failed["status"]["phase"], "Failed");
    let retried = h
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("{first_run}.1"),
        )
        .await;
    assert_eq!(retried["status"]["phase"], "Successful", "{retried}");
    // Retrying what is not aborted is refused.
    let refused = act(h.cluster.as_ref(), "shop", "checkout", Action::Retry)
        .await
        .expect_err("not aborted");
    assert!(refused.to_string().contains("not aborted"), "{refused}");
    h.stop().await;
}

/// The creation times of Rollout `shop/checkout`'s pods, from the
/// simulated kubelet (the embedded store runs no pods: none).
fn pod_creation_times(backend: &Backend) -> Vec<chrono::DateTime<chrono::Utc>> {
    match backend {
        Backend::Embedded { .. } => Vec::new(),
        Backend::Simulated { server, .. } => server
            .objects("", "pods", "shop")
            .iter()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("checkout-"))
            })
            .map(|p| {
                let text = p["metadata"]["creationTimestamp"]
                    .as_str()
                    .expect("created");
                chrono::DateTime::parse_from_rfc3339(text)
                    .expect("RFC 3339")
                    .with_timezone(&chrono::Utc)
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_at_evicts_every_pod_older_than_it_then_records_restarted_at() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&istio_objects("checkout")).await;
    h.deploy(
        "checkout",
        &istio_routing("checkout"),
        "        - setWeight: 50",
    )
    .await;
    // Pod times are whole seconds: let the pods be strictly older.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = pod_creation_times(&backend);
    // A restart ahead of time does nothing until it comes.
    let later = chrono::Utc::now() + chrono::Duration::seconds(3);
    weir::controller::actions::restart(h.cluster.as_ref(), "shop", "checkout", later)
        .await
        .expect("restart later");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(h.status("checkout").await.restarted_at, None);
    assert_eq!(pod_creation_times(&backend), before, "no pod goes early");
    let at = later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let done = h
        .wait("checkout", 30, "restartedAt recorded", |s| {
            s.restarted_at.as_deref() == Some(at.as_str())
        })
        .await;
    assert_eq!(done.phase.as_deref(), Some("Healthy"));
    if let Backend::Simulated { server, .. } = &backend {
        assert_eq!(before.len(), 4, "four pods before");
        // Every pod was evicted (never deleted), and none is older now.
        assert_eq!(server.evictions().len(), 4, "{:?}", server.evictions());
        let after = pod_creation_times(&backend);
        assert_eq!(after.len(), 4);
        let at = chrono::DateTime::parse_from_rfc3339(&at).expect("at");
        assert!(after.iter().all(|t| *t >= at), "{after:?} vs {at}");
    }
    // Nothing more happens for the same restartAt.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    if let Backend::Simulated { server, .. } = &backend {
        assert_eq!(server.evictions().len(), 4);
    }
    h.stop().await;
}

/// The registration of the web provider for `port`, with `grant` (YAML).
fn web_registration(port: u16, grant: &str) -> String {
    registration_granting(port, grant, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_argument_needs_its_grant_then_reaches_the_provider_and_never_the_store() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.99}"#)]).await;
    let port = server.addr.port();
    let backend = Backend::from_env();
    // Reading Secrets is the operator's grant to Weir, not in
    // deploy/weir.yaml's least-privilege ClusterRole.
    backend.grant("", &["secrets"], &["get"]);
    let h = Harness::on(&backend).await;
    h.apply(&web_registration(port, "{}")).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: api-token, namespace: shop}}
type: Opaque
data: {{token: czNjcjN0LXQwa2Vu}}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: success-rate, namespace: shop}}
spec:
  args:
    - name: token
      valueFrom: {{secretKeyRef: {{name: api-token, key: token}}}}
  metrics:
    - name: success-rate
      interval: 200ms
      count: 2
      successCondition: result >= 0.95
      provider:
        web:
          url: "http://127.0.0.1:{port}/rate"
          headers: [{{key: Authorization, value: "Bearer {{{{args.token}}}}"}}]
          jsonPath: "{{$.rate}}"
"#
    ))
    .await;
    h.deploy_then_update("checkout", &istio_routing("checkout"), ANALYSIS_STEPS)
        .await;
    // Not granted: the run errors naming the setting, and the rollout aborts.
    let aborted = h
        .wait("checkout", 30, "aborted: the secret is not granted", |s| {
            s.abort
        })
        .await;
    let canary = aborted.current_pod_hash.clone().expect("canary");
    let run = h
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("checkout-{canary}-1"),
        )
        .await;
    assert_eq!(run["status"]["phase"], "Error", "{run}");
    let message = run["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("grant.secrets") && message.contains("api-token"),
        "{message}"
    );
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Granted, and retried: the provider sends it; the store never holds it.
    // The registration reaches the controller through its watch, so a
    // retry that raced it aborts again, with a new run; retry until then.
    h.apply(&web_registration(port, "{secrets: [api-token]}"))
        .await;
    let run_of = |s: &RolloutStatus| {
        s.canary
            .current_step_analysis_run_status
            .as_ref()
            .map(|r| r.name.clone())
    };
    let mut previous = run_of(&aborted);
    let mut healthy = false;
    for _ in 0..5 {
        act(h.cluster.as_ref(), "shop", "checkout", Action::Retry)
            .await
            .expect("retry");
        let settled = h
            .wait("checkout", 30, "the retry settles", |s| {
                (s.phase.as_deref() == Some("Healthy")
                    && s.stable_rs.as_deref() == Some(canary.as_str()))
                    || (s.abort && run_of(s).is_some() && run_of(s) != previous)
            })
            .await;
        if settled.phase.as_deref() == Some("Healthy") {
            healthy = true;
            break;
        }
        previous = run_of(&settled);
    }
    assert!(healthy, "Healthy once the grant is in force");
    let requests = server.requests.lock().expect("requests").clone();
    assert!(
        requests.iter().any(|r| r
            .to_ascii_lowercase()
            .contains("authorization: bearer s3cr3t-t0ken")),
        "{requests:?}"
    );
    let runs = h
        .cluster
        .list("argoproj.io", "AnalysisRun", "shop", &[])
        .await
        .expect("runs");
    assert!(runs.len() >= 2, "the failed run and the retried one");
    for run in runs {
        assert!(!run.to_string().contains("s3cr3t"), "{run}");
    }
    let rollout = h.get("argoproj.io/v1alpha1", "Rollout", "checkout").await;
    assert!(!rollout.to_string().contains("s3cr3t"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_past_a_running_experiment_gives_its_share_back_then_ends_it() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&istio_objects("checkout")).await;
    // No duration and no analysis: the experiment runs until the rollout
    // moves on.
    let steps = r#"        - setWeight: 20
        - experiment:
            templates:
              - {name: candidate, specRef: canary, weight: 10}
        - pause: {}"#;
    h.deploy_then_update("checkout", &istio_routing("checkout"), steps)
        .await;
    let running = experiment_running(&h).await;
    let experiment = running.canary.current_experiment.clone().expect("name");
    let (vs, routes) = checkout_routes(&h).await;
    assert_eq!(routes.len(), 3, "stable, canary and the experiment: {vs}");
    // promote: not paused, so the experiment step is skipped.
    act(h.cluster.as_ref(), "shop", "checkout", Action::Promote)
        .await
        .expect("promote");
    let moved = h
        .wait("checkout", 30, "paused past the experiment", |s| {
            s.current_step_index == Some(2) && s.canary.current_experiment.is_none()
        })
        .await;
    let weights = moved.canary.weights.clone().expect("weights");
    assert!(weights.additional.is_empty(), "{weights:?}");
    assert_eq!(weights.canary.weight, 20);
    let (vs, routes) = checkout_routes(&h).await;
    assert_eq!(routes.len(), 2, "the experiment's route is gone: {vs}");
    assert_eq!(primary_weights(&vs), (80, 20));
    // The experiment ended and its pods went.
    let ended = h
        .get("argoproj.io/v1alpha1", "Experiment", &experiment)
        .await;
    let phase = ended["status"]["phase"].as_str().unwrap_or_default();
    assert!(!matches!(phase, "Running" | "Pending"), "{ended}");
    let rs = h
        .get("apps/v1", "ReplicaSet", &format!("{experiment}-candidate"))
        .await;
    assert_eq!(rs["spec"]["replicas"], 0, "{rs}");
    h.stop().await;
}

/// A standalone AnalysisRun `shop/name` measuring `url` twice.
fn standalone_run(name: &str, url: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {{name: {name}, namespace: shop}}
spec:
  metrics:
    - name: success-rate
      interval: 200ms
      count: 2
      successCondition: result >= 0.95
      failureLimit: 0
      provider:
        web:
          url: "{url}"
          jsonPath: "{{$.rate}}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_run_created_directly_runs_to_its_verdict() {
    let good = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.99}"#)]).await;
    let bad = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.40}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: argo-rollouts-config, namespace: weir-system}
data:
  metricProviderPlugins: |
    - name: web
      http: {allowHosts: ["127.0.0.1"]}
"#,
    )
    .await;
    h.apply(&standalone_run(
        "smoke",
        &format!("http://{}/rate", good.addr),
    ))
    .await;
    h.apply(&standalone_run(
        "regression",
        &format!("http://{}/rate", bad.addr),
    ))
    .await;
    let verdict = |name: &'static str| {
        let h = &h;
        async move {
            let started = std::time::Instant::now();
            loop {
                let run = h.get("argoproj.io/v1alpha1", "AnalysisRun", name).await;
                let phase = run["status"]["phase"].as_str().unwrap_or("").to_string();
                if matches!(phase.as_str(), "Successful" | "Failed" | "Error") {
                    return run;
                }
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(30),
                    "{name} has no verdict after 30 s: {run}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let smoke = verdict("smoke").await;
    assert_eq!(smoke["status"]["phase"], "Successful", "{smoke}");
    assert_eq!(
        smoke["status"]["metricResults"][0]["measurements"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let regression = verdict("regression").await;
    assert_eq!(regression["status"]["phase"], "Failed", "{regression}");
    // Over is over: no more measurements once the verdict is in.
    let hits = good.hits.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(good.hits.load(std::sync::atomic::Ordering::SeqCst), hits);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_standalone_run_ends_it_with_what_it_measured() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"rate": 0.99}"#)]).await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&web_registration(server.addr.port(), "{}")).await;
    // Far more measurements than the test waits for.
    h.apply(
        &standalone_run("long", &format!("http://{}/rate", server.addr))
            .replace("count: 2", "count: 1000"),
    )
    .await;
    let started = std::time::Instant::now();
    while server.hits.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let done =
        weir::controller::actions::terminate_analysis_run(h.cluster.as_ref(), "shop", "long")
            .await
            .expect("terminate");
    assert!(done.contains("terminated"), "{done}");
    let run = loop {
        let run = h.get("argoproj.io/v1alpha1", "AnalysisRun", "long").await;
        if run["status"]["phase"] == "Successful" {
            break run;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "not ended by the terminate: {run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"]["message"], "Run Terminated", "{run}");
    let taken = run["status"]["metricResults"][0]["count"]
        .as_i64()
        .unwrap_or(0);
    assert!((2..1000).contains(&taken), "{taken} measurements");
    // Over is over: terminating again changes nothing.
    let again =
        weir::controller::actions::terminate_analysis_run(h.cluster.as_ref(), "shop", "long")
            .await
            .expect("terminate again");
    assert!(again.contains("over already"), "{again}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_within_the_rollback_window_skips_the_steps_and_one_outside_does_not() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&istio_objects("checkout")).await;
    let steps = "        - setWeight: 50\n        - pause: {}";
    let with_window = |image: &str| {
        rollout("checkout", image, &istio_routing("checkout"), steps).replace(
            "  strategy:",
            "  rollbackWindow: {revisions: 1}\n  strategy:",
        )
    };
    // A revision taken through its pause by a promote; creation times are
    // whole seconds, so each new ReplicaSet is made a second apart.
    let promoted = |image: &'static str, previous: String| {
        let h = &h;
        let manifest = with_window(image);
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            h.apply(&manifest).await;
            h.wait("checkout", 30, "paused at the first pause", |s| {
                s.current_step_index == Some(1) && !s.pause_conditions.is_empty()
            })
            .await;
            act(h.cluster.as_ref(), "shop", "checkout", Action::Promote)
                .await
                .expect("promote");
            h.wait("checkout", 30, "Healthy on the promoted revision", |s| {
                s.phase.as_deref() == Some("Healthy")
                    && s.stable_rs.as_deref().is_some_and(|h| h != previous)
            })
            .await
            .stable_rs
            .expect("stable")
        }
    };
    h.apply(&with_window("app:1")).await;
    let v1 = h
        .wait("checkout", 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await
        .stable_rs
        .expect("v1");
    let v2 = promoted("app:2", v1.clone()).await;
    // Back to app:1: no revision between it and the stable: no steps.
    h.apply(&with_window("app:1")).await;
    let back = h
        .wait("checkout", 30, "Healthy on v1 again", |s| {
            s.phase.as_deref() == Some("Healthy") && s.stable_rs.as_deref() == Some(v1.as_str())
        })
        .await;
    assert!(back.pause_conditions.is_empty());
    let v3 = promoted("app:3", v1.clone()).await;
    let _v4 = promoted("app:4", v3).await;
    // Back to app:2: app:3's ReplicaSet came between: outside a window of
    // one, so the steps run.
    h.apply(&with_window("app:2")).await;
    let paused = h
        .wait("checkout", 30, "a canary paused at its first pause", |s| {
            s.current_pod_hash.as_deref() == Some(v2.as_str())
                && s.current_step_index == Some(1)
                && !s.pause_conditions.is_empty()
        })
        .await;
    assert_eq!(paused.phase.as_deref(), Some("Paused"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pods_per_replica_set_gives_a_small_routed_canary_its_minimum() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&istio_objects("checkout")).await;
    let steps = "        - setWeight: 10\n        - pause: {}";
    let with_min = |image: &str| {
        rollout("checkout", image, &istio_routing("checkout"), steps).replace(
            "      canaryService:",
            "      minPodsPerReplicaSet: 2\n      canaryService:",
        )
    };
    h.apply(&with_min("app:1")).await;
    h.wait("checkout", 30, "first deploy", |s| {
        s.phase.as_deref() == Some("Healthy")
    })
    .await;
    h.apply(&with_min("app:2")).await;
    let paused = h
        .wait("checkout", 30, "paused at 10%", |s| {
            s.current_step_index == Some(1) && !s.pause_conditions.is_empty()
        })
        .await;
    let canary = paused.current_pod_hash.expect("canary");
    // 10% of 4 pods rounds up to 1; the minimum makes it 2.
    let rs = wait_for_replica_set(
        &h,
        &weir::controller::children::replica_set_name("checkout", &canary),
        "2 replicas",
        |rs| rs["spec"]["replicas"] == 2,
    )
    .await;
    assert_eq!(rs["spec"]["replicas"], 2);
    let (_, weight) = primary_weights(
        &h.get("networking.istio.io/v1beta1", "VirtualService", "checkout")
            .await,
    );
    assert_eq!(weight, 10, "the weight stays the step's");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_stable_scale_shrinks_the_stable_as_traffic_leaves_and_an_abort_waits_for_it() {
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1, "")).await;
    h.apply(&istio_objects("checkout")).await;
    let steps = "        - setWeight: 25\n        - pause: {}\n        - setWeight: 75\n        - pause: {}";
    // Pods take 1 s to start, so the abort below is seen while the stable's
    // grow back.
    let manifest = |image: &str| {
        with_readiness(
            &rollout("checkout", image, &istio_routing("checkout"), steps),
            "1s",
            600,
        )
        .replace("progressDeadlineAbort: true", "progressDeadlineAbort: false")
        .replace(
            "      canaryService:",
            "      dynamicStableScale: true\n      abortScaleDownDelaySeconds: 1\n      canaryService:",
        )
    };
    h.apply(&manifest("app:1")).await;
    let v1 = h
        .wait("checkout", 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await
        .stable_rs
        .expect("stable");
    h.apply(&manifest("app:2")).await;
    let stable_rs = format!("checkout-{v1}");
    let paused = h
        .wait("checkout", 30, "paused at 25", |s| {
            s.phase.as_deref() == Some("Paused") && s.step_index() == 1
        })
        .await;
    let v2 = paused.current_pod_hash.clone().expect("canary");
    // The stable keeps the pods for the 75 % it still gets: ⌈4 × 0.75⌉.
    wait_for_replica_set(&h, &stable_rs, "3 replicas", |rs| {
        rs["spec"]["replicas"] == 3
    })
    .await;
    act(h.cluster.as_ref(), "shop", "checkout", Action::Promote)
        .await
        .expect("promote");
    h.wait("checkout", 30, "paused at 75", |s| {
        s.phase.as_deref() == Some("Paused") && s.step_index() == 3
    })
    .await;
    wait_for_replica_set(&h, &stable_rs, "1 replica", |rs| {
        rs["spec"]["replicas"] == 1
    })
    .await;
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (25, 75));

    // Abort: the stable grows back first, and the canary keeps its traffic
    // (and its pods) until the stable's pods are available.
    act(h.cluster.as_ref(), "shop", "checkout", Action::Abort)
        .await
        .expect("abort");
    let grown = wait_for_replica_set(&h, &stable_rs, "4 replicas", |rs| {
        rs["spec"]["replicas"] == 4
    })
    .await;
    assert!(
        grown["status"]["availableReplicas"].as_i64().unwrap_or(0) < 4,
        "the stable's new pods take 1 s to start: {grown}"
    );
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert!(
        primary_weights(&vs).1 > 0,
        "traffic left the canary before the stable could take it: {vs}"
    );
    let canary = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{v2}"))
        .await;
    assert_eq!(canary["spec"]["replicas"], 3, "{canary}");
    h.wait("checkout", 30, "aborted with all traffic on stable", |s| {
        s.abort
            && s.canary
                .weights
                .as_ref()
                .is_some_and(|w| w.canary.weight == 0)
    })
    .await;
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (100, 0));
    wait_for_replica_set(&h, &format!("checkout-{v2}"), "canary gone", |rs| {
        rs["spec"]["replicas"] == 0
    })
    .await;
    h.stop().await;
}
