//! Analysis conditions in the sandbox: Argo's verdicts on a parity table
//! (tests/data/condition-parity.yaml), and hostile conditions, including
//! those that used to abort or freeze the controller, each an error within
//! the evaluation's deadline while the process and every other evaluation
//! go on.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use weir::analysis::ConditionError;
use weir::analysis::types::Phase;
use weir::analysis::verdict::evaluate_result;
use weir_e2e::evaluator;

/// The evaluation deadline (`ConditionEvaluator::spec`) and a margin for a
/// loaded CI machine.
const DEADLINE: Duration = Duration::from_secs(1);
const MARGIN: Duration = Duration::from_millis(900);

#[derive(serde::Deserialize)]
struct Case {
    condition: String,
    result: Value,
    want: Value,
}

fn table() -> Vec<Case> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/condition-parity.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("the table")).expect("parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parity_table_gives_argos_verdicts_in_the_sandbox() {
    let ev = evaluator().await;
    let cases = table();
    let mut wrong = Vec::new();
    for case in &cases {
        let got = ev.evaluate(&case.condition, &case.result).await;
        let ok = match (&case.want, &got) {
            (Value::Bool(want), Ok(b)) => want == b,
            (Value::String(e), Err(_)) => e == "error",
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{} with {}: want {}, got {got:?}",
                case.condition, case.result, case.want
            ));
        }
    }
    println!(
        "parity: {} of {} conditions give Argo's verdict",
        cases.len() - wrong.len(),
        cases.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn argos_examples_and_the_empty_vector_through_evaluate_result() {
    let ev = evaluator().await;
    let apdex = json!({"service_apdex": {"values": {"values": [{"value": 9950}]}}});
    assert_eq!(
        evaluate_result(
            &ev,
            &apdex,
            Some("all(result.service_apdex.values.values, {asFloat(.value) >= 9900})"),
            None
        )
        .await,
        Ok(Phase::Successful),
        "Argo's New Relic example"
    );
    // No data: Argo's failure condition errors (and is retried) rather
    // than passing the measurement.
    let empty = evaluate_result(&ev, &json!([]), None, Some("result[0] == 0")).await;
    assert!(
        empty
            .as_ref()
            .is_err_and(|m| m.contains("no data returned from the metric provider")),
        "{empty:?}"
    );
    let empty = evaluate_result(&ev, &json!([]), Some("result[0] == 1"), None).await;
    assert!(empty.is_err(), "{empty:?}");
    // A whitespace-only condition is evaluated, as in Argo, and errs.
    assert!(
        evaluate_result(&ev, &json!(1), Some("  "), None)
            .await
            .is_err()
    );
}

/// Conditions that used to abort or freeze the controller.
fn hostile() -> Vec<(&'static str, String)> {
    vec![
        (
            "range behind a comment",
            r#"/* " */ len(1..100000000000) > 0 // ""#.into(),
        ),
        (
            "range behind a raw string",
            r"`\` == '' || len(1..100000000000) > 0".into(),
        ),
        (
            "nested repeat",
            r#"len(repeat(repeat("xxxxxxxxxx", 1000000), 1000000)) > 0"#.into(),
        ),
        (
            "map over a large split",
            r#"len(map(split(repeat("a,", 1000000), ","), {repeat("y", 1000000)})) > 0"#.into(),
        ),
        (
            "nested loops",
            "all(1..20000, {all(1..20000, {# > 0})})".into(),
        ),
        (
            "unbraced nested loops",
            "all(1..20000, all(1..20000, # > 0))".into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_conditions_are_errors_within_the_deadline() {
    let ev = evaluator().await;
    for (name, condition) in hostile() {
        let started = Instant::now();
        let outcome = ev.evaluate(&condition, &json!([1])).await;
        let took = started.elapsed();
        println!("condition row {name}: {took:?}: {outcome:?}");
        assert!(outcome.is_err(), "{name}: {outcome:?}");
        assert!(took < DEADLINE + MARGIN, "{name} took {took:?}");
    }
    assert_eq!(ev.evaluate("result[0] == 1", &json!([1])).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_conditions_cannot_make_the_evaluator_busy() {
    let ev = evaluator().await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let ev = ev.clone();
        slow.push(tokio::spawn(async move {
            ev.evaluate("all(1..20000, {all(1..20000, {# > 0})})", &Value::Null)
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Meanwhile, and after, ordinary conditions are answered: nothing is
    // ever "busy", and no slot stays taken past a deadline.
    let started = Instant::now();
    assert_eq!(ev.evaluate("result > 1", &json!(2)).await, Ok(true));
    let during = started.elapsed();
    for task in slow {
        let outcome = task.await.expect("join");
        assert!(
            matches!(&outcome, Err(ConditionError::Stopped(m)) if m.contains("deadline")),
            "{outcome:?}"
        );
    }
    let started = Instant::now();
    assert_eq!(ev.evaluate("result > 1", &json!(2)).await, Ok(true));
    let after = started.elapsed();
    println!(
        "condition row busy: an ordinary condition took {during:?} beside 8 slow ones, {after:?} after"
    );
    assert!(during < 2 * DEADLINE + MARGIN, "{during:?}");
    assert!(after < Duration::from_millis(500), "{after:?}");
}
