//! `fanin daemon`: starts every part in order, serves, and shuts down
//! explicitly.
//!
//! Start-up refuses on any configuration or SOP error (fail closed). Order:
//! config → SOPs → the store's daemon lock (one daemon per store) → store →
//! dispatcher (admission seeded from the store) → pairing key and code →
//! gateway listener. Shutdown: a signal cancels the token,
//! the gateway stops accepting and finishes in-flight requests (each of which
//! either committed or was not acknowledged), background tasks end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::{Catalog, DispatchSettings, Dispatcher};
use crate::gateway::{self, Gateway};
use crate::operations::pairing;
use crate::registries::{Registries, RegistryEnv, RegistrySettings};
use crate::sop;
use crate::sources::health::Status;
use crate::sources::{self, SourceContext, SourcesHealth};

/// A start-up failure, already worded for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Loads the SOPs a config names; every error is listed.
pub fn load_catalog(config: &Config) -> Result<(Catalog, Vec<String>), Vec<String>> {
    let report = sop::load_dir(&config.sops_dir(), config.sop.default_execution_mode);
    if !report.errors.is_empty() {
        return Err(report.errors.iter().map(ToString::to_string).collect());
    }
    let mut warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    warnings.extend(crate::checks::cross_warnings(config, &report.sops));
    Ok((Catalog::new(report.sops), warnings))
}

pub fn dispatch_settings(config: &Config) -> DispatchSettings {
    DispatchSettings {
        idempotency_ttl: chrono::Duration::seconds(config.gateway.idempotency_ttl_secs as i64),
        payload_cap: config.sop.untrusted_payload_max_bytes,
        max_deferred: config.sop.max_deferred as usize,
        agent_loop_grace: chrono::Duration::seconds(config.sop.agent_loop_grace_secs as i64),
    }
}

