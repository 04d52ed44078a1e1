//! One plugin call in its own sandbox: a fresh Store and instance, a
//! deadline, memory and table caps, no ambient authority, bounded output;
//! its cluster writes applied only if it succeeds; the Store dropped after.

use super::bindings::types::Rollout;
use super::call::invoke;
pub(crate) use super::call::{Call, Pre, Reply};
use super::capture::BoundedCapture;
use super::error::{CallError, CallErrorKind, error_chain};
use super::http_policy::PolicyHooks;
use super::runtime::Plugin;
use super::state::{CallState, LimitHit, SharedRecord, record_denial};
use super::validate;
use crate::cluster::{StagedCluster, StagedError};
use std::time::Instant;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

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
    let mut state = CallState::new(
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
    state.args = plugin.args.clone();
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
        // Each timed call gets a whole host-call budget and an empty staged
        // view, as a fresh call does.
        let limits = &plugin.spec.limits;
        let state = store.data_mut();
        state.budget = super::budget::CallBudget::new(limits);
        state.cluster = StagedCluster::new(plugin.runtime.cluster.clone(), limits.staging());
        let t = Instant::now();
        match router
            .call_set_weight(&mut store, rollout, weight, &[])
            .await
        {
            Ok(Ok(())) => timings.push(t.elapsed()),
            Ok(Err(reported)) => return Err(fail(CallErrorKind::Reported(reported))),
            Err(e) => return Err(fail(CallErrorKind::Host(error_chain(&e)))),
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
        None => CallErrorKind::Trap {
            reason: error_chain(error),
            guest_output,
        },
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
    let instantiate = async { plugin.pre.instantiate_only(&mut store).await };
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
