//! A per-call overlay over a [`Cluster`]: a plugin's writes are kept here,
//! visible to its own later reads, and handed to the backend as one atomic
//! batch only when the call succeeds.

use super::{Cluster, ClusterError, ObjectKey, Write, labels_match, resource_version};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One staged change to an object.
#[derive(Debug, Clone)]
struct Staged {
    /// The resourceVersion the object had in the backend when the call first
    /// touched it (`None`: it did not exist). The commit is conditional on it.
    base_version: Option<String>,
    /// The object as the call left it (`None`: deleted).
    value: Option<Value>,
}

/// A plugin call's view of the cluster: the backend plus the call's own writes.
pub struct StagedCluster {
    base: Arc<dyn Cluster>,
    overlay: BTreeMap<ObjectKey, Staged>,
}

impl StagedCluster {
    /// A view with no staged writes.
    pub fn new(base: Arc<dyn Cluster>) -> Self {
        StagedCluster {
            base,
            overlay: BTreeMap::new(),
        }
    }

    /// How many objects the call has changed.
    pub fn staged_count(&self) -> usize {
        self.overlay
            .values()
            .filter(|s| s.value.is_some() || s.base_version.is_some())
            .count()
    }

    /// Reads through the overlay.
    pub async fn get(&self, key: &ObjectKey) -> Result<Value, ClusterError> {
        match self.overlay.get(key) {
            Some(Staged { value: Some(v), .. }) => Ok(v.clone()),
            Some(Staged { value: None, .. }) => Err(ClusterError::NotFound(key.to_string())),
            None => self.base.get(key).await,
        }
    }

    /// Lists through the overlay.
    pub async fn list(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        let mut merged: BTreeMap<ObjectKey, Value> = BTreeMap::new();
        for object in self.base.list(group, kind, namespace, labels).await? {
            merged.insert(ObjectKey::of(&object)?, object);
        }
        for (key, staged) in &self.overlay {
            if key.group != group
                || key.kind != kind
                || (!namespace.is_empty() && key.namespace != namespace)
            {
                continue;
            }
            match &staged.value {
                Some(v) if labels_match(v, labels) => {
                    merged.insert(key.clone(), v.clone());
                }
                _ => {
                    merged.remove(key);
                }
            }
        }
        Ok(merged.into_values().collect())
    }

    /// The backend version recorded for `key`, reading it on first touch.
    async fn base_version(
        &self,
        key: &ObjectKey,
    ) -> Result<(Option<String>, Option<Value>), ClusterError> {
        if let Some(staged) = self.overlay.get(key) {
            return Ok((staged.base_version.clone(), staged.value.clone()));
        }
        match self.base.get(key).await {
            Ok(v) => Ok((resource_version(&v).map(str::to_string), Some(v))),
            Err(ClusterError::NotFound(_)) => Ok((None, None)),
            Err(e) => Err(e),
        }
    }

    /// Stages a create.
    pub async fn create(&mut self, object: Value) -> Result<Value, ClusterError> {
        let key = ObjectKey::of(&object)?;
        let (base_version, current) = self.base_version(&key).await?;
        if current.is_some() {
            return Err(ClusterError::AlreadyExists(key.to_string()));
        }
        let mut object = object;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        self.overlay.insert(
            key,
            Staged {
                base_version,
                value: Some(object.clone()),
            },
        );
        Ok(object)
    }

