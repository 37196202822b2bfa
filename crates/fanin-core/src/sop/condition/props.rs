//! Property tests of the condition language: no text makes the parser panic
//! or recurse without bound, every condition written by the grammar parses,
//! spelling (whitespace, path notation, number notation, quoting a word)
//! never changes a verdict, and numeric comparisons agree with a reference
//! model.

use std::cmp::Ordering;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::ast::Op;
use super::number::Num;
use super::path::{self, Segment};
use super::Condition;
use crate::event::Payload;
use crate::proptest_support::{config, hostile_text, json_value, token_soup};

/// The grammar's tokens and their near misses.
const PIECES: &[&str] = &[
    "$",
    ".",
    "a",
    "b_1",
    "é",
    "0",
    "1",
    "-1",
    "2.5",
    "1e3",
    "-",
    "e",
    "[",
    "]",
    "'",
    "\"",
    "\\",
    "\\u",
    "D83D",
    "DE00",
    "(",
    ")",
    "!",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=>",
    "&&",
    "||",
    "&",
    "|",
    " ",
    "\t",
    "\n",
    "true",
    "false",
    "null",
    "and",
    "critical",
    "True",
    "a-b.c",
    "*",
    "..",
    "?",
    ":",
    ",",
    "'a'",
    "\"s\"",
    "9007199254740993",
    "99999999999999999999999999999999999999999",
    "1e999",
];

const OPS: [Op; 6] = [Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le];

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(OPS.to_vec())
}

/// The reference reading of an operator: Rust's own comparison operators,
/// not the evaluator's mapping from an ordering.
fn holds<T: PartialOrd + ?Sized>(op: Op, left: &T, right: &T) -> bool {
    match op {
        Op::Eq => left == right,
        Op::Ne => left != right,
        Op::Gt => left > right,
        Op::Ge => left >= right,
        Op::Lt => left < right,
        Op::Le => left <= right,
    }
}

/// A condition as the grammar builds it, over some kind of comparison `L`.
#[derive(Clone, Debug)]
enum Tree<L> {
    Leaf(L),
    Not(Box<Tree<L>>),
    All(Vec<Tree<L>>),
    Any(Vec<Tree<L>>),
}

/// Trees at most five operators deep; with the parentheses the printer may
/// add, far inside the parser's nesting limit.
fn tree<L: Clone + std::fmt::Debug + 'static>(
    leaf: impl Strategy<Value = L> + 'static,
) -> impl Strategy<Value = Tree<L>> {
    leaf.prop_map(Tree::Leaf).prop_recursive(5, 32, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| Tree::Not(Box::new(t))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Tree::All),
            prop::collection::vec(inner, 2..4).prop_map(Tree::Any),
        ]
    })
}

/// Writes a condition with the spacing and optional parentheses that
/// `choices` dictate, so one tree can be spelled many ways.
struct Printer {
    out: String,
    choices: Vec<u8>,
    next: usize,
}

impl Printer {
    fn new(choices: Vec<u8>) -> Printer {
        Printer { out: String::new(), choices, next: 0 }
    }

    fn choice(&mut self) -> u8 {
        let c = self.choices.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        c
    }

    fn gap(&mut self) {
        const GAPS: [&str; 6] = ["", " ", "  ", "\t", "\n", "\r\n"];
        let gap = GAPS[usize::from(self.choice()) % GAPS.len()];
        self.out.push_str(gap);
    }

    /// A token, kept apart from a `!` before it when it starts with `=`
    /// (`!==` is refused as ambiguous, `! ==` is the negated direct form).
    fn token(&mut self, token: &str) {
        if self.out.ends_with('!') && token.starts_with('=') {
            self.out.push(' ');
        }
        self.out.push_str(token);
    }

