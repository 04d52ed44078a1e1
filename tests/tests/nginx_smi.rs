//! The NGINX and SMI routers through the real sandbox on the in-memory
//! cluster, asserting the exact objects after sequences of calls.

use serde_json::{Value, json};
use std::sync::Arc;
use weir::cluster::{Cluster, MemoryCluster, ObjectKey, Write};
use weir::plugin::{
    CallErrorKind, Grant, GrantedKind, HeaderMatch, HeaderRoute, PluginSpec, ReportedError,
    Rollout, StringMatch, TrafficRouter, Verification, WeightDestination,
};
use weir_e2e::{plugin_wasm, runtime};

async fn router(
    plugin: &str,
    grants: Vec<GrantedKind>,
    seed: Vec<Value>,
) -> (
    weir::plugin::PluginRuntime,
    Arc<MemoryCluster>,
    TrafficRouter,
) {
    let (runtime, cluster) = runtime();
    if !seed.is_empty() {
        cluster
            .apply(seed.into_iter().map(Write::Create).collect())
            .await
            .expect("seed");
    }
    let mut spec = PluginSpec::new(
        format!("argoproj-labs/{plugin}"),
        plugin_wasm(&format!("weir-plugin-{plugin}"))
            .display()
            .to_string(),
    );
    spec.grant = Grant {
        read: vec![],
        write: grants,
        namespaces: vec![],
        secrets: vec![],
    };
    let router = runtime.load_router(spec).await.expect("load");
    (runtime, cluster, router)
}

fn rollout(config: Value, object: Value) -> Rollout {
    Rollout {
        namespace: "shop".into(),
        name: "checkout".into(),
        uid: "uid-checkout".into(),
        stable_service: "web-stable".into(),
        canary_service: "web-canary".into(),
        config: config.to_string(),
        object: object.into(),
    }
}

fn owner() -> Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "checkout", "uid": "uid-checkout", "controller": true, "blockOwnerDeletion": true})
}

// ---------------------------------------------------------------- NGINX

fn stable_ingress(name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "shop", "annotations": {
            "kubernetes.io/ingress.class": "nginx",
            "nginx.ingress.kubernetes.io/rewrite-target": "/"
        }},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
            "rules": [
                {"host": "shop.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}},
                    {"path": "/static", "pathType": "Prefix", "backend": {"service": {"name": "assets", "port": {"number": 80}}}}
                ]}},
                {"host": "admin.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "admin", "port": {"number": 80}}}}
                ]}}
            ]
        }
    })
}

fn ingress_grant() -> Vec<GrantedKind> {
    vec![GrantedKind {
        group: "networking.k8s.io".into(),
        kind: "Ingress".into(),
    }]
}

fn nginx_rollout(config: Value) -> Rollout {
    rollout(
        config,
        json!({"spec": {"strategy": {"canary": {"trafficRouting": {"nginx": {}}}}}}),
    )
}

fn canary_key(name: &str) -> ObjectKey {
    ObjectKey::new("networking.k8s.io/v1", "Ingress", "shop", name)
}

fn without_server_fields(mut object: Value) -> Value {
    if let Some(meta) = object["metadata"].as_object_mut() {
        for k in ["resourceVersion", "uid", "creationTimestamp"] {
            meta.remove(k);
        }
    }
    object
}

