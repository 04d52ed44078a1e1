//! The in-memory backend: a map of objects behind a mutex.

use super::batch::plan;
use super::{
    Cluster, ClusterError, ObjectKey, WATCH_BUFFER, WatchEvent, Write, event_of, labels_match,
    labels_of, notify,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Objects held in memory, with resourceVersions and atomic batches.
pub struct MemoryCluster {
    state: Mutex<State>,
    events: tokio::sync::broadcast::Sender<WatchEvent>,
}

impl Default for MemoryCluster {
    fn default() -> Self {
        MemoryCluster {
            state: Mutex::default(),
            events: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
        }
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<ObjectKey, Value>,
    /// The last resourceVersion handed out; every write takes the next one.
    version: u64,
}

impl MemoryCluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stored object, in key order (for tests and snapshots).
    pub fn objects(&self) -> Vec<Value> {
        self.lock().objects.values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-read; the map
        // itself is only mutated after every check has passed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The current UTC time as RFC 3339 with second precision.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[async_trait::async_trait]
impl Cluster for MemoryCluster {
    async fn get(&self, key: &ObjectKey) -> Result<Value, ClusterError> {
        self.lock()
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ClusterError::NotFound(key.to_string()))
    }

    async fn list(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        // Keys sort by group, kind, namespace, name: the kind (and the
        // namespace) is one contiguous range, not a scan of everything.
        let start = ObjectKey {
            group: group.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: String::new(),
        };
        Ok(self
            .lock()
            .objects
            .range(start..)
            .take_while(|(k, _)| {
                k.group == group
                    && k.kind == kind
                    && (namespace.is_empty() || k.namespace == namespace)
            })
            .filter(|(_, v)| labels_match(v, labels))
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Option<Value>>, ClusterError> {
        let mut state = self.lock();
        let mut version = state.version;
        let now = now_rfc3339();
        let planned = plan(writes, &mut version, &now, |key| {
            Ok(state.objects.get(key).cloned())
        })?;
        state.version = version;
        let events: Vec<WatchEvent> = planned
            .final_states()
            .map(|(key, object)| {
                let labels = match object {
                    Some(object) => labels_of(object),
                    None => state.objects.get(key).map(labels_of).unwrap_or_default(),
                };
                event_of(key, object, labels)
            })
            .collect();
        for (key, object) in planned.final_states() {
            match object {
                Some(object) => state.objects.insert(key.clone(), object.clone()),
                None => state.objects.remove(key),
            };
        }
        notify(&self.events, events);
        Ok(planned.results)
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

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns", "labels": {"app": name}}})
    }

    #[tokio::test]
    async fn versions_increase_and_uid_survives_updates() {
        let c = MemoryCluster::new();
        let created = c
            .apply(vec![Write::Create(cm("a"))])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        let rv1 = resource_version(&created).unwrap().to_string();
        let updated = c
            .apply(vec![Write::Update {
                object: created.clone(),
                expected_version: Some(rv1.clone()),
            }])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        assert_ne!(resource_version(&updated).unwrap(), rv1);
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
        let stale = c
            .apply(vec![Write::Update {
                object: created,
                expected_version: Some(rv1),
            }])
            .await;
        assert!(matches!(stale, Err(ClusterError::Conflict { .. })));
    }

    #[tokio::test]
    async fn a_failing_batch_applies_nothing() {
        let c = MemoryCluster::new();
        c.apply(vec![Write::Create(cm("a"))]).await.unwrap();
        let result = c
            .apply(vec![Write::Create(cm("b")), Write::Create(cm("a"))])
            .await;
        assert!(matches!(result, Err(ClusterError::AlreadyExists(_))));
        assert_eq!(c.objects().len(), 1);
    }

    #[tokio::test]
    async fn list_filters_by_namespace_kind_and_labels() {
        let c = MemoryCluster::new();
        c.apply(vec![Write::Create(cm("a")), Write::Create(cm("b"))])
            .await
            .unwrap();
        let only_a = c
            .list("", "ConfigMap", "ns", &[("app".into(), "a".into())])
            .await
            .unwrap();
        assert_eq!(only_a.len(), 1);
        assert_eq!(
            c.list("", "ConfigMap", "other", &[]).await.unwrap().len(),
            0
        );
        assert_eq!(c.list("", "Secret", "ns", &[]).await.unwrap().len(), 0);
        // Neighbours in key order (another kind before and after, other
        // namespaces on both sides) stay out; "" lists every namespace.
        let in_ns = |kind: &str, ns: &str, name: &str| serde_json::json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": ns}});
        c.apply(vec![
            Write::Create(in_ns("ConfigMap", "a-ns", "x")),
            Write::Create(in_ns("ConfigMap", "zz", "y")),
            Write::Create(in_ns("Binding", "ns", "before")),
            Write::Create(in_ns("Secret", "ns", "after")),
        ])
        .await
        .unwrap();
        assert_eq!(c.list("", "ConfigMap", "ns", &[]).await.unwrap().len(), 2);
        assert_eq!(c.list("", "ConfigMap", "", &[]).await.unwrap().len(), 4);
        assert_eq!(c.list("", "Secret", "", &[]).await.unwrap().len(), 1);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}
