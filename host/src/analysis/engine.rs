//! The analysis engine: takes an AnalysisRun one reconcile at a time —
//! which measurements are due, taking them through metric-provider plugins,
//! judging values with the metric's conditions, and assessing metrics and the
//! run with Argo's rules (`analysis/analysis.go`).

use super::args::{self, SecretArgs};
use super::condition::ConditionEvaluator;
use super::types::{AnalysisRun, Measurement, MetricResult, MetricSpec, Phase};
use super::verdict::evaluate_result;
use crate::plugin::{self, MeasurementPhase, MetricProvider};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long after an Error measurement the next one is taken (Argo's default).
pub const ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Measurements kept per metric unless `measurementRetention` says otherwise.
pub const DEFAULT_HISTORY_LIMIT: usize = 10;
/// When a provider says `running` without saying when to resume.
pub const DEFAULT_RESUME_AFTER: Duration = Duration::from_secs(10);

/// The shortest wait before a running measurement is resumed, or between
/// measurements of a metric: a provider's `resume-after-ms` or a metric's
/// `interval` below it is raised to it (a measurement that was resumed
/// later than asked says so), so no
/// plugin output or manifest can make the controller spin.
pub const MIN_MEASUREMENT_INTERVAL: Duration = Duration::from_secs(1);

/// Takes measurements and judges AnalysisRuns.
#[derive(Clone)]
pub struct AnalysisEngine {
    providers: BTreeMap<String, MetricProvider>,
    evaluator: ConditionEvaluator,
    max_run_bytes: usize,
}

fn chrono_after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// The provider key of a metric and its configuration block: `prometheus`
/// and the prometheus block, or for `plugin: {"ns/name": cfg}` the plugin
/// name and `cfg`.
pub fn provider_of(metric: &MetricSpec) -> Result<(String, serde_json::Value), String> {
    let mut entries = metric.provider.iter();
    let (Some((key, config)), None) = (entries.next(), entries.next()) else {
        return Err(format!(
            "metric {}: exactly one provider is required",
            metric.name
        ));
    };
    if key == "plugin" {
        let map = config
            .as_object()
            .ok_or_else(|| format!("metric {}: provider.plugin must be a map", metric.name))?;
        let mut plugins = map.iter();
        return match (plugins.next(), plugins.next()) {
            (Some((name, cfg)), None) => Ok((name.clone(), cfg.clone())),
            _ => Err(format!(
                "metric {}: provider.plugin must name exactly one plugin",
                metric.name
            )),
        };
    }
    Ok((key.clone(), config.clone()))
}

impl AnalysisEngine {
    /// An engine with no providers.
    pub fn new(evaluator: ConditionEvaluator) -> Self {
        AnalysisEngine {
            providers: BTreeMap::new(),
            evaluator,
            max_run_bytes: super::fit::DEFAULT_MAX_RUN_BYTES,
        }
    }

    /// Keeps every run this engine advances under `bytes` serialised (see
    /// [`super::fit`]).
    #[must_use]
    pub fn with_max_run_bytes(mut self, bytes: usize) -> Self {
        self.max_run_bytes = bytes;
        self
    }

    /// Serves metrics whose provider key is `key` (`prometheus`, `web`,
    /// `job`, or a plugin name such as `acme/latency`) with `provider`.
    pub fn register(&mut self, key: &str, provider: MetricProvider) {
        self.providers.insert(key.to_string(), provider);
    }

    /// The condition evaluator.
    pub fn evaluator(&self) -> &ConditionEvaluator {
        &self.evaluator
    }

    /// Advances `run` as of `now`; returns when it wants to be reconciled
    /// again (none once it has completed).
    pub async fn reconcile(
        &self,
        run: &mut AnalysisRun,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.reconcile_with_secrets(run, now, &SecretArgs::new())
            .await
    }

    /// [`Self::reconcile`] with the values of the run's `secretKeyRef`
    /// arguments: substituted into the metrics the providers get, and
    /// masked (`*****`) wherever the run's status would carry them.
    pub async fn reconcile_with_secrets(
        &self,
        run: &mut AnalysisRun,
        now: DateTime<Utc>,
        secrets: &SecretArgs,
    ) -> Option<DateTime<Utc>> {
        let next = self.advance(run, now, secrets).await;
        let values: Vec<&str> = secrets.values().filter_map(|v| v.as_deref().ok()).collect();
        if !values.is_empty()
            && let Ok(mut status) = serde_json::to_value(&run.status)
        {
            args::mask(&mut status, &values);
            if let Ok(masked) = serde_json::from_value(status) {
                run.status = masked;
            }
        }
        super::fit::fit(run, self.max_run_bytes);
        next
    }

    async fn advance(
        &self,
        run: &mut AnalysisRun,
        now: DateTime<Utc>,
        secrets: &SecretArgs,
    ) -> Option<DateTime<Utc>> {
        if run.status.phase.completed() {
            return None;
        }
        run.status.started_at.get_or_insert(now);
        let metrics = match self.resolve_metrics(run, secrets) {
            Ok(m) => m,
            Err(message) => {
                run.status.phase = Phase::Error;
                run.status.message = Some(message);
                run.status.completed_at = Some(now);
                return None;
            }
        };
        let terminating = is_terminating(run);
        // Substituted into the metrics: scrubbed from any recording of the calls.
        let secret_values: Vec<String> = secrets
            .values()
            .filter_map(|v| v.as_ref().ok().cloned())
            .collect();
        for metric in &metrics {
            if let Some(task) = due(run, metric, now, terminating) {
                let measurement = crate::plugin::recorder::with_secrets(
                    secret_values.clone(),
                    self.measure(run, metric, task, now),
                )
                .await;
                self.record(run, metric, measurement, task, now).await;
            }
        }
        self.assess(run, &metrics, now);
        if run.status.phase.completed() {
            run.status.completed_at.get_or_insert(now);
            return None;
        }
        next_reconcile(run, &metrics, now)
    }

    fn resolve_metrics(
        &self,
        run: &AnalysisRun,
        secrets: &SecretArgs,
    ) -> Result<Vec<MetricSpec>, String> {
        let metrics = run
            .spec
            .metrics
            .iter()
            .map(|m| args::resolve(m, &run.spec.args, secrets))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("Unable to resolve metric arguments: {e}"))?;
        for m in &metrics {
            m.validate()
                .map_err(|e| format!("Analysis spec invalid: {e}"))?;
        }
        for d in &run.spec.dry_run {
            if d.metric_name != "*" && !metrics.iter().any(|m| m.name == d.metric_name) {
                return Err(format!(
                    "Analysis spec invalid: dryRun[].metricName {:?} matches no metric",
                    d.metric_name
                ));
            }
        }
        Ok(metrics)
    }

    fn contract_records(
        run: &AnalysisRun,
        metric: &MetricSpec,
    ) -> Result<(plugin::AnalysisRun, plugin::Metric), String> {
        let (_, config) = provider_of(metric)?;
        let object = serde_json::to_string(run).map_err(|e| e.to_string())?;
        let metric_json = serde_json::to_string(metric).map_err(|e| e.to_string())?;
        Ok((
            plugin::AnalysisRun {
                namespace: run.namespace().into(),
                name: run.name().into(),
                uid: run.uid().into(),
                object,
            },
            plugin::Metric {
                name: metric.name.clone(),
                config: config.to_string(),
                object: metric_json,
            },
        ))
    }

    async fn measure(
        &self,
        run: &AnalysisRun,
        metric: &MetricSpec,
        task: Task,
        now: DateTime<Utc>,
    ) -> Measurement {
        let started = match task {
            Task::Resume | Task::Terminate => run
                .result(&metric.name)
                .and_then(|r| r.measurements.last())
                .and_then(|m| m.started_at),
            Task::Start => None,
        }
        .unwrap_or(now);
        let error = |message: String| Measurement {
            phase: Phase::Error,
            message: Some(message),
            started_at: Some(started),
            finished_at: Some(now),
            ..Measurement::default()
        };
        let provider = match provider_of(metric) {
            Ok((key, _)) => match self.providers.get(&key) {
                Some(p) => p,
                None => {
                    return error(format!(
                        "no metric provider {key:?} is registered with Weir; register it under metricProviderPlugins"
                    ));
                }
            },
            Err(e) => return error(e),
        };
        let (contract_run, contract_metric) = match Self::contract_records(run, metric) {
            Ok(r) => r,
            Err(e) => return error(e),
        };
        let previous = run
            .result(&metric.name)
            .and_then(|r| r.measurements.last())
            .cloned()
            .unwrap_or_default();
        let reply = match task {
            Task::Start => provider.run(&contract_run, &contract_metric).await,
            Task::Resume => {
                provider
                    .resume(&contract_run, &contract_metric, &to_contract(&previous))
                    .await
            }
            Task::Terminate => {
                provider
                    .terminate(&contract_run, &contract_metric, &to_contract(&previous))
                    .await
            }
        };
        let reply = match reply {
            Ok(m) => m,
            // A plugin fault is an Error measurement with the typed reason;
            // it counts against consecutiveErrorLimit like any error.
            Err(e) => return error(e.to_string()),
        };
        let mut measurement = Measurement {
            phase: Phase::Running,
            message: reply.message.clone(),
            started_at: Some(started),
            finished_at: None,
            value: reply.value.clone(),
            metadata: reply.metadata.iter().cloned().collect(),
            resume_at: None,
        };
        match reply.phase {
            MeasurementPhase::Running => {
                let asked = reply
                    .resume_after_ms
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_RESUME_AFTER);
                let after = asked.max(MIN_MEASUREMENT_INTERVAL);
                if after > asked {
                    let note = format!(
                        "resume-after-ms {} is below the {} ms floor; resuming after {} ms",
                        asked.as_millis(),
                        MIN_MEASUREMENT_INTERVAL.as_millis(),
                        after.as_millis()
                    );
                    tracing::warn!(metric = %metric.name, %note, "measurement resume clamped");
                    measurement.message = Some(match measurement.message.take() {
                        Some(m) => format!("{m} ({note})"),
                        None => note,
                    });
                }
                measurement.resume_at = Some(chrono_after(now, after));
                return measurement;
            }
            MeasurementPhase::Failed => measurement.phase = Phase::Failed,
            MeasurementPhase::Inconclusive => measurement.phase = Phase::Inconclusive,
            MeasurementPhase::Error => {
                measurement.phase = Phase::Error;
                measurement.message = Some(format!(
                    "failed to run via plugin: {}",
                    reply.message.unwrap_or_default()
                ));
            }
            MeasurementPhase::Successful => {
                // The provider measured; the host judges.
                let value = reply
                    .value
                    .as_deref()
                    .map(serde_json::from_str::<serde_json::Value>)
                    .transpose()
                    .unwrap_or(None)
                    .unwrap_or(serde_json::Value::Null);
                match evaluate_result(
                    &self.evaluator,
                    &value,
                    metric.success_condition.as_deref(),
                    metric.failure_condition.as_deref(),
                )
                .await
                {
                    Ok(phase) => measurement.phase = phase,
                    Err(message) => {
                        measurement.phase = Phase::Error;
                        measurement.message = Some(message);
                    }
                }
            }
        }
        if matches!(task, Task::Terminate)
            && matches!(measurement.phase, Phase::Successful | Phase::Inconclusive)
        {
            measurement.message = Some("Metric Terminated".into());
        }
        measurement.finished_at = Some(now);
        measurement
    }

    async fn record(
        &self,
        run: &mut AnalysisRun,
        metric: &MetricSpec,
        measurement: Measurement,
        task: Task,
        now: DateTime<Utc>,
    ) {
        let dry_run = run
            .spec
            .dry_run
            .iter()
            .any(|d| d.metric_name == "*" || d.metric_name == metric.name);
        let limit = history_limit(run, &metric.name);
        let index = match run
            .status
            .metric_results
            .iter()
            .position(|r| r.name == metric.name)
        {
            Some(i) => i,
            None => {
                let mut fresh = MetricResult {
                    name: metric.name.clone(),
                    phase: Phase::Running,
                    dry_run,
                    ..MetricResult::default()
                };
                if let Ok((key, _)) = provider_of(metric)
                    && let Some(provider) = self.providers.get(&key)
                    && let Ok((_, m)) = Self::contract_records(run, metric)
                    && let Ok(pairs) = provider.metadata(&m).await
                {
                    fresh.metadata = pairs.into_iter().collect();
                }
                run.status.metric_results.push(fresh);
                run.status.metric_results.len() - 1
            }
        };
        let Some(result) = run.status.metric_results.get_mut(index) else {
            return;
        };
        if measurement.phase.completed() {
            match measurement.phase {
                Phase::Successful => {
                    result.successful += 1;
                    result.count += 1;
                    result.consecutive_error = 0;
                    result.consecutive_success += 1;
                }
                Phase::Failed => {
                    result.failed += 1;
                    result.count += 1;
                    result.consecutive_error = 0;
                    result.consecutive_success = 0;
                }
                Phase::Inconclusive => {
                    result.inconclusive += 1;
                    result.count += 1;
                    result.consecutive_error = 0;
                    result.consecutive_success = 0;
                }
                _ => {
                    result.error += 1;
                    result.consecutive_error += 1;
                    result.consecutive_success = 0;
                }
            }
        }
        match task {
            Task::Start => result.measurements.push(measurement),
            Task::Resume | Task::Terminate => match result.measurements.last_mut() {
                Some(last) => *last = measurement,
                None => result.measurements.push(measurement),
            },
        }
        // Bounded history; the provider cleans up what it left behind.
        if result.measurements.len() > limit {
            let excess = result.measurements.len() - limit;
            result.measurements.drain(..excess);
            if let Ok((key, _)) = provider_of(metric)
                && let Some(provider) = self.providers.get(&key)
                && let Ok((r, m)) = Self::contract_records(run, metric)
            {
                let keep = u32::try_from(limit).unwrap_or(u32::MAX);
                if let Err(e) = provider.garbage_collect(&r, &m, keep).await {
                    tracing::warn!(metric = %metric.name, error = %e, at = %now, "garbage collection failed");
                }
            }
        }
    }

    /// Argo's `assessRunStatus` with `assessMetricStatus` for each metric.
    fn assess(&self, run: &mut AnalysisRun, metrics: &[MetricSpec], now: DateTime<Utc>) {
        let terminating = is_terminating(run);
        let mut worst: Option<Phase> = None;
        let mut worst_message: Option<String> = if run.spec.terminate {
            Some("Run Terminated".into())
        } else {
            None
        };
        let mut everything_completed = true;
        for metric in metrics {
            let dry_run = run
                .spec
                .dry_run
                .iter()
                .any(|d| d.metric_name == "*" || d.metric_name == metric.name);
            let Some(result) = run
                .status
                .metric_results
                .iter_mut()
                .find(|r| r.name == metric.name)
            else {
                everything_completed = false;
                continue;
            };
            let status = assess_metric(metric, result, terminating);
            if result.phase != status {
                result.message = result.measurements.last().and_then(|m| m.message.clone());
                result.phase = status;
            }
            if !status.completed() {
                everything_completed = false;
                continue;
            }
            let (_, reason) = failure_inconclusive_or_error(metric, result);
            if dry_run {
                worst.get_or_insert(Phase::Successful);
                if let Some(reason) = reason {
                    result.message = Some(format!("Metric assessed {status:?} due to {reason}"));
                }
                continue;
            }
            if worst.is_none_or(|w| status.is_worse_than(w)) {
                worst = Some(status);
                if let Some(reason) = reason {
                    let mut message = format!(
                        "Metric \"{}\" assessed {status:?} due to {reason}",
                        metric.name
                    );
                    if let Some(detail) = &result.message {
                        message.push_str(&format!(": \"Error Message: {detail}\""));
                    }
                    worst_message = Some(message);
                }
            }
        }
        let (phase, message) = if terminating {
            (worst.unwrap_or(Phase::Successful), worst_message)
        } else if !everything_completed || worst.is_none() {
            (Phase::Running, None)
        } else {
            (worst.unwrap_or(Phase::Successful), worst_message)
        };
        if run.status.phase != phase {
            run.status.phase = phase;
            run.status.message = message;
            if phase.completed() {
                run.status.completed_at = Some(now);
            }
        }
    }
}

