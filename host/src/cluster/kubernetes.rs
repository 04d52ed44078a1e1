//! The `Cluster` on a real Kubernetes API server, through kube-rs: objects
//! as `DynamicObject`s, writes with resourceVersion preconditions, watches
//! through kube-runtime's watcher (which re-lists after a 410 Gone and
//! resumes after disconnects), and API errors mapped to typed
//! [`ClusterError`]s that say what to grant.
//!
//! A Kubernetes API server has no multi-object transaction. A batch is
//! applied in order after every precondition was checked against the
//! server, so a stale batch fails before it writes anything. A write that
//! fails half-way through a batch (a race with another writer, a refusal,
//! the caller's deadline) is answered with
//! [`ClusterError::PartiallyApplied`], which names every write that landed;
//! those that can be undone safely (a create, deleted again on the version it
//! created; an update, put back on the version it wrote) are undone, and the
//! error says which were and which stay. With a deadline
//! ([`Cluster::apply_before`]) no write starts after it and each request is
//! cut off at it.
//!
//! Reads of the kinds [`KubeCluster::start_watching`] watches are answered
//! from the watches' cache ([`super::watch_cache`]) once it is in sync, so a
//! steady-state reconcile sends no request; writes go to the server and
//! into the cache.

use super::watch_cache::{Delivered, WatchCache};
use super::{Cluster, ClusterError, ObjectKey, WATCH_BUFFER, WatchEvent, Write};
use futures_util::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
    Preconditions,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What Weir knows about a kind: its preferred version, plural and scope.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    /// API group (empty for core).
    pub group: &'static str,
    /// Preferred version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource name.
    pub plural: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `status` is a subresource: written through `/status`, not with the
    /// object. What the cluster's discovery says wins; this is the fallback.
    pub status_subresource: bool,
}

/// The kinds the controller and the shipped plugins use.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        group: "argoproj.io",
        version: "v1alpha1",
        kind: "Rollout",
        plural: "rollouts",
        namespaced: true,
        status_subresource: true,
    },
    KindInfo {
        group: "argoproj.io",
        version: "v1alpha1",
        kind: "AnalysisTemplate",
        plural: "analysistemplates",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "argoproj.io",
        version: "v1alpha1",
        kind: "ClusterAnalysisTemplate",
        plural: "clusteranalysistemplates",
        namespaced: false,
        status_subresource: false,
    },
    KindInfo {
        group: "argoproj.io",
        version: "v1alpha1",
        kind: "AnalysisRun",
        plural: "analysisruns",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "argoproj.io",
        version: "v1alpha1",
        kind: "Experiment",
        plural: "experiments",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "networking.istio.io",
        version: "v1beta1",
        kind: "VirtualService",
        plural: "virtualservices",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "networking.istio.io",
        version: "v1beta1",
        kind: "DestinationRule",
        plural: "destinationrules",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "networking.k8s.io",
        version: "v1",
        kind: "Ingress",
        plural: "ingresses",
        namespaced: true,
        status_subresource: false,
    },
    KindInfo {
        group: "split.smi-spec.io",
        version: "v1alpha2",
        kind: "TrafficSplit",
        plural: "trafficsplits",
        namespaced: true,
        status_subresource: false,
    },
];

