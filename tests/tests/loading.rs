//! Load-time faults: each bad file or registration gives a clear error that
//! names the plugin and the problem. Plus the precompiled cache.

use weir::plugin::{
    CacheOutcome, EngineSettings, LoadError, LoadErrorKind, PluginRuntime, PluginSpec,
    RuntimeConfig,
};
use weir_e2e::{plugin_wasm, rollout, runtime, runtime_in};

fn spec_for(path: &std::path::Path) -> PluginSpec {
    PluginSpec::new("test/subject", path.display().to_string())
}

async fn load_err(runtime: &PluginRuntime, spec: PluginSpec) -> LoadError {
    let error = runtime
        .load_router(spec)
        .await
        .err()
        .expect("the load must fail");
    let message = error.to_string();
    assert!(
        message.contains("test/subject"),
        "names the plugin: {message}"
    );
    error
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), bytes).expect("write");
    file
}

#[tokio::test]
async fn garbage_bytes_are_not_wasm() {
    let (runtime, _) = runtime();
    let file = write_temp(b"#!/bin/sh\necho definitely not wasm\n");
    let error = load_err(&runtime, spec_for(file.path())).await;
    assert!(matches!(error.kind, LoadErrorKind::NotWasm), "{error}");
}

#[tokio::test]
async fn a_core_module_is_refused_with_the_fix() {
    let (runtime, _) = runtime();
    // The smallest valid core module: magic and version 1.
    let file = write_temp(b"\0asm\x01\0\0\0");
    let error = load_err(&runtime, spec_for(file.path())).await;
    assert!(matches!(error.kind, LoadErrorKind::CoreModule), "{error}");
    assert!(
        error.to_string().contains("wasm32-wasip2"),
        "says how to fix it: {error}"
    );
}

#[tokio::test]
async fn a_corrupt_component_does_not_compile() {
    let (runtime, _) = runtime();
    let mut bytes = std::fs::read(plugin_wasm("weir-plugin-faulty")).expect("read");
    let len = bytes.len();
    for b in &mut bytes[len / 3..len / 3 + 64] {
        *b ^= 0x5a;
    }
    let file = write_temp(&bytes);
    let error = load_err(&runtime, spec_for(file.path())).await;
    assert!(matches!(error.kind, LoadErrorKind::Compile(_)), "{error}");
}

#[tokio::test]
async fn a_component_of_the_other_world_is_refused() {
    let (runtime, _) = runtime();
    let error = load_err(&runtime, spec_for(&plugin_wasm("weir-plugin-probe"))).await;
    match error.kind {
        LoadErrorKind::WrongWorld { expected, found } => {
            assert_eq!(expected, "traffic-router");
            assert_eq!(found, "metric-provider");
        }
        other => panic!("expected wrong world, got {other}"),
    }
}

#[tokio::test]
async fn a_sha256_mismatch_is_refused() {
    let (runtime, _) = runtime();
    let mut spec = spec_for(&plugin_wasm("weir-plugin-faulty"));
    spec.sha256 = Some("0".repeat(64));
    let error = load_err(&runtime, spec).await;
    match error.kind {
        LoadErrorKind::ShaMismatch { expected, actual } => {
            assert_eq!(expected, "0".repeat(64));
            assert_eq!(actual.len(), 64);
        }
        other => panic!("expected a sha256 mismatch, got {other}"),
    }
}

#[tokio::test]
async fn a_malformed_pin_is_refused() {
    let (runtime, _) = runtime();
    let mut spec = spec_for(&plugin_wasm("weir-plugin-faulty"));
    spec.sha256 = Some("deadbeef".into());
    let error = load_err(&runtime, spec).await;
    assert!(matches!(error.kind, LoadErrorKind::BadPin(_)), "{error}");
}

#[tokio::test]
async fn a_matching_pin_loads() {
    let (runtime, _) = runtime();
    let path = plugin_wasm("weir-plugin-faulty");
    let digest = weir::plugin::source::sha256_hex(&std::fs::read(&path).expect("read"));
    let mut spec = spec_for(&path);
    spec.sha256 = Some(digest.to_uppercase());
    spec.grant.write.push(weir::plugin::GrantedKind {
        group: String::new(),
        kind: "ConfigMap".into(),
    });
    let router = runtime.load_router(spec).await.expect("load");
    router
        .set_weight(&rollout("{}"), 5, &[])
        .await
        .expect("call");
}

