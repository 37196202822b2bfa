//! `config.toml` (docs/configuration.md): types, defaults and validation.
//!
//! Loading fails closed and loudly: an unknown key anywhere (a misspelt
//! security setting must never be ignored), a value of the wrong type and
//! every validation problem are all reported together, each naming the file,
//! the dotted key and the reason. Relative paths resolve against the
//! directory holding `config.toml`.
//!
//! The MQTT block is read in a second step (`read_mqtt`), because where it
//! sits decides how: `[channels_config.mqtt]`, or ZeroClaw's later names for
//! it, `[channels.mqtt]` and `[channels.mqtt.<alias>]`, so a block copied from
//! a ZeroClaw config loads as it is.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::strict_toml::{deserialize_table, read_strict};

mod channels;
pub use channels::{
    AmqpConfig, DriveConfig, EmailConfig, FilesystemConfig, QueueArgument, SecretSource, Security, SlackConfig,
    TelegramConfig, TelegramMode, BROAD_ROOTS,
};

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub channels_config: ChannelsConfig,
    /// ZeroClaw's later name for `[channels_config]`; read into
    /// `channels_config` at load.
    channels: ZeroClawChannels,
    pub sop: SopConfig,
    pub store: StoreConfig,
    /// `[cluster]`: present when this daemon is one of several replicas on
    /// one PostgreSQL store.
    pub cluster: Option<ClusterConfig>,
    pub peripherals: BTreeMap<String, PeripheralConfig>,
    pub delivery: DeliveryConfig,
    pub destinations: DestinationsConfig,
    pub registries: RegistriesConfig,
    /// The directory holding config.toml; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this was loaded from (for messages).
    #[serde(skip)]
    pub file: PathBuf,
    /// Warnings found while reading the file (key, reason), reported by
    /// `warnings` with the rest.
    #[serde(skip)]
    load_warnings: Vec<(String, String)>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub host: String,
    pub port: u16,
    pub require_pairing: bool,
    pub webhook_secret: String,
    pub webhook_rate_limit_per_minute: u32,
    pub pair_rate_limit_per_minute: u32,
    pub idempotency_ttl_secs: u64,
    pub max_body_bytes: usize,
    /// Arrays and objects a payload may nest; deeper ones are refused by
    /// every source.
    pub max_payload_depth: usize,
    pub request_timeout_secs: u64,
    pub trust_forwarded_headers: bool,
    /// CIDRs (or single addresses) of the proxies whose `X-Forwarded-For`
    /// is believed; see `gateway::limits::Forwarding`.
    pub trusted_proxies: Vec<String>,
    pub allow_remote_admin: bool,
    /// How long a console sign-in (a remote operator's session cookie)
    /// lasts before the bearer token is asked for again.
    pub console_session_secs: u64,
    /// From accepting a connection, or from the first byte of a later
    /// request, until its head (request line and headers) is complete.
    pub header_read_timeout_secs: u64,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout_secs: u64,
    /// Open connections at most; absent = derived from the descriptor limit.
    pub max_connections: Option<usize>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            host: "127.0.0.1".into(),
            port: 3000,
            require_pairing: true,
            webhook_secret: String::new(),
            webhook_rate_limit_per_minute: 60,
            pair_rate_limit_per_minute: 10,
            idempotency_ttl_secs: 300,
            max_body_bytes: 65536,
            max_payload_depth: crate::event::DEFAULT_MAX_PAYLOAD_DEPTH,
            request_timeout_secs: 30,
            trust_forwarded_headers: false,
            trusted_proxies: Vec::new(),
            allow_remote_admin: false,
            console_session_secs: 8 * 3600,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// The MQTT source: the one enabled MQTT block, wherever it was written.
    #[serde(skip)]
    pub mqtt: Option<MqttConfig>,
    /// `[channels_config.mqtt]` as written, read into `mqtt` at load.
    #[serde(rename = "mqtt")]
    mqtt_table: Option<toml::Table>,
    /// Inboxes, by alias (`[channels_config.email.<alias>]`).
    pub email: BTreeMap<String, EmailConfig>,
    pub slack: BTreeMap<String, SlackConfig>,
    pub telegram: BTreeMap<String, TelegramConfig>,
    /// Drive change feeds, by alias.
    pub google_drive: BTreeMap<String, DriveConfig>,
    pub filesystem: Option<FilesystemConfig>,
    pub amqp: Option<AmqpConfig>,
}

/// `[channels]`, where ZeroClaw moved `[channels_config]`: only its MQTT
/// block means anything to fanin.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ZeroClawChannels {
    mqtt: Option<toml::Table>,
}

/// The longest `gateway.console_session_secs` allowed.
pub const MAX_CONSOLE_SESSION_SECS: u64 = 30 * 24 * 3600;

/// Where `[channels_config.mqtt]` keys are named in messages.
pub const MQTT_TABLE: &str = "channels_config.mqtt";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `false` parks the block: no connection, and only its key names are
    /// checked (ZeroClaw's key; absent means on).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    pub broker_url: String,
    pub client_id: String,
    pub topics: Vec<String>,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Defaults to what the scheme says; when set it must agree with it.
    #[serde(default)]
    pub use_tls: Option<bool>,
    #[serde(default)]
    pub ca_file: String,
    #[serde(default)]
    pub client_cert_file: String,
    #[serde(default)]
    pub client_key_file: String,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    #[serde(default)]
    pub clean_session: bool,
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Messages dispatched at once; with MQTT 5 also the Receive Maximum
    /// announced to the broker (see `sources::mqtt::protocol`).
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u32,
    /// A shared subscription's group (`$share/<group>/<filter>`): the
    /// broker hands each message to one member of the group, so replicas
    /// share the load. Empty: an ordinary subscription.
    #[serde(default)]
    pub shared_group: String,
    /// ZeroClaw's list of tools its model may not call for messages of this
    /// channel. fanin hands runs on and exposes no tools, so the key is
    /// accepted, whatever its value, and ignored with a warning.
    #[serde(default)]
    pub excluded_tools: Option<toml::Value>,
    /// The dotted table the block was read from (`channels_config.mqtt`,
    /// `channels.mqtt` or `channels.mqtt.<alias>`): messages name its keys
    /// as the operator wrote them.
    #[serde(skip, default = "default_mqtt_table")]
    pub table: String,
}

/// `receive_maximum` unless configured.
pub const DEFAULT_RECEIVE_MAXIMUM: u16 = 1024;

/// The MQTT version the listener speaks (`protocol = "5"` or `"3.1.1"`).
/// 5 is the default because only it lets fanin tell the broker how many
/// unacknowledged messages it takes (see `sources::mqtt::protocol`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum MqttProtocol {
    #[serde(rename = "3.1.1")]
    V311,
    #[default]
    #[serde(rename = "5")]
    V5,
}

