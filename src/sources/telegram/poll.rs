//! Mode `poll`: a `Feed` session long-polling the Bot API's `getUpdates`.
//!
//! The cursor is the offset to ask for next (the last update_id handled
//! plus one). Telegram confirms, and never again returns, every update below
//! the offset a request names, so the cursor moves only in the commit that
//! dispatches (or passes over) its update: a restart asks again from the
//! first update fanin did not keep, neither repeating nor skipping one.
//!
//! The bot token is part of every request's path, so no error of the HTTP
//! client is worded with its URL, and the token is struck from any reason
//! that might still carry it.

use std::time::Duration;

use serde_json::{json, Value};

use super::{bot_token, instance, message_of, EVENT_KINDS};
use crate::config::TelegramMode;
use crate::event::{IdempotencyKey, Payload, Source};
use crate::sources::feed::{self, Feed, SourceError};
use crate::sources::{SourceContext, SourceTask};

/// How long one `getUpdates` waits for an update before answering empty.
pub const POLL_TIMEOUT_SECS: u64 = 25;

/// The client gives Telegram this long beyond the long poll to answer.
const ANSWER_GRACE: Duration = Duration::from_secs(15);

struct Poller {
    /// `<api_base_url>/bot<token>/getUpdates`: never logged.
    url: String,
    token: String,
    client: reqwest::Client,
}

pub fn start(ctx: &SourceContext) -> Result<Vec<SourceTask>, String> {
    let mut tasks = Vec::new();
    let polled = ctx.config.channels_config.telegram.iter().filter(|(_, c)| c.enabled && c.mode == TelegramMode::Poll);
    for (alias, c) in polled {
        let token = bot_token(alias, c)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(POLL_TIMEOUT_SECS) + ANSWER_GRACE)
            .build()
            .map_err(|e| format!("channels_config.telegram.{alias}: cannot build an HTTP client: {e}"))?;
        let url = format!("{}/bot{token}/getUpdates", c.api_base_url.trim_end_matches('/'));
        let poller = std::sync::Arc::new(Poller { url, token, client });
        let name = instance(alias);
        ctx.health.set_status(&name, crate::sources::health::Status::Connecting, None);
        tasks.push(tokio::spawn(crate::sources::singleton(ctx.clone(), name.clone(), move |held: SourceContext| {
            let (name, poller) = (name.clone(), poller.clone());
            async move { feed::run(Feed::new(&held, name), async move |feed: &Feed| poller.session(feed).await).await }
        })));
    }
    Ok(tasks)
}

impl Poller {
    /// Polls until an error: each update is dispatched (or passed over)
    /// with the cursor moved past it, in the order Telegram numbers them.
    async fn session(&self, feed: &Feed) -> Result<(), SourceError> {
        let mut offset = feed.cursor().await?.map(|cursor| cursor.value);
        // The first ask of a session is answered at once, so the source
        // says it hears as soon as Telegram does, not a long poll later.
        let mut wait = 0;
        loop {
            let asked = match &offset {
                Some(text) => Some(text.parse::<i64>().map_err(|_| bad_cursor(text))?),
                None => None,
            };
            let updates = self.get_updates(asked, wait).await?;
            wait = POLL_TIMEOUT_SECS;
            feed.up();
            feed.polled();
            for update in updates {
                let Some(id) = update["update_id"].as_i64() else {
                    return Err(SourceError::new("getUpdates answered an update without a numeric update_id"));
                };
                if asked.is_some_and(|asked| id < asked) {
                    continue; // confirmed already; Telegram should not send it
                }
                let next = (id + 1).to_string();
                match message_of(&update) {
                    Some(message) => {
                        let topic = feed.name().replacen(':', "/", 1);
                        let mut event = feed.event(Source::Telegram, topic, Payload::Json(message.clone()));
                        event.idempotency = Some(IdempotencyKey::of_source(feed.name(), &id.to_string()));
                        feed.deliver(event, offset.as_deref(), &next).await?;
                    }
                    None => feed.advance(offset.as_deref(), &next).await?,
                }
                offset = Some(next);
            }
        }
    }

