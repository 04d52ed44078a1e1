//! The parts of an `argoproj.io/v1alpha1` Rollout the controller acts on,
//! read from untrusted JSON.
//!
//! Fields Weir does not act on are ignored, as a Kubernetes controller
//! ignores fields of a newer API. The canary steps and the traffic-routing
//! block are read strictly: a misspelt step or an unsupported router is an
//! `InvalidSpec` naming the field, never a silently skipped step.

mod bluegreen;

pub use bluegreen::{AntiAffinity, BlueGreenStrategy, PodMetadata};

use crate::analysis::types::{Argument, parse_duration};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

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
    /// The whole object, as read.
    pub object: Value,
}

/// The strategy a Rollout names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `spec.strategy.canary`.
    Canary,
    /// `spec.strategy.blueGreen`.
    BlueGreen,
}

/// `spec.strategy.canary`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStrategy {
    /// The Service that selects canary pods.
    #[serde(default)]
    pub canary_service: String,
    /// The Service that selects stable pods.
    #[serde(default)]
    pub stable_service: String,
    /// The steps (read one by one, so an error names its index).
    #[serde(default, skip_deserializing)]
    pub steps: Vec<Step>,
    /// Traffic routers.
    #[serde(default)]
    pub traffic_routing: Option<TrafficRouting>,
    /// Background analysis.
    #[serde(default)]
    pub analysis: Option<BackgroundAnalysis>,
    /// `scaleDownDelaySeconds`: how long a ReplicaSet traffic has left
    /// keeps its pods (traffic routing only; see [`Self::scale_down_delay`]).
    #[serde(default)]
    pub scale_down_delay_seconds: Option<Value>,
    /// `scaleDownDelayRevisionLimit`: how many such ReplicaSets may wait at
    /// once; the oldest beyond it go at once.
    #[serde(default)]
    pub scale_down_delay_revision_limit: Option<Value>,
    /// `abortScaleDownDelaySeconds`: how long an aborted canary keeps its
    /// pods (see [`Self::abort_scale_down_delay`]).
    #[serde(default)]
    pub abort_scale_down_delay_seconds: Option<Value>,
    /// `maxUnavailable` (a count or a percentage of `spec.replicas`, 25 %
    /// by default): how many pods a restart may take down at once.
    #[serde(default)]
    pub max_unavailable: Option<Value>,
    /// `maxSurge` (a count or a percentage, 25 % by default).
    #[serde(default)]
    pub max_surge: Option<Value>,
    /// `minPodsPerReplicaSet`: with traffic routing, a canary scaled from a
    /// weight has at least this many pods (at most `spec.replicas`).
    #[serde(default)]
    pub min_pods_per_replica_set: Option<Value>,
}

/// Argo's canary fields Weir does not implement yet: refused by name
/// rather than silently ignored.
const UNSUPPORTED_CANARY_FIELDS: [&str; 4] = [
    "dynamicStableScale",
    "antiAffinity",
    "canaryMetadata",
    "stableMetadata",
];

/// Argo's default for `scaleDownDelaySeconds` and `abortScaleDownDelaySeconds`.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);

/// One canary step: exactly one field is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Route this percentage (of `maxTrafficWeight`) to the canary.
    #[serde(default)]
    pub set_weight: Option<i32>,
    /// Pause, for a duration or until promoted.
    #[serde(default)]
    pub pause: Option<Pause>,
    /// Run an analysis and wait for its verdict.
    #[serde(default)]
    pub analysis: Option<StepAnalysis>,
    /// Run an experiment.
    #[serde(default)]
    pub experiment: Option<Value>,
    /// Scale the canary independently of its weight.
    #[serde(default)]
    pub set_canary_scale: Option<SetCanaryScale>,
    /// Route requests matching headers to the canary.
    #[serde(default)]
    pub set_header_route: Option<Value>,
    /// Mirror matching requests to the canary.
    #[serde(default)]
    pub set_mirror_route: Option<Value>,
}

/// `pause`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pause {
    /// Seconds as a number or a duration string (`30s`, `1h`); none: until promoted.
    #[serde(default)]
    pub duration: Option<Value>,
}

