//! A simulation of kube-apiserver (and of the controllers around it), as a
//! tower service a kube-rs `Client` is built on (kube-rs's own mock-service
//! convention). No API server can run on this machine, so this is a mock,
//! and says so; each behaviour below is written from the Kubernetes API
//! documentation (see `../shared/reference/kube-apiserver.md` and
//! docs/kubernetes.md), and `tests/tests/apiserver_simulation.rs` checks
//! each one, so the simulation cannot drift into accepting anything.
//!
//! - **Discovery**: `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//!   `/apis/{group}/{version}` list what is served: Kubernetes' built-in
//!   kinds, Weir's CRDs as `deploy/crds.yaml` defines them, Istio's and
//!   SMI's. Any other group, version or resource is the server's 404 for
//!   an unknown resource (not an object's 404).
//! - **Lists** of built-in kinds carry no `apiVersion`/`kind` on their
//!   items; `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists, `!`);
//!   `limit` / `continue` pagination.
//! - **Creates** that carry a `resourceVersion` are refused (422); names are
//!   validated (DNS subdomain; DNS label for Services); `uid`,
//!   `creationTimestamp` and `generation: 1` are set; `status` is dropped
//!   for kinds with a status subresource.
//! - **Updates** need the current `resourceVersion` (stale: 409); a custom
//!   resource's update without one is 422 (built-in kinds allow it); the
//!   name in the body must match the URL; a write that changes nothing
//!   changes no version and sends no event; `generation` increases when
//!   anything but metadata and status changes. With a status subresource a
//!   main write keeps the stored status and a `/status` write changes only
//!   the status.
//! - **Validation** as the server's: a ReplicaSet's selector must match its
//!   template's labels and is immutable; a Service needs ports (unless
//!   headless or ExternalName); a Lease's times are MicroTime (six
//!   fractional digits); bodies over 3 MiB are 413 and objects over
//!   1.5 MiB are refused by storage (etcd's request limit).
//! - **Deletes** honour `preconditions` and `propagationPolicy` (batch/v1
//!   Jobs orphan their pods by default), with garbage collection of
//!   dependents by `ownerReferences`.
//! - **Watches** deliver ADDED / MODIFIED / DELETED from a
//!   `resourceVersion`, BOOKMARKs when asked, and 410 Gone for a version
//!   older than the (bounded) history.
//! - **RBAC**: [`FakeApiServer::client`] is Weir's ServiceAccount, allowed
//!   exactly what `deploy/weir.yaml`'s Roles and ClusterRoles grant it
//!   (403 otherwise, worded as the server words it); with
//!   [`FakeApiServer::enforce_owner_references`], the
//!   `OwnerReferencesPermissionEnforcement` admission plugin too.
//!   [`FakeApiServer::admin_client`] is a cluster admin, for test set-up.
//! - **Controllers**: ReplicaSets get Pods that become Ready (at once, after
//!   a delay, or never) and the status the ReplicaSet controller writes;
//!   Jobs run to `Complete` (or `Failed`); see [`controllers`].
//!
//! Not simulated: admission webhooks, field managers and server-side
//! apply, PATCH, `minReadySeconds`, a foreground owner's `deletionTimestamp`
//! while its dependents go, watch timeouts, consistent snapshots across
//! list pages. Faults (a status code, a 422 naming a field, a delay) can
//! be injected for any request.

pub mod controllers;
pub mod rbac;
pub mod resources;
pub mod schema;
pub mod store;

use bytes::Bytes;
use controllers::{Propagation, Readiness};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use rbac::{Access, Policy};
use resources::Resource;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Key, Selector, Store};

/// What the server answers with.
type Reply = Response<BoxBody<Bytes, Infallible>>;
/// A refusal, boxed (a reply is large).
type Refused = Box<Reply>;

/// The largest request body the server reads (kube-apiserver's 3 MiB).
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;
/// The largest object storage keeps (etcd's default request limit, 1.5 MiB).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// A fault to inject: requests whose method is `method` and whose path
/// contains `path` get `code`/`reason`, `times` times.
#[derive(Debug, Clone)]
pub struct Fault {
    /// HTTP method (`GET` for watches too).
    pub method: Method,
    /// A substring of the path (and query, for `watch=true`).
    pub path: String,
    /// Status code.
    pub code: u16,
    /// Kubernetes reason (`Forbidden`, `Conflict`, `Expired`...).
    pub reason: String,
    /// How many times.
    pub times: usize,
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// Weir's ServiceAccount, under `deploy/weir.yaml`'s RBAC.
    Weir,
    /// A cluster admin (test set-up).
    Admin,
}

struct State {
    store: Store,
    resources: Vec<Resource>,
    /// What installed CRDs' schemas enforce (Argo's, when installed).
    shapes: Vec<schema::Shape>,
    policy: Policy,
    enforce_owner_references: bool,
    requests: Vec<String>,
    /// Faults, each after skipping that many matching requests.
    faults: Vec<(Fault, usize)>,
    /// (method, path substring, delay) before answering.
    delays: Vec<(Method, String, Duration)>,
    /// Each DELETE's path and `propagationPolicy`.
    deletes: Vec<(String, Option<String>)>,
    /// The pods evicted, in order.
    evictions: Vec<String>,
    /// (method, path substring, field, times): 422s naming a field.
    invalid: Vec<(Method, String, String, usize)>,
    /// ReplicaSets (by name prefix) whose pods start late or never.
    pod_start: Vec<(String, Readiness)>,
    /// Jobs (by name prefix) that fail.
    failing_jobs: Vec<String>,
}

