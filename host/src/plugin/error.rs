//! The host's typed errors: why a plugin could not be loaded, and why a call failed.
//!
//! Every message names the plugin and the call, says what happened, and where
//! it helps, what the operator can change.

use super::bindings::types::PluginError as ReportedError;
use super::limits::Limit;
use std::time::Duration;

/// A plugin call that did not succeed. Nothing the call meant to write landed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {plugin}: {method}: {kind}")]
pub struct CallError {
    /// The plugin's registered name.
    pub plugin: String,
    /// The call, e.g. `set-weight`.
    pub method: &'static str,
    /// What went wrong.
    pub kind: CallErrorKind,
    /// The flight recorder's recording of the call, if it kept one (a
    /// path, for `weir plugin replay`).
    pub recording: Option<String>,
}

impl CallError {
    /// Whether this failure counts as a fault of the plugin (towards quarantine),
    /// rather than an error it reported or a condition outside it.
    pub fn is_fault(&self) -> bool {
        self.kind.is_fault()
    }
}

/// What went wrong in a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallErrorKind {
    /// The call ran past its deadline and was stopped.
    #[error(
        "timed out: still running at its {limit:?} deadline, so it was stopped; if the plugin needs longer, raise `limits.timeoutMs` in its registration"
    )]
    Timeout {
        /// The deadline in force.
        limit: Duration,
    },
    /// The call's linear memories would have grown past its cap.
    #[error(
        "memory limit: the call's linear memories would total {requested} bytes, over its cap of {cap} bytes; if that much is legitimate, raise `limits.memoryMiB` in its registration"
    )]
    MemoryLimit {
        /// Bytes the call's memories would have totalled.
        requested: usize,
        /// The cap.
        cap: usize,
    },
    /// The call's tables would have grown past its cap.
    #[error(
        "table limit: the call's tables would total {requested} elements, over its cap of {cap}; if that many are legitimate, raise `limits.tableElements` in its registration"
    )]
    TableLimit {
        /// Elements the call's tables would have totalled.
        requested: usize,
        /// The cap.
        cap: usize,
    },
    /// The call asked the host for more work than one of its per-call
    /// budgets allows (cluster calls, documents, staged writes...); it was
    /// stopped before that work was done.
    #[error(
        "over a per-call limit: {detail}; the limit `{limit}` is {cap}; if that much is legitimate, raise `{limit}` in its registration"
    )]
    LimitExceeded {
        /// The limit.
        limit: Limit,
        /// Its value.
        cap: u64,
        /// What the call asked for.
        detail: String,
    },
    /// The plugin was called too often for one rollout or analysis run; the
    /// call was not made.
    #[error(
        "rate limited: called more than {rate} times a second for {target}; the call was not made; raise `limits.callsPerSecond` in its registration if that rate is legitimate"
    )]
    RateLimited {
        /// The rate in force (`limits.callsPerSecond`).
        rate: u32,
        /// The rollout or analysis run, `namespace/name`.
        target: String,
    },
    /// The plugin exhausted its wasm stack (runaway recursion).
    #[error("stack overflow: the plugin exhausted its {cap_kib} KiB wasm stack (unbounded recursion?){}", guest_output_suffix(.guest_output))]
    StackOverflow {
        /// The engine's wasm stack cap.
        cap_kib: usize,
        /// What the plugin printed before it overflowed.
        guest_output: String,
    },
    /// The plugin trapped: a panic, an abort, an out-of-bounds access...
    #[error("trapped ({reason}){}", guest_output_suffix(.guest_output))]
    Trap {
        /// The trap, as wasmtime describes it.
        reason: String,
        /// What the plugin printed to stdout/stderr (bounded): for a Rust
        /// plugin, the panic message.
        guest_output: String,
    },
    /// The plugin returned something the contract forbids.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// The plugin returned more than its output cap.
    #[error(
        "output too large: {size} bytes, over the cap of {cap}; raise `limits.outputBytes` if that is legitimate"
    )]
    OutputTooLarge {
        /// Bytes returned.
        size: usize,
        /// The cap.
        cap: usize,
    },
    /// The plugin tried to use something it was not granted.
    #[error("capability denied: {0}")]
    CapabilityDenied(String),
    /// The plugin reported an error of its own.
    #[error("{}", describe_reported(.0))]
    Reported(ReportedError),
    /// The call succeeded but its staged cluster writes could not be applied
    /// (an object changed underneath, the backend failed). On the local
    /// stores nothing was written; on Kubernetes the error says exactly what
    /// landed and what was undone.
    #[error("its cluster writes could not be applied: {}", describe_commit(.0))]
    WriteConflict(crate::cluster::ClusterError),
    /// The plugin is in quarantine after repeated faults.
    #[error(
        "quarantined after {faults} consecutive faults (last: {last}); calls fail fast for another {remaining:?}, then it is tried again"
    )]
    Quarantined {
        /// Consecutive faults so far.
        faults: u32,
        /// Time left in quarantine.
        remaining: Duration,
        /// The last fault.
        last: String,
    },
    /// The host itself failed to run the call.
    #[error("host error: {0}")]
    Host(String),
}

