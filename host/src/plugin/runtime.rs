//! The plugin runtime: the Engines (optimised code, and baseline code while
//! the optimiser works), a precompiled cache, linkers for the worlds (with
//! and without `wasi:http`), and the loading of plugins into
//! pre-instantiated templates.

use super::admission::Admission;
use super::bindings::condition::ConditionEvaluatorPre;
use super::bindings::provider::MetricProviderPluginPre;
use super::bindings::router::TrafficRouterPluginPre;
use super::bindings::step::StepPluginPre;
use super::bindings::{cluster, log, registration, rollout_object, types, v0_1, v0_2};
use super::bundle::Bundle;
use super::cache::{CacheOutcome, PrecompiledCache};
use super::compile::{CodeSource, Compiled};
use super::compiled::SharedComponents;
use super::condition::ConditionPlugin;
use super::digest_memo::DigestMemo;
use super::engine::{
    Compiler, EngineSettings, EpochTicker, build_baseline_engine, build_engine,
    build_optimizer_engine,
};
use super::error::CallError;
use super::error::{LoadError, LoadErrorKind, error_chain};
use super::inspect::Inspection;
use super::limits::Limits;
use super::limits::{FaultPolicy, Grant, HttpPolicy};
use super::provider::MetricProvider;
use super::quarantine::Quarantine;
use super::recorder::{Recorder, RecorderConfig};
use super::router::TrafficRouter;
use super::sandbox::{Call, Pre, execute, trial_instantiation};
use super::shadow::{Shadow, ShadowReport, ShadowSpec};
use super::source::{Location, Wasm, check_pin, fetch, read_wasm_file};
use super::state::CallState;
use super::stats::PluginStats;
use super::step::StepPlugin;
use super::tiers::{Code, CodeTier, Optimizer};
use super::world::{Contract, PluginKind, Surface};
use crate::cluster::Cluster;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

/// How an operator registers a plugin (Argo's `PluginItem` plus Weir's
/// limits, grant and HTTP allow-list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSpec {
    /// `<namespace>/<name>`, as Rollouts refer to it.
    pub name: String,
    /// A path, `file://...`, or `http(s)://...`. Left empty in a registration
    /// that only configures one of the shipped plugins (`istio`, `web`, ...).
    #[serde(default)]
    pub location: String,
    /// Optional sha256 pin (64 hex digits).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Passed to the plugin's `init`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Per-call limits.
    #[serde(default)]
    pub limits: Limits,
    /// Cluster access.
    #[serde(default)]
    pub grant: Grant,
    /// Outgoing HTTP (metric providers and step plugins).
    #[serde(default)]
    pub http: HttpPolicy,
    /// What to do on repeated faults.
    #[serde(default)]
    pub fault_policy: FaultPolicy,
    /// Step plugins only (Argo's `disabled`): the plugin is not called and
    /// its steps complete at once, recorded as disabled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// A candidate build run beside this one on live calls, its writes
    /// compared and never applied (see docs/operating.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
}

impl PluginSpec {
    /// A spec with default limits, no grant and no HTTP.
    pub fn new(name: impl Into<String>, location: impl Into<String>) -> Self {
        PluginSpec {
            name: name.into(),
            location: location.into(),
            sha256: None,
            args: vec![],
            limits: Limits::default(),
            grant: Grant::default(),
            http: HttpPolicy::default(),
            fault_policy: FaultPolicy::default(),
            disabled: false,
            shadow: None,
        }
    }
}

/// Shadow runs (see [`ShadowSpec`]) in flight at once, runtime-wide: a
/// live call whose shadow finds none free is not shadowed (counted as
/// dropped), so candidates never take more than this share of the CPU.
pub const SHADOW_SLOTS: usize = 1;

/// The runtime itself could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct RuntimeError(pub String);

/// Settings of the runtime as a whole.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Engine-wide settings.
    pub engine: EngineSettings,
    /// Where precompiled components are kept; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The shipped plugins bundled into the executable, if any: the
    /// `bundled:` locations, and compiled code that is used before the cache.
    pub bundle: Option<Arc<Bundle>>,
    /// The flight recorder: where faulted (and sampled) calls are recorded;
    /// `None` records nothing.
    pub recorder: Option<RecorderConfig>,
}

