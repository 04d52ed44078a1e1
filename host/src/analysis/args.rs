//! `{{args.name}}` substitution into metrics, as Argo's `ResolveArgs`.

use super::types::{Argument, MetricSpec};
use serde_json::Value;
use std::collections::BTreeMap;

/// The values of `valueFrom.secretKeyRef` arguments, by argument name, as
/// the controller read them for one reconcile (or why it could not). They
/// are substituted into the metric handed to the provider and never
/// stored.
pub type SecretArgs = BTreeMap<String, Result<String, String>>;

fn substitute(text: &str, args: &[Argument], secrets: &SecretArgs) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed `{{{{` in {text:?}"))?;
        let name = after[..end].trim();
        match name.strip_prefix("args.") {
            Some(arg) => {
                let found = args
                    .iter()
                    .find(|a| a.name == arg)
                    .ok_or_else(|| format!("args.{arg} was not resolved: no such argument"))?;
                let value = match (&found.value, &found.value_from) {
                    (Some(v), _) => v,
                    (None, Some(_)) => match secrets.get(arg) {
                        Some(Ok(v)) => v,
                        Some(Err(why)) => return Err(why.clone()),
                        None => {
                            return Err(format!(
                                "args.{arg}: this valueFrom is not resolved by Weir (secretKeyRef is, and fieldRef / podTemplateHashValue when a Rollout makes the run); give a value"
                            ));
                        }
                    },
                    (None, None) => {
                        return Err(format!(
                            "args.{arg} was not resolved: the argument has no value"
                        ));
                    }
                };
                out.push_str(value);
            }
            // Not an argument (e.g. a Prometheus template): keep it as it was.
            None => {
                out.push_str("{{");
                out.push_str(&after[..end]);
                out.push_str("}}");
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn walk(value: &mut Value, args: &[Argument], secrets: &SecretArgs) -> Result<(), String> {
    match value {
        Value::String(s) if s.contains("{{") => *s = substitute(s, args, secrets)?,
        Value::Array(items) => items.iter_mut().try_for_each(|v| walk(v, args, secrets))?,
        Value::Object(map) => map.values_mut().try_for_each(|v| walk(v, args, secrets))?,
        _ => {}
    }
    Ok(())
}

/// Every string in `value` with each of `secrets` (non-empty) replaced by
/// `*****`: what a run records must not carry a secret a provider echoed.
pub fn mask(value: &mut Value, secrets: &[&str]) {
    match value {
        Value::String(s) => {
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                if s.contains(secret) {
                    *s = s.replace(secret, "*****");
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| mask(v, secrets)),
        _ => {}
    }
}

/// The metric with every `{{args.x}}` in its string fields replaced
/// (`secrets`: the values of its `secretKeyRef` arguments).
pub fn resolve(
    metric: &MetricSpec,
    args: &[Argument],
    secrets: &SecretArgs,
) -> Result<MetricSpec, String> {
    let mut json = serde_json::to_value(metric).map_err(|e| e.to_string())?;
    walk(&mut json, args, secrets)?;
    serde_json::from_value(json)
        .map_err(|e| format!("metric {} after argument substitution: {e}", metric.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(name: &str, value: &str) -> Argument {
        Argument {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    #[test]
    fn substitutes_arguments_and_keeps_other_templates() {
        let args = [arg("service", "checkout"), arg("limit", "3")];
        let none = SecretArgs::new();
        assert_eq!(
            substitute("rate(x{svc=\"{{args.service}}\"}[5m])", &args, &none).unwrap(),
            "rate(x{svc=\"checkout\"}[5m])"
        );
        assert_eq!(substitute("{{ args.limit }}", &args, &none).unwrap(), "3");
        assert_eq!(substitute("{{other}}", &args, &none).unwrap(), "{{other}}");
        assert!(
            substitute("{{args.missing}}", &args, &none)
                .unwrap_err()
                .contains("args.missing")
        );
    }
}
