//! The flight recorder: every faulted plugin call (and a sample of healthy
//! ones) is kept on disk with everything needed to run it again offline:
//! the call, the registration, and every answer the host gave (cluster
//! reads, HTTP responses, clock readings), with its outcome, staged writes
//! and output. Credentials are redacted before anything is written.
//!
//! Bounded everywhere: a call's tape holds at most [`TAPE_ANSWERS`]
//! answers (its cluster and HTTP answers are already bounded by the call's
//! budget); one recording at most `max_record_bytes`; each plugin's ring at
//! most `max_per_plugin` files and `max_bytes_per_plugin` bytes (oldest dropped
//! first); and recordings wait for the disk in a queue of
//! [`WRITE_QUEUE`], past which they are dropped and counted, so the
//! recorder never holds up a call.

mod format;
mod redact;
mod replay;
mod ring;
mod source;
mod tape;

pub use format::{
    Answer, HostAnswer, HttpResponse, OwnedCall, RECORDING_FORMAT, RecordedOutcome, RecordedPlugin,
    RecordedRegistration, Recording,
};
pub use redact::{REDACTED, is_credential_name, redact};
pub use replay::{ReplayError, ReplayReport, load_recording, replay};
pub use ring::{Recorder, RecorderConfig, RecorderStats, WRITE_QUEUE};
pub use source::ReplaySource;
pub use tape::{RecordingCluster, TAPE_ANSWERS, Tape};

pub(crate) use format::reply_value;
pub(crate) use source::{HttpReplay, ReplayMonotonicClock, ReplayWallClock};
pub(crate) use tape::{HttpRecorder, RecordingMonotonicClock, RecordingWallClock};

tokio::task_local! {
    /// Values the host knows are secret for the calls made in this scope.
    static CALL_SECRETS: std::sync::Arc<Vec<String>>;
}

/// Runs `work` with `secrets` (a metric's `secretKeyRef` argument values,
/// which the host substitutes into the metric it hands the provider)
/// scrubbed from any recording of the plugin calls `work` makes.
pub async fn with_secrets<F: Future>(secrets: Vec<String>, work: F) -> F::Output {
    if secrets.is_empty() {
        return work.await;
    }
    CALL_SECRETS.scope(std::sync::Arc::new(secrets), work).await
}

/// The secrets of the current scope (see [`with_secrets`]).
pub(crate) fn current_secrets() -> Vec<String> {
    CALL_SECRETS
        .try_with(|s| s.as_ref().clone())
        .unwrap_or_default()
}
