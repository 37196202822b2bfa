//! Who may use the console, and signing in to it from another machine.
//!
//! [`ConsoleAccess`] is the `/admin` rule in the console's words: a
//! loopback caller is served; with `allow_remote_admin` a remote caller
//! needs a live bearer token, in `Authorization` or, because a browser
//! cannot send that header from a link, through a sign-in: the page asks
//! for the token once (`POST /ui/login`) and keeps a session cookie.
//!
//! The cookie is `<token prefix>.<expiry>.<MAC>`, the MAC under a key
//! derived from the store's pairing key over the prefix, the expiry and the
//! token's stored digest. Nothing of it is stored: every replica of the
//! store verifies it (they read the same key file), and each request looks
//! the token up, so a revoked token's sessions end on their next request,
//! on every replica. The token itself never leaves the sign-in form.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use maud::html;
use sha2::Sha256;

use super::csrf::Session;
use super::{after_post, cookie, csrf_field, filled, layout, posted, set_cookie, ApiError, AppState, Nav, Refusal};
use crate::http::auth::{verify_bearer, verify_token};
use crate::http::limits::{client_ip, forwarded_https, retry_after_secs, ClientAddr};
use crate::store::{Store, StoreError, TokenRecord};

/// The session cookie's name.
const COOKIE: &str = "fanin_session";

/// The key session cookies are MACed under.
pub struct SessionKey {
    secret: [u8; 32],
}

impl SessionKey {
    pub fn new(secret: [u8; 32]) -> SessionKey {
        SessionKey { secret }
    }

    fn mac(&self, prefix: &str, expires: i64, token_hash: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        for part in [prefix, &expires.to_string(), token_hash] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        mac
    }

    /// The cookie value of a sign-in with `token` that lasts until `expires`.
    pub fn issue(&self, token: &TokenRecord, expires: DateTime<Utc>) -> String {
        let expires = expires.timestamp();
        let mac = self.mac(&token.prefix, expires, &token.hash).finalize().into_bytes();
        format!("{}.{expires}.{}", token.prefix, hex::encode(mac))
    }

    /// The live token a cookie value stands for at `now`: well formed, made
    /// under this key, not expired, its token stored and not revoked.
    pub async fn verify(
        &self,
        store: &dyn Store,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut parts = value.split('.');
        let (Some(prefix), Some(expires), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let Ok(expires) = expires.parse::<i64>() else { return Ok(None) };
        let Ok(mac) = hex::decode(mac) else { return Ok(None) };
        if prefix.len() != 8 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) || expires <= now.timestamp() {
            return Ok(None);
        }
        let Some(token) = store.find_token(prefix).await? else { return Ok(None) };
        let genuine = self.mac(&token.prefix, expires, &token.hash).verify_slice(&mac).is_ok();
        Ok((genuine && token.revoked_at.is_none()).then_some(token))
    }
}

/// The console's access rule, checked by extracting it. Its value is who
/// is calling (`admin:<address>`, or the token subject), which operations
/// record as who acted, and the page's CSRF session. Refusals are pages:
/// `403 forbidden` for a remote caller without `allow_remote_admin`; the
/// sign-in form with `401 unauthorized` for one without a live token or
/// session; `503 store_unavailable`.
pub struct ConsoleAccess {
    pub by: String,
    pub session: Session,
}

/// What a request's peer and headers say about where it comes from.
struct Caller {
    ip: ClientAddr,
    secure: bool,
}

/// Who sent the request; `None` when the accept loop put no peer on it
/// (it always does: a route not served through it is not ours).
fn caller(parts: &Parts, state: &AppState) -> Option<Caller> {
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied()?;
    let forwarding = state.callers.forwarding();
    Some(Caller {
        ip: client_ip(peer, &parts.headers, forwarding),
        secure: forwarded_https(peer, &parts.headers, forwarding),
    })
}

