//! `config.toml` (DESIGN §2.1): types, defaults and validation.
//! (Skeleton: loading and validation are being written.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub channels_config: ChannelsConfig,
    pub sop: SopConfig,
    pub store: StoreConfig,
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
    pub request_timeout_secs: u64,
    pub trust_forwarded_headers: bool,
    pub allow_remote_admin: bool,
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
            request_timeout_secs: 30,
            trust_forwarded_headers: false,
            allow_remote_admin: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    pub mqtt: Option<MqttConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
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
}

fn default_qos() -> u8 {
    1
}
fn default_keep_alive() -> u64 {
    30
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
        StoreConfig {
            url: "sqlite://data/fanin.db".into(),
        }
    }
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
        DeliveryConfig {
            max_attempts: 10,
            backoff_initial_ms: 500,
            backoff_cap_secs: 300,
        }
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

/// A config problem: the file, the key and the reason.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl Config {
    /// Reads, parses and validates `path`. Every problem found is returned.
    pub fn load(_path: &Path) -> Result<Config, Vec<ConfigError>> {
        todo!()
    }

    /// A path from the config resolved against the config file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }
}
