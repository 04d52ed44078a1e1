//! Replay: a recorded call made again, offline, against the same build or
//! another, with every host answer from the recording; the difference in
//! outcome and staged writes is the report.

use super::format::{RECORDING_FORMAT, RecordedOutcome, Recording};
use super::source::ReplaySource;
use crate::cluster::{Cluster, Write};
use crate::plugin::error::LoadError;
use crate::plugin::runtime::{PluginRuntime, PluginSpec, RuntimeConfig};
use crate::plugin::sandbox::replay_call;
use crate::plugin::{FaultPolicy, PluginKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest recording file a replay reads.
pub const MAX_RECORDING_BYTES: u64 = 64 << 20;

/// Why a recording could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be read.
    #[error("cannot read the recording {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a recording.
    #[error(
        "{path} is not a Weir recording ({reason}); recordings are the JSON files the flight recorder writes"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The plugin could not be loaded.
    #[error("{0}")]
    Load(#[from] Box<LoadError>),
    /// The recorded plugin's file is now another build.
    #[error(
        "{location} is no longer the recorded build (recorded sha256 {recorded}, now {found}); pass --plugin {location} to replay against this build anyway"
    )]
    DifferentBuild {
        /// Where the plugin was loaded from.
        location: String,
        /// The recorded digest.
        recorded: String,
        /// The digest found there now.
        found: String,
    },
    /// The runtime could not be set up.
    #[error("{0}")]
    Runtime(String),
}

/// Reads and checks one recording file.
pub fn load_recording(path: &Path) -> Result<Recording, ReplayError> {
    let read_err = |reason: String| ReplayError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| read_err(e.to_string()))?
        .len();
    if size > MAX_RECORDING_BYTES {
        return Err(read_err(format!(
            "{size} bytes, over the {MAX_RECORDING_BYTES}-byte cap on recordings"
        )));
    }
    let text = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
    let recording: Recording = serde_json::from_slice(&text).map_err(|e| ReplayError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if recording.format != RECORDING_FORMAT {
        return Err(ReplayError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "format {:?}, this weir reads {RECORDING_FORMAT:?}",
                recording.format
            ),
        });
    }
    Ok(recording)
}

/// What a replay found.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// The recording's id.
    pub id: String,
    /// The plugin that was replayed (a path).
    pub location: String,
    /// Whether it is the recorded build.
    pub same_build: bool,
    /// The recorded outcome.
    pub recorded: RecordedOutcome,
    /// The replayed outcome.
    pub replayed: RecordedOutcome,
    /// The recorded staged writes.
    pub recorded_writes: Vec<Write>,
    /// The replayed staged writes (never applied).
    pub replayed_writes: Vec<Write>,
    /// What the replayed call asked for that the recording has no answer for.
    pub divergences: Vec<String>,
    /// The replayed call's log lines.
    pub logs: Vec<String>,
    /// What the replayed call printed.
    pub guest_output: String,
}

impl ReplayReport {
    /// Whether the outcome (its kind and reply) is the recorded one.
    pub fn same_outcome(&self) -> bool {
        self.recorded.kind == self.replayed.kind && self.recorded.reply == self.replayed.reply
    }

    /// Whether the staged writes are the recorded ones.
    pub fn same_writes(&self) -> bool {
        serde_json::to_value(&self.recorded_writes).ok()
            == serde_json::to_value(&self.replayed_writes).ok()
    }

    /// Whether the replay did exactly what the recorded call did.
    pub fn same(&self) -> bool {
        self.same_outcome() && self.same_writes()
    }

