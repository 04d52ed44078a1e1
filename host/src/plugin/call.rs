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
    HeaderRoute, MirrorRoute, PluginError as ReportedError, WeightDestination, WeightVerification,
};
use super::bindings::{v0_1, v0_2};
use super::compat::{self, ReportedError02, carried};
use super::state::CallState;
use super::subject::Rollout;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use wasmtime::Store;

/// A pre-instantiated plugin: its world and the contract version it was
/// built against.
pub(crate) enum Pre {
    Router(TrafficRouterPluginPre<CallState>),
    /// A traffic router built against contract 0.2.
    RouterV02(v0_2::router::TrafficRouterPluginPre<CallState>),
    /// A traffic router built against contract 0.1.
    RouterV01(v0_1::router::TrafficRouterPluginPre<CallState>),
    Provider(MetricProviderPluginPre<CallState>),
    /// A metric provider built against contract 0.2.
    ProviderV02(v0_2::provider::MetricProviderPluginPre<CallState>),
    /// A metric provider built against contract 0.1.
    ProviderV01(v0_1::provider::MetricProviderPluginPre<CallState>),
    Step(StepPluginPre<CallState>),
    /// A step plugin built against contract 0.2.
    StepV02(v0_2::step::StepPluginPre<CallState>),
    Condition(ConditionEvaluatorPre<CallState>),
}

