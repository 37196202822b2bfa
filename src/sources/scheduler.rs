//! The cron scheduler: turns the clock into cron events.
//!
//! Cron triggers are grouped by key — one per (timezone, expression) pair,
//! written `"<timezone>|<expression>"` — because the dispatcher matches a
//! cron event by exactly that pair: one event starts every SOP sharing it.
//!
//! - **Window rule.** Each key has a `last_check`, persisted in the store.
//!   A look at a key covers `(last_check, now]` (whole seconds, see
//!   [`super::cron`]); if one or more fire points fall inside, it dispatches
//!   exactly one event, with `fires_in_window` saying how many and
//!   `scheduled_at` the latest of them. The event and the new `last_check`
//!   are committed together (`dispatch_with`), so a fire is never lost nor
//!   repeated across a crash. A look that finds nothing writes nothing.
//! - **Start.** A key never seen before starts at now: no catch-up on a
//!   first start. Otherwise the downtime window is split at
//!   `now − cron_catchup_window_secs`: fire points at or after that instant
//!   fire once (catch-up), older ones are written to the audit as
//!   `cron_missed` (how many, first and last) and not fired. While running,
//!   every look follows the plain window rule, whatever the window's length.
//! - **Clock.** No polling: the task sleeps until the earliest next fire
//!   point across keys, or until shutdown. The sleep is measured
//!   on the monotonic clock, so a wall clock stepped forward while asleep is
//!   noticed at the next wake-up, whose window then covers what was passed.
//!   A clock that goes back never moves `last_check` back: nothing fires
//!   until the clock passes it again.
//! - **Failures.** If the store refuses a commit, the key's `last_check` is
//!   not advanced, so its window still covers the fire; it is retried with
//!   backoff (1 s doubling to 30 s) and source `cron` is Down meanwhile.
//! - **Replicas.** Under `[cluster]` the scheduler is the singleton duty
//!   `cron`: one replica looks at a time, and the next owner begins with a
//!   start-up look from the stored checks, so a fire point is dispatched
//!   once across replicas and one missed during a takeover fires late, once.
//! - **Lateness.** Each fire's delay from its scheduled instant to its
//!   durable commit goes to the histogram `fanin_cron_lateness_seconds`
//!   (start-up catch-ups excluded: their delay is the downtime).
//!
//! Everything that decides (keys, plans, what is due, when to wake) is pure
//! and takes `now` as an argument; the task at the bottom only reads the
//! clock, sleeps and commits.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::health::Status;
use super::{SourceContext, SourceTask};
use crate::cron::{fires_in_window, next_fire_after, whole_second, FireWindow};
use crate::dispatch::Catalog;
use crate::event::{Event, Payload, Source};
use crate::sop::{Schedule, TriggerSpec};
use crate::store::{AuditKind, Batch, NewAudit, Write};

/// The source name in health reports.
pub const SOURCE: &str = "cron";

const RETRY_FIRST: chrono::TimeDelta = chrono::TimeDelta::seconds(1);
const RETRY_MAX: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// One (timezone, expression) pair and the SOPs whose triggers share it.
#[derive(Clone, Debug)]
pub struct CronKey {
    /// `"<timezone>|<expression>"`: the store key of its `last_check`.
    pub key: String,
    pub schedule: Schedule,
    pub sops: Vec<String>,
}

/// The store key of a schedule.
pub fn key_of(schedule: &Schedule) -> String {
    format!("{}|{}", schedule.timezone().name(), schedule.expression())
}

/// Every cron key of a catalog, in key order.
pub fn cron_keys(catalog: &Catalog) -> Vec<CronKey> {
    let mut keys: BTreeMap<String, CronKey> = BTreeMap::new();
    for sop in &catalog.sops {
        for trigger in &sop.triggers {
            let TriggerSpec::Cron(schedule) = &trigger.spec else { continue };
            let entry = keys.entry(key_of(schedule)).or_insert_with_key(|key| CronKey {
                key: key.clone(),
                schedule: (**schedule).clone(),
                sops: Vec::new(),
            });
            if !entry.sops.contains(&sop.name) {
                entry.sops.push(sop.name.clone());
            }
        }
    }
    keys.into_values().collect()
}

/// Fire points of a start-up window too old to fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missed {
    pub points: FireWindow,
    /// The catch-up window's start: every missed point is before it.
    pub before: DateTime<Utc>,
}

/// What one look at a key decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The fire points to fire once for; `None`: nothing fires.
    pub fire: Option<FireWindow>,
    pub missed: Option<Missed>,
    /// `last_check` once the plan is committed.
    pub check_to: DateTime<Utc>,
    /// Whether `check_to` is written (false: nothing happened, nothing changes).
    pub persist: bool,
    /// The first fire point after `check_to`: when the key next needs a look
    /// once the plan is committed. Found with the same compiled schedule as
    /// the plan, so a look compiles its expression once.
    pub next_fire: Option<DateTime<Utc>>,
}

