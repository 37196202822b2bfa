//! The MQTT listener task: one connection at a time, from connect to loss,
//! then the backoff, then the next. Within a connection, messages are
//! dispatched concurrently and acknowledged in arrival order.
//!
//! rumqttc's event loop runs in a task of its own ([`poll_events`]) and is
//! never cancelled half-way through a poll (which could lose an ack being
//! written); a connection is abandoned by aborting that task, which drops the
//! socket. Each connection gets a fresh client and event loop, so nothing
//! queued for a dead connection (an ack for a message the broker will
//! redeliver) leaks into the next one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use super::protocol::{AckToken, Client, Connection, Failure, Heard, Message};
use super::{Settings, SOURCE};
use crate::backoff::Backoff;
use crate::dispatch::{DispatchError, Refusal};
use crate::event::{self, Event, Source, TooDeep};
use crate::sources::health::Status;
use crate::sources::link::{self, LinkLog, Say};
use crate::sources::SourceContext;

/// How long shutdown waits for dispatches in flight (and their acks).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long shutdown waits for the DISCONNECT to be written.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// Events read ahead from the event loop.
const EVENT_BUFFER: usize = 64;

pub struct Listener {
    ctx: SourceContext,
    /// Shared by every listener a replica starts as it takes the duty.
    settings: Arc<Settings>,
    log: LinkLog,
}

/// How one connection ended.
enum Ended {
    Shutdown,
    /// Lost, refused or abandoned, with the reason, and whether the
    /// connection had lasted long enough to count as healthy.
    Lost {
        reason: String,
        stable: bool,
    },
}

/// A message being dispatched, in arrival order.
struct InFlight {
    /// What to acknowledge once the dispatch is durable (QoS ≥ 1 only).
    ack: Option<AckToken>,
    topic: String,
    task: JoinHandle<Result<(), DispatchError>>,
}

impl Listener {
    pub fn new(ctx: SourceContext, settings: Arc<Settings>) -> Listener {
        Listener { ctx, settings, log: LinkLog::default() }
    }

    /// Connects, listens, reconnects, until shutdown.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(link::INITIAL, link::CAP);
        loop {
            match self.connection().await {
                Ended::Shutdown => break,
                Ended::Lost { reason, stable } => {
                    self.report_lost(&reason);
                    if stable {
                        backoff.reset();
                    }
                    let wait = backoff.next_delay(rand::random::<f64>());
                    tokio::select! {
                        _ = self.ctx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    self.ctx.health.update(SOURCE, |s| s.reconnects += 1);
                }
            }
        }
        tracing::info!(broker = %self.settings.broker, "MQTT listener stopped");
    }

    /// One connection, from the first attempt to its end.
    async fn connection(&mut self) -> Ended {
        // Past `max_in_flight` dispatches reading pauses (QoS 0 has no
        // broker-side flow control). rumqttc's request queue (subscriptions,
        // acks) is larger than anything that can be outstanding, so queuing
        // an ack never blocks the listener.
        let max_in_flight = self.settings.max_in_flight;
        let (client, eventloop) = self.settings.options.connect(4 * max_in_flight);
        let (events_tx, mut events) = mpsc::channel(EVENT_BUFFER);
        let poller = tokio::spawn(poll_events(eventloop, events_tx));
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut progress = Progress::default();

        // Each wake-up handles a run of what is ready (finished dispatches,
        // queued events), not one item: at tens of thousands of messages a
        // second this task is the one serial step of the source.
        let reason = loop {
            let room = in_flight.len() < max_in_flight;
            tokio::select! {
                biased;
                _ = self.ctx.shutdown.cancelled() => {
                    self.shut_down(client, poller, events, in_flight).await;
                    return Ended::Shutdown;
                }
                done = front_done(&mut in_flight) => {
                    if let Err(reason) = self.acknowledge_finished(&client, &mut in_flight, done) {
                        // An ack cannot be queued once the connection died:
                        // its own error, if already known, says more.
                        break pending_error(&mut events, &progress).unwrap_or(reason);
                    }
                }
                event = events.recv(), if room => {
                    let mut next = Some(event);
                    let mut outcome = Ok(());
                    while let Some(event) = next.take() {
                        outcome = self.on_event(&client, event, &mut in_flight, &mut progress);
                        if outcome.is_err() || in_flight.len() >= max_in_flight {
                            break;
                        }
                        next = events.try_recv().ok().map(Some);
                    }
                    if let Err(reason) = outcome {
                        break reason;
                    }
                }
            }
        };

        // Abandon the connection first: nothing more is acknowledged on it,
        // so the broker redelivers every message not acknowledged yet.
        poller.abort();
        settle(in_flight, &self.ctx.shutdown).await;
        let stable = progress.connected_at.is_some_and(|at| at.elapsed() >= link::STABLE_AFTER);
        Ended::Lost { reason, stable }
    }

