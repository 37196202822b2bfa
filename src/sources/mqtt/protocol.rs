//! The two MQTT versions fanin speaks (`channels_config.mqtt.protocol`),
//! behind one face, so the listener's loop is written once.
//!
//! rumqttc has a separate client for each version with the same shape but
//! different types. This module owns the difference: what is configured on
//! connect, how an incoming packet reads as a [`Heard`], how a message is
//! acknowledged, and how a failure is worded.
//!
//! Why MQTT 5 is the default: a 3.1.1 client cannot say how many
//! unacknowledged messages it can take, so the broker's own setting applies
//! (Mosquitto: `max_inflight_messages`, 20 by default), and with acks sent
//! only once runs are durable that window caps the rate at 20 per commit.
//! A 5 client announces Receive Maximum on connect; fanin announces
//! `channels_config.mqtt.receive_maximum`, as many as it dispatches at once.
//! MQTT 5 also lets
//! fanin announce its Maximum Packet Size, so the broker discards a message
//! too large to read instead of redelivering it forever.

use std::time::Duration;

use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as packets5;
use rumqttc::{Outgoing, Transport};

use crate::config::MqttProtocol;

/// MQTT 5 Session Expiry Interval meaning "never" (as a 3.1.1 persistent
/// session): the broker's own limit, if any, still applies (Mosquitto:
/// `persistent_client_expiration`).
const SESSION_NEVER_EXPIRES: u32 = u32::MAX;

/// The protocol-independent part of the connect options.
pub struct Connect {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    pub clean_session: bool,
    pub credentials: Option<(String, String)>,
    pub max_packet_bytes: usize,
    /// MQTT 5 Receive Maximum: messages the broker may send before the
    /// first is acknowledged. (3.1.1 has no such field: the broker's own
    /// setting applies.)
    pub receive_maximum: u16,
    pub transport: Transport,
}

/// Connect options for one protocol version. (One per listener; the size
/// difference between the versions costs nothing.)
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Options {
    V311(rumqttc::MqttOptions),
    V5(v5::MqttOptions),
}

impl Options {
    pub fn new(protocol: MqttProtocol, c: Connect) -> Options {
        match protocol {
            MqttProtocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(c.client_id, c.host, c.port);
                o.set_keep_alive(c.keep_alive)
                    .set_clean_session(c.clean_session)
                    .set_manual_acks(true)
                    // fanin publishes nothing: its own packets (subscribe,
                    // acks) are small, so the floor of the read limit does.
                    .set_max_packet_size(c.max_packet_bytes, super::MIN_PACKET)
                    .set_transport(c.transport);
                if let Some((user, password)) = c.credentials {
                    o.set_credentials(user, password);
                }
                Options::V311(o)
            }
            MqttProtocol::V5 => {
                let mut o = v5::MqttOptions::new(c.client_id, c.host, c.port);
                let expiry = (!c.clean_session).then_some(SESSION_NEVER_EXPIRES);
                o.set_keep_alive(c.keep_alive)
                    .set_clean_start(c.clean_session)
                    .set_session_expiry_interval(expiry)
                    .set_receive_maximum(Some(c.receive_maximum))
                    .set_max_packet_size(Some(u32::try_from(c.max_packet_bytes).unwrap_or(u32::MAX)))
                    .set_manual_acks(true)
                    .set_transport(c.transport);
                if let Some((user, password)) = c.credentials {
                    o.set_credentials(user, password);
                }
                Options::V5(o)
            }
        }
    }

    pub fn protocol(&self) -> MqttProtocol {
        match self {
            Options::V311(_) => MqttProtocol::V311,
            Options::V5(_) => MqttProtocol::V5,
        }
    }

    /// A fresh client and event loop; nothing is sent until the loop is
    /// polled.
    pub fn connect(&self, request_capacity: usize) -> (Client, Connection) {
        match self {
            Options::V311(o) => {
                let (client, eventloop) = rumqttc::AsyncClient::new(o.clone(), request_capacity);
                (Client::V311(client), Connection::V311(eventloop))
            }
            Options::V5(o) => {
                let (client, eventloop) = v5::AsyncClient::new(o.clone(), request_capacity);
                (Client::V5(client), Connection::V5(eventloop))
            }
        }
    }
}

