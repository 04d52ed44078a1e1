//! The Gateway API traffic router, registered as `argoproj-labs/gatewayAPI`
//! with that plugin's configuration and behaviour (argoproj-labs'
//! `rollouts-plugin-trafficrouter-gatewayapi`, 0.15): weights on the
//! stable and canary Services' backendRefs of HTTPRoutes, GRPCRoutes,
//! TCPRoutes and TLSRoutes; header routes as rules of their own; experiment
//! destinations on HTTPRoutes; the in-progress label. Unlike that plugin,
//! `verify-weight` reads the routes back, weights are out of the Rollout's
//! `maxTrafficWeight`, and an empty header route removes only itself.
//! docs/routers.md lists every difference.
//!
//! `config.rs` reads the configuration, `rules.rs` holds the JSON edits.

mod config;
mod rules;

use config::{Resolved, RouteKind, RouteTarget};
use rules::Destination;
use serde::Deserialize;
use serde_json::Value;
use weir_plugin_sdk::objects::{self, check_weight_within};
use weir_plugin_sdk::router::exports::weir::plugin::traffic_router::Guest;
use weir_plugin_sdk::types::{
    HeaderRoute, MirrorRoute, ObservedWeights, PluginError, Rollout, StringMatch, Verification,
    WeightDestination, WeightVerification,
};