#[tokio::test]
async fn nginx_canary_ingress_follows_the_weights() {
    let (_rt, cluster, router) = router(
        "nginx",
        ingress_grant(),
        vec![stable_ingress("web-ingress")],
    )
    .await;
    let r = nginx_rollout(json!({"stableIngress": "web-ingress"}));
    for weight in [0, 20, 50, 100, 0] {
        router
            .set_weight(&r, weight, &[])
            .await
            .expect("set-weight");
        let canary = cluster
            .get(&canary_key("checkout-web-ingress-canary"))
            .await
            .expect("canary ingress");
        assert_eq!(
            without_server_fields(canary),
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {
                    "name": "checkout-web-ingress-canary", "namespace": "shop",
                    "annotations": {
                        "kubernetes.io/ingress.class": "nginx",
                        "nginx.ingress.kubernetes.io/canary": "true",
                        "nginx.ingress.kubernetes.io/canary-weight": weight.to_string()
                    },
                    "ownerReferences": [owner()]
                },
                "spec": {
                    "ingressClassName": "nginx",
                    "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
                    "rules": [{"host": "shop.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web-canary", "port": {"number": 80}}}},
                        {"path": "/static", "pathType": "Prefix", "backend": {"service": {"name": "assets", "port": {"number": 80}}}}
                    ]}}]
                }
            })
        );
    }
    let rv = cluster
        .get(&canary_key("checkout-web-ingress-canary"))
        .await
        .expect("get")["metadata"]["resourceVersion"]
        .clone();
    router.set_weight(&r, 0, &[]).await.expect("same again");
    let again = cluster
        .get(&canary_key("checkout-web-ingress-canary"))
        .await
        .expect("get");
    assert_eq!(
        again["metadata"]["resourceVersion"], rv,
        "idempotent: no second write"
    );
    // Someone labels and annotates the canary Ingress: as with Argo's
    // merge patch, the next change keeps the annotation, not the label.
    let mut touched = again.clone();
    touched["metadata"]["labels"] = json!({"team": "payments"});
    touched["metadata"]["annotations"]["example.com/owner"] = json!("payments");
    let expected_version = weir::cluster::resource_version(&touched).map(str::to_string);
    cluster
        .apply(vec![Write::Update {
            object: touched,
            expected_version,
        }])
        .await
        .expect("label");
    router.set_weight(&r, 10, &[]).await.expect("set-weight 10");
    let after = cluster
        .get(&canary_key("checkout-web-ingress-canary"))
        .await
        .expect("get");
    assert!(after["metadata"]["labels"].is_null(), "{after}");
    assert_eq!(
        after["metadata"]["annotations"]["example.com/owner"],
        "payments"
    );
    router.set_weight(&r, 0, &[]).await.expect("back to 0");
    let v = router.verify_weight(&r, 0, &[]).await.expect("verify");
    assert_eq!(v.verification, Verification::Verified);
    assert_eq!(
        router
            .verify_weight(&r, 30, &[])
            .await
            .expect("verify")
            .verification,
        Verification::NotVerified
    );
}

#[tokio::test]
async fn nginx_annotations_prefix_total_and_precedence() {
    let (_rt, cluster, router) = router(
        "nginx",
        ingress_grant(),
        vec![stable_ingress("web-ingress")],
    )
    .await;
    let config = json!({
        "stableIngress": "web-ingress",
        "annotationPrefix": "custom.nginx.org",
        "additionalIngressAnnotations": {"canary-by-cookie": "beta", "custom.nginx.org/load-balance": "ewma"},
        "canaryIngressAnnotations": {"custom.nginx.org/canary-by-cookie": "override", "team": "payments"}
    });
    let object = json!({"spec": {"strategy": {"canary": {"trafficRouting": {"maxTrafficWeight": 1000, "nginx": {}}}}}});
    let r = rollout(config, object);
    // Weights go up to maxTrafficWeight, not 100.
    router
        .set_weight(&r, 500, &[])
        .await
        .expect("set-weight 500 of 1000");
    let half = cluster
        .get(&canary_key("checkout-web-ingress-canary"))
        .await
        .expect("canary");
    assert_eq!(
        half["metadata"]["annotations"]["custom.nginx.org/canary-weight"],
        "500"
    );
    let over = router
        .set_weight(&r, 1001, &[])
        .await
        .expect_err("over the total");
    assert!(over.to_string().contains("0..=1000"), "{over}");
    router.set_weight(&r, 100, &[]).await.expect("set-weight");
    let canary = cluster
        .get(&canary_key("checkout-web-ingress-canary"))
        .await
        .expect("canary");
    assert_eq!(
        canary["metadata"]["annotations"],
        json!({
            "kubernetes.io/ingress.class": "nginx",
            "custom.nginx.org/canary": "true",
            "custom.nginx.org/canary-weight": "100",
            "custom.nginx.org/canary-weight-total": "1000",
            "custom.nginx.org/canary-by-cookie": "override",
            "custom.nginx.org/load-balance": "ewma",
            "team": "payments"
        })
    );
}

