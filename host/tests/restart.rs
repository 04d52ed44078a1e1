//! The real `weir` binary on the embedded store, killed with SIGKILL in the
//! middle of a canary (during its analysis) and started again: it resumes
//! from the step it had written, never goes back, completes, and nothing is
//! applied twice (one AnalysisRun with exactly its `count` measurements, two
//! ReplicaSets, the Rollout's generation untouched). While it runs, `weir
//! apply` and `weir get rollout` reach the store through its API.

use serde_json::Value;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, DurableCluster, ObjectKey, RemoteCluster};
use weir::controller::status::RolloutStatus;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn plugins() -> PathBuf {
    let dir = workspace().join("target/wasm32-wasip2/plugin");
    for name in ["istio", "web"] {
        let wasm = dir.join(format!("weir_plugin_{name}.wasm"));
        assert!(
            wasm.exists(),
            "{} is missing: build the plugins with scripts/build-plugins.sh",
            wasm.display()
        );
    }
    dir
}

/// A loopback HTTP server answering every request with `{"rate": 0.99}`.
fn metrics_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = r#"{"rate": 0.99}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn manifests(port: u16, image: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: argo-rollouts-config, namespace: argo-rollouts}}
data:
  metricProviderPlugins: |
    - name: web
      http: {{allowHosts: ["127.0.0.1:{port}"]}}
---
apiVersion: v1
kind: Service
metadata: {{name: shop-stable, namespace: shop}}
spec: {{selector: {{app: shop}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: shop-canary, namespace: shop}}
spec: {{selector: {{app: shop}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: shop, namespace: shop}}
spec:
  hosts: [shop]
  http:
    - name: primary
      route:
        - destination: {{host: shop-stable}}
          weight: 100
        - destination: {{host: shop-canary}}
          weight: 0
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: rate, namespace: shop}}
spec:
  metrics:
    - name: rate
      interval: 400ms
      count: 4
      successCondition: result >= 0.95
      provider:
        web: {{url: "http://127.0.0.1:{port}/rate", jsonPath: "{{$.rate}}"}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: shop, namespace: shop}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: shop}}}}
  template:
    metadata: {{labels: {{app: shop}}}}
    spec:
      containers: [{{name: app, image: "{image}"}}]
  strategy:
    canary:
      canaryService: shop-canary
      stableService: shop-stable
      trafficRouting:
        istio:
          virtualService: {{name: shop, routes: [primary]}}
      steps:
        - setWeight: 10
        - pause: {{duration: 300ms}}
        - setWeight: 20
        - analysis: {{templates: [{{templateName: rate}}]}}
        - setWeight: 50
        - pause: {{duration: 500ms}}
        - setWeight: 80
"#
    )
}

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

fn start(store: &Path, manifests: Option<&Path>) -> Child {
    let _ = std::fs::remove_file(store.with_extension("redb.addr"));
    let mut command = weir();
    command
        .arg("run")
        .arg("--store")
        .arg(store)
        .arg("--plugins")
        .arg(plugins())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(m) = manifests {
        command.arg("--manifests").arg(m);
    }
    command.spawn().expect("start weir run")
}

