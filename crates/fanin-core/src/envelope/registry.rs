//! The registries (tools, capabilities, usecases) an execution envelope
//! carries so the Executor can resolve step refs
//! (docs/configuration.md#registries): what one category holds as of a load
//! (`CategoryRegistry`), all of them at one moment
//! (`RegistrySnapshot`, what envelopes read), how a registry travels in an
//! envelope (`document`) and what is worth telling the operator when a
//! category changes (`changes`). Pure: reading the local files and Google
//! Drive, and the refresh, are the runtime's `registries` module.
//!
//! Each category has a local copy, `<registries dir>/<category>.json`, that
//! must be valid at start, and may have a Google Drive copy named by
//! `REGISTRY_<CATEGORY>_FILE_ID`. The Drive copy is used when its download
//! succeeds and holds a JSON object or array; anything else falls back to
//! the local copy for that category. Envelopes carry what was resolved in
//! `payload.registryFiles` and the local copies in
//! `payload.options.fallbackRegistry`, both as Smart Office's registry
//! loader writes them ([`document`]): filed under the category, a registry
//! kept as a JSON array (Smart Office's own `registries/*.json`) wrapped in
//! an object keyed by it. Nothing names where a copy came from: the file
//! paths of this machine stay here, and `/ready` tells which copy is used.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Tools,
    Capabilities,
    Usecases,
}

impl Category {
    pub const ALL: [Category; 3] = [Category::Tools, Category::Capabilities, Category::Usecases];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Tools => "tools",
            Category::Capabilities => "capabilities",
            Category::Usecases => "usecases",
        }
    }

    /// The local file, relative to the registries directory.
    pub fn file_name(self) -> String {
        format!("{}.json", self.as_str())
    }

    /// The environment variable holding the Drive file id.
    pub fn file_id_var(self) -> &'static str {
        match self {
            Category::Tools => "REGISTRY_TOOLS_FILE_ID",
            Category::Capabilities => "REGISTRY_CAPABILITIES_FILE_ID",
            Category::Usecases => "REGISTRY_USECASES_FILE_ID",
        }
    }
}

/// Which copy of a category envelopes carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Drive,
    Local,
}

/// One category as of the last load or refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct CategoryRegistry {
    pub category: Category,
    pub local_path: PathBuf,
    /// The last local copy that read as valid.
    pub local: Value,
    /// Why the last re-read of the local file failed (the copy above is older).
    pub local_error: Option<String>,
    pub file_id: Option<String>,
    /// The Drive copy, when the last download succeeded.
    pub drive: Option<Value>,
    /// Why the last download failed, when a file id is set.
    pub drive_error: Option<String>,
}

impl CategoryRegistry {
    pub fn origin(&self) -> Origin {
        if self.drive.is_some() {
            Origin::Drive
        } else {
            Origin::Local
        }
    }

    /// The copy envelopes carry as resolved.
    pub fn resolved(&self) -> &Value {
        self.drive.as_ref().unwrap_or(&self.local)
    }

    /// What the Executor files the content under: the category, as Smart
    /// Office's registry loader names it (for a Drive copy too).
    pub fn reference(&self) -> &'static str {
        self.category.as_str()
    }
}

/// A registry as envelopes carry it: an object as it is, an array wrapped
/// as `{"<category>": [...]}`, which is how Smart Office's registry loader
/// hands its array registries to the Executor and what the contract takes
/// (a registry's content must be an object).
pub fn document(category: Category, registry: &Value) -> Value {
    match registry {
        Value::Array(_) => json!({ category.as_str(): registry }),
        _ => registry.clone(),
    }
}

/// What `/ready` shows per category.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CategoryStatus {
    pub category: Category,
    /// `drive` or `local`.
    pub copy: Origin,
    pub file_id: Option<String>,
    pub last_error: Option<String>,
}

/// All categories at one moment, in [`Category::ALL`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrySnapshot {
    pub categories: Vec<CategoryRegistry>,
}

impl RegistrySnapshot {
    pub fn get(&self, category: Category) -> Option<&CategoryRegistry> {
        self.categories.iter().find(|c| c.category == category)
    }

    /// `payload.registryFiles`: `[{category, ref, content}]`, as resolved.
    pub fn registry_files(&self) -> Value {
        let files = self.categories.iter().map(
            |c| json!({"category": c.category, "ref": c.reference(), "content": document(c.category, c.resolved())}),
        );
        Value::Array(files.collect())
    }

    /// `payload.options.fallbackRegistry`: the local copies by category.
    pub fn fallback_registry(&self) -> Value {
        let copies = self.categories.iter().map(|c| (c.category.as_str().to_string(), document(c.category, &c.local)));
        Value::Object(copies.collect::<Map<_, _>>())
    }

