//! The subset of Kubernetes JSONPath templates web metrics use:
//! `{$}`, `{$.a.b}`, `{.a.b}`, `{$.items[0].x}`, `{$['key with dots']}`,
//! `{$.items[*].x}` (a list), `{$.items[-1]}`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
}

/// A parsed path.
#[derive(Debug, Clone)]
pub struct Path {
    text: String,
    steps: Vec<Step>,
}

impl Path {
    /// Parses `{$.a.b}` (braces and `$` optional).
    pub fn parse(text: &str) -> Result<Path, String> {
        let bad = |why: &str| format!("jsonPath {text:?}: {why}");
        let mut s = text.trim();
        if let Some(inner) = s.strip_prefix('{') {
            s = inner
                .strip_suffix('}')
                .ok_or_else(|| bad("missing closing }"))?;
        }
        let s = s.strip_prefix('$').unwrap_or(s);
        let mut steps = Vec::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '.' => {
                    let mut name = String::new();
                    while let Some(&n) = chars.peek() {
                        if n == '.' || n == '[' {
                            break;
                        }
                        name.push(n);
                        chars.next();
                    }
                    if name == "*" {
                        steps.push(Step::All);
                    } else if !name.is_empty() {
                        steps.push(Step::Field(name));
                    }
                }
                '[' => {
                    let mut inner = String::new();
                    for n in chars.by_ref() {
                        if n == ']' {
                            break;
                        }
                        inner.push(n);
                    }
                    let inner = inner.trim();
                    if inner == "*" {
                        steps.push(Step::All);
                    } else if let Some(quoted) =
                        inner.strip_prefix('\'').and_then(|r| r.strip_suffix('\''))
                    {
                        steps.push(Step::Field(quoted.to_string()));
                    } else if let Some(quoted) =
                        inner.strip_prefix('"').and_then(|r| r.strip_suffix('"'))
                    {
                        steps.push(Step::Field(quoted.to_string()));
                    } else {
                        steps.push(Step::Index(inner.parse().map_err(|_| {
                            bad("an index must be a number, * or a quoted key")
                        })?));
                    }
                }
                c if c.is_whitespace() => {}
                _ => return Err(bad("expected . or [")),
            }
        }
        Ok(Path {
            text: text.to_string(),
            steps,
        })
    }

    /// The path as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value at the path; a `[*]` makes a list. `None` when it misses.
    pub fn find(&self, root: &Value) -> Option<Value> {
        let mut current = vec![root.clone()];
        let mut fanned = false;
        for step in &self.steps {
            let mut next = Vec::new();
            for value in current {
                match step {
                    Step::Field(name) => next.extend(value.get(name).cloned()),
                    Step::Index(i) => {
                        let items = value.as_array()?;
                        let index = if *i < 0 { items.len() as i64 + i } else { *i };
                        next.extend(
                            usize::try_from(index)
                                .ok()
                                .and_then(|i| items.get(i))
                                .cloned(),
                        );
                    }
                    Step::All => {
                        fanned = true;
                        match value {
                            Value::Array(items) => next.extend(items),
                            Value::Object(map) => next.extend(map.into_iter().map(|(_, v)| v)),
                            _ => {}
                        }
                    }
                }
            }
            current = next;
        }
        if fanned {
            Some(Value::Array(current))
        } else {
            current.into_iter().next()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let doc = json!({"data": {"ok": true, "rate": 0.97, "items": [{"x": 1}, {"x": 2}], "a.b": "dots"}});
        let find = |p: &str| Path::parse(p).unwrap().find(&doc);
        assert_eq!(find("{$}"), Some(doc.clone()));
        assert_eq!(find("{$.data.ok}"), Some(json!(true)));
        assert_eq!(find("{.data.rate}"), Some(json!(0.97)));
        assert_eq!(find("{$.data.items[1].x}"), Some(json!(2)));
        assert_eq!(find("{$.data.items[-1].x}"), Some(json!(2)));
        assert_eq!(find("{$.data.items[*].x}"), Some(json!([1, 2])));
        assert_eq!(find("{$.data['a.b']}"), Some(json!("dots")));
        assert_eq!(find("{$.data.missing}"), None);
        assert!(Path::parse("{$.data").is_err());
    }
}
