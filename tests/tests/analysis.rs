//! The analysis engine: Argo's verdict rules, its condition language on
//! Argo's own cases, hostile conditions, and whole runs measured by the real
//! web plugin against a loopback server, reconcile by reconcile.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use weir::analysis::AnalysisEngine;
use weir::analysis::types::{AnalysisRun, AnalysisTemplate, Argument, Phase};
use weir::analysis::verdict::evaluate_result;
use weir::plugin::{FaultPolicy, HttpPolicy, MetricProvider, PluginRuntime, PluginSpec};
use weir_e2e::{Answer, ScriptedServer, plugin_wasm, runtime};

// ------------------------------------------------------------ verdicts

#[tokio::test]
async fn verdict_table_follows_argos_evaluate() {
    let ev = weir_e2e::evaluator().await;
    /// (result, successCondition, failureCondition, phase or error text)
    type Case<'a> = (
        Value,
        Option<&'a str>,
        Option<&'a str>,
        Result<Phase, &'a str>,
    );
    let cases: &[Case] = &[
        (json!(1), None, None, Ok(Phase::Successful)),
        (json!(1), Some("result == 1"), None, Ok(Phase::Successful)),
        (json!(0), Some("result == 1"), None, Ok(Phase::Failed)),
        (json!(1), None, Some("result == 0"), Ok(Phase::Successful)),
        (json!(0), None, Some("result == 0"), Ok(Phase::Failed)),
        (
            json!(5),
            Some("result > 9"),
            Some("result < 1"),
            Ok(Phase::Inconclusive),
        ),
        (
            json!(0),
            Some("result < 9"),
            Some("result < 1"),
            Ok(Phase::Failed),
        ),
        (
            json!(5),
            Some("result < 9"),
            Some("result < 1"),
            Ok(Phase::Successful),
        ),
        (
            json!(5),
            Some("result +"),
            None,
            Err("could not evaluate successCondition"),
        ),
        (
            json!(5),
            None,
            Some("nope(1)"),
            Err("could not evaluate failureCondition"),
        ),
        (json!(5), Some("result + 1"), None, Err("expected bool")),
        (
            Value::Null,
            Some("result[0] > 1"),
            None,
            Err("no data returned from the metric provider"),
        ),
        (
            json!([]),
            Some("result[0] > 1"),
            None,
            Err("no data returned from the metric provider"),
        ),
    ];
    for (result, success, failure, want) in cases {
        let got = evaluate_result(&ev, result, *success, *failure).await;
        match (want, &got) {
            (Ok(phase), Ok(g)) => assert_eq!(g, phase, "{result} {success:?} {failure:?}"),
            (Err(text), Err(g)) => {
                assert!(g.contains(text), "{result} {success:?} {failure:?}: {g}")
            }
            _ => panic!("{result} {success:?} {failure:?}: want {want:?}, got {got:?}"),
        }
    }
}

#[tokio::test]
async fn argos_condition_language_cases() {
    let ev = weir_e2e::evaluator().await;
    let cases: &[(&str, Value, bool)] = &[
        ("result[0] >= 0.95", json!([0.97]), true),
        ("result[0] >= 0.95", json!([0.90]), false),
        ("len(result) > 0", json!([1.0, 2.0]), true),
        ("all(result, {# < 100})", json!([1, 50, 99]), true),
        ("all(result, {# < 100})", json!([1, 150]), false),
        ("any(result, {# > 10})", json!([1, 50]), true),
        ("isNaN(result)", json!("NaN"), true),
        ("isNaN(result)", json!(1.5), false),
        ("isInf(result)", json!("+Inf"), true),
        ("default(result, 0) >= 0", Value::Null, true),
        ("default(result, 5) == 3", json!(3), true),
        ("isNil(result)", Value::Null, true),
        ("isNil(result)", json!(1), false),
        ("asInt(result) == 2", json!("2"), true),
        ("asFloat(result) > 0.5", json!("0.75"), true),
        ("result == true", json!(true), true),
        (
            "result.data.ok == true",
            json!({"data": {"ok": true}}),
            true,
        ),
        (
            "result.status == 'healthy'",
            json!({"status": "healthy"}),
            true,
        ),
        ("result < 0.01 || result > 0.99", json!(0.5), false),
        ("result in [1, 2, 3]", json!(2), true),
        ("asInt(result) == 2 && result != 3", json!(2), true),
    ];
    for (condition, result, want) in cases {
        let got = ev.evaluate(condition, result).await;
        assert_eq!(got, Ok(*want), "{condition} with {result}");
    }
}

