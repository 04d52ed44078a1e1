//! Tiered compilation: a plugin with no compiled code on hand is ready on
//! Winch's code, answers on it, and moves to Cranelift's code (cached for
//! the next start) without a failed call in between. Real components, a
//! real cache directory, both compilers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use weir::cluster::{Cluster, MemoryCluster, Write};
use weir::plugin::{
    CacheOutcome, CodeTier, Compiler, EngineSettings, Grant, GrantedKind, PluginRuntime,
    PluginSpec, RuntimeConfig, TrafficRouter, Verification,
};
use weir_e2e::{plugin_wasm, rollout};

/// A runtime on `compiler` with its own cache in `cache`, over a cluster
/// holding the faulty router's weights ConfigMap at 5.
async fn runtime_on(cache: &std::path::Path, compiler: Compiler) -> PluginRuntime {
    let cluster = Arc::new(MemoryCluster::new());
    cluster
        .apply(vec![Write::Create(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "checkout-weights", "namespace": "shop"},
            "data": {"canary": "5"},
        }))])
        .await
        .expect("seed");
    let config = RuntimeConfig {
        engine: EngineSettings {
            compiler,
            ..EngineSettings::default()
        },
        cache_dir: Some(cache.to_path_buf()),
        bundle: None,
        recorder: None,
    };
    PluginRuntime::new(config, cluster).expect("runtime")
}

/// The faulty router with no fault: verify-weight reads the ConfigMap.
async fn load(runtime: &PluginRuntime) -> TrafficRouter {
    let mut spec = PluginSpec::new(
        "test/tiered",
        plugin_wasm("weir-plugin-faulty").display().to_string(),
    );
    spec.grant = Grant {
        read: vec![GrantedKind {
            group: String::new(),
            kind: "ConfigMap".into(),
        }],
        ..Grant::default()
    };
    spec.limits.calls_per_second = 0;
    runtime.load_router(spec).await.expect("load")
}

async fn verified(router: &TrafficRouter) -> bool {
    let v = router
        .verify_weight(&rollout("{}"), 5, &[])
        .await
        .expect("verify-weight");
    v.verification == Verification::Verified
}

/// Compiled entries in the cache (not the digest memo beside them).
fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("cache dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_plugin_answers_on_winch_code_then_moves_to_cranelift_code_without_a_failed_call() {
    let cache = tempfile::tempdir().expect("cache dir");
    let runtime = runtime_on(cache.path(), Compiler::Tiered).await;
    let router = load(&runtime).await;
    assert_eq!(router.info().cache, CacheOutcome::Miss);
    assert_eq!(
        router.info().tier,
        CodeTier::Baseline,
        "ready before Cranelift is done"
    );
    assert!(
        verified(&router).await,
        "Winch's code answers as Cranelift's does"
    );

    // Calls keep coming while the optimiser works and the code changes
    // under them: every one succeeds.
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            let mut calls = 0u32;
            while !stop.load(Ordering::Relaxed) {
                assert!(verified(&router).await, "call {calls} during the move");
                calls += 1;
            }
            calls
        })
    };
    runtime.optimized().await;
    stop.store(true, Ordering::Relaxed);
    let calls = caller.await.expect("caller");
    assert!(calls > 0, "calls ran while Cranelift compiled");
    assert_eq!(router.info().tier, CodeTier::Optimized);
    assert!(verified(&router).await, "and answers on Cranelift's code");
    assert_eq!(router.info().tier, CodeTier::Optimized);
    assert_eq!(
        entries(cache.path()),
        1,
        "Cranelift's code is cached, Winch's is not"
    );

    // The next start finds Cranelift's code: nothing is compiled.
    let restarted = runtime_on(cache.path(), Compiler::Tiered).await;
    let again = load(&restarted).await;
    assert_eq!(again.info().cache, CacheOutcome::Hit);
    assert_eq!(again.info().tier, CodeTier::Optimized);
    assert!(verified(&again).await);
    println!("{calls} calls answered while the plugin moved from Winch's code to Cranelift's");
}

#[tokio::test]
async fn each_compiler_alone_caches_its_own_code() {
    let cache = tempfile::tempdir().expect("cache dir");
    let winch = runtime_on(cache.path(), Compiler::Winch).await;
    let first = load(&winch).await;
    assert_eq!(
        (first.info().cache, first.info().tier),
        (CacheOutcome::Miss, CodeTier::Baseline)
    );
    winch.optimized().await;
    assert_eq!(
        first.info().tier,
        CodeTier::Baseline,
        "winch alone never moves"
    );
    assert!(verified(&first).await);
    let second = load(&runtime_on(cache.path(), Compiler::Winch).await).await;
    assert_eq!(
        (second.info().cache, second.info().tier),
        (CacheOutcome::Hit, CodeTier::Baseline)
    );

    // Cranelift does not take Winch's entry for its own.
    let cranelift = load(&runtime_on(cache.path(), Compiler::Cranelift).await).await;
    assert_eq!(
        (cranelift.info().cache, cranelift.info().tier),
        (CacheOutcome::Miss, CodeTier::Optimized)
    );
    assert!(verified(&cranelift).await);
    assert_eq!(entries(cache.path()), 2, "one entry per engine");
    // And with both cached, Winch alone still prefers Cranelift's code.
    let preferred = load(&runtime_on(cache.path(), Compiler::Winch).await).await;
    assert_eq!(
        (preferred.info().cache, preferred.info().tier),
        (CacheOutcome::Hit, CodeTier::Optimized)
    );
}
