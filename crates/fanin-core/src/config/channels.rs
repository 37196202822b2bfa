//! The channel and Drive source blocks of `config.toml`
//! (`[channels_config.email.<alias>]`, `.slack.<alias>`, `.telegram.<alias>`,
//! `.google_drive.<alias>`; docs/configuration.md): their keys, defaults and
//! validation. One table per instance; the alias is what triggers name and
//! what `/ready` shows (`email:ops`).
//!
//! Secrets are given inline (`password`) or by the name of an environment
//! variable (`password_env`), never both: which one a deployment uses must
//! not depend on the order fanin reads them in. Reading the variable is the
//! runtime's (this crate reads no environment); that it names one is
//! checked here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use super::{check_http_url, ChannelsConfig, Problems};
use crate::sop::is_board_name;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `false`: no connection for this mailbox (its values are still checked).
    #[serde(default = "yes")]
    pub enabled: bool,
    pub imap_host: String,
    /// Absent: 993 with `security = "tls"`, else 143.
    #[serde(default)]
    pub imap_port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub ca_file: String,
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub password_env: String,
    #[serde(default = "inbox")]
    pub folder: String,
    /// Only when the server lacks IDLE.
    #[serde(default = "sixty")]
    pub poll_interval_secs: u64,
    /// Empty: everyone. Else exact addresses or `@domain`, any case.
    #[serde(default)]
    pub allowed_senders: Vec<String>,
    #[serde(default = "ten_mib")]
    pub max_message_bytes: usize,
}

/// How the IMAP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// TLS from the first byte (IMAPS).
    #[default]
    Tls,
    /// Plaintext, upgraded with STARTTLS before the login.
    Starttls,
    /// No TLS: only to a loopback host.
    Plain,
}

impl EmailConfig {
    pub fn port(&self) -> u16 {
        self.imap_port.unwrap_or(match self.security {
            Security::Tls => 993,
            Security::Starttls | Security::Plain => 143,
        })
    }

    /// Whether `address` may start runs (`allowed_senders`).
    pub fn allows(&self, address: &str) -> bool {
        let address = address.trim().to_ascii_lowercase();
        self.allowed_senders.is_empty()
            || self.allowed_senders.iter().any(|allowed| {
                let allowed = allowed.trim().to_ascii_lowercase();
                match allowed.strip_prefix('@') {
                    Some(domain) => address.rsplit_once('@').is_some_and(|(_, d)| d == domain),
                    None => address == allowed,
                }
            })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub signing_secret: String,
    #[serde(default)]
    pub signing_secret_env: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub bot_token: String,
    #[serde(default)]
    pub bot_token_env: String,
    #[serde(default)]
    pub mode: TelegramMode,
    #[serde(default)]
    pub secret_token: String,
    #[serde(default)]
    pub secret_token_env: String,
    #[serde(default = "telegram_api")]
    pub api_base_url: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelegramMode {
    /// fanin long-polls `getUpdates`.
    #[default]
    Poll,
    /// Telegram posts to `/channels/telegram/<alias>`.
    Webhook,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Empty: every file the token sees.
    #[serde(default)]
    pub folder_id: String,
    #[serde(default = "sixty")]
    pub poll_interval_secs: u64,
    #[serde(default = "drive_api")]
    pub api_base_url: String,
    #[serde(default)]
    pub token: String,
    #[serde(default = "drive_token_env")]
    pub token_env: String,
    /// The OAuth client of the refresh-token grant; empty: `token` is
    /// used as it is, never renewed.
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
    #[serde(default)]
    pub client_secret_env: String,
    #[serde(default)]
    pub refresh_token: String,
    #[serde(default)]
    pub refresh_token_env: String,
    #[serde(default = "google_token_url")]
    pub token_url: String,
}

/// `[channels_config.filesystem]`: the trees watched for file changes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Roots watched; relative ones resolve against the config's directory.
    pub paths: Vec<String>,
    #[serde(default = "yes")]
    pub recursive: bool,
    /// Globs over the absolute path; empty: every file.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default = "half_second_ms")]
    pub debounce_ms: u64,
    #[serde(default = "sixty_four_kib")]
    pub max_content_bytes: usize,
    #[serde(default)]
    pub allow_broad_roots: bool,
}

/// Roots whose watch would take in a whole system or a person's files:
/// refused unless `allow_broad_roots`, checked as written and as resolved.
pub const BROAD_ROOTS: &[&str] = &["/", "/home", "/etc", "/var", "/tmp", "/root", "/mnt", "/media", "/run", "/usr"];

impl FilesystemConfig {
    /// Why `path` (absolute, as written or resolved) is too broad to watch,
    /// if it is: a listed root, or a home directory (`/home/<user>`).
    pub fn too_broad(path: &str) -> Option<String> {
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        let home = path.strip_prefix("/home/").is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        (BROAD_ROOTS.contains(&path) || home).then(|| {
            format!(
                "{path:?} is too broad a root to watch (a system directory or a home directory); name the directory \
                 the files arrive in, or set allow_broad_roots = true"
            )
        })
    }
}

/// `[channels_config.amqp]`: the queue fanin consumes and what it binds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `amqp://` or `amqps://`, credentials and vhost included.
    pub url: String,
    /// Empty: the default exchange (the queue is bound by name only).
    #[serde(default)]
    pub exchange: String,
    #[serde(default = "topic")]
    pub exchange_type: String,
    pub queue: String,
    /// The queue's `x-` arguments as it is declared (`x-queue-type =
    /// "quorum"`, `x-message-ttl = 60000`): a queue that exists must be
    /// declared with the arguments it has.
    #[serde(default)]
    pub queue_arguments: BTreeMap<String, QueueArgument>,
    #[serde(default)]
    pub bindings: Vec<String>,
    #[serde(default = "two_five_six")]
    pub prefetch: u16,
    #[serde(default)]
    pub ca_file: String,
    /// A larger body is refused (audited, then acknowledged).
    #[serde(default = "one_mib")]
    pub max_message_bytes: usize,
}

