//! The Istio traffic router, with Argo Rollouts' semantics
//! (`rollout/trafficrouting/istio/istio.go`) and a working `verify-weight`.
//!
//! Configuration is Argo's `trafficRouting.istio` block:
//! `{virtualService: {name, routes, tlsRoutes: [{port, sniHosts}], tcpRoutes: [{port}]}}`
//! or `{virtualServices: [...]}`, optionally `destinationRule: {name,
//! canarySubsetName, stableSubsetName, additionalSubsetNames}`.

mod config;
mod routes;

use config::{IstioConfig, VsRef};
use serde_json::{Value, json};
use weir_plugin_sdk::cluster::{self, ObjectRef};
use weir_plugin_sdk::objects::{self, check_weight};
use weir_plugin_sdk::router::exports::weir::plugin::traffic_router::Guest;
use weir_plugin_sdk::types::{
    HeaderRoute, MirrorRoute, ObservedWeights, PluginError, Rollout, StringMatch, Verification,
    WeightDestination, WeightVerification,
};

const VS_API: &str = "networking.istio.io/v1beta1";
const DR_API: &str = "networking.istio.io/v1beta1";
/// The label Argo Rollouts puts on pods and subsets.
const HASH_LABEL: &str = "rollouts-pod-template-hash";
/// The annotation marking a DestinationRule as managed by a Rollout.
const MANAGED_BY: &str = "argo-rollouts.argoproj.io/managed-by-rollouts";

struct Istio;