    pub fn status(&self) -> Vec<CategoryStatus> {
        self.categories
            .iter()
            .map(|c| {
                let errors: Vec<&str> =
                    [&c.drive_error, &c.local_error].into_iter().flatten().map(String::as_str).collect();
                CategoryStatus {
                    category: c.category,
                    copy: c.origin(),
                    file_id: c.file_id.clone(),
                    last_error: (!errors.is_empty()).then(|| errors.join("; ")),
                }
            })
            .collect()
    }
}

/// A registry document: a JSON object or array. An empty body is its own
/// reason, since Drive answers an empty file with 200.
pub fn parse_registry(bytes: &[u8]) -> Result<Value, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("empty".into());
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    match value {
        Value::Object(_) | Value::Array(_) => Ok(value),
        other => Err(format!("must be a JSON object or array, found {}", json_type(&other))),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Something worth telling the operator about a category; the runtime logs it.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    Info(String),
    Warn(String),
}

/// What is worth saying about a category, given what was said before: only
/// changes (a new failure, a different failure, a recovery), so a Drive that
/// stays down is one warning, not one per refresh.
pub fn changes(before: Option<&CategoryRegistry>, now: &CategoryRegistry) -> Vec<Notice> {
    let mut notices = Vec::new();
    let name = now.category.as_str();
    let local = now.local_path.display();
    let drive_state = |c: &CategoryRegistry| (c.origin(), c.file_id.clone(), c.drive_error.clone());
    if before.map(drive_state) != Some(drive_state(now)) {
        notices.push(match (&now.file_id, &now.drive_error) {
            (Some(id), None) => Notice::Info(format!("registry {name}: using the Google Drive copy (file {id})")),
            (Some(id), Some(reason)) => Notice::Warn(format!(
                "registry {name}: Google Drive file {id} unusable ({reason}); using the local copy {local}"
            )),
            (None, _) => Notice::Warn(format!(
                "registry {name}: {} is not set; using the local copy {local}",
                now.category.file_id_var()
            )),
        });
    }
    let local_error_before = before.and_then(|b| b.local_error.as_ref());
    if local_error_before != now.local_error.as_ref() {
        notices.push(match &now.local_error {
            Some(reason) => Notice::Warn(format!("{local}: {reason}; keeping the copy read before")),
            None => Notice::Info(format!("{local}: valid again")),
        });
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file_id: Option<&str>, drive_error: Option<&str>, local_error: Option<&str>) -> CategoryRegistry {
        CategoryRegistry {
            category: Category::Tools,
            local_path: PathBuf::from("registries/tools.json"),
            local: json!({}),
            local_error: local_error.map(str::to_string),
            file_id: file_id.map(str::to_string),
            drive: (file_id.is_some() && drive_error.is_none()).then(|| json!({})),
            drive_error: drive_error.map(str::to_string),
        }
    }

    #[test]
    fn only_changes_are_logged() {
        let warn = |s: &str| Notice::Warn(s.to_string());
        let info = |s: &str| Notice::Info(s.to_string());
        let down = entry(Some("f1"), Some("HTTP 503 Service Unavailable"), None);
        let other_failure = entry(Some("f1"), Some("no answer within 10s"), None);
        let up = entry(Some("f1"), None, None);
        let no_id = entry(None, None, None);
        let local_broken = entry(None, None, Some("not JSON: x"));
        let cases: [(Option<&CategoryRegistry>, &CategoryRegistry, Vec<Notice>); 9] = [
            (None, &up, vec![info("registry tools: using the Google Drive copy (file f1)")]),
            (
                None,
                &down,
                vec![warn("registry tools: Google Drive file f1 unusable (HTTP 503 Service Unavailable); using the local copy registries/tools.json")],
            ),
            (Some(&down), &down, vec![]),
            (
                Some(&down),
                &other_failure,
                vec![warn("registry tools: Google Drive file f1 unusable (no answer within 10s); using the local copy registries/tools.json")],
            ),
            (Some(&down), &up, vec![info("registry tools: using the Google Drive copy (file f1)")]),
            (Some(&up), &up, vec![]),
            (None, &no_id, vec![warn("registry tools: REGISTRY_TOOLS_FILE_ID is not set; using the local copy registries/tools.json")]),
            (Some(&no_id), &local_broken, vec![warn("registries/tools.json: not JSON: x; keeping the copy read before")]),
            (Some(&local_broken), &no_id, vec![info("registries/tools.json: valid again")]),
        ];
        for (i, (before, now, expected)) in cases.into_iter().enumerate() {
            assert_eq!(changes(before, now), expected, "case {i}");
        }
    }
}
