//! Containment of the host's own work: the fault-matrix rows for work a
//! plugin call makes the host do (patches, documents, staged writes, cluster
//! requests, log lines, loads, memories across core instances, pool slots,
//! call rates). Each row provokes the fault through the public API with the
//! real built component (or a hostile component built here), prints the
//! typed error and the time it took, and then checks: the process is
//! alive, a healthy plugin's call succeeds (it was not quarantined), the
//! store reads back every object, and nothing the faulty call staged landed.

use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, DurableCluster, MemoryCluster};
use weir::plugin::{
    CallError, CallErrorKind, EngineSettings, Limit, LoadErrorKind, PluginRuntime, PluginSpec,
    RuntimeConfig, TrafficRouter,
};
use weir_e2e::{cache_dir, faulty_spec, hostile, plugin_wasm, rollout, rss_bytes};

/// The default deadline: the rows run under the limits operators get.
const DEADLINE: Duration = Duration::from_secs(2);
/// How far past the deadline a call may end on a loaded CI machine.
const MARGIN: Duration = Duration::from_millis(700);

struct Row {
    _runtime: PluginRuntime,
    cluster: Arc<dyn Cluster>,
    faulty: TrafficRouter,
    healthy: TrafficRouter,
}

async fn row_on(cluster: Arc<dyn Cluster>, spec: PluginSpec) -> Row {
    let config = RuntimeConfig {
        engine: EngineSettings::default(),
        cache_dir: Some(cache_dir()),
        bundle: None,
        recorder: None,
    };
    let runtime = PluginRuntime::new(config, cluster.clone()).expect("runtime");
    let faulty = runtime
        .load_router(spec)
        .await
        .expect("load the faulty router");
    let healthy = runtime
        .load_router(faulty_spec("test/healthy", DEADLINE))
        .await
        .expect("load the healthy router");
    Row {
        _runtime: runtime,
        cluster,
        faulty,
        healthy,
    }
}

async fn row() -> Row {
    row_on(
        Arc::new(MemoryCluster::new()),
        faulty_spec("test/faulty", DEADLINE),
    )
    .await
}