/// Builds the dispatcher over the configured store.
pub async fn open_dispatcher(config: &Config, catalog: Catalog) -> Result<Arc<Dispatcher>, StartError> {
    let store = crate::store::open(&config.store.url, &config.base_dir)
        .await
        .map_err(|e| StartError(format!("{}: store.url: {e}", config.file.display())))?;
    // Registries travel only in execution envelopes: load them (from Drive
    // or the local copies) only when some SOP sends to the executor.
    let needs_registries = catalog.sops.iter().any(|s| s.destination == crate::sop::Destination::Executor);
    let mut dispatcher = Dispatcher::new(catalog, store, dispatch_settings(config))
        .await
        .map_err(|e| StartError(format!("store: {e}")))?;
    if config.cluster.is_some() {
        dispatcher = dispatcher.sharing_admission();
    }
    if needs_registries {
        let settings = RegistrySettings::from_config(config, RegistryEnv::from_process_env());
        let registries = Registries::load(settings).await.map_err(|e| StartError(format!("registries: {e}")))?;
        dispatcher = dispatcher.with_registries(Arc::new(registries));
    }
    Ok(Arc::new(dispatcher))
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    // Before anything opens descriptors; the gateway sizes its connection
    // limit from what this leaves.
    gateway::raise_descriptor_limit();
    let (catalog, warnings) = load_catalog(&config).map_err(|errors| StartError(errors.join("\n")))?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(sops = catalog.sops.len(), "SOPs loaded");
    let store_error = |e: crate::store::StoreError| StartError(format!("{}: store.url: {e}", config.file.display()));
    // Held until this function returns: two daemons on one store would run
    // two schedulers, two outbox workers and two admission counts — unless
    // both are replicas, which hand those duties to each other.
    let node_id = config.cluster.as_ref().map(crate::cluster::node_id_of);
    let _lock = crate::store::DaemonLock::acquire(&config.store.url, &config.base_dir, node_id.as_deref())
        .await
        .map_err(store_error)?;
    let dispatcher = open_dispatcher(&config, catalog).await?;
    let store = dispatcher.store().clone();
    let cluster = match (&config.cluster, node_id) {
        (Some(c), Some(node_id)) => {
            tracing::info!(%node_id, lease_secs = c.lease_secs, "running as a replica");
            Some(Arc::new(crate::cluster::Cluster::new(&node_id, c.lease_secs, store.clone())))
        }
        _ => None,
    };
    let key_path = crate::store::pairing_key_path(&config.store.url, &config.base_dir).map_err(store_error)?;
    let pairing_key = pairing::PairingKey::load_or_create(&key_path).map_err(|e| StartError(e.to_string()))?;
    // The live counts of /metrics and /ready start from what the store
    // holds, before anything is written.
    let tallies = store.tallies().await.map_err(|e| StartError(format!("store: {e}")))?;
    store.watch().seed(&tallies);

    if config.gateway.require_pairing {
        let tokens = store.list_tokens().await.map_err(|e| StartError(format!("store: {e}")))?;
        if tokens.iter().all(|t| t.revoked_at.is_some()) {
            let code = pairing::issue_pairing_code(store.as_ref(), &pairing_key, Utc::now())
                .await
                .map_err(|e| StartError(format!("store: {e}")))?;
            println!("Pairing code: {code}");
        }
    }

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().ok();
    let addr = format!("{}:{}", config.gateway.host, config.gateway.port);
    let listener = TcpListener::bind(&addr).await.map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| StartError(e.to_string()))?;
    println!("Listening on {local}");
    tracing::info!(%local, "gateway listening");

    let health = Arc::new(SourcesHealth::default());
    health.set_status(sources::http::SOURCE, Status::Up, None);
    let config = Arc::new(config);
    let ctx = SourceContext {
        config: config.clone(),
        dispatcher: dispatcher.clone(),
        store: store.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
        cluster: cluster.clone(),
    };
    let channels = sources::channel_routes(&ctx).map_err(StartError)?;
    let mut tasks = sources::start_all(&ctx).map_err(StartError)?;
    tasks.push(tokio::spawn(reload_on_hangup(config.clone(), ctx.dispatcher.clone(), shutdown.clone())));
    let delivery = Arc::new(crate::deliver::DeliveryStatus::default());
    tasks.extend(crate::deliver::start(
        &config,
        dispatcher.clone(),
        store.clone(),
        &tallies,
        delivery.clone(),
        cluster.clone(),
        shutdown.clone(),
    ));
    tasks.extend(dispatcher.registries().and_then(|r| r.spawn_refresh(shutdown.clone())));
    // What other processes on a shared store commit wakes the agent loop
    // and the outbox workers here as this one's commits do.
    if let Some(wakeups) = store.wakeups() {
        let (dispatcher, shutdown) = (dispatcher.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move { dispatcher.follow(wakeups, shutdown).await }));
    }
    tasks.push(tokio::spawn(purge_idempotency_keys(
        store.clone(),
        config.gateway.idempotency_ttl_secs,
        shutdown.clone(),
    )));
    let node_id = cluster.as_ref().map(|c| c.node_id().to_string());
    let state = Arc::new(
        Gateway::new(&config, dispatcher, health, delivery, metrics, pairing_key, channels).with_node_id(node_id),
    );
    let stop = shutdown.clone();
    let served = gateway::serve(listener, state, async move { stop.cancelled().await }).await;
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    served.map_err(|e| StartError(format!("gateway: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP reloads the SOP directory. A set with any error is refused whole
/// (each error logged) and the running set stays: never half a reload.
/// `config.toml` itself is read at start only.
async fn reload_on_hangup(config: Arc<Config>, dispatcher: Arc<Dispatcher>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = hangups.recv() => {}
            }
            match load_catalog(&config) {
                Ok((catalog, warnings)) => {
                    for w in &warnings {
                        tracing::warn!("{w}");
                    }
                    tracing::info!(sops = catalog.sops.len(), "SOPs reloaded");
                    dispatcher.replace_catalog(catalog);
                }
                Err(errors) => {
                    for e in &errors {
                        tracing::error!("{e}");
                    }
                    tracing::error!(errors = errors.len(), "SOP reload refused; the running SOPs stay");
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (config, dispatcher);
        shutdown.cancelled().await;
    }
}

/// Expired idempotency keys are dead weight: remove them once per TTL.
async fn purge_idempotency_keys(store: Arc<dyn crate::store::Store>, ttl_secs: u64, shutdown: CancellationToken) {
    let period = Duration::from_secs(ttl_secs.max(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if let Err(e) = store.purge_idempotency(Utc::now()).await {
            tracing::warn!(error = %e, "could not purge expired idempotency keys");
        }
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}
