//! Taking over from Argo Rollouts: its ReplicaSets are named by Argo's
//! pod-template hash, which never equals Weir's, so a Rollout Argo deployed
//! is recognised by what its ReplicaSets run, as Argo itself finds a
//! Rollout's new ReplicaSet (`FindNewReplicaSet`): a ReplicaSet whose pod
//! template equals the Rollout's, ignoring the hash label and the fields
//! the API server fills in with their defaults. Such a ReplicaSet keeps its
//! hash, so a takeover with an unchanged template moves nothing.

use serde_json::{Map, Value, json};

use super::children::HASH_LABEL;

/// Whether `live` (a ReplicaSet's pod template, as the API server stored
/// it) runs the same pods as `desired` (a Rollout's pod template): equal
/// once the hash label is dropped, the deprecated `serviceAccount` mirror
/// is ignored (as Argo ignores it), and every field the API server
/// defaults is read as its default on both sides.
pub fn same_pod_template(live: &Value, desired: &Value) -> bool {
    normalized(live) == normalized(desired)
}

fn normalized(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    if let Some(spec) = t.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("serviceAccount");
        default_pod_spec(spec);
    }
    strip_empty(&mut t);
    t
}

/// Sets `key` to `value` in `map` when it is absent.
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn each_object<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// The defaults of core/v1 `SetDefaults_PodSpec` and friends that a pod
/// template in a ReplicaSet carries.
fn default_pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "enableServiceLinks", json!(true));
    for key in ["containers", "initContainers"] {
        for container in each_object(spec, key) {
            default_container(container);
        }
    }
    for volume in each_object(spec, "volumes") {
        for source in ["configMap", "secret", "downwardAPI", "projected"] {
            if let Some(source) = volume.get_mut(source).and_then(Value::as_object_mut) {
                default(source, "defaultMode", json!(420));
            }
        }
    }
}

fn default_container(container: &mut Map<String, Value>) {
    default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default(container, "terminationMessagePolicy", json!("File"));
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    default(container, "imagePullPolicy", json!(pull_policy_for(&image)));
    for port in each_object(container, "ports") {
        default(port, "protocol", json!("TCP"));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(probe).and_then(Value::as_object_mut) {
            default(probe, "timeoutSeconds", json!(1));
            default(probe, "periodSeconds", json!(10));
            default(probe, "successThreshold", json!(1));
            default(probe, "failureThreshold", json!(3));
            if let Some(get) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
                default(get, "scheme", json!("HTTP"));
            }
        }
    }
    for var in each_object(container, "env") {
        if let Some(field) = var
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            default(field, "apiVersion", json!("v1"));
        }
    }
}

/// core/v1's default pull policy: `Always` for an untagged or `:latest`
/// image (by tag, not by digest), `IfNotPresent` otherwise.
fn pull_policy_for(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag follows the last ':' after the last '/' (a registry port is
    // not a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// Removes nulls and empty objects, which the API server and a manifest
/// write differently for the same thing (`resources: {}`,
/// `creationTimestamp: null`, `securityContext: {}`).
fn strip_empty(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                strip_empty(v);
            }
            map.retain(|_, v| !(v.is_null() || v.as_object().is_some_and(Map::is_empty)));
        }
        Value::Array(items) => items.iter_mut().for_each(strip_empty),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> Value {
        json!({"metadata": {"labels": {"app": "checkout"}},
               "spec": {"containers": [{"name": "app", "image": "shop/app:1.2",
                                        "ports": [{"containerPort": 8080}],
                                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}]}})
    }

    /// `desired()` as a ReplicaSet created by Argo and stored by the API
    /// server has it.
    fn stored() -> Value {
        json!({"metadata": {"creationTimestamp": null,
                            "labels": {"app": "checkout", HASH_LABEL: "6c9f8d7b5"}},
               "spec": {"containers": [{"name": "app", "image": "shop/app:1.2",
                                        "imagePullPolicy": "IfNotPresent",
                                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080, "scheme": "HTTP"},
                                                           "timeoutSeconds": 1, "periodSeconds": 10,
                                                           "successThreshold": 1, "failureThreshold": 3},
                                        "resources": {},
                                        "terminationMessagePath": "/dev/termination-log",
                                        "terminationMessagePolicy": "File"}],
                        "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                        "schedulerName": "default-scheduler", "securityContext": {},
                        "terminationGracePeriodSeconds": 30}})
    }

    #[test]
    fn a_stored_template_with_defaults_and_argos_hash_is_the_same() {
        assert!(same_pod_template(&stored(), &desired()));
    }

    #[test]
    fn a_changed_image_a_changed_default_or_another_label_is_not() {
        let mut other = desired();
        other["spec"]["containers"][0]["image"] = json!("shop/app:1.3");
        assert!(!same_pod_template(&stored(), &other));
        let mut pull = stored();
        pull["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        assert!(!same_pod_template(&pull, &desired()));
        let mut labels = desired();
        labels["metadata"]["labels"]["tier"] = json!("web");
        assert!(!same_pod_template(&stored(), &labels));
        let mut grace = stored();
        grace["spec"]["terminationGracePeriodSeconds"] = json!(60);
        assert!(!same_pod_template(&grace, &desired()));
    }

    #[test]
    fn pull_policies_default_by_tag() {
        assert_eq!(pull_policy_for("nginx"), "Always");
        assert_eq!(pull_policy_for("nginx:latest"), "Always");
        assert_eq!(pull_policy_for("registry:5000/nginx"), "Always");
        assert_eq!(pull_policy_for("registry:5000/nginx:1.2"), "IfNotPresent");
        assert_eq!(pull_policy_for("nginx@sha256:abc"), "IfNotPresent");
    }
}
