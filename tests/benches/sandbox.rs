//! Weir's sandbox against Argo Rollouts' plugin transport, side by side in
//! one run. See docs/benchmarks.md.
//!
//! The baseline is `bench/goplugin`: a go-plugin-style child process serving
//! `Plugin.SetWeight` over net/rpc (gob) on a unix socket, receiving the same
//! ~8 KB Rollout by value on every call. It needs Go (`scripts/setup-go.sh`);
//! without it the Weir figures still print and the baseline says it is missing.
//!
//! Run: `scripts/build-plugins.sh && cargo bench --bench sandbox`.
//!
//! Profiling one kind of call: `WEIR_BENCH_CHILD="python 3000"
//! WEIR_PERF_MAP=1 perf record -g <this bench's executable>` makes only
//! those calls (`trivial`, `set-weight` or `python`).
//!
//! Instruction counts: the bench runs itself again under valgrind's
//! callgrind (`WEIR_BENCH_CHILD`), once with 1 call and once with 1 +
//! [`COUNTED_CALLS`], and prints the difference per call: repeatable on a
//! noisy machine, where the timings are not. Needs valgrind (Debian's
//! `valgrind`); without it the line says so.

use criterion::{Criterion, criterion_group};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, MemoryCluster, Write};
use weir::plugin::{
    AnalysisRun, Compiler, EngineSettings, FaultPolicy, Grant, GrantedKind, Metric, PluginRuntime,
    PluginSpec, Rollout, RuntimeConfig, TrafficRouter,
};
use weir_e2e::{plugin_wasm, python_spec, rollout, rss_bytes};

/// The allocator the `weir` binary runs on, so the figures are its.
#[global_allocator]
static GLOBAL: weir::Allocator = weir::Allocator;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The Go baseline's measurements, or why there are none.
fn go_baseline() -> Result<Value, String> {
    let go = which("go").ok_or(
        "Go is missing: run scripts/setup-go.sh (apt-get install golang-go) for the baseline",
    )?;
    let binary = repo().join("target").join("goplugin-bench");
    let status = std::process::Command::new(go)
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(repo().join("bench").join("goplugin"))
        .status()
        .map_err(|e| format!("go build: {e}"))?;
    if !status.success() {
        return Err("go build of bench/goplugin failed".into());
    }
    let output = std::process::Command::new(&binary)
        .arg(repo().join("bench").join("rollout.json"))
        .arg("5000")
        .output()
        .map_err(|e| format!("running the baseline: {e}"))?;
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "baseline output: {e}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn istio_spec(name: &str) -> PluginSpec {
    let mut spec = PluginSpec::new(name, plugin_wasm("weir-plugin-istio").display().to_string());
    let istio = |kind: &str| GrantedKind {
        group: "networking.istio.io".into(),
        kind: kind.into(),
    };
    spec.grant = Grant {
        read: vec![],
        write: vec![istio("VirtualService")],
        namespaces: vec![],
        secrets: vec![],
    };
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    // Thousands of calls a second for one rollout: the per-target rate
    // limit would refuse them (what it is for), so lift it here.
    spec.limits.calls_per_second = u32::MAX;
    spec
}

/// A copy of component `wasm` in `dir` with a custom section holding `i`:
/// the same code under a digest of its own, as distinct third-party
/// plugins would have.
fn distinct_component(wasm: &std::path::Path, dir: &std::path::Path, i: usize) -> PathBuf {
    let mut bytes = std::fs::read(wasm).expect("component");
    let name = b"weir-bench";
    let payload = i.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    bytes.push(0); // custom section
    bytes.push(u8::try_from(size).expect("small section"));
    bytes.push(u8::try_from(name.len()).expect("short name"));
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&payload);
    let path = dir.join(format!("istio-{i}.wasm"));
    // Left alone when it holds these bytes: an installed plugin file.
    if std::fs::read(&path).ok().as_ref() != Some(&bytes) {
        std::fs::write(&path, bytes).expect("write variant");
    }
    path
}

