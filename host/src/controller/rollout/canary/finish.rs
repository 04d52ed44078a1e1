//! A canary's end states: promoted, aborted, or back on the stable.

use super::super::pass::{Availability, Pass, Stop};
use crate::controller::children::{Revision, ensure_revision, replica_set_name};
use crate::controller::retiring;
use crate::controller::routing::RouterSet;
use std::time::Duration;

impl Pass<'_> {
    /// The template is the stable one (fully promoted, or rolled back).
    pub(super) async fn settle_on_stable(
        &mut self,
        routers: &RouterSet,
        stable: &str,
    ) -> Result<(), Stop> {
        // No canary: the stable has every replica (a basic canary's share
        // applies only while a canary runs).
        let holder = self.size_stable(stable, self.view.replicas).await?;
        self.scale_down_retired(stable, holder.as_ref()).await?;
        let ready = self.stable_whole(stable, holder.as_ref());
        self.point_services(stable, stable).await?;
        routers.update_hash(stable, stable, &[]).await?;
        let verified = routers.set_weight(0, &[]).await?;
        if self.uses_managed_routes() {
            routers.remove_managed_routes().await?;
        }
        if let Some(run) = self
            .status
            .canary
            .current_background_analysis_run_status
            .clone()
            && run.status != "Successful"
        {
            self.terminate(&run.name).await?;
        }
        self.record_weights(0, stable, stable, &[], verified);
        if ready {
            self.healthy(stable);
        } else {
            self.status.set_step_index(self.steps());
        }
        Ok(())
    }

    pub(super) async fn promote(
        &mut self,
        routers: &RouterSet,
        hash: &str,
        stable: &str,
    ) -> Result<(), Stop> {
        let name = replica_set_name(&self.view.name, hash);
        ensure_revision(
            self.ctx.cluster,
            self.view,
            &name,
            &self.view.template,
            hash,
            self.view.replicas,
            Revision::After(stable),
        )
        .await?;
        // The stable Service moves, and the old pods go, only once the new
        // ReplicaSet is available at full size.
        match self.availability(hash, self.view.replicas).await? {
            Availability::Ready => {}
            Availability::Waiting => return Ok(()),
            Availability::Abort(message) => {
                return self.abort(routers, hash, stable, Some(message)).await;
            }
        }
        // Point the stable Service at the new pods before taking the canary
        // weight away, so no request goes to pods about to be scaled down.
        self.point_services(hash, hash).await?;
        routers.update_hash(hash, hash, &[]).await?;
        let verified = routers.set_weight(0, &[]).await?;
        if self.uses_managed_routes() {
            routers.remove_managed_routes().await?;
        }
        if stable != hash {
            // The old stable's pods go after the scale-down delay.
            let retired = retiring::retire(
                self.ctx.cluster,
                self.view,
                hash,
                &[stable],
                self.view.canary.scale_down_delay(),
                self.ctx.now,
            )
            .await?;
            if let Some(at) = retired.earliest {
                self.wake(at);
            }
            self.scale_down_retired(hash, retired.holder.as_ref())
                .await?;
            // Old revisions beyond spec.revisionHistoryLimit go.
            crate::controller::children::prune_history(self.ctx.cluster, self.view, hash).await?;
        }
        if let Some(run) = self
            .status
            .canary
            .current_background_analysis_run_status
            .clone()
        {
            self.terminate(&run.name).await?;
        }
        // A plugin step promoted past while running is told.
        self.terminate_plugin_steps().await;
        tracing::info!(rollout = %self.view.name, from = stable, to = hash, "promoted");
        self.status.stable_rs = Some(hash.to_string());
        self.record_weights(0, hash, hash, &[], verified);
        self.healthy(hash);
        Ok(())
    }

    pub(super) async fn abort(
        &mut self,
        routers: &RouterSet,
        hash: &str,
        stable: &str,
        reason: Option<String>,
    ) -> Result<(), Stop> {
        // Step plugins undo what their steps did, first (once each).
        self.abort_plugin_steps().await;
        // With dynamicStableScale the stable grows back first, and traffic
        // follows its available pods; otherwise it was whole all along.
        let dynamic = self.view.canary.dynamic_stable_scale && stable != hash;
        let grown = if dynamic {
            self.size_stable(stable, self.view.replicas).await?
        } else {
            None
        };
        let weight = if dynamic {
            self.weight_back_to_stable(grown.as_ref())
        } else {
            0
        };
        let verified = routers.set_weight(weight, &[]).await?;
        if self.uses_managed_routes() {
            routers.remove_managed_routes().await?;
        }
        // Without a router the canary Service is the split: as Argo, it
        // selects the stable's pods before the canary's go.
        if self.view.canary.traffic_routing.is_none() {
            self.point_services(stable, stable).await?;
        }
        // A basic canary took replicas from the stable: give them back.
        let holder = if dynamic {
            grown
        } else if stable != hash {
            self.size_stable(stable, self.view.replicas).await?
        } else {
            None
        };
        if weight > 0 {
            // The canary keeps its pods while it still has traffic; the
            // stable's pods becoming available move the weight on.
            self.wake_after(Duration::from_secs(1));
        } else {
            self.scale_down_aborted(hash, stable, holder.as_ref())
                .await?;
        }
        self.end_runs_and_experiment().await?;
        // As Argo: an aborted update starts again from its first step
        // should it be retried.
        self.status.set_step_index(0);
        self.record_weights(weight, hash, stable, &[], verified);
        self.mark_aborted(reason);
        Ok(())
    }
}
