//! Argo's analysis conditions, evaluated as Argo does (Go expr's syntax and
//! semantics, Argo's `EvaluateResult` helpers) inside Weir's sandbox.
//!
//! A condition is lexed and parsed by Weir ([`lexer`], [`parser`]: Go's
//! grammar, chained comparisons, closures without braces and the `.field`
//! shorthand, comments), written out in the expr-lang crate's syntax with
//! Go's semantics where the crate's differ ([`emit`]), and run by the crate
//! with Argo's helpers ([`runtime`]). Built for `wasm32-wasip2`, it is the
//! component the host loads to evaluate every condition in a fresh
//! instance under a memory cap and a deadline; whatever the crate does with
//! a hostile condition (allocate without bound, recurse, loop) ends that
//! instance only.

pub mod emit;
pub mod lexer;
pub mod parser;
pub mod runtime;

/// Longest condition accepted, in bytes.
pub const MAX_CONDITION_BYTES: usize = 16 << 10;

/// Why a condition gave no verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// It does not parse.
    Syntax(String),
    /// Evaluating it failed.
    Eval(String),
    /// It did not evaluate to a boolean (the type's name).
    NotBool(String),
}

/// Translates `condition` into the crate's syntax.
pub fn translate(condition: &str) -> Result<String, Error> {
    if condition.len() > MAX_CONDITION_BYTES {
        return Err(Error::Syntax(format!(
            "the condition is {} bytes long, over {MAX_CONDITION_BYTES}",
            condition.len()
        )));
    }
    let tokens = lexer::tokens(condition).map_err(Error::Syntax)?;
    if tokens.is_empty() {
        return Err(Error::Syntax("unexpected end of the condition at 0".into()));
    }
    let tree = parser::parse(&tokens, condition.len()).map_err(Error::Syntax)?;
    emit::program(&tree).map_err(Error::Syntax)
}

/// Evaluates `condition` with `result` bound to the JSON value `result`.
pub fn evaluate(condition: &str, result: &str) -> Result<bool, Error> {
    let program = translate(condition)?;
    let value: serde_json::Value = serde_json::from_str(result)
        .map_err(|e| Error::Eval(format!("the measured value is not JSON: {e}")))?;
    let compiled = expr::compile(&program).map_err(|e| {
        Error::Syntax(format!(
            "{} (as translated: {program})",
            e.to_string()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        ))
    })?;
    let bound = runtime::to_expr(&value);
    let env = runtime::environment(&bound);
    match env.run(&compiled, &runtime::context(bound)) {
        Ok(expr::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(Error::NotBool(runtime::type_name(&other).into())),
        Err(e) => Err(Error::Eval(e.to_string())),
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "../../wit/condition",
        world: "weir:condition/condition-evaluator",
    });

    use exports::weir::condition::evaluator::{ConditionError, Guest};

    struct Component;

    impl Guest for Component {
        fn evaluate(condition: String, result: String) -> Result<bool, ConditionError> {
            super::evaluate(&condition, &result).map_err(|e| match e {
                super::Error::Syntax(m) => ConditionError::Syntax(m),
                super::Error::Eval(m) => ConditionError::Eval(m),
                super::Error::NotBool(m) => ConditionError::NotBool(m),
            })
        }
    }

    export!(Component);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argo_documentation_conditions() {
        let rate = "[0.97]";
        assert_eq!(evaluate("result[0] >= 0.95", rate), Ok(true));
        assert_eq!(evaluate("result[0] < 0.95", rate), Ok(false));
        let apdex =
            r#"{"service_apdex": {"values": {"values": [{"value": 9950}, {"value": 9990}]}}}"#;
        assert_eq!(
            evaluate(
                "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})",
                apdex
            ),
            Ok(true)
        );
        assert_eq!(evaluate("0 <= result < 1", "0.5"), Ok(true));
        assert_eq!(evaluate("1 < 2 < 3", "null"), Ok(true));
        assert_eq!(evaluate("!!true", "null"), Ok(true));
        assert_eq!(evaluate("result == 1", "1"), Ok(true), "float 1.0 == int 1");
        assert_eq!(evaluate(r#"result == "NaN""#, r#""NaN""#), Ok(true));
        assert!(
            matches!(evaluate("result[0] == 1", "[]"), Err(Error::Eval(m)) if m.contains("index out of range"))
        );
        assert!(matches!(evaluate("   ", "1"), Err(Error::Syntax(_))));
        assert!(matches!(evaluate("result", "1"), Err(Error::NotBool(t)) if t == "float64"));
    }

    #[test]
    fn comments_and_raw_strings_hide_nothing() {
        // The bypass of the old textual pre-check: parsed, not skipped.
        assert!(matches!(
            evaluate(r#"/* " */ len(result) > 0 // ""#, "[1]"),
            Ok(true)
        ));
        assert_eq!(evaluate(r"`a\` == 'a\\'", "null"), Ok(true));
    }

    #[derive(serde::Deserialize)]
    struct Case {
        condition: String,
        result: serde_json::Value,
        want: serde_json::Value,
    }

    /// The parity table (tests/data/condition-parity.yaml), natively; the
    /// end-to-end suite runs it through the sandbox.
    #[test]
    fn the_parity_table_gives_argos_verdicts() {
        let cases: Vec<Case> =
            serde_yaml_ng::from_str(include_str!("../../../tests/data/condition-parity.yaml"))
                .expect("the table parses");
        assert!(cases.len() >= 90, "{} cases", cases.len());
        let mut wrong = Vec::new();
        for case in &cases {
            let got = evaluate(&case.condition, &case.result.to_string());
            let ok = match (&case.want, &got) {
                (serde_json::Value::Bool(want), Ok(b)) => want == b,
                (serde_json::Value::String(e), Err(_)) => e == "error",
                _ => false,
            };
            if !ok {
                wrong.push(format!(
                    "{} with {}: want {}, got {got:?}",
                    case.condition, case.result, case.want
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} differ:\n{}",
            wrong.len(),
            cases.len(),
            wrong.join("\n")
        );
    }
}