/// The kind `group`/`kind`, if Weir knows it.
pub fn kind_info(group: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

/// (group, kind, version or "" for the server's preferred one).
type DiscoveryKey = (String, String, String);

/// A cluster on a Kubernetes API server.
pub struct KubeCluster {
    client: kube::Client,
    events: tokio::sync::broadcast::Sender<WatchEvent>,
    /// Kinds outside [`KINDS`], as discovery found them: (group, kind,
    /// version or "" for the preferred one) → resource and scope.
    discovered: std::sync::Mutex<HashMap<DiscoveryKey, (ApiResource, bool)>>,
    /// The resources and subresources each group/version serves, as
    /// discovery listed them (`rollouts`, `rollouts/status`, ...).
    served: std::sync::Mutex<HashMap<String, std::collections::HashSet<String>>>,
    /// The watched kinds' objects, which reads are answered from.
    cache: Arc<WatchCache>,
    /// Whether a kind read and not yet watched gets a watch of its own
    /// (the controller's client; see [`Self::start_controller_watches`]).
    watch_on_read: std::sync::atomic::AtomicBool,
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

/// The fields a 422 names (`details.causes[].field`), with their messages.
fn causes(status: &kube::core::Status) -> String {
    let causes: Vec<String> = status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|c| match (c.field.is_empty(), c.message.is_empty()) {
            (false, false) => format!("{}: {}", c.field, c.message),
            (false, true) => c.field.clone(),
            _ => c.message.clone(),
        })
        .collect();
    if causes.is_empty() {
        String::new()
    } else {
        format!(" ({})", causes.join("; "))
    }
}

/// Whether a 404 is about the resource type (no CRD, or not at that
/// version) rather than an object: the server then names no object.
fn resource_type_missing(status: &kube::core::Status) -> bool {
    status.details.as_ref().is_none_or(|d| d.name.is_empty())
}

/// Maps an API error about `what` (`get ReplicaSet shop/x`) to a typed error.
pub fn map_error(e: kube::Error, what: &str) -> ClusterError {
    match &e {
        kube::Error::Api(status) => match status.code {
            404 if resource_type_missing(status) => ClusterError::Invalid(format!(
                "{what}: the API server does not serve this kind at this version ({}); is its CustomResourceDefinition installed, and at the version used?",
                status.message
            )),
            404 => ClusterError::NotFound(what.to_string()),
            409 if status.reason == "AlreadyExists" => {
                ClusterError::AlreadyExists(what.to_string())
            }
            409 => ClusterError::Conflict {
                key: what.to_string(),
                expected: "the version read".into(),
                actual: format!("a newer one ({})", status.message),
            },
            403 => ClusterError::Forbidden(format!(
                "{what}: {}; grant Weir's ServiceAccount this in its ClusterRole (deploy/weir.yaml, printed by `weir manifests`)",
                status.message
            )),
            429 => ClusterError::TooManyRequests(format!("{what}: {}", status.message)),
            400 | 422 => ClusterError::Invalid(format!(
                "{what}: the API server refused it: {}{}",
                status.message,
                causes(status)
            )),
            _ => ClusterError::Unavailable(format!("{what}: {}", describe(&e))),
        },
        _ => ClusterError::Unavailable(format!("{what}: {}", describe(&e))),
    }
}

/// Whether Weir writes `key`'s status: the controller's own kinds. Other
/// kinds' status belongs to their controllers (a ReplicaSet's to the
/// ReplicaSet controller), and Weir never writes it.
fn writes_status(key: &ObjectKey) -> bool {
    key.group == "argoproj.io"
        && matches!(key.kind.as_str(), "Rollout" | "AnalysisRun" | "Experiment")
}

/// Whether `group`/`kind` keeps its status in a subresource.
fn has_status_subresource(group: &str, kind: &str) -> bool {
    kind_info(group, kind).is_some_and(|k| k.status_subresource)
}

fn resource(
    group: &str,
    kind: &str,
    api_version: Option<&str>,
) -> Result<(ApiResource, bool), ClusterError> {
    let version_of = |api_version: &str| api_version.rsplit('/').next().unwrap_or("").to_string();
    match kind_info(group, kind) {
        Some(info) => {
            let version = api_version
                .map(version_of)
                .unwrap_or_else(|| info.version.to_string());
            let gvk = GroupVersionKind::gvk(info.group, &version, info.kind);
            Ok((
                ApiResource::from_gvk_with_plural(&gvk, info.plural),
                info.namespaced,
            ))
        }
        None => Err(ClusterError::Invalid(format!(
            "kind {kind}.{group} is not in Weir's kinds table"
        ))),
    }
}

impl KubeCluster {
    /// The resource and scope of `group`/`kind` at `api_version` (or, when
    /// none is given, the table's version, or the server's preferred one):
    /// from the kinds table, or else from the server's discovery documents
    /// (cached), so any kind a plugin names is addressed as the server
    /// serves it, and a kind it does not serve is reported as such.
    async fn resolve(
        &self,
        group: &str,
        kind: &str,
        api_version: Option<&str>,
    ) -> Result<(ApiResource, bool), ClusterError> {
        if kind_info(group, kind).is_some() {
            return resource(group, kind, api_version);
        }
        let version = api_version
            .map(|v| v.rsplit('/').next().unwrap_or("").to_string())
            .unwrap_or_default();
        self.discover(group, kind, version).await
    }

    /// The resource and scope of `group`/`kind` as the server's discovery
    /// documents give them at `version` ("" for the preferred one); cached.
    async fn discover(
        &self,
        group: &str,
        kind: &str,
        version: String,
    ) -> Result<(ApiResource, bool), ClusterError> {
        let cache_key = (group.to_string(), kind.to_string(), version.clone());
        if let Some(found) = self
            .discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
        {
            return Ok(found.clone());
        }
        let not_served = |detail: String| {
            ClusterError::Invalid(format!(
                "the API server does not serve {kind}.{group}{}: {detail}; is its CustomResourceDefinition installed, and at that version?",
                if version.is_empty() {
                    String::new()
                } else {
                    format!(" at {version}")
                }
            ))
        };
        let api_group = kube::discovery::oneshot::group(&self.client, group)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(status) if status.code == 404 => {
                    not_served(status.message.clone())
                }
                // The group is not among those the server lists.
                kube::Error::Discovery(missing) => not_served(missing.to_string()),
                _ => map_error(e, &format!("discover {kind}.{group}")),
            })?;
        let found = if version.is_empty() {
            api_group.recommended_kind(kind)
        } else {
            api_group
                .versioned_resources(&version)
                .into_iter()
                .find(|(ar, _)| ar.kind == kind)
        };
        let (ar, capabilities) =
            found.ok_or_else(|| not_served(format!("the group {group} has no such kind")))?;
        let resolved = (ar, capabilities.scope == kube::discovery::Scope::Namespaced);
        self.discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cache_key, resolved.clone());
        Ok(resolved)
    }

    /// Where to delete `group`/`kind`: a delete does not depend on the
    /// version, so a kind of the table the server does not serve at the
    /// table's version (an SMI install at v1alpha1 only) is deleted at the
    /// version the server prefers.
    async fn resolve_for_delete(
        &self,
        group: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), ClusterError> {
        let table = self.resolve(group, kind, None).await?;
        if kind_info(group, kind).is_none()
            || self.serves(&table.0, &table.0.plural).await != Some(false)
        {
            return Ok(table);
        }
        self.discover(group, kind, String::new()).await
    }

    /// Whether the server serves `/status` for `ar`: from its discovery
    /// document (cached), so Weir writes status the way the installed CRD
    /// wants it (Argo's AnalysisRun has no status subresource, Weir's
    /// older CRDs had one); the kinds table when discovery fails.
    async fn serves_status(&self, ar: &ApiResource, key: &ObjectKey) -> bool {
        match self.serves(ar, &format!("{}/status", ar.plural)).await {
            Some(serves) => serves,
            None => has_status_subresource(&key.group, &key.kind),
        }
    }

    /// Whether `ar`'s group/version lists the resource `wanted` (`rollouts`,
    /// `rollouts/status`), from its discovery document (cached); `None`
    /// when discovery fails.
    async fn serves(&self, ar: &ApiResource, wanted: &str) -> Option<bool> {
        let known = self
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ar.api_version)
            .map(|names| names.contains(wanted));
        if let Some(known) = known {
            return Some(known);
        }
        let listed = if ar.group.is_empty() {
            self.client.list_core_api_resources(&ar.version).await
        } else {
            self.client.list_api_group_resources(&ar.api_version).await
        };
        match listed {
            Ok(list) => {
                let names: std::collections::HashSet<String> =
                    list.resources.into_iter().map(|r| r.name).collect();
                let serves = names.contains(wanted);
                self.served
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(ar.api_version.clone(), names);
                Some(serves)
            }
            // A group/version the server does not serve (yet: not cached,
            // as its CRD may be installed after Weir starts).
            Err(kube::Error::Api(status)) if status.code == 404 => Some(false),
            Err(e) => {
                tracing::debug!(error = %e, api_version = %ar.api_version, "discovery failed");
                None
            }
        }
    }

    /// A cluster over `client` (from a kubeconfig, in-cluster config, or a test service).
    pub fn new(client: kube::Client) -> Self {
        KubeCluster {
            client,
            events: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
            discovered: std::sync::Mutex::default(),
            served: std::sync::Mutex::default(),
            cache: Arc::default(),
            watch_on_read: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A client from `KUBECONFIG` / `~/.kube/config`, or the in-cluster
    /// ServiceAccount when running in a pod.
    pub async fn infer() -> Result<Self, ClusterError> {
        kube::Client::try_default()
            .await
            .map(Self::new)
            .map_err(|e| ClusterError::Unavailable(format!("no Kubernetes configuration: {e}")))
    }

    /// A client from the kubeconfig file at `path`.
    pub async fn from_kubeconfig(path: &std::path::Path) -> Result<Self, ClusterError> {
        let unavailable =
            |e: String| ClusterError::Unavailable(format!("kubeconfig {}: {e}", path.display()));
        let kubeconfig =
            kube::config::Kubeconfig::read_from(path).map_err(|e| unavailable(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
        kube::Client::try_from(config)
            .map(Self::new)
            .map_err(|e| unavailable(e.to_string()))
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api(&self, ar: &ApiResource, namespaced: bool, namespace: &str) -> Api<DynamicObject> {
        if namespaced && !namespace.is_empty() {
            Api::namespaced_with(self.client.clone(), namespace, ar)
        } else {
            Api::all_with(self.client.clone(), ar)
        }
    }

    /// Starts the watches the controller needs, with `config_namespace`
    /// holding its registration: Rollouts drive reconciles; ReplicaSets wake
    /// rollouts waiting for pods; AnalysisRuns, Experiments and Deployments
    /// (`workloadRef`) are read every pass; the registration ConfigMap drives
    /// reloads. All of them are then read from the watch cache, and so is
    /// any other kind once it has been read (a Service, a plugin's
    /// VirtualService: see [`NEVER_WATCHED`]), as Argo Rollouts reads
    /// through informers.
    pub fn start_controller_watches(
        self: &Arc<Self>,
        config_namespace: &str,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.watch_on_read
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.start_watching(&[
            ("argoproj.io", "Rollout", ""),
            ("argoproj.io", "AnalysisRun", ""),
            ("argoproj.io", "Experiment", ""),
            ("apps", "ReplicaSet", ""),
            ("apps", "Deployment", ""),
            ("", "ConfigMap", config_namespace),
        ])
    }

    /// Starts watching `kinds` (group, kind, namespace; `""`: all
    /// namespaces): every change is put in the read cache and then sent to
    /// [`Cluster::watch`] subscribers (so a reconcile an event wakes reads
    /// what the event announced). The watcher re-lists after a 410 Gone and
    /// resumes after disconnects, with backoff; errors are logged, and the
    /// kind's reads go to the server until the watch is back in sync.
    pub fn start_watching(
        self: &Arc<Self>,
        kinds: &[(&str, &str, &str)],
    ) -> Vec<tokio::task::JoinHandle<()>> {
        kinds
            .iter()
            .filter_map(|(group, kind, namespace)| {
                let (ar, namespaced) = resource(group, kind, None).ok()?;
                self.spawn_watch(group, kind, namespace, ar, namespaced, true)
            })
            .collect()
    }

    /// Starts a cache-only watch of `group`/`kind` in every namespace, the
    /// first time the controller's client reads that kind; a kind in
    /// [`NEVER_WATCHED`] or whose watch the server refuses is always read
    /// from the server.
    async fn watch_on_first_read(&self, group: &str, kind: &str) {
        if !self
            .watch_on_read
            .load(std::sync::atomic::Ordering::Relaxed)
            || NEVER_WATCHED.contains(&(group, kind))
            || self.cache.knows(group, kind)
        {
            return;
        }
        if let Ok((ar, namespaced)) = self.resolve(group, kind, None).await {
            let _ = self.spawn_watch(group, kind, "", ar, namespaced, false);
        }
    }

    /// Watches `group`/`kind` into the cache, and announces its changes to
    /// [`Cluster::watch`] subscribers when `announce`; `None` when it is
    /// watched already.
    fn spawn_watch(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        ar: ApiResource,
        namespaced: bool,
        announce: bool,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.cache.watch(group, kind, namespace, &ar.api_version) {
            return None;
        }
        let api = self.api(&ar, namespaced, namespace);
        let events = self.events.clone();
        let cache = self.cache.clone();
        let (group, kind) = (group.to_string(), kind.to_string());
        Some(tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let deliver = |delivered| cache.deliver(&group, &kind, delivered);
            let announce = |object: &DynamicObject, deleted| {
                if announce {
                    send(&events, &group, &kind, object, deleted)
                }
            };
            while let Some(item) = stream.next().await {
                match item {
                    Ok(watcher::Event::Init) => deliver(Delivered::ListStarted),
                    Ok(watcher::Event::InitApply(o)) => {
                        deliver(Delivered::Listed(cached_value(&o, &ar)));
                        announce(&o, false);
                    }
                    Ok(watcher::Event::InitDone) => deliver(Delivered::ListDone),
                    Ok(watcher::Event::Apply(o)) => {
                        deliver(Delivered::Applied(cached_value(&o, &ar)));
                        announce(&o, false);
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        deliver(Delivered::Deleted(cached_value(&o, &ar)));
                        announce(&o, true);
                    }
                    Err(e) if watch_forbidden(&e) => {
                        tracing::info!(%kind, %group, error = %e, "not allowed to watch; reading from the API server");
                        cache.refuse(&group, &kind);
                        return;
                    }
                    Err(e) => {
                        deliver(Delivered::Broken);
                        tracing::warn!(%kind, %group, error = %e, "watch interrupted; re-listing")
                    }
                }
            }
        }))
    }

    /// Checks every versioned write's precondition against the server and
    /// returns the objects as they are now (what an undo puts back).
    async fn check_preconditions(
        &self,
        writes: &[Write],
    ) -> Result<BTreeMap<ObjectKey, Value>, ClusterError> {
        let mut current = BTreeMap::new();
        for write in writes {
            let (key, expected, api_version) = match write {
                Write::Update {
                    object,
                    expected_version: Some(v),
                } => (ObjectKey::of(object)?, v, api_version_of(object)),
                Write::Delete {
                    key,
                    expected_version: Some(v),
                } => (key.clone(), v, None),
                _ => continue,
            };
            // The cache answers when it holds the expected version: a write
            // that lands proves that was the server's object. Otherwise (a
            // cache behind the writer's read) the server is asked.
            let stored = match self.cache.get(&key, api_version) {
                Some(Ok(cached)) if super::resource_version(&cached) == Some(expected.as_str()) => {
                    cached
                }
                _ => self.fetch_one(&key, api_version).await?,
            };
            let actual = super::resource_version(&stored).unwrap_or("");
            if actual != expected {
                return Err(ClusterError::Conflict {
                    key: key.to_string(),
                    expected: expected.clone(),
                    actual: actual.to_string(),
                });
            }
            current.insert(key, stored);
        }
        Ok(current)
    }

    /// One write of a batch; on success, what landed (for an undo).
    async fn write_one(&self, write: Write) -> Result<Landed, ClusterError> {
        match write {
            Write::Create(mut object) => {
                let key = ObjectKey::of(&object)?;
                let (ar, namespaced) = self
                    .resolve(&key.group, &key.kind, api_version_of(&object))
                    .await?;
                // An API server refuses a create that carries a version (or
                // another object's identity).
                if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.remove("resourceVersion");
                    metadata.remove("uid");
                }
                let api = self.api(&ar, namespaced, &key.namespace);
                let created = api
                    .create(&PostParams::default(), &to_dynamic(object)?)
                    .await
                    .map_err(|e| map_error(e, &format!("create {key}")))?;
                Ok(Landed::Created(key, to_value(created)?))
            }
            Write::Update {
                mut object,
                expected_version,
            } => {
                let key = ObjectKey::of(&object)?;
                let (ar, namespaced) = self
                    .resolve(&key.group, &key.kind, api_version_of(&object))
                    .await?;
                // The server checks the resourceVersion in the body:
                // the expected one, or none for an unconditional write.
                if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    match expected_version {
                        Some(v) => metadata.insert("resourceVersion".into(), Value::String(v)),
                        None => metadata.remove("resourceVersion"),
                    };
                }
                let api = self.api(&ar, namespaced, &key.namespace);
                let status = object.get("status").cloned();
                let mut replaced = api
                    .replace(&key.name, &PostParams::default(), &to_dynamic(object)?)
                    .await
                    .map_err(|e| map_error(e, &format!("update {key}")))?;
                // With a status subresource the server ignored the
                // status above: write it through `/status`, on the
                // version the first write produced.
                if writes_status(&key)
                    && self.serves_status(&ar, &key).await
                    && let Some(status) = status
                    && replaced.data.get("status") != Some(&status)
                {
                    let mut with_status = to_value(replaced)?;
                    if let Some(map) = with_status.as_object_mut() {
                        map.insert("status".into(), status);
                    }
                    replaced = api
                        .replace_status(
                            &key.name,
                            &PostParams::default(),
                            &to_dynamic(with_status)?,
                        )
                        .await
                        .map_err(|e| map_error(e, &format!("update {key} status")))?;
                }
                Ok(Landed::Updated(key, to_value(replaced)?))
            }
            Write::Delete {
                key,
                expected_version,
            } => {
                let (ar, namespaced) = self.resolve_for_delete(&key.group, &key.kind).await?;
                let api = self.api(&ar, namespaced, &key.namespace);
                let params = delete_params(&key).preconditions(Preconditions {
                    resource_version: expected_version,
                    uid: None,
                });
                api.delete(&key.name, &params)
                    .await
                    .map_err(|e| map_error(e, &format!("delete {key}")))?;
                Ok(Landed::Deleted(key))
            }
        }
    }

    /// Undoes one landed write, conditional on the version it left (so a
    /// change someone made since is never overwritten); false when it
    /// cannot be undone safely.
    async fn undo(&self, landed: &Landed, before: &BTreeMap<ObjectKey, Value>) -> bool {
        let outcome = match landed {
            Landed::Created(key, object) => {
                let Ok((ar, namespaced)) = self.resolve_for_delete(&key.group, &key.kind).await
                else {
                    return false;
                };
                let params = delete_params(key).preconditions(Preconditions {
                    resource_version: super::resource_version(object).map(str::to_string),
                    uid: None,
                });
                self.api(&ar, namespaced, &key.namespace)
                    .delete(&key.name, &params)
                    .await
                    .map(drop)
            }
            Landed::Updated(key, object) => {
                let Some(previous) = before.get(key) else {
                    return false;
                };
                let Ok((ar, namespaced)) = self
                    .resolve(&key.group, &key.kind, api_version_of(previous))
                    .await
                else {
                    return false;
                };
                let mut restore = previous.clone();
                if let Some(metadata) = restore.get_mut("metadata").and_then(Value::as_object_mut) {
                    let version = super::resource_version(object).unwrap_or_default();
                    metadata.insert("resourceVersion".into(), Value::String(version.into()));
                }
                let Ok(restore) = to_dynamic(restore) else {
                    return false;
                };
                self.api(&ar, namespaced, &key.namespace)
                    .replace(&key.name, &PostParams::default(), &restore)
                    .await
                    .map(drop)
            }
            Landed::Deleted(_) => return false,
        };
        outcome.is_ok()
    }

    /// Applies `writes` in order, starting none after `deadline` and
    /// cutting each off at it; on a failure after some landed, undoes what
    /// it safely can and says exactly what happened.
    async fn apply_writes(
        &self,
        writes: Vec<Write>,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<Option<Value>>, ClusterError> {
        for write in &writes {
            if let Write::Create(object) | Write::Update { object, .. } = write {
                super::batch::check_storable(&ObjectKey::of(object)?, object)?;
            }
        }
        let before = self.check_preconditions(&writes).await?;
        let total = writes.len();
        let mut landed: Vec<Landed> = Vec::with_capacity(total);
        for write in writes {
            let described = describe_write(&write);
            let key = write_key(&write);
            let attempt = match deadline {
                None => self.write_one(write).await,
                Some(deadline) if std::time::Instant::now() >= deadline => {
                    Err(ClusterError::Unavailable(format!(
                        "the deadline passed after {} of {total} writes; {described} was not started",
                        landed.len()
                    )))
                }
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline.into(), self.write_one(write)).await {
                        Ok(result) => result,
                        Err(_) => {
                            // Its outcome is unknown: never report this batch
                            // as one that wrote nothing.
                            let cause = ClusterError::Unavailable(
                                "cut off at the deadline; the server may or may not have applied it"
                                    .into(),
                            );
                            return Err(self.partial(described, cause, landed, &before).await);
                        }
                    }
                }
            };
            if let (Err(ClusterError::Conflict { .. }), Some(key)) = (&attempt, &key) {
                self.cache.distrust(key);
            }
            match attempt {
                Ok(done) => {
                    done.record_in(&self.cache);
                    landed.push(done);
                }
                Err(cause) if landed.is_empty() => return Err(cause),
                Err(cause) => return Err(self.partial(described, cause, landed, &before).await),
            }
        }
        Ok(landed.into_iter().map(Landed::into_result).collect())
    }

    /// The error for a batch that failed after `landed` were written, once
    /// what can be undone has been (newest first, within a bounded time:
    /// leaving half a batch behind is worse than running a little late).
    async fn partial(
        &self,
        failed: String,
        cause: ClusterError,
        landed: Vec<Landed>,
        before: &BTreeMap<ObjectKey, Value>,
    ) -> ClusterError {
        let mut undone = Vec::new();
        let mut kept = Vec::new();
        for write in landed.iter().rev() {
            let done = tokio::time::timeout(UNDO_TIMEOUT, self.undo(write, before))
                .await
                .unwrap_or(false);
            if done {
                undone.push(write.describe());
            } else {
                kept.push(write.describe());
            }
        }
        tracing::warn!(%failed, %cause, ?undone, ?kept, "a batch failed part way on the API server");
        ClusterError::PartiallyApplied {
            failed,
            cause: cause.to_string(),
            landed: landed.iter().map(Landed::describe).collect(),
            undone,
            kept,
        }
    }
}