fn no_peer() -> Response {
    Refusal(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")).into_response()
}

fn loopback_only() -> Refusal {
    Refusal(ApiError::new(StatusCode::FORBIDDEN, "forbidden").with("detail", "the console is served to loopback only"))
}

impl FromRequestParts<AppState> for ConsoleAccess {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<ConsoleAccess, Response> {
        let Caller { ip, secure } = caller(parts, state).ok_or_else(no_peer)?;
        let mut session = state.console.csrf.session(&parts.headers, secure);
        if ip.is_loopback() {
            return Ok(ConsoleAccess { by: format!("admin:{ip}"), session });
        }
        if !state.config.allow_remote_admin {
            return Err(loopback_only().into_response());
        }
        let unavailable = |_: StoreError| Refusal(ApiError::store_unavailable()).into_response();
        let next = next_of(parts);
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let bearer = value.to_str().unwrap_or("");
            return match verify_bearer(state.store.as_ref(), bearer).await.map_err(unavailable)? {
                Some(token) => Ok(ConsoleAccess { by: token.subject, session }),
                None => Err(sign_in_page(&session, &next, Some("The bearer token sent is not live."), false)),
            };
        }
        let Some(value) = cookie(&parts.headers, COOKIE) else {
            return Err(sign_in_page(&session, &next, None, false));
        };
        match state.console.sessions.verify(state.store.as_ref(), value, Utc::now()).await.map_err(unavailable)? {
            Some(token) => {
                session.signed_in = true;
                Ok(ConsoleAccess { by: token.subject, session })
            }
            None => Err(sign_in_page(
                &session,
                &next,
                Some("Your sign-in has ended (it expired, or its token was revoked). Sign in again."),
                true,
            )),
        }
    }
}

/// Where a sign-in from this request returns to: the page asked for, when
/// it was a page.
fn next_of(parts: &Parts) -> String {
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui");
    if parts.method == Method::GET && path != "/ui/events" {
        safe_next(path).to_string()
    } else {
        "/ui".to_string()
    }
}

/// `next` when it is a console page of this daemon, else the overview: a
/// sign-in never sends the browser anywhere else.
fn safe_next(next: &str) -> &str {
    let console = next == "/ui" || next.starts_with("/ui/") || next.starts_with("/ui?");
    let plain = !next.contains("//") && !next.contains('\\') && next.bytes().all(|b| b.is_ascii_graphic());
    if console && plain {
        next
    } else {
        "/ui"
    }
}

/// The sign-in form, answered `401` (with `WWW-Authenticate`, as that
/// status requires). `clear` also removes a session cookie that no longer
/// holds.
fn sign_in_page(session: &Session, next: &str, notice: Option<&str>, clear: bool) -> Response {
    let body = html! {
        @if let Some(notice) = notice { p.notice { (notice) } }
        p {
            "This console serves remote operators who hold a bearer token (pair with a code from "
            code { "fanin pair" } "). Enter it once; this browser then keeps a session cookie."
        }
        form.signin method="post" action="/ui/login" {
            (csrf_field(session))
            input type="hidden" name="next" value=(next);
            label { "bearer token" input type="password" name="token" autocomplete="off" required; }
            button type="submit" { "Sign in" }
        }
    };
    let mut response = layout(Nav::None, "Sign in", None, body).into_response();
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"fanin console\""));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cookie) = session.set_cookie() {
        headers.append(header::SET_COOKIE, cookie);
    }
    if clear {
        headers.append(header::SET_COOKIE, set_cookie(COOKIE, "", Some(0), session.secure));
    }
    response
}

/// `GET /ui/login`: the sign-in form (a loopback caller, who needs none,
/// goes to the overview).
pub async fn form(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, _) = request.into_parts();
    let Some(Caller { ip, secure }) = caller(&parts, &state) else { return no_peer() };
    if ip.is_loopback() {
        return after_post("/ui");
    }
    if !state.config.allow_remote_admin {
        return loopback_only().into_response();
    }
    let session = state.console.csrf.session(&parts.headers, secure);
    sign_in_page(&session, "/ui", None, false)
}

/// `POST /ui/login`: a live token buys a session cookie of
/// `console_session_secs`, then the browser goes where it was going. A
/// wrong token counts against the client's `pair_rate_limit_per_minute`,
/// as a wrong pairing code does.
pub async fn sign_in(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    match signed_in(&state, &parts, body).await {
        Ok(response) | Err(response) => response,
    }
}

