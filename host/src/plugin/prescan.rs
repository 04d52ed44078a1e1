//! What a component will cost to compile, read before compiling it: one
//! linear pass over its sections (nested modules included) that counts the
//! functions and the bytes of code, so a component whose compile would take
//! minutes and gigabytes is refused in milliseconds.
//!
//! Compile time and memory grow with these counts (Cranelift compiles each
//! function body on its own); measured here: a component of ~1M tiny
//! functions took 44 s and 5.7 GB to compile.

use super::error::LoadErrorKind;
use super::limits::{Limit, Limits};
use super::state::CallShares;
use wasmparser::{Parser, Payload};

/// The counts a load is bounded by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Footprint {
    /// Size of the component file.
    pub bytes: usize,
    /// Function bodies in all core modules.
    pub functions: usize,
    /// Bytes of function bodies in all core modules.
    pub code_bytes: usize,
    /// Linear memories defined in all core modules.
    pub memories: usize,
    /// The minimum sizes of those memories, summed, in bytes.
    pub memory_minimum_bytes: u64,
    /// Tables defined in all core modules.
    pub tables: usize,
}

impl Footprint {
    /// Counts `bytes`' functions and code; a file wasmparser cannot read is
    /// refused as not compiling.
    pub fn of(bytes: &[u8]) -> Result<Self, LoadErrorKind> {
        let mut footprint = Footprint {
            bytes: bytes.len(),
            ..Footprint::default()
        };
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| LoadErrorKind::Compile(e.to_string()))?;
            match payload {
                Payload::CodeSectionStart { count, size, .. } => {
                    footprint.functions = footprint
                        .functions
                        .saturating_add(usize::try_from(count).unwrap_or(usize::MAX));
                    footprint.code_bytes = footprint
                        .code_bytes
                        .saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
                }
                Payload::MemorySection(reader) => {
                    for memory in reader {
                        let memory = memory.map_err(|e| LoadErrorKind::Compile(e.to_string()))?;
                        let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                        footprint.memories += 1;
                        footprint.memory_minimum_bytes = footprint
                            .memory_minimum_bytes
                            .saturating_add(memory.initial.saturating_mul(page));
                    }
                }
                Payload::TableSection(reader) => footprint.tables += reader.count() as usize,
                _ => {}
            }
        }
        Ok(footprint)
    }

    /// Checks the counts against the plugin's load limits, its memory cap
    /// (the memories' minimum sizes must fit in it) and a call's `shares`
    /// of the runtime's pool.
    pub fn check(&self, limits: &Limits, shares: CallShares) -> Result<(), LoadErrorKind> {
        for (what, found, share) in [
            ("linear memories", self.memories, shares.memories),
            ("tables", self.tables, shares.tables),
        ] {
            if found > share {
                return Err(LoadErrorKind::OverCallShare { what, found, share });
            }
        }
        if self.memory_minimum_bytes > limits.memory_bytes() as u64 {
            return Err(LoadErrorKind::OverLoadLimit {
                limit: Limit::MemoryMiB,
                found: usize::try_from(self.memory_minimum_bytes >> 20).unwrap_or(usize::MAX),
                cap: limits.memory_mib,
            });
        }
        for (limit, found) in [
            (Limit::ComponentBytes, self.bytes),
            (Limit::Functions, self.functions),
            (Limit::CodeBytes, self.code_bytes),
        ] {
            let cap = limits.value_of(limit);
            if found as u64 > cap {
                return Err(LoadErrorKind::OverLoadLimit { limit, found, cap });
            }
        }
        Ok(())
    }
}
