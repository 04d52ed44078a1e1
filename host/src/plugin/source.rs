//! Where a plugin's bytes come from: a path, `file://`, or `http(s)://`,
//! checked against a sha256 pin when one is given.

use super::digest_memo::{DigestMemo, FileIdentity, Known};
use super::error::LoadErrorKind;
use super::limits::Limit;
use super::prescan::Footprint;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn too_large(found: usize, max_bytes: usize) -> LoadErrorKind {
    LoadErrorKind::OverLoadLimit {
        limit: Limit::ComponentBytes,
        found,
        cap: max_bytes as u64,
    }
}

/// A parsed plugin location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file.
    File(PathBuf),
    /// A URL to download.
    Url(String),
    /// A component bundled into the `weir` executable
    /// (`bundled:weir_plugin_istio.wasm`; see `weir plugin bundle`).
    Bundled(String),
}

impl Location {
    /// Parses `location` as Argo does: `file://` (relative `file://./x` too),
    /// `http://`, `https://`, or a bare path.
    pub fn parse(location: &str) -> Result<Self, LoadErrorKind> {
        if let Some(file) = location.strip_prefix(super::bundle::LOCATION_PREFIX) {
            return Ok(Location::Bundled(file.to_string()));
        }
        if let Some(path) = location.strip_prefix("file://") {
            return Ok(Location::File(PathBuf::from(path)));
        }
        if let Some(path) = location.strip_prefix("file:") {
            return Ok(Location::File(PathBuf::from(path)));
        }
        if location.starts_with("https://") || location.starts_with("http://") {
            return Ok(Location::Url(location.to_string()));
        }
        if location.contains("://") || location.is_empty() {
            return Err(LoadErrorKind::BadLocation(location.to_string()));
        }
        Ok(Location::File(PathBuf::from(location)))
    }
}

/// The hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a file's digest `actual` (hex sha256) against an optional pin.
pub fn check_pin(actual: &str, pin: Option<&str>) -> Result<(), LoadErrorKind> {
    if let Some(pin) = pin.map(str::trim).filter(|p| !p.is_empty()) {
        if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(LoadErrorKind::BadPin(pin.to_string()));
        }
        if !pin.eq_ignore_ascii_case(actual) {
            return Err(LoadErrorKind::ShaMismatch {
                expected: pin.to_ascii_lowercase(),
                actual: actual.to_string(),
            });
        }
    }
    Ok(())
}

/// Reads the plugin's bytes, refusing more than `max_bytes`
/// (`limits.componentBytes`) before reading them.
pub async fn fetch(location: &Location, max_bytes: usize) -> Result<Vec<u8>, LoadErrorKind> {
    match location {
        Location::File(path) => {
            // One hand-off to a blocking thread: open, measure, read.
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_file(&path, max_bytes))
                .await
                .map_err(|e| LoadErrorKind::Host(format!("file read task: {e}")))?
        }
        Location::Url(url) => download(url, max_bytes).await,
        Location::Bundled(file) => Err(LoadErrorKind::NotFound(format!(
            "{}{file}: this weir has no plugin bundle; build one with `weir plugin bundle`, or pass --plugins",
            super::bundle::LOCATION_PREFIX
        ))),
    }
}

/// Reads the file at `path`, refusing more than `max_bytes`: measured
/// before reading, and read no further than one byte past the limit (the
/// file may grow after it was measured).
fn read_file(path: &Path, max_bytes: usize) -> Result<Vec<u8>, LoadErrorKind> {
    let (file, metadata) = open_measured(path, max_bytes)?;
    read_opened(file, metadata.len(), path, max_bytes)
}

/// Opens the file at `path` and measures it, refusing more than
/// `max_bytes`.
fn open_measured(
    path: &Path,
    max_bytes: usize,
) -> Result<(std::fs::File, std::fs::Metadata), LoadErrorKind> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadErrorKind::NotFound(path.display().to_string()),
        _ => read_error(path, e),
    })?;
    let metadata = file.metadata().map_err(|e| read_error(path, e))?;
    let size = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
    if size > max_bytes {
        return Err(too_large(size, max_bytes));
    }
    Ok((file, metadata))
}

/// Reads the opened file `file` (at `path`, `size` bytes when measured),
/// no further than one byte past `max_bytes`.
fn read_opened(
    file: std::fs::File,
    size: u64,
    path: &Path,
    max_bytes: usize,
) -> Result<Vec<u8>, LoadErrorKind> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(max_bytes));
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(path, e))?;
    if bytes.len() > max_bytes {
        return Err(too_large(bytes.len(), max_bytes));
    }
    Ok(bytes)
}

