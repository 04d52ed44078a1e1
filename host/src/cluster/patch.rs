//! JSON patch (RFC 6902) and merge patch (RFC 7396) applied under bounds.
//!
//! A patch is small but its result need not be: `copy` doubles a subtree
//! per operation (20 operations under 1 KB make gigabytes; copying a subtree
//! into its own deepest node doubles the depth), and `add` into a large
//! array moves the whole array each time. So each operation is checked
//! before it is applied — the depth it would create, and for `copy` / `move`
//! the size of what it would copy, measured with a bound — the result's size
//! is kept under the bound as operations go, and the clock is read between
//! operations so a patch stops at its deadline. The work is meant to run on
//! a blocking thread ([`apply_blocking`]), never on an async worker.

use super::document::{DocumentError, DocumentLimits, Extent, measure};
use json_patch::PatchOperation;
use serde_json::Value;
use std::time::Instant;

/// How a patch is written.
#[derive(Debug, Clone)]
pub enum Patch {
    /// RFC 7396 merge patch.
    Merge(Value),
    /// RFC 6902 JSON patch.
    Json(Vec<PatchOperation>),
}

/// Why a patch was not applied. The target is unchanged in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The result (or a subtree an operation would copy) breaks a bound.
    #[error("operation {index} would make the object {error}")]
    Limit {
        /// The operation's index (0 for a merge patch).
        index: usize,
        /// The bound broken.
        error: DocumentError,
    },
    /// The patch ran into its deadline.
    #[error("stopped at its deadline after {applied} of {total} operations")]
    Deadline {
        /// Operations applied before the deadline.
        applied: usize,
        /// Operations in the patch.
        total: usize,
    },
    /// An operation does not apply (a missing path, a failed `test`).
    #[error("{0}")]
    Invalid(String),
}

/// The depth at which a value placed at `path` (of `tokens` tokens) sits:
/// its containers start one level below its parent.
fn depth_at(tokens: usize, value_depth: usize) -> usize {
    tokens + value_depth
}

/// The extent of the subtree at `from`, which a `copy` or `move` takes.
fn source_extent(
    doc: &Value,
    from: &json_patch::jsonptr::Pointer,
    index: usize,
    limits: DocumentLimits,
) -> Result<Extent, PatchError> {
    let Some(source) = doc.pointer(from.as_str()) else {
        return Err(PatchError::Invalid(format!(
            "operation {index}: `from` {from} does not exist"
        )));
    };
    measure(source, limits).map_err(|error| PatchError::Limit { index, error })
}

/// Applies `patch` to `doc`, keeping it within `limits` and stopping at
/// `deadline`. On any error `doc` may be partly patched: callers patch a
/// copy and drop it on error.
pub fn apply(
    doc: &mut Value,
    patch: &Patch,
    limits: DocumentLimits,
    deadline: Instant,
) -> Result<(), PatchError> {
    let limit = |index, error| PatchError::Limit { index, error };
    match patch {
        Patch::Merge(merge) => {
            // The result is at most as deep as either input and at most as
            // large as both: check that bound, and the exact result only when
            // the bound is over.
            let before = measure(doc, limits).map_err(|e| limit(0, e))?;
            let patch_extent = measure(merge, limits).map_err(|e| limit(0, e))?;
            json_patch::merge(doc, merge);
            if before.bytes + patch_extent.bytes > limits.max_bytes {
                measure(doc, limits).map_err(|e| limit(0, e))?;
            }
            Ok(())
        }
        Patch::Json(ops) => {
            let mut size = measure(doc, limits).map_err(|e| limit(0, e))?.bytes;
            for (index, op) in ops.iter().enumerate() {
                if Instant::now() >= deadline {
                    return Err(PatchError::Deadline {
                        applied: index,
                        total: ops.len(),
                    });
                }
                // What the operation puts into the document, measured before
                // anything is cloned.
                let added: Option<Extent> = match op {
                    PatchOperation::Add(o) => Some(
                        measure(&o.value, limits)
                            .map(|e| Extent {
                                depth: depth_at(o.path.count(), e.depth),
                                ..e
                            })
                            .map_err(|e| limit(index, e))?,
                    ),
                    PatchOperation::Replace(o) => Some(
                        measure(&o.value, limits)
                            .map(|e| Extent {
                                depth: depth_at(o.path.count(), e.depth),
                                ..e
                            })
                            .map_err(|e| limit(index, e))?,
                    ),
                    PatchOperation::Copy(o) => {
                        let extent = source_extent(doc, &o.from, index, limits)?;
                        Some(Extent {
                            depth: depth_at(o.path.count(), extent.depth),
                            ..extent
                        })
                    }
                    PatchOperation::Move(o) => {
                        let extent = source_extent(doc, &o.from, index, limits)?;
                        // Moving adds no bytes, but may nest deeper.
                        Some(Extent {
                            depth: depth_at(o.path.count(), extent.depth),
                            bytes: 0,
                        })
                    }
                    PatchOperation::Remove(_) | PatchOperation::Test(_) => None,
                };
                if let Some(added) = added {
                    if added.depth > limits.max_depth {
                        return Err(limit(
                            index,
                            DocumentError::TooDeep {
                                depth: added.depth,
                                max: limits.max_depth,
                            },
                        ));
                    }
                    // An upper bound on the growth (a key and punctuation too).
                    size = size.saturating_add(added.bytes + op.path().as_str().len() + 4);
                }
                json_patch::patch_unsafe(doc, std::slice::from_ref(op))
                    .map_err(|e| PatchError::Invalid(e.to_string()))?;
                if size > limits.max_bytes {
                    // The bound says it may be over: measure what it is.
                    size = measure(doc, limits).map_err(|e| limit(index, e))?.bytes;
                }
            }
            Ok(())
        }
    }
}

