//! Plugin registration: the shipped plugins, plus what Argo's
//! `argo-rollouts-config` ConfigMap registers (`trafficRouterPlugins`,
//! `metricProviderPlugins`) with Weir's own fields (grant, http, limits,
//! faultPolicy).
//!
//! Plugins are loaded on first use and reloaded when their registration
//! changes. A plugin that fails to load is remembered with its error: the
//! rollouts that use it report it, every other rollout goes on.

use crate::analysis::AnalysisEngine;
use crate::analysis::condition::ConditionEvaluator;
use crate::cluster::{Cluster, ClusterError, ObjectKey, resource_version};
use crate::plugin::{
    Grant, GrantedKind, MetricProvider, PluginKind, PluginRuntime, PluginSpec, TrafficRouter,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::sync::Mutex;

/// The ConfigMap's name (Argo's).
pub const CONFIG_MAP: &str = "argo-rollouts-config";

/// A registered plugin in the shipped set: its name and the cluster kinds it may write.
struct Shipped {
    name: &'static str,
    kind: PluginKind,
    writes: &'static [(&'static str, &'static str)],
}

const SHIPPED: &[Shipped] = &[
    Shipped {
        name: "istio",
        kind: PluginKind::TrafficRouter,
        writes: &[
            ("networking.istio.io", "VirtualService"),
            ("networking.istio.io", "DestinationRule"),
        ],
    },
    Shipped {
        name: "nginx",
        kind: PluginKind::TrafficRouter,
        writes: &[("networking.k8s.io", "Ingress")],
    },
    Shipped {
        name: "smi",
        kind: PluginKind::TrafficRouter,
        writes: &[("split.smi-spec.io", "TrafficSplit")],
    },
    Shipped {
        name: "prometheus",
        kind: PluginKind::MetricProvider,
        writes: &[],
    },
    Shipped {
        name: "web",
        kind: PluginKind::MetricProvider,
        writes: &[],
    },
    Shipped {
        name: "job",
        kind: PluginKind::MetricProvider,
        writes: &[("batch", "Job")],
    },
];

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

/// Reads the plugin lists of an `argo-rollouts-config` ConfigMap.
pub fn parse_config_map(
    object: &Value,
) -> Result<BTreeMap<(PluginKind, String), PluginSpec>, String> {
    let mut out = BTreeMap::new();
    for (field, kind) in [
        ("trafficRouterPlugins", PluginKind::TrafficRouter),
        ("metricProviderPlugins", PluginKind::MetricProvider),
    ] {
        let Some(text) = object.pointer(&format!("/data/{field}")) else {
            continue;
        };
        let text = text
            .as_str()
            .ok_or_else(|| format!("data.{field} must be a YAML string"))?;
        let specs: Vec<PluginSpec> = serde_yaml_ng::from_str::<Option<Vec<PluginSpec>>>(text)
            .map_err(|e| format!("data.{field}: {e}"))?
            .unwrap_or_default();
        for spec in specs {
            if spec.name.is_empty() {
                return Err(format!("data.{field}: an entry has no name"));
            }
            let is_shipped = SHIPPED
                .iter()
                .any(|s| s.name == spec.name && s.kind == kind);
            if !is_shipped && !spec.name.contains('/') {
                return Err(format!(
                    "data.{field}: plugin name {:?} must be `<namespace>/<name>` (as Argo requires)",
                    spec.name
                ));
            }
            if !is_shipped && spec.location.is_empty() {
                return Err(format!(
                    "data.{field}: plugin {:?} has no location (file:// or https://)",
                    spec.name
                ));
            }
            if out
                .insert((kind, spec.name.clone()), spec.clone())
                .is_some()
            {
                return Err(format!(
                    "data.{field}: plugin {:?} is registered twice",
                    spec.name
                ));
            }
        }
    }
    Ok(out)
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
            ..
        } = &mut *state;
        let still_wanted = |kind: PluginKind, name: &str, spec: &PluginSpec| {
            let registration = registered.get(&(kind, name.to_string())).cloned();
            spec_for(&self.shipped_dir, kind, name, registration).as_ref() == Some(spec)
        };
        routers.retain(|name, e| still_wanted(PluginKind::TrafficRouter, name, e.spec()));
        providers.retain(|name, e| still_wanted(PluginKind::MetricProvider, name, e.spec()));
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
        let mut state = self.state.lock().await;
        if let Some(entry) = entries(&mut state).get(name) {
            return entry.result();
        }
        let registered = state.registered.get(&(kind, name.to_string())).cloned();
        let Some(spec) = spec_for(&self.shipped_dir, kind, name, registered) else {
            let (what, list) = match kind {
                PluginKind::TrafficRouter => ("traffic router", "trafficRouterPlugins"),
                // Registrations only ever name routers and providers.
                PluginKind::MetricProvider | PluginKind::ConditionEvaluator => {
                    ("metric provider", "metricProviderPlugins")
                }
            };
            return Err(format!(
                "{what} plugin {name:?} is not registered: add it to {list} in ConfigMap {}",
                self.config_key
            ));
        };
        let entry = match load(spec.clone()).await {
            Ok(handle) => Entry::Loaded { spec, handle },
            Err(e) => Entry::Failed {
                spec,
                error: e.to_string(),
            },
        };
        let result = entry.result();
        entries(&mut state).insert(name.to_string(), entry);
        result
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
        let mut loaded = 0;
        let mut failures = Vec::new();
        for (kind, name) in names {
            let result = match kind {
                PluginKind::TrafficRouter => self.router(&name).await.map(drop),
                PluginKind::MetricProvider => self.provider(&name).await.map(drop),
                PluginKind::ConditionEvaluator => continue,
            };
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
        out
    }
}

