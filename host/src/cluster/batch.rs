//! Applying a batch of writes to a snapshot: the preconditions and metadata
//! stamping every backend shares, so their semantics cannot drift apart.

use super::document::STORED;
use super::{ClusterError, ObjectKey, Write, resource_version};
use serde_json::Value;
use std::collections::BTreeMap;

/// The outcome of planning a batch: the final state of every touched key
/// (`None`: deleted) and each write's result, in order.
pub struct Plan {
    /// Final state per key.
    pub changes: BTreeMap<ObjectKey, Option<Value>>,
    /// Each write's stored object (`None` for deletes).
    pub results: Vec<Option<Value>>,
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
    let mut changes: BTreeMap<ObjectKey, Option<Value>> = BTreeMap::new();
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        let key = match &write {
            Write::Create(object) | Write::Update { object, .. } => ObjectKey::of(object)?,
            Write::Delete { key, .. } => key.clone(),
        };
        if let Write::Create(object) | Write::Update { object, .. } = &write {
            check_storable(&key, object)?;
        }
        let existing = match changes.get(&key) {
            Some(state) => state.clone(),
            None => current(&key)?,
        };
        match write {
            Write::Create(object) => {
                if existing.is_some() {
                    return Err(ClusterError::AlreadyExists(key.to_string()));
                }
                *version += 1;
                let stored = stamp(&key, object, None, *version, now)?;
                results.push(Some(stored.clone()));
                changes.insert(key, Some(stored));
            }
            Write::Update {
                object,
                expected_version,
            } => {
                let previous = existing.ok_or_else(|| ClusterError::NotFound(key.to_string()))?;
                check_version(&key, &previous, &expected_version)?;
                *version += 1;
                let stored = stamp(&key, object, Some(&previous), *version, now)?;
                results.push(Some(stored.clone()));
                changes.insert(key, Some(stored));
            }
            Write::Delete {
                expected_version, ..
            } => {
                let previous = existing.ok_or_else(|| ClusterError::NotFound(key.to_string()))?;
                check_version(&key, &previous, &expected_version)?;
                results.push(None);
                changes.insert(key, None);
            }
        }
    }
    Ok(Plan { changes, results })
}
