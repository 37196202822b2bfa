//! The filesystem source (`[channels_config.filesystem]`, docs/operations.md
//! "Filesystem"): changes of files under the watched roots, each one
//! [`Event`] for the dispatcher, with nothing missed while the daemon was
//! stopped.
//!
//! - **State in the store.** The store keeps every watched file's size,
//!   mtime and SHA-256 ([`FileState`]). Each change is dispatched with the
//!   file's new state in the same commit, so what is stored is exactly what
//!   has been dispatched: a crash before the commit sees the change again
//!   at the next start, one after it does not.
//! - **One way to see a change.** A session starts a watch (notify, with
//!   its debouncer) before it scans, then compares the whole tree with the
//!   stored state ([`tree::compare`]); afterwards each debounced batch of
//!   reported paths is scanned again and compared the same way. A watch
//!   that lost events (the kernel's queue overflowed) asks for a whole
//!   scan. Changes while the daemon was stopped, live changes and renames
//!   are thus all one comparison.
//! - **First sight is silent.** A root scanned for the first time (its path
//!   not yet in the source's cursor) has its files recorded without
//!   starting anything: turning the watch on does not fire for every file
//!   already there.
//! - **Safety.** Roots must exist, must be directories, and are refused when
//!   too broad (`/`, `/home`, a home directory…) as written and as resolved,
//!   unless `allow_broad_roots`. A link leading out of every root is
//!   refused (audited once per session as `event_refused`), never read.

mod scan;
mod tree;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{json, Value};

use super::feed::{self, Feed, SourceError};
use super::{SourceContext, SourceTask};
use crate::config::{Config, ConfigError, FilesystemConfig};
use crate::dispatch::Refusal;
use crate::event::{IdempotencyKey, Payload, Source};
use crate::store::{Batch, FileState, Write};
use tree::{Change, Scope, States};

/// The source's name in `/ready` and `/metrics`, its cursor's key and the
/// source of its file states.
pub const SOURCE: &str = "filesystem";

/// Changes dispatched at once: enough to share commits in a burst.
const IN_FLIGHT: usize = 64;

/// File states written per commit when nothing is dispatched with them.
const SILENT_CHUNK: usize = 512;

/// Starts the watcher when an enabled filesystem block is configured. An
/// `Err` (a root that does not exist, is not a directory or resolves to a
/// broad one) is worded for the operator and stops the daemon.
pub fn start(ctx: &SourceContext) -> Result<Option<SourceTask>, String> {
    let Some(fs) = ctx.config.channels_config.filesystem.as_ref().filter(|c| c.enabled) else {
        return Ok(None);
    };
    let settings = Arc::new(settings(&ctx.config, fs)?);
    let roots: Vec<&str> = settings.roots.iter().map(Root::text).collect();
    tracing::info!(?roots, recursive = settings.recursive, "filesystem watcher starting");
    ctx.health.set_status(SOURCE, crate::sources::health::Status::Connecting, None);
    Ok(Some(tokio::spawn(crate::sources::singleton(ctx.clone(), SOURCE.to_string(), move |held: SourceContext| {
        let settings = settings.clone();
        async move { feed::run(Feed::new(&held, SOURCE), async move |feed: &Feed| session(feed, &settings).await).await }
    }))))
}

/// A watched root: as configured (resolved against the config's
/// directory), which is how its files' paths are written, and as the
/// filesystem resolves it, which is what links are checked against.
#[derive(Debug)]
pub(crate) struct Root {
    pub path: PathBuf,
    pub resolved: PathBuf,
}

impl Root {
    pub fn text(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }
}

/// Everything a session needs, checked at start.
#[derive(Debug)]
pub(crate) struct Settings {
    pub roots: Vec<Root>,
    pub recursive: bool,
    include: Option<GlobSet>,
    exclude: GlobSet,
    pub debounce: Duration,
    pub max_content_bytes: usize,
}

impl Settings {
    pub fn is_root(&self, path: &str) -> bool {
        self.roots.iter().any(|root| root.text() == path)
    }

