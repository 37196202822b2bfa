//! One IMAP session of a mailbox, from LOGIN to shutdown or the first error:
//! SELECT, catch up from the stored cursor, then wait for mail (IDLE where
//! the server has it, else a check every `poll_interval_secs`) and take in
//! what arrived. `feed::run` dials it again after an error.
//!
//! The cursor is `"<uidvalidity>/<last uid>"` and moves only in the commit
//! that dispatches (or refuses) the message it names, so a crash between
//! two messages repeats none and loses none. Messages are taken in UID
//! order, one at a time, each fetched with `BODY.PEEK[]` (the server's
//! `\Seen` flag is left alone).

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use chrono::Utc;
use futures_util::TryStreamExt;
use serde_json::json;

use super::connect::{step, Transport};
use super::message;
use super::Mailbox;
use crate::dispatch::Refusal;
use crate::event::{IdempotencyKey, Source};
use crate::sources::feed::{Feed, SourceError};
use crate::store::AuditKind;

type Session = async_imap::Session<Transport>;

/// IDLE is ended and issued again before this, inside the 30 minutes after
/// which RFC 2177 lets a server drop an idle client.
pub const IDLE_RENEW: Duration = Duration::from_secs(29 * 60);

/// Where the mailbox has been read up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    uidvalidity: u32,
    last_uid: u32,
}

impl Position {
    fn value(&self) -> String {
        format!("{}/{}", self.uidvalidity, self.last_uid)
    }

    fn parse(value: &str) -> Option<Position> {
        let (validity, uid) = value.split_once('/')?;
        Some(Position { uidvalidity: validity.parse().ok()?, last_uid: uid.parse().ok()? })
    }
}

