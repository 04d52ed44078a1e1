//! Go expr's grammar, as Argo's conditions use it, parsed into a tree:
//! Go's operator precedence, chained comparisons (`0 <= x < 1`), closures
//! with or without braces and the `.field` shorthand for `#.field` inside
//! them, `let`, `if`/`else`, pipes, optional chaining, slices. The tree is
//! what [`crate::emit`] turns into the expr-lang crate's syntax.

use crate::lexer::{Kind, Token};

/// Deepest nesting of the tree: bounds the parser's and evaluator's stacks.
pub const MAX_DEPTH: usize = 64;

/// A unary operator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    /// `!` / `not`
    Not,
    /// `-`
    Neg,
    /// `+`
    Plus,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `nil`
    Nil,
    /// `true` / `false`
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A name: `result`, a `let` binding, `#`, `#acc`, `#index`.
    Name(String),
    /// `.field` inside a closure: a field of the current element.
    Pointer(String),
    /// A unary operation.
    Unary(Unary, Box<Node>),
    /// A binary operation, by its Go spelling (`&&`, `in`, `not in`...).
    Binary(&'static str, Box<Node>, Box<Node>),
    /// `base.name` (`base?.name` when optional).
    Member(Box<Node>, String, bool),
    /// `base[index]` (`base?.[index]` when optional).
    Index(Box<Node>, Box<Node>, bool),
    /// `base[from:to]`.
    Slice(Box<Node>, Option<Box<Node>>, Option<Box<Node>>),
    /// `name(args)`; predicate arguments are [`Node::Closure`].
    Call(String, Vec<Node>),
    /// `base.name(args)`.
    Method(Box<Node>, String, Vec<Node>),
    /// A predicate's body.
    Closure(Box<Node>),
    /// `[a, b]`
    Array(Vec<Node>),
    /// `{key: value}`
    Map(Vec<(String, Node)>),
    /// `c ? a : b` and `if c { a } else { b }`.
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    /// `let name = value; body`.
    Let(String, Box<Node>, Box<Node>),
}

/// Functions whose argument at the given index is a predicate.
fn predicate_index(name: &str) -> Option<usize> {
    match name {
        "all" | "any" | "none" | "one" | "filter" | "map" | "count" | "find" | "findIndex"
        | "findLast" | "findLastIndex" | "groupBy" | "sortBy" | "reduce" | "sum" | "mean"
        | "median" => Some(1),
        _ => None,
    }
}

/// Binding power of a binary operator (Go expr's table), and whether it is
/// right-associative.
fn binary(op: &str) -> Option<(u8, bool)> {
    Some(match op {
        "||" | "or" => (10, false),
        "&&" | "and" => (15, false),
        "==" | "!=" | "<" | ">" | "<=" | ">=" | "in" | "not in" | "matches" | "contains"
        | "startsWith" | "endsWith" => (20, false),
        ".." => (25, false),
        "+" | "-" => (30, false),
        "*" | "/" | "%" => (60, false),
        "**" | "^" => (100, true),
        "??" => (200, false),
        _ => return None,
    })
}

fn is_relational(op: &str) -> bool {
    matches!(op, "<" | ">" | "<=" | ">=")
}