    /// Whether a file at `path` is watched: under a root (directly, when
    /// not recursive), included, not excluded.
    pub fn admits(&self, path: &str) -> bool {
        let parent = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        (self.recursive || self.is_root(parent))
            && self.include.as_ref().is_none_or(|set| set.is_match(path))
            && !self.exclude.is_match(path)
    }
}

fn settings(config: &Config, fs: &FilesystemConfig) -> Result<Settings, String> {
    let problem = |key: String, reason: String| {
        ConfigError {
            file: config.file.display().to_string(),
            key: format!("channels_config.filesystem.{key}"),
            reason,
        }
        .to_string()
    };
    let mut roots = Vec::new();
    for (i, written) in fs.paths.iter().enumerate() {
        let root = checked_root(config, fs, written).map_err(|reason| problem(format!("paths[{i}]"), reason))?;
        roots.push(root);
    }
    let globs = |name: &str, globs: &[String]| -> Result<GlobSet, String> {
        let mut set = GlobSetBuilder::new();
        for (i, glob) in globs.iter().enumerate() {
            set.add(Glob::new(glob).map_err(|e| problem(format!("{name}[{i}]"), e.kind().to_string()))?);
        }
        set.build().map_err(|e| problem(name.to_string(), e.to_string()))
    };
    Ok(Settings {
        roots,
        recursive: fs.recursive,
        include: (!fs.include.is_empty()).then(|| globs("include", &fs.include)).transpose()?,
        exclude: globs("exclude", &fs.exclude)?,
        debounce: Duration::from_millis(fs.debounce_ms),
        max_content_bytes: fs.max_content_bytes,
    })
}

/// A configured root, refused unless it is an existing directory that is
/// not too broad, as written and as resolved.
fn checked_root(config: &Config, fs: &FilesystemConfig, written: &str) -> Result<Root, String> {
    let path = config.resolve(written);
    let text = path.to_str().ok_or_else(|| format!("{written:?} is not UTF-8"))?;
    let path = PathBuf::from(if text.len() > 1 { text.trim_end_matches('/') } else { text });
    let resolved = std::fs::canonicalize(&path).map_err(|e| format!("{:?} does not exist ({e})", path.display()))?;
    if !resolved.is_dir() {
        return Err(format!("{:?} is not a directory", path.display()));
    }
    if !fs.allow_broad_roots {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        for candidate in [&path, &resolved] {
            let shown = candidate.display().to_string();
            if let Some(reason) = FilesystemConfig::too_broad(&shown) {
                return Err(reason);
            }
            if home.as_ref().and_then(|h| std::fs::canonicalize(h).ok()).is_some_and(|h| h == *candidate) {
                return Err(format!(
                    "{shown:?} is a home directory, too broad a root to watch; name the directory the files \
                     arrive in, or set allow_broad_roots = true"
                ));
            }
        }
    }
    Ok(Root { path, resolved })
}

/// One session: watch, compare the whole tree with the store, then compare
/// again what each debounced batch of the watch reports.
async fn session(feed: &Feed, settings: &Arc<Settings>) -> Result<(), SourceError> {
    check_roots(settings)?;
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let mut watch = notify_debouncer_full::new_debouncer(settings.debounce, None, move |result| {
        let _ = tx.send(result);
    })
    .map_err(|e| SourceError::new(format!("cannot start the watch: {e}")))?;
    let mode = match settings.recursive {
        true => notify_debouncer_full::notify::RecursiveMode::Recursive,
        false => notify_debouncer_full::notify::RecursiveMode::NonRecursive,
    };
    for root in &settings.roots {
        watch.watch(&root.path, mode).map_err(|e| SourceError::new(format!("cannot watch {}: {e}", root.text())))?;
    }
    let mut known: Arc<States> = Arc::new(feed.ctx().store.file_states(SOURCE).await?.into_iter().collect());
    let mut escapes = HashSet::new();
    let first_sight = first_sight(feed, settings).await?;
    compare_and_dispatch(feed, settings, &mut known, Scope::Everything, &first_sight, &mut escapes).await?;
    record_first_sight(feed, settings, &first_sight).await?;
    feed.up();
    feed.polled();
    loop {
        let Some(report) = reports.recv().await else {
            return Err(SourceError::new("the watch stopped"));
        };
        let mut touched = Touched::default();
        touched.add(report);
        while let Ok(more) = reports.try_recv() {
            touched.add(more);
        }
        check_roots(settings)?;
        let scope = touched.into_scope();
        compare_and_dispatch(feed, settings, &mut known, scope, &[], &mut escapes).await?;
        feed.polled();
    }
}