/// Argo's `IsTerminating`: the run was told to stop, or a metric (not a
/// dry-run one) has already ended Failed, Error or Inconclusive. Then the
/// run fails fast: no metric starts another measurement, one in progress
/// is terminated, and the run ends with the worst result instead of
/// waiting for the other metrics' counts.
fn is_terminating(run: &AnalysisRun) -> bool {
    run.spec.terminate
        || run.status.metric_results.iter().any(|r| {
            !r.dry_run && matches!(r.phase, Phase::Failed | Phase::Error | Phase::Inconclusive)
        })
}

/// What to do for a metric in this reconcile.
#[derive(Debug, Clone, Copy)]
enum Task {
    Start,
    Resume,
    Terminate,
}

/// Argo's `generateMetricTasks` for one metric.
fn due(
    run: &AnalysisRun,
    metric: &MetricSpec,
    now: DateTime<Utc>,
    terminating: bool,
) -> Option<Task> {
    let result = run.result(&metric.name);
    if result.is_some_and(|r| r.phase.completed()) {
        return None;
    }
    let last = result.and_then(|r| r.measurements.last());
    if let Some(last) = last
        && last.finished_at.is_none()
    {
        if terminating {
            return Some(Task::Terminate);
        }
        return match last.resume_at {
            Some(at) if at > now => None,
            _ => Some(Task::Resume),
        };
    }
    if terminating {
        return None;
    }
    let Some(last) = last else {
        if let Ok(Some(delay)) = metric.initial_delay() {
            let started = run.status.started_at.unwrap_or(now);
            if chrono_after(started, delay) > now {
                return None;
            }
        }
        return Some(Task::Start);
    };
    let count = result.map_or(0, |r| r.count);
    if let Ok(Some(limit)) = metric.effective_count()
        && count >= limit
    {
        return None;
    }
    let interval = if last.phase == Phase::Error {
        ERROR_RETRY_INTERVAL
    } else {
        match metric.interval() {
            Ok(Some(i)) => i.max(MIN_MEASUREMENT_INTERVAL),
            _ => ERROR_RETRY_INTERVAL,
        }
    };
    let finished = last.finished_at.unwrap_or(now);
    (now >= chrono_after(finished, interval)).then_some(Task::Start)
}