/// How long an undo may take, per write.
const UNDO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A write of a batch that reached the server.
enum Landed {
    Created(ObjectKey, Value),
    Updated(ObjectKey, Value),
    Deleted(ObjectKey),
}

impl Landed {
    /// Puts what landed in the read cache (read-your-writes).
    fn record_in(&self, cache: &WatchCache) {
        match self {
            Landed::Created(key, object) | Landed::Updated(key, object) => {
                cache.wrote(key, Some(object))
            }
            Landed::Deleted(key) => cache.wrote(key, None),
        }
    }

    fn describe(&self) -> String {
        match self {
            Landed::Created(key, _) => format!("create {key}"),
            Landed::Updated(key, _) => format!("update {key}"),
            Landed::Deleted(key) => format!("delete {key}"),
        }
    }

    fn into_result(self) -> Option<Value> {
        match self {
            Landed::Created(_, v) | Landed::Updated(_, v) => Some(v),
            Landed::Deleted(_) => None,
        }
    }
}

/// The object `write` writes.
fn write_key(write: &Write) -> Option<ObjectKey> {
    match write {
        Write::Create(object) | Write::Update { object, .. } => ObjectKey::of(object).ok(),
        Write::Delete { key, .. } => Some(key.clone()),
    }
}

fn describe_write(write: &Write) -> String {
    match write {
        Write::Create(o) => format!(
            "create {}",
            ObjectKey::of(o).map_or_else(|_| "?".into(), |k| k.to_string())
        ),
        Write::Update { object, .. } => format!(
            "update {}",
            ObjectKey::of(object).map_or_else(|_| "?".into(), |k| k.to_string())
        ),
        Write::Delete { key, .. } => format!("delete {key}"),
    }
}