/// The faulty router with no fault configured: a well-behaved no-op.
fn noop_spec(name: &str) -> PluginSpec {
    let mut spec = PluginSpec::new(
        name,
        plugin_wasm("weir-plugin-faulty").display().to_string(),
    );
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    // Thousands of calls a second for one rollout: the per-target rate
    // limit would refuse them (what it is for), so lift it here.
    spec.limits.calls_per_second = u32::MAX;
    spec
}

fn the_rollout() -> Rollout {
    let object = std::fs::read_to_string(repo().join("bench").join("rollout.json"))
        .expect("bench/rollout.json");
    let compact: Value = serde_json::from_str(&object).expect("rollout json");
    let mut r = rollout(
        &json!({"virtualService": {"name": "checkout-vsvc", "routes": ["primary"]}}).to_string(),
    );
    r.object = compact.into();
    r
}

async fn seeded_cluster() -> Arc<MemoryCluster> {
    let cluster = Arc::new(MemoryCluster::new());
    let vs = json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "checkout-vsvc", "namespace": "shop"},
        "spec": {"hosts": ["checkout"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "checkout-stable"}, "weight": 100},
            {"destination": {"host": "checkout-canary"}, "weight": 0}
        ]}]}
    });
    cluster.apply(vec![Write::Create(vs)]).await.expect("seed");
    cluster
}

/// A runtime whose calls run on Cranelift's code, as a controller's do once
/// its plugins are optimised (the call figures measure that steady state;
/// figure 2 measures the tiered start, and Winch's calls on their own).
fn runtime_on(cluster: Arc<MemoryCluster>, cache: Option<PathBuf>) -> PluginRuntime {
    runtime_compiling(cluster, cache, Compiler::Cranelift)
}

/// A runtime whose plugins with no code on hand are compiled by `compiler`.
fn runtime_compiling(
    cluster: Arc<MemoryCluster>,
    cache: Option<PathBuf>,
    compiler: Compiler,
) -> PluginRuntime {
    PluginRuntime::new(
        RuntimeConfig {
            engine: EngineSettings {
                compiler,
                ..EngineSettings::default()
            },
            cache_dir: cache,
            bundle: None,
            recorder: None,
        },
        cluster,
    )
    .expect("runtime")
}

async fn timed_calls(router: &TrafficRouter, r: &Rollout, n: usize) -> Vec<Duration> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        router.set_weight(r, 20, &[]).await.expect("set-weight");
        v.push(t.elapsed());
    }
    v.sort();
    v
}

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / 1048576.0)
}

