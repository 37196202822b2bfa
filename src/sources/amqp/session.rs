//! One AMQP session: connect, declare, consume until the connection is
//! lost or the store refuses a dispatch. [`feed::run`](super::feed::run)
//! makes the next one after the backoff.
//!
//! Each delivery is handled in a task of its own that acks (or rejects)
//! it when its dispatch returns; the tasks are not tied to the session, so
//! one whose dispatch is being committed finishes and acks even while the
//! session ends, and a delivery is never left committed but unacked for
//! want of a task.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::{AMQPUriTcpExt, RustlsConnector, TcpStream};
use lapin::types::FieldTable;
use lapin::uri::AMQPScheme;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::mpsc;

use super::delivery::{self, Outcome, Received};
use super::{Settings, SOURCE};
use crate::sources::feed::{Feed, SourceError};
use crate::sources::SourceContext;

/// How long connecting (TCP, TLS, the AMQP handshake) and each set-up step
/// may take before the session counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Consumes until the session fails; returns only an error.
pub async fn run(feed: &Feed, settings: &Arc<Settings>) -> Result<(), SourceError> {
    let connection = step("cannot connect", connect(settings)).await?;
    let channel = step("cannot open a channel", connection.create_channel()).await?;
    declare(&channel, settings).await?;
    step("basic.qos", channel.basic_qos(settings.prefetch, BasicQosOptions::default())).await?;
    let mut consumer = step(
        &format!("cannot consume from queue {:?}", settings.queue),
        channel.basic_consume(&settings.queue, "", BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await?;
    feed.up();

    // A delivery the store refused ends the session: it and every unacked
    // one go back to the queue, and the backoff paces the retry.
    let (refused_tx, mut refused) = mpsc::unbounded_channel::<String>();
    let mut in_order = SameIdInOrder::default();
    let reason = loop {
        tokio::select! {
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let turn = in_order.turn(&delivery).await;
                    let (ctx, settings, refused_tx) = (feed.ctx().clone(), settings.clone(), refused_tx.clone());
                    tokio::spawn(async move {
                        let _turn = turn;
                        handle(ctx, settings, delivery, refused_tx).await
                    });
                }
                Some(Err(e)) => break format!("connection lost: {e}"),
                None => break "the broker cancelled the consumer".to_string(),
            },
            Some(reason) = refused.recv() => {
                let _ = connection.close(lapin::protocol::constants::REPLY_SUCCESS, "store unavailable").await;
                break reason;
            }
        }
    };
    Err(SourceError::new(reason))
}

/// Deliveries are dispatched concurrently, but two that carry the same
/// `message_id` (a publisher's retry) are dispatched in the order they
/// arrived, so the first one's body is the one that starts the run and the
/// later one is its duplicate. A delivery waits for the turn of the one
/// before it with its id; deliveries without an id never wait.
#[derive(Default)]
struct SameIdInOrder {
    last: std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl SameIdInOrder {
    /// Taken before the delivery's task is spawned, so the order is the
    /// arrival order; held by that task until its dispatch is done.
    async fn turn(&mut self, delivery: &lapin::message::Delivery) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let id = delivery.properties.message_id().as_ref()?.as_str().to_string();
        if self.last.len() >= 4096 {
            self.last.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        let lock = self.last.entry(id).or_default().clone();
        Some(lock.lock_owned().await)
    }
}

/// TCP (and TLS for `amqps://`) with rustls and fanin's roots, then the
/// AMQP handshake, on tokio.
async fn connect(settings: &Arc<Settings>) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("fanin {}", settings.client_label).into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    let tls = settings.tls.clone();
    // The error type is lapin's connector's, not ours to make smaller.
    #[allow(clippy::result_large_err)]
    let open = move |uri: &lapin::uri::AMQPUri| {
        let stream = match (&uri.scheme, &tls) {
            (AMQPScheme::AMQPS, Some(config)) => {
                let mut plain = uri.clone();
                plain.scheme = AMQPScheme::AMQP;
                let stream: TcpStream = plain.connect()?;
                stream.set_nonblocking(false)?;
                let connector = RustlsConnector::from(config.clone());
                stream.into_rustls(&connector, &uri.authority.host)?
            }
            _ => uri.connect()?,
        };
        stream.set_nonblocking(true)?;
        Ok(stream)
    };
    Connection::connector(settings.uri.clone(), Box::new(open), properties).await
}

/// The exchange (unless the default one), the queue and its bindings, all
/// durable. A broker-owned `amq.*` exchange cannot be declared, only
/// checked.
async fn declare(channel: &Channel, settings: &Settings) -> Result<(), SourceError> {
    if !settings.exchange.is_empty() {
        let options = ExchangeDeclareOptions {
            passive: settings.exchange.starts_with("amq."),
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let what = format!("cannot declare exchange {:?}", settings.exchange);
        let declared =
            channel.exchange_declare(&settings.exchange, settings.kind.clone(), options, FieldTable::default());
        step(&what, declared).await?;
    }
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let what = format!("cannot declare queue {:?}", settings.queue);
    step(&what, channel.queue_declare(&settings.queue, options, settings.queue_arguments.clone())).await?;
    for binding in &settings.bindings {
        let what = format!("cannot bind queue {:?} to {:?} with {binding:?}", settings.queue, settings.exchange);
        let bound = channel.queue_bind(
            &settings.queue,
            &settings.exchange,
            binding,
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        step(&what, bound).await?;
    }
    Ok(())
}

/// One set-up step, timed out, its error worded for `/ready`.
async fn step<T>(what: &str, call: impl Future<Output = lapin::Result<T>>) -> Result<T, SourceError> {
    match tokio::time::timeout(STEP_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(SourceError::new(format!("{what}: {e}"))),
        Err(_) => Err(SourceError::new(format!("{what}: no answer within {}s", STEP_TIMEOUT.as_secs()))),
    }
}

/// Reads, dispatches (or refuses) and then acks one delivery; when the
/// store refuses, rejects it with requeue and tells the session.
async fn handle(
    ctx: SourceContext,
    settings: Arc<Settings>,
    delivery: lapin::message::Delivery,
    refused: mpsc::UnboundedSender<String>,
) {
    let received_at = Utc::now();
    ctx.health.event_seen(SOURCE, received_at);
    metrics::counter!("fanin_source_events_total", "source" => SOURCE).increment(1);
    let received = Received {
        exchange: delivery.exchange.as_str(),
        routing_key: delivery.routing_key.as_str(),
        redelivered: delivery.redelivered,
        properties: &delivery.properties,
        body: &delivery.data,
        received_at,
    };
    let done = match delivery::read(&received, settings.limits, &settings.client_label) {
        // Boxed so the task stays small (see the MQTT listener).
        Outcome::Dispatch(event) => Box::pin(ctx.dispatcher.dispatch(*event)).await.map(|_| ()),
        Outcome::Refuse(refusal) => {
            tracing::debug!(routing_key = %refusal.topic, reason = refusal.reason, "AMQP delivery refused");
            Box::pin(ctx.dispatcher.refuse(refusal)).await
        }
    };
    match done {
        Ok(()) => {
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                tracing::debug!(error = %e, "AMQP ack not sent; the broker will redeliver");
            }
        }
        Err(error) => {
            metrics::counter!("fanin_amqp_dispatch_failures_total").increment(1);
            tracing::error!(routing_key = %delivery.routing_key, %error,
                "AMQP delivery not dispatched; rejected with requeue");
            let _ = delivery.reject(BasicRejectOptions { requeue: true }).await;
            let _ = refused.send(format!("dropped the connection after a failed dispatch ({error})"));
        }
    }
}
