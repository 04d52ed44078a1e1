//! Checks on what plugins return: the host never trusts a plugin's output.

use super::bindings::provider::exports::weir::plugin::metric_provider::Measurement;
use super::bindings::step::exports::weir::plugin::step::StepResult;
use super::bindings::types::{PluginError as ReportedError, WeightVerification};
use super::error::{CallErrorKind, reported_parts};
use super::sandbox::Reply;
use crate::cluster::document::DocumentLimits;

/// Most metadata pairs a measurement may carry.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest a measurement may ask to wait before `resume` (one day).
pub const MAX_RESUME_AFTER_MS: u64 = 24 * 60 * 60 * 1000;
/// Bounds on a step plugin's `status` document, which the host keeps in
/// the Rollout's status: 64 KiB, and nesting well inside what a stored
/// object may have (it sits five levels down in the Rollout).
pub const STEP_STATUS: DocumentLimits = DocumentLimits {
    max_bytes: 64 * 1024,
    max_depth: 32,
};
/// Longest a step plugin's message may be (it is shown in the status).
pub const MAX_STEP_MESSAGE_BYTES: usize = 4096;

fn too_large(size: usize, cap: usize) -> Result<(), CallErrorKind> {
    if size > cap {
        Err(CallErrorKind::OutputTooLarge { size, cap })
    } else {
        Ok(())
    }
}

/// Checks an error the plugin reported.
pub(crate) fn reported(error: &ReportedError, cap: usize) -> Result<(), CallErrorKind> {
    too_large(reported_parts(error).1.len(), cap)
}

/// Checks a successful reply; observed weights are out of `total()` (the
/// Rollout's `maxTrafficWeight`), asked only for a verification that
/// reports weights.
pub(crate) fn reply(
    reply: &Reply,
    cap: usize,
    total: impl FnOnce() -> i32,
) -> Result<(), CallErrorKind> {
    match reply {
        Reply::Unit => Ok(()),
        Reply::Verification(v) => verification(v, cap, total),
        Reply::Measurement(m) => measurement(m, cap),
        Reply::Step(r) => step_result(r, cap),
        Reply::Verdict(Ok(_)) => Ok(()),
        Reply::Verdict(Err(e)) => too_large(condition_error_text(e).len(), cap),
        Reply::Metadata(pairs) => {
            too_large(pairs.iter().map(|(k, v)| k.len() + v.len()).sum(), cap)?;
            if pairs.len() > MAX_METADATA_ENTRIES {
                return Err(CallErrorKind::InvalidOutput(format!(
                    "metadata has {} entries, more than {MAX_METADATA_ENTRIES}",
                    pairs.len()
                )));
            }
            Ok(())
        }
    }
}

/// The message a condition error carries.
pub(crate) fn condition_error_text(
    e: &super::bindings::condition::exports::weir::condition::evaluator::ConditionError,
) -> &str {
    use super::bindings::condition::exports::weir::condition::evaluator::ConditionError;
    match e {
        ConditionError::Syntax(m) | ConditionError::Eval(m) | ConditionError::NotBool(m) => m,
    }
}

fn weight_in_range(what: &str, weight: i32, total: i32) -> Result<(), CallErrorKind> {
    if (0..=total).contains(&weight) {
        Ok(())
    } else {
        Err(CallErrorKind::InvalidOutput(format!(
            "{what} weight {weight} is outside 0..={total}"
        )))
    }
}

fn verification(
    v: &WeightVerification,
    cap: usize,
    total: impl FnOnce() -> i32,
) -> Result<(), CallErrorKind> {
    let Some(observed) = &v.observed else {
        return Ok(());
    };
    let total = total();
    too_large(
        observed
            .additional
            .iter()
            .map(|d| d.service_name.len() + d.pod_template_hash.len() + 4)
            .sum(),
        cap,
    )?;
    weight_in_range("canary", observed.canary, total)?;
    weight_in_range("stable", observed.stable, total)?;
    for d in &observed.additional {
        weight_in_range(
            &format!("additional destination {:?}", d.service_name),
            d.weight,
            total,
        )?;
    }
    let sum: i64 = i64::from(observed.canary)
        + i64::from(observed.stable)
        + observed
            .additional
            .iter()
            .map(|d| i64::from(d.weight))
            .sum::<i64>();
    if sum > i64::from(total) {
        return Err(CallErrorKind::InvalidOutput(format!(
            "observed weights add up to {sum}, over {total}"
        )));
    }
    Ok(())
}

/// Checks a step plugin's result: its size, a message short enough to
/// show, a `status` that is JSON within [`STEP_STATUS`] (checked on the
/// text, before it is parsed), and a requeue time of at most a day.
pub(crate) fn step_result(r: &StepResult, cap: usize) -> Result<(), CallErrorKind> {
    too_large(r.message.len() + r.status.len(), cap)?;
    if r.message.len() > MAX_STEP_MESSAGE_BYTES {
        return Err(CallErrorKind::InvalidOutput(format!(
            "step message is {} bytes, more than {MAX_STEP_MESSAGE_BYTES}",
            r.message.len()
        )));
    }
    if !r.status.trim().is_empty() {
        STEP_STATUS
            .check_text(&r.status)
            .map_err(|e| CallErrorKind::InvalidOutput(format!("step status document: {e}")))?;
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&r.status) {
            let preview: String = r.status.chars().take(60).collect();
            return Err(CallErrorKind::InvalidOutput(format!(
                "step status is not JSON ({e}): {preview:?}"
            )));
        }
    }
    if let Some(ms) = r.requeue_after_ms
        && ms > MAX_RESUME_AFTER_MS
    {
        return Err(CallErrorKind::InvalidOutput(format!(
            "requeue-after-ms {ms} is more than a day"
        )));
    }
    Ok(())
}

pub(crate) fn measurement(m: &Measurement, cap: usize) -> Result<(), CallErrorKind> {
    let size = m.value.as_ref().map_or(0, String::len)
        + m.message.as_ref().map_or(0, String::len)
        + m.metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    too_large(size, cap)?;
    if let Some(value) = &m.value
        && let Err(e) = serde_json::from_str::<serde_json::Value>(value)
    {
        let preview: String = value.chars().take(60).collect();
        return Err(CallErrorKind::InvalidOutput(format!(
            "measurement value is not JSON ({e}): {preview:?}"
        )));
    }
    if m.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(CallErrorKind::InvalidOutput(format!(
            "measurement metadata has {} entries, more than {MAX_METADATA_ENTRIES}",
            m.metadata.len()
        )));
    }
    if let Some(ms) = m.resume_after_ms
        && ms > MAX_RESUME_AFTER_MS
    {
        return Err(CallErrorKind::InvalidOutput(format!(
            "resume-after-ms {ms} is more than a day"
        )));
    }
    Ok(())
}
