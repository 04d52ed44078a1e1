//! Tiered compilation: a plugin compiled by Winch (baseline code, ready
//! about five times sooner) is compiled again by Cranelift on one
//! background thread at the lowest CPU priority; the optimised code is
//! cached, and each plugin built on the baseline code moves its next calls
//! to it ([`Code::optimized`]). Calls in flight finish on the code they
//! started on: every call instantiates afresh, so nothing is carried over.

use super::cache::PrecompiledCache;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use tokio::sync::Notify;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Which compiler's code a plugin's calls run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeTier {
    /// Winch's single-pass code (while Cranelift works, or under
    /// `--compiler winch`).
    Baseline,
    /// Cranelift's optimised code.
    Optimized,
}

impl CodeTier {
    /// Its name in logs and `weir plugin inspect`.
    pub fn label(self) -> &'static str {
        match self {
            CodeTier::Baseline => "baseline (Winch)",
            CodeTier::Optimized => "optimized (Cranelift)",
        }
    }
}

/// A component's compiled code: what it was first loaded with, and the
/// optimised code once the background compile of baseline code is done.
pub(crate) struct Code {
    first: Component,
    first_tier: CodeTier,
    optimized: OnceLock<Component>,
}

impl Code {
    /// Code that is final as loaded.
    pub(crate) fn new(component: Component, tier: CodeTier) -> Arc<Self> {
        Arc::new(Code {
            first: component,
            first_tier: tier,
            optimized: OnceLock::new(),
        })
    }

    /// The code it was loaded with.
    pub(crate) fn first(&self) -> &Component {
        &self.first
    }

    /// The tier of [`Self::first`].
    pub(crate) fn first_tier(&self) -> CodeTier {
        self.first_tier
    }

    /// The optimised code that replaced baseline code, once there is some.
    pub(crate) fn optimized(&self) -> Option<&Component> {
        self.optimized.get()
    }
}

/// Compiles baseline code again with Cranelift, one component at a time,
/// on its own thread at the lowest CPU priority (so it never delays a load
/// or a call for long), and hands the result over.
pub(crate) struct Optimizer {
    jobs: std::sync::mpsc::Sender<Job>,
    progress: Arc<Progress>,
}

/// Jobs queued or running, and a wake-up when that falls to zero.
#[derive(Default)]
struct Progress {
    pending: AtomicUsize,
    idle: Notify,
}

impl Progress {
    fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

struct Job {
    wasm: Vec<u8>,
    sha256: String,
    /// Dropped with the last plugin using it: then the job is skipped.
    code: Weak<Code>,
}

impl Optimizer {
    /// Starts the optimiser thread: it compiles with `compiler` (see
    /// `build_optimizer_engine`), loads the code into `runtime` (the Engine
    /// calls run on), and writes it to `cache`. The thread ends when the
    /// optimiser is dropped, after the job it is on.
    pub(crate) fn start(
        compiler: Engine,
        runtime: Engine,
        cache: Option<PrecompiledCache>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let progress = Arc::new(Progress::default());
        let shared = progress.clone();
        std::thread::Builder::new()
            .name("weir-optimize".into())
            .spawn(move || {
                lowest_priority();
                for job in queue {
                    if let Some(code) = job.code.upgrade() {
                        optimize(&compiler, &runtime, cache.as_ref(), &job, &code);
                    }
                    shared.done();
                }
            })?;
        Ok(Optimizer { jobs, progress })
    }

    /// Queues `code` (baseline code compiled from `wasm`) for Cranelift.
    pub(crate) fn submit(&self, wasm: Vec<u8>, sha256: &str, code: &Arc<Code>) {
        self.progress.pending.fetch_add(1, Ordering::AcqRel);
        let job = Job {
            wasm,
            sha256: sha256.to_string(),
            code: Arc::downgrade(code),
        };
        if self.jobs.send(job).is_err() {
            // The thread is gone (it could not start, or panicked): the
            // plugin keeps its baseline code.
            self.progress.done();
        }
    }

    /// Waits until every queued compile has finished.
    pub(crate) async fn idle(&self) {
        loop {
            let woken = self.progress.idle.notified();
            if self.progress.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            woken.await;
        }
    }
}

/// One job: compile, load into the runtime's Engine, cache, hand over.
fn optimize(
    compiler: &Engine,
    runtime: &Engine,
    cache: Option<&PrecompiledCache>,
    job: &Job,
    code: &Code,
) {
    let started = std::time::Instant::now();
    let compiled = match compiler.precompile_component(&job.wasm) {
        Ok(compiled) => compiled,
        Err(e) => {
            tracing::warn!(sha256 = %job.sha256, error = %super::error::error_chain(&e), "Cranelift could not compile a plugin Winch compiled; it keeps its baseline code");
            return;
        }
    };
    // SAFETY: the code was compiled just now, in this process, by an Engine
    // with the runtime Engine's compatibility hash (wasmtime checks it).
    let component = match unsafe { Component::deserialize(runtime, &compiled) } {
        Ok(component) => component,
        Err(e) => {
            tracing::warn!(sha256 = %job.sha256, error = %super::error::error_chain(&e), "optimised code refused by the runtime engine; the plugin keeps its baseline code");
            return;
        }
    };
    if let Some(cache) = cache
        && let Err(e) = cache.store_code(runtime, &job.sha256, &compiled)
    {
        tracing::warn!(error = %e, "could not write the precompiled cache entry");
    }
    let _ = code.optimized.set(component);
    tracing::info!(sha256 = %job.sha256, took = ?started.elapsed(), "optimised code ready; the plugin's next calls run on it");
}

/// Puts the calling thread at the lowest CPU priority (Linux's nice values
/// are per thread), so the optimiser only takes what loads and calls leave.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; on Linux `who == 0`
    // with PRIO_PROCESS names the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}
