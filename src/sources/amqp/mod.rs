//! The AMQP source (`[channels_config.amqp]`, docs/operations.md "AMQP"):
//! one consumer on one queue of an AMQP 0-9-1 broker (RabbitMQ), each
//! delivery an [`Event`](crate::event::Event) for the dispatcher, acked
//! only once what it started is durable.
//!
//! - **Client.** lapin on tokio; `amqps://` through rustls with ring and the
//!   roots of [`tls`] (the system's plus `ca_file`), so no other TLS stack is
//!   built. The connection and every step of the set-up are done per
//!   session, under [`feed::run`]: a lost connection shows `amqp` down with
//!   the reason and is made again after the shared backoff.
//! - **Topology.** Declared on every connect, all durable, so a broker that
//!   lost them (a new node, a deleted queue) is repaired: the exchange of
//!   `exchange_type` (unless it is the default exchange, or a broker-owned
//!   `amq.*` one, which is only checked), the queue, one binding per
//!   `bindings` entry, then `basic.qos(prefetch)` and a consumer with manual
//!   acks.
//! - **Acks.** Each delivery is read and dispatched in a task of its own
//!   (up to `prefetch` at once: the broker sends no more unacked) and acked
//!   by its own delivery tag once `dispatch` returned, so acks go out in the
//!   order dispatches finish, which AMQP allows. When the store refuses,
//!   that delivery is rejected with requeue and the session ends (the
//!   broker requeues every other unacked one), so a store outage shows as
//!   `amqp` down and is retried with backoff rather than redelivered in a
//!   tight loop. A delivery whose ack was lost with its connection is
//!   redelivered; `message_id` makes that a duplicate, not a second run.
//! - **Refusals.** A body over `max_message_bytes` or nested deeper than
//!   `gateway.max_payload_depth` is audited as `event_refused` and then
//!   acked: it would be refused on every redelivery.

mod delivery;
mod session;

use std::collections::BTreeMap;
use std::sync::Arc;

use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::ExchangeKind;

use super::feed::{self, Feed};
use super::tls::{self, TlsFiles};
use super::{SourceContext, SourceTask};
use crate::config::{AmqpConfig, Config, ConfigError, QueueArgument};
pub use delivery::Limits;

/// The source's name in `/ready` and `/metrics`, and its dedupe scope.
pub const SOURCE: &str = "amqp";

/// Starts the consumer when an enabled AMQP block is configured. An `Err`
/// (an unreadable `ca_file`) is worded for the operator and stops the
/// daemon; a broker that cannot be reached does not.
pub fn start(ctx: &SourceContext) -> Result<Option<SourceTask>, String> {
    let Some(amqp) = ctx.config.channels_config.amqp.as_ref().filter(|c| c.enabled) else {
        return Ok(None);
    };
    let settings = Arc::new(settings(&ctx.config, amqp)?);
    tracing::info!(broker = %settings.broker, queue = %settings.queue, "AMQP consumer starting");
    let feed = Feed::new(ctx, SOURCE);
    Ok(Some(tokio::spawn(feed::run(feed, async move |feed: &Feed| session::run(feed, &settings).await))))
}

/// Everything a session needs, checked at start.
pub(crate) struct Settings {
    pub uri: AMQPUri,
    /// `amqps://` only.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub exchange: String,
    pub kind: ExchangeKind,
    pub queue: String,
    /// `queue_arguments`, as the declare sends them.
    pub queue_arguments: FieldTable,
    pub bindings: Vec<String>,
    pub prefetch: u16,
    pub limits: Limits,
    /// `amqp://host:port/vhost`, without credentials, for log lines.
    pub broker: String,
    /// `amqp:<queue>`, the `client` of every event.
    pub client_label: String,
}

