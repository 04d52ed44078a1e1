//! The typed handle of a loaded traffic-router plugin.

use super::bindings::types::{HeaderRoute, MirrorRoute, WeightDestination, WeightVerification};
use super::error::{CallError, CallErrorKind};
use super::runtime::{Plugin, PluginInfo};
use super::sandbox::{Call, Reply, execute};
use super::stats::StatsSnapshot;
use super::subject::Rollout;
use std::sync::Arc;

/// A loaded traffic router. Cheap to clone; every call runs in a fresh sandbox.
#[derive(Clone)]
pub struct TrafficRouter {
    plugin: Arc<Plugin>,
}

fn unexpected(plugin: &Plugin, method: &'static str, reply: Reply) -> CallError {
    CallError {
        plugin: plugin.spec.name.clone(),
        method,
        kind: CallErrorKind::Host(format!("unexpected reply {reply:?}")),
        recording: None,
    }
}

impl TrafficRouter {
    pub(crate) fn new(plugin: Arc<Plugin>) -> Self {
        TrafficRouter { plugin }
    }

    /// Why the plugin is in quarantine, while it is.
    pub fn quarantined(&self) -> Option<String> {
        self.plugin.quarantined()
    }

    /// What the registration's shadow candidate has done, if it has one.
    pub fn shadow_report(&self) -> Option<crate::plugin::ShadowReport> {
        self.plugin.shadow_report()
    }

    /// Facts about the plugin.
    pub fn info(&self) -> PluginInfo {
        self.plugin.info()
    }

    /// Call counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.plugin.stats.snapshot()
    }

    async fn unit(&self, call: Call<'_>) -> Result<(), CallError> {
        let method = call.method();
        match execute(&self.plugin, call).await? {
            Reply::Unit => Ok(()),
            other => Err(unexpected(&self.plugin, method, other)),
        }
    }

    /// `update-hash`.
    pub async fn update_hash(
        &self,
        rollout: &Rollout,
        canary_hash: &str,
        stable_hash: &str,
        additional: &[WeightDestination],
    ) -> Result<(), CallError> {
        self.unit(Call::UpdateHash {
            rollout,
            canary_hash,
            stable_hash,
            additional,
        })
        .await
    }

    /// `set-weight`.
    pub async fn set_weight(
        &self,
        rollout: &Rollout,
        weight: i32,
        additional: &[WeightDestination],
    ) -> Result<(), CallError> {
        self.unit(Call::SetWeight {
            rollout,
            weight,
            additional,
        })
        .await
    }

    /// `set-header-route`.
    pub async fn set_header_route(
        &self,
        rollout: &Rollout,
        route: &HeaderRoute,
    ) -> Result<(), CallError> {
        self.unit(Call::SetHeaderRoute { rollout, route }).await
    }

    /// `set-mirror-route`.
    pub async fn set_mirror_route(
        &self,
        rollout: &Rollout,
        route: &MirrorRoute,
    ) -> Result<(), CallError> {
        self.unit(Call::SetMirrorRoute { rollout, route }).await
    }

    /// `verify-weight`.
    pub async fn verify_weight(
        &self,
        rollout: &Rollout,
        weight: i32,
        additional: &[WeightDestination],
    ) -> Result<WeightVerification, CallError> {
        match execute(
            &self.plugin,
            Call::VerifyWeight {
                rollout,
                weight,
                additional,
            },
        )
        .await?
        {
            Reply::Verification(v) => Ok(v),
            other => Err(unexpected(&self.plugin, "verify-weight", other)),
        }
    }

    /// For benchmarks only: times `n` set-weight calls on one reused
    /// instance (no isolation between them, nothing committed), to compare
    /// with the fresh-instance path every real call takes.
    #[doc(hidden)]
    pub async fn bench_set_weight_on_one_instance(
        &self,
        rollout: &Rollout,
        weight: i32,
        n: usize,
    ) -> Result<Vec<std::time::Duration>, CallError> {
        super::sandbox::reused_instance_set_weight(&self.plugin, rollout, weight, n).await
    }

    /// `remove-managed-routes`.
    pub async fn remove_managed_routes(&self, rollout: &Rollout) -> Result<(), CallError> {
        self.unit(Call::RemoveManagedRoutes { rollout }).await
    }
}
