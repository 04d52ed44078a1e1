//! The operator verbs of the real `weir` binary on an embedded store, each
//! writing what its `kubectl argo rollouts` namesake writes: `abort` and
//! `retry` (`status.abort`; `retry` refuses a rollout that is not aborted),
//! `pause` (`spec.paused`), `restart` (`spec.restartAt`, now or `--in`), `set image` (the container's image), `undo`
//! (an earlier revision's template, without its hash label); `lint`
//! checks manifests offline; `status`
//! exits 0 on Healthy and 1 on Degraded or past its timeout; `list
//! rollouts` prints a line per rollout.

use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};
use weir::cluster::{Cluster, DurableCluster, ObjectKey, Write};

fn weir(args: &[&str], store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("run weir")
}

fn key() -> ObjectKey {
    ObjectKey::new("argoproj.io/v1alpha1", "Rollout", "shop", "checkout")
}

async fn rollout(store: &Path) -> serde_json::Value {
    let cluster = DurableCluster::open(store).expect("open store");
    cluster.get(&key()).await.expect("rollout")
}

/// A store holding Rollout `shop/checkout` with `status`.
async fn store_with(dir: &Path, status: serde_json::Value) -> std::path::PathBuf {
    let store = dir.join("weir.redb");
    let cluster = DurableCluster::open(&store).expect("create store");
    let rollout = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"replicas": 3,
                 "template": {"spec": {"containers": [{"name": "app", "image": "app:1"},
                                                      {"name": "proxy", "image": "envoy:1"}]}},
                 "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}},
        "status": status,
    });
    cluster
        .apply(vec![Write::Create(rollout)])
        .await
        .expect("seed");
    store
}

async fn abort_flag(store: &Path) -> Option<bool> {
    let cluster = DurableCluster::open(store).expect("open store");
    let rollout = cluster.get(&key()).await.expect("rollout");
    rollout["status"]["abort"].as_bool()
}

#[tokio::test]
async fn abort_then_retry_write_argos_fields_and_a_second_retry_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store_with(
        dir.path(),
        json!({"stableRS": "a", "currentPodHash": "b", "currentStepIndex": 1}),
    )
    .await;
    let aborted = weir(&["abort", "checkout", "-n", "shop"], &store);
    assert!(aborted.status.success(), "{aborted:?}");
    assert_eq!(abort_flag(&store).await, Some(true));

    let retried = weir(&["retry", "checkout", "-n", "shop"], &store);
    assert!(retried.status.success(), "{retried:?}");
    let said = String::from_utf8_lossy(&retried.stdout);
    assert!(said.contains("retried"), "{said}");
    assert_eq!(abort_flag(&store).await, Some(false));

    let again = weir(&["retry", "checkout", "-n", "shop"], &store);
    assert!(!again.status.success(), "a second retry must fail");
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("not aborted"), "{why}");
}

#[tokio::test]
async fn pause_and_set_image_write_the_spec_as_kubectl_argo_rollouts_does() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store_with(dir.path(), json!({})).await;
    let paused = weir(&["pause", "checkout", "-n", "shop"], &store);
    assert!(paused.status.success(), "{paused:?}");
    assert_eq!(rollout(&store).await["spec"]["paused"], true);

    let set = weir(
        &["set", "image", "checkout", "proxy=envoy:2", "-n", "shop"],
        &store,
    );
    assert!(set.status.success(), "{set:?}");
    let containers = rollout(&store).await["spec"]["template"]["spec"]["containers"].clone();
    assert_eq!(containers[0]["image"], "app:1");
    assert_eq!(containers[1]["image"], "envoy:2");

    let missing = weir(
        &["set", "image", "checkout", "sidecar=x:1", "-n", "shop"],
        &store,
    );
    assert!(!missing.status.success());
    let why = String::from_utf8_lossy(&missing.stderr);
    assert!(why.contains("sidecar") && why.contains("proxy"), "{why}");
    let malformed = weir(
        &["set", "image", "checkout", "no-equals", "-n", "shop"],
        &store,
    );
    assert!(!malformed.status.success());
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("CONTAINER=IMAGE"));
}

