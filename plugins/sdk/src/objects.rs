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

/// The whole Rollout object as JSON, fetched from the host
/// (`rollout-object`; `null` on a call that serves no Rollout). The
/// `rollout` record carries the fields routers usually need; ask for the
/// object only when a call needs more, and once.
pub fn rollout_object() -> Result<Value, PluginError> {
    serde_json::from_str(&crate::rollout_object::get())
        .map_err(|e| PluginError::Internal(format!("the host's Rollout object is not JSON: {e}")))
}

/// The fields of the Rollout object a plugin declares in `T` (a struct of
/// `#[serde(default)]` fields), fetched from the host as
/// [`rollout_object`] is: serde skips everything else without building a
/// tree, which matters for a large Rollout. No object (`null`) gives
/// `T::default()`.
pub fn rollout_fields<T: serde::de::DeserializeOwned + Default>() -> Result<T, PluginError> {
    serde_json::from_str::<Option<T>>(&crate::rollout_object::get())
        .map(Option::unwrap_or_default)
        .map_err(|e| PluginError::Internal(format!("the host's Rollout object is not JSON: {e}")))
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
