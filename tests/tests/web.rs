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
        ..HttpPolicy::default()
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

/// An HTTPS server on loopback with a self-signed certificate (for
/// `localhost` and 127.0.0.1), answering every request with `body`.
async fn self_signed_server(body: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der())
        .expect("key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut request = vec![0u8; 8192];
                let _ = tls.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

async fn web_on(runtime: &PluginRuntime, host: &str, allow_insecure: bool) -> MetricProvider {
    let mut spec = PluginSpec::new(
        "argoproj/web",
        plugin_wasm("weir-plugin-web").display().to_string(),
    );
    spec.http = HttpPolicy {
        allow_hosts: vec![host.to_string()],
        allow_insecure,
    };
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    runtime.load_provider(spec).await.expect("load web")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skips_certificate_checks_only_where_the_registration_allows_it() {
    let addr = self_signed_server(r#"{"ok": 1}"#).await;
    let (runtime, _) = runtime();
    let url = format!("https://{addr}/health");
    let insecure = json!({"url": url, "jsonPath": "{$.ok}", "insecure": true});
    let verified = json!({"url": url, "jsonPath": "{$.ok}"});

    // Not allowed by the registration: refused, naming the setting.
    let strict = web_on(&runtime, &addr.to_string(), false).await;
    let refused = strict
        .run(&run(), &metric(insecure.clone()))
        .await
        .expect_err("insecure is not allowed");
    assert!(
        refused.to_string().contains("http.allowInsecure"),
        "{refused}"
    );
    // A verified connection to a self-signed server fails.
    let untrusted = strict
        .run(&run(), &metric(verified.clone()))
        .await
        .expect_err("an unknown certificate");
    assert!(
        matches!(
            &untrusted.kind,
            CallErrorKind::Reported(ReportedError::Transient(_))
        ),
        "{untrusted:?}"
    );

    // Allowed: the metric that asks for it is measured over TLS without
    // the certificate check; one that does not ask is still verified.
    let lenient = web_on(&runtime, &addr.to_string(), true).await;
    let m = lenient
        .run(&run(), &metric(insecure))
        .await
        .expect("measured over unverified TLS");
    assert_eq!(m.phase, MeasurementPhase::Successful);
    assert_eq!(m.value.as_deref(), Some("1"));
    lenient
        .run(&run(), &metric(verified))
        .await
        .expect_err("still verified without insecure");
}
