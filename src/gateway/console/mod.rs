//! The console (docs/console.md): HTML pages at `/ui` for watching runs,
//! sources and the outbox, deciding approvals, cancelling runs, retrying
//! dead letters and explaining matches, rendered on the server with maud so
//! every page works without JavaScript and nothing needs building beside
//! the daemon. One small script (console.js, served like the stylesheet)
//! refreshes the lists of the overview and the runs page when
//! [`events`] says runs changed.
//!
//! Guarded like `/admin` ([`ConsoleAccess`], with a sign-in for remote
//! operators: [`signin`]); every form that changes state also carries a
//! CSRF token ([`csrf`]). Handlers are thin: what they do is
//! one call into `crate::operations` (the same the admin API and the CLI
//! make) or a read of the store, and a page around it.

mod agent;
mod approvals;
mod csrf;
mod events;
mod explain;
mod outbox;
mod overview;
mod runs;
mod signin;
mod sops;

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::extract::Path;
use super::{ApiError, AppState};
use crate::operations::pairing::PairingKey;
use crate::operations::OpError;
use csrf::{CsrfKey, Session};
use signin::{ConsoleAccess, SessionKey};

/// The console's keys, derived from the store's pairing key so every
/// replica of a store accepts what another rendered or signed.
pub struct Console {
    csrf: CsrfKey,
    sessions: SessionKey,
}

impl Console {
    pub fn new(key: &PairingKey) -> Console {
        Console {
            csrf: CsrfKey::new(key.derive("console csrf")),
            sessions: SessionKey::new(key.derive("console session")),
        }
    }
}

/// The console's routes; [`security_headers`] goes around the whole router.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/ui", get(overview::show))
        .route("/ui/runs", get(runs::list))
        .route("/ui/runs/{id}", get(runs::show))
        .route("/ui/runs/{id}/cancel", post(runs::cancel))
        .route("/ui/approvals", get(approvals::list))
        .route("/ui/agent", get(agent::list))
        .route("/ui/approvals/{id}/approve", post(approvals::approve))
        .route("/ui/approvals/{id}/deny", post(approvals::deny))
        .route("/ui/outbox", get(outbox::list))
        .route("/ui/outbox/{id}/retry", post(outbox::retry))
        .route("/ui/sops", get(sops::list))
        .route("/ui/explain", get(explain::show))
        .route("/ui/events", get(events::stream))
        .route("/ui/login", get(signin::form).post(signin::sign_in))
        .route("/ui/logout", post(signin::sign_out))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/{*rest}", any(unknown))
        .with_state(state)
}

/// No inline script or style, no framing, forms posting and the script
/// fetching only here.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's headers on every response under `/ui`, also those the
/// router makes itself (an unknown method, a timeout).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let console = request.uri().path() == "/ui" || request.uri().path().starts_with("/ui/");
    let mut response = next.run(request).await;
    if !console {
        return response;
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// An asset's name carries a digest of its content, so it can be cached
/// for good and a new binary's is fetched anew.
fn digested(content: &str, extension: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("console-{}.{extension}", &hex::encode(Sha256::digest(content.as_bytes()))[..12])
}

static CSS_NAME: LazyLock<String> = LazyLock::new(|| digested(CSS, "css"));
static JS_NAME: LazyLock<String> = LazyLock::new(|| digested(JS, "js"));

async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, content) = if name == *CSS_NAME {
        ("text/css; charset=utf-8", CSS)
    } else if name == *JS_NAME {
        ("text/javascript; charset=utf-8", JS)
    } else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found")
            .with("path", format!("/ui/assets/{name}"))
            .into_response();
    };
    let headers =
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")];
    (headers, content).into_response()
}

/// A path under `/ui` that is no page, answered as a page (with the
/// console's headers).
async fn unknown(uri: axum::http::Uri) -> Refusal {
    Refusal(ApiError::new(StatusCode::NOT_FOUND, "not_found").with("path", uri.path()))
}

/// Which entry of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    Runs,
    Approvals,
    Agent,
    Outbox,
    Sops,
    Explain,
    None,
}

const NAV: [(Nav, &str, &str); 7] = [
    (Nav::Overview, "/ui", "Overview"),
    (Nav::Runs, "/ui/runs", "Runs"),
    (Nav::Approvals, "/ui/approvals", "Approvals"),
    (Nav::Agent, "/ui/agent", "Agent steps"),
    (Nav::Outbox, "/ui/outbox", "Outbox"),
    (Nav::Sops, "/ui/sops", "SOPs"),
    (Nav::Explain, "/ui/explain", "Explain"),
];