/// One value of `queue_arguments`: what AMQP arguments take (a long
/// string, a 64-bit integer, a boolean).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged, expecting = "a string, an integer or a boolean")]
pub enum QueueArgument {
    Text(String),
    Integer(i64),
    Flag(bool),
}

/// A secret as a block gives it: inline, or the environment variable
/// holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSource<'a> {
    Inline(&'a str),
    Env(&'a str),
}

impl SlackConfig {
    pub fn signing_secret(&self) -> SecretSource<'_> {
        secret_source(&self.signing_secret, &self.signing_secret_env)
    }
}

impl EmailConfig {
    pub fn password(&self) -> SecretSource<'_> {
        secret_source(&self.password, &self.password_env)
    }
}

impl TelegramConfig {
    pub fn bot_token(&self) -> SecretSource<'_> {
        secret_source(&self.bot_token, &self.bot_token_env)
    }

    /// Webhook mode only.
    pub fn secret_token(&self) -> SecretSource<'_> {
        secret_source(&self.secret_token, &self.secret_token_env)
    }
}

impl DriveConfig {
    /// An inline `token` wins over `token_env`, which has a default.
    pub fn token(&self) -> SecretSource<'_> {
        match self.token.is_empty() {
            true => SecretSource::Env(&self.token_env),
            false => SecretSource::Inline(&self.token),
        }
    }

    /// Whether access tokens come from the refresh-token grant.
    pub fn refreshes(&self) -> bool {
        !self.client_id.is_empty()
    }

    /// The refresh grant's client secret (validation makes sure exactly
    /// one of the two is set when `client_id` is).
    pub fn client_secret(&self) -> SecretSource<'_> {
        secret_source(&self.client_secret, &self.client_secret_env)
    }

    pub fn refresh_token(&self) -> SecretSource<'_> {
        secret_source(&self.refresh_token, &self.refresh_token_env)
    }
}

/// Validation makes sure exactly one of the two is set.
fn secret_source<'a>(inline: &'a str, env: &'a str) -> SecretSource<'a> {
    match inline.is_empty() {
        true => SecretSource::Env(env),
        false => SecretSource::Inline(inline),
    }
}

