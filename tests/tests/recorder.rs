//! The flight recorder and replay, with the real sandbox and real built
//! plugins: a faulted call is recorded with the host answers it got,
//! replays offline to the same outcome, and against a fixed build shows
//! the fix; a sampled HTTP call replays with the server gone; credentials
//! never reach a recording; the ring stays bounded; the CLI and the
//! Rollout's `PluginFailed` condition point at the recording.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, MemoryCluster, ObjectKey, Write};
use weir::plugin::recorder::{RecorderConfig, Recording, load_recording, replay};
use weir::plugin::{
    EngineSettings, FaultPolicy, GrantedKind, HttpPolicy, MeasurementPhase, PluginRuntime,
    PluginSpec, RuntimeConfig,
};
use weir_e2e::{
    Answer, ScriptedServer, cache_dir, contract_metric, contract_run, faulty_spec, plugin_wasm,
    rollout, weir_binary,
};

fn config_recording_to(recorder: Option<RecorderConfig>) -> RuntimeConfig {
    RuntimeConfig {
        engine: EngineSettings::default(),
        cache_dir: Some(cache_dir()),
        bundle: None,
        recorder,
    }
}

fn recording_runtime(dir: &Path, cluster: Arc<dyn Cluster>) -> PluginRuntime {
    PluginRuntime::new(config_recording_to(Some(RecorderConfig::new(dir))), cluster)
        .expect("runtime")
}

/// The faulty router's build with its `trust-stored-weight` bug fixed.
fn fixed_build() -> PathBuf {
    plugin_wasm("weir-plugin-faulty").with_file_name("weir_plugin_faulty_fixed.wasm")
}

/// Waits for the recorder's background writer to put `path` on disk.
async fn written(path: &str) -> Recording {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if Path::new(path).exists() {
            return load_recording(Path::new(path)).expect("a readable recording");
        }
        assert!(Instant::now() < deadline, "{path} was never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The weights ConfigMap the faulty router keeps, holding `canary`.
fn weights(canary: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "checkout-weights", "namespace": "shop"},
        "data": {"canary": canary},
    })
}