/// The simulated server; clone it to keep a handle on its state.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        FakeApiServer {
            state: Arc::new(Mutex::new(State {
                store: Store::default(),
                resources: resources::default_resources(),
                shapes: Vec::new(),
                policy: Policy::weir(),
                enforce_owner_references: false,
                requests: Vec::new(),
                faults: Vec::new(),
                delays: Vec::new(),
                deletes: Vec::new(),
                evictions: Vec::new(),
                invalid: Vec::new(),
                pod_start: Vec::new(),
                failing_jobs: Vec::new(),
            })),
        }
    }
}

/// What a request addresses.
#[derive(Debug, Clone)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match *parts.first()? {
        "api" => (String::new(), parts.get(1)?.to_string(), parts.get(2..)?),
        "apis" => (
            parts.get(1)?.to_string(),
            parts.get(2)?.to_string(),
            parts.get(3..)?,
        ),
        _ => return None,
    };
    let (namespace, rest) = match rest.first() {
        Some(&"namespaces") if rest.len() >= 3 => (rest.get(1)?.to_string(), rest.get(2..)?),
        _ => (String::new(), rest),
    };
    Some(Target {
        group,
        version,
        plural: rest.first()?.to_string(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn reply(bytes: Vec<u8>) -> Reply {
    Response::new(Full::new(Bytes::from(bytes)).boxed())
}

fn respond(code: u16, body: Value) -> Reply {
    let mut response = reply(serde_json::to_vec(&body).unwrap_or_default());
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: u16, reason: &str, message: &str) -> Reply {
    respond(
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
               "code": code, "reason": reason, "message": message}),
    )
}

/// A 404 about one object: the server names it in `details`.
fn not_found(plural: &str, name: &str) -> Reply {
    respond(
        404,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 404,
               "reason": "NotFound", "message": format!("{plural} \"{name}\" not found"),
               "details": {"name": name, "kind": plural}}),
    )
}

/// The 404 for a path the server does not serve at all.
fn unknown_resource() -> Reply {
    respond(
        404,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 404,
               "reason": "NotFound", "message": "the server could not find the requested resource",
               "details": {}}),
    )
}

/// A 422 naming the invalid field.
fn invalid(kind: &str, name: &str, field: &str, message: &str) -> Reply {
    respond(
        422,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 422,
               "reason": "Invalid",
               "message": format!("{kind} \"{name}\" is invalid: {field}: {message}"),
               "details": {"name": name, "kind": kind,
                           "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}}),
    )
}

fn forbidden(message: String) -> Reply {
    status(403, "Forbidden", &message)
}

/// Whether `name` is a DNS-1123 subdomain (most kinds) or, with `label`,
/// a DNS-1035 label (Services).
fn valid_name(name: &str, label: bool) -> bool {
    let limit = if label { 63 } else { 253 };
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.'));
    let ends_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || (!label && c.is_ascii_digit()))
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty() && name.len() <= limit && chars_ok && ends_ok
}

