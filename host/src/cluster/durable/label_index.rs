//! The embedded store's label index: which objects of a kind in a
//! namespace carry a label. A list by label selector reads its matches
//! from it instead of every object of the kind: before it, each Rollout's
//! first deploy read all the namespace's ReplicaSets (20,000 in a fleet of
//! 10,000), which made the deploy of a large fleet quadratic.
//!
//! The index is written in the same transaction as the objects it
//! describes, so it never disagrees with them; a store written before the
//! index existed is indexed once, when it is opened.

use redb::{MultimapTable, MultimapTableDefinition, ReadOnlyMultimapTable, StorageError};

/// (`group/kind/namespace`, label key, label value) → the names of the
/// objects of that kind in that namespace carrying the label.
pub(super) const LABELS: MultimapTableDefinition<(&str, &str, &str), &str> =
    MultimapTableDefinition::new("labels");

/// The key in the store's `meta` table recording that every object is
/// indexed.
pub(super) const INDEXED_KEY: &str = "label-index";

/// Splits a storage key (`group/kind/namespace/name`) into the index's
/// kind prefix (`group/kind/namespace`) and the name.
pub(super) fn split(storage_key: &str) -> Option<(&str, &str)> {
    storage_key.rsplit_once('/')
}

/// Moves `name`'s entries under `prefix` from its `old` labels to its
/// `new` ones (either empty for a create or a delete).
pub(super) fn reindex(
    index: &mut MultimapTable<(&str, &str, &str), &str>,
    prefix: &str,
    name: &str,
    old: &[(String, String)],
    new: &[(String, String)],
) -> Result<(), StorageError> {
    for pair in old.iter().filter(|pair| !new.contains(pair)) {
        index.remove((prefix, pair.0.as_str(), pair.1.as_str()), name)?;
    }
    for pair in new.iter().filter(|pair| !old.contains(pair)) {
        index.insert((prefix, pair.0.as_str(), pair.1.as_str()), name)?;
    }
    Ok(())
}

/// The names of the objects under `prefix` carrying the label `key=value`,
/// in name order.
pub(super) fn names_with(
    index: &ReadOnlyMultimapTable<(&str, &str, &str), &str>,
    prefix: &str,
    key: &str,
    value: &str,
) -> Result<Vec<String>, StorageError> {
    index
        .get((prefix, key, value))?
        .map(|name| name.map(|name| name.value().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_key_splits_at_its_last_slash() {
        assert_eq!(
            split("apps/ReplicaSet/shop/r-1"),
            Some(("apps/ReplicaSet/shop", "r-1"))
        );
        assert_eq!(split("/ConfigMap//c"), Some(("/ConfigMap/", "c")));
    }
}