/// Argo's `assessMetricFailureInconclusiveOrError`.
fn failure_inconclusive_or_error(
    metric: &MetricSpec,
    result: &MetricResult,
) -> (Option<Phase>, Option<String>) {
    let mut phase = None;
    let mut message = None;
    let failure_limit = metric.failure_limit().unwrap_or(0);
    if failure_limit >= 0 && result.failed > failure_limit {
        phase = Some(Phase::Failed);
        message = Some(format!(
            "failed ({}) > failureLimit ({failure_limit})",
            result.failed
        ));
    }
    let inconclusive_limit = metric.inconclusive_limit().unwrap_or(0);
    if result.inconclusive > inconclusive_limit {
        phase = Some(Phase::Inconclusive);
        message = Some(format!(
            "inconclusive ({}) > inconclusiveLimit ({inconclusive_limit})",
            result.inconclusive
        ));
    }
    let error_limit = metric
        .consecutive_error_limit()
        .unwrap_or(super::types::DEFAULT_CONSECUTIVE_ERROR_LIMIT);
    if result.consecutive_error > error_limit {
        phase = Some(Phase::Error);
        message = Some(format!(
            "consecutiveErrors ({}) > consecutiveErrorLimit ({error_limit})",
            result.consecutive_error
        ));
    }
    (phase, message)
}

