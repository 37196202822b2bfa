//! A Telegram Bot API for whole-daemon tests, on a free loopback port,
//! speaking `getUpdates` as Telegram does: `POST /bot<token>/getUpdates`
//! (JSON body or query) with `offset`, `timeout` and `allowed_updates`;
//! every update below `offset` is confirmed and never returned again; with
//! nothing new the request is held up to `timeout` seconds, then answered
//! empty; answers are `{"ok": true, "result": [...]}`, a wrong token gets
//! `401 {"ok": false, "error_code": 401, "description": "Unauthorized"}`,
//! a `getUpdates` that arrives while another is held ends the held one
//! with `409` (`Conflict: terminated by other getUpdates request`), as
//! two bot instances polling at once see, and a test may script the next
//! answers (a 429 with `parameters.retry_after`).
//!
//! It runs on its own runtime in a background thread, so stopping it drops
//! every connection as a server going away would; its updates outlive a
//! restart, as Telegram's do.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::free_port;

/// One `getUpdates` the API was asked: when it arrived, with which offset,
/// answered how (0 while it is held).
#[derive(Clone, Debug)]
pub struct Asked {
    pub at: Instant,
    pub offset: Option<i64>,
    pub status: u16,
}

#[derive(Default)]
struct Queue {
    /// Updates not yet confirmed, in update_id order.
    updates: Vec<Value>,
    last_id: i64,
    scripted: VecDeque<(u16, Value)>,
    asked: Vec<Asked>,
    /// The index in `asked` of the request held now, if one is: a newer
    /// request ends it.
    held: Option<usize>,
}

struct Shared {
    token: String,
    queue: Mutex<Queue>,
    arrived: Notify,
}

pub struct BotApi {
    pub port: u16,
    shared: Arc<Shared>,
    running: Option<(CancellationToken, std::thread::JoinHandle<()>)>,
}

impl BotApi {
    /// A Bot API for the bot `token`, serving.
    pub fn start(token: &str) -> BotApi {
        let shared = Arc::new(Shared { token: token.into(), queue: Mutex::default(), arrived: Notify::new() });
        let mut api = BotApi { port: free_port(), shared, running: None };
        api.resume();
        api
    }

    /// The `api_base_url` fanin is configured with.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new update carrying a `message` with `text`; its update_id.
    pub fn send_message(&self, text: &str) -> i64 {
        self.push(
            "message",
            json!({"message_id": 1, "date": 1_700_000_000,
            "chat": {"id": 42, "type": "private"}, "from": {"id": 7, "is_bot": false, "first_name": "Ada"},
            "text": text}),
        )
    }

    /// A new update of `kind` (`message`, `edited_message`, …) carrying
    /// `object`; its update_id.
    pub fn push(&self, kind: &str, object: Value) -> i64 {
        let mut queue = self.shared.queue.lock().unwrap();
        queue.last_id = queue.last_id.max(100_000) + 1;
        let id = queue.last_id;
        let mut update = json!({"update_id": id});
        update[kind] = object;
        queue.updates.push(update);
        drop(queue);
        self.shared.arrived.notify_waiters();
        id
    }

    /// The next `getUpdates` is answered `status` with `body`.
    pub fn script(&self, status: u16, body: Value) {
        self.shared.queue.lock().unwrap().scripted.push_back((status, body));
        self.shared.arrived.notify_waiters();
    }

    /// The `getUpdates` answered 409 because another came while they were
    /// held: two pollers at once.
    pub fn conflicts(&self) -> usize {
        self.asked().iter().filter(|a| a.status == 409).count()
    }

    /// Every `getUpdates` asked so far, oldest first.
    pub fn asked(&self) -> Vec<Asked> {
        self.shared.queue.lock().unwrap().asked.clone()
    }

    /// Updates not yet confirmed by an offset past them.
    pub fn unconfirmed(&self) -> usize {
        self.shared.queue.lock().unwrap().updates.len()
    }

    /// Stops serving: the listener closes and open connections drop.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.cancel();
            thread.join().unwrap();
        }
    }

    /// Serves again on the same port, with the updates it held.
    pub fn resume(&mut self) {
        assert!(self.running.is_none(), "the Bot API is serving already");
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (port, shared, cancelled) = (self.port, self.shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the Bot API");
                ready_tx.send(()).unwrap();
                let app = Router::new().route("/{bot}/{method}", any(method)).with_state(shared);
                tokio::select! {
                    served = axum::serve(listener, app) => served.unwrap(),
                    () = cancelled.cancelled() => {}
                }
            });
            // Dropping the runtime drops every connection task with it.
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("the Bot API listens");
        self.running = Some((stop, thread));
    }
}

impl Drop for BotApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Marks a held request gone when its handler ends, answered or dropped.
struct Held {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut queue = self.shared.queue.lock().unwrap();
        if queue.held == Some(self.index) {
            queue.held = None;
        }
    }
}

fn answer(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
}

/// `offset` and `timeout` as Telegram takes them: from the JSON body or the
/// query string.
fn parameters(query: Option<&str>, body: &[u8]) -> (Option<i64>, u64) {
    let mut given: Value = serde_json::from_slice(body).unwrap_or(json!({}));
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        given[name.as_ref()] = json!(value.parse::<i64>().ok());
    }
    (given["offset"].as_i64(), given["timeout"].as_u64().unwrap_or(0))
}

async fn method(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if bot != format!("bot{}", shared.token) {
        return answer(401, json!({"ok": false, "error_code": 401, "description": "Unauthorized"}));
    }
    if method != "getUpdates" {
        return answer(404, json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"}));
    }
    let (offset, timeout) = parameters(query.as_deref(), &body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    // Recorded as it arrives, its status filled in when it is answered.
    let index = {
        let mut queue = shared.queue.lock().unwrap();
        queue.asked.push(Asked { at: Instant::now(), offset, status: 0 });
        let index = queue.asked.len() - 1;
        if let Some((status, body)) = queue.scripted.pop_front() {
            queue.asked[index].status = status;
            return answer(status, body);
        }
        queue.held = Some(index);
        index
    };
    // A request whose client went away is dropped here: it holds nothing.
    let _held = Held { shared: shared.clone(), index };
    shared.arrived.notify_waiters();
    loop {
        let arrived = shared.arrived.notified();
        {
            let mut queue = shared.queue.lock().unwrap();
            if queue.held != Some(index) {
                queue.asked[index].status = 409;
                let description = "Conflict: terminated by other getUpdates request; \
                                   make sure that only one bot instance is running";
                return answer(409, json!({"ok": false, "error_code": 409, "description": description}));
            }
            if let Some(offset) = offset {
                queue.updates.retain(|u| u["update_id"].as_i64().unwrap() >= offset);
            }
            if !queue.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                let result: Vec<Value> = queue.updates.iter().take(100).cloned().collect();
                queue.asked[index].status = 200;
                return answer(200, json!({"ok": true, "result": result}));
            }
        }
        tokio::select! {
            () = arrived => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}