    fn tree<L>(&mut self, tree: &Tree<L>, leaf: &dyn Fn(&L, &mut Printer)) {
        let extra_parens = self.choice() % 4 == 0;
        if extra_parens {
            self.token("(");
            self.gap();
        }
        match tree {
            Tree::Leaf(l) => leaf(l, self),
            Tree::Not(inner) => {
                self.token("!");
                self.gap();
                self.grouped(inner, matches!(**inner, Tree::All(_) | Tree::Any(_)), leaf);
            }
            Tree::All(parts) => self.chain(parts, "&&", |t| matches!(t, Tree::Any(_)), leaf),
            Tree::Any(parts) => self.chain(parts, "||", |_| false, leaf),
        }
        if extra_parens {
            self.gap();
            self.token(")");
        }
    }

    fn chain<L>(
        &mut self,
        parts: &[Tree<L>],
        join: &str,
        needs_parens: fn(&Tree<L>) -> bool,
        leaf: &dyn Fn(&L, &mut Printer),
    ) {
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                self.gap();
                self.token(join);
                self.gap();
            }
            self.grouped(part, needs_parens(part), leaf);
        }
    }

    fn grouped<L>(&mut self, tree: &Tree<L>, parens: bool, leaf: &dyn Fn(&L, &mut Printer)) {
        if parens {
            self.token("(");
            self.gap();
        }
        self.tree(tree, leaf);
        if parens {
            self.gap();
            self.token(")");
        }
    }

    /// `segments` as a path, each segment in a notation `choices` pick among
    /// those that can spell it.
    fn path(&mut self, segments: &[Segment]) {
        let mut text = String::from("$");
        for segment in segments {
            let pick = self.choice();
            match segment {
                Segment::Name(name) if is_dot_name(name) && pick % 3 == 0 => text.push_str(&format!(".{name}")),
                Segment::Name(name) if pick % 3 == 1 => text.push_str(&format!("[{}]", single_quoted(name))),
                Segment::Name(name) => text.push_str(&format!("[{}]", serde_json::to_string(name).unwrap())),
                Segment::Index(i) if pick % 2 == 1 => text.push_str(&format!("[ {i} ]")),
                Segment::Index(i) => text.push_str(&format!("[{i}]")),
                // Only the dot spells it: `[0]` is an index and nothing else.
                Segment::Numeric { name, .. } => text.push_str(&format!(".{name}")),
            }
        }
        self.token(&text);
    }
}

/// A name the `.name` notation can spell: RFC 9535 `name-first name-char*`,
/// with `-` allowed after the first character.
fn is_dot_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first = |c: char| c.is_ascii_alphabetic() || c == '_' || !c.is_ascii();
    chars.next().is_some_and(first) && chars.all(|c| first(c) || c.is_ascii_digit() || c == '-')
}

/// `'name'` with RFC 9535 escapes (only `'` and `\` need one, plus controls).
fn single_quoted(name: &str) -> String {
    let mut out = String::from("'");
    for c in name.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn segment() -> impl Strategy<Value = Segment> {
    const MAX_INDEX: i64 = (1 << 53) - 1;
    let numeric = |index: i64| Segment::Numeric { index, name: index.to_string() };
    prop_oneof![
        hostile_text(8).prop_map(Segment::Name),
        prop::sample::select(vec!["a", "b", "x_1", "é", "0a", "a-b", "a b", "error-rate", "a-", "0"])
            .prop_map(|n| Segment::Name(n.into())),
        (-MAX_INDEX..=MAX_INDEX).prop_map(Segment::Index),
        (-4i64..4).prop_map(Segment::Index),
        (0..=MAX_INDEX).prop_map(numeric),
        (0i64..4).prop_map(numeric),
    ]
}

/// Any literal the grammar allows.
#[derive(Clone, Debug)]
enum Lit {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Null,
}

fn literal() -> impl Strategy<Value = Lit> {
    prop_oneof![
        any::<i64>().prop_map(Lit::Int),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Lit::Float),
        hostile_text(10).prop_map(Lit::Str),
        (-3i64..3).prop_map(|n| Lit::Str(n.to_string())),
        "[a-zA-Z_é][a-zA-Z0-9_.é-]{0,6}".prop_map(Lit::Str),
        prop::sample::select(vec!["true", "True", "null", "and", "critical", "a.b-c"]).prop_map(|w| Lit::Str(w.into())),
        any::<bool>().prop_map(Lit::Bool),
        Just(Lit::Null),
    ]
}

