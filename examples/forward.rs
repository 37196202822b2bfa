//! The *floor forwarder* of the delivery benchmark (scripts/bench/delivery.sh,
//! BENCHMARKS.md): a stateless HTTP server that takes each request's body and
//! POSTs it to a sink, answering once the sink did. No auth, matching,
//! storage or retries: what this machine allows for "a request in, a request
//! out" alone, so that fanin's delivered envelopes per second can be read as
//! a fraction of it. Its client keeps connections alive in a pool, as
//! fanin's outbox worker does.
//!
//! `cargo run --release --example forward -- SINK_URL [ADDR]` (ADDR default
//! 127.0.0.1:0); prints `Listening on <addr>` once it accepts connections.
//! Same runtime as the daemon: tokio's multi-thread scheduler.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;

const REPLY: &str = r#"{"status":"forwarded"}"#;

#[derive(Clone)]
struct Sink {
    url: String,
    http: reqwest::Client,
}

async fn forward(State(sink): State<Sink>, body: Bytes) -> impl IntoResponse {
    let sent = sink.http.post(&sink.url).header(CONTENT_TYPE, "application/json").body(body).send().await;
    let status = match sent {
        Ok(response) => {
            let ok = response.status().is_success();
            // Read to the end, so the connection goes back to the pool (as
            // fanin's worker does).
            let _ = response.bytes().await;
            if ok {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            }
        }
        Err(_) => StatusCode::BAD_GATEWAY,
    };
    (status, [(CONTENT_TYPE, "application/json")], REPLY)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: forward SINK_URL [ADDR]");
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".to_string());
    let http = reqwest::Client::builder().build().expect("HTTP client");
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("Listening on {}", listener.local_addr()?);
    let app = Router::new().fallback(forward).with_state(Sink { url, http });
    axum::serve(listener, app).await
}
