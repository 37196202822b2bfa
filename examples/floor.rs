//! The *floor* server of the webhook benchmark (BENCHMARKS.md): a
//! plain axum handler that reads the request body and answers a fixed JSON,
//! with no auth, matching or storage. Loaded with the same generator as
//! fanin in the same run, it says what this machine allows for HTTP alone,
//! so fanin's figure can be read as a fraction of it.
//!
//! It is also the *sink* of the delivery benchmark (scripts/bench/delivery.sh):
//! it counts the requests it answered, and `GET /count` says how many, so the
//! script can tell how many envelopes (or forwarded requests) arrived when.
//!
//! `cargo run --release --example floor [-- ADDR]` (default 127.0.0.1:0);
//! prints `Listening on <addr>` once it accepts connections. Same runtime as
//! the daemon: tokio's multi-thread scheduler with its default worker count.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const REPLY: &str = r#"{"status":"accepted","matched_sops":["bench"],"source":"sop_webhook","path":"/sop/bench"}"#;

/// Requests answered by `accept`; a relaxed counter, read only by `/count`.
static ANSWERED: AtomicU64 = AtomicU64::new(0);

/// Takes the whole body, as fanin does before it parses it.
async fn accept(body: Bytes) -> impl IntoResponse {
    std::hint::black_box(body.len());
    ANSWERED.fetch_add(1, Ordering::Relaxed);
    ([(CONTENT_TYPE, "application/json")], REPLY)
}

async fn count() -> String {
    ANSWERED.load(Ordering::Relaxed).to_string()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("Listening on {}", listener.local_addr()?);
    let app = Router::new().route("/count", get(count)).fallback(accept);
    axum::serve(listener, app).await
}
