//! The corpus of Argo-shaped manifests (`tests/corpus/`, written from Argo
//! Rollouts' documentation) run end to end on the embedded store: the real
//! controller, the real shipped routers and providers, a real Prometheus
//! and loopback HTTP servers. Each test applies one file as an Argo user
//! would, rolls out a new image, and checks the objects and phases Argo's
//! documentation describes. The one stand-in is the Job controller (the
//! job provider's Job is marked complete by the test: no kubelet runs
//! here).

use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, ObjectKey, Write};
use weir::controller::actions::{Action, act, rollout_key, set_image};
use weir::controller::children::HASH_LABEL;
use weir::controller::status::RolloutStatus;
use weir_e2e::controller::{Backend, Harness, apply};
use weir_e2e::{Answer, ScriptedServer};

const NS: &str = "demo";

/// A controller on a fresh embedded store with one corpus file applied.
struct Corpus {
    h: Harness,
    _backend: Backend,
}

/// The corpus file `name` with its placeholders filled in.
fn manifest(name: &str, vars: &[(&str, String)]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/").to_string() + name;
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (var, value) in vars {
        text = text.replace(&format!("${{{var}}}"), value);
    }
    assert!(!text.contains("${"), "{name}: a placeholder is left");
    text
}

/// Weir's registration for the built-in providers that make HTTP calls:
/// which hosts they may reach (Argo's providers reach anything).
fn registration(web: Option<&str>, prometheus: Option<&str>) -> String {
    let entry = |name: &str, host: Option<&str>| {
        host.map(|h| format!("    - name: {name}\n      http: {{allowHosts: [\"{h}\"]}}\n"))
            .unwrap_or_default()
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: argo-rollouts-config, namespace: weir-system}}\ndata:\n  metricProviderPlugins: |\n{}{}",
        entry("web", web),
        entry("prometheus", prometheus)
    )
}

impl Corpus {
    async fn start(file: &str, vars: &[(&str, String)], registration: Option<String>) -> Self {
        let backend = Backend::embedded();
        let h = Harness::on(&backend).await;
        if let Some(r) = registration {
            h.apply(&r).await;
        }
        apply(h.cluster.as_ref(), &manifest(file, vars)).await;
        Corpus {
            h,
            _backend: backend,
        }
    }

    fn cluster(&self) -> &dyn Cluster {
        self.h.cluster.as_ref()
    }

    async fn status(&self, rollout: &str) -> RolloutStatus {
        self.cluster()
            .get(&rollout_key(NS, rollout))
            .await
            .map(|o| RolloutStatus::of(&o))
            .unwrap_or_default()
    }

