//! The web provider against a loopback HTTP server: JSON paths hit and
//! missed, non-2xx answers, a body sent with POST, and a response slower
//! than the call's deadline.

use serde_json::json;
use std::time::{Duration, Instant};
use weir::plugin::{
    CallErrorKind, FaultPolicy, HttpPolicy, MeasurementPhase, MetricProvider, PluginRuntime,
    PluginSpec, ReportedError,
};
use weir_e2e::{
    Answer, ScriptedServer, contract_metric as metric, contract_run as run, plugin_wasm, runtime,
};

async fn web(runtime: &PluginRuntime, server: &ScriptedServer, timeout_ms: u64) -> MetricProvider {
    let mut spec = PluginSpec::new(
        "argoproj/web",
        plugin_wasm("weir-plugin-web").display().to_string(),
    );
    spec.http = HttpPolicy {
        allow_hosts: vec![server.addr.to_string()],
    };
    spec.limits.timeout_ms = timeout_ms;
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    runtime.load_provider(spec).await.expect("load web")
}

#[tokio::test]
async fn json_paths_hit_and_miss() {
    let server = ScriptedServer::start(vec![Answer::json(
        r#"{"data": {"ok": true, "rates": [0.9, 0.97]}}"#,
    )])
    .await;
    let (runtime, _) = runtime();
    let p = web(&runtime, &server, 2_000).await;
    let url = format!("http://{}/health", server.addr);
    for (path, want) in [
        (None, json!({"data": {"ok": true, "rates": [0.9, 0.97]}})),
        (Some("{$.data.ok}"), json!(true)),
        (Some("{$.data.rates[1]}"), json!(0.97)),
        (Some("{$.data.rates[*]}"), json!([0.9, 0.97])),
    ] {
        let mut config = json!({"url": url});
        if let Some(path) = path {
            config["jsonPath"] = json!(path);
        }
        let m = p.run(&run(), &metric(config)).await.expect("measured");
        assert_eq!(m.phase, MeasurementPhase::Successful);
        let value: serde_json::Value =
            serde_json::from_str(m.value.as_deref().unwrap_or("null")).expect("json");
        assert_eq!(value, want, "{path:?}");
    }
    let error = p
        .run(
            &run(),
            &metric(json!({"url": url, "jsonPath": "{$.data.missing}"})),
        )
        .await
        .expect_err("miss");
    assert!(
        matches!(&error.kind, CallErrorKind::Reported(ReportedError::NotFound(why)) if why.contains("$.data.missing")),
        "{error}"
    );
}

#[tokio::test]
async fn non_2xx_is_an_error_with_the_status() {
    let server = ScriptedServer::start(vec![Answer {
        status: 503,
        body: "{}".into(),
        delay: Duration::ZERO,
    }])
    .await;
    let (runtime, _) = runtime();
    let p = web(&runtime, &server, 2_000).await;
    let error = p
        .run(
            &run(),
            &metric(json!({"url": format!("http://{}/", server.addr)})),
        )
        .await
        .expect_err("503");
    assert!(
        error
            .to_string()
            .contains("received non 2xx response code: 503"),
        "{error}"
    );
}

#[tokio::test]
async fn post_with_a_json_body() {
    let server = ScriptedServer::start(vec![Answer::json(r#"{"verdict": "pass"}"#)]).await;
    let (runtime, _) = runtime();
    let p = web(&runtime, &server, 2_000).await;
    let config = json!({"method": "POST", "url": format!("http://{}/check", server.addr), "jsonBody": {"service": "checkout"}, "jsonPath": "{$.verdict}"});
    let m = p.run(&run(), &metric(config)).await.expect("post");
    assert_eq!(m.value.as_deref(), Some("\"pass\""));
    let bad = json!({"method": "GET", "url": format!("http://{}/", server.addr), "body": "x"});
    let error = p
        .run(&run(), &metric(bad))
        .await
        .expect_err("GET with a body");
    assert!(
        matches!(
            &error.kind,
            CallErrorKind::Reported(ReportedError::InvalidConfig(_))
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_slow_response_is_cut_at_the_deadline() {
    let server = ScriptedServer::start(vec![Answer {
        status: 200,
        body: "{}".into(),
        delay: Duration::from_secs(10),
    }])
    .await;
    let (runtime, _) = runtime();
    let p = web(&runtime, &server, 500).await;
    let started = Instant::now();
    let error = p
        .run(
            &run(),
            &metric(json!({"url": format!("http://{}/slow", server.addr)})),
        )
        .await
        .expect_err("slow");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "held {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            error.kind,
            CallErrorKind::Timeout { .. } | CallErrorKind::Reported(ReportedError::Transient(_))
        ),
        "{error}"
    );
}
