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
        list.iter()
            .any(|g| g.group == group && (g.kind == "*" || g.kind == kind))
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
            let (pattern_host, pattern_port) = split_host_port(pattern);
            if pattern_port.is_some_and(|p| p != port) {
                return false;
            }
            let pattern_host = pattern_host.to_ascii_lowercase();
            match pattern_host.strip_prefix("*.") {
                // `*.example.com` matches `a.example.com`, not `example.com`.
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => pattern_host == host,
            }
        })
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address has no port.
fn split_host_port(pattern: &str) -> (&str, Option<u16>) {
    if let Some(rest) = pattern.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (rest, None),
        };
    }
    match pattern.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, port.parse().ok()),
        _ => (pattern, None),
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
        FaultPolicy {
            quarantine_after: 5,
            backoff_ms: 10_000,
            max_backoff_ms: 300_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> HttpPolicy {
        HttpPolicy {
            allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn exact_hosts_and_ports() {
        let p = policy(&["prometheus.monitoring.svc", "127.0.0.1:9090", "[::1]:8080"]);
        assert!(p.allows("prometheus.monitoring.svc", 80));
        assert!(p.allows("prometheus.monitoring.svc", 443));
        assert!(p.allows("127.0.0.1", 9090));
        assert!(!p.allows("127.0.0.1", 9091));
        assert!(p.allows("::1", 8080));
        assert!(!p.allows("::1", 80));
        assert!(!p.allows("evil.example", 80));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = policy(&["*.Example.com"]);
        assert!(p.allows("api.example.com", 443));
        assert!(p.allows("a.b.example.com", 443));
        assert!(!p.allows("example.com", 443));
        assert!(!p.allows("badexample.com", 443));
    }

    #[test]
    fn empty_allows_nothing() {
        assert!(!HttpPolicy::default().allows("localhost", 80));
    }

    #[test]
    fn unknown_fields_in_limits_are_rejected_with_their_name() {
        let err = serde_json::from_str::<Limits>(r#"{"timeoutMs": 5, "memoryMb": 3}"#).unwrap_err();
        assert!(err.to_string().contains("memoryMb"), "{err}");
    }
}
