//! The shipped plugins' fixture suites, run through the same runner as
//! `weir plugin test`.

use std::path::Path;
use weir::plugin::RuntimeConfig;
use weir_e2e::{cache_dir, plugin_wasm};

async fn suite(plugin: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("plugins")
        .join(plugin)
        .join("fixtures");
    let config = RuntimeConfig {
        cache_dir: Some(cache_dir()),
        ..RuntimeConfig::default()
    };
    let wasm = plugin_wasm(&format!("weir-plugin-{plugin}"));
    let reports = weir::fixture::run_dir(&wasm, &dir, &config)
        .await
        .expect("fixtures readable");
    assert!(!reports.is_empty());
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}:\n{}", r.file.display(), r.failures.join("\n")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[tokio::test]
async fn istio_fixtures() {
    suite("istio").await;
}

#[tokio::test]
async fn nginx_fixtures() {
    suite("nginx").await;
}

#[tokio::test]
async fn smi_fixtures() {
    suite("smi").await;
}

#[tokio::test]
async fn http_gate_fixtures() {
    suite("http-gate").await;
}

/// The step-plugin rows of the fault matrix (panic, loop, hoard, garbage
/// status, a huge message, a reported error), each contained with nothing
/// it staged written, and a well-behaved step whose write lands.
#[tokio::test]
async fn faulty_step_fixtures() {
    suite("faulty-step").await;
}

/// The Gateway API router against the argoproj-labs plugin's own unit-test
/// and documentation cases (docs/routers.md lists the differences).
#[tokio::test]
async fn gatewayapi_fixtures() {
    suite("gatewayapi").await;
}

#[tokio::test]
async fn graphite_fixtures() {
    suite("graphite").await;
}

#[tokio::test]
async fn datadog_fixtures() {
    suite("datadog").await;
}

#[tokio::test]
async fn newrelic_fixtures() {
    suite("newrelic").await;
}

#[tokio::test]
async fn influxdb_fixtures() {
    suite("influxdb").await;
}

#[tokio::test]
async fn cloudwatch_fixtures() {
    suite("cloudwatch").await;
}