fn settings(config: &Config, amqp: &AmqpConfig) -> Result<Settings, String> {
    let key = |name: &str| format!("channels_config.amqp.{name}");
    let problem = |name: &str, reason: String| {
        ConfigError { file: config.file.display().to_string(), key: key(name), reason }.to_string()
    };
    let uri: AMQPUri = amqp.url.trim().parse().map_err(|e: String| problem("url", e))?;
    let tls = match uri.scheme {
        AMQPScheme::AMQPS => {
            let files = TlsFiles { ca_file: &amqp.ca_file, client_cert_file: "", client_key_file: "" };
            let (client_config, trust) = tls::client_config(config, &key, files)?;
            tracing::debug!(?trust, "AMQP TLS roots");
            Some(Arc::new(client_config))
        }
        AMQPScheme::AMQP => None,
    };
    let kind = match amqp.exchange_type.as_str() {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        _ => ExchangeKind::Topic,
    };
    let scheme = if tls.is_some() { "amqps" } else { "amqp" };
    let host = &uri.authority.host;
    let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let vhost = percent_encoding::utf8_percent_encode(&uri.vhost, percent_encoding::NON_ALPHANUMERIC);
    Ok(Settings {
        broker: format!("{scheme}://{host}:{}/{vhost}", uri.authority.port),
        uri,
        tls,
        exchange: amqp.exchange.clone(),
        kind,
        queue: amqp.queue.clone(),
        queue_arguments: field_table(&amqp.queue_arguments),
        bindings: amqp.bindings.clone(),
        prefetch: amqp.prefetch,
        limits: Limits {
            max_message_bytes: amqp.max_message_bytes,
            max_payload_depth: config.gateway.max_payload_depth,
        },
        client_label: format!("amqp:{}", amqp.queue),
    })
}

/// `queue_arguments` as AMQP field values: long strings, long-long
/// integers and booleans.
fn field_table(arguments: &BTreeMap<String, QueueArgument>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in arguments {
        let value = match value {
            QueueArgument::Text(text) => AMQPValue::LongString(text.as_str().into()),
            QueueArgument::Integer(n) => AMQPValue::LongLongInt(*n),
            QueueArgument::Flag(flag) => AMQPValue::Boolean(*flag),
        };
        table.insert(name.as_str().into(), value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(block: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, format!("[channels_config.amqp]\nqueue = \"fanin\"\n{block}")).unwrap();
        crate::config::load(&file).unwrap()
    }

    fn of(config: &Config) -> Result<Settings, String> {
        settings(config, config.channels_config.amqp.as_ref().unwrap())
    }

    #[test]
    fn settings_carry_the_block_and_keep_the_password_out_of_log_lines() {
        let config = load(
            "url = \"amqp://fanin:s3cret@broker.example:5673/%2f\"\nexchange = \"events\"\n\
             exchange_type = \"fanout\"\nprefetch = 8\nmax_message_bytes = 100\n",
        );
        let s = of(&config).unwrap();
        assert_eq!(s.broker, "amqp://broker.example:5673/%2F");
        assert!(!s.broker.contains("s3cret"));
        assert_eq!((s.uri.authority.userinfo.username.as_str(), s.uri.vhost.as_str()), ("fanin", "/"));
        assert!(s.tls.is_none());
        assert_eq!((s.exchange.as_str(), s.kind.clone(), s.prefetch), ("events", ExchangeKind::Fanout, 8));
        assert_eq!((s.limits.max_message_bytes, s.limits.max_payload_depth), (100, 64));
        assert_eq!(s.client_label, "amqp:fanin");
    }

    #[test]
    fn queue_arguments_are_sent_as_amqp_values_and_other_types_are_refused() {
        let config = load(
            "url = \"amqp://broker.example\"\n\
             queue_arguments = { \"x-queue-type\" = \"quorum\", \"x-message-ttl\" = 60000, \"x-single-active-consumer\" = true }\n",
        );
        let table = of(&config).unwrap().queue_arguments;
        let got: Vec<(String, AMQPValue)> = table.inner().iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        assert_eq!(
            got,
            [
                ("x-message-ttl".to_string(), AMQPValue::LongLongInt(60000)),
                ("x-queue-type".to_string(), AMQPValue::LongString("quorum".into())),
                ("x-single-active-consumer".to_string(), AMQPValue::Boolean(true)),
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let block =
            "[channels_config.amqp]\nurl = \"amqp://b\"\nqueue = \"q\"\nqueue_arguments = { \"x-max-length\" = 1.5 }\n";
        std::fs::write(&file, block).unwrap();
        let errors = crate::config::load(&file).unwrap_err().iter().map(|e| e.to_string()).collect::<Vec<_>>();
        assert!(
            errors.iter().any(|e| e.contains("queue_arguments") && e.contains("a string, an integer or a boolean")),
            "{errors:?}"
        );
    }

    #[test]
    fn amqps_builds_tls_and_an_unreadable_ca_file_stops_the_start() {
        let s = of(&load("url = \"amqps://broker.example\"\n")).unwrap();
        assert!(s.tls.is_some());
        assert_eq!(s.uri.authority.port, 5671, "the AMQPS port by default");
        let err =
            of(&load("url = \"amqps://broker.example\"\nca_file = \"/nonexistent/ca.pem\"\n")).map(|_| ()).unwrap_err();
        assert!(err.contains("channels_config.amqp.ca_file"), "{err}");
    }
}