/// Parses tokens into one expression.
pub fn parse(tokens: &[Token], source_len: usize) -> Result<Node, String> {
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        closures: 0,
        end: source_len,
    };
    let node = parser.program()?;
    match parser.peek() {
        None => Ok(node),
        Some(t) => Err(format!("unexpected {} at {}", describe(&t.kind), t.at)),
    }
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Int(n) => format!("number {n}"),
        Kind::Float(f) => format!("number {f}"),
        Kind::Str(s) => format!("string {s:?}"),
        Kind::Ident(s) => format!("name {s}"),
        Kind::Op(op) => format!("token {op:?}"),
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    depth: usize,
    closures: usize,
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_at(&self, offset: usize) -> Option<&Kind> {
        self.tokens.get(self.pos + offset).map(|t| &t.kind)
    }

    fn at(&self) -> usize {
        self.peek().map_or(self.end, |t| t.at)
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Kind::Op(o), .. }) if *o == op)
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Kind::Ident(w), .. }) if w == word)
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.is_op(op) {
            self.pos += 1;
            Ok(())
        } else {
            Err(match self.peek() {
                Some(t) => format!("expected {op:?} at {}, found {}", t.at, describe(&t.kind)),
                None => format!("expected {op:?} at {}, found the end", self.end),
            })
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Token {
                kind: Kind::Ident(name),
                ..
            }) => {
                let name = name.clone();
                self.pos += 1;
                Ok(name)
            }
            Some(t) => Err(format!(
                "expected a name at {}, found {}",
                t.at,
                describe(&t.kind)
            )),
            None => Err(format!("expected a name at {}, found the end", self.end)),
        }
    }

    /// Enters one level of nesting.
    fn nest(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "the condition nests more than {MAX_DEPTH} levels deep (at {})",
                self.at()
            ));
        }
        Ok(())
    }

    /// `let a = x; let b = y; expr`
    fn program(&mut self) -> Result<Node, String> {
        if self.is_word("let") {
            self.nest()?;
            self.pos += 1;
            let name = self.ident()?;
            self.expect("=")?;
            let value = self.expression(0)?;
            self.expect(";")?;
            let body = self.program()?;
            self.depth -= 1;
            return Ok(Node::Let(name, Box::new(value), Box::new(body)));
        }
        self.expression(0)
    }

    /// The binary operator at the cursor, in Go's spelling.
    fn operator(&self) -> Option<&'static str> {
        match self.peek()?.kind.clone() {
            Kind::Op(op) if binary(op).is_some() => Some(op),
            Kind::Ident(word) => match word.as_str() {
                "or" => Some("||"),
                "and" => Some("&&"),
                "in" => Some("in"),
                "matches" => Some("matches"),
                "contains" => Some("contains"),
                "startsWith" => Some("startsWith"),
                "endsWith" => Some("endsWith"),
                "not" if matches!(self.peek_at(1), Some(Kind::Ident(w)) if w == "in") => {
                    Some("not in")
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Pratt loop: operators binding tighter than `min`.
    fn expression(&mut self, min: u8) -> Result<Node, String> {
        self.nest()?;
        let mut left = self.unary()?;
        while let Some(op) = self.operator() {
            let Some((power, right_assoc)) = binary(op) else {
                break;
            };
            if power <= min && !(right_assoc && power == min) {
                break;
            }
            self.pos += if op == "not in" { 2 } else { 1 };
            let next_min = if right_assoc { power - 1 } else { power };
            let right = self.expression(next_min)?;
            left = match left {
                // Go's chained comparison: `a < b < c` is `a < b && b < c`.
                Node::Binary(prev, ref _l, ref middle)
                    if is_relational(prev) && is_relational(op) =>
                {
                    let middle = (**middle).clone();
                    Node::Binary(
                        "&&",
                        Box::new(left),
                        Box::new(Node::Binary(op, Box::new(middle), Box::new(right))),
                    )
                }
                Node::Binary("&&", ref first, ref last)
                    if is_relational(op)
                        && matches!(**last, Node::Binary(p, ..) if is_relational(p))
                        && matches!(**first, Node::Binary(p, ..) if is_relational(p)) =>
                {
                    // Extends a chain already rewritten: `a < b < c < d`.
                    let Node::Binary(_, _, middle) = &**last else {
                        unreachable!("matched above")
                    };
                    let middle = (**middle).clone();
                    Node::Binary(
                        "&&",
                        Box::new(left.clone()),
                        Box::new(Node::Binary(op, Box::new(middle), Box::new(right))),
                    )
                }
                _ => Node::Binary(op, Box::new(left), Box::new(right)),
            };
        }
        if min == 0 && self.is_op("?") {
            self.pos += 1;
            let then = self.expression(0)?;
            self.expect(":")?;
            let otherwise = self.expression(0)?;
            left = Node::Conditional(Box::new(left), Box::new(then), Box::new(otherwise));
        }
        if min == 0 {
            while self.is_op("|") {
                // `x | f(y)` is `f(x, y)`.
                self.pos += 1;
                let name = self.ident()?;
                let mut args = vec![left];
                args.extend(self.arguments(&name, 1)?);
                left = Node::Call(name, args);
            }
        }
        self.depth -= 1;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, String> {
        let op = match self.peek().map(|t| &t.kind) {
            Some(Kind::Op("!")) => Some((Unary::Not, 50)),
            Some(Kind::Ident(w)) if w == "not" => Some((Unary::Not, 50)),
            Some(Kind::Op("-")) => Some((Unary::Neg, 90)),
            Some(Kind::Op("+")) => Some((Unary::Plus, 90)),
            _ => None,
        };
        match op {
            Some((op, power)) => {
                self.pos += 1;
                let operand = self.expression(power)?;
                Ok(Node::Unary(op, Box::new(operand)))
            }
            None => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Node, String> {
        let mut node = self.primary()?;
        loop {
            if self.is_op(".") || self.is_op("?.") {
                let optional = self.is_op("?.");
                self.pos += 1;
                if optional && self.is_op("[") {
                    self.pos += 1;
                    let index = self.expression(0)?;
                    self.expect("]")?;
                    node = Node::Index(Box::new(node), Box::new(index), true);
                    continue;
                }
                let name = self.ident()?;
                if self.is_op("(") {
                    let args = self.arguments(&name, 0)?;
                    node = Node::Method(Box::new(node), name, args);
                } else {
                    node = Node::Member(Box::new(node), name, optional);
                }
            } else if self.is_op("[") {
                self.pos += 1;
                let from = if self.is_op(":") {
                    None
                } else {
                    Some(Box::new(self.expression(0)?))
                };
                if self.is_op(":") {
                    self.pos += 1;
                    let to = if self.is_op("]") {
                        None
                    } else {
                        Some(Box::new(self.expression(0)?))
                    };
                    self.expect("]")?;
                    node = Node::Slice(Box::new(node), from, to);
                } else {
                    self.expect("]")?;
                    let index = from.ok_or_else(|| format!("empty index at {}", self.at()))?;
                    node = Node::Index(Box::new(node), index, false);
                }
            } else {
                return Ok(node);
            }
        }
    }

    fn primary(&mut self) -> Result<Node, String> {
        let Some(token) = self.peek().cloned() else {
            return Err(format!("unexpected end of the condition at {}", self.end));
        };
        self.pos += 1;
        match token.kind {
            Kind::Int(n) => Ok(Node::Int(n)),
            Kind::Float(f) => Ok(Node::Float(f)),
            Kind::Str(s) => Ok(Node::Str(s)),
            Kind::Op("(") => {
                let inner = self.program()?;
                self.expect(")")?;
                Ok(inner)
            }
            Kind::Op("[") => {
                let mut items = Vec::new();
                while !self.is_op("]") {
                    items.push(self.expression(0)?);
                    if !self.is_op("]") {
                        self.expect(",")?;
                    }
                }
                self.pos += 1;
                Ok(Node::Array(items))
            }
            Kind::Op("{") => {
                let mut entries = Vec::new();
                while !self.is_op("}") {
                    let key = match self.peek().map(|t| t.kind.clone()) {
                        Some(Kind::Ident(k) | Kind::Str(k)) => k,
                        Some(Kind::Int(n)) => n.to_string(),
                        _ => return Err(format!("expected a map key at {}", self.at())),
                    };
                    self.pos += 1;
                    self.expect(":")?;
                    entries.push((key, self.expression(0)?));
                    if !self.is_op("}") {
                        self.expect(",")?;
                    }
                }
                self.pos += 1;
                Ok(Node::Map(entries))
            }
            Kind::Op(".") => {
                // `.field`: only inside a closure, where it is `#.field`.
                let name = self.ident()?;
                if self.closures == 0 {
                    return Err(format!(
                        "`.{name}` at {} is only allowed inside a predicate",
                        token.at
                    ));
                }
                Ok(Node::Pointer(name))
            }
            Kind::Ident(word) => match word.as_str() {
                "nil" => Ok(Node::Nil),
                "true" => Ok(Node::Bool(true)),
                "false" => Ok(Node::Bool(false)),
                "if" => {
                    let condition = self.expression(0)?;
                    let then = self.block()?;
                    if !self.is_word("else") {
                        return Err(format!("expected `else` at {}", self.at()));
                    }
                    self.pos += 1;
                    let otherwise = if self.is_word("if") {
                        self.primary()?
                    } else {
                        self.block()?
                    };
                    Ok(Node::Conditional(
                        Box::new(condition),
                        Box::new(then),
                        Box::new(otherwise),
                    ))
                }
                _ if self.is_op("(") => {
                    let args = self.arguments(&word, 0)?;
                    Ok(Node::Call(word, args))
                }
                _ => Ok(Node::Name(word)),
            },
            other => Err(format!("unexpected {} at {}", describe(&other), token.at)),
        }
    }

    /// `{ program }`
    fn block(&mut self) -> Result<Node, String> {
        self.expect("{")?;
        let inner = self.program()?;
        self.expect("}")?;
        Ok(inner)
    }

    /// `(a, b, ...)` of a call to `name`, whose first `skip` arguments were
    /// given already (a pipe's left side).
    fn arguments(&mut self, name: &str, skip: usize) -> Result<Vec<Node>, String> {
        self.expect("(")?;
        let predicate = predicate_index(name);
        let mut args = Vec::new();
        while !self.is_op(")") {
            let index = skip + args.len();
            if predicate == Some(index) {
                args.push(self.closure()?);
            } else {
                args.push(self.expression(0)?);
            }
            if !self.is_op(")") {
                self.expect(",")?;
            }
        }
        self.pos += 1;
        Ok(args)
    }

    /// A predicate: `{ body }` or a bare body.
    fn closure(&mut self) -> Result<Node, String> {
        self.closures += 1;
        let body = if self.is_op("{") {
            self.block()?
        } else {
            self.expression(0)?
        };
        self.closures -= 1;
        Ok(Node::Closure(Box::new(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::tokens;

    fn tree(text: &str) -> Node {
        parse(&tokens(text).expect("lexes"), text.len()).expect("parses")
    }

    fn b(op: &'static str, l: Node, r: Node) -> Node {
        Node::Binary(op, Box::new(l), Box::new(r))
    }

    fn name(n: &str) -> Node {
        Node::Name(n.into())
    }

    #[test]
    fn go_precedence() {
        assert_eq!(
            tree("a || b && c"),
            b("||", name("a"), b("&&", name("b"), name("c")))
        );
        assert_eq!(
            tree("!a + b"),
            b("+", Node::Unary(Unary::Not, Box::new(name("a"))), name("b"))
        );
        assert_eq!(
            tree("2 ** 3 ** 2"),
            b("**", Node::Int(2), b("**", Node::Int(3), Node::Int(2)))
        );
        assert_eq!(
            tree("a ?? 0 > 0"),
            b(">", b("??", name("a"), Node::Int(0)), Node::Int(0))
        );
    }

    #[test]
    fn chained_comparisons_become_conjunctions() {
        assert_eq!(
            tree("0 <= x < 1"),
            b(
                "&&",
                b("<=", Node::Int(0), name("x")),
                b("<", name("x"), Node::Int(1))
            )
        );
        let four = tree("1 < 2 < 3 < 4");
        assert_eq!(
            four,
            b(
                "&&",
                b(
                    "&&",
                    b("<", Node::Int(1), Node::Int(2)),
                    b("<", Node::Int(2), Node::Int(3))
                ),
                b("<", Node::Int(3), Node::Int(4))
            )
        );
        assert_eq!(
            tree("a == b == c"),
            b("==", b("==", name("a"), name("b")), name("c")),
            "only relational operators chain"
        );
    }

    #[test]
    fn closures_with_and_without_braces_and_the_field_shorthand() {
        let expected = Node::Call(
            "filter".into(),
            vec![
                name("result"),
                Node::Closure(Box::new(b(">", Node::Pointer("v".into()), Node::Int(1)))),
            ],
        );
        assert_eq!(tree("filter(result, .v > 1)"), expected);
        assert_eq!(tree("filter(result, {.v > 1})"), expected);
        assert!(
            parse(&tokens(".v > 1").expect("lexes"), 6).is_err(),
            "the shorthand outside a predicate is an error"
        );
    }

    #[test]
    fn double_negation_let_if_and_pipes() {
        assert_eq!(
            tree("!!true"),
            Node::Unary(
                Unary::Not,
                Box::new(Node::Unary(Unary::Not, Box::new(Node::Bool(true))))
            )
        );
        assert!(matches!(tree("let x = 1; x + 1"), Node::Let(..)));
        assert!(matches!(
            tree("if a { 1 } else { 2 }"),
            Node::Conditional(..)
        ));
        assert_eq!(
            tree("result | len()"),
            Node::Call("len".into(), vec![name("result")])
        );
        assert!(matches!(tree("a not in b"), Node::Binary("not in", ..)));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        let error = parse(&tokens(&deep).expect("lexes"), deep.len()).expect_err("too deep");
        assert!(error.contains("nests more than"), "{error}");
    }
}