/// Runs `fault` (with `extra` configuration) through set-weight; returns
/// the error and the time it took, printed for the record.
async fn provoke(row: &Row, fault: &str, extra: &str) -> (CallError, Duration) {
    let bad = rollout(&format!(r#"{{"fault":"{fault}"{extra}}}"#));
    let started = Instant::now();
    let result = row.faulty.set_weight(&bad, 10, &[]).await;
    let elapsed = started.elapsed();
    let error = result.expect_err(&format!("{fault} must fail the call"));
    println!("row {fault}: {elapsed:?}: {error}");
    (error, elapsed)
}

fn expect_limit(error: &CallError, limit: Limit) {
    match &error.kind {
        CallErrorKind::LimitExceeded { limit: hit, .. } => {
            assert_eq!(*hit, limit, "{error}");
            let message = error.to_string();
            assert!(
                message.contains(&format!("`limits.{}`", limit.field())),
                "the message names the field to raise: {message}"
            );
        }
        other => panic!("expected {limit} to be exceeded, got {other}"),
    }
    assert!(error.is_fault(), "charged to the plugin that caused it");
}

/// After a row: a healthy plugin works, the faulted one answers again, the
/// store reads back every object, and none of the faulty call's objects landed.
async fn assert_contained(row: &Row) {
    row.healthy
        .set_weight(&rollout("{}"), 30, &[])
        .await
        .expect("a healthy plugin's call succeeds");
    row.faulty
        .verify_weight(&rollout("{}"), 30, &[])
        .await
        .expect("the faulted plugin answers again from a fresh instance");
    let objects = row
        .cluster
        .list("", "ConfigMap", "shop", &[])
        .await
        .expect("the store reads back every object");
    let names: Vec<&str> = objects
        .iter()
        .filter_map(|o| o.pointer("/metadata/name").and_then(|n| n.as_str()))
        .collect();
    assert_eq!(
        names,
        vec!["checkout-weights"],
        "only the healthy write landed"
    );
}

#[tokio::test]
async fn a_patch_that_copies_a_subtree_into_itself_is_refused_before_it_nests() {
    let row = row().await;
    let (error, elapsed) = provoke(&row, "patch-deep-copy", "").await;
    expect_limit(&error, Limit::DocumentDepth);
    assert!(
        elapsed < DEADLINE,
        "refused before any deep work: {elapsed:?}"
    );
    assert_contained(&row).await;
}

#[tokio::test]
async fn a_patch_that_doubles_the_object_stops_at_document_bytes() {
    let row = row().await;
    let before = rss_bytes();
    let (error, elapsed) = provoke(&row, "patch-size-doubling", r#","count":24"#).await;
    expect_limit(&error, Limit::DocumentBytes);
    assert!(elapsed < DEADLINE, "{elapsed:?}");
    let growth = rss_bytes().saturating_sub(before);
    assert!(growth < 256 << 20, "RSS grew {growth} bytes");
    assert_contained(&row).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_that_move_a_large_array_end_at_the_deadline_without_stalling_other_calls() {
    let row = row().await;
    // Two calls at once, each inserting 20,000 times at the front of a
    // 400,000-element array (about 250 GB of moves each if left to run).
    let bomb = |router: TrafficRouter| async move {
        let bad = rollout(r#"{"fault":"patch-many-adds","size":400000,"count":20000}"#);
        let started = Instant::now();
        let result = router.set_weight(&bad, 10, &[]).await;
        (result, started.elapsed())
    };
    let first = tokio::spawn(bomb(row.faulty.clone()));
    let second = tokio::spawn(bomb(row.faulty.clone()));
    // Meanwhile other calls keep being served promptly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for weight in 0..5 {
        let started = Instant::now();
        row.healthy
            .set_weight(&rollout("{}"), weight, &[])
            .await
            .expect("healthy call during the bombs");
        slowest = slowest.max(started.elapsed());
    }
    println!("row patch-many-adds: slowest healthy call meanwhile {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "the async runtime stalled: a healthy call took {slowest:?}"
    );
    for task in [first, second] {
        let (result, elapsed) = task.await.expect("join");
        let error = result.expect_err("the bomb fails");
        println!("row patch-many-adds: {elapsed:?}: {error}");
        assert!(
            matches!(error.kind, CallErrorKind::Timeout { .. }),
            "{error}"
        );
        assert!(elapsed < DEADLINE + MARGIN, "ran {elapsed:?}");
    }
    assert_contained(&row).await;
}

#[tokio::test]
async fn a_deeply_nested_object_never_reaches_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Cluster> =
        Arc::new(DurableCluster::open(&dir.path().join("store.redb")).expect("store"));
    let row = row_on(store, faulty_spec("test/faulty", DEADLINE)).await;
    let (error, elapsed) = provoke(&row, "deep-object", r#","size":800"#).await;
    expect_limit(&error, Limit::DocumentDepth);
    assert!(elapsed < DEADLINE, "{elapsed:?}");
    assert_contained(&row).await;
}

#[tokio::test]
async fn thousands_of_creates_stop_at_staged_objects() {
    let row = row().await;
    let (error, _) = provoke(&row, "many-creates", r#","count":20000,"size":10"#).await;
    expect_limit(&error, Limit::StagedObjects);
    assert_contained(&row).await;
}

#[tokio::test]
async fn a_ten_megabyte_object_is_refused_at_document_bytes() {
    let row = row().await;
    let (error, _) = provoke(&row, "many-creates", r#","count":40,"size":10000000"#).await;
    expect_limit(&error, Limit::DocumentBytes);
    assert_contained(&row).await;
}

#[tokio::test]
async fn large_objects_stop_at_staged_bytes() {
    let row = row().await;
    let (error, _) = provoke(&row, "many-creates", r#","count":10,"size":900000"#).await;
    expect_limit(&error, Limit::StagedBytes);
    assert_contained(&row).await;
}

#[tokio::test]
async fn a_flood_of_reads_stops_at_api_requests() {
    let row = row().await;
    let (error, elapsed) = provoke(&row, "request-flood", r#","count":38000"#).await;
    expect_limit(&error, Limit::ApiRequests);
    assert!(elapsed < DEADLINE, "{elapsed:?}");
    assert_contained(&row).await;
}

#[tokio::test]
async fn huge_log_lines_keep_only_their_cut_and_the_call_succeeds() {
    // Lifting 110 lines of 32 MiB out of the guest is 3.5 GB of copying:
    // a deadline that leaves room for it on a slow machine.
    let row = row_on(
        Arc::new(MemoryCluster::new()),
        faulty_spec("test/faulty", Duration::from_secs(20)),
    )
    .await;
    let before = rss_bytes();
    let flood = rollout(r#"{"fault":"log-bomb","size":33554432,"count":110}"#);
    let started = Instant::now();
    let result = row.faulty.set_weight(&flood, 10, &[]).await;
    println!(
        "row log-bomb: {:?}: {result:?}; RSS {} -> {} MiB",
        started.elapsed(),
        before >> 20,
        rss_bytes() >> 20
    );
    result.expect("a flood of logs does not fail the call");
    let growth = rss_bytes().saturating_sub(before);
    assert!(
        growth < 256 << 20,
        "32 MiB lines must not be kept: RSS grew {growth} bytes"
    );
    let stats = row.faulty.stats();
    assert_eq!(stats.log_lines, 110, "every line kept, cut to 2 KiB");
    assert_eq!(stats.logs_dropped, 0);
}

#[tokio::test]
async fn calls_for_one_rollout_past_its_rate_fail_fast_without_faulting() {
    let row = row().await;
    let mut limited = None;
    for weight in 0..100 {
        if let Err(e) = row.faulty.set_weight(&rollout("{}"), weight, &[]).await {
            limited = Some((weight, e));
            break;
        }
    }
    let (at, error) = limited.expect("the rate limit is reached");
    println!("row call-rate: call {at} refused: {error}");
    assert!(
        matches!(error.kind, CallErrorKind::RateLimited { rate: 20, .. }),
        "{error}"
    );
    assert!(
        !error.is_fault(),
        "a refused call is not the plugin's fault"
    );
    assert!(at >= 40, "a burst of twice the rate is allowed first: {at}");
    assert!(error.to_string().contains("limits.callsPerSecond"));
    // Another rollout served by the same plugin is not affected.
    let mut other = rollout("{}");
    other.name = "cart".into();
    row.faulty
        .set_weight(&other, 10, &[])
        .await
        .expect("another rollout's calls go on");
}

/// A registration for a hostile component written to a temporary file.
fn hostile_spec(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PluginSpec {
    let path = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).expect("write component");
    let mut spec = faulty_spec(&format!("test/{name}"), DEADLINE);
    spec.location = path.display().to_string();
    spec
}

fn faulty_bytes() -> Vec<u8> {
    std::fs::read(plugin_wasm("weir-plugin-faulty")).expect("faulty component")
}

#[tokio::test]
async fn the_memory_cap_is_the_calls_across_every_core_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (runtime, _cluster) = weir_e2e::runtime();
    // Three more memories declared at 40 MiB: each under the 64 MiB cap,
    // together over it; refused before compiling.
    let declared = hostile::with_extra_memories(&faulty_bytes(), 3, 640);
    let error = runtime
        .load_router(hostile_spec(&dir, "declared", &declared))
        .await
        .err()
        .expect("the load fails");
    println!("row memory-declared: {error}");
    assert!(
        matches!(
            error.kind,
            LoadErrorKind::OverLoadLimit {
                limit: Limit::MemoryMiB,
                ..
            }
        ),
        "{error}"
    );
    // The same memories grown at instantiation: the call's limiter sums them.
    let spread = hostile::with_growing_memories(&faulty_bytes(), 3, 640);
    let error = runtime
        .load_router(hostile_spec(&dir, "spread", &spread))
        .await
        .err()
        .expect("the load fails");
    println!("row memory-per-call: {error}");
    match &error.kind {
        LoadErrorKind::Init(call) => match &call.kind {
            CallErrorKind::MemoryLimit { requested, cap } => {
                assert_eq!(*cap, 64 << 20);
                assert!(*requested > 64 << 20);
            }
            other => panic!("expected the memory limit, got {other}"),
        },
        other => panic!("expected init to fail, got {other}"),
    }
    assert!(error.to_string().contains("limits.memoryMiB"), "{error}");
    // Sixteen memories: more than a call's share of the pool, refused at load.
    let many = hostile::with_extra_memories(&faulty_bytes(), 15, 1);
    let error = runtime
        .load_router(hostile_spec(&dir, "many", &many))
        .await
        .err()
        .expect("the load fails");
    println!("row memories-per-call: {error}");
    assert!(
        matches!(
            error.kind,
            LoadErrorKind::OverCallShare {
                what: "linear memories",
                found: 16,
                share: 4
            }
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_at_its_share_of_the_pool_cannot_starve_a_bystander() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (runtime, _cluster) = weir_e2e::runtime();
    // Four memories per call (the share) and a loop: every call holds its
    // slots until its deadline.
    let greedy_bytes = hostile::with_extra_memories(&faulty_bytes(), 3, 1);
    let mut spec = hostile_spec(&dir, "greedy", &greedy_bytes);
    spec.limits.timeout_ms = 1_000;
    spec.limits.calls_per_second = 0;
    let greedy = runtime.load_router(spec).await.expect("load");
    let bystander = runtime
        .load_router(faulty_spec("test/bystander", DEADLINE))
        .await
        .expect("load");
    let mut hogs = Vec::new();
    for i in 0..32 {
        let greedy = greedy.clone();
        hogs.push(tokio::spawn(async move {
            let mut r = rollout(r#"{"fault":"loop"}"#);
            r.name = format!("hog-{i}");
            greedy.set_weight(&r, 1, &[]).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for weight in 0..8 {
        let mut r = rollout("{}");
        r.name = format!("app-{weight}");
        bystander
            .set_weight(&r, weight, &[])
            .await
            .expect("the bystander's calls succeed while the greedy plugin runs");
    }
    for hog in hogs {
        let error = hog.await.expect("join").expect_err("hogs time out");
        assert!(
            matches!(error.kind, CallErrorKind::Timeout { .. }),
            "{error}"
        );
    }
    assert_eq!(
        bystander.stats().count("ok"),
        8 + 1,
        "no bystander call failed"
    );
}

#[tokio::test]
async fn a_component_of_a_million_functions_is_refused_before_compiling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (runtime, _cluster) = weir_e2e::runtime();
    let bytes = hostile::many_functions(1_000_000);
    let spec = hostile_spec(&dir, "functions", &bytes);
    let before = rss_bytes();
    let started = Instant::now();
    let error = runtime
        .load_router(spec.clone())
        .await
        .err()
        .expect("refused");
    let elapsed = started.elapsed();
    println!(
        "row load-functions: {} bytes refused in {elapsed:?}: {error}",
        bytes.len()
    );
    assert!(
        matches!(
            error.kind,
            LoadErrorKind::OverLoadLimit {
                limit: Limit::Functions,
                found: 1_000_000,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "not compiled: {elapsed:?}"
    );
    assert!(rss_bytes().saturating_sub(before) < 256 << 20);
    let inspection = runtime.inspect(&spec.location, spec.limits.clone()).await;
    let verdict = inspection
        .verdict
        .expect_err("inspect agrees with the load");
    assert!(verdict.contains("limits.functions"), "{verdict}");
}

#[tokio::test]
async fn inspect_says_what_a_load_says_about_a_huge_memory_minimum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (runtime, _cluster) = weir_e2e::runtime();
    // A 3 GiB memory minimum: compiles fine, can never be instantiated.
    let bytes = hostile::with_extra_memories(&faulty_bytes(), 1, 49_152);
    let spec = hostile_spec(&dir, "minimum", &bytes);
    let inspection = runtime.inspect(&spec.location, spec.limits.clone()).await;
    let verdict = inspection.verdict.expect_err("NOT usable");
    println!("row inspect-minimum: {verdict}");
    assert!(verdict.contains("`limits.memoryMiB`"), "{verdict}");
    let error = runtime
        .load_router(spec)
        .await
        .err()
        .expect("the load fails");
    assert!(
        error.to_string().ends_with(&verdict),
        "the load says what inspect said: {error}"
    );
    // And a healthy plugin inspects OK.
    let ok = runtime
        .inspect(
            &plugin_wasm("weir-plugin-faulty").display().to_string(),
            Default::default(),
        )
        .await;
    assert!(ok.verdict.is_ok(), "{:?}", ok.verdict);
}

#[tokio::test]
async fn a_limit_named_in_an_error_is_the_field_a_registration_accepts() {
    let row = row().await;
    let (error, _) = provoke(&row, "many-creates", r#","count":20000,"size":10"#).await;
    let mut named = Vec::new();
    for message in [
        error.to_string(),
        weir::plugin::CallErrorKind::MemoryLimit {
            requested: 1,
            cap: 1,
        }
        .to_string(),
        weir::plugin::CallErrorKind::Timeout {
            limit: Duration::from_secs(1),
        }
        .to_string(),
    ] {
        let field = message
            .split("`limits.")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .unwrap_or_else(|| panic!("no `limits.X` in {message}"))
            .to_string();
        named.push(field);
    }
    assert_eq!(named, ["stagedObjects", "memoryMiB", "timeoutMs"]);
    for field in named {
        let cm = serde_json::json!({"data": {"trafficRouterPlugins": format!(
            "- name: acme/mesh\n  location: file:///p/mesh.wasm\n  limits: {{{field}: 7}}\n"
        )}});
        let parsed = weir::controller::registry::parse_config_map(&cm).unwrap_or_else(|e| {
            panic!("`limits.{field}` from an error message must register: {e}")
        });
        let spec = parsed.values().next().expect("one plugin");
        let limit = Limit::ALL
            .into_iter()
            .find(|l| l.field() == field)
            .expect("a known limit");
        assert_eq!(spec.limits.value_of(limit), 7, "{field}");
    }
}

/// Every call gets a fresh instance, and a pooled slot is reset between
/// calls (rewritten in place for the first `KeepResident` bytes, dropped
/// beyond): nothing one call leaves, in a static counter or in memory on
/// either side of that boundary, is visible to the next, sequentially or
/// with calls running at once and slots changing hands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_sees_what_an_earlier_call_left_in_its_instance() {
    let mut spec = faulty_spec("test/remember", DEADLINE);
    spec.limits.calls_per_second = 0;
    let row = row_on(Arc::new(MemoryCluster::new()), spec).await;
    let remember = rollout(r#"{"fault": "remember"}"#);
    for i in 0..200 {
        if let Err(e) = row.faulty.set_weight(&remember, 10, &[]).await {
            panic!("call {i} saw an earlier call's state: {e}");
        }
    }
    let mut tasks = Vec::new();
    for t in 0..8 {
        let faulty = row.faulty.clone();
        // One rollout per task: their weight writes do not conflict.
        let mut remember = remember.clone();
        remember.name = format!("app-{t}");
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                if let Err(e) = faulty.set_weight(&remember, 10, &[]).await {
                    panic!("task {t}, call {i} saw an earlier call's state: {e}");
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    // The control: two calls on one reused instance (what no real call
    // does), and the second one sees the first's counter and marks.
    let reused = row
        .faulty
        .bench_set_weight_on_one_instance(&remember, 10, 2)
        .await
        .expect_err("a reused instance carries state");
    assert!(
        reused.to_string().contains("state carried over: this instance served 1 calls before; marks found at [0, 1576960, 3145727]"),
        "{reused}"
    );
    println!(
        "400 calls, none saw an earlier call's counter or memory marks; a reused instance did: {reused}"
    );
}
