//! What a call into a plugin is (`Call`), what it returns (`Reply`), and
//! making it on a fresh instance of whichever world and contract version
//! the component implements (`Pre`, `invoke`).

use super::bindings::condition::ConditionEvaluatorPre;
use super::bindings::condition::exports::weir::condition::evaluator::ConditionError;
use super::bindings::provider::MetricProviderPluginPre;
use super::bindings::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, Metric,
};
use super::bindings::router::TrafficRouterPluginPre;
use super::bindings::step::StepPluginPre;
use super::bindings::step::exports::weir::plugin::step::{StepContext, StepResult};
use super::bindings::types::{
    HeaderRoute, MirrorRoute, PluginError as ReportedError, Rollout, WeightDestination,
    WeightVerification,
};
use super::bindings::v0_1;
use super::compat;
use super::state::CallState;
use wasmtime::Store;

/// A pre-instantiated plugin: its world and the contract version it was
/// built against.
pub(crate) enum Pre {
    Router(TrafficRouterPluginPre<CallState>),
    /// A traffic router built against contract 0.1.
    RouterV01(v0_1::router::TrafficRouterPluginPre<CallState>),
    Provider(MetricProviderPluginPre<CallState>),
    /// A metric provider built against contract 0.1.
    ProviderV01(v0_1::provider::MetricProviderPluginPre<CallState>),
    Step(StepPluginPre<CallState>),
    Condition(ConditionEvaluatorPre<CallState>),
}

