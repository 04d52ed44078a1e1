//! Tokens of Go expr's syntax (what Argo evaluates conditions with):
//! numbers, strings in three quotings (`"..."` and `'...'` with escapes,
//! `` `...` `` raw, where a backslash is just a backslash), identifiers,
//! operators; `//` and `/* */` comments are skipped like whitespace.

/// One token, with the byte offset it starts at.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// What it is.
    pub kind: Kind,
    /// Where it starts.
    pub at: usize,
}

/// A token's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// An integer literal.
    Int(i64),
    /// A floating-point literal.
    Float(f64),
    /// A string literal, unescaped.
    Str(String),
    /// An identifier or keyword (`result`, `and`, `#`, `#acc`).
    Ident(String),
    /// An operator or punctuation.
    Op(&'static str),
}

/// Most tokens in a condition: conditions are short; this bounds the work.
pub const MAX_TOKENS: usize = 1024;

/// Operators, longest first so `**` wins over `*`.
const OPERATORS: [&str; 32] = [
    "?.", "??", "**", "==", "!=", "<=", ">=", "&&", "||", "..", "+", "-", "*", "/", "%", "^", "<",
    ">", "!", "?", ":", ".", ",", "(", ")", "[", "]", "{", "}", "|", ";", "=",
];

/// Splits `text` into tokens.
pub fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
            continue;
        }
        if text[i..].starts_with("/*") {
            i = match text[i + 2..].find("*/") {
                Some(n) => i + 2 + n + 2,
                None => return Err(format!("unterminated comment at {i}")),
            };
            continue;
        }
        let at = i;
        let kind = match c {
            b'"' | b'\'' => {
                let (s, next) = quoted(text, i)?;
                i = next;
                Kind::Str(s)
            }
            b'`' => {
                let end = text[i + 1..]
                    .find('`')
                    .ok_or_else(|| format!("unterminated raw string at {i}"))?;
                let s = text[i + 1..i + 1 + end].to_string();
                i += end + 2;
                Kind::Str(s)
            }
            b'0'..=b'9' => {
                let (kind, next) = number(text, i)?;
                i = next;
                kind
            }
            b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !out.last().is_some_and(ends_operand) =>
            {
                let (kind, next) = number(text, i)?;
                i = next;
                kind
            }
            b'#' | b'$' | b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Kind::Ident(text[start..i].to_string())
            }
            _ => {
                let op = OPERATORS
                    .iter()
                    .find(|op| text[i..].starts_with(**op))
                    .ok_or_else(|| {
                        let ch = text[i..].chars().next().unwrap_or('?');
                        format!("unexpected character {ch:?} at {i}")
                    })?;
                i += op.len();
                Kind::Op(op)
            }
        };
        out.push(Token { kind, at });
        if out.len() > MAX_TOKENS {
            return Err(format!("the condition has more than {MAX_TOKENS} tokens"));
        }
    }
    Ok(out)
}

/// Whether a token ends an operand (so a following `.5` is member access
/// of a number, never a literal).
fn ends_operand(token: &Token) -> bool {
    matches!(
        token.kind,
        Kind::Int(_) | Kind::Float(_) | Kind::Str(_) | Kind::Ident(_) | Kind::Op(")" | "]" | "}")
    )
}

/// A quoted string starting at `start`; returns it unescaped and the offset after it.
fn quoted(text: &str, start: usize) -> Result<(String, usize), String> {
    let quote = text.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((n, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((out, start + 1 + n + 1)),
            '\n' => break,
            '\\' => {
                let (_, e) = chars
                    .next()
                    .ok_or_else(|| format!("unterminated string at {start}"))?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'a' => out.push('\u{7}'),
                    'v' => out.push('\u{b}'),
                    '0' => out.push('\0'),
                    '\\' | '"' | '\'' | '/' | '`' => out.push(e),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).map(|(_, h)| h).collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("bad \\u escape at {start}"))?;
                        out.push(code);
                    }
                    other => return Err(format!("unknown escape \\{other} in string at {start}")),
                }
            }
            c => out.push(c),
        }
    }
    Err(format!("unterminated string at {start}"))
}

/// A number literal starting at `start`.
fn number(text: &str, start: usize) -> Result<(Kind, usize), String> {
    let bytes = text.as_bytes();
    let mut i = start;
    let radix = match text.get(start..start + 2) {
        Some("0x" | "0X") => 16,
        Some("0o" | "0O") => 8,
        Some("0b" | "0B") => 2,
        _ => 10,
    };
    if radix != 10 {
        i += 2;
        let digits_start = i;
        while i < bytes.len() && (bytes[i].is_ascii_hexdigit() || bytes[i] == b'_') {
            i += 1;
        }
        let digits: String = text[digits_start..i]
            .chars()
            .filter(|c| *c != '_')
            .collect();
        let value = i64::from_str_radix(&digits, radix)
            .map_err(|e| format!("bad number {} at {start}: {e}", &text[start..i]))?;
        return Ok((Kind::Int(value), i));
    }
    let mut float = false;
    while i < bytes.len() {
        match bytes[i] {
            b'0'..=b'9' | b'_' => i += 1,
            // `1..3` is a range, not a float.
            b'.' if !float && bytes.get(i + 1) != Some(&b'.') => {
                float = true;
                i += 1;
            }
            b'e' | b'E' => {
                float = true;
                i += 1;
                if matches!(bytes.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
            }
            _ => break,
        }
    }
    let literal: String = text[start..i].chars().filter(|c| *c != '_').collect();
    let kind = if float {
        Kind::Float(
            literal
                .parse()
                .map_err(|e| format!("bad number {literal} at {start}: {e}"))?,
        )
    } else {
        match literal.parse::<i64>() {
            Ok(n) => Kind::Int(n),
            Err(e) => return Err(format!("bad number {literal} at {start}: {e}")),
        }
    };
    Ok((kind, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Kind> {
        tokens(text)
            .expect("lexes")
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn comments_are_skipped_and_cannot_hide_tokens_from_the_parser() {
        assert_eq!(
            kinds(r#"/* " */ len(1..100) > 0 // ""#),
            kinds("len(1..100) > 0")
        );
    }

    #[test]
    fn raw_strings_have_no_escapes() {
        assert_eq!(
            kinds(r"`a\` + 1"),
            vec![Kind::Str(r"a\".into()), Kind::Op("+"), Kind::Int(1)]
        );
    }

    #[test]
    fn numbers_in_go_forms() {
        assert_eq!(
            kinds("1_000 0x1F + .5 2.5e3 1..3"),
            vec![
                Kind::Int(1000),
                Kind::Int(31),
                Kind::Op("+"),
                Kind::Float(0.5),
                Kind::Float(2500.0),
                Kind::Int(1),
                Kind::Op(".."),
                Kind::Int(3)
            ]
        );
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(
            kinds(r#"'it\'s' "a\"b\u0041""#),
            vec![Kind::Str("it's".into()), Kind::Str("a\"bA".into())]
        );
    }
}