    /// Handles one report of the event loop; an `Err` ends the connection,
    /// with the reason.
    fn on_event(
        &mut self,
        client: &Client,
        event: Option<Result<Heard, Failure>>,
        in_flight: &mut VecDeque<InFlight>,
        progress: &mut Progress,
    ) -> Result<(), String> {
        match event {
            Some(Ok(Heard::Connected { session_present })) => {
                progress.connected_at = Some(Instant::now());
                self.on_connack(client, session_present)
            }
            Some(Ok(Heard::Subscribed { refused })) => {
                progress.subscribed = true;
                self.on_suback(&refused);
                Ok(())
            }
            Some(Ok(Heard::Message(message))) => {
                in_flight.push_back(self.dispatch(message));
                Ok(())
            }
            Some(Ok(Heard::DisconnectSent | Heard::Other)) => Ok(()),
            Some(Err(failure)) => Err(describe(&failure, progress)),
            None => Err("the MQTT event loop stopped".to_string()),
        }
    }

    fn on_connack(&mut self, client: &Client, session_present: bool) -> Result<(), String> {
        if self.log.connected() == Say::Loud {
            let protocol = self.settings.options.protocol();
            tracing::info!(broker = %self.settings.broker, ?protocol, session_present, "MQTT connected");
        }
        client
            .try_subscribe(&self.settings.filters, self.settings.qos)
            .map_err(|e| format!("could not queue the subscriptions: {e}"))
    }

    fn on_suback(&mut self, refused: &[(usize, Option<String>)]) {
        let refused: Vec<String> = refused
            .iter()
            .map(|(i, reason)| {
                let filter = self.settings.filters.get(*i).map_or("?", String::as_str);
                match reason {
                    Some(reason) => format!("{filter} ({reason})"),
                    None => filter.to_string(),
                }
            })
            .collect();
        if refused.is_empty() {
            self.ctx.health.set_status(SOURCE, Status::Up, None);
            tracing::debug!(filters = self.settings.filters.len(), "MQTT subscriptions granted");
        } else {
            let detail = format!("the broker refused the subscription to {}", refused.join(", "));
            tracing::error!(broker = %self.settings.broker, "{detail}; check the broker's ACL for this client");
            self.ctx.health.set_status(SOURCE, Status::Down, Some(detail));
        }
    }

    fn report_lost(&mut self, reason: &str) {
        self.ctx.health.set_status(SOURCE, Status::Down, Some(reason.to_string()));
        match self.log.lost(reason) {
            Say::Loud => tracing::warn!(broker = %self.settings.broker, "MQTT {reason}; retrying with backoff"),
            Say::Quiet => tracing::debug!(broker = %self.settings.broker, "MQTT {reason}; still retrying"),
        }
    }

    /// Starts a message's dispatch; its result is collected in order.
    fn dispatch(&self, message: Message) -> InFlight {
        let received_at = Utc::now();
        metrics::counter!("fanin_mqtt_messages_total").increment(1);
        self.ctx.health.event_seen(SOURCE, received_at);
        let Message { topic, payload, ack } = message;
        let event_topic = topic.clone();
        let client_label = self.settings.client_label.clone();
        let dispatcher = self.ctx.dispatcher.clone();
        let max_depth = self.ctx.config.gateway.max_payload_depth;
        let task = tokio::spawn(async move {
            // Parsing happens here, off the listener, so a large payload
            // does not hold up the connection.
            let parsed = match event::parse_payload(&payload, max_depth) {
                Ok(parsed) => parsed,
                Err(too_deep) => {
                    // Acknowledged once audited: a broker redelivers what is
                    // not, and this message would be refused every time.
                    tracing::debug!(topic = %event_topic, %too_deep, "MQTT message refused");
                    let refusal = Refusal {
                        source: Source::Mqtt,
                        topic: event_topic,
                        client: Some(client_label),
                        reason: TooDeep::CODE,
                        detail: too_deep.to_string(),
                        bytes: payload.len(),
                        received_at,
                    };
                    return Box::pin(dispatcher.refuse(refusal)).await;
                }
            };
            let mut event = Event::new(crate::ids::fresh(), Source::Mqtt, event_topic, parsed, received_at);
            event.client = Some(client_label);
            // Boxed so the task itself stays small: a large task allocation
            // makes glibc merge its free lists (`malloc_consolidate`) on
            // every message (BENCHMARKS.md).
            Box::pin(dispatcher.dispatch(event)).await.map(|_| ())
        });
        InFlight { ack, topic, task }
    }

    /// Acknowledges the front message, whose dispatch finished, and every
    /// one after it that finished too.
    fn acknowledge_finished(
        &self,
        client: &Client,
        in_flight: &mut VecDeque<InFlight>,
        first: Result<Result<(), DispatchError>, JoinError>,
    ) -> Result<(), String> {
        let mut done = first;
        loop {
            let message = in_flight.pop_front().expect("a finished dispatch is at the front");
            self.acknowledge(client, message, done)?;
            match finished_front(in_flight) {
                Some(next) => done = next,
                None => return Ok(()),
            }
        }
    }

