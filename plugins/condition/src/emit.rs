//! Writes a parsed condition in the expr-lang crate's syntax, fully
//! parenthesised, with Go's semantics where the crate's differ: member and
//! index access through functions that fail as Go does (an index past the
//! end, a field of nil), `==` through one that compares numbers across int
//! and float and a non-finite float with its spelling, predicates always in
//! braces with `.field` as `#.field`, map literals through a function.

use crate::parser::{Node, Unary};

/// Names a condition may use without defining them.
const GLOBALS: &[&str] = &["result"];

/// Functions a condition may call: the crate's builtins, Argo's helpers.
const FUNCTIONS: &[&str] = &[
    "abs",
    "all",
    "any",
    "bitand",
    "bitnand",
    "bitnot",
    "bitor",
    "bitshl",
    "bitshr",
    "bitushr",
    "bitxor",
    "ceil",
    "concat",
    "count",
    "date",
    "duration",
    "filter",
    "find",
    "findIndex",
    "findLast",
    "findLastIndex",
    "first",
    "flatten",
    "float",
    "floor",
    "fromJSON",
    "fromPairs",
    "get",
    "groupBy",
    "hasPrefix",
    "hasSuffix",
    "indexOf",
    "int",
    "join",
    "keys",
    "last",
    "lastIndexOf",
    "len",
    "lower",
    "map",
    "max",
    "mean",
    "median",
    "min",
    "none",
    "now",
    "one",
    "reduce",
    "repeat",
    "replace",
    "reverse",
    "round",
    "sort",
    "sortBy",
    "split",
    "splitAfter",
    "string",
    "sum",
    "take",
    "timezone",
    "toJSON",
    "toPairs",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "type",
    "uniq",
    "upper",
    "values",
    "asInt",
    "asFloat",
    "isNaN",
    "isInf",
    "isNil",
    "default",
    "toBase64",
    "fromBase64",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "in",
    "not",
];

/// Writes `node` as a crate program.
pub fn program(node: &Node) -> Result<String, String> {
    let mut out = String::new();
    Emitter {
        scopes: Vec::new(),
        closures: 0,
    }
    .program(node, &mut out)?;
    Ok(out)
}

struct Emitter {
    /// Names bound by `let`, innermost last.
    scopes: Vec<String>,
    /// Closures the emitter is inside.
    closures: usize,
}