/// The start-up look at a key whose stored `last_check` is `stored`.
pub fn plan_start(
    schedule: &Schedule,
    stored: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    catchup: chrono::TimeDelta,
) -> Plan {
    let schedule = schedule.compile();
    let now = whole_second(now);
    let Some(last_check) = stored else {
        return Plan {
            fire: None,
            missed: None,
            check_to: now,
            persist: true,
            next_fire: next_fire_after(&schedule, now),
        };
    };
    // Points strictly before `cutoff` are missed: the older part ends one
    // second before it, the catch-up part starts there. No cutoff (a window
    // reaching before the calendar's start) misses nothing.
    let older_end = now
        .checked_sub_signed(catchup)
        .and_then(|cutoff| Some((cutoff, cutoff.checked_sub_signed(chrono::TimeDelta::seconds(1))?.min(now))));
    let missed = older_end.and_then(|(cutoff, end)| {
        fires_in_window(&schedule, last_check, end).map(|points| Missed { points, before: cutoff })
    });
    let fire_after = older_end.map_or(last_check, |(_, end)| last_check.max(end));
    let fire = fires_in_window(&schedule, fire_after, now);
    let check_to = last_check.max(now);
    Plan { fire, missed, check_to, persist: true, next_fire: next_fire_after(&schedule, check_to) }
}

/// A running look at a key: the plain window rule over `(last_check, now]`.
pub fn plan_tick(schedule: &Schedule, last_check: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
    let schedule = schedule.compile();
    let (fire, check_to, persist) = match fires_in_window(&schedule, last_check, now) {
        Some(fire) => (Some(fire), whole_second(now), true),
        None => (None, last_check, false),
    };
    Plan { fire, missed: None, check_to, persist, next_fire: next_fire_after(&schedule, check_to) }
}

impl Plan {
    /// The one cron event of this plan, if it fires.
    pub fn event(&self, key: &CronKey, now: DateTime<Utc>) -> Option<Event> {
        let fire = self.fire?;
        let timezone = key.schedule.timezone().name();
        let payload = json!({
            "scheduled_at": rfc3339(fire.last),
            "expression": key.schedule.expression(),
            "timezone": timezone,
            "fires_in_window": fire.count,
        });
        let mut event = Event::new(
            crate::ids::fresh(),
            Source::Cron,
            key.schedule.expression().to_string(),
            Payload::Json(payload),
            now,
        );
        event.timezone = Some(timezone.to_string());
        event.client = Some("cron".to_string());
        Some(event)
    }

    /// The bookkeeping committed with (or without) the event.
    pub fn writes(&self, key: &CronKey, now: DateTime<Utc>) -> Vec<Write> {
        let mut writes = Vec::new();
        if let Some(missed) = &self.missed {
            writes.push(Write::Audit(NewAudit {
                at: now,
                kind: AuditKind::CronMissed,
                run_id: None,
                sop: None,
                detail: missed_detail(key, missed),
            }));
        }
        if self.persist {
            writes.push(Write::CronChecked { key: key.key.clone(), at: self.check_to });
        }
        writes
    }
}

