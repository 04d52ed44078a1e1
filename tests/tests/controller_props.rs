//! The reconcile never panics: arbitrary Rollouts (canary, blue-green and
//! workloadRef; well-formed, half-formed and garbage), arbitrary
//! Deployments for them to refer to, arbitrary stored statuses, and arbitrary Experiments,
//! AnalysisTemplates and VirtualServices beside them, reconciled several
//! times through the real plugins. Every reconcile returns, and every one
//! that succeeded leaves a status with a phase.

use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use weir::cluster::{Cluster, MemoryCluster, ObjectKey, Write};
use weir::controller::status::RolloutStatus;
use weir::controller::{PluginRegistry, Reconciler};
use weir::plugin::{PluginRuntime, RuntimeConfig};
use weir_e2e::cache_dir;
use weir_e2e::controller::plugins_dir;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(20),
            Just(100),
            Just(101),
            Just(i64::from(i32::MAX))
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9{}$. -]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("1s"),
            Just("0s"),
            Just("-5m"),
            Just("9999999999h"),
            Just("h")
        ]
        .prop_map(Value::from),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Mostly plausible, sometimes anything.
fn mostly<T: Strategy<Value = Value> + 'static>(plausible: T) -> impl Strategy<Value = Value> {
    prop_oneof![6 => plausible.boxed(), 1 => any_json().boxed()]
}

fn weight() -> impl Strategy<Value = Value> {
    mostly((0i64..=100).prop_map(Value::from))
}

fn duration() -> impl Strategy<Value = Value> {
    mostly(prop_oneof![
        Just(Value::Null),
        Just(json!("0s")),
        Just(json!(0)),
        Just(json!("1h"))
    ])
}

fn step() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => weight().prop_map(|w| json!({"setWeight": w})),
        2 => duration().prop_map(|d| json!({"pause": {"duration": d}})),
        1 => Just(json!({"pause": {}})),
        2 => mostly(Just(json!([]))).prop_map(|a| json!({"analysis": {"templates": [{"templateName": "t"}], "args": a}})),
        2 => (weight(), duration(), mostly(prop_oneof![Just(json!("stable")), Just(json!("canary"))]))
            .prop_map(|(w, d, r)| json!({"experiment": {
                "duration": d,
                "templates": [{"name": "a", "specRef": "stable", "weight": w},
                              {"name": "b", "specRef": r}]}})),
        1 => mostly((0i64..5).prop_map(|r| json!({"replicas": r}))).prop_map(|s| json!({"setCanaryScale": s})),
        1 => mostly(Just(json!({"name": "h", "match": [{"headerName": "x", "headerValue": {"exact": "1"}}]})))
            .prop_map(|r| json!({"setHeaderRoute": r})),
        1 => mostly(Just(json!({"name": "m", "percentage": 50, "match": [{"method": {"exact": "GET"}}]})))
            .prop_map(|r| json!({"setMirrorRoute": r})),
        1 => any_json(),
    ]
}

fn routing() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(Value::Null),
        3 => Just(json!({"istio": {"virtualService": {"name": "vs", "routes": ["primary"]}}})),
        1 => any_json().prop_map(|c| json!({"istio": c})),
        1 => any_json().prop_map(|c| json!({"plugins": {"acme/unregistered": c}})),
        1 => any_json(),
    ]
}

fn count() -> impl Strategy<Value = Value> {
    mostly(prop_oneof![
        Just(Value::Null),
        (0i64..6).prop_map(Value::from),
        Just(json!(-1)),
        Just(json!("3"))
    ])
}