/// A wasmtime error with every cause, outermost first (`a: b: c`).
pub(crate) fn error_chain(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn guest_output_suffix(output: &str) -> String {
    let trimmed = output.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("; the plugin printed: {trimmed}")
    }
}

/// What a component needs, in the words of the load limit it is over.
fn load_need(limit: Limit, found: usize) -> String {
    match limit {
        Limit::ComponentBytes => format!("the file is {found} bytes"),
        Limit::Functions => format!("it defines {found} functions"),
        Limit::CodeBytes => format!("its function bodies are {found} bytes"),
        Limit::MemoryMiB => {
            format!("memory limit: its linear memories start at {found} MiB in all")
        }
        other => format!("it needs {found} ({other})"),
    }
}

fn describe_commit(error: &crate::cluster::ClusterError) -> String {
    match error {
        e @ crate::cluster::ClusterError::PartiallyApplied { .. } => e.to_string(),
        e => format!("{e}; nothing was written"),
    }
}

fn describe_reported(error: &ReportedError) -> String {
    let (kind, message) = reported_parts(error);
    format!("the plugin reported {kind}: {message}")
}

/// The contract's name for an error case, and its message.
pub fn reported_parts(error: &ReportedError) -> (&'static str, &str) {
    match error {
        ReportedError::InvalidConfig(m) => ("invalid-config", m),
        ReportedError::NotFound(m) => ("not-found", m),
        ReportedError::Conflict(m) => ("conflict", m),
        ReportedError::Denied(m) => ("denied", m),
        ReportedError::Transient(m) => ("transient", m),
        ReportedError::Internal(m) => ("internal", m),
    }
}

impl CallErrorKind {
    /// Whether this counts as a fault of the plugin (towards quarantine).
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            CallErrorKind::Timeout { .. }
                | CallErrorKind::MemoryLimit { .. }
                | CallErrorKind::TableLimit { .. }
                | CallErrorKind::LimitExceeded { .. }
                | CallErrorKind::StackOverflow { .. }
                | CallErrorKind::Trap { .. }
                | CallErrorKind::InvalidOutput(_)
                | CallErrorKind::OutputTooLarge { .. }
                | CallErrorKind::CapabilityDenied(_)
        )
    }

    /// A short stable name for metrics and conditions: `timeout`, `trap`, ...
    pub fn name(&self) -> &'static str {
        match self {
            CallErrorKind::Timeout { .. } => "timeout",
            CallErrorKind::MemoryLimit { .. } => "memory-limit",
            CallErrorKind::TableLimit { .. } => "table-limit",
            CallErrorKind::LimitExceeded { .. } => "limit-exceeded",
            CallErrorKind::RateLimited { .. } => "rate-limited",
            CallErrorKind::StackOverflow { .. } => "stack-overflow",
            CallErrorKind::Trap { .. } => "trap",
            CallErrorKind::InvalidOutput(_) => "invalid-output",
            CallErrorKind::OutputTooLarge { .. } => "output-too-large",
            CallErrorKind::CapabilityDenied(_) => "capability-denied",
            CallErrorKind::Reported(_) => "reported",
            CallErrorKind::WriteConflict(_) => "write-conflict",
            CallErrorKind::Quarantined { .. } => "quarantined",
            CallErrorKind::Host(_) => "host",
        }
    }
}