    /// The report as text: both outcomes, and a diff of the staged writes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let build = if self.same_build {
            "the recorded build"
        } else {
            "another build"
        };
        out.push_str(&format!(
            "replayed {} against {} ({build})\n",
            self.id, self.location
        ));
        let outcome = |o: &RecordedOutcome| match (&o.reply, &o.error) {
            (Some(reply), _) => format!("{} {reply}", o.kind),
            (None, Some(error)) => format!("{}: {error}", o.kind),
            (None, None) => o.kind.clone(),
        };
        out.push_str(&format!(
            "  recorded outcome: {}\n",
            outcome(&self.recorded)
        ));
        out.push_str(&format!(
            "  replayed outcome: {}\n",
            outcome(&self.replayed)
        ));
        if self.same_outcome()
            && self.recorded.error != self.replayed.error
            && self.replayed.error.is_some()
        {
            out.push_str("  (same kind of outcome; the messages differ)\n");
        }
        let pretty = |w: &[Write]| {
            crate::plugin::shadow::canonical_text(&serde_json::to_value(w).unwrap_or_default())
        };
        if self.same_writes() {
            out.push_str(&format!(
                "  staged writes: the same ({})\n",
                self.recorded_writes.len()
            ));
        } else {
            out.push_str("  staged writes differ (- recorded, + replayed; never applied):\n");
            let (before, after) = (pretty(&self.recorded_writes), pretty(&self.replayed_writes));
            let diff = similar::TextDiff::from_lines(&before, &after);
            for change in diff.iter_all_changes() {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => "-",
                    similar::ChangeTag::Insert => "+",
                    similar::ChangeTag::Equal => " ",
                };
                out.push_str(&format!("    {sign} {}", change.value()));
                if change.missing_newline() {
                    out.push('\n');
                }
            }
        }
        for d in &self.divergences {
            out.push_str(&format!("  diverged: {d}\n"));
        }
        out.push_str(if self.same() {
            "result: the same as recorded\n"
        } else {
            "result: DIFFERENT from the recording\n"
        });
        out
    }
}

/// The plugin kind a recording names.
fn kind_of(label: &str) -> Option<PluginKind> {
    [
        PluginKind::TrafficRouter,
        PluginKind::MetricProvider,
        PluginKind::StepPlugin,
        PluginKind::ConditionEvaluator,
    ]
    .into_iter()
    .find(|k| k.label() == label)
}

/// Replays `recording` against the recorded plugin, or against the
/// component at `plugin` (another build). Nothing is written anywhere and
/// no request leaves the process.
pub async fn replay(
    config: &RuntimeConfig,
    recording: &Recording,
    plugin: Option<&str>,
) -> Result<ReplayReport, ReplayError> {
    let source = Arc::new(ReplaySource::new(recording.answers.clone()));
    let mut config = config.clone();
    config.recorder = None;
    let cluster: Arc<dyn Cluster> = source.clone();
    let runtime =
        PluginRuntime::new(config, cluster).map_err(|e| ReplayError::Runtime(e.to_string()))?;
    let kind = kind_of(&recording.plugin.kind).ok_or_else(|| {
        ReplayError::Runtime(format!(
            "the recording names an unknown plugin kind {:?}",
            recording.plugin.kind
        ))
    })?;
    let location = plugin.unwrap_or(&recording.plugin.location).to_string();
    let registration = &recording.registration;
    let mut spec = PluginSpec::new(recording.plugin.name.clone(), location.clone());
    spec.args = registration.args.clone();
    spec.grant = registration.grant.clone();
    spec.http = registration.http.clone();
    spec.limits = registration.limits.clone();
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    let loaded = runtime.prepare_for_replay(&spec, kind).await?;
    let same_build = loaded.sha256 == recording.plugin.sha256;
    if plugin.is_none() && !same_build {
        return Err(ReplayError::DifferentBuild {
            location,
            recorded: recording.plugin.sha256.clone(),
            found: loaded.sha256.clone(),
        });
    }
    let call = recording.call.as_call();
    let replayed = replay_call(&loaded, &call, source.clone()).await;
    Ok(ReplayReport {
        id: recording.id.clone(),
        location,
        same_build,
        recorded: recording.outcome.clone(),
        replayed: replayed.outcome,
        recorded_writes: recording.staged_writes.clone(),
        replayed_writes: replayed.staged_writes,
        divergences: source.divergences(),
        logs: replayed.logs,
        guest_output: replayed.guest_output,
    })
}
