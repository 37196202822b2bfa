//! A Drive v3 change resource as fanin dispatches it: which kind of change
//! it is, the payload (`{change, file: {id, name, mimeType, modifiedTime,
//! parents, trashed}, time}`) and the dedupe key. Pure.
//!
//! Drive's changes feed says that a file changed, not how. fanin names the
//! kind from the resource: `removed` when Drive says the file is gone (or
//! no longer visible), `trashed` when it is in the trash, `created` when it
//! was never modified after its creation (`modifiedTime == createdTime`),
//! else `modified`. Changes of shared drives themselves (`changeType =
//! "drive"`) are not file changes and are skipped.

use serde_json::{json, Map, Value};

use crate::sop::DriveChange;

/// A change worth dispatching.
#[derive(Debug, Clone, PartialEq)]
pub struct FileChange {
    pub kind: DriveChange,
    pub payload: Value,
    /// File id, modifiedTime and kind: the same change read twice (a page
    /// read again after a crash) is one event.
    pub dedupe_key: String,
}

/// The fields of a file fanin asks Drive for and passes on.
pub const FILE_FIELDS: &str = "id,name,mimeType,modifiedTime,createdTime,parents,trashed";

/// `change` as Drive sent it, unless it is not a file's change or its file
/// is outside `folder_id` (empty: any folder). A removed file has no
/// parents to tell, so with a folder filter it is not dispatched.
pub fn file_change(change: &Value, folder_id: &str) -> Option<FileChange> {
    if change.get("changeType").and_then(Value::as_str).is_some_and(|t| t != "file") {
        return None;
    }
    let file_id = change.get("fileId").and_then(Value::as_str)?;
    let removed = change.get("removed").and_then(Value::as_bool).unwrap_or(false);
    let file = change.get("file").filter(|f| f.is_object());
    let parents = file.and_then(|f| f.get("parents")).cloned().unwrap_or_else(|| json!([]));
    if !folder_id.is_empty() && !parents.as_array().is_some_and(|p| p.iter().any(|p| p.as_str() == Some(folder_id))) {
        return None;
    }
    let text = |name: &str| file.and_then(|f| f.get(name)).and_then(Value::as_str);
    let trashed = file.and_then(|f| f.get("trashed")).and_then(Value::as_bool).unwrap_or(false);
    let kind = match (removed || file.is_none(), trashed) {
        (true, _) => DriveChange::Removed,
        (false, true) => DriveChange::Trashed,
        _ if text("createdTime").is_some() && text("createdTime") == text("modifiedTime") => DriveChange::Created,
        _ => DriveChange::Modified,
    };
    let mut out = Map::new();
    out.insert("id".into(), json!(file_id));
    for name in ["name", "mimeType", "modifiedTime"] {
        if let Some(value) = text(name) {
            out.insert(name.into(), json!(value));
        }
    }
    out.insert("parents".into(), parents);
    out.insert("trashed".into(), json!(trashed));
    let modified = text("modifiedTime").or_else(|| change.get("time").and_then(Value::as_str)).unwrap_or("");
    Some(FileChange {
        kind,
        dedupe_key: format!("{file_id}/{modified}/{}", kind.as_str()),
        payload: json!({"change": kind.as_str(), "file": out, "time": change.get("time").cloned().unwrap_or(Value::Null)}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(file: Value) -> Value {
        json!({"kind": "drive#change", "changeType": "file", "removed": false, "fileId": "f1",
               "time": "2026-12-01T10:00:01.000Z", "file": file})
    }

    fn file(created: &str, modified: &str, trashed: bool) -> Value {
        json!({"id": "f1", "name": "report.pdf", "mimeType": "application/pdf", "createdTime": created,
               "modifiedTime": modified, "parents": ["F1"], "trashed": trashed})
    }

    #[test]
    fn the_kind_is_read_from_the_resource() {
        let t0 = "2026-12-01T10:00:00.000Z";
        let t1 = "2026-12-01T11:00:00.000Z";
        let kind = |c: Value| file_change(&c, "").unwrap().kind;
        assert_eq!(kind(change(file(t0, t0, false))), DriveChange::Created);
        assert_eq!(kind(change(file(t0, t1, false))), DriveChange::Modified);
        assert_eq!(kind(change(file(t0, t1, true))), DriveChange::Trashed);
        let removed = json!({"changeType": "file", "removed": true, "fileId": "f1", "time": t1});
        assert_eq!(kind(removed), DriveChange::Removed);
    }

    #[test]
    fn the_payload_has_the_file_and_the_key_names_the_change() {
        let c = file_change(&change(file("a", "b", false)), "").unwrap();
        assert_eq!(
            c.payload,
            json!({"change": "modified", "time": "2026-12-01T10:00:01.000Z",
                   "file": {"id": "f1", "name": "report.pdf", "mimeType": "application/pdf", "modifiedTime": "b",
                            "parents": ["F1"], "trashed": false}})
        );
        assert_eq!(c.dedupe_key, "f1/b/modified");
    }

    #[test]
    fn folder_filter_and_drive_changes_skip() {
        assert!(file_change(&change(file("a", "a", false)), "F1").is_some());
        assert!(file_change(&change(file("a", "a", false)), "F2").is_none());
        let removed = json!({"changeType": "file", "removed": true, "fileId": "f1"});
        assert!(file_change(&removed, "F1").is_none(), "a removed file's folder cannot be told");
        assert!(file_change(&json!({"changeType": "drive", "driveId": "d1"}), "").is_none());
    }
}