/// A plugin that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot load plugin {plugin} from {location}: {kind}")]
pub struct LoadError {
    /// The plugin's registered name.
    pub plugin: String,
    /// Where it was loaded from.
    pub location: String,
    /// What went wrong.
    pub kind: LoadErrorKind,
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    /// The file does not exist.
    #[error("no such file {0}; check the registration's `location`")]
    NotFound(String),
    /// The file or URL could not be read.
    #[error("cannot read it: {0}")]
    Read(String),
    /// The location is neither a path, `file://` nor `http(s)://`.
    #[error("unsupported location {0:?}: use a path, file://, http:// or https://")]
    BadLocation(String),
    /// The sha256 pin is not 64 hex digits.
    #[error("the `sha256` pin {0:?} is not 64 hex digits")]
    BadPin(String),
    /// The bytes do not match the sha256 pin.
    #[error(
        "sha256 mismatch: the registration pins {expected} but the file is {actual}; fix the pin or the file, whichever is wrong"
    )]
    ShaMismatch {
        /// The pin.
        expected: String,
        /// The digest of the bytes.
        actual: String,
    },
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with \\0asm); is the location right?")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "it is a core WebAssembly module, not a component; build it for `wasm32-wasip2` (which emits components) or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    /// Wasm of a version or layer this host does not know.
    #[error("unknown WebAssembly version or layer {0}")]
    UnknownWasm(String),
    /// The component failed to compile (corrupt or invalid).
    #[error("it does not compile: {0}")]
    Compile(String),
    /// The component is over a load limit (checked before compiling).
    #[error(
        "it is over a load limit: {}, over `{limit}` of {cap}; it was not compiled. If a component this large is trusted, raise `{limit}` in its registration",
        load_need(*limit, *found)
    )]
    OverLoadLimit {
        /// The limit.
        limit: Limit,
        /// What the component has.
        found: usize,
        /// The limit's value.
        cap: u64,
    },
    /// Compiling took longer than the plugin's compile timeout.
    #[error(
        "compiling it took longer than {limit:?} (`limits.compileTimeoutMs`); the load was abandoned"
    )]
    CompileTimeout {
        /// The timeout in force.
        limit: Duration,
    },
    /// The component needs more memories or tables for one call than a
    /// call's share of the runtime's pool (checked before compiling).
    #[error(
        "it defines {found} {what}, more than a call's share of {share} in the runtime's pool; it was not compiled (components built for wasm32-wasip2 or by componentize-py define one memory)"
    )]
    OverCallShare {
        /// `linear memories`, `tables`.
        what: &'static str,
        /// How many one instantiation creates.
        found: usize,
        /// A call's share.
        share: usize,
    },
    /// The component exports no Weir world at all.
    #[error(
        "it exports neither weir:plugin/traffic-router nor weir:plugin/metric-provider; build it against a world of wit/weir-plugin.wit"
    )]
    NotAPlugin,
    /// The component exports another Weir world.
    #[error(
        "it is a {found} plugin, but it is registered as a {expected}; register it under the right key"
    )]
    WrongWorld {
        /// The world it was registered for.
        expected: &'static str,
        /// The world it implements.
        found: &'static str,
    },
    /// The component does not export the expected interface.
    #[error(
        "it does not export `{expected}` (it exports: {exports}); build it against the `{world}` world of wit/weir-plugin.wit"
    )]
    MissingExport {
        /// The interface expected.
        expected: &'static str,
        /// The world it must target.
        world: &'static str,
        /// What it does export.
        exports: String,
    },
    /// The component imports something Weir does not provide to this kind of plugin.
    #[error(
        "it imports `{import}`, which Weir does not provide to {world} plugins; remove that dependency from the plugin"
    )]
    UnsupportedImport {
        /// The import.
        import: String,
        /// The world.
        world: &'static str,
    },
    /// Imports or exports have the wrong types.
    #[error("its imports or exports do not match the weir:plugin contract: {0}")]
    Link(String),
    /// The plugin's `init` failed.
    #[error("its init failed: {0}")]
    Init(Box<CallError>),
    /// The host could not set itself up.
    #[error("host error: {0}")]
    Host(String),
}