fn missed_detail(key: &CronKey, missed: &Missed) -> Value {
    json!({
        "key": key.key,
        "expression": key.schedule.expression(),
        "timezone": key.schedule.timezone().name(),
        "sops": key.sops,
        "missed": missed.points.count,
        "count_is_exact": missed.points.count_is_exact,
        "first": rfc3339(missed.points.first),
        "last": rfc3339(missed.points.last),
        "older_than": rfc3339(missed.before),
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A commit that failed, and when to try again.
#[derive(Clone, Debug, PartialEq)]
struct Retry {
    at: DateTime<Utc>,
    delay: chrono::TimeDelta,
    error: String,
}

/// The scheduler's knowledge of one key.
#[derive(Clone, Debug)]
pub struct KeyState {
    pub key: CronKey,
    /// `None` until the start-up look is committed.
    last_check: Option<DateTime<Utc>>,
    /// The first fire point after `last_check`.
    next_fire: Option<DateTime<Utc>>,
    retry: Option<Retry>,
}

impl KeyState {
    pub fn new(key: CronKey) -> KeyState {
        KeyState { key, last_check: None, next_fire: None, retry: None }
    }

    pub fn last_check(&self) -> Option<DateTime<Utc>> {
        self.last_check
    }

    /// The last commit error, while a retry is pending.
    pub fn error(&self) -> Option<&str> {
        self.retry.as_ref().map(|r| r.error.as_str())
    }

    /// Whether this key has something to look at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        match (&self.retry, self.last_check) {
            (Some(retry), _) => retry.at <= now,
            (None, None) => true,
            (None, Some(_)) => self.next_fire.is_some_and(|t| t <= now),
        }
    }

    /// When this key next needs a look; `None` when it never fires again.
    pub fn wake_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (&self.retry, self.last_check) {
            (Some(retry), _) => Some(retry.at),
            (None, None) => Some(now),
            (None, Some(_)) => self.next_fire,
        }
    }

    /// The look this key takes at `now`, given its stored `last_check` when
    /// it has not started yet.
    pub fn plan(&self, stored: Option<DateTime<Utc>>, now: DateTime<Utc>, catchup: chrono::TimeDelta) -> Plan {
        match self.last_check {
            None => plan_start(&self.key.schedule, stored, now, catchup),
            Some(last_check) => plan_tick(&self.key.schedule, last_check, now),
        }
    }

    /// Records a committed plan. `last_check` never moves back; when it
    /// stays (a plan behind it), so does the fire point after it.
    pub fn committed(&mut self, plan: &Plan) {
        match self.last_check {
            Some(old) if old > plan.check_to => {}
            _ => {
                self.last_check = Some(plan.check_to);
                self.next_fire = plan.next_fire;
            }
        }
        self.retry = None;
    }

    /// Records a failed commit: nothing advances; try again after a backoff.
    pub fn failed(&mut self, now: DateTime<Utc>, error: String) {
        let delay = match &self.retry {
            Some(retry) => (retry.delay * 2).min(RETRY_MAX),
            None => RETRY_FIRST,
        };
        self.retry = Some(Retry { at: now + delay, delay, error });
    }
}

/// How long to sleep from `now`: until the earliest wake-up; `None` when no
/// key will ever fire again (sleep until shutdown).
pub fn sleep_for(states: &[KeyState], now: DateTime<Utc>) -> Option<StdDuration> {
    let earliest = states.iter().filter_map(|s| s.wake_at(now)).min()?;
    Some((earliest - now).to_std().unwrap_or(StdDuration::ZERO))
}

/// `cron_catchup_window_secs` as a duration (saturating: a huge value means
/// "catch up whatever the downtime").
pub fn catchup_window(secs: u64) -> chrono::TimeDelta {
    i64::try_from(secs).ok().and_then(chrono::TimeDelta::try_seconds).unwrap_or(chrono::TimeDelta::MAX)
}

/// Starts the scheduler. It runs even with no cron trigger yet, idle, so a
/// SOP reload that adds one is scheduled without a restart.
pub fn start(ctx: &SourceContext) -> Result<Option<SourceTask>, String> {
    metrics::describe_histogram!(
        "fanin_cron_lateness_seconds",
        metrics::Unit::Seconds,
        "Delay from a cron fire point to its durable dispatch"
    );
    ctx.health.set_status(SOURCE, Status::Connecting, None);
    let catchup = catchup_window(ctx.config.sop.cron_catchup_window_secs);
    tracing::info!("cron scheduler starting");
    // One replica at a time looks at the clock; the next owner's first look
    // starts from the stored checks, so the window goes on where it stopped.
    Ok(Some(tokio::spawn(super::singleton(ctx.clone(), SOURCE.to_string(), move |held: SourceContext| {
        let keys = cron_keys(&held.dispatcher.catalog());
        run(held, keys, catchup)
    }))))
}

async fn run(ctx: SourceContext, keys: Vec<CronKey>, catchup: chrono::TimeDelta) {
    let mut states: Vec<KeyState> = keys.into_iter().map(KeyState::new).collect();
    let mut reloads = ctx.dispatcher.watch_catalog();
    loop {
        let now = Utc::now();
        for state in states.iter_mut().filter(|s| s.is_due(now)) {
            match look(&ctx, state, now, catchup).await {
                Ok(plan) => state.committed(&plan),
                Err(error) => {
                    tracing::warn!(key = %state.key.key, %error, "cron: fire not committed; will retry");
                    state.failed(now, error);
                }
            }
        }
        report_health(&ctx, &states);
        let delay = sleep_for(&states, Utc::now());
        let sleep = async {
            match delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = sleep => {}
            Ok(()) = reloads.changed() => {
                states = rekey(states, cron_keys(&ctx.dispatcher.catalog()));
                tracing::info!(keys = states.len(), "cron keys reloaded");
            }
        }
    }
}

/// The key states after a SOP reload: keys that stay keep their
/// `last_check` (their windows go on), new keys start like at start-up (from
/// the store), removed keys are dropped.
pub fn rekey(old: Vec<KeyState>, keys: Vec<CronKey>) -> Vec<KeyState> {
    let mut old: std::collections::HashMap<String, KeyState> =
        old.into_iter().map(|s| (s.key.key.clone(), s)).collect();
    keys.into_iter()
        .map(|key| match old.remove(&key.key) {
            Some(mut state) => {
                state.key = key;
                state
            }
            None => KeyState::new(key),
        })
        .collect()
}

