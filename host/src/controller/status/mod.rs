//! `status` of a Rollout, in Argo's shape, plus the conditions Weir adds for
//! plugin faults.

mod conditions;
pub mod step_plugins;

use conditions::cut_message;
pub use conditions::{Condition, MAX_CONDITION_MESSAGE_BYTES, condition, make_condition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Rollout's phase (Argo's `RolloutPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutPhase {
    /// Moving through its steps, or waiting on pods.
    Progressing,
    /// Waiting at a pause.
    Paused,
    /// Fully promoted.
    Healthy,
    /// Aborted, invalid, or a plugin failed.
    Degraded,
}

impl RolloutPhase {
    /// The name Argo writes in `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Paused => "Paused",
            RolloutPhase::Healthy => "Healthy",
            RolloutPhase::Degraded => "Degraded",
        }
    }

    /// The phase Argo's name stands for (`None` for anything else).
    pub fn parse(name: &str) -> Option<RolloutPhase> {
        [
            RolloutPhase::Progressing,
            RolloutPhase::Paused,
            RolloutPhase::Healthy,
            RolloutPhase::Degraded,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `status` of a Rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutStatus {
    /// Phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the phase is what it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The spec generation this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<String>,
    /// Hash of the pod template being rolled out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_pod_hash: Option<String>,
    /// Hash of the stable ReplicaSet.
    #[serde(rename = "stableRS", skip_serializing_if = "Option::is_none")]
    pub stable_rs: Option<String>,
    /// The step being worked on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<i32>,
    /// Why the rollout is paused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pause_conditions: Vec<PauseCondition>,
    /// The controller paused it (a promote clears `pauseConditions` only).
    pub controller_pause: bool,
    /// Aborted: all traffic back to stable.
    pub abort: bool,
    /// When it was aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted_at: Option<String>,
    /// The `spec.restartAt` whose restart is done: every pod is newer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
    /// Skip the remaining steps.
    pub promote_full: bool,
    /// Pods wanted.
    pub replicas: i32,
    /// Pods of the current template.
    pub updated_replicas: i32,
    /// Ready pods.
    pub ready_replicas: i32,
    /// Available pods.
    pub available_replicas: i32,
    /// The pods' label selector (`app=checkout`), which the scale
    /// subresource reports (HPA and `kubectl scale` need it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The replica count the scale subresource reports (Argo's name).
    #[serde(rename = "HPAReplicas")]
    pub hpa_replicas: i32,
    /// Canary details.
    pub canary: CanaryStatus,
    /// The referenced Deployment's `metadata.generation` this status
    /// describes (`spec.workloadRef`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_observed_generation: Option<String>,
    /// Blue-green details (absent for a canary).
    #[serde(skip_serializing_if = "BlueGreenStatus::is_empty")]
    pub blue_green: BlueGreenStatus,
    /// Conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `status.canary`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CanaryStatus {
    /// The weights the routers were told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<TrafficWeights>,
    /// The current step's AnalysisRun.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_step_analysis_run_status: Option<AnalysisRunRef>,
    /// The background AnalysisRun.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_background_analysis_run_status: Option<AnalysisRunRef>,
    /// The current step's Experiment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_experiment: Option<String>,
    /// What the step plugins' calls left (Argo's `stepPluginStatuses`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub step_plugin_statuses: Vec<step_plugins::StepPluginStatus>,
}

/// `status.blueGreen`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BlueGreenStatus {
    /// The hash the preview Service selects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_selector: Option<String>,
    /// The hash the active Service selects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_selector: Option<String>,
    /// With `previewReplicaCount`: the preview passed its pause and
    /// analysis, and scales up to `spec.replicas` before the switch.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub scale_up_preview_check_point: bool,
    /// The pre-promotion AnalysisRun.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis_run_status: Option<AnalysisRunRef>,
    /// The post-promotion AnalysisRun.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis_run_status: Option<AnalysisRunRef>,
}

impl BlueGreenStatus {
    /// Nothing set (a canary rollout's).
    pub fn is_empty(&self) -> bool {
        *self == BlueGreenStatus::default()
    }
}

/// `status.canary.weights`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrafficWeights {
    /// The canary.
    pub canary: WeightDestination,
    /// The stable.
    pub stable: WeightDestination,
    /// Experiment destinations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<WeightDestination>,
    /// Whether every router confirmed the weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

/// One destination's weight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WeightDestination {
    /// Weight.
    pub weight: i32,
    /// Service.
    pub service_name: String,
    /// Pod-template hash.
    pub pod_template_hash: String,
}

/// A reference to an AnalysisRun and its phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AnalysisRunRef {
    /// Name.
    pub name: String,
    /// Phase.
    pub status: String,
    /// Message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Why a rollout is paused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PauseCondition {
    /// `CanaryPauseStep`, `InconclusiveAnalysisRun`, `PausedBySpec`.
    pub reason: String,
    /// When.
    pub start_time: String,
}

impl RolloutStatus {
    /// Sets the phase and the message that goes with it.
    pub fn set_phase(&mut self, phase: RolloutPhase, message: String) {
        self.phase = Some(phase.as_str().to_string());
        self.message = Some(message);
    }