impl RuntimeConfig {
    /// Defaults with the cache in its default directory, and the plugins
    /// bundled into this executable, if it has any.
    pub fn with_default_cache() -> Self {
        RuntimeConfig {
            cache_dir: Some(PrecompiledCache::default_dir()),
            bundle: Bundle::of_current_exe().map(Arc::new),
            ..Self::default()
        }
    }
}

/// Told about every finished plugin call (the controller's `/metrics`).
pub trait CallObserver: Send + Sync {
    /// A call ended with `outcome` (`ok` or an error kind such as `timeout`),
    /// a sandbox fault or not, after `elapsed` (zero when it failed fast in
    /// quarantine).
    fn call_finished(
        &self,
        plugin: &str,
        method: &str,
        outcome: &str,
        fault: bool,
        elapsed: std::time::Duration,
    );
    /// `plugin` was put in quarantine.
    fn quarantined(&self, plugin: &str);
    /// A shadow run of `plugin`'s candidate on a live `method` call ended:
    /// `agree`, `disagree`, or `dropped` (no shadow slot was free).
    fn shadow_finished(
        &self,
        plugin: &str,
        method: &str,
        result: &str,
        elapsed: std::time::Duration,
    ) {
        let _ = (plugin, method, result, elapsed);
    }
}

/// The shared part of the runtime.
pub(crate) struct RuntimeInner {
    pub(crate) observer: std::sync::OnceLock<Arc<dyn CallObserver>>,
    pub(crate) engine: Engine,
    pub(crate) settings: EngineSettings,
    pub(crate) cluster: Arc<dyn Cluster>,
    pub(crate) permits: Semaphore,
    compile_slot: Arc<Semaphore>,
    cache: Option<PrecompiledCache>,
    /// Plugin files' digests by identity, beside the cache.
    digests: Option<DigestMemo>,
    bundle: Option<Arc<Bundle>>,
    /// Components already compiled in this process, by digest.
    compiled: SharedComponents,
    /// The flight recorder, if recording.
    pub(crate) recorder: Option<Arc<Recorder>>,
    /// Shadow runs in flight at once (past it they are dropped).
    shadow_slots: Arc<Semaphore>,
    /// Every contract version's host interfaces and WASI, no HTTP.
    plain_linker: Linker<CallState>,
    /// The same plus `wasi:http` (metric providers, step plugins).
    http_linker: Linker<CallState>,
    /// The Engine of Winch's baseline code and its linkers, unless the
    /// compiler is Cranelift alone.
    baseline: Option<Linkers>,
    /// Compiles baseline code again with Cranelift (tiered compiler only).
    optimizer: Option<Optimizer>,
    _ticker: EpochTicker,
}

/// An Engine and its two linkers.
struct Linkers {
    engine: Engine,
    plain: Linker<CallState>,
    http: Linker<CallState>,
}

impl Linkers {
    fn new(engine: Engine) -> wasmtime::Result<Self> {
        Ok(Linkers {
            plain: linker(&engine, false)?,
            http: linker(&engine, true)?,
            engine,
        })
    }
}

/// A loaded plugin: its template and its history.
pub(crate) struct Plugin {
    pub(crate) spec: PluginSpec,
    pub(crate) kind: PluginKind,
    pub(crate) contract: Contract,
    pub(crate) sha256: String,
    /// Its compiled code (shared by registrations of one component).
    pub(crate) code: Arc<Code>,
    /// Pre-instantiated on `code`'s first code.
    pub(crate) pre: Pre,
    /// Pre-instantiated on the optimised code that replaced baseline code,
    /// at the first call after it was ready (`None`: it could not be).
    optimized_pre: std::sync::OnceLock<Option<Pre>>,
    pub(crate) grant: Arc<Grant>,
    /// The registration's `args`, handed out on every call.
    pub(crate) args: Arc<Vec<String>>,
    pub(crate) http: Arc<HttpPolicy>,
    pub(crate) quarantine: Quarantine,
    pub(crate) admission: Admission,
    pub(crate) stats: PluginStats,
    pub(crate) cache_outcome: CacheOutcome,
    pub(crate) runtime: Arc<RuntimeInner>,
    /// Calls made so far (the recorder's sampling counts them).
    pub(crate) calls_seen: std::sync::atomic::AtomicU64,
    /// The registration's shadow candidate, once loaded (or failed).
    pub(crate) shadow: std::sync::OnceLock<Arc<Shadow>>,
    /// The recording of the last faulted call, which calls refused by
    /// quarantine point at (the fault behind the quarantine).
    pub(crate) last_recording: std::sync::Mutex<Option<String>>,
}

