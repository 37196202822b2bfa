//! The registries (tools, capabilities, usecases) an execution envelope
//! carries so the Executor can resolve step refs (docs/configuration.md#registries).
//!
//! Each category has a local copy, `<registries dir>/<category>.json`, that
//! must be valid at start, and may have a Google Drive copy named by
//! `REGISTRY_<CATEGORY>_FILE_ID`. The Drive copy is used when its download
//! succeeds and holds a JSON object or array; anything else (no id, an HTTP
//! error, a timeout, an empty body, invalid JSON) falls back to the local
//! copy for that category. Envelopes carry what was resolved in
//! `payload.registryFiles` and the local copies in
//! `payload.options.fallbackRegistry`, both as Smart Office's registry
//! loader writes them ([`document`]): filed under the category, a registry
//! kept as a JSON array (Smart Office's own `registries/*.json`) wrapped in
//! an object keyed by it. Nothing names where a copy came from: the file
//! paths of this machine stay here, and `/ready` tells which copy is used.
//!
//! Everything is loaded at start and refreshed in the background; events
//! only ever read an `Arc` snapshot, so no event waits on Drive. A failure
//! is logged when it starts or changes, not on every refresh. A local file
//! that turns unreadable after start keeps the copy read before.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::Config;

/// How long one Drive download may take before the local copy is used.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The environment variables the registries read, captured once at start so
/// that tests pass their own instead of changing the process environment.
/// Empty values count as unset.
#[derive(Clone, Default)]
pub struct RegistryEnv {
    pub tools_file_id: Option<String>,
    pub capabilities_file_id: Option<String>,
    pub usecases_file_id: Option<String>,
    /// `GOOGLE_DRIVE_TOKEN`, sent as a bearer token.
    pub drive_token: Option<String>,
}

impl RegistryEnv {
    pub const TOKEN_VAR: &'static str = "GOOGLE_DRIVE_TOKEN";

    pub fn from_process_env() -> RegistryEnv {
        let var = |name: &str| std::env::var(name).ok();
        RegistryEnv {
            tools_file_id: var(Category::Tools.file_id_var()),
            capabilities_file_id: var(Category::Capabilities.file_id_var()),
            usecases_file_id: var(Category::Usecases.file_id_var()),
            drive_token: var(Self::TOKEN_VAR),
        }
    }

    pub fn file_id(&self, category: Category) -> Option<&str> {
        let id = match category {
            Category::Tools => &self.tools_file_id,
            Category::Capabilities => &self.capabilities_file_id,
            Category::Usecases => &self.usecases_file_id,
        };
        non_empty(id)
    }

