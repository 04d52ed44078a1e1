//! The recorder's rings on disk: one directory per plugin, bounded in
//! files and bytes, written by one background thread.

use super::format::Recording;
use super::redact::redact;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

/// Recordings waiting for the disk; past this they are dropped (counted).
pub const WRITE_QUEUE: usize = 64;

/// The recorder's settings (`--record-dir` / `--record-sample` on `weir
/// run`; the caps are [`RecorderConfig::new`]'s defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderConfig {
    /// Where recordings are kept: one directory per plugin.
    pub dir: PathBuf,
    /// Also keep one in this many healthy calls (0: faults only).
    pub sample_every: u64,
    /// Most recordings kept per plugin (oldest dropped first).
    pub max_per_plugin: usize,
    /// Most bytes of recordings kept per plugin.
    pub max_bytes_per_plugin: u64,
    /// Largest single recording written; a larger one is dropped.
    pub max_record_bytes: usize,
}

impl RecorderConfig {
    /// Faults only, in `dir`; 50 recordings and 64 MiB per plugin, 8 MiB
    /// per recording.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecorderConfig {
            dir: dir.into(),
            sample_every: 0,
            max_per_plugin: 50,
            max_bytes_per_plugin: 64 << 20,
            max_record_bytes: 8 << 20,
        }
    }

    /// The default directory: `recordings` under the user's state directory.
    pub fn default_dir() -> PathBuf {
        dirs::state_dir()
            .or_else(dirs::cache_dir)
            .unwrap_or_else(std::env::temp_dir)
            .join("weir")
            .join("recordings")
    }
}

/// Counts of what the recorder did.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Recordings written.
    pub written: AtomicU64,
    /// Dropped because the write queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Dropped because larger than `max_record_bytes`.
    pub dropped_too_large: AtomicU64,
    /// Failed to write (I/O).
    pub failed: AtomicU64,
}

/// A recording waiting for the disk, with the values to scrub from it.
type Queued = (PathBuf, Recording, Vec<String>);

/// Keeps recordings: hands each to the writer thread, which redacts,
/// serialises, writes and trims the plugin's ring.
pub struct Recorder {
    config: RecorderConfig,
    queue: SyncSender<Queued>,
    sequence: AtomicU64,
    stats: std::sync::Arc<RecorderStats>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts the writer thread.
    pub fn start(config: RecorderConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.dir)?;
        let (queue, receiver) = std::sync::mpsc::sync_channel::<Queued>(WRITE_QUEUE);
        let stats = std::sync::Arc::new(RecorderStats::default());
        let writer_stats = stats.clone();
        let writer_config = config.clone();
        std::thread::Builder::new()
            .name("weir-recorder".into())
            .spawn(move || {
                // Ends when the recorder (the only sender) is dropped.
                for (path, recording, secrets) in receiver {
                    write_one(&writer_config, &writer_stats, &path, recording, &secrets);
                }
            })?;
        Ok(Recorder {
            config,
            queue,
            sequence: AtomicU64::new(0),
            stats,
        })
    }

    /// The settings.
    pub fn config(&self) -> &RecorderConfig {
        &self.config
    }

    /// What it has done so far.
    pub fn stats(&self) -> &RecorderStats {
        &self.stats
    }

    /// Whether a healthy call, the `n`th of its plugin, is sampled.
    pub fn samples(&self, n: u64) -> bool {
        self.config.sample_every > 0 && n.is_multiple_of(self.config.sample_every)
    }

    /// The id a new recording of `method` ending in `outcome` gets:
    /// sortable by time, unique within the process.
    pub fn next_id(&self, method: &str, outcome: &str) -> String {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{millis:013}-{n:06}-{method}-{outcome}")
    }

    /// Where recordings of `plugin` are kept.
    pub fn plugin_dir(&self, plugin: &str) -> PathBuf {
        self.config.dir.join(file_name_of(plugin))
    }

    /// Queues `recording` for writing, `secrets` to be scrubbed from it
    /// with what redaction finds; returns the path it will have, or `None`
    /// when the queue is full (it is dropped, and counted).
    pub fn keep(&self, recording: Recording, secrets: Vec<String>) -> Option<PathBuf> {
        let path = self
            .plugin_dir(&recording.plugin.name)
            .join(format!("{}.json", recording.id));
        match self.queue.try_send((path.clone(), recording, secrets)) {
            Ok(()) => Some(path),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The recordings of `plugin`, oldest first.
    pub fn list(&self, plugin: &str) -> Vec<PathBuf> {
        ring_files(&self.plugin_dir(plugin))
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }
}

/// A plugin name as a directory name (`shop/istio` -> `shop_istio`).
fn file_name_of(plugin: &str) -> String {
    plugin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_one(
    config: &RecorderConfig,
    stats: &RecorderStats,
    path: &Path,
    recording: Recording,
    secrets: &[String],
) {
    let mut value = match serde_json::to_value(&recording) {
        Ok(v) => v,
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "could not serialise a recording");
            return;
        }
    };
    drop(recording);
    let places = match redact(&mut value, secrets) {
        Ok(places) => places,
        Err(e) => {
            // Never written unredacted.
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %path.display(), error = %e, "recording dropped");
            return;
        }
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("redactions".into(), serde_json::json!(places));
    }
    let text = match serde_json::to_vec_pretty(&value) {
        Ok(t) => t,
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "could not serialise a recording");
            return;
        }
    };
    if text.len() > config.max_record_bytes {
        stats.dropped_too_large.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %path.display(), bytes = text.len(), cap = config.max_record_bytes, "recording larger than the recorder's max_record_bytes; dropped");
        return;
    }
    let Some(dir) = path.parent() else { return };
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        // Written whole, then renamed: a reader never sees half a recording.
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, &text)?;
        std::fs::rename(&partial, path)
    });
    match written {
        Ok(()) => {
            stats.written.fetch_add(1, Ordering::Relaxed);
            trim(dir, config.max_per_plugin, config.max_bytes_per_plugin);
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %path.display(), error = %e, "could not write a recording");
        }
    }
}

/// The recordings in `dir` with their sizes, oldest first (names sort by time).
fn ring_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<(PathBuf, u64)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect();
    files.sort();
    files
}

/// Drops the oldest recordings in `dir` until it holds at most `count`
/// files and `bytes` bytes.
fn trim(dir: &Path, count: usize, bytes: u64) {
    let files = ring_files(dir);
    let mut total: u64 = files.iter().map(|(_, size)| size).sum();
    let mut left = files.len();
    for (path, size) in files {
        if left <= count.max(1) && total <= bytes {
            break;
        }
        // The newest recording always stays.
        if left <= 1 {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            left -= 1;
            total = total.saturating_sub(size);
        }
    }
}
