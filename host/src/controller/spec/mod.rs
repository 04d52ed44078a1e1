//! The parts of an `argoproj.io/v1alpha1` Rollout the controller acts on,
//! read from untrusted JSON.
//!
//! Fields Weir does not act on are ignored, as a Kubernetes controller
//! ignores fields of a newer API. The canary steps and the traffic-routing
//! block are read strictly: a misspelt step or an unsupported router is an
//! `InvalidSpec` naming the field, never a silently skipped step.

//!
//! - `canary`: `spec.strategy.canary` and its traffic routing;
//!   `steps`: its steps; `bluegreen`: `spec.strategy.blueGreen`;
//!   `numbers`: counts and percentages checked as Argo checks them.

mod bluegreen;
mod canary;
mod numbers;
mod steps;

pub use bluegreen::{AntiAffinity, BlueGreenStrategy, PodMetadata};
pub use canary::{CanaryStrategy, DEFAULT_SCALE_DOWN_DELAY, TrafficRouting};
pub use steps::{
    BackgroundAnalysis, Pause, PluginStep, RolloutAnalysis, SetCanaryScale, Step, StepKind,
    TemplateRef,
};

use canary::parse_canary;
use serde_json::Value;

/// A Rollout as the controller sees it.
#[derive(Debug, Clone)]
pub struct RolloutView {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.replicas` (default 1).
    pub replicas: i32,
    /// `spec.template`: the pod template.
    pub template: Value,
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.progressDeadlineSeconds` (Argo's default 600): how long the
    /// rollout may wait for its pods to become available.
    pub progress_deadline: std::time::Duration,
    /// `spec.progressDeadlineAbort`: abort when the deadline passes.
    pub progress_deadline_abort: bool,
    /// `spec.revisionHistoryLimit` (Argo's default 10): how many old,
    /// scaled-down ReplicaSets are kept for rollbacks.
    pub revision_history_limit: usize,
    /// `spec.minReadySeconds`: how long a pod must be ready before it
    /// counts as available (copied to the Rollout's ReplicaSets, whose
    /// controller applies it).
    pub min_ready_seconds: u32,
    /// `spec.restartAt` (`kubectl argo rollouts restart`): pods created
    /// before it are evicted, a few at a time.
    pub restart_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `spec.rollbackWindow.revisions`: a return to one of this many
    /// previous revisions skips the steps (0: none does).
    pub rollback_window: u64,
    /// The kind of the object children are owned by: `Rollout`, or
    /// `Experiment` for a standalone Experiment's (see [`Self::of_experiment`]).
    pub owner_kind: &'static str,
    /// Which strategy the rollout uses.
    pub strategy: Strategy,
    /// `spec.strategy.canary` (empty for a blue-green rollout).
    pub canary: CanaryStrategy,
    /// `spec.strategy.blueGreen` (empty for a canary rollout).
    pub blue_green: BlueGreenStrategy,
    /// The whole object, as read; shared (the calls of a reconcile's
    /// routers and step plugins hand it on without copying it).
    pub object: std::sync::Arc<Value>,
}

/// The strategy a Rollout names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `spec.strategy.canary`.
    Canary,
    /// `spec.strategy.blueGreen`.
    BlueGreen,
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl RolloutView {
    /// Reads a Rollout; the error names the field and the fix.
    pub fn parse(object: &Value) -> Result<Self, String> {
        let name = str_at(object, "/metadata/name").to_string();
        if name.is_empty() {
            return Err("the Rollout has no metadata.name".into());
        }
        let spec = object
            .get("spec")
            .filter(|s| s.is_object())
            .ok_or("the Rollout has no spec")?;
        let replicas = match spec.get("replicas") {
            None | Some(Value::Null) => 1,
            Some(v) => v
                .as_i64()
                .and_then(|r| i32::try_from(r).ok())
                .filter(|r| *r >= 0)
                .ok_or_else(|| format!("spec.replicas must be a whole number ≥ 0, not {v}"))?,
        };
        let template = spec
            .get("template")
            .filter(|t| t.is_object())
            .cloned()
            .ok_or("spec.template is required (or spec.workloadRef, naming a Deployment)")?;
        let strategy = spec.get("strategy").ok_or("spec.strategy is required")?;
        let revision_history_limit = match spec.get("revisionHistoryLimit") {
            None | Some(Value::Null) => 10,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    format!("spec.revisionHistoryLimit must be a whole number >= 0, not {v}")
                })?,
        };
        let (kind, canary, blue_green) = match (strategy.get("canary"), strategy.get("blueGreen")) {
            (Some(_), Some(_)) => {
                return Err("spec.strategy sets both canary and blueGreen: keep one".into());
            }
            (Some(canary), None) => (Strategy::Canary, parse_canary(canary)?, Default::default()),
            (None, Some(blue_green)) => {
                let blue_green = BlueGreenStrategy::parse(blue_green, revision_history_limit)?;
                // A restart takes down `maxUnavailable` pods at once, as a
                // canary's does.
                let canary = CanaryStrategy {
                    max_unavailable: blue_green.max_unavailable.clone(),
                    ..Default::default()
                };
                (Strategy::BlueGreen, canary, blue_green)
            }
            (None, None) => {
                return Err("spec.strategy needs canary or blueGreen".into());
            }
        };
        Ok(RolloutView {
            namespace: str_at(object, "/metadata/namespace").to_string(),
            uid: str_at(object, "/metadata/uid").to_string(),
            name,
            replicas,
            template,
            paused: spec.get("paused").and_then(Value::as_bool).unwrap_or(false),
            progress_deadline: match spec.get("progressDeadlineSeconds") {
                None | Some(Value::Null) => std::time::Duration::from_secs(600),
                Some(v) => v
                    .as_u64()
                    .filter(|s| *s > 0)
                    .map(std::time::Duration::from_secs)
                    .ok_or_else(|| {
                        format!("spec.progressDeadlineSeconds must be a whole number > 0, not {v}")
                    })?,
            },
            progress_deadline_abort: spec
                .get("progressDeadlineAbort")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            rollback_window: match spec.pointer("/rollbackWindow/revisions") {
                None | Some(Value::Null) => 0,
                Some(v) => v
                    .as_u64()
                    .filter(|n| i32::try_from(*n).is_ok())
                    .ok_or_else(|| {
                        format!("spec.rollbackWindow.revisions must be a whole number >= 0, not {v}")
                    })?,
            },
            restart_at: match spec.get("restartAt") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .ok_or_else(|| {
                            format!("spec.restartAt must be an RFC 3339 time (2026-11-30T21:00:00Z), not {v}")
                        })?,
                ),
            },
            min_ready_seconds: match spec.get("minReadySeconds") {
                None | Some(Value::Null) => 0,
                Some(v) => v
                    .as_u64()
                    .and_then(|n| i32::try_from(n).ok())
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        format!("spec.minReadySeconds must be a whole number >= 0, not {v}")
                    })?,
            },
            revision_history_limit,
            owner_kind: "Rollout",
            strategy: kind,
            canary,
            blue_green,
            object: std::sync::Arc::new(object.clone()),
        })
    }

    /// The owner a standalone Experiment gives its children (ReplicaSets,
    /// Services, AnalysisRuns): the Experiment itself, with no template of
    /// its own (each of its templates has one).
    pub fn of_experiment(experiment: &Value) -> Self {
        RolloutView {
            namespace: str_at(experiment, "/metadata/namespace").to_string(),
            name: str_at(experiment, "/metadata/name").to_string(),
            uid: str_at(experiment, "/metadata/uid").to_string(),
            replicas: 0,
            template: Value::Null,
            paused: false,
            progress_deadline: std::time::Duration::from_secs(600),
            progress_deadline_abort: false,
            revision_history_limit: 0,
            min_ready_seconds: 0,
            restart_at: None,
            rollback_window: 0,
            owner_kind: "Experiment",
            strategy: Strategy::Canary,
            canary: CanaryStrategy::default(),
            blue_green: BlueGreenStrategy::default(),
            object: std::sync::Arc::new(experiment.clone()),
        }
    }

    /// The step at `index`, if any.
    pub fn step(&self, index: usize) -> Option<&Step> {
        self.canary.steps.get(index)
    }

    /// `scaleDownDelayRevisionLimit` of the rollout's strategy.
    pub fn scale_down_delay_revision_limit(&self) -> Option<usize> {
        match self.strategy {
            Strategy::Canary => self.canary.scale_down_delay_revision_limit(),
            Strategy::BlueGreen => self.blue_green.scale_down_delay_revision_limit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canary::UNSUPPORTED_CANARY_FIELDS;
    use serde_json::json;
    use std::time::Duration;

    fn rollout(canary: Value) -> Value {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "r", "namespace": "ns"},
               "spec": {"replicas": 4, "template": {"metadata": {"labels": {"app": "r"}}},
                        "strategy": {"canary": canary}}})
    }

    #[test]
    fn scale_down_delays_default_as_argos_do() {
        let routed = json!({"canaryService": "c", "stableService": "s",
                            "trafficRouting": {"istio": {"virtualService": {"name": "v"}}}});
        let view = RolloutView::parse(&rollout(routed.clone())).expect("valid");
        assert_eq!(view.canary.scale_down_delay(), DEFAULT_SCALE_DOWN_DELAY);
        assert_eq!(
            view.canary.abort_scale_down_delay(),
            Some(DEFAULT_SCALE_DOWN_DELAY)
        );
        assert_eq!(view.canary.scale_down_delay_revision_limit(), None);
        let mut set = routed.clone();
        set["scaleDownDelaySeconds"] = json!(5);
        set["abortScaleDownDelaySeconds"] = json!(0);
        set["scaleDownDelayRevisionLimit"] = json!(2);
        let view = RolloutView::parse(&rollout(set)).expect("valid");
        assert_eq!(view.canary.scale_down_delay(), Duration::from_secs(5));
        assert_eq!(
            view.canary.abort_scale_down_delay(),
            None,
            "0 keeps the canary"
        );
        assert_eq!(view.canary.scale_down_delay_revision_limit(), Some(2));
        // A basic canary's old pods are its traffic split: they go at once.
        let basic = RolloutView::parse(&rollout(json!({}))).expect("valid");
        assert_eq!(basic.canary.scale_down_delay(), Duration::ZERO);
        assert_eq!(basic.canary.abort_scale_down_delay(), Some(Duration::ZERO));
    }

    #[test]
    fn max_traffic_weight_is_refused_with_istio_only() {
        let routed = |router: Value| {
            let mut routing = json!({"maxTrafficWeight": 1000});
            if let (Some(r), Some(extra)) = (routing.as_object_mut(), router.as_object()) {
                r.extend(extra.clone());
            }
            json!({"canaryService": "c", "stableService": "s", "trafficRouting": routing})
        };
        let istio = routed(json!({"istio": {"virtualService": {"name": "v"}}}));
        let err = RolloutView::parse(&rollout(istio)).expect_err("istio weights total 100");
        assert!(
            err.contains("maxTrafficWeight") && err.contains("istio"),
            "{err}"
        );
        for router in [json!({"nginx": {"stableIngress": "i"}}), json!({"smi": {}})] {
            let view = RolloutView::parse(&rollout(routed(router))).expect("valid");
            assert_eq!(view.canary.max_weight(), 1000);
        }
    }

    #[test]
    fn istio_subset_splitting_needs_no_services() {
        let subsets = json!({"trafficRouting": {"istio": {
            "virtualService": {"name": "v"},
            "destinationRule": {"name": "d", "canarySubsetName": "canary", "stableSubsetName": "stable"}}}});
        RolloutView::parse(&rollout(subsets)).expect("subset-level splitting");
        let hosts = json!({"trafficRouting": {"istio": {"virtualService": {"name": "v"}}}});
        let err = RolloutView::parse(&rollout(hosts)).expect_err("host-level splitting");
        assert!(
            err.contains("canaryService") && err.contains("destinationRule"),
            "{err}"
        );
    }

    #[test]
    fn bad_scale_down_fields_are_named() {
        let err = RolloutView::parse(&rollout(json!({"scaleDownDelaySeconds": 10})))
            .expect_err("needs traffic routing");
        assert!(
            err.contains("scaleDownDelaySeconds") && err.contains("trafficRouting"),
            "{err}"
        );
        let err = RolloutView::parse(&rollout(json!({"abortScaleDownDelaySeconds": -1})))
            .expect_err("negative");
        assert!(
            err.contains("abortScaleDownDelaySeconds") && err.contains("-1"),
            "{err}"
        );
        let err = RolloutView::parse(&rollout(json!({"scaleDownDelayRevisionLimit": "two"})))
            .expect_err("not a number");
        assert!(err.contains("scaleDownDelayRevisionLimit"), "{err}");
    }

    #[test]
    fn a_misspelt_step_is_named() {
        let err = RolloutView::parse(&rollout(json!({"steps": [{"setWieght": 20}]})))
            .expect_err("invalid");
        assert!(err.contains("setWieght") && err.contains("steps"), "{err}");
    }

    #[test]
    fn unsupported_canary_fields_are_refused_by_name() {
        for field in UNSUPPORTED_CANARY_FIELDS {
            let mut object = json!({
                "metadata": {"name": "r"},
                "spec": {"template": {"spec": {}}, "strategy": {"canary": {"steps": []}}}});
            object["spec"]["strategy"]["canary"][field] = json!({"labels": {"a": "b"}});
            let error = RolloutView::parse(&object).expect_err(field);
            assert!(
                error.contains(&format!("spec.strategy.canary.{field}")),
                "{error}"
            );
        }
        // dynamicStableScale: false is Argo's default, not a request.
        let object = json!({
            "metadata": {"name": "r"},
            "spec": {"template": {"spec": {}},
                     "strategy": {"canary": {"dynamicStableScale": false}}}});
        assert!(RolloutView::parse(&object).is_ok());
    }

    #[test]
    fn dynamic_stable_scale_needs_traffic_routing_and_no_scale_down_delay() {
        let with = |canary: Value| {
            RolloutView::parse(&json!({"metadata": {"name": "r"},
                "spec": {"template": {"spec": {}}, "strategy": {"canary": canary}}}))
        };
        let basic = with(json!({"dynamicStableScale": true})).expect_err("basic");
        assert!(
            basic.contains("can only be used with trafficRouting"),
            "{basic}"
        );
        let routing = json!({"istio": {"virtualService": {"name": "vs"}}});
        let delayed = with(json!({"dynamicStableScale": true, "canaryService": "c",
            "stableService": "s", "trafficRouting": routing, "scaleDownDelaySeconds": 5}))
        .expect_err("with a delay");
        assert!(
            delayed.contains("cannot be used with scaleDownDelaySeconds"),
            "{delayed}"
        );
        let view = with(json!({"dynamicStableScale": true, "canaryService": "c",
            "stableService": "s", "trafficRouting": routing}))
        .expect("valid");
        assert!(view.canary.dynamic_stable_scale);
        assert_eq!(view.canary.scale_down_delay(), Duration::ZERO);
    }

    #[test]
    fn min_pods_per_replica_set_raises_a_routed_canary_only() {
        let routed: CanaryStrategy = serde_json::from_value(json!({
            "minPodsPerReplicaSet": 2, "trafficRouting": {"istio": {}}}))
        .expect("canary");
        assert_eq!(routed.with_min_pods(1, 10), 2);
        assert_eq!(routed.with_min_pods(0, 10), 0, "no canary: none");
        assert_eq!(routed.with_min_pods(5, 10), 5);
        assert_eq!(routed.with_min_pods(1, 1), 1, "capped at spec.replicas");
        let basic: CanaryStrategy =
            serde_json::from_value(json!({"minPodsPerReplicaSet": 2})).expect("canary");
        assert_eq!(basic.with_min_pods(1, 10), 1, "traffic routing only");
    }

    #[test]
    fn unsupported_routers_are_named() {
        let err = RolloutView::parse(&rollout(json!({
            "canaryService": "c", "stableService": "s",
            "trafficRouting": {"alb": {}}})))
        .expect_err("invalid");
        assert!(err.contains("alb"), "{err}");
    }

    #[test]
    fn weights_and_pauses() {
        let view = RolloutView::parse(&rollout(json!({"steps": [
            {"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 50}, {"pause": {}}]})))
        .expect("valid");
        assert_eq!(view.canary.weight_at(0), 20);
        assert_eq!(view.canary.weight_at(1), 20);
        assert_eq!(view.canary.weight_at(2), 50);
        assert_eq!(
            view.canary.steps[1].pause.as_ref().map(|p| p.duration()),
            Some(Ok(Some(Duration::from_secs(60))))
        );
        assert_eq!(
            view.canary.steps[3].pause.as_ref().map(|p| p.duration()),
            Some(Ok(None))
        );
    }

    #[test]
    fn two_actions_in_one_step_are_refused() {
        let err = RolloutView::parse(&rollout(json!({"steps": [{"setWeight": 1, "pause": {}}]})))
            .expect_err("invalid");
        assert!(err.contains("exactly one"), "{err}");
    }
}