    /// Acknowledges a message whose dispatch finished, or says why the
    /// connection must be dropped instead.
    fn acknowledge(
        &self,
        client: &Client,
        message: InFlight,
        done: Result<Result<(), DispatchError>, JoinError>,
    ) -> Result<(), String> {
        let failure = match done {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(join) => Some(format!("the dispatch task failed ({join})")),
        };
        if let Some(error) = failure {
            metrics::counter!("fanin_mqtt_dispatch_failures_total").increment(1);
            tracing::error!(topic = %message.topic, %error,
                "MQTT message not dispatched; it stays unacknowledged and the broker will redeliver it");
            return Err(format!("dropped the connection after a failed dispatch ({error})"));
        }
        match &message.ack {
            Some(token) => client.try_ack(*token).map_err(|e| format!("could not queue an acknowledgement: {e}")),
            None => Ok(()),
        }
    }

    /// Stops reading, lets dispatches in flight finish and acknowledges
    /// them in order, then disconnects cleanly.
    async fn shut_down(
        &self,
        client: Client,
        poller: JoinHandle<()>,
        mut events: mpsc::Receiver<Result<Heard, Failure>>,
        mut in_flight: VecDeque<InFlight>,
    ) {
        let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(deadline);
        let mut can_ack = true;
        let mut connection_open = true;
        while !in_flight.is_empty() {
            tokio::select! {
                biased;
                _ = &mut deadline => {
                    tracing::warn!(in_flight = in_flight.len(),
                        "MQTT shutdown: dispatches still running are left unacknowledged; the broker will redeliver them");
                    break;
                }
                done = front_done(&mut in_flight) => {
                    let message = in_flight.pop_front().expect("a finished dispatch is at the front");
                    if can_ack && self.acknowledge(&client, message, done).is_err() {
                        can_ack = false;
                    }
                }
                // Keep the event loop moving (it writes the acks); messages
                // arriving now are left for the next session.
                event = events.recv(), if connection_open => {
                    if !matches!(event, Some(Ok(_))) {
                        connection_open = false;
                        can_ack = false;
                    }
                }
            }
        }
        if connection_open && client.try_disconnect().is_ok() {
            let disconnected = async {
                while let Some(Ok(event)) = events.recv().await {
                    if matches!(event, Heard::DisconnectSent) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DISCONNECT_GRACE, disconnected).await;
        }
        poller.abort();
        self.ctx.health.set_status(SOURCE, Status::Down, Some("shut down".into()));
    }
}

/// Drives rumqttc's event loop until its first error, handing every event
/// the listener acts on over (not, say, the report of each ack written).
/// Polling again after an error would reconnect at once, without the
/// backoff: the listener makes the next connection itself.
async fn poll_events(mut eventloop: Connection, events: mpsc::Sender<Result<Heard, Failure>>) {
    loop {
        let event = eventloop.poll().await;
        if matches!(event, Ok(Heard::Other)) {
            continue;
        }
        let failed = event.is_err();
        if events.send(event).await.is_err() || failed {
            return;
        }
    }
}

/// The connection error the event loop already reported, if any.
fn pending_error(events: &mut mpsc::Receiver<Result<Heard, Failure>>, progress: &Progress) -> Option<String> {
    while let Ok(event) = events.try_recv() {
        if let Err(failure) = event {
            return Some(describe(&failure, progress));
        }
    }
    None
}

/// The result of the oldest dispatch if it is done already.
fn finished_front(in_flight: &mut VecDeque<InFlight>) -> Option<Result<Result<(), DispatchError>, JoinError>> {
    let front = in_flight.front_mut().filter(|message| message.task.is_finished())?;
    (&mut front.task).now_or_never()
}

/// The result of the oldest dispatch once it is done; never, while none.
async fn front_done(in_flight: &mut VecDeque<InFlight>) -> Result<Result<(), DispatchError>, JoinError> {
    match in_flight.front_mut() {
        Some(message) => (&mut message.task).await,
        None => std::future::pending().await,
    }
}

/// Waits for dispatches of an abandoned connection (they commit runs the
/// broker will redeliver: at least once), so they do not pile up across
/// reconnections.
async fn settle(in_flight: VecDeque<InFlight>, shutdown: &tokio_util::sync::CancellationToken) {
    let waiting = async {
        for message in in_flight {
            if let Ok(Err(error)) = message.task.await {
                tracing::debug!(topic = %message.topic, %error, "MQTT dispatch of an abandoned connection failed");
            }
        }
    };
    tokio::select! {
        _ = waiting => {}
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {}
    }
}

/// How far the current connection got.
#[derive(Default)]
struct Progress {
    connected_at: Option<Instant>,
    subscribed: bool,
}

/// Says whether the connection had been up.
fn describe(failure: &Failure, progress: &Progress) -> String {
    let reason = failure.worded(progress.subscribed);
    if progress.connected_at.is_some() {
        format!("connection lost: {reason}")
    } else {
        format!("cannot connect: {reason}")
    }
}