fn api_version_of(object: &Value) -> Option<&str> {
    object.get("apiVersion").and_then(Value::as_str)
}

fn send(
    events: &tokio::sync::broadcast::Sender<WatchEvent>,
    group: &str,
    kind: &str,
    object: &DynamicObject,
    deleted: bool,
) {
    if events.receiver_count() == 0 {
        return;
    }
    let key = ObjectKey {
        group: group.to_string(),
        kind: kind.to_string(),
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        name: object.metadata.name.clone().unwrap_or_default(),
    };
    let _ = events.send(WatchEvent {
        key,
        labels: object
            .metadata
            .labels
            .as_ref()
            .map(|labels| labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        deleted,
        resource_version: if deleted {
            None
        } else {
            object.metadata.resource_version.clone()
        },
    });
}

/// How a delete treats the object's dependents: a Job's pods go first
/// (Foreground, as Argo's job provider deletes; batch/v1 would otherwise
/// orphan them), everything else's are collected after it (Background).
fn delete_params(key: &ObjectKey) -> DeleteParams {
    if key.group == "batch" && key.kind == "Job" {
        DeleteParams::foreground()
    } else {
        DeleteParams::background()
    }
}

/// Sets `apiVersion` and `kind` on a list item when the server left them
/// out (it does for built-in kinds; kubernetes issues #63676, #98925).
fn with_type_meta(mut object: Value, ar: &ApiResource) -> Value {
    if let Some(map) = object.as_object_mut() {
        for (field, value) in [("apiVersion", &ar.api_version), ("kind", &ar.kind)] {
            let missing = map
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if missing {
                map.insert(field.into(), Value::String(value.clone()));
            }
        }
    }
    object
}

/// Kinds never watched on first read: Secrets (their values are kept out
/// of memory, and a controller is rarely allowed to list them), Pods and
/// Events (many, and fast-changing), Leases (leader election reads them
/// fresh).
pub const NEVER_WATCHED: &[(&str, &str)] = &[
    ("", "Secret"),
    ("", "Pod"),
    ("", "Event"),
    ("events.k8s.io", "Event"),
    ("coordination.k8s.io", "Lease"),
];

/// Whether the server refused a watch (403): asking again will not help.
fn watch_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 403,
        watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}