fn default_enabled() -> bool {
    true
}
fn default_mqtt_table() -> String {
    MQTT_TABLE.into()
}
fn default_qos() -> u8 {
    1
}
fn default_keep_alive() -> u64 {
    30
}
fn default_receive_maximum() -> u32 {
    u32::from(DEFAULT_RECEIVE_MAXIMUM)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SopConfig {
    pub sops_dir: String,
    pub default_execution_mode: crate::sop::ExecutionMode,
    pub cron_catchup_window_secs: u64,
    pub max_deferred: u32,
    pub untrusted_payload_max_bytes: usize,
    pub agent_loop_grace_secs: u64,
}

impl Default for SopConfig {
    fn default() -> Self {
        SopConfig {
            sops_dir: "sops".into(),
            default_execution_mode: crate::sop::ExecutionMode::Supervised,
            cron_catchup_window_secs: 3600,
            max_deferred: 1000,
            untrusted_payload_max_bytes: 65536,
            agent_loop_grace_secs: 60,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { url: "sqlite://data/fanin.db".into() }
    }
}

/// `[cluster]` (docs/cluster.md): who this replica is and how long it owns a
/// singleton duty without renewing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Empty: the host name and the process id, decided at start.
    pub node_id: String,
    pub lease_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { node_id: String::new(), lease_secs: 15 }
    }
}

/// The longest `node_id`: it is stored with every lease and shown in
/// `/ready`.
pub const MAX_NODE_ID_BYTES: usize = 64;

/// Whether `id` can name a replica: letters, digits and `.`, `_`, `-`,
/// `:`, at most [`MAX_NODE_ID_BYTES`].
pub fn is_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeripheralConfig {
    pub transport: String,
    #[serde(default)]
    pub path: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    115200
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_cap_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig { max_attempts: 10, backoff_initial_ms: 500, backoff_cap_secs: 300 }
    }
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationsConfig {
    pub executor: Option<DestinationConfig>,
    pub agent: Option<DestinationConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub url: String,
    #[serde(default)]
    pub bearer_token: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistriesConfig {
    pub dir: String,
    pub drive_base_url: String,
    pub refresh_secs: u64,
}

impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            dir: "registries".into(),
            drive_base_url: "https://www.googleapis.com/drive/v3".into(),
            refresh_secs: 300,
        }
    }
}

/// A config problem: the file, the key and the reason. `key` is empty for
/// a problem with the whole file (unreadable, TOML syntax).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{file}: {}{reason}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

/// Where the MQTT source connects: `host` without IPv6 brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl MqttConfig {
    /// The dotted name of one of this block's keys, as messages print it.
    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.table)
    }

    /// Host, port (default 1883 for `mqtt://`, 8883 for `mqtts://`) and TLS
    /// from `broker_url`. The error says what is wrong with the URL.
    pub fn endpoint(&self) -> Result<MqttEndpoint, String> {
        let url = url::Url::parse(self.broker_url.trim()).map_err(|e| {
            format!("{:?} is not a URL ({e}); expected mqtt://host:port or mqtts://host:port", self.broker_url)
        })?;
        let tls = match url.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            other => {
                return Err(format!("scheme {other:?} is not supported; use mqtt:// (plaintext) or mqtts:// (TLS)"))
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(format!("{:?} has no host", self.broker_url)),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials belong in username and password, not in broker_url".into());
        }
        if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{:?} must be only scheme://host[:port]", self.broker_url));
        }
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        Ok(MqttEndpoint { host, port, tls })
    }

    /// The filters sent to the broker: each of `topics`, as a shared
    /// subscription of `shared_group` when one is set. Messages still
    /// arrive under the topic they were published to.
    pub fn subscriptions(&self) -> Vec<String> {
        match self.shared_group.as_str() {
            "" => self.topics.clone(),
            group => self.topics.iter().map(|filter| format!("{SHARE_PREFIX}{group}/{filter}")).collect(),
        }
    }

    /// The client id to connect with, `node_id` being this replica's when
    /// the daemon is one of several. Members of a shared group are
    /// connected at once, and a broker drops the older of two connections
    /// under one id, so each gets `<client_id>-<node_id>`; otherwise one
    /// replica at a time holds the subscription under `client_id`, and the
    /// broker's session for it passes from one to the next.
    pub fn client_id_for(&self, node_id: Option<&str>) -> String {
        match node_id {
            Some(node) if !self.shared_group.is_empty() => format!("{}-{node}", self.client_id),
            _ => self.client_id.clone(),
        }
    }
}

impl Config {
    /// Parses and validates the text of `file`, whose relative paths
    /// resolve against `base_dir` (the runtime reads the file and resolves
    /// its directory). Every problem found is returned.
    pub fn parse(text: &str, file: &Path, base_dir: PathBuf) -> Result<Config, Vec<ConfigError>> {
        let path = file;
        let file = path.display().to_string();
        let read = read_strict::<Config>(text);
        let mut errors: Vec<ConfigError> = read
            .problems
            .iter()
            .map(|p| ConfigError { file: file.clone(), key: p.key.clone(), reason: p.reason_with_location() })
            .collect();
        let Some(mut config) = read.value else {
            return Err(errors);
        };
        config.base_dir = base_dir;
        config.file = path.to_path_buf();
        let mut problems = config.read_mqtt();
        problems.extend(config.validate());
        for (key, reason) in problems {
            let reason = match read.lines.line_of(&key) {
                Some(line) => format!("{reason} (line {line})"),
                None => reason,
            };
            errors.push(ConfigError { file: file.clone(), key, reason });
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// A path from the config resolved against the config file's directory
    /// (an absolute path stays as it is).
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }

    /// The SOP directory, resolved.
    pub fn sops_dir(&self) -> PathBuf {
        self.resolve(&self.sop.sops_dir)
    }

    /// Every semantic problem as (dotted key, reason).
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        validate_gateway(&self.gateway, &mut problems);
        validate_sop(&self.sop, &mut problems);
        validate_store(&self.store, &mut problems);
        if let Some(cluster) = &self.cluster {
            validate_cluster(cluster, &self.store, &mut problems);
        }
        for (board, peripheral) in &self.peripherals {
            validate_peripheral(board, peripheral, &mut problems);
        }
        validate_delivery(&self.delivery, &mut problems);
        self.channels_config.validate_sources(&mut problems);
        for (name, destination) in [("executor", &self.destinations.executor), ("agent", &self.destinations.agent)] {
            if let Some(destination) = destination {
                if let Err(reason) = check_http_url(&destination.url) {
                    problems.push((format!("destinations.{name}.url"), reason));
                }
                if let Some(reason) = header_secret_problem(&destination.bearer_token) {
                    problems.push((format!("destinations.{name}.bearer_token"), reason));
                }
            }
        }
        if let Err(reason) = check_http_url(&self.registries.drive_base_url) {
            problems.push(("registries.drive_base_url".into(), reason));
        }
        problems
    }
}

