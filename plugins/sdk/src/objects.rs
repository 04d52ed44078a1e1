//! Helpers for the object edits routers make: typed reads through the
//! `cluster` import, owner references, and the Rollout's own spec.

use crate::PluginError;
use crate::cluster::{self, ObjectRef};
use crate::types::Rollout;
use serde_json::{Value, json};

/// Names an object in the rollout's namespace.
pub fn object_ref(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// Reads an object as JSON; `Ok(None)` when it does not exist.
pub fn get(target: &ObjectRef) -> Result<Option<Value>, PluginError> {
    match cluster::get(target) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            PluginError::Internal(format!(
                "{} {}/{} is not JSON: {e}",
                target.kind, target.namespace, target.name
            ))
        }),
        Err(PluginError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads an object that must exist; a missing one is `not-found` naming it.
pub fn get_required(target: &ObjectRef) -> Result<Value, PluginError> {
    get(target)?.ok_or_else(|| {
        PluginError::NotFound(format!(
            "{} {}/{} not found",
            target.kind, target.namespace, target.name
        ))
    })
}

/// Creates an object.
pub fn create(object: &Value) -> Result<(), PluginError> {
    cluster::create(&object.to_string()).map(|_| ())
}

/// Replaces an object (conditional on the resourceVersion it carries).
pub fn update(object: &Value) -> Result<(), PluginError> {
    cluster::update(&object.to_string()).map(|_| ())
}

/// The controller owner reference that marks an object as the Rollout's.
pub fn owner_reference(rollout: &Rollout) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": rollout.name,
        "uid": rollout.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether `object`'s controller owner reference is this Rollout.
pub fn is_controlled_by(object: &Value, rollout: &Rollout) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| {
            o["controller"].as_bool() == Some(true)
                && o["uid"].as_str() == Some(rollout.uid.as_str())
        })
}

/// The Rollout object as JSON (`null` when the host sent none).
pub fn rollout_object(rollout: &Rollout) -> Result<Value, PluginError> {
    if rollout.object.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&rollout.object)
        .map_err(|e| PluginError::InvalidConfig(format!("the Rollout object is not JSON: {e}")))
}

/// The fields of the Rollout object a plugin declares in `T` (a struct of
/// `#[serde(default)]` fields): serde skips everything else without
/// building a tree, which matters for a large Rollout. No object (or
/// `null`) gives `T::default()`.
pub fn rollout_fields<T: serde::de::DeserializeOwned + Default>(
    rollout: &Rollout,
) -> Result<T, PluginError> {
    if rollout.object.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str::<Option<T>>(&rollout.object)
        .map(Option::unwrap_or_default)
        .map_err(|e| PluginError::InvalidConfig(format!("the Rollout object is not JSON: {e}")))
}

/// Fails with `invalid-config` unless `weight` is within 0..=100.
pub fn check_weight(weight: i32, what: &str) -> Result<(), PluginError> {
    check_weight_within(weight, 100, what)
}

/// Fails with `invalid-config` unless `weight` is within 0..=`max`.
pub fn check_weight_within(weight: i32, max: i32, what: &str) -> Result<(), PluginError> {
    if (0..=max).contains(&weight) {
        Ok(())
    } else {
        Err(PluginError::InvalidConfig(format!(
            "{what} weight {weight} is outside 0..={max}"
        )))
    }
}

/// The Rollout's `trafficRouting.maxTrafficWeight`: the total the
/// weights are out of (100 unless set; at least 1).
pub fn max_traffic_weight(rollout: &Rollout) -> Result<i32, PluginError> {
    let object = rollout_object(rollout)?;
    let max = object
        .pointer("/spec/strategy/canary/trafficRouting/maxTrafficWeight")
        .and_then(Value::as_i64)
        .and_then(|m| i32::try_from(m).ok())
        .unwrap_or(100);
    Ok(max.max(1))
}
