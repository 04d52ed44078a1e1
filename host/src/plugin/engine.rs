//! The wasmtime Engines plugins run on (optimised code from Cranelift, and
//! baseline code from Winch while Cranelift works), and the epoch ticker
//! that enforces call deadlines on both.

use super::state::CallShares;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy};

/// Which compilers turn a plugin's wasm into machine code when no compiled
/// code is on hand (neither bundled into `weir` nor in the precompiled
/// cache): `weir run --compiler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compiler {
    /// Winch (wasmtime's single-pass baseline compiler) first, so the
    /// plugin is ready about five times sooner; Cranelift then compiles it
    /// again on one background thread at the lowest CPU priority, caches
    /// that code, and the plugin's next calls run on it.
    #[default]
    Tiered,
    /// Cranelift only: the load waits for optimised code.
    Cranelift,
    /// Winch only (its code is cached too): the quickest start and the
    /// least compiling, for slower calls.
    Winch,
}

impl Compiler {
    /// The name `weir run --compiler` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compiler::Tiered => "tiered",
            Compiler::Cranelift => "cranelift",
            Compiler::Winch => "winch",
        }
    }
}

impl std::str::FromStr for Compiler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tiered" => Ok(Compiler::Tiered),
            "cranelift" => Ok(Compiler::Cranelift),
            "winch" => Ok(Compiler::Winch),
            other => Err(format!(
                "unknown compiler {other:?}: use tiered, cranelift or winch"
            )),
        }
    }
}

/// Engine-wide settings. Per-plugin limits live in [`super::Limits`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Wasm stack cap of every call (wasmtime sets it per Engine, not per Store).
    pub max_wasm_stack: usize,
    /// The largest linear memory any plugin may be granted; sizes the pool.
    pub max_memory_bytes: usize,
    /// Calls that may run at once; more wait for a slot (backpressure).
    pub max_concurrent_calls: usize,
    /// Epoch tick: how often deadlines are checked and running guests yield.
    pub tick: Duration,
    /// Use the pooling instance allocator (fast instantiation).
    pub pooling: bool,
    /// Core instances, memories and tables one call may create: the pool
    /// holds this share for every call slot, so no call can take the slots
    /// another needs.
    pub call_shares: CallShares,
    /// How much of a pooled slot is reset in place between calls.
    pub keep_resident: KeepResident,
    /// Which compilers compile a plugin that has no compiled code on hand.
    pub compiler: Compiler,
}

/// How much of a pooled slot is reset by rewriting it in place between
/// calls (the rest is handed back to the kernel, and faults in again).
/// Measured in docs/benchmarks.md: a fresh call's p50 went from 39 to 26 µs.
#[derive(Debug, Clone, Copy)]
pub struct KeepResident {
    /// Of each linear memory: covers a Rust guest's 1 MiB shadow stack and
    /// the first MiB of its heap.
    pub memory_bytes: usize,
    /// Of each table.
    pub table_bytes: usize,
}

impl Default for KeepResident {
    fn default() -> Self {
        KeepResident {
            memory_bytes: 2 << 20,
            table_bytes: 64 << 10,
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_wasm_stack: 512 * 1024,
            max_memory_bytes: 512 << 20,
            max_concurrent_calls: 16,
            tick: Duration::from_millis(5),
            pooling: true,
            call_shares: CallShares {
                instances: 32,
                memories: 4,
                tables: 16,
            },
            keep_resident: KeepResident::default(),
            compiler: Compiler::default(),
        }
    }
}

/// Set (to anything) to write a perf map of JIT-compiled guest code, so
/// `perf report` names the guest functions a profile lands in
/// (docs/benchmarks.md).
pub const PERF_MAP_ENV: &str = "WEIR_PERF_MAP";

/// Builds the Engine that runs optimised code (Cranelift's): epoch
/// interruption, a bounded wasm stack run on fiber stacks with headroom for
/// host frames, no WASIp3 concurrency (cheaper calls), and the pooling
/// allocator with copy-on-write memory images. Bundled and cached code is
/// compiled for it.
pub fn build_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let mut config = runtime_config(settings);
    config.strategy(Strategy::Cranelift);
    config.parallel_compilation(true);
    Engine::new(&config)
}

