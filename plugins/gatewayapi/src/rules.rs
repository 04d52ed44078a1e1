//! The edits to a route's `spec.rules`, as pure functions on JSON: weights
//! on the stable and canary backendRefs, experiment destinations, and the
//! managed rules header routes add (the argoproj-labs plugin's behaviour).

use crate::config::RouteKind;
use serde_json::{Map, Value, json};

/// A backendRef's weight when it names none (the Gateway API default).
const DEFAULT_WEIGHT: i64 = 1;

/// Whether a rule named `name` belongs to managed route `managed`: its
/// name, or `<name>-<n>` for the second and later rules one header route
/// makes.
pub fn belongs_to(name: &str, managed: &str) -> bool {
    name == managed
        || name
            .strip_prefix(managed)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn rule_name(rule: &Value) -> Option<&str> {
    rule.get("name").and_then(Value::as_str)
}

/// Whether a rule is one of the managed routes' (listed in the Rollout's
/// `trafficRouting.managedRoutes`).
pub fn is_managed(rule: &Value, managed: &[String]) -> bool {
    rule_name(rule).is_some_and(|n| managed.iter().any(|m| belongs_to(n, m)))
}

fn refs(rule: &Value) -> impl Iterator<Item = &Value> {
    rule.get("backendRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn ref_name(backend: &Value) -> Option<&str> {
    backend.get("name").and_then(Value::as_str)
}

fn names(rule: &Value, service: &str) -> bool {
    refs(rule).any(|b| ref_name(b) == Some(service))
}

fn weight_of(backend: &Value) -> i64 {
    backend
        .get("weight")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_WEIGHT)
}

/// Sets `canary`'s backendRefs to `weight` and `stable`'s to the rest of
/// `total`, in every rule a managed route does not own (every rule, for
/// TCP and TLS routes). Fails naming what is missing when either Service
/// is in no such rule.
pub fn set_weights(
    rules: &mut [Value],
    kind: RouteKind,
    (canary, stable): (&str, &str),
    (weight, total): (i32, i32),
    managed: &[String],
) -> Result<(), String> {
    let (mut found_canary, mut found_stable) = (false, false);
    for rule in rules.iter_mut() {
        if kind.has_matches() && is_managed(rule, managed) {
            continue;
        }
        let Some(list) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else {
            continue;
        };
        for backend in list.iter_mut() {
            let value = match ref_name(backend) {
                Some(n) if n == canary => {
                    found_canary = true;
                    weight
                }
                Some(n) if n == stable => {
                    found_stable = true;
                    total - weight
                }
                _ => continue,
            };
            if let Some(map) = backend.as_object_mut() {
                map.insert("weight".into(), json!(value));
            }
        }
    }
    match (found_canary, found_stable) {
        (true, true) => Ok(()),
        (false, _) => Err(format!(
            "no backendRef names the canary Service {canary:?} in an unmanaged rule"
        )),
        (_, false) => Err(format!(
            "no backendRef names the stable Service {stable:?} in an unmanaged rule"
        )),
    }
}

/// An experiment's destination: Service, port, weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The Service.
    pub service: String,
    /// Its port (the one named `http`, else its first, else 8080).
    pub port: i64,
    /// Its share.
    pub weight: i32,
}

