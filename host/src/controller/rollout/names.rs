//! The names of the AnalysisRuns and Experiments a rollout starts, and
//! the retries that must not reuse an ended one's name.

use crate::cluster::{Cluster, ClusterError, ObjectKey};
use serde_json::Value;

/// How many AnalysisRuns or Experiments one step may leave behind across
/// retries (`base`, `base.1`, ...) before a retry is refused.
const MAX_RETRIES: usize = 32;

/// The name of the AnalysisRun or Experiment (`kind`) a step (or the
/// background analysis) uses: `current`, the one the status names, when it
/// is one of `base`'s; otherwise the first of `base`, `base.1`, `base.2`,
/// ... that does not exist, is still running, or passed. One that ended
/// otherwise (failed, or stopped by an abort) is what a retry must not
/// reuse, so the retry gets the next name, as Argo's collision counter
/// gives it.
pub(super) async fn fresh_name(
    cluster: &dyn Cluster,
    namespace: &str,
    kind: &str,
    base: &str,
    current: Option<&str>,
) -> Result<String, ClusterError> {
    let numbered = |n: &str| {
        n == base
            || n.strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(current) = current.filter(|c| numbered(c)) {
        return Ok(current.to_string());
    }
    for k in 0..MAX_RETRIES {
        let name = if k == 0 {
            base.to_string()
        } else {
            format!("{base}.{k}")
        };
        let key = ObjectKey::new("argoproj.io/v1alpha1", kind, namespace, &name);
        let stored = match cluster.get(&key).await {
            Ok(stored) => stored,
            Err(ClusterError::NotFound(_)) => return Ok(name),
            Err(e) => return Err(e),
        };
        let phase = stored
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let terminated = stored
            .pointer("/spec/terminate")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let usable = match phase {
            "" | "Pending" | "Running" => true,
            "Successful" => !terminated,
            _ => false,
        };
        if usable {
            return Ok(name);
        }
    }
    Err(ClusterError::Invalid(format!(
        "{kind} {namespace}/{base}: {MAX_RETRIES} earlier ones ended without passing; delete old ones to retry again"
    )))
}