/// Adversarial conditions: each must come back as an error, quickly, and
/// the process (and the evaluator) must survive all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_conditions_end_as_errors_and_the_process_survives() {
    let ev = weir_e2e::evaluator().await;
    let deep =
        |open: &str, close: &str, n: usize| format!("{}1{} > 0", open.repeat(n), close.repeat(n));
    let chain = |term: &str, op: &str, n: usize| vec![term; n].join(op);
    let hostile: Vec<String> = vec![
        deep("(", ")", 5000),
        deep("(", ")", 1000),
        deep("(", ")", 100),
        deep("[", "]", 5000),
        deep("[", "]", 100),
        format!("{}1{}", "abs(".repeat(3000), ")".repeat(3000)),
        format!("{}true{}", "!(".repeat(3000), ")".repeat(3000)),
        format!("{} > 0", chain("1", " + ", 5000)),
        format!("{} > 0", chain("1", " + ", 1000)),
        format!("{} > 0", chain("result", " * ", 2000)),
        format!("result{} == 1", ".a".repeat(3000)),
        format!("{} == 1", chain("result[0]", " - ", 900)),
        "len(1..100000000000) > 0".into(),
        "len(1..50000000) > 0".into(),
        "all(1..20000, {all(1..20000, {# > 0})})".into(),
        "{k: result}.k > 0".into(),
        "{'k': result}['k'] > 0".into(),
        format!("result == \"{}\"", "x".repeat(10 << 20)),
        format!("result == {}", "9".repeat(100_000)),
        "".into(),
        "result +".into(),
        "))((".into(),
        "result ? : :".into(),
        "nope(result)".into(),
        "asInt('not a number') > 0".into(),
        "asFloat([1]) > 0".into(),
        "isNaN('x')".into(),
        "len(1) > 0".into(),
        "result.x.y > 0".into(),
        "result[99999999999999999999] > 0".into(),
        "\"a\" - 1 > 0".into(),
        "result + 1".into(),
        "'str'".into(),
        "foo.bar.baz()".into(),
        "result matches '('".into(),
        format!("{}", "(".repeat(30)),
        "\u{0000}\u{0001}".into(),
        "result == 1 ;; drop table".into(),
        "let x = 1; x > 0 and".into(),
        format!("result in [{}]", chain("1", ",", 5000)),
        format!("{}1{} > 0", "-".repeat(5000), ""),
        format!("{}true", "not ".repeat(3000)),
    ];
    assert!(hostile.len() >= 40);
    let result = json!([0.5]);
    for condition in &hostile {
        let started = Instant::now();
        let outcome = ev.evaluate(condition, &result).await;
        let took = started.elapsed();
        let preview: String = condition.chars().take(60).collect();
        assert!(
            outcome.is_err(),
            "{preview:?} must be an error, got {outcome:?}"
        );
        assert!(took < Duration::from_secs(2), "{preview:?} took {took:?}");
    }
    // Predicates may nest (Argo's do); what bounds them is the deadline.
    assert_eq!(
        ev.evaluate(
            "all(result, {all(result, {all(result, {# >= 0})})})",
            &result,
        )
        .await,
        Ok(true)
    );
    // A CPU-heavy condition: stopped at the evaluation's deadline.
    let big: Vec<f64> = (0..20_000).map(f64::from).collect();
    let started = Instant::now();
    let heavy = ev
        .evaluate("all(result, {all(result, {# >= 0})})", &json!(big))
        .await;
    assert!(
        matches!(&heavy, Err(weir::analysis::ConditionError::Stopped(m)) if m.contains("deadline")),
        "{heavy:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // And the evaluator still answers ordinary conditions.
    assert_eq!(ev.evaluate("result[0] < 1", &result).await, Ok(true));
}

// ------------------------------------------------------------ runs

