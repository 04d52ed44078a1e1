//! {{name}}: a Weir traffic router.
//!
//! It keeps the split in a ConfigMap (`<rollout>-traffic`, or the name given
//! as `configMap` in its configuration) that a proxy could read. Replace the
//! bodies with calls to your own traffic manager's objects.
//! The contract is `wit/weir-plugin.wit` in the Weir repository.

use serde::Deserialize;
use serde_json::json;
use weir_plugin_sdk::objects;
use weir_plugin_sdk::router::exports::weir::plugin::traffic_router::Guest;
use weir_plugin_sdk::types::{
    HeaderRoute, MirrorRoute, ObservedWeights, PluginError, Rollout, Verification, WeightDestination,
    WeightVerification,
};

/// This plugin's block in the Rollout: `trafficRouting.plugins.<name>`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    #[serde(default)]
    config_map: Option<String>,
}

fn config_map_ref(rollout: &Rollout) -> Result<weir_plugin_sdk::cluster::ObjectRef, PluginError> {
    let config: Config = if rollout.config.trim() == "null" {
        Config::default()
    } else {
        weir_plugin_sdk::parse_config("{{name}} configuration", &rollout.config)?
    };
    let name = config.config_map.unwrap_or_else(|| format!("{}-traffic", rollout.name));
    Ok(objects::object_ref("v1", "ConfigMap", &rollout.namespace, &name))
}

struct Plugin;

impl Guest for Plugin {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn update_hash(_: Rollout, _: String, _: String, _: Vec<WeightDestination>) -> Result<(), PluginError> {
        Ok(())
    }

    fn set_weight(rollout: Rollout, desired: i32, additional: Vec<WeightDestination>) -> Result<(), PluginError> {
        objects::check_weight(desired, "desired")?;
        let target = config_map_ref(&rollout)?;
        let stable = 100 - desired - additional.iter().map(|d| d.weight).sum::<i32>();
        let data = json!({
            "canary": format!("{}={desired}", rollout.canary_service),
            "stable": format!("{}={}", rollout.stable_service, stable.max(0)),
        });
        match objects::get(&target)? {
            Some(mut existing) if existing["data"] != data => {
                existing["data"] = data;
                objects::update(&existing)
            }
            Some(_) => Ok(()), // already so: no second write
            None => objects::create(&json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": target.name,
                    "namespace": target.namespace,
                    "ownerReferences": [objects::owner_reference(&rollout)],
                },
                "data": data,
            })),
        }
    }

    fn set_header_route(_: Rollout, _: HeaderRoute) -> Result<(), PluginError> {
        Ok(())
    }

    fn set_mirror_route(_: Rollout, _: MirrorRoute) -> Result<(), PluginError> {
        Ok(())
    }

    fn verify_weight(rollout: Rollout, desired: i32, _: Vec<WeightDestination>) -> Result<WeightVerification, PluginError> {
        let stored = objects::get(&config_map_ref(&rollout)?)?;
        let canary = stored
            .as_ref()
            .and_then(|o| o["data"]["canary"].as_str())
            .and_then(|v| v.rsplit_once('='))
            .and_then(|(_, w)| w.parse::<i32>().ok());
        Ok(WeightVerification {
            verification: if canary == Some(desired) { Verification::Verified } else { Verification::NotVerified },
            observed: canary.filter(|w| (0..=100).contains(w)).map(|w| ObservedWeights { canary: w, stable: 100 - w, additional: vec![] }),
        })
    }

    fn remove_managed_routes(_: Rollout) -> Result<(), PluginError> {
        Ok(())
    }
}

weir_plugin_sdk::export_traffic_router!(Plugin);