fn read_error(path: &Path, e: std::io::Error) -> LoadErrorKind {
    LoadErrorKind::Read(format!("{}: {e}", path.display()))
}

/// A plugin's wasm as a load sees it: its digest, and its bytes or where
/// to read them.
pub(crate) struct Wasm {
    /// Hex sha256 of the bytes.
    pub sha256: String,
    bytes: WasmBytes,
}

/// A component's footprint, or why the bytes are not a component.
pub(crate) type Shape = Result<Footprint, LoadErrorKind>;

enum WasmBytes {
    /// Read (and hashed) by this load.
    Held(Vec<u8>),
    /// Known from the digest memo, not read: the file and its size limit,
    /// for when the bytes are needed after all.
    OnDisk(PathBuf, usize),
}

impl Wasm {
    /// Hashes and measures `bytes` (a blocking step: a pass over each).
    pub fn of_bytes(bytes: Vec<u8>) -> (Self, Shape) {
        let shape = match classify(&bytes) {
            Ok(WasmKind::Component) => Footprint::of(&bytes),
            Ok(WasmKind::CoreModule) => Err(LoadErrorKind::CoreModule),
            Err(e) => Err(e),
        };
        let wasm = Wasm {
            sha256: sha256_hex(&bytes),
            bytes: WasmBytes::Held(bytes),
        };
        (wasm, shape)
    }

    /// The bytes: those held, or the file read again (a blocking step),
    /// refused if it no longer has the digest this load checked.
    pub fn into_bytes(self) -> Result<Vec<u8>, LoadErrorKind> {
        let (path, max_bytes) = match self.bytes {
            WasmBytes::Held(bytes) => return Ok(bytes),
            WasmBytes::OnDisk(path, max_bytes) => (path, max_bytes),
        };
        let bytes = read_file(&path, max_bytes)?;
        if sha256_hex(&bytes) != self.sha256 {
            return Err(LoadErrorKind::Read(format!(
                "{}: the file changed while it was being loaded; load it again",
                path.display()
            )));
        }
        Ok(bytes)
    }
}

/// Reads the plugin file at `path` (a blocking step), refusing more than
/// `max_bytes` before reading; a file `memo` knows by its identity is not
/// read at all, and one it does not know is remembered.
pub(crate) fn read_wasm_file(
    path: &Path,
    max_bytes: usize,
    memo: Option<&DigestMemo>,
) -> Result<(Wasm, Shape), LoadErrorKind> {
    let (file, metadata) = open_measured(path, max_bytes)?;
    let Some(memo) = memo else {
        return Ok(Wasm::of_bytes(read_opened(
            file,
            metadata.len(),
            path,
            max_bytes,
        )?));
    };
    let identity = FileIdentity::of(&metadata);
    let measured = SystemTime::now();
    if let Some(known) = memo.recall(path, &identity) {
        let wasm = Wasm {
            sha256: known.sha256,
            bytes: WasmBytes::OnDisk(path.to_path_buf(), max_bytes),
        };
        return Ok((wasm, Ok(known.footprint)));
    }
    let (wasm, shape) = Wasm::of_bytes(read_opened(file, metadata.len(), path, max_bytes)?);
    if let Ok(footprint) = shape {
        let known = Known {
            sha256: wasm.sha256.clone(),
            footprint,
        };
        memo.remember(path, &identity, measured, &known);
    }
    Ok((wasm, shape))
}

async fn download(url: &str, max_bytes: usize) -> Result<Vec<u8>, LoadErrorKind> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| LoadErrorKind::Read(format!("HTTP client: {e}")))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| LoadErrorKind::Read(format!("GET {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(LoadErrorKind::Read(format!(
            "GET {url}: status {}",
            response.status()
        )));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| LoadErrorKind::Read(format!("GET {url}: {e}")))?
    {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(too_large(bytes.len() + chunk.len(), max_bytes));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// What the first bytes say a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A component (what Weir loads).
    Component,
    /// A core module.
    CoreModule,
}

/// Classifies `bytes` by the wasm preamble.
pub fn classify(bytes: &[u8]) -> Result<WasmKind, LoadErrorKind> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Ok(WasmKind::CoreModule),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(WasmKind::Component),
        Some([0, b'a', b's', b'm', rest @ ..]) => {
            Err(LoadErrorKind::UnknownWasm(hex::encode(rest)))
        }
        _ => Err(LoadErrorKind::NotWasm),
    }
}