/// A root that is gone (unmounted, deleted) stops the session rather than
/// reading as every file deleted.
fn check_roots(settings: &Settings) -> Result<(), SourceError> {
    for root in &settings.roots {
        if !root.path.is_dir() {
            return Err(SourceError::new(format!("{} does not exist or is not a directory", root.text())));
        }
    }
    Ok(())
}

/// What the watch reported in one debounced batch (or several, drained
/// together).
#[derive(Default)]
struct Touched {
    paths: Vec<String>,
    everything: bool,
}

impl Touched {
    fn add(&mut self, report: notify_debouncer_full::DebounceEventResult) {
        match report {
            Ok(events) => {
                for event in events {
                    if event.need_rescan() {
                        self.everything = true;
                    }
                    self.paths.extend(event.paths.iter().filter_map(|p| p.to_str()).map(str::to_string));
                }
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!(source = SOURCE, "the watch reported: {error}; scanning every root again");
                }
                self.everything = true;
            }
        }
    }

    /// The paths to scan again: each once, none under another.
    fn into_scope(mut self) -> Scope {
        if self.everything {
            return Scope::Everything;
        }
        self.paths.sort();
        self.paths.dedup();
        let mut kept: Vec<String> = Vec::new();
        for path in self.paths {
            if !kept.last().is_some_and(|last| tree::is_at_or_under(&path, last)) {
                kept.push(path);
            }
        }
        Scope::Under(kept)
    }
}

/// The roots seen before, as the cursor lists them (one per line).
async fn first_sight(feed: &Feed, settings: &Settings) -> Result<Vec<String>, SourceError> {
    let cursor = feed.cursor().await?;
    let seen: HashSet<&str> = cursor.as_ref().map(|c| c.value.lines().collect()).unwrap_or_default();
    Ok(settings.roots.iter().map(|r| r.text().to_string()).filter(|r| !seen.contains(r.as_str())).collect())
}

async fn record_first_sight(feed: &Feed, settings: &Settings, first_sight: &[String]) -> Result<(), SourceError> {
    if first_sight.is_empty() {
        return Ok(());
    }
    let from = feed.cursor().await?.map(|c| c.value);
    let roots: Vec<&str> = settings.roots.iter().map(Root::text).collect();
    feed.advance(from.as_deref(), &roots.join("\n")).await
}