impl Config {
    /// What loads but is likely not what the operator meant, one line each
    /// naming the file and key.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let file = self.file.display();
        let g = &self.gateway;
        if g.trust_forwarded_headers && g.trusted_proxies.is_empty() {
            warnings.push(format!(
                "{file}: gateway.trusted_proxies: empty, so X-Forwarded-For is believed only from a proxy on loopback \
                 (127.0.0.0/8, ::1); list your proxies if they run elsewhere"
            ));
        }
        if !g.trust_forwarded_headers && !g.trusted_proxies.is_empty() {
            warnings.push(format!(
                "{file}: gateway.trusted_proxies: ignored while trust_forwarded_headers = false (every client is its \
                 TCP peer)"
            ));
        }
        if let (Some(mqtt), Some(cluster)) = (&self.channels_config.mqtt, &self.cluster) {
            if !mqtt.shared_group.is_empty() && !mqtt.clean_session && cluster.node_id.is_empty() {
                warnings.push(format!(
                    "{file}: {}: with a persistent session give each replica a fixed cluster.node_id: the default \
                     changes with every start, so does the client id (<client_id>-<node_id>), and the broker may \
                     go on queuing messages for the old session's share of the group, which nobody reads",
                    mqtt.key("shared_group")
                ));
            }
        }
        warnings.extend(self.load_warnings.iter().map(|(key, reason)| format!("{file}: {key}: {reason}")));
        warnings
    }

    /// Reads the MQTT block into `channels_config.mqtt`: from
    /// `[channels_config.mqtt]`, or from ZeroClaw's `[channels.mqtt]` (one
    /// block) or `[channels.mqtt.<alias>]` (one block per alias, every value
    /// a table). A block with `enabled = false` is parked. At most one
    /// block may be enabled: fanin keeps one broker connection. Returns the
    /// problems as (dotted key, reason); warnings go to `load_warnings`.
    fn read_mqtt(&mut self) -> Problems {
        let mut problems = Vec::new();
        let native = self.channels_config.mqtt_table.take();
        let zeroclaw = self.channels.mqtt.take();
        let blocks: Vec<(String, toml::Table)> = match (native, zeroclaw) {
            (Some(_), Some(_)) => {
                problems.push((
                    "channels.mqtt".into(),
                    "[channels.mqtt] and [channels_config.mqtt] both configure the MQTT source; fanin reads \
                     [channels.mqtt] (ZeroClaw's name) as [channels_config.mqtt]: keep one of the two"
                        .into(),
                ));
                return problems;
            }
            (Some(table), None) => vec![(MQTT_TABLE.to_string(), table)],
            (None, Some(table)) if !table.is_empty() && table.values().all(toml::Value::is_table) => table
                .into_iter()
                .filter_map(|(alias, value)| match value {
                    toml::Value::Table(t) => Some((format!("channels.mqtt.{alias}"), t)),
                    _ => None,
                })
                .collect(),
            (None, Some(table)) => vec![("channels.mqtt".to_string(), table)],
            (None, None) => return problems,
        };
        let mut enabled = Vec::new();
        let mut enabled_paths = Vec::new();
        for (path, table) in blocks {
            let parked = matches!(table.get("enabled"), Some(toml::Value::Boolean(false)));
            let says_enabled = table.contains_key("enabled");
            let (value, found) = deserialize_table::<MqttConfig>(table);
            let key = |k: &str| if k.is_empty() { path.clone() } else { format!("{path}.{k}") };
            if parked {
                // A parked block may be half written; a misspelt key is still
                // refused, so it cannot wait hidden for the day it is enabled.
                problems.extend(
                    found
                        .iter()
                        .filter(|p| p.reason.starts_with("unknown key"))
                        .map(|p| (key(&p.key), p.reason.clone())),
                );
                self.load_warnings.push((
                    path.clone(),
                    "enabled = false: fanin makes no MQTT connection for this block, and checks only its key names"
                        .into(),
                ));
                continue;
            }
            problems.extend(found.iter().map(|p| (key(&p.key), p.reason.clone())));
            enabled_paths.push(path.clone());
            let Some(mut mqtt) = value else { continue };
            mqtt.table = path.clone();
            if mqtt.excluded_tools.is_some() {
                self.load_warnings.push((
                    mqtt.key("excluded_tools"),
                    "ignored: ZeroClaw key; fanin exposes no tools to a model, so there is nothing to exclude".into(),
                ));
            }
            if !says_enabled && path != MQTT_TABLE {
                self.load_warnings.push((
                    path.clone(),
                    "no `enabled` key: fanin connects with this block, where ZeroClaw leaves a block without \
                     `enabled = true` off; write enabled = true (or false) to say which"
                        .into(),
                ));
            }
            validate_mqtt(&mqtt, &mut problems);
            enabled.push(mqtt);
        }
        if enabled_paths.len() > 1 {
            problems.push((
                "channels.mqtt".into(),
                format!(
                    "{} MQTT blocks are enabled ({}); fanin keeps one broker connection: set enabled = false on all \
                     but one",
                    enabled_paths.len(),
                    enabled_paths.join(", ")
                ),
            ));
            return problems;
        }
        self.channels_config.mqtt = enabled.pop();
        problems
    }
}

type Problems = Vec<(String, String)>;

fn validate_gateway(gateway: &GatewayConfig, problems: &mut Problems) {
    if gateway.host.parse::<IpAddr>().is_err() && !is_hostname(&gateway.host) {
        problems.push(("gateway.host".into(), format!("{:?} is neither an IP address nor a hostname", gateway.host)));
    }
    if gateway.max_body_bytes == 0 {
        problems.push(("gateway.max_body_bytes".into(), "must be greater than 0".into()));
    }
    if gateway.request_timeout_secs == 0 {
        problems.push(("gateway.request_timeout_secs".into(), "must be greater than 0".into()));
    }
    let depth_limit = crate::event::MAX_PAYLOAD_DEPTH_LIMIT;
    if !(1..=depth_limit).contains(&gateway.max_payload_depth) {
        problems.push((
            "gateway.max_payload_depth".into(),
            format!(
                "must be between 1 and {depth_limit} (fanin stores a payload a few levels deeper than it \
                 arrived, and must be able to read it back)"
            ),
        ));
    }
    for (key, secs) in [
        ("header_read_timeout_secs", gateway.header_read_timeout_secs),
        ("idle_timeout_secs", gateway.idle_timeout_secs),
        ("console_session_secs", gateway.console_session_secs),
    ] {
        if secs == 0 {
            problems.push((format!("gateway.{key}"), "must be greater than 0".into()));
        }
    }
    if gateway.console_session_secs > MAX_CONSOLE_SESSION_SECS {
        problems.push((
            "gateway.console_session_secs".into(),
            format!("must be at most {MAX_CONSOLE_SESSION_SECS} (30 days); a sign-in is a credential"),
        ));
    }
    if gateway.max_connections == Some(0) {
        problems.push((
            "gateway.max_connections".into(),
            "must be at least 1 (leave it out for the default derived from the descriptor limit)".into(),
        ));
    }
    for (i, text) in gateway.trusted_proxies.iter().enumerate() {
        if let Err(reason) = crate::net::parse_proxy_net(text) {
            problems.push((format!("gateway.trusted_proxies[{i}]"), reason));
        }
    }
    if let Some(reason) = header_secret_problem(&gateway.webhook_secret) {
        problems.push(("gateway.webhook_secret".into(), reason));
    }
}

