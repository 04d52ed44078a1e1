//! What a plugin file held when it was last read: its sha256 and its
//! footprint, by the file's identity (device, inode, size, modification and
//! change times). Kept in the precompiled cache directory (`digests/`), so
//! a warm start takes a file it has seen from the cache without reading
//! and hashing it again.
//!
//! Trusted as much as the cache entries beside it (the directory is the
//! host's own, mode 0700). A file written since it was remembered has
//! another identity: writing sets the change time, which no unprivileged
//! process can set back. One write could still go unseen: one in the same
//! clock tick as the read that was remembered. So a file is remembered
//! only if its change time is at least [`SETTLED`] old when it is measured
//! (git's "racily clean" rule).

use super::prescan::Footprint;
use super::source::sha256_hex;
use serde::{Deserialize, Serialize};
use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old a file's change time must be for the file to be remembered.
pub const SETTLED: Duration = Duration::from_secs(2);
/// A memo's `format`: the format and its version.
const FORMAT: &str = "weir-digest-memo-1";
/// A memo is one short line of JSON; anything longer is not one.
const MAX_MEMO_BYTES: u64 = 1024;

/// A file's identity: what changes when its contents may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl FileIdentity {
    /// The identity of the file `metadata` describes.
    pub fn of(metadata: &Metadata) -> Self {
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            changed_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// Whether the file last changed at least [`SETTLED`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        let settled_ns = i128::try_from(SETTLED.as_nanos()).unwrap_or(i128::MAX);
        self.changed_ns.max(self.modified_ns) <= now_ns.saturating_sub(settled_ns)
    }
}

/// What a file held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// Its sha256, hex.
    pub sha256: String,
    /// Its footprint (it was a component).
    pub footprint: Footprint,
}

/// One memo file: a line of JSON, ended by a newline (a memo without it
/// was cut short).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Memo {
    format: String,
    identity: FileIdentity,
    known: Known,
}

/// The memo directory.
#[derive(Debug, Clone)]
pub struct DigestMemo {
    dir: PathBuf,
}

impl DigestMemo {
    /// The memo kept in the precompiled cache directory `cache_dir`.
    pub fn in_cache(cache_dir: &Path) -> Self {
        DigestMemo {
            dir: cache_dir.join("digests"),
        }
    }

    /// What the file at `path` held, if it was remembered with `identity`.
    pub fn recall(&self, path: &Path, identity: &FileIdentity) -> Option<Known> {
        let mut text = String::new();
        std::fs::File::open(self.memo_path(path))
            .ok()?
            .take(MAX_MEMO_BYTES)
            .read_to_string(&mut text)
            .ok()?;
        let memo: Memo = serde_json::from_str(text.strip_suffix('\n')?).ok()?;
        let sha256 = &memo.known.sha256;
        let digest = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        (memo.format == FORMAT && digest && memo.identity == *identity).then_some(memo.known)
    }

    /// Remembers what the file at `path` held when it had `identity`
    /// (measured at `measured`), unless it changed too recently for its
    /// identity to tell a later write apart. Best effort: a memo that
    /// cannot be written only means the file is read again next time.
    pub fn remember(
        &self,
        path: &Path,
        identity: &FileIdentity,
        measured: SystemTime,
        known: &Known,
    ) {
        if !identity.settled(measured) {
            return;
        }
        let memo = Memo {
            format: FORMAT.to_string(),
            identity: *identity,
            known: known.clone(),
        };
        let line = match serde_json::to_string(&memo) {
            Ok(json) => json + "\n",
            Err(e) => {
                tracing::debug!(error = %e, "digest memo not encoded");
                return;
            }
        };
        if let Err(e) = self.write(path, &line) {
            tracing::debug!(error = %e, dir = %self.dir.display(), "digest memo not written");
        }
    }

    fn write(&self, path: &Path, line: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let target = self.memo_path(path);
        let partial = target.with_extension(format!("partial-{}", std::process::id()));
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(line.as_bytes())?;
        drop(file);
        // Renamed into place: a reader sees the old memo or the new one.
        std::fs::rename(&partial, &target)
    }

    /// One memo per path: named by the path's digest.
    fn memo_path(&self, path: &Path) -> PathBuf {
        let key = sha256_hex(path.as_os_str().as_encoded_bytes());
        self.dir.join(format!("{key}.memo"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        Known {
            sha256: "ab".repeat(32),
            footprint: Footprint {
                bytes: 300_000,
                functions: 1_200,
                code_bytes: 200_000,
                memories: 1,
                memory_minimum_bytes: 1 << 17,
                tables: 1,
            },
        }
    }

    fn settled_file(dir: &Path) -> (PathBuf, FileIdentity, SystemTime) {
        let path = dir.join("plugin.wasm");
        std::fs::write(&path, b"\0asm").unwrap();
        let identity = FileIdentity::of(&std::fs::metadata(&path).unwrap());
        (path, identity, SystemTime::now() + SETTLED * 2)
    }

    #[test]
    fn a_remembered_file_is_recalled_while_its_identity_holds() {
        let dir = tempfile::tempdir().unwrap();
        let memo = DigestMemo::in_cache(dir.path());
        let (path, identity, later) = settled_file(dir.path());
        memo.remember(&path, &identity, later, &known());
        assert_eq!(memo.recall(&path, &identity), Some(known()));
        // Another path, or the same path with another identity: nothing.
        assert_eq!(memo.recall(&dir.path().join("other.wasm"), &identity), None);
        let mut rewritten = identity;
        rewritten.changed_ns += 1;
        assert_eq!(memo.recall(&path, &rewritten), None);
        rewritten = identity;
        rewritten.inode += 1;
        assert_eq!(memo.recall(&path, &rewritten), None);
    }

    #[test]
    fn a_file_written_moments_ago_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let memo = DigestMemo::in_cache(dir.path());
        let (path, identity, _) = settled_file(dir.path());
        memo.remember(&path, &identity, SystemTime::now(), &known());
        assert_eq!(memo.recall(&path, &identity), None);
    }

    #[test]
    fn a_damaged_memo_is_no_memo() {
        let dir = tempfile::tempdir().unwrap();
        let memo = DigestMemo::in_cache(dir.path());
        let (path, identity, later) = settled_file(dir.path());
        memo.remember(&path, &identity, later, &known());
        let file = memo.memo_path(&path);
        let line = std::fs::read_to_string(&file).unwrap();
        for damaged in [
            line.replace(FORMAT, "weir-digest-memo-0"),
            line.trim_end().to_string(),
            line.replace(&"ab".repeat(32), "not-a-digest"),
            format!("{} 7\n", line.trim_end()),
            line[..line.len() / 2].to_string(),
        ] {
            std::fs::write(&file, damaged).unwrap();
            assert_eq!(memo.recall(&path, &identity), None);
        }
    }
}
