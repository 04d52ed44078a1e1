//! The Kubernetes backend's read cache: every object of a watched kind, as
//! its watch last delivered it, so a steady-state reconcile reads the
//! Rollout, its ReplicaSets and its runs without a request to the API server
//! (the role an informer's store plays in client-go, and kube-runtime's
//! `reflector` in kube-rs).
//!
//! kube-runtime's `reflector::Store` is not used because the cache needs two
//! things it does not do: writes this process made are put in at once
//! (read-your-writes, so the next pass does not act on what it already
//! changed), and an event older than what is held never replaces it (a
//! watch event for a version this process has already written past).
//! Versions are compared as the integers every API server writes (etcd's
//! revision); when one is not an integer, the newest arrival wins.
//!
//! A kind is served from here only while its watch is in sync: from the end
//! of its first list until the watch breaks, and again once it has resumed
//! or re-listed. Otherwise, and for kinds, namespaces or versions nobody
//! watches, reads go to the server. A stale read costs at most a
//! version conflict on the write that follows, which the controller retries
//! from fresh state.

use super::{ClusterError, ObjectKey, labels_match, resource_version};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;

/// (group, kind).
type KindKey = (String, String);
/// (namespace, name).
type NameKey = (String, String);

/// The objects of the watched kinds.
#[derive(Default)]
pub(crate) struct WatchCache {
    kinds: RwLock<HashMap<KindKey, KindCache>>,
    /// Kinds whose watch the server refused (403): always read from it.
    refused: RwLock<HashSet<KindKey>>,
}

/// One watched kind.
struct KindCache {
    /// The namespace watched; `""` for all.
    namespace: String,
    /// The apiVersion objects are held at (what the watch asked for).
    api_version: String,
    /// Whether reads may be answered from `objects`.
    synced: bool,
    objects: BTreeMap<NameKey, Value>,
    /// A re-list under way: the objects listed so far, swapped in at its end.
    relisting: Option<BTreeMap<NameKey, Value>>,
    /// Objects this process deleted, with the version they had: a late
    /// event for that version must not bring them back.
    deleted: HashMap<NameKey, u64>,
    /// Objects a write found newer on the server than here: read from the
    /// server until a newer version arrives.
    distrusted: HashSet<NameKey>,
}

/// What a watch delivered.
pub(crate) enum Delivered {
    /// A re-list starts.
    ListStarted,
    /// An object of the re-list.
    Listed(Value),
    /// The re-list is complete: it replaces what was held.
    ListDone,
    /// An object was created or changed.
    Applied(Value),
    /// An object was deleted.
    Deleted(Value),
    /// The watch broke; it will resume or re-list.
    Broken,
}

fn version_number(object: &Value) -> Option<u64> {
    resource_version(object)?.parse().ok()
}

fn name_key(object: &Value) -> Option<NameKey> {
    let metadata = object.get("metadata")?;
    let name = metadata.get("name")?.as_str()?;
    let namespace = metadata
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some((namespace.to_string(), name.to_string()))
}

/// How `candidate`'s version compares with `held`'s; `None` when either is
/// not an integer (then the newest arrival wins).
fn compare(candidate: &Value, held: &Value) -> Option<std::cmp::Ordering> {
    Some(version_number(candidate)?.cmp(&version_number(held)?))
}

impl KindCache {
    fn covers(&self, namespace: &str) -> bool {
        self.namespace.is_empty() || self.namespace == namespace
    }

    fn serves(&self, namespace: &str, api_version: Option<&str>) -> bool {
        self.synced
            && self.covers(namespace)
            && api_version.is_none_or(|wanted| wanted == self.api_version)
    }

    /// Puts `object` in unless something newer is held or this process
    /// deleted that version.
    fn upsert(&mut self, object: Value) {
        let Some(key) = name_key(&object) else {
            return;
        };
        if let (Some(gone_at), Some(version)) = (self.deleted.get(&key), version_number(&object))
            && version <= *gone_at
        {
            return;
        }
        self.deleted.remove(&key);
        let order = self
            .objects
            .get(&key)
            .and_then(|held| compare(&object, held));
        match order {
            Some(std::cmp::Ordering::Less) => {}
            Some(std::cmp::Ordering::Equal) if self.distrusted.contains(&key) => {}
            _ => {
                self.distrusted.remove(&key);
                self.objects.insert(key, object);
            }
        }
    }
}

