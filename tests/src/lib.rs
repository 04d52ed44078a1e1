//! Helpers for the end-to-end tests: where the built plugins are, and a
//! runtime over an in-memory cluster, and a controller harness ([`controller`]).

pub mod cloudwatch;
pub mod controller;
pub mod fake_apiserver;
pub mod hostile;
pub mod prometheus;

use std::path::PathBuf;
use std::sync::Arc;
use weir::cluster::MemoryCluster;
use weir::plugin::{EngineSettings, PluginRuntime, Rollout, RuntimeConfig};

/// The path of a built plugin component. Panics with the fix when it is missing:
/// these tests need the real components, never a stand-in.
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    let path = target
        .join("wasm32-wasip2")
        .join("plugin")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: build the plugins with scripts/build-plugins.sh (scripts/test.sh does it)",
        path.display()
    );
    path
}

/// A precompiled-cache directory shared by the tests of one run.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("weir-test-cache")
}

/// A runtime over a fresh in-memory cluster.
pub fn runtime() -> (PluginRuntime, Arc<MemoryCluster>) {
    runtime_with(EngineSettings::default())
}

/// A runtime with the given engine settings over a fresh in-memory cluster.
pub fn runtime_with(engine: EngineSettings) -> (PluginRuntime, Arc<MemoryCluster>) {
    runtime_in(engine, cache_dir())
}

/// [`runtime_with`], its precompiled cache in `cache`.
pub fn runtime_in(engine: EngineSettings, cache: PathBuf) -> (PluginRuntime, Arc<MemoryCluster>) {
    let cluster = Arc::new(MemoryCluster::new());
    let config = RuntimeConfig {
        engine,
        cache_dir: Some(cache),
        bundle: None,
        recorder: None,
    };
    let runtime = PluginRuntime::new(config, cluster.clone()).expect("runtime");
    (runtime, cluster)
}

/// A Rollout in namespace `shop` whose plugin configuration is `config`.
pub fn rollout(config: &str) -> Rollout {
    Rollout {
        namespace: "shop".into(),
        name: "checkout".into(),
        uid: "uid-checkout".into(),
        stable_service: "checkout-stable".into(),
        canary_service: "checkout-canary".into(),
        config: config.into(),
        object: serde_json::json!({"metadata": {"name": "checkout", "namespace": "shop"}}).into(),
    }
}

/// The current resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// One scripted HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
    /// Delay before answering.
    pub delay: std::time::Duration,
}

impl Answer {
    /// A 200 with a JSON body.
    pub fn json(body: &str) -> Self {
        Answer {
            status: 200,
            body: body.into(),
            delay: std::time::Duration::ZERO,
        }
    }
}

/// A loopback HTTP server answering from a script, one answer per request;
/// the last answer repeats. Counts the requests it served.
pub struct ScriptedServer {
    /// `127.0.0.1:port`.
    pub addr: std::net::SocketAddr,
    /// Requests served.
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    /// The requests received (head and what of the body came with it).
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
    script: Arc<std::sync::Mutex<std::collections::VecDeque<Answer>>>,
}

impl ScriptedServer {
    /// Starts serving `answers` on an ephemeral loopback port.
    pub async fn start(answers: Vec<Answer>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let script = Arc::new(std::sync::Mutex::new(
            answers
                .into_iter()
                .collect::<std::collections::VecDeque<_>>(),
        ));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, h, r) = (script.clone(), hits.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = {
                    let mut queue = s.lock().expect("script");
                    if queue.len() > 1 {
                        queue.pop_front()
                    } else {
                        queue.front().cloned()
                    }
                };
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 16 * 1024];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let text = String::from_utf8_lossy(request.get(..n).unwrap_or_default());
                    r.lock().expect("requests").push(text.into_owned());
                    let Some(answer) = answer else { return };
                    tokio::time::sleep(answer.delay).await;
                    let json = answer.body.starts_with('{') || answer.body.starts_with('[');
                    let content_type = if json {
                        "application/json"
                    } else {
                        "text/plain; version=0.0.4"
                    };
                    let head = format!(
                        "HTTP/1.1 {} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(answer.body.as_bytes()).await;
                });
            }
        });
        ScriptedServer {
            addr,
            hits,
            requests,
            script,
        }
    }

    /// Replaces the remaining script.
    pub fn set(&self, answers: Vec<Answer>) {
        *self.script.lock().expect("script") = answers.into_iter().collect();
    }
}

/// An AnalysisRun record (namespace `shop`) for calling providers directly.
pub fn contract_run() -> weir::plugin::AnalysisRun {
    weir::plugin::AnalysisRun {
        namespace: "shop".into(),
        name: "r".into(),
        uid: "u".into(),
        object: "{}".into(),
    }
}

/// A metric record whose provider block is `config`.
pub fn contract_metric(config: serde_json::Value) -> weir::plugin::Metric {
    weir::plugin::Metric {
        name: "m".into(),
        config: config.to_string(),
        object: "{}".into(),
    }
}

/// A registration of the faulty router with write access to ConfigMaps, a
/// deadline of `timeout`, and no quarantine (rows check one fault each).
pub fn faulty_spec(name: &str, timeout: std::time::Duration) -> weir::plugin::PluginSpec {
    let mut spec = weir::plugin::PluginSpec::new(
        name,
        plugin_wasm("weir-plugin-faulty").display().to_string(),
    );
    spec.grant = weir::plugin::Grant {
        read: vec![],
        write: vec![weir::plugin::GrantedKind {
            group: String::new(),
            kind: "ConfigMap".into(),
        }],
        namespaces: vec![],
        secrets: vec![],
    };
    spec.limits.timeout_ms = timeout.as_millis() as u64;
    spec.fault_policy = weir::plugin::FaultPolicy {
        quarantine_after: 0,
        ..weir::plugin::FaultPolicy::default()
    };
    spec
}

/// A registration of the Python provider (`plugins/python-provider`): it
/// may read ConfigMaps, with the memory CPython needs (its linear memory
/// starts at ~12.4 MiB) and no quarantine.
pub fn python_spec(name: &str) -> weir::plugin::PluginSpec {
    let mut spec = weir::plugin::PluginSpec::new(
        name,
        plugin_wasm("weir-plugin-python").display().to_string(),
    );
    spec.grant = weir::plugin::Grant {
        read: vec![weir::plugin::GrantedKind {
            group: String::new(),
            kind: "ConfigMap".into(),
        }],
        write: vec![],
        namespaces: vec![],
        secrets: vec![],
    };
    spec.limits.memory_mib = 64;
    spec.fault_policy = weir::plugin::FaultPolicy {
        quarantine_after: 0,
        ..weir::plugin::FaultPolicy::default()
    };
    spec
}

/// Weir's condition evaluator, loaded from the built component on a fresh
/// runtime (the handle keeps the runtime alive).
pub async fn evaluator() -> weir::analysis::ConditionEvaluator {
    let (runtime, _cluster) = runtime();
    weir::analysis::ConditionEvaluator::load(
        &runtime,
        &plugin_wasm("weir-condition").display().to_string(),
    )
    .await
}

/// The `weir` binary of this build (target/release/weir beside the test's
/// own executable). Panics with the fix when it is missing.
pub fn weir_binary() -> PathBuf {
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("weir")))
        .unwrap_or_default();
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p weir` (scripts/test.sh's `cargo test --release` does)",
        path.display()
    );
    path
}