    /// Whether `self` says nothing that `stored` (the status as read back)
    /// does not: equal, except that a condition's `plugin` and `call` that
    /// the stored one lacks are not news. A CRD whose schema does not know
    /// those fields (Argo's) prunes them; without this the controller would
    /// rewrite the same status on every pass and it would never settle.
    pub fn says_no_more_than(&self, stored: &RolloutStatus) -> bool {
        let mut comparable = self.clone();
        for c in &mut comparable.conditions {
            let pruned = stored
                .conditions
                .iter()
                .any(|s| s.kind == c.kind && s.plugin.is_none() && s.call.is_none());
            if pruned {
                c.plugin = None;
                c.call = None;
                c.recording = None;
            }
        }
        comparable == *stored
    }

    /// Reads `status` from a Rollout; a status that is not Argo's shape is
    /// started afresh (the controller rebuilds it from the children).
    pub fn of(object: &Value) -> Self {
        object
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default()
    }

    /// Sets (or replaces) the condition of `condition.kind`, keeping the
    /// transition time when the status did not change.
    pub fn set_condition(&mut self, mut condition: Condition, now: &str) {
        cut_message(&mut condition.message);
        condition.last_update_time = now.to_string();
        condition.last_transition_time = now.to_string();
        if let Some(existing) = self
            .conditions
            .iter_mut()
            .find(|c| c.kind == condition.kind)
        {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
                // Unchanged apart from time: keep it as it was, so the
                // status (and the store) settles.
                if existing.reason == condition.reason
                    && existing.message == condition.message
                    && existing.plugin == condition.plugin
                    && existing.call == condition.call
                    && existing.recording == condition.recording
                {
                    return;
                }
            }
            *existing = condition;
        } else {
            self.conditions.push(condition);
        }
    }

    /// Removes the condition of `kind`.
    pub fn clear_condition(&mut self, kind: &str) {
        self.conditions.retain(|c| c.kind != kind);
    }

    /// The condition of `kind`.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// The step index as a usize (0 when unset or negative).
    pub fn step_index(&self) -> usize {
        self.current_step_index
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(0)
    }

    /// Sets the step index.
    pub fn set_step_index(&mut self, index: usize) {
        self.current_step_index = Some(i32::try_from(index).unwrap_or(i32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_status_whose_plugin_fields_were_pruned_counts_as_written() {
        let mut written = RolloutStatus::default();
        let mut c = make_condition(condition::PLUGIN_FAILED, true, "Trap", "plugin p: load: x");
        c.plugin = Some("p".into());
        c.call = Some("load".into());
        written.set_condition(c, "2026-11-30T00:00:00Z");
        // Read back from a CRD that prunes `plugin` and `call` (Argo's).
        let mut stored = written.clone();
        for c in &mut stored.conditions {
            c.plugin = None;
            c.call = None;
        }
        assert!(
            written.says_no_more_than(&stored),
            "no rewrite for what was pruned"
        );
        assert!(written.says_no_more_than(&written));
        // Anything else is news.
        let mut changed = written.clone();
        changed.phase = Some("Degraded".into());
        assert!(!changed.says_no_more_than(&stored));
        // And a condition that does not exist yet is news too.
        assert!(!written.says_no_more_than(&RolloutStatus::default()));
    }

    #[test]
    fn a_long_condition_message_is_cut_and_says_so() {
        let mut status = RolloutStatus::default();
        let long = "e".repeat(1 << 20);
        status.set_condition(
            make_condition(condition::PLUGIN_FAILED, true, "Trap", long),
            "t",
        );
        let message = &status.conditions[0].message;
        assert!(
            message.len() < MAX_CONDITION_MESSAGE_BYTES + 64,
            "{}",
            message.len()
        );
        assert!(message.ends_with("[cut by Weir from 1048576 bytes]"));
    }

    #[test]
    fn reads_argo_status_and_round_trips() {
        let object = json!({"status": {"phase": "Paused", "currentStepIndex": 1, "stableRS": "abc",
            "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-01-01T00:00:00Z"}],
            "canary": {"weights": {"canary": {"weight": 20, "serviceName": "c", "podTemplateHash": "n"},
                                    "stable": {"weight": 80, "serviceName": "s", "podTemplateHash": "abc"}}}}});
        let status = RolloutStatus::of(&object);
        assert_eq!(status.step_index(), 1);
        assert_eq!(status.stable_rs.as_deref(), Some("abc"));
        assert_eq!(
            status.canary.weights.as_ref().map(|w| w.canary.weight),
            Some(20)
        );
        let back = serde_json::to_value(&status).expect("json");
        assert_eq!(back["stableRS"], "abc");
        assert_eq!(back["pauseConditions"][0]["reason"], "CanaryPauseStep");
    }

    #[test]
    fn garbage_status_starts_afresh() {
        let status = RolloutStatus::of(&json!({"status": {"currentStepIndex": "three"}}));
        assert_eq!(status, RolloutStatus::default());
    }

    #[test]
    fn an_unchanged_condition_keeps_its_times() {
        let mut status = RolloutStatus::default();
        status.set_condition(make_condition("X", true, "R", "m"), "t1");
        status.set_condition(make_condition("X", true, "R", "m"), "t2");
        assert_eq!(status.conditions[0].last_update_time, "t1");
        status.set_condition(make_condition("X", true, "R", "m2"), "t3");
        assert_eq!(status.conditions[0].last_transition_time, "t1");
        assert_eq!(status.conditions[0].last_update_time, "t3");
    }
}
