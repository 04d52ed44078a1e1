//! AnalysisRuns created directly, not by a Rollout or an Experiment (a CI
//! pipeline's smoke test, `kubectl create -f run.yaml`): reconciled on
//! their own, as Argo's analysis controller does, through the same engine
//! and sandboxed providers as a rollout's runs.
//!
//! The loop hands this module every AnalysisRun key it is told about; a
//! run with a Rollout or Experiment owner is left to its owner (which
//! advances it in its own reconcile), and a completed one is not touched.

use super::analysis_runs::advance_run;
use super::context::Context;
use super::rollout::Outcome;
use crate::analysis::types::Phase;
use crate::cluster::{ClusterError, ObjectKey};
use serde_json::Value;

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
            waits_on_pods: false,
        })),
        Err(message) => {
            // A store conflict (someone edited the run) or a malformed run:
            // the loop backs off and looks again.
            tracing::warn!(run = %key, %message, "standalone AnalysisRun not advanced");
            Ok(Some(Outcome {
                requeue: None,
                failed: true,
                phase: String::new(),
                written_version: None,
                waits_on_pods: false,
            }))
        }
    }
}

/// Advances the standalone Experiment at `key`; `None` when it is gone,
/// owned by a Rollout, or already over.
pub(crate) async fn reconcile_experiment(
    _ctx: &Context<'_>,
    _key: &ObjectKey,
) -> Result<Option<Outcome>, ClusterError> {
    Ok(None)
}