/// A watched object as the cache holds it (with the apiVersion and kind a
/// list may have left out).
fn cached_value(object: &DynamicObject, ar: &ApiResource) -> Value {
    with_type_meta(serde_json::to_value(object).unwrap_or(Value::Null), ar)
}

/// Items fetched per list page.
const LIST_PAGE: u32 = 500;

fn to_dynamic(object: Value) -> Result<DynamicObject, ClusterError> {
    serde_json::from_value(object)
        .map_err(|e| ClusterError::Invalid(format!("not a Kubernetes object: {e}")))
}

fn to_value(object: DynamicObject) -> Result<Value, ClusterError> {
    serde_json::to_value(object).map_err(|e| ClusterError::Invalid(e.to_string()))
}

#[async_trait::async_trait]
impl Cluster for KubeCluster {
    async fn get(&self, key: &ObjectKey) -> Result<Value, ClusterError> {
        self.read_one(key, None).await
    }

    async fn get_at(&self, key: &ObjectKey, api_version: &str) -> Result<Value, ClusterError> {
        self.read_one(key, Some(api_version)).await
    }

    async fn list_at(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        self.read_all(
            super::group_of(api_version),
            kind,
            Some(api_version),
            namespace,
            labels,
        )
        .await
    }

    async fn list(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        self.read_all(group, kind, None, namespace, labels).await
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Option<Value>>, ClusterError> {
        self.apply_writes(writes, None).await
    }

    async fn apply_before(
        &self,
        writes: Vec<Write>,
        deadline: std::time::Instant,
    ) -> Result<Vec<Option<Value>>, ClusterError> {
        self.apply_writes(writes, Some(deadline)).await
    }

    async fn evict(&self, key: &ObjectKey) -> Result<(), ClusterError> {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &key.namespace);
        pods.evict(&key.name, &kube::api::EvictParams::default())
            .await
            .map(|_| ())
            .map_err(|e| map_error(e, &format!("evict {key}")))
    }

