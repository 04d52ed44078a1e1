//! The contract's versioning promise, tested: components built against the
//! frozen `weir:plugin@0.1.0` and `0.2.0` (a Rust router with bindings
//! generated from each WIT, a step plugin and a metric provider from
//! 0.2.0's, the Python provider built by componentize-py against 0.1.0)
//! load and work on the host that serves 0.3.0, side by side
//! with 0.3.0 components, down to a Rollout routed through a 0.1, a 0.2 and
//! a 0.3 router at once; and 0.3's "pass less": the typed routing fields,
//! and the whole object only on request, charged to the call's reads.

use serde_json::json;
use weir::cluster::{Cluster, ObjectKey};
use weir::plugin::{
    CallErrorKind, Contract, GrantedKind, Limit, MeasurementPhase, PluginKind, PluginSpec,
    ReportedError, StepContext, StepPhase, Verification,
};
use weir_e2e::controller::{Backend, Harness, plugin_registration, plugins_dir, services};
use weir_e2e::{contract_metric, contract_run, faulty_spec, plugin_wasm, rollout, runtime};

/// The compatibility router built against the frozen `line` (`v01`, `v02`).
fn compat_spec(line: &str) -> PluginSpec {
    let mut spec = PluginSpec::new(
        format!("test/compat-{line}"),
        plugins_dir()
            .join(format!("weir_plugin_compat_{line}.wasm"))
            .display()
            .to_string(),
    );
    spec.grant.write = vec![GrantedKind {
        group: String::new(),
        kind: "ConfigMap".into(),
    }];
    spec
}

