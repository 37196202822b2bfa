//! Event sources: each receives and normalizes, nothing more —
//! matching, admission and audit stay in the dispatcher. The HTTP routes
//! (webhooks, bridges, Slack, Telegram's webhook) are served by the
//! gateway's listener; MQTT, the cron scheduler, serial peripherals, the
//! inboxes, the Drive and Telegram feeds, the AMQP consumer and the
//! filesystem watcher run here as tasks. Each `start` starts nothing when
//! its source is not configured.

pub mod amqp;
pub mod drive;
pub mod email;
pub mod feed;
pub mod filesystem;
pub mod health;
pub mod http;
pub mod link;
pub mod mqtt;
pub mod peripheral;
pub mod pushed;
pub mod scheduler;
pub mod slack;
pub mod telegram;
pub mod tls;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::store::Store;
pub use health::SourcesHealth;

/// What every source task is given.
#[derive(Clone)]
pub struct SourceContext {
    pub config: Arc<Config>,
    pub dispatcher: Arc<Dispatcher>,
    /// The store the dispatcher commits to, for a source's own bookkeeping
    /// (the cron scheduler's last checks).
    pub store: Arc<dyn Store>,
    pub health: Arc<SourcesHealth>,
    pub shutdown: CancellationToken,
}

/// A running source task.
pub type SourceTask = tokio::task::JoinHandle<()>;

/// Starts every configured source. An error (unreadable CA file, …) is
/// worded for the operator and stops the daemon before it serves.
pub fn start_all(ctx: &SourceContext) -> Result<Vec<SourceTask>, String> {
    let mut tasks = Vec::new();
    tasks.extend(mqtt::start(ctx)?);
    tasks.extend(email::start(ctx)?);
    tasks.extend(scheduler::start(ctx)?);
    tasks.extend(peripheral::start(ctx)?);
    tasks.extend(drive::start(ctx)?);
    tasks.extend(telegram::start(ctx)?);
    tasks.extend(amqp::start(ctx)?);
    tasks.extend(filesystem::start(ctx)?);
    Ok(tasks)
}

/// The routes services post their events to (Slack's Events API,
/// Telegram's webhook), for the gateway to serve beside its own. Built
/// before the gateway serves: a secret that cannot be read stops the daemon.
pub fn channel_routes(ctx: &SourceContext) -> Result<axum::Router, String> {
    Ok(slack::routes(ctx)?.merge(telegram::webhook::routes(ctx)?))
}
