//! An MQTT broker for whole-daemon tests: the one named by
//! `FANIN_TEST_MQTT_URL` (CI: Mosquitto) or else a rumqttd broker embedded
//! in the test process, which also listens with mutual TLS (certificates
//! made here with rcgen). `common::proxy` cuts the daemon off from it.
//! Shared so that every test file reaches a broker the same way.

use std::path::PathBuf;

use tokio::net::TcpStream;
use tokio::sync::OnceCell;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::{eventually, free_port, write_certificates, DEADLINE};

/// A plaintext broker: host and port.
#[derive(Clone, Debug)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

impl Broker {
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host, self.port)
    }
}

/// `label` made unique: client ids and topic prefixes of tests that share
/// one broker.
pub fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

/// Publishes each `(topic, payload)` at `qos` and returns once the broker
/// acknowledged them all (QoS 1) or they were written (QoS 0). The test
/// publisher speaks 3.1.1, so `broker` must serve it.
pub async fn publish(broker: &Broker, qos: QoS, messages: &[(String, Vec<u8>)]) {
    let mut options = MqttOptions::new(unique("fanin-test-pub"), broker.host.clone(), broker.port);
    options.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, messages.len() + 10);
    let driven = async {
        let mut done = 0;
        while done < messages.len() {
            match eventloop.poll().await.expect("the test publisher's connection") {
                Event::Incoming(Packet::ConnAck(_)) => {
                    for (topic, payload) in messages {
                        client.publish(topic.clone(), qos, false, payload.clone()).await.unwrap();
                    }
                }
                Event::Incoming(Packet::PubAck(_)) if qos == QoS::AtLeastOnce => done += 1,
                Event::Outgoing(rumqttc::Outgoing::Publish(_)) if qos == QoS::AtMostOnce => done += 1,
                _ => {}
            }
        }
        client.disconnect().await.unwrap();
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    };
    tokio::time::timeout(DEADLINE, driven).await.expect("publishing timed out");
}

/// The MQTT versions fanin speaks, as `protocol` is set in its config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Protocol {
    V5,
    V311,
}

impl Protocol {
    /// The line of fanin's MQTT block that selects it.
    pub fn config_line(self) -> &'static str {
        match self {
            Protocol::V5 => "protocol = \"5\"",
            Protocol::V311 => "protocol = \"3.1.1\"",
        }
    }
}

/// Whether `FANIN_TEST_MQTT_URL` names a broker (else the embedded one serves).
pub fn external_broker() -> Option<url::Url> {
    let url = std::env::var("FANIN_TEST_MQTT_URL").ok().filter(|url| !url.trim().is_empty())?;
    Some(url::Url::parse(url.trim()).expect("FANIN_TEST_MQTT_URL is a URL"))
}

/// The broker for plaintext tests in `protocol`.
pub async fn broker(protocol: Protocol) -> Broker {
    match external_broker() {
        Some(url) => {
            assert_eq!(url.scheme(), "mqtt", "FANIN_TEST_MQTT_URL must be a plaintext mqtt:// URL");
            Broker { host: url.host_str().expect("a host").to_string(), port: url.port().unwrap_or(1883) }
        }
        None => embedded().await.plain(protocol),
    }
}

/// rumqttd in this process, with a plaintext and a mutual-TLS listener for
/// each version: rumqttd serves one version per listener.
pub struct Embedded {
    plain_5: u16,
    plain_311: u16,
    tls_5: u16,
    tls_311: u16,
    /// `ca.pem`, `client.pem`, `client.key` (the server's files too).
    pub certs: PathBuf,
}

/// The embedded broker, started by the first test that asks for it and
/// shared by the rest; it returns once every listener takes connections.
pub async fn embedded() -> &'static Embedded {
    static BROKER: OnceCell<Embedded> = OnceCell::const_new();
    BROKER.get_or_init(start_embedded).await
}

async fn start_embedded() -> Embedded {
    let certs = tempfile::tempdir().expect("tempdir").keep();
    write_certificates(&certs);
    let broker =
        Embedded { plain_5: free_port(), plain_311: free_port(), tls_5: free_port(), tls_311: free_port(), certs };
    let config: rumqttd::Config = toml::from_str(&broker.config()).expect("rumqttd config");
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(e) = broker.start() {
            panic!("embedded broker: {e}");
        }
    });
    for port in [broker.plain_5, broker.plain_311, broker.tls_5, broker.tls_311] {
        eventually(&format!("the embedded broker to listen on {port}"), || async move {
            TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
    }
    broker
}

impl Embedded {
    pub fn plain(&self, protocol: Protocol) -> Broker {
        let port = match protocol {
            Protocol::V5 => self.plain_5,
            Protocol::V311 => self.plain_311,
        };
        Broker { host: "127.0.0.1".into(), port }
    }

    pub fn tls_port(&self, protocol: Protocol) -> u16 {
        match protocol {
            Protocol::V5 => self.tls_5,
            Protocol::V311 => self.tls_311,
        }
    }

    /// rumqttd's configuration: its router and the four listeners.
    fn config(&self) -> String {
        let file = |name: &str| self.certs.join(name).display().to_string();
        let listener = |version: &str, name: &str, port: u16, tls: bool| {
            let tls = if tls {
                format!(
                    "[{version}.{name}.tls]\ncapath = \"{}\"\ncertpath = \"{}\"\nkeypath = \"{}\"\n",
                    file("ca.pem"),
                    file("server.pem"),
                    file("server.key")
                )
            } else {
                String::new()
            };
            format!(
                r#"
[{version}.{name}]
name = "{version}-{name}"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
{tls}
[{version}.{name}.connections]
connection_timeout_ms = 60000
max_payload_size = 8388608
max_inflight_count = 100
dynamic_filters = true
"#
            )
        };
        [
            "id = 0\n[router]\nmax_connections = 1000\nmax_outgoing_packet_count = 200\n\
             max_segment_size = 104857600\nmax_segment_count = 10\n"
                .to_string(),
            listener("v5", "plain", self.plain_5, false),
            listener("v4", "plain", self.plain_311, false),
            listener("v5", "tls", self.tls_5, true),
            listener("v4", "tls", self.tls_311, true),
        ]
        .concat()
    }
}