impl ChannelsConfig {
    /// Every configured instance as `/ready` names it (`email:ops`), enabled
    /// or not, for checks that compare triggers with the config.
    pub fn instances(&self) -> impl Iterator<Item = (&'static str, &str, bool)> {
        let email = self.email.iter().map(|(a, c)| ("email", a.as_str(), c.enabled));
        let slack = self.slack.iter().map(|(a, c)| ("slack", a.as_str(), c.enabled));
        let telegram = self.telegram.iter().map(|(a, c)| ("telegram", a.as_str(), c.enabled));
        let drive = self.google_drive.iter().map(|(a, c)| ("google_drive", a.as_str(), c.enabled));
        email.chain(slack).chain(telegram).chain(drive)
    }

    pub(super) fn validate_sources(&self, problems: &mut Problems) {
        if let Some(fs) = &self.filesystem {
            validate_filesystem(fs, problems);
        }
        if let Some(amqp) = &self.amqp {
            validate_amqp(amqp, problems);
        }
        for (alias, c) in &self.email {
            let key = |k: &str| format!("channels_config.email.{alias}.{k}");
            check_alias("email", alias, problems);
            validate_email(c, &key, problems);
        }
        for (alias, c) in &self.slack {
            check_alias("slack", alias, problems);
            let key = format!("channels_config.slack.{alias}");
            one_secret(&c.signing_secret, &c.signing_secret_env, &key, "signing_secret", true, problems);
        }
        for (alias, c) in &self.telegram {
            check_alias("telegram", alias, problems);
            let key = format!("channels_config.telegram.{alias}");
            one_secret(&c.bot_token, &c.bot_token_env, &key, "bot_token", true, problems);
            let webhook = c.mode == TelegramMode::Webhook;
            one_secret(&c.secret_token, &c.secret_token_env, &key, "secret_token", webhook, problems);
            if !webhook && (!c.secret_token.is_empty() || !c.secret_token_env.is_empty()) {
                problems.push((format!("{key}.secret_token"), "only used with mode = \"webhook\"".into()));
            }
            if let Err(reason) = check_http_url(&c.api_base_url) {
                problems.push((format!("{key}.api_base_url"), reason));
            }
        }
        for (alias, c) in &self.google_drive {
            check_alias("google_drive", alias, problems);
            let key = |k: &str| format!("channels_config.google_drive.{alias}.{k}");
            if c.poll_interval_secs == 0 {
                problems.push((key("poll_interval_secs"), "must be at least 1".into()));
            }
            if let Err(reason) = check_http_url(&c.api_base_url) {
                problems.push((key("api_base_url"), reason));
            }
            let table = format!("channels_config.google_drive.{alias}");
            let refreshes = c.refreshes();
            one_secret(&c.client_secret, &c.client_secret_env, &table, "client_secret", refreshes, problems);
            one_secret(&c.refresh_token, &c.refresh_token_env, &table, "refresh_token", refreshes, problems);
            let grant_given = [&c.client_secret, &c.client_secret_env, &c.refresh_token, &c.refresh_token_env];
            if !refreshes && grant_given.iter().any(|v| !v.trim().is_empty()) {
                problems.push((key("client_id"), "required with client_secret and refresh_token".into()));
            }
            if refreshes && !c.token.is_empty() {
                problems.push((
                    key("token"),
                    "give an access token (token) or the refresh grant (client_id, client_secret, refresh_token), \
                     not both"
                        .into(),
                ));
            }
            if let Err(reason) = check_http_url(&c.token_url) {
                problems.push((key("token_url"), reason));
            }
            if !refreshes && c.token.is_empty() && c.token_env.trim().is_empty() {
                problems.push((key("token_env"), "must name an environment variable when token is empty".into()));
            }
        }
    }
}

