//! The `argoproj.io/v1alpha1` analysis shapes: AnalysisTemplate,
//! ClusterAnalysisTemplate and AnalysisRun (the fields Weir reads and keeps).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The phase of a measurement, a metric or a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Not started.
    #[default]
    Pending,
    /// In progress.
    Running,
    /// Passed.
    Successful,
    /// Failed.
    Failed,
    /// Could not be measured.
    Error,
    /// Neither passed nor failed.
    Inconclusive,
}

impl Phase {
    /// The name Argo writes (`Successful`, `Failed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Successful => "Successful",
            Phase::Failed => "Failed",
            Phase::Error => "Error",
            Phase::Inconclusive => "Inconclusive",
        }
    }

    /// The phase Argo's name stands for (`None` for anything else).
    pub fn parse(name: &str) -> Option<Phase> {
        [
            Phase::Pending,
            Phase::Running,
            Phase::Successful,
            Phase::Failed,
            Phase::Error,
            Phase::Inconclusive,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }

    /// Whether the phase is final.
    pub fn completed(self) -> bool {
        matches!(
            self,
            Phase::Successful | Phase::Failed | Phase::Error | Phase::Inconclusive
        )
    }

    /// Argo's order, best first: Successful, Running, Pending, Inconclusive, Error, Failed.
    fn rank(self) -> u8 {
        match self {
            Phase::Successful => 0,
            Phase::Running => 1,
            Phase::Pending => 2,
            Phase::Inconclusive => 3,
            Phase::Error => 4,
            Phase::Failed => 5,
        }
    }

    /// Whether `self` is worse than `other`.
    pub fn is_worse_than(self, other: Phase) -> bool {
        self.rank() > other.rank()
    }
}

/// Kubernetes' IntOrString, as Argo's limits and counts use it (so that
/// `{{args.x}}` can fill them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// Text holding a number.
    String(String),
}

impl IntOrString {
    /// The number, or why it is not one.
    pub fn value(&self) -> Result<i64, String> {
        match self {
            IntOrString::Int(i) => Ok(*i),
            IntOrString::String(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not an integer")),
        }
    }
}

/// One metric of a template or run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// Name.
    pub name: String,
    /// Time between measurements (`30s`, `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Time before the first measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    /// Measurements to take (default 1 without an interval; unbounded with one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<IntOrString>,
    /// Passes when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// Fails when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Failed measurements tolerated (default 0; −1 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<IntOrString>,
    /// Inconclusive measurements tolerated (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<IntOrString>,
    /// Consecutive errors tolerated (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<IntOrString>,
    /// Consecutive successes that end the metric early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_success_limit: Option<IntOrString>,
    /// Exactly one provider: `{prometheus: {...}}`, `{web: {...}}`,
    /// `{job: {...}}` or `{plugin: {"<ns>/<name>": {...}}}`.
    pub provider: serde_json::Map<String, Value>,
}

/// Argo's default `consecutiveErrorLimit`.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i64 = 4;

impl MetricSpec {
    fn limit(field: &Option<IntOrString>, default: i64, what: &str) -> Result<i64, String> {
        field.as_ref().map_or(Ok(default), |v| {
            v.value().map_err(|e| format!("{what}: {e}"))
        })
    }

    /// `failureLimit` (default 0).
    pub fn failure_limit(&self) -> Result<i64, String> {
        Self::limit(&self.failure_limit, 0, "failureLimit")
    }

    /// `inconclusiveLimit` (default 0).
    pub fn inconclusive_limit(&self) -> Result<i64, String> {
        Self::limit(&self.inconclusive_limit, 0, "inconclusiveLimit")
    }

    /// `consecutiveErrorLimit` (default 4).
    pub fn consecutive_error_limit(&self) -> Result<i64, String> {
        Self::limit(
            &self.consecutive_error_limit,
            DEFAULT_CONSECUTIVE_ERROR_LIMIT,
            "consecutiveErrorLimit",
        )
    }

