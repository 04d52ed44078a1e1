//! The Istio router through the real sandbox on the in-memory cluster,
//! seeded with a bookinfo-style VirtualService (several HTTP routes, a TLS
//! and a TCP route) and a DestinationRule. Each test asserts the exact
//! objects after a sequence of calls.

use serde_json::{Value, json};
use std::sync::Arc;
use weir::cluster::{Cluster, MemoryCluster, ObjectKey, Write};
use weir::plugin::{
    CallErrorKind, Grant, GrantedKind, HeaderMatch, HeaderRoute, MirrorMatch, MirrorRoute,
    PluginSpec, ReportedError, Rollout, StringMatch, TrafficRouter, Verification,
    WeightDestination,
};
use weir_e2e::{plugin_wasm, runtime};

fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews-vsvc", "namespace": "shop"},
        "spec": {
            "hosts": ["reviews"],
            "gateways": ["mesh"],
            "http": [
                {"name": "primary", "match": [{"uri": {"prefix": "/reviews"}}], "route": [
                    {"destination": {"host": "reviews-stable", "port": {"number": 9080}}, "weight": 100},
                    {"destination": {"host": "reviews-canary", "port": {"number": 9080}}, "weight": 0}
                ]},
                {"name": "secondary", "route": [
                    {"destination": {"host": "reviews-stable.shop.svc.cluster.local"}, "weight": 100},
                    {"destination": {"host": "reviews-canary.shop.svc.cluster.local"}, "weight": 0}
                ]},
                {"name": "ratings", "route": [{"destination": {"host": "ratings"}}]}
            ],
            "tls": [{"match": [{"port": 443, "sniHosts": ["reviews.example.com"]}], "route": [
                {"destination": {"host": "reviews-stable", "port": {"number": 443}}, "weight": 100},
                {"destination": {"host": "reviews-canary", "port": {"number": 443}}, "weight": 0}
            ]}],
            "tcp": [{"match": [{"port": 3306}], "route": [
                {"destination": {"host": "reviews-stable", "port": {"number": 3306}}, "weight": 100},
                {"destination": {"host": "reviews-canary", "port": {"number": 3306}}, "weight": 0}
            ]}]
        }
    })
}

fn config() -> String {
    json!({"virtualService": {
        "name": "reviews-vsvc",
        "routes": ["primary", "secondary"],
        "tlsRoutes": [{"port": 443, "sniHosts": ["reviews.example.com"]}],
        "tcpRoutes": [{"port": 3306}]
    }})
    .to_string()
}

fn rollout_object() -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"strategy": {"canary": {
            "canaryService": "reviews-canary", "stableService": "reviews-stable",
            "trafficRouting": {"managedRoutes": [{"name": "header-route"}, {"name": "mirror-route"}], "istio": {}},
            "steps": [
                {"setWeight": 20},
                {"setHeaderRoute": {"name": "header-route", "match": [{"headerName": "agent", "headerValue": {"exact": "canary-tester"}}]}},
                {"setMirrorRoute": {"name": "mirror-route", "percentage": 50}}
            ]
        }}}
    })
}

fn rollout_with(config: String) -> Rollout {
    Rollout {
        namespace: "shop".into(),
        name: "reviews".into(),
        uid: "uid-reviews".into(),
        stable_service: "reviews-stable".into(),
        canary_service: "reviews-canary".into(),
        config,
        object: rollout_object().into(),
    }
}

fn rollout() -> Rollout {
    rollout_with(config())
}

async fn setup(
    objects: Vec<Value>,
) -> (
    weir::plugin::PluginRuntime,
    Arc<MemoryCluster>,
    TrafficRouter,
) {
    let (runtime, cluster) = runtime();
    cluster
        .apply(objects.into_iter().map(Write::Create).collect())
        .await
        .expect("seed");
    let mut spec = PluginSpec::new(
        "argoproj-labs/istio",
        plugin_wasm("weir-plugin-istio").display().to_string(),
    );
    let istio = |kind: &str| GrantedKind {
        group: "networking.istio.io".into(),
        kind: kind.into(),
    };
    spec.grant = Grant {
        read: vec![],
        write: vec![istio("VirtualService"), istio("DestinationRule")],
        namespaces: vec![],
        secrets: vec![],
    };
    let router = runtime.load_router(spec).await.expect("load istio");
    (runtime, cluster, router)
}