async fn web_provider(runtime: &PluginRuntime, server: &ScriptedServer) -> MetricProvider {
    let mut spec = PluginSpec::new(
        "argoproj/web",
        plugin_wasm("weir-plugin-web").display().to_string(),
    );
    spec.http = HttpPolicy {
        allow_hosts: vec![server.addr.to_string()],
        ..HttpPolicy::default()
    };
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    runtime.load_provider(spec).await.expect("load web")
}

fn template(metrics: Value) -> AnalysisTemplate {
    serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {"args": [{"name": "url"}], "metrics": metrics}
    }))
    .expect("template")
}

fn run_of(template: &AnalysisTemplate, url: String) -> AnalysisRun {
    let args = [Argument {
        name: "url".into(),
        value: Some(url),
        value_from: None,
    }];
    AnalysisRun::from_template(template, "checkout-run", "shop", "uid-run", &args)
}

/// Reconciles until completed, jumping the clock to each requested time.
async fn drive(engine: &AnalysisEngine, run: &mut AnalysisRun, limit: usize) {
    let mut now: DateTime<Utc> = Utc::now();
    for _ in 0..limit {
        match engine.reconcile(run, now).await {
            Some(next) => now = next.max(now + ChronoDuration::milliseconds(1)),
            None => return,
        }
    }
    panic!(
        "run not completed after {limit} reconciles: {:?}",
        run.status
    );
}

fn values(v: &[f64]) -> Vec<Answer> {
    v.iter()
        .map(|x| Answer::json(&json!({"data": {"rate": x}}).to_string()))
        .collect()
}

async fn setup(answers: Vec<Answer>) -> (PluginRuntime, ScriptedServer, AnalysisEngine) {
    let (runtime, _cluster) = runtime();
    let server = ScriptedServer::start(answers).await;
    let mut engine = AnalysisEngine::new(weir_e2e::evaluator().await);
    engine.register("web", web_provider(&runtime, &server).await);
    (runtime, server, engine)
}

