//! The job metric provider, with Argo Rollouts' semantics
//! (`metricproviders/job/job.go`): each measurement creates a Job from the
//! metric's `job: {metadata, spec}`, named `<run uid>.<metric>.<n>` and
//! annotated with the run; it is `running` until the Job reports `Complete`
//! (successful) or `Failed` (failed). Terminate deletes the Job;
//! garbage-collect keeps the newest `limit` Jobs of the run.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::cluster;
use weir_plugin_sdk::objects;
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Guest, Measurement, MeasurementPhase, Metric,
};

const JOB_API: &str = "batch/v1";
const UID_LABEL: &str = "analysisrun.argoproj.io/uid";
const NAME_ANNOTATION: &str = "analysisrun.argoproj.io/name";
const NAMESPACE_ANNOTATION: &str = "analysisrun.argoproj.io/namespace";
const METRIC_ANNOTATION: &str = "analysisrun.argoproj.io/metric-name";
const JOB_NAME_KEY: &str = "job-name";
const JOB_NAMESPACE_KEY: &str = "job-namespace";
const STARTED_KEY: &str = "weir.started-ms";
/// Kubernetes' DNS label limit, which Argo applies to Job names.
const NAME_LIMIT: usize = 63;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobConfig {
    #[serde(default)]
    metadata: Metadata,
    spec: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    #[serde(default)]
    labels: Map<String, Value>,
    #[serde(default)]
    annotations: Map<String, Value>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Argo's `getJobIDSuffix`: count + error + 1 of the metric's result.
fn job_suffix(run: &AnalysisRun, metric: &str) -> i64 {
    let object: Value = serde_json::from_str(&run.object).unwrap_or(Value::Null);
    object["status"]["metricResults"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"].as_str() == Some(metric))
        .map(|r| r["count"].as_i64().unwrap_or(0) + r["error"].as_i64().unwrap_or(0) + 1)
        .unwrap_or(1)
}

/// Argo's `newJobName`, truncating the metric name to fit 63 characters.
fn job_name(run: &AnalysisRun, metric: &str) -> String {
    let suffix = job_suffix(run, metric);
    let name = format!("{}.{metric}.{suffix}", run.uid);
    if name.len() <= NAME_LIMIT {
        return name;
    }
    let over = name.len() - NAME_LIMIT;
    let mut keep = metric.len().saturating_sub(over);
    while !metric.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}.{}.{suffix}", run.uid, &metric[..keep])
}

fn new_job(run: &AnalysisRun, metric: &Metric) -> Result<Value, PluginError> {
    let config: JobConfig = weir_plugin_sdk::parse_config("job provider", &metric.config)?;
    if !config.spec.is_object() {
        return Err(PluginError::InvalidConfig(
            "job provider: `spec` must be a Job spec".into(),
        ));
    }
    let mut labels = config.metadata.labels;
    labels.insert(UID_LABEL.into(), json!(run.uid));
    let mut annotations = config.metadata.annotations;
    annotations.insert(NAME_ANNOTATION.into(), json!(run.name));
    annotations.insert(NAMESPACE_ANNOTATION.into(), json!(run.namespace));
    annotations.insert(METRIC_ANNOTATION.into(), json!(metric.name));
    let mut spec = config.spec;
    // The pods carry the run's uid too, as Argo's pod informer expects.
    spec["template"]["metadata"]["labels"][UID_LABEL] = json!(run.uid);
    Ok(json!({
        "apiVersion": JOB_API,
        "kind": "Job",
        "metadata": {
            "name": job_name(run, &metric.name),
            "namespace": run.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
                "name": run.name, "uid": run.uid, "controller": true, "blockOwnerDeletion": true
            }],
        },
        "spec": spec,
    }))
}

fn running(metadata: Vec<(String, String)>, resume_after_ms: u64) -> Measurement {
    Measurement {
        phase: MeasurementPhase::Running,
        value: None,
        message: None,
        metadata,
        resume_after_ms: Some(resume_after_ms),
    }
}

