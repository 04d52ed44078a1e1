//! The simulated API server's own tests: each documented behaviour of
//! kube-apiserver it claims (see `weir_e2e::fake_apiserver`), checked over
//! raw HTTP through a kube-rs client, so the simulation cannot drift into
//! accepting what a real server refuses. No real API server is reached.

use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::Duration;
use weir_e2e::fake_apiserver::FakeApiServer;
use weir_e2e::fake_apiserver::rbac::{Access, Policy};

/// Sends one request; returns the status code and the JSON body.
async fn call(
    client: &kube::Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    weir_e2e::fake_apiserver::send(client, method, path, body).await
}

fn cm(name: &str, namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
           "data": {"k": "v"}})
}

fn rollout(name: &str) -> Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
           "metadata": {"name": name, "namespace": "shop"},
           "spec": {"replicas": 1}, "status": {"phase": "Healthy"}})
}

fn replica_set(name: &str, replicas: i64, annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
           "metadata": {"name": name, "namespace": "shop"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                                 "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
}

const CMS: &str = "/api/v1/namespaces/shop/configmaps";
const ROLLOUTS: &str = "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts";
const RSS: &str = "/apis/apps/v1/namespaces/shop/replicasets";

#[tokio::test]
async fn discovery_serves_built_ins_weirs_crds_istio_and_smi_and_nothing_else() {
    let server = FakeApiServer::new();
    let admin = server.admin_client();
    let (code, groups) = call(&admin, Method::GET, "/apis", None).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for g in [
        "apps",
        "batch",
        "argoproj.io",
        "networking.istio.io",
        "split.smi-spec.io",
    ] {
        assert!(names.contains(&g), "{g} in {names:?}");
    }
    let (_, argo) = call(&admin, Method::GET, "/apis/argoproj.io/v1alpha1", None).await;
    let resources: Vec<&str> = argo["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    // From deploy/crds.yaml, status subresources included.
    assert!(resources.contains(&"rollouts/status"), "{resources:?}");
    assert!(
        resources.contains(&"clusteranalysistemplates"),
        "{resources:?}"
    );
    // kube-rs's own discovery agrees.
    let discovery = kube::Discovery::new(admin.clone())
        .filter(&["split.smi-spec.io"])
        .run()
        .await
        .expect("discovery");
    let group = discovery.get("split.smi-spec.io").expect("smi");
    assert_eq!(group.preferred_version_or_latest(), "v1alpha4");
    // An unserved group, version or resource is the server's unknown-resource 404.
    for path in [
        "/apis/example.com/v1",
        "/apis/argoproj.io/v9/namespaces/shop/rollouts",
        "/api/v1/namespaces/shop/widgets/x",
    ] {
        let (code, body) = call(&admin, Method::GET, path, None).await;
        assert_eq!(code, 404, "{path}");
        assert_eq!(
            body["message"], "the server could not find the requested resource",
            "{path}"
        );
    }
    server.unserve("split.smi-spec.io/v1alpha4/trafficsplits");
    let (code, _) = call(
        &admin,
        Method::GET,
        "/apis/split.smi-spec.io/v1alpha4",
        None,
    )
    .await;
    assert_eq!(code, 404, "an unserved version leaves discovery");
    // An object that is not there names itself.
    let (code, body) = call(&admin, Method::GET, &format!("{CMS}/missing"), None).await;
    assert_eq!(code, 404);
    assert_eq!(body["details"]["name"], "missing");
}

#[tokio::test]
async fn lists_strip_built_in_item_types_select_by_label_and_paginate() {
    let server = FakeApiServer::new();
    let admin = server.admin_client();
    for name in ["a", "b", "c"] {
        let (code, _) = call(&admin, Method::POST, CMS, Some(cm(name, "shop"))).await;
        assert_eq!(code, 201);
    }
    let (_, list) = call(&admin, Method::GET, CMS, None).await;
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3));
    assert!(
        list["items"][0].get("kind").is_none(),
        "built-in items carry no kind"
    );
    assert!(list["items"][0].get("apiVersion").is_none());
    let (_, list) = call(&admin, Method::POST, ROLLOUTS, Some(rollout("r"))).await;
    assert_eq!(list["kind"], "Rollout");
    let (_, list) = call(&admin, Method::GET, ROLLOUTS, None).await;
    assert_eq!(
        list["items"][0]["kind"], "Rollout",
        "custom resources keep theirs"
    );
    // Selectors.
    for (selector, expected) in [
        ("app%3Da", 1),
        ("app!%3Da", 2),
        ("app+in+(a,b)", 2),
        ("app+notin+(a,b)", 1),
        ("app", 3),
        ("!app", 0),
    ] {
        let (_, list) = call(
            &admin,
            Method::GET,
            &format!("{CMS}?labelSelector={selector}"),
            None,
        )
        .await;
        assert_eq!(
            list["items"].as_array().map(Vec::len),
            Some(expected),
            "{selector}"
        );
    }
    // Pages.
    let (_, page) = call(&admin, Method::GET, &format!("{CMS}?limit=2"), None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    let (_, rest) = call(
        &admin,
        Method::GET,
        &format!("{CMS}?limit=2&continue={token}"),
        None,
    )
    .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
    assert!(rest["metadata"].get("continue").is_none());
}

#[tokio::test]
async fn creates_and_updates_follow_the_servers_version_and_status_rules() {
    let server = FakeApiServer::new();
    let admin = server.admin_client();
    // A create with a version is refused.
    let mut versioned = cm("v", "shop");
    versioned["metadata"]["resourceVersion"] = json!("7");
    let (code, body) = call(&admin, Method::POST, CMS, Some(versioned)).await;
    assert_eq!(
        (code, body["details"]["causes"][0]["field"].as_str()),
        (422, Some("metadata.resourceVersion"))
    );
    // An invalid name is refused.
    let (code, _) = call(&admin, Method::POST, CMS, Some(cm("Not_A_Name", "shop"))).await;
    assert_eq!(code, 422);
    // A Rollout's status is not set by a create (status subresource).
    let (code, created) = call(&admin, Method::POST, ROLLOUTS, Some(rollout("r"))).await;
    assert_eq!(code, 201);
    assert!(created.get("status").is_none(), "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    let v1 = created["metadata"]["resourceVersion"].clone();
    // A custom resource's update needs a version; a stale one is 409.
    let mut update = created.clone();
    update["metadata"]["resourceVersion"] = Value::Null;
    let (code, _) = call(
        &admin,
        Method::PUT,
        &format!("{ROLLOUTS}/r"),
        Some(update.clone()),
    )
    .await;
    assert_eq!(code, 422);
    update["metadata"]["resourceVersion"] = json!("999");
    let (code, _) = call(
        &admin,
        Method::PUT,
        &format!("{ROLLOUTS}/r"),
        Some(update.clone()),
    )
    .await;
    assert_eq!(code, 409);
    // A write that changes nothing changes no version.
    let (code, same) = call(
        &admin,
        Method::PUT,
        &format!("{ROLLOUTS}/r"),
        Some(created.clone()),
    )
    .await;
    assert_eq!((code, &same["metadata"]["resourceVersion"]), (200, &v1));
    // The main resource ignores status; /status changes only status.
    let mut both = same.clone();
    both["spec"]["replicas"] = json!(3);
    both["status"] = json!({"phase": "Degraded"});
    let (_, written) = call(
        &admin,
        Method::PUT,
        &format!("{ROLLOUTS}/r"),
        Some(both.clone()),
    )
    .await;
    assert_eq!(written["spec"]["replicas"], 3);
    assert!(
        written.get("status").is_none(),
        "status through the main resource is dropped"
    );
    assert_eq!(
        written["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );
    let mut status_only = written.clone();
    status_only["status"] = json!({"phase": "Healthy"});
    status_only["spec"]["replicas"] = json!(9);
    let (code, with_status) = call(
        &admin,
        Method::PUT,
        &format!("{ROLLOUTS}/r/status"),
        Some(status_only),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(with_status["status"]["phase"], "Healthy");
    assert_eq!(
        with_status["spec"]["replicas"], 3,
        "/status leaves the spec"
    );
    assert_eq!(
        with_status["metadata"]["generation"], 2,
        "a status write is no generation"
    );
    // Built-in kinds allow an update without a version.
    let (_, c) = call(&admin, Method::POST, CMS, Some(cm("u", "shop"))).await;
    let mut unconditional = c.clone();
    unconditional["metadata"]["resourceVersion"] = Value::Null;
    unconditional["data"]["k"] = json!("w");
    let (code, _) = call(
        &admin,
        Method::PUT,
        &format!("{CMS}/u"),
        Some(unconditional),
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn the_server_validates_replica_sets_services_leases_and_sizes() {
    let server = FakeApiServer::new();
    let admin = server.admin_client();
    let mut mismatched = replica_set("web", 1, json!({}));
    mismatched["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let (code, body) = call(&admin, Method::POST, RSS, Some(mismatched)).await;
    assert_eq!(code, 422);
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "spec.template.metadata.labels"
    );
    let (_, rs) = call(
        &admin,
        Method::POST,
        RSS,
        Some(replica_set("web", 1, json!({}))),
    )
    .await;
    let mut moved = rs.clone();
    moved["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
    moved["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
    let (code, body) = call(&admin, Method::PUT, &format!("{RSS}/web"), Some(moved)).await;
    assert_eq!(
        (code, body["details"]["causes"][0]["field"].as_str()),
        (422, Some("spec.selector"))
    );
    let service = json!({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": "s", "namespace": "shop"}, "spec": {"selector": {"app": "s"}}});
    let (code, body) = call(
        &admin,
        Method::POST,
        "/api/v1/namespaces/shop/services",
        Some(service),
    )
    .await;
    assert_eq!(
        (code, body["details"]["causes"][0]["field"].as_str()),
        (422, Some("spec.ports"))
    );
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": "l", "namespace": "shop"},
                       "spec": {"holderIdentity": "a", "renewTime": "2026-11-30T12:00:00Z"}});
    let leases = "/apis/coordination.k8s.io/v1/namespaces/shop/leases";
    let (code, _) = call(&admin, Method::POST, leases, Some(lease.clone())).await;
    assert_eq!(code, 400, "a MicroTime has six fractional digits");
    let mut micro = lease;
    micro["spec"]["renewTime"] = json!("2026-11-30T12:00:00.000000Z");
    let (code, _) = call(&admin, Method::POST, leases, Some(micro)).await;
    assert_eq!(code, 201);
    let mut big = cm("big", "shop");
    big["data"]["k"] = json!("x".repeat(2 * 1024 * 1024));
    let (code, body) = call(&admin, Method::POST, CMS, Some(big.clone())).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (500, Some("etcdserver: request is too large"))
    );
    big["data"]["k"] = json!("x".repeat(4 * 1024 * 1024));
    let (code, _) = call(&admin, Method::POST, CMS, Some(big)).await;
    assert_eq!(code, 413);
}

async fn wait_for(server: &FakeApiServer, what: &str, done: impl Fn(&FakeApiServer) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done(server) {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn replica_sets_get_pods_that_become_ready_late_or_never_and_jobs_run() {
    let server = FakeApiServer::new();
    let admin = server.admin_client();
    let (_, rs) = call(
        &admin,
        Method::POST,
        RSS,
        Some(replica_set("now", 2, json!({}))),
    )
    .await;
    assert_eq!(rs["status"]["availableReplicas"], 2, "{rs}");
    assert_eq!(server.objects("", "pods", "shop").len(), 2);
    let late = replica_set("late", 1, json!({"weir.dev/simulated-readiness": "300ms"}));
    let (_, rs) = call(&admin, Method::POST, RSS, Some(late)).await;
    assert_eq!(rs["status"]["readyReplicas"], 0);
    wait_for(&server, "late pods ready", |s| {
        s.object("apps", "replicasets", "shop", "late")
            .is_some_and(|o| o["status"]["availableReplicas"] == 1)
    })
    .await;
    // minReadySeconds: ready at once, available only once ready that long
    // (the Ready condition's lastTransitionTime is whole seconds, so
    // between one and two seconds here).
    let mut patient = replica_set("patient", 2, json!({}));
    patient["spec"]["minReadySeconds"] = json!(2);
    let created = std::time::Instant::now();
    let (_, rs) = call(&admin, Method::POST, RSS, Some(patient)).await;
    assert_eq!(
        (
            rs["status"]["readyReplicas"].as_i64(),
            rs["status"]["availableReplicas"].as_i64()
        ),
        (Some(2), Some(0)),
        "{rs}"
    );
    wait_for(&server, "pods available after minReadySeconds", |s| {
        s.object("apps", "replicasets", "shop", "patient")
            .is_some_and(|o| o["status"]["availableReplicas"] == 2)
    })
    .await;
    let waited = created.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "available after {waited:?}, before minReadySeconds"
    );
    server.never_ready("never");
    let (_, rs) = call(
        &admin,
        Method::POST,
        RSS,
        Some(replica_set("never", 3, json!({}))),
    )
    .await;
    assert_eq!(
        (
            rs["status"]["replicas"].as_i64(),
            rs["status"]["availableReplicas"].as_i64()
        ),
        (Some(3), Some(0))
    );
    // Scaling down removes pods.
    let mut smaller = server
        .object("apps", "replicasets", "shop", "now")
        .expect("rs");
    smaller["spec"]["replicas"] = json!(0);
    let (_, rs) = call(&admin, Method::PUT, &format!("{RSS}/now"), Some(smaller)).await;
    assert_eq!(rs["status"]["replicas"], 0);
    assert_eq!(rs["metadata"]["generation"], 2);
    assert_eq!(rs["status"]["observedGeneration"], 2);
    // Jobs run to Complete, or Failed.
    server.jobs_fail("bad");
    let jobs = "/apis/batch/v1/namespaces/shop/jobs";
    for name in ["good", "bad"] {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "shop"},
                         "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        call(&admin, Method::POST, jobs, Some(job)).await;
    }
    let (_, good) = call(&admin, Method::GET, &format!("{jobs}/good"), None).await;
    assert_eq!(good["status"]["conditions"][0]["type"], "Complete");
    let (_, bad) = call(&admin, Method::GET, &format!("{jobs}/bad"), None).await;
    assert_eq!(bad["status"]["conditions"][0]["type"], "Failed");
}

#[tokio::test]
async fn deletes_collect_or_orphan_dependents_by_propagation_policy() {
    let server = FakeApiServer::new();
    let admin = server.admin_client();
    let jobs = "/apis/batch/v1/namespaces/shop/jobs";
    for name in ["orphaned", "collected"] {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "shop"},
                         "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        call(&admin, Method::POST, jobs, Some(job)).await;
    }
    // batch/v1 orphans a Job's pods without a policy.
    call(&admin, Method::DELETE, &format!("{jobs}/orphaned"), None).await;
    let pod = server
        .object("", "pods", "shop", "orphaned-run")
        .expect("pod stays");
    assert_eq!(pod["metadata"]["ownerReferences"], json!([]));
    call(
        &admin,
        Method::DELETE,
        &format!("{jobs}/collected"),
        Some(json!({"propagationPolicy": "Foreground"})),
    )
    .await;
    assert!(server.object("", "pods", "shop", "collected-run").is_none());
    // Other kinds cascade in the background by default.
    call(
        &admin,
        Method::POST,
        RSS,
        Some(replica_set("web", 2, json!({}))),
    )
    .await;
    call(&admin, Method::DELETE, &format!("{RSS}/web"), None).await;
    assert!(
        server
            .objects("", "pods", "shop")
            .iter()
            .all(|p| p["metadata"]["name"] != "web-0")
    );
    // A precondition on a stale version is a conflict.
    let (_, c) = call(&admin, Method::POST, CMS, Some(cm("a", "shop"))).await;
    let (code, _) = call(
        &admin,
        Method::DELETE,
        &format!("{CMS}/a"),
        Some(json!({"preconditions": {"resourceVersion": "1"}})),
    )
    .await;
    assert_eq!(code, 409);
    assert!(c["metadata"]["resourceVersion"] != "1");
}

/// The next watch event, within a second.
async fn next_event(body: &mut kube::client::Body) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(3), body.frame())
        .await
        .expect("an event in time")
        .expect("open")
        .expect("frame");
    let data = frame.into_data().expect("data");
    serde_json::from_slice(&data).expect("event json")
}

async fn open_watch(client: &kube::Client, path: &str) -> kube::client::Body {
    let request = Request::builder()
        .uri(path)
        .body(kube::client::Body::empty())
        .expect("request");
    client.send(request).await.expect("watch").into_body()
}

#[tokio::test]
async fn watches_deliver_changes_bookmarks_and_410_after_compaction() {
    let server = FakeApiServer::new();
    let admin = server.admin_client();
    let (_, a) = call(&admin, Method::POST, CMS, Some(cm("a", "shop"))).await;
    let from = a["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    call(&admin, Method::POST, CMS, Some(cm("b", "shop"))).await;
    call(
        &admin,
        Method::POST,
        "/api/v1/namespaces/other/configmaps",
        Some(cm("x", "other")),
    )
    .await;
    let mut watch = open_watch(
        &admin,
        &format!("{CMS}?watch=true&resourceVersion={from}&allowWatchBookmarks=true"),
    )
    .await;
    let first = next_event(&mut watch).await;
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b"))
    );
    call(&admin, Method::DELETE, &format!("{CMS}/a"), None).await;
    let gone = next_event(&mut watch).await;
    assert_eq!(
        (
            gone["type"].as_str(),
            gone["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("a"))
    );
    let bookmark = next_event(&mut watch).await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    server.compact();
    let mut stale = open_watch(&admin, &format!("{CMS}?watch=true&resourceVersion={from}")).await;
    let expired = next_event(&mut stale).await;
    assert_eq!(
        (expired["type"].as_str(), expired["object"]["code"].as_i64()),
        (Some("ERROR"), Some(410))
    );
}

#[tokio::test]
async fn weirs_service_account_has_exactly_what_deploy_weir_yaml_grants() {
    let server = FakeApiServer::new();
    let weir = server.client();
    let admin = server.admin_client();
    call(&admin, Method::POST, ROLLOUTS, Some(rollout("r"))).await;
    let (code, _) = call(&weir, Method::GET, &format!("{ROLLOUTS}/r"), None).await;
    assert_eq!(code, 200);
    let (code, body) = call(&weir, Method::DELETE, &format!("{ROLLOUTS}/r"), None).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "rollouts.argoproj.io \"r\" is forbidden: User \"system:serviceaccount:weir-system:weir\" cannot delete resource \"rollouts\" in API group \"argoproj.io\" in the namespace \"shop\""
    );
    // ConfigMaps: read in its own namespace only (a Role), never written.
    let (code, _) = call(
        &weir,
        Method::GET,
        "/api/v1/namespaces/weir-system/configmaps",
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = call(&weir, Method::GET, CMS, None).await;
    assert_eq!(code, 403);
    let (code, _) = call(
        &weir,
        Method::POST,
        "/api/v1/namespaces/weir-system/configmaps",
        Some(cm("c", "weir-system")),
    )
    .await;
    assert_eq!(code, 403);
    // Owner-reference enforcement: Weir may block its rollouts' deletion...
    server.enforce_owner_references();
    let mut owned = replica_set("owned", 1, json!({}));
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "name": "r", "uid": "u", "controller": true, "blockOwnerDeletion": true}]);
    let (code, _) = call(&weir, Method::POST, RSS, Some(owned)).await;
    assert_eq!(code, 201, "deploy/weir.yaml grants rollouts/finalizers");
    // ...which a ClusterRole without the finalizers rule would not allow.
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/weir.yaml"))
        .expect("deploy/weir.yaml");
    let without = yaml.replace("rollouts/finalizers, ", "");
    let policy = Policy::from_manifests(&without, "weir-system", "weir");
    let finalizers = Access {
        verb: "update".into(),
        group: "argoproj.io".into(),
        resource: "rollouts/finalizers".into(),
        namespace: "shop".into(),
        name: Some("r".into()),
    };
    assert!(!policy.allows(&finalizers));
    assert!(Policy::weir().allows(&finalizers));
}
