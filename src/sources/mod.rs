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

use crate::cluster::{Cluster, DutyState};
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
    /// Set when this daemon is one replica of several: what cannot be
    /// shared runs as a [`singleton`].
    pub cluster: Option<Arc<Cluster>>,
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

/// Runs `body` as the singleton duty `duty` — a serial board, an inbox, a
/// feed poller, the filesystem watcher, an unshared MQTT subscription —
/// which is also its name in `/ready`. A daemon alone runs it at once; a
/// replica whenever it holds the duty's lease (docs/cluster.md), handing
/// `body` a context whose `shutdown` is cancelled when the lease is lost,
/// and shows `standby` while another replica holds it.
pub async fn singleton<B>(ctx: SourceContext, duty: String, mut body: impl FnMut(SourceContext) -> B)
where
    B: std::future::Future<Output = ()>,
{
    let Some(cluster) = ctx.cluster.clone() else { return body(ctx).await };
    let health = ctx.health.clone();
    let report = |state: &DutyState| match state {
        DutyState::Held => health.set_status(&duty, health::Status::Connecting, None),
        DutyState::Standby { owner } => {
            health.set_status(&duty, health::Status::Standby, Some(format!("held by replica {owner}")))
        }
        DutyState::Unreachable(why) => {
            health.set_status(&duty, health::Status::Down, Some(format!("cannot take the duty: {why}")))
        }
    };
    let shutdown = ctx.shutdown.clone();
    cluster
        .run_duty(&duty, &shutdown, report, |token: CancellationToken| {
            let mut held = ctx.clone();
            held.shutdown = token;
            body(held)
        })
        .await
}

/// The routes services post their events to (Slack's Events API,
/// Telegram's webhook), for the gateway to serve beside its own. Built
/// before the gateway serves: a secret that cannot be read stops the daemon.
pub fn channel_routes(ctx: &SourceContext) -> Result<axum::Router, String> {
    Ok(slack::routes(ctx)?.merge(telegram::webhook::routes(ctx)?))
}
