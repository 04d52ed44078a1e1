//! The contract's versioning promise, tested: components built against the
//! frozen `weir:plugin@0.1.0` (a Rust router with bindings generated from
//! that WIT, the Python provider built by componentize-py against it) load
//! and work on the host that serves 0.2.0, side by side with 0.2.0
//! components, down to a Rollout routed through a 0.1 and a 0.2 router at
//! once.

use serde_json::json;
use weir::cluster::{Cluster, ObjectKey};
use weir::plugin::{Contract, GrantedKind, MeasurementPhase, PluginKind, PluginSpec, Verification};
use weir_e2e::controller::{Backend, Harness, plugin_registration, plugins_dir, services};
use weir_e2e::{contract_metric, contract_run, faulty_spec, plugin_wasm, rollout, runtime};

fn compat_spec() -> PluginSpec {
    let mut spec = PluginSpec::new(
        "test/compat-v01",
        plugin_wasm("weir-plugin-compat-v01").display().to_string(),
    );
    spec.grant.write = vec![GrantedKind {
        group: String::new(),
        kind: "ConfigMap".into(),
    }];
    spec
}

#[tokio::test]
async fn components_of_both_contract_versions_load_and_work_side_by_side() {
    let (runtime, cluster) = runtime();
    let old = runtime
        .load_router(compat_spec())
        .await
        .expect("0.1 router");
    let new = runtime
        .load_router(faulty_spec(
            "test/faulty",
            std::time::Duration::from_secs(5),
        ))
        .await
        .expect("0.2 router");
    assert_eq!(old.info().contract, Contract::V0_1);
    assert_eq!(old.info().kind, PluginKind::TrafficRouter);
    assert_eq!(new.info().contract, Contract::V0_2);

    // Both calls go through their own version's bindings and host imports.
    let record = rollout("{}");
    old.set_weight(&record, 30, &[])
        .await
        .expect("0.1 set-weight");
    new.set_weight(&record, 40, &[])
        .await
        .expect("0.2 set-weight");
    let compat = cluster
        .get(&ObjectKey::new(
            "v1",
            "ConfigMap",
            "shop",
            "checkout-compat",
        ))
        .await
        .expect("the 0.1 router's write landed through the 0.1 cluster import");
    assert_eq!(compat["data"], json!({"canary": "30", "contract": "0.1.0"}));
    let weights = cluster
        .get(&ObjectKey::new(
            "v1",
            "ConfigMap",
            "shop",
            "checkout-weights",
        ))
        .await
        .expect("the 0.2 router's write");
    assert_eq!(weights["data"]["canary"], "40");
    let verified = old.verify_weight(&record, 30, &[]).await.expect("verify");
    assert_eq!(verified.verification, Verification::Verified);
    let observed = verified.observed.expect("observed weights");
    assert_eq!((observed.canary, observed.stable), (30, 70));

    // A 0.1 metric provider from another toolchain: its records are
    // carried across the versions both ways (the measurement's phase and
    // value, the metadata handed back).
    let mut spec = PluginSpec::new(
        "test/python",
        plugin_wasm("weir-plugin-python").display().to_string(),
    );
    spec.grant.read = vec![GrantedKind {
        group: String::new(),
        kind: "ConfigMap".into(),
    }];
    spec.limits.memory_mib = 64;
    spec.limits.timeout_ms = 10_000;
    let python = runtime.load_provider(spec).await.expect("0.1 provider");
    assert_eq!(python.info().contract, Contract::V0_1);
    weir_e2e::controller::apply(
        cluster.as_ref(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: checkout-metrics, namespace: shop}\ndata: {success-rate: \"0.97\"}\n",
    )
    .await;
    let measured = python
        .run(
            &contract_run(),
            &contract_metric(json!({"configMap": "checkout-metrics", "key": "success-rate"})),
        )
        .await
        .expect("0.1 provider run");
    assert_eq!(measured.phase, MeasurementPhase::Successful, "{measured:?}");
    assert_eq!(measured.value.as_deref(), Some("0.97"));
}

#[tokio::test]
async fn inspect_names_the_contract_a_component_was_built_against() {
    let (runtime, _) = runtime();
    for (crate_name, world) in [
        (
            "weir-plugin-compat-v01",
            "weir:plugin/traffic-router-plugin (contract weir:plugin 0.1)",
        ),
        (
            "weir-plugin-nginx",
            "weir:plugin/traffic-router-plugin (contract weir:plugin 0.2)",
        ),
        (
            "weir-plugin-faulty-step",
            "weir:plugin/step-plugin (contract weir:plugin 0.2)",
        ),
    ] {
        let inspection = runtime
            .inspect(
                &plugin_wasm(crate_name).display().to_string(),
                weir::plugin::Limits::default(),
            )
            .await;
        let text = inspection.to_string();
        assert!(text.contains(world), "{crate_name}: {text}");
        assert!(text.contains("verdict: OK"), "{crate_name}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_is_routed_through_a_0_1_and_a_0_2_router_at_once() {
    let backend = Backend::from_env();
    // The routers record weights in ConfigMaps: on Kubernetes, Weir's
    // ServiceAccount needs that granted (as an operator would).
    backend.grant(
        "",
        &["configmaps"],
        &["get", "list", "create", "update", "patch"],
    );
    let h = Harness::on(&backend).await;
    let (compat, faulty) = (
        plugins_dir().join("weir_plugin_compat_v01.wasm"),
        plugins_dir().join("weir_plugin_faulty.wasm"),
    );
    h.apply(&plugin_registration(&[(
        "trafficRouterPlugins",
        &format!(
            r#"    - name: acme/old-mesh
      location: file://{}
      grant: {{write: [{{group: "", kind: ConfigMap}}]}}
    - name: acme/new-mesh
      location: file://{}
      grant: {{write: [{{group: "", kind: ConfigMap}}]}}"#,
            compat.display(),
            faulty.display()
        ),
    )]))
    .await;
    h.apply(&services("checkout")).await;
    let routing = "        plugins:\n          acme/old-mesh: {}\n          acme/new-mesh: {}";
    let steps = "        - setWeight: 30\n        - pause: {}";
    h.deploy_then_update("checkout", routing, steps).await;
    let paused = h.wait_phase("checkout", "Paused").await;
    let weights = paused.canary.weights.expect("weights");
    assert!(weights.verified.unwrap_or(false), "{weights:?}");
    let data = |name: &'static str| {
        let cluster = h.cluster.clone();
        async move {
            cluster
                .get(&ObjectKey::new("v1", "ConfigMap", "shop", name))
                .await
                .map(|o| o["data"].clone())
                .unwrap_or_default()
        }
    };
    assert_eq!(data("checkout-compat").await["canary"], "30");
    assert_eq!(data("checkout-compat").await["contract"], "0.1.0");
    assert_eq!(data("checkout-weights").await["canary"], "30");
    weir::controller::actions::act(
        h.cluster.as_ref(),
        "shop",
        "checkout",
        weir::controller::actions::Action::Promote,
    )
    .await
    .expect("promote");
    h.wait_phase("checkout", "Healthy").await;
    assert_eq!(data("checkout-compat").await["canary"], "0");
    assert_eq!(data("checkout-weights").await["canary"], "0");
    h.stop().await;
}