/// Why a secret that travels in an HTTP header could never arrive intact,
/// if it could not: HTTP drops whitespace around a header value, and only
/// visible ASCII, spaces and tabs survive as text. Empty means unset.
fn header_secret_problem(secret: &str) -> Option<String> {
    if secret.is_empty() {
        return None;
    }
    if secret.trim().is_empty() {
        return Some("is only whitespace, which no request can send (HTTP trims header values); set a real secret or leave it empty".into());
    }
    if secret.trim() != secret {
        return Some("has leading or trailing whitespace, which HTTP trims from header values, so no request could match it; remove the whitespace".into());
    }
    if !secret.chars().all(|c| c == ' ' || c == '\t' || c.is_ascii_graphic()) {
        return Some(
            "must be visible ASCII (spaces and tabs inside are fine): other characters cannot be sent as header text"
                .into(),
        );
    }
    None
}

/// RFC 1123 hostname: dot-separated labels of letters, digits and inner
/// hyphens, each 1–63 bytes, 253 bytes in all.
fn is_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn validate_mqtt(mqtt: &MqttConfig, problems: &mut Problems) {
    let key = |k: &str| mqtt.key(k);
    match mqtt.endpoint() {
        Err(reason) => problems.push((key("broker_url"), reason)),
        Ok(endpoint) => match (endpoint.tls, mqtt.use_tls) {
            (true, Some(false)) => problems.push((
                key("use_tls"),
                "use_tls = false contradicts the mqtts:// scheme of broker_url; \
                 set use_tls = true (or remove it), or use an mqtt:// URL for plaintext"
                    .into(),
            )),
            (false, Some(true)) => problems.push((
                key("use_tls"),
                "use_tls = true contradicts the mqtt:// (plaintext) scheme of broker_url; \
                 use an mqtts:// URL for TLS, or set use_tls = false (or remove it)"
                    .into(),
            )),
            (false, _) => {
                for (name, value) in [
                    ("ca_file", &mqtt.ca_file),
                    ("client_cert_file", &mqtt.client_cert_file),
                    ("client_key_file", &mqtt.client_key_file),
                ] {
                    if !value.is_empty() {
                        problems.push((
                            key(name),
                            "only used with TLS, but broker_url is mqtt:// (plaintext); use mqtts://".into(),
                        ));
                    }
                }
            }
            _ => {}
        },
    }
    if mqtt.qos > 2 {
        problems.push((key("qos"), format!("{} is not a QoS level; expected 0, 1 or 2", mqtt.qos)));
    }
    if mqtt.topics.is_empty() {
        problems.push((key("topics"), "at least one topic filter is required".into()));
    }
    for (i, topic) in mqtt.topics.iter().enumerate() {
        if let Err(reason) = crate::topic::validate_filter(topic) {
            problems.push((mqtt.key(&format!("topics[{i}]")), reason));
        } else if let Some(rest) = topic.strip_prefix(SHARE_PREFIX) {
            // Triggers match the topic a message was published to, which
            // a filter written with its group would hide.
            let filter = rest.split_once('/').map_or("<filter>", |(_, filter)| filter);
            problems.push((
                mqtt.key(&format!("topics[{i}]")),
                format!(
                    "{topic:?} names a shared subscription; write the filter alone ({filter:?}) \
                     and the group in shared_group"
                ),
            ));
        }
    }
    if let Err(reason) = validate_shared_group(&mqtt.shared_group) {
        problems.push((key("shared_group"), reason));
    }
    if mqtt.client_id.trim().is_empty() {
        problems.push((key("client_id"), "must not be empty".into()));
    }
    if mqtt.client_cert_file.is_empty() != mqtt.client_key_file.is_empty() {
        let missing = if mqtt.client_cert_file.is_empty() { "client_cert_file" } else { "client_key_file" };
        problems.push((
            key(missing),
            "client_cert_file and client_key_file go together (mutual TLS): set both or neither".into(),
        ));
    }
    if mqtt.keep_alive_secs == 0 || mqtt.keep_alive_secs > u64::from(u16::MAX) {
        problems.push((key("keep_alive_secs"), "must be between 1 and 65535".into()));
    }
    if mqtt.receive_maximum == 0 || mqtt.receive_maximum > u32::from(u16::MAX) {
        problems.push((key("receive_maximum"), "must be between 1 and 65535 (MQTT 5 Receive Maximum)".into()));
    }
}

/// What a shared subscription's filter starts with (MQTT 5 §4.8.2;
/// Mosquitto takes it in 3.1.1 too).
pub const SHARE_PREFIX: &str = "$share/";

/// A share name is one whole topic level of its own: no level separator,
/// no wildcard.
fn validate_shared_group(group: &str) -> Result<(), String> {
    if group.is_empty() {
        return Ok(());
    }
    if group.trim().is_empty() {
        return Err("must not be blank; leave it empty (\"\") for an ordinary subscription".into());
    }
    if group.contains(['/', '+', '#', '\0']) {
        return Err(format!("{group:?} must not contain '/', '+', '#' or NUL (a group is one topic level)"));
    }
    Ok(())
}

fn validate_sop(sop: &SopConfig, problems: &mut Problems) {
    if sop.sops_dir.trim().is_empty() {
        problems.push(("sop.sops_dir".into(), "must not be empty".into()));
    }
}

fn validate_store(store: &StoreConfig, problems: &mut Problems) {
    let url = store.url.trim();
    let ok = if let Some(path) = url.strip_prefix("sqlite://") {
        !path.is_empty()
    } else if let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) {
        !rest.is_empty()
    } else {
        false
    };
    if !ok {
        problems.push((
            "store.url".into(),
            format!("{:?} is not a store URL; expected sqlite://<path> or postgres://user@host/db", store.url),
        ));
    }
}

fn validate_cluster(cluster: &ClusterConfig, store: &StoreConfig, problems: &mut Problems) {
    let url = store.url.trim();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        problems.push((
            "cluster".into(),
            "replicas share one PostgreSQL store: set store.url to postgres://user@host/db (a SQLite file takes \
             one daemon)"
                .into(),
        ));
    }
    if !cluster.node_id.is_empty() && !is_node_id(&cluster.node_id) {
        problems.push((
            "cluster.node_id".into(),
            format!(
                "{:?}: use letters, digits and . _ - : (at most {MAX_NODE_ID_BYTES} bytes), or leave it empty for \
                 the host name and process id",
                cluster.node_id
            ),
        ));
    }
    if !(3..=3600).contains(&cluster.lease_secs) {
        problems.push(("cluster.lease_secs".into(), "must be between 3 and 3600".into()));
    }
}

pub use crate::sop::is_board_name;

fn validate_peripheral(board: &str, peripheral: &PeripheralConfig, problems: &mut Problems) {
    let key = |k: &str| format!("peripherals.{board}.{k}");
    if !is_board_name(board) {
        problems.push((format!("peripherals.{board}"), "board names are [a-z0-9][a-z0-9._-]*".into()));
    }
    match peripheral.transport.as_str() {
        "serial" => {
            if peripheral.path.trim().is_empty() {
                problems.push((key("path"), "required with transport = \"serial\" (e.g. /dev/ttyACM0)".into()));
            }
            if peripheral.baud == 0 {
                problems.push((key("baud"), "must be greater than 0".into()));
            }
        }
        "http" => {
            if !peripheral.path.is_empty() {
                problems.push((
                    key("path"),
                    "not used with transport = \"http\" (signals arrive on POST /peripheral/{board}/{signal}); remove it"
                        .into(),
                ));
            }
        }
        other => {
            problems.push((key("transport"), format!("{other:?} is not a transport; expected \"serial\" or \"http\"")))
        }
    }
}

