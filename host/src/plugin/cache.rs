//! The precompiled-component cache.
//!
//! Entries are keyed by the wasm's sha256 and the Engine's compatibility hash,
//! and carry a CRC-32 of their own code. An entry that is corrupt, foreign
//! or unreadable is rebuilt, never trusted: deserializing precompiled code is
//! `unsafe` in wasmtime precisely because it is taken as-is. (The checksum is
//! against corruption: the directory is the host's own, mode 0700, and anyone
//! who can write there could write a matching checksum of any kind. The
//! sha256 it replaced took about half of reading a ~850 KB entry.)
//!
//! An entry is the code exactly as wasmtime wrote it, followed by a footer,
//! so that a hit is memory-mapped rather than copied
//! ([`Component::deserialize_file`]): the copy into fresh anonymous memory
//! was most of a warm load (about 0.95 ms of 1.7 ms for an 835 KB entry).
//! Entries are only ever replaced by a rename, never written in place, so a
//! mapping a running controller holds keeps its own file.

use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Version 3: the code, then its CRC-32 (little-endian), then this magic.
/// Entries of earlier versions (the magic first) are rebuilt once.
const MAGIC: &[u8; 8] = b"WEIRCW03";

/// The footer's length: the checksum and the magic.
const FOOTER: usize = 4 + MAGIC.len();

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct PrecompiledCache {
    dir: PathBuf,
}

/// Why a cache entry was not used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid precompiled cache entry: {0}")]
pub struct InvalidEntry(pub String);

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a valid cache entry.
    Hit,
    /// Compiled; no entry existed.
    Miss,
    /// Compiled; the entry was corrupt or foreign and has been replaced.
    Rebuilt,
    /// Compiled; no cache is configured.
    Disabled,
    /// Shared with an earlier registration of the same component in this
    /// process (neither compiled nor read again).
    Shared,
    /// Compiled ahead of time and bundled into the `weir` executable.
    Bundled,
}

impl PrecompiledCache {
    /// A cache in `dir` (created with mode 0700 when missing).
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(PrecompiledCache { dir })
    }

    /// The default location: `$WEIR_CACHE_DIR`, else the user cache dir.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("WEIR_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("weir").join("components")))
            .unwrap_or_else(|| std::env::temp_dir().join("weir-components"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry path for a wasm digest on `engine`.
    pub fn entry_path(&self, engine: &Engine, wasm_sha256: &str) -> PathBuf {
        self.dir.join(format!(
            "{wasm_sha256}-{}.cwasm",
            super::bundle::engine_hash(engine)
        ))
    }

    /// Maps a valid entry, if there is one. `Err` means an entry exists but
    /// is not valid (the caller recompiles and replaces it).
    pub fn load(
        &self,
        engine: &Engine,
        wasm_sha256: &str,
    ) -> Result<Option<Component>, InvalidEntry> {
        let path = self.entry_path(engine, wasm_sha256);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(InvalidEntry(format!("unreadable: {e}"))),
        };
        check_footer(&file)?;
        drop(file);
        // SAFETY: the file is what `Component::serialize` wrote for this
        // engine configuration followed by our footer, checked just above:
        // the entry is in our own 0700 directory, keyed by the engine's
        // compatibility hash, and only ever replaced by a rename (never
        // truncated or written in place, which a mapping would see).
        // wasmtime additionally rejects artifacts from another
        // version/config.
        unsafe { Component::deserialize_file(engine, &path) }
            .map(Some)
            .map_err(|e| InvalidEntry(format!("rejected by wasmtime: {e:#}")))
    }

    /// Stores a compiled component (best effort: a failure only costs a
    /// recompile next time).
    pub fn store(
        &self,
        engine: &Engine,
        wasm_sha256: &str,
        component: &Component,
    ) -> std::io::Result<()> {
        let code = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.store_code(engine, wasm_sha256, &code)
    }

    /// Stores compiled code as [`Component::serialize`] or
    /// [`Engine::precompile_component`] wrote it for `engine` (best effort).
    pub fn store_code(
        &self,
        engine: &Engine,
        wasm_sha256: &str,
        code: &[u8],
    ) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.entry_path(engine, wasm_sha256);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(code)?;
        file.write_all(&crc32fast::hash(code).to_le_bytes())?;
        file.write_all(MAGIC)?;
        drop(file);
        std::fs::rename(&tmp, &path)
    }
}

/// Checks an entry's footer and its code's checksum, reading the file
/// through a mapping (no copy).
fn check_footer(file: &std::fs::File) -> Result<(), InvalidEntry> {
    let not_ours = || InvalidEntry("not a Weir cache entry".into());
    let len = file
        .metadata()
        .map_err(|e| InvalidEntry(format!("unreadable: {e}")))?
        .len();
    if len <= FOOTER as u64 {
        return Err(not_ours());
    }
    // SAFETY: a read-only mapping of an entry in our own 0700 directory,
    // which is replaced by a rename and never written in place; it is
    // dropped before this returns.
    let map = unsafe { memmap2::Mmap::map(file) }
        .map_err(|e| InvalidEntry(format!("unreadable: {e}")))?;
    // The file may have changed since it was measured: checked again.
    let (code, footer) = map
        .len()
        .checked_sub(FOOTER)
        .and_then(|at| map.split_at_checked(at))
        .ok_or_else(not_ours)?;
    let (stored, magic) = footer.split_at_checked(4).ok_or_else(not_ours)?;
    if magic != MAGIC.as_slice() {
        return Err(not_ours());
    }
    if crc32fast::hash(code).to_le_bytes().as_slice() != stored {
        return Err(InvalidEntry("checksum mismatch (corrupt)".into()));
    }
    Ok(())
}
