//! The `Cluster` abstraction: Kubernetes-style objects as JSON, with
//! resourceVersions and optimistic concurrency.
//!
//! The controller and the plugins' `cluster` import both go through it. This
//! module holds the trait and the object identity types; `memory` is the
//! in-memory backend, `durable` the embedded store (redb), `batch` the
//! batch semantics both share, and `staged` the per-call overlay that
//! makes a plugin's writes all-or-nothing.

pub(crate) mod batch;
pub(crate) mod document;
pub(crate) mod durable;
pub mod kubernetes;
pub mod manifests;
pub(crate) mod memory;
pub(crate) mod patch;
pub(crate) mod remote;
pub(crate) mod staged;
pub(crate) mod watch_cache;

use serde_json::Value;

pub use durable::DurableCluster;
pub use kubernetes::KubeCluster;
pub use memory::MemoryCluster;
pub use remote::RemoteCluster;
pub use staged::{StagedCluster, StagedError, StagingExceeded, StagingLimit, StagingLimits};

/// Identifies one object: its group (not version), kind, namespace and name.
///
/// Two apiVersions of one group (`networking.istio.io/v1alpha3` and `/v1beta1`)
/// name the same stored object, as on a real API server.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectKey {
    /// API group, empty for the core group.
    pub group: String,
    /// Kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key from an apiVersion (`group/version` or `version`) and the rest.
    pub fn new(api_version: &str, kind: &str, namespace: &str, name: &str) -> Self {
        ObjectKey {
            group: group_of(api_version).to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Reads the key out of an object's `apiVersion`, `kind` and `metadata`.
    pub fn of(object: &Value) -> Result<Self, ClusterError> {
        let field = |path: &[&str]| -> Option<&str> {
            let mut v = object;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str()
        };
        let api_version = field(&["apiVersion"])
            .ok_or_else(|| ClusterError::Invalid("object has no string `apiVersion`".into()))?;
        let kind = field(&["kind"])
            .ok_or_else(|| ClusterError::Invalid("object has no string `kind`".into()))?;
        let name = field(&["metadata", "name"])
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ClusterError::Invalid(format!("{kind} has no `metadata.name`")))?;
        let namespace = field(&["metadata", "namespace"]).unwrap_or("");
        Ok(ObjectKey::new(api_version, kind, namespace, name))
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        if self.namespace.is_empty() {
            write!(f, "{}{group} {}", self.kind, self.name)
        } else {
            write!(f, "{}{group} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The group part of an apiVersion: `apps/v1` → `apps`, `v1` → ``.
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// The stored resourceVersion of an object, if any.
pub fn resource_version(object: &Value) -> Option<&str> {
    object
        .get("metadata")?
        .get("resourceVersion")?
        .as_str()
        .filter(|rv| !rv.is_empty())
}

/// A write in an atomic batch. Preconditions are checked for the whole batch
/// before anything is applied.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Write {
    /// Create; fails with `AlreadyExists` if the object exists.
    Create(Value),
    /// Replace; when `expected_version` is set the stored version must match.
    Update {
        /// The new object.
        object: Value,
        /// The resourceVersion the writer based its change on.
        expected_version: Option<String>,
    },
    /// Delete; when `expected_version` is set the stored version must match.
    Delete {
        /// The object to delete.
        key: ObjectKey,
        /// The resourceVersion the writer based its change on.
        expected_version: Option<String>,
    },
}

impl Write {
    /// An update of `object` conditional on the version it was read at
    /// (its `metadata.resourceVersion`): a read-modify-write that fails
    /// with `Conflict` when someone wrote in between.
    pub fn update_as_read(object: Value) -> Write {
        let expected_version = resource_version(&object).map(str::to_string);
        Write::Update {
            object,
            expected_version,
        }
    }
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "camelCase")]
pub enum ClusterError {
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The object exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The stored resourceVersion is not the one the writer expected.
    #[error(
        "conflict on {key}: expected resourceVersion {expected}, stored {actual}; read it again and retry"
    )]
    Conflict {
        /// The object.
        key: String,
        /// What the writer expected.
        expected: String,
        /// What is stored.
        actual: String,
    },
    /// The object or request is malformed.
    #[error("invalid object: {0}")]
    Invalid(String),
    /// The backend refused: the controller lacks a permission.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The backend refused for now (an eviction a PodDisruptionBudget
    /// does not allow yet); the operation may be retried later.
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// The backend failed (I/O, network); the operation may be retried.
    #[error("cluster backend unavailable: {0}")]
    Unavailable(String),
    /// A batch on a backend without transactions (Kubernetes) failed part
    /// way: some writes had landed. Says exactly which, and which of those
    /// were undone.
    #[error(
        "{failed} failed ({cause}) after {} of the batch's writes had landed{}{}",
        landed.len(),
        list_suffix("; undone since", undone),
        list_suffix("; still in place (could not be undone safely)", kept)
    )]
    PartiallyApplied {
        /// The write that failed, e.g. `update VirtualService shop/checkout`.
        failed: String,
        /// Why it failed.
        cause: String,
        /// The writes that had landed, in order.
        landed: Vec<String>,
        /// Those undone again.
        undone: Vec<String>,
        /// Those still in place.
        kept: Vec<String>,
    },
}

fn list_suffix(label: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("{label}: {}", items.join(", "))
    }
}

