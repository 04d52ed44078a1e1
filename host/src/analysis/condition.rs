//! Success and failure conditions in Argo's expression language,
//! evaluated in Weir's sandbox: conditions are written by application teams
//! and are untrusted input.
//!
//! Every evaluation runs in a fresh instance of Weir's condition component
//! (`plugins/condition`: Go expr's syntax parsed by Weir, run by the
//! expr-lang crate) under a memory cap, an epoch deadline and an output cap.
//! A condition that would make the crate allocate without bound, recurse or
//! loop ends its own instance with a typed error, which becomes an Error
//! measurement; the controller, and every other analysis, go on. Nothing is
//! evaluated on the host, and there is no pool a slow condition can hold:
//! each evaluation ends at its deadline.

use crate::plugin::{
    CallErrorKind, ConditionFailure, ConditionPlugin, FaultPolicy, Limits, PluginRuntime,
    PluginSpec,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Longest condition handed to the evaluator, in bytes (checked first).
pub const MAX_CONDITION_BYTES: usize = 16 << 10;
/// The component's file name among the shipped plugins.
pub const COMPONENT_FILE: &str = "weir_condition.wasm";

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConditionError {
    /// Refused before evaluating: the condition is too long.
    #[error("condition refused: {0}")]
    Refused(String),
    /// It does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Evaluating it failed.
    #[error("{0}")]
    Eval(String),
    /// It did not produce a boolean.
    #[error("expected bool, but got {0}")]
    NotBool(String),
    /// The sandbox stopped the evaluation (a deadline, the memory cap, a
    /// crash of the evaluator).
    #[error("the evaluation was stopped: {0}")]
    Stopped(String),
    /// The evaluator component is not loaded.
    #[error("the condition evaluator is not available: {0}")]
    Unavailable(String),
}

/// Evaluates conditions, each in a fresh sandbox.
#[derive(Clone)]
pub struct ConditionEvaluator {
    plugin: Arc<Result<ConditionPlugin, String>>,
}

impl ConditionEvaluator {
    /// The registration the evaluator runs under: a 1 s deadline, a 64 MiB
    /// memory cap, a 64 KiB output cap; never quarantined (one hostile
    /// condition must not stop every analysis) and no call rate.
    pub fn spec(location: &str) -> PluginSpec {
        let mut spec = PluginSpec::new("weir/condition", location);
        spec.limits = Limits {
            timeout_ms: 1_000,
            memory_mib: 64,
            output_bytes: 64 << 10,
            calls_per_second: 0,
            ..Limits::default()
        };
        spec.fault_policy = FaultPolicy {
            quarantine_after: 0,
            ..FaultPolicy::default()
        };
        spec
    }

    /// Loads the evaluator component from `location` on `runtime`; when it
    /// cannot be loaded, every evaluation says why.
    pub async fn load(runtime: &PluginRuntime, location: &str) -> Self {
        let plugin = runtime
            .load_condition_evaluator(Self::spec(location))
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &plugin {
            tracing::error!(error = %e, "the condition evaluator did not load; analyses will report it");
        }
        ConditionEvaluator {
            plugin: Arc::new(plugin),
        }
    }

    /// An evaluator over a loaded component.
    pub fn new(plugin: ConditionPlugin) -> Self {
        ConditionEvaluator {
            plugin: Arc::new(Ok(plugin)),
        }
    }

    /// An evaluator that reports `why` on every evaluation.
    pub fn unavailable(why: impl Into<String>) -> Self {
        ConditionEvaluator {
            plugin: Arc::new(Err(why.into())),
        }
    }

    /// Evaluates `condition` with `result` bound to the measured value.
    pub async fn evaluate(&self, condition: &str, result: &Value) -> Result<bool, ConditionError> {
        if condition.len() > MAX_CONDITION_BYTES {
            return Err(ConditionError::Refused(format!(
                "it is {} bytes long, over {MAX_CONDITION_BYTES}",
                condition.len()
            )));
        }
        let plugin = match self.plugin.as_ref() {
            Ok(p) => p,
            Err(why) => return Err(ConditionError::Unavailable(why.clone())),
        };
        match plugin.evaluate(condition, &result.to_string()).await {
            Ok(Ok(verdict)) => Ok(verdict),
            Ok(Err(ConditionFailure::Syntax(m))) => Err(ConditionError::Syntax(m)),
            Ok(Err(ConditionFailure::Eval(m))) => Err(ConditionError::Eval(m)),
            Ok(Err(ConditionFailure::NotBool(t))) => Err(ConditionError::NotBool(t)),
            Err(e) => Err(ConditionError::Stopped(stopped(&e.kind, plugin.limits()))),
        }
    }
}

/// Why the sandbox stopped an evaluation, in a condition author's terms.
fn stopped(kind: &CallErrorKind, limits: &Limits) -> String {
    match kind {
        CallErrorKind::Timeout { limit } => format!(
            "it ran past the {} deadline of an evaluation",
            human(*limit)
        ),
        CallErrorKind::MemoryLimit { cap, .. } => format!(
            "it needed more than the {} MiB of memory an evaluation may use",
            cap >> 20
        ),
        CallErrorKind::StackOverflow { .. } => {
            "it nested too deep for the evaluator's stack".to_string()
        }
        CallErrorKind::Trap { guest_output, .. } => {
            // A Rust panic prints "panicked at FILE:LINE:COL:" and the
            // message on the next line.
            let mut lines = guest_output.lines();
            let message = lines
                .by_ref()
                .find(|l| l.contains("panicked at") || l.contains("memory allocation"))
                .map(|l| match lines.next() {
                    Some(next) if l.contains("panicked at") => next.trim().to_string(),
                    _ => l.trim().to_string(),
                });
            match message {
                Some(m) => format!("it crashed the evaluator: {m}"),
                None => "it crashed the evaluator".to_string(),
            }
        }
        CallErrorKind::OutputTooLarge { size, .. } => format!(
            "its error message was {size} bytes, over the {} allowed",
            limits.output_bytes
        ),
        other => other.to_string(),
    }
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