/// What a connection reports, in either version.
#[derive(Debug)]
pub enum Heard {
    Connected {
        session_present: bool,
    },
    /// The broker answered the subscription: which filters (by position)
    /// it refused, with its reason when it gave one.
    Subscribed {
        refused: Vec<(usize, Option<String>)>,
    },
    Message(Message),
    /// The DISCONNECT fanin asked for was written.
    DisconnectSent,
    Other,
}

/// One message as the listener needs it.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: bytes::Bytes,
    /// What acknowledges it, for QoS ≥ 1.
    pub ack: Option<AckToken>,
}

/// What an acknowledgement needs of a message (its QoS and packet id),
/// without keeping its payload alive until the ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckToken {
    qos: rumqttc::QoS,
    pkid: u16,
}

/// A connection's requests: subscribe, acknowledge, disconnect. Each only
/// queues; the event loop writes.
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

impl Client {
    pub fn try_subscribe(&self, filters: &[String], qos: rumqttc::QoS) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe_many(filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos)))
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe_many(filters.iter().map(|f| packets5::Filter::new(f.clone(), qos5(qos))))
                .map_err(|e| e.to_string()),
        }
    }

    /// rumqttc acknowledges a `Publish`; one without topic and payload
    /// carries all an ack needs.
    pub fn try_ack(&self, token: AckToken) -> Result<(), String> {
        match self {
            Client::V311(c) => {
                let mut publish = rumqttc::Publish::new(String::new(), token.qos, Vec::new());
                publish.pkid = token.pkid;
                c.try_ack(&publish).map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let mut publish = packets5::Publish::new(String::new(), qos5(token.qos), Vec::new(), None);
                publish.pkid = token.pkid;
                c.try_ack(&publish).map_err(|e| e.to_string())
            }
        }
    }

    pub fn try_disconnect(&self) -> Result<(), String> {
        match self {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}

/// A connection's event loop (one per connection).
#[allow(clippy::large_enum_variant)]
pub enum Connection {
    V311(rumqttc::EventLoop),
    V5(v5::EventLoop),
}

impl Connection {
    /// The next thing the connection reports, or why it ended.
    pub async fn poll(&mut self) -> Result<Heard, Failure> {
        match self {
            Connection::V311(eventloop) => eventloop.poll().await.map(heard311).map_err(|e| explain311(&e)),
            Connection::V5(eventloop) => eventloop.poll().await.map(heard5).map_err(|e| explain5(&e)),
        }
    }
}

/// Why a connection ended, worded for the operator (without saying whether
/// it had been up: the listener knows that).
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    /// Before the subscriptions are answered, this failure suggests a broker
    /// that does not speak MQTT 5: a 3.1.1-only broker answers a version 5
    /// CONNECT with a 3.1.1 refusal, which the version 5 client cannot read,
    /// or closes the socket without an answer (rumqttd's 3.1.1 listener).
    pub may_be_version: bool,
}

impl Failure {
    /// The reason, with the key to set when the broker may not speak 5
    /// and nothing was subscribed yet.
    pub fn worded(&self, subscribed: bool) -> String {
        if self.may_be_version && !subscribed {
            format!(
                "{}; if the broker speaks only MQTT 3.1.1, set channels_config.mqtt.protocol = \"3.1.1\"",
                self.reason
            )
        } else {
            self.reason.clone()
        }
    }
}

fn heard311(event: rumqttc::Event) -> Heard {
    use rumqttc::{Event, Packet, QoS, SubscribeReasonCode};
    match event {
        Event::Incoming(Packet::ConnAck(connack)) => Heard::Connected { session_present: connack.session_present },
        Event::Incoming(Packet::SubAck(suback)) => Heard::Subscribed {
            refused: suback
                .return_codes
                .iter()
                .enumerate()
                .filter(|(_, code)| matches!(code, SubscribeReasonCode::Failure))
                .map(|(i, _)| (i, None))
                .collect(),
        },
        Event::Incoming(Packet::Publish(publish)) => {
            let ack = (publish.qos != QoS::AtMostOnce).then_some(AckToken { qos: publish.qos, pkid: publish.pkid });
            Heard::Message(Message { topic: publish.topic, payload: publish.payload, ack })
        }
        Event::Outgoing(Outgoing::Disconnect) => Heard::DisconnectSent,
        _ => Heard::Other,
    }
}

