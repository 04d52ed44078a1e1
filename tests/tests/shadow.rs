//! Shadow upgrades with the real sandbox and real builds of the faulty
//! router (`weir_plugin_faulty.wasm` live, `weir_plugin_faulty_fixed.wasm`
//! as the candidate): agreement and disagreement are counted per method
//! and in `/metrics`, the candidate never writes, a hanging candidate
//! never slows the live call nor quarantines it, and promotion switches
//! the registration only once the candidate has earned it.

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, MemoryCluster, ObjectKey, Write};
use weir::controller::Metrics;
use weir::controller::registry::{PromoteError, parse_config_map, promote_shadow};
use weir::plugin::{
    EngineSettings, FaultPolicy, PluginKind, PluginRuntime, RuntimeConfig, ShadowReport,
    ShadowSpec, TrafficRouter,
};
use weir_e2e::{cache_dir, faulty_spec, plugin_wasm, rollout};

fn fixed_build() -> String {
    plugin_wasm("weir-plugin-faulty")
        .with_file_name("weir_plugin_faulty_fixed.wasm")
        .display()
        .to_string()
}

fn weights_key() -> ObjectKey {
    ObjectKey::new("v1", "ConfigMap", "shop", "checkout-weights")
}

async fn set_stored(cluster: &MemoryCluster, canary: &str) {
    let write = match cluster.get(&weights_key()).await {
        Ok(mut object) => {
            object["data"]["canary"] = json!(canary);
            Write::update_as_read(object)
        }
        Err(_) => Write::Create(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "checkout-weights", "namespace": "shop"},
            "data": {"canary": canary},
        })),
    };
    cluster.apply(vec![write]).await.expect("write");
}