/// A store of Kubernetes-style objects.
///
/// Implementations keep `metadata.resourceVersion` (bumped on every write),
/// `metadata.uid` and `metadata.creationTimestamp`, and apply a batch of
/// writes atomically: all of them, or none.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    /// Reads one object.
    async fn get(&self, key: &ObjectKey) -> Result<Value, ClusterError>;

    /// Lists the objects of `group`/`kind` in `namespace` whose labels match
    /// every `(key, value)` in `labels`.
    async fn list(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError>;

    /// Reads one object as `api_version` (`group/version`) serves it. A
    /// backend that serves several versions of a kind (Kubernetes) reads
    /// that one, so a plugin gets the version it asked for; the local
    /// stores keep one version per object and read it.
    async fn get_at(&self, key: &ObjectKey, api_version: &str) -> Result<Value, ClusterError> {
        let _ = api_version;
        self.get(key).await
    }

    /// [`Self::list`] of the kind as `api_version` serves it (see [`Self::get_at`]).
    async fn list_at(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        self.list(group_of(api_version), kind, namespace, labels)
            .await
    }

    /// Applies `writes` atomically and returns the stored objects (`None` for deletes).
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Option<Value>>, ClusterError>;

    /// [`Self::apply`] for a caller with a deadline (a plugin call's
    /// commit): no write starts after `deadline`. The local backends commit
    /// a batch in one transaction, so they only refuse to start late; a
    /// backend that writes one object at a time checks between writes.
    async fn apply_before(
        &self,
        writes: Vec<Write>,
        deadline: std::time::Instant,
    ) -> Result<Vec<Option<Value>>, ClusterError> {
        if std::time::Instant::now() >= deadline {
            return Err(ClusterError::Unavailable(
                "the call's deadline passed before its writes could be committed; nothing was written".into(),
            ));
        }
        self.apply(writes).await
    }

    /// Evicts a Pod: the API server's Eviction subresource, which honours
    /// PodDisruptionBudgets (`TooManyRequests` when one does not allow it
    /// yet). The local stores, with no budgets, delete it.
    async fn evict(&self, key: &ObjectKey) -> Result<(), ClusterError> {
        self.apply(vec![Write::Delete {
            key: key.clone(),
            expected_version: None,
        }])
        .await
        .map(|_| ())
    }

    /// Subscribes to changes: one event per object a committed batch
    /// touched, sent after the commit. `None` when the backend cannot watch
    /// (the controller then falls back to periodic resyncs). A receiver that
    /// lags loses events and must resync by listing.
    fn watch(&self) -> Option<tokio::sync::broadcast::Receiver<WatchEvent>> {
        None
    }
}

/// A committed change to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The object.
    pub key: ObjectKey,
    /// Its labels after the change (before it, for deletes).
    pub labels: Vec<(String, String)>,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Its resourceVersion after the change (`None` for deletes), so a
    /// writer can recognise the echo of its own write.
    pub resource_version: Option<String>,
}

/// How many events a slow watcher may fall behind before it must resync.
/// A resync lists every Rollout (and the simulated readiness every
/// ReplicaSet), so it costs as much as the fleet is large: at 4,096 the
/// first deploy of 10,000 rollouts fell behind again and again and took
/// 107 s; at 32,768 it never lags after the initial apply and takes 25 s
/// (docs/benchmarks.md). The price is the slots, allocated once: 1,000
/// rollouts took 94.1 MiB in all after the change, 84–88 MiB before.
pub(crate) const WATCH_BUFFER: usize = 1 << 15;

/// The watch event for `key`'s change to `object` (`None`: deleted),
/// with `labels`: the object's, or for a delete the labels it had.
pub(crate) fn event_of(
    key: &ObjectKey,
    object: Option<&Value>,
    labels: Vec<(String, String)>,
) -> WatchEvent {
    WatchEvent {
        key: key.clone(),
        labels,
        deleted: object.is_none(),
        resource_version: object.and_then(resource_version).map(str::to_string),
    }
}

/// Sends `events`, after their commit (ignored when nobody watches).
pub(crate) fn notify(
    events: &tokio::sync::broadcast::Sender<WatchEvent>,
    changes: impl IntoIterator<Item = WatchEvent>,
) {
    if events.receiver_count() == 0 {
        return;
    }
    for event in changes {
        let _ = events.send(event);
    }
}

/// An object's labels as pairs.
pub fn labels_of(object: &Value) -> Vec<(String, String)> {
    string_pairs_at(object, "/metadata/labels")
}

/// The string entries of the map at `pointer` (labels, `matchLabels`) as
/// pairs; none when there is no map there.
pub fn string_pairs_at(object: &Value, pointer: &str) -> Vec<(String, String)> {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The RFC 3339 time at `pointer` (`/metadata/creationTimestamp`), in
/// UTC; none when absent or unreadable.
pub fn time_at(object: &Value, pointer: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Parses a label selector of the form `a=b,c=d` (also `a==b`).
pub fn parse_label_selector(selector: &str) -> Result<Vec<(String, String)>, ClusterError> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .map(|term| {
            let (k, v) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| {
                    ClusterError::Invalid(format!(
                        "label selector term {term:?} is not `key=value` (only equality selectors are supported)"
                    ))
                })?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Whether `object`'s labels include every pair in `labels`.
pub fn labels_match(object: &Value, labels: &[(String, String)]) -> bool {
    let have = object.get("metadata").and_then(|m| m.get("labels"));
    labels
        .iter()
        .all(|(k, v)| have.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v.as_str()))
}
