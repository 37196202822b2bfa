//! The MQTT source (`[channels_config.mqtt]`, docs/configuration.md): it keeps
//! one subscription on a broker alive and turns every message into an
//! [`Event`](crate::event::Event) for the dispatcher — and nothing more.
//!
//! How it behaves, and why:
//!
//! - **Client.** rumqttc (MQTT 3.1.1), `mqtt://` over TCP and `mqtts://` over
//!   rustls with the `ring` provider (see [`tls`] for the trusted roots,
//!   `ca_file` and mutual TLS). `username`/`password`, `keep_alive_secs` and
//!   `clean_session` are passed through. With the default
//!   `clean_session = false` the broker keeps our session under `client_id`:
//!   QoS ≥ 1 messages published while fanin is away wait for it. A broker
//!   drops the older of two connections with the same id, which decides
//!   how replicas (docs/cluster.md) subscribe: with `shared_group` each one
//!   subscribes as a member of the group (`$share/<group>/<filter>`, the
//!   broker handing each message to one member) under `<client_id>-<node_id>`;
//!   without it the subscription is the singleton duty `mqtt`, held by one
//!   replica at a time under `client_id` itself, so the session and the
//!   messages it kept pass to whichever replica takes the duty next.
//! - **Start-up.** Everything that can be checked before connecting is
//!   checked in [`start`]: the endpoint, the certificate files, a password
//!   without a user name. Those errors stop the daemon before it serves; a
//!   broker that cannot be reached does not (the daemon serves webhooks and
//!   keeps retrying, and `/ready` says `mqtt` is down).
//! - **Subscriptions** are sent after *every* ConnAck, at the configured QoS,
//!   also when the broker says the session is still there (resubscribing is
//!   harmless and repairs a session the broker lost). The source reports
//!   `Up` once the broker granted them all; a filter the broker refuses
//!   leaves it `Down` with the filter named.
//! - **Reconnection** uses capped exponential backoff with jitter
//!   ([`crate::backoff`], [`crate::sources::link`]: 0.5 s doubling to 30 s, drawn in the upper half of each
//!   step). Every state change is logged once (connected; lost or refused,
//!   with the reason); further failed retries for the same reason log at
//!   debug only. Health: `Connecting` until the first attempt ends, `Up` when
//!   subscribed, `Down` with the error as detail after a failure;
//!   `reconnects` counts every new attempt after the first; `last_event_at`
//!   every message. `fanin_mqtt_messages_total` counts messages received,
//!   `fanin_mqtt_dispatch_failures_total` dispatches the store refused.
//! - **Acknowledgement (QoS ≥ 1).** Manual acks: a PUBACK (QoS 1) or PUBREC
//!   (QoS 2) is sent only after `dispatch` returned `Ok`, i.e. once the runs
//!   are durable. Messages are dispatched concurrently (the store commits
//!   concurrent dispatches in one group), but acknowledged strictly in the
//!   order they arrived, as MQTT requires. When a dispatch fails (the store
//!   is unavailable) that message and every later one stay unacknowledged,
//!   the failure is logged, the connection is dropped and made again after
//!   the backoff: the broker then redelivers them (persistent session). QoS 0
//!   messages are dispatched and never acknowledged. Delivery is therefore
//!   at least once: a message whose runs were committed but whose ack did
//!   not reach the broker (connection lost in between) is delivered again
//!   and starts its runs again.
//! - **Payloads** are handed to the dispatcher whole: JSON when they parse,
//!   else (lossy UTF-8) text, so binary data arrives as text. The dispatcher
//!   caps what it stores to `untrusted_payload_max_bytes` after the
//!   conditions saw the real payload. Retained messages are dispatched like
//!   any other: the broker sends them again on every (re)subscription, so a
//!   retained trigger starts a run after every reconnect — publish triggers
//!   without the retain flag, or let the SOP's cooldown or admission policy
//!   absorb the repeats.
//! - **Largest message.** rumqttc refuses packets above a size fixed at
//!   connect (its default, 10 KiB, is far too small). fanin allows
//!   [`max_packet_bytes`]: sixteen times `untrusted_payload_max_bytes`, at
//!   least 1 MiB, at most MQTT's own limit (256 MiB). A larger message
//!   cannot be read: the connection is dropped and the log says so; the
//!   broker redelivers it, so set the broker's message size limit at or
//!   below this value (Mosquitto: `message_size_limit`).
//! - **Shutdown.** On cancel, no new message is dispatched; dispatches in
//!   flight finish (up to [`listener::SHUTDOWN_GRACE`]) and are acknowledged
//!   in order; then the client sends DISCONNECT. Messages that arrived in the
//!   meantime are not acknowledged and wait at the broker.
//!
//! Every event carries `client = "mqtt:<client id>"`, the id the listener
//! connected with.

