//! Success and failure conditions in Argo's expression language (expr-lang),
//! evaluated safely: conditions are written by application teams and are
//! untrusted input.
//!
//! The `expr-lang` crate panics or aborts the process on some inputs (deep
//! nesting, huge ranges, map literals with computed values; see
//! shared/reference/conditions.md). So a condition is first checked by a
//! small scanner (length, tokens, nesting, no ranges, no map literals), then
//! compiled and run on a dedicated thread with a large stack, panics caught,
//! under a wall-clock timeout, with a cap on evaluations in flight. Every
//! failure is an error value; nothing reaches the caller's thread.

use expr::{Context, Environment, Value as ExprValue};
use indexmap::IndexMap;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Longest condition accepted.
pub const MAX_CONDITION_CHARS: usize = 2048;
/// Most tokens in a condition.
pub const MAX_TOKENS: usize = 400;
/// Deepest bracket nesting.
pub const MAX_NESTING: usize = 24;
/// Deepest nesting of predicates (`all(xs, {all(ys, {...})})`): each level
/// multiplies the work by the length of a list.
pub const MAX_PREDICATE_NESTING: usize = 2;
/// Stack of an evaluation thread.
const EVAL_STACK: usize = 32 << 20;

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConditionError {
    /// Refused before compiling: the condition is outside what Weir evaluates.
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
    /// It ran past the time limit.
    #[error("condition evaluation exceeded {0:?}")]
    Timeout(Duration),
    /// Too many evaluations are already running (earlier ones timed out).
    #[error("condition evaluator busy: {0} evaluations still running")]
    Busy(usize),
}

/// Evaluates conditions with bounded time, stack and concurrency.
#[derive(Clone)]
pub struct ConditionEvaluator {
    timeout: Duration,
    max_in_flight: usize,
    in_flight: Arc<AtomicUsize>,
}

impl Default for ConditionEvaluator {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), 4)
    }
}

/// Releases an in-flight slot when the evaluation thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConditionEvaluator {
    /// An evaluator with a per-evaluation `timeout` and at most
    /// `max_in_flight` evaluation threads at once.
    pub fn new(timeout: Duration, max_in_flight: usize) -> Self {
        ConditionEvaluator {
            timeout,
            max_in_flight: max_in_flight.max(1),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Evaluates `condition` with `result` bound to the measured value.
    pub async fn evaluate(&self, condition: &str, result: &Value) -> Result<bool, ConditionError> {
        precheck(condition)?;
        let taken = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(self.in_flight.clone());
        if taken >= self.max_in_flight {
            return Err(ConditionError::Busy(taken));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let condition = condition.to_string();
        let result = result.clone();
        let spawned = std::thread::Builder::new()
            .name("weir-condition".into())
            .stack_size(EVAL_STACK)
            .spawn(move || {
                let _slot = slot;
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&condition, &result)
                }))
                .unwrap_or_else(|panic| {
                    Err(ConditionError::Eval(format!(
                        "the evaluator failed: {}",
                        panic_text(&panic)
                    )))
                });
                let _ = tx.send(outcome);
            });
        if let Err(e) = spawned {
            return Err(ConditionError::Eval(format!(
                "cannot start an evaluation thread: {e}"
            )));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ConditionError::Eval(
                "the evaluator stopped without an answer".into(),
            )),
            Err(_) => Err(ConditionError::Timeout(self.timeout)),
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Checks the text before it reaches the parser.
pub fn precheck(condition: &str) -> Result<(), ConditionError> {
    let refuse = |why: String| Err(ConditionError::Refused(why));
    let chars = condition.chars().count();
    if chars > MAX_CONDITION_CHARS {
        return refuse(format!(
            "it is {chars} characters long, over {MAX_CONDITION_CHARS}"
        ));
    }
    let mut tokens = 0usize;
    let mut depth = 0usize;
    // Open brackets, to know how many of them are braces.
    let mut open: Vec<char> = Vec::new();
    let mut chars = condition.chars().peekable();
    // After `{`: whether we are still looking at the first token of a brace,
    // which tells a map literal (`{k: v}`) from a predicate (`{# > 1}`).
    let mut brace_head: Option<bool> = None;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // Skip the string literal.
                let mut escaped = false;
                for s in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if s == '\\' {
                        escaped = true;
                    } else if s == c {
                        break;
                    }
                }
                tokens += 1;
                if brace_head == Some(true) {
                    brace_head = Some(false);
                    if next_non_space(&mut chars) == Some(':') {
                        return refuse(
                            "map literals ({key: value}) are not supported in conditions".into(),
                        );
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                tokens += 1;
                if depth > MAX_NESTING {
                    return refuse(format!("brackets nest more than {MAX_NESTING} deep"));
                }
                open.push(c);
                if open.iter().filter(|b| **b == '{').count() > MAX_PREDICATE_NESTING {
                    return refuse(format!(
                        "predicates ({{...}}) nest more than {MAX_PREDICATE_NESTING} deep"
                    ));
                }
                brace_head = (c == '{').then_some(true);
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                open.pop();
                tokens += 1;
                brace_head = None;
            }
            '.' if chars.peek() == Some(&'.') => {
                return refuse("range expressions (a..b) are not allowed in conditions".into());
            }
            c if c.is_whitespace() => {}
            c if c.is_alphanumeric() || c == '_' || c == '#' || c == '$' => {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_alphanumeric() || *n == '_')
                {
                    chars.next();
                }
                tokens += 1;
                if brace_head == Some(true) {
                    brace_head = Some(false);
                    if c != '#' && next_non_space(&mut chars) == Some(':') {
                        return refuse(
                            "map literals ({key: value}) are not supported in conditions".into(),
                        );
                    }
                }
            }
            _ => {
                tokens += 1;
                brace_head = brace_head.map(|_| false);
            }
        }
        if tokens > MAX_TOKENS {
            return refuse(format!("it has more than {MAX_TOKENS} tokens"));
        }
    }
    Ok(())
}

