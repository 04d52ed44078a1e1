//! Bounds on JSON documents, checked without recursion and before the work
//! they guard: a document's text is scanned for size and nesting before it
//! is parsed, and a parsed value is measured with an explicit stack that
//! stops as soon as a bound is passed.
//!
//! Why: serde_json parses, clones, compares, serialises and drops values
//! recursively. A value nested thousands deep overflows the host's stack
//! (the process aborts), and one nested deeper than serde_json's read limit
//! (128) can be written but never read back. Nothing may build such a
//! value, so every way in is checked here first.

use serde_json::Value;

/// Deepest nesting any stored object may have: below serde_json's read
/// limit of 128, with room for the levels a store or a status adds around a
/// document (a measurement inside an AnalysisRun's status, say).
pub const MAX_STORED_DEPTH: usize = 100;

/// Largest object any backend stores, serialised (Kubernetes' etcd refuses
/// requests over ~1.5 MiB; the embedded store keeps the same bound so an
/// object that works locally also works on a cluster).
pub const MAX_STORED_BYTES: usize = 1_572_864;

/// Bounds a document must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLimits {
    /// Largest serialised size, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects (`{}` is 1, a scalar 0).
    pub max_depth: usize,
}

/// What a document broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Larger than allowed.
    #[error("{size} bytes or more, over the limit of {max}")]
    TooLarge {
        /// Its size, or how far the measurement got before it stopped.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Nested deeper than allowed.
    #[error("nested {depth} levels or more, deeper than the limit of {max}")]
    TooDeep {
        /// Its depth, or how deep the measurement got before it stopped.
        depth: usize,
        /// The limit.
        max: usize,
    },
}

/// Size and depth of a value, as measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extent {
    /// Serialised size in bytes (compact JSON; string escapes counted as
    /// one byte, so a lower bound for text with escapes).
    pub bytes: usize,
    /// Nesting depth (`{}` is 1, a scalar 0).
    pub depth: usize,
}

impl DocumentLimits {
    /// Checks JSON text before it is parsed: its length, and the nesting of
    /// `[` / `{` outside strings. One pass, no allocation, no recursion.
    pub fn check_text(&self, text: &str) -> Result<(), DocumentError> {
        if text.len() > self.max_bytes {
            return Err(DocumentError::TooLarge {
                size: text.len(),
                max: self.max_bytes,
            });
        }
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        for byte in text.bytes() {
            if in_string {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > self.max_depth {
                        return Err(DocumentError::TooDeep {
                            depth,
                            max: self.max_depth,
                        });
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }

    /// Parses JSON text after [`Self::check_text`].
    pub fn parse(&self, text: &str) -> Result<Value, ParseError> {
        self.check_text(text).map_err(ParseError::Limit)?;
        serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))
    }

    /// Checks a parsed value (see [`measure`]).
    pub fn check_value(&self, value: &Value) -> Result<Extent, DocumentError> {
        measure(value, *self)
    }
}

/// Why JSON text was not parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A bound was broken; the text was not parsed.
    #[error(transparent)]
    Limit(DocumentError),
    /// Not JSON.
    #[error("not valid JSON: {0}")]
    Json(String),
}

/// Size of a scalar as compact JSON (strings without escape expansion).
fn scalar_bytes(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => s.len() + 2,
        Value::Array(_) | Value::Object(_) => 2,
    }
}

/// Measures `value` with an explicit stack, stopping with an error as soon
/// as it passes either bound: the work is O(min(size, max_bytes)) however
/// large or deep the value is.
pub fn measure(value: &Value, limits: DocumentLimits) -> Result<Extent, DocumentError> {
    let mut extent = Extent::default();
    // (value, its depth as a container level)
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((v, level)) = stack.pop() {
        extent.bytes += scalar_bytes(v);
        match v {
            Value::Array(items) => {
                extent.depth = extent.depth.max(level);
                extent.bytes += items.len().saturating_sub(1);
                stack.extend(items.iter().map(|item| (item, level + 1)));
            }
            Value::Object(map) => {
                extent.depth = extent.depth.max(level);
                extent.bytes += map.len().saturating_sub(1);
                for (key, item) in map {
                    extent.bytes += key.len() + 3;
                    stack.push((item, level + 1));
                }
            }
            _ => {}
        }
        if extent.depth > limits.max_depth {
            return Err(DocumentError::TooDeep {
                depth: extent.depth,
                max: limits.max_depth,
            });
        }
        if extent.bytes > limits.max_bytes {
            return Err(DocumentError::TooLarge {
                size: extent.bytes,
                max: limits.max_bytes,
            });
        }
    }
    Ok(extent)
}

/// The limits every stored object must meet.
pub const STORED: DocumentLimits = DocumentLimits {
    max_bytes: MAX_STORED_BYTES,
    max_depth: MAX_STORED_DEPTH,
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SMALL: DocumentLimits = DocumentLimits {
        max_bytes: 100,
        max_depth: 3,
    };

    #[test]
    fn text_nesting_is_counted_outside_strings_only() {
        assert!(SMALL.check_text(r#"{"a":[{"b":1}]}"#).is_ok());
        assert_eq!(
            SMALL.check_text(r#"{"a":[{"b":[1]}]}"#),
            Err(DocumentError::TooDeep { depth: 4, max: 3 })
        );
        assert!(SMALL.check_text(r#"{"a":"[[[[[[\"[[[["}"#).is_ok());
        let long = format!("\"{}\"", "x".repeat(200));
        assert!(matches!(
            SMALL.check_text(&long),
            Err(DocumentError::TooLarge { size: 202, .. })
        ));
    }

    #[test]
    fn a_very_deep_text_is_refused_without_parsing() {
        let deep = "[".repeat(1_000_000);
        let limits = DocumentLimits {
            max_bytes: 10 << 20,
            max_depth: 64,
        };
        assert_eq!(
            limits.check_text(&deep),
            Err(DocumentError::TooDeep { depth: 65, max: 64 })
        );
    }

    #[test]
    fn measuring_matches_compact_json_and_stops_early() {
        let v = json!({"a": [1, true, null, "xy"], "b": {"c": {}}});
        let extent = measure(&v, STORED).expect("within");
        assert_eq!(extent.bytes, v.to_string().len());
        assert_eq!(extent.depth, 3);
        assert!(matches!(
            measure(&v, SMALL.with_depth(2)),
            Err(DocumentError::TooDeep { .. })
        ));
        let big = json!(vec!["x".repeat(50); 1000]);
        match measure(&big, SMALL) {
            // The commas alone are over: it stopped before measuring an item.
            Err(DocumentError::TooLarge { size, .. }) => assert_eq!(size, 2 + 999),
            other => panic!("{other:?}"),
        }
    }

    impl DocumentLimits {
        fn with_depth(self, max_depth: usize) -> Self {
            DocumentLimits { max_depth, ..self }
        }
    }
}
