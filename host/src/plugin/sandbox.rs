//! One plugin call in its own sandbox: a fresh Store and instance, a
//! deadline, memory and table caps, no ambient authority, bounded output;
//! its cluster writes applied only if it succeeds; the Store dropped after.

use super::call::invoke;
pub(crate) use super::call::{Call, Pre, Reply};
use super::capture::BoundedCapture;
use super::error::{CallError, CallErrorKind, error_chain, reported_parts};
use super::http_policy::{HttpAnswers, PolicyHooks};
use super::recorder::{
    OwnedCall, RECORDING_FORMAT, RecordedOutcome, RecordedPlugin, RecordedRegistration, Recorder,
    Recording, RecordingCluster, RecordingMonotonicClock, RecordingWallClock, ReplayMonotonicClock,
    ReplaySource, ReplayWallClock, Tape, reply_value,
};
use super::runtime::Plugin;
use super::shadow::LiveCall;
use super::state::{CallState, LimitHit, SharedRecord, record_denial};
use super::subject::Rollout;
use super::validate;
use crate::cluster::{Cluster, StagedCluster, StagedError};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

/// A fresh WASI context: no preopens, no environment, no arguments, stdio
/// into a bounded capture, and every socket address denied (and recorded).
fn wasi_context(
    capture: &BoundedCapture,
    record: &SharedRecord,
    answers: &Answers,
) -> wasmtime_wasi::WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    match answers {
        Answers::Live => {}
        Answers::Recorded(tape) => {
            builder
                .wall_clock(RecordingWallClock::new(tape.clone()))
                .monotonic_clock(RecordingMonotonicClock::new(tape.clone()));
        }
        Answers::Replayed(source) => {
            // Random bytes are not recorded: a replay gets a fixed sequence.
            builder
                .wall_clock(ReplayWallClock(source.clone()))
                .monotonic_clock(ReplayMonotonicClock(source.clone()))
                .secure_random(wasmtime_wasi::Deterministic::new(vec![7, 1, 4, 2]))
                .insecure_random(wasmtime_wasi::Deterministic::new(vec![3, 9, 5, 8]))
                .insecure_random_seed(0x5eed);
        }
    }
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

/// Where a call's host answers (cluster reads, HTTP responses, clock
/// readings) come from.
pub(crate) enum Answers {
    /// The live cluster, network and clocks.
    Live,
    /// Live, each answer recorded on the tape (the flight recorder).
    Recorded(Tape),
    /// A recording: nothing outside the process is touched.
    Replayed(Arc<ReplaySource>),
}

/// A fresh Store for one call of `plugin` on `pre`'s Engine: its WASI
/// context, HTTP hooks, staged cluster view, limiter, and an epoch deadline
/// at `deadline`.
fn new_store(
    plugin: &Plugin,
    pre: &Pre,
    namespace: Option<&str>,
    deadline: Instant,
    answers: &Answers,
) -> (Store<CallState>, BoundedCapture, SharedRecord) {
    let runtime = &plugin.runtime;
    let limits = &plugin.spec.limits;
    let capture = BoundedCapture::new();
    let record = SharedRecord::default();
    let (http_answers, cluster): (HttpAnswers, Arc<dyn Cluster>) = match answers {
        Answers::Live => (HttpAnswers::Live, runtime.cluster.clone()),
        Answers::Recorded(tape) => (
            HttpAnswers::Recorded(tape.clone()),
            Arc::new(RecordingCluster::new(runtime.cluster.clone(), tape.clone())),
        ),
        Answers::Replayed(source) => (HttpAnswers::Replayed(source.clone()), source.clone()),
    };
    let hooks = PolicyHooks::new(
        plugin.http.clone(),
        record.clone(),
        limits.timeout(),
        limits.http_body_bytes,
        http_answers,
    );
    let mut state = CallState::new(
        wasi_context(&capture, &record, answers),
        hooks,
        limits,
        runtime.settings.call_shares,
        StagedCluster::new(cluster, limits.staging()),
        namespace.map(str::to_string),
        plugin.grant.clone(),
        record.clone(),
        deadline,
    );
    state.args = plugin.args.clone();
    let mut store = Store::new(pre.engine(), state);
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
        recording: None,
    };
    let current = plugin.current_pre();
    let Pre::Router(pre) = current else {
        return Err(fail(CallErrorKind::Host("not a traffic router".into())));
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(3600);
    let (mut store, _capture, _record) = new_store(
        plugin,
        current,
        Some(&rollout.namespace),
        deadline,
        &Answers::Live,
    );
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
        state.serve_rollout(Some(rollout.object.clone()));
        let t = Instant::now();
        match router
            .call_set_weight(&mut store, &rollout.record(), weight, &[])
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
        recording: None,
    }
}