async fn stored_canary(cluster: &MemoryCluster) -> String {
    let key = ObjectKey::new("v1", "ConfigMap", "shop", "checkout-weights");
    let object = cluster.get(&key).await.expect("the weights ConfigMap");
    object["data"]["canary"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A trap on state the cluster held (a weight a bad write left behind):
/// recorded with that state, so the fault reproduces offline.
async fn record_the_stored_weight_trap(dir: &Path) -> (String, Arc<MemoryCluster>) {
    let cluster = Arc::new(MemoryCluster::new());
    cluster
        .apply(vec![Write::Create(weights("fifty"))])
        .await
        .expect("seed");
    let runtime = recording_runtime(dir, cluster.clone());
    let router = runtime
        .load_router(faulty_spec("acme/faulty", Duration::from_secs(2)))
        .await
        .expect("load");
    let error = router
        .set_weight(&rollout(r#"{"fault":"trust-stored-weight"}"#), 30, &[])
        .await
        .expect_err("the stored weight is not a number: the plugin traps");
    println!("live: {error}");
    assert_eq!(error.kind.name(), "trap", "{error}");
    let path = error.recording.clone().expect("a faulted call is recorded");
    (path, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulted_call_is_recorded_and_replays_offline_to_the_same_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, cluster) = record_the_stored_weight_trap(dir.path()).await;
    let recording = written(&path).await;
    assert_eq!(recording.reason, "fault");
    assert_eq!(recording.outcome.kind, "trap");
    assert!(recording.outcome.fault);
    assert_eq!(recording.call.method_name(), "set-weight");
    assert_eq!(recording.target.as_deref(), Some("shop/checkout"));
    assert!(
        recording
            .outcome
            .error
            .as_deref()
            .unwrap_or("")
            .contains("ParseIntError"),
        "the guest's panic message is kept: {:?}",
        recording.outcome.error
    );
    let read = serde_json::to_string(&recording.answers).expect("json");
    assert!(
        read.contains("cluster-get") && read.contains("fifty"),
        "the cluster read and its answer are on the tape: {read}"
    );
    assert!(recording.staged_writes.is_empty());

    // The cluster is changed afterwards: the replay uses the recorded answer.
    cluster
        .apply(vec![Write::update_as_read({
            let key = ObjectKey::new("v1", "ConfigMap", "shop", "checkout-weights");
            let mut object = cluster.get(&key).await.expect("get");
            object["data"]["canary"] = json!("20");
            object
        })])
        .await
        .expect("update");

    let replayed = replay(&config_recording_to(None), &recording, None)
        .await
        .expect("replay");
    println!("{}", replayed.render());
    assert!(replayed.same_build);
    assert!(replayed.same(), "{}", replayed.render());
    assert_eq!(replayed.replayed.kind, "trap");
    assert!(
        replayed.divergences.is_empty(),
        "{:?}",
        replayed.divergences
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_against_the_fixed_build_shows_the_fix_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, cluster) = record_the_stored_weight_trap(dir.path()).await;
    let recording = written(&path).await;
    let fixed = fixed_build().display().to_string();
    let report = replay(&config_recording_to(None), &recording, Some(&fixed))
        .await
        .expect("replay");
    let text = report.render();
    println!("{text}");
    assert!(!report.same_build);
    assert!(!report.same(), "{text}");
    assert_eq!(report.replayed.kind, "ok", "{text}");
    assert!(!report.replayed.fault);
    // The fix would have written the new weight: shown, never applied.
    assert_eq!(report.replayed_writes.len(), 1, "{text}");
    let staged = serde_json::to_value(&report.replayed_writes[0]).expect("json");
    assert_eq!(staged["object"]["data"]["canary"], json!("30"), "{staged}");
    assert!(text.contains("+ "), "{text}");
    assert!(text.contains("DIFFERENT"), "{text}");
    assert_eq!(
        stored_canary(&cluster).await,
        "fifty",
        "nothing was written"
    );

    // Replaying the recorded location after it changed is refused, naming the way out.
    let moved = tempfile::tempdir().expect("tempdir");
    let swapped = moved.path().join("faulty.wasm");
    std::fs::copy(fixed_build(), &swapped).expect("copy");
    let mut elsewhere = recording.clone();
    elsewhere.plugin.location = swapped.display().to_string();
    let refused = replay(&config_recording_to(None), &elsewhere, None)
        .await
        .expect_err("another build at the recorded location");
    let message = refused.to_string();
    assert!(
        message.contains("no longer the recorded build") && message.contains("--plugin"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_http_call_replays_with_the_recorded_responses_after_the_server_is_gone() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"data": {"rate": 0.97}}"#)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut recorder = RecorderConfig::new(dir.path());
    recorder.sample_every = 1;
    let runtime = PluginRuntime::new(
        config_recording_to(Some(recorder)),
        Arc::new(MemoryCluster::new()),
    )
    .expect("runtime");
    let mut spec = PluginSpec::new(
        "argoproj/web",
        plugin_wasm("weir-plugin-web").display().to_string(),
    );
    spec.http = HttpPolicy {
        allow_hosts: vec![server.addr.to_string()],
        ..HttpPolicy::default()
    };
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    let provider = runtime.load_provider(spec).await.expect("load web");
    let token = "sk-live-0123456789abcdef";
    let metric = contract_metric(json!({
        "url": format!("http://{}/rate?api_key=qk-998877", server.addr),
        "jsonPath": "{$.data.rate}",
        "headers": [{"key": "Authorization", "value": format!("Bearer {token}")}],
    }));
    let measured = provider
        .run(&contract_run(), &metric)
        .await
        .expect("measured");
    assert_eq!(measured.phase, MeasurementPhase::Successful);
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The init at load and the run are both sampled; take the run's.
    let plugin_dir = dir.path().join("argoproj_web");
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        let found = std::fs::read_dir(&plugin_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    // Not the `.partial` file a recording is written to
                    // before it is renamed into place.
                    .find(|p| {
                        let name = p.to_string_lossy();
                        name.contains("-run-ok") && name.ends_with(".json")
                    })
            })
            .ok()
            .flatten();
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < deadline, "no recording of the run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = std::fs::read_to_string(&file).expect("read");
    for leaked in [token, "qk-998877"] {
        assert!(!text.contains(leaked), "{leaked} leaked into {text}");
    }
    let recording = load_recording(&file).expect("recording");
    assert_eq!(recording.reason, "sample");
    assert!(
        recording
            .redactions
            .iter()
            .any(|r| r.contains("authorization")),
        "{:?}",
        recording.redactions
    );
    let exchange = serde_json::to_value(&recording.answers).expect("json");
    assert!(
        exchange.to_string().contains("0.97"),
        "the response body is on the tape: {exchange}"
    );

    // The server is gone: the replay is served from the recording.
    drop(server);
    let report = replay(&config_recording_to(None), &recording, None)
        .await
        .expect("replay");
    println!("{}", report.render());
    assert!(report.same(), "{}", report.render());
    assert!(report.divergences.is_empty(), "{:?}", report.divergences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_credentials_never_reach_a_recording() {
    let token = "mesh-token-5f2a9c71";
    let args_secret = "argsecret-31337";
    let cluster = Arc::new(MemoryCluster::new());
    cluster
        .apply(vec![Write::Create(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "checkout-creds", "namespace": "shop"},
            "stringData": {"token": token},
            "data": {"other": "b3RoZXItc2VjcmV0LXZhbHVl"},
        }))])
        .await
        .expect("seed");
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = recording_runtime(dir.path(), cluster);
    let mut spec = faulty_spec("acme/faulty", Duration::from_secs(2));
    spec.grant.read.push(GrantedKind {
        group: String::new(),
        kind: "Secret".into(),
    });
    spec.args = vec![format!("--api-token={args_secret}"), "--mesh=istio".into()];
    let router = runtime.load_router(spec).await.expect("load");
    let error = router
        .set_weight(&rollout(r#"{"fault":"read-secret-then-panic"}"#), 10, &[])
        .await
        .expect_err("panics");
    // The live error is the operator's own: it keeps what the plugin said.
    assert!(error.to_string().contains(token), "{error}");
    let path = error.recording.clone().expect("recorded");
    written(&path).await;
    let text = std::fs::read_to_string(&path).expect("read");
    for leaked in [
        token,
        args_secret,
        "b3RoZXItc2VjcmV0LXZhbHVl",
        "other-secret-value",
    ] {
        assert!(
            !text.contains(leaked),
            "{leaked} leaked into the recording: {text}"
        );
    }
    assert!(text.contains("--mesh=istio"), "ordinary arguments are kept");
    assert!(text.contains("REDACTED"));
    let recording = load_recording(Path::new(&path)).expect("recording");
    assert!(
        recording
            .redactions
            .iter()
            .any(|r| r.contains("Secret shop/checkout-creds")),
        "{:?}",
        recording.redactions
    );
    assert!(
        recording
            .logs
            .iter()
            .any(|l| l.contains("calling the mesh with token REDACTED")),
        "the log line is kept, its secret scrubbed: {:?}",
        recording.logs
    );
    // A redacted recording still replays: the plugin reads the placeholder.
    let report = replay(&config_recording_to(None), &recording, None)
        .await
        .expect("replay");
    assert_eq!(report.replayed.kind, "trap", "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plugins_ring_keeps_only_its_newest_recordings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut recorder = RecorderConfig::new(dir.path());
    recorder.max_per_plugin = 3;
    let runtime = PluginRuntime::new(
        config_recording_to(Some(recorder)),
        Arc::new(MemoryCluster::new()),
    )
    .expect("runtime");
    let router = runtime
        .load_router(faulty_spec("acme/faulty", Duration::from_secs(2)))
        .await
        .expect("load");
    let mut paths = Vec::new();
    for _ in 0..7 {
        let error = router
            .set_weight(&rollout(r#"{"fault":"panic"}"#), 10, &[])
            .await
            .expect_err("panics");
        paths.push(error.recording.expect("recorded"));
    }
    let stats = runtime.recorder().expect("recorder").stats();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.written.load(std::sync::atomic::Ordering::SeqCst) < 7 {
        assert!(Instant::now() < deadline, "the writer fell behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept = runtime.recorder().expect("recorder").list("acme/faulty");
    assert_eq!(kept.len(), 3, "{kept:?}");
    let newest: Vec<PathBuf> = paths[4..].iter().map(PathBuf::from).collect();
    assert_eq!(kept, newest, "the oldest are dropped first");
}

fn weir(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(weir_binary())
        .args(args)
        .output()
        .expect("run weir");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_becomes_a_regression_test_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _cluster) = record_the_stored_weight_trap(dir.path()).await;
    written(&path).await;

    let (code, out, err) = weir(&["plugin", "replay", &path]);
    println!("{out}{err}");
    assert_eq!(code, 0, "the same build does the same: {out}{err}");
    assert!(out.contains("result: the same as recorded"), "{out}");

    let fixed = fixed_build().display().to_string();
    let (code, out, err) = weir(&["plugin", "replay", &path, "--plugin", &fixed]);
    println!("{out}{err}");
    assert_eq!(code, 1, "the fixed build differs: {out}{err}");
    assert!(out.contains("replayed outcome: ok"), "{out}");

    // A bug report becomes a regression test: the recording in a fixture directory.
    let fixtures = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&path, fixtures.path().join("stored-weight-trap.json")).expect("copy");
    let fixtures_dir = fixtures.path().display().to_string();
    let (code, out, _) = weir(&["plugin", "test", &fixed, &fixtures_dir]);
    println!("{out}");
    assert_eq!(code, 0, "the fixed build passes: {out}");
    assert!(out.contains("PASS stored-weight-trap.json"), "{out}");
    let faulty = plugin_wasm("weir-plugin-faulty").display().to_string();
    let (code, out, _) = weir(&["plugin", "test", &faulty, &fixtures_dir]);
    println!("{out}");
    assert_eq!(code, 1, "the faulty build fails: {out}");
    assert!(out.contains("the recorded fault happens again"), "{out}");

    let (code, _, err) = weir(&["plugin", "replay", "/nonexistent/recording.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the recording"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_failed_condition_points_at_the_recording_of_the_failed_call() {
    use weir_e2e::controller::{Backend, Harness, config, istio_objects, plugins_dir};
    let backend = Backend::from_env();
    let records = tempfile::tempdir().expect("tempdir");
    let mut controller_config = config();
    controller_config.runtime.recorder = Some(RecorderConfig::new(records.path()));
    let cluster = backend.controller_cluster();
    let assembled = weir::controller::assemble(cluster.clone(), controller_config)
        .await
        .expect("assemble");
    let h = Harness::on_assembled(&backend, cluster, assembled, None).await;
    let faulty = plugins_dir().join("weir_plugin_faulty.wasm");
    h.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: argo-rollouts-config, namespace: weir-system}}
data:
  trafficRouterPlugins: |
    - name: acme/faulty
      location: file://{}
      limits: {{timeoutMs: 500}}
"#,
        faulty.display()
    ))
    .await;
    h.apply(&istio_objects("payments")).await;
    h.apply(&weir_e2e::controller::rollout(
        "payments",
        "pay:1",
        "        plugins:\n          acme/faulty: {fault: panic}",
        "        - setWeight: 50",
    ))
    .await;
    let degraded = h
        .wait("payments", 30, "Degraded by the plugin", |s| {
            s.phase.as_deref() == Some("Degraded")
        })
        .await;
    let condition = degraded.condition("PluginFailed").expect("PluginFailed");
    assert!(
        condition.message.contains("[recorded: weir plugin replay "),
        "the message names the recording on any CRD: {}",
        condition.message
    );
    // Weir's own CRD keeps the field; Argo's prunes it (the message stays).
    if let Some(path) = &condition.recording {
        assert!(condition.message.contains(path.as_str()));
        let recording = written(path).await;
        assert_eq!(recording.plugin.name, "acme/faulty");
        assert_eq!(recording.target.as_deref(), Some("shop/payments"));
        assert_eq!(recording.outcome.kind, "trap");
    }
    let object = h
        .cluster
        .get(&ObjectKey::new(
            "argoproj.io/v1alpha1",
            "Rollout",
            "shop",
            "payments",
        ))
        .await
        .expect("the rollout");
    let view = weir::controller::view::render(&object, &[], &[]);
    assert!(view.contains("weir plugin replay"), "{view}");
    h.stop().await;
}