impl WatchCache {
    /// Starts caching `group`/`kind` in `namespace` (`""`: all) at
    /// `api_version`; nothing is served until its first list is complete.
    /// False when the kind is cached already or its watch was refused.
    pub(crate) fn watch(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        api_version: &str,
    ) -> bool {
        let key = (group.to_string(), kind.to_string());
        if self
            .refused
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return false;
        }
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        if kinds.contains_key(&key) {
            return false;
        }
        kinds.insert(
            (group.to_string(), kind.to_string()),
            KindCache {
                namespace: namespace.to_string(),
                api_version: api_version.to_string(),
                synced: false,
                objects: BTreeMap::new(),
                relisting: None,
                deleted: HashMap::new(),
                distrusted: HashSet::new(),
            },
        );
        true
    }

    /// Whether `group`/`kind` is cached, or was refused.
    pub(crate) fn knows(&self, group: &str, kind: &str) -> bool {
        let key = (group.to_string(), kind.to_string());
        self.kinds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
            || self
                .refused
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
    }

    /// Stops caching `group`/`kind` for good: the server refused its watch.
    pub(crate) fn refuse(&self, group: &str, kind: &str) {
        let key = (group.to_string(), kind.to_string());
        self.kinds
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.refused
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
    }

    /// Applies what `group`/`kind`'s watch delivered.
    pub(crate) fn deliver(&self, group: &str, kind: &str, delivered: Delivered) {
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        let Some(cache) = kinds.get_mut(&(group.to_string(), kind.to_string())) else {
            return;
        };
        match delivered {
            Delivered::ListStarted => cache.relisting = Some(BTreeMap::new()),
            Delivered::Listed(object) => {
                if let (Some(listing), Some(key)) = (cache.relisting.as_mut(), name_key(&object)) {
                    listing.insert(key, object);
                }
            }
            Delivered::ListDone => {
                if let Some(listing) = cache.relisting.take() {
                    cache.objects = listing;
                }
                cache.deleted.clear();
                cache.distrusted.clear();
                cache.synced = true;
            }
            Delivered::Applied(object) => {
                cache.upsert(object);
                // A resumed watch delivers every change since the version it
                // resumed from, in order.
                cache.synced = cache.relisting.is_none();
            }
            Delivered::Deleted(object) => {
                if let Some(key) = name_key(&object) {
                    cache.objects.remove(&key);
                    cache.deleted.remove(&key);
                    cache.distrusted.remove(&key);
                }
                cache.synced = cache.relisting.is_none();
            }
            Delivered::Broken => cache.synced = false,
        }
    }

    /// Records a write this process made, or an object just read from the
    /// server (`None`: `key` was deleted). Either is the server's own
    /// answer, so a distrusted copy of it is trusted again.
    pub(crate) fn wrote(&self, key: &ObjectKey, object: Option<&Value>) {
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        let Some(cache) = kinds.get_mut(&(key.group.clone(), key.kind.clone())) else {
            return;
        };
        if !cache.covers(&key.namespace) {
            return;
        }
        match object {
            Some(object) => {
                // Held at the watched version only: another version's shape
                // would be served as this one's.
                if object.get("apiVersion").and_then(Value::as_str) == Some(&cache.api_version) {
                    cache
                        .distrusted
                        .remove(&(key.namespace.clone(), key.name.clone()));
                    cache.upsert(object.clone());
                }
            }
            None => {
                let name = (key.namespace.clone(), key.name.clone());
                if let Some(held) = cache.objects.remove(&name)
                    && let Some(version) = version_number(&held)
                {
                    cache.deleted.insert(name, version);
                }
            }
        }
    }

    /// Stops answering for `key` until a newer version than the one held
    /// arrives (by its watch, or a read from the server): a write found the
    /// server ahead of the cache, and a retry must not be based on the same
    /// stale copy.
    pub(crate) fn distrust(&self, key: &ObjectKey) {
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        if let Some(cache) = kinds.get_mut(&(key.group.clone(), key.kind.clone()))
            && cache.covers(&key.namespace)
        {
            cache
                .distrusted
                .insert((key.namespace.clone(), key.name.clone()));
        }
    }

    /// `key` as cached, or `None` when the cache cannot answer (not watched,
    /// not in sync, another namespace or version): ask the server.
    pub(crate) fn get(
        &self,
        key: &ObjectKey,
        api_version: Option<&str>,
    ) -> Option<Result<Value, ClusterError>> {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        let cache = kinds.get(&(key.group.clone(), key.kind.clone()))?;
        if !cache.serves(&key.namespace, api_version) {
            return None;
        }
        let name = (key.namespace.clone(), key.name.clone());
        if cache.distrusted.contains(&name) {
            return None;
        }
        Some(
            cache
                .objects
                .get(&name)
                .cloned()
                .ok_or_else(|| ClusterError::NotFound(format!("get {key}"))),
        )
    }

    /// The cached objects of `group`/`kind` in `namespace` (`""`: all)
    /// carrying `labels`, in namespace and name order; `None` when the cache
    /// cannot answer.
    pub(crate) fn list(
        &self,
        group: &str,
        kind: &str,
        api_version: Option<&str>,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Option<Vec<Value>> {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        let cache = kinds.get(&(group.to_string(), kind.to_string()))?;
        if !cache.serves(namespace, api_version) {
            return None;
        }
        let matching = |object: &&Value| labels_match(object, labels);
        let found = if namespace.is_empty() {
            cache.objects.values().filter(matching).cloned().collect()
        } else {
            let start = (namespace.to_string(), String::new());
            cache
                .objects
                .range(start..)
                .take_while(|((ns, _), _)| ns == namespace)
                .map(|(_, object)| object)
                .filter(matching)
                .cloned()
                .collect()
        };
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(name: &str, version: &str, app: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": version,
                         "labels": {"app": app}},
        })
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("apps/v1", "ReplicaSet", "shop", name)
    }

    fn synced_cache() -> WatchCache {
        let cache = WatchCache::default();
        assert!(cache.watch("apps", "ReplicaSet", "", "apps/v1"));
        cache.deliver("apps", "ReplicaSet", Delivered::ListStarted);
        cache.deliver("apps", "ReplicaSet", Delivered::Listed(rs("a", "5", "x")));
        cache.deliver("apps", "ReplicaSet", Delivered::ListDone);
        cache
    }

    fn version_of(cache: &WatchCache, name: &str) -> Option<String> {
        match cache.get(&key(name), None) {
            Some(Ok(object)) => resource_version(&object).map(str::to_string),
            _ => None,
        }
    }

    #[test]
    fn nothing_is_served_before_the_first_list_completes_or_while_the_watch_is_broken() {
        let cache = WatchCache::default();
        assert!(cache.watch("apps", "ReplicaSet", "", "apps/v1"));
        assert!(!cache.watch("apps", "ReplicaSet", "", "apps/v1"), "once");
        assert!(cache.get(&key("a"), None).is_none());
        cache.deliver("apps", "ReplicaSet", Delivered::ListStarted);
        cache.deliver("apps", "ReplicaSet", Delivered::Listed(rs("a", "5", "x")));
        assert!(cache.get(&key("a"), None).is_none(), "mid-list");
        cache.deliver("apps", "ReplicaSet", Delivered::ListDone);
        assert_eq!(version_of(&cache, "a").as_deref(), Some("5"));
        assert!(matches!(
            cache.get(&key("b"), None),
            Some(Err(ClusterError::NotFound(_)))
        ));
        cache.deliver("apps", "ReplicaSet", Delivered::Broken);
        assert!(cache.get(&key("a"), None).is_none(), "broken watch");
        cache.deliver("apps", "ReplicaSet", Delivered::Applied(rs("a", "6", "x")));
        assert_eq!(version_of(&cache, "a").as_deref(), Some("6"), "resumed");
    }

    #[test]
    fn other_versions_namespaces_and_kinds_go_to_the_server() {
        let cache = WatchCache::default();
        assert!(cache.watch("", "ConfigMap", "weir-system", "v1"));
        cache.deliver("", "ConfigMap", Delivered::ListStarted);
        cache.deliver("", "ConfigMap", Delivered::ListDone);
        let config = ObjectKey::new("v1", "ConfigMap", "weir-system", "argo-rollouts-config");
        assert!(cache.get(&config, None).is_some());
        assert!(cache.get(&config, Some("v1")).is_some());
        let elsewhere = ObjectKey::new("v1", "ConfigMap", "shop", "argo-rollouts-config");
        assert!(cache.get(&elsewhere, None).is_none());
        assert!(cache.list("", "ConfigMap", None, "", &[]).is_none());
        let synced = synced_cache();
        assert!(synced.get(&key("a"), Some("apps/v1beta2")).is_none());
        assert!(
            synced
                .get(&ObjectKey::new("v1", "Service", "shop", "a"), None)
                .is_none()
        );
    }

    #[test]
    fn own_writes_are_read_back_and_late_events_never_go_back_in_time() {
        let cache = synced_cache();
        cache.wrote(&key("a"), Some(&rs("a", "9", "x")));
        assert_eq!(version_of(&cache, "a").as_deref(), Some("9"));
        // The watch catches up: the event for 7 arrives after the write of 9.
        cache.deliver("apps", "ReplicaSet", Delivered::Applied(rs("a", "7", "x")));
        assert_eq!(version_of(&cache, "a").as_deref(), Some("9"));
        cache.deliver("apps", "ReplicaSet", Delivered::Applied(rs("a", "10", "x")));
        assert_eq!(version_of(&cache, "a").as_deref(), Some("10"));
        // Deleted here: a late event for the deleted version does not bring
        // it back; a re-creation (newer version) does.
        cache.wrote(&key("a"), None);
        cache.deliver("apps", "ReplicaSet", Delivered::Applied(rs("a", "10", "x")));
        assert!(matches!(
            cache.get(&key("a"), None),
            Some(Err(ClusterError::NotFound(_)))
        ));
        cache.deliver("apps", "ReplicaSet", Delivered::Applied(rs("a", "12", "x")));
        assert_eq!(version_of(&cache, "a").as_deref(), Some("12"));
        // A write at another apiVersion is not held as this one.
        let mut beta = rs("a", "13", "x");
        beta["apiVersion"] = json!("apps/v1beta2");
        cache.wrote(&key("a"), Some(&beta));
        assert_eq!(version_of(&cache, "a").as_deref(), Some("12"));
    }

    #[test]
    fn a_refused_watch_is_never_started_again_and_its_reads_go_to_the_server() {
        let cache = synced_cache();
        cache.refuse("apps", "ReplicaSet");
        assert!(cache.knows("apps", "ReplicaSet"));
        assert!(cache.get(&key("a"), None).is_none());
        assert!(!cache.watch("apps", "ReplicaSet", "", "apps/v1"));
        assert!(!cache.knows("", "Service"));
    }

    #[test]
    fn after_a_conflict_the_object_is_read_from_the_server_until_a_newer_version_arrives() {
        let cache = synced_cache();
        cache.distrust(&key("a"));
        assert!(cache.get(&key("a"), None).is_none());
        // The same version again (a late event) does not restore trust.
        cache.deliver("apps", "ReplicaSet", Delivered::Applied(rs("a", "5", "x")));
        assert!(cache.get(&key("a"), None).is_none());
        cache.wrote(&key("a"), Some(&rs("a", "6", "x")));
        assert_eq!(version_of(&cache, "a").as_deref(), Some("6"));
        cache.distrust(&key("a"));
        cache.deliver("apps", "ReplicaSet", Delivered::Applied(rs("a", "7", "x")));
        assert_eq!(version_of(&cache, "a").as_deref(), Some("7"));
    }

    #[test]
    fn a_relist_replaces_everything_held_and_lists_filter_by_namespace_and_labels() {
        let cache = synced_cache();
        for (name, app) in [("b", "x"), ("c", "y")] {
            cache.deliver("apps", "ReplicaSet", Delivered::Applied(rs(name, "8", app)));
        }
        let mut other = rs("d", "8", "x");
        other["metadata"]["namespace"] = json!("zoo");
        cache.deliver("apps", "ReplicaSet", Delivered::Applied(other));
        let names = |objects: Vec<Value>| -> Vec<String> {
            objects
                .iter()
                .filter_map(|o| o.pointer("/metadata/name")?.as_str().map(str::to_string))
                .collect()
        };
        let x = [("app".to_string(), "x".to_string())];
        assert_eq!(
            names(
                cache
                    .list("apps", "ReplicaSet", None, "shop", &x)
                    .unwrap_or_default()
            ),
            ["a", "b"]
        );
        assert_eq!(
            names(
                cache
                    .list("apps", "ReplicaSet", None, "", &x)
                    .unwrap_or_default()
            ),
            ["a", "b", "d"]
        );
        assert_eq!(
            names(
                cache
                    .list("apps", "ReplicaSet", None, "zoo", &[])
                    .unwrap_or_default()
            ),
            ["d"]
        );
        // A re-list (after a 410 Gone) is the new truth: "a" and "b" went
        // while the watch was away.
        cache.deliver("apps", "ReplicaSet", Delivered::ListStarted);
        cache.deliver("apps", "ReplicaSet", Delivered::Listed(rs("c", "20", "y")));
        assert_eq!(
            version_of(&cache, "a").as_deref(),
            Some("5"),
            "until it ends"
        );
        cache.deliver("apps", "ReplicaSet", Delivered::ListDone);
        assert_eq!(
            names(
                cache
                    .list("apps", "ReplicaSet", None, "", &[])
                    .unwrap_or_default()
            ),
            ["c"]
        );
    }
}
