//! The traffic routers of one Rollout, called together: every router gets
//! every call, in the order the Rollout names them, and the first failure
//! stops the sequence with the plugin and call it came from.

use super::registry::PluginRegistry;
use super::spec::RolloutView;
use crate::plugin::error::reported_parts;
use crate::plugin::{
    CallError, CallErrorKind, HeaderRoute, MirrorRoute, Rollout, TrafficRouter, Verification,
    WeightDestination,
};

/// A plugin that failed a call, or could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plugin {plugin}: {call}: {message}")]
pub struct PluginFailure {
    /// The plugin's registered name.
    pub plugin: String,
    /// The call (`set-weight`), or `load`.
    pub call: String,
    /// The error kind as a CamelCase reason (`Trap`, `Timeout`, `LoadFailed`).
    pub reason: String,
    /// The full typed error.
    pub message: String,
    /// The flight recorder's recording of the failed call, if it kept one.
    pub recording: Option<String>,
}

impl PluginFailure {
    pub(crate) fn from_call(error: CallError) -> Self {
        // An error the plugin reported is named by its case
        // (`InvalidConfig`, `NotFound`...), a fault by its kind (`Trap`).
        let reason = match &error.kind {
            CallErrorKind::Reported(reported) => camel_case(reported_parts(reported).0),
            other => camel_case(other.name()),
        };
        PluginFailure {
            plugin: error.plugin.clone(),
            call: error.method.to_string(),
            reason,
            message: match &error.recording {
                // In the message too: a CRD that prunes Weir's own
                // condition fields keeps it there.
                Some(path) => format!("{} [recorded: weir plugin replay {path}]", error.kind),
                None => error.kind.to_string(),
            },
            recording: error.recording.clone(),
        }
    }
}

/// `memory-limit` → `MemoryLimit`.
fn camel_case(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// The routers of one Rollout, with the contract record each is called with.
pub struct RouterSet {
    routers: Vec<(TrafficRouter, Rollout)>,
}

impl RouterSet {
    /// Loads (or finds) every router the Rollout names.
    pub async fn of(view: &RolloutView, registry: &PluginRegistry) -> Result<Self, PluginFailure> {
        let Some(routing) = &view.canary.traffic_routing else {
            return Ok(RouterSet { routers: vec![] });
        };
        let object = &view.object;
        let mut routers = Vec::new();
        for (name, config) in routing.routers() {
            let router = registry
                .router(&name)
                .await
                .map_err(|message| PluginFailure {
                    plugin: name.clone(),
                    call: "load".into(),
                    reason: "LoadFailed".into(),
                    message,
                    recording: None,
                })?;
            let record = Rollout {
                namespace: view.namespace.clone(),
                name: view.name.clone(),
                uid: view.uid.clone(),
                stable_service: view.canary.stable_service.clone(),
                canary_service: view.canary.canary_service.clone(),
                config: config.to_string(),
                object: object.clone(),
            };
            routers.push((router, record));
        }
        Ok(RouterSet { routers })
    }

    /// `update-hash` on every router.
    pub async fn update_hash(
        &self,
        canary: &str,
        stable: &str,
        additional: &[WeightDestination],
    ) -> Result<(), PluginFailure> {
        for (router, rollout) in &self.routers {
            router
                .update_hash(rollout, canary, stable, additional)
                .await
                .map_err(PluginFailure::from_call)?;
        }
        Ok(())
    }

    /// `set-weight` on every router, then `verify-weight`; whether every
    /// router confirmed (a router that cannot verify counts as confirmed).
    pub async fn set_weight(
        &self,
        weight: i32,
        additional: &[WeightDestination],
    ) -> Result<bool, PluginFailure> {
        let mut verified = true;
        for (router, rollout) in &self.routers {
            router
                .set_weight(rollout, weight, additional)
                .await
                .map_err(PluginFailure::from_call)?;
            let check = router
                .verify_weight(rollout, weight, additional)
                .await
                .map_err(PluginFailure::from_call)?;
            if check.verification == Verification::NotVerified {
                verified = false;
            }
        }
        Ok(verified)
    }

    /// `set-header-route` on every router.
    pub async fn set_header_route(&self, route: &HeaderRoute) -> Result<(), PluginFailure> {
        for (router, rollout) in &self.routers {
            router
                .set_header_route(rollout, route)
                .await
                .map_err(PluginFailure::from_call)?;
        }
        Ok(())
    }

    /// `set-mirror-route` on every router.
    pub async fn set_mirror_route(&self, route: &MirrorRoute) -> Result<(), PluginFailure> {
        for (router, rollout) in &self.routers {
            router
                .set_mirror_route(rollout, route)
                .await
                .map_err(PluginFailure::from_call)?;
        }
        Ok(())
    }

    /// `remove-managed-routes` on every router.
    pub async fn remove_managed_routes(&self) -> Result<(), PluginFailure> {
        for (router, rollout) in &self.routers {
            router
                .remove_managed_routes(rollout)
                .await
                .map_err(PluginFailure::from_call)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_are_camel_case() {
        assert_eq!(super::camel_case("memory-limit"), "MemoryLimit");
        assert_eq!(super::camel_case("trap"), "Trap");
    }
}