async fn signed_in(state: &AppState, parts: &Parts, body: Body) -> Result<Response, Response> {
    let Caller { ip, secure } = caller(parts, state).ok_or_else(no_peer)?;
    let fields = posted(state, &parts.headers, body).await.map_err(IntoResponse::into_response)?;
    let next = safe_next(fields.get("next").map(String::as_str).unwrap_or("/ui")).to_string();
    if ip.is_loopback() {
        return Ok(after_post(&next));
    }
    if !state.config.allow_remote_admin {
        return Err(loopback_only().into_response());
    }
    let presented = filled(&fields, "token").unwrap_or("");
    let token = verify_token(state.store.as_ref(), presented)
        .await
        .map_err(|_| Refusal(ApiError::store_unavailable()).into_response())?;
    let session = state.console.csrf.session(&parts.headers, secure);
    let Some(token) = token else {
        if let Err(wait) = state.pair_limit.check(&ip.to_string()) {
            return Err(Refusal(ApiError::rate_limited(retry_after_secs(wait))).into_response());
        }
        return Err(sign_in_page(&session, &next, Some("That is not a live bearer token."), false));
    };
    let lasts = state.config.console_session_secs;
    let expires = Utc::now() + chrono::Duration::seconds(i64::try_from(lasts).unwrap_or(i64::MAX / 1000));
    tracing::info!(subject = %token.subject, client = %ip, "console sign-in");
    let mut response = after_post(&next);
    let value = state.console.sessions.issue(&token, expires);
    response.headers_mut().append(header::SET_COOKIE, set_cookie(COOKIE, &value, Some(lasts), secure));
    Ok(response)
}

/// `POST /ui/logout`: this browser forgets its session. (Revoking the
/// token ends every session made with it.)
pub async fn sign_out(
    State(state): State<AppState>,
    access: ConsoleAccess,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(refusal) = posted(&state, &headers, body).await {
        return refusal.into_response();
    }
    let mut response = after_post("/ui");
    response.headers_mut().append(header::SET_COOKIE, set_cookie(COOKIE, "", Some(0), access.session.secure));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn only_console_pages_are_returned_to() {
        for kept in ["/ui", "/ui/runs?status=failed", "/ui/runs/r-1", "/ui?x=1"] {
            assert_eq!(safe_next(kept), kept);
        }
        for refused in
            ["https://evil.example/ui", "//evil.example", "/ui//evil.example", "/uix", "/ui/\\evil", "/ui/a b", ""]
        {
            assert_eq!(safe_next(refused), "/ui", "{refused:?}");
        }
    }

    #[tokio::test]
    async fn a_session_holds_for_its_token_key_and_time_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("fanin.db")).unwrap();
        let key = crate::operations::pairing::PairingKey::from_bytes([3; 32]);
        let code = crate::operations::pairing::issue_pairing_code(&store, &key, at(0)).await.unwrap();
        let pairing = crate::operations::pairing::Pairing::new(key);
        let crate::operations::pairing::PairingOutcome::Paired(token) =
            pairing.attempt(&store, "203.0.113.9", &code, at(1)).await.unwrap()
        else {
            panic!("the code pairs")
        };
        let record = verify_token(&store, &token).await.unwrap().expect("a live token");

        let sessions = SessionKey::new([5; 32]);
        let value = sessions.issue(&record, at(100));
        assert!(!value.contains(&token[6..]), "the token is not in the cookie");
        let subject = |v: &str, now| {
            let (sessions, store) = (&sessions, &store);
            let v = v.to_string();
            async move { sessions.verify(store, &v, now).await.unwrap().map(|t| t.subject) }
        };
        assert_eq!(subject(&value, at(99)).await, Some(record.subject.clone()));
        assert_eq!(subject(&value, at(100)).await, None, "expired");
        assert_eq!(SessionKey::new([6; 32]).verify(&store, &value, at(1)).await.unwrap(), None, "another key");
        let later = value.replacen(".1700000100.", ".1800000100.", 1);
        assert_ne!(later, value);
        assert_eq!(subject(&later, at(1)).await, None, "a lengthened expiry");
        for malformed in ["", "a.b.c", "abcd.1.00", &format!("{value}.x"), &value[..value.len() - 2]] {
            assert_eq!(subject(malformed, at(1)).await, None, "{malformed:?}");
        }
        store.revoke_tokens(&record.prefix, at(50)).await.unwrap();
        assert_eq!(subject(&value, at(51)).await, None, "revoked");
    }
}
