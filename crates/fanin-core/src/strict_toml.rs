//! Strict TOML reading shared by `config.toml` and `SOP.toml`.
//!
//! serde stops at the first problem; an operator fixing a file wants all of
//! them at once. So a document is deserialized repeatedly: each failure is
//! recorded with its full dotted key (from `serde_path_to_error`), the
//! offending key is removed, and deserialization is tried again. The key
//! names come from the serde types themselves (`deny_unknown_fields`), never
//! from a second hand-written list. Lines come from the spanned parse tree.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::de::{DeTable, DeValue};

/// Enough rounds for any realistic file; a bound so a removal that does not
/// make progress can never loop forever.
const MAX_ROUNDS: usize = 256;

/// One problem in a TOML document. `key` is dotted (`gateway.port`,
/// `triggers[1].path`); empty for a syntax error, which has no key.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TomlProblem {
    pub key: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

impl TomlProblem {
    /// The reason with its location, e.g. `unknown key (line 4)`.
    pub fn reason_with_location(&self) -> String {
        match (self.line, self.column) {
            (Some(line), Some(column)) => format!("line {line}, column {column}: {}", self.reason),
            (Some(line), None) => format!("{} (line {line})", self.reason),
            _ => self.reason.clone(),
        }
    }
}

/// The line of every key in a document, by dotted key.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyLines(HashMap<String, usize>);

impl KeyLines {
    /// The line of `key`, else of its nearest ancestor that appears in the
    /// file (a missing key is reported at its table).
    pub fn line_of(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(line) = self.0.get(key) {
                return Some(*line);
            }
            let cut = key.rfind(['.', '['])?;
            key = &key[..cut];
        }
    }
}

/// What reading a document found: the value (when, after dropping every
/// offending key, the rest deserializes), every problem, and key lines.
pub(crate) struct Strict<T> {
    pub value: Option<T>,
    pub problems: Vec<TomlProblem>,
    pub lines: KeyLines,
}

/// Parses and deserializes `text`, collecting every problem.
pub(crate) fn read_strict<T: DeserializeOwned>(text: &str) -> Strict<T> {
    let (tree, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        // Recovery after an error often reports follow-on errors on the same
        // line; the first one per line is the one worth reading.
        let mut problems: Vec<TomlProblem> = Vec::new();
        for problem in syntax_errors.iter().map(|e| syntax_problem(text, e)) {
            if problem.line.is_none() || !problems.iter().any(|p| p.line == problem.line) {
                problems.push(problem);
            }
        }
        return Strict { value: None, problems, lines: KeyLines::default() };
    }
    let mut lines = KeyLines::default();
    collect_lines(text, tree.get_ref(), "", &mut lines);

    let table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => return Strict { value: None, problems: vec![syntax_problem(text, &e)], lines },
    };

    let (value, mut problems) = deserialize_table::<T>(table);
    for problem in &mut problems {
        problem.line = lines.line_of(&problem.key);
    }
    Strict { value, problems, lines }
}

/// Deserializes an already parsed table, collecting every problem (keys are
/// relative to the table; no lines). Used for a part of a document whose
/// type is only known after reading another key (a trigger's `type`).
pub(crate) fn deserialize_table<T: DeserializeOwned>(mut table: toml::Table) -> (Option<T>, Vec<TomlProblem>) {
    let mut problems = Vec::new();
    for _ in 0..MAX_ROUNDS {
        match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
            Ok(v) => return (Some(v), problems),
            Err(e) => {
                let segments: Vec<Segment> = e.path().iter().cloned().collect();
                let (problem, remove) = classify(&segments, e.inner().message());
                problems.push(problem);
                if !remove_at(&mut table, &remove) {
                    break;
                }
            }
        }
    }
    (None, problems)
}

/// Turns a serde failure into a problem, and says which key to drop so the
/// next round gets past it.
fn classify(segments: &[Segment], message: &str) -> (TomlProblem, Vec<Segment>) {
    let key = render(segments);
    let problem = |key: String, reason: String| TomlProblem { key, line: None, column: None, reason };
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // The path already ends with the unknown key itself.
        let reason = match rest.split_once(", ") {
            Some((_, "there are no fields")) => "unknown key; this table takes no keys".to_string(),
            Some((_, expected)) => format!("unknown key; {expected}"),
            None => "unknown key".to_string(),
        };
        return (problem(key, reason), segments.to_vec());
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = rest.trim_matches('`');
        let key = if key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
        return (problem(key, "required key is missing".into()), without_trailing_index(segments));
    }
    (problem(key, message.to_string()), without_trailing_index(segments))
}