/// A page; `session` offers a signed-in operator to sign out.
fn layout(nav: Nav, title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fanin" }
                link rel="stylesheet" href={ "/ui/assets/" (*CSS_NAME) };
                script src={ "/ui/assets/" (*JS_NAME) } defer {}
            }
            body {
                header {
                    strong { "fanin" }
                    nav {
                        @for (entry, href, label) in NAV {
                            a href=(href) class=[(entry == nav).then_some("here")] { (label) }
                        }
                    }
                    @if let Some(session) = session.filter(|s| s.signed_in) {
                        form.signout method="post" action="/ui/logout" {
                            (csrf_field(session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page for the browser whose CSRF session is `session`: the cookie is
/// set when the browser had none.
fn page(session: &Session, nav: Nav, title: &str, body: Markup) -> Response {
    let mut response = layout(nav, title, Some(session), body).into_response();
    if let Some(cookie) = session.set_cookie() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The hidden field every state-changing form carries.
fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.token); }
}

/// A refusal shown as a page: the status, the code and the fields the
/// admin API would answer with.
pub struct Refusal(ApiError);

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal(e)
    }
}

impl From<OpError> for Refusal {
    fn from(e: OpError) -> Refusal {
        Refusal(e.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = self.0.body();
        let code = body.get("error").and_then(Value::as_str).unwrap_or("error");
        let markup = html! {
            p.notice { "Refused (" (status.as_u16()) "): " code { (code) } }
            dl {
                @for (key, value) in body.iter().filter(|(k, _)| *k != "error") {
                    dt { (key) }
                    dd { (value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())) }
                }
            }
            p { a href="/ui" { "Back to the overview" } }
        };
        let mut response = layout(Nav::None, "Refused", None, markup).into_response();
        *response.status_mut() = status;
        response
    }
}

/// The fields of a console form, once its CSRF token is checked against
/// the browser's cookie: `403 csrf_refused` when it is missing or wrong, so
/// nothing a form does can be done from another site.
async fn posted(state: &AppState, headers: &HeaderMap, body: Body) -> Result<HashMap<String, String>, Refusal> {
    let bytes = crate::http::body::read_body(body, headers, state.config.max_body_bytes).await?;
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&bytes).into_owned().collect();
    if !state.console.csrf.check(headers, fields.get("csrf").map(String::as_str)) {
        return Err(Refusal(ApiError::new(StatusCode::FORBIDDEN, "csrf_refused").with(
            "detail",
            "the form's CSRF token does not belong to this browser's console cookie; reload the page and try again",
        )));
    }
    Ok(fields)
}

/// The value of the cookie `name` the request carries, if any.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value for the console: scoped to `/ui`, unreadable to
/// script, never sent on requests that start on another site, `Secure`
/// when the browser reached fanin over TLS; `max_age` 0 removes it,
/// `None` keeps it for the browser's session.
fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(secs) = max_age {
        cookie.push_str(&format!("; Max-Age={secs}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("console cookie values are hex, digits and dots")
}

/// A form field that was filled in.
fn filled<'a>(fields: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// Where the browser goes after a form did its work (303 See Other).
fn after_post(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A query parameter that was given, not left empty by a filter form.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn status_class(status: &str) -> String {
    format!("status-{status}")
}

/// Stored payloads are capped already; a page shows at most this much of
/// one.
const SHOWN_BYTES: usize = 16 * 1024;

/// `value` indented, cut at [`SHOWN_BYTES`] with a note of what was left
/// out. maud escapes it where it is placed.
fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    if text.len() > SHOWN_BYTES {
        let mut end = SHOWN_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let left = text.len() - end;
        text.truncate(end);
        text.push_str(&format!("\n… {left} more bytes not shown"));
    }
    text
}

/// A serde name (`supervised`, `drop_newest`), as SOP.toml spells it.
fn named<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_payloads_are_cut_on_a_character() {
        let value = Value::String("é".repeat(SHOWN_BYTES));
        let shown = pretty(&value);
        assert!(shown.len() < SHOWN_BYTES + 64, "{}", shown.len());
        assert!(shown.ends_with("more bytes not shown"));
        assert_eq!(pretty(&serde_json::json!({"a": 1})), "{\n  \"a\": 1\n}");
    }

    #[test]
    fn text_in_a_page_is_escaped() {
        let markup =
            layout(Nav::None, "<b>", None, html! { pre { (pretty(&Value::String("<script>x</script>".into()))) } });
        let html = markup.into_string();
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;") && !html.contains("<script>"), "{html}");
        assert!(html.contains("<title>&lt;b&gt; · fanin</title>"));
    }
}