fn validate_filesystem(c: &FilesystemConfig, problems: &mut Problems) {
    let key = |k: &str| format!("channels_config.filesystem.{k}");
    if c.paths.is_empty() {
        problems.push((key("paths"), "at least one directory to watch is required".into()));
    }
    for (i, path) in c.paths.iter().enumerate() {
        if path.trim().is_empty() {
            problems.push((format!("{}[{i}]", key("paths")), "must not be empty".into()));
        } else if let Some(reason) = FilesystemConfig::too_broad(path).filter(|_| !c.allow_broad_roots) {
            problems.push((format!("{}[{i}]", key("paths")), reason));
        }
    }
    for (name, globs) in [("include", &c.include), ("exclude", &c.exclude)] {
        for (i, glob) in globs.iter().enumerate() {
            if let Err(e) = globset::Glob::new(glob) {
                problems.push((format!("{}[{i}]", key(name)), format!("{glob:?} is not a glob: {}", e.kind())));
            }
        }
    }
    if c.max_content_bytes == 0 {
        problems.push((key("max_content_bytes"), "must be greater than 0".into()));
    }
}

fn validate_amqp(c: &AmqpConfig, problems: &mut Problems) {
    let key = |k: &str| format!("channels_config.amqp.{k}");
    match url::Url::parse(c.url.trim()) {
        Ok(url) if matches!(url.scheme(), "amqp" | "amqps") && url.host_str().is_some_and(|h| !h.is_empty()) => {
            if url.scheme() == "amqp" && !c.ca_file.is_empty() {
                problems.push((key("ca_file"), "only used with an amqps:// url".into()));
            }
        }
        Ok(_) => problems.push((key("url"), "expected amqp://host[:port][/vhost] or amqps://… (TLS)".into())),
        Err(e) => problems.push((key("url"), format!("is not a URL ({e})"))),
    }
    if !matches!(c.exchange_type.as_str(), "direct" | "topic" | "fanout" | "headers") {
        problems.push((
            key("exchange_type"),
            format!("{:?} is not an exchange type; expected direct, topic, fanout or headers", c.exchange_type),
        ));
    }
    if c.queue.trim().is_empty() {
        problems.push((key("queue"), "must not be empty".into()));
    }
    for name in c.queue_arguments.keys() {
        if name.is_empty() || name.len() > 255 {
            problems.push((key("queue_arguments"), format!("{name:?}: an argument's name is 1 to 255 bytes")));
        }
    }
    if c.exchange.is_empty() && !c.bindings.is_empty() {
        problems.push((key("bindings"), "the default exchange takes no bindings; name an exchange".into()));
    }
    for (i, binding) in c.bindings.iter().enumerate() {
        if let Err(reason) = crate::routing_key::validate_pattern(binding) {
            problems.push((format!("{}[{i}]", key("bindings")), reason));
        }
    }
    if c.prefetch == 0 {
        problems.push((key("prefetch"), "must be between 1 and 65535".into()));
    }
    if c.max_message_bytes == 0 {
        problems.push((key("max_message_bytes"), "must be greater than 0".into()));
    }
}

fn validate_email(c: &EmailConfig, key: &dyn Fn(&str) -> String, problems: &mut Problems) {
    let host = c.imap_host.trim().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        problems.push((key("imap_host"), "must not be empty".into()));
    } else if c.security == Security::Plain && !is_loopback_host(host) {
        problems.push((
            key("security"),
            format!(
                "\"plain\" sends the password in clear, so it is only allowed to a loopback host, not {host:?}; use \
                 \"tls\" or \"starttls\""
            ),
        ));
    }
    if c.imap_port == Some(0) {
        problems.push((key("imap_port"), "must be between 1 and 65535".into()));
    }
    if c.security == Security::Plain && !c.ca_file.is_empty() {
        problems.push((key("ca_file"), "only used with security = \"tls\" or \"starttls\"".into()));
    }
    if c.username.trim().is_empty() {
        problems.push((key("username"), "must not be empty".into()));
    }
    let table = key("").trim_end_matches('.').to_string();
    one_secret(&c.password, &c.password_env, &table, "password", true, problems);
    if c.folder.trim().is_empty() {
        problems.push((key("folder"), "must not be empty".into()));
    }
    if c.poll_interval_secs == 0 {
        problems.push((key("poll_interval_secs"), "must be at least 1".into()));
    }
    if c.max_message_bytes == 0 {
        problems.push((key("max_message_bytes"), "must be greater than 0".into()));
    }
    for (i, sender) in c.allowed_senders.iter().enumerate() {
        let sender = sender.trim();
        let ok = match sender.strip_prefix('@') {
            Some(domain) => !domain.is_empty() && !domain.contains('@'),
            None => sender.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@')),
        };
        if !ok {
            problems.push((
                format!("{}[{i}]", key("allowed_senders")),
                format!("{sender:?} is neither an address (ops@example.com) nor a domain (@example.com)"),
            ));
        }
    }
}

