//! The `weir` binary's operator verbs on Kubernetes (`--kubeconfig`):
//! through the API server with the user's own credentials (a kubeconfig
//! with a cluster admin's token), against the simulated API server served
//! over HTTP on loopback (a real one cannot run here), while the real
//! controller, as Weir's ServiceAccount, rolls out through the real Istio
//! router. Every verb's effect is checked on the Rollout the controller
//! drives; `get rollout --watch` redraws in place as it changes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use weir_e2e::controller::{Backend, Harness, istio_objects, istio_routing, rollout};
use weir_e2e::fake_apiserver::FakeApiServer;
use weir_e2e::weir_binary;

const STEPS: &str = "        - setWeight: 25
        - pause: {}
        - setWeight: 50
        - pause: {}";

/// Runs `weir ARGS [-n shop] --kubeconfig KUBECONFIG` off the async workers.
async fn weir(args: &[&str], kubeconfig: &Path) -> Output {
    let mut command = Command::new(weir_binary());
    command.args(args);
    // `apply` takes the namespaces from the manifests.
    if args.first() != Some(&"apply") {
        command.args(["-n", "shop"]);
    }
    command.arg("--kubeconfig").arg(kubeconfig);
    tokio::task::spawn_blocking(move || command.output().expect("run weir"))
        .await
        .expect("join")
}

async fn succeeds(args: &[&str], kubeconfig: &Path) -> String {
    let out = weir(args, kubeconfig).await;
    assert!(
        out.status.success(),
        "weir {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_weir_verb_works_through_the_api_server_with_a_kubeconfig() {
    let server = FakeApiServer::new();
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = server.serve_kubeconfig(dir.path()).await;
    let backend = Backend::simulated_on(server.clone());
    let h = Harness::on(&backend).await;

    // apply -f: the objects reach the API server.
    let manifest = dir.path().join("checkout.yaml");
    std::fs::write(
        &manifest,
        format!(
            "{}\n---\n{}",
            istio_objects("checkout"),
            rollout("checkout", "app:1", &istio_routing("checkout"), STEPS)
        ),
    )
    .expect("manifest");
    let manifest_arg = manifest.display().to_string();
    succeeds(&["apply", "-f", &manifest_arg], &kubeconfig).await;
    let first = h
        .wait("checkout", 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await;
    let v1 = first.stable_rs.clone().expect("stable");
    // status exits 0 on Healthy.
    succeeds(&["status", "checkout", "--timeout", "10s"], &kubeconfig).await;

    // set image: a new revision, paused at its first pause.
    succeeds(&["set", "image", "checkout", "app=app:2"], &kubeconfig).await;
    let paused = h
        .wait("checkout", 30, "paused at step 1", |s| {
            s.current_step_index == Some(1) && !s.pause_conditions.is_empty()
        })
        .await;
    let v2 = paused.current_pod_hash.clone().expect("canary");
    assert_ne!(v1, v2);
    let shown = succeeds(&["get", "rollout", "checkout"], &kubeconfig).await;
    assert!(shown.contains("Paused") && shown.contains("1/4"), "{shown}");
    let listed = succeeds(&["list", "rollouts"], &kubeconfig).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("checkout") && l.contains("Paused")),
        "{listed}"
    );

    // get --watch redraws in place while a promote moves the rollout on.
    let mut watch = Command::new(weir_binary())
        .args([
            "get",
            "rollout",
            "checkout",
            "--watch",
            "--timeout-seconds",
            "4",
        ])
        .args(["-n", "shop", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    succeeds(&["promote", "checkout"], &kubeconfig).await;
    h.wait("checkout", 30, "paused at step 3", |s| {
        s.current_step_index == Some(3) && !s.pause_conditions.is_empty()
    })
    .await;
    let watched = tokio::task::spawn_blocking(move || {
        let _ = watch.wait();
        let mut text = String::new();
        if let Some(mut out) = watch.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
        }
        text
    })
    .await
    .expect("join");
    let frames: Vec<&str> = watched
        .split("\x1b[H\x1b[2J")
        .filter(|f| !f.is_empty())
        .collect();
    assert!(frames.len() >= 2, "one redraw per change: {watched:?}");
    assert!(frames[0].contains("1/4"), "{}", frames[0]);
    assert!(
        frames.last().is_some_and(|f| f.contains("3/4")),
        "{watched}"
    );

    // pause (spec.paused) holds it; promote unpauses.
    succeeds(&["pause", "checkout"], &kubeconfig).await;
    h.wait("checkout", 30, "paused by spec", |s| {
        s.pause_conditions
            .iter()
            .any(|p| p.reason == "PausedBySpec")
    })
    .await;
    succeeds(&["promote", "checkout"], &kubeconfig).await;
    h.wait("checkout", 30, "unpaused", |s| {
        !s.pause_conditions
            .iter()
            .any(|p| p.reason == "PausedBySpec")
    })
    .await;

    // abort: Degraded, and status exits 1 on it.
    succeeds(&["abort", "checkout"], &kubeconfig).await;
    h.wait("checkout", 30, "aborted", |s| {
        s.abort && s.phase.as_deref() == Some("Degraded")
    })
    .await;
    let degraded = weir(&["status", "checkout", "--timeout", "10s"], &kubeconfig).await;
    assert_eq!(degraded.status.code(), Some(1), "{degraded:?}");

    // retry, then promote --full: Healthy on v2.
    succeeds(&["retry", "checkout"], &kubeconfig).await;
    h.wait("checkout", 30, "retried", |s| {
        !s.abort && s.current_step_index == Some(1)
    })
    .await;
    succeeds(&["promote", "checkout", "--full"], &kubeconfig).await;
    succeeds(&["status", "checkout", "--timeout", "30s"], &kubeconfig).await;
    let promoted = h.status("checkout").await;
    assert_eq!(promoted.stable_rs.as_deref(), Some(v2.as_str()));

    // restart: every pod older than restartAt is evicted.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let evicted = server.evictions().len();
    let older = server.objects("", "pods", "shop").len();
    succeeds(&["restart", "checkout"], &kubeconfig).await;
    h.wait("checkout", 30, "restarted", |s| s.restarted_at.is_some())
        .await;
    assert_eq!(server.evictions().len() - evicted, older);

    // undo: the previous revision's template comes back as a canary.
    let undone = succeeds(&["undo", "checkout"], &kubeconfig).await;
    assert!(undone.contains("rolled back"), "{undone}");
    let back = h
        .wait("checkout", 30, "the old template as a canary", |s| {
            s.current_pod_hash.as_deref() == Some(v1.as_str())
        })
        .await;
    assert_eq!(back.stable_rs.as_deref(), Some(v2.as_str()));
    h.stop().await;
}
