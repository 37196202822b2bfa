//! A destination (Executor or Agent) for whole-daemon tests: a real HTTP
//! server that refuses the first `refuse` requests with 500, then accepts,
//! recording every request; while held, it records a request's arrival
//! and keeps it unanswered until released (a delivery in flight).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

pub struct Destination {
    pub url: String,
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub refuse: Arc<AtomicUsize>,
    /// The `Idempotency-Key` of every request as it arrives.
    pub arrived: Arc<Mutex<Vec<Option<String>>>>,
    hold: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    pub envelope: Value,
    pub accepted: bool,
}

impl Destination {
    pub async fn start(refuse: usize) -> Destination {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Destination::serve(listener, refuse)
    }

    /// Serves on `port` (a port a previous test step left free).
    pub async fn start_on(port: u16) -> Destination {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Destination::serve(listener, 0)
    }

    fn serve(listener: tokio::net::TcpListener, refuse: usize) -> Destination {
        use axum::routing::post;
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(AtomicUsize::new(refuse));
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let hold = tokio::sync::watch::Sender::new(false);
        let (log, left, arrivals, gate) = (seen.clone(), refuse.clone(), arrived.clone(), hold.clone());
        let app = axum::Router::new().route(
            "/in",
            post(move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                let (log, left, arrivals, mut gate) = (log.clone(), left.clone(), arrivals.clone(), gate.subscribe());
                async move {
                    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
                    arrivals.lock().unwrap().push(header("idempotency-key"));
                    gate.wait_for(|held| !*held).await.expect("the destination outlives its requests");
                    let accepted = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err();
                    log.lock().unwrap().push(Seen {
                        idempotency_key: header("idempotency-key"),
                        authorization: header("authorization"),
                        envelope: body.0,
                        accepted,
                    });
                    if accepted {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Destination { url: format!("http://127.0.0.1:{port}/in"), port, seen, refuse, arrived, hold }
    }

    /// Requests from now on wait unanswered until [`Destination::release`].
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Answers the held requests and those after them.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    pub fn accepted(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.accepted).cloned().collect()
    }
}