/// Argo's `assessMetricStatus`.
fn assess_metric(metric: &MetricSpec, result: &MetricResult, terminating: bool) -> Phase {
    if result.phase.completed() {
        return result.phase;
    }
    let Some(last) = result.measurements.last() else {
        return if terminating {
            Phase::Successful
        } else {
            Phase::Pending
        };
    };
    if !last.phase.completed() {
        return Phase::Running;
    }
    if let (Some(phase), _) = failure_inconclusive_or_error(metric, result) {
        return phase;
    }
    let success_limit = metric.consecutive_success_limit().unwrap_or(0);
    if success_limit > 0 && result.consecutive_success >= success_limit {
        return Phase::Successful;
    }
    if let Ok(Some(count)) = metric.effective_count()
        && result.count >= count
    {
        let failure_applicable = metric.failure_limit().unwrap_or(0) >= 0;
        let success_applicable = success_limit > 0;
        return match (failure_applicable, success_applicable) {
            (true, true) => Phase::Inconclusive,
            (false, true) => Phase::Failed,
            _ => Phase::Successful,
        };
    }
    if terminating {
        Phase::Successful
    } else {
        Phase::Running
    }
}

fn history_limit(run: &AnalysisRun, metric: &str) -> usize {
    run.spec
        .measurement_retention
        .iter()
        .find(|r| r.metric_name == metric || r.metric_name == "*")
        .and_then(|r| usize::try_from(r.limit).ok())
        .filter(|l| *l > 0)
        .unwrap_or(DEFAULT_HISTORY_LIMIT)
}

