//! The canary steps, read strictly: exactly one field per step, and a
//! misspelt one is an error naming it.

use crate::analysis::types::{Argument, DryRun, MeasurementRetention, parse_duration};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

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
    pub analysis: Option<RolloutAnalysis>,
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
    /// Run a step plugin (registered under `stepPlugins`).
    #[serde(default)]
    pub plugin: Option<PluginStep>,
}

/// `plugin`: a step run by a step plugin (Argo's `PluginStep`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginStep {
    /// The plugin's registered name (`stepPlugins[].name`).
    pub name: String,
    /// Its configuration, any JSON; handed to the plugin as text.
    #[serde(default)]
    pub config: Option<Value>,
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

/// An analysis a Rollout runs (Argo's `RolloutAnalysis`): a canary's
/// `analysis` step or background analysis, a blue-green's pre- or
/// post-promotion analysis.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysis {
    /// The templates, merged into one AnalysisRun.
    #[serde(default)]
    pub templates: Vec<TemplateRef>,
    /// Argument values.
    #[serde(default)]
    pub args: Vec<Argument>,
    /// `dryRun`: metrics measured but not counted, on top of the templates'.
    #[serde(default)]
    pub dry_run: Vec<DryRun>,
    /// `measurementRetention`: how many measurements a metric keeps; before
    /// the templates' own.
    #[serde(default)]
    pub measurement_retention: Vec<MeasurementRetention>,
}

/// `spec.strategy.canary.analysis`: analysis running in the background.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundAnalysis {
    /// What it runs.
    #[serde(flatten)]
    pub analysis: RolloutAnalysis,
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
    /// `plugin`.
    Plugin,
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
            (self.plugin.is_some(), StepKind::Plugin),
        ];
        let mut kinds = set.iter().filter(|(on, _)| *on).map(|(_, k)| *k);
        match (kinds.next(), kinds.next()) {
            (Some(kind), None) => Ok(kind),
            (None, _) => Err("a step must set one of setWeight, pause, analysis, experiment, setCanaryScale, setHeaderRoute, setMirrorRoute, plugin".into()),
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
            Ok(StepKind::Plugin) => format!(
                "plugin: {}",
                self.plugin.as_ref().map_or("", |p| p.name.as_str())
            ),
            Err(_) => "invalid step".into(),
        }
    }
}
