// The router (the default build, and `contract-0-2`): included by lib.rs.

#[cfg(not(feature = "contract-0-2"))]
wit_bindgen::generate!({
    path: "../../wit/v0.1",
    world: "weir:plugin/traffic-router-plugin@0.1.0",
});
#[cfg(feature = "contract-0-2")]
wit_bindgen::generate!({
    path: "../../wit/v0.2",
    world: "weir:plugin/traffic-router-plugin@0.2.0",
});

use exports::weir::plugin::traffic_router::Guest;
use weir::plugin::cluster::{self, ObjectRef, PatchType};
use weir::plugin::log::{self, Level};
use weir::plugin::types::{
    HeaderRoute, MirrorRoute, ObservedWeights, PluginError, Rollout, Verification,
    WeightDestination, WeightVerification,
};

/// The contract this component was built against, written beside the weight.
#[cfg(not(feature = "contract-0-2"))]
const CONTRACT: &str = "0.1.0";
#[cfg(feature = "contract-0-2")]
const CONTRACT: &str = "0.2.0";

/// What the record's name adds to the Rollout's, so both builds can serve
/// one Rollout side by side.
#[cfg(not(feature = "contract-0-2"))]
const RECORD_SUFFIX: &str = "compat";
#[cfg(feature = "contract-0-2")]
const RECORD_SUFFIX: &str = "compat-v02";

struct Compat;

fn record_ref(rollout: &Rollout) -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: rollout.namespace.clone(),
        name: format!("{}-{RECORD_SUFFIX}", rollout.name),
    }
}

fn recorded_canary(rollout: &Rollout) -> Result<Option<i32>, PluginError> {
    let text = match cluster::get(&record_ref(rollout)) {
        Ok(text) => text,
        Err(PluginError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let object: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| PluginError::Internal(format!("the host returned bad JSON: {e}")))?;
    Ok(object
        .pointer("/data/canary")
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse().ok()))
}

impl Guest for Compat {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        log::log(
            Level::Info,
            &format!("compat router built against {CONTRACT}"),
        );
        Ok(())
    }

    fn update_hash(
        _rollout: Rollout,
        _canary_hash: String,
        _stable_hash: String,
        _additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        Ok(())
    }

    fn set_weight(
        rollout: Rollout,
        desired_weight: i32,
        _additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        let target = record_ref(&rollout);
        // The whole object comes with every call in 0.1 and 0.2.
        let object: serde_json::Value =
            serde_json::from_str(&rollout.object).unwrap_or(serde_json::Value::Null);
        let data = serde_json::json!({
            "canary": desired_weight.to_string(),
            "contract": CONTRACT,
            "objectName": object["metadata"]["name"].as_str().unwrap_or(""),
        });
        match cluster::get(&target) {
            Ok(_) => {
                let patch = serde_json::json!({ "data": data });
                cluster::patch(&target, PatchType::Merge, &patch.to_string())?;
            }
            Err(PluginError::NotFound(_)) => {
                let object = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": target.name, "namespace": target.namespace},
                    "data": data,
                });
                cluster::create(&object.to_string())?;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn set_header_route(_rollout: Rollout, _route: HeaderRoute) -> Result<(), PluginError> {
        Ok(())
    }

    fn set_mirror_route(_rollout: Rollout, _route: MirrorRoute) -> Result<(), PluginError> {
        Ok(())
    }

    fn verify_weight(
        rollout: Rollout,
        desired_weight: i32,
        _additional: Vec<WeightDestination>,
    ) -> Result<WeightVerification, PluginError> {
        let Some(canary) = recorded_canary(&rollout)? else {
            return Ok(WeightVerification {
                verification: Verification::NotVerified,
                observed: None,
            });
        };
        let verification = if canary == desired_weight {
            Verification::Verified
        } else {
            Verification::NotVerified
        };
        Ok(WeightVerification {
            verification,
            observed: Some(ObservedWeights {
                canary,
                stable: 100 - canary.clamp(0, 100),
                additional: vec![],
            }),
        })
    }

    fn remove_managed_routes(_rollout: Rollout) -> Result<(), PluginError> {
        Ok(())
    }
}

export!(Compat);
