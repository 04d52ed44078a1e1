//! What a plugin may use: per-call limits, cluster grant and HTTP allow-list.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Per-call resource limits. Every call of the plugin runs under them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock deadline of one call, including time spent in host calls.
    pub timeout_ms: u64,
    /// Cap on each linear memory of the plugin, in MiB.
    pub memory_mib: u64,
    /// Cap on the elements of each table.
    pub table_elements: usize,
    /// Cap on the bytes a call may return (strings and lists, summed).
    pub output_bytes: usize,
    /// Cap on log lines per call; later lines are dropped and counted.
    pub log_lines: usize,
    /// Cap on the bytes of an HTTP response body (metric providers).
    pub http_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 2_000,
            memory_mib: 64,
            table_elements: 100_000,
            output_bytes: 1 << 20,
            log_lines: 1_000,
            http_body_bytes: 4 << 20,
        }
    }
}

impl Limits {
    /// The deadline as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// One kind of object a plugin may touch: `{apiVersion: "networking.istio.io/*", kind: "VirtualService"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantedKind {
    /// The API group (`networking.istio.io`; empty for the core group).
    #[serde(default)]
    pub group: String,
    /// The kind, or `*` for every kind of the group.
    pub kind: String,
}

/// The cluster access an operator grants a plugin. Access is always confined
/// to the namespace of the rollout (or analysis run) the call serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Grant {
    /// Kinds the plugin may read.
    pub read: Vec<GrantedKind>,
    /// Kinds the plugin may create, update, patch and delete (reading included).
    pub write: Vec<GrantedKind>,
}

impl Grant {
    fn covers(list: &[GrantedKind], group: &str, kind: &str) -> bool {
        list.iter().any(|g| g.group == group && (g.kind == "*" || g.kind == kind))
    }

    /// Whether the plugin may read objects of `group`/`kind`.
    pub fn may_read(&self, group: &str, kind: &str) -> bool {
        Self::covers(&self.read, group, kind) || Self::covers(&self.write, group, kind)
    }

    /// Whether the plugin may write objects of `group`/`kind`.
    pub fn may_write(&self, group: &str, kind: &str) -> bool {
        Self::covers(&self.write, group, kind)
    }
}

/// Where a metric provider's outgoing HTTP may go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpPolicy {
    /// Allowed hosts: `prometheus.monitoring.svc`, `*.example.com`, or with a
    /// port, `127.0.0.1:9090`. Empty: no HTTP at all.
    pub allow_hosts: Vec<String>,
}

impl HttpPolicy {
    /// Whether `host` (lower-case, no brackets) on `port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.allow_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            let (pat_host, pat_port) = match pattern.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h.trim_matches(['[', ']']).to_string(), p.parse::<u16>().ok()),
                _ => (pattern.trim_matches(['[', ']']).to_string(), None),
            };
            if pat_port.is_some_and(|p| p != port) {
                return false;
            }
            match pat_host.strip_prefix("*.") {
                Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
                None => pat_host == host,
            }
        })
    }
}

/// What to do with a plugin that keeps faulting (Envoy's FAIL_RELOAD idea:
/// a fresh instance every call, and a cool-down for repeat offenders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultPolicy {
    /// Consecutive faults that put the plugin in quarantine (0: never).
    pub quarantine_after: u32,
    /// First quarantine period; each further one doubles, up to `max_backoff_ms`.
    pub backoff_ms: u64,
    /// Longest quarantine period.
    pub max_backoff_ms: u64,
}

impl Default for FaultPolicy {
    fn default() -> Self {
        FaultPolicy { quarantine_after: 5, backoff_ms: 10_000, max_backoff_ms: 300_000 }
    }
}
