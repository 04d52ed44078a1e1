//! The SMI traffic router, with Argo Rollouts' semantics
//! (`rollout/trafficrouting/smi/smi.go`).
//!
//! Configuration is Argo's `trafficRouting.smi` block, `{rootService,
//! trafficSplitName}`, plus `apiVersion` (`v1alpha1`, the default, with
//! weights as quantities; `v1alpha2` or `v1alpha3` with integer weights),
//! which Argo takes from a controller flag instead.

use serde::Deserialize;
use serde_json::{Value, json};
use weir_plugin_sdk::objects::{self, check_weight_within};
use weir_plugin_sdk::router::exports::weir::plugin::traffic_router::Guest;
use weir_plugin_sdk::types::{
    HeaderRoute, MirrorRoute, ObservedWeights, PluginError, Rollout, Verification,
    WeightDestination, WeightVerification,
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SmiConfig {
    /// The service clients address; defaults to the stable service.
    #[serde(default)]
    root_service: String,
    /// The TrafficSplit's name; defaults to the rollout's.
    #[serde(default)]
    traffic_split_name: String,
    /// `v1alpha1` (default), `v1alpha2` or `v1alpha3`.
    #[serde(default)]
    api_version: Option<String>,
}

struct Split {
    name: String,
    api_version: &'static str,
    quantities: bool,
    root: String,
}

fn split_of(rollout: &Rollout) -> Result<Split, PluginError> {
    let cfg: SmiConfig = if rollout.config.trim() == "null" {
        SmiConfig::default()
    } else {
        weir_plugin_sdk::parse_config("smi configuration (trafficRouting.smi)", &rollout.config)?
    };
    let (api_version, quantities) = match cfg.api_version.as_deref().unwrap_or("v1alpha1") {
        "v1alpha1" => ("split.smi-spec.io/v1alpha1", true),
        "v1alpha2" => ("split.smi-spec.io/v1alpha2", false),
        "v1alpha3" => ("split.smi-spec.io/v1alpha3", false),
        other => {
            return Err(PluginError::InvalidConfig(format!(
                "smi configuration: apiVersion {other:?} is not one of v1alpha1, v1alpha2, v1alpha3"
            )));
        }
    };
    let name = if cfg.traffic_split_name.is_empty() {
        rollout.name.clone()
    } else {
        cfg.traffic_split_name
    };
    let root = if cfg.root_service.is_empty() {
        rollout.stable_service.clone()
    } else {
        cfg.root_service
    };
    Ok(Split {
        name,
        api_version,
        quantities,
        root,
    })
}

fn weight_value(weight: i64, quantities: bool) -> Value {
    // v1alpha1 weights are resource.Quantity, serialized as strings.
    if quantities {
        json!(weight.to_string())
    } else {
        json!(weight)
    }
}

/// The backends for `desired` out of `total` (the Rollout's
/// `maxTrafficWeight`: SMI weights are relative, so any total splits).
fn backends(
    rollout: &Rollout,
    split: &Split,
    desired: i32,
    total: i32,
    additional: &[WeightDestination],
) -> Vec<Value> {
    let mut list = vec![
        json!({"service": rollout.canary_service, "weight": weight_value(desired.into(), split.quantities)}),
    ];
    let mut stable = i64::from(total) - i64::from(desired);
    for d in additional {
        list.push(json!({"service": d.service_name, "weight": weight_value(d.weight.into(), split.quantities)}));
        stable -= i64::from(d.weight);
    }
    list.push(json!({"service": rollout.stable_service, "weight": weight_value(stable.max(0), split.quantities)}));
    list
}

fn parse_weight(v: &Value) -> Option<i32> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .and_then(|w| i32::try_from(w).ok())
}

struct Smi;

impl Guest for Smi {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn update_hash(
        _: Rollout,
        _: String,
        _: String,
        _: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        Ok(()) // Services select pods by hash; the split names services.
    }