    fn drive_token(&self) -> Option<&str> {
        non_empty(&self.drive_token)
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Never prints the token.
impl fmt::Debug for RegistryEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryEnv")
            .field("tools_file_id", &self.tools_file_id)
            .field("capabilities_file_id", &self.capabilities_file_id)
            .field("usecases_file_id", &self.usecases_file_id)
            .field("drive_token", &self.drive_token().map(|_| "<set>"))
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct RegistrySettings {
    /// The directory holding tools.json, capabilities.json, usecases.json.
    pub dir: PathBuf,
    pub drive_base_url: String,
    /// Zero turns the background refresh off.
    pub refresh_every: Duration,
    pub fetch_timeout: Duration,
    pub env: RegistryEnv,
}

impl RegistrySettings {
    pub fn from_config(config: &Config, env: RegistryEnv) -> RegistrySettings {
        RegistrySettings {
            dir: config.resolve(&config.registries.dir),
            drive_base_url: config.registries.drive_base_url.clone(),
            refresh_every: Duration::from_secs(config.registries.refresh_secs),
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            env,
        }
    }
}

/// A local registry file that is missing or not a JSON object or array at
/// start: the daemon does not start.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct RegistryError {
    pub file: PathBuf,
    pub reason: String,
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

/// The live registries: a snapshot readers share, and what refreshes it.
pub struct Registries {
    settings: RegistrySettings,
    client: reqwest::Client,
    current: RwLock<Arc<RegistrySnapshot>>,
}

impl Registries {
    /// Reads the local copies (each must be a valid JSON object or array)
    /// and downloads the Drive copies that have a file id.
    pub async fn load(settings: RegistrySettings) -> Result<Registries, RegistryError> {
        let client = reqwest::Client::builder().timeout(settings.fetch_timeout).build().map_err(|e| RegistryError {
            file: settings.dir.clone(),
            reason: format!("cannot build the HTTP client for Google Drive: {e}"),
        })?;
        let mut locals = Vec::with_capacity(Category::ALL.len());
        for category in Category::ALL {
            let file = settings.dir.join(category.file_name());
            let content = read_local(&file).await.map_err(|reason| RegistryError { file, reason })?;
            locals.push(content);
        }
        let registries = Registries {
            settings,
            client,
            current: RwLock::new(Arc::new(RegistrySnapshot { categories: Vec::new() })),
        };
        let snapshot = registries.resolve(locals).await;
        registries.install(None, snapshot);
        Ok(registries)
    }

    /// What envelopes built now carry.
    pub fn snapshot(&self) -> Arc<RegistrySnapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub fn status(&self) -> Vec<CategoryStatus> {
        self.snapshot().status()
    }

    /// Re-reads the local copies (keeping the previous one where a file has
    /// turned invalid) and downloads the Drive copies again.
    pub async fn refresh(&self) {
        let previous = self.snapshot();
        let mut locals = Vec::with_capacity(Category::ALL.len());
        let mut local_errors = Vec::with_capacity(Category::ALL.len());
        for entry in &previous.categories {
            match read_local(&entry.local_path).await {
                Ok(content) => {
                    locals.push(content);
                    local_errors.push(None);
                }
                Err(reason) => {
                    locals.push(entry.local.clone());
                    local_errors.push(Some(reason));
                }
            }
        }
        let mut snapshot = self.resolve(locals).await;
        for (entry, error) in snapshot.categories.iter_mut().zip(local_errors) {
            entry.local_error = error;
        }
        self.install(Some(&previous), snapshot);
    }

    /// Refreshes every `refresh_every` until `shutdown`; `None` when the
    /// refresh is turned off (`refresh_secs = 0`).
    pub fn spawn_refresh(self: &Arc<Self>, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
        let every = self.settings.refresh_every;
        if every.is_zero() {
            tracing::info!("registries: background refresh is off (registries.refresh_secs = 0)");
            return None;
        }
        let registries = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = registries.refresh() => {}
                }
            }
        }))
    }

    /// Builds a snapshot from the given local copies (in `Category::ALL`
    /// order) and fresh Drive downloads.
    async fn resolve(&self, locals: Vec<Value>) -> RegistrySnapshot {
        let (tools, capabilities, usecases) = tokio::join!(
            self.download(Category::Tools),
            self.download(Category::Capabilities),
            self.download(Category::Usecases),
        );
        let downloads = [tools, capabilities, usecases];
        let categories = Category::ALL
            .into_iter()
            .zip(locals)
            .zip(downloads)
            .map(|((category, local), download)| {
                let (drive, drive_error) = match download {
                    Some(Ok(content)) => (Some(content), None),
                    Some(Err(reason)) => (None, Some(reason)),
                    None => (None, None),
                };
                CategoryRegistry {
                    category,
                    local_path: self.settings.dir.join(category.file_name()),
                    local,
                    local_error: None,
                    file_id: self.settings.env.file_id(category).map(str::to_string),
                    drive,
                    drive_error,
                }
            })
            .collect();
        RegistrySnapshot { categories }
    }

    /// `None` when the category has no file id.
    async fn download(&self, category: Category) -> Option<Result<Value, String>> {
        let file_id = self.settings.env.file_id(category)?;
        let token = self.settings.env.drive_token();
        Some(
            fetch_drive_file(&self.client, &self.settings.drive_base_url, file_id, token, self.settings.fetch_timeout)
                .await,
        )
    }

    fn install(&self, previous: Option<&RegistrySnapshot>, snapshot: RegistrySnapshot) {
        for entry in &snapshot.categories {
            let before = previous.and_then(|p| p.get(entry.category));
            for notice in changes(before, entry) {
                notice.log();
            }
        }
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(snapshot);
    }
}