#[tokio::test]
async fn restart_writes_restart_at_now_or_after_in_as_kubectl_argo_rollouts_does() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store_with(dir.path(), json!({})).await;
    let parse = |v: &serde_json::Value| {
        let text = v["spec"]["restartAt"].as_str().expect("restartAt");
        assert!(
            text.ends_with('Z') && !text.contains('.'),
            "whole seconds, UTC: {text}"
        );
        chrono::DateTime::parse_from_rfc3339(text).expect("RFC 3339")
    };
    let before = chrono::Utc::now();
    let now = weir(&["restart", "checkout", "-n", "shop"], &store);
    assert!(now.status.success(), "{now:?}");
    let at = parse(&rollout(&store).await);
    assert!(
        (at.timestamp() - before.timestamp()).abs() <= 2,
        "{at} vs {before}"
    );

    let later = weir(&["restart", "checkout", "-n", "shop", "--in", "5m"], &store);
    assert!(later.status.success(), "{later:?}");
    let at = parse(&rollout(&store).await);
    let ahead = at.timestamp() - chrono::Utc::now().timestamp();
    assert!((295..=300).contains(&ahead), "{ahead} s ahead");

    let bad = weir(
        &["restart", "checkout", "-n", "shop", "--in", "soon"],
        &store,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--in"));
}

#[tokio::test]
async fn status_exits_by_the_rollouts_phase_and_its_timeout() {
    for (phase, ok, said) in [
        ("Healthy", true, "Healthy"),
        ("Degraded", false, "Degraded"),
        ("Progressing", false, "timeout"),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_with(dir.path(), json!({"phase": phase, "message": "why"})).await;
        let started = std::time::Instant::now();
        let out = weir(
            &["status", "checkout", "-n", "shop", "--timeout", "1s"],
            &store,
        );
        assert_eq!(out.status.success(), ok, "{phase}: {out:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(said) && text.contains("why"),
            "{phase}: {text}"
        );
        if phase == "Progressing" {
            assert!(started.elapsed() >= std::time::Duration::from_secs(1));
        }
    }
}

#[tokio::test]
async fn list_rollouts_prints_a_line_per_rollout() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store_with(
        dir.path(),
        json!({"phase": "Paused", "currentStepIndex": 1, "availableReplicas": 3,
               "canary": {"weights": {"canary": {"weight": 20, "serviceName": "c", "podTemplateHash": "b"},
                                      "stable": {"weight": 80, "serviceName": "s", "podTemplateHash": "a"}}}}),
    )
    .await;
    let out = weir(&["list", "rollouts", "-n", "shop"], &store);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("checkout"))
        .unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        vec!["checkout", "Paused", "1/2", "20", "3", "3"],
        "{text}"
    );
}

#[tokio::test]
async fn undo_restores_an_earlier_revisions_template() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store_with(dir.path(), json!({})).await;
    {
        let cluster = DurableCluster::open(&store).expect("open store");
        let rollout = cluster.get(&key()).await.expect("rollout");
        for (revision, image, hash) in [(1, "app:0", "h1"), (2, "app:1", "h2")] {
            let labels = json!({"rollouts-pod-template-hash": hash});
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("checkout-{hash}"), "namespace": "shop",
                             "annotations": {"rollout.argoproj.io/revision": revision.to_string()},
                             "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                                                  "name": "checkout", "uid": rollout["metadata"]["uid"],
                                                  "controller": true}]},
                "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{"name": "app", "image": image},
                                                              {"name": "proxy", "image": "envoy:1"}]}}},
            });
            cluster
                .apply(vec![Write::Create(rs)])
                .await
                .expect("replica set");
        }
    }
    let image = |rollout: &serde_json::Value| {
        rollout["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // The Rollout runs app:1 (revision 2): undo goes to revision 1.
    let undone = weir(&["undo", "checkout", "-n", "shop"], &store);
    assert!(undone.status.success(), "{undone:?}");
    let after = rollout(&store).await;
    assert_eq!(image(&after), "app:0");
    assert!(
        after["spec"]["template"]["metadata"]["labels"]["rollouts-pod-template-hash"].is_null(),
        "the hash label is not copied: {after}"
    );
    let to_two = weir(
        &["undo", "checkout", "-n", "shop", "--to-revision", "2"],
        &store,
    );
    assert!(to_two.status.success(), "{to_two:?}");
    assert_eq!(image(&rollout(&store).await), "app:1");
    let again = weir(
        &["undo", "checkout", "-n", "shop", "--to-revision", "2"],
        &store,
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("skipped"),
        "{again:?}"
    );
    let missing = weir(
        &["undo", "checkout", "-n", "shop", "--to-revision", "9"],
        &store,
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("revision 9"));
}

#[test]
fn lint_names_each_bad_field_offline_and_exits_by_the_result() {
    let dir = tempfile::tempdir().expect("dir");
    let good = r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: good, namespace: shop}
spec:
  template: {spec: {containers: [{name: app, image: app:1}]}}
  strategy: {canary: {steps: [{setWeight: 20}, {pause: {}}]}}
---
apiVersion: v1
kind: Service
metadata: {name: good, namespace: shop}
"#;
    let bad = r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: typo, namespace: shop}
