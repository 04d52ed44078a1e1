//! The embedded store: the cluster made durable in a redb database file.
//! Every batch is committed (fsync) before `apply` returns, so a controller
//! killed at any instant restarts from exactly what it had acknowledged.
//! Batches that arrive while a commit is under way are committed together
//! (group commit): one fsync for many writers, each batch still atomic.

use super::batch::plan;
use super::memory::now_rfc3339;
use super::{
    Cluster, ClusterError, ObjectKey, WATCH_BUFFER, WatchEvent, Write, labels_match, labels_of,
    notify,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Objects by `group/kind/namespace/name`, as JSON bytes.
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// The last resourceVersion handed out.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VERSION_KEY: &str = "resource-version";

/// A cluster in a redb file.
pub struct DurableCluster {
    db: Database,
    events: tokio::sync::broadcast::Sender<WatchEvent>,
    queue: std::sync::Mutex<CommitQueue>,
}

/// A batch waiting for the next group commit.
struct Pending {
    writes: Vec<Write>,
    done: tokio::sync::oneshot::Sender<Result<Vec<Option<Value>>, ClusterError>>,
}

/// Batches waiting to be committed, and whether a commit is under way.
#[derive(Default)]
struct CommitQueue {
    pending: Vec<Pending>,
    committing: bool,
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(format!("embedded store: {e}"))
}

/// The storage key; `/` cannot occur in a Kubernetes group, kind, namespace or name.
fn storage_key(key: &ObjectKey) -> String {
    format!("{}/{}/{}/{}", key.group, key.kind, key.namespace, key.name)
}

impl DurableCluster {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, ClusterError> {
        let db =
            Database::create(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(OBJECTS).map_err(unavailable)?;
        txn.open_table(META).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        Ok(DurableCluster {
            db,
            events: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
            queue: std::sync::Mutex::default(),
        })
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, CommitQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies each batch of `group` in one write transaction and commits
    /// once; a batch whose preconditions fail gets its error and writes
    /// nothing, the others go ahead.
    fn commit_group(&self, group: Vec<Pending>) {
        let mut outcomes = Vec::with_capacity(group.len());
        let mut all_changes = BTreeMap::new();
        let mut deleted_labels = BTreeMap::new();
        let committed = (|| -> Result<(), ClusterError> {
            let txn = self.db.begin_write().map_err(unavailable)?;
            {
                let mut objects = txn.open_table(OBJECTS).map_err(unavailable)?;
                let mut meta = txn.open_table(META).map_err(unavailable)?;
                let mut version = meta
                    .get(VERSION_KEY)
                    .map_err(unavailable)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                let now = now_rfc3339();
                for pending in &group {
                    let planned =
                        plan(
                            pending.writes.clone(),
                            &mut version,
                            &now,
                            |key| match objects
                                .get(storage_key(key).as_str())
                                .map_err(unavailable)?
                            {
                                Some(bytes) => Self::decode(bytes.value()).map(Some),
                                None => Ok(None),
                            },
                        );
                    let planned = match planned {
                        Ok(p) => p,
                        Err(e) => {
                            outcomes.push(Err(e));
                            continue;
                        }
                    };
                    for (key, value) in &planned.changes {
                        let k = storage_key(key);
                        match value {
                            Some(object) => {
                                let bytes = serde_json::to_vec(object).map_err(unavailable)?;
                                objects
                                    .insert(k.as_str(), bytes.as_slice())
                                    .map_err(unavailable)?;
                            }
                            None => {
                                if let Some(old) =
                                    objects.remove(k.as_str()).map_err(unavailable)?
                                {
                                    let labels = Self::decode(old.value())
                                        .map(|o| labels_of(&o))
                                        .unwrap_or_default();
                                    deleted_labels.insert(key.clone(), labels);
                                }
                            }
                        }
                    }
                    outcomes.push(Ok(planned.results));
                    all_changes.extend(planned.changes);
                }
                meta.insert(VERSION_KEY, version).map_err(unavailable)?;
            }
            // Dropping an uncommitted transaction aborts it: an error above
            // leaves the store as it was.
            txn.commit().map_err(unavailable)
        })();
        match committed {
            Ok(()) => {
                notify(&self.events, &all_changes, |key| {
                    deleted_labels.get(key).cloned().unwrap_or_default()
                });
                for (pending, outcome) in group.into_iter().zip(outcomes) {
                    let _ = pending.done.send(outcome);
                }
            }
            Err(e) => {
                for pending in group {
                    let _ = pending.done.send(Err(e.clone()));
                }
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Value, ClusterError> {
        serde_json::from_slice(bytes)
            .map_err(|e| unavailable(format!("a stored object is not JSON: {e}")))
    }
}

/// Each label pair as it appears in an object stored by this store
/// (compact JSON, as `serde_json::to_vec` writes it): `"key":"value"`.
fn label_pairs_as_stored(labels: &[(String, String)]) -> Vec<String> {
    labels
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), Value::from(v.as_str())))
        .collect()
}

#[async_trait::async_trait]
impl Cluster for DurableCluster {
    async fn get(&self, key: &ObjectKey) -> Result<Value, ClusterError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(OBJECTS).map_err(unavailable)?;
        match table.get(storage_key(key).as_str()).map_err(unavailable)? {
            Some(bytes) => Self::decode(bytes.value()),
            None => Err(ClusterError::NotFound(key.to_string())),
        }
    }

    async fn list(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(OBJECTS).map_err(unavailable)?;
        let prefix = if namespace.is_empty() {
            format!("{group}/{kind}/")
        } else {
            format!("{group}/{kind}/{namespace}/")
        };
        let wanted = label_pairs_as_stored(labels);
        let mut out = Vec::new();
        for entry in table.range(prefix.as_str()..).map_err(unavailable)? {
            let (key, bytes) = entry.map_err(unavailable)?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            // Objects without every wanted `"key":"value"` in their stored
            // text cannot match: skip them without parsing (a selector
            // over a namespace of thousands decodes only its matches).
            if !wanted
                .iter()
                .all(|pair| memchr::memmem::find(bytes.value(), pair.as_bytes()).is_some())
            {
                continue;
            }
            let object = Self::decode(bytes.value())?;
            if labels_match(&object, labels) {
                out.push(object);
            }
        }
        Ok(out)
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Option<Value>>, ClusterError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let lead = {
            let mut queue = self.lock_queue();
            queue.pending.push(Pending { writes, done });
            !std::mem::replace(&mut queue.committing, true)
        };
        if lead {
            // Group commit: whoever finds no commit under way commits every
            // batch queued meanwhile in one transaction (one fsync), each
            // batch still all-or-nothing, and acknowledges each after the
            // commit. There is no await in this loop, so it cannot be
            // abandoned half-way and leave the queue without a committer.
            loop {
                let group = {
                    let mut queue = self.lock_queue();
                    if queue.pending.is_empty() {
                        queue.committing = false;
                        break;
                    }
                    std::mem::take(&mut queue.pending)
                };
                self.commit_group(group);
            }
        }
        result
            .await
            .unwrap_or_else(|_| Err(unavailable("the commit was abandoned")))
    }

    fn watch(&self) -> Option<tokio::sync::broadcast::Receiver<WatchEvent>> {
        Some(self.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::resource_version;
    use serde_json::json;

    fn cm(name: &str, v: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns", "labels": {"app": name}}, "data": {"v": v}})
    }

    #[tokio::test]
    async fn an_object_it_could_not_read_back_is_never_written() {
        let dir = tempfile::tempdir().expect("dir");
        let store = DurableCluster::open(&dir.path().join("weir.redb")).expect("open");
        // 120 levels: serde_json could write it but not read it back (128
        // with the levels around it), so every list of its kind would fail.
        let mut deep = json!({});
        for _ in 0..120 {
            deep = json!({ "x": deep });
        }
        let mut object = cm("deep", "1");
        object["data"] = deep;
        let error = store
            .apply(vec![Write::Create(cm("ok", "1")), Write::Create(object)])
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("levels of nesting"), "{error}");
        let mut huge = cm("huge", "1");
        huge["data"]["v"] = json!("x".repeat(2 << 20));
        assert!(store.apply(vec![Write::Create(huge)]).await.is_err());
        assert!(
            store
                .list("", "ConfigMap", "ns", &[])
                .await
                .expect("list")
                .is_empty(),
            "nothing of either batch landed, and the kind still lists"
        );
    }

    #[tokio::test]
    async fn a_label_selector_matches_labels_not_text_elsewhere() {
        let dir = tempfile::tempdir().expect("dir");
        let store = DurableCluster::open(&dir.path().join("weir.redb")).expect("open");
        let mut decoy = cm("decoy", "1");
        // The pair appears in the text, but not as a label.
        decoy["data"] = json!({"app.kubernetes.io/name": "shop \"a\""});
        let mut labelled = cm("labelled", "1");
        labelled["metadata"]["labels"] =
            json!({"app.kubernetes.io/name": "shop \"a\"", "tier": "web"});
        store
            .apply(vec![Write::Create(decoy), Write::Create(labelled)])
            .await
            .expect("create");
        let names = |objects: Vec<Value>| -> Vec<String> {
            objects
                .iter()
                .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        };
        let by = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let found = store
            .list(
                "",
                "ConfigMap",
                "ns",
                &by(&[("app.kubernetes.io/name", "shop \"a\"")]),
            )
            .await
            .expect("list");
        assert_eq!(names(found), vec!["labelled"]);
        let none = store
            .list(
                "",
                "ConfigMap",
                "ns",
                &by(&[("app.kubernetes.io/name", "shop \"a\""), ("tier", "db")]),
            )
            .await
            .expect("list");
        assert!(none.is_empty());
        let all = store.list("", "ConfigMap", "ns", &[]).await.expect("list");
        assert_eq!(names(all), vec!["decoy", "labelled"]);
    }

    #[tokio::test]
    async fn survives_reopening_with_versions_intact() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("weir.redb");
        let rv = {
            let store = DurableCluster::open(&path).expect("open");
            store
                .apply(vec![
                    Write::Create(cm("a", "1")),
                    Write::Create(cm("b", "2")),
                ])
                .await
                .expect("apply");
            let a = store
                .get(&ObjectKey::new("v1", "ConfigMap", "ns", "a"))
                .await
                .expect("get");
            resource_version(&a).expect("rv").to_string()
        };
        let store = DurableCluster::open(&path).expect("reopen");
        let a = store
            .get(&ObjectKey::new("v1", "ConfigMap", "ns", "a"))
            .await
            .expect("get after reopen");
        assert_eq!(resource_version(&a), Some(rv.as_str()));
        assert_eq!(
            store
                .list("", "ConfigMap", "ns", &[])
                .await
                .expect("list")
                .len(),
            2
        );
        let written = store
            .apply(vec![Write::Create(cm("c", "3"))])
            .await
            .expect("apply")
            .remove(0)
            .expect("stored");
        let next: u64 = resource_version(&written)
            .and_then(|v| v.parse().ok())
            .expect("numeric");
        assert!(
            next > rv.parse::<u64>().expect("numeric"),
            "versions keep increasing across restarts"
        );
    }

    #[tokio::test]
    async fn a_failing_batch_leaves_the_store_unchanged() {
        let dir = tempfile::tempdir().expect("dir");
        let store = DurableCluster::open(&dir.path().join("weir.redb")).expect("open");
        store
            .apply(vec![Write::Create(cm("a", "1"))])
            .await
            .expect("apply");
        let stale = Write::Update {
            object: cm("a", "x"),
            expected_version: Some("999".into()),
        };
        let result = store.apply(vec![Write::Create(cm("b", "2")), stale]).await;
        assert!(matches!(result, Err(ClusterError::Conflict { .. })));
        assert!(
            store
                .get(&ObjectKey::new("v1", "ConfigMap", "ns", "b"))
                .await
                .is_err(),
            "b was not created"
        );
        let only_a = store
            .list("", "ConfigMap", "ns", &[("app".into(), "a".into())])
            .await
            .expect("list");
        assert_eq!(only_a.len(), 1);
        assert_eq!(only_a[0]["data"]["v"], "1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_commit_together_each_all_or_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let store =
            std::sync::Arc::new(DurableCluster::open(&dir.path().join("w.redb")).expect("open"));
        store
            .apply(vec![Write::Create(cm("base", "0"))])
            .await
            .expect("base");
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 16 == 0 {
                    // A stale update alongside a create: the whole batch fails.
                    store
                        .apply(vec![
                            Write::Create(cm(&format!("doomed{i}"), "x")),
                            Write::Update {
                                object: cm("base", "y"),
                                expected_version: Some("0".into()),
                            },
                        ])
                        .await
                } else {
                    store
                        .apply(vec![Write::Create(cm(&format!("c{i}"), "1"))])
                        .await
                }
            }));
        }
        let mut versions = std::collections::BTreeSet::new();
        for (i, task) in tasks.into_iter().enumerate() {
            let result = task.await.expect("task");
            if i % 16 == 0 {
                assert!(
                    matches!(result, Err(ClusterError::Conflict { .. })),
                    "{result:?}"
                );
            } else {
                let stored = result.expect("created").remove(0).expect("object");
                versions.insert(resource_version(&stored).expect("rv").to_string());
            }
        }
        assert_eq!(
            versions.len(),
            60,
            "every acknowledged write has its own version"
        );
        let all = store.list("", "ConfigMap", "ns", &[]).await.expect("list");
        assert_eq!(
            all.len(),
            61,
            "60 creates and the base; no doomed batch left anything"
        );
        assert!(all.iter().all(|o| {
            !o["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("doomed")
        }));
        drop(store);
        let reopened = DurableCluster::open(&dir.path().join("w.redb")).expect("reopen");
        assert_eq!(
            reopened
                .list("", "ConfigMap", "ns", &[])
                .await
                .expect("list")
                .len(),
            61
        );
    }
}
