//! A blue-green rollout's end states: promoted, aborted, or on the stable.

use super::super::pass::{Pass, Stop};
use crate::controller::children::{prune_history, replica_set_name, replica_set_of, scale};
use serde_json::Value;

impl Pass<'_> {
    /// The template is the stable one (a first deploy, a promotion done,
    /// or a rollback to it): the stable at full size; both Services select
    /// it once its pods are available; Healthy then.
    pub(super) async fn settle_blue_green(&mut self, stable: &str) -> Result<(), Stop> {
        let holder = self.size_stable(stable, self.view.replicas).await?;
        self.scale_down_retired(stable, holder.as_ref()).await?;
        self.end_promotion_runs().await?;
        self.pods_metadata(stable, stable).await?;
        let ready = self.stable_whole(stable, holder.as_ref());
        // The active Service moves only to available pods; one that selects
        // other pods (a rollback to the stable) moves at once: the
        // stable's pods are what it should have.
        if ready || self.status.blue_green.active_selector.is_some() {
            self.switch_active(stable).await?;
            self.switch_preview(stable).await?;
        }
        self.status.updated_replicas = self.view.replicas;
        if ready {
            self.healthy(stable);
            self.status.blue_green.scale_up_preview_check_point = false;
        }
        Ok(())
    }

    /// Promotion is done (the switch, and the post-promotion analysis):
    /// the new ReplicaSet is the stable; the old one keeps its pods for
    /// `scaleDownDelaySeconds`, so connections the Service sent it drain.
    pub(super) async fn promote_blue_green(
        &mut self,
        hash: &str,
        stable: &str,
    ) -> Result<(), Stop> {
        let holder = self
            .retire(hash, stable, self.view.blue_green.scale_down_delay())
            .await?;
        self.scale_down_retired(hash, holder.as_ref()).await?;
        prune_history(self.ctx.cluster, self.view, hash).await?;
        tracing::info!(rollout = %self.view.name, from = stable, to = hash, "promoted");
        self.status.stable_rs = Some(hash.to_string());
        self.status.blue_green.scale_up_preview_check_point = false;
        self.pods_metadata(hash, hash).await?;
        self.switch_preview(hash).await?;
        self.healthy(hash);
        Ok(())
    }

    /// An abort (by the operator, a failed analysis, or the progress
    /// deadline): the active Service goes back to the stable (it never
    /// selects no pods: the stable was kept at full size), the runs end,
    /// and the preview's pods go after `abortScaleDownDelaySeconds`.
    pub(super) async fn abort_blue_green(
        &mut self,
        hash: &str,
        stable: &str,
        reason: Option<String>,
    ) -> Result<(), Stop> {
        let holder = replica_set_of(self.ctx.cluster, self.view, stable).await?;
        if holder.is_some() {
            self.switch_active(stable).await?;
        }
        self.end_promotion_runs().await?;
        self.scale_down_aborted_preview(hash, holder.as_ref())
            .await?;
        self.mark_aborted(reason);
        Ok(())
    }

    /// The aborted preview's pods go `abortScaleDownDelaySeconds` after
    /// the stable is available at full size again (at once for 1 s or
    /// less; never, until the next update, for 0), as Argo's
    /// `shouldDelayScaleDownOnAbort`.
    async fn scale_down_aborted_preview(
        &mut self,
        hash: &str,
        holder: Option<&Value>,
    ) -> Result<(), Stop> {
        let Some(delay) = self.view.blue_green.abort_scale_down_delay() else {
            return Ok(());
        };
        if let Some(rs) = self.aborted_due(hash, holder, delay).await? {
            scale(self.ctx.cluster, rs, 0).await?;
            tracing::info!(rollout = %self.view.name, replica_set = %replica_set_name(&self.view.name, hash), "aborted preview scaled down");
        }
        Ok(())
    }
}