/// Plans one key at `now` and commits the plan.
async fn look(
    ctx: &SourceContext,
    state: &KeyState,
    now: DateTime<Utc>,
    catchup: chrono::TimeDelta,
) -> Result<Plan, String> {
    let key = &state.key;
    let stored = match state.last_check() {
        Some(_) => None,
        None => ctx
            .store
            .cron_last_check(&key.key)
            .await
            .map_err(|e| format!("store: reading cron state {:?}: {e}", key.key))?,
    };
    let plan = state.plan(stored, now, catchup);
    let writes = plan.writes(key, now);
    match plan.event(key, now) {
        Some(event) => {
            ctx.dispatcher
                .dispatch_with(event, writes)
                .await
                .map_err(|e| format!("store: dispatching cron {:?}: {e}", key.key))?;
        }
        None if !writes.is_empty() => {
            ctx.store
                .commit(Batch { idempotency: None, writes })
                .await
                .map_err(|e| format!("store: recording cron state {:?}: {e}", key.key))?;
        }
        None => {}
    }
    log_plan(key, &plan, state.last_check().is_none());
    if let Some(fire) = plan.fire {
        ctx.health.event_seen(SOURCE, now);
        if state.last_check().is_some() {
            let lateness = (Utc::now() - fire.last).to_std().unwrap_or(StdDuration::ZERO);
            metrics::histogram!("fanin_cron_lateness_seconds").record(lateness.as_secs_f64());
        }
    }
    Ok(plan)
}

fn log_plan(key: &CronKey, plan: &Plan, at_start: bool) {
    if let Some(missed) = &plan.missed {
        tracing::warn!(
            key = %key.key,
            missed = missed.points.count,
            first = %rfc3339(missed.points.first),
            last = %rfc3339(missed.points.last),
            "cron: fire points older than the catch-up window were missed (audited, not fired)"
        );
    }
    if let Some(fire) = &plan.fire {
        let scheduled_at = rfc3339(fire.last);
        if at_start {
            tracing::info!(key = %key.key, %scheduled_at, fires_in_window = fire.count, "cron: catch-up fire");
        } else {
            tracing::debug!(key = %key.key, %scheduled_at, fires_in_window = fire.count, "cron: fire");
        }
    }
}

