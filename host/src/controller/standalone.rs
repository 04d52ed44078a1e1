//! AnalysisRuns and Experiments created directly, not by a Rollout (a CI
//! pipeline's smoke test, `kubectl create -f run.yaml`): reconciled on
//! their own, as Argo's analysis and experiment controllers do, through the
//! same engine and sandboxed providers as a rollout's.
//!
//! The loop hands this module every AnalysisRun key it is told about; a
//! run with a Rollout or Experiment owner is left to its owner (which
//! advances it in its own reconcile), and a completed one is not touched.

use super::analysis_runs::advance_run;
use super::context::{ChildError, Context};
use super::experiments::{advance_experiment, finish, phase_of};
use super::rollout::Outcome;
use super::spec::RolloutView;
use crate::analysis::types::Phase;
use crate::cluster::{ClusterError, ObjectKey, Write, resource_version};
use serde_json::{Value, json};

/// The label Weir (and Argo) put on the runs a Rollout or an Experiment
/// makes: an event for such a run is its owner's business.
pub const OWNED_RUN_LABEL: &str = "rollout-type";

/// Whether `run` belongs to a Rollout or an Experiment (by its owner
/// references), which advances it.
pub fn is_owned(run: &Value) -> bool {
    run.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners.iter().any(|o| {
                matches!(
                    o.get("kind").and_then(Value::as_str),
                    Some("Rollout" | "Experiment")
                )
            })
        })
}

/// Whether `run` has ended (its phase is final).
pub fn is_completed(run: &Value) -> bool {
    run.pointer("/status/phase")
        .and_then(|p| serde_json::from_value::<Phase>(p.clone()).ok())
        .is_some_and(Phase::completed)
}

/// Takes the due measurements of the standalone run at `key` and stores
/// the result; `None` when it is gone, owned, or already over.
pub(crate) async fn reconcile_run(
    ctx: &Context<'_>,
    key: &ObjectKey,
) -> Result<Option<Outcome>, ClusterError> {
    let stored = match ctx.cluster.get(key).await {
        Ok(o) => o,
        Err(ClusterError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if is_owned(&stored) || is_completed(&stored) {
        return Ok(None);
    }
    let now = ctx.now;
    match advance_run(ctx, &stored).await {
        Ok(advanced) => Ok(Some(Outcome {
            requeue: advanced
                .next
                .map(|at| (at - now).to_std().unwrap_or_default()),
            failed: false,
            phase: serde_json::to_value(advanced.phase)
                .ok()
                .and_then(|p| p.as_str().map(str::to_string))
                .unwrap_or_default(),
            written_version: advanced.written_version,
            ..Outcome::default()
        })),
        Err(message) => {
            // A store conflict (someone edited the run) or a malformed run:
            // the loop backs off and looks again.
            tracing::warn!(run = %key, %message, "standalone AnalysisRun not advanced");
            Ok(Some(Outcome {
                failed: true,
                ..Outcome::default()
            }))
        }
    }
}

/// Whether `experiment` belongs to a Rollout (an experiment step), which
/// advances it.
pub fn is_rollout_experiment(experiment: &Value) -> bool {
    experiment
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|o| o.get("kind").and_then(Value::as_str) == Some("Rollout"))
        })
}

/// Whether `experiment` has ended (its phase is final).
pub fn experiment_completed(experiment: &Value) -> bool {
    Phase::parse(phase_of(experiment)).is_some_and(Phase::completed)
}

/// Advances the standalone Experiment at `key` as Argo's experiment
/// controller does: its templates' ReplicaSets (owned by it), their
/// Services, its analyses as AnalysisRuns, until `duration` passes, an
/// analysis decides, or `spec.terminate` ends it (Successful, with what its
/// analyses measured). `None` when it is gone, owned by a Rollout, or
/// already over.
pub(crate) async fn reconcile_experiment(
    ctx: &Context<'_>,
    key: &ObjectKey,
) -> Result<Option<Outcome>, ClusterError> {
    let stored = match ctx.cluster.get(key).await {
        Ok(o) => o,
        Err(ClusterError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if is_rollout_experiment(&stored) || experiment_completed(&stored) {
        return Ok(None);
    }
    let owner = RolloutView::of_experiment(&stored);
    let terminated = stored
        .pointer("/spec/terminate")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let advanced = if terminated {
        let mut experiment = stored.clone();
        match finish(
            ctx,
            &owner,
            &mut experiment,
            "Successful",
            "Experiment terminated",
        )
        .await
        {
            Ok(()) => write(ctx, &stored, experiment)
                .await
                .map(|written| (written, None)),
            Err(e) => Err(e),
        }
    } else {
        advance_experiment(ctx, &owner, &stored).await
    };
    match advanced {
        Ok((experiment, next)) => Ok(Some(Outcome {
            requeue: next.map(|at| (at - ctx.now).to_std().unwrap_or_default()),
            phase: phase_of(&experiment).to_string(),
            written_version: resource_version(&experiment).map(str::to_string),
            ..Outcome::default()
        })),
        Err(ChildError::Cluster(e)) => {
            // Someone edited it meanwhile (or the store failed): look again.
            tracing::debug!(experiment = %key, error = %e, "standalone Experiment not advanced");
            Ok(Some(Outcome {
                failed: true,
                ..Outcome::default()
            }))
        }
        Err(ChildError::Invalid(message)) => {
            // Its spec is wrong: it ends in Error, saying why.
            tracing::warn!(experiment = %key, %message, "standalone Experiment is invalid");
            let mut experiment = stored.clone();
            if let Some(map) = experiment.as_object_mut() {
                map.insert(
                    "status".into(),
                    json!({"phase": "Error", "message": format!("InvalidSpec: {message}")}),
                );
            }
            write(ctx, &stored, experiment).await.map_err(|e| match e {
                ChildError::Cluster(e) => e,
                ChildError::Invalid(m) => ClusterError::Invalid(m),
            })?;
            Ok(Some(Outcome {
                failed: true,
                phase: "Error".into(),
                ..Outcome::default()
            }))
        }
    }
}

/// Writes `experiment` over `stored` (version-checked); what was stored.
async fn write(ctx: &Context<'_>, stored: &Value, experiment: Value) -> Result<Value, ChildError> {
    if &experiment == stored {
        return Ok(experiment);
    }
    let written = ctx
        .cluster
        .apply(vec![Write::Update {
            expected_version: resource_version(stored).map(str::to_string),
            object: experiment,
        }])
        .await?;
    Ok(written.into_iter().next().flatten().unwrap_or_default())
}