spec:
  template: {spec: {containers: [{name: app, image: app:1}]}}
  strategy: {canary: {steps: [{setWieght: 20}]}}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: rate, namespace: shop}
spec:
  metrics:
    - name: rate
      count: 3
      provider: {web: {url: "http://x"}}
"#;
    std::fs::write(dir.path().join("good.yaml"), good).expect("write");
    let run = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["lint", "-f"])
            .arg(path)
            .output()
            .expect("run weir")
    };
    let ok = run(&dir.path().join("good.yaml"));
    assert!(ok.status.success(), "{ok:?}");
    let said = String::from_utf8_lossy(&ok.stdout);
    assert!(
        said.contains("Rollout shop/good") && said.contains("not checked"),
        "{said}"
    );

    std::fs::write(dir.path().join("bad.yaml"), bad).expect("write");
    let out = run(dir.path());
    assert!(!out.status.success(), "errors must fail: {out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Rollout shop/typo") && said.contains("setWieght"),
        "{said}"
    );
    assert!(
        said.contains("AnalysisTemplate shop/rate") && said.contains("interval"),
        "{said}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 4 objects have errors"));
}

#[tokio::test]
async fn get_analysisrun_shows_the_verdict_and_each_metrics_counts() {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("weir.redb");
    {
        let cluster = DurableCluster::open(&store).expect("create store");
        let run = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
            "metadata": {"name": "smoke", "namespace": "shop"},
            "spec": {"metrics": [
                {"name": "success-rate", "provider": {"web": {"url": "http://x"}}},
                {"name": "latency", "provider": {"web": {"url": "http://y"}}}]},
            "status": {"phase": "Failed", "message": "Metric \"latency\" assessed Failed",
                "metricResults": [
                    {"name": "success-rate", "phase": "Successful", "successful": 2, "count": 2,
                     "measurements": [{"phase": "Successful", "value": "0.99"}]},
                    {"name": "latency", "phase": "Failed", "failed": 1, "count": 1,
                     "measurements": [{"phase": "Failed", "value": "812"}]}]}
        });
        cluster.apply(vec![Write::Create(run)]).await.expect("seed");
    }
    let shown = weir(&["get", "analysisrun", "smoke", "-n", "shop"], &store);
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("Status:          ✖ Failed"), "{text}");
    assert!(text.contains("assessed Failed"), "{text}");
    let line = |metric: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(metric))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("success-rate").contains("successful 2 failed 0"),
        "{text}"
    );
    assert!(
        line("latency").contains("Failed") && line("latency").contains("failed 1"),
        "{text}"
    );
    assert!(text.contains("last: 812"), "{text}");
    let missing = weir(&["get", "analysisrun", "nope", "-n", "shop"], &store);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("analysisrun shop/nope"));
}

#[tokio::test]
async fn terminate_analysisrun_writes_spec_terminate_and_leaves_a_finished_run_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("weir.redb");
    let key = |name: &str| ObjectKey::new("argoproj.io/v1alpha1", "AnalysisRun", "shop", name);
    {
        let cluster = DurableCluster::open(&store).expect("create store");
        let run = |name: &str, phase: &str| {
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
                   "metadata": {"name": name, "namespace": "shop"},
                   "spec": {"metrics": [{"name": "m", "provider": {"web": {"url": "http://x"}}}]},
                   "status": {"phase": phase}})
        };
        cluster
            .apply(vec![
                Write::Create(run("running", "Running")),
                Write::Create(run("done", "Successful")),
            ])
            .await
            .expect("seed");
    }
    let out = weir(
        &["terminate", "analysisrun", "running", "-n", "shop"],
        &store,
    );
    assert!(out.status.success(), "{out:?}");
    let out = weir(&["terminate", "ar", "done", "-n", "shop"], &store);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("over already"));
    let cluster = DurableCluster::open(&store).expect("open store");
    let running = cluster.get(&key("running")).await.expect("running");
    assert_eq!(running["spec"]["terminate"], true);
    let done = cluster.get(&key("done")).await.expect("done");
    assert!(done["spec"].get("terminate").is_none(), "{done}");
}