impl Pause {
    /// The pause's duration; `None` waits for a promote.
    pub fn duration(&self) -> Result<Option<Duration>, String> {
        match &self.duration {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|s| Some(Duration::from_secs(s)))
                .ok_or_else(|| format!("pause.duration {n} is not a whole number of seconds")),
            Some(Value::String(s)) => match s.parse::<u64>() {
                Ok(secs) => Ok(Some(Duration::from_secs(secs))),
                Err(_) => parse_duration(s)
                    .map(Some)
                    .map_err(|e| format!("pause.duration {s:?}: {e}")),
            },
            Some(other) => Err(format!(
                "pause.duration must be seconds or a duration string such as \"30s\", not {other}"
            )),
        }
    }
}

/// A reference to an (cluster) analysis template.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    /// The template's name.
    pub template_name: String,
    /// A ClusterAnalysisTemplate rather than a namespaced one.
    #[serde(default)]
    pub cluster_scope: bool,
}

/// `analysis` step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepAnalysis {
    /// The templates, merged into one AnalysisRun.
    #[serde(default)]
    pub templates: Vec<TemplateRef>,
    /// Argument values.
    #[serde(default)]
    pub args: Vec<Argument>,
}

/// `spec.strategy.canary.analysis`: analysis running in the background.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundAnalysis {
    /// The templates.
    #[serde(default)]
    pub templates: Vec<TemplateRef>,
    /// Argument values.
    #[serde(default)]
    pub args: Vec<Argument>,
    /// The step index from which it runs.
    #[serde(default)]
    pub starting_step: Option<i32>,
}

/// `setCanaryScale`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetCanaryScale {
    /// Canary replicas as a percentage of `spec.replicas`.
    #[serde(default)]
    pub weight: Option<i32>,
    /// An absolute number of canary replicas.
    #[serde(default)]
    pub replicas: Option<i32>,
    /// Scale the canary to match its traffic weight again.
    #[serde(default)]
    pub match_traffic_weight: bool,
}

/// `trafficRouting`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRouting {
    /// Istio (served by the shipped `istio` plugin).
    #[serde(default)]
    pub istio: Option<Value>,
    /// NGINX (served by the shipped `nginx` plugin).
    #[serde(default)]
    pub nginx: Option<Value>,
    /// SMI (served by the shipped `smi` plugin).
    #[serde(default)]
    pub smi: Option<Value>,
    /// Registered plugins by `<namespace>/<name>`.
    #[serde(default)]
    pub plugins: Option<Map<String, Value>>,
    /// The weight that means "all traffic" (default 100).
    #[serde(default)]
    pub max_traffic_weight: Option<i32>,
    /// Routes the controller manages (header and mirror routes), in priority order.
    #[serde(default)]
    pub managed_routes: Option<Value>,
}

impl TrafficRouting {
    /// Whether the routers split traffic between a canary and a stable
    /// Service, so both must be named (Argo's `requireCanaryStableServices`):
    /// NGINX, SMI, and Istio host-level splitting. Istio subset-level
    /// splitting (a `destinationRule`) splits one host by subsets, and
    /// plugins decide for themselves.
    pub fn needs_services(&self) -> bool {
        let istio_by_host = self
            .istio
            .as_ref()
            .is_some_and(|i| i.get("destinationRule").is_none_or(Value::is_null));
        istio_by_host || self.nginx.is_some() || self.smi.is_some()
    }

    /// Every router as (plugin name, its configuration block).
    pub fn routers(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let builtin = [
            ("istio", &self.istio),
            ("nginx", &self.nginx),
            ("smi", &self.smi),
        ];
        for (name, config) in builtin {
            if let Some(config) = config {
                // managedRoutes and the steps reach the plugins in the
                // Rollout object itself, as Argo's plugins read them.
                out.push((name.to_string(), config.clone()));
            }
        }
        for (name, config) in self.plugins.iter().flatten() {
            out.push((name.clone(), config.clone()));
        }
        out
    }
}