    fn set_weight(
        rollout: Rollout,
        desired: i32,
        additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        let total = rollout.max_traffic_weight.max(1);
        check_weight_within(desired, total, "desired")?;
        let split = split_of(&rollout)?;
        let target = objects::object_ref(
            split.api_version,
            "TrafficSplit",
            &rollout.namespace,
            &split.name,
        );
        let spec = json!({"service": split.root, "backends": backends(&rollout, &split, desired, total, &additional)});
        match objects::get(&target)? {
            None => objects::create(&json!({
                "apiVersion": split.api_version,
                "kind": "TrafficSplit",
                "metadata": {
                    "name": split.name,
                    "namespace": rollout.namespace,
                    "ownerReferences": [objects::owner_reference(&rollout)],
                },
                "spec": spec,
            })),
            Some(mut existing) => {
                if !objects::is_controlled_by(&existing, &rollout) {
                    return Err(PluginError::Conflict(format!(
                        "Rollout {} does not own TrafficSplit `{}` (another object controls it); rename the split with trafficSplitName or remove the other owner",
                        rollout.name, split.name
                    )));
                }
                if existing["spec"] == spec && existing["apiVersion"] == split.api_version {
                    return Ok(());
                }
                existing["apiVersion"] = json!(split.api_version);
                existing["spec"] = spec;
                objects::update(&existing)
            }
        }
    }

    fn set_header_route(_: Rollout, route: HeaderRoute) -> Result<(), PluginError> {
        if route.matches.is_empty() {
            return Ok(()); // removing a route SMI never had
        }
        Err(PluginError::InvalidConfig(
            "SMI TrafficSplits cannot route by header; use a router that can (istio, nginx)".into(),
        ))
    }

    fn set_mirror_route(_: Rollout, route: MirrorRoute) -> Result<(), PluginError> {
        if route.matches.is_empty() {
            return Ok(());
        }
        Err(PluginError::InvalidConfig(
            "SMI TrafficSplits cannot mirror traffic; use the istio router".into(),
        ))
    }

    fn verify_weight(
        rollout: Rollout,
        desired: i32,
        additional: Vec<WeightDestination>,
    ) -> Result<WeightVerification, PluginError> {
        let split = split_of(&rollout)?;
        let target = objects::object_ref(
            split.api_version,
            "TrafficSplit",
            &rollout.namespace,
            &split.name,
        );
        let Some(existing) = objects::get(&target)? else {
            return Ok(WeightVerification {
                verification: Verification::NotVerified,
                observed: None,
            });
        };
        let total = rollout.max_traffic_weight.max(1);
        let wanted = backends(&rollout, &split, desired, total, &additional);
        let have = existing["spec"]["backends"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let same = |a: &Value, b: &Value| {
            a["service"] == b["service"] && parse_weight(&a["weight"]) == parse_weight(&b["weight"])
        };
        let verified =
            wanted.len() == have.len() && wanted.iter().zip(&have).all(|(w, h)| same(w, h));
        let mut observed = ObservedWeights {
            canary: 0,
            stable: 0,
            additional: vec![],
        };
        let mut readable = true;
        for b in &have {
            let Some(w) = parse_weight(&b["weight"]).filter(|w| (0..=total).contains(w)) else {
                readable = false;
                continue;
            };
            match b["service"].as_str().unwrap_or("") {
                s if s == rollout.canary_service => observed.canary += w,
                s if s == rollout.stable_service => observed.stable += w,
                s => observed.additional.push(WeightDestination {
                    service_name: s.into(),
                    pod_template_hash: String::new(),
                    weight: w,
                }),
            }
        }
        Ok(WeightVerification {
            verification: if verified {
                Verification::Verified
            } else {
                Verification::NotVerified
            },
            observed: readable.then_some(observed),
        })
    }

    fn remove_managed_routes(_: Rollout) -> Result<(), PluginError> {
        Ok(()) // SMI has no header or mirror routes to remove.
    }
}

weir_plugin_sdk::export_traffic_router!(Smi);