fn comparison(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let r = the_rollout();
    let cache = tempfile::tempdir().expect("cache dir");
    // Figure 2's 20 distinct plugin files, written now, as plugin files are
    // installed before a controller starts (the digest memo remembers only
    // files whose last change is some seconds old).
    let variants = tempfile::tempdir().expect("variants dir");
    let distinct: Vec<PathBuf> = (0..20)
        .map(|i| distinct_component(&plugin_wasm("weir-plugin-istio"), variants.path(), i))
        .collect();

    // ---- Figure 1: one set-weight with an ~8 KB Rollout.
    let cluster = rt.block_on(seeded_cluster());
    let runtime = runtime_on(cluster, Some(cache.path().to_path_buf()));
    let router = rt
        .block_on(runtime.load_router(istio_spec("bench/istio")))
        .expect("load istio");
    c.bench_function(
        "weir set-weight, fresh instance per call (istio, 8 KB rollout)",
        |b| {
            b.to_async(&rt)
                .iter(|| async { router.set_weight(&r, 20, &[]).await.expect("set-weight") })
        },
    );
    let fresh = rt.block_on(async {
        timed_calls(&router, &r, 500).await;
        timed_calls(&router, &r, 5000).await
    });
    let mut reused = rt
        .block_on(router.bench_set_weight_on_one_instance(&r, 20, 5000))
        .expect("reused");
    reused.sort();
    // ---- The floor: a call that does nothing (the faulty router with no
    // fault: remove-managed-routes returns at once), fresh instance each.
    let noop = rt
        .block_on(runtime.load_router(noop_spec("bench/noop")))
        .expect("load no-op router");
    let small = rollout("{}");
    c.bench_function("weir trivial call, fresh instance per call", |b| {
        b.to_async(&rt).iter(|| async {
            noop.remove_managed_routes(&small)
                .await
                .expect("trivial call")
        })
    });
    let trivial = rt.block_on(async {
        let mut v = Vec::with_capacity(5000);
        for _ in 0..5000 {
            let t = Instant::now();
            noop.remove_managed_routes(&small)
                .await
                .expect("trivial call");
            v.push(t.elapsed());
        }
        v.sort();
        v
    });
    let baseline = go_baseline();

    // ---- Figure 2: 20 plugins ready, cold (compiling) and warm (cache):
    // 20 distinct components (the Istio router with a custom section that
    // makes each digest its own, so nothing is shared), and 20
    // registrations of one component (shared compiled code).
    // Ready: every load returned (a plugin answers calls from then on).
    // Optimised: the tiered compiler's background Cranelift compiles are
    // done too, and cached.
    // On a runtime like the controller's (one worker per core), loading as
    // its preload does (`preload_concurrency` at once).
    let controller_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let startup_with = |cache: Option<PathBuf>, paths: &[PathBuf], compiler: Compiler| {
        controller_rt.block_on(async {
            let runtime = runtime_compiling(seeded_cluster().await, cache, compiler);
            let t = Instant::now();
            load_routers(&runtime, paths).await;
            let ready = t.elapsed();
            runtime.optimized().await;
            (ready, t.elapsed())
        })
    };
    let startup =
        |cache: Option<PathBuf>, paths: &[PathBuf]| startup_with(cache, paths, Compiler::Tiered).0;
    let cold_cache = tempfile::tempdir().expect("cold cache dir");
    let (cold, cold_optimized) = startup_with(
        Some(cold_cache.path().to_path_buf()),
        &distinct,
        Compiler::Tiered,
    );
    // A warm start is short enough to take several: the median of
    // WARM_STARTS, each a fresh runtime (as after a restart), and the range.
    let mut warm_starts: Vec<Duration> = (0..WARM_STARTS)
        .map(|_| startup(Some(cold_cache.path().to_path_buf()), &distinct))
        .collect();
    warm_starts.sort();
    let warm = warm_starts[WARM_STARTS / 2];
    let (warm_min, warm_max) = (warm_starts[0], warm_starts[WARM_STARTS - 1]);
    let cranelift_cache = tempfile::tempdir().expect("cranelift cache dir");
    let (cold_cranelift, _) = startup_with(
        Some(cranelift_cache.path().to_path_buf()),
        &distinct,
        Compiler::Cranelift,
    );
    let one = vec![plugin_wasm("weir-plugin-istio"); 20];
    let shared = startup(Some(cache.path().to_path_buf()), &one);

    // ---- Figure 2, the price of readiness: set-weight on Winch's code,
    // which a cold plugin's calls run on until Cranelift's code is ready.
    let on_winch = rt.block_on(async {
        let winch_cache = tempfile::tempdir().expect("winch cache dir");
        let runtime = runtime_compiling(
            seeded_cluster().await,
            Some(winch_cache.path().to_path_buf()),
            Compiler::Winch,
        );
        let router = runtime
            .load_router(istio_spec("bench/istio-winch"))
            .await
            .expect("load on winch");
        timed_calls(&router, &r, 200).await;
        timed_calls(&router, &r, 2000).await
    });

    // ---- Figure 2, shipped plugins: the first start of a bundled weir
    // (`weir plugin bundle`) with an empty cache: every shipped plugin and
    // the condition component loaded by the controller's own preload.
    let (bundled_ready, bundled_loaded, bundled_compiled) = first_start_bundled(&controller_rt);

    // ---- Figure 3: resident memory per loaded plugin: the 20 distinct
    // components (from the warm cache), and 50 more registrations of one
    // (shared code: what each registration adds on its own).
    let rss_growth = |paths: Vec<PathBuf>, cache: PathBuf| {
        rt.block_on(async {
            let runtime = runtime_on(seeded_cluster().await, Some(cache));
            runtime
                .load_router(istio_spec("bench/warmup"))
                .await
                .expect("load");
            let before = rss_bytes();
            let mut keep = Vec::new();
            for (i, path) in paths.iter().enumerate() {
                let mut spec = istio_spec(&format!("bench/mem-{i}"));
                spec.location = path.display().to_string();
                keep.push(runtime.load_router(spec).await.expect("load"));
            }
            rss_bytes().saturating_sub(before) as f64 / paths.len() as f64
        })
    };
    let per_plugin = rss_growth(distinct.clone(), cold_cache.path().to_path_buf());
    let per_registration = rss_growth(
        vec![plugin_wasm("weir-plugin-istio"); 50],
        cache.path().to_path_buf(),
    );

    // ---- Figure 4: a runaway plugin, 200 runs past a 50 ms deadline.
    let deadline = Duration::from_millis(50);
    let mut overshoot: Vec<Duration> = rt.block_on(async {
        let runtime = runtime_on(
            Arc::new(MemoryCluster::new()),
            Some(cache.path().to_path_buf()),
        );
        let mut spec = PluginSpec::new(
            "bench/loop",
            plugin_wasm("weir-plugin-faulty").display().to_string(),
        );
        spec.limits.timeout_ms = 50;
        spec.fault_policy = FaultPolicy {
            quarantine_after: 0,
            ..FaultPolicy::default()
        };
        let looping = runtime.load_router(spec).await.expect("load");
        let spin = rollout(r#"{"fault":"loop"}"#);
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

    // ---- Figure 6: the Python provider (componentize-py, CPython inside)
    // on a fresh instance per call, reading one ConfigMap.
    let python = rt.block_on(async {
        let (provider, run, metric) = python_provider(Some(cache.path().to_path_buf())).await;
        let mut v = Vec::with_capacity(300);
        for i in 0..330 {
            let t = Instant::now();
            provider.run(&run, &metric).await.expect("python call");
            if i >= 30 {
                v.push(t.elapsed());
            }
        }
        v.sort();
        v
    });

    // ---- Figure 7: one condition evaluated in the condition component,
    // a fresh sandbox each.
    let conditions = rt.block_on(async {
        let runtime = runtime_on(
            Arc::new(MemoryCluster::new()),
            Some(cache.path().to_path_buf()),
        );
        let evaluator = weir::analysis::ConditionEvaluator::load(
            &runtime,
            &plugin_wasm("weir-condition").display().to_string(),
        )
        .await;
        let result = json!([0.97, 0.99]);
        let mut v = Vec::with_capacity(2000);
        for i in 0..2200 {
            let t = Instant::now();
            let verdict = evaluator
                .evaluate("all(result, {# >= 0.95})", &result)
                .await
                .expect("condition");
            assert!(verdict);
            if i >= 200 {
                v.push(t.elapsed());
            }
        }
        v.sort();
        v
    });

    // ---- Instruction counts, under callgrind (the cache holds both
    // components by now).
    let counts: Vec<(&str, Result<u64, String>)> = ["trivial", "set-weight"]
        .into_iter()
        .map(|call| (call, instructions_per_call(cache.path(), call)))
        .collect();

    // ---- Report.
    let p50 = percentile(&fresh, 0.5);
    println!("\n=== Weir sandbox vs Argo's go-plugin transport (one run) ===");
    println!(
        "the Rollout: {} bytes of JSON, sent whole on every call by Go; contract 0.3 passes its record's typed fields and hands the object over only when a router asks (Istio's set-weight does not)",
        r.object.to_string().len()
    );
    println!(
        "[0] trivial call, Weir fresh instance per call: p50 {:?}, p99 {:?} (target p50 <= 10us)",
        percentile(&trivial, 0.5),
        percentile(&trivial, 0.99)
    );
    println!(
        "[1] set-weight, Weir fresh instance per call: p50 {:?}, p99 {:?} (target p50 <= 20us, p99 <= 60us)",
        p50,
        percentile(&fresh, 0.99)
    );
    println!(
        "[1] set-weight, Weir reused instance (reference): p50 {:?}, p99 {:?}",
        percentile(&reused, 0.5),
        percentile(&reused, 0.99)
    );
    match &baseline {
        Ok(go) => {
            let go_p50 = Duration::from_nanos(go["p50_ns"].as_u64().unwrap_or(0));
            let go_p99 = Duration::from_nanos(go["p99_ns"].as_u64().unwrap_or(0));
            println!(
                "[1] set-weight, Go net/rpc+gob child process: p50 {go_p50:?}, p99 {go_p99:?}"
            );
            println!(
                "[1] ratio Go p50 / Weir p50: {:.2}x (target >= 10x)",
                go_p50.as_secs_f64() / p50.as_secs_f64()
            );
            let go_start = Duration::from_nanos(go["startup_ns"].as_u64().unwrap_or(0));
            println!("[2] Go plugin: process start to first answered call: {go_start:?}");
            println!(
                "[3] Go plugin process RSS: {}",
                mib(go["plugin_rss_bytes"].as_f64().unwrap_or(0.0))
            );
        }
        Err(why) => println!("[1-3] baseline: {why}"),
    }
    println!(
        "[2] 20 distinct plugins ready, cold (compiling each): {cold:?} (target <= 1.5s); warm (precompiled cache): {warm:?} (median of {WARM_STARTS} starts, {warm_min:?}..{warm_max:?}; target <= 10ms)"
    );
    println!(
        "[2] cold, tiered: ready on Winch's code in {cold:?}, all on Cranelift's code (compiled in the background, cached) after {cold_optimized:?}; cold with Cranelift alone: ready in {cold_cranelift:?}"
    );
    println!(
        "[2] set-weight on Winch's code (until Cranelift's is ready): p50 {:?}, p99 {:?}",
        percentile(&on_winch, 0.5),
        percentile(&on_winch, 0.99)
    );
    println!("[2] 20 registrations of one plugin ready (compiled code shared): {shared:?}");
    println!(
        "[2] shipped plugins on the first start of a bundled weir (empty cache): {bundled_loaded} loaded, {bundled_compiled} compiled (target 0), all ready in {bundled_ready:?}"
    );
    println!(
        "[3] RSS per loaded plugin: {} per distinct component (20), {} per further registration of one (50)",
        mib(per_plugin),
        mib(per_registration)
    );
    println!(
        "[4] runaway stopped past its {deadline:?} deadline: p50 {:?}, p99 {:?}, max {:?} (200 runs)",
        percentile(&overshoot, 0.5),
        percentile(&overshoot, 0.99),
        overshoot[overshoot.len() - 1]
    );
    println!(
        "[6] Python provider call (componentize-py), fresh instance per call: p50 {:?}, p99 {:?} (target p50 <= 300us)",
        percentile(&python, 0.5),
        percentile(&python, 0.99)
    );
    println!(
        "[7] condition evaluated in the condition component, fresh sandbox each: p50 {:?}, p99 {:?} (target p50 <= 50us)",
        percentile(&conditions, 0.5),
        percentile(&conditions, 0.99)
    );
    for (call, count) in &counts {
        match count {
            Ok(n) => println!("[9] instructions per call (callgrind, fresh instance), {call}: {n}"),
            Err(why) => println!("[9] instructions per call, {call}: {why}"),
        }
    }
    println!(
        "[5] rollouts through a 5-step canary, first deploy, memory per rollout: see `cargo bench --bench fleet`"
    );
}

/// The Python provider loaded on a cluster holding the ConfigMap it reads,
/// and the run and metric it is called with.
async fn python_provider(
    cache: Option<PathBuf>,
) -> (weir::plugin::MetricProvider, AnalysisRun, Metric) {
    let cluster = Arc::new(MemoryCluster::new());
    cluster
        .apply(vec![Write::Create(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "checkout-metrics", "namespace": "shop"},
            "data": {"success-rate": "0.97"}
        }))])
        .await
        .expect("seed");
    let runtime = runtime_on(cluster, cache);
    let mut spec = python_spec("bench/python");
    spec.limits.calls_per_second = u32::MAX;
    let provider = runtime.load_provider(spec).await.expect("load python");
    let run = AnalysisRun {
        namespace: "shop".into(),
        name: "bench-run".into(),
        uid: "u".into(),
        object: "{}".into(),
    };
    let metric = Metric {
        name: "success-rate".into(),
        config: json!({"configMap": "checkout-metrics", "key": "success-rate"}).to_string(),
        object: "{}".into(),
    };
    (provider, run, metric)
}

