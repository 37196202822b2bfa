//! The cron scheduler through the real daemon: an every-second expression
//! starts one run per fire, a restart inside the catch-up window fires once
//! for everything it missed, fires older than the window are audited, and
//! three replicas on one PostgreSQL store fire each point once, going on
//! without a gap when the replica that fires dies.
//!
//! No timing assertions: the tests wait (with generous deadlines) for runs to
//! exist, then check that the runs' windows tile the timeline — each run's
//! `scheduled_at` is a whole second and lies exactly `fires_in_window`
//! seconds after the previous one, so no fire point is lost or repeated.

mod common;

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use common::replicas::Replicas;
use common::{eventually, Daemon, Setup};
use serde_json::Value;

const EVERY_SECOND: &str = "* * * * * *";

fn cron_sop(name: &str, expression: &str) -> String {
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 100000\n\n\
         [[triggers]]\ntype = \"cron\"\nexpression = \"{expression}\"\n"
    )
}

/// What a cron run's payload says about its window.
#[derive(Debug, Clone)]
struct Fire {
    scheduled_at: DateTime<Utc>,
    fires_in_window: i64,
    /// When the run was created (the event's arrival).
    started_at: DateTime<Utc>,
}

/// Every cron run of the daemon, oldest fire first.
async fn fires(d: &Daemon) -> Vec<Fire> {
    let (status, list) = d.get("/admin/runs?limit=10000").await;
    assert_eq!(status, 200, "{list}");
    let mut fires = Vec::new();
    for summary in list["runs"].as_array().unwrap() {
        assert_eq!(summary["source"], "cron", "{summary}");
        let run_id = summary["run_id"].as_str().unwrap();
        let (status, run) = d.get(&format!("/admin/runs/{run_id}")).await;
        assert_eq!(status, 200, "{run}");
        let payload = &run["payload"];
        assert_eq!(payload["expression"], EVERY_SECOND, "{run}");
        assert_eq!(payload["timezone"], "UTC", "{run}");
        assert_eq!(run["topic"], EVERY_SECOND, "{run}");
        let scheduled_at = payload["scheduled_at"].as_str().expect("scheduled_at is a string");
        let scheduled_at = DateTime::parse_from_rfc3339(scheduled_at).expect("scheduled_at is RFC 3339").to_utc();
        let fires_in_window = payload["fires_in_window"].as_i64().expect("fires_in_window is a number");
        let started_at = run["started_at"].as_str().expect("started_at is a string");
        let started_at = DateTime::parse_from_rfc3339(started_at).expect("started_at is RFC 3339").to_utc();
        fires.push(Fire { scheduled_at, fires_in_window, started_at });
    }
    fires.sort_by_key(|f| f.scheduled_at);
    fires
}

/// Waits until `enough` holds for the daemon's fires, and returns them.
async fn wait_for_fires(d: &Daemon, what: &str, enough: impl Fn(&[Fire]) -> bool) -> Vec<Fire> {
    eventually(what, async || {
        let fires = fires(d).await;
        if enough(&fires) {
            Ok(fires)
        } else {
            Err(format!("fires so far: {fires:?}"))
        }
    })
    .await
}

/// Each fire after the first covers exactly the seconds since the one before.
fn assert_fires_tile_the_timeline(fires: &[Fire]) {
    for f in fires {
        assert_eq!(f.scheduled_at.nanosecond(), 0, "scheduled_at is a whole second: {f:?}");
        assert!(f.fires_in_window >= 1, "{f:?}");
    }
    for pair in fires.windows(2) {
        let gap = (pair[1].scheduled_at - pair[0].scheduled_at).num_seconds();
        assert_eq!(gap, pair[1].fires_in_window, "consecutive fires must tile the timeline: {pair:?}");
    }
}

