//! A per-call overlay over a [`Cluster`]: a plugin's writes are kept here,
//! visible to its own later reads, and handed to the backend as one atomic
//! batch only when the call succeeds.
//!
//! The overlay is bounded ([`StagingLimits`]): requests it makes to the
//! backend (reads, and one per write at commit), objects it holds, and
//! their bytes. Each is charged before the work it stands for.

use super::document::{STORED, measure};
use super::{Cluster, ClusterError, ObjectKey, Write, labels_match, resource_version};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// One staged change to an object.
#[derive(Debug, Clone)]
struct Staged {
    /// The resourceVersion the object had in the backend when the call first
    /// touched it (`None`: it did not exist). The commit is conditional on it.
    base_version: Option<String>,
    /// The object as the call left it (`None`: deleted).
    value: Option<Value>,
    /// The serialised size of `value` (0 when deleted).
    bytes: usize,
}

/// Bounds on what one call may stage and ask of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagingLimits {
    /// Requests to the backend: reads that miss the overlay, and one per
    /// write at commit.
    pub api_requests: u32,
    /// Objects created, changed or deleted.
    pub staged_objects: usize,
    /// Bytes of the objects staged, summed.
    pub staged_bytes: usize,
}

impl StagingLimits {
    /// No bounds (the controller's own batches, and tests).
    pub const UNBOUNDED: StagingLimits = StagingLimits {
        api_requests: u32::MAX,
        staged_objects: usize::MAX,
        staged_bytes: usize::MAX,
    };
}

/// Which staging bound was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagingLimit {
    /// [`StagingLimits::api_requests`].
    ApiRequests,
    /// [`StagingLimits::staged_objects`].
    StagedObjects,
    /// [`StagingLimits::staged_bytes`].
    StagedBytes,
}

/// A staging bound was reached; the operation was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}, over the limit of {cap}")]
pub struct StagingExceeded {
    /// The bound.
    pub limit: StagingLimit,
    /// Its value.
    pub cap: u64,
    /// What was asked.
    pub detail: String,
}

/// Why a staged operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StagedError {
    /// The backend's answer (not found, conflict, ...).
    #[error(transparent)]
    Cluster(ClusterError),
    /// A staging bound; the call should end.
    #[error(transparent)]
    Limit(StagingExceeded),
}

impl From<ClusterError> for StagedError {
    fn from(e: ClusterError) -> Self {
        StagedError::Cluster(e)
    }
}

/// A plugin call's view of the cluster: the backend plus the call's own writes.
pub struct StagedCluster {
    base: Arc<dyn Cluster>,
    overlay: BTreeMap<ObjectKey, Staged>,
    limits: StagingLimits,
    requests: u32,
    staged_bytes: usize,
}

impl StagedCluster {
    /// A view with no staged writes, bounded by `limits`.
    pub fn new(base: Arc<dyn Cluster>, limits: StagingLimits) -> Self {
        StagedCluster {
            base,
            overlay: BTreeMap::new(),
            limits,
            requests: 0,
            staged_bytes: 0,
        }
    }

    /// Charges `n` backend requests, before they are made.
    fn charge_requests(&mut self, n: usize, what: &str) -> Result<(), StagedError> {
        let total = u64::from(self.requests).saturating_add(n as u64);
        if total > u64::from(self.limits.api_requests) {
            return Err(StagedError::Limit(StagingExceeded {
                limit: StagingLimit::ApiRequests,
                cap: u64::from(self.limits.api_requests),
                detail: format!("{what} would be request {total} to the cluster"),
            }));
        }
        self.requests = u32::try_from(total).unwrap_or(u32::MAX);
        Ok(())
    }

    /// Reads through the overlay, the backend at `api_version`.
    pub async fn get(&mut self, key: &ObjectKey, api_version: &str) -> Result<Value, StagedError> {
        match self.overlay.get(key) {
            Some(Staged { value: Some(v), .. }) => Ok(v.clone()),
            Some(Staged { value: None, .. }) => Err(ClusterError::NotFound(key.to_string()).into()),
            None => {
                self.charge_requests(1, &format!("get {key}"))?;
                Ok(self.base.get_at(key, api_version).await?)
            }
        }
    }

