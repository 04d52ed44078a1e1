//! The embedded store: the cluster made durable in a redb database file.
//! Every batch is committed (fsync) before `apply` returns, so a controller
//! killed at any instant restarts from exactly what it had acknowledged.
//!
//! Commits run on the store's own thread, never on the async runtime's
//! workers: a commit waits on the disk (an fsync, a fraction of a
//! millisecond to many), and a worker blocked there is a core's worth of
//! reconciles not run. Batches that arrive while a commit is under way are
//! committed together (group commit): one fsync for many writers, each
//! batch still atomic.

mod label_index;
mod stored;

use super::batch::plan;
use super::memory::now_rfc3339;
use super::{
    Cluster, ClusterError, ObjectKey, WATCH_BUFFER, WatchEvent, Write, event_of, labels_match,
    labels_of, notify,
};
use label_index::{INDEXED_KEY, LABELS, names_with, reindex, split};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Objects by `group/kind/namespace/name`, as JSON bytes.
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// The last resourceVersion handed out.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VERSION_KEY: &str = "resource-version";

/// A cluster in a redb file.
pub struct DurableCluster {
    shared: Arc<Shared>,
    /// The committer thread, joined on drop so that the file is closed
    /// (and can be opened again) once the store is gone.
    committer: Option<std::thread::JoinHandle<()>>,
}

/// What the async side and the committer thread share.
struct Shared {
    db: Database,
    events: tokio::sync::broadcast::Sender<WatchEvent>,
    queue: Mutex<CommitQueue>,
    /// Signalled when a batch is queued or the store closes.
    queued: Condvar,
}

/// A batch waiting for the next group commit.
struct Pending {
    writes: Vec<Write>,
    done: tokio::sync::oneshot::Sender<Result<Vec<Option<Value>>, ClusterError>>,
}

/// Batches waiting to be committed.
#[derive(Default)]
struct CommitQueue {
    pending: Vec<Pending>,
    /// The store is being dropped: commit what is queued, then stop.
    closing: bool,
    /// The committer has stopped: a batch queued now would never commit.
    stopped: bool,
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(format!("embedded store: {e}"))
}

/// The storage key; `/` cannot occur in a Kubernetes group, kind, namespace or name.
fn storage_key(key: &ObjectKey) -> String {
    format!("{}/{}/{}/{}", key.group, key.kind, key.namespace, key.name)
}

/// The label index's prefix for `key`: its storage key without the name.
fn index_prefix(key: &ObjectKey) -> String {
    format!("{}/{}/{}", key.group, key.kind, key.namespace)
}