mod listener;
mod protocol;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{QoS, TlsConfiguration, Transport};

use super::tls::{self, TlsFiles};
use super::{SourceContext, SourceTask};
use crate::config::{Config, ConfigError, MqttConfig};

/// The source's name in `/ready` and `/metrics`.
pub const SOURCE: &str = "mqtt";

/// MQTT's largest possible packet (the "remaining length" limit).
const MQTT_MAX_PACKET: usize = 268_435_455;
const MIN_PACKET: usize = 1 << 20;

/// Starts the MQTT listener when an MQTT block is configured and enabled.
/// An `Err` is worded for the operator and stops the daemon.
pub fn start(ctx: &SourceContext) -> Result<Option<SourceTask>, String> {
    let Some(mqtt) = &ctx.config.channels_config.mqtt else {
        return Ok(None);
    };
    let node_id = ctx.cluster.as_ref().map(|cluster| cluster.node_id());
    let settings = Arc::new(settings(&ctx.config, mqtt, node_id)?);
    ctx.health.set_status(SOURCE, super::health::Status::Connecting, None);
    if ctx.cluster.is_none() || !mqtt.shared_group.is_empty() {
        return Ok(Some(tokio::spawn(listener::Listener::new(ctx.clone(), settings).run())));
    }
    // One subscription under one client id, held by one replica at a time.
    Ok(Some(tokio::spawn(super::singleton(ctx.clone(), SOURCE.to_string(), move |held: SourceContext| {
        listener::Listener::new(held, settings.clone()).run()
    }))))
}

/// Everything the listener needs, checked.
pub(crate) struct Settings {
    pub options: protocol::Options,
    pub filters: Vec<String>,
    pub qos: QoS,
    /// `mqtt://host:port` or `mqtts://…`, for log lines.
    pub broker: String,
    /// `mqtt:<client_id>`, the `client` of every event.
    pub client_label: String,
    /// Messages dispatched at once (`receive_maximum`); past it, reading
    /// pauses.
    pub max_in_flight: usize,
}

/// `node_id` is this replica's, when the daemon is one of several.
fn settings(config: &Config, mqtt: &MqttConfig, node_id: Option<&str>) -> Result<Settings, String> {
    let problem = |key: &str, reason: String| {
        ConfigError { file: config.file.display().to_string(), key: mqtt.key(key), reason }.to_string()
    };
    let endpoint = mqtt.endpoint().map_err(|reason| problem("broker_url", reason))?;
    let qos = qos(mqtt.qos).ok_or_else(|| problem("qos", format!("{} is not a QoS level", mqtt.qos)))?;
    if mqtt.username.is_empty() && !mqtt.password.is_empty() {
        return Err(problem(
            "password",
            "is set but username is empty; MQTT 3.1.1 sends a password only with a user name".into(),
        ));
    }

    // Checked with the config, like `keep_alive_secs`; clamped here the same way.
    let receive_maximum = u16::try_from(mqtt.receive_maximum.clamp(1, u32::from(u16::MAX))).expect("clamped");
    let transport = if endpoint.tls {
        let files = TlsFiles {
            ca_file: &mqtt.ca_file,
            client_cert_file: &mqtt.client_cert_file,
            client_key_file: &mqtt.client_key_file,
        };
        let (client_config, trust) = tls::client_config(config, &|name| mqtt.key(name), files)?;
        tracing::debug!(?trust, "MQTT TLS roots");
        Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(client_config)))
    } else {
        Transport::Tcp
    };
    let client_id = mqtt.client_id_for(node_id);
    let options = protocol::Options::new(
        mqtt.protocol,
        protocol::Connect {
            client_id: client_id.clone(),
            host: endpoint.host.clone(),
            port: endpoint.port,
            keep_alive: Duration::from_secs(mqtt.keep_alive_secs.clamp(1, u64::from(u16::MAX))),
            clean_session: mqtt.clean_session,
            credentials: (!mqtt.username.is_empty()).then(|| (mqtt.username.clone(), mqtt.password.clone())),
            max_packet_bytes: max_packet_bytes(config.sop.untrusted_payload_max_bytes),
            receive_maximum,
            transport,
        },
    );

    let scheme = if endpoint.tls { "mqtts" } else { "mqtt" };
    let host = if endpoint.host.contains(':') { format!("[{}]", endpoint.host) } else { endpoint.host.clone() };
    Ok(Settings {
        options,
        filters: mqtt.subscriptions(),
        qos,
        broker: format!("{scheme}://{host}:{}", endpoint.port),
        client_label: format!("mqtt:{client_id}"),
        max_in_flight: usize::from(receive_maximum),
    })
}