    /// Lists through the overlay.
    pub async fn list(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, StagedError> {
        self.charge_requests(1, &format!("list {kind}"))?;
        let group = super::group_of(api_version);
        let mut merged: BTreeMap<ObjectKey, Value> = BTreeMap::new();
        for object in self
            .base
            .list_at(api_version, kind, namespace, labels)
            .await?
        {
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

    /// The backend version recorded for `key`, reading it on first touch (at
    /// `api_version`, when the write names one).
    async fn base_version(
        &mut self,
        key: &ObjectKey,
        api_version: Option<&str>,
    ) -> Result<(Option<String>, Option<Value>), StagedError> {
        if let Some(staged) = self.overlay.get(key) {
            return Ok((staged.base_version.clone(), staged.value.clone()));
        }
        self.charge_requests(1, &format!("get {key}"))?;
        let read = match api_version {
            Some(v) => self.base.get_at(key, v).await,
            None => self.base.get(key).await,
        };
        match read {
            Ok(v) => Ok((resource_version(&v).map(str::to_string), Some(v))),
            Err(ClusterError::NotFound(_)) => Ok((None, None)),
            Err(e) => Err(e.into()),
        }
    }

    /// Records `value` for `key`, charging the object and its bytes first.
    fn stage(
        &mut self,
        key: ObjectKey,
        base_version: Option<String>,
        value: Option<Value>,
    ) -> Result<(), StagedError> {
        let bytes = match &value {
            Some(v) => {
                measure(v, STORED)
                    .map_err(|e| {
                        ClusterError::Invalid(format!("{key} cannot be stored: it is {e}"))
                    })?
                    .bytes
            }
            None => 0,
        };
        let previous = self.overlay.get(&key).map(|s| s.bytes);
        if previous.is_none() && self.overlay.len() >= self.limits.staged_objects {
            return Err(StagedError::Limit(StagingExceeded {
                limit: StagingLimit::StagedObjects,
                cap: self.limits.staged_objects as u64,
                detail: format!(
                    "writing {key} would stage object {}",
                    self.overlay.len() + 1
                ),
            }));
        }
        let total = self.staged_bytes - previous.unwrap_or(0) + bytes;
        if total > self.limits.staged_bytes {
            return Err(StagedError::Limit(StagingExceeded {
                limit: StagingLimit::StagedBytes,
                cap: self.limits.staged_bytes as u64,
                detail: format!("writing {key} ({bytes} bytes) would stage {total} bytes"),
            }));
        }
        self.staged_bytes = total;
        self.overlay.insert(
            key,
            Staged {
                base_version,
                value,
                bytes,
            },
        );
        Ok(())
    }

    /// Stages a create.
    pub async fn create(&mut self, object: Value) -> Result<Value, StagedError> {
        let key = ObjectKey::of(&object)?;
        let (base_version, current) = self.base_version(&key, api_version_of(&object)).await?;
        if current.is_some() {
            return Err(ClusterError::AlreadyExists(key.to_string()).into());
        }
        let mut object = object;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        self.stage(key, base_version, Some(object.clone()))?;
        Ok(object)
    }

    /// Stages a replace. A `metadata.resourceVersion` in `object` must match
    /// the version this call sees.
    pub async fn update(&mut self, object: Value) -> Result<Value, StagedError> {
        let key = ObjectKey::of(&object)?;
        let (base_version, current) = self.base_version(&key, api_version_of(&object)).await?;
        let Some(current) = current else {
            return Err(ClusterError::NotFound(key.to_string()).into());
        };
        let seen = resource_version(&current).unwrap_or_default().to_string();
        if let Some(given) = resource_version(&object)
            && given != seen
        {
            return Err(ClusterError::Conflict {
                key: key.to_string(),
                expected: given.to_string(),
                actual: seen,
            }
            .into());
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
        self.stage(key, base_version, Some(object.clone()))?;
        Ok(object)
    }

    /// Stages a delete.
    pub async fn delete(&mut self, key: &ObjectKey) -> Result<(), StagedError> {
        let (base_version, current) = self.base_version(key, None).await?;
        if current.is_none() {
            return Err(ClusterError::NotFound(key.to_string()).into());
        }
        self.stage(key.clone(), base_version, None)
    }

    /// The staged changes as [`Self::into_writes`] would give them,
    /// leaving the view as it is (what the flight recorder keeps).
    pub fn pending_writes(&self) -> Vec<Write> {
        self.overlay
            .iter()
            .filter_map(
                |(key, staged)| match (&staged.base_version, &staged.value) {
                    (None, Some(object)) => Some(Write::Create(object.clone())),
                    (Some(version), Some(object)) => Some(Write::Update {
                        object: object.clone(),
                        expected_version: Some(version.clone()),
                    }),
                    (Some(version), None) => Some(Write::Delete {
                        key: key.clone(),
                        expected_version: Some(version.clone()),
                    }),
                    (None, None) => None,
                },
            )
            .collect()
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

    /// Applies the staged changes to the backend, all or nothing, starting
    /// no write after `deadline` (see [`Cluster::apply_before`]).
    pub async fn commit(mut self, deadline: Instant) -> Result<usize, StagedError> {
        let base = self.base.clone();
        let pending = self
            .overlay
            .values()
            .filter(|s| s.base_version.is_some() || s.value.is_some())
            .count();
        self.charge_requests(pending, "committing the staged writes")?;
        let writes = self.into_writes();
        let count = writes.len();
        if count > 0 {
            base.apply_before(writes, deadline).await?;
        }
        Ok(count)
    }
}

/// The `apiVersion` a write names.
fn api_version_of(object: &Value) -> Option<&str> {
    object.get("apiVersion").and_then(Value::as_str)
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

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(60)
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
        let mut staged = StagedCluster::new(base.clone(), StagingLimits::UNBOUNDED);
        staged.create(cm("b", "2")).await.unwrap();
        let mut a = staged.get(&key("a"), "v1").await.unwrap();
        a["data"]["v"] = json!("changed");
        staged.update(a).await.unwrap();
        assert_eq!(
            staged.get(&key("a"), "v1").await.unwrap()["data"]["v"],
            "changed"
        );
        assert_eq!(
            staged
                .list("v1", "ConfigMap", "ns", &[])
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(
            base.get(&key("b")).await.is_err(),
            "nothing lands before commit"
        );
        assert_eq!(base.get(&key("a")).await.unwrap()["data"]["v"], "1");
        assert_eq!(staged.commit(far()).await.unwrap(), 2);
        assert_eq!(base.get(&key("a")).await.unwrap()["data"]["v"], "changed");
        assert_eq!(base.get(&key("b")).await.unwrap()["data"]["v"], "2");
    }

    #[tokio::test]
    async fn a_concurrent_change_makes_the_whole_commit_fail() {
        let base = seeded().await;
        let mut staged = StagedCluster::new(base.clone(), StagingLimits::UNBOUNDED);
        staged.create(cm("b", "2")).await.unwrap();
        let mut a = staged.get(&key("a"), "v1").await.unwrap();
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
        let err = staged.commit(far()).await.unwrap_err();
        assert!(
            matches!(err, StagedError::Cluster(ClusterError::Conflict { .. })),
            "{err}"
        );
        assert!(
            base.get(&key("b")).await.is_err(),
            "the create in the same batch did not land"
        );
        assert_eq!(base.get(&key("a")).await.unwrap()["data"]["v"], "theirs");
    }

    #[tokio::test]
    async fn stale_resource_version_is_a_conflict_at_once() {
        let base = seeded().await;
        let mut staged = StagedCluster::new(base, StagingLimits::UNBOUNDED);
        let mut a = staged.get(&key("a"), "v1").await.unwrap();
        a["metadata"]["resourceVersion"] = json!("999");
        assert!(matches!(
            staged.update(a).await,
            Err(StagedError::Cluster(ClusterError::Conflict { .. }))
        ));
    }

    #[tokio::test]
    async fn created_then_deleted_leaves_nothing_to_write() {
        let base = seeded().await;
        let mut staged = StagedCluster::new(base, StagingLimits::UNBOUNDED);
        staged.create(cm("tmp", "x")).await.unwrap();
        staged.delete(&key("tmp")).await.unwrap();
        assert!(staged.into_writes().is_empty());
    }

    #[tokio::test]
    async fn staging_is_bounded_in_objects_bytes_and_requests() {
        let base = seeded().await;
        let limits = StagingLimits {
            api_requests: 100,
            staged_objects: 2,
            staged_bytes: 1_000,
        };
        let mut staged = StagedCluster::new(base.clone(), limits);
        staged.create(cm("b", "2")).await.unwrap();
        staged.create(cm("c", "3")).await.unwrap();
        match staged.create(cm("d", "4")).await {
            Err(StagedError::Limit(e)) => assert_eq!(e.limit, StagingLimit::StagedObjects),
            other => panic!("{other:?}"),
        }
        // Re-staging an object already held is not a new object.
        staged.update(cm("c", "33")).await.unwrap();
        match staged.update(cm("c", &"x".repeat(2_000))).await {
            Err(StagedError::Limit(e)) => assert_eq!(e.limit, StagingLimit::StagedBytes),
            other => panic!("{other:?}"),
        }
        let mut staged = StagedCluster::new(
            base,
            StagingLimits {
                api_requests: 3,
                ..limits
            },
        );
        for _ in 0..3 {
            staged.get(&key("a"), "v1").await.unwrap();
        }
        match staged.get(&key("a"), "v1").await {
            Err(StagedError::Limit(e)) => assert_eq!(e.limit, StagingLimit::ApiRequests),
            other => panic!("{other:?}"),
        }
    }
}
