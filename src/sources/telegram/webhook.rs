//! Mode `webhook`: Telegram posts each update to
//! `POST /channels/telegram/<alias>` (the URL given to `setWebhook`, with
//! the instance's `secret_token`). Telegram sends that secret back in
//! `X-Telegram-Bot-Api-Secret-Token`; anything without it is refused before
//! its body is read. Telegram retries an update until it is answered 200, so
//! the answer waits for the commit and a repeat of its `update_id` starts
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;

use super::{bot_token, instance, message_of};
use crate::config::TelegramMode;
use crate::event::Source;
use crate::http::auth::secret_matches;
use crate::http::extract::Path;
use crate::http::ApiError;
use crate::sources::pushed::{self, Pushed};
use crate::sources::SourceContext;

/// The header Telegram carries the webhook's secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

struct Webhooks {
    pushed: Pushed,
    /// Secret tokens of the enabled webhook-mode instances, by alias.
    secrets: BTreeMap<String, String>,
}

/// The route for every enabled instance in mode `webhook`, their secrets
/// (and bot tokens, which `setWebhook` needs) read now: an unset variable
/// stops the daemon before it serves, naming the key.
pub fn routes(ctx: &SourceContext) -> Result<Router, String> {
    let pushed = Pushed::new(ctx);
    let mut secrets = BTreeMap::new();
    let hooked =
        ctx.config.channels_config.telegram.iter().filter(|(_, c)| c.enabled && c.mode == TelegramMode::Webhook);
    for (alias, c) in hooked {
        bot_token(alias, c)?;
        let key = format!("channels_config.telegram.{alias}.secret_token");
        secrets.insert(alias.clone(), crate::config::secret(c.secret_token(), &key)?);
        pushed.serving(&instance(alias));
    }
    let state = Arc::new(Webhooks { pushed, secrets });
    Ok(Router::new().route("/channels/telegram/{alias}", post(update)).with_state(state))
}

async fn update(
    State(hooks): State<Arc<Webhooks>>,
    Path(alias): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(secret) = hooks.secrets.get(&alias) else {
        return Err(pushed::unknown("telegram", &alias));
    };
    let instance = instance(&alias);
    let Some(presented) = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(pushed::refused(&instance, "missing_secret_token"));
    };
    if !secret_matches(presented, secret) {
        return Err(pushed::refused(&instance, "bad_secret_token"));
    }
    let bytes = hooks.pushed.body(&headers, body).await?;
    let update = hooks.pushed.json(&bytes)?;
    let Some(id) = update["update_id"].as_i64() else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_telegram_update")
            .with("detail", "an update without a numeric update_id"));
    };
    match message_of(&update) {
        Some(message) => hooks.pushed.deliver(Source::Telegram, &instance, message.clone(), &id.to_string()).await,
        None => Ok(hooks.pushed.ignored("update")),
    }
}