fn heard5(event: v5::Event) -> Heard {
    use packets5::{Packet, SubscribeReasonCode};
    use v5::mqttbytes::QoS;
    match event {
        v5::Event::Incoming(Packet::ConnAck(connack)) => Heard::Connected { session_present: connack.session_present },
        v5::Event::Incoming(Packet::SubAck(suback)) => Heard::Subscribed {
            refused: suback
                .return_codes
                .iter()
                .enumerate()
                .filter(|(_, code)| !matches!(code, SubscribeReasonCode::Success(_)))
                .map(|(i, code)| (i, Some(format!("{code:?}"))))
                .collect(),
        },
        v5::Event::Incoming(Packet::Publish(publish)) => {
            let ack = match publish.qos {
                QoS::AtMostOnce => None,
                QoS::AtLeastOnce => Some(AckToken { qos: rumqttc::QoS::AtLeastOnce, pkid: publish.pkid }),
                QoS::ExactlyOnce => Some(AckToken { qos: rumqttc::QoS::ExactlyOnce, pkid: publish.pkid }),
            };
            // MQTT requires UTF-8 topic names; a broker that broke that
            // still gets its message through, lossily named.
            let topic = match String::from_utf8(publish.topic.to_vec()) {
                Ok(topic) => topic,
                Err(raw) => String::from_utf8_lossy(raw.as_bytes()).into_owned(),
            };
            Heard::Message(Message { topic, payload: publish.payload, ack })
        }
        v5::Event::Outgoing(Outgoing::Disconnect) => Heard::DisconnectSent,
        _ => Heard::Other,
    }
}

