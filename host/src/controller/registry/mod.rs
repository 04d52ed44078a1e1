//! Plugin registration: the shipped plugins, plus what Argo's
//! `argo-rollouts-config` ConfigMap registers (`trafficRouterPlugins`,
//! `metricProviderPlugins`, `stepPlugins`) with Weir's own fields (grant,
//! http, limits, faultPolicy).
//!
//! Plugins are loaded on first use and reloaded when their registration
//! changes. A plugin that fails to load is remembered with its error: the
//! rollouts that use it report it, every other rollout goes on.

mod promote;
mod registration;

use crate::analysis::AnalysisEngine;
use crate::analysis::condition::ConditionEvaluator;
use crate::cluster::{Cluster, ClusterError, ObjectKey, resource_version};
use crate::plugin::{
    MetricProvider, PluginKind, PluginRuntime, PluginSpec, StepPlugin, TrafficRouter,
};
use futures_util::StreamExt;
pub use promote::{PromoteError, promote_shadow};
pub use registration::parse_config_map;
use registration::{SHIPPED, spec_for};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The ConfigMap's name (Argo's).
pub const CONFIG_MAP: &str = "argo-rollouts-config";

/// How many plugins [`PluginRegistry::preload`] loads at once: two per
/// core. A load from the cache is short bursts of work between hand-offs
/// to blocking threads (a file read, a mapping), so one per core leaves
/// cores idle; compiles queue for the runtime's compile slot whatever this
/// is (measured one, two, three and four at once: docs/benchmarks.md,
/// 2026-12-03).
pub fn preload_concurrency() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What the registry knows about one plugin name.
enum Entry<T> {
    Loaded { spec: PluginSpec, handle: T },
    Failed { spec: PluginSpec, error: String },
}

impl<T: Clone> Entry<T> {
    fn result(&self) -> Result<T, String> {
        match self {
            Entry::Loaded { handle, .. } => Ok(handle.clone()),
            Entry::Failed { error, .. } => Err(error.clone()),
        }
    }
}

impl<T> Entry<T> {
    fn spec(&self) -> &PluginSpec {
        match self {
            Entry::Loaded { spec, .. } | Entry::Failed { spec, .. } => spec,
        }
    }
}

#[derive(Default)]
struct State {
    /// The ConfigMap's resourceVersion last read (`None`: absent).
    config_version: Option<String>,
    /// Registrations from the ConfigMap, by kind and name.
    registered: BTreeMap<(PluginKind, String), PluginSpec>,
    /// Why the ConfigMap could not be read, if it could not.
    config_error: Option<String>,
    routers: BTreeMap<String, Entry<TrafficRouter>>,
    providers: BTreeMap<String, Entry<MetricProvider>>,
    steps: BTreeMap<String, Entry<StepPlugin>>,
    /// One lock per plugin being loaded: a second caller for the same
    /// plugin waits for the first load and takes its result, while loads
    /// of other plugins, and lookups of loaded ones, go on meanwhile.
    loading: BTreeMap<(PluginKind, String), Arc<tokio::sync::Mutex<()>>>,
}

/// A loaded plugin as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    /// Registered name.
    pub name: String,
    /// Its world.
    pub kind: PluginKind,
    /// Its call counters.
    pub stats: crate::plugin::stats::StatsSnapshot,
    /// Why it is in quarantine, while it is.
    pub quarantined: Option<String>,
    /// Its shadow candidate's report, if it has one.
    pub shadow: Option<crate::plugin::ShadowReport>,
}

/// A step plugin as the controller finds it.
#[derive(Clone)]
pub enum StepPluginEntry {
    /// Loaded and enabled.
    Enabled(StepPlugin),
    /// Registered with `disabled: true`: not loaded, its steps complete.
    Disabled,
}

/// The file names of every component Weir ships (the plugins and the
/// condition component): what `weir plugin bundle` bundles.
pub fn shipped_component_files() -> Vec<String> {
    SHIPPED
        .iter()
        .map(|s| s.component_file())
        .chain([crate::analysis::condition::COMPONENT_FILE.to_string()])
        .collect()
}

/// The plugins the controller may call.
pub struct PluginRegistry {
    runtime: PluginRuntime,
    shipped_dir: PathBuf,
    config_key: ObjectKey,
    max_run_bytes: usize,
    state: Mutex<State>,
    /// Why the ConfigMap's current version is not in force (read on every
    /// reconcile, so kept apart from `state`, which loads hold).
    registration_error: std::sync::RwLock<Option<String>>,
}

