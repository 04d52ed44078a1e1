//! Components this process has compiled or loaded, by wasm digest: a
//! second registration of the same component (another name, other limits,
//! other grants) shares the compiled code instead of reading the cache or
//! compiling again. Bounded: the oldest entry goes first.

use super::tiers::Code;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How many distinct components are kept.
pub const MAX_SHARED_COMPONENTS: usize = 64;

/// Compiled components by wasm sha256.
#[derive(Default)]
pub struct SharedComponents {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_digest: HashMap<String, Arc<Code>>,
    oldest_first: VecDeque<String>,
}

impl SharedComponents {
    /// The code compiled from the wasm with this digest, if kept.
    pub(crate) fn get(&self, sha256: &str) -> Option<Arc<Code>> {
        let entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        entries.by_digest.get(sha256).cloned()
    }

    /// Keeps `code` for `sha256`, dropping the oldest beyond the bound.
    pub(crate) fn insert(&self, sha256: &str, code: &Arc<Code>) {
        let mut entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if entries
            .by_digest
            .insert(sha256.to_string(), code.clone())
            .is_none()
        {
            entries.oldest_first.push_back(sha256.to_string());
        }
        while entries.oldest_first.len() > MAX_SHARED_COMPONENTS {
            if let Some(old) = entries.oldest_first.pop_front() {
                entries.by_digest.remove(&old);
            }
        }
    }
}
