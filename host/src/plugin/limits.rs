//! What a plugin may use: per-call limits, cluster grant and HTTP allow-list.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Per-call resource limits. Every call of the plugin runs under them, and
/// every one is charged before the work it bounds is done. The field names
/// (camelCase, as in a registration's `limits:` block) are the names errors
/// and docs use: see [`Limit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock deadline of one call, including host calls and the commit
    /// of its writes.
    pub timeout_ms: u64,
    /// Cap on the call's linear memories, all of them summed, in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    /// Cap on the call's table elements, all tables summed.
    pub table_elements: usize,
    /// Cap on the bytes a call may return (strings and lists, summed).
    pub output_bytes: usize,
    /// Cap on log lines per call; later lines are dropped and counted.
    pub log_lines: usize,
    /// Cap on log bytes kept per call; later lines are dropped and counted.
    pub log_bytes: usize,
    /// Cap on the bytes of an HTTP response body (metric providers).
    pub http_body_bytes: usize,
    /// Calls to the `cluster` import per call.
    pub cluster_calls: u32,
    /// Requests to the cluster's backend per call (reads the call's own
    /// staged writes do not answer, plus one per write at commit).
    pub api_requests: u32,
    /// Bytes of objects the `cluster` import hands the plugin per call.
    pub read_bytes: usize,
    /// Objects a call may create, change or delete.
    pub staged_objects: usize,
    /// Bytes of the objects a call stages, summed.
    pub staged_bytes: usize,
    /// Size of any JSON document the plugin hands the host (an object, a
    /// patch, a measurement value), and of the object a patch produces.
    pub document_bytes: usize,
    /// Nesting depth of any JSON document the plugin hands the host.
    pub document_depth: usize,
    /// Calls per second for one rollout or analysis run (a burst of twice
    /// as many is allowed); more fail fast with `rate-limited`.
    pub calls_per_second: u32,
    /// Calls of this plugin that may run at once; more wait for a slot.
    pub concurrent_calls: usize,
    /// Size of the component file.
    pub component_bytes: usize,
    /// Functions defined in the component's core modules, summed (bounds
    /// compile time and compile memory, checked before compiling).
    pub functions: usize,
    /// Bytes of function bodies in the component's core modules, summed.
    pub code_bytes: usize,
    /// Longest a compile may take before the load fails.
    pub compile_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 2_000,
            memory_mib: 64,
            table_elements: 100_000,
            output_bytes: 1 << 20,
            log_lines: 1_000,
            log_bytes: 256 << 10,
            http_body_bytes: 4 << 20,
            cluster_calls: 256,
            api_requests: 128,
            read_bytes: 16 << 20,
            staged_objects: 64,
            staged_bytes: 4 << 20,
            document_bytes: 1 << 20,
            document_depth: 64,
            calls_per_second: 20,
            concurrent_calls: 8,
            component_bytes: 64 << 20,
            functions: 50_000,
            code_bytes: 16 << 20,
            compile_timeout_ms: 60_000,
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

    /// The compile deadline as a duration.
    pub fn compile_timeout(&self) -> Duration {
        Duration::from_millis(self.compile_timeout_ms)
    }

    /// The bounds on documents a plugin hands the host.
    pub fn documents(&self) -> crate::cluster::document::DocumentLimits {
        crate::cluster::document::DocumentLimits {
            max_bytes: self.document_bytes,
            max_depth: self.document_depth,
        }
    }

    /// The bounds on what a call stages and asks of the cluster backend.
    pub fn staging(&self) -> crate::cluster::StagingLimits {
        crate::cluster::StagingLimits {
            api_requests: self.api_requests,
            staged_objects: self.staged_objects,
            staged_bytes: self.staged_bytes,
        }
    }

    /// The value of `limit`, as a number.
    pub fn value_of(&self, limit: Limit) -> u64 {
        let n = |v: usize| v as u64;
        match limit {
            Limit::TimeoutMs => self.timeout_ms,
            Limit::MemoryMiB => self.memory_mib,
            Limit::TableElements => n(self.table_elements),
            Limit::OutputBytes => n(self.output_bytes),
            Limit::LogLines => n(self.log_lines),
            Limit::LogBytes => n(self.log_bytes),
            Limit::HttpBodyBytes => n(self.http_body_bytes),
            Limit::ClusterCalls => u64::from(self.cluster_calls),
            Limit::ApiRequests => u64::from(self.api_requests),
            Limit::ReadBytes => n(self.read_bytes),
            Limit::StagedObjects => n(self.staged_objects),
            Limit::StagedBytes => n(self.staged_bytes),
            Limit::DocumentBytes => n(self.document_bytes),
            Limit::DocumentDepth => n(self.document_depth),
            Limit::CallsPerSecond => u64::from(self.calls_per_second),
            Limit::ConcurrentCalls => n(self.concurrent_calls),
            Limit::ComponentBytes => n(self.component_bytes),
            Limit::Functions => n(self.functions),
            Limit::CodeBytes => n(self.code_bytes),
            Limit::CompileTimeoutMs => self.compile_timeout_ms,
        }
    }
}