fn next_non_space(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<char> {
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    chars.peek().copied()
}

/// Converts JSON to expr values: every number a float (Go's JSON decoding),
/// and the strings `NaN`, `+Inf`, `-Inf` (how non-finite values travel in
/// JSON) back to floats.
pub fn to_expr(value: &Value) -> ExprValue {
    match value {
        Value::Null => ExprValue::Nil,
        Value::Bool(b) => ExprValue::Bool(*b),
        Value::Number(n) => ExprValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => match s.as_str() {
            "NaN" => ExprValue::Float(f64::NAN),
            "+Inf" | "Inf" => ExprValue::Float(f64::INFINITY),
            "-Inf" => ExprValue::Float(f64::NEG_INFINITY),
            _ => ExprValue::String(s.clone()),
        },
        Value::Array(items) => ExprValue::Array(items.iter().map(to_expr).collect()),
        Value::Object(map) => {
            let mut out = IndexMap::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), to_expr(v));
            }
            ExprValue::Map(out)
        }
    }
}

fn type_name(v: &ExprValue) -> &'static str {
    match v {
        ExprValue::Integer(_) => "int",
        ExprValue::Bool(_) => "bool",
        ExprValue::Float(_) => "float64",
        ExprValue::Nil => "nil",
        ExprValue::String(_) => "string",
        ExprValue::Array(_) => "array",
        ExprValue::Bytes(_) => "bytes",
        ExprValue::Map(_) | ExprValue::KeyedMap(_) => "map",
    }
}

fn first_arg(args: &[ExprValue], name: &str) -> expr::Result<ExprValue> {
    args.first()
        .cloned()
        .ok_or_else(|| expr::Error::ExprError(format!("{name}() needs an argument")))
}

/// Argo's helpers: `asInt`, `asFloat`, `isNaN`, `isInf`, `isNil`, `default`.
/// As in Argo, `isNil(x)` and `default(x, d)` look at `result`, not `x`.
fn environment(result: &ExprValue) -> Environment<'static> {
    let mut env = Environment::new();
    env.add_function("asInt", |c| match first_arg(&c.args, "asInt")? {
        ExprValue::Float(f) if f.is_finite() => Ok(ExprValue::Integer(f.trunc() as i64)),
        ExprValue::Integer(i) => Ok(ExprValue::Integer(i)),
        ExprValue::String(s) => s
            .trim()
            .parse::<i64>()
            .map(ExprValue::Integer)
            .map_err(|e| expr::Error::ExprError(format!("asInt({s:?}): {e}"))),
        other => Err(expr::Error::ExprError(format!(
            "asInt() not supported on {} {other:?}",
            type_name(&other)
        ))),
    });
    env.add_function("asFloat", |c| match first_arg(&c.args, "asFloat")? {
        ExprValue::Float(f) => Ok(ExprValue::Float(f)),
        ExprValue::Integer(i) => Ok(ExprValue::Float(i as f64)),
        ExprValue::String(s) => s
            .trim()
            .parse::<f64>()
            .map(ExprValue::Float)
            .map_err(|e| expr::Error::ExprError(format!("asFloat({s:?}): {e}"))),
        other => Err(expr::Error::ExprError(format!(
            "asFloat() not supported on {} {other:?}",
            type_name(&other)
        ))),
    });
    env.add_function("isNaN", |c| match first_arg(&c.args, "isNaN")? {
        ExprValue::Float(f) => Ok(ExprValue::Bool(f.is_nan())),
        ExprValue::Integer(_) => Ok(ExprValue::Bool(false)),
        other => Err(expr::Error::ExprError(format!(
            "isNaN() expects a number, got {}",
            type_name(&other)
        ))),
    });
    env.add_function("isInf", |c| match first_arg(&c.args, "isInf")? {
        ExprValue::Float(f) => Ok(ExprValue::Bool(f.is_infinite())),
        ExprValue::Integer(_) => Ok(ExprValue::Bool(false)),
        other => Err(expr::Error::ExprError(format!(
            "isInf() expects a number, got {}",
            type_name(&other)
        ))),
    });
    let is_nil = result.is_nil();
    env.add_function("isNil", move |_| Ok(ExprValue::Bool(is_nil)));
    let current = result.clone();
    env.add_function("default", move |c| {
        if current.is_nil() {
            c.args
                .get(1)
                .cloned()
                .ok_or_else(|| expr::Error::ExprError("default() needs two arguments".into()))
        } else {
            Ok(current.clone())
        }
    });
    env
}

/// Compiles and runs on the current thread; only called on a guarded thread.
fn run(condition: &str, result: &Value) -> Result<bool, ConditionError> {
    let program = expr::compile(condition).map_err(|e| {
        // pest errors span several lines; the first names the position.
        let text = e.to_string();
        ConditionError::Syntax(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        )
    })?;
    let bound = to_expr(result);
    let env = environment(&bound);
    let mut ctx = Context::default();
    ctx.insert("result", bound);
    match env.run(&program, &ctx) {
        Ok(ExprValue::Bool(b)) => Ok(b),
        Ok(other) => Err(ConditionError::NotBool(type_name(&other).into())),
        Err(e) => Err(ConditionError::Eval(e.to_string())),
    }
}