/// What kind a step is, for display and for the step machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// `setWeight`.
    SetWeight,
    /// `pause`.
    Pause,
    /// `analysis`.
    Analysis,
    /// `experiment`.
    Experiment,
    /// `setCanaryScale`.
    SetCanaryScale,
    /// `setHeaderRoute`.
    SetHeaderRoute,
    /// `setMirrorRoute`.
    SetMirrorRoute,
}

impl Step {
    /// The step's kind, or why it is not exactly one step.
    pub fn kind(&self) -> Result<StepKind, String> {
        let set = [
            (self.set_weight.is_some(), StepKind::SetWeight),
            (self.pause.is_some(), StepKind::Pause),
            (self.analysis.is_some(), StepKind::Analysis),
            (self.experiment.is_some(), StepKind::Experiment),
            (self.set_canary_scale.is_some(), StepKind::SetCanaryScale),
            (self.set_header_route.is_some(), StepKind::SetHeaderRoute),
            (self.set_mirror_route.is_some(), StepKind::SetMirrorRoute),
        ];
        let mut kinds = set.iter().filter(|(on, _)| *on).map(|(_, k)| *k);
        match (kinds.next(), kinds.next()) {
            (Some(kind), None) => Ok(kind),
            (None, _) => Err("a step must set one of setWeight, pause, analysis, experiment, setCanaryScale, setHeaderRoute, setMirrorRoute".into()),
            (Some(_), Some(_)) => Err("a step must set exactly one action; split it into several steps".into()),
        }
    }

    /// A one-line description (`setWeight: 20`, `pause: 30s`, ...).
    pub fn describe(&self) -> String {
        match self.kind() {
            Ok(StepKind::SetWeight) => format!("setWeight: {}", self.set_weight.unwrap_or(0)),
            Ok(StepKind::Pause) => match self.pause.as_ref().map(Pause::duration) {
                Some(Ok(Some(d))) => format!("pause: {}s", d.as_secs()),
                _ => "pause: until promoted".into(),
            },
            Ok(StepKind::Analysis) => format!(
                "analysis: {}",
                self.analysis
                    .iter()
                    .flat_map(|a| a.templates.iter().map(|t| t.template_name.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Ok(StepKind::Experiment) => "experiment".into(),
            Ok(StepKind::SetCanaryScale) => "setCanaryScale".into(),
            Ok(StepKind::SetHeaderRoute) => "setHeaderRoute".into(),
            Ok(StepKind::SetMirrorRoute) => "setMirrorRoute".into(),
            Err(_) => "invalid step".into(),
        }
    }
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
            object: object.clone(),
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
            object: experiment.clone(),
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

/// Reads and checks `spec.strategy.canary`; the error names the field and
/// the fix.
fn parse_canary(canary_json: &Value) -> Result<CanaryStrategy, String> {
    for field in UNSUPPORTED_CANARY_FIELDS {
        let set = canary_json
            .get(field)
            .is_some_and(|v| !v.is_null() && *v != Value::Bool(false));
        if set {
            return Err(format!(
                "spec.strategy.canary.{field} is not supported by Weir yet; remove it (docs/controller.md lists every difference from Argo)"
            ));
        }
    }
    let mut canary: CanaryStrategy = serde_json::from_value(canary_json.clone())
        .map_err(|e| format!("spec.strategy.canary: {e}"))?;
    canary.steps = match canary_json.get("steps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(steps)) => steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                serde_json::from_value(step.clone())
                    .map_err(|e| format!("spec.strategy.canary.steps[{i}]: {e}"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "spec.strategy.canary.steps must be a list, not {other}"
            ));
        }
    };
    for (i, step) in canary.steps.iter().enumerate() {
        step.kind()
            .map_err(|e| format!("spec.strategy.canary.steps[{i}]: {e}"))?;
        if let Some(w) = step.set_weight {
            let max = canary.max_weight();
            if !(0..=max).contains(&w) {
                return Err(format!(
                    "spec.strategy.canary.steps[{i}].setWeight {w} must be within 0..={max}"
                ));
            }
        }
        if let Some(p) = &step.pause {
            p.duration()
                .map_err(|e| format!("spec.strategy.canary.steps[{i}]: {e}"))?;
        }
        if let Some(a) = &step.analysis
            && a.templates.is_empty()
        {
            return Err(format!(
                "spec.strategy.canary.steps[{i}].analysis needs at least one template"
            ));
        }
    }
    canary.check_scale_down_fields()?;
    if let Some(routing) = &canary.traffic_routing {
        if routing.needs_services()
            && (canary.canary_service.is_empty() || canary.stable_service.is_empty())
        {
            return Err(
                "trafficRouting with nginx, smi, or istio without a destinationRule needs spec.strategy.canary.canaryService and stableService"
                    .into(),
            );
        }
        if routing.routers().is_empty() {
            return Err("trafficRouting names no router: set istio, nginx, smi or plugins".into());
        }
        if let Some(max) = routing.max_traffic_weight
            && max <= 0
        {
            return Err(format!("trafficRouting.maxTrafficWeight {max} must be > 0"));
        }
        // Istio's route weights must total 100 (Argo refuses it too);
        // NGINX (canary-weight-total), SMI (relative weights) and
        // plugins take any total.
        if let Some(max) = routing.max_traffic_weight
            && max != 100
            && routing.istio.is_some()
        {
            return Err(format!(
                "trafficRouting.maxTrafficWeight {max} cannot be used with istio: Istio's route weights must total 100; remove maxTrafficWeight, or route with nginx, smi or a plugin"
            ));
        }
    }
    Ok(canary)
}

/// A whole number of seconds (or a count) ≥ 0 read from `field`.
fn whole_number(field: &str, value: Option<&Value>) -> Result<Option<u64>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| i32::try_from(*n).is_ok())
            .map(Some)
            .ok_or_else(|| {
                format!("spec.strategy.canary.{field} must be a whole number >= 0, not {v}")
            }),
    }
}

