//! The recursive-descent parser that builds the condition tree (`ast`) from
//! tokens.

use super::ast::{Comparison, Expr, ExprKind, Left, Literal, Span};
use super::lex::{tokenize, Tok, Token};
use super::scan::error;
use super::ParseError;

/// Deeper nesting than this is surely a mistake, and bounding it keeps the
/// recursive parser and evaluator far from the stack limit.
const MAX_DEPTH: usize = 64;

pub(super) fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(src)?;
    if matches!(tokens[0].tok, Tok::End) {
        // Blank text is no condition, as in ZeroClaw: the empty `&&` holds
        // for every payload.
        return Ok(Expr { kind: ExprKind::All(Vec::new()), span: Span { start: 0, end: src.len() } });
    }
    let mut parser = Parser { src, tokens, at: 0, depth: 0 };
    let expr = parser.or()?;
    let next = parser.peek();
    match next.tok {
        Tok::End => Ok(expr),
        Tok::Close => Err(error("unbalanced parentheses: `)` has no matching `(`", next.span.start)),
        _ => Err(error(
            format!("trailing input `{}`: join comparisons with && or ||", parser.src[next.span.start..].trim_end()),
            next.span.start,
        )),
    }
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.at]
    }

    /// The current token, moving past it (never past `End`).
    fn bump(&mut self) -> Token {
        let token = self.tokens[self.at].clone();
        if !matches!(token.tok, Tok::End) {
            self.at += 1;
        }
        token
    }

    /// How to name a token in an error: its text, or "the end".
    fn shown(&self, token: &Token) -> String {
        match token.tok {
            Tok::End => "the end of the condition".to_string(),
            _ => format!("`{}`", token.span.text(self.src)),
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut parts = vec![self.and()?];
        while matches!(self.peek().tok, Tok::Or) {
            self.bump();
            parts.push(self.and()?);
        }
        Ok(chain(parts, ExprKind::Any))
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut parts = vec![self.unary()?];
        while matches!(self.peek().tok, Tok::And) {
            self.bump();
            parts.push(self.unary()?);
        }
        Ok(chain(parts, ExprKind::All))
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().tok {
            Tok::Not => {
                let not = self.bump();
                let inner = self.nested(not.span.start, Self::unary)?;
                Ok(Expr {
                    span: Span { start: not.span.start, end: inner.span.end },
                    kind: ExprKind::Not(Box::new(inner)),
                })
            }
            Tok::Open => {
                let open = self.bump();
                let mut inner = self.nested(open.span.start, Self::or)?;
                let close = self.bump();
                if !matches!(close.tok, Tok::Close) {
                    return Err(error(
                        format!(
                            "unbalanced parentheses: `(` is not closed (found {} where `)` belongs)",
                            self.shown(&close)
                        ),
                        open.span.start,
                    ));
                }
                inner.span = Span { start: open.span.start, end: close.span.end };
                Ok(inner)
            }
            _ => self.comparison(),
        }
    }

    /// Runs `parse` one nesting level deeper, refusing absurd depths.
    fn nested(&mut self, at: usize, parse: fn(&mut Self) -> Result<Expr, ParseError>) -> Result<Expr, ParseError> {
        if self.depth == MAX_DEPTH {
            return Err(error(format!("nested more than {MAX_DEPTH} levels deep"), at));
        }
        self.depth += 1;
        let expr = parse(self);
        self.depth -= 1;
        expr
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let first = self.peek().clone();
        let (left, left_span) = match first.tok {
            Tok::Path(path) => {
                self.bump();
                (Left::Path(path), first.span)
            }
            // The direct form: no path, the operator comes first.
            Tok::Cmp(_) => (Left::Payload, Span { start: first.span.start, end: first.span.start }),
            _ => return Err(self.missing_comparison(&first)),
        };
        let op_token = self.bump();
        let Tok::Cmp(op) = op_token.tok else {
            return Err(error(
                format!(
                    "missing operator after `{}`: expected one of == != > >= < <=, found {}",
                    left_span.text(self.src),
                    self.shown(&op_token)
                ),
                op_token.span.start,
            ));
        };
        let literal_token = self.bump();
        let literal = match literal_token.tok {
            Tok::Lit(literal) => literal,
            // Starts with a letter, so it never holds a number.
            Tok::Word(text) => Literal::Str { text, num: None, bare: true },
            Tok::Path(_) => {
                return Err(error(
                    "the right side of a comparison must be a literal, not a path",
                    literal_token.span.start,
                ))
            }
            _ => {
                return Err(error(
                    format!(
                        "missing literal after `{}`: expected a number, a \"string\", true, false or null, found {}",
                        op.as_str(),
                        self.shown(&literal_token)
                    ),
                    literal_token.span.start,
                ))
            }
        };
        Ok(Expr {
            span: Span { start: first.span.start, end: literal_token.span.end },
            kind: ExprKind::Compare(Comparison { left, left_span, op, literal, literal_span: literal_token.span }),
        })
    }

    /// The error for a token that cannot start a comparison.
    fn missing_comparison(&self, found: &Token) -> ParseError {
        let after = self.at.checked_sub(1).map(|i| &self.tokens[i]);
        let reason = match (&found.tok, after) {
            (Tok::Close, Some(Token { tok: Tok::Open, .. })) => "empty parentheses".to_string(),
            (Tok::Close, None) => "unbalanced parentheses: `)` has no matching `(`".to_string(),
            (Tok::Word(word), _) => format!(
                "unknown word `{word}`: paths start with `$` (e.g. `$.{word}`), \
                 strings are double-quoted, and bare words stand only for a string on the right of an operator"
            ),
            (Tok::Lit(_), _) => format!(
                "a comparison starts with a `$` path or an operator, found the literal {}; \
                 write the path first, e.g. `$.x > 1`",
                self.shown(found)
            ),
            (_, Some(before)) => {
                format!("missing comparison after {}, found {}", self.shown(before), self.shown(found))
            }
            (_, None) => format!("expected a comparison, found {}", self.shown(found)),
        };
        error(reason, found.span.start)
    }
}

/// Every comparison whose literal is a bare word, in the order written.
pub(super) fn bare_words(expr: &Expr) -> Vec<&Comparison> {
    let mut found = Vec::new();
    let mut stack = vec![expr];
    while let Some(expr) = stack.pop() {
        match &expr.kind {
            ExprKind::Compare(c) if matches!(c.literal, Literal::Str { bare: true, .. }) => found.push(c),
            ExprKind::Compare(_) => {}
            ExprKind::Not(inner) => stack.push(inner),
            ExprKind::All(parts) | ExprKind::Any(parts) => stack.extend(parts.iter().rev()),
        }
    }
    found
}

/// One part stays itself; several become an `&&` or `||` node spanning them.
fn chain(mut parts: Vec<Expr>, kind: fn(Vec<Expr>) -> ExprKind) -> Expr {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    let span = Span { start: parts[0].span.start, end: parts[parts.len() - 1].span.end };
    Expr { kind: kind(parts), span }
}
