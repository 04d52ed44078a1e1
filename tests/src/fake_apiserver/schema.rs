//! Argo Rollouts' own CustomResourceDefinitions, as far as Weir meets
//! them: which subresources each kind has, which spec fields its schema
//! requires, and which status fields its structural schema keeps (the
//! server prunes every other one). Read from `tests/data/argo-crds.json`,
//! facts derived from Argo's `manifests/crds/` (see its `_source`).

use super::resources::Resource;
use serde_json::Value;

/// What one of Argo's CRDs enforces.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The resource.
    pub plural: String,
    /// Required fields, as `spec.templates[].selector`.
    pub required: Vec<String>,
    /// The status fields the schema keeps (see the data file's legend).
    pub status: Option<Value>,
}

/// Argo's CRDs: the resources they serve and what they enforce.
pub fn argo_crds() -> (Vec<Resource>, Vec<Shape>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/argo-crds.json");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let data: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let kinds = data["kinds"].as_array().cloned().unwrap_or_default();
    assert!(!kinds.is_empty(), "no CRDs in {path}");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut resources = Vec::new();
    let mut shapes = Vec::new();
    for k in kinds {
        let plural = k["plural"].as_str().unwrap_or("").to_string();
        resources.push(Resource {
            group: k["group"].as_str().unwrap_or("").to_string(),
            versions: vec![k["version"].as_str().unwrap_or("").to_string()],
            kind: k["kind"].as_str().unwrap_or("").to_string(),
            plural: plural.clone(),
            namespaced: k["namespaced"] == true,
            status_subresource: strings(&k["subresources"]).iter().any(|s| s == "status"),
            built_in: false,
            scale: k
                .get("scale")
                .filter(|s| s.is_object())
                .and_then(|s| super::resources::scale_of(&serde_json::json!({"scale": s}))),
        });
        shapes.push(Shape {
            plural,
            required: strings(&k["required"]),
            status: k.get("status").cloned(),
        });
    }
    (resources, shapes)
}

/// Drops from `value` every field `tree` does not name, as structural
/// schema pruning does (`null`: a scalar, kept; `"*"`: anything;
/// `[x]`: a list of `x`; `{"*": x}`: a map of `x`; `{k: x}`: an object).
pub fn prune(value: &mut Value, tree: &Value) {
    match (value, tree) {
        (_, Value::Null) | (_, Value::String(_)) => {}
        (Value::Array(items), Value::Array(of)) => {
            if let Some(item_tree) = of.first() {
                for item in items {
                    prune(item, item_tree);
                }
            }
        }
        (Value::Object(map), Value::Object(fields)) => {
            if let Some(any) = fields.get("*") {
                for v in map.values_mut() {
                    prune(v, any);
                }
                return;
            }
            map.retain(|k, _| fields.contains_key(k));
            for (k, v) in map.iter_mut() {
                if let Some(t) = fields.get(k) {
                    prune(v, t);
                }
            }
        }
        _ => {}
    }
}

/// The first required field `object` lacks, as the server names it
/// (`spec.templates[0].selector`).
pub fn missing_required(object: &Value, required: &[String]) -> Option<String> {
    required.iter().find_map(|path| missing(object, path, ""))
}

fn missing(value: &Value, path: &str, at: &str) -> Option<String> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    if let Some(list) = head.strip_suffix("[]") {
        let here = join(at, list);
        let items = value.get(list)?.as_array()?;
        let rest = rest?;
        return items
            .iter()
            .enumerate()
            .find_map(|(i, item)| missing(item, rest, &format!("{here}[{i}]")));
    }
    let here = join(at, head);
    match (value.get(head), rest) {
        (None | Some(Value::Null), _) => Some(here),
        (Some(inner), Some(rest)) => missing(inner, rest, &here),
        (Some(_), None) => None,
    }
}

fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_string()
    } else {
        format!("{at}.{field}")
    }
}