#[tokio::test]
async fn a_missing_file_names_the_path() {
    let (runtime, _) = runtime();
    let error = load_err(
        &runtime,
        PluginSpec::new("test/subject", "file:///nonexistent/plugin.wasm"),
    )
    .await;
    match error.kind {
        LoadErrorKind::NotFound(path) => assert_eq!(path, "/nonexistent/plugin.wasm"),
        other => panic!("expected not found, got {other}"),
    }
}

#[tokio::test]
async fn an_unsupported_location_scheme_is_refused() {
    let (runtime, _) = runtime();
    let error = load_err(
        &runtime,
        PluginSpec::new("test/subject", "s3://bucket/plugin.wasm"),
    )
    .await;
    assert!(
        matches!(error.kind, LoadErrorKind::BadLocation(_)),
        "{error}"
    );
}

#[tokio::test]
async fn a_plugin_is_downloaded_over_http_and_checked_against_its_pin() {
    let bytes = std::fs::read(plugin_wasm("weir-plugin-faulty")).expect("read");
    let digest = weir::plugin::source::sha256_hex(&bytes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = bytes.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 2048];
            let _ = socket.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                served.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&served).await;
        }
    });
    let (runtime, _) = runtime();
    let mut spec = PluginSpec::new("test/subject", format!("http://{addr}/faulty.wasm"));
    spec.sha256 = Some(digest.clone());
    let router = runtime
        .load_router(spec)
        .await
        .expect("downloaded and pinned");
    assert_eq!(router.info().sha256, digest);
    let mut wrong = PluginSpec::new("test/subject", format!("http://{addr}/faulty.wasm"));
    wrong.sha256 = Some("f".repeat(64));
    let error = load_err(&runtime, wrong).await;
    assert!(
        matches!(error.kind, LoadErrorKind::ShaMismatch { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn the_precompiled_cache_is_used_and_a_corrupt_entry_is_rebuilt() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Each load on a fresh runtime, as after a restart: within one runtime
    // a second load shares the first's component (the next test).
    let runtime = || {
        let config = RuntimeConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            ..RuntimeConfig::default()
        };
        let cluster = std::sync::Arc::new(weir::cluster::MemoryCluster::new());
        PluginRuntime::new(config, cluster).expect("runtime")
    };
    let spec = spec_for(&plugin_wasm("weir-plugin-faulty"));
    // A load, then the restart: the tiered compiler's load is ready on
    // Winch's code, and Cranelift's reaches the cache in the background
    // (waited for, as a controller running on would).
    let load = |spec: PluginSpec| async move {
        let runtime = runtime();
        let router = runtime.load_router(spec).await;
        runtime.optimized().await;
        router
    };

    let first = load(spec.clone()).await.expect("first load");
    assert_eq!(first.info().cache, CacheOutcome::Miss);
    let second = load(spec.clone()).await.expect("second load");
    assert_eq!(second.info().cache, CacheOutcome::Hit);

    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "one entry per wasm digest and engine");
    let entry = entries[0].path();
    let mut bytes = std::fs::read(&entry).expect("read entry");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, &bytes).expect("corrupt entry");
    let third = load(spec.clone())
        .await
        .expect("a corrupt entry is rebuilt, not trusted");
    assert_eq!(third.info().cache, CacheOutcome::Rebuilt);

    // A foreign file under the entry's name (another tool's, or truncated).
    std::fs::write(&entry, b"not a precompiled component").expect("replace entry");
    let fourth = load(spec.clone())
        .await
        .expect("a foreign entry is rebuilt");
    assert_eq!(fourth.info().cache, CacheOutcome::Rebuilt);
    let fifth = load(spec)
        .await
        .expect("and the rebuilt entry is used again");
    assert_eq!(fifth.info().cache, CacheOutcome::Hit);
}

#[tokio::test]
async fn registrations_of_one_component_share_its_compiled_code_but_keep_their_own_limits() {
    let cluster = std::sync::Arc::new(weir::cluster::MemoryCluster::new());
    let runtime = PluginRuntime::new(RuntimeConfig::default(), cluster).expect("runtime");
    let mut spec = spec_for(&plugin_wasm("weir-plugin-faulty"));
    let first = runtime.load_router(spec.clone()).await.expect("first load");
    assert_eq!(first.info().cache, CacheOutcome::Disabled, "compiled");
    spec.name = "test/second-registration".into();
    let second = runtime
        .load_router(spec.clone())
        .await
        .expect("second load");
    assert_eq!(second.info().cache, CacheOutcome::Shared);
    // A registration whose limits the component does not fit is still
    // refused, shared code or not.
    spec.name = "test/too-small".into();
    spec.limits.functions = 10;
    let Err(error) = runtime.load_router(spec).await else {
        panic!("a component over limits.functions loaded");
    };
    assert!(error.to_string().contains("limits.functions"), "{error}");
}

