//! The panic boundary's record: a reconcile that panicked is written on
//! its Rollout, and every other Rollout goes on.

use crate::cluster::{Cluster, ClusterError, ObjectKey, Write};
use crate::controller::status::{RolloutPhase, RolloutStatus, condition, make_condition};

/// Writes a `ReconcileFailed` condition and the Degraded phase on the Rollout.
pub(super) async fn record_panic(
    cluster: &dyn Cluster,
    key: &ObjectKey,
    message: &str,
) -> Result<(), ClusterError> {
    let mut object = cluster.get(key).await?;
    let mut status = RolloutStatus::of(&object);
    let now = crate::cluster::memory::now_rfc3339();
    status.set_condition(
        make_condition(
            condition::RECONCILE_FAILED,
            true,
            "ReconcilePanic",
            format!(
                "the reconcile panicked and was stopped; other rollouts are unaffected: {message}"
            ),
        ),
        &now,
    );
    status.set_phase(RolloutPhase::Degraded, format!("ReconcilePanic: {message}"));
    let status = serde_json::to_value(&status).map_err(|e| ClusterError::Invalid(e.to_string()))?;
    match object.as_object_mut() {
        Some(map) => map.insert("status".into(), status),
        None => return Err(ClusterError::Invalid(format!("{key} is not an object"))),
    };
    cluster
        .apply(vec![Write::update_as_read(object)])
        .await
        .map(drop)
}
