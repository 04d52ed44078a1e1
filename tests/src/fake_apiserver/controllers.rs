//! The controllers that run beside a real API server, as far as Weir
//! meets them: the ReplicaSet controller with a kubelet stand-in (Pods per
//! ReplicaSet, Ready at once, after a delay, or never; the ReplicaSet's
//! `status.replicas` / `readyReplicas` / `availableReplicas` /
//! `observedGeneration` written as the real controller does: a pod is
//! available once its Ready condition's `lastTransitionTime` is
//! `spec.minReadySeconds` old), the Job
//! controller (a Pod per Job, then `Complete` or `Failed`), and the garbage
//! collector (dependents by `ownerReferences`, per `propagationPolicy`).
//!
//! How long a ReplicaSet's pods take to start is set per ReplicaSet name
//! prefix by the test, or by the pod template annotation
//! `weir.dev/simulated-readiness` (a duration, or `never`) — the same
//! annotation the embedded store's stand-in reads, so one manifest behaves
//! alike on both backends.

use super::store::{Key, Store};
use serde_json::{Value, json};
use std::time::Duration;

/// When a ReplicaSet's pods become ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// This long after the pod is created.
    After(Duration),
    /// Never (an image that does not start, a failing probe).
    Never,
}

/// The pod-template annotation the simulation honours: the one the
/// embedded store's stand-in reads.
pub use weir::controller::readiness::SIMULATED_READINESS;

/// A pod to mark ready after a delay.
pub type PodTimer = (Duration, Key);

fn key_of(group: &str, plural: &str, object: &Value) -> Key {
    (
        group.to_string(),
        plural.to_string(),
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

fn owner_reference(api_version: &str, kind: &str, owner: &Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
           "controller": true, "blockOwnerDeletion": true})
}

fn readiness_of(rs: &Value, rules: &[(String, Readiness)]) -> Readiness {
    let name = rs["metadata"]["name"].as_str().unwrap_or("");
    if let Some((_, r)) = rules.iter().find(|(p, _)| name.starts_with(p.as_str())) {
        return *r;
    }
    match rs["spec"]["template"]["metadata"]["annotations"][SIMULATED_READINESS].as_str() {
        Some("never") => Readiness::Never,
        Some(d) => Readiness::After(weir::analysis::types::parse_duration(d).unwrap_or_default()),
        None => Readiness::After(Duration::ZERO),
    }
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Sets a pod's Ready condition; its `lastTransitionTime` (whole seconds,
/// as the API serializes it) changes only when the condition does.
fn set_pod_ready(pod: &mut Value, ready: bool) {
    if pod_ready(pod) == ready && pod["status"]["conditions"].is_array() {
        return;
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    pod["status"] = json!({
        "phase": if ready { "Running" } else { "Pending" },
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                        "lastTransitionTime": now}],
    });
}

/// How long until a ready pod has been ready for `min_ready` (zero: it is
/// available); `None` for a pod that is not ready.
fn until_available(pod: &Value, min_ready: Duration) -> Option<Duration> {
    if !pod_ready(pod) {
        return None;
    }
    let since = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))?;
    let at = since + chrono::Duration::from_std(min_ready).ok()?;
    Some((at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// Brings ReplicaSet `key`'s pods to its `spec.replicas` and writes its
/// status; returns the pods that become ready later.
pub fn sync_replica_set(
    store: &mut Store,
    key: &Key,
    rules: &[(String, Readiness)],
) -> Vec<PodTimer> {
    let Some(rs) = store.objects.get(key).cloned() else {
        return Vec::new();
    };
    let uid = rs["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let desired = rs["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let mut pods: Vec<Key> = store
        .dependents(&uid)
        .into_iter()
        .filter(|k| k.1 == "pods")
        .collect();
    pods.sort_by_key(|k| index_of(&k.3));
    let mut timers = Vec::new();
    // Scale down: the newest pods go first.
    while pods.len() > desired {
        if let Some(gone) = pods.pop() {
            store.remove(&gone);
        }
    }
    // Scale up.
    let mut next = pods.last().map(|k| index_of(&k.3) + 1).unwrap_or(0);
    while pods.len() < desired {
        let name = format!("{}-{next}", key.3);
        next += 1;
        let readiness = readiness_of(&rs, rules);
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": key.2,
                         "uid": format!("uid-pod-{}-{name}", key.2),
                         "creationTimestamp": chrono::Utc::now()
                             .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                         "labels": rs["spec"]["template"]["metadata"]["labels"],
                         "ownerReferences": [owner_reference("apps/v1", "ReplicaSet", &rs)]},
            "spec": rs["spec"]["template"]["spec"],
        });
        set_pod_ready(&mut pod, readiness == Readiness::After(Duration::ZERO));
        let pod_key = key_of("", "pods", &pod);
        store.put(pod_key.clone(), pod);
        if let Readiness::After(d) = readiness
            && !d.is_zero()
        {
            timers.push((d, pod_key.clone()));
        }
        pods.push(pod_key);
    }
    timers.extend(write_replica_set_status(store, key, &pods));
    timers
}