/// Whether `text` is a MicroTime as the server parses it (RFC 3339 with
/// exactly six fractional digits).
fn micro_time(text: &str) -> bool {
    let Some((_, rest)) = text.split_once('.') else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    digits == 6 && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

/// Everything but metadata and status: what `generation` counts changes of.
fn spec_part(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    o
}

/// The object as stored, ignoring what the server itself stamps.
fn comparable(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(meta) = o["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    o
}

impl FakeApiServer {
    /// A server with Weir's CRDs, Istio's and SMI's installed and nothing stored.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client_as(&self, identity: Identity) -> kube::Client {
        let server = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(request, identity).await) }
        });
        kube::Client::new(service, "default")
    }

    /// A kube-rs client acting as Weir's ServiceAccount
    /// (`weir-system/weir`): what `deploy/weir.yaml` does not grant is 403.
    pub fn client(&self) -> kube::Client {
        self.client_as(Identity::Weir)
    }

    /// A kube-rs client acting as a cluster admin (for test set-up).
    pub fn admin_client(&self) -> kube::Client {
        self.client_as(Identity::Admin)
    }

    /// Grants Weir's ServiceAccount `verbs` on `resources` of `group` in
    /// every namespace (an operator's addition to its ClusterRole, for a
    /// third-party plugin's grant).
    pub fn grant(&self, group: &str, resources: &[&str], verbs: &[&str]) {
        self.lock().policy.add_cluster_rule(group, resources, verbs);
    }

    /// Turns on the `OwnerReferencesPermissionEnforcement` admission
    /// plugin (on by default in OpenShift).
    pub fn enforce_owner_references(&self) {
        self.lock().enforce_owner_references = true;
    }

    /// Answers requests of `method` whose path contains `path` with a 422
    /// that names `field` as invalid, `times` times.
    pub fn refuse_field(&self, method: Method, path: &str, field: &str, times: usize) {
        self.lock()
            .invalid
            .push((method, path.to_string(), field.to_string(), times));
    }

    /// Injects a fault.
    pub fn inject(&self, fault: Fault) {
        self.inject_after(fault, 0);
    }

    /// Injects a fault that lets the first `skip` matching requests through.
    pub fn inject_after(&self, fault: Fault, skip: usize) {
        self.lock().faults.push((fault, skip));
    }

    /// Answers requests of `method` whose path contains `path` only after
    /// `delay` (the request is applied after the delay, if still wanted).
    pub fn slow(&self, method: Method, path: &str, delay: Duration) {
        self.lock().delays.push((method, path.to_string(), delay));
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Stops serving `group/version/plural` (as a cluster without that CRD,
    /// or without that version of it).
    pub fn unserve(&self, group_version_plural: &str) {
        let mut state = self.lock();
        state.resources.retain_mut(|r| {
            r.versions
                .retain(|v| format!("{}/{v}/{}", r.group, r.plural) != group_version_plural);
            !r.versions.is_empty()
        });
    }

    /// Installs Argo Rollouts' own CRDs in place of Weir's: their
    /// subresources (status and scale on Rollouts only), their required
    /// fields, and their structural schemas' pruning of status fields
    /// (see [`schema`]).
    pub fn with_argo_crds(self) -> Self {
        {
            let mut state = self.lock();
            let (argo, shapes) = schema::argo_crds();
            state.resources.retain(|r| r.group != "argoproj.io");
            state.resources.extend(argo);
            state.shapes = shapes;
        }
        self
    }

    /// Installs a CustomResourceDefinition: `kind` (`plural`) of `group`
    /// at `versions` (the preferred one first), namespaced or not.
    pub fn install(
        &self,
        group: &str,
        versions: &[&str],
        kind: &str,
        plural: &str,
        namespaced: bool,
    ) {
        self.lock().resources.push(Resource {
            group: group.into(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status_subresource: false,
            built_in: false,
            scale: None,
        });
    }

    /// Pods of ReplicaSets whose name starts with `prefix` never become
    /// ready (an image that does not start).
    pub fn never_ready(&self, prefix: &str) {
        self.lock()
            .pod_start
            .push((prefix.to_string(), Readiness::Never));
    }

    /// Pods of ReplicaSets whose name starts with `prefix` become ready
    /// `delay` after they are created.
    pub fn pods_start_after(&self, prefix: &str, delay: Duration) {
        self.lock()
            .pod_start
            .push((prefix.to_string(), Readiness::After(delay)));
    }

    /// Jobs whose name starts with `prefix` fail.
    pub fn jobs_fail(&self, prefix: &str) {
        self.lock().failing_jobs.push(prefix.to_string());
    }

    /// Forgets the change history (etcd compaction): a watch from an older
    /// version gets 410 Gone.
    pub fn compact(&self) {
        self.lock().store.compact();
    }

    /// The pods evicted so far (by name, in order).
    pub fn evictions(&self) -> Vec<String> {
        self.lock().evictions.clone()
    }

    /// Serves the simulation over HTTP on a loopback port, as a cluster
    /// admin's kubeconfig reaches it (the `weir` binary's `--kubeconfig`);
    /// returns the kubeconfig's path (in `dir`).
    pub async fn serve_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let server = server.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let request =
                                    Request::from_parts(parts, Body::from(bytes.to_vec()));
                                Ok::<_, Infallible>(server.handle(request, Identity::Admin).await)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster: {{server: 'http://{addr}'}}\nusers:\n- name: admin\n  user: {{token: admin}}\ncontexts:\n- name: sim\n  context: {{cluster: sim, user: admin, namespace: default}}\ncurrent-context: sim\n"
            ),
        )
        .expect("kubeconfig");
        path
    }

    /// Every DELETE so far: path and `propagationPolicy` (none when unset).
    pub fn deletes(&self) -> Vec<(String, Option<String>)> {
        self.lock().deletes.clone()
    }

    /// Stores `object` directly (as if created by someone else, before the
    /// test); `plural` is its resource. No controller reacts to it.
    pub fn seed(&self, plural: &str, object: Value) {
        let mut state = self.lock();
        let mut object = object;
        let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_string();
        let group = api_version
            .rsplit_once('/')
            .map(|(g, _)| g.to_string())
            .unwrap_or_default();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        object["metadata"]["uid"] = json!(format!("uid-{}-{}-{name}", plural, namespace));
        if object["metadata"].get("generation").is_none() {
            object["metadata"]["generation"] = json!(1);
        }
        state
            .store
            .put((group, plural.to_string(), namespace, name), object);
    }

    /// The stored object, if any.
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .store
            .objects
            .get(&(group.into(), plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// The stored objects of `group`/`plural` in `namespace`.
    pub fn objects(&self, group: &str, plural: &str, namespace: &str) -> Vec<Value> {
        self.lock()
            .store
            .objects
            .iter()
            .filter(|((g, p, ns, _), _)| g == group && p == plural && ns == namespace)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Injected faults, delays and refusals for this request, if any.
    async fn injected(&self, method: &Method, line: &str, watching: bool) -> Option<Reply> {
        let delay = self
            .lock()
            .delays
            .iter()
            .find(|(m, p, _)| m == method && line.contains(p.as_str()))
            .map(|(_, _, d)| *d);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.lock();
        let refusal = state
            .invalid
            .iter_mut()
            .find(|(m, p, _, times)| *times > 0 && m == method && line.contains(p.as_str()));
        if let Some((_, _, field, times)) = refusal {
            *times -= 1;
            return Some(invalid(
                "Object",
                "injected",
                field,
                "Invalid value: injected by the test",
            ));
        }
        let hit = state
            .faults
            .iter_mut()
            .filter(|(f, _)| f.times > 0 && f.method == *method && line.contains(&f.path))
            .find_map(|(fault, skip)| {
                if *skip > 0 {
                    *skip -= 1;
                    None
                } else {
                    Some(fault)
                }
            })?;
        hit.times -= 1;
        let (code, reason) = (hit.code, hit.reason.clone());
        if watching {
            // Watch errors arrive as an ERROR event in the stream.
            return Some(watch_error(code, &reason, "injected"));
        }
        Some(status(
            code,
            &reason,
            &format!("injected {code} for {line}"),
        ))
    }

    async fn handle(&self, request: Request<Body>, identity: Identity) -> Reply {
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let method = request.method().clone();
        let uri = request.uri().clone();
        let path = uri.path().to_string();
        let query: BTreeMap<String, String> = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let line = match uri.query() {
            Some(q) => format!("{method} {path}?{q}"),
            None => format!("{method} {path}"),
        };
        let bytes: Bytes = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        self.lock().requests.push(line.clone());
        if let Some(reply) = self.injected(&method, &line, watching).await {
            return reply;
        }
        if bytes.len() > MAX_REQUEST_BYTES {
            return status(
                413,
                "RequestEntityTooLarge",
                &format!("Request entity too large: limit is {MAX_REQUEST_BYTES}"),
            );
        }
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => return status(400, "BadRequest", &format!("the body is not JSON: {e}")),
            }
        };
        if let Some(reply) = self.discovery(&method, &path) {
            return reply;
        }
        let Some(target) = parse_path(&path) else {
            return unknown_resource();
        };
        let resource = {
            let state = self.lock();
            state
                .resources
                .iter()
                .find(|r| {
                    r.group == target.group
                        && r.plural == target.plural
                        && r.versions.contains(&target.version)
                })
                .cloned()
        };
        let Some(resource) = resource else {
            return unknown_resource();
        };
        let subresource_served = match target.subresource.as_deref() {
            None => true,
            Some("status") => resource.status_subresource,
            Some("scale") => resource.scale.is_some(),
            Some("eviction") => resource.group.is_empty() && resource.plural == "pods",
            Some(_) => false,
        };
        if !subresource_served {
            return unknown_resource();
        }
        if identity == Identity::Weir {
            let verb = match (&method, &target.name, watching) {
                (&Method::GET, _, true) => "watch",
                (&Method::GET, Some(_), _) => "get",
                (&Method::GET, None, _) => "list",
                (&Method::POST, _, _) => "create",
                (&Method::PUT, _, _) => "update",
                (&Method::PATCH, _, _) => "patch",
                (&Method::DELETE, Some(_), _) => "delete",
                _ => "deletecollection",
            };
            let access = Access {
                verb: verb.into(),
                group: target.group.clone(),
                resource: match &target.subresource {
                    Some(s) => format!("{}/{s}", target.plural),
                    None => target.plural.clone(),
                },
                namespace: target.namespace.clone(),
                name: target.name.clone(),
            };
            let state = self.lock();
            if !state.policy.allows(&access) {
                return forbidden(state.policy.refusal(&access));
            }
        }
        if watching {
            return self.watch(&target, &query);
        }
        let (reply, timers) = {
            let mut state = self.lock();
            state.serve(
                &method,
                &target,
                &resource,
                &query,
                body,
                identity,
                &path,
                &content_type,
            )
        };
        self.schedule(timers);
        reply
    }

    /// Runs the kubelet's timers: each pod starts (or becomes available)
    /// after its delay, and what that brings is scheduled in turn.
    fn schedule(&self, timers: Vec<controllers::PodTimer>) {
        for (delay, pod) in timers {
            let server = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let more = {
                    let mut state = server.lock();
                    let rules = state.pod_start.clone();
                    controllers::pod_started(&mut state.store, &pod, &rules)
                };
                server.schedule(more);
            });
        }
    }

    /// The discovery documents, for discovery paths.
    fn discovery(&self, method: &Method, path: &str) -> Option<Reply> {
        if *method != Method::GET {
            return None;
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let state = self.lock();
        let all = &state.resources;
        let document = match parts.as_slice() {
            ["api"] => Some(resources::core_versions()),
            ["api", version] => resources::resource_list(all, "", version),
            ["apis"] => Some(resources::group_list(all)),
            ["apis", group] => resources::group(all, group),
            ["apis", group, version] => resources::resource_list(all, group, version),
            _ => return None,
        };
        Some(match document {
            Some(d) => respond(200, d),
            None => unknown_resource(),
        })
    }

    fn watch(&self, target: &Target, query: &BTreeMap<String, String>) -> Reply {
        let Some(selector) = Selector::parse(query.get("labelSelector").map_or("", |s| s)) else {
            return status(400, "BadRequest", "unable to parse the label selector");
        };
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true");
        let since: Option<u64> = query
            .get("resourceVersion")
            .filter(|v| !v.is_empty() && *v != "0")
            .and_then(|v| v.parse().ok());
        let matches = {
            let (group, plural, namespace) = (
                target.group.clone(),
                target.plural.clone(),
                target.namespace.clone(),
            );
            let name = target.name.clone();
            move |key: &Key, object: &Value| {
                key.0 == group
                    && key.1 == plural
                    && (namespace.is_empty() || key.2 == namespace)
                    && name.as_ref().is_none_or(|n| *n == key.3)
                    && selector.matches(object)
            }
        };
        let (backlog, live) = {
            let state = self.lock();
            let backlog: Vec<(&'static str, Value)> = match since {
                Some(v) if v < state.store.compacted => {
                    return watch_error(
                        410,
                        "Expired",
                        &format!("too old resource version: {v} ({})", state.store.compacted),
                    );
                }
                Some(v) => state
                    .store
                    .history
                    .iter()
                    .filter(|c| c.version > v && matches(&c.key, &c.object))
                    .map(|c| (c.kind, c.object.clone()))
                    .collect(),
                // No version: the current objects, as ADDED.
                None => state
                    .store
                    .objects
                    .iter()
                    .filter(|(k, o)| matches(k, o))
                    .map(|(_, o)| ("ADDED", o.clone()))
                    .collect(),
            };
            (backlog, state.store.live.subscribe())
        };
        let server = self.clone();
        let kind = {
            let state = self.lock();
            state
                .resources
                .iter()
                .find(|r| r.group == target.group && r.plural == target.plural)
                .map(|r| (r.group_version(&target.version), r.kind.clone()))
                .unwrap_or_default()
        };
        let events = watch_stream(backlog, live, matches, bookmarks, kind, server);
        Response::new(StreamBody::new(events).boxed())
    }
}