#[tokio::test]
async fn nginx_header_routes_use_canary_by_header_annotations() {
    let (_rt, cluster, router) = router(
        "nginx",
        ingress_grant(),
        vec![stable_ingress("web-ingress")],
    )
    .await;
    let r = nginx_rollout(json!({"stableIngress": "web-ingress"}));
    router.set_weight(&r, 10, &[]).await.expect("set-weight");
    let exact = HeaderRoute {
        name: "header-route".into(),
        matches: vec![HeaderMatch {
            name: "x-canary".into(),
            value: StringMatch::Exact("always".into()),
        }],
    };
    router
        .set_header_route(&r, &exact)
        .await
        .expect("header route");
    router
        .set_weight(&r, 30, &[])
        .await
        .expect("a later set-weight keeps the header route");
    let annotations = cluster
        .get(&canary_key("checkout-web-ingress-canary"))
        .await
        .expect("canary")["metadata"]["annotations"]
        .clone();
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-by-header"],
        "x-canary"
    );
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-by-header-value"],
        "always"
    );
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-weight"],
        "30"
    );
    let prefix = HeaderRoute {
        name: "header-route".into(),
        matches: vec![HeaderMatch {
            name: "x-version".into(),
            value: StringMatch::Prefix("v2.".into()),
        }],
    };
    router
        .set_header_route(&r, &prefix)
        .await
        .expect("prefix route");
    let annotations = cluster
        .get(&canary_key("checkout-web-ingress-canary"))
        .await
        .expect("canary")["metadata"]["annotations"]
        .clone();
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-by-header-pattern"],
        "^v2\\..*"
    );
    assert!(
        annotations
            .get("nginx.ingress.kubernetes.io/canary-by-header-value")
            .is_none(),
        "the old value is replaced"
    );
    router.remove_managed_routes(&r).await.expect("remove");
    let annotations = cluster
        .get(&canary_key("checkout-web-ingress-canary"))
        .await
        .expect("canary")["metadata"]["annotations"]
        .clone();
    assert!(
        annotations
            .get("nginx.ingress.kubernetes.io/canary-by-header")
            .is_none()
    );
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-weight"],
        "30"
    );
}

#[tokio::test]
async fn nginx_one_canary_per_stable_ingress() {
    let (_rt, cluster, router) = router(
        "nginx",
        ingress_grant(),
        vec![
            stable_ingress("web-ingress"),
            stable_ingress("web-internal"),
        ],
    )
    .await;
    let r = nginx_rollout(json!({"stableIngresses": ["web-ingress", "web-internal"]}));
    router.set_weight(&r, 25, &[]).await.expect("set-weight");
    for name in [
        "checkout-web-ingress-canary",
        "checkout-web-internal-canary",
    ] {
        let canary = cluster.get(&canary_key(name)).await.expect("canary");
        assert_eq!(
            canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"],
            "25"
        );
    }
}