/// The part of the Rollout object set-weight needs beyond the `rollout`
/// record (serde skips the rest).
#[derive(Deserialize, Default)]
#[serde(default)]
struct RolloutObject {
    status: Status,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct Status {
    canary: CanaryStatus,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct CanaryStatus {
    weights: Weights,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct Weights {
    additional: Vec<Destined>,
}
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Destined {
    service_name: String,
}

/// What one call works with.
struct Call<'a> {
    rollout: &'a Rollout,
    config: Resolved,
    /// `trafficRouting.managedRoutes[].name`.
    managed: Vec<String>,
    /// `trafficRouting.maxTrafficWeight` (100 unless set).
    total: i32,
}

impl<'a> Call<'a> {
    fn new(rollout: &'a Rollout) -> Result<Self, PluginError> {
        let config = config::resolve(rollout)?;
        if rollout.canary_service.is_empty() || rollout.stable_service.is_empty() {
            return Err(PluginError::InvalidConfig(
                "gatewayAPI needs the Rollout's canaryService and stableService".into(),
            ));
        }
        Ok(Call {
            rollout,
            config,
            managed: rollout.managed_routes.clone(),
            total: rollout.max_traffic_weight.max(1),
        })
    }

    /// The experiment Services the Rollout last sent traffic to
    /// (`status.canary.weights.additional`), from the whole object.
    fn previous_destinations(&self) -> Result<Vec<String>, PluginError> {
        let object: RolloutObject = objects::rollout_fields()?;
        Ok(object
            .status
            .canary
            .weights
            .additional
            .into_iter()
            .map(|d| d.service_name)
            .collect())
    }

    fn services(&self) -> (&str, &str) {
        (&self.rollout.canary_service, &self.rollout.stable_service)
    }

    fn target_ref(&self, target: &RouteTarget) -> weir_plugin_sdk::cluster::ObjectRef {
        objects::object_ref(
            target.kind.api_version(),
            target.kind.kind(),
            &self.config.namespace,
            &target.name,
        )
    }

    /// The routes named, then those the selectors find (header routes
    /// never go into a selected route, as in the plugin).
    fn targets(&self) -> Result<Vec<RouteTarget>, PluginError> {
        let mut targets = self.config.routes.clone();
        for selector in &self.config.selectors {
            let found = weir_plugin_sdk::cluster::list(
                selector.kind.api_version(),
                selector.kind.kind(),
                &self.config.namespace,
                Some(&selector.labels),
            )?;
            for text in found {
                let object: Value = serde_json::from_str(&text)
                    .map_err(|e| PluginError::Internal(format!("bad JSON from the host: {e}")))?;
                let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else {
                    continue;
                };
                if !targets
                    .iter()
                    .any(|t| t.kind == selector.kind && t.name == name)
                {
                    targets.push(RouteTarget {
                        kind: selector.kind,
                        name: name.to_string(),
                        use_header_routes: false,
                    });
                }
            }
        }
        Ok(targets)
    }

    /// Reads route `target`, lets `edit` change its rules, and writes it
    /// back (conditionally on the version read) when anything changed.
    fn edit(
        &self,
        target: &RouteTarget,
        edit: impl FnOnce(&mut Value) -> Result<bool, PluginError>,
    ) -> Result<(), PluginError> {
        let mut route = objects::get_required(&self.target_ref(target))?;
        if edit(&mut route)? {
            objects::update(&route)?;
        }
        Ok(())
    }

    /// An edit that cannot be made on `target`, naming it.
    fn route_error(&self, target: &RouteTarget, e: String) -> PluginError {
        PluginError::InvalidConfig(format!(
            "{} {}/{}: {e}",
            target.kind.kind(),
            self.config.namespace,
            target.name
        ))
    }

    fn rules_of<'v>(
        &self,
        route: &'v mut Value,
        target: &RouteTarget,
    ) -> Result<&'v mut Vec<Value>, PluginError> {
        route
            .pointer_mut("/spec/rules")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| {
                PluginError::InvalidConfig(format!(
                    "{} {}/{} has no spec.rules",
                    target.kind.kind(),
                    self.config.namespace,
                    target.name
                ))
            })
    }

    /// Experiment destinations with the port each Service serves on.
    fn destinations(
        &self,
        additional: &[WeightDestination],
    ) -> Result<Vec<Destination>, PluginError> {
        additional
            .iter()
            .map(|d| {
                let service = objects::get_required(&objects::object_ref(
                    "v1",
                    "Service",
                    &self.rollout.namespace,
                    &d.service_name,
                ))?;
                let ports = service
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let port = ports
                    .iter()
                    .find(|p| p["name"].as_str() == Some("http"))
                    .or_else(|| ports.first())
                    .and_then(|p| p["port"].as_i64())
                    .unwrap_or(8080);
                Ok(Destination {
                    service: d.service_name.clone(),
                    port,
                    weight: d.weight,
                })
            })
            .collect()
    }

    /// Sets (`on`) or removes the in-progress label; whether it changed.
    fn label(&self, route: &mut Value, on: bool) -> bool {
        let Some((key, value)) = &self.config.in_progress_label else {
            return false;
        };
        let Some(meta) = route.get_mut("metadata").and_then(Value::as_object_mut) else {
            return false;
        };
        if on {
            let labels = meta
                .entry("labels")
                .or_insert_with(|| Value::Object(Default::default()));
            let Some(labels) = labels.as_object_mut() else {
                return false;
            };
            let wanted = Value::String(value.clone());
            labels.insert(key.clone(), wanted.clone()) != Some(wanted)
        } else {
            let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) else {
                return false;
            };
            let removed = labels.remove(key).is_some();
            if labels.is_empty() {
                meta.remove("labels");
            }
            removed
        }
    }

    fn set_weight(&self, weight: i32, additional: &[WeightDestination]) -> Result<(), PluginError> {
        check_weight_within(weight, self.total, "canary")?;
        let destinations = self.destinations(additional)?;
        let previous_destinations = self.previous_destinations()?;
        for target in self.targets()? {
            self.edit(&target, |route| {
                let rules = self.rules_of(route, &target)?;
                let before = rules.clone();
                rules::set_weights(
                    rules,
                    target.kind,
                    self.services(),
                    (weight, self.total),
                    &self.managed,
                )
                .map_err(|e| self.route_error(&target, e))?;
                if target.kind == RouteKind::Http {
                    rules::set_experiment(
                        rules,
                        self.services(),
                        (weight, self.total),
                        &destinations,
                        &previous_destinations,
                        &self.managed,
                    );
                }
                let changed = *rules != before;
                let labelled = self.label(route, weight > 0);
                Ok(changed || labelled)
            })?;
        }
        Ok(())
    }

    fn set_header_route(&self, route: &HeaderRoute) -> Result<(), PluginError> {
        if !self.managed.iter().any(|m| m == &route.name) {
            return Err(PluginError::InvalidConfig(format!(
                "header route {:?} is not listed in trafficRouting.managedRoutes",
                route.name
            )));
        }
        let headers: Vec<Value> = route
            .matches
            .iter()
            .map(|m| match &m.value {
                StringMatch::Exact(v) => rules::header_match(&m.name, "exact", v),
                StringMatch::Prefix(v) => rules::header_match(&m.name, "prefix", v),
                StringMatch::Regex(v) => rules::header_match(&m.name, "regex", v),
            })
            .collect();
        for target in self.targets()? {
            if !(target.use_header_routes && target.kind.has_matches()) {
                continue;
            }
            self.edit(&target, |object| {
                let rules = self.rules_of(object, &target)?;
                let new = if headers.is_empty() {
                    vec![]
                } else {
                    rules::header_rules(
                        rules,
                        target.kind,
                        self.services(),
                        &route.name,
                        &headers,
                        &self.managed,
                    )
                    .map_err(|e| self.route_error(&target, e))?
                };
                Ok(rules::replace_managed(rules, &route.name, new))
            })?;
        }
        Ok(())
    }

    fn verify_weight(
        &self,
        weight: i32,
        additional: &[WeightDestination],
    ) -> Result<WeightVerification, PluginError> {
        let destinations: Vec<(String, i32)> = additional
            .iter()
            .map(|d| (d.service_name.clone(), d.weight))
            .collect();
        let mut verified = true;
        let mut observed = None;
        for target in self.targets()? {
            let mut route = objects::get_required(&self.target_ref(&target))?;
            let rules = self.rules_of(&mut route, &target)?;
            verified &= rules::holds(
                rules,
                target.kind,
                self.services(),
                (weight, self.total),
                &destinations,
                &self.managed,
            );
            if observed.is_none() {
                observed = rules::observed(
                    rules,
                    target.kind,
                    self.services(),
                    &destinations,
                    &self.managed,
                );
            }
        }
        let clamp = |w: i64| i32::try_from(w.clamp(0, i64::from(self.total))).unwrap_or(0);
        Ok(WeightVerification {
            verification: if verified {
                Verification::Verified
            } else {
                Verification::NotVerified
            },
            observed: observed.map(|split| ObservedWeights {
                canary: clamp(split.canary),
                stable: clamp(split.stable),
                additional: split
                    .destinations
                    .into_iter()
                    .map(|(service_name, weight)| WeightDestination {
                        service_name,
                        pod_template_hash: String::new(),
                        weight: clamp(weight),
                    })
                    .collect(),
            }),
        })
    }

    fn remove_managed_routes(&self) -> Result<(), PluginError> {
        for target in self.targets()? {
            if !(target.use_header_routes && target.kind.has_matches()) {
                continue;
            }
            self.edit(&target, |route| {
                let rules = self.rules_of(route, &target)?;
                Ok(rules::remove_managed(rules, &self.managed))
            })?;
        }
        Ok(())
    }
}