/// The spec to load `name` with: a registration (with a shipped plugin's
/// location and grant filled in when it names one), or the shipped plugin's defaults.
fn spec_for(
    shipped_dir: &std::path::Path,
    kind: PluginKind,
    name: &str,
    registered: Option<PluginSpec>,
) -> Option<PluginSpec> {
    let shipped = SHIPPED.iter().find(|s| s.name == name && s.kind == kind);
    match (registered, shipped) {
        (Some(mut spec), Some(shipped)) => {
            if spec.location.is_empty() {
                spec.location = shipped_location(shipped_dir, shipped.name);
            }
            // A registration that names no kinds keeps the shipped ones
            // (and may add namespaces).
            if spec.grant.read.is_empty() && spec.grant.write.is_empty() {
                let namespaces = std::mem::take(&mut spec.grant.namespaces);
                let secrets = std::mem::take(&mut spec.grant.secrets);
                spec.grant = shipped_grant(shipped);
                spec.grant.namespaces = namespaces;
                spec.grant.secrets = secrets;
            }
            Some(spec)
        }
        (Some(spec), None) => Some(spec),
        (None, Some(shipped)) => {
            let mut spec =
                PluginSpec::new(shipped.name, shipped_location(shipped_dir, shipped.name));
            spec.grant = shipped_grant(shipped);
            Some(spec)
        }
        (None, None) => None,
    }
}

fn shipped_location(dir: &std::path::Path, name: &str) -> String {
    dir.join(format!("weir_plugin_{name}.wasm"))
        .display()
        .to_string()
}

fn shipped_grant(shipped: &Shipped) -> Grant {
    Grant {
        read: vec![],
        write: shipped
            .writes
            .iter()
            .map(|(group, kind)| GrantedKind {
                group: group.to_string(),
                kind: kind.to_string(),
            })
            .collect(),
        namespaces: vec![],
        secrets: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_argo_plugin_lists_with_weir_fields() {
        let cm = json!({"data": {
            "trafficRouterPlugins": "- name: acme/mesh\n  location: file:///p/mesh.wasm\n  sha256: abc\n  limits: {timeoutMs: 300}\n",
            "metricProviderPlugins": "- name: web\n  http: {allowHosts: ['127.0.0.1']}\n"}});
        let parsed = parse_config_map(&cm).expect("valid");
        let mesh = &parsed[&(PluginKind::TrafficRouter, "acme/mesh".to_string())];
        assert_eq!(mesh.limits.timeout_ms, 300);
        assert_eq!(mesh.sha256.as_deref(), Some("abc"));
        let web = &parsed[&(PluginKind::MetricProvider, "web".to_string())];
        assert_eq!(web.http.allow_hosts, vec!["127.0.0.1".to_string()]);
    }

    #[test]
    fn a_shipped_router_granted_a_namespace_keeps_its_kinds() {
        let cm = json!({"data": {
            "trafficRouterPlugins": "- name: istio\n  grant: {namespaces: [istio-ingress]}\n"}});
        let parsed = parse_config_map(&cm).expect("valid");
        let registered = parsed
            .get(&(PluginKind::TrafficRouter, "istio".to_string()))
            .cloned();
        let spec = spec_for(
            std::path::Path::new("/p"),
            PluginKind::TrafficRouter,
            "istio",
            registered,
        )
        .expect("spec");
        assert_eq!(spec.grant.namespaces, vec!["istio-ingress".to_string()]);
        assert!(
            spec.grant
                .may_write("networking.istio.io", "VirtualService")
        );
    }

    #[test]
    fn bad_registrations_name_the_field_and_fix() {
        let unknown = json!({"data": {"trafficRouterPlugins": "- name: a/b\n  location: file:///x\n  limitz: {}\n"}});
        let err = parse_config_map(&unknown).expect_err("unknown field");
        assert!(
            err.contains("limitz") && err.contains("trafficRouterPlugins"),
            "{err}"
        );
        let unqualified =
            json!({"data": {"trafficRouterPlugins": "- name: mesh\n  location: file:///x\n"}});
        let err = parse_config_map(&unqualified).expect_err("bad name");
        assert!(err.contains("<namespace>/<name>"), "{err}");
        let no_location = json!({"data": {"metricProviderPlugins": "- name: a/b\n"}});
        assert!(
            parse_config_map(&no_location)
                .expect_err("no location")
                .contains("location")
        );
    }
}