fn validate_delivery(delivery: &DeliveryConfig, problems: &mut Problems) {
    if delivery.max_attempts == 0 {
        problems.push(("delivery.max_attempts".into(), "must be at least 1".into()));
    }
}

/// An absolute http:// or https:// URL with a host.
fn check_http_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sop::ExecutionMode;

    fn load_text(text: &str) -> (tempfile::TempDir, Result<Config, Vec<ConfigError>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let result = Config::parse(text, &path, base);
        (dir, result)
    }

    fn errors_of(text: &str) -> Vec<ConfigError> {
        match load_text(text).1 {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(errors) => errors,
        }
    }

    /// Asserts an error names `key` and its reason contains `reason`.
    fn assert_error(text: &str, key: &str, reason: &str) {
        let errors = errors_of(text);
        assert!(
            errors.iter().any(|e| e.key == key && e.reason.contains(reason)),
            "no error {key}: …{reason}… in {errors:#?}"
        );
        assert!(errors.iter().all(|e| e.file.ends_with("config.toml")));
    }

    const MQTT: &str = "[channels_config.mqtt]\nclient_id = \"fanin-1\"\ntopics = [\"sensors/#\"]\n";

    #[test]
    fn an_empty_file_gives_every_default_of_design_2_1() {
        let (dir, result) = load_text("");
        let c = result.unwrap();
        let g = &c.gateway;
        assert_eq!(g.host, "127.0.0.1");
        assert_eq!(g.port, 3000);
        assert!(g.require_pairing);
        assert_eq!(g.webhook_secret, "");
        assert_eq!(g.webhook_rate_limit_per_minute, 60);
        assert_eq!(g.pair_rate_limit_per_minute, 10);
        assert_eq!(g.idempotency_ttl_secs, 300);
        assert_eq!(g.max_body_bytes, 65536);
        assert_eq!(g.max_payload_depth, 64);
        assert_eq!(g.request_timeout_secs, 30);
        assert!(!g.trust_forwarded_headers);
        assert!(g.trusted_proxies.is_empty());
        assert!(!g.allow_remote_admin);
        assert_eq!(g.console_session_secs, 8 * 3600);
        assert_eq!(g.header_read_timeout_secs, 10);
        assert_eq!(g.idle_timeout_secs, 60);
        assert_eq!(g.max_connections, None);
        assert!(c.channels_config.mqtt.is_none());
        assert_eq!(c.sop.sops_dir, "sops");
        assert_eq!(c.sop.default_execution_mode, ExecutionMode::Supervised);
        assert_eq!(c.sop.cron_catchup_window_secs, 3600);
        assert_eq!(c.sop.max_deferred, 1000);
        assert_eq!(c.sop.untrusted_payload_max_bytes, 65536);
        assert_eq!(c.sop.agent_loop_grace_secs, 60);
        assert_eq!(c.store.url, "sqlite://data/fanin.db");
        assert!(c.cluster.is_none());
        assert!(c.peripherals.is_empty());
        assert_eq!(c.delivery.max_attempts, 10);
        assert_eq!(c.delivery.backoff_initial_ms, 500);
        assert_eq!(c.delivery.backoff_cap_secs, 300);
        assert!(c.destinations.executor.is_none());
        assert!(c.destinations.agent.is_none());
        assert_eq!(c.registries.dir, "registries");
        assert_eq!(c.registries.drive_base_url, "https://www.googleapis.com/drive/v3");
        assert_eq!(c.registries.refresh_secs, 300);
        let base = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(c.base_dir, base);
        assert!(c.base_dir.is_absolute());
        assert_eq!(c.file, dir.path().join("config.toml"));
    }

    #[test]
    fn mqtt_defaults_follow_the_scheme() {
        let (_d, result) = load_text(&format!("{MQTT}broker_url = \"mqtt://broker.local\"\n"));
        let c = result.unwrap();
        let mqtt = c.channels_config.mqtt.unwrap();
        assert_eq!(mqtt.qos, 1);
        assert_eq!(mqtt.keep_alive_secs, 30);
        assert!(!mqtt.clean_session);
        assert_eq!(mqtt.protocol, MqttProtocol::V5);
        assert_eq!(mqtt.receive_maximum, 1024);
        assert_eq!(mqtt.use_tls, None);
        assert_eq!(mqtt.shared_group, "");
        let endpoint = mqtt.endpoint().unwrap();
        assert_eq!(endpoint, MqttEndpoint { host: "broker.local".into(), port: 1883, tls: false });
    }

    #[test]
    fn a_shared_group_subscribes_every_filter_under_share_and_names_each_replica() {
        let text = format!("{MQTT}broker_url = \"mqtt://b\"\n");
        let (_d, result) = load_text(&text.replace("[\"sensors/#\"]", "[\"sensors/#\", \"+/alarm\"]"));
        let mut mqtt = result.unwrap().channels_config.mqtt.unwrap();
        assert_eq!(mqtt.subscriptions(), ["sensors/#", "+/alarm"], "no group: the filters as written");
        assert_eq!(mqtt.client_id_for(None), "fanin-1");
        assert_eq!(mqtt.client_id_for(Some("r2")), "fanin-1", "replicas taking turns share one session");

        let (_d, result) = load_text(&format!("{text}shared_group = \"workers\"\n"));
        mqtt = result.unwrap().channels_config.mqtt.unwrap();
        assert_eq!(mqtt.subscriptions(), ["$share/workers/sensors/#"]);
        assert_eq!(mqtt.client_id_for(None), "fanin-1", "a daemon alone keeps its id");
        assert_eq!(mqtt.client_id_for(Some("r2")), "fanin-1-r2", "members connected at once need their own");
    }

    #[test]
    fn a_shared_group_is_one_topic_level_and_share_filters_are_refused() {
        let text = format!("{MQTT}broker_url = \"mqtt://b\"\n");
        for group in ["a/b", "a+", "#", "x\\u0000"] {
            assert_error(
                &format!("{text}shared_group = \"{group}\"\n"),
                "channels_config.mqtt.shared_group",
                "must not contain '/', '+', '#' or NUL",
            );
        }
        assert_error(&format!("{text}shared_group = \"  \"\n"), "channels_config.mqtt.shared_group", "blank");
        for good in ["workers", "fanin-prod_1", "a.b"] {
            let (_d, result) = load_text(&format!("{text}shared_group = \"{good}\"\n"));
            assert!(result.is_ok(), "{good}: {result:?}");
        }
        let shared = text.replace("[\"sensors/#\"]", "[\"$share/g/sensors/#\"]");
        let errors = errors_of(&shared);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].key, "channels_config.mqtt.topics[0]");
        assert!(
            errors[0].reason.contains("shared subscription")
                && errors[0].reason.contains("\"sensors/#\"")
                && errors[0].reason.contains("shared_group"),
            "{errors:#?}"
        );
        // A filter merely containing the word is an ordinary filter.
        let (_d, result) = load_text(&text.replace("[\"sensors/#\"]", "[\"a/$share/b\", \"$shared/x\"]"));
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn a_shared_group_of_replicas_without_fixed_node_ids_is_warned_about() {
        let base = format!(
            "{MQTT}broker_url = \"mqtt://b\"\nshared_group = \"g\"\n\n[store]\nurl = \"postgres://db/fanin\"\n"
        );
        let warned = |text: &str| {
            let (_d, result) = load_text(text);
            let warnings = result.unwrap_or_else(|e| panic!("{text}\n{e:#?}")).warnings();
            warnings
                .iter()
                .any(|w| w.contains("channels_config.mqtt.shared_group") && w.contains("fixed cluster.node_id"))
        };
        assert!(warned(&format!("{base}[cluster]\n")));
        assert!(!warned(&format!("{base}[cluster]\nnode_id = \"r1\"\n")), "a fixed id resumes its session");
        assert!(!warned(&base), "a daemon alone keeps client_id");
        let clean = base.replace("shared_group", "clean_session = true\nshared_group");
        assert!(!warned(&format!("{clean}[cluster]\n")), "a clean session leaves nothing behind");
    }

    #[test]
    fn mqtt_endpoint_parses_hosts_ports_and_ipv6() {
        let cases = [
            ("mqtt://[::1]:1883", "::1", 1883, false),
            ("mqtts://[::1]", "::1", 8883, true),
            ("mqtts://broker.example.com:8884", "broker.example.com", 8884, true),
            ("mqtt://10.0.0.5", "10.0.0.5", 1883, false),
        ];
        for (url, host, port, tls) in cases {
            let mqtt = MqttConfig {
                broker_url: url.into(),
                client_id: "x".into(),
                topics: vec!["a".into()],
                qos: 1,
                username: String::new(),
                password: String::new(),
                use_tls: None,
                ca_file: String::new(),
                client_cert_file: String::new(),
                client_key_file: String::new(),
                keep_alive_secs: 30,
                clean_session: false,
                protocol: MqttProtocol::V5,
                receive_maximum: 1024,
                shared_group: String::new(),
                enabled: true,
                excluded_tools: None,
                table: MQTT_TABLE.into(),
            };
            let e = mqtt.endpoint().unwrap();
            assert_eq!((e.host.as_str(), e.port, e.tls), (host, port, tls), "{url}");
        }
    }

    #[test]
    fn mqtt_validation_errors() {
        let cases: &[(&str, &str, &str)] = &[
            ("broker_url = \"tcp://b:1883\"\n", "channels_config.mqtt.broker_url", "mqtt://"),
            ("broker_url = \"mqtt://\"\n", "channels_config.mqtt.broker_url", ""),
            ("broker_url = \"mqtts://b\"\nuse_tls = false\n", "channels_config.mqtt.use_tls", "set use_tls = true"),
            ("broker_url = \"mqtt://b\"\nuse_tls = true\n", "channels_config.mqtt.use_tls", "use an mqtts:// URL"),
            ("broker_url = \"mqtt://b\"\nqos = 3\n", "channels_config.mqtt.qos", "0, 1 or 2"),
            ("broker_url = \"mqtt://b\"\nkeep_alive_secs = 0\n", "channels_config.mqtt.keep_alive_secs", "between 1"),
            ("broker_url = \"mqtt://b\"\nprotocol = \"4\"\n", "channels_config.mqtt.protocol", "`3.1.1` or `5`"),
            ("broker_url = \"mqtt://b\"\nreceive_maximum = 0\n", "channels_config.mqtt.receive_maximum", "between 1"),
            ("broker_url = \"mqtt://b\"\nreceive_maximum = 65536\n", "channels_config.mqtt.receive_maximum", "65535"),
            (
                "broker_url = \"mqtts://b\"\nclient_cert_file = \"c.pem\"\n",
                "channels_config.mqtt.client_key_file",
                "both or neither",
            ),
            (
                "broker_url = \"mqtts://b\"\nclient_key_file = \"k.pem\"\n",
                "channels_config.mqtt.client_cert_file",
                "both or neither",
            ),
        ];
        for (extra, key, reason) in cases {
            assert_error(&format!("{MQTT}{extra}"), key, reason);
        }
        assert_error(
            "[channels_config.mqtt]\nbroker_url = \"mqtt://b\"\nclient_id = \" \"\ntopics = [\"a\"]\n",
            "channels_config.mqtt.client_id",
            "empty",
        );
        assert_error(
            "[channels_config.mqtt]\nbroker_url = \"mqtt://b\"\nclient_id = \"c\"\ntopics = []\n",
            "channels_config.mqtt.topics",
            "at least one",
        );
        assert_error(
            "[channels_config.mqtt]\nbroker_url = \"mqtt://b\"\nclient_id = \"c\"\ntopics = [\"ok/#\", \"bad/#/x\"]\n",
            "channels_config.mqtt.topics[1]",
            "#",
        );
        assert_error(
            "[channels_config.mqtt]\nclient_id = \"c\"\ntopics = [\"a\"]\n",
            "channels_config.mqtt.broker_url",
            "required key is missing",
        );
    }

    /// The MQTT block of ZeroClaw's first config layout, key for key.
    const ZEROCLAW_V1_MQTT: &str = "[channels_config.mqtt]\nenabled = true\n\
        broker_url = \"mqtt://broker.example.com:1883\"\nclient_id = \"zeroclaw-1\"\n\
        topics = [\"zeroclaw/sop/v1\"]\nqos = 1\nuse_tls = false\nkeep_alive_secs = 30\n";

    /// A block in ZeroClaw's current layout: one table per alias, with the
    /// keys its schema has.
    fn zeroclaw_mqtt(alias: &str, enabled: &str, extra: &str) -> String {
        format!(
            "[channels.mqtt.{alias}]\n{enabled}broker_url = \"mqtts://broker.example.com:8883\"\n\
             client_id = \"zeroclaw-{alias}\"\ntopics = [\"sensors/#\", \"alerts/+/critical\"]\nqos = 1\n\
             username = \"zc\"\npassword = \"secret\"\nuse_tls = true\nkeep_alive_secs = 30\n\
             excluded_tools = [\"shell\", \"file_write\"]\n{extra}"
        )
    }

    fn mqtt_of(text: &str) -> (Option<MqttConfig>, Vec<String>) {
        let (_d, result) = load_text(text);
        let c = result.unwrap_or_else(|e| panic!("{text}\n{e:#?}"));
        let warnings = c.warnings();
        (c.channels_config.mqtt, warnings)
    }

    #[test]
    fn zeroclaw_first_layout_mqtt_block_loads_as_written() {
        let (mqtt, warnings) = mqtt_of(ZEROCLAW_V1_MQTT);
        let mqtt = mqtt.expect("enabled = true is an MQTT source");
        assert!(mqtt.enabled);
        assert_eq!(mqtt.table, "channels_config.mqtt");
        assert_eq!(mqtt.topics, ["zeroclaw/sop/v1"]);
        assert_eq!(mqtt.use_tls, Some(false));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn zeroclaw_current_layout_loads_and_excluded_tools_is_warned_about() {
        let (mqtt, warnings) = mqtt_of(&zeroclaw_mqtt("default", "enabled = true\n", ""));
        let mqtt = mqtt.expect("the enabled alias is the MQTT source");
        assert_eq!(mqtt.table, "channels.mqtt.default");
        assert_eq!(mqtt.key("qos"), "channels.mqtt.default.qos");
        assert_eq!(mqtt.username, "zc");
        assert_eq!(mqtt.endpoint().unwrap().port, 8883);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("config.toml: channels.mqtt.default.excluded_tools: ignored"),
            "names the file and key: {warnings:?}"
        );
    }

    #[test]
    fn zeroclaw_single_block_layout_is_an_alias_of_channels_config() {
        let text =
            "[channels.mqtt]\nenabled = true\nbroker_url = \"mqtt://b\"\nclient_id = \"c\"\ntopics = [\"a/#\"]\n";
        let (mqtt, warnings) = mqtt_of(text);
        assert_eq!(mqtt.expect("[channels.mqtt] is the MQTT source").table, "channels.mqtt");
        assert!(warnings.is_empty(), "{warnings:?}");
        // Its keys are checked, and named, as under [channels_config.mqtt].
        assert_error(&text.replace("topics", "topix"), "channels.mqtt.topix", "unknown key");
        assert_error(&format!("{text}qos = 3\n"), "channels.mqtt.qos", "line 6");
        assert_error(&text.replace("mqtt://b", "tcp://b"), "channels.mqtt.broker_url", "mqtt://");
    }

    #[test]
    fn both_mqtt_tables_at_once_are_refused_naming_both() {
        let text = format!("{ZEROCLAW_V1_MQTT}{}", zeroclaw_mqtt("default", "enabled = true\n", ""));
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let e = &errors[0];
        assert_eq!(e.key, "channels.mqtt");
        assert!(e.reason.contains("[channels_config.mqtt]") && e.reason.contains("keep one"), "{e}");
    }

    #[test]
    fn a_block_without_enabled_connects_and_zeroclaw_layouts_say_so() {
        let (mqtt, warnings) = mqtt_of(&format!("{MQTT}broker_url = \"mqtt://b\"\n"));
        assert!(mqtt.is_some() && warnings.is_empty(), "fanin's own layout: present is on, {warnings:?}");
        let (mqtt, warnings) = mqtt_of(&zeroclaw_mqtt("edge", "", ""));
        assert!(mqtt.is_some(), "present is on in every layout");
        assert!(
            warnings.iter().any(|w| w.contains("channels.mqtt.edge: no `enabled` key") && w.contains("ZeroClaw")),
            "{warnings:?}"
        );
    }

    #[test]
    fn enabled_false_parks_the_block_and_checks_only_key_names() {
        let parked = "[channels.mqtt.old]\nenabled = false\nbroker_url = \"not a url\"\nqos = 9\n";
        let (mqtt, warnings) = mqtt_of(parked);
        assert!(mqtt.is_none(), "a parked block is no MQTT source");
        assert!(warnings.len() == 1 && warnings[0].contains("channels.mqtt.old: enabled = false"), "{warnings:?}");
        let (mqtt, _) = mqtt_of("[channels_config.mqtt]\nenabled = false\n");
        assert!(mqtt.is_none());
        assert_error(&format!("{parked}brokr_url = \"x\"\n"), "channels.mqtt.old.brokr_url", "unknown key");
        assert_error("[channels_config.mqtt]\nenabled = \"no\"\n", "channels_config.mqtt.enabled", "invalid type");
    }

    #[test]
    fn one_enabled_alias_among_parked_ones_is_the_source_two_are_refused() {
        let text =
            format!("{}{}", zeroclaw_mqtt("a", "enabled = false\n", ""), zeroclaw_mqtt("b", "enabled = true\n", ""));
        let (mqtt, _) = mqtt_of(&text);
        assert_eq!(mqtt.unwrap().client_id, "zeroclaw-b");
        let text =
            format!("{}{}", zeroclaw_mqtt("a", "enabled = true\n", ""), zeroclaw_mqtt("b", "enabled = true\n", ""));
        assert_error(&text, "channels.mqtt", "2 MQTT blocks are enabled (channels.mqtt.a, channels.mqtt.b)");
        assert_error(
            &zeroclaw_mqtt("a", "enabled = true\n", "receive_maximum = 0\n"),
            "channels.mqtt.a.receive_maximum",
            "line 12",
        );
    }

    #[test]
    fn other_zeroclaw_channels_are_unknown_keys() {
        assert_error("[channels.webhook]\nport = 8080\n", "channels.webhook", "unknown key; expected `mqtt`");
        assert_error("[channels_config.discord]\nbot_token = \"x\"\n", "channels_config.discord", "unknown key");
        // ZeroClaw's one-block Telegram layout: fanin's takes one table per alias.
        assert_error(
            "[channels_config.telegram]\nbot_token = \"x\"\n",
            "channels_config.telegram.bot_token",
            "invalid type",
        );
    }

    #[test]
    fn matching_tls_settings_are_accepted() {
        for extra in [
            "broker_url = \"mqtts://b\"\nuse_tls = true\n",
            "broker_url = \"mqtt://b\"\nuse_tls = false\n",
            "broker_url = \"mqtts://b\"\nclient_cert_file = \"c\"\nclient_key_file = \"k\"\nqos = 2\n",
        ] {
            let (_d, result) = load_text(&format!("{MQTT}{extra}"));
            assert!(result.is_ok(), "{extra}: {result:?}");
        }
    }

    #[test]
    fn a_cluster_needs_postgres_a_valid_node_id_and_a_sane_lease() {
        const PG: &str = "[store]\nurl = \"postgres://fanin@db/fanin\"\n";
        assert_error("[cluster]\n", "cluster", "PostgreSQL");
        assert_error(&format!("{PG}[cluster]\nnode_id = \"a b\"\n"), "cluster.node_id", "letters, digits");
        assert_error(&format!("{PG}[cluster]\nnode_id = \"{}\"\n", "n".repeat(65)), "cluster.node_id", "at most 64");
        assert_error(&format!("{PG}[cluster]\nlease_secs = 2\n"), "cluster.lease_secs", "between 3 and 3600");
        assert_error(&format!("{PG}[cluster]\nleases = 2\n"), "cluster.leases", "unknown");
        let (_dir, config) = load_text(&format!("{PG}[cluster]\n"));
        let cluster = config.unwrap().cluster.expect("an empty [cluster] is a cluster");
        assert_eq!((cluster.node_id.as_str(), cluster.lease_secs), ("", 15));
        let (_dir, config) = load_text(&format!("{PG}[cluster]\nnode_id = \"eu-1.node_2:a\"\nlease_secs = 5\n"));
        let cluster = config.unwrap().cluster.unwrap();
        assert_eq!((cluster.node_id.as_str(), cluster.lease_secs), ("eu-1.node_2:a", 5));
    }

    #[test]
    fn gateway_store_peripheral_destination_errors() {
        let cases: &[(&str, &str, &str)] = &[
            ("[gateway]\nhost = \"not a host!\"\n", "gateway.host", "neither"),
            ("[gateway]\nmax_body_bytes = 0\n", "gateway.max_body_bytes", "greater than 0"),
            ("[gateway]\nrequest_timeout_secs = 0\n", "gateway.request_timeout_secs", "greater than 0"),
            ("[gateway]\nmax_payload_depth = 0\n", "gateway.max_payload_depth", "between 1 and 100"),
            ("[gateway]\nmax_payload_depth = 101\n", "gateway.max_payload_depth", "between 1 and 100"),
            ("[gateway]\nmax_payload_depth = -1\n", "gateway.max_payload_depth", "invalid value"),
            ("[store]\nurl = \"mysql://x\"\n", "store.url", "sqlite://"),
            ("[store]\nurl = \"sqlite://\"\n", "store.url", "sqlite://"),
            ("[peripherals.uno]\ntransport = \"serial\"\n", "peripherals.uno.path", "required"),
            ("[peripherals.uno]\ntransport = \"http\"\npath = \"/dev/ttyACM0\"\n", "peripherals.uno.path", "not used"),
            ("[peripherals.uno]\ntransport = \"usb\"\n", "peripherals.uno.transport", "\"serial\" or \"http\""),
            ("[peripherals.Uno]\ntransport = \"http\"\n", "peripherals.Uno", "[a-z0-9]"),
            ("[peripherals.uno]\npath = \"/dev/x\"\n", "peripherals.uno.transport", "required key is missing"),
            ("[destinations.executor]\nurl = \"ftp://x/y\"\n", "destinations.executor.url", "http://"),
            ("[destinations.agent]\nurl = \"not a url\"\n", "destinations.agent.url", "not a URL"),
            ("[sop]\ndefault_execution_mode = \"fast\"\n", "sop.default_execution_mode", "unknown variant"),
            ("[gateway]\nport = \"3000\"\n", "gateway.port", "invalid type"),
            ("[gateway]\nheader_read_timeout_secs = 0\n", "gateway.header_read_timeout_secs", "greater than 0"),
            ("[gateway]\nidle_timeout_secs = 0\n", "gateway.idle_timeout_secs", "greater than 0"),
            ("[gateway]\nconsole_session_secs = 0\n", "gateway.console_session_secs", "greater than 0"),
            ("[gateway]\nconsole_session_secs = 2592001\n", "gateway.console_session_secs", "at most 2592000"),
            ("[gateway]\nmax_connections = 0\n", "gateway.max_connections", "at least 1"),
            ("[gateway]\nmax_connections = -1\n", "gateway.max_connections", "invalid value"),
            (
                "[gateway]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
                "gateway.trusted_proxies[1]",
                "not a CIDR",
            ),
            ("[gateway]\ntrusted_proxies = [\"proxy.local\"]\n", "gateway.trusted_proxies[0]", "not a CIDR"),
        ];
        for (text, key, reason) in cases {
            assert_error(text, key, reason);
        }
    }

    #[test]
    fn secrets_sent_in_headers_must_survive_the_trip() {
        for (secret, reason) in [
            ("   ", "only whitespace"),
            ("\\t", "only whitespace"),
            (" s3cret", "leading or trailing whitespace"),
            ("s3cret\\n", "leading or trailing whitespace"),
            ("s3cr\\u0000et", "visible ASCII"),
            ("sécret", "visible ASCII"),
        ] {
            assert_error(&format!("[gateway]\nwebhook_secret = \"{secret}\"\n"), "gateway.webhook_secret", reason);
            assert_error(
                &format!("[destinations.agent]\nurl = \"http://a/b\"\nbearer_token = \"{secret}\"\n"),
                "destinations.agent.bearer_token",
                reason,
            );
        }
        for fine in ["", "s3cret", "two words", "a\\tb", "!#$%&'*+-.^_`|~"] {
            let (_d, result) = load_text(&format!("[gateway]\nwebhook_secret = \"{fine}\"\n"));
            assert!(result.is_ok(), "{fine:?}: {result:?}");
        }
    }

    #[test]
    fn forwarding_settings_that_do_nothing_are_warned_about() {
        let warnings = |text: &str| load_text(text).1.unwrap().warnings();
        let w = warnings("[gateway]\ntrust_forwarded_headers = true\n");
        assert!(w.len() == 1 && w[0].contains("gateway.trusted_proxies: empty") && w[0].contains("loopback"), "{w:?}");
        let w = warnings("[gateway]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
        assert!(w.len() == 1 && w[0].contains("ignored while trust_forwarded_headers = false"), "{w:?}");
        assert!(warnings("[gateway]\ntrust_forwarded_headers = true\ntrusted_proxies = [\"10.0.0.1\"]\n").is_empty());
        assert!(warnings("").is_empty());
    }

    #[test]
    fn valid_hosts_stores_and_boards_are_accepted() {
        let text = "[gateway]\nhost = \"::\"\n[store]\nurl = \"postgresql://fanin@db/fanin\"\n\
                    [peripherals.nucleo-f401re]\ntransport = \"serial\"\npath = \"/dev/ttyACM0\"\n\
                    [peripherals.\"bridge.1\"]\ntransport = \"http\"\n\
                    [destinations.executor]\nurl = \"https://exec.example.com/run\"\n";
        let (_d, result) = load_text(text);
        let c = result.unwrap();
        assert_eq!(c.peripherals["nucleo-f401re"].baud, 115200);
        for host in ["localhost", "fanin.example.com", "0.0.0.0", "::1"] {
            assert!(host.parse::<IpAddr>().is_ok() || is_hostname(host), "{host}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_full_path_and_line() {
        assert_error("[gateway]\nwebhook_secrte = \"x\"\n", "gateway.webhook_secrte", "unknown key");
        assert_error("[gateway]\nwebhook_secrte = \"x\"\n", "gateway.webhook_secrte", "line 2");
        assert_error("gatway = 1\n", "gatway", "unknown key");
        assert_error(
            &format!("{MQTT}broker_url = \"mqtt://b\"\nusetls = true\n"),
            "channels_config.mqtt.usetls",
            "unknown key",
        );
        assert_error(
            "[peripherals.uno]\ntransport = \"http\"\nbaudrate = 9600\n",
            "peripherals.uno.baudrate",
            "unknown key",
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = errors_of("typo = 1\n[gateway]\nprot = 1\nmax_body_bytes = 0\n[store]\nurl = \"x\"\n");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for key in ["typo", "gateway.prot", "gateway.max_body_bytes", "store.url"] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let errors = errors_of("[gateway]\nport = = 3\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].reason.contains("line 2"), "{errors:?}");
        assert!(errors[0].to_string().starts_with(&errors[0].file));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let (dir, result) = load_text("[sop]\nsops_dir = \"my-sops\"\n");
        let c = result.unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(c.sops_dir(), base.join("my-sops"));
        assert_eq!(c.resolve("data/fanin.db"), base.join("data/fanin.db"));
        assert_eq!(c.resolve("/abs/path"), PathBuf::from("/abs/path"));
    }
}
