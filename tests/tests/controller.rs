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
use weir::controller::actions::{Action, act};
use weir::controller::children::HASH_LABEL;
use weir::controller::reconcile::Outcome;
use weir::controller::{Reconcile, assemble};
use weir_e2e::controller::{
    Backend, Harness, config, istio_objects, istio_routing, plugins_dir, primary_weights, rollout,
};
use weir_e2e::{Answer, ScriptedServer};

/// The registration ConfigMap: the web provider may reach `port` on
/// loopback; `extra_routers` is YAML list items for trafficRouterPlugins.
fn registration(port: u16, extra_routers: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: argo-rollouts-config, namespace: weir-system}}
data:
  metricProviderPlugins: |
    - name: web
      http: {{allowHosts: ["127.0.0.1:{port}"]}}
  trafficRouterPlugins: |
    []
{extra_routers}
"#
    )
}

fn analysis_template(port: u16) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: success-rate, namespace: shop}}
spec:
  metrics:
    - name: success-rate
      interval: 200ms
      count: 2
      successCondition: result >= 0.95
      failureLimit: 0
      provider:
        web:
          url: "http://127.0.0.1:{port}/rate"
          jsonPath: "{{$.rate}}"
"#
    )
}

const ANALYSIS_STEPS: &str = "        - setWeight: 25
        - analysis: {templates: [{templateName: success-rate}]}
        - setWeight: 75
        - pause: {duration: 0s}";

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
    let port = server.addr.port();
    h.apply(&registration(port, "")).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&analysis_template(port)).await;
    let v1 = h
        .deploy_then_update("checkout", &istio_routing("checkout"), ANALYSIS_STEPS)
        .await;
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
    // The old ReplicaSet is scaled down, the new one is full.
    let old = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{v1_hash}"))
        .await;
    let new = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{v2_hash}"))
        .await;
    assert_eq!(old["spec"]["replicas"], 0);
    assert_eq!(new["spec"]["replicas"], 4);
    assert_eq!(hash_of(&new), v2_hash);
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
    let port = server.addr.port();
    h.apply(&registration(port, "")).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&analysis_template(port)).await;
    let v1 = h
        .deploy_then_update("checkout", &istio_routing("checkout"), ANALYSIS_STEPS)
        .await;

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
    assert_eq!(aborted.step_index(), 1, "stopped at the analysis step");
    let vs = h
        .get("networking.istio.io/v1beta1", "VirtualService", "checkout")
        .await;
    assert_eq!(primary_weights(&vs), (100, 0), "all traffic back to stable");
    let canary = aborted.current_pod_hash.clone().expect("canary hash");
    let canary_rs = h
        .get("apps/v1", "ReplicaSet", &format!("checkout-{canary}"))
        .await;
    assert_eq!(canary_rs["spec"]["replicas"], 0, "canary scaled down");
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

    let running = h
        .wait("checkout", 30, "experiment running", |s| {
            s.canary.current_experiment.is_some()
                && s.canary
                    .weights
                    .as_ref()
                    .is_some_and(|w| !w.additional.is_empty())
        })
        .await;
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
    assert_eq!(loaded, 6, "istio, nginx, smi, prometheus, web, job");
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
        rollout("checkout", image, &istio_routing("checkout"), steps).replace(
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
