//! The Telegram source (docs/operations.md, "Telegram"): one bot per
//! `[channels_config.telegram.<alias>]`, heard either by long-polling the
//! Bot API's `getUpdates` ([`poll`], mode `poll`) or by Telegram posting
//! each update to `POST /channels/telegram/<alias>` ([`webhook`], mode
//! `webhook`).
//!
//! Both modes read an update the same way ([`message_of`]): a `message` or
//! a `channel_post` is an event whose payload is that object, deduplicated
//! by `update_id`; any other kind of update starts nothing.

pub mod poll;
pub mod webhook;

use serde_json::Value;

use super::{SourceContext, SourceTask};
use crate::config::TelegramConfig;

/// The update kinds that are events, as fanin asks `getUpdates` for them.
pub const EVENT_KINDS: [&str; 2] = ["message", "channel_post"];

/// The message an update carries, if it is one fanin dispatches.
pub fn message_of(update: &Value) -> Option<&Value> {
    EVENT_KINDS.iter().find_map(|kind| update.get(*kind).filter(|m| m.is_object()))
}

/// The instance name `/ready`, metrics and the cursor use.
pub fn instance(alias: &str) -> String {
    format!("telegram:{alias}")
}

/// The bot token of an enabled instance, read now: an unset variable stops
/// the daemon before it serves, naming the key.
fn bot_token(alias: &str, c: &TelegramConfig) -> Result<String, String> {
    crate::config::secret(c.bot_token(), &format!("channels_config.telegram.{alias}.bot_token"))
}

/// A long-poll task per enabled instance in mode `poll`.
pub fn start(ctx: &SourceContext) -> Result<Vec<SourceTask>, String> {
    poll::start(ctx)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_and_channel_posts_are_events_and_nothing_else_is() {
        let message = json!({"update_id": 1, "message": {"message_id": 5, "text": "hi"}});
        assert_eq!(message_of(&message), Some(&json!({"message_id": 5, "text": "hi"})));
        let post = json!({"update_id": 2, "channel_post": {"message_id": 6}});
        assert_eq!(message_of(&post), Some(&json!({"message_id": 6})));
        for other in [
            json!({"update_id": 3, "edited_message": {"message_id": 5}}),
            json!({"update_id": 4, "callback_query": {"id": "x"}}),
            json!({"update_id": 5, "message": "not an object"}),
            json!({"update_id": 6}),
        ] {
            assert_eq!(message_of(&other), None, "{other}");
        }
    }
}
