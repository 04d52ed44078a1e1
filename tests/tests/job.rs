//! The job metric provider on the in-memory cluster, with the test playing
//! the Job controller: the seed AnalysisTemplate from a real bug report runs
//! to Successful when its Job completes and to Failed when it fails; Jobs
//! are named and annotated as Argo names them; old Jobs are collected.

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use weir::analysis::AnalysisEngine;
use weir::analysis::types::{AnalysisRun, AnalysisTemplate, Phase};
use weir::cluster::{Cluster, MemoryCluster, ObjectKey, Write};
use weir::plugin::{FaultPolicy, Grant, GrantedKind, PluginSpec};
use weir_e2e::{plugin_wasm, runtime};

const SEED: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: quit-sidecar}
spec:
  metrics:
  - name: test-analysis
    provider:
      job:
        spec:
          template:
            spec:
              containers:
              - name: exit-container
                image: curlimages/curl:8.8.0
                command: [sh, -c, "echo 'sending quitquitquit' && curl -fsI -X POST http://localhost:15020/quitquitquit && exit 0"]
              restartPolicy: Never
          backoffLimit: 0
"#;

async fn engine() -> (
    weir::plugin::PluginRuntime,
    Arc<MemoryCluster>,
    AnalysisEngine,
) {
    let (runtime, cluster) = runtime();
    let mut spec = PluginSpec::new(
        "argoproj/job",
        plugin_wasm("weir-plugin-job").display().to_string(),
    );
    spec.grant = Grant {
        read: vec![],
        write: vec![GrantedKind {
            group: "batch".into(),
            kind: "Job".into(),
        }],
        namespaces: vec![],
        secrets: vec![],
    };
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    let mut engine = AnalysisEngine::new(weir_e2e::evaluator().await);
    engine.register("job", runtime.load_provider(spec).await.expect("load job"));
    (runtime, cluster, engine)
}

fn seed_template() -> AnalysisTemplate {
    serde_yaml_ng::from_str(SEED).expect("the seed template parses unchanged")
}

async fn jobs(cluster: &MemoryCluster) -> Vec<Value> {
    cluster
        .list("batch", "Job", "default", &[])
        .await
        .expect("list")
}

/// What the Job controller would write when the Job finishes.
async fn finish(cluster: &MemoryCluster, name: &str, condition: &str) {
    let key = ObjectKey::new("batch/v1", "Job", "default", name);
    let mut job = cluster.get(&key).await.expect("job");
    job["status"] = json!({"conditions": [{"type": condition, "status": "True"}]});
    cluster
        .apply(vec![Write::Update {
            object: job,
            expected_version: None,
        }])
        .await
        .expect("status");
}

#[tokio::test]
async fn the_seed_template_runs_to_successful_when_its_job_completes() {
    let (_rt, cluster, engine) = engine().await;
    let mut run = AnalysisRun::from_template(
        &seed_template(),
        "quit-sidecar-run",
        "default",
        "3f2a9c1e-0000-4000-8000-000000000001",
        &[],
    );
    let t0 = Utc::now();
    let next = engine.reconcile(&mut run, t0).await.expect("running");
    assert_eq!(run.status.phase, Phase::Running);
    let created = jobs(&cluster).await;
    assert_eq!(created.len(), 1);
    let job = &created[0];
    assert_eq!(
        job["metadata"]["name"],
        "3f2a9c1e-0000-4000-8000-000000000001.test-analysis.1"
    );
    assert_eq!(
        job["metadata"]["annotations"]["analysisrun.argoproj.io/name"],
        "quit-sidecar-run"
    );
    assert_eq!(
        job["metadata"]["annotations"]["analysisrun.argoproj.io/metric-name"],
        "test-analysis"
    );
    assert_eq!(
        job["metadata"]["labels"]["analysisrun.argoproj.io/uid"],
        "3f2a9c1e-0000-4000-8000-000000000001"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "AnalysisRun");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        "curlimages/curl:8.8.0"
    );

    // Still running: resumed, not finished.
    let next = engine
        .reconcile(&mut run, next)
        .await
        .expect("still running");
    assert_eq!(run.status.phase, Phase::Running);
    finish(
        &cluster,
        job["metadata"]["name"].as_str().unwrap_or(""),
        "Complete",
    )
    .await;
    assert_eq!(
        engine
            .reconcile(&mut run, next + ChronoDuration::seconds(60))
            .await,
        None
    );
    assert_eq!(run.status.phase, Phase::Successful, "{:?}", run.status);
}

#[tokio::test]
async fn a_failed_job_fails_the_run() {
    let (_rt, cluster, engine) = engine().await;
    let mut run = AnalysisRun::from_template(
        &seed_template(),
        "quit-sidecar-run",
        "default",
        "uid-failing",
        &[],
    );
    let t0 = Utc::now();
    engine.reconcile(&mut run, t0).await;
    finish(&cluster, "uid-failing.test-analysis.1", "Failed").await;
    assert_eq!(
        engine
            .reconcile(&mut run, t0 + ChronoDuration::seconds(60))
            .await,
        None
    );
    assert_eq!(run.status.phase, Phase::Failed);
    assert!(
        run.status
            .message
            .unwrap_or_default()
            .contains("failed (1) > failureLimit (0)")
    );
}

#[tokio::test]
async fn terminating_a_run_deletes_its_running_job() {
    let (_rt, cluster, engine) = engine().await;
    let mut run = AnalysisRun::from_template(&seed_template(), "r", "default", "uid-term", &[]);
    let t0 = Utc::now();
    engine.reconcile(&mut run, t0).await;
    assert_eq!(jobs(&cluster).await.len(), 1);
    run.spec.terminate = true;
    assert_eq!(
        engine
            .reconcile(&mut run, t0 + ChronoDuration::seconds(5))
            .await,
        None
    );
    assert!(jobs(&cluster).await.is_empty(), "the Job is deleted");
    let m = &run.result("test-analysis").expect("result").measurements[0];
    assert_eq!(m.phase, Phase::Inconclusive);
    assert_eq!(m.message.as_deref(), Some("Metric Terminated"));
}

#[tokio::test]
async fn old_jobs_are_garbage_collected() {
    let (_rt, cluster, engine) = engine().await;
    let mut template = seed_template();
    template.spec.metrics[0].count = Some(weir::analysis::types::IntOrString::Int(12));
    template.spec.metrics[0].interval = Some("1s".into());
    let mut run = AnalysisRun::from_template(&template, "r", "default", "uid-gc", &[]);
    let mut now = Utc::now();
    for round in 1..=12 {
        engine.reconcile(&mut run, now).await;
        finish(
            &cluster,
            &format!("uid-gc.test-analysis.{round}"),
            "Complete",
        )
        .await;
        now += ChronoDuration::seconds(70);
        engine.reconcile(&mut run, now).await;
        now += ChronoDuration::seconds(2);
    }
    assert_eq!(
        run.status.phase,
        Phase::Successful,
        "{:?}",
        run.status.message
    );
    let mut names: Vec<String> = jobs(&cluster)
        .await
        .iter()
        .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort_by_key(|n| n.rsplit('.').next().and_then(|s| s.parse::<u32>().ok()));
    assert_eq!(names.len(), 10, "the newest 10 are kept: {names:?}");
    assert_eq!(
        names.first().map(String::as_str),
        Some("uid-gc.test-analysis.3")
    );
}