/// Why a registration could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{config_map}: {message}")]
pub struct RegistrationError {
    /// The ConfigMap.
    pub config_map: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl PluginRegistry {
    /// A registry over `runtime`, finding the shipped plugins in
    /// `shipped_dir` and registrations in the ConfigMap
    /// `argo-rollouts-config` in `config_namespace`.
    pub fn new(runtime: PluginRuntime, shipped_dir: PathBuf, config_namespace: &str) -> Self {
        PluginRegistry {
            runtime,
            shipped_dir,
            config_key: ObjectKey::new("v1", "ConfigMap", config_namespace, CONFIG_MAP),
            max_run_bytes: crate::analysis::fit::DEFAULT_MAX_RUN_BYTES,
            state: Mutex::new(State::default()),
            registration_error: std::sync::RwLock::new(None),
        }
    }

    /// Keeps the AnalysisRuns its engines advance under `bytes`.
    #[must_use]
    pub fn with_max_run_bytes(mut self, bytes: usize) -> Self {
        self.max_run_bytes = bytes;
        self
    }

    /// The ConfigMap this registry reads.
    pub fn config_key(&self) -> &ObjectKey {
        &self.config_key
    }

    /// The runtime.
    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    /// Why the registration ConfigMap as it stands is not in force (the
    /// last valid one is), if it is not.
    pub fn registration_error(&self) -> Option<String> {
        self.registration_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_registration_error(&self, error: Option<String>) {
        *self
            .registration_error
            .write()
            .unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Re-reads the ConfigMap if it changed; plugins whose registration
    /// changed are reloaded on their next use. Returns whether anything changed.
    pub async fn sync(&self, cluster: &dyn Cluster) -> Result<bool, RegistrationError> {
        let fail = |message: String| RegistrationError {
            config_map: self.config_key.to_string(),
            message,
        };
        let object = match cluster.get(&self.config_key).await {
            Ok(o) => Some(o),
            Err(ClusterError::NotFound(_)) => None,
            Err(e) => return Err(fail(e.to_string())),
        };
        let version = object
            .as_ref()
            .map(|o| resource_version(o).unwrap_or("").to_string());
        let mut state = self.state.lock().await;
        if state.config_version == version && state.config_error.is_none() && version.is_some() {
            return Ok(false);
        }
        let registered = match object.as_ref().map(parse_config_map).transpose() {
            Ok(r) => r.unwrap_or_default(),
            Err(message) => {
                // Keep what was registered before: a typo in the ConfigMap
                // must not unload plugins that rollouts are using.
                state.config_version = version;
                state.config_error = Some(message.clone());
                self.set_registration_error(Some(fail(message.clone()).to_string()));
                return Err(fail(message));
            }
        };
        state.config_version = version;
        state.config_error = None;
        self.set_registration_error(None);
        let changed = state.registered != registered;
        state.registered = registered;
        // Drop handles whose registration changed or went away; they are
        // loaded again, with the new spec, on their next use.
        let State {
            registered,
            routers,
            providers,
            steps,
            ..
        } = &mut *state;
        let still_wanted = |kind: PluginKind, name: &str, spec: &PluginSpec| {
            let registration = registered.get(&(kind, name.to_string())).cloned();
            spec_for(&self.shipped_dir, kind, name, registration).as_ref() == Some(spec)
        };
        routers.retain(|name, e| still_wanted(PluginKind::TrafficRouter, name, e.spec()));
        providers.retain(|name, e| still_wanted(PluginKind::MetricProvider, name, e.spec()));
        steps.retain(|name, e| still_wanted(PluginKind::StepPlugin, name, e.spec()));
        Ok(changed)
    }

    /// The traffic router `name`, loading it if needed.
    pub async fn router(&self, name: &str) -> Result<TrafficRouter, String> {
        self.get_or_load(
            PluginKind::TrafficRouter,
            name,
            |state| &mut state.routers,
            |spec| self.runtime.load_router(spec),
        )
        .await
    }

    /// The metric provider `name`, loading it if needed.
    pub async fn provider(&self, name: &str) -> Result<MetricProvider, String> {
        self.get_or_load(
            PluginKind::MetricProvider,
            name,
            |state| &mut state.providers,
            |spec| self.runtime.load_provider(spec),
        )
        .await
    }

    /// The step plugin `name`, loading it if needed (a disabled one is
    /// never loaded).
    pub async fn step(&self, name: &str) -> Result<StepPluginEntry, String> {
        {
            let state = self.state.lock().await;
            let key = (PluginKind::StepPlugin, name.to_string());
            if state.registered.get(&key).is_some_and(|spec| spec.disabled) {
                return Ok(StepPluginEntry::Disabled);
            }
        }
        self.get_or_load(
            PluginKind::StepPlugin,
            name,
            |state| &mut state.steps,
            |spec| self.runtime.load_step(spec),
        )
        .await
        .map(StepPluginEntry::Enabled)
    }

    /// The entry for `name` in the map `entries` picks, loaded with `load`
    /// (and remembered, failures included) when there is none yet.
    async fn get_or_load<T, F, Fut>(
        &self,
        kind: PluginKind,
        name: &str,
        entries: fn(&mut State) -> &mut BTreeMap<String, Entry<T>>,
        load: F,
    ) -> Result<T, String>
    where
        T: Clone,
        F: FnOnce(PluginSpec) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::plugin::LoadError>>,
    {
        let key = (kind, name.to_string());
        let load_lock = {
            let mut state = self.state.lock().await;
            if let Some(entry) = entries(&mut state).get(name) {
                return entry.result();
            }
            self.registered_spec(&state, kind, name)?;
            state.loading.entry(key.clone()).or_default().clone()
        };
        let loading = load_lock.lock().await;
        // The state lock is not held across the load: a slow compile must
        // not stall every other plugin's lookups.
        let result = async {
            let spec = {
                let state = &mut *self.state.lock().await;
                if let Some(entry) = entries(state).get(name) {
                    return entry.result();
                }
                self.registered_spec(state, kind, name)?
            };
            let entry = match load(spec.clone()).await {
                Ok(handle) => Entry::Loaded { spec, handle },
                Err(e) => Entry::Failed {
                    spec,
                    error: e.to_string(),
                },
            };
            let result = entry.result();
            let state = &mut *self.state.lock().await;
            // Kept only if the registration did not change during the load
            // (the caller still gets what was registered when it asked).
            if self.registered_spec(state, kind, name).ok().as_ref() == Some(entry.spec()) {
                entries(state).insert(name.to_string(), entry);
            }
            result
        }
        .await;
        drop(loading);
        let mut state = self.state.lock().await;
        // The map holds one Arc and this caller another: no one else waits.
        if Arc::strong_count(&load_lock) <= 2 {
            state.loading.remove(&key);
        }
        result
    }

    /// The spec registered (or shipped) for `kind` `name`, or the error
    /// that says how to register it.
    fn registered_spec(
        &self,
        state: &State,
        kind: PluginKind,
        name: &str,
    ) -> Result<PluginSpec, String> {
        let registered = state.registered.get(&(kind, name.to_string())).cloned();
        spec_for(&self.shipped_dir, kind, name, registered).ok_or_else(|| {
            let (what, list) = match kind {
                PluginKind::TrafficRouter => ("traffic router", "trafficRouterPlugins"),
                PluginKind::StepPlugin => ("step", "stepPlugins"),
                // Registrations never name the condition evaluator.
                PluginKind::MetricProvider | PluginKind::ConditionEvaluator => {
                    ("metric provider", "metricProviderPlugins")
                }
            };
            format!(
                "{what} plugin {name:?} is not registered: add it to {list} in ConfigMap {}",
                self.config_key
            )
        })
    }

    /// Loads every shipped and registered plugin now (compiling it or taking
    /// it from the precompiled cache), so a standby replica can take over
    /// without compiling. Returns how many loaded and the failures.
    pub async fn preload(&self) -> (usize, Vec<(String, String)>) {
        let registered: Vec<(PluginKind, String)> = {
            let state = self.state.lock().await;
            state.registered.keys().cloned().collect()
        };
        let mut names: Vec<(PluginKind, String)> = SHIPPED
            .iter()
            .map(|s| (s.kind, s.name.to_string()))
            .chain(registered)
            .collect();
        names.sort();
        names.dedup();
        let at_once = preload_concurrency();
        let results: Vec<Option<(String, Result<(), String>)>> = futures_util::stream::iter(names)
            .map(|(kind, name)| async move {
                let result = match kind {
                    PluginKind::TrafficRouter => self.router(&name).await.map(drop),
                    PluginKind::MetricProvider => self.provider(&name).await.map(drop),
                    PluginKind::StepPlugin => self.step(&name).await.map(drop),
                    PluginKind::ConditionEvaluator => return None,
                };
                Some((name, result))
            })
            .buffer_unordered(at_once)
            .collect()
            .await;
        let mut loaded = 0;
        let mut failures = Vec::new();
        for (name, result) in results.into_iter().flatten() {
            match result {
                Ok(()) => loaded += 1,
                Err(e) => failures.push((name, e)),
            }
        }
        (loaded, failures)
    }

    /// An analysis engine serving `names` (provider keys), with the
    /// providers that load; the others are left out, so their metrics end
    /// in Error measurements that say the provider is not available.
    pub async fn analysis_engine(
        &self,
        names: &[String],
        evaluator: ConditionEvaluator,
    ) -> AnalysisEngine {
        let mut engine = AnalysisEngine::new(evaluator).with_max_run_bytes(self.max_run_bytes);
        for name in names {
            if let Ok(p) = self.provider(name).await {
                engine.register(name, p);
            }
        }
        engine
    }

    /// The Secrets metric provider `name` is granted (`grant.secrets`):
    /// none when it is not registered or shipped.
    pub async fn granted_secrets(&self, name: &str) -> Vec<String> {
        let state = self.state.lock().await;
        if let Some(entry) = state.providers.get(name) {
            return entry.spec().grant.secrets.clone();
        }
        let registered = state
            .registered
            .get(&(PluginKind::MetricProvider, name.to_string()))
            .cloned();
        spec_for(
            &self.shipped_dir,
            PluginKind::MetricProvider,
            name,
            registered,
        )
        .map(|spec| spec.grant.secrets)
        .unwrap_or_default()
    }

    /// The shadow report of the loaded plugin `name` (any kind), if it
    /// has a shadow candidate.
    pub async fn shadow_report(&self, name: &str) -> Option<crate::plugin::ShadowReport> {
        let state = self.state.lock().await;
        let router = match state.routers.get(name) {
            Some(Entry::Loaded { handle, .. }) => handle.shadow_report(),
            _ => None,
        };
        let provider = || match state.providers.get(name) {
            Some(Entry::Loaded { handle, .. }) => handle.shadow_report(),
            _ => None,
        };
        let step = || match state.steps.get(name) {
            Some(Entry::Loaded { handle, .. }) => handle.shadow_report(),
            _ => None,
        };
        router.or_else(provider).or_else(step)
    }

    /// Every loaded plugin's counters, quarantine and shadow (the dashboard).
    pub async fn statuses(&self) -> Vec<PluginStatus> {
        let state = self.state.lock().await;
        let mut out = Vec::new();
        for (name, entry) in &state.routers {
            if let Entry::Loaded { handle, .. } = entry {
                out.push(PluginStatus {
                    name: name.clone(),
                    kind: PluginKind::TrafficRouter,
                    stats: handle.stats(),
                    quarantined: handle.quarantined(),
                    shadow: handle.shadow_report(),
                });
            }
        }
        for (name, entry) in &state.providers {
            if let Entry::Loaded { handle, .. } = entry {
                out.push(PluginStatus {
                    name: name.clone(),
                    kind: PluginKind::MetricProvider,
                    stats: handle.stats(),
                    quarantined: handle.quarantined(),
                    shadow: handle.shadow_report(),
                });
            }
        }
        for (name, entry) in &state.steps {
            if let Entry::Loaded { handle, .. } = entry {
                out.push(PluginStatus {
                    name: name.clone(),
                    kind: PluginKind::StepPlugin,
                    stats: handle.stats(),
                    quarantined: handle.quarantined(),
                    shadow: handle.shadow_report(),
                });
            }
        }
        out
    }

    /// Every loaded plugin's stats, by name and kind (for `/metrics`).
    pub async fn loaded(&self) -> Vec<(String, PluginKind, crate::plugin::stats::StatsSnapshot)> {
        let state = self.state.lock().await;
        let mut out = Vec::new();
        for (name, entry) in &state.routers {
            if let Entry::Loaded { handle, .. } = entry {
                out.push((name.clone(), PluginKind::TrafficRouter, handle.stats()));
            }
        }
        for (name, entry) in &state.providers {
            if let Entry::Loaded { handle, .. } = entry {
                out.push((name.clone(), PluginKind::MetricProvider, handle.stats()));
            }
        }
        for (name, entry) in &state.steps {
            if let Entry::Loaded { handle, .. } = entry {
                out.push((name.clone(), PluginKind::StepPlugin, handle.stats()));
            }
        }
        out
    }
}
