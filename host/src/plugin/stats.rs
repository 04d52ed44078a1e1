//! Per-plugin counters: calls by method and outcome, latency, dropped logs.
//! The controller's `/metrics` endpoint reads them.

use super::bindings::log::Level;
use super::state::LogBuffer;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Counters of one (method, outcome) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallCounter {
    /// Calls.
    pub count: u64,
    /// Summed wall time.
    pub total: Duration,
}

/// A snapshot of a plugin's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Keyed by (method, outcome); outcome is `ok` or an error kind name.
    pub calls: BTreeMap<(String, String), CallCounter>,
    /// Log lines dropped over the per-call cap.
    pub logs_dropped: u64,
    /// Log lines emitted.
    pub log_lines: u64,
}

impl StatsSnapshot {
    /// Calls with `outcome`, over all methods.
    pub fn count(&self, outcome: &str) -> u64 {
        self.calls
            .iter()
            .filter(|((_, o), _)| o == outcome)
            .map(|(_, c)| c.count)
            .sum()
    }
}

/// Thread-safe counters.
#[derive(Debug, Default)]
pub struct PluginStats {
    inner: Mutex<StatsSnapshot>,
}

impl PluginStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatsSnapshot> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one call.
    pub fn record(&self, method: &str, outcome: &str, elapsed: Duration) {
        let mut s = self.lock();
        let c = s
            .calls
            .entry((method.to_string(), outcome.to_string()))
            .or_default();
        c.count += 1;
        c.total += elapsed;
    }

    /// Emits a call's log lines to the controller's log and counts them.
    pub fn record_logs(&self, plugin: &str, method: &str, logs: &LogBuffer) {
        for (level, line) in &logs.lines {
            match level {
                Level::Trace => tracing::trace!(plugin, method, "{line}"),
                Level::Debug => tracing::debug!(plugin, method, "{line}"),
                Level::Info => tracing::info!(plugin, method, "{line}"),
                Level::Warn => tracing::warn!(plugin, method, "{line}"),
                Level::Error => tracing::error!(plugin, method, "{line}"),
            }
        }
        if logs.dropped > 0 {
            tracing::warn!(
                plugin,
                method,
                dropped = logs.dropped,
                "plugin log lines dropped over the per-call cap (limits.logLines)"
            );
        }
        let mut s = self.lock();
        s.log_lines += logs.lines.len() as u64;
        s.logs_dropped += logs.dropped;
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.lock().clone()
    }
}
