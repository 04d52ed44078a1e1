//! Argo's `EvaluateResult`: a measured value and the metric's conditions
//! make a phase.

use super::condition::{ConditionError, ConditionEvaluator};
use super::types::Phase;
use serde_json::Value;

fn nil_or_empty(result: &Value) -> bool {
    match result {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Longest part of a condition quoted in a message.
const QUOTED_CONDITION_CHARS: usize = 200;

fn explain(which: &str, condition: &str, result: &Value, error: ConditionError) -> String {
    let quoted: String = condition.chars().take(QUOTED_CONDITION_CHARS).collect();
    let condition = if quoted.len() < condition.len() {
        format!("{quoted}…")
    } else {
        quoted
    };
    if nil_or_empty(result) {
        format!(
            "could not evaluate {which} \"{condition}\": metric result is nil or empty: no data returned from the metric provider"
        )
    } else {
        format!("could not evaluate {which} \"{condition}\": {error}")
    }
}

/// The phase for `result` under the conditions, or the error message:
/// - no conditions: successful;
/// - only a success condition: failed when it is false;
/// - only a failure condition: successful when it is false;
/// - both, and neither true: inconclusive; failure true wins;
/// - an evaluation error: `Err` (an Error measurement).
pub async fn evaluate_result(
    evaluator: &ConditionEvaluator,
    result: &Value,
    success: Option<&str>,
    failure: Option<&str>,
) -> Result<Phase, String> {
    // As in Argo, only an empty condition is absent: one of whitespace is
    // evaluated (and is a syntax error).
    let success = success.filter(|c| !c.is_empty());
    let failure = failure.filter(|c| !c.is_empty());
    let mut succeeded = false;
    let mut failed = false;
    if let Some(condition) = success {
        succeeded = evaluator
            .evaluate(condition, result)
            .await
            .map_err(|e| explain("successCondition", condition, result, e))?;
    }
    if let Some(condition) = failure {
        failed = evaluator
            .evaluate(condition, result)
            .await
            .map_err(|e| explain("failureCondition", condition, result, e))?;
    }
    match (success, failure) {
        (None, None) => return Ok(Phase::Successful),
        (Some(_), None) => failed = !succeeded,
        (None, Some(_)) => succeeded = !failed,
        (Some(_), Some(_)) => {}
    }
    Ok(if failed {
        Phase::Failed
    } else if !succeeded {
        Phase::Inconclusive
    } else {
        Phase::Successful
    })
}