fn web_metric(extra: Value) -> Value {
    let mut metric = json!({
        "name": "success-rate",
        "provider": {"web": {"url": "{{args.url}}", "jsonPath": "{$.data.rate}"}},
        "successCondition": "result >= 0.95"
    });
    if let (Some(m), Some(e)) = (metric.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    metric
}

#[tokio::test]
async fn a_healthy_run_is_successful_after_its_count() {
    let (_rt, server, engine) = setup(values(&[0.97, 0.99, 0.96])).await;
    let t = template(json!([web_metric(json!({"count": 3, "interval": "10s"}))]));
    let mut run = run_of(&t, format!("http://{}/rate", server.addr));
    drive(&engine, &mut run, 20).await;
    assert_eq!(run.status.phase, Phase::Successful, "{:?}", run.status);
    let result = run.result("success-rate").expect("result");
    assert_eq!((result.count, result.successful, result.failed), (3, 3, 0));
    assert_eq!(result.measurements.len(), 3);
    assert_eq!(result.measurements[0].value.as_deref(), Some("0.97"));
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn failure_limit_fails_the_run_and_minus_one_disables_it() {
    let (_rt, server, engine) = setup(values(&[0.97, 0.5, 0.5, 0.97])).await;
    let t = template(json!([web_metric(
        json!({"count": 4, "interval": "5s", "failureLimit": 1})
    )]));
    let mut run = run_of(&t, format!("http://{}/rate", server.addr));
    drive(&engine, &mut run, 20).await;
    assert_eq!(run.status.phase, Phase::Failed);
    let message = run.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("failed (2) > failureLimit (1)"),
        "{message}"
    );
    assert_eq!(
        run.result("success-rate").map(|r| r.count),
        Some(3),
        "stops at the limit"
    );

    server.set(values(&[0.5, 0.5, 0.5]));
    let t = template(json!([web_metric(
        json!({"count": 3, "interval": "5s", "failureLimit": -1})
    )]));
    let mut run = run_of(&t, format!("http://{}/rate", server.addr));
    drive(&engine, &mut run, 20).await;
    assert_eq!(
        run.status.phase,
        Phase::Successful,
        "failureLimit -1 disables it"
    );
}

#[tokio::test]
async fn inconclusive_limit_makes_the_run_inconclusive() {
    let (_rt, server, engine) = setup(values(&[0.9, 0.9])).await;
    let metric = web_metric(
        json!({"count": 2, "interval": "5s", "failureCondition": "result < 0.5", "inconclusiveLimit": 1}),
    );
    let mut run = run_of(
        &template(json!([metric])),
        format!("http://{}/rate", server.addr),
    );
    drive(&engine, &mut run, 20).await;
    assert_eq!(run.status.phase, Phase::Inconclusive);
    assert!(
        run.status
            .message
            .unwrap_or_default()
            .contains("inconclusive (2) > inconclusiveLimit (1)")
    );
}

#[tokio::test]
async fn consecutive_errors_past_the_default_limit_error_the_run() {
    let (_rt, server, engine) = setup(vec![Answer {
        status: 500,
        body: "{}".into(),
        delay: Duration::ZERO,
    }])
    .await;
    let mut run = run_of(
        &template(json!([web_metric(json!({"interval": "5s"}))])),
        format!("http://{}/rate", server.addr),
    );
    drive(&engine, &mut run, 40).await;
    assert_eq!(run.status.phase, Phase::Error);
    let result = run.result("success-rate").expect("result");
    assert_eq!(
        result.consecutive_error, 5,
        "default consecutiveErrorLimit is 4"
    );
    assert!(result.measurements.iter().all(|m| m.phase == Phase::Error));
    assert!(
        result.measurements[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("non 2xx response code: 500")
    );
    assert!(
        run.status
            .message
            .unwrap_or_default()
            .contains("consecutiveErrors (5) > consecutiveErrorLimit (4)")
    );
}

#[tokio::test]
async fn an_error_then_recovery_resets_the_consecutive_count() {
    let mut answers = vec![
        Answer {
            status: 500,
            body: "{}".into(),
            delay: Duration::ZERO
        };
        3
    ];
    answers.extend(values(&[0.99]));
    let (_rt, server, engine) = setup(answers).await;
    let metric = web_metric(json!({"count": 1, "consecutiveErrorLimit": 3}));
    let mut run = run_of(
        &template(json!([metric])),
        format!("http://{}/rate", server.addr),
    );
    drive(&engine, &mut run, 20).await;
    assert_eq!(run.status.phase, Phase::Successful, "{:?}", run.status);
    let result = run.result("success-rate").expect("result");
    assert_eq!(
        (result.error, result.consecutive_error, result.count),
        (3, 0, 1)
    );
}

#[tokio::test]
async fn a_dry_run_metric_does_not_fail_the_run() {
    let (_rt, server, engine) = setup(values(&[0.1])).await;
    let mut t = template(json!([web_metric(json!({}))]));
    t.spec.dry_run = vec![weir::analysis::types::DryRun {
        metric_name: "success-rate".into(),
    }];
    let mut run = run_of(&t, format!("http://{}/rate", server.addr));
    drive(&engine, &mut run, 10).await;
    assert_eq!(run.status.phase, Phase::Successful);
    let result = run.result("success-rate").expect("result");
    assert_eq!(result.phase, Phase::Failed);
    assert!(result.dry_run);
}

#[tokio::test]
async fn a_plugin_fault_is_an_error_measurement_and_the_analysis_goes_on() {
    let (runtime, _cluster) = runtime();
    let mut engine = AnalysisEngine::new(weir_e2e::evaluator().await);
    let mut spec = PluginSpec::new(
        "acme/probe",
        plugin_wasm("weir-plugin-probe").display().to_string(),
    );
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    engine.register(
        "acme/probe",
        runtime.load_provider(spec).await.expect("load"),
    );
    let t: AnalysisTemplate = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": "t"},
        "spec": {"metrics": [{
            "name": "crashy", "interval": "5s", "count": 3, "consecutiveErrorLimit": 2,
            "provider": {"plugin": {"acme/probe": {"fault": "panic"}}}
        }]}
    }))
    .expect("template");
    let mut run = AnalysisRun::from_template(&t, "r", "shop", "uid", &[]);
    drive(&engine, &mut run, 20).await;
    assert_eq!(run.status.phase, Phase::Error);
    let result = run.result("crashy").expect("result");
    assert_eq!(result.error, 3, "it kept measuring after each fault");
    let message = result.measurements[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("acme/probe")
            && message.contains("trapped")
            && message.contains("deliberate panic"),
        "{message}"
    );
}

