//! The stable ReplicaSet, and the old ReplicaSets retiring after their
//! scale-down delay, as every strategy keeps them.

use super::pass::{Availability, Pass, Stop};
use crate::cluster::{ClusterError, ObjectKey};
use crate::controller::children::{replica_set_name, replica_set_of, scale};
use crate::controller::retiring;
use serde_json::Value;

impl Pass<'_> {
    /// Scales the stable ReplicaSet to `replicas`; returns it as read.
    /// A stable ReplicaSet deleted by hand cannot be rebuilt without its
    /// template: the canary goes on regardless.
    pub(super) async fn size_stable(
        &mut self,
        stable: &str,
        replicas: i32,
    ) -> Result<Option<Value>, Stop> {
        let rs = replica_set_of(self.ctx.cluster, self.view, stable).await?;
        if let Some(rs) = &rs {
            scale(self.ctx.cluster, rs.clone(), replicas).await?;
        }
        Ok(rs)
    }

    /// Scales down the ReplicaSets the stable lists as retiring whose
    /// delay is over, and looks again at the next deadline.
    pub(super) async fn scale_down_retired(
        &mut self,
        stable: &str,
        holder: Option<&Value>,
    ) -> Result<(), Stop> {
        let Some(holder) = holder else {
            return Ok(());
        };
        let current = self.status.current_pod_hash.clone().unwrap_or_default();
        let due = retiring::due(
            self.ctx.cluster,
            self.view,
            stable,
            holder,
            &[stable, current.as_str()],
            self.view.scale_down_delay_revision_limit(),
            self.ctx.now,
        )
        .await?;
        if let Some(at) = due.next {
            self.wake(at);
        }
        if due.scaled > 0 {
            crate::controller::children::prune_history(self.ctx.cluster, self.view, stable).await?;
        }
        Ok(())
    }

    pub(super) async fn stable_template(&self, stable: &str) -> Result<Value, Stop> {
        let key = ObjectKey::new(
            "apps/v1",
            "ReplicaSet",
            &self.view.namespace,
            &replica_set_name(&self.view.name, stable),
        );
        match self.ctx.cluster.get(&key).await {
            Ok(rs) => Ok(rs.pointer("/spec/template").cloned().unwrap_or(Value::Null)),
            Err(ClusterError::NotFound(_)) => Ok(self.view.template.clone()),
            Err(e) => Err(e.into()),
        }
    }

    /// Traffic has left the ReplicaSet of `old`: it keeps its pods for
    /// `delay` and is listed on the ReplicaSet of `holder` (see
    /// [`retiring::retire`]); returns the holder as it is now.
    pub(super) async fn retire(
        &mut self,
        holder: &str,
        old: &str,
        delay: std::time::Duration,
    ) -> Result<Option<Value>, Stop> {
        let retired = retiring::retire(
            self.ctx.cluster,
            self.view,
            holder,
            &[old],
            delay,
            self.ctx.now,
        )
        .await?;
        if let Some(at) = retired.earliest {
            self.wake(at);
        }
        Ok(retired.holder)
    }

    /// Whether the stable ReplicaSet `holder` (as read) has every pod
    /// available: Healthy needs it, as Argo has it (a first deploy whose
    /// pods are starting, or a stable just scaled up). Past the progress
    /// deadline there is nothing to abort to: the pass says so, and the
    /// rollout shows Degraded. A stable deleted by hand counts as whole.
    pub(super) fn stable_whole(&mut self, stable: &str, holder: Option<&Value>) -> bool {
        let Some(holder) = holder else {
            return true;
        };
        let available = holder
            .pointer("/status/availableReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        match self.availability_of(stable, self.view.replicas, available) {
            Availability::Ready => true,
            Availability::Waiting => false,
            Availability::Abort(message) => {
                self.waiting = Some(message);
                false
            }
        }
    }

    /// An aborted update's ReplicaSet (`hash`) keeps its pods for `delay`,
    /// counted from when the stable (`holder`, as read) is available at
    /// full size again: marks the deadline then, and wakes the rollout at
    /// it. The ReplicaSet, once its pods are due to go (`None` until then,
    /// or when it has none).
    pub(super) async fn aborted_due(
        &mut self,
        hash: &str,
        holder: Option<&Value>,
        delay: std::time::Duration,
    ) -> Result<Option<Value>, Stop> {
        let Some(rs) = replica_set_of(self.ctx.cluster, self.view, hash).await? else {
            return Ok(None);
        };
        if rs.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0) {
            return Ok(None);
        }
        match retiring::deadline_of(&rs) {
            Some(at) if at <= self.ctx.now => Ok(Some(rs)),
            Some(at) => {
                self.wake(at);
                Ok(None)
            }
            None => {
                let available = holder
                    .and_then(|rs| rs.pointer("/status/availableReplicas"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if available >= i64::from(self.view.replicas) {
                    let at = retiring::mark(
                        self.ctx.cluster,
                        rs,
                        retiring::deadline_after(self.ctx.now, delay),
                    )
                    .await?;
                    self.wake(at);
                } else {
                    // The stable's ReplicaSet events wake the rollout; this
                    // is the fallback.
                    self.wake_after(std::time::Duration::from_secs(5));
                }
                Ok(None)
            }
        }
    }
}