/// Loads plugins and runs their calls in per-call sandboxes.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<RuntimeInner>,
}

/// A linker serving every contract version's host interfaces (a component
/// imports one of them), WASI p2, and `wasi:http` when `http` is set.
fn linker(engine: &Engine, http: bool) -> wasmtime::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    types::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    log::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    registration::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    cluster::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    rollout_object::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    {
        use v0_2::router::weir::plugin as v02;
        v02::types::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
        v02::log::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
        v02::registration::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
        v02::cluster::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    }
    // 0.1's `types` has no functions; its instance only has to exist.
    linker.instance("weir:plugin/types@0.1.0")?;
    v0_1::router::weir::plugin::log::add_to_linker::<CallState, HasSelf<CallState>>(
        &mut linker,
        |s| s,
    )?;
    v0_1::router::weir::plugin::cluster::add_to_linker::<CallState, HasSelf<CallState>>(
        &mut linker,
        |s| s,
    )?;
    if http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    }
    Ok(linker)
}

impl PluginRuntime {
    /// Builds the Engine, the linkers and the cache, and starts the epoch ticker.
    pub fn new(config: RuntimeConfig, cluster: Arc<dyn Cluster>) -> Result<Self, RuntimeError> {
        let host_err = RuntimeError;
        let engine = build_engine(&config.engine).map_err(|e| host_err(format!("engine: {e}")))?;
        let cache = match &config.cache_dir {
            Some(dir) => match PrecompiledCache::new(dir) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "precompiled cache disabled");
                    None
                }
            },
            None => None,
        };
        let plain_linker = linker(&engine, false).map_err(|e| host_err(format!("linker: {e}")))?;
        let http_linker = linker(&engine, true).map_err(|e| host_err(format!("linker: {e}")))?;
        let compiler = config.engine.compiler;
        let baseline = match compiler {
            Compiler::Cranelift => None,
            Compiler::Tiered | Compiler::Winch => Some(
                build_baseline_engine(&config.engine)
                    .and_then(Linkers::new)
                    .map_err(|e| host_err(format!("baseline engine: {e}")))?,
            ),
        };
        let optimizer = match compiler {
            Compiler::Tiered => Some(
                build_optimizer_engine(&config.engine)
                    .map_err(|e| host_err(format!("optimizer engine: {e}")))
                    .and_then(|compiler| {
                        Optimizer::start(compiler, engine.clone(), cache.clone())
                            .map_err(|e| host_err(format!("optimizer thread: {e}")))
                    })?,
            ),
            Compiler::Cranelift | Compiler::Winch => None,
        };
        let mut ticked = vec![engine.clone()];
        ticked.extend(baseline.as_ref().map(|b| b.engine.clone()));
        let ticker = EpochTicker::start(ticked, config.engine.tick)
            .map_err(|e| host_err(format!("epoch ticker: {e}")))?;
        // A recorder that cannot start leaves the controller running, unrecorded.
        let recorder = config
            .recorder
            .as_ref()
            .and_then(|recorder| match Recorder::start(recorder.clone()) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::warn!(dir = %recorder.dir.display(), error = %e, "flight recorder disabled: cannot use its directory");
                    None
                }
            });
        Ok(PluginRuntime {
            inner: Arc::new(RuntimeInner {
                observer: std::sync::OnceLock::new(),
                permits: Semaphore::new(config.engine.max_concurrent_calls.max(1)),
                compile_slot: Arc::new(Semaphore::new(1)),
                engine,
                settings: config.engine,
                cluster,
                digests: cache.as_ref().map(|c| DigestMemo::in_cache(c.dir())),
                cache,
                bundle: config.bundle.clone(),
                compiled: SharedComponents::default(),
                recorder,
                shadow_slots: Arc::new(Semaphore::new(SHADOW_SLOTS)),
                plain_linker,
                http_linker,
                baseline,
                optimizer,
                _ticker: ticker,
            }),
        })
    }

    /// Reads the component at `location` (within `max_bytes`): a file, a
    /// URL, or a component of this executable's bundle.
    async fn fetch(&self, location: &str, max_bytes: usize) -> Result<Vec<u8>, LoadErrorKind> {
        match (Location::parse(location)?, &self.inner.bundle) {
            (Location::Bundled(file), Some(bundle)) => {
                let bundle = bundle.clone();
                tokio::task::spawn_blocking(move || bundle.component(&file, max_bytes))
                    .await
                    .map_err(|e| LoadErrorKind::Host(format!("bundle read: {e}")))?
            }
            (location, _) => fetch(&location, max_bytes).await,
        }
    }

    /// Installs the observer told about every call; only the first one set
    /// is kept (returns false when one was set already).
    pub fn set_observer(&self, observer: Arc<dyn CallObserver>) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    /// The Engine of optimised code (for inspection tools).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Waits until every plugin compiled by Winch so far has its optimised
    /// code (compiled, cached, and taken by its next call). At once under
    /// a compiler other than `tiered`.
    pub async fn optimized(&self) {
        if let Some(optimizer) = &self.inner.optimizer {
            optimizer.idle().await;
        }
    }

    /// The cluster plugins read and write.
    pub fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.inner.cluster
    }

    /// Loads a traffic-router plugin: fetch, verify, compile (or take from
    /// the cache), check its world, pre-instantiate, and run its `init`.
    pub async fn load_router(&self, spec: PluginSpec) -> Result<TrafficRouter, LoadError> {
        self.load(spec, PluginKind::TrafficRouter)
            .await
            .map(TrafficRouter::new)
    }

    /// Loads Weir's condition evaluator (`plugins/condition`), to run each
    /// condition in a fresh sandbox under `spec`'s limits.
    pub async fn load_condition_evaluator(
        &self,
        spec: PluginSpec,
    ) -> Result<ConditionPlugin, LoadError> {
        self.load(spec, PluginKind::ConditionEvaluator)
            .await
            .map(ConditionPlugin::new)
    }

    /// Loads a step plugin (see [`Self::load_router`]).
    pub async fn load_step(&self, spec: PluginSpec) -> Result<StepPlugin, LoadError> {
        self.load(spec, PluginKind::StepPlugin)
            .await
            .map(StepPlugin::new)
    }

    /// Loads a metric-provider plugin (see [`Self::load_router`]).
    pub async fn load_provider(&self, spec: PluginSpec) -> Result<MetricProvider, LoadError> {
        self.load(spec, PluginKind::MetricProvider)
            .await
            .map(MetricProvider::new)
    }

    /// The code for the plugin `spec` names, and its digest. One blocking
    /// step reads the file (or recalls it from the digest memo), checks the
    /// pin and the load limits (the counts that bound compile time and
    /// memory), and takes code already in this process or compiled ahead
    /// of time (bundled or cached), with no compile slot, so such loads go
    /// on side by side. Only when there is none does a compile follow,
    /// in the compile slot: one at a time, and the permit goes with the
    /// compile, so one that outlives its timeout still keeps the next one
    /// waiting. Both steps are bounded by `limits.compileTimeoutMs`. Under
    /// the tiered compiler a compile gives Winch's code, and Cranelift's
    /// follows from the optimiser.
    async fn code_for(
        &self,
        spec: &PluginSpec,
    ) -> Result<(Arc<Code>, CacheOutcome, String), LoadErrorKind> {
        let limit = spec.limits.compile_timeout();
        let started = std::time::Instant::now();
        let input = match Location::parse(&spec.location)? {
            Location::File(path) => WasmInput::File(path),
            _ => WasmInput::Bytes(
                self.fetch(&spec.location, spec.limits.component_bytes)
                    .await?,
            ),
        };
        let reading = Arc::new(AtomicBool::new(true));
        let step = {
            let (inner, reading) = (self.inner.clone(), reading.clone());
            let (pin, limits) = (spec.sha256.clone(), spec.limits.clone());
            tokio::task::spawn_blocking(move || {
                inner.find_code(input, pin.as_deref(), &limits, &reading)
            })
        };
        let found = match tokio::time::timeout(limit, step).await {
            Ok(joined) => joined.map_err(join_error)??,
            Err(_) if reading.load(Ordering::Relaxed) => {
                return Err(LoadErrorKind::Read(format!(
                    "{}: reading it took longer than {limit:?} (`limits.compileTimeoutMs`)",
                    spec.location
                )));
            }
            Err(_) => return Err(LoadErrorKind::CompileTimeout { limit }),
        };
        let (sha256, compiled, outcome) = match found {
            Found::Shared(sha256, code) => return Ok((code, CacheOutcome::Shared, sha256)),
            Found::AheadOfTime(sha256, compiled, outcome) => (sha256, compiled, outcome),
            Found::Nothing(wasm, outcome) => {
                let sha256 = wasm.sha256.clone();
                let left = limit.saturating_sub(started.elapsed());
                let compiled = match tokio::time::timeout(left, self.compile_now(wasm)).await {
                    Ok(compiled) => compiled?,
                    Err(_) => return Err(LoadErrorKind::CompileTimeout { limit }),
                };
                (sha256, compiled, outcome)
            }
        };
        let code = match compiled {
            Compiled::Final(component, tier) => Code::new(component, tier),
            Compiled::Baseline(component, wasm) => {
                let code = Code::new(component, CodeTier::Baseline);
                if let Some(optimizer) = &self.inner.optimizer {
                    optimizer.submit(wasm, &sha256, &code);
                }
                code
            }
        };
        self.inner.compiled.insert(&sha256, &code);
        Ok((code, outcome, sha256))
    }

    /// Compiles `wasm` in the compile slot, on a blocking thread.
    async fn compile_now(&self, wasm: Wasm) -> Result<Compiled, LoadErrorKind> {
        let permit = self
            .inner
            .compile_slot
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LoadErrorKind::Host("runtime is shutting down".into()))?;
        let source = self.inner.code_source();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let sha256 = wasm.sha256.clone();
            source.compile(wasm.into_bytes()?, &sha256)
        })
        .await
        .map_err(join_error)?
    }

    /// Everything a load does short of the plugin's `init`: fetch (within
    /// `limits.componentBytes`), verify the pin, check the load limits,
    /// compile or take from the cache, check the world (`kind`, or whichever
    /// the component implements), check that one instantiation fits a
    /// call's share of the pool, and pre-instantiate.
    async fn prepare(
        &self,
        spec: &PluginSpec,
        kind: Option<PluginKind>,
    ) -> Result<Prepared, LoadErrorKind> {
        let (code, cache_outcome, sha256) = self.code_for(spec).await?;
        let component = code.first();
        let surface = Surface::of(component, component.engine());
        let (kind, contract) = match (kind, surface.implements()) {
            (Some(expected), Some((found, contract))) if found == expected => (expected, contract),
            (Some(expected), _) => {
                // Names the mismatch (wrong world, or no export at all).
                surface.check(expected)?;
                return Err(LoadErrorKind::NotAPlugin);
            }
            (None, Some(found)) => found,
            (None, None) => return Err(LoadErrorKind::NotAPlugin),
        };
        surface.check(kind)?;
        let pre = self.inner.pre(component, kind, contract)?;
        let plugin = Arc::new(Plugin {
            grant: Arc::new(spec.grant.clone()),
            args: Arc::new(spec.args.clone()),
            http: Arc::new(spec.http.clone()),
            quarantine: Quarantine::new(spec.fault_policy.clone()),
            admission: Admission::new(&spec.limits),
            stats: PluginStats::default(),
            spec: spec.clone(),
            kind,
            contract,
            sha256,
            pre,
            optimized_pre: std::sync::OnceLock::new(),
            code,
            cache_outcome,
            runtime: self.inner.clone(),
            calls_seen: Default::default(),
            shadow: std::sync::OnceLock::new(),
            last_recording: std::sync::Mutex::new(None),
        });
        Ok(Prepared { plugin, surface })
    }

    /// The flight recorder, if this runtime records.
    pub fn recorder(&self) -> Option<&Recorder> {
        self.inner.recorder.as_deref()
    }

    /// A plugin prepared for a replay: loaded as `kind` under `spec`, its
    /// `init` not called (the replayed call stands alone).
    pub(crate) async fn prepare_for_replay(
        &self,
        spec: &PluginSpec,
        kind: PluginKind,
    ) -> Result<Arc<Plugin>, Box<LoadError>> {
        self.prepare(spec, Some(kind))
            .await
            .map(|p| p.plugin)
            .map_err(|kind| {
                Box::new(LoadError {
                    plugin: spec.name.clone(),
                    location: spec.location.clone(),
                    kind,
                })
            })
    }

    async fn load(&self, spec: PluginSpec, kind: PluginKind) -> Result<Arc<Plugin>, LoadError> {
        let fail = |kind: LoadErrorKind| LoadError {
            plugin: spec.name.clone(),
            location: spec.location.clone(),
            kind,
        };
        let plugin = self.prepare(&spec, Some(kind)).await.map_err(fail)?.plugin;
        let init = match kind {
            PluginKind::TrafficRouter => Some(Call::RouterInit(&spec.args)),
            PluginKind::MetricProvider => Some(Call::ProviderInit(&spec.args)),
            PluginKind::StepPlugin => Some(Call::StepInit(&spec.args)),
            // The evaluator has no init: a trial instantiation stands in.
            PluginKind::ConditionEvaluator => None,
        };
        match init {
            Some(init) => execute(&plugin, init)
                .await
                .map(drop)
                .map_err(|e| fail(LoadErrorKind::Init(Box::new(e))))?,
            None => trial_instantiation(&plugin).await.map_err(|kind| {
                fail(LoadErrorKind::Init(Box::new(CallError {
                    plugin: spec.name.clone(),
                    method: "instantiate",
                    kind,
                    recording: None,
                })))
            })?,
        }
        tracing::info!(plugin = %spec.name, kind = kind.label(), sha256 = %plugin.sha256, cache = ?plugin.cache_outcome, "plugin loaded");
        if let Some(shadow) = &spec.shadow {
            let candidate = self.load_candidate(&spec, shadow, kind).await;
            if let Err(e) = &candidate {
                tracing::warn!(plugin = %spec.name, candidate = %shadow.location, error = %e, "shadow candidate not loaded; the live plugin runs alone");
            }
            let _ = plugin.shadow.set(Arc::new(Shadow::new(
                spec.name.clone(),
                shadow.clone(),
                candidate,
                self.inner.shadow_slots.clone(),
            )));
        }
        Ok(plugin)
    }

    /// Loads `shadow`'s candidate for the live registration `spec`: the
    /// same registration but its location and pin, named `NAME@shadow`.
    /// Its failure never fails the live plugin.
    async fn load_candidate(
        &self,
        spec: &PluginSpec,
        shadow: &ShadowSpec,
        kind: PluginKind,
    ) -> Result<Arc<Plugin>, String> {
        let mut candidate = spec.clone();
        candidate.name = format!("{}@shadow", spec.name);
        candidate.location = shadow.location.clone();
        candidate.sha256 = shadow.sha256.clone();
        candidate.shadow = None;
        let plugin = self
            .prepare(&candidate, Some(kind))
            .await
            .map_err(|e| e.to_string())?
            .plugin;
        let init = match kind {
            PluginKind::TrafficRouter => Some(Call::RouterInit(&candidate.args)),
            PluginKind::MetricProvider => Some(Call::ProviderInit(&candidate.args)),
            PluginKind::StepPlugin => Some(Call::StepInit(&candidate.args)),
            PluginKind::ConditionEvaluator => None,
        };
        if let Some(init) = init {
            execute(&plugin, init).await.map_err(|e| e.to_string())?;
        }
        Ok(plugin)
    }

    /// `weir plugin inspect`: the load path itself (same engine, limits
    /// and checks) up to a trial instantiation under `limits`, so the
    /// verdict is what a load would give, short of the plugin's own `init`.
    pub async fn inspect(&self, location: &str, limits: Limits) -> Inspection {
        let mut spec = PluginSpec::new("inspect", location);
        spec.limits = limits;
        let read = self.fetch(location, spec.limits.component_bytes).await;
        let mut inspection = Inspection::of_bytes(read.as_deref().unwrap_or_default());
        if let Err(e) = read {
            inspection.verdict = Err(e.to_string());
            return inspection;
        }
        let prepared = match self.prepare(&spec, None).await {
            Ok(p) => p,
            Err(e) => {
                inspection.verdict = Err(e.to_string());
                return inspection;
            }
        };
        inspection.surface = prepared.surface;
        inspection.kind = Some(prepared.plugin.kind);
        inspection.code = Some(prepared.plugin.cache_outcome);
        let trial = |plugin: Arc<Plugin>| async move {
            trial_instantiation(&plugin)
                .await
                .map_err(|e| format!("one instantiation under its limits fails: {e}"))
        };
        inspection.verdict = trial(prepared.plugin.clone()).await;
        // Under the tiered compiler a load's calls move to Cranelift's code:
        // that code is checked (and cached) too.
        if inspection.verdict.is_ok() && prepared.plugin.tier() == CodeTier::Baseline {
            self.optimized().await;
            if prepared.plugin.tier() == CodeTier::Optimized {
                inspection.verdict = trial(prepared.plugin.clone()).await;
            }
        }
        inspection.tier = Some(prepared.plugin.tier());
        inspection
    }
}

