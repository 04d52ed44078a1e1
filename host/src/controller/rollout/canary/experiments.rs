//! A canary's experiments (their weighted destinations, ending one the
//! rollout moved past) and its background analysis.

use super::super::pass::{Pass, Stop, child_failed};
use crate::analysis::types::Phase;
use crate::cluster::{ClusterError, ObjectKey, Write, resource_version};
use crate::controller::analysis_runs::RunKind;
use crate::controller::experiment::weight_destinations_from_experiment;
use crate::controller::experiments::{finish, phase_of};
use crate::controller::routing::RouterSet;
use crate::plugin::WeightDestination;
use serde_json::Value;

impl Pass<'_> {
    /// Ends the canary's step and background AnalysisRuns and its
    /// Experiment, if they still run; the status keeps naming them.
    pub(super) async fn end_runs_and_experiment(&mut self) -> Result<(), Stop> {
        let canary = self.status.canary.clone();
        for run in [
            canary.current_step_analysis_run_status,
            canary.current_background_analysis_run_status,
        ]
        .into_iter()
        .flatten()
        {
            self.terminate(&run.name).await?;
        }
        if let Some(name) = canary.current_experiment {
            self.finish_experiment(&name).await?;
        }
        Ok(())
    }

    pub(super) async fn finish_experiment(&self, name: &str) -> Result<(), Stop> {
        let key = ObjectKey::new(
            "argoproj.io/v1alpha1",
            "Experiment",
            &self.view.namespace,
            name,
        );
        let stored = match self.ctx.cluster.get(&key).await {
            Ok(e) => e,
            Err(ClusterError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !matches!(phase_of(&stored), "Pending" | "Running") {
            return Ok(());
        }
        let mut experiment = stored.clone();
        finish(
            &self.ctx,
            self.view,
            &mut experiment,
            "Failed",
            "the rollout stopped it",
        )
        .await
        .map_err(child_failed("ExperimentError"))?;
        self.ctx
            .cluster
            .apply(vec![Write::Update {
                expected_version: resource_version(&stored).map(str::to_string),
                object: experiment,
            }])
            .await?;
        Ok(())
    }

    /// The last experiment step at or before the current one (Argo's
    /// `GetCurrentExperimentStep`), with its index.
    pub(super) fn experiment_step(&self) -> Option<(usize, &Value)> {
        let index = self.status.step_index().min(self.steps());
        (0..=index)
            .rev()
            .filter_map(|i| Some((i, self.raw_step(i)?)))
            .find(|(_, step)| step.get("experiment").is_some())
    }

    /// The destinations the current experiment adds while it runs, with
    /// the weights of the last experiment step (none otherwise): a rollout
    /// moved past that step keeps them until the experiment has ended, as
    /// Argo's `calculateWeightDestinationsFromExperiment` does.
    pub(super) async fn experiment_destinations(&self) -> Result<Vec<WeightDestination>, Stop> {
        let Some(name) = &self.status.canary.current_experiment else {
            return Ok(vec![]);
        };
        let Some((_, step)) = self.experiment_step() else {
            return Ok(vec![]);
        };
        let key = ObjectKey::new(
            "argoproj.io/v1alpha1",
            "Experiment",
            &self.view.namespace,
            name,
        );
        match self.ctx.cluster.get(&key).await {
            Ok(experiment) if matches!(phase_of(&experiment), "Pending" | "Running") => {
                Ok(weight_destinations_from_experiment(step, &experiment))
            }
            Ok(_) | Err(ClusterError::NotFound(_)) => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends an experiment the rollout has moved past (a promote skipped its
    /// step, or a full promote), as Argo cancels it: its traffic share goes
    /// back to the canary first, then its pods go.
    pub(super) async fn end_passed_experiment(
        &mut self,
        routers: &RouterSet,
        hash: &str,
        stable: &str,
    ) -> Result<(), Stop> {
        let Some(name) = self.status.canary.current_experiment.clone() else {
            return Ok(());
        };
        let index = self.status.step_index();
        let at_its_step = self
            .raw_step(index)
            .is_some_and(|step| step.get("experiment").is_some());
        if at_its_step {
            return Ok(());
        }
        if !self.experiment_destinations().await?.is_empty() {
            let weight = self.view.canary.weight_at(index.min(self.steps()));
            routers.update_hash(hash, stable, &[]).await?;
            let verified = routers.set_weight(weight, &[]).await?;
            self.record_weights(weight, hash, stable, &[], verified);
        }
        self.finish_experiment(&name).await?;
        tracing::info!(rollout = %self.view.name, experiment = %name, "experiment ended: the rollout moved past its step");
        self.status.canary.current_experiment = None;
        Ok(())
    }

    pub(super) fn raw_step(&self, index: usize) -> Option<&Value> {
        self.view
            .object
            .pointer("/spec/strategy/canary/steps")
            .and_then(Value::as_array)
            .and_then(|steps| steps.get(index))
    }

    pub(super) async fn background_analysis(
        &mut self,
        hash: &str,
        stable: &str,
    ) -> Result<Option<String>, Stop> {
        let Some(background) = self.view.canary.analysis.clone() else {
            return Ok(None);
        };
        if background.analysis.templates.is_empty() {
            return Ok(None);
        }
        let starting = background
            .starting_step
            .and_then(|s| usize::try_from(s).ok())
            .unwrap_or(0);
        if self.status.step_index() < starting {
            return Ok(None);
        }
        let base = format!("{}-{hash}-background", self.view.name);
        let current = self
            .status
            .canary
            .current_background_analysis_run_status
            .as_ref()
            .map(|r| r.name.clone());
        let (name, advanced, reference) = self
            .analyse(
                &base,
                current.as_deref(),
                &background.analysis,
                (hash, stable),
                RunKind::Background,
            )
            .await?;
        self.status.canary.current_background_analysis_run_status = Some(reference);
        if let Some(next) = advanced.next {
            self.wake(next);
        }
        Ok(match advanced.phase {
            Phase::Failed | Phase::Error => Some(format!(
                "background analysis {name} {:?}: {}",
                advanced.phase, advanced.message
            )),
            _ => None,
        })
    }
}