/// A string the grammar can also write unquoted: a word, and not one of
/// the words that mean something else.
fn is_bare_word(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !matches!(text, "true" | "false" | "null" | "and" | "AND" | "or" | "OR" | "not" | "NOT")
}

/// The literal as written; `bare` leaves the quotes off a string that can
/// do without them.
fn print_literal(lit: &Lit, bare: bool) -> String {
    match lit {
        Lit::Int(n) => n.to_string(),
        Lit::Float(f) => serde_json::to_string(f).unwrap(),
        Lit::Str(s) if bare && is_bare_word(s) => s.clone(),
        Lit::Str(s) => serde_json::to_string(s).unwrap(),
        Lit::Bool(b) => b.to_string(),
        Lit::Null => "null".into(),
    }
}

/// One comparison: a path (or none, the direct form), an operator, a literal.
#[derive(Clone, Debug)]
struct Comparison {
    path: Option<Vec<Segment>>,
    op: Op,
    literal: Lit,
}

fn comparison() -> impl Strategy<Value = Comparison> {
    let path = prop::option::weighted(0.8, prop::collection::vec(segment(), 0..4));
    (path, op(), literal()).prop_map(|(path, op, literal)| Comparison { path, op, literal })
}

fn print_comparison(c: &Comparison, p: &mut Printer) {
    if let Some(path) = &c.path {
        p.path(path);
        p.gap();
    }
    p.token(c.op.as_str());
    p.gap();
    let bare = p.choice() % 2 == 0;
    p.token(&print_literal(&c.literal, bare));
}

fn print(tree: &Tree<Comparison>, choices: Vec<u8>) -> String {
    let mut printer = Printer::new(choices);
    printer.gap();
    printer.tree(tree, &print_comparison);
    printer.gap();
    printer.out
}

fn choices() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        4 => json_value(4, 24).prop_map(Payload::Json),
        1 => hostile_text(12).prop_map(Payload::Text),
    ]
}

