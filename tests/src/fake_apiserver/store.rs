//! The simulated server's storage: objects by resource, namespace and name,
//! one resourceVersion counter for everything (as etcd's revision), a
//! bounded history of changes for watches (older ones are compacted, and a
//! watch from before the compaction gets 410 Gone), and label selectors.

use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};

/// (group, plural, namespace, name).
pub type Key = (String, String, String, String);

/// How many changes the history keeps; a watch from before them gets 410.
pub const HISTORY: usize = 4096;

/// One change, as a watch delivers it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion it produced.
    pub version: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// Where.
    pub key: Key,
    /// The object after the change (before it, for deletes, with the new version).
    pub object: Value,
}

/// Objects and their history.
pub struct Store {
    /// Every object.
    pub objects: BTreeMap<Key, Value>,
    /// The last resourceVersion given out.
    pub version: u64,
    /// The most recent changes, oldest first.
    pub history: VecDeque<Change>,
    /// Changes up to this version are no longer in the history.
    pub compacted: u64,
    /// Live watchers.
    pub live: tokio::sync::broadcast::Sender<Change>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            version: 0,
            history: VecDeque::new(),
            compacted: 0,
            live: tokio::sync::broadcast::channel(HISTORY).0,
        }
    }
}

impl Store {
    /// Stores `object` at `key` with the next resourceVersion and records
    /// the change; returns the stored object.
    pub fn put(&mut self, key: Key, mut object: Value) -> Value {
        self.version += 1;
        let version = self.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key.clone(), object.clone());
        self.record(Change {
            version,
            kind,
            key,
            object: object.clone(),
        });
        object
    }

    /// Removes the object at `key`, recording the change.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.record(Change {
            version: self.version,
            kind: "DELETED",
            key: key.clone(),
            object: object.clone(),
        });
        Some(object)
    }

    fn record(&mut self, change: Change) {
        if self.history.len() >= HISTORY
            && let Some(old) = self.history.pop_front()
        {
            self.compacted = old.version;
        }
        self.history.push_back(change.clone());
        let _ = self.live.send(change);
    }

    /// Forgets the history up to now, as etcd's compaction does.
    pub fn compact(&mut self) {
        self.compacted = self.version;
        self.history.clear();
    }

    /// The objects whose owner (by uid) is `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`a=b,c!=d,e,!f,g in (x,y),h notin (z)`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(Vec<Term>);

impl Selector {
    /// Parses `text`; `None` when it is malformed (the server answers 400).
    pub fn parse(text: &str) -> Option<Selector> {
        let mut terms = Vec::new();
        for raw in split_terms(text) {
            let term = raw.trim();
            if term.is_empty() {
                continue;
            }
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let parsed = if let Some(k) = term.strip_prefix('!') {
                Term::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = term.split_once("!=") {
                Term::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                Term::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                Term::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                Term::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                Term::In(k.trim().into(), set(rest)?)
            } else if term.contains(' ') || term.contains('(') {
                return None;
            } else {
                Term::Exists(term.to_string())
            };
            terms.push(parsed);
        }
        Some(Selector(terms))
    }

    /// Whether `object`'s labels match.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|term| match term {
            Term::Equals(k, v) => label(k) == Some(v.as_str()),
            Term::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Term::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Term::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Term::Exists(k) => label(k).is_some(),
            Term::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Splits a selector at the commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}