#[tokio::test]
async fn a_hostile_condition_is_an_error_measurement() {
    let (_rt, server, engine) = setup(values(&[0.97])).await;
    let metric = web_metric(
        json!({"successCondition": format!("{}1{} > 0", "(".repeat(100), ")".repeat(100))}),
    );
    let mut run = run_of(
        &template(json!([metric])),
        format!("http://{}/rate", server.addr),
    );
    let now = Utc::now();
    engine.reconcile(&mut run, now).await;
    let m = &run.result("success-rate").expect("result").measurements[0];
    assert_eq!(m.phase, Phase::Error);
    assert!(
        m.message
            .as_deref()
            .unwrap_or("")
            .contains("nests more than 64 levels deep"),
        "{:?}",
        m.message
    );
    assert!(
        m.message.as_deref().unwrap_or("").len() < 1024,
        "the condition is quoted, not copied whole"
    );
}

#[tokio::test]
async fn arguments_are_substituted_and_a_missing_one_errors_the_run() {
    let (_rt, server, engine) = setup(values(&[0.97])).await;
    let mut run = run_of(
        &template(json!([web_metric(json!({}))])),
        format!("http://{}/rate", server.addr),
    );
    drive(&engine, &mut run, 10).await;
    assert_eq!(run.status.phase, Phase::Successful);

    let mut unresolved = AnalysisRun::from_template(
        &template(json!([web_metric(json!({}))])),
        "r",
        "shop",
        "u",
        &[],
    );
    drive(&engine, &mut unresolved, 3).await;
    assert_eq!(unresolved.status.phase, Phase::Error);
    assert!(
        unresolved
            .status
            .message
            .unwrap_or_default()
            .contains("args.url")
    );
}

#[tokio::test]
async fn a_secret_argument_reaches_the_provider_and_is_masked_in_what_the_run_records() {
    let (_rt, server, engine) = setup(values(&[0.97])).await;
    let secret = "s3cr3t-t0ken-value";
    let t = template(json!([
        web_metric(json!({
            "provider": {"web": {
                "url": format!("http://{}/rate", server.addr),
                "headers": [{"key": "Authorization", "value": "Bearer {{args.token}}"}],
                "jsonPath": "{$.data.rate}"}}
        })),
        {
            "name": "echoes-it",
            // Off the allow-list: the denial names the URL, token and all.
            "provider": {"web": {"url": "http://127.0.0.2:1/x?token={{args.token}}",
                                 "jsonPath": "{$.a}"}},
            "successCondition": "result == 1",
            "consecutiveErrorLimit": 0
        }
    ]));
    let from_secret = Argument {
        name: "token".into(),
        value: None,
        value_from: Some(json!({"secretKeyRef": {"name": "api", "key": "token"}})),
    };
    let mut run = AnalysisRun::from_template(&t, "r", "shop", "u", &[from_secret]);
    let secrets: weir::analysis::args::SecretArgs =
        [("token".to_string(), Ok(secret.to_string()))].into();
    engine
        .reconcile_with_secrets(&mut run, Utc::now(), &secrets)
        .await;
    // The provider sent it.
    let requests = server.requests.lock().expect("requests").clone();
    assert!(
        requests.iter().any(|r| r
            .to_ascii_lowercase()
            .contains(&format!("authorization: bearer {secret}"))),
        "{requests:?}"
    );
    // The run records neither the value nor where it was substituted.
    let recorded = serde_json::to_string(&run).expect("json");
    assert!(!recorded.contains(secret), "{recorded}");
    let echoed = run
        .result("echoes-it")
        .and_then(|r| r.measurements.last())
        .and_then(|m| m.message.clone())
        .unwrap_or_default();
    assert!(echoed.contains("token=*****"), "{echoed}");
    // An unreadable secret errors the run, saying why.
    let mut refused = AnalysisRun::from_template(
        &t,
        "r2",
        "shop",
        "u2",
        &[Argument {
            name: "token".into(),
            value: None,
            value_from: Some(json!({"secretKeyRef": {"name": "api", "key": "token"}})),
        }],
    );
    let why: weir::analysis::args::SecretArgs = [(
        "token".to_string(),
        Err("args.token: not granted".to_string()),
    )]
    .into();
    engine
        .reconcile_with_secrets(&mut refused, Utc::now(), &why)
        .await;
    assert_eq!(refused.status.phase, Phase::Error);
    assert!(
        refused
            .status
            .message
            .unwrap_or_default()
            .contains("not granted"),
    );
}