/// A bad array element drops the whole array: removing one element would
/// shift the indexes of the problems still to be found in it.
fn without_trailing_index(segments: &[Segment]) -> Vec<Segment> {
    let mut remove = segments.to_vec();
    if matches!(remove.last(), Some(Segment::Seq { .. })) {
        remove.pop();
    }
    remove
}

/// A path in the same form `serde_path_to_error` prints: `a.b[0].c`.
fn render(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// Removes the value at `path`; false when there is nothing to remove (then
/// no further progress is possible).
fn remove_at(table: &mut toml::Table, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = Target::Table(table);
    for segment in parents {
        current = match (current, segment) {
            (Target::Table(t), Segment::Map { key }) => match t.get_mut(key) {
                Some(v) => Target::from_value(v),
                None => return false,
            },
            (Target::Array(a), Segment::Seq { index }) => match a.get_mut(*index) {
                Some(v) => Target::from_value(v),
                None => return false,
            },
            _ => return false,
        };
    }
    match (current, last) {
        (Target::Table(t), Segment::Map { key }) => t.remove(key).is_some(),
        (Target::Array(a), Segment::Seq { index }) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

enum Target<'a> {
    Table(&'a mut toml::Table),
    Array(&'a mut Vec<toml::Value>),
    Leaf,
}

impl<'a> Target<'a> {
    fn from_value(value: &'a mut toml::Value) -> Self {
        match value {
            toml::Value::Table(t) => Target::Table(t),
            toml::Value::Array(a) => Target::Array(a),
            _ => Target::Leaf,
        }
    }
}

fn collect_lines(text: &str, table: &DeTable<'_>, prefix: &str, out: &mut KeyLines) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        if let Some(line) = line_at(text, key.span().start) {
            out.0.entry(path.clone()).or_insert(line);
        }
        collect_value_lines(text, value.get_ref(), value.span().start, &path, out);
    }
}

fn collect_value_lines(text: &str, value: &DeValue<'_>, start: usize, path: &str, out: &mut KeyLines) {
    match value {
        DeValue::Table(t) => collect_lines(text, t, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                if let Some(line) = line_at(text, item.span().start) {
                    out.0.entry(item_path.clone()).or_insert(line);
                }
                collect_value_lines(text, item.get_ref(), item.span().start, &item_path, out);
            }
        }
        _ => {
            if let Some(line) = line_at(text, start) {
                out.0.entry(path.to_string()).or_insert(line);
            }
        }
    }
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> Option<usize> {
    let before = text.get(..offset)?;
    Some(before.matches('\n').count() + 1)
}

fn syntax_problem(text: &str, error: &toml::de::Error) -> TomlProblem {
    let (line, column) = match error.span() {
        Some(span) => {
            let line = line_at(text, span.start);
            let line_start = text.get(..span.start).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
            let column = text.get(line_start..span.start).map(|t| t.chars().count() + 1);
            (line, column)
        }
        None => (None, None),
    };
    TomlProblem { key: String::new(), line, column, reason: format!("TOML syntax error: {}", error.message()) }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Doc {
        a: Inner,
        list: Vec<Item>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        x: u8,
        y: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read through Debug only
    struct Item {
        name: String,
    }

    #[test]
    fn every_problem_is_reported_with_its_key_and_line() {
        let text = "top = 1\n[a]\nx = 300\nz = true\n\n[[list]]\nname = \"ok\"\n\n[[list]]\nnom = \"typo\"\n";
        let read = read_strict::<Doc>(text);
        assert_eq!(read.value.as_ref().map(|d| d.list.len()), Some(0), "the bad list is dropped");
        let found: Vec<(String, Option<usize>)> = read.problems.iter().map(|p| (p.key.clone(), p.line)).collect();
        assert!(found.contains(&("top".into(), Some(1))), "{found:?}");
        assert!(found.contains(&("a.x".into(), Some(3))), "{found:?}");
        assert!(found.contains(&("a.z".into(), Some(4))), "{found:?}");
        assert!(found.contains(&("list[1].nom".into(), Some(10))), "{found:?}");
        assert!(read.value.is_some(), "the rest still deserializes");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let read = read_strict::<Doc>("[a]\nx = \n");
        assert!(read.value.is_none());
        let p = &read.problems[0];
        assert_eq!(p.line, Some(2));
        assert!(p.column.is_some());
        assert!(p.reason.contains("syntax"), "{}", p.reason);
    }

    #[test]
    fn missing_fields_name_the_missing_key() {
        let read = read_strict::<Doc>("[[list]]\n");
        assert_eq!(read.problems[0].key, "list[0].name");
        assert_eq!(read.problems[0].reason, "required key is missing");
    }
}