#[tokio::test]
async fn nginx_refuses_experiments_foreign_ingresses_and_bad_config() {
    let mut foreign = stable_ingress("checkout-web-ingress-canary");
    foreign["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "other", "uid": "uid-other", "controller": true}]);
    let (_rt, cluster, router) = router(
        "nginx",
        ingress_grant(),
        vec![stable_ingress("web-ingress"), foreign.clone()],
    )
    .await;
    let r = nginx_rollout(json!({"stableIngress": "web-ingress"}));

    let experiments = [
        WeightDestination {
            service_name: "exp-a".into(),
            pod_template_hash: "a".into(),
            weight: 10,
        },
        WeightDestination {
            service_name: "exp-b".into(),
            pod_template_hash: "b".into(),
            weight: 10,
        },
    ];
    let error = router
        .set_weight(&r, 20, &experiments)
        .await
        .expect_err("experiments");
    assert!(
        matches!(&error.kind, CallErrorKind::Reported(ReportedError::InvalidConfig(why)) if why.contains("exp-a")),
        "{error}"
    );

    let error = router
        .set_weight(&r, 20, &[])
        .await
        .expect_err("foreign canary ingress");
    assert!(
        matches!(&error.kind, CallErrorKind::Reported(ReportedError::Conflict(why)) if why.contains("different object")),
        "{error}"
    );
    let stored = cluster
        .get(&canary_key("checkout-web-ingress-canary"))
        .await
        .expect("foreign");
    assert_eq!(stored["spec"], foreign["spec"], "not taken over");

    for (config, hint) in [
        (json!({"stableIngres": "web-ingress"}), "stableIngres"),
        (json!({}), "required"),
        (json!({"stableIngress": "missing"}), "not found"),
    ] {
        let error = router
            .set_weight(&nginx_rollout(config), 20, &[])
            .await
            .expect_err("bad config");
        assert!(error.to_string().contains(hint), "{error}");
    }
    let error = router
        .set_weight(
            &nginx_rollout(json!({"stableIngress": "web-ingress"})),
            20,
            &[],
        )
        .await
        .expect_err("still foreign");
    assert!(error.to_string().contains("different object"));
}

#[tokio::test]
async fn nginx_stable_ingress_without_the_stable_service_is_an_error() {
    let mut ingress = stable_ingress("web-ingress");
    ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] =
        json!("something-else");
    let (_rt, cluster, router) = router("nginx", ingress_grant(), vec![ingress]).await;
    let error = router
        .set_weight(
            &nginx_rollout(json!({"stableIngress": "web-ingress"})),
            20,
            &[],
        )
        .await
        .expect_err("no rules");
    assert!(
        error
            .to_string()
            .contains("has no rules using service web-stable backend"),
        "{error}"
    );
    assert_eq!(cluster.objects().len(), 1, "nothing written");
}

// ---------------------------------------------------------------- SMI

fn split_grant() -> Vec<GrantedKind> {
    vec![GrantedKind {
        group: "split.smi-spec.io".into(),
        kind: "TrafficSplit".into(),
    }]
}

fn split_key() -> ObjectKey {
    ObjectKey::new(
        "split.smi-spec.io/v1alpha1",
        "TrafficSplit",
        "shop",
        "checkout",
    )
}

fn smi_rollout(config: Value) -> Rollout {
    rollout(config, json!({}))
}

#[tokio::test]
async fn smi_v1alpha1_split_with_quantity_weights() {
    let (_rt, cluster, router) = router("smi", split_grant(), vec![]).await;
    let r = smi_rollout(json!({}));
    for weight in [0, 20, 50, 100, 0] {
        router
            .set_weight(&r, weight, &[])
            .await
            .expect("set-weight");
        let split = cluster.get(&split_key()).await.expect("split");
        assert_eq!(
            without_server_fields(split),
            json!({
                "apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
                "metadata": {"name": "checkout", "namespace": "shop", "ownerReferences": [owner()]},
                "spec": {"service": "web-stable", "backends": [
                    {"service": "web-canary", "weight": weight.to_string()},
                    {"service": "web-stable", "weight": (100 - weight).to_string()}
                ]}
            })
        );
    }
    let rv = cluster.get(&split_key()).await.expect("split")["metadata"]["resourceVersion"].clone();
    router.set_weight(&r, 0, &[]).await.expect("again");
    assert_eq!(
        cluster.get(&split_key()).await.expect("split")["metadata"]["resourceVersion"],
        rv,
        "no second write"
    );
    assert_eq!(
        router
            .verify_weight(&r, 0, &[])
            .await
            .expect("verify")
            .verification,
        Verification::Verified
    );
}

