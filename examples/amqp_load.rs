//! The load generator and the bare consumer of the AMQP ingest benchmark
//! (scripts/bench/amqp_ingest.sh, BENCHMARKS.md).
//!
//! - `publish URL EXCHANGE QUEUE PREFIX COUNT`: declares what fanin declares
//!   (a durable topic exchange, a durable queue without arguments, bound with
//!   `PREFIX.#`), so the messages wait in the queue for whoever consumes it
//!   later; then publishes COUNT persistent JSON messages on
//!   `PREFIX.dev-<n>.alert`, each with a `message_id` of its own, and waits
//!   for the broker's confirm of every one. Prints `sent=… seconds=… rate=…`.
//! - `consume URL QUEUE EXPECT PREFETCH IDLE_SECS`: a bare consumer with
//!   fanin's settings (`basic.qos(PREFETCH)`, manual acks, one ack per
//!   delivery) that reads nothing and stores nothing; prints `ready` once
//!   consuming, then, when EXPECT were acked or nothing came for IDLE_SECS,
//!   `received=… seconds=… rate=…` (seconds from the first delivery to the
//!   last ack): the floor the broker and the client library set.
//! - `delete URL EXCHANGE QUEUE…`: removes what the run declared.
//!
//! The publisher keeps a bounded window of unconfirmed messages, so it goes
//! as fast as the broker takes persistent messages without holding all of
//! them in memory.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::constants::REPLY_SUCCESS;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

const USAGE: &str = "usage: amqp_load publish URL EXCHANGE QUEUE PREFIX COUNT \
                     | consume URL QUEUE EXPECT PREFETCH IDLE_SECS | delete URL EXCHANGE QUEUE...";

/// Unconfirmed publishes kept in flight.
const CONFIRM_WINDOW: usize = 2048;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["publish", url, exchange, queue, prefix, count] => match count.parse() {
            Ok(count) => publish(url, exchange, queue, prefix, count).await,
            _ => Err(USAGE.to_string()),
        },
        ["consume", url, queue, expect, prefetch, idle] => match (expect.parse(), prefetch.parse(), idle.parse()) {
            (Ok(expect), Ok(prefetch), Ok(idle)) => {
                consume(url, queue, expect, prefetch, Duration::from_secs(idle)).await
            }
            _ => Err(USAGE.to_string()),
        },
        ["delete", url, exchange, queues @ ..] => delete(url, exchange, queues).await,
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("amqp_load: {reason}");
            ExitCode::FAILURE
        }
    }
}

async fn channel(url: &str) -> Result<(Connection, Channel), String> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    let connection = Connection::connect(url, properties).await.map_err(|e| format!("broker: {e}"))?;
    let channel = connection.create_channel().await.map_err(|e| format!("channel: {e}"))?;
    Ok((connection, channel))
}

fn payload(seq: u64) -> Vec<u8> {
    format!(r#"{{"seq":{seq},"sensor":"t-{}","severity":3,"reading":{{"celsius":21.5}}}}"#, seq % 16).into_bytes()
}

async fn publish(url: &str, exchange: &str, queue: &str, prefix: &str, count: u64) -> Result<(), String> {
    let (connection, channel) = channel(url).await?;
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(exchange, ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .map_err(|e| format!("exchange: {e}"))?;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue, durable, FieldTable::default()).await.map_err(|e| format!("queue: {e}"))?;
    let binding = format!("{prefix}.#");
    channel
        .queue_bind(queue, exchange, &binding, QueueBindOptions::default(), FieldTable::default())
        .await
        .map_err(|e| format!("bind: {e}"))?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| format!("confirms: {e}"))?;

    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(CONFIRM_WINDOW);
    for seq in 0..count {
        if pending.len() >= CONFIRM_WINDOW {
            confirmed(pending.pop_front()).await?;
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(format!("{queue}-{seq}").into());
        let key = format!("{prefix}.dev-{}.alert", seq % 16);
        let confirm = channel
            .basic_publish(exchange, &key, BasicPublishOptions::default(), &payload(seq), properties)
            .await
            .map_err(|e| format!("publish: {e}"))?;
        pending.push_back(confirm);
    }
    while let Some(confirm) = pending.pop_front() {
        confirmed(Some(confirm)).await?;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("sent={count} seconds={seconds:.3} rate={:.0}", count as f64 / seconds);
    let _ = connection.close(REPLY_SUCCESS, "done").await;
    Ok(())
}

async fn confirmed(confirm: Option<lapin::publisher_confirm::PublisherConfirm>) -> Result<(), String> {
    let Some(confirm) = confirm else { return Ok(()) };
    let confirmation = confirm.await.map_err(|e| format!("confirm: {e}"))?;
    if confirmation.is_ack() {
        Ok(())
    } else {
        Err("the broker refused a message (nack)".to_string())
    }
}

async fn consume(url: &str, queue: &str, expect: u64, prefetch: u16, idle: Duration) -> Result<(), String> {
    let (connection, channel) = channel(url).await?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(|e| format!("qos: {e}"))?;
    let mut deliveries = channel
        .basic_consume(queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| format!("consume: {e}"))?;
    println!("ready");
    let (mut received, mut first, mut last) = (0u64, None, Instant::now());
    while received < expect {
        match tokio::time::timeout(idle, deliveries.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => return Err(format!("broker: {e} after {received} messages")),
            Ok(Some(Ok(delivery))) => {
                first.get_or_insert_with(Instant::now);
                delivery.ack(BasicAckOptions::default()).await.map_err(|e| format!("ack: {e}"))?;
                received += 1;
                last = Instant::now();
            }
        }
    }
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let rate = if seconds > 0.0 { received as f64 / seconds } else { 0.0 };
    println!("received={received} seconds={seconds:.3} rate={rate:.0}");
    let _ = connection.close(REPLY_SUCCESS, "done").await;
    Ok(())
}

async fn delete(url: &str, exchange: &str, queues: &[&str]) -> Result<(), String> {
    let (connection, channel) = channel(url).await?;
    for queue in queues {
        channel.queue_delete(queue, QueueDeleteOptions::default()).await.map_err(|e| format!("{queue}: {e}"))?;
    }
    channel
        .exchange_delete(exchange, ExchangeDeleteOptions::default())
        .await
        .map_err(|e| format!("{exchange}: {e}"))?;
    let _ = connection.close(REPLY_SUCCESS, "done").await;
    Ok(())
}
