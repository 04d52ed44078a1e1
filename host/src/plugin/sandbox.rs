//! One plugin call in its own sandbox: a fresh Store and instance, a
//! deadline, memory and table caps, no ambient authority, bounded output;
//! its cluster writes applied only if it succeeds; the Store dropped after.

use super::bindings::condition::ConditionEvaluatorPre;
use super::bindings::condition::exports::weir::condition::evaluator::ConditionError;
use super::bindings::provider::MetricProviderPluginPre;
use super::bindings::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, Metric,
};
use super::bindings::router::TrafficRouterPluginPre;
use super::bindings::types::{
    HeaderRoute, MirrorRoute, PluginError as ReportedError, Rollout, WeightDestination,
    WeightVerification,
};
use super::capture::BoundedCapture;
use super::error::{CallError, CallErrorKind};
use super::http_policy::PolicyHooks;
use super::runtime::Plugin;
use super::state::{CallState, LimitHit, SharedRecord, record_denial};
use super::validate;
use crate::cluster::{StagedCluster, StagedError};
use std::time::Instant;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

/// A pre-instantiated plugin of either world.
pub(crate) enum Pre {
    Router(TrafficRouterPluginPre<CallState>),
    Provider(MetricProviderPluginPre<CallState>),
    Condition(ConditionEvaluatorPre<CallState>),
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
}

/// What a call returned.
#[derive(Debug)]
pub(crate) enum Reply {
    Unit,
    Verification(WeightVerification),
    Measurement(Measurement),
    Metadata(Vec<(String, String)>),
    Verdict(Result<bool, ConditionError>),
}

impl Call<'_> {
    /// The contract's name of the call.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Call::RouterInit(_) | Call::ProviderInit(_) => "init",
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
        }
    }

    /// The namespace and name of the rollout or analysis run the call
    /// serves (none for init and metadata).
    fn served(&self) -> Option<(&str, &str)> {
        match self {
            Call::RouterInit(_)
            | Call::ProviderInit(_)
            | Call::Metadata { .. }
            | Call::Evaluate { .. } => None,
            Call::UpdateHash { rollout, .. }
            | Call::SetWeight { rollout, .. }
            | Call::SetHeaderRoute { rollout, .. }
            | Call::SetMirrorRoute { rollout, .. }
            | Call::VerifyWeight { rollout, .. }
            | Call::RemoveManagedRoutes { rollout } => Some((&rollout.namespace, &rollout.name)),
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
    fn target(&self) -> Option<String> {
        self.served().map(|(ns, name)| format!("{ns}/{name}"))
    }

    /// The namespace the call may touch (none for init and metadata).
    fn namespace(&self) -> Option<&str> {
        self.served().map(|(ns, _)| ns)
    }
}

type GuestResult = Result<Reply, ReportedError>;

/// Instantiates `pre` in `store` and makes the call.
async fn invoke(
    store: &mut Store<CallState>,
    pre: &Pre,
    call: &Call<'_>,
) -> wasmtime::Result<GuestResult> {
    match pre {
        Pre::Router(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            let router = instance.weir_plugin_traffic_router();
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
                            rollout,
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
                _ => {
                    return Err(wasmtime::format_err!(
                        "{} is not a traffic-router call",
                        call.method()
                    ));
                }
            })
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
                _ => {
                    return Err(wasmtime::format_err!(
                        "{} is not a metric-provider call",
                        call.method()
                    ));
                }
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
                _ => Err(wasmtime::format_err!(
                    "{} is not a condition-evaluator call",
                    call.method()
                )),
            }
        }
    }
}

/// A fresh WASI context: no preopens, no environment, no arguments, stdio
/// into a bounded capture, and every socket address denied (and recorded).
fn wasi_context(capture: &BoundedCapture, record: &SharedRecord) -> wasmtime_wasi::WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(capture.clone())
        .stderr(capture.clone())
        .allow_ip_name_lookup(false);
    // TCP and UDP are "enabled" only so that every attempt reaches the
    // address check below, which refuses all of them and records who tried.
    builder.allow_tcp(true).allow_udp(true);
    let record = record.clone();
    builder.socket_addr_check(move |addr, reason| {
        record_denial(
            &record,
            format!("socket use {reason:?} of {addr}: plugins get no sockets (metric providers may use wasi:http to allow-listed hosts)"),
        );
        Box::pin(async { false })
    });
    builder.build()
}