#[tokio::test]
async fn components_of_every_contract_version_load_and_work_side_by_side() {
    let (runtime, cluster) = runtime();
    let v01 = runtime
        .load_router(compat_spec("v01"))
        .await
        .expect("0.1 router");
    let v02 = runtime
        .load_router(compat_spec("v02"))
        .await
        .expect("0.2 router");
    let new = runtime
        .load_router(faulty_spec(
            "test/faulty",
            std::time::Duration::from_secs(5),
        ))
        .await
        .expect("0.3 router");
    assert_eq!(v01.info().contract, Contract::V0_1);
    assert_eq!(v01.info().kind, PluginKind::TrafficRouter);
    assert_eq!(v02.info().contract, Contract::V0_2);
    assert_eq!(new.info().contract, Contract::V0_3);

    // Each call goes through its own version's bindings and host imports;
    // the older lines get the whole object in the record, as before.
    let record = rollout("{}");
    v01.set_weight(&record, 30, &[])
        .await
        .expect("0.1 set-weight");
    v02.set_weight(&record, 35, &[])
        .await
        .expect("0.2 set-weight");
    new.set_weight(&record, 40, &[])
        .await
        .expect("0.3 set-weight");
    let data = |name: &'static str| {
        let cluster = cluster.clone();
        async move {
            cluster
                .get(&ObjectKey::new("v1", "ConfigMap", "shop", name))
                .await
                .map(|o| o["data"].clone())
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        }
    };
    assert_eq!(
        data("checkout-compat").await,
        json!({"canary": "30", "contract": "0.1.0", "objectName": "checkout"}),
        "the 0.1 router's write landed through the 0.1 cluster import"
    );
    assert_eq!(
        data("checkout-compat-v02").await,
        json!({"canary": "35", "contract": "0.2.0", "objectName": "checkout"}),
        "the 0.2 router's write landed through the 0.2 cluster import"
    );
    let weights = cluster
        .get(&ObjectKey::new(
            "v1",
            "ConfigMap",
            "shop",
            "checkout-weights",
        ))
        .await
        .expect("the 0.3 router's write");
    assert_eq!(weights["data"]["canary"], "40");
    for (router, weight) in [(&v01, 30), (&v02, 35)] {
        let verified = router
            .verify_weight(&record, weight, &[])
            .await
            .expect("verify");
        assert_eq!(verified.verification, Verification::Verified);
        let observed = verified.observed.expect("observed weights");
        assert_eq!((observed.canary, observed.stable), (weight, 100 - weight));
    }
    // A denial crosses the 0.2 cluster import and comes back typed.
    let mut ungranted = compat_spec("v02");
    ungranted.name = "test/compat-v02-ungranted".into();
    ungranted.grant.write.clear();
    let ungranted = runtime.load_router(ungranted).await.expect("0.2 router");
    let refused = ungranted
        .set_weight(&record, 20, &[])
        .await
        .expect_err("no ConfigMap grant");
    assert!(
        matches!(refused.kind, CallErrorKind::CapabilityDenied(_)),
        "{refused:?}"
    );

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
async fn a_0_2_step_plugin_and_a_0_2_metric_provider_keep_working() {
    let (runtime, _) = runtime();
    let compat = |kind: &str| {
        PluginSpec::new(
            format!("test/compat-{kind}-v02"),
            plugins_dir()
                .join(format!("weir_plugin_compat_{kind}_v02.wasm"))
                .display()
                .to_string(),
        )
    };

    // The step: its status carried across calls, the whole object in its
    // record, every phase and record carried across the versions.
    let step = runtime.load_step(compat("step")).await.expect("0.2 step");
    assert_eq!(step.info().contract, Contract::V0_2);
    assert_eq!(step.info().kind, PluginKind::StepPlugin);
    let record = rollout("{}");
    let mut context = StepContext {
        plugin_name: "test/compat-step-v02".into(),
        config: "null".into(),
        status: "null".into(),
    };
    let first = step.run(&record, &context).await.expect("first run");
    assert_eq!(first.phase, StepPhase::Running, "{first:?}");
    assert_eq!(first.requeue_after_ms, Some(1_000));
    assert_eq!(
        first.message,
        "run 1 of a step built against 0.2.0 for Rollout checkout"
    );
    context.status = first.status;
    let second = step.run(&record, &context).await.expect("second run");
    assert_eq!(second.phase, StepPhase::Successful, "{second:?}");
    let aborted = step.abort(&record, &context).await.expect("abort");
    assert!(aborted.message.starts_with("aborted"), "{aborted:?}");

    // The provider: the measurement and its metadata come back, and its
    // own error arrives typed.
    let provider = runtime
        .load_provider(compat("provider"))
        .await
        .expect("0.2 provider");
    assert_eq!(provider.info().contract, Contract::V0_2);
    let measured = provider
        .run(&contract_run(), &contract_metric(json!({"value": 0.97})))
        .await
        .expect("0.2 provider run");
    assert_eq!(measured.phase, MeasurementPhase::Successful, "{measured:?}");
    assert_eq!(measured.value.as_deref(), Some("0.97"));
    assert!(
        measured
            .metadata
            .contains(&("contract".to_string(), "0.2.0".to_string())),
        "{measured:?}"
    );
    let resumed = provider
        .resume(&contract_run(), &contract_metric(json!({})), &measured)
        .await
        .expect("resume");
    assert_eq!(
        (resumed.phase, resumed.value, resumed.metadata),
        (
            measured.phase,
            measured.value.clone(),
            measured.metadata.clone()
        )
    );
    let refused = provider
        .run(&contract_run(), &contract_metric(json!({})))
        .await
        .expect_err("no value configured");
    assert!(
        matches!(&refused.kind, CallErrorKind::Reported(ReportedError::InvalidConfig(m)) if m.contains("`value` is required")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_0_3_router_gets_the_routing_fields_typed_and_the_object_only_on_request() {
    let (runtime, cluster) = runtime();
    let router = runtime
        .load_router(faulty_spec(
            "test/faulty",
            std::time::Duration::from_secs(5),
        ))
        .await
        .expect("0.3 router");
    let mut r = rollout(&json!({"fault": "report-rollout"}).to_string());
    r.object = json!({
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"strategy": {"canary": {"trafficRouting": {
            "maxTrafficWeight": 1000,
            "managedRoutes": [{"name": "header"}, {"name": "mirror"}]
        }}}}
    })
    .into();
    router.set_weight(&r, 300, &[]).await.expect("set-weight");
    let report = cluster
        .get(&ObjectKey::new(
            "v1",
            "ConfigMap",
            "shop",
            "checkout-report",
        ))
        .await
        .expect("the router's report");
    assert_eq!(
        report["data"],
        json!({"maxTrafficWeight": "1000", "managedRoutes": "header,mirror", "objectName": "checkout"}),
        "typed fields in the record, the object through rollout-object"
    );

    // The object handed over on request counts against the call's reads:
    // a budget below its size ends the call naming the limit, and the
    // report it would have written never lands.
    let mut spec = faulty_spec("test/faulty-few-reads", std::time::Duration::from_secs(5));
    spec.limits.read_bytes = 1024;
    let few_reads = runtime.load_router(spec).await.expect("router");
    let mut big = r.clone();
    big.name = "bulky".into();
    big.object = json!({
        "metadata": {"name": "bulky", "namespace": "shop", "annotations": {"padding": "x".repeat(4096)}}
    })
    .into();
    let err = few_reads
        .set_weight(&big, 30, &[])
        .await
        .expect_err("over readBytes");
    assert!(
        matches!(
            err.kind,
            CallErrorKind::LimitExceeded {
                limit: Limit::ReadBytes,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("readBytes"), "{err}");
    assert!(
        cluster
            .get(&ObjectKey::new("v1", "ConfigMap", "shop", "bulky-report"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn inspect_names_the_contract_a_component_was_built_against() {
    let (runtime, _) = runtime();
    for (file, world) in [
        (
            "weir_plugin_compat_v01.wasm",
            "weir:plugin/traffic-router-plugin (contract weir:plugin 0.1)",
        ),
        (
            "weir_plugin_compat_v02.wasm",
            "weir:plugin/traffic-router-plugin (contract weir:plugin 0.2)",
        ),
        (
            "weir_plugin_nginx.wasm",
            "weir:plugin/traffic-router-plugin (contract weir:plugin 0.3)",
        ),
        (
            "weir_plugin_faulty_step.wasm",
            "weir:plugin/step-plugin (contract weir:plugin 0.3)",
        ),
    ] {
        let inspection = runtime
            .inspect(
                &plugins_dir().join(file).display().to_string(),
                weir::plugin::Limits::default(),
            )
            .await;
        let text = inspection.to_string();
        assert!(text.contains(world), "{file}: {text}");
        assert!(text.contains("verdict: OK"), "{file}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_is_routed_through_a_0_1_a_0_2_and_a_0_3_router_at_once() {
    let backend = Backend::from_env();
    // The routers record weights in ConfigMaps: on Kubernetes, Weir's
    // ServiceAccount needs that granted (as an operator would).
    backend.grant(
        "",
        &["configmaps"],
        &["get", "list", "create", "update", "patch"],
    );
    let h = Harness::on(&backend).await;
    let (v01, v02, faulty) = (
        plugins_dir().join("weir_plugin_compat_v01.wasm"),
        plugins_dir().join("weir_plugin_compat_v02.wasm"),
        plugins_dir().join("weir_plugin_faulty.wasm"),
    );
    h.apply(&plugin_registration(&[(
        "trafficRouterPlugins",
        &format!(
            r#"    - name: acme/old-mesh
      location: file://{}
      grant: {{write: [{{group: "", kind: ConfigMap}}]}}
    - name: acme/mid-mesh
      location: file://{}
      grant: {{write: [{{group: "", kind: ConfigMap}}]}}
    - name: acme/new-mesh
      location: file://{}
      grant: {{write: [{{group: "", kind: ConfigMap}}]}}"#,
            v01.display(),
            v02.display(),
            faulty.display()
        ),
    )]))
    .await;
    h.apply(&services("checkout")).await;
    let routing = "        plugins:\n          acme/old-mesh: {}\n          acme/mid-mesh: {}\n          acme/new-mesh: {}";
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
    assert_eq!(data("checkout-compat").await["objectName"], "checkout");
    assert_eq!(data("checkout-compat-v02").await["canary"], "30");
    assert_eq!(data("checkout-compat-v02").await["contract"], "0.2.0");
    assert_eq!(data("checkout-compat-v02").await["objectName"], "checkout");
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
    assert_eq!(data("checkout-compat-v02").await["canary"], "0");
    assert_eq!(data("checkout-weights").await["canary"], "0");
    h.stop().await;
}
