//! `spec.strategy.blueGreen`, read strictly: each field Argo defines is
//! either acted on or refused by name, and every number is checked before
//! the controller uses it.

use super::numbers::whole_number;
use super::steps::RolloutAnalysis;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// Argo's default for `scaleDownDelaySeconds` and `abortScaleDownDelaySeconds`.
const DEFAULT_DELAY: Duration = Duration::from_secs(30);

/// `spec.strategy.blueGreen`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// The Service that takes production traffic: switched to the new
    /// pods on promotion.
    #[serde(default)]
    pub active_service: String,
    /// The Service that selects the new pods before promotion (optional).
    #[serde(default)]
    pub preview_service: String,
    /// `autoPromotionEnabled` (default true): promote without a `promote`.
    #[serde(default)]
    pub auto_promotion_enabled: Option<bool>,
    /// `autoPromotionSeconds`: with auto-promotion, wait this long at the
    /// pause first.
    #[serde(default)]
    pub auto_promotion_seconds: Option<Value>,
    /// `previewReplicaCount`: the new ReplicaSet's size until promotion.
    #[serde(default)]
    pub preview_replica_count: Option<Value>,
    /// Analysis before the active Service switches; failure aborts.
    #[serde(default)]
    pub pre_promotion_analysis: Option<RolloutAnalysis>,
    /// Analysis after the switch; failure aborts and switches back.
    #[serde(default)]
    pub post_promotion_analysis: Option<RolloutAnalysis>,
    /// `scaleDownDelaySeconds` (default 30): how long the old active keeps
    /// its pods after the switch.
    #[serde(default)]
    pub scale_down_delay_seconds: Option<Value>,
    /// `scaleDownDelayRevisionLimit`: how many old ReplicaSets may wait out
    /// their delay at once.
    #[serde(default)]
    pub scale_down_delay_revision_limit: Option<Value>,
    /// `abortScaleDownDelaySeconds` (default 30; 0 keeps the aborted
    /// preview's pods until the next update).
    #[serde(default)]
    pub abort_scale_down_delay_seconds: Option<Value>,
    /// Labels and annotations for the pods the active Service selects.
    #[serde(default)]
    pub active_metadata: Option<PodMetadata>,
    /// Labels and annotations for the preview's pods.
    #[serde(default)]
    pub preview_metadata: Option<PodMetadata>,
    /// Keeps the new pods off the nodes of the stable's.
    #[serde(default)]
    pub anti_affinity: Option<AntiAffinity>,
    /// `maxUnavailable`: how many pods a restart may take down at once.
    #[serde(default)]
    pub max_unavailable: Option<Value>,
}

/// `activeMetadata` / `previewMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodMetadata {
    /// Labels added to the pods.
    #[serde(default)]
    pub labels: Map<String, Value>,
    /// Annotations added to the pods.
    #[serde(default)]
    pub annotations: Map<String, Value>,
}

/// `antiAffinity`: exactly one of the two.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AntiAffinity {
    /// A preferred rule, with its weight (1..=100).
    #[serde(default, rename = "preferredDuringSchedulingIgnoredDuringExecution")]
    pub preferred: Option<PreferredAntiAffinity>,
    /// A required rule.
    #[serde(default, rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    pub required: Option<Map<String, Value>>,
}

/// `antiAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferredAntiAffinity {
    /// The rule's weight.
    pub weight: i32,
}

