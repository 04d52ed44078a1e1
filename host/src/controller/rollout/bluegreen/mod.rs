//! What a blue-green rollout owns (Argo's `rolloutBlueGreen`): the new
//! ReplicaSet comes up beside the active one, the preview Service selects
//! it at once, and the active Service switches to it (atomically: one
//! selector write) once it is available at full size, its pre-promotion
//! analysis has passed and its pause is over; the old ReplicaSet keeps its
//! pods for `scaleDownDelaySeconds` after that, and becomes the past once
//! the post-promotion analysis passes. Routers are not called, as in Argo;
//! metric providers are, through the same sandbox.
//!
//! The pass reads top-down in [`Pass::drive_blue_green`]; the analyses and
//! the pause are in [`gates`], the end states in [`finish`], the pods'
//! metadata and anti-affinity in [`pods`].

mod finish;
mod gates;
mod pods;

use super::pass::{Availability, PAUSE_INCONCLUSIVE, PAUSE_SPEC, Pass, Stop};
use crate::controller::children::{Revision, ensure_revision, replica_set_name};
use crate::controller::spec::RolloutView;
use crate::controller::status::{RolloutPhase, RolloutStatus};
use gates::Gate;

impl Pass<'_> {
    /// One pass of a blue-green rollout.
    pub(in crate::controller::rollout) async fn drive_blue_green(&mut self) -> Result<(), Stop> {
        let hash = self.begin().await?;
        let stable = match self.status.stable_rs.clone() {
            Some(stable) => stable,
            None => self.first_blue_green(&hash).await?,
        };
        if self.status.current_pod_hash.as_deref() != Some(hash.as_str()) {
            self.start_blue_green_revision(&hash, &stable).await?;
        }
        if self.restarted().await? {
            return Ok(());
        }
        if hash == stable {
            return self.settle_blue_green(&stable).await;
        }
        if !self.status.abort && self.status.aborted_at.is_some() {
            self.retry_blue_green();
        }
        // The active pods stay at full size until the switch has happened
        // and the post-promotion analysis passed (or the rollout aborted).
        let holder = self.size_stable(&stable, self.view.replicas).await?;
        self.scale_down_retired(&stable, holder.as_ref()).await?;
        if self.status.abort {
            return self.abort_blue_green(&hash, &stable, None).await;
        }
        let preview = self.preview_replicas();
        self.ensure_new(&hash, &stable, preview).await?;
        self.pods_metadata(&hash, &stable).await?;
        let halted = self.view.paused || self.has_pause(PAUSE_INCONCLUSIVE);
        if !halted {
            self.switch_preview(&hash).await?;
        }
        if self.view.paused {
            if !self.has_pause(PAUSE_SPEC) {
                self.add_pause(PAUSE_SPEC);
            }
            return Ok(());
        }
        if self.has_pause(PAUSE_SPEC) {
            // Unpaused: the controller's own pause is not over with it.
            self.status
                .pause_conditions
                .retain(|p| p.reason != PAUSE_SPEC);
            self.status.controller_pause = !self.status.pause_conditions.is_empty();
        }
        match self.availability(&hash, preview).await? {
            Availability::Ready => {}
            Availability::Waiting => return Ok(()),
            Availability::Abort(message) => {
                return self.abort_blue_green(&hash, &stable, Some(message)).await;
            }
        }
        if self.status.blue_green.active_selector.as_deref() != Some(hash.as_str()) {
            if !self.status.promote_full {
                match self.pre_promotion(&hash, &stable).await? {
                    Gate::Open => {}
                    Gate::Wait => return Ok(()),
                    Gate::Abort(message) => {
                        return self.abort_blue_green(&hash, &stable, Some(message)).await;
                    }
                }
                if !self.pause_done() {
                    return Ok(());
                }
            }
            // previewReplicaCount: the preview grows to full size before
            // it takes production traffic.
            if preview < self.view.replicas {
                self.status.blue_green.scale_up_preview_check_point = true;
                self.ensure_new(&hash, &stable, self.view.replicas).await?;
                match self.availability(&hash, self.view.replicas).await? {
                    Availability::Ready => {}
                    Availability::Waiting => return Ok(()),
                    Availability::Abort(message) => {
                        return self.abort_blue_green(&hash, &stable, Some(message)).await;
                    }
                }
            }
            self.switch_active(&hash).await?;
        }
        if !self.status.promote_full {
            match self.post_promotion(&hash, &stable).await? {
                Gate::Open => {}
                Gate::Wait => return Ok(()),
                Gate::Abort(message) => {
                    return self.abort_blue_green(&hash, &stable, Some(message)).await;
                }
            }
        }
        self.promote_blue_green(&hash, &stable).await
    }

    /// No stable yet: the first template is the stable at once, as in
    /// Argo (no analysis, no pause); the active Service selects it once its
    /// pods are available.
    async fn first_blue_green(&mut self, hash: &str) -> Result<String, Stop> {
        self.first_revision(hash).await?;
        Ok(hash.to_string())
    }

    /// A new pod template: the runs of the one it replaces end, and a
    /// preview nobody promoted retires after the scale-down delay.
    async fn start_blue_green_revision(&mut self, hash: &str, stable: &str) -> Result<(), Stop> {
        let old = self.status.current_pod_hash.clone();
        self.end_promotion_runs().await?;
        let blue_green = &mut self.status.blue_green;
        blue_green.pre_promotion_analysis_run_status = None;
        blue_green.post_promotion_analysis_run_status = None;
        blue_green.scale_up_preview_check_point = false;
        if let Some(old) = &old
            && old != stable
            && old != hash
        {
            self.retire(stable, old, self.view.blue_green.scale_down_delay())
                .await?;
        }
        self.begin_revision(old.as_deref(), hash, stable).await
    }

    /// The new ReplicaSet at `replicas`, numbered after the stable's, its
    /// pods kept off the stable's nodes when `antiAffinity` says so.
    async fn ensure_new(&mut self, hash: &str, stable: &str, replicas: i32) -> Result<(), Stop> {
        let template = self.new_template(stable);
        ensure_revision(
            self.ctx.cluster,
            self.view,
            &replica_set_name(&self.view.name, hash),
            &template,
            hash,
            replicas,
            Revision::After(stable),
        )
        .await?;
        self.status.updated_replicas = replicas;
        self.status.ready_replicas = self.view.replicas;
        self.status.available_replicas = self.view.replicas;
        Ok(())
    }

    /// How many pods the new ReplicaSet has before the switch:
    /// `previewReplicaCount`, or all of them (a full promote, or once the
    /// preview passed its checks).
    fn preview_replicas(&self) -> i32 {
        let replicas = self.view.replicas;
        if self.status.promote_full || self.status.blue_green.scale_up_preview_check_point {
            return replicas;
        }
        self.view
            .blue_green
            .preview_replicas(replicas)
            .unwrap_or(replicas)
    }

    /// The preview Service (when there is one) selects `hash`.
    async fn switch_preview(&mut self, hash: &str) -> Result<(), Stop> {
        let service = self.view.blue_green.preview_service.clone();
        if service.is_empty() {
            return Ok(());
        }
        self.select(&service, hash).await?;
        self.status.blue_green.preview_selector = Some(hash.to_string());
        Ok(())
    }

    /// The active Service selects `hash`: one write of its selector, so it
    /// never selects no pods (`hash`'s are available before this is called).
    async fn switch_active(&mut self, hash: &str) -> Result<(), Stop> {
        let service = self.view.blue_green.active_service.clone();
        if self.status.blue_green.active_selector.as_deref() != Some(hash) {
            tracing::info!(rollout = %self.view.name, to = hash, "active Service switched");
        }
        self.select(&service, hash).await?;
        self.status.blue_green.active_selector = Some(hash.to_string());
        Ok(())
    }

    /// `retry` cleared `abort` on an aborted update: the preview comes back
    /// and goes through its checks again, with fresh AnalysisRuns.
    fn retry_blue_green(&mut self) {
        self.retry();
        let blue_green = &mut self.status.blue_green;
        blue_green.pre_promotion_analysis_run_status = None;
        blue_green.post_promotion_analysis_run_status = None;
        blue_green.scale_up_preview_check_point = false;
    }
}

/// Progressing or Paused, with a message saying where the rollout is (as
/// Argo's `CalculateRolloutPhase` words it).
pub(super) fn progress_phase(view: &RolloutView, status: &RolloutStatus) -> (RolloutPhase, String) {
    if let Some(pause) = status.pause_conditions.first() {
        return (RolloutPhase::Paused, pause.reason.clone());
    }
    let current = status.current_pod_hash.as_deref();
    let message = if status.updated_replicas < view.replicas {
        "more replicas need to be updated"
    } else if status.blue_green.active_selector.as_deref() != current {
        "active service cutover pending"
    } else {
        "waiting for post-promotion analysis to complete"
    };
    (RolloutPhase::Progressing, message.to_string())
}