/// A fresh Store for one call of `plugin`: its WASI context, HTTP hooks,
/// staged cluster view, limiter, and an epoch deadline at `deadline`.
fn new_store(
    plugin: &Plugin,
    namespace: Option<&str>,
    deadline: Instant,
) -> (Store<CallState>, BoundedCapture, SharedRecord) {
    let runtime = &plugin.runtime;
    let limits = &plugin.spec.limits;
    let capture = BoundedCapture::new();
    let record = SharedRecord::default();
    let hooks = PolicyHooks::new(
        plugin.http.clone(),
        record.clone(),
        limits.timeout(),
        limits.http_body_bytes,
    );
    let state = CallState::new(
        wasi_context(&capture, &record),
        hooks,
        limits,
        runtime.settings.call_shares,
        StagedCluster::new(runtime.cluster.clone(), limits.staging()),
        namespace.map(str::to_string),
        plugin.grant.clone(),
        record.clone(),
        deadline,
    );
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|s| &mut s.limiter);
    // Every Store needs a deadline or the guest traps at once. Check the
    // clock each tick; yield so a busy guest never holds a worker thread
    // for more than a tick.
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    store.set_epoch_deadline(1);
    (store, capture, record)
}

/// For benchmarks only: `n` set-weight calls on ONE instance, each timed,
/// to show what per-call isolation costs. Nothing is committed. The
/// controller never reuses instances.
pub(crate) async fn reused_instance_set_weight(
    plugin: &Plugin,
    rollout: &Rollout,
    weight: i32,
    n: usize,
) -> Result<Vec<std::time::Duration>, CallError> {
    let fail = |kind| CallError {
        plugin: plugin.spec.name.clone(),
        method: "set-weight",
        kind,
    };
    let Pre::Router(pre) = &plugin.pre else {
        return Err(fail(CallErrorKind::Host("not a traffic router".into())));
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(3600);
    let (mut store, _capture, _record) = new_store(plugin, Some(&rollout.namespace), deadline);
    let instance = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| fail(CallErrorKind::Host(e.to_string())))?;
    let router = instance.weir_plugin_traffic_router();
    let mut timings = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        match router
            .call_set_weight(&mut store, rollout, weight, &[])
            .await
        {
            Ok(Ok(())) => timings.push(t.elapsed()),
            Ok(Err(reported)) => return Err(fail(CallErrorKind::Reported(reported))),
            Err(e) => return Err(fail(CallErrorKind::Host(e.to_string()))),
        }
    }
    Ok(timings)
}

