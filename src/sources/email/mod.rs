//! The inbox source (docs/operations.md, "Inbox (IMAP)"): one task per enabled
//! `[channels_config.email.<alias>]` mailbox, each an IMAP client
//! (async-imap over tokio, rustls with ring as the MQTT source) that turns
//! every new mail into an event on topic `email/<alias>`.
//!
//! - **Start-up.** The password (inline or `password_env`) and the TLS
//!   roots (`ca_file` added to the system's) are read before the daemon
//!   serves; a missing one stops it with the key and the reason.
//! - **Cursor.** `"<uidvalidity>/<last uid>"` under the instance's name
//!   (`email:<alias>`), moved only in the commit that starts a message's
//!   runs (`Feed::deliver`), so after a restart the mail that came meanwhile
//!   starts its runs once, none twice. On the very first start the cursor is
//!   set to the mailbox's current end: mail already there is not replayed.
//! - **UIDVALIDITY change.** Audited (`source_reset`), then the mail since
//!   the day before the cursor last moved is read again and dispatched under
//!   Message-ID keys, which drop what had already started.
//! - **Refusals.** A message over `max_message_bytes` (its Message-ID read
//!   from its header alone) and one whose sender is not in
//!   `allowed_senders` are audited as `event_refused` and counted; the
//!   cursor moves past them in that commit.
//! - **Waiting.** IDLE where the server offers it, issued again every
//!   29 minutes and after every reconnect; else a check every
//!   `poll_interval_secs`. Shutdown ends IDLE and logs out.

mod connect;
mod message;
mod session;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::feed::{self, Feed};
use super::tls::{self, TlsFiles};
use super::{SourceContext, SourceTask};
use crate::config::{Config, ConfigError, EmailConfig, Security};
use connect::Dial;

/// One mailbox, as its session needs it.
pub struct Mailbox {
    pub dial: Dial,
    pub folder: String,
    pub topic: String,
    pub poll_interval: Duration,
    /// Its table, for `allowed_senders` and `max_message_bytes`.
    pub email: EmailConfig,
}

/// Starts one task per enabled mailbox. An error is worded for the
/// operator and stops the daemon before it serves.
pub fn start(ctx: &SourceContext) -> Result<Vec<SourceTask>, String> {
    let mut tasks = Vec::new();
    for (alias, email) in &ctx.config.channels_config.email {
        if !email.enabled {
            continue;
        }
        let mailbox = Arc::new(mailbox(&ctx.config, alias, email)?);
        let name = format!("email:{alias}");
        ctx.health.set_status(&name, crate::sources::health::Status::Connecting, None);
        tasks.push(tokio::spawn(crate::sources::singleton(ctx.clone(), name.clone(), move |held: SourceContext| {
            let (name, mailbox) = (name.clone(), mailbox.clone());
            async move {
                feed::run(Feed::new(&held, name), async move |feed: &Feed| session::run(feed, &mailbox).await).await
            }
        })));
    }
    Ok(tasks)
}

fn mailbox(config: &Config, alias: &str, email: &EmailConfig) -> Result<Mailbox, String> {
    let key = |name: &str| format!("channels_config.email.{alias}.{name}");
    let problem = |name: &str, reason: String| {
        ConfigError { file: config.file.display().to_string(), key: key(name), reason }.to_string()
    };
    let password = crate::config::secret(email.password(), &key("password_env"))
        .map_err(|reason| format!("{}: {reason}", config.file.display()))?;
    let tls = match email.security {
        Security::Plain => None,
        Security::Tls | Security::Starttls => {
            let files = TlsFiles { ca_file: &email.ca_file, client_cert_file: "", client_key_file: "" };
            let (client, trust) = tls::client_config(config, &key, files)?;
            tracing::debug!(?trust, mailbox = alias, "IMAP TLS roots");
            let name = ServerName::try_from(email.imap_host.clone())
                .map_err(|e| problem("imap_host", format!("is not a host name for TLS ({e})")))?;
            Some((Dial::tls_connector(client), name))
        }
    };
    Ok(Mailbox {
        dial: Dial {
            host: email.imap_host.clone(),
            port: email.port(),
            security: email.security,
            tls,
            username: email.username.clone(),
            password,
        },
        folder: email.folder.clone(),
        topic: format!("email/{alias}"),
        poll_interval: Duration::from_secs(email.poll_interval_secs.max(1)),
        email: email.clone(),
    })
}