fn qos(level: u8) -> Option<QoS> {
    match level {
        0 => Some(QoS::AtMostOnce),
        1 => Some(QoS::AtLeastOnce),
        2 => Some(QoS::ExactlyOnce),
        _ => None,
    }
}

/// The largest MQTT packet fanin reads: 16 × the stored payload cap, at
/// least 1 MiB, at most MQTT's limit. Conditions see whole payloads, so the
/// limit is well above the storage cap, but it bounds memory per message.
pub fn max_packet_bytes(untrusted_payload_max_bytes: usize) -> usize {
    untrusted_payload_max_bytes.saturating_mul(16).clamp(MIN_PACKET, MQTT_MAX_PACKET)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(mqtt_block: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, format!("[channels_config.mqtt]\nclient_id = \"fanin-1\"\n{mqtt_block}")).unwrap();
        let config = crate::config::load(&file).unwrap();
        // Keep the directory alive only as long as loading needs it.
        drop(dir);
        config
    }

    #[test]
    fn the_packet_limit_follows_the_payload_cap_within_bounds() {
        let cases = [(0, MIN_PACKET), (65_536, 1 << 20), (1 << 20, 16 << 20), (usize::MAX, MQTT_MAX_PACKET)];
        for (cap, limit) in cases {
            assert_eq!(max_packet_bytes(cap), limit, "cap {cap}");
        }
    }

    #[test]
    fn options_carry_the_config_in_mqtt_5() {
        let config = load(
            "broker_url = \"mqtt://[::1]:1884\"\ntopics = [\"a/#\", \"b/+\"]\nqos = 2\n\
             username = \"u\"\npassword = \"p\"\nkeep_alive_secs = 7\nclean_session = true\n",
        );
        let s = settings(&config, config.channels_config.mqtt.as_ref().unwrap(), None).unwrap();
        let protocol::Options::V5(o) = &s.options else { panic!("MQTT 5 by default: {:?}", s.options) };
        assert_eq!(o.broker_address(), ("::1".to_string(), 1884));
        assert_eq!(o.client_id(), "fanin-1");
        assert_eq!(o.keep_alive(), Duration::from_secs(7));
        assert!(o.clean_start());
        assert_eq!(o.session_expiry_interval(), None, "a clean session ends with the connection");
        assert!(o.manual_acks());
        assert_eq!(o.receive_maximum(), Some(crate::config::DEFAULT_RECEIVE_MAXIMUM));
        assert_eq!(s.max_in_flight, 1024);
        assert_eq!(o.max_packet_size(), Some(1 << 20));
        assert_eq!(o.credentials().map(|l| (l.username, l.password)), Some(("u".into(), "p".into())));
        assert!(matches!(o.transport(), Transport::Tcp));
        assert_eq!(s.filters, vec!["a/#".to_string(), "b/+".to_string()]);
        assert_eq!(s.qos, QoS::ExactlyOnce);
        assert_eq!(s.broker, "mqtt://[::1]:1884");
        assert_eq!(s.client_label, "mqtt:fanin-1");
    }

    #[test]
    fn receive_maximum_is_announced_and_bounds_the_dispatches_in_flight() {
        let config = load("broker_url = \"mqtt://b\"\ntopics = [\"a/#\"]\nreceive_maximum = 4096\n");
        let s = settings(&config, config.channels_config.mqtt.as_ref().unwrap(), None).unwrap();
        let protocol::Options::V5(o) = &s.options else { panic!("MQTT 5 by default: {:?}", s.options) };
        assert_eq!((o.receive_maximum(), s.max_in_flight), (Some(4096), 4096));
        // 3.1.1 cannot announce it; fanin still dispatches no more at once.
        let config =
            load("broker_url = \"mqtt://b\"\ntopics = [\"a/#\"]\nprotocol = \"3.1.1\"\nreceive_maximum = 64\n");
        let s = settings(&config, config.channels_config.mqtt.as_ref().unwrap(), None).unwrap();
        assert_eq!(s.max_in_flight, 64);
    }

    #[test]
    fn options_carry_the_config_in_mqtt_3_1_1() {
        let config = load(
            "broker_url = \"mqtt://b:1884\"\ntopics = [\"a/#\"]\nprotocol = \"3.1.1\"\n\
             username = \"u\"\npassword = \"p\"\nkeep_alive_secs = 7\n",
        );
        let s = settings(&config, config.channels_config.mqtt.as_ref().unwrap(), None).unwrap();
        let protocol::Options::V311(o) = &s.options else { panic!("3.1.1 as configured: {:?}", s.options) };
        assert_eq!(o.broker_address(), ("b".to_string(), 1884));
        assert_eq!(o.keep_alive(), Duration::from_secs(7));
        assert!(!o.clean_session(), "persistent session by default");
        assert!(o.manual_acks());
        assert_eq!(o.max_packet_size(), 1 << 20);
        assert_eq!(o.credentials().map(|l| (l.username, l.password)), Some(("u".into(), "p".into())));
    }

    #[test]
    fn defaults_keep_the_session_and_use_tls_for_mqtts() {
        let config = load("broker_url = \"mqtts://broker.example.com\"\ntopics = [\"a\"]\n");
        let s = settings(&config, config.channels_config.mqtt.as_ref().unwrap(), None).unwrap();
        let protocol::Options::V5(o) = &s.options else { panic!("MQTT 5 by default: {:?}", s.options) };
        assert!(!o.clean_start(), "persistent session by default");
        assert_eq!(o.session_expiry_interval(), Some(u32::MAX), "kept as long as the broker allows");
        assert_eq!(o.broker_address(), ("broker.example.com".to_string(), 8883));
        assert!(matches!(o.transport(), Transport::Tls(_)));
        assert!(o.credentials().is_none());
        assert_eq!(s.qos, QoS::AtLeastOnce);
    }

    #[test]
    fn a_shared_group_member_subscribes_under_share_with_its_own_client_id() {
        let config = load("broker_url = \"mqtt://b\"\ntopics = [\"a/#\", \"b\"]\nshared_group = \"fanin\"\n");
        let mqtt = config.channels_config.mqtt.as_ref().unwrap();
        let s = settings(&config, mqtt, Some("r2")).unwrap();
        let protocol::Options::V5(o) = &s.options else { panic!("MQTT 5 by default: {:?}", s.options) };
        assert_eq!(o.client_id(), "fanin-1-r2");
        assert_eq!(s.client_label, "mqtt:fanin-1-r2");
        assert_eq!(s.filters, ["$share/fanin/a/#", "$share/fanin/b"]);
        // Alone, the daemon keeps the configured id; 3.1.1 subscribes alike.
        let config =
            load("broker_url = \"mqtt://b\"\ntopics = [\"a/#\"]\nshared_group = \"fanin\"\nprotocol = \"3.1.1\"\n");
        let s = settings(&config, config.channels_config.mqtt.as_ref().unwrap(), None).unwrap();
        let protocol::Options::V311(o) = &s.options else { panic!("3.1.1 as configured: {:?}", s.options) };
        assert_eq!(o.client_id(), "fanin-1");
        assert_eq!(s.filters, ["$share/fanin/a/#"]);
    }

    #[test]
    fn replicas_taking_turns_keep_one_client_id() {
        let config = load("broker_url = \"mqtt://b\"\ntopics = [\"a/#\"]\n");
        let s = settings(&config, config.channels_config.mqtt.as_ref().unwrap(), Some("r2")).unwrap();
        let protocol::Options::V5(o) = &s.options else { panic!("MQTT 5 by default: {:?}", s.options) };
        assert_eq!((o.client_id(), s.filters.as_slice()), ("fanin-1".to_string(), &["a/#".to_string()][..]));
    }

    #[test]
    fn a_password_without_a_user_name_is_refused() {
        let config = load("broker_url = \"mqtt://b\"\ntopics = [\"a\"]\npassword = \"secret\"\n");
        let err = settings(&config, config.channels_config.mqtt.as_ref().unwrap(), None).map(|_| ()).unwrap_err();
        assert!(err.contains("channels_config.mqtt.password") && err.contains("username is empty"), "{err}");
        assert!(!err.contains("secret"), "the password is never echoed: {err}");
    }
}
