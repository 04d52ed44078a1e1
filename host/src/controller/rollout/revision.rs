//! What every strategy does about revisions: which hash the template goes
//! by, a rollback within the rollback window, `restartAt`, a retry after
//! an abort, and the status a new revision starts from.

use super::pass::{Pass, Stop};
use crate::cluster::time_at;
use crate::controller::adoption::same_pod_template;
use crate::controller::children::{
    Revision, ensure_revision, owned_by, pod_template_hash, replica_set_name, replica_set_of,
    scale_down_others,
};
use crate::controller::restart;
use crate::controller::status::RolloutPhase;
use chrono::SecondsFormat;
use serde_json::Value;
use std::time::Duration;

/// How soon a restart still waiting on pods looks again (Argo: 30 s); a
/// ReplicaSet's status change wakes the rollout sooner.
const RESTART_CHECK: Duration = Duration::from_secs(2);

impl Pass<'_> {
    /// The hash the rollout's template goes by: Weir's, unless the
    /// rollout's current or stable ReplicaSet runs the same template under
    /// another hash (made by Argo Rollouts before Weir took over): then
    /// that one, so a takeover moves nothing. Costs a read only while the
    /// stored hashes are not Weir's.
    pub(super) async fn template_hash(&self) -> Result<String, Stop> {
        let computed = pod_template_hash(&self.view.template);
        let mut known: Vec<&String> = [&self.status.current_pod_hash, &self.status.stable_rs]
            .into_iter()
            .flatten()
            .filter(|h| !h.is_empty())
            .collect();
        known.dedup();
        if known.is_empty() || known.contains(&&computed) {
            return Ok(computed);
        }
        for candidate in known {
            let Some(rs) = replica_set_of(self.ctx.cluster, self.view, candidate).await? else {
                continue;
            };
            let same = owned_by(&rs, self.view)
                && rs
                    .pointer("/spec/template")
                    .is_some_and(|t| same_pod_template(t, &self.view.template));
            if same {
                return Ok(candidate.clone());
            }
        }
        Ok(computed)
    }

    /// `spec.restartAt`: evicts what may go of the pods older than it
    /// (see [`restart`]); true when this pass evicted some.
    pub(super) async fn restart_pods(&mut self) -> Result<bool, Stop> {
        let at = match restart::due(self.view, self.status.restarted_at.as_deref(), self.ctx.now) {
            Ok(Some(at)) => at,
            Ok(None) => return Ok(false),
            Err(ahead) => {
                self.wake(ahead);
                return Ok(false);
            }
        };
        let progress = restart::restart(self.ctx.cluster, self.view, at, self.ctx.now).await?;
        if progress.remaining == 0 {
            self.status.restarted_at = Some(at.to_rfc3339_opts(SecondsFormat::Secs, true));
        } else {
            self.wake_after(RESTART_CHECK);
        }
        Ok(progress.evicted > 0)
    }

    /// Argo's `isRollbackWithinWindow`: the ReplicaSet of `hash` exists and
    /// was created before the stable's, and fewer than
    /// `rollbackWindow.revisions` of the Rollout's ReplicaSets were created
    /// between them (by `creationTimestamp`, strictly, as Argo compares).
    pub(super) async fn rollback_within_window(
        &self,
        hash: &str,
        stable: &str,
    ) -> Result<bool, Stop> {
        if self.view.rollback_window == 0 {
            return Ok(false);
        }
        let replica_sets =
            crate::controller::children::owned_replica_sets(self.ctx.cluster, self.view).await?;
        let created = |rs: &Value| time_at(rs, "/metadata/creationTimestamp");
        let created_of = |h: &str| {
            let name = replica_set_name(&self.view.name, h);
            replica_sets
                .iter()
                .find(|rs| {
                    rs.pointer("/metadata/name").and_then(Value::as_str) == Some(name.as_str())
                })
                .and_then(created)
        };
        let (Some(target), Some(current)) = (created_of(hash), created_of(stable)) else {
            return Ok(false);
        };
        if target >= current {
            return Ok(false);
        }
        let between = replica_sets
            .iter()
            .filter_map(created)
            .filter(|t| *t > target && *t < current)
            .count() as u64;
        Ok(between < self.view.rollback_window)
    }

    /// `kubectl argo rollouts retry` (or `weir retry`) cleared `abort` on
    /// an aborted update: it runs again from the first step (where the
    /// abort left it), with new AnalysisRuns and Experiments for the ones
    /// the abort ended.
    pub(super) fn retry(&mut self) {
        tracing::info!(rollout = %self.view.name, "retried after an abort");
        self.status.aborted_at = None;
        self.set_step(0);
        self.status.pause_conditions.clear();
        self.status.controller_pause = false;
        self.status.canary.current_step_analysis_run_status = None;
        self.status.canary.current_background_analysis_run_status = None;
        self.status.canary.current_experiment = None;
        // As Argo: the plugin steps run afresh.
        self.status.canary.step_plugin_statuses.clear();
    }

    /// What every strategy does first: the hash the template goes by, and
    /// the replica counts and selector the scale subresource reports.
    pub(super) async fn begin(&mut self) -> Result<String, Stop> {
        let hash = self.template_hash().await?;
        self.status.replicas = self.view.replicas;
        self.status.hpa_replicas = self.view.replicas;
        self.status.selector = label_selector(&self.view.object);
        Ok(hash)
    }

    /// No stable yet: the first template's ReplicaSet, numbered 1 at full
    /// size, is the stable at once (as in Argo); one a failed first deploy
    /// left behind is scaled down.
    pub(super) async fn first_revision(&mut self, hash: &str) -> Result<(), Stop> {
        ensure_revision(
            self.ctx.cluster,
            self.view,
            &replica_set_name(&self.view.name, hash),
            &self.view.template,
            hash,
            self.view.replicas,
            Revision::First,
        )
        .await?;
        scale_down_others(self.ctx.cluster, self.view, &[hash]).await?;
        self.status.stable_rs = Some(hash.to_string());
        self.status.current_pod_hash = Some(hash.to_string());
        Ok(())
    }

    /// `spec.restartAt` evicted pods this pass: Argo's restarter ends the
    /// pass too (the availability counts read so far no longer hold), and
    /// the phase stays what it was.
    pub(super) async fn restarted(&mut self) -> Result<bool, Stop> {
        if !self.restart_pods().await? {
            return Ok(false);
        }
        let phase = self.status.phase.as_deref().and_then(RolloutPhase::parse);
        if let (Some(phase), Some(message)) = (phase, self.status.message.clone()) {
            self.settled = Some((phase, message));
        }
        Ok(true)
    }

    /// A new revision (`hash`) replaces `old`: the status starts again
    /// from the first step (Argo's `resetRolloutStatus`), or past the last
    /// one for a rollback within `rollbackWindow`.
    pub(super) async fn begin_revision(
        &mut self,
        old: Option<&str>,
        hash: &str,
        stable: &str,
    ) -> Result<(), Stop> {
        tracing::info!(rollout = %self.view.name, from = ?old, to = hash, "new revision");
        self.status.current_pod_hash = Some(hash.to_string());
        // A new revision's pods are all new.
        self.status.restarted_at = self
            .view
            .restart_at
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true));
        self.set_step(0);
        self.status.pause_conditions.clear();
        self.status.controller_pause = false;
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.promote_full = false;
        if self.rollback_within_window(hash, stable).await? {
            tracing::info!(rollout = %self.view.name, to = hash, "rollback within the rollback window: steps skipped");
            self.set_step(self.steps());
        }
        Ok(())
    }
}

/// `spec.selector.matchLabels` as a label-selector string, sorted (what
/// the scale subresource reports as the pods' selector).
fn label_selector(rollout: &Value) -> Option<String> {
    let labels = rollout
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)?;
    let mut terms: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    terms.sort();
    Some(terms.join(","))
}