/// The parts of the Rollout object `remove-managed-routes` reads (the
/// other calls need only the `rollout` record).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RolloutObject {
    spec: RolloutSpec,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RolloutSpec {
    strategy: Strategy,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Strategy {
    canary: Canary,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Canary {
    steps: Vec<Step>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Step {
    set_header_route: Option<Named>,
    set_mirror_route: Option<Named>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Named {
    name: String,
}

/// Names of the header and mirror routes in the Rollout's steps, read
/// from the whole object (fetched from the host only for this).
fn step_routes() -> Result<Vec<String>, PluginError> {
    let object: RolloutObject = objects::rollout_fields()?;
    Ok(object
        .spec
        .strategy
        .canary
        .steps
        .into_iter()
        .flat_map(|s| [s.set_header_route, s.set_mirror_route])
        .flatten()
        .map(|r| r.name)
        .collect())
}

/// Everything a call needs from the Rollout.
struct Context<'a> {
    rollout: &'a Rollout,
    config: IstioConfig,
}

impl<'a> Context<'a> {
    fn new(rollout: &'a Rollout) -> Result<Self, PluginError> {
        let config = config::parse(&rollout.config)?;
        Ok(Context { rollout, config })
    }

    fn vs_ref(&self, vs: &VsRef) -> ObjectRef {
        let (name, namespace) = config::split_name(&vs.name);
        ObjectRef {
            api_version: VS_API.into(),
            kind: "VirtualService".into(),
            namespace: namespace.unwrap_or(&self.rollout.namespace).to_string(),
            name: name.to_string(),
        }
    }

    fn services(&self) -> routes::Services {
        let dr = self.config.destination_rule.as_ref();
        routes::Services {
            canary: self.rollout.canary_service.clone(),
            stable: self.rollout.stable_service.clone(),
            canary_subset: dr.map(|d| d.canary_subset_name.clone()).unwrap_or_default(),
            stable_subset: dr.map(|d| d.stable_subset_name.clone()).unwrap_or_default(),
            additional_subsets: dr
                .map(|d| d.additional_subset_names.clone())
                .unwrap_or_default(),
            has_destination_rule: dr.is_some(),
        }
    }

    fn dr_ref(&self) -> Option<ObjectRef> {
        self.config.destination_rule.as_ref().map(|dr| ObjectRef {
            api_version: DR_API.into(),
            kind: "DestinationRule".into(),
            namespace: self.rollout.namespace.clone(),
            name: dr.name.clone(),
        })
    }

    /// The host and subset header and mirror routes send to: the
    /// DestinationRule's host when one is configured, else the canary Service.
    fn canary_target(&self) -> Result<(String, String), PluginError> {
        match (self.dr_ref(), &self.config.destination_rule) {
            (Some(target), Some(dr)) => {
                let rule = objects::get_required(&target)?;
                let host = rule["spec"]["host"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                Ok((host, dr.canary_subset_name.clone()))
            }
            _ => Ok((self.rollout.canary_service.clone(), String::new())),
        }
    }

    /// Reads each VirtualService, lets `edit` change it, and writes back the
    /// ones that changed (reordering managed routes first, as Argo does).
    fn edit_virtual_services(
        &self,
        mut edit: impl FnMut(&VsRef, &mut Value) -> Result<bool, PluginError>,
        skip_missing: bool,
    ) -> Result<(), PluginError> {
        for vs in self.config.virtual_services()? {
            let target = self.vs_ref(vs);
            let mut object = match objects::get_required(&target) {
                Ok(o) => o,
                Err(PluginError::NotFound(_)) if skip_missing => continue,
                Err(e) => return Err(e),
            };
            if edit(vs, &mut object)? {
                routes::order_routes(&mut object, &self.rollout.managed_routes);
                cluster::update(&object.to_string())?;
            }
        }
        Ok(())
    }
}

fn string_match(m: &StringMatch) -> Value {
    match m {
        StringMatch::Exact(v) => json!({"exact": v}),
        StringMatch::Prefix(v) => json!({"prefix": v}),
        StringMatch::Regex(v) => json!({"regex": v}),
    }
}

impl Guest for Istio {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn update_hash(
        rollout: Rollout,
        canary_hash: String,
        stable_hash: String,
        additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        let ctx = Context::new(&rollout)?;
        let (Some(target), Some(dr)) = (ctx.dr_ref(), ctx.config.destination_rule.as_ref()) else {
            return Ok(());
        };
        let mut rule = objects::get_required(&target)?;
        let before = rule.clone();
        routes::update_subsets(&mut rule, dr, &canary_hash, &stable_hash, &additional)?;
        rule["metadata"]["annotations"][MANAGED_BY] = json!(rollout.name);
        if rule != before {
            cluster::update(&rule.to_string())?;
        }
        Ok(())
    }

    fn set_weight(
        rollout: Rollout,
        desired: i32,
        additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        check_weight(desired, "desired")?;
        let ctx = Context::new(&rollout)?;
        let services = ctx.services();
        ctx.edit_virtual_services(
            |vs, object| {
                routes::set_weight(
                    object,
                    vs,
                    &services,
                    &ctx.rollout.managed_routes,
                    desired.into(),
                    &additional,
                )
            },
            false,
        )
    }

    fn set_header_route(rollout: Rollout, route: HeaderRoute) -> Result<(), PluginError> {
        let ctx = Context::new(&rollout)?;
        let (host, subset) = if route.matches.is_empty() {
            Default::default()
        } else {
            ctx.canary_target()?
        };
        ctx.edit_virtual_services(
            |vs, object| {
                let before = object.clone();
                routes::remove_route(object, &route.name)?;
                if !route.matches.is_empty() {
                    let matches: Vec<Value> = route
                        .matches
                        .iter()
                        .map(|m| json!({"headers": {m.name.clone(): string_match(&m.value)}}))
                        .collect();
                    let port = routes::set_weight_port(object, vs);
                    let new_route = json!({
                        "name": route.name,
                        "match": matches,
                        "route": [routes::destination(&host, port, &subset, 100)],
                    });
                    routes::http_routes_mut(object)?.push(new_route);
                }
                Ok(*object != before)
            },
            false,
        )
    }

    fn set_mirror_route(rollout: Rollout, route: MirrorRoute) -> Result<(), PluginError> {
        let ctx = Context::new(&rollout)?;
        let percentage = route.percentage.unwrap_or(100);
        check_weight(percentage, "mirror percentage")?;
        let (host, subset) = if route.matches.is_empty() {
            Default::default()
        } else {
            ctx.canary_target()?
        };
        ctx.edit_virtual_services(
            |vs, object| {
                let before = object.clone();
                routes::remove_route(object, &route.name)?;
                if !route.matches.is_empty() {
                    let weighted = routes::set_weight_destinations(object, vs)?;
                    let matches: Vec<Value> = route
                        .matches
                        .iter()
                        .map(|m| {
                            let mut entry = serde_json::Map::new();
                            if let Some(method) = &m.method {
                                entry.insert("method".into(), string_match(method));
                            }
                            if let Some(path) = &m.path {
                                entry.insert("uri".into(), string_match(path));
                            }
                            if !m.headers.is_empty() {
                                let headers: serde_json::Map<String, Value> = m
                                    .headers
                                    .iter()
                                    .map(|h| (h.name.clone(), string_match(&h.value)))
                                    .collect();
                                entry.insert("headers".into(), Value::Object(headers));
                            }
                            Value::Object(entry)
                        })
                        .collect();
                    let mut mirror = json!({"host": host});
                    if !subset.is_empty() {
                        mirror["subset"] = json!(subset);
                    }
                    if let Some(port) = weighted
                        .first()
                        .and_then(|d| d["destination"]["port"]["number"].as_i64())
                    {
                        mirror["port"] = json!({"number": port});
                    }
                    let new_route = json!({
                        "name": route.name,
                        "match": matches,
                        "route": weighted,
                        "mirror": mirror,
                        "mirrorPercentage": {"value": percentage},
                    });
                    routes::http_routes_mut(object)?.insert(0, new_route);
                }
                Ok(*object != before)
            },
            false,
        )
    }

    fn verify_weight(
        rollout: Rollout,
        desired: i32,
        additional: Vec<WeightDestination>,
    ) -> Result<WeightVerification, PluginError> {
        let ctx = Context::new(&rollout)?;
        let services = ctx.services();
        let mut verified = true;
        let mut observed: Option<ObservedWeights> = None;
        for vs in ctx.config.virtual_services()? {
            let object = objects::get_required(&ctx.vs_ref(vs))?;
            let (matches, seen) = routes::verify(
                &object,
                vs,
                &services,
                &ctx.rollout.managed_routes,
                desired.into(),
                &additional,
            )?;
            verified &= matches;
            if observed.is_none() {
                observed = seen;
            }
        }
        Ok(WeightVerification {
            verification: if verified {
                Verification::Verified
            } else {
                Verification::NotVerified
            },
            observed,
        })
    }

    fn remove_managed_routes(rollout: Rollout) -> Result<(), PluginError> {
        let ctx = Context::new(&rollout)?;
        let step_routes = step_routes()?;
        ctx.edit_virtual_services(
            |vs, object| {
                // No HTTP routes (TLS or TCP only): nothing to remove, as
                // in Argo; HTTP routes that are not a list: an error, as in
                // Argo, rather than a silent success.
                match object.pointer("/spec/http") {
                    None | Some(Value::Null) => return Ok(false),
                    Some(Value::Array(_)) => {}
                    Some(_) => {
                        return Err(PluginError::InvalidConfig(format!(
                            "VirtualService {}: spec.http is not a list of routes",
                            vs.name
                        )));
                    }
                }
                let before = object.clone();
                for name in &step_routes {
                    routes::remove_route(object, name)?;
                }
                for name in &ctx.rollout.managed_routes {
                    routes::remove_route(object, name)?;
                }
                Ok(*object != before)
            },
            true,
        )
    }
}

weir_plugin_sdk::export_traffic_router!(Istio);