fn vs_key() -> ObjectKey {
    ObjectKey::new(
        "networking.istio.io/v1beta1",
        "VirtualService",
        "shop",
        "reviews-vsvc",
    )
}

async fn vs(cluster: &MemoryCluster) -> Value {
    cluster.get(&vs_key()).await.expect("virtual service")
}

/// `(host, weight)` of each destination of a route.
fn weights(route: &Value) -> Vec<(String, i64)> {
    route["route"]
        .as_array()
        .expect("route list")
        .iter()
        .map(|d| {
            (
                d["destination"]["host"].as_str().unwrap_or("").to_string(),
                d["weight"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(h, w)| (h.to_string(), *w)).collect()
}

#[tokio::test]
async fn set_weight_walks_every_route_kind_through_a_canary_and_back() {
    let (_rt, cluster, router) = setup(vec![virtual_service()]).await;
    for weight in [0, 20, 50, 100, 0] {
        router
            .set_weight(&rollout(), weight, &[])
            .await
            .expect("set-weight");
        let object = vs(&cluster).await;
        let stable = 100 - i64::from(weight);
        let canary = i64::from(weight);
        assert_eq!(
            weights(&object["spec"]["http"][0]),
            pairs(&[("reviews-stable", stable), ("reviews-canary", canary)])
        );
        assert_eq!(
            weights(&object["spec"]["http"][1]),
            pairs(&[
                ("reviews-stable.shop.svc.cluster.local", stable),
                ("reviews-canary.shop.svc.cluster.local", canary)
            ])
        );
        assert_eq!(
            weights(&object["spec"]["tls"][0]),
            pairs(&[("reviews-stable", stable), ("reviews-canary", canary)])
        );
        assert_eq!(
            weights(&object["spec"]["tcp"][0]),
            pairs(&[("reviews-stable", stable), ("reviews-canary", canary)])
        );
        // Untouched: the unrelated route, ports, matches, hosts.
        assert_eq!(
            object["spec"]["http"][2],
            virtual_service()["spec"]["http"][2]
        );
        assert_eq!(
            object["spec"]["http"][0]["route"][0]["destination"]["port"]["number"],
            9080
        );
        assert_eq!(
            object["spec"]["http"][0]["match"],
            json!([{"uri": {"prefix": "/reviews"}}])
        );
        assert_eq!(object["spec"]["hosts"], json!(["reviews"]));
    }
}

#[tokio::test]
async fn the_same_call_twice_writes_once() {
    let (_rt, cluster, router) = setup(vec![virtual_service()]).await;
    router.set_weight(&rollout(), 30, &[]).await.expect("first");
    let first = vs(&cluster).await;
    router
        .set_weight(&rollout(), 30, &[])
        .await
        .expect("second");
    let second = vs(&cluster).await;
    assert_eq!(
        first["metadata"]["resourceVersion"], second["metadata"]["resourceVersion"],
        "no second write"
    );
}

#[tokio::test]
async fn experiment_destinations_are_appended_in_order_then_removed() {
    let (_rt, cluster, router) = setup(vec![virtual_service()]).await;
    let experiments = [
        WeightDestination {
            service_name: "reviews-exp-b".into(),
            pod_template_hash: "bbb".into(),
            weight: 5,
        },
        WeightDestination {
            service_name: "reviews-exp-a".into(),
            pod_template_hash: "aaa".into(),
            weight: 10,
        },
    ];
    router
        .set_weight(&rollout(), 20, &experiments)
        .await
        .expect("with experiments");
    let object = vs(&cluster).await;
    let expected = pairs(&[
        ("reviews-stable", 65),
        ("reviews-canary", 20),
        ("reviews-exp-a", 10),
        ("reviews-exp-b", 5),
    ]);
    assert_eq!(weights(&object["spec"]["http"][0]), expected);
    assert_eq!(
        object["spec"]["http"][0]["route"][2],
        json!({"destination": {"host": "reviews-exp-a"}, "weight": 10})
    );
    // Weights are updated in place on the next call.
    let changed = [
        WeightDestination {
            weight: 15,
            ..experiments[1].clone()
        },
        experiments[0].clone(),
    ];
    router
        .set_weight(&rollout(), 20, &changed)
        .await
        .expect("changed experiment weight");
    let object = vs(&cluster).await;
    assert_eq!(
        weights(&object["spec"]["http"][0]),
        pairs(&[
            ("reviews-stable", 60),
            ("reviews-canary", 20),
            ("reviews-exp-a", 15),
            ("reviews-exp-b", 5)
        ])
    );
    // The experiment ends: its destinations go.
    router
        .set_weight(&rollout(), 20, &[])
        .await
        .expect("without experiments");
    let object = vs(&cluster).await;
    assert_eq!(
        weights(&object["spec"]["http"][0]),
        pairs(&[("reviews-stable", 80), ("reviews-canary", 20)])
    );
}

#[tokio::test]
async fn stable_never_goes_below_zero() {
    let (_rt, cluster, router) = setup(vec![virtual_service()]).await;
    let experiments = [WeightDestination {
        service_name: "reviews-exp".into(),
        pod_template_hash: "x".into(),
        weight: 40,
    }];
    router
        .set_weight(&rollout(), 80, &experiments)
        .await
        .expect("set");
    let object = vs(&cluster).await;
    assert_eq!(
        weights(&object["spec"]["http"][0]),
        pairs(&[
            ("reviews-stable", 0),
            ("reviews-canary", 80),
            ("reviews-exp", 40)
        ])
    );
}

fn header_route(matches: Vec<HeaderMatch>) -> HeaderRoute {
    HeaderRoute {
        name: "header-route".into(),
        matches,
    }
}

#[tokio::test]
async fn header_route_is_added_first_then_removed() {
    let (_rt, cluster, router) = setup(vec![virtual_service()]).await;
    router
        .set_weight(&rollout(), 20, &[])
        .await
        .expect("set-weight");
    let matches = vec![HeaderMatch {
        name: "agent".into(),
        value: StringMatch::Exact("canary-tester".into()),
    }];
    router
        .set_header_route(&rollout(), &header_route(matches))
        .await
        .expect("add header route");
    let object = vs(&cluster).await;
    let http = object["spec"]["http"].as_array().expect("http");
    assert_eq!(http.len(), 4);
    assert_eq!(
        http[0],
        json!({
            "name": "header-route",
            "match": [{"headers": {"agent": {"exact": "canary-tester"}}}],
            "route": [{"destination": {"host": "reviews-canary", "port": {"number": 9080}}, "weight": 100}]
        })
    );
    assert_eq!(http[1]["name"], "primary");
    router
        .set_header_route(&rollout(), &header_route(vec![]))
        .await
        .expect("remove header route");
    let object = vs(&cluster).await;
    let names: Vec<&str> = object["spec"]["http"]
        .as_array()
        .expect("http")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["primary", "secondary", "ratings"]);
}

fn mirror_route(percentage: Option<i32>, with_match: bool) -> MirrorRoute {
    let matches = if with_match {
        vec![MirrorMatch {
            method: Some(StringMatch::Exact("GET".into())),
            path: Some(StringMatch::Prefix("/api".into())),
            headers: vec![],
        }]
    } else {
        vec![]
    };
    MirrorRoute {
        name: "mirror-route".into(),
        percentage,
        matches,
    }
}

#[tokio::test]
async fn mirror_route_carries_the_current_weights_and_follows_set_weight() {
    let (_rt, cluster, router) = setup(vec![virtual_service()]).await;
    router
        .set_weight(&rollout(), 20, &[])
        .await
        .expect("set-weight");
    router
        .set_mirror_route(&rollout(), &mirror_route(Some(50), true))
        .await
        .expect("add mirror");
    let object = vs(&cluster).await;
    let mirror = &object["spec"]["http"][0];
    assert_eq!(
        *mirror,
        json!({
            "name": "mirror-route",
            "match": [{"method": {"exact": "GET"}, "uri": {"prefix": "/api"}}],
            "route": [
                {"destination": {"host": "reviews-stable", "port": {"number": 9080}}, "weight": 80},
                {"destination": {"host": "reviews-canary", "port": {"number": 9080}}, "weight": 20}
            ],
            "mirror": {"host": "reviews-canary", "port": {"number": 9080}},
            "mirrorPercentage": {"value": 50}
        })
    );
    // A managed mirror route's weights follow later set-weights.
    router
        .set_weight(&rollout(), 40, &[])
        .await
        .expect("set-weight 40");
    let object = vs(&cluster).await;
    assert_eq!(
        weights(&object["spec"]["http"][0]),
        pairs(&[("reviews-stable", 60), ("reviews-canary", 40)])
    );
    router
        .set_mirror_route(&rollout(), &mirror_route(None, false))
        .await
        .expect("remove mirror");
    let object = vs(&cluster).await;
    assert_eq!(object["spec"]["http"][0]["name"], "primary");
    assert_eq!(object["spec"]["http"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn managed_routes_keep_their_order_and_are_all_removed() {
    let (_rt, cluster, router) = setup(vec![virtual_service()]).await;
    router
        .set_mirror_route(&rollout(), &mirror_route(None, true))
        .await
        .expect("mirror");
    let matches = vec![HeaderMatch {
        name: "x-canary".into(),
        value: StringMatch::Regex("^y.*".into()),
    }];
    router
        .set_header_route(&rollout(), &header_route(matches))
        .await
        .expect("header");
    let object = vs(&cluster).await;
    let names: Vec<&str> = object["spec"]["http"]
        .as_array()
        .expect("http")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "header-route",
            "mirror-route",
            "primary",
            "secondary",
            "ratings"
        ],
        "managedRoutes order on top"
    );
    assert_eq!(
        object["spec"]["http"][1]["mirrorPercentage"]["value"], 100,
        "percentage defaults to 100"
    );
    router
        .remove_managed_routes(&rollout())
        .await
        .expect("remove");
    let object = vs(&cluster).await;
    assert_eq!(object["spec"]["http"], virtual_service()["spec"]["http"]);
}

#[tokio::test]
async fn verify_weight_reads_the_split_back() {
    let (_rt, cluster, router) = setup(vec![virtual_service()]).await;
    router
        .set_weight(&rollout(), 20, &[])
        .await
        .expect("set-weight");
    let v = router
        .verify_weight(&rollout(), 20, &[])
        .await
        .expect("verify");
    assert_eq!(v.verification, Verification::Verified);
    let observed = v.observed.expect("observed");
    assert_eq!((observed.canary, observed.stable), (20, 80));
    // Someone edits the VirtualService by hand.
    let mut object = vs(&cluster).await;
    object["spec"]["http"][0]["route"][1]["weight"] = json!(5);
    object["spec"]["http"][0]["route"][0]["weight"] = json!(95);
    cluster
        .apply(vec![Write::Update {
            object,
            expected_version: None,
        }])
        .await
        .expect("edit");
    let v = router
        .verify_weight(&rollout(), 20, &[])
        .await
        .expect("verify");
    assert_eq!(v.verification, Verification::NotVerified);
    assert_eq!(v.observed.map(|o| o.canary), Some(5));
}

#[tokio::test]
async fn update_hash_labels_the_destination_rule_subsets() {
    let rule = json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
        "metadata": {"name": "reviews-destrule", "namespace": "shop"},
        "spec": {"host": "reviews", "subsets": [
            {"name": "canary", "labels": {"app": "reviews"}, "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
            {"name": "stable", "labels": {"app": "reviews"}},
            {"name": "leftover", "labels": {"app": "old"}}
        ]}
    });
    let subset_vs = json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "reviews-vsvc", "namespace": "shop"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "stable"}, "weight": 100},
            {"destination": {"host": "reviews", "subset": "canary"}, "weight": 0}
        ]}]}
    });
    let (_rt, cluster, router) = setup(vec![rule, subset_vs]).await;
    let config = json!({
        "virtualService": {"name": "reviews-vsvc"},
        "destinationRule": {"name": "reviews-destrule", "canarySubsetName": "canary", "stableSubsetName": "stable"}
    })
    .to_string();
    let mut r = rollout_with(config);
    r.canary_service = String::new();
    r.stable_service = String::new();
    let experiment = [WeightDestination {
        service_name: "reviews-exp".into(),
        pod_template_hash: "e5e5".into(),
        weight: 10,
    }];
    router
        .update_hash(&r, "c4c4", "5757", &experiment)
        .await
        .expect("update-hash");
    let stored = cluster
        .get(&ObjectKey::new(
            "networking.istio.io/v1beta1",
            "DestinationRule",
            "shop",
            "reviews-destrule",
        ))
        .await
        .expect("rule");
    assert_eq!(
        stored["metadata"]["annotations"]["argo-rollouts.argoproj.io/managed-by-rollouts"],
        "reviews"
    );
    assert_eq!(
        stored["spec"]["subsets"],
        json!([
            {"name": "canary", "labels": {"app": "reviews", "rollouts-pod-template-hash": "c4c4"}, "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
            {"name": "stable", "labels": {"app": "reviews", "rollouts-pod-template-hash": "5757"}},
            {"name": "reviews-exp", "labels": {"rollouts-pod-template-hash": "e5e5"}}
        ])
    );
    // Subsets split by weight through the same VirtualService.
    router
        .set_weight(&r, 30, &[])
        .await
        .expect("set-weight by subset");
    let object = vs(&cluster).await;
    let subsets: Vec<(String, i64)> = object["spec"]["http"][0]["route"]
        .as_array()
        .expect("route")
        .iter()
        .map(|d| {
            (
                d["destination"]["subset"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                d["weight"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(subsets, pairs(&[("stable", 70), ("canary", 30)]));
}

#[tokio::test]
async fn a_missing_virtual_service_is_not_found_by_name() {
    let (_rt, cluster, router) = setup(vec![]).await;
    let error = router
        .set_weight(&rollout(), 20, &[])
        .await
        .expect_err("missing");
    match &error.kind {
        CallErrorKind::Reported(ReportedError::NotFound(why)) => {
            assert!(why.contains("shop/reviews-vsvc"), "{why}")
        }
        other => panic!("expected not-found, got {other}"),
    }
    assert!(cluster.objects().is_empty());
}

#[tokio::test]
async fn bad_configuration_is_invalid_config_and_writes_nothing() {
    let (_rt, cluster, router) = setup(vec![virtual_service()]).await;
    for (config, hint) in [
        ("{not json".to_string(), "istio configuration"),
        (
            json!({"virtualServce": {"name": "reviews-vsvc"}}).to_string(),
            "virtualServce",
        ),
        (
            json!({"virtualService": {"name": "reviews-vsvc", "routes": ["nope"]}}).to_string(),
            "'nope' is not found",
        ),
        (json!({}).to_string(), "required"),
    ] {
        let error = router
            .set_weight(&rollout_with(config), 20, &[])
            .await
            .expect_err("invalid");
        match &error.kind {
            CallErrorKind::Reported(ReportedError::InvalidConfig(why)) => {
                assert!(why.contains(hint), "{why}")
            }
            other => panic!("expected invalid-config, got {other}"),
        }
    }
    assert_eq!(
        vs(&cluster).await["spec"],
        virtual_service()["spec"],
        "nothing written"
    );
}

#[tokio::test]
async fn omitting_route_names_needs_exactly_one_route() {
    let (_rt, _cluster, router) = setup(vec![virtual_service()]).await;
    let config = json!({"virtualService": {"name": "reviews-vsvc", "tlsRoutes": [{"port": 443, "sniHosts": ["reviews.example.com"]}], "tcpRoutes": [{"port": 3306}]}}).to_string();
    let error = router
        .set_weight(&rollout_with(config), 20, &[])
        .await
        .expect_err("ambiguous");
    assert!(
        error.to_string().contains("must have exactly one route"),
        "{error}"
    );
}

#[tokio::test]
async fn remove_managed_routes_skips_a_service_without_http_routes_and_refuses_malformed_ones() {
    // TLS only: nothing to remove.
    let mut tls_only = virtual_service();
    if let Some(spec) = tls_only["spec"].as_object_mut() {
        spec.remove("http");
    }
    let (_rt, cluster, router) = setup(vec![tls_only.clone()]).await;
    router
        .remove_managed_routes(&rollout())
        .await
        .expect("no HTTP routes: nothing to do");
    assert_eq!(vs(&cluster).await["spec"], tls_only["spec"]);
    // spec.http that is not a list: an error naming it, nothing written.
    let mut malformed = virtual_service();
    malformed["spec"]["http"] = json!({"name": "primary"});
    let (_rt, cluster, router) = setup(vec![malformed.clone()]).await;
    let error = router
        .remove_managed_routes(&rollout())
        .await
        .expect_err("malformed");
    match &error.kind {
        CallErrorKind::Reported(ReportedError::InvalidConfig(why)) => {
            assert!(
                why.contains("spec.http") && why.contains("reviews-vsvc"),
                "{why}"
            )
        }
        other => panic!("expected invalid-config, got {other}"),
    }
    assert_eq!(
        vs(&cluster).await["spec"],
        malformed["spec"],
        "nothing written"
    );
}

#[tokio::test]
async fn a_virtual_service_in_another_namespace_needs_that_namespace_granted() {
    // The gateway pattern: the VirtualService lives in istio-ingress.
    let mut gateway = virtual_service();
    gateway["metadata"]["namespace"] = json!("istio-ingress");
    let config = json!({"virtualServices": [
        {"name": "reviews-vsvc.istio-ingress", "routes": ["primary"]},
        {"name": "reviews-vsvc", "routes": ["primary"]}
    ]})
    .to_string();
    let gateway_key = ObjectKey::new(
        "networking.istio.io/v1beta1",
        "VirtualService",
        "istio-ingress",
        "reviews-vsvc",
    );
    // Not granted: refused, naming the setting; nothing written anywhere.
    let (_rt, cluster, router) = setup(vec![gateway.clone(), virtual_service()]).await;
    let error = router
        .set_weight(&rollout_with(config.clone()), 30, &[])
        .await
        .expect_err("another namespace");
    assert!(
        error.to_string().contains("grant.namespaces")
            && error.to_string().contains("istio-ingress"),
        "{error}"
    );
    assert_eq!(vs(&cluster).await["spec"], virtual_service()["spec"]);
    // Granted: both VirtualServices get the weight.
    let (runtime, cluster) = runtime();
    cluster
        .apply(vec![
            Write::Create(gateway),
            Write::Create(virtual_service()),
        ])
        .await
        .expect("seed");
    let mut spec = PluginSpec::new(
        "argoproj-labs/istio",
        plugin_wasm("weir-plugin-istio").display().to_string(),
    );
    spec.grant = Grant {
        read: vec![],
        write: vec![GrantedKind {
            group: "networking.istio.io".into(),
            kind: "VirtualService".into(),
        }],
        namespaces: vec!["istio-ingress".into()],
        secrets: vec![],
    };
    let router = runtime.load_router(spec).await.expect("load istio");
    router
        .set_weight(&rollout_with(config), 30, &[])
        .await
        .expect("granted");
    for object in [
        cluster.get(&gateway_key).await.expect("gateway vs"),
        vs(&cluster).await,
    ] {
        let route = &object["spec"]["http"][0]["route"];
        assert_eq!(
            (route[0]["weight"].as_i64(), route[1]["weight"].as_i64()),
            (Some(70), Some(30)),
            "{object}"
        );
    }
}
