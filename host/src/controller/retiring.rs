//! ReplicaSets that traffic has left, kept up for a while before they are
//! scaled down (Argo's `scaleDownDelaySeconds`, `scaleDownDelayRevisionLimit`
//! and `abortScaleDownDelaySeconds`).
//!
//! Routers, meshes and kube-proxy take time to stop sending requests to pods
//! a route or a Service no longer selects: scaling those pods down at once
//! drops the requests still reaching them. So, with traffic routing, a
//! ReplicaSet traffic has left carries Argo's `scale-down-deadline`
//! annotation and is scaled down once the deadline has passed.
//!
//! Finding those ReplicaSets must not cost a list of the namespace on every
//! pass, so the stable ReplicaSet (which every pass reads anyway) names them
//! in [`RETIRING`]; when the stable changes, the list moves to the new one.
//! A pass with nothing retiring makes no request for this.

use super::children::{replica_set_of, scale};
use super::spec::RolloutView;
use crate::cluster::{Cluster, ClusterError, Write};
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde_json::{Map, Value};
use std::time::Duration;

/// When a retiring ReplicaSet is scaled down (Argo's annotation, RFC 3339).
pub const SCALE_DOWN_DEADLINE: &str = "argo-rollouts.argoproj.io/scale-down-deadline";

/// On the stable ReplicaSet: the pod-template hashes of the retiring ones,
/// oldest first, comma-separated.
pub const RETIRING: &str = "weir.dev/retiring";

/// How many hashes [`RETIRING`] is read for: the annotation can be edited
/// by anyone who can edit the ReplicaSet, and each entry costs a request.
pub const MAX_RETIRING: usize = 32;

/// What [`due`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The earliest deadline still ahead, if any: look again then.
    pub next: Option<DateTime<Utc>>,
    /// How many ReplicaSets were scaled down.
    pub scaled: usize,
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn annotations_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let metadata = object
        .as_object_mut()?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let annotations = metadata
        .as_object_mut()?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    annotations.as_object_mut()
}

/// Removes annotation `key` from `object`; whether it was there.
pub(crate) fn remove_annotation(object: &mut Value, key: &str) -> bool {
    if annotation(object, key).is_none() {
        return false;
    }
    annotations_mut(object).is_some_and(|a| a.remove(key).is_some())
}

fn set_annotation(object: &mut Value, key: &str, value: String) {
    if let Some(a) = annotations_mut(object) {
        a.insert(key.to_string(), Value::String(value));
    }
}

/// The scale-down deadline `rs` carries, if it carries a readable one.
pub fn deadline_of(rs: &Value) -> Option<DateTime<Utc>> {
    annotation(rs, SCALE_DOWN_DEADLINE)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// One ReplicaSet the stable lists as retiring: its hash and, when the
/// entry carries it, its deadline (so a pass need not read the ReplicaSet
/// to know it is not due).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its pod-template hash.
    pub hash: String,
    /// When it is scaled down.
    pub deadline: Option<DateTime<Utc>>,
}

/// What `holder` lists as retiring, oldest first: `hash@deadline` entries
/// (a bare hash has its deadline on its ReplicaSet); at most
/// [`MAX_RETIRING`], each a plausible hash; anything else is ignored.
pub fn retiring_of(holder: &Value) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for item in annotation(holder, RETIRING).unwrap_or("").split(',') {
        let (hash, deadline) = match item.trim().split_once('@') {
            Some((hash, at)) => (
                hash,
                DateTime::parse_from_rfc3339(at)
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
            ),
            None => (item.trim(), None),
        };
        let plausible = !hash.is_empty()
            && hash.len() <= 63
            && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if plausible && !out.iter().any(|e| e.hash == hash) {
            out.push(Entry {
                hash: hash.to_string(),
                deadline,
            });
        }
        if out.len() >= MAX_RETIRING {
            break;
        }
    }
    out
}