    /// Stages a replace. A `metadata.resourceVersion` in `object` must match
    /// the version this call sees.
    pub async fn update(&mut self, object: Value) -> Result<Value, ClusterError> {
        let key = ObjectKey::of(&object)?;
        let (base_version, current) = self.base_version(&key).await?;
        let Some(current) = current else {
            return Err(ClusterError::NotFound(key.to_string()));
        };
        let seen = resource_version(&current).unwrap_or_default().to_string();
        if let Some(given) = resource_version(&object)
            && given != seen
        {
            return Err(ClusterError::Conflict {
                key: key.to_string(),
                expected: given.to_string(),
                actual: seen,
            });
        }
        let mut object = object;
        // The staged copy carries the version the call started from, so a
        // later update in the same call that echoes it back still matches.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            match &base_version {
                Some(v) => meta.insert("resourceVersion".into(), Value::String(v.clone())),
                None => meta.remove("resourceVersion"),
            };
        }
        self.overlay.insert(
            key,
            Staged {
                base_version,
                value: Some(object.clone()),
            },
        );
        Ok(object)
    }

    /// Stages a delete.
    pub async fn delete(&mut self, key: &ObjectKey) -> Result<(), ClusterError> {
        let (base_version, current) = self.base_version(key).await?;
        if current.is_none() {
            return Err(ClusterError::NotFound(key.to_string()));
        }
        self.overlay.insert(
            key.clone(),
            Staged {
                base_version,
                value: None,
            },
        );
        Ok(())
    }

    /// The staged changes as one batch, each conditional on the version the
    /// call started from. Objects created and deleted within the call vanish.
    pub fn into_writes(self) -> Vec<Write> {
        self.overlay
            .into_iter()
            .filter_map(|(key, staged)| match (staged.base_version, staged.value) {
                (None, Some(object)) => Some(Write::Create(object)),
                (Some(version), Some(object)) => Some(Write::Update {
                    object,
                    expected_version: Some(version),
                }),
                (Some(version), None) => Some(Write::Delete {
                    key,
                    expected_version: Some(version),
                }),
                (None, None) => None,
            })
            .collect()
    }

    /// Applies the staged changes to the backend, all or nothing.
    pub async fn commit(self) -> Result<usize, ClusterError> {
        let base = self.base.clone();
        let writes = self.into_writes();
        let count = writes.len();
        if count > 0 {
            base.apply(writes).await?;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemoryCluster;
    use serde_json::json;

    fn cm(name: &str, value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "ns"}, "data": {"v": value}})
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("v1", "ConfigMap", "ns", name)
    }

    async fn seeded() -> Arc<MemoryCluster> {
        let base = Arc::new(MemoryCluster::new());
        base.apply(vec![Write::Create(cm("a", "1"))]).await.unwrap();
        base
    }

    #[tokio::test]
    async fn reads_see_staged_writes_but_the_backend_does_not_until_commit() {
        let base = seeded().await;
        let mut staged = StagedCluster::new(base.clone());
        staged.create(cm("b", "2")).await.unwrap();
        let mut a = staged.get(&key("a")).await.unwrap();
        a["data"]["v"] = json!("changed");
        staged.update(a).await.unwrap();
        assert_eq!(staged.get(&key("a")).await.unwrap()["data"]["v"], "changed");
        assert_eq!(
            staged.list("", "ConfigMap", "ns", &[]).await.unwrap().len(),
            2
        );
        assert!(
            base.get(&key("b")).await.is_err(),
            "nothing lands before commit"
        );
        assert_eq!(base.get(&key("a")).await.unwrap()["data"]["v"], "1");
        assert_eq!(staged.commit().await.unwrap(), 2);
        assert_eq!(base.get(&key("a")).await.unwrap()["data"]["v"], "changed");
        assert_eq!(base.get(&key("b")).await.unwrap()["data"]["v"], "2");
    }

    #[tokio::test]
    async fn a_concurrent_change_makes_the_whole_commit_fail() {
        let base = seeded().await;
        let mut staged = StagedCluster::new(base.clone());
        staged.create(cm("b", "2")).await.unwrap();
        let mut a = staged.get(&key("a")).await.unwrap();
        a["data"]["v"] = json!("mine");
        staged.update(a).await.unwrap();
        // Someone else updates `a` meanwhile.
        let mut theirs = base.get(&key("a")).await.unwrap();
        theirs["data"]["v"] = json!("theirs");
        base.apply(vec![Write::Update {
            object: theirs,
            expected_version: None,
        }])
        .await
        .unwrap();
        let err = staged.commit().await.unwrap_err();
        assert!(matches!(err, ClusterError::Conflict { .. }), "{err}");
        assert!(
            base.get(&key("b")).await.is_err(),
            "the create in the same batch did not land"
        );
        assert_eq!(base.get(&key("a")).await.unwrap()["data"]["v"], "theirs");
    }

    #[tokio::test]
    async fn stale_resource_version_is_a_conflict_at_once() {
        let base = seeded().await;
        let mut staged = StagedCluster::new(base);
        let mut a = staged.get(&key("a")).await.unwrap();
        a["metadata"]["resourceVersion"] = json!("999");
        assert!(matches!(
            staged.update(a).await,
            Err(ClusterError::Conflict { .. })
        ));
    }

    #[tokio::test]
    async fn created_then_deleted_leaves_nothing_to_write() {
        let base = seeded().await;
        let mut staged = StagedCluster::new(base);
        staged.create(cm("tmp", "x")).await.unwrap();
        staged.delete(&key("tmp")).await.unwrap();
        assert!(staged.into_writes().is_empty());
    }
}
