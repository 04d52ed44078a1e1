//! The wasmtime Engine every plugin runs on, and the epoch ticker that
//! enforces call deadlines.

use super::state::CallShares;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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
        }
    }
}

/// Set (to anything) to write a perf map of JIT-compiled guest code, so
/// `perf report` names the guest functions a profile lands in
/// (docs/benchmarks.md).
pub const PERF_MAP_ENV: &str = "WEIR_PERF_MAP";

/// Builds the Engine: epoch interruption, a bounded wasm stack run on fiber
/// stacks with headroom for host frames, no WASIp3 concurrency (cheaper
/// calls), and the pooling allocator with copy-on-write memory images.
pub fn build_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(settings.max_wasm_stack);
    // Guests run on async fiber stacks: leave room above the wasm stack for
    // the host functions they call.
    config.async_stack_size(settings.max_wasm_stack + (1 << 20));
    config.concurrency_support(false);
    config.memory_init_cow(true);
    config.parallel_compilation(true);
    if std::env::var_os(PERF_MAP_ENV).is_some() {
        // Names JIT-compiled guest functions for `perf` (/tmp/perf-PID.map).
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
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
    Engine::new(&config)
}

/// Increments the Engine's epoch every tick until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts a ticker thread for `engine`.
    pub fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
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