/// Instantiates `plugin` once in a fresh sandbox under its limits, without
/// calling it (what `weir plugin inspect` checks beyond compiling).
pub(crate) async fn trial_instantiation(plugin: &Plugin) -> Result<(), CallErrorKind> {
    let deadline = Instant::now() + plugin.spec.limits.timeout();
    let pre = plugin.current_pre();
    let (mut store, capture, _record) = new_store(plugin, pre, None, deadline, &Answers::Live);
    let instantiate = async { pre.instantiate_only(&mut store).await };
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
        recording: None,
    };
    if let Err(q) = plugin.quarantine.admit() {
        let mut error = refused(
            plugin,
            method,
            CallErrorKind::Quarantined {
                faults: q.faults,
                remaining: q.remaining,
                last: q.last,
            },
        );
        // The fault behind the quarantine.
        error.recording = plugin.last_recording();
        return Err(error);
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
    let recorder = runtime.recorder.as_deref();
    // A shadow candidate replays this call's answers, so they are taped too.
    let shadow = plugin.shadow.get().filter(|s| s.runs()).cloned();
    let taped = recorder.is_some() || shadow.is_some();
    let answers = if taped {
        Answers::Recorded(Tape::default())
    } else {
        Answers::Live
    };
    let Ran {
        result,
        state,
        capture,
    } = run_in_sandbox(plugin, &call, &answers, deadline).await;
    plugin
        .stats
        .record_logs(&plugin.spec.name, method, &state.logs);
    // What the call staged, kept before the commit takes it (a commit can
    // still fail the call, and a failed call's writes are recorded).
    let staged = taped.then(|| state.cluster.pending_writes());
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
    let mut recording = None;
    if let Answers::Recorded(tape) = answers {
        let n = plugin
            .calls_seen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fault = result.as_ref().is_err_and(CallErrorKind::is_fault);
        let reason = recorder.and_then(|r| {
            if fault {
                Some("fault")
            } else if r.samples(n) {
                Some("sample")
            } else {
                None
            }
        });
        // Init calls run before the candidate exists; no others are skipped.
        let slot = shadow.as_ref().and_then(|s| s.slot(method));
        // A call neither kept nor shadowed drops its tape here, unread.
        if reason.is_some() || slot.is_some() {
            let (mut taped_answers, truncated) = tape.take();
            let outcome = recorded_outcome(&result);
            let staged = staged.unwrap_or_default();
            if let (Some(shadow), Some(slot)) = (&shadow, slot) {
                shadow.shadow(
                    slot,
                    LiveCall {
                        call: OwnedCall::of(&call),
                        // Kept for the recording too only when one is made.
                        answers: if reason.is_some() {
                            taped_answers.clone()
                        } else {
                            std::mem::take(&mut taped_answers)
                        },
                        outcome: outcome.clone(),
                        writes: staged.clone(),
                        elapsed: started.elapsed(),
                    },
                );
            }
            if let (Some(recorder), Some(reason)) = (recorder, reason) {
                recording = keep_recording(
                    recorder,
                    plugin,
                    &call,
                    reason,
                    outcome,
                    RecordedRun {
                        answers: taped_answers,
                        truncated,
                        staged,
                        logs: log_lines(&state.logs),
                        guest_output: capture.text(),
                        elapsed: started.elapsed(),
                    },
                );
            }
        }
    }

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
            let mut error = fail(kind);
            if recording.is_some() {
                *plugin
                    .last_recording
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = recording.clone();
            }
            error.recording = recording;
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

/// What a call did in its sandbox, before any commit.
struct Ran {
    result: Result<Reply, CallErrorKind>,
    state: CallState,
    /// What the guest printed (rendered only when a recording needs it).
    capture: BoundedCapture,
}

/// Makes `call` in a fresh Store with its host answers from `answers`,
/// and checks what came back; commits nothing.
async fn run_in_sandbox(
    plugin: &Plugin,
    call: &Call<'_>,
    answers: &Answers,
    deadline: Instant,
) -> Ran {
    let limits = &plugin.spec.limits;
    let pre = plugin.current_pre();
    let (mut store, capture, record) = new_store(plugin, pre, call.namespace(), deadline, answers);
    store
        .data_mut()
        .serve_rollout(call.rollout().map(|r| r.object.clone()));

    // Epochs cannot stop a guest blocked in a host call (a sleep, an HTTP
    // wait): the outer timeout can, by dropping the call and its Store.
    let outcome = tokio::time::timeout_at(deadline.into(), invoke(&mut store, pre, call)).await;
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
    Ran {
        result,
        state: store.into_data(),
        capture,
    }
}

/// A call's log lines as recorded (`level: message`).
fn log_lines(logs: &super::state::LogBuffer) -> Vec<String> {
    logs.lines
        .iter()
        .map(|(level, line)| format!("{}: {line}", level_name(*level)))
        .collect()
}

fn level_name(level: super::bindings::log::Level) -> &'static str {
    use super::bindings::log::Level;
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// What a recorded call did, for its recording.
struct RecordedRun {
    answers: Vec<super::recorder::HostAnswer>,
    truncated: bool,
    staged: Vec<crate::cluster::Write>,
    logs: Vec<String>,
    guest_output: String,
    elapsed: std::time::Duration,
}

/// The outcome of a call as a recording states it.
fn recorded_outcome(result: &Result<Reply, CallErrorKind>) -> RecordedOutcome {
    match result {
        Ok(reply) => RecordedOutcome {
            kind: "ok".into(),
            fault: false,
            reply: Some(reply_value(reply)),
            error: None,
        },
        Err(kind) => RecordedOutcome {
            kind: match kind {
                CallErrorKind::Reported(r) => reported_parts(r).0.to_string(),
                other => other.name().to_string(),
            },
            fault: kind.is_fault(),
            reply: None,
            error: Some(kind.to_string()),
        },
    }
}

/// Queues a recording of the call (kept for `reason`: `fault` or
/// `sample`); returns the path it will be written to.
fn keep_recording(
    recorder: &Recorder,
    plugin: &Plugin,
    call: &Call<'_>,
    reason: &str,
    outcome: RecordedOutcome,
    run: RecordedRun,
) -> Option<String> {
    let recording = Recording {
        format: RECORDING_FORMAT.into(),
        id: recorder.next_id(call.method(), &outcome.kind),
        recorded_at: crate::cluster::memory::now_rfc3339(),
        reason: reason.into(),
        plugin: RecordedPlugin {
            name: plugin.spec.name.clone(),
            location: plugin.spec.location.clone(),
            sha256: plugin.sha256.clone(),
            kind: plugin.kind.label().into(),
        },
        registration: RecordedRegistration {
            args: plugin.spec.args.clone(),
            grant: plugin.spec.grant.clone(),
            http: plugin.spec.http.clone(),
            limits: plugin.spec.limits.clone(),
        },
        call: OwnedCall::of(call),
        target: call.target(),
        answers: run.answers,
        answers_truncated: run.truncated,
        outcome,
        staged_writes: run.staged,
        logs: run.logs,
        guest_output: run.guest_output,
        elapsed_micros: u64::try_from(run.elapsed.as_micros()).unwrap_or(u64::MAX),
        redactions: vec![],
    };
    recorder
        .keep(recording, super::recorder::current_secrets())
        .map(|path| path.display().to_string())
}

/// What a replayed call did.
pub(crate) struct Replayed {
    /// Its outcome, as a recording states one.
    pub(crate) outcome: RecordedOutcome,
    /// The writes it staged (never applied).
    pub(crate) staged_writes: Vec<crate::cluster::Write>,
    /// Its log lines.
    pub(crate) logs: Vec<String>,
    /// What it printed.
    pub(crate) guest_output: String,
}

/// Makes `call` again in a fresh sandbox with every host answer from
/// `source`; nothing is committed, counted or quarantined.
pub(crate) async fn replay_call(
    plugin: &Plugin,
    call: &Call<'_>,
    source: Arc<ReplaySource>,
) -> Replayed {
    let deadline = Instant::now() + plugin.spec.limits.timeout();
    let ran = run_in_sandbox(plugin, call, &Answers::Replayed(source), deadline).await;
    Replayed {
        outcome: recorded_outcome(&ran.result),
        logs: log_lines(&ran.state.logs),
        staged_writes: ran.state.cluster.pending_writes(),
        guest_output: ran.capture.text(),
    }
}