async fn stored(cluster: &MemoryCluster) -> String {
    let object = cluster.get(&weights_key()).await.expect("weights");
    object["data"]["canary"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The live faulty router with the fixed build as its shadow candidate,
/// reporting to `metrics`.
async fn shadowed(
    timeout: Duration,
    promote_after: u64,
) -> (
    PluginRuntime,
    Arc<MemoryCluster>,
    TrafficRouter,
    Arc<Metrics>,
) {
    let cluster = Arc::new(MemoryCluster::new());
    let runtime = PluginRuntime::new(
        RuntimeConfig {
            engine: EngineSettings::default(),
            cache_dir: Some(cache_dir()),
            bundle: None,
            recorder: None,
        },
        cluster.clone(),
    )
    .expect("runtime");
    let metrics = Arc::new(Metrics::new());
    runtime.set_observer(metrics.clone());
    let mut spec = faulty_spec("acme/faulty", timeout);
    spec.fault_policy = FaultPolicy::default();
    spec.shadow = Some(ShadowSpec {
        location: fixed_build(),
        sha256: None,
        promote_after,
    });
    let router = runtime.load_router(spec).await.expect("load");
    (runtime, cluster, router, metrics)
}

/// Waits until the shadow has finished `runs` runs.
async fn report_after(router: &TrafficRouter, runs: u64) -> ShadowReport {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = router.shadow_report().expect("a shadow report");
        if report.totals().runs >= runs {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "the shadow never finished {runs} runs: {}",
            report.render()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_differs_is_reported_and_never_writes() {
    let (_runtime, cluster, router, metrics) = shadowed(Duration::from_secs(2), 3).await;
    let config = rollout(r#"{"fault":"trust-stored-weight"}"#);
    set_stored(&cluster, "20").await;
    for (i, weight) in [30, 40, 50].into_iter().enumerate() {
        router
            .set_weight(&config, weight, &[])
            .await
            .expect("the live build handles a numeric weight");
        report_after(&router, i as u64 + 1).await;
    }
    assert_eq!(stored(&cluster).await, "50", "the live writes landed");
    let agreeing = router.shadow_report().expect("report");
    assert_eq!(agreeing.totals().agreed, 3, "{}", agreeing.render());
    assert!(agreeing.promotable().is_ok(), "{}", agreeing.render());

    // A weight the live build cannot parse: it traps; the candidate copes
    // and would write, which is shown and never applied.
    set_stored(&cluster, "fifty").await;
    let error = router
        .set_weight(&config, 60, &[])
        .await
        .expect_err("the live build traps");
    assert_eq!(error.kind.name(), "trap");
    let report = report_after(&router, 4).await;
    let text = report.render();
    println!("{text}");
    let counts = report.methods.get("set-weight").expect("set-weight row");
    assert_eq!((counts.agreed, counts.disagreed), (3, 1), "{text}");
    let d = report.disagreements.last().expect("the disagreement");
    assert_eq!(d.live.kind, "trap");
    assert_eq!(d.candidate.kind, "ok");
    assert!(d.writes_diff.contains("+ "), "{text}");
    assert!(d.writes_diff.contains("60"), "{text}");
    assert_eq!(
        stored(&cluster).await,
        "fifty",
        "the candidate never writes"
    );
    assert!(report.promotable().is_err());
    assert!(text.contains("promotable: no"), "{text}");

    let exposition = metrics.render();
    assert!(
        exposition.contains(
            r#"weir_shadow_calls_total{plugin="acme/faulty",method="set-weight",result="agree"} 3"#
        ),
        "{exposition}"
    );
    assert!(
        exposition.contains(
            r#"weir_shadow_calls_total{plugin="acme/faulty",method="set-weight",result="disagree"} 1"#
        ),
        "{exposition}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_candidate_neither_slows_nor_quarantines_the_live_plugin() {
    // The candidate loops on this input until its 1.5 s deadline; the live
    // build answers at once. The stated bound: a shadowed live call returns
    // in well under the candidate's deadline (here 500 ms, on a loaded CI
    // machine), because the shadow runs after it, in the background.
    let deadline = Duration::from_millis(1500);
    let (_runtime, _cluster, router, metrics) = shadowed(deadline, 1).await;
    let config = rollout(r#"{"fault":"hang-in-fixed-build"}"#);
    let started = Instant::now();
    for _ in 0..6 {
        let t = Instant::now();
        router
            .set_weight(&config, 10, &[])
            .await
            .expect("the live build is healthy");
        let took = t.elapsed();
        println!("live call with a hanging shadow: {took:?}");
        assert!(took < Duration::from_millis(500), "live call took {took:?}");
    }
    assert!(
        started.elapsed() < deadline,
        "six live calls outran one candidate run"
    );
    // One candidate run at a time: the rest were dropped, not queued.
    let report = report_after(&router, 1).await;
    let text = report.render();
    println!("{text}");
    let counts = report.methods.get("set-weight").expect("row");
    assert_eq!(counts.candidate_faults, 1, "{text}");
    assert_eq!(counts.disagreed, 1, "{text}");
    assert!(counts.dropped >= 4, "{text}");
    assert_eq!(
        report
            .disagreements
            .last()
            .map(|d| d.candidate.kind.as_str()),
        Some("timeout")
    );
    // The candidate's faults are its own: the live plugin was never
    // quarantined and still answers.
    router
        .set_weight(&config, 20, &[])
        .await
        .expect("the live plugin is not quarantined");
    let stats = router.stats();
    let failed: Vec<_> = stats.calls.keys().filter(|(_, o)| o != "ok").collect();
    assert!(failed.is_empty(), "the live plugin failed: {failed:?}");
    assert!(
        metrics.render().contains(r#"result="dropped"#),
        "dropped runs are counted"
    );
}

/// A registration ConfigMap naming the faulty router with its shadow.
fn registration(promote_after: u64) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "argo-rollouts-config", "namespace": "argo-rollouts"},
        "data": {"trafficRouterPlugins": format!(
            "- name: acme/faulty\n  location: {}\n  # the candidate\n  shadow: {{location: {}, promoteAfter: {promote_after}}}\n",
            plugin_wasm("weir-plugin-faulty").display(),
            fixed_build()
        )},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_switches_the_registration_only_after_enough_agreement() {
    let (_runtime, cluster, router, _metrics) = shadowed(Duration::from_secs(2), 2).await;
    cluster
        .apply(vec![Write::Create(registration(2))])
        .await
        .expect("registration");
    let key = ObjectKey::new("v1", "ConfigMap", "argo-rollouts", "argo-rollouts-config");
    let specs = parse_config_map(&cluster.get(&key).await.expect("get")).expect("parse");
    let spec = specs
        .get(&(PluginKind::TrafficRouter, "acme/faulty".into()))
        .expect("registered");
    assert_eq!(
        spec.shadow.as_ref().map(|s| s.promote_after),
        Some(2),
        "the registration's shadow block is read"
    );

    let config = rollout("{}");
    router.set_weight(&config, 10, &[]).await.expect("live");
    let one = report_after(&router, 1).await;
    println!("{}", one.render());
    let refused = promote_shadow(cluster.as_ref(), &key, "acme/faulty", &one)
        .await
        .expect_err("one agreeing call is not enough");
    assert!(
        matches!(&refused, PromoteError::Refused(why) if why.contains("promoteAfter")),
        "{refused}"
    );
    router.set_weight(&config, 20, &[]).await.expect("live");
    let two = report_after(&router, 2).await;
    promote_shadow(cluster.as_ref(), &key, "acme/faulty", &two)
        .await
        .expect("promoted");
    let specs = parse_config_map(&cluster.get(&key).await.expect("get")).expect("parse");
    let promoted = specs
        .get(&(PluginKind::TrafficRouter, "acme/faulty".into()))
        .expect("still registered");
    assert_eq!(promoted.location, fixed_build());
    assert_eq!(
        promoted.sha256.as_deref(),
        Some(two.candidate_sha256.as_str())
    );
    assert!(promoted.shadow.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_controller_reports_a_shadow_and_promotes_it_through_its_api() {
    use weir::cluster::RemoteCluster;
    use weir_e2e::controller::{Backend, Served, config, istio_objects};
    let backend = Backend::embedded();
    let served = Served::start(&backend, config(), "shadow-api-t0ken").await;
    let (h, base, token, registry) = (
        &served.h,
        served.base.clone(),
        served.token.clone(),
        served.registry.clone(),
    );
    h.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: argo-rollouts-config, namespace: weir-system}}
data:
  trafficRouterPlugins: |
    - name: acme/faulty
      location: {}
      grant: {{write: [{{group: "", kind: ConfigMap}}]}}
      shadow: {{location: {}, promoteAfter: 1}}
"#,
        plugin_wasm("weir-plugin-faulty").display(),
        fixed_build()
    ))
    .await;
    h.apply(&istio_objects("checkout")).await;
    let routing = "        plugins:\n          acme/faulty: {}";
    let steps = "        - setWeight: 40\n        - pause: {}";
    h.deploy_then_update("checkout", routing, steps).await;
    h.wait_phase("checkout", "Paused").await;

    // The CLI's client of the running controller (`weir plugin shadow-report`).
    let api = RemoteCluster::new(base.clone(), Some(token.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report = api.shadow_report("acme/faulty").await.expect("a report");
        if report.totals().runs > 0 {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "no shadow run: {}",
            report.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("{}", report.render());
    assert_eq!(report.totals().disagreed, 0, "{}", report.render());
    let stranger = RemoteCluster::new(base.clone(), Some("wrong".into()));
    assert!(stranger.shadow_report("acme/faulty").await.is_err());
    assert!(api.shadow_report("acme/other").await.is_err());

    // `weir plugin promote-shadow`: through the same API.
    let key = ObjectKey::new("v1", "ConfigMap", "weir-system", "argo-rollouts-config");
    promote_shadow(&api, &key, "acme/faulty", &report)
        .await
        .expect("promoted");
    // The controller reloads the registration: the live build is now the
    // candidate, and it has no shadow any more.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        registry.sync(h.cluster.as_ref()).await.expect("sync");
        let router = registry.router("acme/faulty").await.expect("the router");
        if router.shadow_report().is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registration was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses = registry.statuses().await;
    assert!(
        statuses
            .iter()
            .any(|s| s.name == "acme/faulty" && s.shadow.is_none())
    );
    served.stop().await;
}
