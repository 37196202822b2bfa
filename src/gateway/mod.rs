//! The HTTP gateway (docs/operations.md): one listener behind its own accept
//! loop ([`server`]) serving the HTTP source's webhook routes
//! (`sources::http`) beside pairing, probes, the admin API (runs, approvals,
//! audit, outbox), the console (`/ui`) and the agent loop, on axum.
//!
//! Handlers stay thin: they check who is calling and what they sent, and
//! call one operation (`crate::operations`) or the dispatcher. A reply that
//! says "accepted" is only sent after the commit returned.

mod admin;
mod agent_loop;
pub mod approvals;
mod console;
mod error;
mod extract;
mod outbox;
mod pair;
mod probes;
pub mod server;
pub mod untrusted;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower::ServiceExt;

pub use admin::run_summary;
pub use server::raise_descriptor_limit;

use crate::config::{Config, GatewayConfig};
use crate::dispatch::Dispatcher;
pub use crate::http::ApiError;
use crate::http::{auth::Callers, path};
use crate::operations::pairing::{Pairing, PairingKey};
use crate::sources::http::{AgentTarget, HttpSource};
use crate::sources::SourcesHealth;
use crate::store::Store;

/// Everything a handler may use; shared by all requests.
pub struct Gateway {
    pub config: GatewayConfig,
    /// Admission and run moves; handlers that only read or write records
    /// use `store`.
    pub dispatcher: Arc<Dispatcher>,
    /// The store the dispatcher commits to, for reads and for operations
    /// that move no run.
    pub store: Arc<dyn Store>,
    /// Who is calling, shared with the HTTP source.
    pub callers: Arc<Callers>,
    /// The webhook routes, served beside the gateway's own.
    pub http: Arc<HttpSource>,
    /// The routes chat services post to (`sources::channel_routes`).
    pub channels: Router,
    /// Wrong pairing codes per client per minute.
    pub pair_limit: crate::http::limits::RateLimit,
    pub pairing: Pairing,
    pub health: Arc<SourcesHealth>,
    /// What the outbox worker says of each destination.
    pub delivery: Arc<crate::deliver::DeliveryStatus>,
    pub metrics: Option<PrometheusHandle>,
    /// When the agent-loop leases this process granted end.
    pub lease_clock: agent_loop::LeaseClock,
    /// This replica's `cluster.node_id` (`None`: the daemon is alone).
    pub node_id: Option<String>,
    /// The keys of the console's CSRF tokens and sign-ins.
    pub console: console::Console,
}

pub type AppState = Arc<Gateway>;

impl Gateway {
    pub fn new(
        config: &Config,
        dispatcher: Arc<Dispatcher>,
        health: Arc<SourcesHealth>,
        delivery: Arc<crate::deliver::DeliveryStatus>,
        metrics: Option<PrometheusHandle>,
        pairing_key: PairingKey,
        channels: Router,
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
        let store = dispatcher.store().clone();
        let callers = Arc::new(Callers::new(g, store.clone()));
        let http = Arc::new(HttpSource {
            config: g.clone(),
            dispatcher: dispatcher.clone(),
            callers: callers.clone(),
            agent,
            boards: config.peripherals.keys().cloned().collect(),
            health: health.clone(),
        });
        let console = console::Console::new(&pairing_key);
        Gateway {
            config: g.clone(),
            store,
            dispatcher,
            callers,
            http,
            channels,
            pair_limit: crate::http::limits::RateLimit::per_minute(g.pair_rate_limit_per_minute),
            pairing: Pairing::new(pairing_key),
            health,
            delivery,
            metrics,
            lease_clock: agent_loop::LeaseClock::default(),
            node_id: None,
            console,
        }
    }

    /// The gateway of the replica `node_id`, which `/ready` names.
    pub fn with_node_id(mut self, node_id: Option<String>) -> Gateway {
        self.node_id = node_id;
        self
    }
}

/// The agent call must answer inside the request's own timeout.
fn agent_timeout(request_timeout_secs: u64) -> Duration {
    Duration::from_millis((request_timeout_secs * 1000).saturating_sub(250).max(250))
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/pair", post(pair::pair))
        .route("/health", get(probes::health))
        .route("/ready", get(probes::ready))
        .route("/metrics", get(probes::metrics))
        .route("/admin/runs", get(admin::runs))
        .route("/admin/runs/{id}", get(admin::run))
        .route("/admin/runs/{id}/cancel", post(admin::cancel))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/sops/{name}/run", post(admin::fire))
        .route("/admin/sop/pending", get(approvals::pending))
        .route("/admin/sop/approve", post(approvals::approve))
        .route("/admin/sop/deny", post(approvals::deny))
        .route("/v1/agent/next", get(agent_loop::next))
        .route("/v1/runs/{run_id}/steps/{n}", post(agent_loop::report))
        .route("/admin/outbox", get(outbox::list))
        .route("/admin/outbox/{id}/retry", post(outbox::retry))
        .with_state(state.clone())
        .merge(console::routes(state.clone()))
        .merge(crate::sources::http::routes(state.http.clone()))
        .merge(state.channels.clone())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state, request_guard))
        .layer(middleware::from_fn(console::security_headers))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
/// Connections are held to `[gateway]`'s header-read and idle timeouts and
/// its connection limit (see [`server`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let descriptors = server::descriptor_limit();
    let limits = server::ConnectionLimits::new(&state.config, descriptors);
    let budget = server::default_max_connections(descriptors);
    if limits.max_connections > budget {
        tracing::warn!(
            max_connections = limits.max_connections,
            descriptor_limit = descriptors,
            budget,
            "gateway.max_connections is more than the descriptor limit leaves room for; \
             expect accept errors (too many open files) under load"
        );
    }
    tracing::info!(
        max_connections = limits.max_connections,
        descriptor_limit = descriptors,
        header_read_timeout = ?limits.header_read_timeout,
        idle_timeout = ?limits.idle_timeout,
        "gateway connection limits"
    );
    let app = router(state);
    server::serve(listener, limits, move |peer, request| handle(app.clone(), peer, request), shutdown).await
}

/// Each request, before routing: its path in its one spelling (see
/// [`path`]), and the peer for the handlers.
async fn handle(app: Router, peer: SocketAddr, mut request: Request<Incoming>) -> Response {
    if let Err(e) = canonical_path(&mut request) {
        return e.into_response();
    }
    request.extensions_mut().insert(ConnectInfo(peer));
    match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Rewrites the request's path into its canonical form, or refuses it.
fn canonical_path<B>(request: &mut Request<B>) -> Result<(), ApiError> {
    let refuse = |reason: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path").with("detail", reason);
    let canonical = match path::normalise(request.uri().path()) {
        Ok(None) => return Ok(()),
        Ok(Some(canonical)) => canonical,
        Err(e) => return Err(refuse(e.reason()).with("path", request.uri().path())),
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{canonical}?{query}"),
        None => canonical,
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| refuse("the path cannot be normalised"))?);
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| refuse("the path cannot be normalised"))?;
    Ok(())
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
