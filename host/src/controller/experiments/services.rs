//! The Service an experiment's weighted template gets, so routers can send
//! it traffic: its container ports, as Argo makes them.

use crate::cluster::{Cluster, ClusterError, ObjectKey, Write};
use crate::controller::children::{HASH_LABEL, owner_reference};
use crate::controller::context::ChildError;
use crate::controller::spec::RolloutView;
use serde_json::{Value, json};

/// The Service ports for a template, as Argo makes them: one per container
/// port, on the same number (port 80 when the template declares none, as a
/// Service needs one).
pub(super) fn service_ports(pod_template: &Value) -> Vec<Value> {
    let ports: Vec<Value> = pod_template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| {
            let number = p.get("containerPort")?.as_i64()?;
            let mut port = json!({"port": number, "targetPort": number,
                "protocol": p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")});
            if let Some(name) = p.get("name").and_then(Value::as_str) {
                port["name"] = json!(name);
            }
            Some(port)
        })
        .collect();
    if ports.is_empty() {
        vec![json!({"port": 80, "targetPort": 80, "protocol": "TCP"})]
    } else {
        ports
    }
}

pub(super) async fn ensure_service(
    cluster: &dyn Cluster,
    view: &RolloutView,
    name: &str,
    pod_template: &Value,
    hash: &str,
) -> Result<(), ChildError> {
    let key = ObjectKey::new("v1", "Service", &view.namespace, name);
    match cluster.get(&key).await {
        Ok(_) => return Ok(()),
        Err(ClusterError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut selector = pod_template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    selector.insert(HASH_LABEL.into(), json!(hash));
    cluster
        .apply(vec![Write::Create(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": view.namespace, "ownerReferences": owner_reference(view)},
            "spec": {"selector": selector, "ports": service_ports(pod_template)},
        }))])
        .await
        .map(drop)
        .map_err(ChildError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_services_take_the_templates_container_ports() {
        let template = json!({"spec": {"containers": [
            {"name": "app", "ports": [{"name": "http", "containerPort": 8081}, {"containerPort": 9090, "protocol": "UDP"}]},
            {"name": "sidecar"}]}});
        assert_eq!(
            service_ports(&template),
            vec![
                json!({"port": 8081, "targetPort": 8081, "protocol": "TCP", "name": "http"}),
                json!({"port": 9090, "targetPort": 9090, "protocol": "UDP"}),
            ]
        );
        assert_eq!(service_ports(&json!({}))[0]["port"], 80);
    }
}
