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
use tokio::sync::{mpsc, oneshot};

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
                    let id = delivery.properties.message_id().as_ref().map(|id| id.as_str());
                    let turn = id.map(|id| in_order.turn(id));
                    let (ctx, settings, refused_tx) = (feed.ctx().clone(), settings.clone(), refused_tx.clone());
                    tokio::spawn(async move {
                        let mut turn = turn;
                        if let Some(turn) = &mut turn {
                            turn.wait().await;
                        }
                        handle(ctx, settings, delivery, refused_tx).await;
                        drop(turn);
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
/// later one is its duplicate. A delivery's task waits for the one before
/// it with its id to be done; the consumer loop never waits, so other
/// deliveries go on meanwhile. Deliveries without an id never wait.
#[derive(Default)]
struct SameIdInOrder {
    /// Per id, what the latest delivery with it says when it is done.
    last: std::collections::HashMap<String, oneshot::Receiver<()>>,
}

/// A delivery's place among those with its id: waits for the one before
/// it, and tells the next when dropped.
struct Turn {
    before: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl SameIdInOrder {
    /// Taken in arrival order, before the delivery's task is spawned.
    fn turn(&mut self, id: &str) -> Turn {
        if self.last.len() >= 4096 {
            // Those whose delivery is done (its sender gone) wait for nobody.
            self.last.retain(|_, done| matches!(done.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        }
        let (done, next) = oneshot::channel();
        let before = self.last.insert(id.to_string(), next);
        Turn { before, _done: done }
    }
}

impl Turn {
    /// Cancel-safe: dropped while waiting, a later call waits again.
    async fn wait(&mut self) {
        if let Some(before) = &mut self.before {
            // Never sent: the one before is done when its sender is dropped.
            let _ = before.await;
            self.before = None;
        }
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

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_delivery_waits_only_for_the_one_before_it_with_its_id() {
        let mut in_order = SameIdInOrder::default();
        let mut first = in_order.turn("m-1");
        let mut second = in_order.turn("m-1");
        let mut other = in_order.turn("m-2");
        assert_eq!(first.wait().now_or_never(), Some(()), "the first with its id goes at once");
        assert_eq!(other.wait().now_or_never(), Some(()), "another id never waits");
        let mut waiting = Box::pin(async move {
            second.wait().await;
            second
        });
        assert!(futures_util::poll!(waiting.as_mut()).is_pending(), "the second waits for the first");
        let mut third = in_order.turn("m-1");
        drop(first);
        let second = waiting.await;
        assert!(third.wait().now_or_never().is_none(), "the third waits for the second");
        drop(second);
        assert_eq!(third.wait().now_or_never(), Some(()));
    }

    #[test]
    fn ids_whose_deliveries_are_done_are_forgotten_when_the_map_is_full() {
        let mut in_order = SameIdInOrder::default();
        let held: Vec<Turn> = (0..10).map(|i| in_order.turn(&format!("held-{i}"))).collect();
        for i in 0..5000 {
            drop(in_order.turn(&format!("done-{i}")));
        }
        assert!(in_order.last.len() < 4096 + 10, "{}", in_order.last.len());
        assert!((0..10).all(|i| in_order.last.contains_key(&format!("held-{i}"))), "ids in flight are kept");
        drop(held);
    }
}
