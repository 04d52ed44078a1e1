//! The Kubernetes backend against a fake API server (a mock: no API server
//! can run on this machine). These tests assert the requests Weir makes and
//! how it handles the answers: reads and writes with resourceVersions, a
//! 409 on a write retried from a fresh read, a 403 surfacing on the rollout
//! as a clear error, a 410 on a watch followed by a re-list, and leader
//! election over a real Lease conversation.

use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use weir::cluster::{Cluster, ClusterError, KubeCluster, ObjectKey, Write};
use weir::controller::leader::{LeaderElector, Leadership};
use weir::controller::{ControllerSettings, assemble};
use weir_e2e::controller::{Harness, config, wait};
use weir_e2e::fake_apiserver::{FakeApiServer, Fault};

fn cm(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
           "data": {"v": value}})
}

fn count(requests: &[String], prefix: &str) -> usize {
    requests.iter().filter(|r| r.starts_with(prefix)).count()
}

#[tokio::test]
async fn reads_and_writes_go_to_the_right_paths_with_resource_versions() {
    let server = FakeApiServer::new();
    let cluster = KubeCluster::new(server.client());
    let created = cluster
        .apply(vec![Write::Create(cm("a", "1"))])
        .await
        .expect("create")
        .remove(0)
        .expect("object");
    let version = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let key = ObjectKey::new("v1", "ConfigMap", "shop", "a");
    assert_eq!(cluster.get(&key).await.expect("get")["data"]["v"], "1");
    let listed = cluster
        .list("", "ConfigMap", "shop", &[("app".into(), "a".into())])
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);

    // A stale write is refused before anything is sent to be written.
    let stale = Write::Update {
        object: cm("a", "2"),
        expected_version: Some("0".into()),
    };
    assert!(matches!(
        cluster.apply(vec![stale]).await,
        Err(ClusterError::Conflict { .. })
    ));
    assert_eq!(count(&server.requests(), "PUT"), 0);
    // A current one carries its resourceVersion to the server.
    let fresh = Write::Update {
        object: cm("a", "2"),
        expected_version: Some(version.clone()),
    };
    cluster.apply(vec![fresh]).await.expect("update");
    assert_eq!(
        server
            .object("", "configmaps", "shop", "a")
            .expect("stored")["data"]["v"],
        "2"
    );

    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST /api/v1/namespaces/shop/configmaps")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/shop/configmaps?")
                && r.contains("labelSelector=app%3Da")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("PUT /api/v1/namespaces/shop/configmaps/a")),
        "{requests:?}"
    );

    // A server-side conflict (another writer between check and write) is a typed Conflict.
    let now = server
        .object("", "configmaps", "shop", "a")
        .expect("stored");
    let current = now["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    server.inject(Fault {
        method: Method::PUT,
        path: "/configmaps/a".into(),
        code: 409,
        reason: "Conflict".into(),
        times: 1,
    });
    let racing = Write::Update {
        object: cm("a", "3"),
        expected_version: Some(current),
    };
    assert!(matches!(
        cluster.apply(vec![racing]).await,
        Err(ClusterError::Conflict { .. })
    ));

    // Deletes carry the precondition.
    let gone = Write::Delete {
        key: key.clone(),
        expected_version: None,
    };
    cluster.apply(vec![gone]).await.expect("delete");
    assert!(matches!(
        cluster.get(&key).await,
        Err(ClusterError::NotFound(_))
    ));
}

fn rollout(image: &str) -> Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "checkout", "namespace": "shop", "generation": 1},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "checkout"}},
                 "template": {"metadata": {"labels": {"app": "checkout"}},
                              "spec": {"containers": [{"name": "app", "image": image}]}},
                 "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "0s"}}]}}}})
}

