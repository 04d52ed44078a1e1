//! Counts and percentages in a Rollout's spec, checked as Argo checks
//! them (whole numbers that fit an `int32`; `"25%"` resolved as
//! Kubernetes' `GetScaledValueFromIntOrPercent`).

use serde_json::Value;

/// A whole number of seconds (or a count) ≥ 0 read from `field`.
pub(super) fn whole_number(field: &str, value: Option<&Value>) -> Result<Option<u64>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| i32::try_from(*n).is_ok())
            .map(Some)
            .ok_or_else(|| {
                format!("spec.strategy.canary.{field} must be a whole number >= 0, not {v}")
            }),
    }
}

/// An int-or-string field (`1`, `"25%"`) resolved against `total`, rounded
/// up or down as Kubernetes' `GetScaledValueFromIntOrPercent` does; `None`
/// when unset.
pub(super) fn int_or_percent(
    field: &str,
    value: Option<&Value>,
    total: i32,
    round_up: bool,
) -> Result<Option<i32>, String> {
    let refuse = |v: &Value| {
        format!(
            "spec.strategy.canary.{field} must be a whole number >= 0 or a percentage (\"25%\"), not {v}"
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .filter(|p| (0..=i64::from(i32::MAX)).contains(p))
                .ok_or_else(|| refuse(&Value::String(text.clone())))?;
            let scaled = percent * i64::from(total.max(0));
            let value = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            Ok(Some(i32::try_from(value).unwrap_or(i32::MAX)))
        }
        Some(v) => v
            .as_u64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| refuse(v)),
    }
}