impl BlueGreenStrategy {
    /// Reads and checks `spec.strategy.blueGreen`; the error names the
    /// field and the fix.
    pub fn parse(value: &Value, revision_history_limit: usize) -> Result<Self, String> {
        let strategy: BlueGreenStrategy = serde_json::from_value(value.clone())
            .map_err(|e| format!("spec.strategy.blueGreen: {e}"))?;
        if strategy.active_service.is_empty() {
            return Err("spec.strategy.blueGreen.activeService is required: name the Service that takes production traffic".into());
        }
        if strategy.active_service == strategy.preview_service {
            return Err(format!(
                "spec.strategy.blueGreen: activeService and previewService are both {:?}; two different Services are required",
                strategy.active_service
            ));
        }
        for (field, value) in [
            ("autoPromotionSeconds", &strategy.auto_promotion_seconds),
            ("previewReplicaCount", &strategy.preview_replica_count),
            ("scaleDownDelaySeconds", &strategy.scale_down_delay_seconds),
            (
                "scaleDownDelayRevisionLimit",
                &strategy.scale_down_delay_revision_limit,
            ),
            (
                "abortScaleDownDelaySeconds",
                &strategy.abort_scale_down_delay_seconds,
            ),
        ] {
            check_count(field, value.as_ref())?;
        }
        if let Some(limit) = strategy.scale_down_delay_revision_limit()
            && limit > revision_history_limit
        {
            return Err(format!(
                "spec.strategy.blueGreen.scaleDownDelayRevisionLimit {limit} is above spec.revisionHistoryLimit {revision_history_limit}: lower it, or raise the history limit"
            ));
        }
        for (field, analysis) in [
            ("prePromotionAnalysis", &strategy.pre_promotion_analysis),
            ("postPromotionAnalysis", &strategy.post_promotion_analysis),
        ] {
            if analysis.as_ref().is_some_and(|a| a.templates.is_empty()) {
                return Err(format!(
                    "spec.strategy.blueGreen.{field} needs at least one template"
                ));
            }
        }
        if let Some(anti) = &strategy.anti_affinity {
            match (&anti.preferred, &anti.required) {
                (Some(p), None) if !(1..=100).contains(&p.weight) => {
                    return Err(format!(
                        "spec.strategy.blueGreen.antiAffinity weight {} must be within 1..=100",
                        p.weight
                    ));
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err("spec.strategy.blueGreen.antiAffinity must set exactly one of preferredDuringSchedulingIgnoredDuringExecution and requiredDuringSchedulingIgnoredDuringExecution".into());
                }
            }
        }
        Ok(strategy)
    }

    /// `autoPromotionEnabled`, true unless set false.
    pub fn auto_promotion(&self) -> bool {
        self.auto_promotion_enabled.unwrap_or(true)
    }

    /// `autoPromotionSeconds` (0 when unset).
    pub fn auto_promotion_delay(&self) -> Duration {
        Duration::from_secs(
            count("autoPromotionSeconds", &self.auto_promotion_seconds).unwrap_or(0),
        )
    }

    /// Whether the rollout stops at a `BlueGreenPause` before the switch
    /// (Argo's `needsBlueGreenControllerPause`).
    pub fn pauses(&self) -> bool {
        !self.auto_promotion() || !self.auto_promotion_delay().is_zero()
    }

    /// `previewReplicaCount`, at most `replicas`.
    pub fn preview_replicas(&self, replicas: i32) -> Option<i32> {
        count("previewReplicaCount", &self.preview_replica_count)
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX).min(replicas))
    }

    /// How long the old active keeps its pods after the switch.
    pub fn scale_down_delay(&self) -> Duration {
        count("scaleDownDelaySeconds", &self.scale_down_delay_seconds)
            .map_or(DEFAULT_DELAY, Duration::from_secs)
    }

    /// `scaleDownDelayRevisionLimit` (no limit when unset).
    pub fn scale_down_delay_revision_limit(&self) -> Option<usize> {
        count(
            "scaleDownDelayRevisionLimit",
            &self.scale_down_delay_revision_limit,
        )
        .and_then(|n| usize::try_from(n).ok())
    }

    /// How long an aborted preview keeps its pods once the stable is
    /// available again; `None` (for 0) keeps them until the next update.
    pub fn abort_scale_down_delay(&self) -> Option<Duration> {
        match count(
            "abortScaleDownDelaySeconds",
            &self.abort_scale_down_delay_seconds,
        ) {
            None => Some(DEFAULT_DELAY),
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
        }
    }
}

fn check_count(field: &str, value: Option<&Value>) -> Result<(), String> {
    whole_number(field, value)
        .map(drop)
        .map_err(|e| e.replace("spec.strategy.canary.", "spec.strategy.blueGreen."))
}

/// A checked count (parse has refused anything else).
fn count(field: &str, value: &Option<Value>) -> Option<u64> {
    whole_number(field, value.as_ref()).ok().flatten()
}
