//! The operator verbs of the real `weir` binary on an embedded store:
//! `abort` and `retry` write what `kubectl argo rollouts abort` / `retry`
//! write (`status.abort`), and `retry` refuses a rollout that is not
//! aborted, with a non-zero exit naming why.

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

async fn abort_flag(store: &Path) -> Option<bool> {
    let cluster = DurableCluster::open(store).expect("open store");
    let rollout = cluster.get(&key()).await.expect("rollout");
    rollout["status"]["abort"].as_bool()
}

#[tokio::test]
async fn abort_then_retry_write_argos_fields_and_a_second_retry_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("weir.redb");
    {
        let cluster = DurableCluster::open(&store).expect("create store");
        let rollout = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"replicas": 1, "template": {}, "strategy": {"canary": {}}},
            "status": {"stableRS": "a", "currentPodHash": "b", "currentStepIndex": 1},
        });
        cluster
            .apply(vec![Write::Create(rollout)])
            .await
            .expect("seed");
    }
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