/// Sends one raw request through `client`; returns the status code and
/// the JSON body (`null` when it is not JSON). For tests that check what
/// the server answers, code and all.
pub async fn send(
    client: &kube::Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap_or_default())
        .unwrap_or_default();
    send_bytes(client, method, path, "application/json", bytes).await
}

/// [`send`] of `body` exactly as given, as `content_type` (a PATCH's
/// `application/merge-patch+json`, say).
pub async fn send_bytes(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(Body::from(bytes));
    let Ok(request) = request else {
        return (0, Value::Null);
    };
    let Ok(response) = client.send(request).await else {
        return (0, Value::Null);
    };
    let code = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A watch answered with one ERROR event, then closed.
fn watch_error(code: u16, reason: &str, message: &str) -> Reply {
    let event = json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status",
        "status": "Failure", "code": code, "reason": reason, "message": message}});
    let mut text = serde_json::to_vec(&event).unwrap_or_default();
    text.push(b'\n');
    reply(text)
}

type Frame = Result<http_body::Frame<Bytes>, Infallible>;

fn event_line(kind: &str, object: &Value) -> Frame {
    let mut text = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    text.push(b'\n');
    Ok(http_body::Frame::data(Bytes::from(text)))
}

/// The events of one watch: the backlog, then live changes that match,
/// with a BOOKMARK each second when asked for. A watcher that falls too far
/// behind is closed (the client resumes from its last version).
fn watch_stream(
    backlog: Vec<(&'static str, Value)>,
    live: tokio::sync::broadcast::Receiver<store::Change>,
    matches: impl Fn(&Key, &Value) -> bool + Send + Sync + 'static,
    bookmarks: bool,
    (api_version, kind): (String, String),
    server: FakeApiServer,
) -> impl futures_util::Stream<Item = Frame> + Send {
    let backlog: std::collections::VecDeque<_> = backlog.into();
    let matches = Arc::new(matches);
    let tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    futures_util::stream::unfold(
        (backlog, live, tick),
        move |(mut backlog, mut live, mut tick)| {
            let matches = matches.clone();
            let (api_version, kind, server) = (api_version.clone(), kind.clone(), server.clone());
            async move {
                if let Some((event, object)) = backlog.pop_front() {
                    return Some((event_line(event, &object), (backlog, live, tick)));
                }
                loop {
                    tokio::select! {
                        change = live.recv() => match change {
                            Ok(c) if matches(&c.key, &c.object) => {
                                return Some((event_line(c.kind, &c.object), (backlog, live, tick)));
                            }
                            Ok(_) => {}
                            Err(_) => return None,
                        },
                        _ = tick.tick(), if bookmarks => {
                            let version = server.lock().store.version.to_string();
                            let bookmark = json!({"apiVersion": api_version, "kind": kind,
                                                  "metadata": {"resourceVersion": version}});
                            return Some((event_line("BOOKMARK", &bookmark), (backlog, live, tick)));
                        }
                    }
                }
            }
        },
    )
}

impl State {
    /// Serves one non-watch request on a served resource; returns the
    /// reply and the pods to mark ready later.
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        method: &Method,
        target: &Target,
        resource: &Resource,
        query: &BTreeMap<String, String>,
        body: Value,
        identity: Identity,
        path: &str,
        content_type: &str,
    ) -> (Reply, Vec<controllers::PodTimer>) {
        let key = |name: &str| -> Key {
            (
                target.group.clone(),
                target.plural.clone(),
                target.namespace.clone(),
                name.to_string(),
            )
        };
        let as_requested = |mut object: Value| {
            // Served at the version asked for (no conversion between the
            // versions of one CRD, as with `conversion: None`).
            object["apiVersion"] = json!(resource.group_version(&target.version));
            object
        };
        let mut timers = Vec::new();
        if target.subresource.as_deref() == Some("scale")
            && let (Some(name), Some(paths)) = (&target.name, &resource.scale)
        {
            return (
                self.scale(method, resource, &key(name), paths, &body),
                timers,
            );
        }
        if target.subresource.as_deref() == Some("eviction")
            && let Some(name) = &target.name
        {
            if *method != Method::POST {
                return (status(405, "MethodNotAllowed", "eviction: POST"), timers);
            }
            return self.evict(&key(name));
        }
        let reply = match (method, &target.name) {
            (&Method::PATCH, Some(name)) => {
                let Some(stored) = self.store.objects.get(&key(name)).cloned() else {
                    return (not_found(&target.plural, name), timers);
                };
                match patched(stored, body, content_type) {
                    Err(reply) => *reply,
                    Ok(object) => match self.update(target, resource, name, object, identity) {
                        Ok((object, t)) => {
                            timers = t;
                            respond(200, as_requested(object))
                        }
                        Err(reply) => *reply,
                    },
                }
            }
            (&Method::GET, Some(name)) => match self.store.objects.get(&key(name)) {
                Some(o) => respond(200, as_requested(o.clone())),
                None => not_found(&target.plural, name),
            },
            (&Method::GET, None) => self.list(target, resource, query),
            (&Method::POST, None) => match self.create(target, resource, body, identity) {
                Ok((object, t)) => {
                    timers = t;
                    respond(201, as_requested(object))
                }
                Err(reply) => *reply,
            },
            (&Method::PUT, Some(name)) => {
                match self.update(target, resource, name, body, identity) {
                    Ok((object, t)) => {
                        timers = t;
                        respond(200, as_requested(object))
                    }
                    Err(reply) => *reply,
                }
            }
            (&Method::DELETE, Some(name)) => {
                let requested = body["propagationPolicy"]
                    .as_str()
                    .or(query.get("propagationPolicy").map(String::as_str))
                    .map(str::to_string);
                self.deletes.push((path.to_string(), requested.clone()));
                let Some(stored) = self.store.objects.get(&key(name)).cloned() else {
                    return (not_found(&target.plural, name), timers);
                };
                let wanted = body["preconditions"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("");
                if !wanted.is_empty()
                    && stored["metadata"]["resourceVersion"].as_str() != Some(wanted)
                {
                    return (
                        status(
                            409,
                            "Conflict",
                            &format!(
                                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion: Precondition failed",
                                target.plural
                            ),
                        ),
                        timers,
                    );
                }
                let policy = Propagation::of(requested.as_deref(), &target.group, &target.plural);
                controllers::delete(&mut self.store, &key(name), policy);
                respond(
                    200,
                    json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200,
                           "details": {"name": name, "kind": target.plural}}),
                )
            }
            _ => status(
                405,
                "MethodNotAllowed",
                &format!("{method} is not simulated"),
            ),
        };
        (reply, timers)
    }

    /// The `scale` subresource (autoscaling/v1 Scale): what HPA and
    /// `kubectl scale` read and write, mapped through the CRD's paths.
    fn scale(
        &mut self,
        method: &Method,
        resource: &Resource,
        key: &Key,
        [spec_path, status_path, selector_path]: &[String; 3],
        body: &Value,
    ) -> Reply {
        let pointer = |path: &str| path.replace('.', "/");
        let Some(mut object) = self.store.objects.get(key).cloned() else {
            return not_found(&resource.plural, &key.3);
        };
        if *method == Method::PUT {
            let Some(replicas) = body["spec"]["replicas"].as_i64() else {
                return invalid("Scale", &key.3, "spec.replicas", "Required value");
            };
            if let Some(slot) = object.pointer_mut(&pointer(spec_path)) {
                *slot = json!(replicas);
            }
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
            object["metadata"]["generation"] = json!(generation + 1);
            object = self.store.put(key.clone(), object);
        } else if *method != Method::GET {
            return status(405, "MethodNotAllowed", "scale: GET or PUT");
        }
        respond(
            200,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                   "metadata": {"name": key.3, "namespace": key.2,
                                "resourceVersion": object["metadata"]["resourceVersion"]},
                   "spec": {"replicas": object.pointer(&pointer(spec_path)).cloned().unwrap_or(json!(0))},
                   "status": {"replicas": object.pointer(&pointer(status_path)).cloned().unwrap_or(json!(0)),
                              "selector": object.pointer(&pointer(selector_path)).cloned().unwrap_or(json!(""))}}),
        )
    }

    fn list(
        &self,
        target: &Target,
        resource: &Resource,
        query: &BTreeMap<String, String>,
    ) -> Reply {
        let Some(selector) = Selector::parse(query.get("labelSelector").map_or("", |s| s)) else {
            return status(400, "BadRequest", "unable to parse the label selector");
        };
        let all: Vec<Value> = self
            .store
            .objects
            .iter()
            .filter(|((g, p, ns, _), o)| {
                *g == target.group
                    && *p == target.plural
                    && (target.namespace.is_empty() || *ns == target.namespace)
                    && selector.matches(o)
            })
            .map(|(_, o)| o.clone())
            .collect();
        let offset: usize = query
            .get("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let end = offset.saturating_add(limit).min(all.len());
        let items: Vec<Value> = all
            .get(offset.min(all.len())..end)
            .unwrap_or_default()
            .iter()
            .cloned()
            .map(|mut o| {
                if resource.built_in
                    && let Some(map) = o.as_object_mut()
                {
                    map.remove("apiVersion");
                    map.remove("kind");
                } else {
                    o["apiVersion"] = json!(resource.group_version(&target.version));
                }
                o
            })
            .collect();
        let mut metadata = json!({"resourceVersion": self.store.version.to_string()});
        if end < all.len() {
            metadata["continue"] = json!(end.to_string());
            metadata["remainingItemCount"] = json!(all.len() - end);
        }
        respond(
            200,
            json!({"apiVersion": resource.group_version(&target.version),
                   "kind": format!("{}List", resource.kind),
                   "metadata": metadata, "items": items}),
        )
    }

    /// The checks every write of `object` gets: name, size, the kind's own
    /// validation, owner references.
    fn validate(
        &self,
        resource: &Resource,
        object: &Value,
        identity: Identity,
        stored: Option<&Value>,
    ) -> Result<(), Refused> {
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        let kind = &resource.kind;
        if !valid_name(name, resource.plural == "services") {
            return Err(Box::new(invalid(
                kind,
                name,
                "metadata.name",
                &format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.'"
                ),
            )));
        }
        if serde_json::to_vec(object).map_or(0, |b| b.len()) > MAX_OBJECT_BYTES {
            return Err(Box::new(status(
                500,
                "InternalError",
                "etcdserver: request is too large",
            )));
        }
        match resource.plural.as_str() {
            "replicasets" => {
                let selector = &object["spec"]["selector"]["matchLabels"];
                let labels = &object["spec"]["template"]["metadata"]["labels"];
                let selects = selector.as_object().is_some_and(|s| {
                    !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v))
                });
                if !selects {
                    return Err(Box::new(invalid(
                        kind,
                        name,
                        "spec.template.metadata.labels",
                        "Invalid value: `selector` does not match template `labels`",
                    )));
                }
                if let Some(stored) = stored
                    && stored["spec"]["selector"] != object["spec"]["selector"]
                {
                    return Err(Box::new(invalid(
                        kind,
                        name,
                        "spec.selector",
                        "Invalid value: field is immutable",
                    )));
                }
            }
            "services" => {
                let spec = &object["spec"];
                let headless = spec["clusterIP"] == "None" || spec["type"] == "ExternalName";
                let ports = spec["ports"].as_array().map_or(0, Vec::len);
                if ports == 0 && !headless {
                    return Err(Box::new(invalid(
                        kind,
                        name,
                        "spec.ports",
                        "Required value",
                    )));
                }
            }
            "leases" => {
                for field in ["acquireTime", "renewTime"] {
                    if let Some(t) = object["spec"][field].as_str()
                        && !micro_time(t)
                    {
                        return Err(Box::new(status(
                            400,
                            "BadRequest",
                            &format!(
                                "Lease in version \"v1\" cannot be handled as a Lease: spec.{field}: parsing time \"{t}\" as RFC3339Micro"
                            ),
                        )));
                    }
                }
            }
            _ => {}
        }
        if identity == Identity::Weir && self.enforce_owner_references {
            let blocking = object["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["blockOwnerDeletion"] == true);
            for owner in blocking {
                let api_version = owner["apiVersion"].as_str().unwrap_or("");
                let group = api_version
                    .rsplit_once('/')
                    .map(|(g, _)| g)
                    .unwrap_or_default();
                let plural = self
                    .resources
                    .iter()
                    .find(|r| r.group == group && Some(r.kind.as_str()) == owner["kind"].as_str())
                    .map(|r| r.plural.clone())
                    .unwrap_or_default();
                let access = Access {
                    verb: "update".into(),
                    group: group.to_string(),
                    resource: format!("{plural}/finalizers"),
                    namespace: object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    name: owner["name"].as_str().map(str::to_string),
                };
                if !self.policy.allows(&access) {
                    return Err(Box::new(forbidden(format!(
                        "{}.{} \"{name}\" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on: {}",
                        resource.plural,
                        resource.group,
                        self.policy.refusal(&access)
                    ))));
                }
            }
        }
        Ok(())
    }

    /// An installed schema's required fields, and its pruning of the
    /// status when this write sets it.
    fn enforce_schema(
        &self,
        resource: &Resource,
        object: &mut Value,
        writes_status: bool,
    ) -> Result<(), Refused> {
        let Some(shape) = self.shapes.iter().find(|s| s.plural == resource.plural) else {
            return Ok(());
        };
        if let Some(field) = schema::missing_required(object, &shape.required) {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            return Err(Box::new(invalid(
                &resource.kind,
                &name,
                &field,
                "Required value",
            )));
        }
        if writes_status
            && let (Some(tree), Some(status)) = (&shape.status, object.get_mut("status"))
        {
            schema::prune(status, tree);
        }
        Ok(())
    }

    fn create(
        &mut self,
        target: &Target,
        resource: &Resource,
        mut object: Value,
        identity: Identity,
    ) -> Result<(Value, Vec<controllers::PodTimer>), Refused> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if object["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
        {
            return Err(Box::new(invalid(
                &resource.kind,
                &name,
                "metadata.resourceVersion",
                "Invalid value: resourceVersion should not be set on objects to be created",
            )));
        }
        if resource.namespaced {
            let in_body = object["metadata"]["namespace"].as_str().unwrap_or("");
            if !in_body.is_empty() && in_body != target.namespace {
                return Err(Box::new(status(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )));
            }
            object["metadata"]["namespace"] = json!(target.namespace);
        }
        self.enforce_schema(resource, &mut object, true)?;
        self.validate(resource, &object, identity, None)?;
        let key: Key = (
            target.group.clone(),
            target.plural.clone(),
            target.namespace.clone(),
            name.clone(),
        );
        if self.store.objects.contains_key(&key) {
            return Err(Box::new(status(
                409,
                "AlreadyExists",
                &format!(
                    "{}.{} \"{name}\" already exists",
                    target.plural, target.group
                ),
            )));
        }
        if resource.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        let uid = format!(
            "uid-{}-{}-{name}-{}",
            target.plural,
            target.namespace,
            self.store.version + 1
        );
        object["metadata"]["uid"] = json!(uid);
        object["metadata"]["generation"] = json!(1);
        object["metadata"]["creationTimestamp"] =
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let stored = self.store.put(key.clone(), object);
        let timers = self.react(&key);
        let now = self.store.objects.get(&key).cloned().unwrap_or(stored);
        Ok((now, timers))
    }

    fn update(
        &mut self,
        target: &Target,
        resource: &Resource,
        name: &str,
        mut object: Value,
        identity: Identity,
    ) -> Result<(Value, Vec<controllers::PodTimer>), Refused> {
        let key: Key = (
            target.group.clone(),
            target.plural.clone(),
            target.namespace.clone(),
            name.to_string(),
        );
        let Some(stored) = self.store.objects.get(&key).cloned() else {
            return Err(Box::new(not_found(&target.plural, name)));
        };
        if object["metadata"]["name"].as_str() != Some(name) {
            return Err(Box::new(status(
                400,
                "BadRequest",
                &format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    object["metadata"]["name"].as_str().unwrap_or("")
                ),
            )));
        }
        let sent = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        let current = stored["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if sent.is_empty() && !resource.built_in {
            return Err(Box::new(invalid(
                &resource.kind,
                name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )));
        }
        if !sent.is_empty() && sent != current {
            return Err(Box::new(status(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    target.plural, target.group
                ),
            )));
        }
        if resource.namespaced {
            object["metadata"]["namespace"] = json!(target.namespace);
        }
        let status_write = target.subresource.as_deref() == Some("status");
        if status_write {
            // Only the status changes.
            let status = object.get("status").cloned();
            object = stored.clone();
            match status {
                Some(s) => object["status"] = s,
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        } else if resource.status_subresource {
            match stored.get("status") {
                Some(s) => object["status"] = s.clone(),
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        // What the server owns.
        object["metadata"]["uid"] = stored["metadata"]["uid"].clone();
        object["metadata"]["creationTimestamp"] = stored["metadata"]["creationTimestamp"].clone();
        let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1);
        let bumped = if spec_part(&object) != spec_part(&stored) {
            generation + 1
        } else {
            generation
        };
        object["metadata"]["generation"] = json!(bumped);
        self.enforce_schema(
            resource,
            &mut object,
            status_write || !resource.status_subresource,
        )?;
        self.validate(resource, &object, identity, Some(&stored))?;
        if comparable(&object) == comparable(&stored) {
            // Nothing changed: no new version, no event.
            return Ok((stored, Vec::new()));
        }
        let written = self.store.put(key.clone(), object);
        let timers = if status_write {
            Vec::new()
        } else {
            self.react(&key)
        };
        let now = self.store.objects.get(&key).cloned().unwrap_or(written);
        Ok((now, timers))
    }

    /// An Eviction of pod `key` (no PodDisruptionBudgets are simulated):
    /// the pod goes and its ReplicaSet makes a new one.
    fn evict(&mut self, key: &Key) -> (Reply, Vec<controllers::PodTimer>) {
        let Some(pod) = self.store.remove(key) else {
            return (not_found("pods", &key.3), Vec::new());
        };
        self.evictions.push(key.3.clone());
        let owner = pod["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let rs_key: Key = ("apps".into(), "replicasets".into(), key.2.clone(), owner);
        let timers = self.react(&rs_key);
        (
            respond(
                201,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}),
            ),
            timers,
        )
    }

    /// The controllers' reaction to a write of `key`.
    fn react(&mut self, key: &Key) -> Vec<controllers::PodTimer> {
        match (key.0.as_str(), key.1.as_str()) {
            ("apps", "replicasets") => {
                let rules = self.pod_start.clone();
                controllers::sync_replica_set(&mut self.store, key, &rules)
            }
            ("batch", "jobs") => {
                let failing = self.failing_jobs.clone();
                controllers::run_job(&mut self.store, key, &failing);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// `stored` with a PATCH body applied: a JSON merge patch
/// (`application/merge-patch+json`, what kubectl-argo-rollouts sends) or a
/// JSON patch (`application/json-patch+json`, its `undo`). Strategic merge
/// and server-side apply are not simulated (Weir sends neither).
fn patched(mut stored: Value, body: Value, content_type: &str) -> Result<Value, Refused> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json" => {
            json_patch::merge(&mut stored, &body);
            Ok(stored)
        }
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_value(body).map_err(|e| {
                Box::new(status(400, "BadRequest", &format!("not a JSON patch: {e}")))
            })?;
            json_patch::patch(&mut stored, &ops)
                .map_err(|e| Box::new(invalid("Object", "patch", "patch", &format!("{e}"))))?;
            Ok(stored)
        }
        other => Err(Box::new(status(
            415,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json (not simulated: {other})"
            ),
        ))),
    }
}