fn meta<'a>(m: &'a Measurement, key: &str) -> Option<&'a str> {
    m.metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn job_ref(run: &AnalysisRun, m: &Measurement) -> Result<cluster::ObjectRef, PluginError> {
    let name = meta(m, JOB_NAME_KEY)
        .ok_or_else(|| PluginError::Internal("the measurement has no job-name metadata".into()))?;
    let namespace = meta(m, JOB_NAMESPACE_KEY).unwrap_or(&run.namespace);
    Ok(objects::object_ref(JOB_API, "Job", namespace, name))
}

fn condition_true(job: &Value, kind: &str) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["type"].as_str() == Some(kind) && c["status"].as_str().is_none_or(|s| s == "True")
        })
}

struct JobProvider;

impl Guest for JobProvider {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn run(run: AnalysisRun, metric: Metric) -> Result<Measurement, PluginError> {
        let job = new_job(&run, &metric)?;
        let name = job["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        objects::create(&job)?;
        Ok(running(
            vec![
                (JOB_NAME_KEY.into(), name),
                (JOB_NAMESPACE_KEY.into(), run.namespace.clone()),
                (STARTED_KEY.into(), now_ms().to_string()),
            ],
            1_000,
        ))
    }

    fn resume(
        run: AnalysisRun,
        _metric: Metric,
        measurement: Measurement,
    ) -> Result<Measurement, PluginError> {
        let target = job_ref(&run, &measurement)?;
        let job = objects::get_required(&target)?;
        let finished = |phase, message: String| Measurement {
            phase,
            value: None,
            message: Some(message),
            metadata: measurement.metadata.clone(),
            resume_after_ms: None,
        };
        if condition_true(&job, "Failed") {
            return Ok(finished(
                MeasurementPhase::Failed,
                format!("job {} failed", target.name),
            ));
        }
        if condition_true(&job, "Complete") {
            return Ok(finished(
                MeasurementPhase::Successful,
                format!("job {} completed", target.name),
            ));
        }
        // Argo's backoff: √(2·elapsed) seconds.
        let started: u64 = meta(&measurement, STARTED_KEY)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(now_ms);
        let elapsed_s = now_ms().saturating_sub(started) as f64 / 1000.0;
        let delay_ms = ((2.0 * elapsed_s).sqrt() * 1000.0).clamp(1_000.0, 60_000.0) as u64;
        Ok(running(measurement.metadata, delay_ms))
    }

    fn terminate(
        run: AnalysisRun,
        _metric: Metric,
        measurement: Measurement,
    ) -> Result<Measurement, PluginError> {
        let target = job_ref(&run, &measurement)?;
        match cluster::delete(&target) {
            Ok(()) | Err(PluginError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(Measurement {
            phase: MeasurementPhase::Inconclusive,
            value: None,
            message: Some(format!("job {} terminated", target.name)),
            metadata: measurement.metadata,
            resume_after_ms: None,
        })
    }

    fn garbage_collect(run: AnalysisRun, metric: Metric, limit: u32) -> Result<(), PluginError> {
        let listed = cluster::list(
            JOB_API,
            "Job",
            &run.namespace,
            Some(&format!("{UID_LABEL}={}", run.uid)),
        )?;
        let mut jobs: Vec<Value> = listed
            .iter()
            .filter_map(|text| serde_json::from_str::<Value>(text).ok())
            .filter(|j| {
                j["metadata"]["annotations"][METRIC_ANNOTATION].as_str()
                    == Some(metric.name.as_str())
            })
            .collect();
        // Oldest first: by creation time, then by the numeric suffix.
        let suffix = |j: &Value| {
            j["metadata"]["name"]
                .as_str()
                .and_then(|n| n.rsplit('.').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        jobs.sort_by(|a, b| {
            let ta = a["metadata"]["creationTimestamp"].as_str().unwrap_or("");
            let tb = b["metadata"]["creationTimestamp"].as_str().unwrap_or("");
            ta.cmp(tb).then(suffix(a).cmp(&suffix(b)))
        });
        let excess = jobs.len().saturating_sub(limit as usize);
        for job in jobs.iter().take(excess) {
            let name = job["metadata"]["name"].as_str().unwrap_or_default();
            match cluster::delete(&objects::object_ref(JOB_API, "Job", &run.namespace, name)) {
                Ok(()) | Err(PluginError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn metadata(_metric: Metric) -> Vec<(String, String)> {
        vec![]
    }
}

weir_plugin_sdk::export_metric_provider!(JobProvider);