/// Where a plugin's bytes are read from in the blocking step of a load.
enum WasmInput {
    /// A file, read there (or recalled from the digest memo).
    File(std::path::PathBuf),
    /// Bytes already fetched (a download, or the bundle).
    Bytes(Vec<u8>),
}

/// What the blocking step of a load found, with the wasm's digest.
enum Found {
    /// Code this process already has.
    Shared(String, Arc<Code>),
    /// Code compiled ahead of time (bundled or cached).
    AheadOfTime(String, Compiled, CacheOutcome),
    /// Nothing: the wasm is to be compiled (the cache's outcome so far).
    Nothing(Wasm, CacheOutcome),
}

fn join_error(e: tokio::task::JoinError) -> LoadErrorKind {
    LoadErrorKind::Host(format!("load task: {e}"))
}

impl RuntimeInner {
    /// The blocking step of a load (see [`PluginRuntime::code_for`]);
    /// `reading` is cleared once the bytes are read and hashed.
    fn find_code(
        &self,
        input: WasmInput,
        pin: Option<&str>,
        limits: &Limits,
        reading: &AtomicBool,
    ) -> Result<Found, LoadErrorKind> {
        let (wasm, shape) = match input {
            WasmInput::File(path) => {
                read_wasm_file(&path, limits.component_bytes, self.digests.as_ref())?
            }
            WasmInput::Bytes(bytes) => Wasm::of_bytes(bytes),
        };
        reading.store(false, Ordering::Relaxed);
        check_pin(&wasm.sha256, pin)?;
        // Checked for every registration: each has its own limits.
        shape?.check(limits, self.settings.call_shares)?;
        if let Some(code) = self.compiled.get(&wasm.sha256) {
            return Ok(Found::Shared(wasm.sha256, code));
        }
        Ok(match self.code_source().ahead_of_time(&wasm.sha256) {
            Ok((compiled, outcome)) => Found::AheadOfTime(wasm.sha256, compiled, outcome),
            Err(outcome) => Found::Nothing(wasm, outcome),
        })
    }

