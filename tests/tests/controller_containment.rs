//! Containment through the controller on the embedded store: a provider's
//! output cannot make the controller spin or grow an AnalysisRun past what
//! a cluster accepts, a malformed registration is shown on the rollouts
//! instead of being silently ignored, and a soak of hostile calls beside a
//! fleet of canaries leaves every healthy rollout completed with bounded
//! memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, DurableCluster};
use weir::plugin::{CallErrorKind, EngineSettings, PluginRuntime, RuntimeConfig, TrafficRouter};
use weir_e2e::controller::{Harness, istio_objects, istio_routing, plugins_dir, rollout};
use weir_e2e::{cache_dir, faulty_spec, rss_bytes};

fn store() -> (tempfile::TempDir, Arc<dyn Cluster>) {
    let dir = tempfile::tempdir().expect("dir");
    let cluster = DurableCluster::open(&dir.path().join("store.redb")).expect("store");
    (dir, Arc::new(cluster))
}

/// The registration ConfigMap with the probe provider as `acme/probe`;
/// `limits` is extra YAML for its `limits:` block.
fn registration(limits: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: argo-rollouts-config, namespace: weir-system}}
data:
  metricProviderPlugins: |
    - name: acme/probe
      location: file://{}
      limits: {{{limits}}}
"#,
        plugins_dir().join("weir_plugin_probe.wasm").display()
    )
}

/// An AnalysisTemplate `probe` measuring with the probe provider in `config`.
fn template(config: &str, count: u32) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: probe, namespace: shop}}
spec:
  metrics:
    - name: probe
      interval: 0s
      count: {count}
      provider:
        plugin:
          acme/probe: {config}
"#
    )
}

const STEPS: &str = "        - setWeight: 25
        - analysis: {templates: [{templateName: probe}]}
        - setWeight: 75";