#[tokio::test]
async fn an_every_second_expression_starts_one_run_per_second() {
    let setup = Setup::new("", "").sop("tick", &cron_sop("tick", EVERY_SECOND));
    let d = setup.start();
    let fires = wait_for_fires(&d, "three cron runs", |f| f.len() >= 3).await;
    assert_fires_tile_the_timeline(&fires);
    let mut seconds: Vec<_> = fires.iter().map(|f| f.scheduled_at).collect();
    seconds.dedup();
    assert_eq!(seconds.len(), fires.len(), "one run per fire point: {fires:?}");
    // /ready reports the cron source; /metrics shows the measured lateness.
    let (_, ready) = d.get("/ready").await;
    assert!(ready.to_string().contains("cron"), "{ready}");
    let (status, metrics) = d.get("/metrics").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(metrics.contains("fanin_cron_lateness_seconds"), "{metrics}");
    assert!(metrics.contains("fanin_source_up{source=\"cron\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_restart_inside_the_catchup_window_fires_once_for_the_missed_points() {
    let setup = Setup::new("", "").sop("tick", &cron_sop("tick", EVERY_SECOND));
    let mut d = setup.start();
    wait_for_fires(&d, "a first cron run", |f| !f.is_empty()).await;
    d.stop();
    // What is tested is time passing with no daemon: fire points go by
    // unfired, for the restart to catch up (at least two of them).
    std::thread::sleep(Duration::from_millis(3500));

    let restarted_at = Utc::now();
    let d = setup.start();
    let all = wait_for_fires(&d, "a run after the restart", |f| f.iter().any(|f| f.started_at >= restarted_at)).await;
    let catch_up = all.iter().find(|f| f.started_at >= restarted_at).unwrap();
    assert!(catch_up.fires_in_window >= 2, "one catch-up dispatch for every missed point: {catch_up:?}");
    // Nothing lost or repeated across the restart.
    assert_fires_tile_the_timeline(&all);
}

#[tokio::test]
async fn fires_older_than_the_catchup_window_are_audited_as_missed() {
    let setup = Setup::new("", "[sop]\ncron_catchup_window_secs = 1").sop("tick", &cron_sop("tick", EVERY_SECOND));
    let mut d = setup.start();
    wait_for_fires(&d, "a first cron run", |f| !f.is_empty()).await;
    d.stop();
    // What is tested is time passing with no daemon: fire points go by
    // unfired, more of them than the one-second catch-up window takes back.
    std::thread::sleep(Duration::from_millis(4500));

    let restarted_at = Utc::now();
    let d = setup.start();
    let all = wait_for_fires(&d, "a run after the restart", |f| f.iter().any(|f| f.started_at >= restarted_at)).await;
    let last_before = all.iter().rev().find(|f| f.started_at < restarted_at).unwrap().scheduled_at;
    let catch_up = all.iter().find(|f| f.started_at >= restarted_at).unwrap().clone();
    assert!(catch_up.fires_in_window <= 2, "only the last second's points are caught up: {catch_up:?}");

    let (status, audit) = d.get("/admin/audit").await;
    assert_eq!(status, 200);
    let missed: Vec<&Value> =
        audit["records"].as_array().unwrap().iter().filter(|r| r["kind"] == "cron_missed").collect();
    assert_eq!(missed.len(), 1, "one missed record for the key: {missed:?}");
    let detail = &missed[0]["detail"];
    assert_eq!(detail["key"], "UTC|* * * * * *", "{detail}");
    assert!(detail["missed"].as_i64().unwrap() >= 2, "{detail}");
    assert_eq!(detail["sops"], serde_json::json!(["tick"]), "{detail}");
    // The missed points sit exactly between the last fire before the stop and
    // the catch-up's window.
    let instant = |v: &Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().to_utc();
    assert_eq!(instant(&detail["first"]), last_before + chrono::Duration::seconds(1), "{detail}");
    let catch_up_from = catch_up.scheduled_at - chrono::Duration::seconds(catch_up.fires_in_window);
    assert_eq!(instant(&detail["last"]), catch_up_from, "{detail}");
    let missed_count = (instant(&detail["last"]) - instant(&detail["first"])).num_seconds() + 1;
    assert_eq!(detail["missed"].as_i64().unwrap(), missed_count, "{detail}");
}

#[tokio::test]
async fn three_replicas_fire_each_point_once_and_go_on_when_the_firing_one_dies() {
    let sop = cron_sop("tick", EVERY_SECOND);
    let test = "three_replicas_fire_each_point_once";
    let Some(mut replicas) = Replicas::start(test, 3, "", "", &[("tick", &sop)]).await else { return };
    let fires = wait_for_fires(&replicas.daemons[0], "five cron runs", |f| f.len() >= 5).await;
    // Three schedulers firing would give three runs per point.
    assert_fires_tile_the_timeline(&fires);
    let owner = replicas.holder("cron").await;
    replicas.daemons[owner].kill();
    let killed_at = Utc::now();
    let survivor = &replicas.daemons[(owner + 1) % 3];
    let all = wait_for_fires(survivor, "three runs after the firing replica died", |f| {
        f.iter().filter(|f| f.started_at > killed_at).count() >= 3
    })
    .await;
    assert_fires_tile_the_timeline(&all);
}
