//! Splits condition text into tokens, each with its byte span.
//!
//! Strings are scanned here, before anything looks for operators, which is
//! what makes `"a && b"` one string and not two comparisons. A whole `$` path
//! is one token (see `path`), since its brackets hold strings too.

use super::ast::{Literal, Op, Span};
use super::number::{self, Num};
use super::path::{self, Path};
use super::scan::{error, scan_string, skip_space};
use super::ParseError;

#[derive(Clone, Debug)]
pub(super) enum Tok {
    Path(Path),
    Cmp(Op),
    And,
    Or,
    Not,
    Open,
    Close,
    Lit(Literal),
    /// A bare word that is not `true`, `false` or `null`: a string where a
    /// literal belongs (ZeroClaw's unquoted comparand), an error elsewhere.
    Word(String),
    End,
}

#[derive(Clone, Debug)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) span: Span,
}

/// Every token of `src`, ending with `Tok::End`.
pub(super) fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut at = 0;
    loop {
        let start = skip_space(src, at);
        let (tok, end) = token_at(src, start)?;
        let done = matches!(tok, Tok::End);
        tokens.push(Token { tok, span: Span { start, end } });
        if done {
            return Ok(tokens);
        }
        at = end;
    }
}

/// The token starting at `start` (not whitespace) and the offset after it.
fn token_at(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let Some(c) = src[start..].chars().next() else {
        return Ok((Tok::End, start));
    };
    match c {
        '$' => path::parse(src, start).map(|(path, end)| (Tok::Path(path), end)),
        '(' => Ok((Tok::Open, start + 1)),
        ')' => Ok((Tok::Close, start + 1)),
        '"' => string_literal(src, start),
        '-' | '0'..='9' => number_literal(src, start),
        '!' | '=' | '<' | '>' => comparison_or_not(src, start),
        '&' | '|' => logical(src, start, c),
        c if is_word_first(c) => word(src, start),
        '\'' => Err(error("strings are double-quoted (single quotes only appear in a path, as $['name'])", start)),
        _ => Err(error(format!("unexpected character `{c}`"), start)),
    }
}

fn string_literal(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let (text, end) = scan_string(src, start)?;
    let num = Num::parse_exact(&text);
    Ok((Tok::Lit(Literal::Str { text, num, bare: false }), end))
}

fn number_literal(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    // Take everything that could belong to a number, so `01`, `1.` and `2x`
    // are reported whole instead of splitting into two tokens.
    let run = src[start..]
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_'))
        .count();
    let text = &src[start..start + run];
    let num = match number::scan(text.as_bytes()) {
        Some((len, integral)) if len == run => Num::from_scanned(text, integral),
        _ => {
            return Err(error(format!("bad number `{text}`: numbers are written as in JSON, e.g. 2, -1.5, 1e3"), start))
        }
    };
    match num {
        Some(num) => Ok((Tok::Lit(Literal::Num(num)), start + run)),
        None => Err(error(format!("number `{text}` is out of range"), start)),
    }
}

/// `!` alone is negation; `!=` and every run of `=`, `<`, `>` must be one of
/// the six comparison operators.
fn comparison_or_not(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let bytes = &src.as_bytes()[start..];
    if bytes[0] == b'!' && bytes.get(1) != Some(&b'=') {
        return Ok((Tok::Not, start + 1));
    }
    let first = usize::from(bytes[0] == b'!');
    let run = first + bytes[first..].iter().take_while(|b| matches!(b, b'=' | b'<' | b'>')).count();
    let text = &src[start..start + run];
    let op = match text {
        "==" => Op::Eq,
        "!=" => Op::Ne,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        "<=" => Op::Le,
        _ => return Err(error(unknown_operator(text), start)),
    };
    Ok((Tok::Cmp(op), start + run))
}

fn unknown_operator(text: &str) -> String {
    let hint = match text {
        "=" | "===" => "did you mean `==`?",
        "=>" => "did you mean `>=`?",
        "=<" => "did you mean `<=`?",
        "<>" | "!==" => "did you mean `!=`?",
        _ => "comparisons use == != > >= < <=",
    };
    format!("unknown operator `{text}`: {hint}")
}

fn logical(src: &str, start: usize, c: char) -> Result<(Tok, usize), ParseError> {
    let doubled = src.as_bytes().get(start + 1) == Some(&(c as u8));
    match (c, doubled) {
        ('&', true) => Ok((Tok::And, start + 2)),
        ('|', true) => Ok((Tok::Or, start + 2)),
        _ => Err(error(format!("unknown operator `{c}`: did you mean `{c}{c}`?"), start)),
    }
}

/// A bare word: a letter or `_` first, then letters, digits, `_`, `-` and
/// `.`, so the unquoted values ZeroClaw's condition builder writes
/// (`critical`, `pull_request.opened`, `in-progress`) are one word each.
fn is_word_first(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn word(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let rest = &src[start..];
    let len = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
    let text = &rest[..len];
    let tok = match text {
        "true" => Tok::Lit(Literal::Bool(true)),
        "false" => Tok::Lit(Literal::Bool(false)),
        "null" => Tok::Lit(Literal::Null),
        "and" | "AND" => return Err(error(format!("unknown word `{text}`: write `&&`"), start)),
        "or" | "OR" => return Err(error(format!("unknown word `{text}`: write `||`"), start)),
        "not" | "NOT" => return Err(error(format!("unknown word `{text}`: write `!`"), start)),
        _ => Tok::Word(text.to_string()),
    };
    Ok((tok, start + len))
}
