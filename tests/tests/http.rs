//! Outgoing HTTP from a metric provider through `wasi:http`: allowed hosts
//! work, response bodies are capped, and a slow server cannot hold a call
//! past its deadline. Real HTTP on loopback.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::plugin::{
    AnalysisRun, CallErrorKind, FaultPolicy, HttpPolicy, MeasurementPhase, Metric, MetricProvider,
    PluginSpec, ReportedError,
};
use weir_e2e::{plugin_wasm, runtime};

/// Serves every connection `body` after `delay`, then closes.
async fn serve(body: Vec<u8>, delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                tokio::time::sleep(delay).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    addr
}

async fn probe(allow: &str, body_cap: usize, timeout_ms: u64) -> MetricProvider {
    let (runtime, _) = runtime();
    let mut spec = PluginSpec::new(
        "test/probe",
        plugin_wasm("weir-plugin-probe").display().to_string(),
    );
    spec.http = HttpPolicy {
        allow_hosts: vec![allow.to_string()],
        ..HttpPolicy::default()
    };
    spec.limits.http_body_bytes = body_cap;
    spec.limits.timeout_ms = timeout_ms;
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    runtime.load_provider(spec).await.expect("load")
}

fn run() -> AnalysisRun {
    AnalysisRun {
        namespace: "shop".into(),
        name: "run-1".into(),
        uid: "u".into(),
        object: "{}".into(),
    }
}

fn metric(url: String) -> Metric {
    Metric {
        name: "probe".into(),
        config: format!(r#"{{"url":"{url}"}}"#),
        object: "{}".into(),
    }
}

#[tokio::test]
async fn an_allowed_host_is_reached_and_its_value_returned() {
    let addr = serve(b"[0.97, 0.99]".to_vec(), Duration::ZERO).await;
    let provider = probe(&addr.to_string(), 1 << 20, 2_000).await;
    let m = provider
        .run(&run(), &metric(format!("http://{addr}/value")))
        .await
        .expect("measured");
    assert_eq!(m.phase, MeasurementPhase::Successful);
    assert_eq!(m.value.as_deref(), Some("[0.97, 0.99]"));
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused() {
    let addr = serve(vec![b'7'; 2 << 20], Duration::ZERO).await;
    let provider = probe(&addr.to_string(), 64 * 1024, 2_000).await;
    let error = provider
        .run(&run(), &metric(format!("http://{addr}/big")))
        .await
        .expect_err("over the cap");
    match &error.kind {
        CallErrorKind::Reported(ReportedError::Transient(why)) => {
            assert!(why.contains("HttpResponseBodySize"), "{why}")
        }
        other => panic!("expected the plugin to see a body-size error, got {other}"),
    }
}

#[tokio::test]
async fn a_slow_server_cannot_hold_the_call_past_its_deadline() {
    let addr = serve(b"1".to_vec(), Duration::from_secs(5)).await;
    let provider = probe(&addr.to_string(), 1 << 20, 300).await;
    let started = Instant::now();
    let result = provider
        .run(&run(), &metric(format!("http://{addr}/slow")))
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1_000),
        "held for {elapsed:?}"
    );
    let error = result.expect_err("must not wait 5 s");
    // Either the clamped transport timeout fires inside the guest (a transient
    // error it reports) or the call's deadline stops it.
    assert!(
        matches!(
            error.kind,
            CallErrorKind::Timeout { .. } | CallErrorKind::Reported(ReportedError::Transient(_))
        ),
        "{error}"
    );
}

#[tokio::test]
async fn garbage_values_are_invalid_output() {
    let (runtime, _) = runtime();
    let mut spec = PluginSpec::new(
        "test/probe",
        plugin_wasm("weir-plugin-probe").display().to_string(),
    );
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    let provider = runtime.load_provider(spec).await.expect("load");
    let garbage = Metric {
        name: "m".into(),
        config: r#"{"fault":"garbage-value"}"#.into(),
        object: "{}".into(),
    };
    let error = provider.run(&run(), &garbage).await.expect_err("garbage");
    match &error.kind {
        CallErrorKind::InvalidOutput(why) => assert!(why.contains("not JSON"), "{why}"),
        other => panic!("expected invalid output, got {other}"),
    }
}