async fn controller_on(server: &FakeApiServer) -> Harness {
    let cluster = Arc::new(KubeCluster::new(server.client()));
    cluster.start_watching(&[
        ("argoproj.io", "Rollout", ""),
        ("", "ConfigMap", "argo-rollouts"),
    ]);
    let mut settings = config();
    settings.settings = ControllerSettings {
        resync: Duration::from_millis(300),
        ..settings.settings
    };
    let assembled = assemble(cluster.clone(), settings).await.expect("assemble");
    Harness::start_assembled(cluster, assembled, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_write_surfaces_on_the_rollout_as_a_clear_error() {
    let server = FakeApiServer::new();
    server.seed("rollouts", rollout("app:1"));
    server.inject(Fault {
        method: Method::POST,
        path: "/replicasets".into(),
        code: 403,
        reason: "Forbidden".into(),
        times: 1000,
    });
    let h = controller_on(&server).await;
    let s = wait(
        h.cluster.as_ref(),
        "checkout",
        30,
        "Degraded by the 403",
        |s| s.phase.as_deref() == Some("Degraded"),
    )
    .await;
    let condition = s.condition("Progressing").expect("condition");
    assert_eq!(condition.reason, "Forbidden");
    assert!(
        condition.message.contains("replicasets") || condition.message.contains("ReplicaSet"),
        "{}",
        condition.message
    );
    assert!(
        condition.message.contains("ClusterRole"),
        "{}",
        condition.message
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_on_the_status_write_is_retried_from_a_fresh_read() {
    let server = FakeApiServer::new();
    server.seed("rollouts", rollout("app:1"));
    server.inject(Fault {
        method: Method::PUT,
        path: "/rollouts/checkout".into(),
        code: 409,
        reason: "Conflict".into(),
        times: 2,
    });
    let h = controller_on(&server).await;
    wait(
        h.cluster.as_ref(),
        "checkout",
        30,
        "Healthy after the conflicts",
        |s| s.phase.as_deref() == Some("Healthy"),
    )
    .await;
    let requests = server.requests();
    assert!(
        count(
            &requests,
            "PUT /apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout"
        ) >= 3,
        "{requests:?}"
    );
    // Each attempt re-read the rollout first.
    assert!(
        count(
            &requests,
            "GET /apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout"
        ) >= 3,
        "{requests:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_on_the_watch_is_followed_by_a_relist_and_the_events_keep_coming() {
    let server = FakeApiServer::new();
    server.seed("configmaps", cm("before", "1"));
    server.inject(Fault {
        method: Method::GET,
        path: "watch=true".into(),
        code: 410,
        reason: "Expired".into(),
        times: 1,
    });
    let cluster = Arc::new(KubeCluster::new(server.client()));
    let mut events = cluster.watch().expect("watch");
    cluster.start_watching(&[("", "ConfigMap", "")]);
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("event")
        .expect("open");
    assert_eq!(first.key.name, "before");
    // After the 410 the watcher lists again (with backoff) and resumes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let requests = server.requests();
        let lists = requests
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/configmaps") && !r.contains("watch=true"))
            .count();
        let watches = requests.iter().filter(|r| r.contains("watch=true")).count();
        if lists >= 2 && watches >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no re-list after the 410: {requests:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn leader_election_acquires_renews_loses_and_reacquires_over_the_api() {
    let server = FakeApiServer::new();
    let cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(server.client()));
    let a = LeaderElector::new(
        cluster.clone(),
        "weir",
        "weir-controller",
        "a",
        Duration::from_secs(15),
    );
    let b = LeaderElector::new(
        cluster.clone(),
        "weir",
        "weir-controller",
        "b",
        Duration::from_secs(15),
    );
    let t0 = chrono::Utc::now();
    assert_eq!(a.try_acquire_or_renew(t0).await, Ok(Leadership::Leading));
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("POST /apis/coordination.k8s.io/v1/namespaces/weir/leases"))
    );
    assert_eq!(
        b.try_acquire_or_renew(t0).await,
        Ok(Leadership::Following { holder: "a".into() })
    );
    let t1 = t0 + chrono::Duration::seconds(10);
    assert_eq!(a.try_acquire_or_renew(t1).await, Ok(Leadership::Leading));
    assert!(server.requests().iter().any(|r| {
        r.starts_with("PUT /apis/coordination.k8s.io/v1/namespaces/weir/leases/weir-controller")
    }));
    let lease = server
        .object("coordination.k8s.io", "leases", "weir", "weir-controller")
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    // a stops renewing; once expired, b takes over and a follows.
    let t2 = t1 + chrono::Duration::seconds(16);
    assert_eq!(b.try_acquire_or_renew(t2).await, Ok(Leadership::Leading));
    assert_eq!(
        a.try_acquire_or_renew(t2).await,
        Ok(Leadership::Following { holder: "b".into() })
    );
    // A renewal that loses a race (409) is not leadership.
    server.inject(Fault {
        method: Method::PUT,
        path: "/leases/weir-controller".into(),
        code: 409,
        reason: "Conflict".into(),
        times: 1,
    });
    assert!(matches!(
        b.try_acquire_or_renew(t2).await,
        Ok(Leadership::Following { .. })
    ));
    // b releases; a re-acquires at once.
    b.release().await.expect("release");
    assert_eq!(a.try_acquire_or_renew(t2).await, Ok(Leadership::Leading));
    let lease = server
        .object("coordination.k8s.io", "leases", "weir", "weir-controller")
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseTransitions"], 2);
}

/// The faulty router on a runtime over the fake API server.
async fn faulty_on(server: &FakeApiServer, timeout: Duration) -> weir::plugin::TrafficRouter {
    let cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(server.client()));
    let runtime = weir::plugin::PluginRuntime::new(
        weir::plugin::RuntimeConfig {
            engine: Default::default(),
            cache_dir: Some(weir_e2e::cache_dir()),
        },
        cluster,
    )
    .expect("runtime");
    let router = runtime
        .load_router(weir_e2e::faulty_spec("test/faulty", timeout))
        .await
        .expect("load");
    // The handle keeps what it needs of the runtime alive.
    drop(runtime);
    router
}

#[tokio::test]
async fn a_commit_refused_part_way_says_what_landed_and_undoes_it() {
    let server = FakeApiServer::new();
    let router = faulty_on(&server, Duration::from_secs(5)).await;
    // The plugin stages four creates; the server refuses the second.
    server.inject_after(
        Fault {
            method: Method::POST,
            path: "/configmaps".into(),
            code: 422,
            reason: "Invalid".into(),
            times: 1,
        },
        1,
    );
    let bad = weir_e2e::rollout(r#"{"fault":"many-creates","count":3,"size":1}"#);
    let error = router
        .set_weight(&bad, 10, &[])
        .await
        .expect_err("the commit fails");
    println!("row partial-commit: {error}");
    match &error.kind {
        weir::plugin::CallErrorKind::WriteConflict(ClusterError::PartiallyApplied {
            landed,
            undone,
            kept,
            failed,
            ..
        }) => {
            assert_eq!(landed, &["create ConfigMap shop/checkout-n0".to_string()]);
            assert_eq!(undone, landed, "the create was undone");
            assert!(kept.is_empty());
            assert_eq!(failed, "create ConfigMap shop/checkout-n1");
        }
        other => panic!("expected a partial commit, got {other}"),
    }
    let message = error.to_string();
    assert!(
        !message.contains("nothing was written"),
        "never claims nothing was written when something was: {message}"
    );
    assert!(
        server
            .object("", "configmaps", "shop", "checkout-n0")
            .is_none(),
        "undone on the server"
    );
    assert_eq!(
        count(&server.requests(), "POST"),
        2,
        "no write after the refusal"
    );
}

#[tokio::test]
async fn the_deadline_covers_the_commit_and_no_write_starts_after_it() {
    let server = FakeApiServer::new();
    let router = faulty_on(&server, Duration::from_millis(800)).await;
    server.slow(Method::POST, "/configmaps", Duration::from_secs(3));
    let bad = weir_e2e::rollout(r#"{"fault":"many-creates","count":3,"size":1}"#);
    let started = std::time::Instant::now();
    let error = router
        .set_weight(&bad, 10, &[])
        .await
        .expect_err("the commit runs into the deadline");
    let elapsed = started.elapsed();
    println!("row commit-deadline: {elapsed:?}: {error}");
    assert!(
        elapsed < Duration::from_millis(800) + Duration::from_millis(700),
        "ended at the deadline: {elapsed:?}"
    );
    assert!(error.to_string().contains("deadline"), "{error}");
    assert_eq!(
        count(&server.requests(), "POST"),
        1,
        "the first write was cut off and no other started"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        server
            .object("", "configmaps", "shop", "checkout-n0")
            .is_none(),
        "a cut-off request is not applied late"
    );
}

#[tokio::test]
async fn one_call_cannot_flood_the_api_server() {
    let server = FakeApiServer::new();
    let router = faulty_on(&server, Duration::from_secs(5)).await;
    let flood = weir_e2e::rollout(r#"{"fault":"request-flood","count":38000}"#);
    let error = router
        .set_weight(&flood, 10, &[])
        .await
        .expect_err("stopped at apiRequests");
    assert!(
        matches!(
            error.kind,
            weir::plugin::CallErrorKind::LimitExceeded {
                limit: weir::plugin::Limit::ApiRequests,
                cap: 128,
                ..
            }
        ),
        "{error}"
    );
    let gets = count(&server.requests(), "GET");
    println!("row api-request-flood: {gets} GETs reached the server: {error}");
    assert!(gets <= 128, "{gets} requests reached the server");
}