/// An int-or-string field (`1`, `"25%"`) resolved against `total`, rounded
/// up or down as Kubernetes' `GetScaledValueFromIntOrPercent` does; `None`
/// when unset.
fn int_or_percent(
    field: &str,
    value: Option<&Value>,
    total: i32,
    round_up: bool,
) -> Result<Option<i32>, String> {
    let refuse = |v: &Value| {
        format!(
            "spec.strategy.canary.{field} must be a whole number >= 0 or a percentage (\"25%\"), not {v}"
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .filter(|p| (0..=i64::from(i32::MAX)).contains(p))
                .ok_or_else(|| refuse(&Value::String(text.clone())))?;
            let scaled = percent * i64::from(total.max(0));
            let value = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            Ok(Some(i32::try_from(value).unwrap_or(i32::MAX)))
        }
        Some(v) => v
            .as_u64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| refuse(v)),
    }
}

impl CanaryStrategy {
    /// How many of `replicas` pods may be unavailable at once, as Argo's
    /// `MaxUnavailable` resolves `maxSurge` (rounded up) and
    /// `maxUnavailable` (rounded down), 25 % each by default; both zero
    /// means one.
    pub fn max_unavailable(&self, replicas: i32) -> i32 {
        if replicas <= 0 {
            return 0;
        }
        let quarter = Value::String("25%".into());
        let surge = int_or_percent(
            "maxSurge",
            Some(self.max_surge.as_ref().unwrap_or(&quarter)),
            replicas,
            true,
        )
        .ok()
        .flatten()
        .unwrap_or(0);
        let unavailable = int_or_percent(
            "maxUnavailable",
            Some(self.max_unavailable.as_ref().unwrap_or(&quarter)),
            replicas,
            false,
        )
        .ok()
        .flatten()
        .unwrap_or(0);
        let unavailable = if surge == 0 && unavailable == 0 {
            1
        } else {
            unavailable
        };
        unavailable.min(replicas)
    }

    /// Argo's `CheckMinPodsPerReplicaSet`: a non-zero canary count raised
    /// to `minPodsPerReplicaSet` (capped at `replicas`), with traffic
    /// routing only.
    pub fn with_min_pods(&self, count: i32, replicas: i32) -> i32 {
        let min = whole_number(
            "minPodsPerReplicaSet",
            self.min_pods_per_replica_set.as_ref(),
        )
        .ok()
        .flatten()
        .and_then(|n| i32::try_from(n).ok());
        match min {
            Some(min) if count > 0 && self.traffic_routing.is_some() => {
                count.max(min.min(replicas))
            }
            _ => count,
        }
    }