fn index_of(pod_name: &str) -> u64 {
    pod_name
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Writes the ReplicaSet's status from its pods; returns a timer for each
/// ready pod not yet available (ready for less than `minReadySeconds`),
/// so the status is written again when it is.
fn write_replica_set_status(store: &mut Store, key: &Key, pods: &[Key]) -> Vec<PodTimer> {
    let Some(mut rs) = store.objects.get(key).cloned() else {
        return Vec::new();
    };
    let min_ready = Duration::from_secs(rs["spec"]["minReadySeconds"].as_u64().unwrap_or(0));
    let mut ready = 0;
    let mut available = 0;
    let mut timers = Vec::new();
    for pod_key in pods {
        let Some(pod) = store.objects.get(pod_key) else {
            continue;
        };
        match until_available(pod, min_ready) {
            None => {}
            Some(wait) if wait.is_zero() => {
                ready += 1;
                available += 1;
            }
            Some(wait) => {
                ready += 1;
                timers.push((wait, pod_key.clone()));
            }
        }
    }
    let status = json!({
        "replicas": pods.len(),
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs["metadata"]["generation"],
    });
    if rs["status"] != status {
        rs["status"] = status;
        store.put(key.clone(), rs);
    }
    timers
}

/// Marks pod `key` ready (its start-up delay passed; a pod already ready
/// stays as it is) and updates its ReplicaSet; returns the timers that
/// update brings (pods to count as available later).
pub fn pod_started(store: &mut Store, key: &Key, rules: &[(String, Readiness)]) -> Vec<PodTimer> {
    let Some(mut pod) = store.objects.get(key).cloned() else {
        return Vec::new();
    };
    set_pod_ready(&mut pod, true);
    let owner = pod["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    store.put(key.clone(), pod);
    let rs_key = (
        "apps".to_string(),
        "replicasets".to_string(),
        key.2.clone(),
        owner,
    );
    sync_replica_set(store, &rs_key, rules)
}

/// Runs Job `key`: one Pod, then `Complete` (or `Failed` when its name
/// starts with one of `failing`).
pub fn run_job(store: &mut Store, key: &Key, failing: &[String]) {
    let Some(mut job) = store.objects.get(key).cloned() else {
        return;
    };
    if job["status"].get("conditions").is_some() {
        return;
    }
    let pod_name = format!("{}-run", key.3);
    let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels["job-name"] = json!(key.3);
    labels["batch.kubernetes.io/job-name"] = json!(key.3);
    labels["controller-uid"] = job["metadata"]["uid"].clone();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": key.2, "labels": labels,
                     "uid": format!("uid-pod-{}-{pod_name}", key.2),
                     "ownerReferences": [owner_reference("batch/v1", "Job", &job)]},
        "spec": job["spec"]["template"]["spec"],
        "status": {"phase": "Succeeded"},
    });
    store.put(key_of("", "pods", &pod), pod);
    let fails = failing.iter().any(|p| key.3.starts_with(p.as_str()));
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    job["status"] = if fails {
        json!({"failed": 1, "startTime": now,
               "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                               "message": "Job has reached the specified backoff limit"}]})
    } else {
        json!({"succeeded": 1, "startTime": now, "completionTime": now,
               "conditions": [{"type": "Complete", "status": "True"}]})
    };
    store.put(key.clone(), job);
}

/// How a delete treats the object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted before the owner.
    Foreground,
    /// Dependents are deleted after the owner.
    Background,
    /// Dependents stay, without the owner reference.
    Orphan,
}

impl Propagation {
    /// The policy a request names, or the resource's default (batch/v1
    /// Jobs orphan their pods unless told otherwise; the rest cascade in
    /// the background).
    pub fn of(requested: Option<&str>, group: &str, plural: &str) -> Propagation {
        match requested {
            Some("Foreground") => Propagation::Foreground,
            Some("Background") => Propagation::Background,
            Some("Orphan") => Propagation::Orphan,
            _ if group == "batch" && plural == "jobs" => Propagation::Orphan,
            _ => Propagation::Background,
        }
    }
}

/// Deletes `key` and treats its dependents per `policy` (recursively: a
/// collected dependent's own dependents are collected too). The cascade is
/// immediate; a real collector takes a moment, and holds a foreground
/// owner (with `deletionTimestamp` set) until its dependents are gone.
pub fn delete(store: &mut Store, key: &Key, policy: Propagation) -> Option<Value> {
    let uid = store.objects.get(key)?["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let dependents = store.dependents(&uid);
    let cascade = |store: &mut Store| {
        for d in &dependents {
            delete(store, d, Propagation::Background);
        }
    };
    match policy {
        Propagation::Foreground => {
            cascade(store);
            store.remove(key)
        }
        Propagation::Background => {
            let gone = store.remove(key);
            cascade(store);
            gone
        }
        Propagation::Orphan => {
            for d in &dependents {
                if let Some(mut o) = store.objects.get(d).cloned() {
                    if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != uid.as_str());
                    }
                    store.put(d.clone(), o);
                }
            }
            store.remove(key)
        }
    }
}