#[tokio::test]
async fn measurement_history_is_bounded() {
    let (_rt, server, engine) = setup(values(&[0.99])).await;
    let mut run = run_of(
        &template(json!([web_metric(json!({"count": 14, "interval": "1s"}))])),
        format!("http://{}/rate", server.addr),
    );
    drive(&engine, &mut run, 40).await;
    let result = run.result("success-rate").expect("result");
    assert_eq!(result.count, 14);
    assert_eq!(result.measurements.len(), 10, "the last 10 are kept");
}

#[tokio::test]
async fn initial_delay_and_requeue_times_follow_the_spec() {
    let (_rt, server, engine) = setup(values(&[0.99])).await;
    let mut run = run_of(
        &template(json!([web_metric(
            json!({"count": 2, "interval": "30s", "initialDelay": "1m"})
        )])),
        format!("http://{}/rate", server.addr),
    );
    let t0 = Utc::now();
    let next = engine.reconcile(&mut run, t0).await.expect("requeue");
    assert_eq!(
        next,
        t0 + ChronoDuration::seconds(60),
        "waits for the initial delay"
    );
    assert!(run.result("success-rate").is_none(), "nothing measured yet");
    let t1 = t0 + ChronoDuration::seconds(60);
    let next = engine.reconcile(&mut run, t1).await.expect("requeue");
    assert_eq!(
        next,
        t1 + ChronoDuration::seconds(30),
        "then every interval"
    );
    assert_eq!(
        engine
            .reconcile(&mut run, t1 + ChronoDuration::seconds(10))
            .await,
        Some(t1 + ChronoDuration::seconds(30))
    );
    assert_eq!(
        run.result("success-rate").map(|r| r.count),
        Some(1),
        "not due yet"
    );
    assert_eq!(
        engine
            .reconcile(&mut run, t1 + ChronoDuration::seconds(30))
            .await,
        None
    );
    assert_eq!(run.status.phase, Phase::Successful);
}

#[tokio::test]
async fn terminate_finishes_without_more_measurements() {
    let (_rt, server, engine) = setup(values(&[0.99])).await;
    let mut run = run_of(
        &template(json!([web_metric(json!({"interval": "10s"}))])),
        format!("http://{}/rate", server.addr),
    );
    let t0 = Utc::now();
    engine.reconcile(&mut run, t0).await;
    run.spec.terminate = true;
    assert_eq!(
        engine
            .reconcile(&mut run, t0 + ChronoDuration::seconds(60))
            .await,
        None
    );
    assert_eq!(run.status.phase, Phase::Successful);
    assert_eq!(run.status.message.as_deref(), Some("Run Terminated"));
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn one_failed_metric_ends_the_run_without_waiting_for_the_others() {
    // Both metrics read 0.5: `fails` needs 0.95 and has failureLimit 0;
    // `slow` passes, but would take a hundred hourly measurements.
    let (_rt, server, engine) = setup(values(&[0.5, 0.5, 0.5, 0.5])).await;
    let mut fails = web_metric(json!({"count": 1, "failureLimit": 0}));
    fails["name"] = json!("fails");
    let mut slow =
        web_metric(json!({"count": 100, "interval": "1h", "successCondition": "result >= 0"}));
    slow["name"] = json!("slow");
    let t = template(json!([fails, slow]));
    let mut run = run_of(&t, format!("http://{}/rate", server.addr));
    // Two reconciles: the first measures both, the second fails fast.
    drive(&engine, &mut run, 3).await;
    assert_eq!(run.status.phase, Phase::Failed, "{:?}", run.status);
    let message = run.status.message.clone().unwrap_or_default();
    assert!(message.contains("\"fails\""), "{message}");
    let slow = run.result("slow").expect("slow");
    assert_eq!(slow.count, 1, "no more measurements once the run fails");
    assert_eq!(slow.phase, Phase::Successful);
}
