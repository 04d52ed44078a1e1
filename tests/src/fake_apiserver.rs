//! A fake Kubernetes API server, as a tower service a kube-rs `Client` is
//! built on (kube-rs's own mock-service convention). No API server can run
//! on this machine, so this is a mock, and says so: it keeps objects in
//! memory with resourceVersions, answers get / list / create / replace /
//! delete / watch on the `/api` and `/apis` paths, records every request,
//! and injects faults (a 403, a 409, a 410 on watch; from the n-th match
//! on) and delays on request.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use std::convert::Infallible;

/// What the fake answers with.
type Reply = Response<BoxBody<Bytes, Infallible>>;

fn reply(bytes: Vec<u8>) -> Reply {
    Response::new(Full::new(Bytes::from(bytes)).boxed())
}
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

#[derive(Default)]
struct State {
    /// (group, plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String, String), Value>,
    version: u64,
    requests: Vec<String>,
    /// Faults, each after skipping that many matching requests.
    faults: Vec<(Fault, usize)>,
    /// (method, path substring, delay) before answering.
    delays: Vec<(Method, String, std::time::Duration)>,
    /// Resources (`group/version/plural`) the server does not serve.
    unserved: Vec<String>,
    /// Each DELETE's path and `propagationPolicy`.
    deletes: Vec<(String, Option<String>)>,
    /// (method, path substring, field, times): 422s naming a field.
    invalid: Vec<(Method, String, String, usize)>,
    /// ReplicaSets (by name prefix) whose pods never become ready.
    never_ready: Vec<String>,
}

/// What the ReplicaSet controller and kubelet would write once the pods of
/// `rs` are (or are not) ready: the server's stand-in for them.
fn replica_set_status(rs: &Value, ready: bool) -> Value {
    let desired = rs["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready_count = if ready { desired } else { 0 };
    json!({"replicas": desired, "readyReplicas": ready_count, "availableReplicas": ready_count})
}

/// Groups whose list items come without `apiVersion` / `kind`, as a real
/// API server sends them for built-in kinds (kubernetes #63676, #98925).
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "networking.k8s.io",
    "coordination.k8s.io",
];

/// The fake server; clone it to keep a handle on its state.
#[derive(Clone, Default)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

