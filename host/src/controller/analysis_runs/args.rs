//! A run's arguments' `valueFrom`: `podTemplateHashValue` and `fieldRef`
//! into any field of the Rollout, resolved when the run is made.

use crate::analysis::types::Argument;
use crate::controller::spec::RolloutView;
use serde_json::Value;

/// [`resolve_args`] with the canary and stable hashes given: an
/// Experiment's analysis arguments are resolved so when the Experiment is
/// made, as Argo resolves them.
pub fn resolve_value_from(
    args: &[Argument],
    view: &RolloutView,
    canary_hash: &str,
    stable_hash: &str,
) -> Result<Vec<Argument>, String> {
    args.iter()
        .map(|arg| {
            let Some(from) = &arg.value_from else {
                return Ok(arg.clone());
            };
            let value = if let Some(which) =
                from.get("podTemplateHashValue").and_then(Value::as_str)
            {
                match which {
                    "Stable" => stable_hash.to_string(),
                    "Latest" => canary_hash.to_string(),
                    other => {
                        return Err(format!(
                            "args.{}: podTemplateHashValue must be Stable or Latest, not {other:?}",
                            arg.name
                        ));
                    }
                }
            } else if let Some(path) = from.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
                field_path(&view.object, path).ok_or_else(|| {
                    format!(
                        "args.{}: fieldRef {path:?} names no string field of the Rollout",
                        arg.name
                    )
                })?
            } else {
                // secretKeyRef and others stay for the engine, which refuses them clearly.
                return Ok(arg.clone());
            };
            Ok(Argument {
                name: arg.name.clone(),
                value: Some(value),
                value_from: None,
            })
        })
        .collect()
}

/// `metadata.labels['app']` or `spec.x.y` as a string.
fn field_path(object: &Value, path: &str) -> Option<String> {
    let mut current = object;
    let mut rest = path;
    while !rest.is_empty() {
        let (segment, tail) = match rest.find(['.', '[']) {
            Some(0) if rest.starts_with('[') => {
                let end = rest.find(']')?;
                let key = rest.get(1..end)?.trim_matches(|c| c == '\'' || c == '"');
                current = current.get(key)?;
                rest = rest.get(end + 1..)?.trim_start_matches('.');
                continue;
            }
            Some(i) => (rest.get(..i)?, rest.get(i..)?.trim_start_matches('.')),
            None => (rest, ""),
        };
        current = current.get(segment)?;
        rest = tail;
    }
    match current {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths() {
        let o = json!({"metadata": {"name": "r", "labels": {"app.kubernetes.io/name": "x"}}, "spec": {"replicas": 3}});
        assert_eq!(field_path(&o, "metadata.name").as_deref(), Some("r"));
        assert_eq!(
            field_path(&o, "metadata.labels['app.kubernetes.io/name']").as_deref(),
            Some("x")
        );
        assert_eq!(field_path(&o, "spec.replicas").as_deref(), Some("3"));
        assert_eq!(field_path(&o, "spec.missing"), None);
        assert_eq!(field_path(&o, "metadata.labels['unclosed"), None);
    }
}