impl Pre {
    /// The Engine its code was compiled for: a call's Store must be on it.
    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        match self {
            Pre::Router(pre) => pre.instance_pre().engine(),
            Pre::RouterV02(pre) => pre.instance_pre().engine(),
            Pre::RouterV01(pre) => pre.instance_pre().engine(),
            Pre::Provider(pre) => pre.instance_pre().engine(),
            Pre::ProviderV02(pre) => pre.instance_pre().engine(),
            Pre::ProviderV01(pre) => pre.instance_pre().engine(),
            Pre::Step(pre) => pre.instance_pre().engine(),
            Pre::StepV02(pre) => pre.instance_pre().engine(),
            Pre::Condition(pre) => pre.instance_pre().engine(),
        }
    }

    /// Instantiates without calling anything (a trial, for inspection).
    pub(crate) async fn instantiate_only(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<()> {
        match self {
            Pre::Router(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::RouterV02(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::RouterV01(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::Provider(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::ProviderV02(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::ProviderV01(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::Step(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::StepV02(pre) => pre.instantiate_async(store).await.map(drop),
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

    /// The Rollout the call serves (routers and step plugins, not `init`).
    pub(crate) fn rollout(&self) -> Option<&Rollout> {
        match self {
            Call::UpdateHash { rollout, .. }
            | Call::SetWeight { rollout, .. }
            | Call::SetHeaderRoute { rollout, .. }
            | Call::SetMirrorRoute { rollout, .. }
            | Call::VerifyWeight { rollout, .. }
            | Call::RemoveManagedRoutes { rollout }
            | Call::StepRun { rollout, .. }
            | Call::StepTerminate { rollout, .. }
            | Call::StepAbort { rollout, .. } => Some(rollout),
            _ => None,
        }
    }

    /// What a router's weights are out of for this call: the Rollout's
    /// `trafficRouting.maxTrafficWeight` (100 unless set), so observed
    /// weights are checked against it.
    pub(crate) fn weight_total(&self) -> i32 {
        match self {
            Call::VerifyWeight { rollout, .. } => rollout.max_traffic_weight(),
            _ => 100,
        }
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

/// A traffic router's call on contract 0.3: the Rollout's record, typed.
async fn router_call(
    router: &super::bindings::router::exports::weir::plugin::traffic_router::Guest,
    store: &mut Store<CallState>,
    call: &Call<'_>,
) -> wasmtime::Result<GuestResult> {
    let unit = |r: Result<(), ReportedError>| r.map(|()| Reply::Unit);
    Ok(match call {
        Call::RouterInit(args) => unit(router.call_init(&mut *store, args).await?),
        Call::UpdateHash {
            rollout,
            canary_hash,
            stable_hash,
            additional,
        } => unit(
            router
                .call_update_hash(
                    &mut *store,
                    &rollout.record(),
                    canary_hash,
                    stable_hash,
                    additional,
                )
                .await?,
        ),
        Call::SetWeight {
            rollout,
            weight,
            additional,
        } => unit(
            router
                .call_set_weight(&mut *store, &rollout.record(), *weight, additional)
                .await?,
        ),
        Call::SetHeaderRoute { rollout, route } => unit(
            router
                .call_set_header_route(&mut *store, &rollout.record(), route)
                .await?,
        ),
        Call::SetMirrorRoute { rollout, route } => unit(
            router
                .call_set_mirror_route(&mut *store, &rollout.record(), route)
                .await?,
        ),
        Call::VerifyWeight {
            rollout,
            weight,
            additional,
        } => router
            .call_verify_weight(&mut *store, &rollout.record(), *weight, additional)
            .await?
            .map(Reply::Verification),
        Call::RemoveManagedRoutes { rollout } => unit(
            router
                .call_remove_managed_routes(&mut *store, &rollout.record())
                .await?,
        ),
        other => return Err(not_a("traffic-router", other)),
    })
}

/// A traffic router's call on contract 0.2 or 0.1 (whose router records
/// are 0.2's): the whole Rollout in the record, every value carried across.
macro_rules! legacy_router_call {
    ($router:expr, $store:expr, $call:expr) => {{
        let router = $router;
        let store: &mut Store<CallState> = $store;
        let unit =
            |r: Result<(), ReportedError02>| r.map(|()| Reply::Unit).map_err(compat::error_from_02);
        let rollout = compat::rollout_to_02;
        let destinations = |d: &[WeightDestination]| -> wasmtime::Result<Vec<_>> { carried(&d) };
        match $call {
            Call::RouterInit(args) => unit(router.call_init(&mut *store, args).await?),
            Call::UpdateHash {
                rollout: r,
                canary_hash,
                stable_hash,
                additional,
            } => unit(
                router
                    .call_update_hash(
                        &mut *store,
                        &rollout(r),
                        canary_hash,
                        stable_hash,
                        &destinations(additional)?,
                    )
                    .await?,
            ),
            Call::SetWeight {
                rollout: r,
                weight,
                additional,
            } => unit(
                router
                    .call_set_weight(
                        &mut *store,
                        &rollout(r),
                        *weight,
                        &destinations(additional)?,
                    )
                    .await?,
            ),
            Call::SetHeaderRoute { rollout: r, route } => unit(
                router
                    .call_set_header_route(&mut *store, &rollout(r), &carried(*route)?)
                    .await?,
            ),
            Call::SetMirrorRoute { rollout: r, route } => unit(
                router
                    .call_set_mirror_route(&mut *store, &rollout(r), &carried(*route)?)
                    .await?,
            ),
            Call::VerifyWeight {
                rollout: r,
                weight,
                additional,
            } => match router
                .call_verify_weight(
                    &mut *store,
                    &rollout(r),
                    *weight,
                    &destinations(additional)?,
                )
                .await?
            {
                Ok(verification) => Ok(Reply::Verification(carried(&verification)?)),
                Err(e) => Err(compat::error_from_02(e)),
            },
            Call::RemoveManagedRoutes { rollout: r } => unit(
                router
                    .call_remove_managed_routes(&mut *store, &rollout(r))
                    .await?,
            ),
            other => return Err(not_a("traffic-router", other)),
        }
    }};
}

/// A metric provider's call on contract 0.3 or 0.2 (whose provider
/// records are the same shape; `$to` and `$from` carry them across).
macro_rules! provider_call {
    ($provider:expr, $store:expr, $call:expr, $to:expr, $from:expr, $error:expr) => {{
        let provider = $provider;
        let store: &mut Store<CallState> = $store;
        let measured = |r: Result<_, _>| match r {
            Ok(m) => $from(m).map(Reply::Measurement).map(Ok),
            Err(e) => Ok(Err($error(e))),
        };
        let unit = |r: Result<(), _>| r.map(|()| Reply::Unit).map_err($error);
        match $call {
            Call::ProviderInit(args) => unit(provider.call_init(&mut *store, args).await?),
            Call::Run { run, metric } => measured(
                provider
                    .call_run(&mut *store, &*$to(*run)?, &*$to(*metric)?)
                    .await?,
            )?,
            Call::Resume {
                run,
                metric,
                measurement,
            } => measured(
                provider
                    .call_resume(
                        &mut *store,
                        &*$to(*run)?,
                        &*$to(*metric)?,
                        &*$to(*measurement)?,
                    )
                    .await?,
            )?,
            Call::Terminate {
                run,
                metric,
                measurement,
            } => measured(
                provider
                    .call_terminate(
                        &mut *store,
                        &*$to(*run)?,
                        &*$to(*metric)?,
                        &*$to(*measurement)?,
                    )
                    .await?,
            )?,
            Call::GarbageCollect { run, metric, limit } => unit(
                provider
                    .call_garbage_collect(&mut *store, &*$to(*run)?, &*$to(*metric)?, *limit)
                    .await?,
            ),
            Call::Metadata { metric } => Ok(Reply::Metadata(
                provider.call_metadata(&mut *store, &*$to(*metric)?).await?,
            )),
            other => return Err(not_a("metric-provider", other)),
        }
    }};
}

/// A step plugin's call on contract 0.3 or 0.2 (`$rollout` gives the
/// version's record; `$to` and `$from` carry the others across).
macro_rules! step_call {
    ($step:expr, $store:expr, $call:expr, $rollout:expr, $to:expr, $from:expr, $error:expr) => {{
        let step = $step;
        let store: &mut Store<CallState> = $store;
        let stepped = |r: Result<_, _>| match r {
            Ok(result) => $from(result).map(Reply::Step).map(Ok),
            Err(e) => Ok(Err($error(e))),
        };
        match $call {
            Call::StepInit(args) => step
                .call_init(&mut *store, args)
                .await?
                .map(|()| Reply::Unit)
                .map_err($error),
            Call::StepRun { rollout, context } => stepped(
                step.call_run(&mut *store, &$rollout(*rollout), &*$to(*context)?)
                    .await?,
            )?,
            Call::StepTerminate { rollout, context } => stepped(
                step.call_terminate(&mut *store, &$rollout(*rollout), &*$to(*context)?)
                    .await?,
            )?,
            Call::StepAbort { rollout, context } => stepped(
                step.call_abort(&mut *store, &$rollout(*rollout), &*$to(*context)?)
                    .await?,
            )?,
            other => return Err(not_a("step-plugin", other)),
        }
    }};
}

/// The same value, borrowed, for the current contract's own types (no
/// copy: the call takes a reference either way).
fn same<T: Clone>(value: &T) -> wasmtime::Result<Cow<'_, T>> {
    Ok(Cow::Borrowed(value))
}

/// [`carried`], for the macros below that borrow the current contract's
/// values rather than copy them.
fn carried_over<A: Serialize, B: DeserializeOwned + Clone>(
    value: &A,
) -> wasmtime::Result<Cow<'static, B>> {
    carried(value).map(Cow::Owned)
}

/// Instantiates `pre` in `store` and makes the call.
pub(crate) async fn invoke(
    store: &mut Store<CallState>,
    pre: &Pre,
    call: &Call<'_>,
) -> wasmtime::Result<GuestResult> {
    let current = |e: ReportedError| e;
    match pre {
        Pre::Router(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            router_call(instance.weir_plugin_traffic_router(), store, call).await
        }
        Pre::RouterV02(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            Ok(legacy_router_call!(
                instance.weir_plugin_traffic_router(),
                store,
                call
            ))
        }
        Pre::RouterV01(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            Ok(legacy_router_call!(
                instance.weir_plugin_traffic_router(),
                store,
                call
            ))
        }
        Pre::Provider(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            let kept = |m: Measurement| Ok::<_, wasmtime::Error>(m);
            Ok(provider_call!(
                instance.weir_plugin_metric_provider(),
                store,
                call,
                same,
                kept,
                current
            ))
        }
        Pre::ProviderV02(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            Ok(provider_call!(
                instance.weir_plugin_metric_provider(),
                store,
                call,
                carried_over,
                |m| carried(&m),
                compat::error_from_02
            ))
        }
        Pre::ProviderV01(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            let provider = instance.weir_plugin_metric_provider();
            let measured = |r: Result<compat::Measurement01, ReportedError02>| {
                r.map(|m| Reply::Measurement(compat::measurement_from_01(m)))
                    .map_err(compat::error_from_02)
            };
            let unit = |r: Result<(), ReportedError02>| {
                r.map(|()| Reply::Unit).map_err(compat::error_from_02)
            };
            Ok(match call {
                Call::ProviderInit(args) => unit(provider.call_init(&mut *store, args).await?),
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
                Call::GarbageCollect { run, metric, limit } => unit(
                    provider
                        .call_garbage_collect(
                            &mut *store,
                            &compat::run_to_01(run),
                            &compat::metric_to_01(metric),
                            *limit,
                        )
                        .await?,
                ),
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
            let kept = |r: StepResult| Ok::<_, wasmtime::Error>(r);
            Ok(step_call!(
                instance.weir_plugin_step(),
                store,
                call,
                Rollout::record,
                same,
                kept,
                current
            ))
        }
        Pre::StepV02(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            Ok(step_call!(
                instance.weir_plugin_step(),
                store,
                call,
                compat::rollout_to_02,
                carried_over,
                |r| carried(&r),
                compat::error_from_02
            ))
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
