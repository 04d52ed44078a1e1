//! Step plugins (`steps: [{plugin: {name, config}}]`) end to end through
//! the real controller and the real sandbox: a step that runs until it
//! succeeds with its status kept between calls; a Failed step that aborts
//! the Rollout and has the steps before it aborted, last first; `promote
//! --full` terminating a running step; a disabled plugin skipped; faulty
//! step plugins (a panic, garbage status) contained to their Rollout with
//! a typed `PluginFailed` and nothing they staged written; the shipped
//! `http-gate` step against a loopback server, and its allow-list refusal.
//! The test plugin is `plugins/faulty-step`, the shape of Argo's own
//! `step-plugin-e2e`.

use serde_json::{Value, json};
use weir::controller::actions::{Action, act};
use weir::controller::status::RolloutStatus;
use weir::controller::status::step_plugins::{StepOperation, StepPluginPhase, StepPluginStatus};
use weir_e2e::controller::{Backend, Harness, plugin_registration, plugins_dir};
use weir_e2e::{Answer, ScriptedServer};

/// The registration: the test step plugin (writing ConfigMaps), a disabled
/// one, and the shipped http-gate reaching `port` on loopback.
fn registration(port: u16) -> String {
    let wasm = plugins_dir().join("weir_plugin_faulty_step.wasm");
    let wasm = wasm.display();
    plugin_registration(&[(
        "stepPlugins",
        &format!(
            r#"    - name: weir-test/step
      location: file://{wasm}
      grant: {{write: [{{group: "", kind: ConfigMap}}]}}
      limits: {{timeoutMs: 1000}}
    - name: weir-test/switched-off
      location: file://{wasm}
      disabled: true
    - name: http-gate
      http: {{allowHosts: ["127.0.0.1:{port}"]}}"#
        ),
    )])
}

/// Where the test runs; on Kubernetes, Weir's ServiceAccount is granted
/// the ConfigMaps the test plugin writes (as an operator would).
fn backend() -> Backend {
    let backend = Backend::from_env();
    backend.grant(
        "",
        &["configmaps"],
        &["get", "list", "create", "update", "patch"],
    );
    backend
}

/// A basic canary Rollout `shop/name` running `image` with `steps` (YAML
/// list items, indented eight spaces).
fn rollout(name: &str, image: &str, steps: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: "{image}"}}]
  strategy:
    canary:
      steps:
{steps}
"#
    )
}

/// Deploys `name` at `app:1`, waits for Healthy, then applies `app:2`.
async fn deploy_then_update(h: &Harness, name: &str, steps: &str) {
    h.apply(&rollout(name, "app:1", steps)).await;
    h.wait_phase(name, "Healthy").await;
    h.apply(&rollout(name, "app:2", steps)).await;
}

/// A `plugin` step of the test plugin with `config` (flow-style YAML).
fn step(config: &str) -> String {
    format!("        - plugin: {{name: weir-test/step, config: {config}}}\n")
}

fn entries(status: &RolloutStatus) -> &[StepPluginStatus] {
    &status.canary.step_plugin_statuses
}

fn entry(status: &RolloutStatus, index: i32, op: StepOperation) -> Option<&StepPluginStatus> {
    entries(status)
        .iter()
        .find(|e| e.index == index && e.operation == op)
}

