//! Helpers for the end-to-end tests: where the built plugins are, and a
//! runtime over an in-memory cluster.

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
    let cluster = Arc::new(MemoryCluster::new());
    let config = RuntimeConfig {
        engine,
        cache_dir: Some(cache_dir()),
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
        object: "{}".into(),
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