/// Turns a wasmtime error from a failed call into the host's typed error:
/// from what the host recorded (a per-call limit, the limiter, the clock),
/// never from the error's text.
fn classify(
    error: &wasmtime::Error,
    state: &CallState,
    plugin: &Plugin,
    guest_output: String,
) -> CallErrorKind {
    if let Some(exceeded) = &state.budget.exceeded {
        return CallErrorKind::LimitExceeded {
            limit: exceeded.limit,
            cap: exceeded.cap,
            detail: exceeded.detail.clone(),
        };
    }
    if let Some(hit) = state.limiter.tripped {
        return match hit {
            LimitHit::Memory { requested, cap } => CallErrorKind::MemoryLimit { requested, cap },
            LimitHit::Table { requested, cap } => CallErrorKind::TableLimit { requested, cap },
        };
    }
    if Instant::now() >= state.deadline {
        // Whatever ended it (an epoch, host work cut off), the deadline had passed.
        return CallErrorKind::Timeout {
            limit: plugin.spec.limits.timeout(),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallErrorKind::Timeout {
            limit: plugin.spec.limits.timeout(),
        },
        Some(Trap::StackOverflow) => CallErrorKind::StackOverflow {
            cap_kib: plugin.runtime.settings.max_wasm_stack / 1024,
            guest_output,
        },
        Some(trap) => CallErrorKind::Trap {
            reason: trap.to_string(),
            guest_output,
        },
        None => {
            let reason = error
                .chain()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            CallErrorKind::Trap {
                reason,
                guest_output,
            }
        }
    }
}

/// Tells the observer about a call refused before it ran.
fn refused(plugin: &Plugin, method: &'static str, kind: CallErrorKind) -> CallError {
    if let Some(observer) = plugin.runtime.observer.get() {
        observer.call_finished(
            &plugin.spec.name,
            method,
            kind.name(),
            false,
            Default::default(),
        );
    }
    CallError {
        plugin: plugin.spec.name.clone(),
        method,
        kind,
    }
}

/// Instantiates `plugin` once in a fresh sandbox under its limits, without
/// calling it (what `weir plugin inspect` checks beyond compiling).
pub(crate) async fn trial_instantiation(plugin: &Plugin) -> Result<(), CallErrorKind> {
    let deadline = Instant::now() + plugin.spec.limits.timeout();
    let (mut store, capture, _record) = new_store(plugin, None, deadline);
    let instantiate = async {
        match &plugin.pre {
            Pre::Router(pre) => pre.instantiate_async(&mut store).await.map(drop),
            Pre::Provider(pre) => pre.instantiate_async(&mut store).await.map(drop),
            Pre::Condition(pre) => pre.instantiate_async(&mut store).await.map(drop),
        }
    };
    match tokio::time::timeout_at(deadline.into(), instantiate).await {
        Err(_elapsed) => Err(CallErrorKind::Timeout {
            limit: plugin.spec.limits.timeout(),
        }),
        Ok(Err(error)) => Err(classify(&error, store.data(), plugin, capture.text())),
        Ok(Ok(())) => Ok(()),
    }
}

/// Runs `call` against `plugin` in a fresh sandbox.
pub(crate) async fn execute(plugin: &Plugin, call: Call<'_>) -> Result<Reply, CallError> {
    let method = call.method();
    let fail = |kind| CallError {
        plugin: plugin.spec.name.clone(),
        method,
        kind,
    };
    if let Err(q) = plugin.quarantine.admit() {
        return Err(refused(
            plugin,
            method,
            CallErrorKind::Quarantined {
                faults: q.faults,
                remaining: q.remaining,
                last: q.last,
            },
        ));
    }
    if let Some(target) = call.target()
        && !plugin.admission.take_token(&target, Instant::now())
    {
        return Err(refused(
            plugin,
            method,
            CallErrorKind::RateLimited {
                rate: plugin.admission.rate(),
                target,
            },
        ));
    }
    let runtime = &plugin.runtime;
    // Backpressure: wait for one of the plugin's own slots, then for one of
    // the runtime's, rather than fail. The plugin's share is smaller than
    // the runtime's, so no plugin can hold every slot.
    let _plugin_slot = plugin
        .admission
        .slot()
        .await
        .ok_or_else(|| fail(CallErrorKind::Host("runtime is shutting down".into())))?;
    let _permit = runtime
        .permits
        .acquire()
        .await
        .map_err(|_| fail(CallErrorKind::Host("runtime is shutting down".into())))?;

    let started = Instant::now();
    let limits = &plugin.spec.limits;
    let deadline = started + limits.timeout();
    let (mut store, capture, record) = new_store(plugin, call.namespace(), deadline);

    // Epochs cannot stop a guest blocked in a host call (a sleep, an HTTP
    // wait): the outer timeout can, by dropping the call and its Store.
    let outcome =
        tokio::time::timeout_at(deadline.into(), invoke(&mut store, &plugin.pre, &call)).await;
    let denials = std::mem::take(&mut record.lock().unwrap_or_else(|p| p.into_inner()).denials);

    let result = match outcome {
        _ if !denials.is_empty() => Err(CallErrorKind::CapabilityDenied(denials.join("; "))),
        Err(_elapsed) => Err(CallErrorKind::Timeout {
            limit: limits.timeout(),
        }),
        // The captured output is rendered only when a fault needs it.
        Ok(Err(error)) => Err(classify(&error, store.data(), plugin, capture.text())),
        Ok(Ok(Err(reported))) => match validate::reported(&reported, limits.output_bytes) {
            Ok(()) => Err(CallErrorKind::Reported(reported)),
            Err(kind) => Err(kind),
        },
        Ok(Ok(Ok(reply))) => {
            validate::reply(&reply, limits.output_bytes, || call.weight_total()).map(|()| reply)
        }
    };

    let state = store.into_data();
    plugin
        .stats
        .record_logs(&plugin.spec.name, method, &state.logs);
    let result = match result {
        // The deadline covers the commit: none starts after it, and a
        // backend that writes object by object starts no write after it.
        Ok(_) if Instant::now() >= deadline => Err(CallErrorKind::Timeout {
            limit: limits.timeout(),
        }),
        Ok(reply) => match state.cluster.commit(deadline).await {
            Ok(_) => Ok(reply),
            Err(StagedError::Limit(e)) => {
                let e = super::budget::Exceeded::from(e);
                Err(CallErrorKind::LimitExceeded {
                    limit: e.limit,
                    cap: e.cap,
                    detail: e.detail,
                })
            }
            Err(StagedError::Cluster(e)) => Err(CallErrorKind::WriteConflict(e)),
        },
        Err(kind) => Err(kind), // the staged writes are dropped with the state
    };

    let elapsed = started.elapsed();
    let observer = plugin.runtime.observer.get();
    match result {
        Ok(reply) => {
            plugin.quarantine.record_success();
            plugin.stats.record(method, "ok", elapsed);
            if let Some(observer) = observer {
                observer.call_finished(&plugin.spec.name, method, "ok", false, elapsed);
            }
            Ok(reply)
        }
        Err(kind) => {
            let error = fail(kind);
            plugin.stats.record(method, error.kind.name(), elapsed);
            if let Some(observer) = observer {
                observer.call_finished(
                    &plugin.spec.name,
                    method,
                    error.kind.name(),
                    error.is_fault(),
                    elapsed,
                );
            }
            if error.is_fault() {
                if let Some(period) = plugin.quarantine.record_fault(&error.kind.to_string()) {
                    tracing::warn!(plugin = %plugin.spec.name, ?period, "plugin quarantined after repeated faults");
                    if let Some(observer) = observer {
                        observer.quarantined(&plugin.spec.name);
                    }
                }
            } else if !matches!(error.kind, CallErrorKind::Quarantined { .. }) {
                // An error the plugin reported is a healthy answer.
                plugin.quarantine.record_success();
            }
            Err(error)
        }
    }
}