struct GatewayApi;

impl Guest for GatewayApi {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn update_hash(
        _rollout: Rollout,
        _canary_hash: String,
        _stable_hash: String,
        _additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        // Routes name Services, not pods: nothing to do (as in the plugin).
        Ok(())
    }

    fn set_weight(
        rollout: Rollout,
        desired_weight: i32,
        additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        Call::new(&rollout)?.set_weight(desired_weight, &additional)
    }

    fn set_header_route(rollout: Rollout, route: HeaderRoute) -> Result<(), PluginError> {
        Call::new(&rollout)?.set_header_route(&route)
    }

    fn set_mirror_route(rollout: Rollout, route: MirrorRoute) -> Result<(), PluginError> {
        // As the plugin (its issue #32): mirroring is not supported, and
        // the step does nothing. Said in the log so it is not silent.
        Call::new(&rollout)?;
        weir_plugin_sdk::log::log(
            weir_plugin_sdk::log::Level::Warn,
            &format!(
                "gatewayAPI does not support setMirrorRoute; mirror route {:?} was not set",
                route.name
            ),
        );
        Ok(())
    }

    fn verify_weight(
        rollout: Rollout,
        desired_weight: i32,
        additional: Vec<WeightDestination>,
    ) -> Result<WeightVerification, PluginError> {
        Call::new(&rollout)?.verify_weight(desired_weight, &additional)
    }

    fn remove_managed_routes(rollout: Rollout) -> Result<(), PluginError> {
        Call::new(&rollout)?.remove_managed_routes()
    }
}

weir_plugin_sdk::export_traffic_router!(GatewayApi);
