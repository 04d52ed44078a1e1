//! Applying a batch of writes to a snapshot: the preconditions and metadata
//! stamping every backend shares, so their semantics cannot drift apart.

use super::document::STORED;
use super::{ClusterError, ObjectKey, Write, resource_version};
use serde_json::Value;
use std::collections::BTreeMap;

/// The outcome of planning a batch: each write's result, in order, and
/// which of them is the final state of every touched key. Each stored
/// object exists once, in `results`, so a backend can write it and then
/// hand it back without copying it.
pub struct Plan {
    /// Each write's stored object (`None` for deletes).
    pub results: Vec<Option<Value>>,
    /// Per touched key, the index in `results` of its last write (`None`:
    /// deleted).
    pub changes: BTreeMap<ObjectKey, Option<usize>>,
}

impl Plan {
    /// Every touched key with its final state (`None`: deleted).
    pub fn final_states(&self) -> impl Iterator<Item = (&ObjectKey, Option<&Value>)> {
        self.changes.iter().map(|(key, last)| {
            let object = last
                .and_then(|i| self.results.get(i))
                .and_then(Option::as_ref);
            (key, object)
        })
    }
}

fn check_version(
    key: &ObjectKey,
    stored: &Value,
    expected: &Option<String>,
) -> Result<(), ClusterError> {
    let actual = resource_version(stored).unwrap_or_default();
    match expected {
        Some(expected) if expected != actual => Err(ClusterError::Conflict {
            key: key.to_string(),
            expected: expected.clone(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

fn stamp(
    key: &ObjectKey,
    mut object: Value,
    previous: Option<&Value>,
    version: u64,
    now: &str,
) -> Result<Value, ClusterError> {
    let uid = previous
        .and_then(|p| p.pointer("/metadata/uid"))
        .cloned()
        .unwrap_or_else(|| Value::String(format!("uid-{version:08}")));
    let created = previous
        .and_then(|p| p.pointer("/metadata/creationTimestamp"))
        .cloned()
        .unwrap_or_else(|| Value::String(now.to_string()));
    let metadata = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ClusterError::Invalid(format!("{key}: `metadata` is not an object")))?;
    metadata.insert("resourceVersion".into(), Value::String(version.to_string()));
    metadata.insert("uid".into(), uid);
    metadata.insert("creationTimestamp".into(), created);
    Ok(object)
}

/// Refuses an object no backend could store and read back: nested past
/// [`super::document::MAX_STORED_DEPTH`] or larger than
/// [`super::document::MAX_STORED_BYTES`].
pub fn check_storable(key: &ObjectKey, object: &Value) -> Result<(), ClusterError> {
    STORED.check_value(object).map(drop).map_err(|e| {
        ClusterError::Invalid(format!(
            "{key} cannot be stored: it is {e} (objects are kept within {} bytes and {} levels of nesting)",
            STORED.max_bytes, STORED.max_depth
        ))
    })
}

/// Checks every write against `current` (plus the batch's own earlier
/// writes) and stamps the new objects with versions after `*version`.
/// Nothing is applied; on any error the caller applies nothing.
pub fn plan(
    writes: Vec<Write>,
    version: &mut u64,
    now: &str,
    mut current: impl FnMut(&ObjectKey) -> Result<Option<Value>, ClusterError>,
) -> Result<Plan, ClusterError> {
    let mut changes: BTreeMap<ObjectKey, Option<usize>> = BTreeMap::new();
    let mut results: Vec<Option<Value>> = Vec::with_capacity(writes.len());
    for write in writes {
        let key = match &write {
            Write::Create(object) | Write::Update { object, .. } => ObjectKey::of(object)?,
            Write::Delete { key, .. } => key.clone(),
        };
        if let Write::Create(object) | Write::Update { object, .. } = &write {
            check_storable(&key, object)?;
        }
        let existing = match changes.get(&key) {
            // Written earlier in this batch (rare): that write's object.
            Some(last) => last
                .and_then(|i| results.get(i))
                .and_then(Option::as_ref)
                .cloned(),
            None => current(&key)?,
        };
        let stored = match write {
            Write::Create(object) => {
                if existing.is_some() {
                    return Err(ClusterError::AlreadyExists(key.to_string()));
                }
                *version += 1;
                Some(stamp(&key, object, None, *version, now)?)
            }
            Write::Update {
                object,
                expected_version,
            } => {
                let previous = existing.ok_or_else(|| ClusterError::NotFound(key.to_string()))?;
                check_version(&key, &previous, &expected_version)?;
                *version += 1;
                Some(stamp(&key, object, Some(&previous), *version, now)?)
            }
            Write::Delete {
                expected_version, ..
            } => {
                let previous = existing.ok_or_else(|| ClusterError::NotFound(key.to_string()))?;
                check_version(&key, &previous, &expected_version)?;
                None
            }
        };
        changes.insert(key, stored.is_some().then_some(results.len()));
        results.push(stored);
    }
    Ok(Plan { results, changes })
}