/// Parses, then evaluates both ways: `check` must agree with `matches`.
#[track_caller]
fn verdict(condition: &Condition, payload: &Payload) -> bool {
    let matched = condition.matches(payload);
    let checked = condition.check(payload);
    assert_eq!(matched, checked.is_ok(), "`{}` on {payload:?}: check says {checked:?}", condition.source());
    matched
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_text_parses_or_is_refused_at_a_real_offset(
        text in prop_oneof![hostile_text(60), token_soup(PIECES, 24)],
        payload in payload(),
    ) {
        match Condition::parse(&text) {
            Ok(condition) => {
                prop_assert_eq!(condition.source(), text.as_str());
                verdict(&condition, &payload);
            }
            Err(e) => {
                prop_assert!(e.offset <= text.len(), "{e} is past the end of {text:?}");
                prop_assert!(text.is_char_boundary(e.offset), "{e} is inside a character of {text:?}");
                prop_assert!(!e.reason.is_empty());
            }
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Blank text is no condition: it holds for every payload.
    #[test]
    fn blank_text_holds_for_every_payload(
        text in prop::collection::vec(prop::sample::select(vec![' ', '\t', '\n', '\r']), 0..8),
        payload in payload(),
    ) {
        let text: String = text.into_iter().collect();
        let condition = Condition::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert!(condition.is_unconditional());
        prop_assert!(verdict(&condition, &payload));
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn every_condition_the_grammar_writes_parses_and_spelling_never_changes_a_verdict(
        tree in tree(comparison()),
        first in choices(),
        second in choices(),
        payloads in prop::collection::vec(payload(), 1..4),
    ) {
        let (a, b) = (print(&tree, first), print(&tree, second));
        let a = Condition::parse(&a).map_err(|e| TestCaseError::fail(format!("{a:?}: {e}")))?;
        let b = Condition::parse(&b).map_err(|e| TestCaseError::fail(format!("{b:?}: {e}")))?;
        for payload in &payloads {
            let (va, vb) = (verdict(&a, payload), verdict(&b, payload));
            prop_assert_eq!(va, vb, "{:?} vs {:?} on {:?}", a.source(), b.source(), payload);
        }
    }

    /// Near misses of valid conditions reach the parser's error paths that
    /// random text rarely gets past the first token to.
    #[test]
    fn a_valid_condition_with_a_few_edits_parses_or_is_refused_cleanly(
        tree in tree(comparison()),
        choices in choices(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(PIECES)), 1..4),
        payload in payload(),
    ) {
        let mut text = print(&tree, choices);
        for (at, kind, piece) in edits {
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            let start = boundaries[at.index(boundaries.len())];
            let end = boundaries.iter().copied().find(|b| *b > start).unwrap_or(start);
            match kind {
                0 => text.replace_range(start..end, ""),
                1 => text.insert_str(start, piece),
                _ => text.replace_range(start..end, piece),
            }
        }
        match Condition::parse(&text) {
            Ok(condition) => {
                verdict(&condition, &payload);
            }
            Err(e) => {
                prop_assert!(e.offset <= text.len() && text.is_char_boundary(e.offset), "{e} in {text:?}");
            }
        }
    }

    #[test]
    fn paths_parse_to_their_segments_in_every_notation(
        segments in prop::collection::vec(segment(), 0..6),
        choices in choices(),
    ) {
        let mut printer = Printer::new(choices);
        printer.path(&segments);
        let text = printer.out;
        let (parsed, end) = path::parse(&text, 0).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(&parsed.segments, &segments, "{:?}", text);
        prop_assert_eq!(end, text.len());
    }

    /// Walking a path finds the value put at the end of it, and nothing in
    /// a payload without it.
    #[test]
    fn a_path_finds_what_was_put_at_it(
        segments in prop::collection::vec(segment().prop_filter("small index", |s| match s {
            Segment::Index(i) | Segment::Numeric { index: i, .. } => (-4..4).contains(i),
            Segment::Name(_) => true,
        }), 1..6),
        in_objects in prop::collection::vec(any::<bool>(), 6),
        leaf in json_value(2, 8),
        choices in choices(),
    ) {
        let mut printer = Printer::new(choices);
        printer.path(&segments);
        let (path, _) = path::parse(&printer.out, 0).unwrap();
        let array_with = |i: i64, inner: Value| {
            let len = if i >= 0 { i + 1 } else { -i };
            let at = if i >= 0 { i } else { 0 };
            Value::Array((0..len).map(|k| if k == at { inner.clone() } else { json!(k) }).collect())
        };
        // A numeric dot segment finds the value in an object under its
        // digits and in an array at that index alike.
        let root = segments.iter().zip(&in_objects).rev().fold(leaf.clone(), |inner, (segment, in_object)| {
            match segment {
                Segment::Name(name) => Value::Object(Map::from_iter([(name.clone(), inner)])),
                Segment::Numeric { name, .. } if *in_object => Value::Object(Map::from_iter([(name.clone(), inner)])),
                Segment::Index(i) | Segment::Numeric { index: i, .. } => array_with(*i, inner),
            }
        });
        prop_assert_eq!(path.walk(&root), Some(&leaf));
        prop_assert_eq!(path.walk(&Value::Null), None);
    }
}

/// What a key of the numeric model's payload holds.
#[derive(Clone, Debug)]
enum Held {
    Missing,
    Int(i32),
    /// `n + 0.5`, a float.
    Half(i32),
    /// The number as a JSON string, which compares as a number.
    NumberText(i32),
    /// A string that is not a number.
    Word(String),
    Bool(bool),
    Null,
    List,
}

impl Held {
    fn json(&self) -> Option<Value> {
        Some(match self {
            Held::Missing => return None,
            Held::Int(n) => json!(n),
            Held::Half(n) => json!(f64::from(*n) + 0.5),
            Held::NumberText(n) => json!(n.to_string()),
            Held::Word(w) => json!(w),
            Held::Bool(b) => json!(b),
            Held::Null => Value::Null,
            Held::List => json!([1]),
        })
    }
}

fn held() -> impl Strategy<Value = Held> {
    let small = -20i32..20;
    prop_oneof![
        Just(Held::Missing),
        small.clone().prop_map(Held::Int),
        small.clone().prop_map(Held::Half),
        small.prop_map(Held::NumberText),
        "[a-z]{0,3}".prop_map(Held::Word),
        any::<bool>().prop_map(Held::Bool),
        Just(Held::Null),
        Just(Held::List),
    ]
}

/// `$.<key> op <number>`, the number written in one of several notations.
#[derive(Clone, Debug)]
struct NumericComparison {
    key: usize,
    op: Op,
    number: i32,
    notation: u8,
}

const KEYS: [&str; 3] = ["a", "b", "c"];

fn numeric_comparison() -> impl Strategy<Value = NumericComparison> {
    (0..KEYS.len(), op(), -20i32..20, 0u8..5).prop_map(|(key, op, number, notation)| NumericComparison {
        key,
        op,
        number,
        notation,
    })
}

fn print_numeric(c: &NumericComparison, p: &mut Printer) {
    let n = c.number;
    let literal = match c.notation {
        0 => n.to_string(),
        1 => format!("{n}.0"),
        2 => format!("{n}e0"),
        3 => format!("{}e-1", n * 10),
        _ => format!("\"{n}\""),
    };
    p.path(&[Segment::Name(KEYS[c.key].into())]);
    p.gap();
    p.token(c.op.as_str());
    p.gap();
    p.token(&literal);
}

/// The documented semantics, for this small language, written plainly.
fn model(tree: &Tree<NumericComparison>, held: &[Held]) -> bool {
    match tree {
        Tree::Leaf(c) => {
            let quoted = c.notation >= 4;
            match &held[c.key] {
                Held::Int(v) | Held::NumberText(v) => holds(c.op, &f64::from(*v), &f64::from(c.number)),
                Held::Half(v) => holds(c.op, &(f64::from(*v) + 0.5), &f64::from(c.number)),
                Held::Word(w) if quoted => holds(c.op, w.as_str(), c.number.to_string().as_str()),
                // A boolean or null against a string compares as its JSON text.
                Held::Bool(b) if quoted => holds(c.op, b.to_string().as_str(), c.number.to_string().as_str()),
                Held::Null if quoted => holds(c.op, "null", c.number.to_string().as_str()),
                _ => false,
            }
        }
        Tree::Not(inner) => !model(inner, held),
        Tree::All(parts) => parts.iter().all(|p| model(p, held)),
        Tree::Any(parts) => parts.iter().any(|p| model(p, held)),
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn numeric_conditions_agree_with_a_reference_model(
        tree in tree(numeric_comparison()),
        choices in choices(),
        held in prop::collection::vec(held(), KEYS.len()),
    ) {
        let mut printer = Printer::new(choices);
        printer.tree(&tree, &print_numeric);
        let condition =
            Condition::parse(&printer.out).map_err(|e| TestCaseError::fail(format!("{:?}: {e}", printer.out)))?;
        let object: Map<String, Value> =
            KEYS.iter().zip(&held).filter_map(|(k, h)| Some((k.to_string(), h.json()?))).collect();
        let payload = Payload::Json(Value::Object(object));
        let got = verdict(&condition, &payload);
        prop_assert_eq!(got, model(&tree, &held), "{:?} on {:?}", condition.source(), payload);
    }

    /// Each `(` and each `!` is one level; up to the limit everything parses,
    /// past it the parser says so, and no depth reaches the stack's end.
    #[test]
    fn nesting_is_counted_exactly_and_never_overflows(
        levels in prop::collection::vec(any::<bool>(), 0..2000),
        close in any::<bool>(),
    ) {
        let opens = levels.iter().filter(|open| **open).count();
        let mut text: String = levels.iter().map(|open| if *open { '(' } else { '!' }).collect();
        text.push_str("$.a == 1");
        if close {
            text.push_str(&")".repeat(opens));
        }
        let balanced = close || opens == 0;
        match Condition::parse(&text) {
            Ok(condition) => {
                prop_assert!(levels.len() <= 64 && balanced, "{} levels parsed", levels.len());
                verdict(&condition, &Payload::Json(json!({"a": 1})));
            }
            Err(e) if levels.len() > 64 => prop_assert!(e.reason.contains("nested more than 64 levels"), "{e}"),
            Err(e) => prop_assert!(!balanced && e.reason.contains("unbalanced"), "{e}"),
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Numbers in text are exactly JSON's numbers.
    #[test]
    fn numeric_strings_are_exactly_json_numbers(
        text in prop_oneof![
            token_soup(&["-", "0", "1", "9", "00", ".", "e", "E", "+", "5", "1e400", "x", " "], 8),
            hostile_text(8),
        ],
    ) {
        let ours = Num::parse_exact(&text);
        let json = serde_json::from_str::<Value>(&text).ok().filter(Value::is_number);
        let json_exact = json.is_some() && !text.starts_with(|c: char| c.is_ascii_whitespace())
            && !text.ends_with(|c: char| c.is_ascii_whitespace());
        prop_assert_eq!(ours.is_some(), json_exact, "{:?}: ours {:?}, JSON {:?}", text, ours, json);
        if let (Some(ours), Some(Value::Number(n))) = (ours, json) {
            prop_assert_eq!(ours.compare(Num::from_json(&n).unwrap()), Some(Ordering::Equal), "{:?}", text);
        }
    }

    #[test]
    fn integers_compare_exactly_and_floats_as_floats(
        a in any::<i64>(),
        b in any::<i64>(),
        x in any::<f64>(),
        y in any::<f64>(),
    ) {
        let int = |n: i64| Num::parse_exact(&n.to_string()).unwrap();
        prop_assert_eq!(int(a).compare(int(b)), Some(a.cmp(&b)));
        if x.is_finite() && y.is_finite() {
            let (xs, ys) = (serde_json::to_string(&x).unwrap(), serde_json::to_string(&y).unwrap());
            let (nx, ny) = (Num::parse_exact(&xs).unwrap(), Num::parse_exact(&ys).unwrap());
            prop_assert_eq!(nx.compare(ny), x.partial_cmp(&y), "{} vs {}", xs, ys);
        }
    }
}

#[test]
fn a_million_levels_of_nesting_are_refused_without_overflowing() {
    for text in ["(".repeat(1_000_000), "!".repeat(1_000_000), "(!".repeat(500_000)] {
        let error = Condition::parse(&text).expect_err("far too deep");
        assert!(error.reason.contains("nested more than 64 levels"), "{error}");
    }
}

/// The deepest condition allowed parses and evaluates on a thread with a
/// small stack (tokio's workers have 2 MiB; this gives a quarter of that).
#[test]
fn the_deepest_allowed_condition_fits_a_small_stack() {
    let text = format!("{}$.a == 1{}", "(!".repeat(32), ")".repeat(32));
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let condition = Condition::parse(&text).unwrap();
            let payload = Payload::Json(json!({"a": 1}));
            assert!(condition.matches(&payload));
            assert!(condition.check(&payload).is_ok());
        })
        .unwrap()
        .join()
        .unwrap();
}
