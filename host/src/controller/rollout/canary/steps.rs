//! The canary steps (Argo's `steps`): setWeight, pause, analysis,
//! experiment, setCanaryScale, setHeaderRoute, setMirrorRoute, and
//! `plugin` (in [`super::plugin_steps`]).

use super::super::pass::{
    Availability, DEFAULT_WAIT, PAUSE_INCONCLUSIVE, PAUSE_STEP, Pass, StepResult, Stop,
    child_failed, failed,
};
use crate::analysis::types::Phase;
use crate::controller::analysis_runs::RunKind;
use crate::controller::experiment::weight_destinations_from_experiment;
use crate::controller::experiments::{advance_experiment, ensure_experiment, phase_of};
use crate::controller::routes::{header_route, mirror_route};
use crate::controller::routing::RouterSet;
use crate::controller::spec::StepKind;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

impl Pass<'_> {
    pub(super) async fn step(
        &mut self,
        index: usize,
        routers: &RouterSet,
        hash: &str,
        stable: &str,
    ) -> Result<StepResult, Stop> {
        let Some(step) = self.view.step(index).cloned() else {
            return Ok(StepResult::Next);
        };
        let kind = step.kind().map_err(failed("InvalidSpec"))?;
        match kind {
            StepKind::SetWeight => {
                let weight = step.set_weight.unwrap_or(0);
                let canary = self.canary_replicas(index);
                self.scale_canary(hash, canary).await?;
                // No traffic to canary pods that are not available: the
                // weight stays where it was until they are.
                if weight > 0 {
                    match self.availability(hash, canary.max(1)).await? {
                        Availability::Ready => {}
                        Availability::Waiting => return Ok(StepResult::Wait),
                        Availability::Abort(message) => return Ok(StepResult::Abort(message)),
                    }
                }
                let verified = routers.set_weight(weight, &[]).await?;
                self.record_weights(weight, hash, stable, &[], verified);
                if !verified {
                    self.wake_after(Duration::from_secs(1));
                    return Ok(StepResult::Wait);
                }
                Ok(StepResult::Next)
            }
            StepKind::Pause => {
                let duration = step
                    .pause
                    .as_ref()
                    .map(|p| p.duration())
                    .transpose()
                    .map_err(failed("InvalidSpec"))?
                    .flatten();
                if self.promoted_past_pause() {
                    self.status.controller_pause = false;
                    return Ok(StepResult::Next);
                }
                let started = self
                    .status
                    .pause_conditions
                    .iter()
                    .find(|p| p.reason == PAUSE_STEP)
                    .map(|p| p.start_time.clone());
                let Some(started) = started else {
                    if duration == Some(Duration::ZERO) {
                        return Ok(StepResult::Next);
                    }
                    self.add_pause(PAUSE_STEP);
                    if let Some(d) = duration {
                        self.wake_after(d);
                    }
                    return Ok(StepResult::Wait);
                };
                let Some(d) = duration else {
                    return Ok(StepResult::Wait);
                };
                let start = DateTime::parse_from_rfc3339(&started)
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or(self.ctx.now);
                let end = chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| start.checked_add_signed(d))
                    .unwrap_or(start);
                if self.ctx.now >= end {
                    self.status
                        .pause_conditions
                        .retain(|p| p.reason != PAUSE_STEP);
                    self.status.controller_pause = false;
                    Ok(StepResult::Next)
                } else {
                    self.wake(end);
                    Ok(StepResult::Wait)
                }
            }
            StepKind::Analysis => {
                if self.promoted_past_pause() {
                    // Promoted past an inconclusive analysis.
                    self.status.controller_pause = false;
                    return Ok(StepResult::Next);
                }
                let analysis = step.analysis.clone().unwrap_or_default();
                let base = format!("{}-{hash}-{index}", self.view.name);
                let current = self
                    .status
                    .canary
                    .current_step_analysis_run_status
                    .as_ref()
                    .map(|r| r.name.clone());
                let (name, advanced, reference) = self
                    .analyse(
                        &base,
                        current.as_deref(),
                        &analysis,
                        (hash, stable),
                        RunKind::Step,
                    )
                    .await?;
                self.status.canary.current_step_analysis_run_status = Some(reference);
                match advanced.phase {
                    Phase::Successful => Ok(StepResult::Next),
                    Phase::Failed | Phase::Error => Ok(StepResult::Abort(format!(
                        "analysis {name} {:?}: {}",
                        advanced.phase, advanced.message
                    ))),
                    Phase::Inconclusive => {
                        if !self.has_pause(PAUSE_INCONCLUSIVE) {
                            self.add_pause(PAUSE_INCONCLUSIVE);
                        }
                        Ok(StepResult::Wait)
                    }
                    Phase::Pending | Phase::Running => {
                        match advanced.next {
                            Some(next) => self.wake(next),
                            None => self.wake_after(DEFAULT_WAIT),
                        }
                        Ok(StepResult::Wait)
                    }
                }
            }
            StepKind::Experiment => {
                let base = format!("{}-{hash}-{index}", self.view.name);
                let current = self.status.canary.current_experiment.clone();
                let name = self
                    .name_for("Experiment", &base, current.as_deref())
                    .await?;
                let raw = self.raw_step(index).cloned().unwrap_or(Value::Null);
                let stable_template = self.stable_template(stable).await?;
                let stored = ensure_experiment(
                    self.ctx.cluster,
                    self.view,
                    &name,
                    &raw,
                    hash,
                    (stable, &stable_template),
                )
                .await
                .map_err(child_failed("ExperimentError"))?;
                let (experiment, next) = advance_experiment(&self.ctx, self.view, &stored)
                    .await
                    .map_err(child_failed("ExperimentError"))?;
                self.status.canary.current_experiment = Some(name.clone());
                let weight = self.view.canary.weight_at(index);
                match phase_of(&experiment) {
                    "Successful" => {
                        self.status.canary.current_experiment = None;
                        let verified = routers.set_weight(weight, &[]).await?;
                        self.record_weights(weight, hash, stable, &[], verified);
                        Ok(StepResult::Next)
                    }
                    phase @ ("Failed" | "Error" | "Inconclusive") => {
                        let message = experiment
                            .pointer("/status/message")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        Ok(StepResult::Abort(format!(
                            "experiment {name} {phase}: {message}"
                        )))
                    }
                    _ => {
                        let additional = weight_destinations_from_experiment(&raw, &experiment);
                        routers.update_hash(hash, stable, &additional).await?;
                        let verified = routers.set_weight(weight, &additional).await?;
                        self.record_weights(weight, hash, stable, &additional, verified);
                        match next {
                            Some(next) => self.wake(next),
                            None => self.wake_after(DEFAULT_WAIT),
                        }
                        Ok(StepResult::Wait)
                    }
                }
            }
            StepKind::SetCanaryScale => Ok(StepResult::Next),
            StepKind::SetHeaderRoute => {
                let route = header_route(step.set_header_route.as_ref().unwrap_or(&Value::Null))
                    .map_err(failed("InvalidSpec"))?;
                routers.set_header_route(&route).await?;
                Ok(StepResult::Next)
            }
            StepKind::SetMirrorRoute => {
                let route = mirror_route(step.set_mirror_route.as_ref().unwrap_or(&Value::Null))
                    .map_err(failed("InvalidSpec"))?;
                routers.set_mirror_route(&route).await?;
                Ok(StepResult::Next)
            }
            StepKind::Plugin => match &step.plugin {
                Some(plugin) => self.plugin_step(index, plugin).await,
                None => Ok(StepResult::Next),
            },
        }
    }
}
