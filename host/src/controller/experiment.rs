//! Additional traffic destinations from a running experiment step.
//!
//! Argo Rollouts 1.6.6 dereferenced a template's `weight` without checking it
//! (`calculateWeightDestinationsFromExperiment`, fixed in 1.7.0): a step with
//! an unweighted template, or a status template missing from the step,
//! crashed the reconcile forever. Here the Rollout step and the Experiment
//! are read as untrusted JSON and every gap simply means "no destination".

use crate::plugin::WeightDestination;
use serde_json::Value;

/// The weighted destinations an experiment step adds, given the current
/// step (`spec.strategy.canary.steps[i]`) and the Experiment object.
///
/// Only when the step is an experiment step and the Experiment is
/// `Running`; then one destination per template status whose template is in
/// the step, has a weight within 0..=100, and has a service. Anything
/// missing or malformed contributes nothing.
pub fn weight_destinations_from_experiment(
    step: &Value,
    experiment: &Value,
) -> Vec<WeightDestination> {
    let Some(templates) = step
        .get("experiment")
        .and_then(|e| e.get("templates"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    if experiment.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return Vec::new();
    }
    let Some(statuses) = experiment
        .pointer("/status/templateStatuses")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let weight_of = |name: &str| -> Option<i32> {
        templates
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name))?
            .get("weight")?
            .as_i64()
            .and_then(|w| i32::try_from(w).ok())
            .filter(|w| (0..=100).contains(w))
    };
    statuses
        .iter()
        .filter_map(|status| {
            let name = status.get("name")?.as_str()?;
            let weight = weight_of(name)?;
            let service_name = status
                .get("serviceName")?
                .as_str()
                .filter(|s| !s.is_empty())?
                .to_string();
            let pod_template_hash = status
                .get("podTemplateHash")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Some(WeightDestination {
                service_name,
                pod_template_hash,
                weight,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(templates: Value) -> Value {
        json!({"experiment": {"duration": "5m", "templates": templates}})
    }

    fn running(statuses: Value) -> Value {
        json!({"status": {"phase": "Running", "templateStatuses": statuses}})
    }

    fn names(d: &[WeightDestination]) -> Vec<(&str, i32)> {
        d.iter()
            .map(|d| (d.service_name.as_str(), d.weight))
            .collect()
    }

    // The seed case: Argo Rollouts 1.6.6 panicked here.

    #[test]
    fn calculate_weight_destinations_from_experiment_skips_templates_without_weight() {
        let s = step(json!([
            {"name": "baseline", "specRef": "stable", "weight": 10},
            {"name": "experiment-template-without-weight", "specRef": "canary"}
        ]));
        let e = running(json!([
            {"name": "baseline", "serviceName": "app-baseline", "podTemplateHash": "aaa", "status": "Running"},
            {"name": "experiment-template-without-weight", "serviceName": "app-unweighted", "podTemplateHash": "bbb", "status": "Running"}
        ]));
        let d = weight_destinations_from_experiment(&s, &e);
        assert_eq!(names(&d), [("app-baseline", 10)]);
        assert_eq!(d[0].pod_template_hash, "aaa");
    }

    #[test]
    fn calculate_weight_destinations_from_experiment_with_status_not_yet_populated() {
        let s = step(json!([{"name": "canary", "specRef": "canary", "weight": 20}]));
        assert!(weight_destinations_from_experiment(&s, &json!({})).is_empty());
        assert!(weight_destinations_from_experiment(&s, &json!({"status": {}})).is_empty());
        assert!(
            weight_destinations_from_experiment(&s, &json!({"status": {"phase": "Running"}}))
                .is_empty()
        );
        assert!(
            weight_destinations_from_experiment(
                &s,
                &json!({"status": {"phase": "Pending", "templateStatuses": []}})
            )
            .is_empty()
        );
        assert!(weight_destinations_from_experiment(&s, &Value::Null).is_empty());
    }

    #[test]
    fn calculate_weight_destinations_from_experiment_with_mismatched_template_statuses() {
        let s = step(json!([{"name": "canary", "weight": 20}, {"name": "baseline", "weight": 15}]));
        let e = running(json!([
            {"name": "not-in-the-step", "serviceName": "x", "podTemplateHash": "1"},
            {"name": "canary", "podTemplateHash": "2"},
            {"name": "baseline", "serviceName": "app-baseline", "podTemplateHash": "3"},
            {"serviceName": "nameless"},
            "not even an object",
            {"name": 7, "serviceName": "wrong-type"}
        ]));
        assert_eq!(
            names(&weight_destinations_from_experiment(&s, &e)),
            [("app-baseline", 15)]
        );
    }

    #[test]
    fn calculate_weight_destinations_from_experiment_ignores_non_experiment_steps_and_bad_weights()
    {
        let e = running(json!([{"name": "canary", "serviceName": "svc"}]));
        assert!(weight_destinations_from_experiment(&json!({"setWeight": 20}), &e).is_empty());
        for weight in [json!(-5), json!(101), json!("20"), json!(1e12), Value::Null] {
            let s = step(json!([{"name": "canary", "weight": weight}]));
            assert!(
                weight_destinations_from_experiment(&s, &e).is_empty(),
                "weight {weight}"
            );
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const KEYS: &[&str] = &[
        "name",
        "weight",
        "serviceName",
        "podTemplateHash",
        "templates",
        "experiment",
        "status",
        "phase",
        "templateStatuses",
        "Running",
    ];

    /// Any JSON, biased towards the keys the function reads.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>().prop_map(|f| json!(f)),
            prop::sample::select(KEYS).prop_map(|s| json!(s)),
            "[a-z-]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 96, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(KEYS).prop_map(String::from),
                    inner,
                    0..7
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Well-formed steps and experiments with random gaps.
    fn shaped() -> impl Strategy<Value = (Value, Value)> {
        let template =
            ("[a-c]", prop::option::of(-10i64..120)).prop_map(|(name, weight)| match weight {
                Some(w) => json!({"name": name, "weight": w}),
                None => json!({"name": name}),
            });
        let status = (
            "[a-d]",
            prop::option::of("[a-z]{1,5}"),
            prop::option::of("[0-9a-f]{3}"),
        )
            .prop_map(|(name, svc, hash)| {
                let mut s = json!({"name": name});
                if let Some(svc) = svc {
                    s["serviceName"] = json!(svc);
                }
                if let Some(hash) = hash {
                    s["podTemplateHash"] = json!(hash);
                }
                s
            });
        let phase = prop::sample::select(vec!["Running", "Pending", "Successful", ""]);
        (
            prop::collection::vec(template, 0..5),
            prop::collection::vec(status, 0..5),
            phase,
        )
            .prop_map(|(templates, statuses, phase)| {
                (
                    json!({"experiment": {"templates": templates}}),
                    json!({"status": {"phase": phase, "templateStatuses": statuses}}),
                )
            })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_json(step in any_json(), experiment in any_json()) {
            let _ = weight_destinations_from_experiment(&step, &experiment);
        }

        #[test]
        fn only_weighted_templates_that_exist_become_destinations((step, experiment) in shaped()) {
            let out = weight_destinations_from_experiment(&step, &experiment);
            let running = experiment["status"]["phase"] == "Running";
            if !running {
                prop_assert!(out.is_empty());
            }
            let templates = step["experiment"]["templates"].as_array().cloned().unwrap_or_default();
            let statuses = experiment["status"]["templateStatuses"].as_array().cloned().unwrap_or_default();
            for d in &out {
                prop_assert!((0..=100).contains(&d.weight));
                prop_assert!(!d.service_name.is_empty());
                // It comes from a status whose template is in the step with this weight.
                let found = statuses.iter().any(|s| {
                    s["serviceName"] == json!(d.service_name)
                        && templates.iter().any(|t| t["name"] == s["name"] && t["weight"] == json!(d.weight))
                });
                prop_assert!(found, "{d:?} has no weighted template behind it");
            }
        }
    }
}