/// The value of a counter line in `/metrics`, 0 when absent.
fn counter(metrics: &str, line_prefix: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn analysis_run(h: &Harness) -> serde_json::Value {
    let runs = h
        .cluster
        .list("argoproj.io", "AnalysisRun", "shop", &[])
        .await
        .expect("list runs");
    runs.into_iter().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_asking_to_resume_at_once_cannot_make_the_controller_spin() {
    let (_dir, cluster) = store();
    let h = Harness::start(cluster).await;
    h.apply(&registration("")).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&template(r#"{fault: resume-now}"#, 1)).await;
    h.deploy_then_update("checkout", &istio_routing("checkout"), STEPS)
        .await;
    // Wait for the measurement to be running, then watch for 4 seconds.
    let started = Instant::now();
    loop {
        let run = analysis_run(&h).await;
        if run
            .pointer("/status/metricResults/0/measurements/0")
            .is_some()
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no run: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumes = |m: &str| {
        counter(
            m,
            r#"weir_plugin_calls_total{plugin="acme/probe",method="resume",outcome="ok"}"#,
        )
    };
    let before = resumes(&h.metrics.render());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = resumes(&h.metrics.render()) - before;
    println!("row resume-now: {during} resume calls in 4 s");
    assert!(
        during <= 6,
        "resume-after-ms 0 must be held to the 1 s floor: {during} resumes in 4 s"
    );
    let run = analysis_run(&h).await;
    let message = run
        .pointer("/status/metricResults/0/measurements/0/message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("below the 1000 ms floor"),
        "the clamp is reported: {message}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_run_with_huge_values_stays_under_its_size() {
    let (_dir, cluster) = store();
    let h = Harness::start(cluster).await;
    h.apply(&registration("")).await;
    h.apply(&istio_objects("checkout")).await;
    // Four measurements of 900 KB each (under the 1 MiB output cap).
    h.apply(&template(r#"{fault: huge-value, size: 900000}"#, 4))
        .await;
    let v1 = h
        .deploy_then_update("checkout", &istio_routing("checkout"), STEPS)
        .await
        .stable_rs;
    h.wait("checkout", 60, "v2 Healthy after the analysis", |s| {
        s.phase.as_deref() == Some("Healthy") && s.stable_rs != v1
    })
    .await;
    let run = analysis_run(&h).await;
    let size = serde_json::to_vec(&run).map(|v| v.len()).unwrap_or(0);
    println!("row status-size: the AnalysisRun is {size} bytes after 4 x 900 KB values");
    assert_eq!(run["status"]["phase"], "Successful");
    assert!(
        size <= weir::analysis::fit::DEFAULT_MAX_RUN_BYTES,
        "{size} bytes"
    );
    let measurements = run["status"]["metricResults"][0]["measurements"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(measurements.len(), 4, "all kept, cut");
    assert_eq!(run["status"]["metricResults"][0]["count"], 4);
    assert!(
        measurements[0]["value"]
            .as_str()
            .is_some_and(|v| v.contains("cut by Weir from 900002 bytes")),
        "the cut is visible: {}",
        &measurements[0]
            .to_string()
            .chars()
            .rev()
            .take(300)
            .collect::<String>()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_registration_is_shown_on_the_rollouts_until_it_is_fixed() {
    let (_dir, cluster) = store();
    let h = Harness::start(cluster).await;
    h.apply(&registration("memoryMiB: 64")).await;
    h.apply(&istio_objects("checkout")).await;
    h.apply(&rollout(
        "checkout",
        "app:1",
        &istio_routing("checkout"),
        "        - setWeight: 50",
    ))
    .await;
    h.wait("checkout", 30, "Healthy", |s| {
        s.phase.as_deref() == Some("Healthy")
    })
    .await;
    // The spelling the parser used to take: now an unknown field.
    h.apply(&registration("memoryMib: 64")).await;
    let shown = h
        .wait("checkout", 30, "the registration error shown", |s| {
            s.condition("RegistrationInvalid").is_some()
        })
        .await;
    let c = shown.condition("RegistrationInvalid").expect("condition");
    println!("row registration-invalid: {}", c.message);
    assert!(
        c.message.contains("memoryMib") && c.message.contains("memoryMiB"),
        "names the bad field and the right one: {}",
        c.message
    );
    assert!(c.message.contains("last valid registration stays in force"));
    h.apply(&registration("memoryMiB: 32")).await;
    h.wait("checkout", 30, "the condition cleared", |s| {
        s.condition("RegistrationInvalid").is_none()
    })
    .await;
    h.stop().await;
}

/// One hostile call of the soak's mix; returns whether it failed as it must.
async fn hostile_call(faulty: &TrafficRouter, i: usize) {
    const ROWS: [&str; 8] = [
        r#"{"fault":"patch-deep-copy"}"#,
        r#"{"fault":"patch-size-doubling","count":24}"#,
        r#"{"fault":"deep-object","size":800}"#,
        r#"{"fault":"many-creates","count":20000,"size":10}"#,
        r#"{"fault":"request-flood","count":38000}"#,
        r#"{"fault":"many-creates","count":10,"size":900000}"#,
        r#"{"fault":"panic"}"#,
        r#"{"fault":"memory-bomb"}"#,
    ];
    let row = ROWS[i % ROWS.len()];
    let mut target = weir_e2e::rollout(row);
    target.name = format!("hostile-{}", i % 97);
    let error = faulty
        .set_weight(&target, 1, &[])
        .await
        .expect_err("a hostile call fails");
    assert!(
        error.is_fault() || matches!(error.kind, CallErrorKind::RateLimited { .. }),
        "{row}: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_hostile_calls_beside_a_fleet_of_canaries() {
    const ROLLOUTS: usize = 12;
    const CALLS: usize = 10_000;
    let (_dir, cluster) = store();
    let h = Harness::start(cluster.clone()).await;
    // Hostile and healthy plugins on their own runtime over the same store.
    let runtime = PluginRuntime::new(
        RuntimeConfig {
            engine: EngineSettings::default(),
            cache_dir: Some(cache_dir()),
            bundle: None,
            recorder: None,
        },
        cluster.clone(),
    )
    .expect("runtime");
    let faulty = runtime
        .load_router(faulty_spec("soak/faulty", Duration::from_secs(2)))
        .await
        .expect("load");
    let mut healthy_spec = faulty_spec("soak/healthy", Duration::from_secs(2));
    healthy_spec.limits.calls_per_second = 0;
    let healthy = runtime.load_router(healthy_spec).await.expect("load");

    for i in 0..ROLLOUTS {
        let name = format!("app{i}");
        h.apply(&istio_objects(&name)).await;
        h.apply(&rollout(
            &name,
            "app:1",
            &istio_routing(&name),
            "        - setWeight: 20\n        - pause: {duration: 1s}\n        - setWeight: 60\n        - pause: {duration: 1s}",
        ))
        .await;
    }
    let mut v1 = Vec::new();
    for i in 0..ROLLOUTS {
        let name = format!("app{i}");
        let first = h
            .wait(&name, 60, "first deploy", |s| {
                s.phase.as_deref() == Some("Healthy")
            })
            .await;
        v1.push(first.stable_rs.expect("a stable ReplicaSet"));
    }
    // Peak RSS, sampled throughout.
    let peak = Arc::new(AtomicU64::new(rss_bytes()));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    // Warm up, then measure.
    for i in 0..200 {
        hostile_call(&faulty, i).await;
    }
    let before = rss_bytes();
    let started = Instant::now();
    let mut updated = false;
    for i in 0..CALLS / 2 {
        hostile_call(&faulty, i).await;
        healthy
            .set_weight(&weir_e2e::rollout("{}"), (i % 100) as i32, &[])
            .await
            .expect("a healthy call succeeds throughout");
        if i == CALLS / 8 && !updated {
            // The fleet's canaries start while the soak is under way.
            for r in 0..ROLLOUTS {
                let name = format!("app{r}");
                h.apply(&rollout(
                    &name,
                    "app:2",
                    &istio_routing(&name),
                    "        - setWeight: 20\n        - pause: {duration: 1s}\n        - setWeight: 60\n        - pause: {duration: 1s}",
                ))
                .await;
            }
            updated = true;
        }
    }
    let elapsed = started.elapsed();
    for (r, v1) in v1.iter().enumerate() {
        let name = format!("app{r}");
        h.wait(&name, 60, "v2 Healthy after the soak", |s| {
            s.phase.as_deref() == Some("Healthy")
                && s.stable_rs.as_deref().is_some_and(|hash| hash != v1)
        })
        .await;
    }
    let after = rss_bytes();
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    let growth = after.saturating_sub(before);
    println!(
        "soak: {CALLS} calls ({} hostile, {} healthy) in {elapsed:?} beside {ROLLOUTS} canaries; RSS {} -> {} MiB (growth {} MiB), peak {} MiB",
        CALLS / 2,
        CALLS / 2,
        before >> 20,
        after >> 20,
        growth >> 20,
        peak >> 20
    );
    assert!(growth < 192 << 20, "RSS grew {growth} bytes");
    assert!(peak < 1536 << 20, "peak RSS {peak} bytes");
    assert_eq!(healthy.stats().count("ok"), (CALLS / 2) as u64 + 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_that_used_to_abort_the_process_is_an_error_and_is_not_repeated_after_a_restart()
 {
    let (_dir, cluster) = store();
    let h = Harness::start(cluster.clone()).await;
    h.apply(&registration("")).await;
    h.apply(&istio_objects("checkout")).await;
    // The comment hid a 7 TB range from the old textual pre-check; the
    // process aborted, and again after every restart.
    h.apply(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: probe, namespace: shop}
spec:
  metrics:
    - name: probe
      count: 1
      consecutiveErrorLimit: 0
      successCondition: '/* " */ len(1..100000000000) > 0 // "'
      provider:
        plugin:
          acme/probe: {fault: huge-value, size: 10}
"#,
    )
    .await;
    h.deploy_then_update("checkout", &istio_routing("checkout"), STEPS)
        .await;
    h.wait("checkout", 60, "aborted by the analysis", |s| {
        s.phase.as_deref() == Some("Degraded")
    })
    .await;
    let run = analysis_run(&h).await;
    assert_eq!(run["status"]["phase"], "Error", "{run}");
    let message = run["status"]["metricResults"][0]["measurements"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("row condition-abort: {message}");
    assert!(
        message.contains("successCondition") && message.contains("crashed the evaluator"),
        "{message}"
    );
    h.stop().await;
    // A restart on the same store: the run is done, nothing is evaluated again.
    let h = Harness::start(cluster.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = analysis_run(&h).await;
    assert_eq!(
        again["metadata"]["resourceVersion"], run["metadata"]["resourceVersion"],
        "the finished run is not touched after the restart"
    );
    assert_eq!(
        counter(
            &h.metrics.render(),
            r#"weir_plugin_calls_total{plugin="weir/condition",method="evaluate""#
        ),
        0,
        "no condition evaluated again"
    );
    h.stop().await;
}