/// `name` inline or `name_env`: exactly one when `required`, at most one
/// otherwise.
fn one_secret(inline: &str, env: &str, table: &str, name: &str, required: bool, problems: &mut Problems) {
    match (inline.is_empty(), env.trim().is_empty()) {
        (false, false) => problems.push((
            format!("{table}.{name}_env"),
            format!("{name} and {name}_env are both set; give the secret one way"),
        )),
        (true, true) if required => problems.push((
            format!("{table}.{name}"),
            format!("required: set {name}_env to the environment variable holding it (or {name} inline)"),
        )),
        _ => {}
    }
}

fn check_alias(kind: &str, alias: &str, problems: &mut Problems) {
    if !is_board_name(alias) {
        problems.push((
            format!("channels_config.{kind}.{alias}"),
            format!("{alias:?} is not an instance name; expected [a-z0-9][a-z0-9._-]*"),
        ));
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn half_second_ms() -> u64 {
    500
}

fn sixty_four_kib() -> usize {
    64 * 1024
}

fn topic() -> String {
    "topic".into()
}

fn two_five_six() -> u16 {
    256
}

fn yes() -> bool {
    true
}

fn inbox() -> String {
    "INBOX".into()
}

fn sixty() -> u64 {
    60
}

fn one_mib() -> usize {
    1024 * 1024
}

fn ten_mib() -> usize {
    10 * 1024 * 1024
}

fn telegram_api() -> String {
    "https://api.telegram.org".into()
}

fn drive_api() -> String {
    "https://www.googleapis.com/drive/v3".into()
}

fn drive_token_env() -> String {
    "GOOGLE_DRIVE_TOKEN".into()
}

/// Google's OAuth 2.0 token endpoint.
fn google_token_url() -> String {
    "https://oauth2.googleapis.com/token".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(extra: &str) -> EmailConfig {
        toml::from_str(&format!("imap_host = \"127.0.0.1\"\nusername = \"u\"\npassword_env = \"P\"\n{extra}")).unwrap()
    }

    fn problems(blocks: &ChannelsConfig) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        blocks.validate_sources(&mut problems);
        problems
    }

    #[test]
    fn senders_are_addresses_or_domains_in_any_case() {
        let c = email("allowed_senders = [\"Boss@Example.com\", \"@ops.example.org\"]");
        assert!(c.allows("boss@example.COM"));
        assert!(c.allows("anyone@OPS.example.org"));
        assert!(!c.allows("anyone@example.org"));
        assert!(!c.allows("boss@example.com.evil"));
        assert!(email("").allows("anyone@anywhere"));
    }

    #[test]
    fn the_port_follows_the_security() {
        assert_eq!(email("").port(), 993);
        assert_eq!(email("security = \"starttls\"").port(), 143);
        assert_eq!(email("security = \"starttls\"\nimap_port = 1143").port(), 1143);
    }

    #[test]
    fn blocks_are_refused_naming_the_key() {
        let mut blocks = ChannelsConfig::default();
        let mut remote_plain = email("security = \"plain\"\npassword = \"x\"");
        remote_plain.imap_host = "imap.example.com".into();
        blocks.email.insert("ops".into(), remote_plain);
        blocks.email.insert("Bad Alias".into(), email("allowed_senders = [\"nobody\"]"));
        blocks.slack.insert(
            "team".into(),
            SlackConfig { enabled: true, signing_secret: String::new(), signing_secret_env: String::new() },
        );
        let telegram: TelegramConfig = toml::from_str("bot_token_env = \"T\"\nmode = \"webhook\"").unwrap();
        blocks.telegram.insert("bot".into(), telegram);
        let found = problems(&blocks);
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "channels_config.email.ops.security",
            "channels_config.email.ops.password_env",
            "channels_config.email.Bad Alias",
            "channels_config.email.Bad Alias.allowed_senders[0]",
            "channels_config.slack.team.signing_secret",
            "channels_config.telegram.bot.secret_token",
        ] {
            assert!(keys.contains(&key), "{key} not in {found:?}");
        }
    }

    #[test]
    fn broad_roots_are_named() {
        for broad in ["/", "/home", "/home/alice/", "/etc", "/var", "/tmp", "/root", "/mnt", "/media", "/run"] {
            assert!(FilesystemConfig::too_broad(broad).is_some(), "{broad}");
        }
        for fine in ["/srv/drop", "/home/alice/inbox", "/var/spool/fanin", "/tmp/x"] {
            assert!(FilesystemConfig::too_broad(fine).is_none(), "{fine}");
        }
    }

    #[test]
    fn filesystem_and_amqp_blocks_are_refused_naming_the_key() {
        let blocks = ChannelsConfig {
            filesystem: Some(toml::from_str("paths = [\"/\", \"/srv/drop\"]\ninclude = [\"[a\"]").unwrap()),
            amqp: Some(
                toml::from_str(
                    "url = \"http://x\"\nqueue = \"\"\nexchange_type = \"fan\"\nbindings = [\"a.b*\"]\nprefetch = 0\n\
                     max_message_bytes = 0",
                )
                .unwrap(),
            ),
            ..ChannelsConfig::default()
        };
        let found = problems(&blocks);
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "channels_config.filesystem.paths[0]",
            "channels_config.filesystem.include[0]",
            "channels_config.amqp.url",
            "channels_config.amqp.queue",
            "channels_config.amqp.exchange_type",
            "channels_config.amqp.bindings",
            "channels_config.amqp.prefetch",
            "channels_config.amqp.max_message_bytes",
        ] {
            assert!(keys.contains(&key), "{key} not in {found:?}");
        }
    }

    #[test]
    fn the_drive_refresh_grant_is_whole_or_absent_and_excludes_a_fixed_token() {
        let drive = |toml: &str| {
            let mut blocks = ChannelsConfig::default();
            blocks.google_drive.insert("shared".into(), toml::from_str(toml).unwrap());
            problems(&blocks).into_iter().map(|(key, _)| key).collect::<Vec<_>>()
        };
        let whole = "client_id = \"c\"\nclient_secret_env = \"S\"\nrefresh_token_env = \"R\"";
        assert!(drive(whole).is_empty(), "{:?}", drive(whole));
        let d: DriveConfig = toml::from_str(whole).unwrap();
        assert!(d.refreshes());
        assert_eq!((d.client_secret(), d.refresh_token()), (SecretSource::Env("S"), SecretSource::Env("R")));
        assert_eq!(d.token_url, "https://oauth2.googleapis.com/token");
        let key = |k: &str| format!("channels_config.google_drive.shared.{k}");
        assert_eq!(drive("client_id = \"c\"\nrefresh_token = \"r\""), [key("client_secret")]);
        assert_eq!(drive("refresh_token = \"r\""), [key("client_id")], "a grant without its client");
        assert_eq!(drive(&format!("{whole}\ntoken = \"t\"")), [key("token")]);
        assert_eq!(drive(&format!("{whole}\ntoken_url = \"ftp://x\"")), [key("token_url")]);
        assert!(drive("").is_empty(), "a fixed token from GOOGLE_DRIVE_TOKEN");
    }

    #[test]
    fn a_secret_comes_inline_or_from_the_environment() {
        assert_eq!(email("").password(), SecretSource::Env("P"));
        let c: SlackConfig = toml::from_str("signing_secret = \"s\"").unwrap();
        assert_eq!(c.signing_secret(), SecretSource::Inline("s"));
        let d: DriveConfig = toml::from_str("").unwrap();
        assert_eq!(d.token(), SecretSource::Env("GOOGLE_DRIVE_TOKEN"));
    }
}
