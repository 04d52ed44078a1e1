//! What stands between a blue-green preview and production traffic, and
//! between the switch and the new stable: the pre- and post-promotion
//! analyses and the `BlueGreenPause`.

use super::super::pass::{DEFAULT_WAIT, PAUSE_BLUE_GREEN, PAUSE_INCONCLUSIVE, Pass, Stop};
use crate::analysis::types::Phase;
use crate::controller::analysis_runs::RunKind;
use crate::controller::spec::RolloutAnalysis;
use crate::controller::status::AnalysisRunRef;
use chrono::{DateTime, Utc};

/// Whether the rollout may go past a gate.
pub(super) enum Gate {
    /// Yes.
    Open,
    /// Not yet (the pass is told when to look again).
    Wait,
    /// Never: the rollout aborts, for this reason.
    Abort(String),
}

/// Which of the two analyses.
#[derive(Clone, Copy)]
enum When {
    Pre,
    Post,
}

impl When {
    fn label(self) -> &'static str {
        match self {
            When::Pre => "pre-promotion",
            When::Post => "post-promotion",
        }
    }
}

impl Pass<'_> {
    /// `prePromotionAnalysis`: runs once the preview is available; its
    /// failure aborts (the active Service never moved).
    pub(super) async fn pre_promotion(&mut self, hash: &str, stable: &str) -> Result<Gate, Stop> {
        let analysis = self.view.blue_green.pre_promotion_analysis.clone();
        self.promotion_analysis(When::Pre, analysis.as_ref(), hash, stable)
            .await
    }

    /// `postPromotionAnalysis`: runs once the active Service selects the
    /// new pods; its failure aborts, and the abort switches the active
    /// Service back to the stable.
    pub(super) async fn post_promotion(&mut self, hash: &str, stable: &str) -> Result<Gate, Stop> {
        let analysis = self.view.blue_green.post_promotion_analysis.clone();
        self.promotion_analysis(When::Post, analysis.as_ref(), hash, stable)
            .await
    }

    async fn promotion_analysis(
        &mut self,
        when: When,
        analysis: Option<&RolloutAnalysis>,
        hash: &str,
        stable: &str,
    ) -> Result<Gate, Stop> {
        let Some(analysis) = analysis else {
            return Ok(Gate::Open);
        };
        let current = self.run_status(when).map(|r| r.name.clone());
        // Promoted past an inconclusive run: the operator decided.
        if current.is_some()
            && self
                .run_status(when)
                .is_some_and(|r| r.status == Phase::Inconclusive.as_str())
            && self.promoted_past_pause()
        {
            return Ok(Gate::Open);
        }
        let suffix = match when {
            When::Pre => "pre",
            When::Post => "post",
        };
        let base = format!("{}-{hash}-{suffix}", self.view.name);
        let kind = match when {
            When::Pre => RunKind::PrePromotion,
            When::Post => RunKind::PostPromotion,
        };
        let (name, advanced, reference) = self
            .analyse(&base, current.as_deref(), analysis, (hash, stable), kind)
            .await?;
        *self.run_status_mut(when) = Some(reference);
        Ok(match advanced.phase {
            Phase::Successful => Gate::Open,
            Phase::Failed | Phase::Error => Gate::Abort(format!(
                "{} analysis {name} {}: {}",
                when.label(),
                advanced.phase.as_str(),
                advanced.message
            )),
            Phase::Inconclusive => {
                if !self.has_pause(PAUSE_INCONCLUSIVE) {
                    self.add_pause(PAUSE_INCONCLUSIVE);
                }
                Gate::Wait
            }
            Phase::Pending | Phase::Running => {
                match advanced.next {
                    Some(next) => self.wake(next),
                    None => self.wake_after(DEFAULT_WAIT),
                }
                Gate::Wait
            }
        })
    }

    fn run_status(&self, when: When) -> Option<&AnalysisRunRef> {
        let blue_green = &self.status.blue_green;
        match when {
            When::Pre => blue_green.pre_promotion_analysis_run_status.as_ref(),
            When::Post => blue_green.post_promotion_analysis_run_status.as_ref(),
        }
    }

    fn run_status_mut(&mut self, when: When) -> &mut Option<AnalysisRunRef> {
        let blue_green = &mut self.status.blue_green;
        match when {
            When::Pre => &mut blue_green.pre_promotion_analysis_run_status,
            When::Post => &mut blue_green.post_promotion_analysis_run_status,
        }
    }

    /// Ends the pre- and post-promotion runs still running (an abort, a
    /// new revision); what they measured stays on them.
    pub(super) async fn end_promotion_runs(&mut self) -> Result<(), Stop> {
        for when in [When::Pre, When::Post] {
            if let Some(run) = self.run_status(when).cloned()
                && !Phase::parse(&run.status).is_some_and(Phase::completed)
            {
                self.terminate(&run.name).await?;
            }
        }
        Ok(())
    }

    /// The `BlueGreenPause` (Argo's `reconcileBlueGreenPause`): with
    /// `autoPromotionEnabled: false` the rollout waits for a `promote`;
    /// with `autoPromotionSeconds` it waits that long from when the
    /// preview was ready and had passed its analysis. True once over.
    pub(super) fn pause_done(&mut self) -> bool {
        let blue_green = &self.view.blue_green;
        if !blue_green.pauses() {
            return true;
        }
        let started = self
            .status
            .pause_conditions
            .iter()
            .find(|p| p.reason == PAUSE_BLUE_GREEN)
            .map(|p| p.start_time.clone());
        let Some(started) = started else {
            // A promote cleared the pause this rollout added.
            if self.promoted_past_pause() {
                return true;
            }
            self.add_pause(PAUSE_BLUE_GREEN);
            if blue_green.auto_promotion() {
                self.wake_after(blue_green.auto_promotion_delay());
            }
            return false;
        };
        if !blue_green.auto_promotion() {
            return false;
        }
        let start = DateTime::parse_from_rfc3339(&started)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(self.ctx.now);
        let end = chrono::Duration::from_std(blue_green.auto_promotion_delay())
            .ok()
            .and_then(|d| start.checked_add_signed(d))
            .unwrap_or(start);
        if self.ctx.now >= end {
            // controllerPause stays set, as Argo keeps it, until the
            // promotion clears it: the next pass sees the pause as over.
            self.status
                .pause_conditions
                .retain(|p| p.reason != PAUSE_BLUE_GREEN);
            true
        } else {
            self.wake(end);
            false
        }
    }
}
