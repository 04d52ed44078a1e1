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
use weir_e2e::controller::{Harness, config, requests_during, wait};
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
    let cluster = KubeCluster::new(server.admin_client());
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
    cluster.start_controller_watches("weir-system");
    let mut settings = config();
    settings.settings = ControllerSettings {
        resync: Duration::from_millis(300),
        ..settings.settings
    };
    let assembled = assemble(cluster.clone(), settings).await.expect("assemble");
    Harness::start_on_kubernetes(cluster, assembled).await
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
    // The retry after each conflict re-read the rollout from the server,
    // not from the watch cache the write had found behind.
    assert!(
        count(
            &requests,
            "GET /apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout"
        ) >= 2,
        "{requests:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_state_reconcile_sends_nothing_to_the_api_server() {
    let server = FakeApiServer::new();
    server.seed("rollouts", rollout("app:1"));
    let h = controller_on(&server).await;
    let settled = wait(h.cluster.as_ref(), "checkout", 30, "Healthy", |s| {
        s.phase.as_deref() == Some("Healthy")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Resyncs every 300 ms reconcile the settled rollout: the Rollout, its
    // ReplicaSets and the registration come from the watches' cache.
    let (reconciled, requests) = requests_during(&server, &h.metrics, Duration::from_secs(2)).await;
    assert!(reconciled >= 3, "only {reconciled} reconciles in 2 s");
    assert!(
        requests.is_empty(),
        "{reconciled} reconciles sent {requests:?}"
    );
    // A change made by someone else is still acted on: its watch event
    // brings it into the cache before it wakes the rollout.
    let mut object = server
        .object("argoproj.io", "rollouts", "shop", "checkout")
        .expect("rollout");
    object["spec"]["template"]["spec"]["containers"][0]["image"] = json!("app:2");
    let admin = KubeCluster::new(server.admin_client());
    admin
        .apply(vec![Write::update_as_read(object)])
        .await
        .expect("update");
    wait(
        h.cluster.as_ref(),
        "checkout",
        30,
        "the new revision promoted",
        |s| {
            s.phase.as_deref() == Some("Healthy")
                && s.stable_rs.is_some()
                && s.stable_rs != settled.stable_rs
        },
    )
    .await;
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
    let cluster = Arc::new(KubeCluster::new(server.admin_client()));
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
        "weir-system",
        "weir-controller",
        "a",
        Duration::from_secs(15),
    );
    let b = LeaderElector::new(
        cluster.clone(),
        "weir-system",
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
            .any(|r| r
                .starts_with("POST /apis/coordination.k8s.io/v1/namespaces/weir-system/leases"))
    );
    assert_eq!(
        b.try_acquire_or_renew(t0).await,
        Ok(Leadership::Following { holder: "a".into() })
    );
    let t1 = t0 + chrono::Duration::seconds(10);
    assert_eq!(a.try_acquire_or_renew(t1).await, Ok(Leadership::Leading));
    assert!(server.requests().iter().any(|r| {
        r.starts_with(
            "PUT /apis/coordination.k8s.io/v1/namespaces/weir-system/leases/weir-controller",
        )
    }));
    let lease = server
        .object(
            "coordination.k8s.io",
            "leases",
            "weir-system",
            "weir-controller",
        )
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    // b sees a's renewal at t1; a stops renewing; a lease duration later
    // by b's clock, b takes over and a follows.
    assert_eq!(
        b.try_acquire_or_renew(t1).await,
        Ok(Leadership::Following { holder: "a".into() })
    );
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
        .object(
            "coordination.k8s.io",
            "leases",
            "weir-system",
            "weir-controller",
        )
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseTransitions"], 2);
}

/// The faulty router on a runtime over the fake API server.
async fn faulty_on(server: &FakeApiServer, timeout: Duration) -> weir::plugin::TrafficRouter {
    let cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(server.admin_client()));
    let runtime = weir::plugin::PluginRuntime::new(
        weir::plugin::RuntimeConfig {
            engine: Default::default(),
            cache_dir: Some(weir_e2e::cache_dir()),
            bundle: None,
            recorder: None,
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

#[tokio::test]
async fn list_items_of_built_in_kinds_get_their_type_back() {
    let server = FakeApiServer::new();
    server.seed("configmaps", cm("a", "1"));
    server.seed("configmaps", cm("b", "2"));
    let cluster = KubeCluster::new(server.admin_client());
    let listed = cluster
        .list("", "ConfigMap", "shop", &[])
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
    for object in &listed {
        assert_eq!(object["apiVersion"], "v1");
        assert_eq!(object["kind"], "ConfigMap");
        ObjectKey::of(object).expect("an object key, as plugins' lists need");
    }
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.contains("limit=500")),
        "lists are paginated: {requests:?}"
    );
}

#[tokio::test]
async fn a_create_never_carries_a_resource_version() {
    let server = FakeApiServer::new();
    let cluster = KubeCluster::new(server.admin_client());
    let mut object = cm("a", "1");
    object["metadata"]["resourceVersion"] = json!("42");
    object["metadata"]["uid"] = json!("someone-else");
    let created = cluster
        .apply(vec![Write::Create(object)])
        .await
        .expect("created: the version was not sent");
    assert_ne!(
        created[0].as_ref().expect("object")["metadata"]["uid"],
        "someone-else"
    );
}

#[tokio::test]
async fn deleting_a_job_takes_its_pods_with_it() {
    let server = FakeApiServer::new();
    server.seed(
        "jobs",
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "shop"}}),
    );
    server.seed("configmaps", cm("a", "1"));
    let cluster = KubeCluster::new(server.admin_client());
    cluster
        .apply(vec![
            Write::Delete {
                key: ObjectKey::new("batch/v1", "Job", "shop", "j"),
                expected_version: None,
            },
            Write::Delete {
                key: ObjectKey::new("v1", "ConfigMap", "shop", "a"),
                expected_version: None,
            },
        ])
        .await
        .expect("deleted");
    let deletes = server.deletes();
    assert_eq!(
        deletes,
        vec![
            (
                "/apis/batch/v1/namespaces/shop/jobs/j".to_string(),
                Some("Foreground".to_string())
            ),
            (
                "/api/v1/namespaces/shop/configmaps/a".to_string(),
                Some("Background".to_string())
            ),
        ],
        "batch/v1 would orphan a Job's pods without a policy"
    );
}