/// Experiments (HTTP routes): the first rule with the stable or canary
/// Service sends each destination its weight and the stable what is left;
/// once the experiment is over (`destinations` empty), the destinations
/// it had (`previous`) are taken out again.
pub fn set_experiment(
    rules: &mut [Value],
    (canary, stable): (&str, &str),
    (weight, total): (i32, i32),
    destinations: &[Destination],
    previous: &[String],
    managed: &[String],
) {
    let Some(rule) = rules
        .iter_mut()
        .find(|r| !is_managed(r, managed) && (names(r, stable) || names(r, canary)))
    else {
        return;
    };
    let Some(list) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else {
        return;
    };
    if destinations.is_empty() {
        list.retain(|b| {
            ref_name(b)
                .is_none_or(|n| n == stable || n == canary || !previous.iter().any(|p| p == n))
        });
        return;
    }
    let shared: i32 = destinations.iter().map(|d| d.weight).sum();
    for backend in list.iter_mut() {
        if ref_name(backend) == Some(stable)
            && let Some(map) = backend.as_object_mut()
        {
            map.insert("weight".into(), json!((total - weight - shared).max(0)));
        }
    }
    for d in destinations {
        match list
            .iter_mut()
            .find(|b| ref_name(b) == Some(d.service.as_str()))
        {
            Some(backend) => {
                if let Some(map) = backend.as_object_mut() {
                    map.insert("weight".into(), json!(d.weight));
                }
            }
            None => list.push(json!({
                "group": "",
                "kind": "Service",
                "name": d.service,
                "port": d.port,
                "weight": d.weight,
            })),
        }
    }
}

/// The weights a route was found to hold: canary, stable, and each
/// experiment destination's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The canary's weight.
    pub canary: i64,
    /// The stable's weight.
    pub stable: i64,
    /// Experiment destinations' weights.
    pub destinations: Vec<(String, i64)>,
}

/// The split a route holds: the canary's and the stable's weights in the
/// first unmanaged rule with both, and the experiment destinations' there
/// (other backends, which the router does not manage, are left out).
pub fn observed(
    rules: &[Value],
    kind: RouteKind,
    (canary, stable): (&str, &str),
    destinations: &[(String, i32)],
    managed: &[String],
) -> Option<Split> {
    let rule = rules.iter().find(|r| {
        !(kind.has_matches() && is_managed(r, managed)) && names(r, canary) && names(r, stable)
    })?;
    let weight = |service: &str| {
        refs(rule)
            .find(|b| ref_name(b) == Some(service))
            .map(weight_of)
    };
    let others = refs(rule)
        .filter_map(|b| {
            let n = ref_name(b)?;
            destinations
                .iter()
                .any(|(d, _)| d == n)
                .then(|| (n.to_string(), weight_of(b)))
        })
        .collect();
    Some(Split {
        canary: weight(canary)?,
        stable: weight(stable)?,
        destinations: others,
    })
}

/// Whether the route holds the split asked for: in every unmanaged rule,
/// the canary at `weight`, each experiment destination at its weight, and
/// the stable at what is left of `total` (less the destinations in that
/// rule); and both Services found.
pub fn holds(
    rules: &[Value],
    kind: RouteKind,
    (canary, stable): (&str, &str),
    (weight, total): (i32, i32),
    destinations: &[(String, i32)],
    managed: &[String],
) -> bool {
    let (mut found_canary, mut found_stable) = (false, false);
    for rule in rules
        .iter()
        .filter(|r| !(kind.has_matches() && is_managed(r, managed)))
    {
        let shared: i64 = refs(rule)
            .filter_map(|b| {
                let n = ref_name(b)?;
                destinations
                    .iter()
                    .find(|(d, _)| d == n)
                    .map(|(_, w)| i64::from(*w))
            })
            .sum();
        for backend in refs(rule) {
            let want = match ref_name(backend) {
                Some(n) if n == canary => {
                    found_canary = true;
                    i64::from(weight)
                }
                Some(n) if n == stable => {
                    found_stable = true;
                    i64::from(total - weight) - shared
                }
                Some(n) => match destinations.iter().find(|(d, _)| d == n) {
                    Some((_, w)) => i64::from(*w),
                    None => continue,
                },
                None => continue,
            };
            if weight_of(backend) != want {
                return false;
            }
        }
    }
    found_canary && found_stable
}

/// A header match in Gateway API's shape: `exact` is `Exact`; `prefix` and
/// `regex` are `RegularExpression` (a prefix gets `.*`), as the plugin does.
pub fn header_match(name: &str, kind: &str, value: &str) -> Value {
    match kind {
        "exact" => json!({"name": name, "type": "Exact", "value": value}),
        "prefix" => {
            json!({"name": name, "type": "RegularExpression", "value": format!("{value}.*")})
        }
        _ => json!({"name": name, "type": "RegularExpression", "value": value}),
    }
}