    /// What a blocking thread needs to find or make a plugin's code.
    fn code_source(&self) -> CodeSource {
        CodeSource {
            engine: self.engine.clone(),
            baseline: self.baseline.as_ref().map(|b| b.engine.clone()),
            compiler: self.settings.compiler,
            cache: self.cache.clone(),
            bundle: self.bundle.clone(),
        }
    }

    /// Pre-instantiates `component` (compiled on either Engine) as a
    /// `kind` plugin of `contract`, with that Engine's linker for `kind`.
    fn pre(
        &self,
        component: &Component,
        kind: PluginKind,
        contract: Contract,
    ) -> Result<Pre, LoadErrorKind> {
        let link_err = |e: wasmtime::Error| LoadErrorKind::Link(error_chain(&e));
        let (plain, http) = match &self.baseline {
            Some(b) if Engine::same(component.engine(), &b.engine) => (&b.plain, &b.http),
            _ => (&self.plain_linker, &self.http_linker),
        };
        let linker = match kind {
            PluginKind::MetricProvider | PluginKind::StepPlugin => http,
            // The evaluator imports WASI only: the extra interfaces go unused.
            PluginKind::TrafficRouter | PluginKind::ConditionEvaluator => plain,
        };
        let instance_pre = linker.instantiate_pre(component).map_err(link_err)?;
        Ok(match (kind, contract) {
            (PluginKind::TrafficRouter, Contract::V0_3) => {
                Pre::Router(TrafficRouterPluginPre::new(instance_pre).map_err(link_err)?)
            }
            (PluginKind::TrafficRouter, Contract::V0_2) => Pre::RouterV02(
                v0_2::router::TrafficRouterPluginPre::new(instance_pre).map_err(link_err)?,
            ),
            (PluginKind::TrafficRouter, Contract::V0_1) => Pre::RouterV01(
                v0_1::router::TrafficRouterPluginPre::new(instance_pre).map_err(link_err)?,
            ),
            (PluginKind::MetricProvider, Contract::V0_3) => {
                Pre::Provider(MetricProviderPluginPre::new(instance_pre).map_err(link_err)?)
            }
            (PluginKind::MetricProvider, Contract::V0_2) => Pre::ProviderV02(
                v0_2::provider::MetricProviderPluginPre::new(instance_pre).map_err(link_err)?,
            ),
            (PluginKind::MetricProvider, Contract::V0_1) => Pre::ProviderV01(
                v0_1::provider::MetricProviderPluginPre::new(instance_pre).map_err(link_err)?,
            ),
            (PluginKind::StepPlugin, Contract::V0_2) => {
                Pre::StepV02(v0_2::step::StepPluginPre::new(instance_pre).map_err(link_err)?)
            }
            (PluginKind::StepPlugin, _) => {
                Pre::Step(StepPluginPre::new(instance_pre).map_err(link_err)?)
            }
            (PluginKind::ConditionEvaluator, _) => {
                Pre::Condition(ConditionEvaluatorPre::new(instance_pre).map_err(link_err)?)
            }
        })
    }
}

