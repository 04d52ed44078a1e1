//! What a canary rollout owns (Argo's `rolloutCanary`): the pass reads
//! top-down in [`Pass::drive_canary`]; steps are in [`steps`], replica
//! counts and weights in [`scale`], experiments and the background
//! analysis in [`experiments`], step plugins in [`plugin_steps`], the end
//! states (promoted, aborted, back on the stable) in [`finish`].

mod experiments;
mod finish;
mod plugin_steps;
mod scale;
mod steps;

use super::pass::{Availability, PAUSE_SPEC, Pass, StepResult, Stop};
use crate::controller::retiring;
use crate::controller::routing::RouterSet;
use crate::controller::spec::RolloutView;
use crate::controller::status::{RolloutPhase, RolloutStatus};

impl Pass<'_> {
    /// One pass of a canary rollout (Argo's `rolloutCanary`).
    pub(in crate::controller::rollout) async fn drive_canary(&mut self) -> Result<(), Stop> {
        let hash = self.begin().await?;
        let routers = RouterSet::of(self.view, self.ctx.registry).await?;
        let Some(stable) = self.status.stable_rs.clone() else {
            return self.first_deploy(&routers, &hash).await;
        };
        if self.status.current_pod_hash.as_deref() != Some(hash.as_str()) {
            self.start_revision(&routers, &hash, &stable).await?;
        }
        if self.restarted().await? {
            return Ok(());
        }
        if hash == stable {
            return self.settle_on_stable(&routers, &stable).await;
        }

        if !self.status.abort && self.status.aborted_at.is_some() {
            self.retry();
        }
        let canary_target = if self.status.abort && self.view.canary.traffic_routing.is_none() {
            &stable
        } else {
            &hash
        };
        self.point_services(canary_target, &stable).await?;
        let holder = self.ensure_stable(&stable).await?;
        self.scale_down_retired(&stable, holder.as_ref()).await?;
        let additional = self.experiment_destinations().await?;
        routers.update_hash(&hash, &stable, &additional).await?;
        if self.status.abort {
            return self.abort(&routers, &hash, &stable, None).await;
        }
        if self.view.paused {
            if !self.has_pause(PAUSE_SPEC) {
                self.add_pause(PAUSE_SPEC);
            }
            return Ok(());
        }
        self.status
            .pause_conditions
            .retain(|p| p.reason != PAUSE_SPEC);
        if self.status.promote_full {
            self.terminate_plugin_steps().await;
            self.status.set_step_index(self.steps());
        }
        if let Some(message) = self.background_analysis(&hash, &stable).await? {
            return self.abort(&routers, &hash, &stable, Some(message)).await;
        }
        while self.status.step_index() < self.steps() {
            let index = self.status.step_index();
            match self.step(index, &routers, &hash, &stable).await? {
                StepResult::Next => self.status.set_step_index(index + 1),
                StepResult::Wait => break,
                StepResult::Abort(message) => {
                    return self.abort(&routers, &hash, &stable, Some(message)).await;
                }
            }
        }
        self.end_passed_experiment(&routers, &hash, &stable).await?;
        if self.status.step_index() >= self.steps() {
            return self.promote(&routers, &hash, &stable).await;
        }
        let index = self.status.step_index();
        let canary = self.canary_replicas(index);
        self.scale_canary(&hash, canary).await?;
        Ok(())
    }

    /// No stable yet: the first template goes straight to stable, as in Argo.
    async fn first_deploy(&mut self, routers: &RouterSet, hash: &str) -> Result<(), Stop> {
        self.status.current_pod_hash = Some(hash.to_string());
        self.first_revision(hash).await?;
        self.point_services(hash, hash).await?;
        routers.update_hash(hash, hash, &[]).await?;
        let verified = routers.set_weight(0, &[]).await?;
        self.record_weights(0, hash, hash, &[], verified);
        match self.availability(hash, self.view.replicas).await? {
            Availability::Ready => self.healthy(hash),
            // Healthy once its pods are available; nothing else to move.
            Availability::Waiting | Availability::Abort(_) => {
                self.status.set_step_index(self.steps());
            }
        }
        Ok(())
    }

    /// A new pod template: the old canary's runs end, its traffic goes
    /// back to the stable, and the rollout starts from the first step.
    async fn start_revision(
        &mut self,
        routers: &RouterSet,
        hash: &str,
        stable: &str,
    ) -> Result<(), Stop> {
        let old = self.status.current_pod_hash.clone();
        self.end_runs_and_experiment().await?;
        let canary = &mut self.status.canary;
        canary.current_step_analysis_run_status = None;
        canary.current_background_analysis_run_status = None;
        canary.current_experiment = None;
        // As Argo: the new revision's plugin steps start afresh (a step
        // still running for the old one is not told).
        canary.step_plugin_statuses.clear();
        // The canary being replaced (not the stable) goes away: its traffic
        // first goes back to the stable (the new canary has no pods yet),
        // and its pods after the scale-down delay, once routers have
        // stopped sending to them.
        if let Some(old) = &old
            && old != stable
            && old != hash
        {
            if self.view.canary.traffic_routing.is_some() {
                let verified = routers.set_weight(0, &[]).await?;
                self.record_weights(0, old, stable, &[], verified);
            }
            let retired = retiring::retire(
                self.ctx.cluster,
                self.view,
                stable,
                &[old.as_str()],
                self.view.canary.scale_down_delay(),
                self.ctx.now,
            )
            .await?;
            if let Some(at) = retired.earliest {
                self.wake(at);
            }
        }
        self.begin_revision(old.as_deref(), hash, stable).await
    }

    /// The canary Service selects `canary`'s pods, the stable Service
    /// `stable`'s (each when named).
    pub(super) async fn point_services(&self, canary: &str, stable: &str) -> Result<(), Stop> {
        self.select(&self.view.canary.canary_service, canary)
            .await?;
        self.select(&self.view.canary.stable_service, stable).await
    }
}

/// Progressing or Paused, with a message saying where the rollout is.
pub(super) fn progress_phase(view: &RolloutView, status: &RolloutStatus) -> (RolloutPhase, String) {
    let steps = view.canary.steps.len();
    let index = status.step_index();
    if let Some(pause) = status.pause_conditions.first() {
        return (RolloutPhase::Paused, pause.reason.clone());
    }
    let step = view
        .step(index)
        .map(|s| s.describe())
        .unwrap_or_else(|| "promoting".into());
    (
        RolloutPhase::Progressing,
        format!("step {}/{steps}: {step}", (index + 1).min(steps.max(1))),
    )
}