    fn watch(&self) -> Option<tokio::sync::broadcast::Receiver<WatchEvent>> {
        Some(self.events.subscribe())
    }
}

impl KubeCluster {
    /// Reads one object, at `api_version` when given: from the watch cache
    /// when it can answer, else from the server.
    async fn read_one(
        &self,
        key: &ObjectKey,
        api_version: Option<&str>,
    ) -> Result<Value, ClusterError> {
        if let Some(cached) = self.cache.get(key, api_version) {
            return cached;
        }
        self.watch_on_first_read(&key.group, &key.kind).await;
        self.fetch_one(key, api_version).await
    }

    /// Reads one object from the server, at `api_version` when given.
    async fn fetch_one(
        &self,
        key: &ObjectKey,
        api_version: Option<&str>,
    ) -> Result<Value, ClusterError> {
        let (ar, namespaced) = self.resolve(&key.group, &key.kind, api_version).await?;
        let api = self.api(&ar, namespaced, &key.namespace);
        let object = api
            .get(&key.name)
            .await
            .map_err(|e| map_error(e, &format!("get {key}")))?;
        let object = to_value(object)?;
        self.cache.wrote(key, Some(&object));
        Ok(object)
    }

    /// Lists page by page, at `api_version` when given.
    async fn read_all(
        &self,
        group: &str,
        kind: &str,
        api_version: Option<&str>,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        if let Some(cached) = self.cache.list(group, kind, api_version, namespace, labels) {
            return Ok(cached);
        }
        self.watch_on_first_read(group, kind).await;
        let (ar, namespaced) = self.resolve(group, kind, api_version).await?;
        let api = self.api(&ar, namespaced, namespace);
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut params = ListParams::default().limit(LIST_PAGE);
        if !selector.is_empty() {
            params = params.labels(&selector);
        }
        let mut items = Vec::new();
        // Page by page (`limit` / `continue`).
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| map_error(e, &format!("list {kind}.{group} in {namespace:?}")))?;
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            for item in page.items {
                items.push(with_type_meta(to_value(item)?, &ar));
            }
            match next {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(items),
            }
        }
    }
}