/// `spec.strategy.blueGreen`: mostly plausible fields, sometimes anything.
fn blue_green() -> impl Strategy<Value = Value> {
    let analysis = || {
        mostly(prop_oneof![
            Just(Value::Null),
            Just(json!({"templates": [{"templateName": "t"}]})),
            Just(json!({"templates": []})),
        ])
    };
    let metadata = || {
        mostly(prop_oneof![
            Just(Value::Null),
            Just(json!({"labels": {"role": "x"}, "annotations": {"a": "b"}})),
            Just(json!({"labels": {"rollouts-pod-template-hash": "forged"}})),
        ])
    };
    let anti = mostly(prop_oneof![
        Just(Value::Null),
        Just(json!({"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 50}})),
        Just(json!({"requiredDuringSchedulingIgnoredDuringExecution": {}})),
        Just(json!({"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 0}})),
    ]);
    let services = prop_oneof![
        4 => Just((json!("a"), json!("p"))),
        1 => Just((json!("a"), json!("a"))),
        1 => Just((json!("a"), Value::Null)),
        1 => (any_json(), any_json()),
    ];
    (
        services,
        mostly(prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from)
        ]),
        (count(), count(), count(), count(), count()),
        (analysis(), analysis()),
        (metadata(), metadata(), anti),
    )
        .prop_map(
            |(
                (active, preview),
                auto,
                (seconds, preview_count, delay, limit, abort_delay),
                (pre, post),
                (active_meta, preview_meta, anti),
            )| {
                let mut strategy = json!({"activeService": active, "previewService": preview});
                for (field, value) in [
                    ("autoPromotionEnabled", auto),
                    ("autoPromotionSeconds", seconds),
                    ("previewReplicaCount", preview_count),
                    ("scaleDownDelaySeconds", delay),
                    ("scaleDownDelayRevisionLimit", limit),
                    ("abortScaleDownDelaySeconds", abort_delay),
                    ("prePromotionAnalysis", pre),
                    ("postPromotionAnalysis", post),
                    ("activeMetadata", active_meta),
                    ("previewMetadata", preview_meta),
                    ("antiAffinity", anti),
                ] {
                    if !value.is_null() {
                        strategy[field] = value;
                    }
                }
                strategy
            },
        )
}

/// `spec.workloadRef`: to the Deployment beside it, one that is missing, or
/// anything; with a scaleDown mode, and sometimes a template beside it.
fn workload_ref() -> impl Strategy<Value = Value> {
    let reference = mostly(prop_oneof![
        Just(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"})),
        Just(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "gone"})),
        Just(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "d"})),
    ]);
    let scale_down = mostly(prop_oneof![
        Just(json!("never")),
        Just(json!("onsuccess")),
        Just(json!("progressively")),
        Just(json!("sometimes")),
    ]);
    (
        reference,
        scale_down,
        any::<bool>(),
        blue_green(),
        any::<bool>(),
    )
        .prop_map(
            |(mut reference, scale_down, with_template, blue_green, canary)| {
                if let Some(map) = reference.as_object_mut() {
                    map.insert("scaleDown".into(), scale_down);
                }
                let strategy = if canary {
                    json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}})
                } else {
                    json!({"blueGreen": blue_green})
                };
                let mut spec =
                    json!({"replicas": 3, "workloadRef": reference, "strategy": strategy});
                if with_template {
                    spec["template"] = json!({"metadata": {"labels": {"app": "x"}}});
                }
                spec
            },
        )
}

fn spec() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => any_json(),
        2 => workload_ref(),
        4 => (mostly((0i64..6).prop_map(Value::from)), any_json(), blue_green())
            .prop_map(|(replicas, image, strategy)| {
                json!({"replicas": replicas,
                       "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"image": image}},
                       "strategy": {"blueGreen": strategy}})
            }),
        8 => (mostly((0i64..6).prop_map(Value::from)), any_json(), prop::collection::vec(step(), 0..6), routing(), mostly(Just(Value::Null)), any::<bool>())
            .prop_map(|(replicas, image, steps, routing, background, dynamic)| {
                let mut canary = json!({"canaryService": "c", "stableService": "s", "steps": steps,
                                        "dynamicStableScale": dynamic});
                if !routing.is_null() {
                    canary["trafficRouting"] = routing;
                }
                if !background.is_null() {
                    canary["analysis"] = json!({"templates": [{"templateName": "t"}], "startingStep": background});
                }
                json!({"replicas": replicas,
                       "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"image": image}},
                       "strategy": {"canary": canary}})
            }),
    ]
}

fn status() -> impl Strategy<Value = Value> {
    let index = mostly((0i64..8).prop_map(Value::from));
    let stable = mostly(prop_oneof![Just(Value::Null), Just(json!("stale"))]);
    let pauses = mostly(prop_oneof![
        Just(json!([])),
        Just(json!([{"reason": "CanaryPauseStep", "startTime": "2020-01-01T00:00:00Z"}])),
        Just(json!([{"reason": "CanaryPauseStep", "startTime": "not a time"}])),
    ]);
    let weights = mostly(Just(Value::Null));
    prop_oneof![
        1 => any_json(),
        1 => Just(Value::Null),
        6 => (index, stable, pauses, any::<bool>(), any::<bool>(), weights).prop_map(
            |(index, stable, pauses, abort, controller_pause, weights)| {
                json!({
                    "currentStepIndex": index, "stableRS": stable, "currentPodHash": "stale",
                    "pauseConditions": pauses, "abort": abort, "controllerPause": controller_pause,
                    "canary": {"currentExperiment": "exp", "weights": weights,
                               "currentRolloutAnalysisRunStatus": {"name": "run", "status": "Running"}},
                    "blueGreen": {"activeSelector": "stale", "previewSelector": "other",
                                  "scaleUpPreviewCheckPoint": abort,
                                  "prePromotionAnalysisRunStatus": {"name": "run", "status": "Inconclusive"},
                                  "postPromotionAnalysisRunStatus": {"name": "post", "status": "Running"}}})
            }
        ),
    ]
}