/// The API of the controller running on `store`, once it is up.
fn api(store: &Path) -> RemoteCluster {
    let file = store.with_extension("redb.addr");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The token is written before the address.
        if let Ok(address) = std::fs::read_to_string(&file)
            && !address.trim().is_empty()
        {
            let token = std::fs::read_to_string(weir::api::token::token_file(store))
                .expect("the API token beside the store");
            return RemoteCluster::new(
                format!("http://{}", address.trim()),
                Some(token.trim().to_string()),
            );
        }
        assert!(
            Instant::now() < deadline,
            "weir run did not write {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rollout_key() -> ObjectKey {
    ObjectKey::new("argoproj.io/v1alpha1", "Rollout", "shop", "shop")
}

async fn status(cluster: &dyn Cluster) -> Option<(Value, RolloutStatus)> {
    let object = cluster.get(&rollout_key()).await.ok()?;
    let status = RolloutStatus::of(&object);
    Some((object, status))
}

async fn wait(
    cluster: &dyn Cluster,
    what: &str,
    done: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((_, s)) = status(cluster).await
            && done(&s)
        {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_analysis_the_controller_resumes_where_it_was_and_applies_nothing_twice() {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("store.redb");
    let port = metrics_server();
    let v1 = dir.path().join("v1.yaml");
    std::fs::write(&v1, manifests(port, "shop:1")).expect("write");
    let v2 = dir.path().join("v2.yaml");
    std::fs::write(&v2, manifests(port, "shop:2")).expect("write");

    let mut child = start(&store, Some(&v1));
    let remote = api(&store);
    let first = wait(&remote, "v1 Healthy", |s| {
        s.phase.as_deref() == Some("Healthy")
    })
    .await;

    // While the controller holds the store, the CLI goes through its API.
    let applied = weir()
        .args(["apply", "-f"])
        .arg(&v2)
        .arg("--store")
        .arg(&store)
        .output()
        .expect("weir apply");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert!(
        String::from_utf8_lossy(&applied.stdout)
            .contains("Rollout.argoproj.io shop/shop configured")
    );

    // Kill it once the analysis has taken at least one measurement.
    let during = wait(&remote, "the analysis under way", |s| {
        s.step_index() == 3
            && s.canary
                .current_step_analysis_run_status
                .as_ref()
                .is_some_and(|r| r.status == "Running")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    // What it had acknowledged is on disk.
    let killed_at = {
        let disk = DurableCluster::open(&store).expect("reopen after SIGKILL");
        let (_, s) = status(&disk).await.expect("rollout");
        assert_eq!(s.current_pod_hash, during.current_pod_hash);
        assert!(s.step_index() >= 3, "kept its progress: {s:?}");
        let vs = disk
            .get(&ObjectKey::new(
                "networking.istio.io/v1beta1",
                "VirtualService",
                "shop",
                "shop",
            ))
            .await
            .expect("vs");
        let canary_weight = vs["spec"]["http"][0]["route"][1]["weight"]
            .as_i64()
            .unwrap_or(-1);
        let recorded = s
            .canary
            .weights
            .as_ref()
            .map_or(0, |w| i64::from(w.canary.weight));
        assert!(
            canary_weight >= recorded && canary_weight >= 20,
            "VirtualService {canary_weight}, status {recorded}"
        );
        let run_name = format!("shop-{}-3", s.current_pod_hash.clone().unwrap_or_default());
        let run = disk
            .get(&ObjectKey::new(
                "argoproj.io/v1alpha1",
                "AnalysisRun",
                "shop",
                &run_name,
            ))
            .await
            .expect("the analysis run was written before the kill");
        let taken = run["status"]["metricResults"][0]["measurements"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(run["status"]["phase"], "Running", "killed mid-analysis");
        assert!(
            (1..4).contains(&taken),
            "killed after {taken} of 4 measurements"
        );
        s.step_index()
    };

    let mut child = start(&store, None);
    let remote = api(&store);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        if let Some((_, s)) = status(&remote).await {
            seen.push(s.step_index());
            if s.phase.as_deref() == Some("Healthy") && s.stable_rs != first.stable_rs {
                break s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "did not complete after the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        seen.iter().all(|i| *i >= killed_at),
        "it never went back before step {killed_at}: {seen:?}"
    );

    let shown = weir()
        .args(["get", "rollout", "shop", "-n", "shop", "--store"])
        .arg(&store)
        .output()
        .expect("weir get");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("✔ Healthy") && shown.contains("Step:          7/7"),
        "{shown}"
    );

    // A polite stop, then count what was written.
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(stopped.success());
    let exit = child.wait().expect("wait");
    assert!(
        exit.success(),
        "weir run exits cleanly on SIGTERM: {exit:?}"
    );

    let disk = DurableCluster::open(&store).expect("reopen");
    let hash = done.stable_rs.clone().expect("stable");
    let run = disk
        .get(&ObjectKey::new(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            "shop",
            &format!("shop-{hash}-3"),
        ))
        .await
        .expect("the step's AnalysisRun");
    assert_eq!(run["status"]["phase"], "Successful");
    let measurements = run["status"]["metricResults"][0]["measurements"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        measurements, 4,
        "exactly `count` measurements across the kill"
    );
    let runs = disk
        .list("argoproj.io", "AnalysisRun", "shop", &[])
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1, "one AnalysisRun for the one analysis step");
    let sets = disk
        .list("apps", "ReplicaSet", "shop", &[])
        .await
        .expect("replicasets");
    assert_eq!(sets.len(), 2, "one ReplicaSet per template");
    let (object, _) = status(&disk).await.expect("rollout");
    assert_eq!(
        object["metadata"]["generation"], 2,
        "the spec was applied twice, no more"
    );
}