/// Runs one session; `Ok` only on shutdown.
pub async fn run(feed: &Feed, mailbox: &Mailbox) -> Result<(), SourceError> {
    let shutdown = feed.ctx().shutdown.clone();
    feed.connecting(Some(&format!("connecting to {}:{}", mailbox.dial.host, mailbox.dial.port)));
    let mut session = tokio::select! {
        opened = mailbox.dial.open() => opened?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let selected = step(&format!("selecting {}", mailbox.folder), session.select(&mailbox.folder)).await?;
    let uidvalidity = selected
        .uid_validity
        .ok_or_else(|| SourceError::new(format!("the server gave no UIDVALIDITY for {}", mailbox.folder)))?;
    let idle = step("reading the capabilities", session.capabilities()).await?.has_str("IDLE");
    feed.up();
    let mut at = catch_up(feed, mailbox, &mut session, uidvalidity, selected.uid_next).await?;
    feed.polled();
    loop {
        let woken = match idle {
            true => wait_idle(session, &shutdown).await?,
            false => wait_poll(session, mailbox.poll_interval, &shutdown).await?,
        };
        let Some(next) = woken else {
            return Ok(());
        };
        session = next;
        at = take_new(feed, mailbox, &mut session, at).await?;
        feed.polled();
    }
}

/// Where to go on from: the stored cursor when its UIDVALIDITY still holds
/// (taking in what arrived since), the mailbox's current end on a first
/// start (the mail already there is not replayed), or, after a UIDVALIDITY
/// change, a re-read by Message-ID of the mail since the day before the
/// cursor last moved.
async fn catch_up(
    feed: &Feed,
    mailbox: &Mailbox,
    session: &mut Session,
    uidvalidity: u32,
    uid_next: Option<u32>,
) -> Result<Position, SourceError> {
    let stored = feed.cursor().await?;
    let end = Position {
        uidvalidity,
        last_uid: match uid_next {
            Some(next) => next.saturating_sub(1),
            None => highest_uid(session).await?,
        },
    };
    let Some(stored) = stored else {
        feed.advance(None, &end.value()).await?;
        return Ok(end);
    };
    let Some(at) = Position::parse(&stored.value) else {
        return Err(SourceError::new(format!("the stored cursor {:?} is not <uidvalidity>/<uid>", stored.value)));
    };
    if at.uidvalidity == uidvalidity {
        return take_new(feed, mailbox, session, at).await;
    }
    let detail = json!({
        "source": feed.name(),
        "folder": mailbox.folder,
        "old_uidvalidity": at.uidvalidity,
        "new_uidvalidity": uidvalidity,
        "reread_since": since(stored.updated_at),
    });
    feed.audit(AuditKind::SourceReset, detail).await?;
    let search = format!("UID 1:{} SINCE {}", end.last_uid.max(1), since(stored.updated_at));
    let mut uids: Vec<u32> = step("searching the re-read", session.uid_search(&search)).await?.into_iter().collect();
    uids.sort_unstable();
    let mut from = stored.value.clone();
    for uid in uids.into_iter().filter(|&uid| uid <= end.last_uid) {
        let to = Position { uidvalidity, last_uid: uid };
        take_one(feed, mailbox, session, Some(&from), to, None).await?;
        from = to.value();
    }
    if from != end.value() {
        feed.advance(Some(&from), &end.value()).await?;
    }
    Ok(end)
}

/// The IMAP date (`1-Jul-2025`) of the day before `at`.
fn since(at: chrono::DateTime<Utc>) -> String {
    (at - chrono::Duration::days(1)).format("%-d-%b-%Y").to_string()
}

/// The highest UID in the mailbox, for a server that does not say UIDNEXT.
async fn highest_uid(session: &mut Session) -> Result<u32, SourceError> {
    let uids = step("searching the mailbox", session.uid_search("ALL")).await?;
    Ok(uids.into_iter().max().unwrap_or(0))
}

/// Takes in every message after `at`, in UID order; returns where it got.
async fn take_new(
    feed: &Feed,
    mailbox: &Mailbox,
    session: &mut Session,
    mut at: Position,
) -> Result<Position, SourceError> {
    let range = format!("{}:*", at.last_uid + 1);
    let fetched: Vec<_> = step("listing new messages", async {
        session.uid_fetch(&range, "(UID RFC822.SIZE)").await?.try_collect::<Vec<_>>().await
    })
    .await?;
    // `n:*` names the last message even when its UID is below n.
    let mut new: Vec<(u32, u32)> = fetched
        .iter()
        .filter_map(|f| Some((f.uid?, f.size.unwrap_or(0))))
        .filter(|(uid, _)| *uid > at.last_uid)
        .collect();
    new.sort_unstable();
    for (uid, size) in new {
        if feed.ctx().shutdown.is_cancelled() {
            break;
        }
        let to = Position { uidvalidity: at.uidvalidity, last_uid: uid };
        take_one(feed, mailbox, session, Some(&at.value()), to, Some(size)).await?;
        at = to;
    }
    Ok(at)
}

/// Fetches, checks and dispatches (or refuses) one message, moving the
/// cursor from `from` to `to` in that commit.
async fn take_one(
    feed: &Feed,
    mailbox: &Mailbox,
    session: &mut Session,
    from: Option<&str>,
    to: Position,
    size: Option<u32>,
) -> Result<(), SourceError> {
    let uid = to.last_uid.to_string();
    let size = match size {
        Some(size) => size,
        None => fetch_one(session, &uid, "(UID RFC822.SIZE)").await?.and_then(|f| f.size).unwrap_or(0),
    };
    if size as usize > mailbox.email.max_message_bytes {
        let header = fetch_one(session, &uid, "(UID BODY.PEEK[HEADER])").await?;
        let parsed = message::parse(header.as_ref().and_then(|f| f.header()).unwrap_or_default());
        let id = parsed.message_id.as_deref().unwrap_or("(none)");
        let detail = format!(
            "message {id} (uid {}) is {size} bytes, over max_message_bytes ({})",
            to.value(),
            mailbox.email.max_message_bytes
        );
        return refuse(feed, mailbox, "message_too_large", detail, size as usize, from, to).await;
    }
    let Some(fetched) = fetch_one(session, &uid, "(UID BODY.PEEK[])").await? else {
        // Expunged between listing and fetching: nothing to start.
        return feed.advance(from, &to.value()).await;
    };
    let raw = fetched.body().unwrap_or_default();
    let parsed = message::parse(raw);
    if !mailbox.email.allows(parsed.from.as_deref().unwrap_or_default()) {
        let id = parsed.message_id.as_deref().unwrap_or("(none)");
        let sender = parsed.from.as_deref().unwrap_or("(none)");
        let detail = format!("message {id} from {sender} is not from one of allowed_senders");
        return refuse(feed, mailbox, "sender_not_allowed", detail, raw.len(), from, to).await;
    }
    let key = parsed.message_id.clone().unwrap_or_else(|| to.value());
    let mut event = feed.event(Source::Email, mailbox.topic.clone(), crate::event::Payload::Json(parsed.payload));
    event.idempotency = Some(IdempotencyKey::of_source(feed.name(), &key));
    feed.deliver(event, from, &to.value()).await?;
    Ok(())
}

async fn fetch_one(
    session: &mut Session,
    uid: &str,
    query: &str,
) -> Result<Option<async_imap::types::Fetch>, SourceError> {
    let fetched: Vec<_> = step(&format!("fetching message {uid}"), async {
        session.uid_fetch(uid, query).await?.try_collect::<Vec<_>>().await
    })
    .await?;
    Ok(fetched.into_iter().find(|f| f.uid.map(|u| u.to_string()).as_deref() == Some(uid)))
}

async fn refuse(
    feed: &Feed,
    mailbox: &Mailbox,
    reason: &'static str,
    detail: String,
    bytes: usize,
    from: Option<&str>,
    to: Position,
) -> Result<(), SourceError> {
    let refusal = Refusal {
        source: Source::Email,
        topic: mailbox.topic.clone(),
        client: Some(feed.name().to_string()),
        reason,
        detail,
        bytes,
        received_at: Utc::now(),
    };
    feed.refuse(refusal, from, &to.value()).await
}

/// IDLE until the server tells of a change, [`IDLE_RENEW`] passes, or
/// shutdown (`None`, after ending IDLE and logging out).
async fn wait_idle(
    session: Session,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<Session>, SourceError> {
    let mut idle = session.idle();
    step("starting IDLE", idle.init()).await?;
    let (wait, _interrupt) = idle.wait_with_timeout(IDLE_RENEW);
    let woken = tokio::select! {
        woken = wait => Some(woken),
        _ = shutdown.cancelled() => None,
    };
    let stop = match woken {
        Some(Ok(IdleResponse::NewData(_) | IdleResponse::Timeout)) => false,
        // The interrupt is held above, so this is the connection ending.
        Some(Ok(IdleResponse::ManualInterrupt)) => {
            return Err(SourceError::new("the server closed the connection during IDLE"));
        }
        Some(Err(e)) => return Err(SourceError::new(format!("waiting in IDLE: {e}"))),
        None => true,
    };
    let mut session = step("ending IDLE", idle.done()).await?;
    if stop {
        let _ = step("logging out", session.logout()).await;
        return Ok(None);
    }
    Ok(Some(session))
}

/// For a server without IDLE: waits `interval`, then checks the connection
/// (NOOP); `None` on shutdown.
async fn wait_poll(
    mut session: Session,
    interval: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<Session>, SourceError> {
    tokio::select! {
        _ = tokio::time::sleep(interval) => {}
        _ = shutdown.cancelled() => {
            let _ = step("logging out", session.logout()).await;
            return Ok(None);
        }
    }
    step("checking the mailbox (NOOP)", session.noop()).await?;
    Ok(Some(session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_back_what_it_writes() {
        let at = Position { uidvalidity: 1_796_196_711, last_uid: 42 };
        assert_eq!(at.value(), "1796196711/42");
        assert_eq!(Position::parse(&at.value()), Some(at));
        for bad in ["", "1", "1/", "/2", "a/2", "1/b", "1/2/3"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_reread_starts_the_day_before_the_cursor_moved() {
        let at = chrono::DateTime::parse_from_rfc3339("2025-07-01T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(since(at), "30-Jun-2025");
    }
}