fn string(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

impl Emitter {
    /// A program: leading `let`s, then an expression.
    fn program(&mut self, node: &Node, out: &mut String) -> Result<(), String> {
        if let Node::Let(name, value, body) = node {
            out.push_str("let ");
            out.push_str(name);
            out.push_str(" = ");
            self.expr(value, out)?;
            out.push_str("; ");
            self.scopes.push(name.clone());
            let result = self.program(body, out);
            self.scopes.pop();
            return result;
        }
        self.expr(node, out)
    }

    fn call(&mut self, name: &str, args: &[&Node], out: &mut String) -> Result<(), String> {
        out.push_str(name);
        out.push('(');
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.expr(arg, out)?;
        }
        out.push(')');
        Ok(())
    }

    fn binary(&mut self, op: &str, l: &Node, r: &Node, out: &mut String) -> Result<(), String> {
        out.push_str("((");
        self.expr(l, out)?;
        out.push_str(") ");
        out.push_str(op);
        out.push_str(" (");
        self.expr(r, out)?;
        out.push_str("))");
        Ok(())
    }

    fn expr(&mut self, node: &Node, out: &mut String) -> Result<(), String> {
        match node {
            Node::Nil => out.push_str("nil"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Int(n) => out.push_str(&n.to_string()),
            Node::Float(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
            Node::Float(f) => return Err(format!("number {f} is out of range")),
            Node::Str(s) => string(s, out),
            Node::Name(name) => {
                let known = GLOBALS.contains(&name.as_str())
                    || self.scopes.iter().any(|s| s == name)
                    || (name.starts_with('#') && self.closures > 0);
                if !known {
                    return Err(format!("unknown name {name}"));
                }
                out.push_str(name);
            }
            Node::Pointer(field) => {
                out.push_str("__weir_fetch(#, ");
                string(field, out);
                out.push(')');
            }
            Node::Unary(op, operand) => {
                out.push_str(match op {
                    Unary::Not => "(!(",
                    Unary::Neg => "(-(",
                    Unary::Plus => "(+(",
                });
                self.expr(operand, out)?;
                out.push_str("))");
            }
            Node::Binary("==", l, r) => self.call("__weir_eq", &[l, r], out)?,
            Node::Binary("!=", l, r) => {
                out.push_str("(!(");
                self.call("__weir_eq", &[l, r], out)?;
                out.push_str("))");
            }
            Node::Binary(op, l, r) => self.binary(op, l, r, out)?,
            Node::Member(base, name, optional) => {
                out.push_str(if *optional {
                    "__weir_fetch_opt("
                } else {
                    "__weir_fetch("
                });
                self.expr(base, out)?;
                out.push_str(", ");
                string(name, out);
                out.push(')');
            }
            Node::Index(base, index, optional) => {
                let name = if *optional {
                    "__weir_index_opt"
                } else {
                    "__weir_index"
                };
                self.call(name, &[base, index], out)?;
            }
            Node::Slice(base, from, to) => {
                out.push('(');
                self.expr(base, out)?;
                out.push_str(")[");
                if let Some(from) = from {
                    out.push('(');
                    self.expr(from, out)?;
                    out.push(')');
                }
                out.push(':');
                if let Some(to) = to {
                    out.push('(');
                    self.expr(to, out)?;
                    out.push(')');
                }
                out.push(']');
            }
            Node::Call(name, args) => {
                if !FUNCTIONS.contains(&name.as_str()) {
                    return Err(format!("unknown function {name}"));
                }
                let args: Vec<&Node> = args.iter().collect();
                self.call(name, &args, out)?;
            }
            Node::Method(base, name, args) => {
                out.push('(');
                self.expr(base, out)?;
                out.push_str(").");
                out.push_str(name);
                let args: Vec<&Node> = args.iter().collect();
                self.call("", &args, out)?;
            }
            Node::Closure(body) => {
                self.closures += 1;
                out.push_str("{ ");
                let result = self.program(body, out);
                out.push_str(" }");
                self.closures -= 1;
                result?;
            }
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.expr(item, out)?;
                }
                out.push(']');
            }
            Node::Map(entries) => {
                out.push_str("__weir_map(");
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    string(key, out);
                    out.push_str(", ");
                    self.expr(value, out)?;
                }
                out.push(')');
            }
            Node::Conditional(c, a, b) => {
                out.push_str("((");
                self.expr(c, out)?;
                out.push_str(") ? (");
                self.expr(a, out)?;
                out.push_str(") : (");
                self.expr(b, out)?;
                out.push_str("))");
            }
            Node::Let(..) => {
                return Err(
                    "`let` is supported at the start of a condition or predicate only".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::tokens;
    use crate::parser::parse;

    fn emitted(text: &str) -> Result<String, String> {
        program(&parse(&tokens(text)?, text.len())?)
    }

    #[test]
    fn predicates_get_braces_and_the_shorthand_its_hash() {
        assert_eq!(
            emitted("all(result, .v > 1)").expect("emits"),
            r#"all(result, { ((__weir_fetch(#, "v")) > (1)) })"#
        );
    }

    #[test]
    fn unknown_names_and_functions_are_errors() {
        assert_eq!(emitted("foo > 1").unwrap_err(), "unknown name foo");
        assert_eq!(emitted("foo(1)").unwrap_err(), "unknown function foo");
        assert!(emitted("let foo = 1; foo > 0").is_ok());
        assert!(emitted("# > 0").is_err(), "# only inside a predicate");
    }
}
