//! Soak and concurrency: thousands of faulty calls interleaved with healthy
//! ones leave the process healthy with bounded memory; many calls at once
//! wait for a slot instead of failing; a runaway guest never holds the async
//! worker thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir::plugin::{
    CallErrorKind, EngineSettings, FaultPolicy, Grant, GrantedKind, PluginSpec, TrafficRouter,
};
use weir_e2e::{plugin_wasm, rollout, rss_bytes, runtime, runtime_with};

fn spec(name: &str) -> PluginSpec {
    let mut spec = PluginSpec::new(
        name,
        plugin_wasm("weir-plugin-faulty").display().to_string(),
    );
    spec.grant = Grant {
        read: vec![],
        write: vec![GrantedKind {
            group: String::new(),
            kind: "ConfigMap".into(),
        }],
        namespaces: vec![],
        secrets: vec![],
    };
    spec.limits.timeout_ms = 500;
    // The soak calls for one rollout as fast as it can: no call-rate limit.
    spec.limits.calls_per_second = 0;
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    spec
}

async fn round(faulty: &TrafficRouter, healthy: &TrafficRouter, i: usize) {
    const FAULTS: [&str; 5] = [
        "panic",
        "memory-bomb",
        "invalid-output",
        "other-namespace",
        "write-then-trap",
    ];
    let fault = FAULTS[i % FAULTS.len()];
    let bad = rollout(&format!(r#"{{"fault":"{fault}"}}"#));
    let error = if fault == "invalid-output" {
        faulty
            .verify_weight(&bad, 1, &[])
            .await
            .map(|_| ())
            .expect_err("fault")
    } else {
        faulty.set_weight(&bad, 1, &[]).await.expect_err("fault")
    };
    assert!(error.is_fault(), "{fault}: {error}");
    healthy
        .set_weight(&rollout("{}"), (i % 100) as i32, &[])
        .await
        .expect("healthy call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_two_thousand_faults_interleaved_with_healthy_calls() {
    let (runtime, _cluster) = runtime();
    let faulty = runtime
        .load_router(spec("soak/faulty"))
        .await
        .expect("load");
    let healthy = runtime
        .load_router(spec("soak/healthy"))
        .await
        .expect("load");
    // Warm up: pool slots, allocator arenas, the cache.
    for i in 0..200 {
        round(&faulty, &healthy, i).await;
    }
    let before = rss_bytes();
    let started = Instant::now();
    const ROUNDS: usize = 2_000;
    for i in 0..ROUNDS {
        round(&faulty, &healthy, i).await;
    }
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    println!(
        "soak: {ROUNDS} faulty + {ROUNDS} healthy calls in {:?}; RSS {:.1} MiB -> {:.1} MiB (growth {:.1} MiB)",
        started.elapsed(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        growth as f64 / 1048576.0
    );
    assert!(
        growth < 64 << 20,
        "RSS grew by {growth} bytes over the soak"
    );
    let faults = faulty.stats().calls.values().map(|c| c.count).sum::<u64>();
    assert_eq!(
        faults,
        2_200 + 1,
        "every faulty call was counted (plus init)"
    );
    assert_eq!(healthy.stats().count("ok"), 2_200 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_concurrency_limit_wait_instead_of_failing() {
    let settings = EngineSettings {
        max_concurrent_calls: 2,
        ..EngineSettings::default()
    };
    let (runtime, _cluster) = runtime_with(settings);
    let router = runtime.load_router(spec("test/busy")).await.expect("load");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let router = router.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = rollout("{}");
            r.name = format!("app-{i}");
            router.set_weight(&r, i, &[]).await
        }));
    }
    for task in tasks {
        task.await
            .expect("join")
            .expect("every call succeeds, slots permitting");
    }
    assert_eq!(router.stats().count("ok"), 25);
}

#[tokio::test(flavor = "current_thread")]
async fn a_runaway_guest_does_not_hold_the_async_worker() {
    let (runtime, _cluster) = runtime();
    let router = runtime.load_router(spec("test/loop")).await.expect("load");
    let ticks = Arc::new(AtomicU64::new(0));
    let counter = ticks.clone();
    // On a single-threaded runtime this task only runs if the guest yields.
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let error = router
        .set_weight(&rollout(r#"{"fault":"loop"}"#), 1, &[])
        .await
        .expect_err("runaway");
    assert!(
        matches!(error.kind, CallErrorKind::Timeout { .. }),
        "{error}"
    );
    let seen = ticks.load(Ordering::Relaxed);
    ticker.abort();
    // 500 ms of guest spinning; a blocked worker would show 0 ticks.
    assert!(
        seen >= 10,
        "the other task ran only {seen} times while the guest spun"
    );
}