/// A bundled weir's first start: the shipped components bundled (with this
/// bench's executable standing in for weir's code), then the controller
/// assembled on that bundle with an empty cache and every plugin preloaded.
/// Returns the time to ready, how many loaded, and how many were compiled
/// (entries the cache gained).
fn first_start_bundled(rt: &tokio::runtime::Runtime) -> (Duration, usize, usize) {
    let dir = tempfile::tempdir().expect("bundle dir");
    let components = weir::controller::shipped_component_files()
        .into_iter()
        .map(|file| {
            let bytes = std::fs::read(weir_e2e::controller::plugins_dir().join(&file))
                .expect("a shipped component");
            (file, bytes)
        })
        .collect();
    let exe = dir.path().join("weir");
    weir::plugin::bundle::write(
        &std::env::current_exe().expect("exe"),
        &exe,
        &EngineSettings::default(),
        components,
    )
    .expect("bundle");
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).expect("cache dir");
    rt.block_on(async {
        let started = Instant::now();
        let bundle = weir::plugin::Bundle::open(&exe)
            .expect("open")
            .expect("a bundle");
        let config = weir::controller::ControllerConfig {
            plugins_dir: PathBuf::new(),
            config_namespace: "weir-system".into(),
            settings: weir::controller::ControllerSettings::default(),
            runtime: RuntimeConfig {
                engine: EngineSettings::default(),
                cache_dir: Some(cache.clone()),
                bundle: Some(Arc::new(bundle)),
                recorder: None,
            },
        };
        let cluster: Arc<dyn Cluster> = Arc::new(MemoryCluster::new());
        let assembled = weir::controller::assemble(cluster, config)
            .await
            .expect("assemble");
        let (loaded, failures) = assembled.registry.preload().await;
        assert!(failures.is_empty(), "{failures:?}");
        let ready = started.elapsed();
        let compiled = std::fs::read_dir(&cache)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                    .count()
            })
            .unwrap_or(0);
        (ready, loaded, compiled)
    })
}

