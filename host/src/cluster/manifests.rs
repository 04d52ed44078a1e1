//! Manifests from YAML or JSON files, applied as `kubectl apply` would:
//! created when new, replaced when present (keeping the stored `status`),
//! every object of one apply in one atomic batch, so a bad document leaves
//! the store as it was.

use super::{Cluster, ClusterError, ObjectKey, Write, resource_version};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why manifests could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file could not be read.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A document is not a Kubernetes object.
    #[error("{path}, document {index}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The document's position (1-based).
        index: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The store refused the batch; nothing was written.
    #[error("nothing was applied: {0}")]
    Store(#[from] ClusterError),
}

/// The manifest files at `path`: the file itself, or every `.yaml`, `.yml`
/// and `.json` file in the directory, in name order.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read = |message: String| ManifestError::Read {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| read(e.to_string()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| read(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Every object in the files at `path`; namespaced kinds without a
/// namespace get `default`.
pub fn read(path: &Path) -> Result<Vec<Value>, ManifestError> {
    let mut objects = Vec::new();
    for file in files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|e| ManifestError::Read {
            path: file.clone(),
            message: e.to_string(),
        })?;
        objects.extend(parse(&text, &file)?);
    }
    Ok(objects)
}

/// Every object in the YAML documents of `text` (read from `file`).
pub fn parse(text: &str, file: &Path) -> Result<Vec<Value>, ManifestError> {
    let mut objects = Vec::new();
    {
        let file = file.to_path_buf();
        for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let invalid = |message: String| ManifestError::Invalid {
                path: file.clone(),
                index: i + 1,
                message,
            };
            let value = <Value as serde::Deserialize>::deserialize(document)
                .map_err(|e| invalid(format!("not valid YAML: {e}")))?;
            if value.is_null() {
                continue;
            }
            let mut value = value;
            ObjectKey::of(&value).map_err(|e| {
                invalid(format!(
                    "{e}; every document needs apiVersion, kind and metadata.name"
                ))
            })?;
            if !is_cluster_scoped(&value)
                && value
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .is_none()
                && let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut)
            {
                metadata.insert("namespace".into(), Value::String("default".into()));
            }
            objects.push(value);
        }
    }
    Ok(objects)
}

fn is_cluster_scoped(object: &Value) -> bool {
    matches!(
        object.get("kind").and_then(Value::as_str),
        Some(
            "Namespace"
                | "ClusterAnalysisTemplate"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "CustomResourceDefinition"
        )
    )
}

/// Applies `objects` in one batch; returns `(key, created)` per object.
pub async fn apply(
    cluster: &dyn Cluster,
    objects: Vec<Value>,
) -> Result<Vec<(ObjectKey, bool)>, ManifestError> {
    let mut writes = Vec::new();
    let mut report = Vec::new();
    for mut object in objects {
        let key = ObjectKey::of(&object)?;
        match cluster.get(&key).await {
            Ok(stored) => {
                if let (Some(map), Some(status)) = (object.as_object_mut(), stored.get("status")) {
                    map.insert("status".into(), status.clone());
                }
                bump_generation(&mut object, &stored);
                writes.push(Write::Update {
                    object,
                    expected_version: resource_version(&stored).map(str::to_string),
                });
                report.push((key, false));
            }
            Err(ClusterError::NotFound(_)) => {
                if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.insert("generation".into(), Value::from(1));
                }
                writes.push(Write::Create(object));
                report.push((key, true));
            }
            Err(e) => return Err(e.into()),
        }
    }
    cluster.apply(writes).await?;
    Ok(report)
}

/// `metadata.generation` goes up when the spec changes, as on an API server.
fn bump_generation(object: &mut Value, stored: &Value) {
    let previous = stored
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = if object.get("spec") == stored.get("spec") {
        previous
    } else {
        previous.saturating_add(1)
    };
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("generation".into(), Value::from(generation));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemoryCluster;

    #[tokio::test]
    async fn one_bad_document_applies_nothing_and_names_itself() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
        )
        .expect("write");
        let err = read(dir.path()).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("a.yaml")
                && text.contains("document 2")
                && text.contains("metadata.name"),
            "{text}"
        );
        let cluster = MemoryCluster::new();
        assert!(cluster.objects().is_empty());
    }

    #[tokio::test]
    async fn reapplying_keeps_status_and_bumps_generation_on_spec_change() {
        let cluster = MemoryCluster::new();
        let object = serde_json::json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "r", "namespace": "ns"}, "spec": {"replicas": 1}});
        apply(&cluster, vec![object.clone()]).await.expect("create");
        let key = ObjectKey::of(&object).expect("key");
        let mut stored = cluster.get(&key).await.expect("get");
        stored["status"] = serde_json::json!({"phase": "Healthy"});
        cluster
            .apply(vec![Write::Update {
                object: stored,
                expected_version: None,
            }])
            .await
            .expect("status");
        let mut changed = object.clone();
        changed["spec"]["replicas"] = serde_json::json!(3);
        let report = apply(&cluster, vec![changed]).await.expect("update");
        assert_eq!(report, vec![(key.clone(), false)]);
        let stored = cluster.get(&key).await.expect("get");
        assert_eq!(stored["status"]["phase"], "Healthy");
        assert_eq!(stored["metadata"]["generation"], 2);
    }
}
