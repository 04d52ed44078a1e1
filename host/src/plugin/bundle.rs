//! The shipped plugins bundled into the `weir` executable, with their code
//! compiled ahead of time, so one file runs the controller and its first
//! start compiles nothing.
//!
//! `weir plugin bundle` writes a copy of the running executable with a
//! payload appended: each component and its compiled code (what
//! `Component::serialize` writes for this build's engine), an index, and a
//! footer (the payload's length, then [`MAGIC`]). The executable's own code
//! is untouched: the loader never reads past its end, and `weir` finds the
//! payload by reading its own file's last bytes. Locations
//! `bundled:<file>` name a bundled component.
//!
//! Compiled code is used when wasmtime accepts it for the running engine:
//! the same wasmtime and configuration, and a CPU with every feature the
//! code was compiled to use (the bundling machine's). Otherwise the
//! component is compiled (and cached) as any other, once, with a warning
//! naming both engines. Each blob carries a CRC-32, checked before use.

use super::error::LoadErrorKind;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use wasmtime::Engine;

/// What ends a bundled executable.
const MAGIC: &[u8; 16] = b"WEIR-BUNDLE-0001";
/// The footer: the payload's length (u64, little-endian), then [`MAGIC`].
/// The payload is the index's length (u64, little-endian), the index
/// (JSON), then the blobs the index's spans point into.
const FOOTER_BYTES: u64 = 8 + 16;
/// The index is read whole: it is a few hundred bytes per plugin.
const MAX_INDEX_BYTES: u64 = 1 << 20;
/// How a location names a bundled component.
pub const LOCATION_PREFIX: &str = "bundled:";

/// Why a bundle could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The payload is not what `weir plugin bundle` writes.
    #[error("{path}: the plugin bundle is damaged ({why}); rebuild it with `weir plugin bundle`")]
    Damaged {
        /// The executable.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A component could not be compiled for the bundle.
    #[error("{file}: could not be compiled for the bundle: {why}")]
    Compile {
        /// The component's file name.
        file: String,
        /// The compiler's error.
        why: String,
    },
}

/// Where a blob lies in the payload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Span {
    offset: u64,
    len: u64,
    crc32: u32,
}

/// One bundled component.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// Its file name (`weir_plugin_istio.wasm`).
    file: String,
    /// The component's sha256.
    sha256: String,
    component: Span,
    /// Its compiled code, for the engine [`Index::engine`] names.
    compiled: Span,
}

#[derive(Debug, Serialize, Deserialize)]
struct Index {
    /// The compatibility hash of the engine the code was compiled on.
    engine: String,
    entries: Vec<Entry>,
}

/// The plugins bundled into an executable.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    /// Where the payload starts in the file.
    start: u64,
    /// Where the blobs start (after the index); spans count from here.
    blobs: u64,
    index: Index,
}