fn qos5(qos: rumqttc::QoS) -> v5::mqttbytes::QoS {
    match qos {
        rumqttc::QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

const TOO_LARGE: &str = "is larger than fanin reads (16 × untrusted_payload_max_bytes, at least 1 MiB); \
    the broker may redeliver it: raise untrusted_payload_max_bytes or lower the broker's message size limit";

fn explain311(error: &rumqttc::ConnectionError) -> Failure {
    use rumqttc::{mqttbytes, ConnectionError, StateError};
    let reason = match error {
        ConnectionError::MqttState(StateError::Deserialization(mqttbytes::Error::PayloadSizeLimitExceeded(size))) => {
            format!("a message of {size} bytes {TOO_LARGE}")
        }
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection ({code:?})"),
        other => other.to_string(),
    };
    Failure { reason, may_be_version: false }
}

fn explain5(error: &v5::ConnectionError) -> Failure {
    use packets5::ConnectReturnCode as Code;
    use v5::mqttbytes::Error as Bytes5;
    use v5::{ConnectionError, StateError};
    let reason = match error {
        ConnectionError::MqttState(StateError::Deserialization(Bytes5::PayloadSizeLimitExceeded {
            pkt_size, ..
        })) => format!("a message of {pkt_size} bytes {TOO_LARGE}"),
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection ({code:?})"),
        other => other.to_string(),
    };
    let may_be_version = matches!(
        error,
        ConnectionError::ConnectionRefused(Code::UnsupportedProtocolVersion | Code::RefusedProtocolVersion)
            | ConnectionError::MqttState(StateError::Deserialization(_) | StateError::ConnectionAborted)
            | ConnectionError::NotConnAck(_)
    );
    Failure { reason, may_be_version }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_keeps_its_qos_and_packet_id_for_the_ack() {
        let mut publish = rumqttc::Publish::new("a/b", rumqttc::QoS::ExactlyOnce, vec![1u8; 1000]);
        publish.pkid = 42;
        let Heard::Message(m) = heard311(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) else {
            panic!("a message")
        };
        assert_eq!(m.ack, Some(AckToken { qos: rumqttc::QoS::ExactlyOnce, pkid: 42 }));
        assert_eq!((m.topic.as_str(), m.payload.len()), ("a/b", 1000));

        let mut publish = packets5::Publish::new("c/d", v5::mqttbytes::QoS::AtLeastOnce, vec![2u8; 10], None);
        publish.pkid = 7;
        let Heard::Message(m) = heard5(v5::Event::Incoming(packets5::Packet::Publish(publish))) else {
            panic!("a message")
        };
        assert_eq!(m.ack, Some(AckToken { qos: rumqttc::QoS::AtLeastOnce, pkid: 7 }));
        assert_eq!((m.topic.as_str(), m.payload.len()), ("c/d", 10));

        let publish = packets5::Publish::new("e", v5::mqttbytes::QoS::AtMostOnce, vec![], None);
        let Heard::Message(m) = heard5(v5::Event::Incoming(packets5::Packet::Publish(publish))) else {
            panic!("a message")
        };
        assert!(m.ack.is_none(), "QoS 0 is never acknowledged");
    }

    #[test]
    fn refused_subscriptions_are_named_by_position_with_the_reason() {
        use packets5::SubscribeReasonCode as Code;
        let suback = packets5::SubAck {
            pkid: 1,
            return_codes: vec![Code::Success(v5::mqttbytes::QoS::AtLeastOnce), Code::NotAuthorized],
            properties: None,
        };
        let Heard::Subscribed { refused } = heard5(v5::Event::Incoming(packets5::Packet::SubAck(suback))) else {
            panic!("a suback")
        };
        assert_eq!(refused, vec![(1, Some("NotAuthorized".to_string()))]);

        let suback = rumqttc::SubAck::new(
            1,
            vec![
                rumqttc::SubscribeReasonCode::Failure,
                rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtMostOnce),
            ],
        );
        let Heard::Subscribed { refused } = heard311(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(suback))) else {
            panic!("a suback")
        };
        assert_eq!(refused, vec![(0, None)]);
    }

    #[test]
    fn failures_are_worded_for_the_operator() {
        let big = rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(5_000_000),
        ));
        let text = explain311(&big).worded(false);
        assert!(text.contains("5000000 bytes") && text.contains("untrusted_payload_max_bytes"), "{text}");
        let auth = rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized);
        assert!(explain311(&auth).worded(false).contains("NotAuthorized"));
        let closed = rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted);
        assert!(!explain311(&closed).worded(false).contains("protocol ="), "3.1.1 is the fallback already");

        let big = v5::ConnectionError::MqttState(v5::StateError::Deserialization(
            v5::mqttbytes::Error::PayloadSizeLimitExceeded { pkt_size: 5_000_000, max: 1 << 20 },
        ));
        assert!(explain5(&big).worded(true).contains("5000000 bytes"), "{:?}", explain5(&big));
        let old = v5::ConnectionError::ConnectionRefused(packets5::ConnectReturnCode::UnsupportedProtocolVersion);
        assert!(explain5(&old).worded(false).contains("protocol = \"3.1.1\""), "{:?}", explain5(&old));
        // A 3.1.1 refusal (CONNACK 0x20 0x02 0x00 0x01) read as version 5.
        let refusal = packets5::Packet::read(&mut bytes::BytesMut::from(&[0x20u8, 2, 0, 1][..]), Some(1024))
            .map(|_| ())
            .unwrap_err();
        let unreadable = v5::ConnectionError::MqttState(v5::StateError::Deserialization(refusal));
        assert!(explain5(&unreadable).worded(false).contains("protocol = \"3.1.1\""), "{:?}", explain5(&unreadable));
        let closed = v5::ConnectionError::MqttState(v5::StateError::ConnectionAborted);
        assert!(explain5(&closed).worded(false).contains("protocol = \"3.1.1\""));
        assert!(!explain5(&closed).worded(true).contains("protocol ="), "a drop after subscribing is just a drop");
        let auth = v5::ConnectionError::ConnectionRefused(packets5::ConnectReturnCode::NotAuthorized);
        assert!(
            explain5(&auth).worded(false).contains("NotAuthorized") && !explain5(&auth).worded(false).contains("3.1.1")
        );
    }
}
