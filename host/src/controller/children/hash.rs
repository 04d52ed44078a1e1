//! Pod-template hashes (over the template's canonical JSON, spelt in
//! Kubernetes' safe alphabet) and the names they give ReplicaSets.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The label that carries a pod-template hash (Argo's name).
pub const HASH_LABEL: &str = "rollouts-pod-template-hash";

/// Characters Kubernetes uses for generated name suffixes (no vowels, no
/// look-alikes), so a hash never spells a word.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Writes `value` with object keys sorted, so equal templates hash equally
/// whatever order their keys were written in.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The pod-template hash: 10 characters from sha256 of the canonical template.
pub fn pod_template_hash(template: &Value) -> String {
    let mut text = String::new();
    canonical(template, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    digest
        .iter()
        .take(10)
        .map(|b| {
            let index = usize::from(*b) % SAFE_ALPHABET.len();
            char::from(SAFE_ALPHABET.get(index).copied().unwrap_or(b'b'))
        })
        .collect()
}

/// `<rollout>-<hash>`.
pub fn replica_set_name(rollout: &str, hash: &str) -> String {
    format!("{rollout}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_ignores_key_order_and_sees_changes() {
        let a = json!({"metadata": {"labels": {"app": "x", "tier": "web"}}, "spec": {"containers": [{"image": "a:1"}]}});
        let b: Value = serde_json::from_str(
            r#"{"spec": {"containers": [{"image": "a:1"}]}, "metadata": {"labels": {"tier": "web", "app": "x"}}}"#,
        )
        .expect("json");
        let c = json!({"metadata": {"labels": {"app": "x", "tier": "web"}}, "spec": {"containers": [{"image": "a:2"}]}});
        assert_eq!(pod_template_hash(&a), pod_template_hash(&b));
        assert_ne!(pod_template_hash(&a), pod_template_hash(&c));
        assert_eq!(pod_template_hash(&a).len(), 10);
    }
}