/// Each field of [`Limits`], by the name a registration, an error message
/// and the docs all use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    /// `timeoutMs`
    TimeoutMs,
    /// `memoryMiB`
    MemoryMiB,
    /// `tableElements`
    TableElements,
    /// `outputBytes`
    OutputBytes,
    /// `logLines`
    LogLines,
    /// `logBytes`
    LogBytes,
    /// `httpBodyBytes`
    HttpBodyBytes,
    /// `clusterCalls`
    ClusterCalls,
    /// `apiRequests`
    ApiRequests,
    /// `readBytes`
    ReadBytes,
    /// `stagedObjects`
    StagedObjects,
    /// `stagedBytes`
    StagedBytes,
    /// `documentBytes`
    DocumentBytes,
    /// `documentDepth`
    DocumentDepth,
    /// `callsPerSecond`
    CallsPerSecond,
    /// `concurrentCalls`
    ConcurrentCalls,
    /// `componentBytes`
    ComponentBytes,
    /// `functions`
    Functions,
    /// `codeBytes`
    CodeBytes,
    /// `compileTimeoutMs`
    CompileTimeoutMs,
}

impl Limit {
    /// Every limit, in the order the docs list them.
    pub const ALL: [Limit; 20] = [
        Limit::TimeoutMs,
        Limit::MemoryMiB,
        Limit::TableElements,
        Limit::OutputBytes,
        Limit::LogLines,
        Limit::LogBytes,
        Limit::HttpBodyBytes,
        Limit::ClusterCalls,
        Limit::ApiRequests,
        Limit::ReadBytes,
        Limit::StagedObjects,
        Limit::StagedBytes,
        Limit::DocumentBytes,
        Limit::DocumentDepth,
        Limit::CallsPerSecond,
        Limit::ConcurrentCalls,
        Limit::ComponentBytes,
        Limit::Functions,
        Limit::CodeBytes,
        Limit::CompileTimeoutMs,
    ];

    /// The field's name in a registration's `limits:` block.
    pub fn field(self) -> &'static str {
        match self {
            Limit::TimeoutMs => "timeoutMs",
            Limit::MemoryMiB => "memoryMiB",
            Limit::TableElements => "tableElements",
            Limit::OutputBytes => "outputBytes",
            Limit::LogLines => "logLines",
            Limit::LogBytes => "logBytes",
            Limit::HttpBodyBytes => "httpBodyBytes",
            Limit::ClusterCalls => "clusterCalls",
            Limit::ApiRequests => "apiRequests",
            Limit::ReadBytes => "readBytes",
            Limit::StagedObjects => "stagedObjects",
            Limit::StagedBytes => "stagedBytes",
            Limit::DocumentBytes => "documentBytes",
            Limit::DocumentDepth => "documentDepth",
            Limit::CallsPerSecond => "callsPerSecond",
            Limit::ConcurrentCalls => "concurrentCalls",
            Limit::ComponentBytes => "componentBytes",
            Limit::Functions => "functions",
            Limit::CodeBytes => "codeBytes",
            Limit::CompileTimeoutMs => "compileTimeoutMs",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "limits.{}", self.field())
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

/// The cluster access an operator grants a plugin. Access is confined to
/// the namespace of the rollout (or analysis run) the call serves, and the
/// extra `namespaces` the operator names (an ingress gateway's namespace,
/// where the VirtualService lives).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Grant {
    /// Kinds the plugin may read.
    pub read: Vec<GrantedKind>,
    /// Kinds the plugin may create, update, patch and delete (reading included).
    pub write: Vec<GrantedKind>,
    /// Namespaces besides the served rollout's own where those kinds may be
    /// touched (none by default).
    pub namespaces: Vec<String>,
    /// Secrets (by name, in the analysis run's namespace) whose keys a
    /// metric may hand this provider through `valueFrom.secretKeyRef`
    /// arguments (none by default). The host reads them; the plugin gets
    /// only the values substituted into its metric's configuration, and
    /// they are masked in what the run records.
    pub secrets: Vec<String>,
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
    /// Whether this plugin's metrics may set `insecure: true`: HTTPS to
    /// the allowed hosts without verifying the server's certificate
    /// (Argo's web `insecure`, for self-signed test endpoints). Off by
    /// default; a metric asking for it without this is refused, naming it.
    pub allow_insecure: bool,
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
            ..HttpPolicy::default()
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
    fn every_limit_field_name_parses_and_serialises_as_named() {
        let defaults = serde_json::to_value(Limits::default()).expect("serialise");
        let fields = defaults.as_object().expect("a map");
        assert_eq!(fields.len(), Limit::ALL.len(), "one Limit per field");
        for limit in Limit::ALL {
            assert!(fields.contains_key(limit.field()), "{limit} is a field");
            let parsed: Limits =
                serde_json::from_value(serde_json::json!({limit.field(): 7})).expect("parses");
            assert_eq!(parsed.value_of(limit), 7, "{limit}");
        }
    }

    #[test]
    fn the_docs_limits_table_lists_every_limit_with_its_default() {
        let docs = include_str!("../../../docs/plugin-authors.md");
        let defaults = Limits::default();
        for limit in Limit::ALL {
            let row = format!("| `{}` | {} |", limit.field(), defaults.value_of(limit));
            assert!(
                docs.contains(&row),
                "docs/plugin-authors.md lacks the row {row}"
            );
        }
    }

    #[test]
    fn unknown_fields_in_limits_are_rejected_with_their_name() {
        let err = serde_json::from_str::<Limits>(r#"{"timeoutMs": 5, "memoryMb": 3}"#).unwrap_err();
        assert!(err.to_string().contains("memoryMb"), "{err}");
    }
}