/// The rules header route `name` adds: one per rule that sends to both
/// the canary and the stable Service (named `name`, `name-1`, ...), each
/// keeping that rule's matches (path, query parameters and method for
/// HTTP; method for gRPC) with `headers` added, its filters, and one
/// backendRef: the canary, at the port that rule uses.
pub fn header_rules(
    rules: &[Value],
    kind: RouteKind,
    (canary, stable): (&str, &str),
    name: &str,
    headers: &[Value],
    managed: &[String],
) -> Result<Vec<Value>, String> {
    let sources: Vec<&Value> = rules
        .iter()
        .filter(|r| !is_managed(r, managed) && names(r, canary) && names(r, stable))
        .collect();
    if sources.is_empty() {
        return Err(format!(
            "no rule sends to both the canary {canary:?} and the stable {stable:?} Service"
        ));
    }
    let kept_fields: &[&str] = match kind {
        RouteKind::Http => &["path", "queryParams", "method"],
        _ => &["method"],
    };
    Ok(sources
        .iter()
        .enumerate()
        .map(|(i, source)| {
            let rule_name = if i == 0 {
                name.to_string()
            } else {
                format!("{name}-{i}")
            };
            let source_matches = source
                .get("matches")
                .and_then(Value::as_array)
                .filter(|m| !m.is_empty());
            let matches: Vec<Value> = match source_matches {
                None => vec![json!({"headers": headers})],
                Some(list) => list
                    .iter()
                    .map(|m| {
                        let mut out = Map::new();
                        for field in kept_fields {
                            if let Some(v) = m.get(*field) {
                                out.insert((*field).into(), v.clone());
                            }
                        }
                        let mut merged: Vec<Value> = m
                            .get("headers")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        merged.extend(headers.iter().cloned());
                        out.insert("headers".into(), Value::Array(merged));
                        Value::Object(out)
                    })
                    .collect(),
            };
            let port = refs(source)
                .find(|b| ref_name(b) == Some(canary))
                .and_then(|b| b.get("port").cloned());
            let mut backend = json!({"group": "", "kind": "Service", "name": canary});
            if let (Some(port), Some(map)) = (port, backend.as_object_mut()) {
                map.insert("port".into(), port);
            }
            let mut rule = json!({
                "name": rule_name,
                "matches": matches,
                "backendRefs": [backend],
            });
            if let (Some(filters), Some(map)) = (
                source
                    .get("filters")
                    .filter(|f| f.as_array().is_some_and(|a| !a.is_empty())),
                rule.as_object_mut(),
            ) {
                map.insert("filters".into(), filters.clone());
            }
            rule
        })
        .collect())
}

/// Replaces managed route `name`'s rules with `new`, appended at the end
/// (none: the route is removed). Returns whether anything changed.
pub fn replace_managed(rules: &mut Vec<Value>, name: &str, new: Vec<Value>) -> bool {
    let before = rules.clone();
    rules.retain(|r| !rule_name(r).is_some_and(|n| belongs_to(n, name)));
    rules.extend(new);
    *rules != before
}

/// Removes every managed route's rules. Returns whether any went.
pub fn remove_managed(rules: &mut Vec<Value>, managed: &[String]) -> bool {
    let before = rules.len();
    rules.retain(|r| !is_managed(r, managed));
    rules.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_names_are_the_name_and_its_numbered_copies() {
        assert!(belongs_to("canary-route1", "canary-route1"));
        assert!(belongs_to("canary-route1-1", "canary-route1"));
        assert!(belongs_to("canary-route1-12", "canary-route1"));
        assert!(!belongs_to("canary-route1-x", "canary-route1"));
        assert!(!belongs_to("canary-route10", "canary-route1"));
        assert!(!belongs_to("canary-route1-", "canary-route1"));
    }
}
