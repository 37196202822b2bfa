//! The condition tree: what a parsed condition is, shared by the lexer (its
//! literals and operators), the parser that builds it and the evaluator that
//! walks it. Every node keeps its byte span so `check` can quote the part of
//! the condition that failed exactly as it was written.

use super::number::Num;
use super::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Span {
    pub(super) fn text(self, src: &str) -> &str {
        &src[self.start..self.end]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Literal {
    Num(Num),
    /// `num` is the number the string holds, if any, worked out once here;
    /// `bare` says it was written without quotes (see `Tok::Word`).
    Str {
        text: String,
        num: Option<Num>,
        bare: bool,
    },
    Bool(bool),
    Null,
}

/// What a comparison reads: a path, or the whole payload (the direct form).
#[derive(Clone, Debug)]
pub(super) enum Left {
    Payload,
    Path(Path),
}

#[derive(Clone, Debug)]
pub(super) struct Comparison {
    pub(super) left: Left,
    pub(super) left_span: Span,
    pub(super) op: Op,
    pub(super) literal: Literal,
    pub(super) literal_span: Span,
}

#[derive(Clone, Debug)]
pub(super) struct Expr {
    pub(super) kind: ExprKind,
    /// Includes the parentheses when the expression was parenthesized.
    pub(super) span: Span,
}

/// `&&` and `||` chains are kept flat so `check` can list their parts.
#[derive(Clone, Debug)]
pub(super) enum ExprKind {
    Compare(Comparison),
    Not(Box<Expr>),
    All(Vec<Expr>),
    Any(Vec<Expr>),
}
