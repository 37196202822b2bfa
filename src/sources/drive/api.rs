//! The two calls of the Drive v3 changes contract fanin makes —
//! `GET changes/startPageToken` and `GET changes?pageToken=…` — and how
//! their failures are worded: Drive's own error message and status, a
//! 429's or 503's `Retry-After` kept for the backoff to honour. A granted
//! bearer that Drive refuses (401) is renewed and the call made once more
//! (`auth.rs`). The bearer token never appears in an error.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::auth::Bearer;
use super::change::FILE_FIELDS;
use crate::sources::feed::SourceError;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Changes asked for per page (Drive's maximum is 1000).
const PAGE_SIZE: u32 = 100;

pub struct DriveApi {
    client: reqwest::Client,
    base: Url,
    bearer: Bearer,
}

/// One page of the changes feed: a last page has `new_start_page_token`,
/// any other `next_page_token`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    #[serde(default)]
    pub changes: Vec<Value>,
    pub next_page_token: Option<String>,
    pub new_start_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartPageToken {
    start_page_token: String,
}

impl DriveApi {
    pub fn new(base: &str, bearer: Bearer) -> Result<DriveApi, String> {
        let base = Url::parse(base).map_err(|e| format!("{base:?} is not a URL: {e}"))?;
        if base.cannot_be_a_base() {
            return Err(format!("{base} cannot take a path"));
        }
        let client = reqwest::Client::builder().timeout(CALL_TIMEOUT).build().map_err(|e| e.to_string())?;
        Ok(DriveApi { client, base, bearer })
    }

    pub async fn start_page_token(&self) -> Result<String, SourceError> {
        let url = self.url(&["changes", "startPageToken"], &[("supportsAllDrives", "true")]);
        let answer: StartPageToken = self.get(url).await?;
        Ok(answer.start_page_token)
    }

    pub async fn changes(&self, page_token: &str) -> Result<Page, SourceError> {
        let fields =
            format!("nextPageToken,newStartPageToken,changes(changeType,removed,fileId,time,file({FILE_FIELDS}))");
        let size = PAGE_SIZE.to_string();
        let query = [
            ("pageToken", page_token),
            ("pageSize", size.as_str()),
            ("includeRemoved", "true"),
            ("supportsAllDrives", "true"),
            ("includeItemsFromAllDrives", "true"),
            ("fields", fields.as_str()),
        ];
        let page: Page = self.get(self.url(&["changes"], &query)).await?;
        if page.next_page_token.is_none() && page.new_start_page_token.is_none() {
            return Err(SourceError::new(
                "Drive answered a changes page with neither nextPageToken nor newStartPageToken",
            ));
        }
        Ok(page)
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked in new").pop_if_empty().extend(segments);
        url.query_pairs_mut().extend_pairs(query);
        url
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: Url) -> Result<T, SourceError> {
        let describe = |e: reqwest::Error| match e.is_timeout() {
            true => SourceError::new(format!("Drive did not answer within {CALL_TIMEOUT:?}")),
            false => SourceError::new(format!("Drive: {}", crate::causes::error_chain(&e.without_url()))),
        };
        let mut token = self.bearer.token().await?;
        let mut response = self.client.get(url.clone()).bearer_auth(&token).send().await.map_err(describe)?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED && self.bearer.refused(&token).await {
            token = self.bearer.token().await?;
            response = self.client.get(url).bearer_auth(&token).send().await.map_err(describe)?;
        }
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(describe)?;
        if !status.is_success() {
            let error = SourceError::new(format!("Drive answered {status}: {}", drive_message(&body)));
            return Err(match retry_after {
                Some(wait) => error.retry_after(wait),
                None => error,
            });
        }
        serde_json::from_slice(&body)
            .map_err(|e| SourceError::new(format!("Drive answered {status} with a body fanin cannot read: {e}")))
    }
}

/// `Retry-After` in seconds (the form Google's APIs send).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `error.message` of Google's error body, else the start of the body.
fn drive_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().and_then(|v| v.pointer("/error/message")).and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_changes_contract() {
        let api = DriveApi::new("https://www.googleapis.com/drive/v3/", Bearer::Fixed("t".into())).unwrap();
        let url = api.url(&["changes"], &[("pageToken", "12 3")]);
        assert_eq!(url.as_str(), "https://www.googleapis.com/drive/v3/changes?pageToken=12+3");
        let url = api.url(&["changes", "startPageToken"], &[]);
        assert_eq!(url.path(), "/drive/v3/changes/startPageToken");
    }

    #[test]
    fn google_error_bodies_give_their_message() {
        let body = br#"{"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}"#;
        assert_eq!(drive_message(body), "Request had invalid authentication credentials.");
        assert_eq!(drive_message(b"<html>oops</html>"), "<html>oops</html>");
    }
}
