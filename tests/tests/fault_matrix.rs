//! The fault matrix: every kind of misbehaving plugin, run through the real
//! sandbox with the real built components. Each row must yield its own typed
//! error within the deadline plus a margin; after each row a healthy call
//! succeeds, the faulted plugin answers again from a fresh instance, and
//! nothing the faulty call meant to write has landed. The rows run on
//! Cranelift's code and again on Winch's (the tiered compiler's first code).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, MemoryCluster, ObjectKey, Write};
use weir::plugin::{
    CallError, CallErrorKind, CodeTier, Compiler, EngineSettings, FaultPolicy, Grant, GrantedKind,
    HttpPolicy, PluginRuntime, PluginSpec, ReportedError, TrafficRouter,
};
use weir_e2e::{cache_dir, plugin_wasm, rollout, runtime, runtime_in, runtime_with};

/// Deadline of the calls in the rows that test the deadline itself.
const DEADLINE: Duration = Duration::from_millis(300);
/// Deadline of the other rows: long enough that a loaded CI machine never
/// turns their fault into a timeout.
const GENEROUS: Duration = Duration::from_secs(5);
/// How far past the deadline a call may end. Generous: CI machines are slow
/// and the test binary runs tests in parallel; the benchmarks measure the
/// real overshoot.
const MARGIN: Duration = Duration::from_millis(700);

fn configmaps() -> Grant {
    Grant {
        read: vec![],
        write: vec![GrantedKind {
            group: String::new(),
            kind: "ConfigMap".into(),
        }],
        namespaces: vec![],
        secrets: vec![],
    }
}

fn faulty_spec(name: &str) -> PluginSpec {
    spec_with_deadline(name, GENEROUS)
}

fn spec_with_deadline(name: &str, deadline: Duration) -> PluginSpec {
    let mut spec = PluginSpec::new(
        name,
        plugin_wasm("weir-plugin-faulty").display().to_string(),
    );
    spec.grant = configmaps();
    spec.limits.timeout_ms = deadline.as_millis() as u64;
    // These rows check each fault on its own; quarantine has its own test.
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    spec
}

async fn load_faulty(runtime: &PluginRuntime, name: &str) -> TrafficRouter {
    runtime
        .load_router(faulty_spec(name))
        .await
        .expect("load the faulty router")
}

fn weights_key() -> ObjectKey {
    ObjectKey::new("v1", "ConfigMap", "shop", "checkout-weights")
}

async fn seed_weight(cluster: &MemoryCluster, canary: &str) {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "checkout-weights", "namespace": "shop"},
        "data": {"canary": canary},
    });
    cluster
        .apply(vec![Write::Create(object)])
        .await
        .expect("seed");
}

async fn stored_weight(cluster: &MemoryCluster) -> Option<String> {
    let object = cluster.get(&weights_key()).await.ok()?;
    object["data"]["canary"].as_str().map(str::to_string)
}