/// The compatibility hash of `engine`, as bundles and the cache name it.
pub fn engine_hash(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The location of shipped component `file`: in `dir`, or in the bundle
/// when `dir` is empty (no `--plugins` given to a bundled `weir`).
pub fn shipped_location(dir: &Path, file: &str) -> String {
    if dir.as_os_str().is_empty() {
        format!("{LOCATION_PREFIX}{file}")
    } else {
        dir.join(file).display().to_string()
    }
}

impl Bundle {
    /// The bundle appended to the executable at `path`; `None` when it has
    /// none.
    pub fn open(path: &Path) -> Result<Option<Bundle>, BundleError> {
        let io = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let damaged = |why: String| BundleError::Damaged {
            path: path.to_path_buf(),
            why,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size < FOOTER_BYTES {
            return Ok(None);
        }
        let mut footer = [0u8; FOOTER_BYTES as usize];
        file.read_exact_at(&mut footer, size - FOOTER_BYTES)
            .map_err(io)?;
        let (length, magic) = footer.split_at(8);
        if magic != MAGIC {
            return Ok(None);
        }
        let mut length_bytes = [0u8; 8];
        length_bytes.copy_from_slice(length);
        let payload = u64::from_le_bytes(length_bytes);
        let start = (size - FOOTER_BYTES).checked_sub(payload).ok_or_else(|| {
            damaged(format!(
                "a payload of {payload} bytes in a {size}-byte file"
            ))
        })?;
        // The payload starts with the index's length and the index.
        let mut index_length = [0u8; 8];
        file.read_exact_at(&mut index_length, start).map_err(io)?;
        let index_length = u64::from_le_bytes(index_length);
        if index_length > MAX_INDEX_BYTES || index_length > payload.saturating_sub(8) {
            return Err(damaged(format!("an index of {index_length} bytes")));
        }
        let mut index = vec![0u8; usize::try_from(index_length).unwrap_or(0)];
        file.read_exact_at(&mut index, start + 8).map_err(io)?;
        let index: Index =
            serde_json::from_slice(&index).map_err(|e| damaged(format!("its index: {e}")))?;
        let blobs = payload - 8 - index_length;
        for entry in &index.entries {
            for span in [entry.component, entry.compiled] {
                let end = span.offset.checked_add(span.len);
                if end.is_none_or(|end| end > blobs) {
                    return Err(damaged(format!("{} lies outside the payload", entry.file)));
                }
            }
        }
        Ok(Some(Bundle {
            path: path.to_path_buf(),
            start,
            blobs: start + 8 + index_length,
            index,
        }))
    }

    /// The bundle of the running executable, if it has one (a damaged one is
    /// logged and ignored: the plugins are then read from `--plugins`).
    pub fn of_current_exe() -> Option<Bundle> {
        let exe = std::env::current_exe().ok()?;
        match Bundle::open(&exe) {
            Ok(bundle) => bundle,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the plugin bundle");
                None
            }
        }
    }

    /// The bundled components' file names.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.index.entries.iter().map(|e| e.file.as_str())
    }

    fn entry(&self, file: &str) -> Option<&Entry> {
        self.index.entries.iter().find(|e| e.file == file)
    }

    fn read(&self, span: Span, what: &str) -> Result<Vec<u8>, BundleError> {
        let io = |source| BundleError::Io {
            path: self.path.clone(),
            source,
        };
        let file = std::fs::File::open(&self.path).map_err(io)?;
        let mut bytes = vec![0u8; usize::try_from(span.len).unwrap_or(0)];
        file.read_exact_at(&mut bytes, self.blobs + span.offset)
            .map_err(io)?;
        if crc32fast::hash(&bytes) != span.crc32 {
            return Err(BundleError::Damaged {
                path: self.path.clone(),
                why: format!("{what} fails its checksum"),
            });
        }
        Ok(bytes)
    }

    /// The bytes of bundled component `file`, refusing more than
    /// `max_bytes` (`limits.componentBytes`) before reading them.
    pub fn component(&self, file: &str, max_bytes: usize) -> Result<Vec<u8>, LoadErrorKind> {
        let entry = self.entry(file).ok_or_else(|| {
            LoadErrorKind::NotFound(format!(
                "{LOCATION_PREFIX}{file} (this weir bundles {})",
                self.files().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let size = usize::try_from(entry.component.len).unwrap_or(usize::MAX);
        if size > max_bytes {
            return Err(LoadErrorKind::OverLoadLimit {
                limit: super::limits::Limit::ComponentBytes,
                found: size,
                cap: max_bytes as u64,
            });
        }
        self.read(entry.component, file)
            .map_err(|e| LoadErrorKind::Read(e.to_string()))
    }

    /// The compatibility hash of the engine the bundled code was compiled
    /// on (what a refusal is explained with).
    pub fn engine(&self) -> &str {
        &self.index.engine
    }

    /// The compiled code bundled for the component whose sha256 is
    /// `sha256` (wasmtime decides whether it suits the running engine).
    pub fn compiled(&self, sha256: &str) -> Option<Result<Vec<u8>, BundleError>> {
        let entry = self.index.entries.iter().find(|e| e.sha256 == sha256)?;
        Some(self.read(entry.compiled, &entry.file))
    }
}

/// Writes `out`: a copy of executable `exe` with `components` (file name,
/// bytes) bundled, each compiled for an engine configured by `settings` (the
/// controller's engine must have the same compatibility hash to use the
/// code). Compiles on every core.
pub fn write(
    exe: &Path,
    out: &Path,
    settings: &super::engine::EngineSettings,
    components: Vec<(String, Vec<u8>)>,
) -> Result<(), BundleError> {
    let engine = super::engine::build_engine(settings).map_err(|e| BundleError::Compile {
        file: "(engine)".into(),
        why: super::error::error_chain(&e),
    })?;
    let compiled = compile_all(&engine, &components)?;
    let payload = payload(&engine, &components, &compiled).map_err(|source| BundleError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    append(exe, out, &payload)
}

/// The payload: the index's length, the index, the blobs, the footer.
fn payload(
    engine: &Engine,
    components: &[(String, Vec<u8>)],
    compiled: &[Vec<u8>],
) -> std::io::Result<Vec<u8>> {
    let mut blobs: Vec<u8> = Vec::new();
    let mut span = |bytes: &[u8]| {
        let span = Span {
            offset: blobs.len() as u64,
            len: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        };
        blobs.extend_from_slice(bytes);
        span
    };
    let entries = components
        .iter()
        .zip(compiled)
        .map(|((file, bytes), code)| Entry {
            file: file.clone(),
            sha256: super::source::sha256_hex(bytes),
            component: span(bytes),
            compiled: span(code),
        })
        .collect();
    let index = serde_json::to_vec(&Index {
        engine: engine_hash(engine),
        entries,
    })
    .map_err(std::io::Error::other)?;
    let length = 8 + index.len() as u64 + blobs.len() as u64;
    let mut payload = Vec::with_capacity(usize::try_from(length).unwrap_or(0) + 24);
    payload.extend_from_slice(&(index.len() as u64).to_le_bytes());
    payload.extend_from_slice(&index);
    payload.extend_from_slice(&blobs);
    payload.extend_from_slice(&length.to_le_bytes());
    payload.extend_from_slice(MAGIC);
    Ok(payload)
}

/// Writes `exe`'s code (without any bundle it already has) and then
/// `payload` to `out`, atomically, with `exe`'s permissions.
fn append(exe: &Path, out: &Path, payload: &[u8]) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    let code_length = match Bundle::open(exe)? {
        Some(bundle) => bundle.start,
        None => std::fs::metadata(exe).map_err(io(exe))?.len(),
    };
    let executable = std::fs::File::open(exe).map_err(io(exe))?;
    let tmp = out.with_extension("partial");
    let mut target = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    std::io::copy(&mut executable.take(code_length), &mut target).map_err(io(&tmp))?;
    target.write_all(payload).map_err(io(&tmp))?;
    target.sync_all().map_err(io(&tmp))?;
    drop(target);
    let mode = std::fs::metadata(exe).map_err(io(exe))?.permissions();
    std::fs::set_permissions(&tmp, mode).map_err(io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io(out))
}

/// One component's compiled code, once a worker has compiled it.
type CompileSlot = std::sync::Mutex<Option<Result<Vec<u8>, BundleError>>>;

/// Compiles every component, on as many threads as there are cores (each
/// compile is itself parallel inside wasmtime, so this mostly overlaps
/// one component's serial parts with another's).
fn compile_all(
    engine: &Engine,
    components: &[(String, Vec<u8>)],
) -> Result<Vec<Vec<u8>>, BundleError> {
    let workers = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(components.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<CompileSlot> = components
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((file, bytes)) = components.get(i) else {
                        return;
                    };
                    let compiled =
                        engine
                            .precompile_component(bytes)
                            .map_err(|e| BundleError::Compile {
                                file: file.clone(),
                                why: super::error::error_chain(&e),
                            });
                    if let Some(slot) = results.get(i) {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(compiled);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .zip(components)
        .map(|(slot, (file, _))| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| {
                    Err(BundleError::Compile {
                        file: file.clone(),
                        why: "not compiled".into(),
                    })
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An "executable" of `code` with `payload` appended as a bundle,
    /// claiming `claimed` bytes of payload.
    fn file_with(code: &[u8], payload: &[u8], claimed: u64) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("file");
        file.write_all(code).expect("code");
        file.write_all(payload).expect("payload");
        file.write_all(&claimed.to_le_bytes()).expect("length");
        file.write_all(MAGIC).expect("magic");
        file
    }

    fn payload(index: &str, blobs: &[u8]) -> Vec<u8> {
        let mut bytes = (index.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(index.as_bytes());
        bytes.extend_from_slice(blobs);
        bytes
    }

    #[test]
    fn an_executable_without_a_bundle_has_none() {
        let mut file = tempfile::NamedTempFile::new().expect("file");
        file.write_all(b"\x7fELF and some code").expect("code");
        assert!(matches!(Bundle::open(file.path()), Ok(None)));
    }

    #[test]
    fn a_damaged_bundle_is_refused_with_what_is_wrong_never_read_out_of_bounds() {
        let index = r#"{"engine":"0","entries":[{"file":"a.wasm","sha256":"x",
            "component":{"offset":0,"len":4,"crc32":0},"compiled":{"offset":4,"len":4,"crc32":0}}]}"#;
        let good = payload(index, b"abcdefgh");
        let cases: Vec<(Vec<u8>, u64, &str)> = vec![
            // A length longer than the file.
            (good.clone(), u64::MAX / 2, "payload of"),
            // An index longer than the payload.
            (
                {
                    let mut p = good.clone();
                    p.splice(0..8, (1u64 << 40).to_le_bytes());
                    p
                },
                good.len() as u64,
                "an index of",
            ),
            // A span past the blobs.
            (
                payload(
                    &index.replace("\"len\":4,\"crc32\":0}}", "\"len\":5,\"crc32\":0}}"),
                    b"abcdefgh",
                ),
                good.len() as u64,
                "outside the payload",
            ),
            // An index that is not JSON.
            (payload("{not json", b""), 17, "its index"),
        ];
        for (bytes, claimed, expected) in cases {
            let file = file_with(b"code", &bytes, claimed);
            match Bundle::open(file.path()) {
                Err(e @ BundleError::Damaged { .. }) => {
                    assert!(e.to_string().contains(expected), "{e}");
                    assert!(e.to_string().contains("weir plugin bundle"), "{e}");
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
        let file = file_with(b"code", &good, good.len() as u64);
        let bundle = Bundle::open(file.path()).expect("open").expect("a bundle");
        assert_eq!(bundle.files().collect::<Vec<_>>(), ["a.wasm"]);
        // Its checksums are wrong (0): reading a blob says so.
        assert!(matches!(
            bundle.component("a.wasm", 1 << 20),
            Err(LoadErrorKind::Read(why)) if why.contains("checksum")
        ));
        assert!(matches!(
            bundle.component("a.wasm", 3),
            Err(LoadErrorKind::OverLoadLimit { .. })
        ));
        assert!(matches!(
            bundle.component("b.wasm", 1 << 20),
            Err(LoadErrorKind::NotFound(why)) if why.contains("a.wasm")
        ));
    }
}