/// Builds the Engine that runs baseline code (Winch's), with the same
/// limits and pool as [`build_engine`]'s.
pub fn build_baseline_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let mut config = runtime_config(settings);
    config.strategy(Strategy::Winch);
    config.parallel_compilation(true);
    Engine::new(&config)
}

/// Builds the Engine the background optimiser compiles with: Cranelift with
/// [`build_engine`]'s compatibility hash (its code loads there), but
/// compiling on the calling thread only, so it keeps to its low-priority
/// thread, and running nothing (no pool).
pub fn build_optimizer_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let mut config = code_config(settings);
    config.strategy(Strategy::Cranelift);
    config.parallel_compilation(false);
    Engine::new(&config)
}

/// What decides the compiled code (and so the compatibility hash).
fn code_config(settings: &EngineSettings) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(settings.max_wasm_stack);
    // Guests run on async fiber stacks: leave room above the wasm stack for
    // the host functions they call.
    config.async_stack_size(settings.max_wasm_stack + (1 << 20));
    config.concurrency_support(false);
    config.memory_init_cow(true);
    if std::env::var_os(PERF_MAP_ENV).is_some() {
        // Names JIT-compiled guest functions for `perf` (/tmp/perf-PID.map).
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// [`code_config`] plus the instance pool calls run in.
fn runtime_config(settings: &EngineSettings) -> Config {
    let mut config = code_config(settings);
    if settings.pooling {
        let slots = u32::try_from(settings.max_concurrent_calls.max(1)).unwrap_or(u32::MAX);
        let share = |n: usize| slots.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
        let shares = settings.call_shares;
        let mut pool = PoolingAllocationConfig::new();
        // Every call slot gets its full share of the pool (the Store's
        // limiter holds each call to that share), so the pool can never
        // run out while a call waits for nothing but a call slot.
        pool.total_component_instances(slots.saturating_mul(2))
            .total_core_instances(share(shares.instances))
            .total_memories(share(shares.memories))
            .total_tables(share(shares.tables))
            .total_stacks(slots.saturating_mul(2))
            .max_memory_size(settings.max_memory_bytes)
            .table_elements(200_000)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(4 << 20)
            .max_memories_per_component(u32::try_from(shares.memories).unwrap_or(u32::MAX))
            .max_tables_per_component(u32::try_from(shares.tables).unwrap_or(u32::MAX))
            .max_unused_warm_slots(slots.saturating_mul(2));
        // A slot a call used is reset for the next call: its dirty pages,
        // found by Linux's PAGEMAP_SCAN (6.7+; elsewhere the kernel is asked
        // to drop them), are rewritten in place up to these sizes, rather
        // than dropped and faulted in again. Either way the next instance
        // sees only its image: tests/tests/containment.rs checks it.
        pool.pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(settings.keep_resident.memory_bytes)
            .table_keep_resident(settings.keep_resident.table_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Increments the Engines' epochs every tick until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts a ticker thread for `engines`.
    pub fn start(engines: Vec<Engine>, tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The optimiser's code is loaded into the runtime's Engine: wasmtime
    /// refuses it unless both hash alike.
    #[test]
    fn the_optimizer_compiles_code_the_runtime_engine_accepts() {
        let settings = EngineSettings::default();
        let runtime = build_engine(&settings).expect("runtime engine");
        let optimizer = build_optimizer_engine(&settings).expect("optimizer engine");
        let baseline = build_baseline_engine(&settings).expect("baseline engine");
        let hash = |e: &Engine| super::super::bundle::engine_hash(e);
        assert_eq!(hash(&runtime), hash(&optimizer));
        assert_ne!(
            hash(&runtime),
            hash(&baseline),
            "Winch code is not Cranelift's"
        );
        // The empty component (header only: magic, version 0x0d, layer 1).
        let empty = b"\0asm\x0d\x00\x01\x00";
        let code = optimizer.precompile_component(empty).expect("compile");
        // SAFETY: compiled just now, by this process.
        unsafe { wasmtime::component::Component::deserialize(&runtime, &code) }
            .expect("the runtime engine loads the optimizer's code");
    }

    #[test]
    fn compiler_names_round_trip() {
        for c in [Compiler::Tiered, Compiler::Cranelift, Compiler::Winch] {
            assert_eq!(c.name().parse::<Compiler>(), Ok(c));
        }
        assert!(
            "lightbeam"
                .parse::<Compiler>()
                .unwrap_err()
                .contains("tiered")
        );
    }
}