/// Scans `scope`, and dispatches every change it finds; those under a root
/// in `silent` (first sight) and touches are only recorded.
async fn compare_and_dispatch(
    feed: &Feed,
    settings: &Arc<Settings>,
    known: &mut Arc<States>,
    scope: Scope,
    silent: &[String],
    escapes: &mut HashSet<String>,
) -> Result<(), SourceError> {
    let found = {
        let (settings, known, scope) = (settings.clone(), known.clone(), scope.clone());
        tokio::task::spawn_blocking(move || scan::scan(&settings, &known, &scope))
            .await
            .map_err(|e| SourceError::new(format!("the scan failed: {e}")))?
    };
    for escape in found.escapes {
        if escapes.insert(escape.path.clone()) {
            refuse_escape(feed, escape).await?;
        }
    }
    let changes = tree::compare(known, &found.states, &scope);
    let (quiet, loud): (Vec<Change>, Vec<Change>) = changes
        .into_iter()
        .partition(|c| c.kind().is_none() || silent.iter().any(|root| tree::is_at_or_under(c.path(), root)));
    let known_now = Arc::make_mut(known);
    for chunk in quiet.chunks(SILENT_CHUNK) {
        let writes: Vec<Write> = chunk.iter().flat_map(marks).collect();
        feed.ctx().store.commit(Batch { idempotency: None, writes }).await?;
        chunk.iter().for_each(|c| remember(known_now, c));
    }
    let mut results = stream::iter(loud).map(|change| dispatch(feed, settings, change)).buffer_unordered(IN_FLIGHT);
    let mut failure = None;
    while let Some(result) = results.next().await {
        match result {
            Ok(change) => remember(known_now, &change),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// The state writes that record `change`.
fn marks(change: &Change) -> Vec<Write> {
    let set = |path: &str, state: Option<&FileState>| Write::SetFileState {
        source: SOURCE.to_string(),
        path: path.to_string(),
        state: state.cloned(),
    };
    match change {
        Change::Created { path, state } | Change::Modified { path, state } | Change::Touched { path, state } => {
            vec![set(path, Some(state))]
        }
        Change::Deleted { path, .. } => vec![set(path, None)],
        Change::Renamed { from, path, state } => vec![set(from, None), set(path, Some(state))],
    }
}

/// What the session knows once `change` is committed.
fn remember(known: &mut States, change: &Change) {
    match change {
        Change::Created { path, state } | Change::Modified { path, state } | Change::Touched { path, state } => {
            known.insert(path.clone(), state.clone());
        }
        Change::Deleted { path, .. } => {
            known.remove(path);
        }
        Change::Renamed { from, path, state } => {
            known.remove(from);
            known.insert(path.clone(), state.clone());
        }
    }
}

/// Dispatches one change with its state writes; hands the change back once
/// both are durable.
async fn dispatch(feed: &Feed, settings: &Settings, change: Change) -> Result<Change, SourceError> {
    let payload = payload(settings, &change).await;
    let state = change.state();
    let kind = change.kind().map_or("touched", |k| k.as_str());
    let key = format!("{kind} {} {} {}", change.path(), state.sha256, state.mtime.timestamp_micros());
    let mut event = feed.event(Source::Filesystem, change.path(), Payload::Json(payload));
    event.idempotency = Some(IdempotencyKey::of_source(SOURCE, &key));
    feed.deliver_with(event, marks(&change)).await?;
    Ok(change)
}

/// `{kind, path, size, sha256, content}`, and `from` for a rename. The
/// content is read now, and kept only while it is still what was hashed.
async fn payload(settings: &Settings, change: &Change) -> Value {
    let kind = change.kind().map_or("touched", |k| k.as_str());
    let state = change.state();
    let content = match change {
        Change::Deleted { .. } => None,
        _ if state.size > settings.max_content_bytes as u64 => None,
        _ => {
            let (path, max, sha256) = (PathBuf::from(change.path()), settings.max_content_bytes, state.sha256.clone());
            tokio::task::spawn_blocking(move || scan::text_content(&path, max, &sha256)).await.ok().flatten()
        }
    };
    let mut payload = json!({
        "kind": kind,
        "path": change.path(),
        "size": state.size,
        "sha256": state.sha256,
        "content": content,
    });
    if let Change::Renamed { from, .. } = change {
        payload["from"] = Value::String(from.clone());
    }
    payload
}

async fn refuse_escape(feed: &Feed, escape: scan::Escape) -> Result<(), SourceError> {
    tracing::warn!(source = SOURCE, path = %escape.path, target = %escape.target, "link leads out of every watched root; not followed");
    let refusal = Refusal {
        source: Source::Filesystem,
        topic: escape.path.clone(),
        client: Some(SOURCE.to_string()),
        reason: "link_outside_roots",
        detail: format!("{} links to {}, outside every watched root", escape.path, escape.target),
        bytes: 0,
        received_at: Utc::now(),
    };
    feed.refuse_with(refusal, Vec::new()).await
}