/// Runs `fault` through set-weight (or verify-weight) and returns the error and the time it took.
async fn provoke(router: &TrafficRouter, fault: &str, extra: &str) -> (CallError, Duration) {
    let bad = rollout(&format!(r#"{{"fault":"{fault}"{extra}}}"#));
    let started = Instant::now();
    let result = if fault == "invalid-output" {
        router.verify_weight(&bad, 10, &[]).await.map(|_| ())
    } else {
        router.set_weight(&bad, 10, &[]).await
    };
    let elapsed = started.elapsed();
    let error = result.expect_err(&format!("fault {fault} must fail the call"));
    (error, elapsed)
}

/// After a fault: the faulty plugin's next call works (fresh instance), a
/// second healthy plugin works, and the weights are the seeded ones.
async fn assert_recovered(
    router: &TrafficRouter,
    healthy: &TrafficRouter,
    cluster: &MemoryCluster,
    expect: &str,
) {
    assert_eq!(
        stored_weight(cluster).await.as_deref(),
        Some(expect),
        "the faulty call's writes must not land"
    );
    let ok = rollout("{}");
    healthy
        .verify_weight(&ok, expect.parse().unwrap_or(0), &[])
        .await
        .expect("a healthy plugin still answers");
    let v = router
        .verify_weight(&ok, expect.parse().unwrap_or(0), &[])
        .await
        .expect("the faulted plugin answers again from a fresh instance");
    assert_eq!(v.verification, weir::plugin::Verification::Verified);
}

struct Fixture {
    _runtime: PluginRuntime,
    cluster: Arc<MemoryCluster>,
    faulty: TrafficRouter,
    healthy: TrafficRouter,
}

/// A fixture whose plugins run on `compiler`'s code.
async fn fixture(deadline: Duration, compiler: Compiler) -> Fixture {
    let settings = EngineSettings {
        compiler,
        ..EngineSettings::default()
    };
    let (runtime, cluster) = match compiler {
        // A cache of its own: the shared one holds Cranelift's code, which
        // Winch alone would take first.
        Compiler::Winch => runtime_in(settings, cache_dir().join("winch-only")),
        Compiler::Cranelift | Compiler::Tiered => runtime_with(settings),
    };
    let faulty = runtime
        .load_router(spec_with_deadline("test/faulty", deadline))
        .await
        .expect("load the faulty router");
    let tier = match compiler {
        Compiler::Winch => CodeTier::Baseline,
        Compiler::Cranelift | Compiler::Tiered => CodeTier::Optimized,
    };
    assert_eq!(
        faulty.info().tier,
        tier,
        "the row runs on {compiler:?}'s code"
    );
    let healthy = load_faulty(&runtime, "test/healthy").await;
    seed_weight(&cluster, "5").await;
    Fixture {
        _runtime: runtime,
        cluster,
        faulty,
        healthy,
    }
}

async fn row(fault: &str, extra: &str, check: impl Fn(&CallErrorKind)) {
    row_with_deadline(fault, extra, GENEROUS, check).await
}

/// The row on Cranelift's code, then on Winch's.
async fn row_with_deadline(
    fault: &str,
    extra: &str,
    deadline: Duration,
    check: impl Fn(&CallErrorKind),
) {
    for compiler in [Compiler::Cranelift, Compiler::Winch] {
        let f = fixture(deadline, compiler).await;
        let (error, elapsed) = provoke(&f.faulty, fault, extra).await;
        assert!(
            elapsed < deadline + MARGIN,
            "{fault} on {compiler:?}'s code: took {elapsed:?}, past the deadline {deadline:?} + {MARGIN:?}"
        );
        assert_eq!(error.plugin, "test/faulty");
        check(&error.kind);
        let message = error.to_string();
        assert!(
            message.contains("test/faulty"),
            "the message names the plugin: {message}"
        );
        assert_recovered(&f.faulty, &f.healthy, &f.cluster, "5").await;
    }
}

#[tokio::test]
async fn panic_is_a_trap_carrying_the_panic_message() {
    row("panic", "", |kind| match kind {
        CallErrorKind::Trap { guest_output, .. } => {
            assert!(
                guest_output.contains("deliberate panic for rollout checkout"),
                "{guest_output}"
            )
        }
        other => panic!("expected a trap, got {other}"),
    })
    .await;
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_the_deadline() {
    row_with_deadline("loop", "", DEADLINE, |kind| {
        assert!(matches!(kind, CallErrorKind::Timeout { .. }), "got {kind}")
    })
    .await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_cap() {
    row("memory-bomb", "", |kind| match kind {
        CallErrorKind::MemoryLimit { cap, .. } => assert_eq!(*cap, 64 << 20),
        other => panic!("expected a memory limit, got {other}"),
    })
    .await;
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow() {
    row("stack-overflow", "", |kind| {
        assert!(
            matches!(kind, CallErrorKind::StackOverflow { .. }),
            "got {kind}"
        )
    })
    .await;
}

#[tokio::test]
async fn weight_of_250_is_invalid_output() {
    row("invalid-output", "", |kind| match kind {
        CallErrorKind::InvalidOutput(why) => assert!(why.contains("250"), "{why}"),
        other => panic!("expected invalid output, got {other}"),
    })
    .await;
}

#[tokio::test]
async fn sleeping_in_a_host_call_is_stopped_at_the_deadline() {
    row_with_deadline("sleep", "", DEADLINE, |kind| {
        assert!(matches!(kind, CallErrorKind::Timeout { .. }), "got {kind}")
    })
    .await;
}

#[tokio::test]
async fn another_namespace_is_denied() {
    row("other-namespace", "", |kind| match kind {
        CallErrorKind::CapabilityDenied(why) => assert!(why.contains("kube-system"), "{why}"),
        other => panic!("expected a denial, got {other}"),
    })
    .await;
}

#[tokio::test]
async fn a_kind_outside_the_grant_is_denied() {
    row("kind-not-granted", "", |kind| match kind {
        CallErrorKind::CapabilityDenied(why) => {
            assert!(why.contains("Secret") && why.contains("grant"), "{why}")
        }
        other => panic!("expected a denial, got {other}"),
    })
    .await;
}

#[tokio::test]
async fn a_write_followed_by_a_trap_lands_nothing() {
    // The plugin writes canary=99, then panics; `row` checks the stored value is still 5.
    row("write-then-trap", "", |kind| {
        assert!(matches!(kind, CallErrorKind::Trap { .. }), "got {kind}")
    })
    .await;
}

#[tokio::test]
async fn files_are_not_there() {
    row("read-file", "", |kind| match kind {
        CallErrorKind::Reported(ReportedError::Denied(why)) => {
            assert!(why.contains("/etc/hostname"), "{why}")
        }
        other => panic!("expected the plugin to report it could not read, got {other}"),
    })
    .await;
}

#[tokio::test]
async fn the_environment_is_empty() {
    // SAFETY: set before any plugin call; read only by this process's own env lookups.
    unsafe { std::env::set_var("WEIR_TEST_SECRET", "hunter2") };
    row("env-var", "", |kind| match kind {
        CallErrorKind::Reported(ReportedError::Denied(why)) => assert_eq!(why, "no environment"),
        other => panic!("expected the plugin to see no environment, got {other}"),
    })
    .await;
}

#[tokio::test]
async fn sockets_are_denied_and_nothing_connects() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    row(
        "socket",
        &format!(r#","addr":"{addr}""#),
        |kind| match kind {
            CallErrorKind::CapabilityDenied(why) => {
                assert!(why.contains("plugins get no sockets"), "{why}")
            }
            other => panic!("expected a denial, got {other}"),
        },
    )
    .await;
    assert!(
        listener.accept().is_err(),
        "no connection may reach the listener"
    );
}

#[tokio::test]
async fn huge_output_is_over_the_output_cap() {
    let (runtime, cluster) = runtime();
    let mut spec = faulty_spec("test/faulty");
    // Room to build a 100 MiB string, so the output cap, not memory, stops it.
    spec.limits.memory_mib = 256;
    let faulty = runtime.load_router(spec).await.expect("load");
    let healthy = load_faulty(&runtime, "test/healthy").await;
    seed_weight(&cluster, "5").await;
    let (error, elapsed) = provoke(&faulty, "huge-output", "").await;
    assert!(elapsed < GENEROUS + MARGIN, "took {elapsed:?}");
    match error.kind {
        CallErrorKind::OutputTooLarge { size, cap } => {
            assert_eq!(size, 100 << 20);
            assert_eq!(cap, 1 << 20);
        }
        other => panic!("expected output too large, got {other}"),
    }
    assert_recovered(&faulty, &healthy, &cluster, "5").await;
}

#[tokio::test]
async fn log_flood_is_bounded_and_counted() {
    let f = fixture(GENEROUS, Compiler::Cranelift).await;
    let flood = rollout(r#"{"fault":"log-flood"}"#);
    f.faulty
        .set_weight(&flood, 40, &[])
        .await
        .expect("a flood of logs does not fail the call");
    let stats = f.faulty.stats();
    assert_eq!(stats.log_lines, 1_000, "lines kept per call are capped");
    assert_eq!(
        stats.logs_dropped, 199_000,
        "the rest are counted as dropped"
    );
    assert_eq!(stored_weight(&f.cluster).await.as_deref(), Some("40"));
}

#[tokio::test]
async fn stdout_flood_keeps_the_panic_message_and_stays_bounded() {
    row("stdout-flood-then-panic", "", |kind| match kind {
        CallErrorKind::Trap { guest_output, .. } => {
            assert!(
                guest_output.contains("the real reason, after the noise"),
                "tail kept"
            );
            assert!(guest_output.contains("noise 0"), "head kept");
            assert!(guest_output.contains("bytes elided"));
            assert!(
                guest_output.len() < 20_000,
                "bounded: {} bytes",
                guest_output.len()
            );
        }
        other => panic!("expected a trap, got {other}"),
    })
    .await;
}

#[tokio::test]
async fn http_to_a_host_off_the_allow_list_is_denied_and_never_sent() {
    let (runtime, _cluster) = runtime();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let mut spec = PluginSpec::new(
        "test/probe",
        plugin_wasm("weir-plugin-probe").display().to_string(),
    );
    spec.http = HttpPolicy {
        allow_hosts: vec!["prometheus.monitoring.svc".into()],
        ..HttpPolicy::default()
    };
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    let probe = runtime.load_provider(spec).await.expect("load");
    let run = weir::plugin::AnalysisRun {
        namespace: "shop".into(),
        name: "run-1".into(),
        uid: "u".into(),
        object: "{}".into(),
    };
    let metric = weir::plugin::Metric {
        name: "probe".into(),
        config: format!(r#"{{"url":"http://{addr}/value"}}"#),
        object: "{}".into(),
    };
    let error = probe.run(&run, &metric).await.expect_err("must be denied");
    match &error.kind {
        CallErrorKind::CapabilityDenied(why) => {
            assert!(
                why.contains("127.0.0.1") && why.contains("allowHosts"),
                "names the host and the setting: {why}"
            )
        }
        other => panic!("expected a denial, got {other}"),
    }
    assert!(listener.accept().is_err(), "the request must never be sent");
}

#[tokio::test]
async fn failing_init_fails_the_load_with_the_plugins_message() {
    let (runtime, _) = runtime();
    let mut spec = faulty_spec("test/faulty");
    spec.args = vec!["fail-init".into()];
    let error = runtime
        .load_router(spec)
        .await
        .err()
        .expect("load must fail");
    let message = error.to_string();
    assert!(message.contains("test/faulty"), "{message}");
    assert!(
        message.contains("init refused: registration argument fail-init was given"),
        "{message}"
    );
    assert!(matches!(error.kind, weir::plugin::LoadErrorKind::Init(_)));
}

#[tokio::test]
async fn repeated_faults_quarantine_the_plugin_and_a_healthy_trial_releases_it() {
    let (runtime, _cluster) = runtime();
    let mut spec = faulty_spec("test/faulty");
    spec.fault_policy = FaultPolicy {
        quarantine_after: 2,
        backoff_ms: 400,
        max_backoff_ms: 400,
    };
    let faulty = runtime.load_router(spec).await.expect("load");
    provoke(&faulty, "panic", "").await;
    provoke(&faulty, "panic", "").await;
    let started = Instant::now();
    let healthy_call = faulty.set_weight(&rollout("{}"), 10, &[]).await;
    let error = healthy_call.expect_err("quarantined: even a healthy call fails fast");
    assert!(
        matches!(error.kind, CallErrorKind::Quarantined { faults: 2, .. }),
        "got {}",
        error.kind
    );
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "fails fast, without running the plugin"
    );
    assert!(
        error
            .to_string()
            .contains("quarantined after 2 consecutive faults")
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    faulty
        .set_weight(&rollout("{}"), 10, &[])
        .await
        .expect("after the backoff a healthy trial call runs and succeeds");
    provoke(&faulty, "panic", "").await;
    faulty
        .set_weight(&rollout("{}"), 11, &[])
        .await
        .expect("one fault after a reset does not quarantine");
}