    /// One `getUpdates`, held by Telegram up to `wait` seconds while there
    /// is nothing new.
    async fn get_updates(&self, offset: Option<i64>, wait: u64) -> Result<Vec<Value>, SourceError> {
        let mut body = json!({"timeout": wait, "allowed_updates": EVENT_KINDS});
        if let Some(offset) = offset {
            body["offset"] = json!(offset);
        }
        let response = self.client.post(&self.url).json(&body).send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        answer(status, &text)
    }

    /// A transport error, worded without the URL (it holds the token).
    fn unreachable(&self, e: reqwest::Error) -> SourceError {
        if e.is_timeout() {
            return SourceError::new("getUpdates: the Bot API did not answer in time");
        }
        let reason = format!("getUpdates: {}", crate::causes::error_chain(&e.without_url()));
        let reason = reason.replace(&self.token, "<bot token>");
        SourceError::new(reason)
    }
}

fn bad_cursor(text: &str) -> SourceError {
    SourceError::new(format!("the stored offset {text:?} is not a number; see docs/operations.md, \"Telegram\""))
}

/// What `getUpdates` answered: its updates, or the Bot API's error as a
/// reason (`retry_after` from a 429's `parameters`).
pub fn answer(status: u16, text: &str) -> Result<Vec<Value>, SourceError> {
    let Ok(body) = serde_json::from_str::<Value>(text) else {
        return Err(SourceError::new(format!("getUpdates answered HTTP {status} without the Bot API's JSON")));
    };
    if body["ok"] == json!(true) {
        return match body["result"].as_array() {
            Some(updates) => Ok(updates.clone()),
            None => Err(SourceError::new("getUpdates answered ok without a result list")),
        };
    }
    let code = body["error_code"].as_u64().unwrap_or(u64::from(status));
    let description = body["description"].as_str().unwrap_or("no description");
    let error = match code {
        401 | 404 => {
            SourceError::new(format!("the Bot API refused the bot token ({code} {description}); check bot_token"))
        }
        409 => SourceError::new(format!(
            "getUpdates conflicts ({code} {description}): a webhook is set for this bot (delete it, or use \
             mode = \"webhook\") or another process polls it"
        )),
        429 => {
            let wait = body["parameters"]["retry_after"].as_u64().unwrap_or(1);
            SourceError::new(format!("rate limited by the Bot API ({code} {description}); retrying after {wait} s"))
                .retry_after(Duration::from_secs(wait))
        }
        _ => SourceError::new(format!("getUpdates failed ({code} {description})")),
    };
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bot_apis_answers_are_read_as_it_words_them() {
        let updates = answer(200, r#"{"ok":true,"result":[{"update_id":7,"message":{"text":"hi"}}]}"#).unwrap();
        assert_eq!(updates, vec![json!({"update_id": 7, "message": {"text": "hi"}})]);
        assert_eq!(answer(200, r#"{"ok":true,"result":[]}"#).unwrap(), Vec::<Value>::new());

        let refused = answer(401, r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#).unwrap_err();
        assert!(refused.reason.contains("401 Unauthorized") && refused.reason.contains("bot_token"), "{refused:?}");
        assert_eq!(refused.retry_after, None);

        let limited = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#;
        let limited = answer(429, limited).unwrap_err();
        assert_eq!(limited.retry_after, Some(Duration::from_secs(3)));

        let conflict = r#"{"ok":false,"error_code":409,"description":"Conflict: can't use getUpdates method while webhook is active"}"#;
        assert!(answer(409, conflict).unwrap_err().reason.contains("a webhook is set"));

        assert!(answer(502, "<html>Bad Gateway</html>").unwrap_err().reason.contains("HTTP 502"));
        assert!(answer(200, r#"{"ok":true}"#).is_err());
    }
}
