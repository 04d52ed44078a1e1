//! The referenced Deployment sized as `workloadRef.scaleDown` says, once
//! the strategy's pass is done (see [`crate::controller::workload`]).

use super::pass::{Pass, Stop};
use crate::controller::children::{replica_set_of, revision_of};
use crate::controller::status::RolloutPhase;
use crate::controller::workload::{ScaleDown, Workload};
use serde_json::Value;

impl Pass<'_> {
    /// Scales the Deployment `workload` as its `scaleDown` asks, from the
    /// stable ReplicaSet's revision and available pods.
    pub(super) async fn scale_workload(&mut self, workload: &Workload) -> Result<(), Stop> {
        let Some(stable) = self.status.stable_rs.clone() else {
            return Ok(());
        };
        let at_zero = workload
            .deployment
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            == Some(0);
        // Nothing to decide: `never`, or `onsuccess` done (it only ever
        // scales to 0), so the pass reads no ReplicaSet for it.
        let done = match workload.scale_down {
            ScaleDown::Never => true,
            ScaleDown::OnSuccess => at_zero,
            ScaleDown::Progressively => false,
        };
        if done {
            return Ok(());
        }
        let healthy = self
            .settled
            .as_ref()
            .is_some_and(|(phase, _)| *phase == RolloutPhase::Healthy);
        let first = match replica_set_of(self.ctx.cluster, self.view, &stable).await? {
            Some(rs) => revision_of(&rs).map(|revision| {
                let available = rs
                    .pointer("/status/availableReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                (revision, available)
            }),
            None => None,
        };
        if let Some(target) = workload.target(self.view.replicas, healthy, first) {
            workload.scale(self.ctx.cluster, target).await?;
        }
        Ok(())
    }
}