/// Argo's `calculateNextReconcileTime`.
fn next_reconcile(
    run: &AnalysisRun,
    metrics: &[MetricSpec],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut next: Option<DateTime<Utc>> = None;
    let mut consider = |t: DateTime<Utc>| {
        if next.is_none_or(|n| t < n) {
            next = Some(t);
        }
    };
    for metric in metrics {
        let result = run.result(&metric.name);
        if result.is_some_and(|r| r.phase.completed()) {
            continue;
        }
        let Some(last) = result.and_then(|r| r.measurements.last()) else {
            if let Ok(Some(delay)) = metric.initial_delay() {
                consider(chrono_after(run.status.started_at.unwrap_or(now), delay));
            }
            continue;
        };
        if last.finished_at.is_none() {
            if let Some(at) = last.resume_at {
                consider(at);
            }
            continue;
        }
        if let Ok(Some(limit)) = metric.effective_count()
            && result.map_or(0, |r| r.count) >= limit
        {
            continue;
        }
        let interval = if last.phase == Phase::Error {
            Some(ERROR_RETRY_INTERVAL)
        } else {
            metric
                .interval()
                .ok()
                .flatten()
                .map(|i| i.max(MIN_MEASUREMENT_INTERVAL))
        };
        if let (Some(interval), Some(finished)) = (interval, last.finished_at) {
            consider(chrono_after(finished, interval));
        }
    }
    next
}

fn to_contract(m: &Measurement) -> plugin::Measurement {
    let phase = match m.phase {
        Phase::Pending | Phase::Running => MeasurementPhase::Running,
        Phase::Successful => MeasurementPhase::Successful,
        Phase::Failed => MeasurementPhase::Failed,
        Phase::Error => MeasurementPhase::Error,
        Phase::Inconclusive => MeasurementPhase::Inconclusive,
    };
    plugin::Measurement {
        phase,
        value: m.value.clone(),
        message: m.message.clone(),
        metadata: m
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        resume_after_ms: None,
    }
}
