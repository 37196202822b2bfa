//! The HTTP gateway (DESIGN §4): the webhook source, pairing, probes, the
//! admin API (runs, approvals, audit) and the agent loop (DESIGN §6), on axum.
//!
//! Handlers stay thin: they check who is calling and what they sent, turn the
//! request into an [`Event`](crate::event::Event), and hand it to the one
//! dispatcher. A reply that says "accepted" is only sent after the
//! dispatcher's commit returned.

mod admin;
mod agent_loop;
pub mod approvals;
pub mod auth;
mod error;
mod ingest;
pub mod limits;
mod outbox;
mod pair;
mod probes;
pub mod untrusted;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub use admin::run_summary;
pub use error::ApiError;

use crate::config::{Config, GatewayConfig};
use crate::dispatch::Dispatcher;
use crate::sources::SourcesHealth;

/// Where `/webhook` sends events no SOP matched.
pub struct AgentTarget {
    pub url: String,
    pub bearer_token: String,
    pub client: reqwest::Client,
}

/// Everything a handler may use; shared by all requests.
pub struct Gateway {
    pub config: GatewayConfig,
    pub dispatcher: Arc<Dispatcher>,
    pub webhook_limit: limits::RateLimit,
    /// Wrong pairing codes per client per minute.
    pub pair_limit: limits::RateLimit,
    pub pairing: auth::Pairing,
    pub agent: Option<AgentTarget>,
    pub health: Arc<SourcesHealth>,
    /// The boards `/peripheral/{board}/…` accepts: those in `[peripherals]`.
    pub boards: std::collections::BTreeSet<String>,
    pub metrics: Option<PrometheusHandle>,
    /// When the agent-loop leases this process granted end.
    pub lease_clock: agent_loop::LeaseClock,
}

pub type AppState = Arc<Gateway>;

impl Gateway {
    pub fn new(
        config: &Config,
        dispatcher: Arc<Dispatcher>,
        health: Arc<SourcesHealth>,
        metrics: Option<PrometheusHandle>,
        pairing_key: auth::PairingKey,
    ) -> Gateway {
        let g = &config.gateway;
        let agent = config.destinations.agent.as_ref().map(|a| AgentTarget {
            url: a.url.clone(),
            bearer_token: a.bearer_token.clone(),
            client: reqwest::Client::builder()
                .timeout(agent_timeout(g.request_timeout_secs))
                .build()
                .expect("HTTP client with default TLS roots"),
        });
        Gateway {
            config: g.clone(),
            dispatcher,
            webhook_limit: limits::RateLimit::per_minute(g.webhook_rate_limit_per_minute),
            pair_limit: limits::RateLimit::per_minute(g.pair_rate_limit_per_minute),
            pairing: auth::Pairing::new(pairing_key),
            agent,
            health,
            boards: config.peripherals.keys().cloned().collect(),
            metrics,
            lease_clock: agent_loop::LeaseClock::default(),
        }
    }

    /// Whether `/sop/*` and SOP-matching `/webhook` requests can be
    /// authenticated at all; without either layer they are refused (§4).
    pub fn auth_configured(&self) -> bool {
        self.config.require_pairing || !self.config.webhook_secret.is_empty()
    }
}

/// The agent call must answer inside the request's own timeout.
fn agent_timeout(request_timeout_secs: u64) -> Duration {
    Duration::from_millis((request_timeout_secs * 1000).saturating_sub(250).max(250))
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/pair", post(pair::pair))
        .route("/webhook", post(ingest::webhook))
        .route("/sop/{*rest}", post(ingest::sop))
        .route("/peripheral/{board}/{signal}", post(ingest::peripheral))
        .route("/health", get(probes::health))
        .route("/ready", get(probes::ready))
        .route("/metrics", get(probes::metrics))
        .route("/admin/runs", get(admin::runs))
        .route("/admin/runs/{id}", get(admin::run))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/sops/{name}/run", post(admin::fire))
        .route("/admin/sop/pending", get(approvals::pending))
        .route("/admin/sop/approve", post(approvals::approve))
        .route("/admin/sop/deny", post(approvals::deny))
        .route("/v1/agent/next", get(agent_loop::next))
        .route("/v1/runs/{run_id}/steps/{n}", post(agent_loop::report))
        .route("/admin/outbox", get(outbox::list))
        .route("/admin/outbox/{id}/retry", post(outbox::retry))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), request_guard))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// The request timeout and the request counter, around every route.
async fn request_guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let limit = Duration::from_secs(state.config.request_timeout_secs);
    let response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout").into_response(),
    };
    metrics::counter!("fanin_http_requests_total",
        "route" => route.unwrap_or_else(|| "unmatched".into()),
        "status" => response.status().as_u16().to_string())
    .increment(1);
    response
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found").with("path", uri.path())
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").with("path", uri.path())
}
