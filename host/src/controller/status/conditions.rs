//! A Rollout's conditions: Kubernetes' shape, the types Weir writes, and
//! messages kept to a size.

use serde::{Deserialize, Serialize};

/// A Kubernetes-style condition. Plugin faults add `plugin` and `call`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable message.
    pub message: String,
    /// The plugin that failed, for plugin conditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The call that failed, for plugin conditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The flight recorder's recording of the failed call (a path for
    /// `weir plugin replay`), for plugin conditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// When the status last changed.
    pub last_transition_time: String,
    /// When the condition was last written.
    pub last_update_time: String,
}

/// Condition types Weir writes.
pub mod condition {
    /// Whether the rollout is making progress.
    pub const PROGRESSING: &str = "Progressing";
    /// The spec cannot be acted on.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A plugin call failed (typed, with plugin and call).
    pub const PLUGIN_FAILED: &str = "PluginFailed";
    /// The reconcile itself panicked and was contained.
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
    /// Fully promoted and available.
    pub const HEALTHY: &str = "Healthy";
    /// The plugin registration (`argo-rollouts-config`) as it stands is not
    /// valid; the last valid one stays in force.
    pub const REGISTRATION_INVALID: &str = "RegistrationInvalid";
}

/// Longest condition message kept: a plugin's error can carry up to its
/// output cap, and a Rollout must stay well under the API server's size.
pub const MAX_CONDITION_MESSAGE_BYTES: usize = 4 << 10;

/// Cuts `message` to [`MAX_CONDITION_MESSAGE_BYTES`], saying so.
pub(super) fn cut_message(message: &mut String) {
    if message.len() <= MAX_CONDITION_MESSAGE_BYTES {
        return;
    }
    let original = message.len();
    let mut end = MAX_CONDITION_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(&format!("…[cut by Weir from {original} bytes]"));
}

/// A condition with the given fields (times are set by `set_condition`).
pub fn make_condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
) -> Condition {
    Condition {
        kind: kind.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        ..Condition::default()
    }
}