    /// Checks the scale-down fields as Argo's validation does.
    fn check_scale_down_fields(&self) -> Result<(), String> {
        whole_number(
            "minPodsPerReplicaSet",
            self.min_pods_per_replica_set.as_ref(),
        )?;
        int_or_percent("maxUnavailable", self.max_unavailable.as_ref(), 100, false)?;
        int_or_percent("maxSurge", self.max_surge.as_ref(), 100, true)?;
        whole_number(
            "scaleDownDelaySeconds",
            self.scale_down_delay_seconds.as_ref(),
        )?;
        whole_number(
            "scaleDownDelayRevisionLimit",
            self.scale_down_delay_revision_limit.as_ref(),
        )?;
        whole_number(
            "abortScaleDownDelaySeconds",
            self.abort_scale_down_delay_seconds.as_ref(),
        )?;
        if self.traffic_routing.is_none()
            && self
                .scale_down_delay_seconds
                .as_ref()
                .is_some_and(|v| !v.is_null())
        {
            return Err("spec.strategy.canary.scaleDownDelaySeconds can only be used with trafficRouting: a basic canary's old pods serve traffic until they are gone; remove the field".into());
        }
        Ok(())
    }

    /// How long a ReplicaSet traffic has left keeps its pods, so routers
    /// and proxies stop sending to them first: `scaleDownDelaySeconds`,
    /// 30 s by default with traffic routing, zero without (a basic
    /// canary's pods are its traffic split). Zero scales down at once.
    pub fn scale_down_delay(&self) -> Duration {
        if self.traffic_routing.is_none() {
            return Duration::ZERO;
        }
        whole_number(
            "scaleDownDelaySeconds",
            self.scale_down_delay_seconds.as_ref(),
        )
        .ok()
        .flatten()
        .map_or(DEFAULT_SCALE_DOWN_DELAY, Duration::from_secs)
    }

    /// `scaleDownDelayRevisionLimit`: how many ReplicaSets may wait out
    /// their delay at once (no limit by default).
    pub fn scale_down_delay_revision_limit(&self) -> Option<usize> {
        whole_number(
            "scaleDownDelayRevisionLimit",
            self.scale_down_delay_revision_limit.as_ref(),
        )
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
    }

    /// How long an aborted canary keeps its pods, as Argo has it: with
    /// traffic routing `abortScaleDownDelaySeconds` (30 s by default;
    /// `None` for 0, which keeps them until the next update); a basic
    /// canary scales down at once (zero).
    pub fn abort_scale_down_delay(&self) -> Option<Duration> {
        if self.traffic_routing.is_none() {
            return Some(Duration::ZERO);
        }
        match whole_number(
            "abortScaleDownDelaySeconds",
            self.abort_scale_down_delay_seconds.as_ref(),
        )
        .ok()
        .flatten()
        {
            None => Some(DEFAULT_SCALE_DOWN_DELAY),
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
        }
    }

    /// `trafficRouting.maxTrafficWeight`, default 100.
    pub fn max_weight(&self) -> i32 {
        self.traffic_routing
            .as_ref()
            .and_then(|t| t.max_traffic_weight)
            .unwrap_or(100)
    }

    /// The weight in force at step `index`: the last setWeight before it
    /// (0 before any).
    pub fn weight_at(&self, index: usize) -> i32 {
        self.steps
            .iter()
            .take(index.saturating_add(1))
            .filter_map(|s| s.set_weight)
            .next_back()
            .unwrap_or(0)
    }

    /// The setCanaryScale in force at step `index`, if any.
    pub fn canary_scale_at(&self, index: usize) -> Option<&SetCanaryScale> {
        self.steps
            .iter()
            .take(index.saturating_add(1))
            .filter_map(|s| s.set_canary_scale.as_ref())
            .next_back()
            .filter(|s| !s.match_traffic_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
