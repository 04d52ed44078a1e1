//! The controller's HTTP endpoint on loopback: `/metrics` in Prometheus
//! exposition format, and the object API the command line uses while the
//! controller holds the store, with typed errors across the wire, served
//! only with the token and not at all on Kubernetes.

use std::sync::Arc;
use weir::api::{ApiState, ObjectApi, serve};
use weir::cluster::{Cluster, ClusterError, DurableCluster, ObjectKey, RemoteCluster, Write};
use weir::controller::Metrics;
use weir::plugin::CallObserver;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn start() -> (
    tempfile::TempDir,
    String,
    Arc<Metrics>,
    tokio::sync::oneshot::Sender<()>,
) {
    start_with(ObjectApi::Token(TOKEN.into())).await
}

async fn start_with(
    object_api: ObjectApi,
) -> (
    tempfile::TempDir,
    String,
    Arc<Metrics>,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().expect("dir");
    let cluster: Arc<dyn Cluster> =
        Arc::new(DurableCluster::open(&dir.path().join("s.redb")).expect("store"));
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = Arc::new(ApiState {
        registry: None,
        cluster,
        metrics: metrics.clone(),
        object_api,
    });
    tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    (dir, base, metrics, stop)
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_exposition_format() {
    let (_dir, base, metrics, _stop) = start().await;
    metrics.call_finished(
        "istio",
        "set-weight",
        "ok",
        false,
        std::time::Duration::from_micros(80),
    );
    metrics.call_finished(
        "acme/x",
        "update-hash",
        "timeout",
        true,
        std::time::Duration::from_millis(300),
    );
    metrics.reconciled("ok", std::time::Duration::from_millis(1));
    let response = get_over_socket(&format!("{base}/metrics")).await;
    assert!(
        response.contains("# TYPE weir_plugin_calls counter"),
        "{response}"
    );
    assert!(
        response.contains(
            r#"weir_plugin_calls_total{plugin="istio",method="set-weight",outcome="ok"} 1"#
        )
    );
    assert!(response.contains(r#"weir_plugin_faults_total{plugin="acme/x",kind="timeout"} 1"#));
    assert!(
        response.contains(
            r#"weir_plugin_call_duration_seconds_count{plugin="istio",method="set-weight"} 1"#
        ),
        "{response}"
    );
    assert!(response.trim_end().ends_with("# EOF"));
}

async fn get_over_socket(url: &str) -> String {
    // A plain HTTP/1.1 GET over a socket, so the test checks the wire, not a client's view of it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let without_scheme = url.trim_start_matches("http://");
    let (host, path) = without_scheme.split_once('/').expect("path");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_string()
}

#[tokio::test]
async fn the_object_api_round_trips_writes_and_typed_errors() {
    let (_dir, base, _metrics, _stop) = start().await;
    let remote = RemoteCluster::new(base, Some(TOKEN.into()));
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": "ns", "labels": {"app": "a"}}, "data": {"k": "v"}});
    let stored = remote
        .apply(vec![Write::Create(cm.clone())])
        .await
        .expect("create")
        .remove(0)
        .expect("object");
    let version = stored["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let key = ObjectKey::new("v1", "ConfigMap", "ns", "a");
    assert_eq!(remote.get(&key).await.expect("get")["data"]["k"], "v");
    let listed = remote
        .list("", "ConfigMap", "ns", &[("app".into(), "a".into())])
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(matches!(
        remote
            .get(&ObjectKey::new("v1", "ConfigMap", "ns", "missing"))
            .await,
        Err(ClusterError::NotFound(_))
    ));
    assert!(matches!(
        remote.apply(vec![Write::Create(cm.clone())]).await,
        Err(ClusterError::AlreadyExists(_))
    ));
    let stale = Write::Update {
        object: cm,
        expected_version: Some(format!("{version}0")),
    };
    match remote.apply(vec![stale]).await {
        Err(ClusterError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(actual, version);
            assert_eq!(expected, format!("{version}0"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn cm(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ns"}, "data": {"k": "v"}})
}

#[tokio::test]
async fn a_request_without_the_token_is_refused_and_writes_nothing() {
    let (_dir, base, _metrics, _stop) = start().await;
    for token in [
        None,
        Some("wrong".to_string()),
        Some(TOKEN[..63].to_string()),
    ] {
        let remote = RemoteCluster::new(base.clone(), token.clone());
        match remote.apply(vec![Write::Create(cm("intruder"))]).await {
            Err(ClusterError::Forbidden(why)) => assert!(why.contains("token"), "{why}"),
            other => panic!("{token:?}: expected a refusal, got {other:?}"),
        }
        assert!(matches!(
            remote
                .get(&ObjectKey::new("v1", "ConfigMap", "ns", "intruder"))
                .await,
            Err(ClusterError::Forbidden(_))
        ));
    }
    // On the wire: 401.
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/apply"))
        .body("[]")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    // With the token: nothing was written by the refused requests.
    let owner = RemoteCluster::new(base, Some(TOKEN.into()));
    assert!(matches!(
        owner
            .get(&ObjectKey::new("v1", "ConfigMap", "ns", "intruder"))
            .await,
        Err(ClusterError::NotFound(_))
    ));
}

#[tokio::test]
async fn without_an_object_api_only_metrics_and_health_are_served() {
    let (_dir, base, _metrics, _stop) = start_with(ObjectApi::Off).await;
    let client = reqwest::Client::new();
    for path in [
        "/api/v1/get?kind=ConfigMap&name=a",
        "/api/v1/list?kind=ConfigMap",
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = client
        .post(format!("{base}/api/v1/apply"))
        .bearer_auth(TOKEN)
        .body(serde_json::to_vec(&vec![Write::Create(cm("a"))]).expect("json"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    assert!(
        response
            .text()
            .await
            .unwrap_or_default()
            .contains("not served"),
        "says why"
    );
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200);
}