struct World {
    cluster: Arc<MemoryCluster>,
    reconciler: Reconciler,
    runtime: tokio::runtime::Runtime,
}

fn world() -> World {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let cluster = Arc::new(MemoryCluster::new());
    let plugins = runtime
        .block_on(async {
            PluginRuntime::new(
                RuntimeConfig {
                    cache_dir: Some(cache_dir()),
                    ..RuntimeConfig::default()
                },
                cluster.clone(),
            )
        })
        .expect("plugin runtime");
    let evaluator = runtime.block_on(weir::analysis::ConditionEvaluator::load(
        &plugins,
        &plugins_dir()
            .join("weir_condition.wasm")
            .display()
            .to_string(),
    ));
    let registry = Arc::new(PluginRegistry::new(plugins, plugins_dir(), "argo-rollouts"));
    let reconciler = Reconciler::new(cluster.clone(), registry, evaluator);
    World {
        cluster,
        reconciler,
        runtime,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_reconcile_never_panics_and_always_leaves_a_phase(
        spec in spec(),
        status in status(),
        experiment in any_json(),
        template in mostly(Just(json!({"metrics": [{"name": "m", "count": 1,
            "successCondition": "result > 1", "provider": {"web": {"url": "http://127.0.0.1:1/"}}}]}))),
        vs in mostly(Just(json!({"http": [{"name": "primary", "route": [
            {"destination": {"host": "s"}, "weight": 100},
            {"destination": {"host": "c"}, "weight": 0}]}]}))),
        deployment in mostly(Just(json!({"replicas": 3, "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "a", "image": "i"}]}}}))),
        seed in any::<u32>(),
    ) {
        thread_local! {
            static WORLD: World = world();
        }
        WORLD.with(|w| {
            let namespace = format!("ns{seed}");
            let object = |kind: &str, api: &str, name: &str, body: Value| {
                let mut o = json!({"apiVersion": api, "kind": kind,
                                   "metadata": {"name": name, "namespace": namespace}});
                if let (Some(map), Some(extra)) = (o.as_object_mut(), body.as_object()) {
                    for (k, v) in extra {
                        if k != "metadata" && k != "apiVersion" && k != "kind" {
                            map.insert(k.clone(), v.clone());
                        }
                    }
                }
                o
            };
            let rollout = {
                let mut r = object("Rollout", "argoproj.io/v1alpha1", "r", json!({}));
                r["spec"] = spec.clone();
                r["status"] = status.clone();
                r
            };
            let key = ObjectKey::of(&rollout).expect("key");
            w.runtime.block_on(async {
                let _ = w.cluster.apply(vec![Write::Delete { key: key.clone(), expected_version: None }]).await;
                for o in [
                    rollout,
                    object("Experiment", "argoproj.io/v1alpha1", "exp", json!({"status": experiment.clone()})),
                    object("AnalysisTemplate", "argoproj.io/v1alpha1", "t", json!({"spec": template.clone()})),
                    object("VirtualService", "networking.istio.io/v1beta1", "vs", json!({"spec": vs.clone()})),
                    object("Service", "v1", "c", json!({"spec": {"selector": {"app": "x"}}})),
                    object("Service", "v1", "s", json!({"spec": {"selector": {"app": "x"}}})),
                    object("Service", "v1", "a", json!({"spec": {"selector": {"app": "x"}}})),
                    object("Service", "v1", "p", json!({"spec": {"selector": {"app": "x"}}})),
                    object("Deployment", "apps/v1", "d", json!({"spec": deployment.clone()})),
                ] {
                    let k = ObjectKey::of(&o).expect("key");
                    let _ = w.cluster.apply(vec![Write::Delete { key: k, expected_version: None }]).await;
                    let _ = w.cluster.apply(vec![Write::Create(o)]).await;
                }
                for _ in 0..4 {
                    let outcome = w.reconciler.reconcile(&key).await;
                    if let Ok(Some(o)) = outcome
                        && !o.failed
                    {
                        let stored = w.cluster.get(&key).await.expect("rollout still stored");
                        let s = RolloutStatus::of(&stored);
                        assert!(s.phase.is_some(), "no phase after a reconcile: {stored}");
                    }
                }
            });
        });
    }
}
