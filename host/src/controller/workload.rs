//! `spec.workloadRef`: a Rollout that takes its pod template (and, when it
//! has none, its selector) from an existing Deployment, as teams adopt Argo
//! without rewriting their Deployments. The template is read at every
//! reconcile and never written back into the Rollout; the Deployment is
//! never modified except as `scaleDown` says (its `spec.replicas` only).

use crate::cluster::{Cluster, ClusterError, ObjectKey, Write};
use serde_json::Value;

/// What `workloadRef.scaleDown` asks of the Deployment (Argo's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDown {
    /// Left as it is (the default).
    Never,
    /// Scaled to 0 once the Rollout's first revision is Healthy.
    OnSuccess,
    /// Scaled down as the Rollout's first revision's pods become
    /// available, to 0 once it is Healthy.
    Progressively,
}

/// The Deployment a Rollout refers to, as read this reconcile.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Its key.
    pub key: ObjectKey,
    /// It, as read.
    pub deployment: Value,
    /// `workloadRef.scaleDown`.
    pub scale_down: ScaleDown,
}

/// Why a `workloadRef` could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The reference or what it names is wrong: the message names the
    /// field and the fix.
    #[error("{0}")]
    Invalid(String),
    /// The store failed (not a missing Deployment): try again.
    #[error(transparent)]
    Cluster(ClusterError),
}

/// The Rollout `object` with its template (and selector, when it has
/// none) taken from the Deployment its `spec.workloadRef` names; `None`
/// when it names none.
pub async fn resolve(
    cluster: &dyn Cluster,
    object: &Value,
) -> Result<Option<(Value, Workload)>, ResolveError> {
    let Some(reference) = object.pointer("/spec/workloadRef").filter(|r| !r.is_null()) else {
        return Ok(None);
    };
    let invalid = |m: String| ResolveError::Invalid(format!("spec.workloadRef: {m}"));
    let field = |name: &str| reference.get(name).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind, name) = (field("apiVersion"), field("kind"), field("name"));
    if api_version != "apps/v1" || kind != "Deployment" {
        return Err(invalid(format!(
            "a workload of type {api_version}/{kind} is not supported: Weir reads Deployments (apiVersion: apps/v1, kind: Deployment)"
        )));
    }
    if name.is_empty() {
        return Err(invalid("name is required: the Deployment's name".into()));
    }
    let scale_down = match field("scaleDown") {
        "" | "never" => ScaleDown::Never,
        "onsuccess" => ScaleDown::OnSuccess,
        "progressively" => ScaleDown::Progressively,
        other => {
            return Err(invalid(format!(
                "scaleDown {other:?} is not one of never, onsuccess, progressively"
            )));
        }
    };
    let template_set = object
        .pointer("/spec/template")
        .is_some_and(|t| !t.is_null() && t.as_object().is_none_or(|m| !m.is_empty()));
    if template_set {
        return Err(ResolveError::Invalid(
            "spec.template must be empty with spec.workloadRef (the template is the Deployment's): remove one of them".into(),
        ));
    }
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let key = ObjectKey::new("apps/v1", "Deployment", namespace, name);
    let deployment = match cluster.get(&key).await {
        Ok(d) => d,
        Err(ClusterError::NotFound(_)) => {
            return Err(invalid(format!(
                "Deployment {namespace}/{name} not found: create it, or fix workloadRef.name"
            )));
        }
        Err(e) => return Err(ResolveError::Cluster(e)),
    };
    let Some(template) = deployment
        .pointer("/spec/template")
        .filter(|t| t.is_object())
    else {
        return Err(invalid(format!(
            "Deployment {namespace}/{name} has no spec.template"
        )));
    };
    let mut resolved = object.clone();
    if let Some(spec) = resolved.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("template".into(), template.clone());
        let has_selector = spec.get("selector").is_some_and(|s| !s.is_null());
        if !has_selector && let Some(selector) = deployment.pointer("/spec/selector") {
            spec.insert("selector".into(), selector.clone());
        }
    }
    Ok(Some((
        resolved,
        Workload {
            key,
            deployment,
            scale_down,
        },
    )))
}

impl Workload {
    /// `metadata.generation` of the Deployment, as Argo records it in
    /// `status.workloadObservedGeneration`.
    pub fn generation(&self) -> Option<String> {
        self.deployment
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .map(|g| g.to_string())
    }

    /// The Deployment's size `scaleDown` asks for, given the Rollout's
    /// `replicas`, whether the Rollout is Healthy, and its first
    /// revision's ReplicaSet (`revision`, `available` pods) when that is
    /// the stable one. `None`: leave it. As Argo, only the first revision
    /// (the migration) scales the Deployment: a later one never does.
    pub fn target(&self, replicas: i32, healthy: bool, stable: Option<(u64, i64)>) -> Option<i32> {
        let (revision, available) = stable?;
        if revision != 1 {
            return None;
        }
        match self.scale_down {
            ScaleDown::Never => None,
            ScaleDown::OnSuccess => healthy.then_some(0),
            ScaleDown::Progressively if healthy => Some(0),
            ScaleDown::Progressively => {
                let left = i64::from(replicas).saturating_sub(available).max(0);
                Some(i32::try_from(left).unwrap_or(replicas))
            }
        }
    }

    /// Sets the Deployment's `spec.replicas` to `replicas` (nothing else),
    /// unless it is so already. True when it wrote.
    pub async fn scale(&self, cluster: &dyn Cluster, replicas: i32) -> Result<bool, ClusterError> {
        let current = self
            .deployment
            .pointer("/spec/replicas")
            .and_then(Value::as_i64);
        if current == Some(i64::from(replicas)) {
            return Ok(false);
        }
        let mut deployment = self.deployment.clone();
        match deployment.get_mut("spec").and_then(Value::as_object_mut) {
            Some(spec) => {
                spec.insert("replicas".into(), Value::from(replicas));
            }
            None => return Ok(false),
        }
        cluster
            .apply(vec![Write::update_as_read(deployment)])
            .await?;
        tracing::info!(deployment = %self.key, replicas, "workloadRef: Deployment scaled");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(mode: ScaleDown) -> Workload {
        Workload {
            key: ObjectKey::new("apps/v1", "Deployment", "shop", "d"),
            deployment: json!({}),
            scale_down: mode,
        }
    }

    #[test]
    fn each_scale_down_mode_sizes_the_deployment_as_argo_does() {
        let never = workload(ScaleDown::Never);
        assert_eq!(never.target(4, true, Some((1, 4))), None);
        let on_success = workload(ScaleDown::OnSuccess);
        assert_eq!(on_success.target(4, false, Some((1, 2))), None);
        assert_eq!(on_success.target(4, true, Some((1, 4))), Some(0));
        let progressively = workload(ScaleDown::Progressively);
        assert_eq!(progressively.target(4, false, Some((1, 0))), Some(4));
        assert_eq!(progressively.target(4, false, Some((1, 3))), Some(1));
        assert_eq!(progressively.target(4, false, Some((1, 9))), Some(0));
        assert_eq!(progressively.target(4, true, Some((1, 4))), Some(0));
        // A later revision never scales the Deployment (Argo's migration
        // rule); nor does a rollout without a stable yet.
        assert_eq!(on_success.target(4, true, Some((2, 4))), None);
        assert_eq!(progressively.target(4, false, None), None);
    }
}
