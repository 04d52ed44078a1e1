//! `{{args.name}}` substitution into metrics, as Argo's `ResolveArgs`.

use super::types::{Argument, MetricSpec};
use serde_json::Value;

fn substitute(text: &str, args: &[Argument]) -> Result<String, String> {
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
                    (None, Some(_)) => {
                        return Err(format!(
                            "args.{arg}: valueFrom (secretKeyRef, fieldRef) is not supported by Weir yet; give a value"
                        ));
                    }
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

fn walk(value: &mut Value, args: &[Argument]) -> Result<(), String> {
    match value {
        Value::String(s) if s.contains("{{") => *s = substitute(s, args)?,
        Value::Array(items) => items.iter_mut().try_for_each(|v| walk(v, args))?,
        Value::Object(map) => map.values_mut().try_for_each(|v| walk(v, args))?,
        _ => {}
    }
    Ok(())
}

/// The metric with every `{{args.x}}` in its string fields replaced.
pub fn resolve(metric: &MetricSpec, args: &[Argument]) -> Result<MetricSpec, String> {
    let mut json = serde_json::to_value(metric).map_err(|e| e.to_string())?;
    walk(&mut json, args)?;
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
        assert_eq!(
            substitute("rate(x{svc=\"{{args.service}}\"}[5m])", &args).unwrap(),
            "rate(x{svc=\"checkout\"}[5m])"
        );
        assert_eq!(substitute("{{ args.limit }}", &args).unwrap(), "3");
        assert_eq!(substitute("{{other}}", &args).unwrap(), "{{other}}");
        assert!(
            substitute("{{args.missing}}", &args)
                .unwrap_err()
                .contains("args.missing")
        );
    }
}