    /// `consecutiveSuccessLimit` (0: not used).
    pub fn consecutive_success_limit(&self) -> Result<i64, String> {
        Self::limit(
            &self.consecutive_success_limit,
            0,
            "consecutiveSuccessLimit",
        )
    }

    /// Argo's `EffectiveCount`: `count`, or 1 when neither count nor interval
    /// is set, or unbounded (`None`) with an interval and no count.
    pub fn effective_count(&self) -> Result<Option<i64>, String> {
        let count = Self::limit(&self.count, 0, "count")?;
        Ok(if count == 0 {
            if self.interval.is_none() {
                Some(1)
            } else {
                None
            }
        } else {
            Some(count)
        })
    }

    /// The interval as a duration.
    pub fn interval(&self) -> Result<Option<Duration>, String> {
        self.interval
            .as_deref()
            .map(|d| parse_duration(d).map_err(|e| format!("interval: {e}")))
            .transpose()
    }

    /// The initial delay as a duration.
    pub fn initial_delay(&self) -> Result<Option<Duration>, String> {
        self.initial_delay
            .as_deref()
            .map(|d| parse_duration(d).map_err(|e| format!("initialDelay: {e}")))
            .transpose()
    }

    /// Checks the fields a user can get wrong, as Argo's `ValidateMetrics` does.
    pub fn validate(&self) -> Result<(), String> {
        self.failure_limit()?;
        self.inconclusive_limit()?;
        self.consecutive_error_limit()?;
        self.consecutive_success_limit()?;
        let count = self.effective_count()?;
        let interval = self.interval()?;
        self.initial_delay()?;
        if count.is_some_and(|c| c > 1) && interval.is_none() {
            return Err(format!(
                "metric {}: count > 1 requires an interval",
                self.name
            ));
        }
        if self.provider.len() != 1 {
            return Err(format!(
                "metric {}: exactly one provider is required, found {}",
                self.name,
                self.provider.len()
            ));
        }
        Ok(())
    }
}

/// A template or run argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    /// Name, used as `{{args.name}}`.
    pub name: String,
    /// Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `secretKeyRef` (read when measured), `fieldRef` and
    /// `podTemplateHashValue` (resolved when a Rollout makes the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<Value>,
}

/// `dryRun[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// Metric name, or `*` for all.
    pub metric_name: String,
}

/// `measurementRetention[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementRetention {
    /// Metric name, or `*` for all.
    pub metric_name: String,
    /// Measurements to keep.
    pub limit: i64,
}

/// `spec` of an AnalysisTemplate or ClusterAnalysisTemplate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// Metrics.
    pub metrics: Vec<MetricSpec>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<Argument>,
    /// Dry-run metrics.
    #[serde(default)]
    pub dry_run: Vec<DryRun>,
    /// Measurement retention.
    #[serde(default)]
    pub measurement_retention: Vec<MeasurementRetention>,
}

/// An AnalysisTemplate or ClusterAnalysisTemplate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplate {
    /// `argoproj.io/v1alpha1`.
    pub api_version: String,
    /// `AnalysisTemplate` or `ClusterAnalysisTemplate`.
    pub kind: String,
    /// Metadata.
    pub metadata: Value,
    /// Spec.
    pub spec: AnalysisTemplateSpec,
}

/// `spec` of an AnalysisRun.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    /// Metrics.
    pub metrics: Vec<MetricSpec>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<Argument>,
    /// Stop: finish in-flight measurements and take no more.
    #[serde(default)]
    pub terminate: bool,
    /// Dry-run metrics.
    #[serde(default)]
    pub dry_run: Vec<DryRun>,
    /// Measurement retention.
    #[serde(default)]
    pub measurement_retention: Vec<MeasurementRetention>,
}

/// One measurement in a run's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// Phase.
    pub phase: Phase,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// End (none while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The measured value as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The provider's state between calls.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// When to resume a running measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_at: Option<DateTime<Utc>>,
}

