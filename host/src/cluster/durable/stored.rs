//! Reading the parts of a stored object a commit needs (its labels, its
//! version, uid and creation time) without building the rest of its tree:
//! a commit reads the previous version of every object it writes, and
//! decoding each whole was a tenth of a commit's work.

use super::unavailable;
use crate::cluster::ClusterError;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The part of a stored object read here; everything else is skipped.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    metadata: Option<HeadMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadMetadata {
    #[serde(default)]
    labels: Option<Map<String, Value>>,
    #[serde(default)]
    resource_version: Option<Value>,
    #[serde(default)]
    uid: Option<Value>,
    #[serde(default)]
    creation_timestamp: Option<Value>,
}

fn head(bytes: &[u8]) -> Result<Option<HeadMetadata>, ClusterError> {
    serde_json::from_slice::<Head>(bytes)
        .map(|head| head.metadata)
        .map_err(|e| unavailable(format!("a stored object is not JSON: {e}")))
}

/// The string-valued labels of a stored object (as `labels_of` reads
/// them); none when the bytes are not an object's JSON.
pub(super) fn labels(bytes: &[u8]) -> Vec<(String, String)> {
    let labels = head(bytes).ok().flatten().and_then(|m| m.labels);
    labels
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| match value {
            Value::String(value) => Some((key, value)),
            _ => None,
        })
        .collect()
}

/// What a write needs of the version it replaces: an object holding only
/// the stored metadata's `resourceVersion`, `uid` and `creationTimestamp`.
pub(super) fn identity(bytes: &[u8]) -> Result<Value, ClusterError> {
    let mut metadata = Map::new();
    if let Some(head) = head(bytes)? {
        let fields = [
            ("resourceVersion", head.resource_version),
            ("uid", head.uid),
            ("creationTimestamp", head.creation_timestamp),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                metadata.insert(name.to_string(), value);
            }
        }
    }
    Ok(json!({ "metadata": metadata }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_from_the_metadata_only() {
        let bytes = br#"{"spec":{"labels":{"x":"y"}},"metadata":{"name":"a","labels":{"app":"shop","n":1}}}"#;
        assert_eq!(labels(bytes), vec![("app".into(), "shop".into())]);
        assert!(labels(b"{\"metadata\":{}}").is_empty());
        assert!(labels(b"not json").is_empty());
    }

    #[test]
    fn the_identity_keeps_what_a_write_carries_over_and_nothing_else() {
        let bytes = br#"{"metadata":{"name":"a","uid":"u-1","resourceVersion":"7","creationTimestamp":"2026-12-03T00:00:00Z","labels":{"a":"b"}},"spec":{"x":1}}"#;
        assert_eq!(
            identity(bytes).expect("identity"),
            json!({"metadata": {"uid": "u-1", "resourceVersion": "7", "creationTimestamp": "2026-12-03T00:00:00Z"}})
        );
        assert!(
            identity(b"{\"metadata\":").is_err(),
            "damaged text is an error"
        );
    }
}