/// Loads one Istio router from each of `paths` (`bench/istio-N`), as many
/// at once as the controller's preload does.
async fn load_routers(runtime: &PluginRuntime, paths: &[PathBuf]) {
    use futures_util::StreamExt;
    let at_once = weir::controller::registry::preload_concurrency();
    futures_util::stream::iter(paths.iter().enumerate())
        .map(|(i, path)| async move {
            let mut spec = istio_spec(&format!("bench/istio-{i}"));
            spec.location = path.display().to_string();
            runtime.load_router(spec).await.expect("load")
        })
        .buffer_unordered(at_once)
        .collect::<Vec<_>>()
        .await;
}

/// Warm starts measured for figure 2's median.
const WARM_STARTS: usize = 11;

criterion_group!(benches, comparison);

fn main() {
    if let Ok(what) = std::env::var(BENCH_CHILD) {
        callgrind_child(&what);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// Set in a copy of this bench that only makes calls (under callgrind, or
/// `perf record` to profile one kind of call): `trivial N`, `set-weight N`,
/// `python N`, or `warm N` (N rounds of 20 distinct plugins loaded from the
/// cache), and [`BENCH_CACHE`] for the precompiled cache (so
/// nothing is compiled under valgrind).
const BENCH_CHILD: &str = "WEIR_BENCH_CHILD";
const BENCH_CACHE: &str = "WEIR_BENCH_CACHE";
/// Calls whose instructions are counted, beyond the run with one call.
const COUNTED_CALLS: u64 = 100;

/// Makes the calls `what` names, on a small pool (valgrind cannot map the
/// full pool's reservation).
fn callgrind_child(what: &str) {
    let mut words = what.split(' ');
    let call = words.next().unwrap_or("");
    let n: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    // Loads run as the controller's do, on a worker per core.
    let rt = match call {
        "warm" => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .expect("tokio");
    rt.block_on(async {
        // The trivial and set-weight calls run on a one-slot pool.
        let small_pool = || async {
            let engine = EngineSettings {
                max_concurrent_calls: 1,
                compiler: Compiler::Cranelift,
                ..EngineSettings::default()
            };
            PluginRuntime::new(
                RuntimeConfig {
                    engine,
                    cache_dir: std::env::var_os(BENCH_CACHE).map(PathBuf::from),
                    bundle: None,
                    recorder: None,
                },
                seeded_cluster().await,
            )
            .expect("runtime")
        };
        match call {
            "trivial" => {
                let noop = small_pool()
                    .await
                    .load_router(noop_spec("bench/noop"))
                    .await
                    .expect("load no-op router");
                let small = rollout("{}");
                for _ in 0..n {
                    noop.remove_managed_routes(&small).await.expect("trivial");
                }
            }
            "warm" => {
                // Rounds of 20 distinct components loaded by a fresh runtime
                // from the cache (the first round in a new cache compiles).
                let variants = std::env::temp_dir().join("weir-bench-variants");
                std::fs::create_dir_all(&variants).expect("variants dir");
                let paths: Vec<PathBuf> = (0..20)
                    .map(|i| distinct_component(&plugin_wasm("weir-plugin-istio"), &variants, i))
                    .collect();
                let mut ready = Vec::new();
                for _ in 0..n {
                    let runtime = runtime_on(
                        seeded_cluster().await,
                        std::env::var_os(BENCH_CACHE).map(PathBuf::from),
                    );
                    let t = Instant::now();
                    load_routers(&runtime, &paths).await;
                    ready.push(t.elapsed());
                }
                ready.sort();
                eprintln!(
                    "20 plugins ready, median of {n} rounds: {:?}",
                    ready.get(ready.len() / 2)
                );
            }
            "python" => {
                let (provider, run, metric) =
                    python_provider(std::env::var_os(BENCH_CACHE).map(PathBuf::from)).await;
                for _ in 0..n {
                    provider.run(&run, &metric).await.expect("python call");
                }
            }
            _ => {
                let router = small_pool()
                    .await
                    .load_router(istio_spec("bench/istio"))
                    .await
                    .expect("load istio");
                let r = the_rollout();
                for _ in 0..n {
                    router.set_weight(&r, 20, &[]).await.expect("set-weight");
                }
            }
        }
    });
}

/// The instructions callgrind counted in a child making `what`'s calls.
fn callgrind_total(valgrind: &Path, cache: &Path, what: &str) -> Result<u64, String> {
    let output = std::process::Command::new(valgrind)
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--error-limit=no",
        ])
        .arg(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(BENCH_CHILD, what)
        .env(BENCH_CACHE, cache)
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(format!("valgrind failed on {what:?}: {tail:?}"));
    }
    stderr
        .lines()
        .find_map(|line| {
            let (_, count) = line.split_once("Collected :")?;
            count.trim().parse().ok()
        })
        .ok_or_else(|| format!("no count in callgrind's output for {what:?}"))
}

/// Instructions per call of `call`: the run with 1 + [`COUNTED_CALLS`]
/// calls less the run with one (start-up, loading and the first call's
/// page faults cancel out). Counts user-space instructions only: the
/// kernel's part of a call (page faults, `madvise`) is not in them.
fn instructions_per_call(cache: &Path, call: &str) -> Result<u64, String> {
    let valgrind = which("valgrind")
        .ok_or("valgrind is missing (apt-get install valgrind) for instruction counts")?;
    // Valgrind's CPU lacks some of this one's features, so its engine has
    // its own cache entries: a first run compiles them.
    callgrind_total(&valgrind, cache, &format!("{call} 0"))?;
    let one = callgrind_total(&valgrind, cache, &format!("{call} 1"))?;
    let many = callgrind_total(&valgrind, cache, &format!("{call} {}", 1 + COUNTED_CALLS))?;
    Ok(many.saturating_sub(one) / COUNTED_CALLS)
}