/// One metric's progress in a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// Metric name.
    pub name: String,
    /// Phase.
    pub phase: Phase,
    /// The last measurements (bounded).
    #[serde(default)]
    pub measurements: Vec<Measurement>,
    /// Message of the last measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Completed measurements (errors excluded).
    #[serde(default)]
    pub count: i64,
    /// Successful measurements.
    #[serde(default)]
    pub successful: i64,
    /// Failed measurements.
    #[serde(default)]
    pub failed: i64,
    /// Inconclusive measurements.
    #[serde(default)]
    pub inconclusive: i64,
    /// Errored measurements.
    #[serde(default)]
    pub error: i64,
    /// Errors in a row.
    #[serde(default)]
    pub consecutive_error: i64,
    /// Successes in a row.
    #[serde(default)]
    pub consecutive_success: i64,
    /// Whether the metric is a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// The provider's metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `status` of an AnalysisRun.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    /// Phase.
    pub phase: Phase,
    /// Why it is in that phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per metric.
    #[serde(default)]
    pub metric_results: Vec<MetricResult>,
    /// Start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// An AnalysisRun.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRun {
    /// `argoproj.io/v1alpha1`.
    pub api_version: String,
    /// `AnalysisRun`.
    pub kind: String,
    /// Metadata (name, namespace, uid, ...).
    pub metadata: Value,
    /// Spec.
    pub spec: AnalysisRunSpec,
    /// Status.
    #[serde(default)]
    pub status: AnalysisRunStatus,
}

impl AnalysisRun {
    /// A run of `template` with the given argument values (Argo's
    /// `NewAnalysisRunFromTemplates` for one template).
    pub fn from_template(
        template: &AnalysisTemplate,
        name: &str,
        namespace: &str,
        uid: &str,
        args: &[Argument],
    ) -> Self {
        let mut merged = template.spec.args.clone();
        for given in args {
            match merged.iter_mut().find(|a| a.name == given.name) {
                Some(existing) => *existing = given.clone(),
                None => merged.push(given.clone()),
            }
        }
        AnalysisRun {
            api_version: "argoproj.io/v1alpha1".into(),
            kind: "AnalysisRun".into(),
            metadata: serde_json::json!({"name": name, "namespace": namespace, "uid": uid}),
            spec: AnalysisRunSpec {
                metrics: template.spec.metrics.clone(),
                args: merged,
                terminate: false,
                dry_run: template.spec.dry_run.clone(),
                measurement_retention: template.spec.measurement_retention.clone(),
            },
            status: AnalysisRunStatus::default(),
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.metadata["name"].as_str().unwrap_or("")
    }

    /// `metadata.namespace`.
    pub fn namespace(&self) -> &str {
        self.metadata["namespace"].as_str().unwrap_or("")
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> &str {
        self.metadata["uid"].as_str().unwrap_or("")
    }

    /// The result of a metric, if it has one.
    pub fn result(&self, metric: &str) -> Option<&MetricResult> {
        self.status.metric_results.iter().find(|r| r.name == metric)
    }
}

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `10s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 30s, 5m or 1h30m");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if number_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn effective_count_follows_argo() {
        let metric = |count: Option<i64>, interval: Option<&str>| MetricSpec {
            name: "m".into(),
            interval: interval.map(str::to_string),
            initial_delay: None,
            count: count.map(IntOrString::Int),
            success_condition: None,
            failure_condition: None,
            failure_limit: None,
            inconclusive_limit: None,
            consecutive_error_limit: None,
            consecutive_success_limit: None,
            provider: serde_json::Map::new(),
        };
        assert_eq!(metric(None, None).effective_count(), Ok(Some(1)));
        assert_eq!(metric(None, Some("1m")).effective_count(), Ok(None));
        assert_eq!(metric(Some(5), Some("1m")).effective_count(), Ok(Some(5)));
        assert_eq!(
            MetricSpec {
                count: Some(IntOrString::String("3".into())),
                ..metric(None, Some("1s"))
            }
            .effective_count(),
            Ok(Some(3))
        );
    }
}