impl Pre {
    /// Instantiates without calling anything (a trial, for inspection).
    pub(crate) async fn instantiate_only(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<()> {
        match self {
            Pre::Router(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::RouterV01(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::Provider(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::ProviderV01(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::Step(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::Condition(pre) => pre.instantiate_async(store).await.map(drop),
        }
    }
}

/// A call into a plugin, with its arguments.
pub(crate) enum Call<'a> {
    RouterInit(&'a [String]),
    UpdateHash {
        rollout: &'a Rollout,
        canary_hash: &'a str,
        stable_hash: &'a str,
        additional: &'a [WeightDestination],
    },
    SetWeight {
        rollout: &'a Rollout,
        weight: i32,
        additional: &'a [WeightDestination],
    },
    SetHeaderRoute {
        rollout: &'a Rollout,
        route: &'a HeaderRoute,
    },
    SetMirrorRoute {
        rollout: &'a Rollout,
        route: &'a MirrorRoute,
    },
    VerifyWeight {
        rollout: &'a Rollout,
        weight: i32,
        additional: &'a [WeightDestination],
    },
    RemoveManagedRoutes {
        rollout: &'a Rollout,
    },
    ProviderInit(&'a [String]),
    Run {
        run: &'a AnalysisRun,
        metric: &'a Metric,
    },
    Resume {
        run: &'a AnalysisRun,
        metric: &'a Metric,
        measurement: &'a Measurement,
    },
    Terminate {
        run: &'a AnalysisRun,
        metric: &'a Metric,
        measurement: &'a Measurement,
    },
    GarbageCollect {
        run: &'a AnalysisRun,
        metric: &'a Metric,
        limit: u32,
    },
    Metadata {
        metric: &'a Metric,
    },
    Evaluate {
        condition: &'a str,
        measured: &'a str,
    },
    StepInit(&'a [String]),
    StepRun {
        rollout: &'a Rollout,
        context: &'a StepContext,
    },
    StepTerminate {
        rollout: &'a Rollout,
        context: &'a StepContext,
    },
    StepAbort {
        rollout: &'a Rollout,
        context: &'a StepContext,
    },
}

/// What a call returned.
#[derive(Debug)]
pub(crate) enum Reply {
    Unit,
    Verification(WeightVerification),
    Measurement(Measurement),
    Metadata(Vec<(String, String)>),
    Verdict(Result<bool, ConditionError>),
    Step(StepResult),
}

impl Call<'_> {
    /// The contract's name of the call.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Call::RouterInit(_) | Call::ProviderInit(_) | Call::StepInit(_) => "init",
            Call::UpdateHash { .. } => "update-hash",
            Call::SetWeight { .. } => "set-weight",
            Call::SetHeaderRoute { .. } => "set-header-route",
            Call::SetMirrorRoute { .. } => "set-mirror-route",
            Call::VerifyWeight { .. } => "verify-weight",
            Call::RemoveManagedRoutes { .. } => "remove-managed-routes",
            Call::Run { .. } => "run",
            Call::Resume { .. } => "resume",
            Call::Terminate { .. } => "terminate",
            Call::GarbageCollect { .. } => "garbage-collect",
            Call::Metadata { .. } => "metadata",
            Call::Evaluate { .. } => "evaluate",
            Call::StepRun { .. } => "run",
            Call::StepTerminate { .. } => "terminate",
            Call::StepAbort { .. } => "abort",
        }
    }

    /// The namespace and name of the rollout or analysis run the call
    /// serves (none for init and metadata).
    fn served(&self) -> Option<(&str, &str)> {
        match self {
            Call::RouterInit(_)
            | Call::ProviderInit(_)
            | Call::StepInit(_)
            | Call::Metadata { .. }
            | Call::Evaluate { .. } => None,
            Call::UpdateHash { rollout, .. }
            | Call::SetWeight { rollout, .. }
            | Call::SetHeaderRoute { rollout, .. }
            | Call::SetMirrorRoute { rollout, .. }
            | Call::VerifyWeight { rollout, .. }
            | Call::RemoveManagedRoutes { rollout }
            | Call::StepRun { rollout, .. }
            | Call::StepTerminate { rollout, .. }
            | Call::StepAbort { rollout, .. } => Some((&rollout.namespace, &rollout.name)),
            Call::Run { run, .. }
            | Call::Resume { run, .. }
            | Call::Terminate { run, .. }
            | Call::GarbageCollect { run, .. } => Some((&run.namespace, &run.name)),
        }
    }

    /// What a router's weights are out of for this call: the Rollout's
    /// `trafficRouting.maxTrafficWeight` (100 unless set), so observed
    /// weights are checked against it.
    pub(crate) fn weight_total(&self) -> i32 {
        let Call::VerifyWeight { rollout, .. } = self else {
            return 100;
        };
        // Only the one field is kept from the object (serde skips the rest).
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Routing {
            max_traffic_weight: Option<i64>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Canary {
            traffic_routing: Routing,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Strategy {
            canary: Canary,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Spec {
            strategy: Strategy,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Object {
            spec: Spec,
        }
        serde_json::from_str::<Object>(&rollout.object)
            .ok()
            .and_then(|o| o.spec.strategy.canary.traffic_routing.max_traffic_weight)
            .and_then(|m| i32::try_from(m).ok())
            .filter(|m| *m > 0)
            .unwrap_or(100)
    }

    /// `namespace/name` of what the call serves: the unit its call rate is
    /// counted in.
    pub(crate) fn target(&self) -> Option<String> {
        self.served().map(|(ns, name)| format!("{ns}/{name}"))
    }

    /// The namespace the call may touch (none for init and metadata).
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.served().map(|(ns, _)| ns)
    }
}

type GuestResult = Result<Reply, ReportedError>;

fn not_a(kind: &str, call: &Call<'_>) -> wasmtime::Error {
    wasmtime::format_err!("{} is not a {kind} call", call.method())
}

/// A traffic router's call, on either contract version's bindings (their
/// functions and types are the same).
macro_rules! router_call {
    ($router:expr, $store:expr, $call:expr) => {{
        let router = $router;
        let store = $store;
        let unit = |r: Result<(), ReportedError>| r.map(|()| Reply::Unit);
        match $call {
            Call::RouterInit(args) => unit(router.call_init(&mut *store, args).await?),
            Call::UpdateHash {
                rollout,
                canary_hash,
                stable_hash,
                additional,
            } => unit(
                router
                    .call_update_hash(&mut *store, rollout, canary_hash, stable_hash, additional)
                    .await?,
            ),
            Call::SetWeight {
                rollout,
                weight,
                additional,
            } => unit(
                router
                    .call_set_weight(&mut *store, rollout, *weight, additional)
                    .await?,
            ),
            Call::SetHeaderRoute { rollout, route } => unit(
                router
                    .call_set_header_route(&mut *store, rollout, route)
                    .await?,
            ),
            Call::SetMirrorRoute { rollout, route } => unit(
                router
                    .call_set_mirror_route(&mut *store, rollout, route)
                    .await?,
            ),
            Call::VerifyWeight {
                rollout,
                weight,
                additional,
            } => router
                .call_verify_weight(&mut *store, rollout, *weight, additional)
                .await?
                .map(Reply::Verification),
            Call::RemoveManagedRoutes { rollout } => unit(
                router
                    .call_remove_managed_routes(&mut *store, rollout)
                    .await?,
            ),
            other => return Err(not_a("traffic-router", other)),
        }
    }};
}

/// Instantiates `pre` in `store` and makes the call.
pub(crate) async fn invoke(
    store: &mut Store<CallState>,
    pre: &Pre,
    call: &Call<'_>,
) -> wasmtime::Result<GuestResult> {
    match pre {
        Pre::Router(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            Ok(router_call!(
                instance.weir_plugin_traffic_router(),
                store,
                call
            ))
        }
        Pre::RouterV01(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            Ok(router_call!(
                instance.weir_plugin_traffic_router(),
                store,
                call
            ))
        }
        Pre::Provider(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            let provider = instance.weir_plugin_metric_provider();
            Ok(match call {
                Call::ProviderInit(args) => provider
                    .call_init(&mut *store, args)
                    .await?
                    .map(|()| Reply::Unit),
                Call::Run { run, metric } => provider
                    .call_run(&mut *store, run, metric)
                    .await?
                    .map(Reply::Measurement),
                Call::Resume {
                    run,
                    metric,
                    measurement,
                } => provider
                    .call_resume(&mut *store, run, metric, measurement)
                    .await?
                    .map(Reply::Measurement),
                Call::Terminate {
                    run,
                    metric,
                    measurement,
                } => provider
                    .call_terminate(&mut *store, run, metric, measurement)
                    .await?
                    .map(Reply::Measurement),
                Call::GarbageCollect { run, metric, limit } => provider
                    .call_garbage_collect(&mut *store, run, metric, *limit)
                    .await?
                    .map(|()| Reply::Unit),
                Call::Metadata { metric } => Ok(Reply::Metadata(
                    provider.call_metadata(&mut *store, metric).await?,
                )),
                other => return Err(not_a("metric-provider", other)),
            })
        }
        Pre::ProviderV01(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            let provider = instance.weir_plugin_metric_provider();
            let measured = |r: Result<compat::Measurement01, ReportedError>| {
                r.map(|m| Reply::Measurement(compat::measurement_from_01(m)))
            };
            Ok(match call {
                Call::ProviderInit(args) => provider
                    .call_init(&mut *store, args)
                    .await?
                    .map(|()| Reply::Unit),
                Call::Run { run, metric } => measured(
                    provider
                        .call_run(
                            &mut *store,
                            &compat::run_to_01(run),
                            &compat::metric_to_01(metric),
                        )
                        .await?,
                ),
                Call::Resume {
                    run,
                    metric,
                    measurement,
                } => measured(
                    provider
                        .call_resume(
                            &mut *store,
                            &compat::run_to_01(run),
                            &compat::metric_to_01(metric),
                            &compat::measurement_to_01(measurement),
                        )
                        .await?,
                ),
                Call::Terminate {
                    run,
                    metric,
                    measurement,
                } => measured(
                    provider
                        .call_terminate(
                            &mut *store,
                            &compat::run_to_01(run),
                            &compat::metric_to_01(metric),
                            &compat::measurement_to_01(measurement),
                        )
                        .await?,
                ),
                Call::GarbageCollect { run, metric, limit } => provider
                    .call_garbage_collect(
                        &mut *store,
                        &compat::run_to_01(run),
                        &compat::metric_to_01(metric),
                        *limit,
                    )
                    .await?
                    .map(|()| Reply::Unit),
                Call::Metadata { metric } => Ok(Reply::Metadata(
                    provider
                        .call_metadata(&mut *store, &compat::metric_to_01(metric))
                        .await?,
                )),
                other => return Err(not_a("metric-provider", other)),
            })
        }
        Pre::Step(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            let step = instance.weir_plugin_step();
            Ok(match call {
                Call::StepInit(args) => step
                    .call_init(&mut *store, args)
                    .await?
                    .map(|()| Reply::Unit),
                Call::StepRun { rollout, context } => step
                    .call_run(&mut *store, rollout, context)
                    .await?
                    .map(Reply::Step),
                Call::StepTerminate { rollout, context } => step
                    .call_terminate(&mut *store, rollout, context)
                    .await?
                    .map(Reply::Step),
                Call::StepAbort { rollout, context } => step
                    .call_abort(&mut *store, rollout, context)
                    .await?
                    .map(Reply::Step),
                other => return Err(not_a("step-plugin", other)),
            })
        }
        Pre::Condition(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            match call {
                Call::Evaluate {
                    condition,
                    measured,
                } => Ok(Ok(Reply::Verdict(
                    instance
                        .weir_condition_evaluator()
                        .call_evaluate(&mut *store, condition, measured)
                        .await?,
                ))),
                other => Err(not_a("condition-evaluator", other)),
            }
        }
    }
}