fn report_health(ctx: &SourceContext, states: &[KeyState]) {
    if let Some(error) = states.iter().find_map(KeyState::error) {
        ctx.health.set_status(SOURCE, Status::Down, Some(error.to_string()));
    } else if states.iter().all(|s| s.last_check().is_some()) {
        ctx.health.set_status(SOURCE, Status::Up, None);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::cron::parse_schedule;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn key(expression: &str, tz: Option<&str>) -> CronKey {
        let schedule = parse_schedule(expression, tz).unwrap();
        CronKey { key: key_of(&schedule), schedule, sops: vec!["s".into()] }
    }

    fn secs(n: i64) -> TimeDelta {
        TimeDelta::seconds(n)
    }

    fn ms(n: i64) -> TimeDelta {
        TimeDelta::milliseconds(n)
    }

    /// `(fired count and scheduled_at, missed count/first/last, check_to, persist)`.
    type Summary = (Option<(u64, DateTime<Utc>)>, Option<(u64, DateTime<Utc>, DateTime<Utc>)>, DateTime<Utc>, bool);

    /// `(name, expression, stored last_check, catch-up window, expected)`.
    type StartCase = (&'static str, &'static str, Option<DateTime<Utc>>, TimeDelta, Summary);

    fn summary(plan: &Plan) -> Summary {
        (
            plan.fire.map(|f| (f.count, f.last)),
            plan.missed.map(|m| (m.points.count, m.points.first, m.points.last)),
            plan.check_to,
            plan.persist,
        )
    }

    #[test]
    fn triggers_are_grouped_by_timezone_and_expression() {
        use crate::sop::test_support::sop_with;
        let cron = |e: &str, tz: Option<&str>| TriggerSpec::Cron(Box::new(parse_schedule(e, tz).unwrap()));
        let catalog = Catalog::new(vec![
            sop_with("a", vec![cron("0 8 * * *", Some("Europe/Paris")), cron("0 8 * * *", None)]),
            sop_with("b", vec![cron("0 8 * * *", Some("Europe/Paris"))]),
            sop_with("c", vec![cron("0 9 * * *", Some("Europe/Paris")), TriggerSpec::Manual]),
            sop_with("d", vec![TriggerSpec::Manual]),
        ]);
        let keys: Vec<(String, Vec<String>)> = cron_keys(&catalog).into_iter().map(|k| (k.key, k.sops)).collect();
        assert_eq!(
            keys,
            vec![
                ("Europe/Paris|0 8 * * *".to_string(), vec!["a".to_string(), "b".to_string()]),
                ("Europe/Paris|0 9 * * *".to_string(), vec!["c".to_string()]),
                ("UTC|0 8 * * *".to_string(), vec!["a".to_string()]),
            ]
        );
        assert!(cron_keys(&Catalog::new(vec![sop_with("d", vec![TriggerSpec::Manual])])).is_empty());
    }

    #[test]
    fn start_plans() {
        let now = utc(2024, 1, 1, 12, 0, 0) + ms(250);
        let hour = secs(3600);
        let cases: Vec<StartCase> = vec![
            (
                "first ever start: begin at now, fire nothing",
                "* * * * * *",
                None,
                hour,
                (None, None, utc(2024, 1, 1, 12, 0, 0), true),
            ),
            (
                "short downtime: the missed seconds fire once",
                "* * * * * *",
                Some(utc(2024, 1, 1, 11, 59, 57)),
                hour,
                (Some((3, utc(2024, 1, 1, 12, 0, 0))), None, utc(2024, 1, 1, 12, 0, 0), true),
            ),
            (
                "nothing scheduled during the downtime",
                "0 0 8 * * *",
                Some(utc(2024, 1, 1, 9, 0, 0)),
                hour,
                (None, None, utc(2024, 1, 1, 12, 0, 0), true),
            ),
            (
                "long downtime: recent points fire once, older ones are missed",
                "0 */30 * * * *",
                Some(utc(2024, 1, 1, 9, 0, 0)),
                hour,
                // 09:30 .. 10:30 are older than 11:00:00; 11:00, 11:30 and 12:00 are inside.
                (
                    Some((3, utc(2024, 1, 1, 12, 0, 0))),
                    Some((3, utc(2024, 1, 1, 9, 30, 0), utc(2024, 1, 1, 10, 30, 0))),
                    utc(2024, 1, 1, 12, 0, 0),
                    true,
                ),
            ),
            (
                "every point is older than the catch-up window: audited, nothing fires",
                "0 0 8 * * *",
                Some(utc(2024, 1, 1, 7, 0, 0)),
                hour,
                (None, Some((1, utc(2024, 1, 1, 8, 0, 0), utc(2024, 1, 1, 8, 0, 0))), utc(2024, 1, 1, 12, 0, 0), true),
            ),
            (
                "a point exactly at the window's start still fires",
                "0 0 11 * * *",
                Some(utc(2024, 1, 1, 7, 0, 0)),
                hour,
                (Some((1, utc(2024, 1, 1, 11, 0, 0))), None, utc(2024, 1, 1, 12, 0, 0), true),
            ),
            (
                "a zero window: only a point at now fires",
                "* * * * * *",
                Some(utc(2024, 1, 1, 11, 59, 50)),
                TimeDelta::zero(),
                (
                    Some((1, utc(2024, 1, 1, 12, 0, 0))),
                    Some((9, utc(2024, 1, 1, 11, 59, 51), utc(2024, 1, 1, 11, 59, 59))),
                    utc(2024, 1, 1, 12, 0, 0),
                    true,
                ),
            ),
            (
                "the clock went back: nothing fires, last_check stays",
                "* * * * * *",
                Some(utc(2024, 1, 1, 13, 0, 0)),
                hour,
                (None, None, utc(2024, 1, 1, 13, 0, 0), true),
            ),
        ];
        for (name, expression, stored, catchup, expected) in cases {
            let k = key(expression, None);
            assert_eq!(summary(&plan_start(&k.schedule, stored, now, catchup)), expected, "{name}");
        }
    }

    #[test]
    fn the_catchup_window_saturates() {
        assert_eq!(catchup_window(3600), secs(3600));
        assert_eq!(catchup_window(u64::MAX), TimeDelta::MAX);
        let k = key("0 0 8 * * *", None);
        let plan = plan_start(&k.schedule, Some(utc(2000, 1, 1, 0, 0, 0)), utc(2024, 1, 1, 9, 0, 0), TimeDelta::MAX);
        assert_eq!(plan.fire.map(|f| f.last), Some(utc(2024, 1, 1, 8, 0, 0)));
        assert_eq!(plan.missed, None);
    }

    #[test]
    fn tick_plans_follow_the_window_rule() {
        let k = key("* * * * * *", None);
        let last = utc(2024, 1, 1, 0, 0, 0);
        let cases: Vec<(&str, DateTime<Utc>, Summary)> = vec![
            ("one point", last + secs(1) + ms(3), (Some((1, last + secs(1))), None, last + secs(1), true)),
            ("many points, one fire", last + secs(5) + ms(3), (Some((5, last + secs(5))), None, last + secs(5), true)),
            ("too early: nothing, nothing written", last + ms(999), (None, None, last, false)),
            ("clock went back: nothing, last_check stays", last - secs(30), (None, None, last, false)),
        ];
        for (name, now, expected) in cases {
            assert_eq!(summary(&plan_tick(&k.schedule, last, now)), expected, "{name}");
        }
        // A long window in a tick is still one fire (no catch-up split while running).
        let plan = plan_tick(&k.schedule, last, last + secs(7200));
        assert_eq!((plan.fire.map(|f| f.count), plan.missed), (Some(7200), None));
    }

    #[test]
    fn the_fire_event_names_expression_timezone_and_window() {
        let k = key("0 30 2 * * *", Some("Europe/Paris"));
        let now = utc(2024, 1, 2, 1, 30, 0) + ms(4);
        let plan = plan_tick(&k.schedule, utc(2023, 12, 30, 0, 0, 0), now);
        let event = plan.event(&k, now).unwrap();
        assert_eq!(event.source, Source::Cron);
        assert_eq!(event.topic, "0 30 2 * * *");
        assert_eq!(event.timezone.as_deref(), Some("Europe/Paris"));
        assert_eq!(event.client.as_deref(), Some("cron"));
        assert_eq!(event.received_at, now);
        assert_eq!(
            event.payload,
            Payload::Json(json!({
                "scheduled_at": "2024-01-02T01:30:00Z",
                "expression": "0 30 2 * * *",
                "timezone": "Europe/Paris",
                "fires_in_window": 4,
            }))
        );
        assert_eq!(
            plan.writes(&k, now),
            vec![Write::CronChecked { key: "Europe/Paris|0 30 2 * * *".into(), at: utc(2024, 1, 2, 1, 30, 0) }]
        );
        assert!(plan_tick(&k.schedule, now, now).event(&k, now).is_none());
    }

    #[test]
    fn missed_points_are_audited_with_the_key_count_and_instants() {
        let k = key("0 0 8 * * *", None);
        let now = utc(2024, 1, 4, 12, 0, 0);
        let plan = plan_start(&k.schedule, Some(utc(2024, 1, 1, 0, 0, 0)), now, secs(3600));
        assert!(plan.event(&k, now).is_none());
        let writes = plan.writes(&k, now);
        assert_eq!(writes.len(), 2);
        let Write::Audit(audit) = &writes[0] else { panic!("audit first: {writes:?}") };
        assert_eq!(audit.kind, AuditKind::CronMissed);
        assert_eq!(
            audit.detail,
            json!({
                "key": "UTC|0 0 8 * * *",
                "expression": "0 0 8 * * *",
                "timezone": "UTC",
                "sops": ["s"],
                "missed": 4,
                "count_is_exact": true,
                "first": "2024-01-01T08:00:00Z",
                "last": "2024-01-04T08:00:00Z",
                "older_than": "2024-01-04T11:00:00Z",
            })
        );
        assert_eq!(writes[1], Write::CronChecked { key: k.key.clone(), at: now });
    }

    #[test]
    fn a_key_starts_at_once_then_wakes_at_each_fire_point() {
        let mut state = KeyState::new(key("* * * * * *", None));
        let t0 = utc(2024, 1, 1, 0, 0, 0) + ms(100);
        assert!(state.is_due(t0));
        assert_eq!(state.wake_at(t0), Some(t0));
        let plan = state.plan(None, t0, secs(3600));
        state.committed(&plan);
        assert_eq!(state.last_check(), Some(utc(2024, 1, 1, 0, 0, 0)));
        let first = utc(2024, 1, 1, 0, 0, 1);
        assert_eq!(state.wake_at(t0), Some(first));
        assert!(!state.is_due(first - ms(1)));
        assert!(state.is_due(first));
        let plan = state.plan(None, first + ms(2), secs(3600));
        assert_eq!(plan.fire.map(|f| (f.count, f.last)), Some((1, first)));
        state.committed(&plan);
        assert_eq!(state.wake_at(first), Some(first + secs(1)));
    }

    #[test]
    fn a_failed_commit_keeps_the_window_and_backs_off() {
        let mut state = KeyState::new(key("* * * * * *", None));
        let t0 = utc(2024, 1, 1, 0, 0, 0);
        state.committed(&state.plan(None, t0, secs(3600)));
        let t1 = t0 + secs(1);
        state.failed(t1, "store: disk full".into());
        assert_eq!(state.error(), Some("store: disk full"));
        assert_eq!(state.last_check(), Some(t0), "last_check must not advance");
        assert!(!state.is_due(t1 + ms(999)));
        assert_eq!(state.wake_at(t1), Some(t1 + secs(1)));
        let mut retry_delays = Vec::new();
        let mut now = t1;
        for _ in 0..7 {
            state.failed(now, "store: disk full".into());
            let at = state.wake_at(now).unwrap();
            retry_delays.push((at - now).num_seconds());
            now = at;
        }
        assert_eq!(retry_delays, vec![2, 4, 8, 16, 30, 30, 30]);
        // The retry covers every point since the last commit, once.
        assert!(state.is_due(now));
        let plan = state.plan(None, now, secs(3600));
        assert_eq!(plan.fire.map(|f| f.count), Some((now - t0).num_seconds() as u64));
        state.committed(&plan);
        assert_eq!(state.error(), None);
        assert_eq!(state.wake_at(now), Some(now + secs(1)));
    }

    #[test]
    fn a_plan_carries_the_fire_point_after_it() {
        let k = key("0 0 8 * * *", None);
        let now = utc(2024, 1, 1, 9, 0, 0) + ms(300);
        let tomorrow = Some(utc(2024, 1, 2, 8, 0, 0));
        assert_eq!(plan_start(&k.schedule, None, now, secs(3600)).next_fire, tomorrow, "first start");
        let caught_up = plan_start(&k.schedule, Some(utc(2024, 1, 1, 7, 0, 0)), now, secs(7200));
        assert_eq!((caught_up.fire.map(|f| f.last), caught_up.next_fire), (Some(utc(2024, 1, 1, 8, 0, 0)), tomorrow));
        let nothing = plan_tick(&k.schedule, utc(2024, 1, 1, 9, 0, 0), now);
        assert_eq!((nothing.persist, nothing.next_fire), (false, tomorrow));
        let fired = plan_tick(&k.schedule, utc(2024, 1, 2, 7, 0, 0), utc(2024, 1, 2, 8, 0, 0) + ms(5));
        assert_eq!(fired.next_fire, Some(utc(2024, 1, 3, 8, 0, 0)));
        // A plan behind the key's last check (planned before a later commit)
        // moves neither the check nor the wake-up.
        let mut state = KeyState::new(k.clone());
        state.committed(&fired);
        state.committed(&nothing);
        assert_eq!(state.last_check(), Some(utc(2024, 1, 2, 8, 0, 0)));
        assert_eq!(state.wake_at(now), Some(utc(2024, 1, 3, 8, 0, 0)));
    }

    #[test]
    fn a_clock_that_goes_back_fires_nothing_until_it_passes_last_check() {
        let mut state = KeyState::new(key("* * * * * *", None));
        let t0 = utc(2024, 1, 1, 12, 0, 0);
        state.committed(&state.plan(None, t0, secs(3600)));
        let back = t0 - secs(600);
        assert!(!state.is_due(back));
        let plan = state.plan(None, back, secs(3600));
        assert_eq!((plan.fire, plan.persist), (None, false));
        state.committed(&plan);
        assert_eq!(state.last_check(), Some(t0), "never moves back");
        assert_eq!(state.wake_at(back), Some(t0 + secs(1)));
        // A start-up plan with a stored last_check ahead of the clock keeps it too.
        let mut fresh = KeyState::new(state.key.clone());
        let plan = fresh.plan(Some(t0), back, secs(3600));
        assert_eq!((plan.fire, plan.check_to), (None, t0));
        fresh.committed(&plan);
        assert_eq!(fresh.last_check(), Some(t0));
    }

    #[test]
    fn the_task_sleeps_until_the_earliest_wake_up() {
        let now = utc(2024, 1, 1, 0, 0, 0) + ms(400);
        let mut every_second = KeyState::new(key("* * * * * *", None));
        let mut daily = KeyState::new(key("0 0 8 * * *", None));
        // Not started yet: wake at once.
        assert_eq!(sleep_for(&[every_second.clone(), daily.clone()], now), Some(StdDuration::ZERO));
        every_second.committed(&every_second.plan(None, now, secs(3600)));
        daily.committed(&daily.plan(None, now, secs(3600)));
        assert_eq!(sleep_for(&[every_second, daily.clone()], now), Some(StdDuration::from_millis(600)));
        // A far fire point is slept to in one go: no polling on the way.
        assert_eq!(sleep_for(&[daily], now), Some(StdDuration::from_millis(8 * 3600 * 1000 - 400)));
        // A schedule with no future fire point sleeps until shutdown.
        let mut past = KeyState::new(key("0 0 0 1 1 * 2020", None));
        past.committed(&past.plan(None, now, secs(3600)));
        assert_eq!(past.wake_at(now), None);
        assert_eq!(sleep_for(&[past], now), None);
    }

    /// The real task, in process, over a SQLite store that can be told to
    /// refuse: a refused fire turns the source Down and loses nothing.
    mod task {
        use std::sync::Arc;

        use tokio_util::sync::CancellationToken;

        use super::*;
        use crate::dispatch::Dispatcher;
        use crate::sources::SourcesHealth;
        use crate::store::faults::FaultyStore;
        use crate::store::sqlite::SqliteStore;
        use crate::store::RunQuery;
        use crate::test_support::eventually;

        /// `(scheduled_at, fires_in_window)` of every run, oldest first.
        async fn fires(store: &FaultyStore) -> Vec<(DateTime<Utc>, i64)> {
            let runs = store.inner().list_runs(&RunQuery::default()).await.unwrap();
            let mut fires: Vec<_> = runs
                .iter()
                .map(|r| {
                    let at = DateTime::parse_from_rfc3339(r.payload["scheduled_at"].as_str().unwrap()).unwrap();
                    (at.to_utc(), r.payload["fires_in_window"].as_i64().unwrap())
                })
                .collect();
            fires.sort();
            fires
        }

        #[tokio::test]
        async fn a_refused_fire_is_retried_with_its_window_and_the_source_reports_down_meanwhile() {
            let dir = tempfile::tempdir().unwrap();
            let config_path = dir.path().join("config.toml");
            std::fs::write(&config_path, "[store]\nurl = \"sqlite://fanin.db\"\n").unwrap();
            let config = Arc::new(crate::config::load(&config_path).unwrap());
            let inner = SqliteStore::open(&dir.path().join("fanin.db")).unwrap();
            let store = Arc::new(FaultyStore::new(Arc::new(inner)));
            let mut sop = crate::sop::test_support::sop_with(
                "tick",
                vec![TriggerSpec::Cron(Box::new(parse_schedule("* * * * * *", None).unwrap()))],
            );
            sop.max_concurrent = 100_000;
            let settings = crate::daemon::dispatch_settings(&config);
            let dispatcher = Arc::new(Dispatcher::new(Catalog::new(vec![sop]), store.clone(), settings).await.unwrap());
            let health = Arc::new(SourcesHealth::default());
            let ctx = SourceContext {
                config,
                dispatcher,
                store: store.clone(),
                health: health.clone(),
                shutdown: CancellationToken::new(),
                cluster: None,
            };
            let task = start(&ctx).unwrap().expect("a cron trigger starts the scheduler");
            let status = || health.snapshot().get(SOURCE).map(|s| (s.status, s.detail.clone()));

            eventually("a first fire", || async { !fires(&store).await.is_empty() }).await;
            assert_eq!(status(), Some((Status::Up, None)));

            store.set_down(true);
            eventually("the source to report the store", || async {
                matches!(status(), Some((Status::Down, Some(detail))) if detail.contains("disk full"))
            })
            .await;
            let (refused_from, refusals) = (fires(&store).await.len(), store.refused());
            // Part of what is tested: the store stays down across fire
            // points, so the retry's window must take in more than one.
            tokio::time::sleep(StdDuration::from_millis(2500)).await;
            // And the scheduler did try again meanwhile, and was refused.
            eventually("a refused retry", || async { store.refused() > refusals }).await;
            assert_eq!(fires(&store).await.len(), refused_from, "nothing is written while the store refuses");

            store.set_down(false);
            eventually("a fire after the store came back", || async {
                fires(&store).await.len() > refused_from && status() == Some((Status::Up, None))
            })
            .await;
            let all = fires(&store).await;
            let retried = all[refused_from];
            assert!(retried.1 >= 2, "the retry covers the refused window: {all:?}");
            for pair in all.windows(2) {
                assert_eq!((pair[1].0 - pair[0].0).num_seconds(), pair[1].1, "fires tile the timeline: {all:?}");
            }

            ctx.shutdown.cancel();
            task.await.unwrap();
        }
    }

    #[test]
    fn a_reload_keeps_the_windows_of_keys_that_stay() {
        let now = utc(2024, 1, 1, 0, 0, 0);
        let mut stays = KeyState::new(key("0 0 8 * * *", None));
        stays.committed(&stays.plan(None, now, secs(3600)));
        let gone = KeyState::new(key("0 0 9 * * *", None));
        let states = rekey(vec![stays, gone], vec![key("0 0 8 * * *", None), key("*/5 * * * * *", None)]);
        let names: Vec<&str> = states.iter().map(|s| s.key.schedule.expression()).collect();
        assert_eq!(names, ["0 0 8 * * *", "*/5 * * * * *"]);
        assert_eq!(states[0].last_check(), Some(now), "an existing key goes on from its last check");
        assert_eq!(states[1].last_check(), None, "a new key starts like at start-up");
    }
}