/// `{base}/files/{id}?alt=media`, the id escaped as one path segment.
fn drive_file_url(base: &str, file_id: &str) -> Result<Url, String> {
    let mut url = Url::parse(base).map_err(|e| format!("registries.drive_base_url {base:?}: {e}"))?;
    url.path_segments_mut()
        .map_err(|()| format!("registries.drive_base_url {base:?} cannot take a path"))?
        .pop_if_empty()
        .push("files")
        .push(file_id);
    url.query_pairs_mut().append_pair("alt", "media");
    Ok(url)
}

/// Downloads one Drive file (the `files/{id}?alt=media` contract) and
/// parses it as a registry.
async fn fetch_drive_file(
    client: &reqwest::Client,
    base: &str,
    file_id: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Value, String> {
    let url = drive_file_url(base, file_id)?;
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let describe = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("no answer within {timeout:?}")
        } else {
            crate::causes::error_chain(&e.without_url())
        }
    };
    let response = request.send().await.map_err(describe)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let body = response.bytes().await.map_err(describe)?;
    parse_registry(&body)
}

/// A registry document: a JSON object or array. An empty body is its own
/// reason, since Drive answers an empty file with 200.
fn parse_registry(bytes: &[u8]) -> Result<Value, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("empty".into());
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    match value {
        Value::Object(_) | Value::Array(_) => Ok(value),
        other => Err(format!("must be a JSON object or array, found {}", json_type(&other))),
    }
}

