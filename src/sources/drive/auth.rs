//! The Drive source's bearer token: one given as it is (`token`), or one
//! obtained with the OAuth 2.0 refresh-token grant (`client_id`,
//! `client_secret`, `refresh_token`; RFC 6749 §6) from Google's token
//! endpoint, obtained again before it expires and whenever Drive refuses
//! it, so a feed outlives the hour an access token lasts.
//!
//! The grant is the `oauth2` crate's, over fanin's reqwest client with
//! redirects off (a token endpoint that redirects is refused, not
//! followed). No secret, access token or refresh token appears in an
//! error or a log line.

use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError, TokenResponse,
    TokenUrl,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::sources::feed::SourceError;

/// How long a call to the token endpoint may take.
const GRANT_TIMEOUT: Duration = Duration::from_secs(30);
/// A token is renewed this long before it expires (at most a quarter of
/// its life), so a call never leaves with one about to lapse.
const RENEW_BEFORE: Duration = Duration::from_secs(60);
/// The life assumed for a token whose grant says none (Google's is an hour).
const ASSUMED_LIFE: Duration = Duration::from_secs(3600);

pub enum Bearer {
    Fixed(String),
    Granted(Box<Grant>),
}

type Client = BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

pub struct Grant {
    client: Client,
    http: reqwest::Client,
    /// The refresh token, and the access token it last gave with when to
    /// renew it. One grant at a time: callers that find the token due wait
    /// for the one renewing it.
    state: Mutex<State>,
}

struct State {
    refresh_token: RefreshToken,
    current: Option<(String, Instant)>,
}

impl Bearer {
    /// The refresh grant of `client_id` at `token_url`.
    pub fn granted(
        client_id: &str,
        client_secret: String,
        refresh_token: String,
        token_url: &str,
    ) -> Result<Bearer, String> {
        let url = TokenUrl::new(token_url.to_string()).map_err(|e| format!("{token_url:?} is not a URL: {e}"))?;
        let client = BasicClient::new(ClientId::new(client_id.to_string()))
            .set_client_secret(ClientSecret::new(client_secret))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(url);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(GRANT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let state = State { refresh_token: RefreshToken::new(refresh_token), current: None };
        Ok(Bearer::Granted(Box::new(Grant { client, http, state: Mutex::new(state) })))
    }

    /// The token to send now: a granted one is renewed first when due.
    pub async fn token(&self) -> Result<String, SourceError> {
        match self {
            Bearer::Fixed(token) => Ok(token.clone()),
            Bearer::Granted(grant) => grant.token().await,
        }
    }

    /// Drive refused `token` (401): a granted one is renewed on the next
    /// call. Whether asking again can help.
    pub async fn refused(&self, token: &str) -> bool {
        match self {
            Bearer::Fixed(_) => false,
            Bearer::Granted(grant) => {
                let mut state = grant.state.lock().await;
                if state.current.as_ref().is_some_and(|(current, _)| current == token) {
                    state.current = None;
                }
                true
            }
        }
    }
}

impl Grant {
    async fn token(&self) -> Result<String, SourceError> {
        let mut state = self.state.lock().await;
        if let Some((token, renew_at)) = &state.current {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let asked = Instant::now();
        let answer = self.client.exchange_refresh_token(&state.refresh_token).request_async(&self.http).await;
        let answer = answer.map_err(|e| SourceError::new(format!("the token endpoint: {}", describe(&e))))?;
        let life = answer.expires_in().unwrap_or(ASSUMED_LIFE);
        let token = answer.access_token().secret().clone();
        if let Some(rotated) = answer.refresh_token() {
            state.refresh_token = rotated.clone();
        }
        state.current = Some((token.clone(), asked + life - RENEW_BEFORE.min(life / 4)));
        metrics::counter!("fanin_drive_token_grants_total").increment(1);
        Ok(token)
    }
}

/// A failed grant in the endpoint's own words (`invalid_grant: Token has
/// been expired or revoked.`), or why it could not be asked.
fn describe<E: std::error::Error + 'static>(
    error: &RequestTokenError<E, oauth2::StandardErrorResponse<BasicErrorResponseType>>,
) -> String {
    match error {
        RequestTokenError::ServerResponse(refusal) => match refusal.error_description() {
            Some(description) => format!("refused the refresh grant: {}: {description}", refusal.error()),
            None => format!("refused the refresh grant: {}", refusal.error()),
        },
        RequestTokenError::Request(e) => format!("cannot be asked: {}", crate::causes::error_chain(e)),
        RequestTokenError::Parse(e, _) => format!("answered with a body fanin cannot read: {e}"),
        RequestTokenError::Other(why) => format!("answered {why}"),
    }
}