impl DurableCluster {
    /// Opens (or creates) the store at `path`, and starts its committer
    /// thread.
    pub fn open(path: &Path) -> Result<Self, ClusterError> {
        let db =
            Database::create(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(unavailable)?;
        {
            let objects = txn.open_table(OBJECTS).map_err(unavailable)?;
            let mut meta = txn.open_table(META).map_err(unavailable)?;
            let mut index = txn.open_multimap_table(LABELS).map_err(unavailable)?;
            if meta.get(INDEXED_KEY).map_err(unavailable)?.is_none() {
                // A store written before the label index existed.
                for entry in objects.iter().map_err(unavailable)? {
                    let (key, bytes) = entry.map_err(unavailable)?;
                    if let Some((prefix, name)) = split(key.value()) {
                        let labels = stored::labels(bytes.value());
                        reindex(&mut index, prefix, name, &[], &labels).map_err(unavailable)?;
                    }
                }
                meta.insert(INDEXED_KEY, 1).map_err(unavailable)?;
            }
        }
        txn.commit().map_err(unavailable)?;
        let shared = Arc::new(Shared {
            db,
            events: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
            queue: Mutex::default(),
            queued: Condvar::new(),
        });
        let committer = std::thread::Builder::new()
            .name("weir-store-commit".into())
            .spawn({
                let shared = shared.clone();
                move || shared.commit_until_closed()
            })
            .map_err(|e| unavailable(format!("cannot start the committer thread: {e}")))?;
        Ok(DurableCluster {
            shared,
            committer: Some(committer),
        })
    }
}

impl Drop for DurableCluster {
    fn drop(&mut self) {
        self.shared.lock_queue().closing = true;
        self.shared.queued.notify_one();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

/// Marks the committer stopped when its thread ends, however it ends, and
/// fails what is still queued, so that no writer waits for a commit that
/// will never come.
struct StopGuard<'a>(&'a Shared);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let orphans = {
            let mut queue = self.0.lock_queue();
            queue.stopped = true;
            std::mem::take(&mut queue.pending)
        };
        for pending in orphans {
            let _ = pending
                .done
                .send(Err(unavailable("the store was closed before the commit")));
        }
    }
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, CommitQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The committer thread: commits every batch queued since the last
    /// commit in one transaction, until the store closes.
    fn commit_until_closed(&self) {
        let _stopped = StopGuard(self);
        loop {
            let group = {
                let mut queue = self.lock_queue();
                while queue.pending.is_empty() && !queue.closing {
                    queue = self.queued.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
                if queue.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            self.commit_group(group);
        }
    }

    /// Applies each batch of `group` in one write transaction and commits
    /// once; a batch whose preconditions fail gets its error and writes
    /// nothing, the others go ahead.
    fn commit_group(&self, group: Vec<Pending>) {
        let (batches, waiting): (Vec<_>, Vec<_>) =
            group.into_iter().map(|p| (p.writes, p.done)).unzip();
        let mut outcomes = Vec::with_capacity(batches.len());
        // The last event per key: a key two batches of the group wrote is
        // announced once, in its final state.
        let mut events = BTreeMap::new();
        let committed = (|| -> Result<(), ClusterError> {
            let txn = self.db.begin_write().map_err(unavailable)?;
            {
                let mut objects = txn.open_table(OBJECTS).map_err(unavailable)?;
                let mut meta = txn.open_table(META).map_err(unavailable)?;
                let mut index = txn.open_multimap_table(LABELS).map_err(unavailable)?;
                let mut version = meta
                    .get(VERSION_KEY)
                    .map_err(unavailable)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                let now = now_rfc3339();
                for writes in batches {
                    let planned = plan(writes, &mut version, &now, |key| {
                        let stored = objects
                            .get(storage_key(key).as_str())
                            .map_err(unavailable)?;
                        stored
                            .map(|bytes| stored::identity(bytes.value()))
                            .transpose()
                    });
                    let planned = match planned {
                        Ok(p) => p,
                        Err(e) => {
                            outcomes.push(Err(e));
                            continue;
                        }
                    };
                    for (key, object) in planned.final_states() {
                        let k = storage_key(key);
                        let old = match object {
                            Some(object) => {
                                let bytes = serde_json::to_vec(object).map_err(unavailable)?;
                                objects.insert(k.as_str(), bytes.as_slice())
                            }
                            None => objects.remove(k.as_str()),
                        };
                        let old = old
                            .map_err(unavailable)?
                            .map(|old| stored::labels(old.value()))
                            .unwrap_or_default();
                        let new = object.map(labels_of).unwrap_or_default();
                        reindex(&mut index, &index_prefix(key), &key.name, &old, &new)
                            .map_err(unavailable)?;
                        // A deleted object is announced with the labels it had.
                        let labels = if object.is_some() { new } else { old };
                        events.insert(key.clone(), event_of(key, object, labels));
                    }
                    outcomes.push(Ok(planned.results));
                }
                meta.insert(VERSION_KEY, version).map_err(unavailable)?;
            }
            // Dropping an uncommitted transaction aborts it: an error above
            // leaves the store as it was.
            txn.commit().map_err(unavailable)
        })();
        match committed {
            Ok(()) => {
                notify(&self.events, events.into_values());
                for (done, outcome) in waiting.into_iter().zip(outcomes) {
                    let _ = done.send(outcome);
                }
            }
            Err(e) => {
                for done in waiting {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Value, ClusterError> {
    serde_json::from_slice(bytes)
        .map_err(|e| unavailable(format!("a stored object is not JSON: {e}")))
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
        let txn = self.shared.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(OBJECTS).map_err(unavailable)?;
        match table.get(storage_key(key).as_str()).map_err(unavailable)? {
            Some(bytes) => decode(bytes.value()),
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
        let txn = self.shared.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(OBJECTS).map_err(unavailable)?;
        let wanted = label_pairs_as_stored(labels);
        // Objects without every wanted `"key":"value"` in their stored text
        // cannot match: they are skipped without parsing.
        let matching = |bytes: &[u8]| -> Result<Option<Value>, ClusterError> {
            if !wanted
                .iter()
                .all(|pair| memchr::memmem::find(bytes, pair.as_bytes()).is_some())
            {
                return Ok(None);
            }
            let object = decode(bytes)?;
            Ok(labels_match(&object, labels).then_some(object))
        };
        let mut out = Vec::new();
        match labels.first() {
            // By label in one namespace: only the objects the index names.
            Some((key, value)) if !namespace.is_empty() => {
                let index = txn.open_multimap_table(LABELS).map_err(unavailable)?;
                let prefix = format!("{group}/{kind}/{namespace}");
                for name in names_with(&index, &prefix, key, value).map_err(unavailable)? {
                    let stored = table
                        .get(format!("{prefix}/{name}").as_str())
                        .map_err(unavailable)?;
                    if let Some(bytes) = stored {
                        out.extend(matching(bytes.value())?);
                    }
                }
            }
            _ => {
                let prefix = if namespace.is_empty() {
                    format!("{group}/{kind}/")
                } else {
                    format!("{group}/{kind}/{namespace}/")
                };
                for entry in table.range(prefix.as_str()..).map_err(unavailable)? {
                    let (key, bytes) = entry.map_err(unavailable)?;
                    if !key.value().starts_with(&prefix) {
                        break;
                    }
                    out.extend(matching(bytes.value())?);
                }
            }
        }
        Ok(out)
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Option<Value>>, ClusterError> {
        let (done, result) = tokio::sync::oneshot::channel();
        {
            let mut queue = self.shared.lock_queue();
            if queue.stopped {
                return Err(unavailable("the store's committer has stopped"));
            }
            queue.pending.push(Pending { writes, done });
        }
        self.shared.queued.notify_one();
        result
            .await
            .unwrap_or_else(|_| Err(unavailable("the commit was abandoned")))
    }

    fn watch(&self) -> Option<tokio::sync::broadcast::Receiver<WatchEvent>> {
        Some(self.shared.events.subscribe())
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

    fn names(objects: Vec<Value>) -> Vec<String> {
        objects
            .iter()
            .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    fn app(value: &str) -> Vec<(String, String)> {
        vec![("app".to_string(), value.to_string())]
    }

    /// The names of the ConfigMaps in `namespace` with `labels`.
    async fn listed(
        store: &DurableCluster,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Vec<String> {
        names(
            store
                .list("", "ConfigMap", namespace, labels)
                .await
                .expect("list"),
        )
    }

    #[tokio::test]
    async fn a_selector_follows_relabels_and_deletes_across_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("weir.redb");
        {
            let store = DurableCluster::open(&path).expect("open");
            let created = store
                .apply(vec![
                    Write::Create(cm("a", "1")),
                    Write::Create(cm("b", "1")),
                ])
                .await
                .expect("create");
            let mut relabelled = created[0].clone().expect("stored");
            relabelled["metadata"]["labels"] = json!({"app": "b", "tier": "web"});
            store
                .apply(vec![Write::Update {
                    object: relabelled,
                    expected_version: None,
                }])
                .await
                .expect("relabel");
            assert!(
                listed(&store, "ns", &app("a")).await.is_empty(),
                "a no longer has app=a"
            );
            assert_eq!(listed(&store, "ns", &app("b")).await, vec!["a", "b"]);
            store
                .apply(vec![Write::Delete {
                    key: ObjectKey::new("v1", "ConfigMap", "ns", "b"),
                    expected_version: None,
                }])
                .await
                .expect("delete");
        }
        let store = DurableCluster::open(&path).expect("reopen");
        assert_eq!(listed(&store, "ns", &app("b")).await, vec!["a"]);
        let tier = vec![("tier".to_string(), "web".to_string())];
        assert_eq!(listed(&store, "ns", &tier).await, vec!["a"]);
        assert!(
            listed(&store, "other", &app("b")).await.is_empty(),
            "the index is per namespace"
        );
    }

    #[tokio::test]
    async fn a_store_written_before_the_label_index_is_indexed_when_opened() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("weir.redb");
        {
            // The layout of a store from before the index: objects and
            // meta only.
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            {
                let mut objects = txn.open_table(OBJECTS).expect("objects");
                for name in ["x", "y"] {
                    let mut object = cm(name, "1");
                    object["metadata"]["resourceVersion"] = json!("1");
                    let bytes = serde_json::to_vec(&object).expect("json");
                    objects
                        .insert(format!("/ConfigMap/ns/{name}").as_str(), bytes.as_slice())
                        .expect("insert");
                }
                txn.open_table(META).expect("meta");
            }
            txn.commit().expect("commit");
        }
        let store = DurableCluster::open(&path).expect("open");
        assert_eq!(listed(&store, "ns", &app("y")).await, vec!["y"]);
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