struct Target {
    group: String,
    plural: String,
    namespace: String,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match *parts.first()? {
        "api" => (String::new(), parts.get(2..)?),
        "apis" => (parts.get(1)?.to_string(), parts.get(3..)?),
        _ => return None,
    };
    let (namespace, rest) = match rest.first() {
        Some(&"namespaces") if rest.len() >= 3 => (rest.get(1)?.to_string(), rest.get(2..)?),
        _ => (String::new(), rest),
    };
    Some(Target {
        group,
        plural: rest.first()?.to_string(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
    })
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

/// A 422 naming the invalid field.
fn invalid(field: &str, message: &str) -> Reply {
    respond(
        422,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 422,
               "reason": "Invalid", "message": format!("{field}: Invalid value: {message}"),
               "details": {"causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}}),
    )
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

fn labels_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let Some((k, v)) = term.split_once('=') else {
            return false;
        };
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

impl FakeApiServer {
    /// An empty server.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kube-rs client talking to this server.
    pub fn client(&self) -> kube::Client {
        let server = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(request).await) }
        });
        kube::Client::new(service, "default")
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
    pub fn slow(&self, method: Method, path: &str, delay: std::time::Duration) {
        self.lock().delays.push((method, path.to_string(), delay));
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Stops serving `group/version/plural` (as a cluster without that CRD,
    /// or without that version of it): requests for it get the server's 404
    /// that names no object.
    pub fn unserve(&self, group_version_plural: &str) {
        self.lock().unserved.push(group_version_plural.to_string());
    }

    /// ReplicaSets whose name starts with `prefix` never get ready pods (an
    /// image that does not start); others are ready as soon as written.
    pub fn never_ready(&self, prefix: &str) {
        self.lock().never_ready.push(prefix.to_string());
    }

    /// Every DELETE so far: path and `propagationPolicy` (none when unset).
    pub fn deletes(&self) -> Vec<(String, Option<String>)> {
        self.lock().deletes.clone()
    }

    /// Stores `object` directly (as if created by someone else); `plural` is its resource.
    pub fn seed(&self, plural: &str, object: Value) {
        let mut state = self.lock();
        state.version += 1;
        let version = state.version.to_string();
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(version);
        object["metadata"]["uid"] = json!(format!("uid-{version}"));
        let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_string();
        let group = api_version
            .rsplit_once('/')
            .map(|(g, _)| g.to_string())
            .unwrap_or_default();
        let key = (
            group,
            plural.to_string(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        state.objects.insert(key, object);
    }

    /// The stored object, if any.
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(group.into(), plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    async fn handle(&self, request: Request<Body>) -> Reply {
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
        let body: Bytes = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        self.lock().requests.push(line.clone());
        let delay = self
            .lock()
            .delays
            .iter()
            .find(|(m, p, _)| *m == method && line.contains(p.as_str()))
            .map(|(_, _, d)| *d);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        {
            let mut state = self.lock();
            let refusal = state
                .invalid
                .iter_mut()
                .find(|(m, p, _, times)| *times > 0 && *m == method && line.contains(p.as_str()));
            if let Some((_, _, field, times)) = refusal {
                *times -= 1;
                return invalid(field, "Invalid value: injected by the test");
            }
            let hit = state
                .faults
                .iter_mut()
                .filter(|(f, _)| f.times > 0 && f.method == method && line.contains(&f.path))
                .find_map(|(fault, skip)| {
                    if *skip > 0 {
                        *skip -= 1;
                        None
                    } else {
                        Some(fault)
                    }
                });
            if let Some(fault) = hit {
                fault.times -= 1;
                let (code, reason) = (fault.code, fault.reason.clone());
                if watching {
                    // Watch errors arrive as an ERROR event in the stream.
                    let event = json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status",
                        "status": "Failure", "code": code, "reason": reason, "message": "injected"}});
                    let mut text = serde_json::to_vec(&event).unwrap_or_default();
                    text.push(b'\n');
                    return reply(text);
                }
                return status(code, &reason, &format!("injected {code} for {line}"));
            }
        }
        let Some(target) = parse_path(&path) else {
            return status(404, "NotFound", "unknown path");
        };
        let version = path
            .trim_matches('/')
            .split('/')
            .nth(if path.starts_with("/api/") { 1 } else { 2 })
            .unwrap_or("")
            .to_string();
        let resource_id = format!("{}/{version}/{}", target.group, target.plural);
        if self.lock().unserved.contains(&resource_id) {
            // What a server answers for a resource type it does not have.
            return respond(
                404,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 404,
                       "reason": "NotFound", "message": "the server could not find the requested resource",
                       "details": {}}),
            );
        }
        if watching {
            // An idle watch: the connection stays open, nothing happens.
            let stream =
                futures_util::stream::pending::<Result<http_body::Frame<Bytes>, Infallible>>();
            return Response::new(StreamBody::new(stream).boxed());
        }
        let mut state = self.lock();
        let key = |name: &str| {
            (
                target.group.clone(),
                target.plural.clone(),
                target.namespace.clone(),
                name.to_string(),
            )
        };
        match (method, &target.name) {
            (Method::GET, Some(name)) => match state.objects.get(&key(name)) {
                Some(o) => respond(200, o.clone()),
                None => not_found(&target.plural, name),
            },
            (Method::GET, None) => {
                let selector = query.get("labelSelector").cloned().unwrap_or_default();
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|((g, p, ns, _), _)| {
                        *g == target.group
                            && *p == target.plural
                            && (target.namespace.is_empty() || *ns == target.namespace)
                    })
                    .map(|(_, o)| o.clone())
                    .filter(|o| labels_match(o, &selector))
                    .map(|mut o| {
                        if BUILT_IN_GROUPS.contains(&target.group.as_str())
                            && let Some(map) = o.as_object_mut()
                        {
                            map.remove("apiVersion");
                            map.remove("kind");
                        }
                        o
                    })
                    .collect();
                respond(
                    200,
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": state.version.to_string()}, "items": items}),
                )
            }
            (Method::POST, None) => {
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
                if body["metadata"]["resourceVersion"]
                    .as_str()
                    .is_some_and(|v| !v.is_empty())
                {
                    return invalid(
                        "metadata.resourceVersion",
                        "resourceVersion should not be set on objects to be created",
                    );
                }
                if state.objects.contains_key(&key(&name)) {
                    return status(409, "AlreadyExists", &format!("{name} already exists"));
                }
                state.version += 1;
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(state.version.to_string());
                object["metadata"]["uid"] = json!(format!("uid-{}", state.version));
                if !target.namespace.is_empty() {
                    object["metadata"]["namespace"] = json!(target.namespace);
                }
                if target.plural == "replicasets" {
                    let ready = !state
                        .never_ready
                        .iter()
                        .any(|p| name.starts_with(p.as_str()));
                    object["status"] = replica_set_status(&object, ready);
                }
                state.objects.insert(key(&name), object.clone());
                respond(201, object)
            }
            (Method::PUT, Some(name)) => {
                let Some(stored) = state.objects.get(&key(name)).cloned() else {
                    return not_found(&target.plural, name);
                };
                let sent = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
                let current = stored["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if !sent.is_empty() && sent != current {
                    return status(
                        409,
                        "Conflict",
                        "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                state.version += 1;
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(state.version.to_string());
                object["metadata"]["uid"] = stored["metadata"]["uid"].clone();
                if target.plural == "replicasets" {
                    let ready = !state
                        .never_ready
                        .iter()
                        .any(|p| name.starts_with(p.as_str()));
                    object["status"] = replica_set_status(&object, ready);
                }
                state.objects.insert(key(name), object.clone());
                respond(200, object)
            }
            (Method::DELETE, Some(name)) => {
                state.deletes.push((
                    path.clone(),
                    body["propagationPolicy"].as_str().map(str::to_string),
                ));
                let Some(stored) = state.objects.get(&key(name)).cloned() else {
                    return not_found(&target.plural, name);
                };
                let wanted = body["preconditions"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("");
                if !wanted.is_empty()
                    && stored["metadata"]["resourceVersion"].as_str() != Some(wanted)
                {
                    return status(409, "Conflict", "precondition failed");
                }
                state.objects.remove(&key(name));
                respond(
                    200,
                    json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200}),
                )
            }
            _ => status(405, "MethodNotAllowed", "not supported by the fake"),
        }
    }
}