/// The `<rollout>-step-log` ConfigMap's data (empty when it does not exist).
async fn step_log(h: &Harness, name: &str) -> Value {
    let key = weir::cluster::ObjectKey::new("v1", "ConfigMap", "shop", &format!("{name}-step-log"));
    match h.cluster.get(&key).await {
        Ok(object) => object["data"].clone(),
        Err(_) => json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_step_runs_until_it_succeeds_with_its_status_kept_between_calls() {
    let backend = backend();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1)).await;
    let steps = format!(
        "        - setWeight: 50\n{}        - setWeight: 100\n",
        step("{runningFor: 2, requeue: 1s, marker: gate}")
    );
    deploy_then_update(&h, "checkout", &steps).await;

    let running = h
        .wait("checkout", 30, "the plugin step running", |s| {
            entry(s, 1, StepOperation::Run).is_some_and(|e| e.executions >= 1)
                && s.step_index() == 1
        })
        .await;
    let run = entry(&running, 1, StepOperation::Run).expect("run entry");
    assert_eq!(run.name, "weir-test/step");
    if run.phase == Some(StepPluginPhase::Running) {
        assert_eq!(run.backoff.as_deref(), Some("1s"), "{run:?}");
        assert!(run.finished_at.is_none());
    }

    let done = h.wait_phase("checkout", "Healthy").await;
    assert_eq!(done.stable_rs, done.current_pod_hash);
    let run = entry(&done, 1, StepOperation::Run).expect("run entry");
    assert_eq!(run.phase, Some(StepPluginPhase::Successful), "{run:?}");
    assert_eq!(run.executions, 3, "two Running answers, then Successful");
    // The status the plugin returned each time came back on its next call.
    assert_eq!(run.status, Some(json!({"count": 3})));
    assert_eq!(run.message, "run 3 of gate");
    assert!(run.started_at.is_some() && run.finished_at.is_some());
    assert_eq!(entries(&done).len(), 1, "{:?}", entries(&done));
    // Its writes landed, one per successful call.
    assert_eq!(step_log(&h, "checkout").await, json!({"run-gate": "3"}));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_plugin_step_aborts_and_the_steps_before_it_are_aborted_last_first() {
    let backend = backend();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1)).await;
    let steps = format!(
        "{}{}{}        - setWeight: 50\n",
        step("{marker: first}"),
        step("{marker: second}"),
        step("{marker: third, return: Failed}")
    );
    deploy_then_update(&h, "checkout", &steps).await;

    let aborted = h
        .wait("checkout", 30, "aborted with the abort calls made", |s| {
            s.abort && entry(s, 0, StepOperation::Abort).is_some()
        })
        .await;
    assert_eq!(
        aborted.message.as_deref(),
        Some("RolloutAborted: Step Plugin 3 (weir-test/step) failed: run 1 of third")
    );
    let order: Vec<(i32, StepOperation, Option<StepPluginPhase>)> = entries(&aborted)
        .iter()
        .map(|e| (e.index, e.operation, e.phase))
        .collect();
    use StepOperation::{Abort, Run};
    use StepPluginPhase::{Failed, Successful};
    assert_eq!(
        order,
        vec![
            (0, Run, Some(Successful)),
            (1, Run, Some(Successful)),
            (2, Run, Some(Failed)),
            (1, Abort, Some(Successful)),
            (0, Abort, Some(Successful)),
        ],
        "the failed step is not aborted; the others are, last first"
    );
    // Abort is called once per step, however many passes the abort takes.
    h.wait_aborted("checkout").await;
    assert_eq!(
        step_log(&h, "checkout").await,
        json!({"run-first": "1", "run-second": "1", "run-third": "1", "abort-first": "1", "abort-second": "1"})
    );

    // A retry starts the plugin steps afresh: each runs again from no
    // status (so its count starts at 1 again), and fails the same way.
    act(h.cluster.as_ref(), "shop", "checkout", Action::Retry)
        .await
        .expect("retry");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while step_log(&h, "checkout").await["abort-first"] != "2" {
        assert!(
            std::time::Instant::now() < deadline,
            "the retried steps did not run and abort again: {}",
            step_log(&h, "checkout").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let again = h.wait_aborted("checkout").await;
    assert_eq!(entries(&again).len(), 5, "{:?}", entries(&again));
    let first = entry(&again, 0, StepOperation::Run).expect("run 0");
    assert_eq!(
        (first.executions, first.status.clone()),
        (1, Some(json!({"count": 1})))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_full_terminates_a_running_plugin_step_and_a_disabled_one_is_skipped() {
    let backend = backend();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1)).await;
    let steps = format!(
        "        - plugin: {{name: weir-test/switched-off, config: {{return: Failed}}}}\n{}        - setWeight: 50\n",
        step("{return: Running, requeue: 1s, marker: long}")
    );
    deploy_then_update(&h, "checkout", &steps).await;

    let running = h
        .wait("checkout", 30, "the second step running", |s| {
            entry(s, 1, StepOperation::Run)
                .is_some_and(|e| e.phase == Some(StepPluginPhase::Running))
        })
        .await;
    let skipped = entry(&running, 0, StepOperation::Run).expect("disabled entry");
    assert!(skipped.disabled, "{skipped:?}");
    assert_eq!(skipped.phase, None);
    assert_eq!(skipped.executions, 0);

    act(h.cluster.as_ref(), "shop", "checkout", Action::PromoteFull)
        .await
        .expect("promote --full");
    let done = h.wait_phase("checkout", "Healthy").await;
    let run = entry(&done, 1, StepOperation::Run).expect("run");
    // As Argo: the run stays Running, and a Terminate entry follows it.
    assert_eq!(run.phase, Some(StepPluginPhase::Running));
    let terminate = entry(&done, 1, StepOperation::Terminate).expect("terminate entry");
    assert_eq!(terminate.phase, Some(StepPluginPhase::Successful));
    assert_eq!(terminate.message, "terminated long");
    let log = step_log(&h, "checkout").await;
    assert_eq!(log["terminate-long"], "1", "{log}");
    // The disabled plugin was never called.
    assert!(log.get("run-step").is_none(), "{log}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_step_plugins_are_contained_to_their_rollout_and_write_nothing() {
    let backend = backend();
    let h = Harness::on(&backend).await;
    h.apply(&registration(1)).await;
    let healthy_steps = format!("{}        - setWeight: 50\n", step("{marker: fine}"));
    for (name, fault) in [
        ("panics", "panic"),
        ("garbage", "deep-status"),
        ("spins", "loop"),
    ] {
        let steps = format!(
            "{}        - setWeight: 50\n",
            step(&format!("{{fault: {fault}}}"))
        );
        deploy_then_update(&h, name, &steps).await;
    }
    deploy_then_update(&h, "checkout", &healthy_steps).await;

    for (name, reason, says) in [
        ("panics", "Trap", "panic on request"),
        ("garbage", "InvalidOutput", "step status document"),
        ("spins", "Timeout", "timeoutMs"),
    ] {
        let failed = h
            .wait(name, 30, "PluginFailed", |s| {
                s.condition("PluginFailed").is_some()
            })
            .await;
        let condition = failed.condition("PluginFailed").expect("condition");
        assert_eq!(condition.reason, reason, "{name}: {}", condition.message);
        assert!(
            condition
                .message
                .starts_with("plugin weir-test/step: run: "),
            "{name}: {}",
            condition.message
        );
        assert!(
            condition.message.contains(says),
            "{name}: {}",
            condition.message
        );
        assert_eq!(failed.phase.as_deref(), Some("Degraded"));
        let run = entry(&failed, 0, StepOperation::Run).expect("run entry");
        assert_eq!(run.phase, Some(StepPluginPhase::Error), "{run:?}");
        assert_eq!(run.backoff.as_deref(), Some("30s"));
        assert!(run.message.starts_with(reason), "{run:?}");
        // The write the call staged before it faulted never landed.
        assert_eq!(step_log(&h, name).await, json!({}), "{name}");
        assert_eq!(failed.step_index(), 0);
    }
    // The well-behaved rollout went through meanwhile.
    let done = h
        .wait("checkout", 30, "Healthy through its step", |s| {
            s.phase.as_deref() == Some("Healthy") && entry(s, 0, StepOperation::Run).is_some()
        })
        .await;
    assert!(done.condition("PluginFailed").is_none());
    assert_eq!(step_log(&h, "checkout").await, json!({"run-fine": "1"}));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gate_holds_the_canary_until_the_endpoint_answers_2xx_and_is_refused_off_its_allow_list()
 {
    let backend = backend();
    let h = Harness::on(&backend).await;
    let server = ScriptedServer::start(vec![
        Answer {
            status: 503,
            body: "not yet".into(),
            delay: std::time::Duration::ZERO,
        },
        Answer::json(r#"{"ready": true}"#),
    ])
    .await;
    let port = server.addr.port();
    h.apply(&registration(port)).await;
    let gate = |port: u16| {
        format!(
            "        - plugin: {{name: http-gate, config: {{url: \"http://127.0.0.1:{port}/ready\", interval: 1s, headers: {{X-Team: checkout}}}}}}\n        - setWeight: 50\n"
        )
    };
    deploy_then_update(&h, "checkout", &gate(port)).await;
    // A port the registration does not allow.
    let closed = port.checked_add(1).unwrap_or(1);
    deploy_then_update(&h, "blocked", &gate(closed)).await;

    let done = h
        .wait("checkout", 30, "Healthy through the gate", |s| {
            s.phase.as_deref() == Some("Healthy") && entry(s, 0, StepOperation::Run).is_some()
        })
        .await;
    let run = entry(&done, 0, StepOperation::Run).expect("run entry");
    assert_eq!(run.phase, Some(StepPluginPhase::Successful));
    assert_eq!(run.executions, 2, "503 first, then 200: {run:?}");
    assert!(
        run.message.contains("answered 200 after 2 attempt(s)"),
        "{run:?}"
    );
    assert_eq!(
        run.status.as_ref().and_then(|s| s["lastStatus"].as_u64()),
        Some(200)
    );
    let requests = server.requests.lock().expect("requests").clone();
    assert!(
        requests.iter().all(|r| r.starts_with("GET /ready")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.to_ascii_lowercase().contains("x-team: checkout")),
        "{requests:?}"
    );

    let refused = h
        .wait("blocked", 30, "PluginFailed", |s| {
            s.condition("PluginFailed").is_some()
        })
        .await;
    let condition = refused.condition("PluginFailed").expect("condition");
    // The host refused the connection itself, before the plugin could see it.
    assert_eq!(
        condition.reason, "CapabilityDenied",
        "{}",
        condition.message
    );
    assert!(
        condition.message.contains(&format!("127.0.0.1:{closed}")),
        "{}",
        condition.message
    );
    assert_eq!(refused.step_index(), 0);
    h.stop().await;
}
