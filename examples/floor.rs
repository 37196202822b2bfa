//! The *floor* server of the webhook benchmark (issue 5, BENCHMARKS.md): a
//! plain axum handler that reads the request body and answers a fixed JSON,
//! with no auth, matching or storage. Loaded with the same generator as
//! fanin in the same run, it says what this machine allows for HTTP alone,
//! so fanin's figure can be read as a fraction of it.
//!
//! `cargo run --release --example floor [-- ADDR]` (default 127.0.0.1:0);
//! prints `Listening on <addr>` once it accepts connections. Same runtime as
//! the daemon: tokio's multi-thread scheduler with its default worker count.

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Router;

const REPLY: &str = r#"{"status":"accepted","matched_sops":["bench"],"source":"sop_webhook","path":"/sop/bench"}"#;

/// Takes the whole body, as fanin does before it parses it.
async fn accept(body: Bytes) -> impl IntoResponse {
    std::hint::black_box(body.len());
    ([(CONTENT_TYPE, "application/json")], REPLY)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("Listening on {}", listener.local_addr()?);
    let app = Router::new().fallback(accept);
    axum::serve(listener, app).await
}