    /// Waits (up to 45 s) until `done` holds for the rollout.
    async fn wait(
        &self,
        rollout: &str,
        what: &str,
        done: impl Fn(&RolloutStatus) -> bool,
    ) -> RolloutStatus {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let s = self.status(rollout).await;
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{rollout}: timed out waiting for {what}; last status: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn healthy(&self, rollout: &str) -> String {
        let s = self
            .wait(rollout, "Healthy", |s| {
                s.phase.as_deref() == Some("Healthy")
            })
            .await;
        s.stable_rs
            .expect("a Healthy rollout has a stable ReplicaSet")
    }

    /// Waits until the rollout is Healthy on a revision other than
    /// `previous` (the stable before an update); returns its hash.
    async fn healthy_after(&self, rollout: &str, previous: &str) -> String {
        let s = self
            .wait(rollout, "Healthy on the new revision", |s| {
                s.phase.as_deref() == Some("Healthy")
                    && s.stable_rs.as_deref().is_some_and(|h| h != previous)
            })
            .await;
        s.stable_rs
            .expect("a Healthy rollout has a stable ReplicaSet")
    }

    async fn paused_at(&self, rollout: &str, index: i32) -> RolloutStatus {
        self.wait(rollout, &format!("Paused at step {index}"), |s| {
            s.phase.as_deref() == Some("Paused") && s.current_step_index == Some(index)
        })
        .await
    }

    /// Waits for the first deploy of `rollout` (its `rollouts-demo`
    /// container), rolls out the yellow image and waits for the first
    /// pause: returns the first stable and the paused status.
    async fn update_to_first_pause(&self, rollout: &str) -> (String, RolloutStatus) {
        let blue = self.healthy(rollout).await;
        self.set_image(rollout, "rollouts-demo", "argoproj/rollouts-demo:yellow")
            .await;
        (blue, self.paused_at(rollout, 1).await)
    }

    /// The host-split example's VirtualService.
    async fn demo_virtual_service(&self) -> Value {
        self.get(
            "networking.istio.io/v1alpha3",
            "VirtualService",
            "rollouts-demo-vsvc",
        )
        .await
    }

    async fn get(&self, api_version: &str, kind: &str, name: &str) -> Value {
        self.cluster()
            .get(&ObjectKey::new(api_version, kind, NS, name))
            .await
            .unwrap_or_else(|e| panic!("{kind} {NS}/{name}: {e}"))
    }

    async fn list(&self, group: &str, kind: &str) -> Vec<Value> {
        self.cluster()
            .list(group, kind, NS, &[])
            .await
            .expect("list")
    }

    /// `kubectl argo rollouts set image ROLLOUT CONTAINER=IMAGE`.
    async fn set_image(&self, rollout: &str, container: &str, image: &str) {
        set_image(self.cluster(), NS, rollout, container, image)
            .await
            .expect("set image");
    }

    /// `kubectl argo rollouts promote ROLLOUT`.
    async fn promote(&self, rollout: &str) {
        act(self.cluster(), NS, rollout, Action::Promote)
            .await
            .expect("promote");
    }

    /// The hash a Service selects.
    async fn selected(&self, service: &str) -> String {
        self.get("v1", "Service", service).await["spec"]["selector"][HASH_LABEL]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn stop(self) {
        self.h.stop().await;
    }
}

/// The weight of each destination of a VirtualService's first HTTP route,
/// by `host` or `host/subset`.
fn istio_weights(vs: &Value) -> Vec<(String, i64)> {
    vs["spec"]["http"][0]["route"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let d = &r["destination"];
            let name = match d["subset"].as_str() {
                Some(subset) => format!("{}/{subset}", d["host"].as_str().unwrap_or("")),
                None => d["host"].as_str().unwrap_or("").to_string(),
            };
            (name, r["weight"].as_i64().unwrap_or(-1))
        })
        .collect()
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_host_level_splitting_moves_the_virtual_service_step_by_step() {
    let c = Corpus::start("istio-host-split.yaml", &[], None).await;
    let (blue, paused) = c.update_to_first_pause("rollouts-demo").await;
    let yellow = paused.current_pod_hash.clone().expect("canary");
    assert_ne!(yellow, blue);
    let vs = c.demo_virtual_service().await;
    assert_eq!(
        istio_weights(&vs),
        pairs(&[("rollouts-demo-stable", 95), ("rollouts-demo-canary", 5)])
    );
    // Only the weights changed: ports and gateways stay as written.
    assert_eq!(
        vs["spec"]["http"][0]["route"][0]["destination"]["port"]["number"],
        15372
    );
    assert_eq!(vs["spec"]["gateways"][0], "rollouts-demo-gateway");
    assert_eq!(c.selected("rollouts-demo-canary").await, yellow);
    assert_eq!(c.selected("rollouts-demo-stable").await, blue);
    c.promote("rollouts-demo").await;
    assert_eq!(c.healthy_after("rollouts-demo", &blue).await, yellow);
    let vs = c.demo_virtual_service().await;
    assert_eq!(
        istio_weights(&vs),
        pairs(&[("rollouts-demo-stable", 100), ("rollouts-demo-canary", 0)])
    );
    assert_eq!(c.selected("rollouts-demo-stable").await, yellow);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_subset_level_splitting_labels_the_destination_rule_subsets() {
    let c = Corpus::start("istio-subset-split.yaml", &[], None).await;
    let (blue, paused) = c.update_to_first_pause("rollout-example").await;
    let yellow = paused.current_pod_hash.expect("canary");
    assert_eq!(
        subset_split(&c).await,
        (
            vec![
                ("canary".into(), yellow.clone()),
                ("stable".into(), blue.clone())
            ],
            pairs(&[
                ("rollout-example/stable", 90),
                ("rollout-example/canary", 10)
            ])
        )
    );
    // The subsets keep the labels they were written with.
    let dr = c
        .get(
            "networking.istio.io/v1alpha3",
            "DestinationRule",
            "rollout-destrule",
        )
        .await;
    assert_eq!(dr["spec"]["subsets"][0]["labels"]["app"], "rollout-example");
    c.promote("rollout-example").await;
    assert_eq!(c.healthy_after("rollout-example", &blue).await, yellow);
    assert_eq!(
        subset_split(&c).await,
        (
            vec![
                ("canary".into(), yellow.clone()),
                ("stable".into(), yellow.clone())
            ],
            pairs(&[
                ("rollout-example/stable", 100),
                ("rollout-example/canary", 0)
            ])
        )
    );
    c.stop().await;
}

/// The subset-split example's DestinationRule subsets (name, hash) and
/// VirtualService weights.
async fn subset_split(c: &Corpus) -> (Vec<(String, String)>, Vec<(String, i64)>) {
    let dr = c
        .get(
            "networking.istio.io/v1alpha3",
            "DestinationRule",
            "rollout-destrule",
        )
        .await;
    let subsets = dr["spec"]["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                s["labels"][HASH_LABEL].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let vs = c
        .get(
            "networking.istio.io/v1alpha3",
            "VirtualService",
            "rollout-vsvc",
        )
        .await;
    (subsets, istio_weights(&vs))
}

/// The canary Ingress Argo creates for NGINX.
async fn canary_ingress(c: &Corpus) -> Value {
    c.get(
        "networking.k8s.io/v1",
        "Ingress",
        "rollouts-demo-rollouts-demo-stable-canary",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_gets_a_canary_ingress_beside_the_stable_one() {
    let c = Corpus::start("nginx.yaml", &[], None).await;
    let (blue, _paused) = c.update_to_first_pause("rollouts-demo").await;
    let canary = canary_ingress(&c).await;
    let annotations = &canary["metadata"]["annotations"];
    assert_eq!(annotations["nginx.ingress.kubernetes.io/canary"], "true");
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-weight"],
        "20"
    );
    assert_eq!(annotations["kubernetes.io/ingress.class"], "nginx");
    let rule = &canary["spec"]["rules"][0];
    assert_eq!(rule["host"], "rollouts-demo.local");
    assert_eq!(
        rule["http"]["paths"][0]["backend"]["service"]["name"],
        "rollouts-demo-canary"
    );
    // The stable Ingress is the user's: untouched.
    let stable = c
        .get("networking.k8s.io/v1", "Ingress", "rollouts-demo-stable")
        .await;
    assert_eq!(
        stable["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "rollouts-demo-stable"
    );
    c.promote("rollouts-demo").await;
    c.wait("rollouts-demo", "step 3 at 60%", |s| {
        s.current_step_index.is_some_and(|i| i >= 3)
    })
    .await;
    c.healthy_after("rollouts-demo", &blue).await;
    let canary = canary_ingress(&c).await;
    assert_eq!(
        canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"],
        "0"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_max_traffic_weight_writes_weights_out_of_the_total() {
    let c = Corpus::start("nginx-max-traffic-weight.yaml", &[], None).await;
    let (_blue, paused) = c.update_to_first_pause("rollouts-demo").await;
    let canary = canary_ingress(&c).await;
    let annotations = &canary["metadata"]["annotations"];
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-weight"],
        "250"
    );
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-weight-total"],
        "1000"
    );
    let weights = paused.canary.weights.expect("weights");
    assert_eq!((weights.canary.weight, weights.stable.weight), (250, 750));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_gets_a_traffic_split_of_the_root_service() {
    let c = Corpus::start("smi.yaml", &[], None).await;
    let (_blue, _paused) = c.update_to_first_pause("rollout-smi-experiment").await;
    let split = c
        .get(
            "split.smi-spec.io/v1alpha1",
            "TrafficSplit",
            "rollout-smi-experiment-trafficsplit",
        )
        .await;
    assert_eq!(split["spec"]["service"], "rollout-smi-experiment-root");
    let weight = |service: &str| -> i64 {
        split["spec"]["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["service"] == service)
            .map(|b| match &b["weight"] {
                Value::String(s) => s.parse().unwrap_or(-1),
                other => other.as_i64().unwrap_or(-1),
            })
            .unwrap_or(-1)
    };
    assert_eq!(weight("rollout-smi-experiment-canary"), 5);
    assert_eq!(weight("rollout-smi-experiment-stable"), 95);
    c.stop().await;
}

/// The web endpoint of the analysis manifests: `{"data": {"ok": ok}}`.
async fn web_server(ok: bool) -> ScriptedServer {
    ScriptedServer::start(vec![Answer::json(&format!(
        r#"{{"data": {{"ok": {ok}}}}}"#
    ))])
    .await
}

/// Starts `file` with the web endpoint answering `ok: true` (registered
/// for the web provider), waits for `guestbook`'s first deploy and rolls
/// out a new image; returns the server, the corpus and the first stable.
async fn web_corpus_updated(file: &str) -> (ScriptedServer, Corpus, String) {
    let server = web_server(true).await;
    let web = server.addr.to_string();
    let c = Corpus::start(
        file,
        &[("WEB", web.clone())],
        Some(registration(Some(&web), None)),
    )
    .await;
    let blue = c.healthy("guestbook").await;
    c.set_image("guestbook", "guestbook", "argoproj/rollouts-demo:yellow")
        .await;
    (server, c, blue)
}

/// The AnalysisRuns of the namespace.
async fn runs(c: &Corpus) -> Vec<Value> {
    c.list("argoproj.io", "AnalysisRun").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_analysis_step_passes_then_a_failing_one_aborts_to_stable() {
    let (server, c, blue) = web_corpus_updated("analysis-web.yaml").await;
    let yellow = c.healthy_after("guestbook", &blue).await;
    let run = c
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("guestbook-{yellow}-1"),
        )
        .await;
    assert_eq!(run["status"]["phase"], "Successful", "{run}");
    assert_eq!(
        run["status"]["metricResults"][0]["measurements"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let requests = server.requests.lock().expect("requests").clone();
    assert!(
        requests.iter().all(|r| r.starts_with(
            "GET /api/v1/measurement?service=guestbook-svc.default.svc.cluster.local "
        )),
        "{requests:?}"
    );
    // The next version fails its analysis: aborted, back on stable.
    server.set(vec![Answer::json(r#"{"data": {"ok": false}}"#)]);
    c.set_image("guestbook", "guestbook", "argoproj/rollouts-demo:red")
        .await;
    let aborted = c
        .wait("guestbook", "Degraded by the failed analysis", |s| {
            s.abort && s.phase.as_deref() == Some("Degraded")
        })
        .await;
    assert_eq!(aborted.stable_rs.as_deref(), Some(yellow.as_str()));
    // No router: the canary Service goes back to the stable's pods, as
    // Argo's reconcileStableAndCanaryService does for an aborted canary.
    assert_eq!(c.selected("guestbook-canary").await, yellow);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argos_success_rate_template_passes_against_a_real_prometheus() {
    let exporter = ScriptedServer::start(vec![Answer::json(
        "demo_requests{destination_service=\"guestbook-canary\",response_code=\"200\"} 97\n\
         demo_requests{destination_service=\"guestbook-canary\",response_code=\"503\"} 3\n\
         demo_requests{destination_service=\"other\",response_code=\"503\"} 50\n",
    )])
    .await;
    let prometheus = weir_e2e::prometheus::start(exporter.addr, "demo_requests").await;
    let c = Corpus::start(
        "analysis-prometheus.yaml",
        &[("PROMETHEUS", prometheus.addr.clone())],
        Some(registration(None, Some(&prometheus.addr))),
    )
    .await;
    let blue = c.healthy("guestbook").await;
    c.set_image("guestbook", "guestbook", "argoproj/rollouts-demo:yellow")
        .await;
    let yellow = c.healthy_after("guestbook", &blue).await;
    let run = c
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("guestbook-{yellow}-1"),
        )
        .await;
    assert_eq!(run["status"]["phase"], "Successful", "{run}");
    let value = run["status"]["metricResults"][0]["measurements"][0]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(value, "[0.97]", "{run}");
    c.stop().await;
}

/// Stands in for the Job controller: marks each Job of the namespace
/// complete, as its pod would have exited 0.
fn complete_jobs(cluster: Arc<dyn Cluster>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for mut job in cluster
                .list("batch", "Job", NS, &[])
                .await
                .unwrap_or_default()
            {
                if job["status"]["conditions"].is_array() {
                    continue;
                }
                job["status"] = serde_json::json!({"succeeded": 1,
                    "conditions": [{"type": "Complete", "status": "True"}]});
                let _ = cluster.apply(vec![Write::update_as_read(job)]).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_analysis_step_runs_its_job_and_passes_when_it_completes() {
    let c = Corpus::start("analysis-job.yaml", &[], None).await;
    let blue = c.healthy("guestbook").await;
    let jobs = complete_jobs(c.h.cluster.clone());
    c.set_image("guestbook", "guestbook", "argoproj/rollouts-demo:yellow")
        .await;
    let yellow = c.healthy_after("guestbook", &blue).await;
    jobs.abort();
    let run_name = format!("guestbook-{yellow}-1");
    let run = c
        .get("argoproj.io/v1alpha1", "AnalysisRun", &run_name)
        .await;
    assert_eq!(run["status"]["phase"], "Successful", "{run}");
    // The Job ran the template's container, owned by the run.
    let job = c
        .list("batch", "Job")
        .await
        .into_iter()
        .find(|j| j["metadata"]["ownerReferences"][0]["name"] == run_name.as_str())
        .expect("the run's Job");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "my-image:latest");
    assert_eq!(job["spec"]["backoffLimit"], 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_analysis_starts_at_its_starting_step() {
    let (server, c, blue) = web_corpus_updated("background-analysis.yaml").await;
    let paused = c.paused_at("guestbook", 1).await;
    // Step 1 of startingStep 2: no run yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(runs(&c).await.is_empty(), "{:?}", runs(&c).await);
    assert!(
        paused
            .canary
            .current_background_analysis_run_status
            .is_none()
    );
    c.promote("guestbook").await;
    let started = c
        .wait("guestbook", "the background run at step 2", |s| {
            s.canary.current_background_analysis_run_status.is_some()
        })
        .await;
    assert!(started.current_step_index.is_some_and(|i| i >= 2));
    let name = started
        .canary
        .current_background_analysis_run_status
        .expect("run")
        .name;
    let yellow = c.healthy_after("guestbook", &blue).await;
    assert_eq!(Some(yellow), started.current_pod_hash);
    let run = c.get("argoproj.io/v1alpha1", "AnalysisRun", &name).await;
    assert_eq!(run["status"]["phase"], "Successful", "{run}");
    assert!(server.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_step_runs_baseline_and_canary_and_its_analysis_gets_their_hashes() {
    let (server, c, blue) = web_corpus_updated("experiment.yaml").await;
    let running = c
        .wait("guestbook", "the experiment", |s| {
            s.canary.current_experiment.is_some()
        })
        .await;
    let experiment = running.canary.current_experiment.expect("experiment");
    c.healthy_after("guestbook", &blue).await;
    let ended = c
        .get("argoproj.io/v1alpha1", "Experiment", &experiment)
        .await;
    assert_eq!(ended["status"]["phase"], "Successful", "{ended}");
    // Each template ran its own ReplicaSet: the baseline the stable's
    // template, the canary the new one; both scaled down once it ended.
    let hash_of = |rs: &Value| {
        rs["metadata"]["labels"][HASH_LABEL]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let baseline = c
        .get("apps/v1", "ReplicaSet", &format!("{experiment}-baseline"))
        .await;
    let candidate = c
        .get("apps/v1", "ReplicaSet", &format!("{experiment}-canary"))
        .await;
    assert_eq!(
        baseline["spec"]["template"]["spec"]["containers"][0]["image"],
        "argoproj/rollouts-demo:blue"
    );
    assert_eq!(
        candidate["spec"]["template"]["spec"]["containers"][0]["image"],
        "argoproj/rollouts-demo:yellow"
    );
    assert_eq!(baseline["spec"]["replicas"], 0);
    let run = c
        .get(
            "argoproj.io/v1alpha1",
            "AnalysisRun",
            &format!("{experiment}-mann-whitney"),
        )
        .await;
    assert_eq!(run["status"]["phase"], "Successful", "{run}");
    let expected = format!(
        "GET /api/v1/compare?baseline={}&canary={} ",
        hash_of(&baseline),
        hash_of(&candidate)
    );
    let requests = server.requests.lock().expect("requests").clone();
    assert!(
        requests.iter().any(|r| r.starts_with(&expected)),
        "{expected} in {requests:?}"
    );
    c.stop().await;
}