/// `wasm` with a custom section holding `tag`: another component (its own
/// digest) of the same size for the same length of tag.
fn tagged(wasm: &[u8], tag: &[u8; 8]) -> Vec<u8> {
    let name = b"weir-test";
    let mut bytes = wasm.to_vec();
    bytes.push(0); // custom section
    bytes.push(u8::try_from(1 + name.len() + tag.len()).expect("small section"));
    bytes.push(u8::try_from(name.len()).expect("short name"));
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(tag);
    bytes
}

/// The digest memo lets a restart skip reading and hashing a plugin file it
/// has seen; a file rewritten in place since (same path, inode and size)
/// must still be read again and checked against its pin.
#[tokio::test]
async fn a_plugin_file_rewritten_in_place_is_read_again_not_recalled() {
    let cache = tempfile::tempdir().expect("cache dir");
    let runtime = || runtime_in(EngineSettings::default(), cache.path().to_path_buf()).0;
    let wasm = std::fs::read(plugin_wasm("weir-plugin-faulty")).expect("component");
    let (first, second) = (tagged(&wasm, b"version1"), tagged(&wasm, b"version2"));
    let sha = |bytes: &[u8]| weir::plugin::source::sha256_hex(bytes);
    let file = write_temp(&first);
    // A file is remembered only once its last change is some seconds old.
    tokio::time::sleep(weir::plugin::DIGEST_MEMO_SETTLED + std::time::Duration::from_millis(200))
        .await;
    let mut spec = spec_for(file.path());
    spec.sha256 = Some(sha(&first));
    let loaded = runtime()
        .load_router(spec.clone())
        .await
        .expect("first load");
    assert_eq!(loaded.info().sha256, sha(&first));
    let memos = std::fs::read_dir(cache.path().join("digests"))
        .expect("the digest memo is kept beside the cache")
        .count();
    assert_eq!(memos, 1);
    // Recalled on a restart: the pin still holds.
    runtime().load_router(spec.clone()).await.expect("recalled");

    // Rewritten in place: same path, inode and size, other bytes.
    std::fs::write(file.path(), &second).expect("rewrite");
    let error = load_err(&runtime(), spec.clone()).await;
    match error.kind {
        LoadErrorKind::ShaMismatch { expected, actual } => {
            assert_eq!(expected, sha(&first));
            assert_eq!(actual, sha(&second), "the new bytes were hashed");
        }
        other => panic!("expected a sha256 mismatch, got {other}"),
    }
    spec.sha256 = Some(sha(&second));
    let reloaded = runtime()
        .load_router(spec)
        .await
        .expect("the new pin loads");
    assert_eq!(reloaded.info().sha256, sha(&second));
}

/// A plugin whose download stalls holds up only itself: the registry does
/// not hold its lock across a load, so another plugin loads meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_plugin_load_does_not_hold_up_another_plugin() {
    use weir::cluster::{Cluster, MemoryCluster, Write};
    use weir::controller::registry::PluginRegistry;
    // A loopback server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (accepted, mut request_held) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted.send(());
        }
    });
    let cluster = std::sync::Arc::new(MemoryCluster::new());
    let config_map = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "argo-rollouts-config", "namespace": "weir-system"},
        "data": {"trafficRouterPlugins": format!(
            "- name: acme/stalled\n  location: http://127.0.0.1:{port}/stalled.wasm\n"
        )},
    });
    cluster
        .apply(vec![Write::Create(config_map)])
        .await
        .expect("registration");
    let registry = std::sync::Arc::new(PluginRegistry::new(
        runtime().0,
        weir_e2e::controller::plugins_dir(),
        "weir-system",
    ));
    registry.sync(cluster.as_ref()).await.expect("sync");
    let stalled = {
        let registry = registry.clone();
        tokio::spawn(async move { registry.router("acme/stalled").await.map(drop) })
    };
    // Once the stalled load is under way: the server holds its request.
    request_held
        .recv()
        .await
        .expect("the stalled download connects");
    registry
        .router("istio")
        .await
        .expect("the shipped router loads while another plugin's load stalls");
    assert!(
        !stalled.is_finished(),
        "the stalled load was meant to be still waiting"
    );
    stalled.abort();
    server.abort();
}