/// The annotation's text for `entries`.
fn list_text(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| match e.deadline {
            Some(at) => format!("{}@{}", e.hash, deadline_text(at)),
            None => e.hash.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Sets (or, for no entries, removes) `holder`'s list.
fn set_list(holder: &mut Value, entries: &[Entry]) {
    if entries.is_empty() {
        remove_annotation(holder, RETIRING);
    } else {
        set_annotation(holder, RETIRING, list_text(entries));
    }
}

fn replicas_of(rs: &Value) -> i64 {
    rs.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn deadline_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `now + delay`, rounded up to the whole second the annotation keeps (so
/// the pods never go sooner than asked), saturating.
pub fn deadline_after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    let at = chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let whole = at.with_nanosecond(0).unwrap_or(at);
    if whole < at {
        whole
            .checked_add_signed(chrono::Duration::seconds(1))
            .unwrap_or(whole)
    } else {
        whole
    }
}

/// Writes `object` back, conditional on the version it was read at;
/// returns it as stored.
async fn write(cluster: &dyn Cluster, object: Value) -> Result<Option<Value>, ClusterError> {
    Ok(cluster
        .apply(vec![Write::update_as_read(object)])
        .await?
        .into_iter()
        .next()
        .flatten())
}

/// Marks `rs` to be scaled down at `at` (keeping a deadline it already
/// has); returns the deadline in force.
pub async fn mark(
    cluster: &dyn Cluster,
    mut rs: Value,
    at: DateTime<Utc>,
) -> Result<DateTime<Utc>, ClusterError> {
    if let Some(existing) = deadline_of(&rs) {
        return Ok(existing);
    }
    set_annotation(&mut rs, SCALE_DOWN_DEADLINE, deadline_text(at));
    write(cluster, rs).await?;
    // What was written: whole seconds.
    Ok(at.with_nanosecond(0).unwrap_or(at))
}

/// What [`retire`] did.
#[derive(Debug, Default)]
pub struct Retired {
    /// The earliest deadline set.
    pub earliest: Option<DateTime<Utc>>,
    /// The holder as it is now (written or read), if it exists.
    pub holder: Option<Value>,
}

/// Traffic has left the ReplicaSets of `hashes`: each keeps its pods until
/// `now + delay` (scaled down at once when `delay` is zero) and is listed
/// on the ReplicaSet of `holder`, the stable one. What a retired
/// ReplicaSet itself listed (it was the stable before) moves to `holder`
/// too.
pub async fn retire(
    cluster: &dyn Cluster,
    view: &RolloutView,
    holder: &str,
    hashes: &[&str],
    delay: Duration,
    now: DateTime<Utc>,
) -> Result<Retired, ClusterError> {
    let mut listed: Vec<Entry> = Vec::new();
    let mut earliest: Option<DateTime<Utc>> = None;
    for &hash in hashes.iter().filter(|h| **h != holder) {
        let Some(mut rs) = replica_set_of(cluster, view, hash).await? else {
            continue;
        };
        listed.extend(retiring_of(&rs));
        let carried_list = remove_annotation(&mut rs, RETIRING);
        if replicas_of(&rs) == 0 {
            if carried_list {
                write(cluster, rs).await?;
            }
            continue;
        }
        if delay.is_zero() {
            scale(cluster, rs, 0).await?;
            continue;
        }
        let at = match deadline_of(&rs) {
            Some(at) => {
                if carried_list {
                    write(cluster, rs).await?;
                }
                at
            }
            None => mark(cluster, rs, deadline_after(now, delay)).await?,
        };
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
        listed.push(Entry {
            hash: hash.to_string(),
            deadline: Some(at),
        });
    }
    let Some(mut stable) = replica_set_of(cluster, view, holder).await? else {
        // Nobody would remember them: scale them down now rather than
        // leave them up for good.
        for entry in &listed {
            if let Some(rs) = replica_set_of(cluster, view, &entry.hash).await? {
                scale(cluster, rs, 0).await?;
            }
        }
        return Ok(Retired::default());
    };
    let before = retiring_of(&stable);
    let mut list = before.clone();
    for entry in listed {
        if entry.hash != holder && !list.iter().any(|e| e.hash == entry.hash) {
            list.push(entry);
        }
    }
    list.retain(|e| e.hash != holder);
    // Only MAX_RETIRING entries are ever read back: the oldest beyond that
    // go now rather than be forgotten with their pods up.
    while list.len() > MAX_RETIRING {
        let oldest = list.remove(0);
        if let Some(rs) = replica_set_of(cluster, view, &oldest.hash).await? {
            scale(cluster, rs, 0).await?;
        }
    }
    // The holder serves traffic: it is not retiring itself.
    let mut changed = remove_annotation(&mut stable, SCALE_DOWN_DEADLINE);
    if list != before {
        changed = true;
        set_list(&mut stable, &list);
    }
    let holder = if changed {
        write(cluster, stable).await?
    } else {
        Some(stable)
    };
    Ok(Retired { earliest, holder })
}

/// Scales down what `holder` (the stable ReplicaSet of hash `holder_hash`,
/// as read this pass) lists as retiring once its deadline has passed, or at
/// once when more than `limit` are retiring (oldest first). A listed
/// ReplicaSet in `keep` serves traffic again and leaves the list. Entries
/// with a deadline still ahead cost no request.
pub async fn due(
    cluster: &dyn Cluster,
    view: &RolloutView,
    holder_hash: &str,
    holder: &Value,
    keep: &[&str],
    limit: Option<usize>,
    now: DateTime<Utc>,
) -> Result<Due, ClusterError> {
    let list = retiring_of(holder);
    if list.is_empty() && annotation(holder, RETIRING).is_none() {
        return Ok(Due::default());
    }
    let over_limit = limit.map_or(0, |n| list.len().saturating_sub(n));
    let mut result = Due::default();
    let mut still = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        if entry.hash == holder_hash || keep.contains(&entry.hash.as_str()) {
            continue;
        }
        let within_limit = i >= over_limit;
        if let Some(at) = entry.deadline.filter(|at| *at > now && within_limit) {
            result.next = Some(result.next.map_or(at, |n| n.min(at)));
            still.push(entry.clone());
            continue;
        }
        let Some(rs) = replica_set_of(cluster, view, &entry.hash).await? else {
            continue;
        };
        if replicas_of(&rs) == 0 {
            continue;
        }
        // A bare entry: the ReplicaSet carries the deadline.
        let ahead =
            entry.deadline.is_none() && within_limit && deadline_of(&rs).is_some_and(|at| at > now);
        if ahead {
            let at = deadline_of(&rs);
            if let Some(at) = at {
                result.next = Some(result.next.map_or(at, |n| n.min(at)));
            }
            still.push(Entry {
                hash: entry.hash.clone(),
                deadline: at,
            });
            continue;
        }
        let name = super::children::replica_set_name(&view.name, &entry.hash);
        tracing::info!(rollout = %view.name, replica_set = %name, "scale-down delay over: scaling down");
        scale(cluster, rs, 0).await?;
        result.scaled += 1;
    }
    let unreadable = annotation(holder, RETIRING).is_some_and(|_| still.is_empty());
    if still != list || unreadable {
        // Re-read: this pass may have written the holder since reading it.
        if let Some(mut fresh) = replica_set_of(cluster, view, holder_hash).await? {
            set_list(&mut fresh, &still);
            write(cluster, fresh).await?;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_list_is_bounded_and_only_hashes_are_read() {
        let many: Vec<String> = (0..100).map(|i| format!("h{i}")).collect();
        let holder = json!({"metadata": {"annotations": {RETIRING: many.join(",")}}});
        assert_eq!(retiring_of(&holder).len(), MAX_RETIRING);
        let odd = json!({"metadata": {"annotations": {RETIRING: "abc, ,abc,x/y,def@2026-11-30T18:00:30Z,ghi@soon"}}});
        let read = retiring_of(&odd);
        let hashes: Vec<&str> = read.iter().map(|e| e.hash.as_str()).collect();
        assert_eq!(hashes, vec!["abc", "def", "ghi"]);
        assert_eq!(read[0].deadline, None);
        assert_eq!(
            read[2].deadline, None,
            "an unreadable deadline is read on the ReplicaSet"
        );
        assert_eq!(list_text(&read[1..2]), "def@2026-11-30T18:00:30Z");
        assert!(retiring_of(&json!({})).is_empty());
    }

    #[test]
    fn a_deadline_is_never_sooner_than_the_delay() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T18:00:00.250Z")
            .expect("time")
            .with_timezone(&Utc);
        let at = deadline_after(now, Duration::from_secs(2));
        assert_eq!(deadline_text(at), "2026-11-30T18:00:03Z");
        let whole = DateTime::parse_from_rfc3339("2026-11-30T18:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            deadline_text(deadline_after(whole, Duration::from_secs(2))),
            "2026-11-30T18:00:02Z"
        );
    }

    #[test]
    fn deadlines_are_read_as_argo_writes_them() {
        let rs =
            json!({"metadata": {"annotations": {SCALE_DOWN_DEADLINE: "2026-11-30T18:00:30Z"}}});
        assert_eq!(
            deadline_of(&rs).map(|d| d.to_rfc3339()),
            Some("2026-11-30T18:00:30+00:00".to_string())
        );
        let garbage = json!({"metadata": {"annotations": {SCALE_DOWN_DEADLINE: "soon"}}});
        assert_eq!(deadline_of(&garbage), None);
        let mut rs = rs;
        assert!(remove_annotation(&mut rs, SCALE_DOWN_DEADLINE));
        assert!(!remove_annotation(&mut rs, SCALE_DOWN_DEADLINE));
        assert_eq!(deadline_of(&rs), None);
    }
}