#[tokio::test]
async fn a_kind_the_server_does_not_serve_is_not_taken_for_a_missing_object() {
    let server = FakeApiServer::new();
    // An SMI install at v1alpha1 only: Weir's table says v1alpha2.
    server.unserve("split.smi-spec.io/v1alpha2/trafficsplits");
    let cluster = KubeCluster::new(server.admin_client());
    let error = cluster
        .get(&ObjectKey::new(
            "split.smi-spec.io/v1alpha2",
            "TrafficSplit",
            "shop",
            "t",
        ))
        .await
        .expect_err("not served");
    match error {
        ClusterError::Invalid(why) => assert!(why.contains("CustomResourceDefinition"), "{why}"),
        other => panic!("a missing kind must not read as a missing object: {other:?}"),
    }
    // An object that is simply absent still is NotFound.
    assert!(matches!(
        cluster
            .get(&ObjectKey::new("v1", "ConfigMap", "shop", "nope"))
            .await,
        Err(ClusterError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_kind_is_deleted_at_a_version_the_server_serves() {
    let server = FakeApiServer::new();
    // An SMI install at v1alpha1 only: Weir's kinds table says v1alpha2.
    for v in ["v1alpha2", "v1alpha3", "v1alpha4"] {
        server.unserve(&format!("split.smi-spec.io/{v}/trafficsplits"));
    }
    server.seed(
        "trafficsplits",
        json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
               "metadata": {"name": "t", "namespace": "shop"},
               "spec": {"service": "s", "backends": []}}),
    );
    let cluster = KubeCluster::new(server.admin_client());
    let key = ObjectKey::new("split.smi-spec.io/v1alpha2", "TrafficSplit", "shop", "t");
    cluster
        .apply(vec![Write::Delete {
            key,
            expected_version: None,
        }])
        .await
        .expect("a delete does not depend on the version");
    assert!(
        server
            .object("split.smi-spec.io", "trafficsplits", "shop", "t")
            .is_none(),
        "deleted"
    );
    let deletes = server.deletes();
    assert!(
        deletes
            .iter()
            .any(|(path, _)| path.contains("/split.smi-spec.io/v1alpha1/")),
        "{deletes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_validation_error_surfaces_on_the_rollout_with_its_field_and_backs_off() {
    let server = FakeApiServer::new();
    server.seed("rollouts", rollout("app:1"));
    server.refuse_field(
        Method::POST,
        "/replicasets",
        "spec.template.spec.containers[0].image",
        1000,
    );
    let h = controller_on(&server).await;
    let s = wait(
        h.cluster.as_ref(),
        "checkout",
        30,
        "Degraded by the 422",
        |s| s.phase.as_deref() == Some("Degraded"),
    )
    .await;
    let condition = s.condition("Progressing").expect("condition");
    assert_eq!(condition.reason, "Invalid");
    assert!(
        condition
            .message
            .contains("spec.template.spec.containers[0].image"),
        "names the field: {}",
        condition.message
    );
    // Backed off (here 0.1 s doubling to 1 s), resyncs every 0.3 s
    // notwithstanding: once the backoff is at its longest, about one
    // attempt a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let posts = "POST /apis/apps/v1/namespaces/shop/replicasets";
    let before = count(&server.requests(), posts);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = count(&server.requests(), posts) - before;
    assert!(during <= 4, "{during} creates in 3 s");
    h.stop().await;
}

/// A cluster cut off from the API server at will: every request hangs.
struct Partition {
    inner: Arc<dyn Cluster>,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    async fn hang_if_cut(&self) {
        if self.cut.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait::async_trait]
impl Cluster for Partition {
    async fn get(&self, key: &ObjectKey) -> Result<Value, ClusterError> {
        self.hang_if_cut().await;
        self.inner.get(key).await
    }
    async fn list(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        self.hang_if_cut().await;
        self.inner.list(group, kind, namespace, labels).await
    }
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Option<Value>>, ClusterError> {
        self.hang_if_cut().await;
        self.inner.apply(writes).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_lead_at_once_through_a_hung_api_call_and_a_partition() {
    let server = FakeApiServer::new();
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a_cluster: Arc<dyn Cluster> = Arc::new(Partition {
        inner: Arc::new(KubeCluster::new(server.client())),
        cut: cut.clone(),
    });
    let b_cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(server.client()));
    let lease = Duration::from_secs(3);
    let a = LeaderElector::new(a_cluster, "weir-system", "weir-controller", "a", lease);
    let b = LeaderElector::new(b_cluster, "weir-system", "weir-controller", "b", lease);
    let (a_tx, a_rx) = tokio::sync::watch::channel(false);
    let (b_tx, b_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |rx: &tokio::sync::watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    let a_task = tokio::spawn(a.run(a_tx, stopped(&stop_rx)));
    let started = std::time::Instant::now();
    while !*a_rx.borrow() {
        assert!(started.elapsed() < Duration::from_secs(5), "a never led");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b_task = tokio::spawn(b.run(b_tx, stopped(&stop_rx)));
    // a leads, b follows; then a's API calls start to hang.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cut.store(true, std::sync::atomic::Ordering::SeqCst);
    let cut_at = std::time::Instant::now();
    let mut a_stopped = None;
    let mut b_started = None;
    while cut_at.elapsed() < Duration::from_secs(12) && b_started.is_none() {
        let (la, lb) = (*a_rx.borrow(), *b_rx.borrow());
        assert!(!(la && lb), "two leaders at once");
        if !la && a_stopped.is_none() {
            a_stopped = Some(cut_at.elapsed());
        }
        if lb {
            b_started = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let a_stopped = a_stopped.expect("the hung leader stepped down");
    let b_started = b_started.expect("the other replica took over");
    println!(
        "leader row: the hung leader stopped {a_stopped:?} after the cut; the other led {b_started:?} after it"
    );
    assert!(
        a_stopped < lease,
        "stepped down before its lease could expire"
    );
    assert!(b_started > a_stopped, "never both");
    let _ = stop_tx.send(true);
    // a's requests still hang: its release is bounded too.
    let _ = tokio::time::timeout(Duration::from_secs(5), a_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), b_task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_api_server_a_canary_that_never_starts_gets_no_traffic_and_aborts() {
    let server = FakeApiServer::new();
    server.seed("rollouts", rollout("app:1"));
    let h = controller_on(&server).await;
    wait(h.cluster.as_ref(), "checkout", 30, "first deploy", |s| {
        s.phase.as_deref() == Some("Healthy")
    })
    .await;
    // Version 2, whose pods the server's ReplicaSet controller never makes
    // ready, with a progress deadline that aborts.
    let mut v2 = rollout("app:2");
    let hash = weir::controller::children::pod_template_hash(&v2["spec"]["template"]);
    server.never_ready(&format!("checkout-{hash}"));
    v2["spec"]["progressDeadlineSeconds"] = json!(2);
    v2["spec"]["progressDeadlineAbort"] = json!(true);
    let key = ObjectKey::new("argoproj.io/v1alpha1", "Rollout", "shop", "checkout");
    let stored = h.cluster.get(&key).await.expect("rollout");
    v2["metadata"] = stored["metadata"].clone();
    v2["status"] = stored["status"].clone();
    h.cluster
        .apply(vec![Write::Update {
            object: v2,
            expected_version: stored["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string),
        }])
        .await
        .expect("update");
    let s = wait(h.cluster.as_ref(), "checkout", 30, "aborted", |s| {
        s.abort && s.phase.as_deref() == Some("Degraded")
    })
    .await;
    assert!(
        s.message
            .as_deref()
            .is_some_and(|m| m.contains("ProgressDeadlineExceeded")),
        "{:?}",
        s.message
    );
    // The canary never got weight: with no traffic routing its share is its
    // replicas, and the stable is whole again.
    let stable = s.stable_rs.expect("stable");
    let rs = server
        .object("apps", "replicasets", "shop", &format!("checkout-{stable}"))
        .expect("stable rs");
    assert_eq!(rs["spec"]["replicas"], 2);
    assert_eq!(s.canary.weights.as_ref().map_or(0, |w| w.canary.weight), 0);
    h.stop().await;
}

#[tokio::test]
async fn a_plugin_reads_a_kind_at_the_version_it_names() {
    // An SMI install that serves TrafficSplit at v1alpha1 only; the SMI
    // plugin writes and reads v1alpha1 (Weir's table says v1alpha2: reads
    // used to go there and fail).
    let server = FakeApiServer::new();
    for v in ["v1alpha2", "v1alpha3", "v1alpha4"] {
        server.unserve(&format!("split.smi-spec.io/{v}/trafficsplits"));
    }
    let cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(server.admin_client()));
    let runtime = weir::plugin::PluginRuntime::new(
        weir::plugin::RuntimeConfig {
            engine: Default::default(),
            cache_dir: Some(weir_e2e::cache_dir()),
            bundle: None,
            recorder: None,
        },
        cluster,
    )
    .expect("runtime");
    let mut spec = weir::plugin::PluginSpec::new(
        "argoproj-labs/smi",
        weir_e2e::plugin_wasm("weir-plugin-smi")
            .display()
            .to_string(),
    );
    spec.grant.write = vec![weir::plugin::GrantedKind {
        group: "split.smi-spec.io".into(),
        kind: "TrafficSplit".into(),
    }];
    let router = runtime.load_router(spec).await.expect("load");
    let rollout = weir_e2e::rollout("{}");
    // The first call creates the split, the second reads and updates it.
    for weight in [10, 30] {
        router
            .set_weight(&rollout, weight, &[])
            .await
            .unwrap_or_else(|e| panic!("set-weight {weight}: {e}"));
    }
    let split = server
        .object("split.smi-spec.io", "trafficsplits", "shop", "checkout")
        .expect("split");
    assert_eq!(split["apiVersion"], "split.smi-spec.io/v1alpha1");
    assert_eq!(split["spec"]["backends"][0]["weight"], "30");
    assert!(
        server.requests().iter().any(|r| r.starts_with(
            "GET /apis/split.smi-spec.io/v1alpha1/namespaces/shop/trafficsplits/checkout"
        )),
        "{:?}",
        server.requests()
    );
}

#[tokio::test]
async fn a_kind_outside_weirs_table_is_found_through_discovery() {
    let server = FakeApiServer::new();
    // Gateway API: a cluster-scoped kind, and a namespaced one.
    server.install(
        "gateway.networking.k8s.io",
        &["v1", "v1beta1"],
        "GatewayClass",
        "gatewayclasses",
        false,
    );
    server.install(
        "gateway.networking.k8s.io",
        &["v1", "v1beta1"],
        "HTTPRoute",
        "httproutes",
        true,
    );
    let cluster = KubeCluster::new(server.admin_client());
    let class = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                       "metadata": {"name": "istio"}, "spec": {"controllerName": "istio.io/gateway-controller"}});
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "HTTPRoute",
                       "metadata": {"name": "checkout", "namespace": "shop"}, "spec": {"rules": []}});
    cluster
        .apply(vec![Write::Create(class), Write::Create(route)])
        .await
        .expect("created where the server serves them");
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST /apis/gateway.networking.k8s.io/v1/gatewayclasses")),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.starts_with(
            "POST /apis/gateway.networking.k8s.io/v1beta1/namespaces/shop/httproutes"
        )),
        "{requests:?}"
    );
    let key = ObjectKey::new(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "shop",
        "checkout",
    );
    let read = cluster
        .get_at(&key, "gateway.networking.k8s.io/v1")
        .await
        .expect("read at v1");
    assert_eq!(read["apiVersion"], "gateway.networking.k8s.io/v1");
    let listed = cluster
        .list_at("gateway.networking.k8s.io/v1", "HTTPRoute", "shop", &[])
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    // Without a version (a delete): the server's preferred one.
    cluster
        .apply(vec![Write::Delete {
            key: key.clone(),
            expected_version: None,
        }])
        .await
        .expect("delete");
    assert!(
        server
            .object(
                "gateway.networking.k8s.io",
                "httproutes",
                "shop",
                "checkout"
            )
            .is_none()
    );
    // A kind whose CRD is not installed is reported as such, not as a missing object.
    let error = cluster
        .get_at(
            &ObjectKey::new("example.com/v1", "Widget", "shop", "w"),
            "example.com/v1",
        )
        .await
        .expect_err("not served");
    assert!(
        matches!(&error, ClusterError::Invalid(m) if m.contains("CustomResourceDefinition installed")),
        "{error}"
    );
}

/// Sends one request as a cluster admin; returns the status code and body.
async fn admin_call(
    server: &FakeApiServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    weir_e2e::fake_apiserver::send(&server.admin_client(), method, path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_argos_own_crds_weir_deploys_and_its_status_settles() {
    // Argo's CRDs: no status subresource on AnalysisRuns and Experiments,
    // required fields, and status fields outside Argo's schema pruned.
    let server = FakeApiServer::new().with_argo_crds();
    server.seed("rollouts", rollout("app:1"));
    let h = controller_on(&server).await;
    let healthy = wait(h.cluster.as_ref(), "checkout", 30, "first deploy", |s| {
        s.phase.as_deref() == Some("Healthy")
    })
    .await;
    assert_eq!(healthy.selector.as_deref(), Some("app=checkout"));
    assert_eq!(healthy.hpa_replicas, 2);
    let version = |server: &FakeApiServer| {
        server
            .object("argoproj.io", "rollouts", "shop", "checkout")
            .expect("rollout")["metadata"]["resourceVersion"]
            .clone()
    };
    let settled = version(&server);
    // Several resyncs (every 300 ms here) later, nothing was rewritten.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(version(&server), settled, "the status settles");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_through_the_scale_subresource_scales_the_stable() {
    let server = FakeApiServer::new();
    server.seed("rollouts", rollout("app:1"));
    let h = controller_on(&server).await;
    let healthy = wait(h.cluster.as_ref(), "checkout", 30, "first deploy", |s| {
        s.phase.as_deref() == Some("Healthy")
    })
    .await;
    let scale = "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout/scale";
    let (code, before) = admin_call(&server, Method::GET, scale, None).await;
    assert_eq!(code, 200);
    assert_eq!(before["status"]["selector"], "app=checkout");
    assert_eq!(before["status"]["replicas"], 2);
    // What `kubectl scale rollout checkout --replicas=5` (or an HPA) does.
    let (code, _) = admin_call(
        &server,
        Method::PUT,
        scale,
        Some(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": "checkout", "namespace": "shop"},
                    "spec": {"replicas": 5}})),
    )
    .await;
    assert_eq!(code, 200);
    let stable = healthy.stable_rs.expect("stable");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rs = server
            .object("apps", "replicasets", "shop", &format!("checkout-{stable}"))
            .expect("stable rs");
        if rs["spec"]["replicas"] == 5 && rs["status"]["availableReplicas"] == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stable not scaled: {rs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, after) = admin_call(&server, Method::GET, scale, None).await;
        if after["status"]["replicas"] == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "scale status: {after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_read_once_is_then_read_from_its_watch_but_secrets_never_are() {
    let server = FakeApiServer::new();
    server.grant("", &["secrets"], &["get"]);
    let admin = KubeCluster::new(server.admin_client());
    let vs = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"hosts": ["checkout"], "http": [{"name": "primary", "route": []}]}});
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "shop"}, "data": {"k": "dg=="}});
    admin
        .apply(vec![Write::Create(vs), Write::Create(secret)])
        .await
        .expect("seed");
    let cluster = Arc::new(KubeCluster::new(server.client()));
    cluster.start_controller_watches("weir-system");
    let vs_key = ObjectKey::new(
        "networking.istio.io/v1beta1",
        "VirtualService",
        "shop",
        "checkout",
    );
    let gets = |path: &str| count(&server.requests(), &format!("GET {path}"));
    let vs_path = "/apis/networking.istio.io/v1beta1/namespaces/shop/virtualservices/checkout";
    // The first read goes to the server and starts a watch of the kind;
    // once it has listed, reads are answered from it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = gets(vs_path);
        cluster.get(&vs_key).await.expect("read");
        if gets(vs_path) == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never read from the watch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A change made elsewhere arrives through the watch, without a read.
    let mut changed = admin.get(&vs_key).await.expect("admin read");
    changed["spec"]["hosts"] = json!(["checkout", "checkout.shop"]);
    admin
        .apply(vec![Write::update_as_read(changed)])
        .await
        .expect("update");
    let before = gets(vs_path);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cluster.get(&vs_key).await.expect("read")["spec"]["hosts"][1] != "checkout.shop" {
        assert!(
            std::time::Instant::now() < deadline,
            "the change never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gets(vs_path), before, "read from the server, not the watch");
    // Secrets are always read from the server and never watched (nor
    // listed): their values stay out of the controller's memory.
    let secret_key = ObjectKey::new("v1", "Secret", "shop", "creds");
    for _ in 0..3 {
        cluster.get(&secret_key).await.expect("secret");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gets("/api/v1/namespaces/shop/secrets/creds"), 3);
    let requests = server.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("GET") && r.contains("/secrets?")),
        "{requests:?}"
    );
}