#[tokio::test]
async fn smi_v1alpha3_with_experiments_root_service_and_name() {
    let (_rt, cluster, router) = router("smi", split_grant(), vec![]).await;
    let r = smi_rollout(
        json!({"apiVersion": "v1alpha3", "rootService": "web", "trafficSplitName": "web-split"}),
    );
    let experiments = [
        WeightDestination {
            service_name: "exp-a".into(),
            pod_template_hash: "a".into(),
            weight: 10,
        },
        WeightDestination {
            service_name: "exp-b".into(),
            pod_template_hash: "b".into(),
            weight: 5,
        },
    ];
    router
        .set_weight(&r, 20, &experiments)
        .await
        .expect("set-weight");
    let split = cluster
        .get(&ObjectKey::new(
            "split.smi-spec.io/v1alpha3",
            "TrafficSplit",
            "shop",
            "web-split",
        ))
        .await
        .expect("split");
    assert_eq!(split["apiVersion"], "split.smi-spec.io/v1alpha3");
    assert_eq!(
        split["spec"],
        json!({"service": "web", "backends": [
            {"service": "web-canary", "weight": 20},
            {"service": "exp-a", "weight": 10},
            {"service": "exp-b", "weight": 5},
            {"service": "web-stable", "weight": 65}
        ]})
    );
    let v = router
        .verify_weight(&r, 20, &experiments)
        .await
        .expect("verify");
    assert_eq!(v.verification, Verification::Verified);
    let observed = v.observed.expect("observed");
    assert_eq!(
        (observed.canary, observed.stable, observed.additional.len()),
        (20, 65, 2)
    );
}

#[tokio::test]
async fn smi_refuses_a_split_it_does_not_own_and_bad_versions() {
    let foreign = json!({
        "apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"service": "web-stable", "backends": [{"service": "web-stable", "weight": "100"}]}
    });
    let (_rt, cluster, router) = router("smi", split_grant(), vec![foreign.clone()]).await;
    let error = router
        .set_weight(&smi_rollout(json!({})), 20, &[])
        .await
        .expect_err("not owned");
    assert!(
        matches!(&error.kind, CallErrorKind::Reported(ReportedError::Conflict(why)) if why.contains("does not own TrafficSplit `checkout`")),
        "{error}"
    );
    assert_eq!(
        cluster.get(&split_key()).await.expect("split")["spec"],
        foreign["spec"]
    );
    let error = router
        .set_weight(&smi_rollout(json!({"apiVersion": "v2"})), 20, &[])
        .await
        .expect_err("bad version");
    assert!(
        matches!(
            &error.kind,
            CallErrorKind::Reported(ReportedError::InvalidConfig(_))
        ),
        "{error}"
    );
}

#[tokio::test]
async fn smi_weights_go_up_to_max_traffic_weight() {
    let (_rt, cluster, router) = router("smi", split_grant(), vec![]).await;
    let object = json!({"spec": {"strategy": {"canary": {"trafficRouting": {"maxTrafficWeight": 1000, "smi": {}}}}}});
    let r = rollout(json!({"apiVersion": "v1alpha3"}), object);
    router.set_weight(&r, 250, &[]).await.expect("250 of 1000");
    let split = cluster
        .get(&ObjectKey::new(
            "split.smi-spec.io/v1alpha3",
            "TrafficSplit",
            "shop",
            "checkout",
        ))
        .await
        .expect("split");
    assert_eq!(
        split["spec"]["backends"],
        json!([{"service": "web-canary", "weight": 250}, {"service": "web-stable", "weight": 750}])
    );
    // The host checks observed weights against the same total.
    let verified = router.verify_weight(&r, 250, &[]).await.expect("verify");
    assert_eq!(verified.verification, Verification::Verified);
    let observed = verified.observed.expect("observed");
    assert_eq!((observed.canary, observed.stable), (250, 750));
    let over = router
        .set_weight(&r, 1001, &[])
        .await
        .expect_err("over the total");
    assert!(over.to_string().contains("0..=1000"), "{over}");
}
