//! The Services a strategy points at its ReplicaSets' pods, by hash.

use super::HASH_LABEL;
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write};
use serde_json::{Value, json};

/// Points `service`'s selector at `hash`. A missing Service is an error
/// naming it: the routers would send traffic nowhere.
pub async fn select_hash(
    cluster: &dyn Cluster,
    namespace: &str,
    service: &str,
    hash: &str,
) -> Result<(), ClusterError> {
    let key = ObjectKey::new("v1", "Service", namespace, service);
    let mut object = cluster.get(&key).await.map_err(|e| match e {
        ClusterError::NotFound(_) => ClusterError::NotFound(format!(
            "Service {namespace}/{service} (named by the Rollout's strategy) not found: create it"
        )),
        other => other,
    })?;
    let current = object
        .pointer(&format!("/spec/selector/{HASH_LABEL}"))
        .and_then(Value::as_str);
    if current == Some(hash) {
        return Ok(());
    }
    let Some(map) = object.as_object_mut() else {
        return Err(ClusterError::Invalid(format!("{key} is not an object")));
    };
    let spec = map.entry("spec").or_insert_with(|| json!({}));
    let Some(spec) = spec.as_object_mut() else {
        return Err(ClusterError::Invalid(format!(
            "{key}: spec is not an object"
        )));
    };
    let selector = spec.entry("selector").or_insert_with(|| json!({}));
    match selector.as_object_mut() {
        Some(selector) => {
            selector.insert(HASH_LABEL.into(), Value::String(hash.into()));
        }
        None => *selector = json!({HASH_LABEL: hash}),
    }
    cluster
        .apply(vec![Write::update_as_read(object)])
        .await
        .map(drop)
}