/// A plugin prepared for loading (or inspection).
struct Prepared {
    plugin: Arc<Plugin>,
    surface: Surface,
}

impl Plugin {
    /// Why it is in quarantine, while it is.
    pub(crate) fn quarantined(&self) -> Option<String> {
        self.quarantine.admit().err().map(|q| {
            format!(
                "{} consecutive faults, {}s left; last: {}",
                q.faults,
                q.remaining.as_secs(),
                q.last
            )
        })
    }

    /// The recording of the last faulted call, if one was kept.
    pub(crate) fn last_recording(&self) -> Option<String> {
        self.last_recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What its shadow candidate has done, if it has one.
    pub(crate) fn shadow_report(&self) -> Option<ShadowReport> {
        self.shadow.get().map(|s| s.report(self))
    }

    /// What its next call instantiates: the optimised code once the
    /// optimiser has replaced its baseline code, else what it was loaded
    /// with.
    pub(crate) fn current_pre(&self) -> &Pre {
        let Some(optimized) = self.code.optimized() else {
            return &self.pre;
        };
        self.optimized_pre
            .get_or_init(|| {
                match self.runtime.pre(optimized, self.kind, self.contract) {
                    Ok(pre) => {
                        tracing::info!(plugin = %self.spec.name, "calls now run on optimised code");
                        Some(pre)
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %self.spec.name, error = %e, "optimised code cannot be pre-instantiated; calls stay on baseline code");
                        None
                    }
                }
            })
            .as_ref()
            .unwrap_or(&self.pre)
    }

    /// Which compiler's code its next call runs on.
    pub(crate) fn tier(&self) -> CodeTier {
        // Optimised code that could not be pre-instantiated is never used.
        let unusable = matches!(self.optimized_pre.get(), Some(None));
        match self.code.optimized() {
            Some(_) if !unusable => CodeTier::Optimized,
            _ => self.code.first_tier(),
        }
    }

    /// Facts about the loaded plugin.
    pub(crate) fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.spec.name.clone(),
            kind: self.kind,
            sha256: self.sha256.clone(),
            cache: self.cache_outcome,
            contract: self.contract,
            tier: self.tier(),
        }
    }
}

/// Facts about a loaded plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Registered name.
    pub name: String,
    /// Its world.
    pub kind: PluginKind,
    /// sha256 of its wasm.
    pub sha256: String,
    /// Whether it came from the precompiled cache.
    pub cache: CacheOutcome,
    /// The contract line it was built against.
    pub contract: Contract,
    /// Which compiler's code its next call runs on.
    pub tier: CodeTier,
}
