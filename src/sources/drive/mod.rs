//! The Google Drive source: one change feed per
//! `[channels_config.google_drive.<alias>]`, read from the Drive v3 changes
//! API (docs/operations.md, "Drive changes").
//!
//! The page token is the cursor. On a first start fanin asks Drive for the
//! current one and stores it, so only changes made from then on start runs.
//! Each poll follows `nextPageToken` page by page to `newStartPageToken`;
//! every change of a page is dispatched with the cursor checked to still be
//! the page's token, and the cursor moves to the next token once the page
//! is done. A crash in the middle of a page reads the page again; the
//! changes already dispatched are then duplicates by their dedupe key (file
//! id, modifiedTime, kind), so none starts twice.
//!
//! The bearer is a token given as it is, or one the OAuth refresh grant
//! gives and renews (`auth.rs`): Google's access tokens last an hour.

mod api;
mod auth;
mod change;

use std::time::Duration;

use super::feed::{self, Feed, SourceError};
use super::{SourceContext, SourceTask};
use crate::config::{self, DriveConfig};
use crate::event::{IdempotencyKey, Payload, Source};
use api::DriveApi;
use auth::Bearer;

/// Starts a feed per enabled instance. A missing token or grant secret
/// stops the daemon.
pub fn start(ctx: &SourceContext) -> Result<Vec<SourceTask>, String> {
    let mut tasks = Vec::new();
    for (alias, drive) in ctx.config.channels_config.google_drive.iter().filter(|(_, d)| d.enabled) {
        let table = format!("channels_config.google_drive.{alias}");
        let bearer = match drive.refreshes() {
            false => Bearer::Fixed(config::secret(drive.token(), &format!("{table}.token_env"))?),
            true => {
                let secret = config::secret(drive.client_secret(), &format!("{table}.client_secret"))?;
                let refresh = config::secret(drive.refresh_token(), &format!("{table}.refresh_token"))?;
                Bearer::granted(&drive.client_id, secret, refresh, &drive.token_url)
                    .map_err(|e| format!("{table}.token_url: {e}"))?
            }
        };
        let api = DriveApi::new(&drive.api_base_url, bearer).map_err(|e| format!("{table}.api_base_url: {e}"))?;
        let name = format!("google_drive:{alias}");
        let instance =
            std::sync::Arc::new(Instance { api, config: drive.clone(), topic: format!("google_drive/{alias}") });
        tracing::info!(source = %name, "Drive change feed starting");
        ctx.health.set_status(&name, crate::sources::health::Status::Connecting, None);
        tasks.push(tokio::spawn(crate::sources::singleton(ctx.clone(), name.clone(), move |held: SourceContext| {
            let (name, instance) = (name.clone(), instance.clone());
            async move { feed::run(Feed::new(&held, name), async move |feed: &Feed| instance.session(feed).await).await }
        })));
    }
    Ok(tasks)
}

struct Instance {
    api: DriveApi,
    config: DriveConfig,
    topic: String,
}

impl Instance {
    /// Polls until a call fails (or shutdown, which `feed::run` watches).
    async fn session(&self, feed: &Feed) -> Result<(), SourceError> {
        let mut token = match feed.cursor().await? {
            Some(cursor) => cursor.value,
            None => {
                let token = self.api.start_page_token().await?;
                feed.advance(None, &token).await?;
                token
            }
        };
        let interval = Duration::from_secs(self.config.poll_interval_secs);
        loop {
            token = self.read_to_the_end(feed, token).await?;
            tokio::time::sleep(interval).await;
        }
    }

    /// Follows the pages from `token` to the feed's end; returns the token
    /// to poll next (`newStartPageToken`).
    async fn read_to_the_end(&self, feed: &Feed, mut token: String) -> Result<String, SourceError> {
        loop {
            let page = self.api.changes(&token).await?;
            feed.up();
            for raw in &page.changes {
                let Some(change) = change::file_change(raw, &self.config.folder_id) else { continue };
                let mut event = feed.event(Source::GoogleDrive, self.topic.clone(), Payload::Json(change.payload));
                event.idempotency = Some(IdempotencyKey::of_source(feed.name(), &change.dedupe_key));
                feed.deliver(event, Some(&token), &token).await?;
            }
            let (next, last) = match (page.next_page_token, page.new_start_page_token) {
                (Some(next), _) => (next, false),
                (None, Some(start)) => (start, true),
                (None, None) => unreachable!("DriveApi::changes refuses such a page"),
            };
            if next != token {
                feed.advance(Some(&token), &next).await?;
            }
            token = next;
            if last {
                feed.polled();
                return Ok(token);
            }
        }
    }
}
