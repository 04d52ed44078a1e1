//! The rollout controller: canary and blue-green Rollouts driven through
//! sandboxed router and metric-provider plugins, against any [`Cluster`].
//!
//! The façade: [`assemble`] (the controller wired up), [`Controller`] (the
//! loop), [`Reconciler`] / [`Outcome`] (one reconcile), [`PluginRegistry`],
//! [`Metrics`]; the Rollout's shapes ([`spec`], [`status`]); the operator
//! verbs ([`actions`]) and views ([`view`], [`lint`]); what tests and tools
//! need of the children ([`children`], [`retiring`], [`readiness`]) and
//! [`leader`] election. Everything else is internal:
//!
//! - `rollout/`: one pass over one Rollout, its strategy's (`canary/`,
//!   `bluegreen/`) and what they share; `context`: the value a pass works with.
//! - `adoption`: ReplicaSets Argo Rollouts made, recognised by their pod
//!   template so a takeover moves nothing.
//! - `analysis_runs`, `experiments`: the AnalysisRuns and Experiments a
//!   Rollout starts; `experiment`: which experiment templates become
//!   weighted destinations (the seed case of Argo Rollouts 1.6.6);
//!   `standalone`: those created directly.
//! - `routing` / `routes`: the Rollout's routers, called together.
//! - `restart` (`spec.restartAt`), `workload` (`spec.workloadRef`).
//! - `manager`: the loop, the queue, and the panic boundary; `metrics`: the
//!   `/metrics` families.

pub mod actions;
mod adoption;
mod analysis_runs;
pub mod children;
mod context;
mod experiment;
mod experiments;
pub mod leader;
pub mod lint;
mod manager;
mod metrics;
pub mod readiness;
pub mod registry;
mod restart;
pub mod retiring;
mod rollout;
mod routes;
mod routing;
pub mod spec;
mod standalone;
pub mod status;
pub mod view;
mod workload;

use crate::analysis::ConditionEvaluator;
use crate::cluster::Cluster;
use crate::plugin::{PluginRuntime, RuntimeConfig, RuntimeError};
pub use manager::{Controller, ControllerSettings, DEFAULT_WORKERS, OnConfigChange, Reconcile};
pub use metrics::Metrics;
pub use registry::{PluginRegistry, shipped_component_files};
pub use rollout::{Outcome, Reconciler};
use std::path::PathBuf;
use std::sync::Arc;

/// Everything needed to run the controller over one store.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Where the shipped plugin components are; empty: in the executable's
    /// bundle ([`RuntimeConfig::bundle`], `bundled:` locations).
    pub plugins_dir: PathBuf,
    /// The namespace of the `argo-rollouts-config` ConfigMap.
    pub config_namespace: String,
    /// Loop settings.
    pub settings: ControllerSettings,
    /// Plugin runtime settings.
    pub runtime: RuntimeConfig,
}

/// A controller wired up: its loop, and the parts the API server shows.
pub struct Assembled {
    /// The loop (call `run`).
    pub controller: Controller,
    /// Metrics, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The plugins.
    pub registry: Arc<PluginRegistry>,
    /// The reconciler (for one-off reconciles in tools and tests).
    pub reconciler: Arc<Reconciler>,
    cluster: Arc<dyn Cluster>,
    settings: ControllerSettings,
    on_config: Arc<dyn OnConfigChange>,
}

impl Assembled {
    /// Another loop over the same parts (a new leader term starts one).
    pub fn new_controller(&self) -> Controller {
        Controller::new(
            self.cluster.clone(),
            self.reconciler.clone(),
            self.metrics.clone(),
            self.settings.clone(),
        )
        .with_config(self.registry.config_key().clone(), self.on_config.clone())
    }
}

struct RegistrySync {
    registry: Arc<PluginRegistry>,
    cluster: Arc<dyn Cluster>,
}

#[async_trait::async_trait]
impl OnConfigChange for RegistrySync {
    async fn config_changed(&self) -> bool {
        match self.registry.sync(self.cluster.as_ref()).await {
            Ok(changed) => {
                if changed {
                    tracing::info!("plugin registration changed; plugins reload on next use");
                }
                changed
            }
            Err(e) => {
                tracing::error!(error = %e, "plugin registration not applied; the previous one stays in force");
                // Requeue every rollout so each shows the error at once.
                true
            }
        }
    }
}

/// Builds the runtime, registry, reconciler and loop over `cluster`.
pub async fn assemble(
    cluster: Arc<dyn Cluster>,
    config: ControllerConfig,
) -> Result<Assembled, RuntimeError> {
    let runtime = PluginRuntime::new(config.runtime.clone(), cluster.clone())?;
    let metrics = Arc::new(Metrics::new());
    runtime.set_observer(metrics.clone());
    let registry = Arc::new(
        PluginRegistry::new(
            runtime,
            config.plugins_dir.clone(),
            &config.config_namespace,
        )
        .with_max_run_bytes(config.settings.max_run_bytes),
    );
    if let Err(e) = registry.sync(cluster.as_ref()).await {
        // The controller always starts; the rollouts using the plugins it
        // could not register report that.
        tracing::error!(error = %e, "plugin registration not applied");
    }
    // Conditions run in Weir's own component, shipped beside the plugins.
    let evaluator = ConditionEvaluator::load(
        registry.runtime(),
        &crate::plugin::bundle::shipped_location(
            &config.plugins_dir,
            crate::analysis::condition::COMPONENT_FILE,
        ),
    )
    .await;
    let reconciler = Arc::new(Reconciler::new(
        cluster.clone(),
        registry.clone(),
        evaluator,
    ));
    let on_config: Arc<dyn OnConfigChange> = Arc::new(RegistrySync {
        registry: registry.clone(),
        cluster: cluster.clone(),
    });
    let controller = Controller::new(
        cluster.clone(),
        reconciler.clone(),
        metrics.clone(),
        config.settings.clone(),
    )
    .with_config(registry.config_key().clone(), on_config.clone());
    Ok(Assembled {
        controller,
        metrics,
        registry,
        reconciler,
        cluster,
        settings: config.settings,
        on_config,
    })
}
