//! A stand-in for Google Drive's v3 changes API, for the Drive source's
//! whole-daemon tests: `GET /changes/startPageToken` and `GET
//! /changes?pageToken=…` as Drive answers them (change resources, pages
//! with `nextPageToken` until the last one's `newStartPageToken`), the
//! bearer token checked, Google's error bodies for 401 and 429 (with
//! `Retry-After`); and Google's OAuth 2.0 token endpoint (`POST /token`,
//! the refresh-token grant with the client's id and secret in the form
//! body), which issues access tokens that Drive takes until they expire,
//! and refuses as Google does (`invalid_client` 401, `invalid_grant` 400,
//! `unsupported_grant_type` 400). Page tokens are change numbers, as opaque to fanin as
//! Drive's own. It runs on its own thread and runtime on a free loopback
//! port, records every request it answers, and can stop and serve again on
//! the same port with the changes it held.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::free_port;

#[derive(Default)]
struct Inner {
    changes: Vec<Value>,
    token: String,
    page_size: usize,
    /// Statuses to answer the next requests with, with their Retry-After.
    failures: VecDeque<(u16, Option<u64>)>,
    requests: Vec<Seen>,
    /// The client the token endpoint knows, if any.
    client: Option<GrantClient>,
    /// Access tokens issued, with when each expires.
    issued: Vec<(String, Instant)>,
}

struct GrantClient {
    id: String,
    secret: String,
    refresh_token: String,
    lifetime: Duration,
}

/// A request the double answered.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub status: u16,
}

pub struct Drive {
    inner: Arc<Mutex<Inner>>,
    port: u16,
    pub base_url: String,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Drive {
    /// A Drive that accepts `token` and answers at most `page_size` changes
    /// a page, serving.
    pub fn start(token: &str, page_size: usize) -> Drive {
        let inner = Arc::new(Mutex::new(Inner { token: token.into(), page_size, ..Default::default() }));
        let port = free_port();
        let mut drive = Drive { inner, port, base_url: format!("http://127.0.0.1:{port}"), running: None };
        drive.resume();
        drive
    }

    /// Stops serving: the listener closes and open connections drop.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.cancel();
            thread.join().unwrap();
        }
    }

    /// Serves again on the same port, with the changes it held.
    pub fn resume(&mut self) {
        assert!(self.running.is_none(), "Drive is serving already");
        let app = Router::new()
            .route("/changes/startPageToken", get(start_page_token))
            .route("/changes", get(changes))
            .route("/token", post(grant))
            .with_state(self.inner.clone());
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let port = self.port;
        let watched = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the Drive double");
                ready_tx.send(()).unwrap();
                tokio::select! {
                    served = axum::serve(listener, app) => served.unwrap(),
                    () = watched.cancelled() => {}
                }
            });
            // Leaving here drops the runtime, and every connection task with it.
        });
        ready_rx.recv().expect("the Drive double started");
        self.running = Some((stop, thread));
    }

    /// A new file: its first change, created and modified at once.
    pub fn create(&self, id: &str, name: &str, mime_type: &str, parents: &[&str]) {
        let now = now();
        let file = json!({"kind": "drive#file", "id": id, "name": name, "mimeType": mime_type,
                          "createdTime": now, "modifiedTime": now, "parents": parents, "trashed": false});
        self.push(id, Some(file));
    }

    /// A later change of file `id`: modified now, trashed or not.
    pub fn modify(&self, id: &str, trashed: bool) {
        let mut file = self.last_file(id);
        file["modifiedTime"] = json!(now_after(file["modifiedTime"].as_str().unwrap()));
        file["trashed"] = json!(trashed);
        self.push(id, Some(file));
    }

    /// File `id` is deleted for good.
    pub fn remove(&self, id: &str) {
        self.push(id, None);
    }

    /// The token endpoint grants access tokens lasting `lifetime` to the
    /// client `id` with `secret` for `refresh_token`.
    pub fn grant_to(&self, id: &str, secret: &str, refresh_token: &str, lifetime: Duration) {
        let client =
            GrantClient { id: id.into(), secret: secret.into(), refresh_token: refresh_token.into(), lifetime };
        self.inner.lock().unwrap().client = Some(client);
    }

    /// The access tokens granted so far.
    pub fn granted(&self) -> usize {
        self.inner.lock().unwrap().issued.len()
    }

    /// Every access token granted so far is refused from now on (revoked).
    pub fn revoke_access_tokens(&self) {
        let now = Instant::now();
        self.inner.lock().unwrap().issued.iter_mut().for_each(|(_, expiry)| *expiry = now);
    }

    pub fn accept_token(&self, token: &str) {
        self.inner.lock().unwrap().token = token.into();
    }

    /// The next request is answered `status`, with `Retry-After` if given.
    pub fn fail_next(&self, status: u16, retry_after: Option<u64>) {
        self.inner.lock().unwrap().failures.push_back((status, retry_after));
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().requests.clone()
    }

    fn push(&self, id: &str, file: Option<Value>) {
        let mut inner = self.inner.lock().unwrap();
        let mut change = json!({"kind": "drive#change", "changeType": "file", "fileId": id, "time": now(),
                                "removed": file.is_none()});
        if let Some(file) = file {
            change["file"] = file;
        }
        inner.changes.push(change);
    }

    fn last_file(&self, id: &str) -> Value {
        let inner = self.inner.lock().unwrap();
        let last = inner.changes.iter().rev().find(|c| c["fileId"] == id).expect("a file created before");
        last["file"].clone()
    }
}