async fn read_local(path: &Path) -> Result<Value, String> {
    let bytes = tokio::fs::read(path).await.map_err(|e| format!("cannot read: {e}"))?;
    parse_registry(&bytes)
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

#[derive(Clone, Debug, PartialEq)]
enum Notice {
    Info(String),
    Warn(String),
}

impl Notice {
    fn log(&self) {
        match self {
            Notice::Info(message) => tracing::info!("{message}"),
            Notice::Warn(message) => tracing::warn!("{message}"),
        }
    }
}

/// What is worth saying about a category, given what was said before: only
/// changes (a new failure, a different failure, a recovery), so a Drive that
/// stays down is one warning, not one per refresh.
fn changes(before: Option<&CategoryRegistry>, now: &CategoryRegistry) -> Vec<Notice> {
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
    use std::sync::Mutex;

    use axum::extract::{Path as UrlPath, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use axum::Router;

    use super::*;

    /// A stand-in for Google Drive's `GET /files/{id}?alt=media`. File ids
    /// choose the answer; every Authorization header is recorded.
    #[derive(Clone, Default)]
    struct FakeDrive {
        authorizations: Arc<Mutex<Vec<Option<String>>>>,
    }

    const DRIVE_TOOLS: &str = r#"{"tools": [{"ref": "ci_status", "from": "drive"}]}"#;
    const DRIVE_ARRAY: &str = r#"[{"key": "post_channel_message", "from": "drive"}]"#;

    async fn drive_file(
        State(drive): State<FakeDrive>,
        UrlPath(id): UrlPath<String>,
        Query(query): Query<std::collections::HashMap<String, String>>,
        headers: HeaderMap,
    ) -> (StatusCode, String) {
        let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
        drive.authorizations.lock().unwrap().push(authorization);
        if query.get("alt").map(String::as_str) != Some("media") {
            return (StatusCode::BAD_REQUEST, "alt=media missing".into());
        }
        match id.as_str() {
            "good" => (StatusCode::OK, DRIVE_TOOLS.into()),
            "empty" => (StatusCode::OK, String::new()),
            "garbled" => (StatusCode::OK, "{\"tools\": [".into()),
            "scalar" => (StatusCode::OK, "42".into()),
            "array" => (StatusCode::OK, DRIVE_ARRAY.into()),
            "stall" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                (StatusCode::OK, DRIVE_TOOLS.into())
            }
            _ => (StatusCode::NOT_FOUND, "{\"error\": {\"code\": 404}}".into()),
        }
    }

    async fn start_drive() -> (String, FakeDrive) {
        let drive = FakeDrive::default();
        let app = Router::new().route("/drive/v3/files/{id}", get(drive_file)).with_state(drive.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/drive/v3", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, drive)
    }

    fn write_locals(dir: &Path) {
        std::fs::write(dir.join("tools.json"), r#"{"tools": [{"ref": "ci_status", "from": "local"}]}"#).unwrap();
        std::fs::write(dir.join("capabilities.json"), r#"{"capabilities": []}"#).unwrap();
        std::fs::write(dir.join("usecases.json"), r#"[]"#).unwrap();
    }

    fn settings(dir: &Path, base: &str, env: RegistryEnv) -> RegistrySettings {
        RegistrySettings {
            dir: dir.to_path_buf(),
            drive_base_url: base.to_string(),
            refresh_every: Duration::ZERO,
            fetch_timeout: Duration::from_millis(300),
            env,
        }
    }

    fn tools_from(id: &str, token: Option<&str>) -> RegistryEnv {
        RegistryEnv { tools_file_id: Some(id.into()), drive_token: token.map(str::to_string), ..Default::default() }
    }

    #[tokio::test]
    async fn each_drive_answer_lands_on_the_right_copy() {
        let (base, _drive) = start_drive().await;
        let dir = tempfile::tempdir().unwrap();
        write_locals(dir.path());
        let local_tools: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("tools.json")).unwrap()).unwrap();
        let drive_tools: Value = serde_json::from_str(DRIVE_TOOLS).unwrap();
        let cases = [
            ("good", Origin::Drive, None),
            ("empty", Origin::Local, Some("empty")),
            ("missing", Origin::Local, Some("HTTP 404")),
            ("garbled", Origin::Local, Some("not JSON")),
            ("scalar", Origin::Local, Some("found a number")),
            ("stall", Origin::Local, Some("no answer within")),
        ];
        for (id, origin, error) in cases {
            let registries = Registries::load(settings(dir.path(), &base, tools_from(id, None))).await.unwrap();
            let snapshot = registries.snapshot();
            let tools = snapshot.get(Category::Tools).unwrap();
            assert_eq!(tools.origin(), origin, "{id}");
            let status = &registries.status()[0];
            assert_eq!((status.category, status.copy), (Category::Tools, origin), "{id}");
            assert_eq!(status.file_id.as_deref(), Some(id), "{id}");
            match error {
                None => {
                    assert_eq!(status.last_error, None, "{id}");
                    assert_eq!(tools.resolved(), &drive_tools, "{id}");
                }
                Some(error) => {
                    let last = status.last_error.as_deref().unwrap_or_default();
                    assert!(last.contains(error), "{id}: {last:?}");
                    assert_eq!(tools.resolved(), &local_tools, "{id}");
                }
            }
            // The local copies always travel as the fallback.
            assert_eq!(snapshot.fallback_registry()["tools"], local_tools, "{id}");
            // The categories without an id stay local, and say nothing is wrong.
            for other in &registries.status()[1..] {
                assert_eq!((other.copy, &other.file_id, &other.last_error), (Origin::Local, &None, &None));
            }
        }
    }

    #[tokio::test]
    async fn the_drive_token_is_sent_as_a_bearer_token_only_when_set() {
        let (base, drive) = start_drive().await;
        let dir = tempfile::tempdir().unwrap();
        write_locals(dir.path());
        Registries::load(settings(dir.path(), &base, tools_from("good", Some("ya29.secret")))).await.unwrap();
        Registries::load(settings(dir.path(), &base, tools_from("good", None))).await.unwrap();
        assert_eq!(*drive.authorizations.lock().unwrap(), vec![Some("Bearer ya29.secret".to_string()), None]);
    }

    #[tokio::test]
    async fn envelopes_carry_what_was_resolved_and_the_local_copies() {
        let (base, _drive) = start_drive().await;
        let dir = tempfile::tempdir().unwrap();
        write_locals(dir.path());
        let env = RegistryEnv {
            tools_file_id: Some("good".into()),
            usecases_file_id: Some("missing".into()),
            ..Default::default()
        };
        let snapshot = Registries::load(settings(dir.path(), &base, env)).await.unwrap().snapshot();
        let files = snapshot.registry_files();
        let refs: Vec<(&str, &str)> = files
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["category"].as_str().unwrap(), f["ref"].as_str().unwrap()))
            .collect();
        // Filed under the category, as Smart Office's registry loader does,
        // whichever copy it is.
        assert_eq!(refs, vec![("tools", "tools"), ("capabilities", "capabilities"), ("usecases", "usecases")]);
        assert_eq!(files[0]["content"], serde_json::from_str::<Value>(DRIVE_TOOLS).unwrap());
        assert_eq!(files[2]["content"], json!({"usecases": []}), "an array registry is wrapped");
        let fallback = snapshot.fallback_registry();
        assert_eq!(fallback.as_object().unwrap().len(), 3);
        assert_eq!(fallback["tools"]["tools"][0]["from"], json!("local"));
        assert_eq!(fallback["usecases"], json!({"usecases": []}));
        let text = json!([files, fallback]).to_string();
        assert!(!text.contains(dir.path().to_str().unwrap()), "no server path leaves fanin: {text}");
    }

    /// Smart Office's own registries are JSON arrays of entries; they travel
    /// as its registry loader hands them on, and the contract takes them.
    #[tokio::test]
    async fn array_registries_travel_wrapped_in_their_category() {
        let (base, _drive) = start_drive().await;
        let dir = tempfile::tempdir().unwrap();
        let tools = json!([{"id": "notifier", "version": "1.0.0", "actions": [{"name": "message.post"}]}]);
        let capabilities = json!([{"key": "post_channel_message", "operations": ["notifier.message.post"]}]);
        std::fs::write(dir.path().join("tools.json"), tools.to_string()).unwrap();
        std::fs::write(dir.path().join("capabilities.json"), capabilities.to_string()).unwrap();
        std::fs::write(dir.path().join("usecases.json"), "[]").unwrap();
        let env = RegistryEnv { capabilities_file_id: Some("array".into()), ..Default::default() };
        let snapshot = Registries::load(settings(dir.path(), &base, env)).await.unwrap().snapshot();
        let files = snapshot.registry_files();
        assert_eq!(files[0], json!({"category": "tools", "ref": "tools", "content": {"tools": tools}}));
        assert_eq!(files[1]["content"], json!({"capabilities": serde_json::from_str::<Value>(DRIVE_ARRAY).unwrap()}));
        assert_eq!(
            snapshot.fallback_registry(),
            json!({"tools": {"tools": tools}, "capabilities": {"capabilities": capabilities}, "usecases": {"usecases": []}})
        );
        let envelope = json!({
            "header": {"id": "e", "version": "1.0", "timestamp": "2025-03-01T08:00:00Z", "source": "so.trigger.manual",
                       "destination": "executor", "type": "sop.run"},
            "payload": {"registryFiles": files, "options": {"fallbackRegistry": snapshot.fallback_registry()}},
        });
        crate::envelope::schema::validate_contract(&envelope).unwrap();
    }

    #[tokio::test]
    async fn a_missing_or_invalid_local_file_stops_the_start_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        write_locals(dir.path());
        std::fs::remove_file(dir.path().join("capabilities.json")).unwrap();
        let base = "http://127.0.0.1:9";
        let error = Registries::load(settings(dir.path(), base, RegistryEnv::default())).await.err().unwrap();
        assert_eq!(error.file, dir.path().join("capabilities.json"));
        assert!(error.to_string().contains("capabilities.json: cannot read"), "{error}");

        write_locals(dir.path());
        std::fs::write(dir.path().join("usecases.json"), "{\"usecases\": [").unwrap();
        let error = Registries::load(settings(dir.path(), base, RegistryEnv::default())).await.err().unwrap();
        assert_eq!(error.file, dir.path().join("usecases.json"));
        assert!(error.reason.starts_with("not JSON"), "{error}");

        std::fs::write(dir.path().join("usecases.json"), "  \n").unwrap();
        let error = Registries::load(settings(dir.path(), base, RegistryEnv::default())).await.err().unwrap();
        assert_eq!(error.reason, "empty");
    }

    #[tokio::test]
    async fn a_refresh_rereads_and_keeps_the_last_valid_local_copy() {
        let dir = tempfile::tempdir().unwrap();
        write_locals(dir.path());
        let registries =
            Registries::load(settings(dir.path(), "http://127.0.0.1:9", RegistryEnv::default())).await.unwrap();
        std::fs::write(dir.path().join("usecases.json"), r#"[{"ref": "rolling_deploy"}]"#).unwrap();
        registries.refresh().await;
        assert_eq!(registries.snapshot().get(Category::Usecases).unwrap().local, json!([{"ref": "rolling_deploy"}]));

        std::fs::write(dir.path().join("usecases.json"), "not json").unwrap();
        registries.refresh().await;
        let snapshot = registries.snapshot();
        let usecases = snapshot.get(Category::Usecases).unwrap();
        assert_eq!(usecases.local, json!([{"ref": "rolling_deploy"}]));
        assert!(usecases.local_error.as_deref().unwrap().starts_with("not JSON"));
        assert!(registries.status()[2].last_error.as_deref().unwrap().starts_with("not JSON"));
    }

    #[tokio::test]
    async fn the_background_refresh_picks_up_changes_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        write_locals(dir.path());
        let mut settings = settings(dir.path(), "http://127.0.0.1:9", RegistryEnv::default());
        settings.refresh_every = Duration::from_millis(20);
        let registries = Arc::new(Registries::load(settings).await.unwrap());
        let shutdown = CancellationToken::new();
        let task = registries.spawn_refresh(shutdown.clone()).unwrap();
        std::fs::write(dir.path().join("tools.json"), r#"{"tools": [], "edited": true}"#).unwrap();
        let edited = async {
            while registries.snapshot().get(Category::Tools).unwrap().local["edited"] != json!(true) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), edited).await.expect("the refresh never read the edited file");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("the refresh did not stop").unwrap();
    }

    #[test]
    fn a_zero_period_turns_the_refresh_off() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            write_locals(dir.path());
            let registries = Arc::new(
                Registries::load(settings(dir.path(), "http://127.0.0.1:9", RegistryEnv::default())).await.unwrap(),
            );
            assert!(registries.spawn_refresh(CancellationToken::new()).is_none());
        });
    }

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

    #[test]
    fn drive_urls_follow_the_files_contract() {
        let cases = [
            ("https://www.googleapis.com/drive/v3", "1AbC", "https://www.googleapis.com/drive/v3/files/1AbC?alt=media"),
            ("http://127.0.0.1:8080/drive/v3/", "x", "http://127.0.0.1:8080/drive/v3/files/x?alt=media"),
            ("http://h/", "a/b c", "http://h/files/a%2Fb%20c?alt=media"),
        ];
        for (base, id, url) in cases {
            assert_eq!(drive_file_url(base, id).unwrap().as_str(), url);
        }
    }

    #[test]
    fn the_environment_ignores_empty_values_and_never_prints_the_token() {
        let env = RegistryEnv {
            tools_file_id: Some(" ".into()),
            capabilities_file_id: Some("cap-1".into()),
            usecases_file_id: None,
            drive_token: Some("ya29.secret".into()),
        };
        assert_eq!(env.file_id(Category::Tools), None);
        assert_eq!(env.file_id(Category::Capabilities), Some("cap-1"));
        assert_eq!(env.file_id(Category::Usecases), None);
        let printed = format!("{env:?}");
        assert!(!printed.contains("ya29"), "{printed}");
        assert!(printed.contains("<set>"), "{printed}");
    }
}