/// [`apply`] on a blocking thread, so a heavy patch never holds an async
/// worker; returns the patched copy of `doc`.
pub async fn apply_blocking(
    mut doc: Value,
    patch: Patch,
    limits: DocumentLimits,
    deadline: Instant,
) -> Result<Value, PatchError> {
    tokio::task::spawn_blocking(move || apply(&mut doc, &patch, limits, deadline).map(|()| doc))
        .await
        .map_err(|e| PatchError::Invalid(format!("patch task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    const LIMITS: DocumentLimits = DocumentLimits {
        max_bytes: 64 << 10,
        max_depth: 16,
    };

    fn ops(v: Value) -> Patch {
        Patch::Json(serde_json::from_value(v).expect("ops"))
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[test]
    fn ordinary_patches_apply() {
        let mut doc = json!({"spec": {"http": [{"route": []}]}});
        apply(
            &mut doc,
            &ops(json!([
                {"op": "add", "path": "/spec/http/0/route/-", "value": {"weight": 10}},
                {"op": "copy", "from": "/spec/http/0", "path": "/spec/http/-"},
                {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 90},
                {"op": "test", "path": "/spec/http/0/route/0/weight", "value": 10}
            ])),
            LIMITS,
            later(),
        )
        .expect("applies");
        assert_eq!(doc["spec"]["http"][1]["route"][0]["weight"], 90);
        let mut doc = json!({"a": {"b": 1}, "c": 2});
        apply(
            &mut doc,
            &Patch::Merge(json!({"a": {"b": null, "d": 3}})),
            LIMITS,
            later(),
        )
        .expect("merges");
        assert_eq!(doc, json!({"a": {"d": 3}, "c": 2}));
    }

    #[test]
    fn copying_a_subtree_into_itself_cannot_nest_past_the_depth_limit() {
        let mut doc = json!({"a": {"b": {}}});
        let mut bomb = Vec::new();
        let mut path = String::from("/a/b");
        for _ in 0..20 {
            bomb.push(json!({"op": "copy", "from": "/a", "path": format!("{path}/x")}));
            path.push_str("/x/b");
        }
        match apply(&mut doc, &ops(json!(bomb)), LIMITS, later()) {
            Err(PatchError::Limit {
                error: DocumentError::TooDeep { max: 16, .. },
                ..
            }) => {}
            other => panic!("expected the depth limit, got {other:?}"),
        }
    }

    #[test]
    fn doubling_copies_stop_at_the_size_limit() {
        let mut doc = json!({"a": ["x".repeat(100)]});
        let bomb: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "/a", "path": format!("/a{i}")}))
            .chain((0..40).map(|_| json!({"op": "copy", "from": "", "path": "/a"})))
            .collect();
        match apply(&mut doc, &ops(json!(bomb)), LIMITS, later()) {
            Err(PatchError::Limit {
                error: DocumentError::TooLarge { .. },
                ..
            }) => {}
            other => panic!("expected the size limit, got {other:?}"),
        }
    }

    #[test]
    fn a_patch_stops_at_its_deadline() {
        let mut doc = json!({"a": []});
        let many: Vec<Value> = (0..10)
            .map(|i| json!({"op": "add", "path": "/a/0", "value": i}))
            .collect();
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(
            apply(&mut doc, &ops(json!(many)), LIMITS, past),
            Err(PatchError::Deadline {
                applied: 0,
                total: 10
            })
        );
    }

    #[test]
    fn a_failing_operation_is_invalid() {
        let mut doc = json!({"a": 1});
        assert!(matches!(
            apply(
                &mut doc,
                &ops(json!([{"op": "test", "path": "/a", "value": 2}])),
                LIMITS,
                later()
            ),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            apply(
                &mut doc,
                &ops(json!([{"op": "copy", "from": "/nope", "path": "/b"}])),
                LIMITS,
                later()
            ),
            Err(PatchError::Invalid(_))
        ));
    }
}