type Shared = State<Arc<Mutex<Inner>>>;

/// Checks the bearer and the scripted failures; records the request. The
/// refusal is the whole response the double answers with.
#[allow(clippy::result_large_err)]
fn admit(inner: &mut Inner, headers: &HeaderMap, path: &str) -> Result<(), Response> {
    let mut answer = |status: u16| inner.requests.push(Seen { at: Instant::now(), path: path.into(), status });
    if let Some((status, retry_after)) = inner.failures.pop_front() {
        answer(status);
        let body = json!({"error": {"code": status, "message": "Rate Limit Exceeded", "status": "RESOURCE_EXHAUSTED",
                          "errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}]}});
        let mut response = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
        if let Some(wait) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, wait.to_string().parse().unwrap());
        }
        return Err(response);
    }
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let now = Instant::now();
    let live = |token: &str| inner.issued.iter().any(|(issued, expiry)| issued == token && now < *expiry);
    if !given.is_some_and(|token| (!inner.token.is_empty() && token == inner.token) || live(token)) {
        answer(401);
        let body = json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            "errors": [{"domain": "global", "reason": "authError", "message": "Invalid Credentials", "location": "Authorization", "locationType": "header"}]}});
        return Err((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    }
    answer(200);
    Ok(())
}

async fn start_page_token(State(inner): Shared, headers: HeaderMap) -> Response {
    let mut inner = inner.lock().unwrap();
    if let Err(refused) = admit(&mut inner, &headers, "/changes/startPageToken") {
        return refused;
    }
    let next = inner.changes.len() + 1;
    Json(json!({"kind": "drive#startPageToken", "startPageToken": next.to_string()})).into_response()
}

async fn changes(State(inner): Shared, headers: HeaderMap, Query(query): Query<Vec<(String, String)>>) -> Response {
    let mut inner = inner.lock().unwrap();
    if let Err(refused) = admit(&mut inner, &headers, "/changes") {
        return refused;
    }
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(start) = param("pageToken").and_then(|t| t.parse::<usize>().ok()).filter(|&t| t >= 1) else {
        let body = json!({"error": {"code": 400, "message": "Invalid Value", "status": "INVALID_ARGUMENT",
                          "errors": [{"domain": "global", "reason": "invalid", "location": "pageToken", "locationType": "parameter"}]}});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    let asked = param("pageSize").and_then(|s| s.parse::<usize>().ok()).unwrap_or(100);
    let size = asked.min(inner.page_size).max(1);
    let from = (start - 1).min(inner.changes.len());
    let to = (from + size).min(inner.changes.len());
    let mut page = json!({"kind": "drive#changeList", "changes": inner.changes[from..to]});
    if to < inner.changes.len() {
        page["nextPageToken"] = json!((to + 1).to_string());
    } else {
        page["newStartPageToken"] = json!((inner.changes.len() + 1).to_string());
    }
    Json(page).into_response()
}

/// `POST /token`: the refresh-token grant as Google's endpoint answers it.
async fn grant(State(inner): Shared, Form(form): Form<Vec<(String, String)>>) -> Response {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default();
    let refuse = |status: StatusCode, error: &str, description: &str| {
        (status, Json(json!({"error": error, "error_description": description}))).into_response()
    };
    let mut inner = inner.lock().unwrap();
    let Some(client) = inner.client.as_ref() else {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client", "The OAuth client was not found.");
    };
    if field("client_id") != client.id || field("client_secret") != client.secret {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client", "Unauthorized");
    }
    if field("grant_type") != "refresh_token" {
        let description = format!("Invalid grant_type: {}", field("grant_type"));
        return refuse(StatusCode::BAD_REQUEST, "unsupported_grant_type", &description);
    }
    if field("refresh_token") != client.refresh_token {
        return refuse(StatusCode::BAD_REQUEST, "invalid_grant", "Token has been expired or revoked.");
    }
    let lifetime = client.lifetime;
    let token = format!("ya29.a0granted-{}", inner.issued.len() + 1);
    inner.issued.push((token.clone(), Instant::now() + lifetime));
    Json(json!({"access_token": token, "expires_in": lifetime.as_secs(),
                "scope": "https://www.googleapis.com/auth/drive.readonly", "token_type": "Bearer"}))
    .into_response()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Now, or a millisecond after `earlier` if now is not later (two changes
/// within one millisecond).
fn now_after(earlier: &str) -> String {
    let earlier = chrono::DateTime::parse_from_rfc3339(earlier).unwrap().to_utc();
    let at = chrono::Utc::now().max(earlier + chrono::Duration::milliseconds(1));
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
