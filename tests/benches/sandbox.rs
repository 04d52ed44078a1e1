//! Sandbox costs: a trivial call on a fresh instance (the path every plugin
//! call takes), and how far past its deadline a runaway guest is stopped.
//!
//! Run with `cargo bench --bench sandbox` after `scripts/build-plugins.sh`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use weir::plugin::{FaultPolicy, Grant, GrantedKind, PluginSpec, TrafficRouter};
use weir_e2e::{plugin_wasm, rollout, runtime};

fn spec(timeout_ms: u64) -> PluginSpec {
    let mut spec = PluginSpec::new(
        "bench/faulty",
        plugin_wasm("weir-plugin-faulty").display().to_string(),
    );
    spec.grant = Grant {
        read: vec![],
        write: vec![GrantedKind {
            group: String::new(),
            kind: "ConfigMap".into(),
        }],
    };
    spec.limits.timeout_ms = timeout_ms;
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    spec
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn sandbox(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let (runtime, _cluster) = runtime();
    let router: TrafficRouter = rt.block_on(runtime.load_router(spec(2_000))).expect("load");
    let trivial = rollout("{}");
    let route = weir::plugin::HeaderRoute {
        name: "r".into(),
        matches: vec![],
    };

    c.bench_function("trivial call, fresh instance (set-header-route)", |b| {
        b.to_async(&rt).iter(|| async {
            router
                .set_header_route(&trivial, &route)
                .await
                .expect("call")
        })
    });

    // Percentiles of the same call, measured one by one.
    let mut samples: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let t = Instant::now();
            router
                .set_header_route(&trivial, &route)
                .await
                .expect("call");
            v.push(t.elapsed());
        }
        v
    });
    samples.sort();
    println!(
        "trivial sandboxed call incl. fresh instance: p50 {:?}, p99 {:?} over {} calls",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.len()
    );

    // Runaway guests: how long past the deadline until the call returns.
    let deadline = Duration::from_millis(50);
    let looping: TrafficRouter = rt.block_on(runtime.load_router(spec(50))).expect("load");
    let spin = rollout(r#"{"fault":"loop"}"#);
    let mut overshoot: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::with_capacity(200);
        for _ in 0..200 {
            let t = Instant::now();
            looping
                .set_weight(&spin, 1, &[])
                .await
                .expect_err("runaway");
            v.push(t.elapsed().saturating_sub(deadline));
        }
        v
    });
    overshoot.sort();
    println!(
        "runaway guest stopped past its {deadline:?} deadline by: p50 {:?}, p99 {:?}, max {:?} over {} runs",
        percentile(&overshoot, 0.5),
        percentile(&overshoot, 0.99),
        overshoot[overshoot.len() - 1],
        overshoot.len()
    );
}

criterion_group!(benches, sandbox);
criterion_main!(benches);
