//! The Drive source through a live daemon and a double of the Drive v3
//! changes API (see `common/drive.rs`): changes start runs filtered by
//! change kind, folder and condition, pages are followed, a restart of
//! fanin neither repeats nor skips a change, nor does Drive going away and
//! coming back, a refused token shows in `/ready` until Drive takes it, and
//! a 429's `Retry-After` is honoured; with replicas (PostgreSQL) one of
//! them follows the feed at a time.
//! Every wait is for an observable state, up to a generous deadline.

mod common;

use std::collections::BTreeSet;

use common::drive::Drive;
use common::replicas::Replicas;
use common::*;
use serde_json::Value;

const TOKEN: &str = "ya29.test-token";

fn drive_block(drive: &Drive, extra: &str) -> String {
    format!(
        "[channels_config.google_drive.shared]\napi_base_url = \"{}\"\npoll_interval_secs = 1\n{extra}\n",
        drive.base_url
    )
}

fn drive_sop(name: &str, trigger: &str) -> String {
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n\n\
         [[triggers]]\ntype = \"drive\"\nalias = \"shared\"\n{trigger}\n"
    )
}

fn feed(body: &Value) -> &Value {
    &body["sources"]["google_drive:shared"]
}

async fn wait_up(d: &Daemon) {
    d.wait_polling("google_drive:shared").await;
}

/// Waits until `sop` has `count` runs; returns their payloads, oldest first.
async fn wait_payloads(d: &Daemon, sop: &str, count: usize) -> Vec<Value> {
    let runs = d.wait_runs_of(sop, count).await;
    let mut payloads = Vec::new();
    for summary in runs.iter().rev() {
        payloads.push(d.run(summary["run_id"].as_str().unwrap()).await["payload"].clone());
    }
    payloads
}

fn file_ids(payloads: &[Value]) -> BTreeSet<String> {
    payloads.iter().map(|p| p["file"]["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn changes_start_runs_by_kind_and_condition() {
    let drive = Drive::start(TOKEN, 100);
    drive.create("before", "old.pdf", "application/pdf", &["F1"]);
    let setup = Setup::new("", &drive_block(&drive, &format!("token = \"{TOKEN}\"")))
        .sop(
            "new-pdfs",
            &drive_sop("new-pdfs", "events = [\"created\"]\ncondition = '$.file.mimeType == \"application/pdf\"'"),
        )
        .sop("trashed", &drive_sop("trashed", "events = [\"trashed\", \"removed\"]"));
    let d = setup.start();
    wait_up(&d).await;

    drive.create("f1", "report.pdf", "application/pdf", &["F1"]);
    drive.create("f2", "notes.txt", "text/plain", &["F1"]);
    drive.modify("f1", false);
    drive.modify("f1", true);
    drive.remove("f2");
    let trashed = wait_payloads(&d, "trashed", 2).await;
    assert_eq!(
        trashed.iter().map(|p| p["change"].as_str().unwrap()).collect::<Vec<_>>(),
        ["trashed", "removed"],
        "{trashed:?}"
    );
    let pdfs = wait_payloads(&d, "new-pdfs", 1).await;
    assert_eq!(pdfs.len(), 1, "only the new PDF, not the change made before the first start: {pdfs:?}");
    let pdf = &pdfs[0];
    assert_eq!(
        (&pdf["change"], &pdf["file"]["name"], &pdf["file"]["parents"]),
        (&"created".into(), &"report.pdf".into(), &serde_json::json!(["F1"]))
    );
    assert!(pdf["file"]["modifiedTime"].is_string() && pdf["time"].is_string(), "{pdf}");

    let run = d.run(d.runs_of("new-pdfs").await[0]["run_id"].as_str().unwrap()).await;
    assert_eq!((&run["source"], &run["topic"]), (&"google_drive".into(), &"google_drive/shared".into()), "{run}");
}

#[tokio::test]
async fn pages_are_followed_and_a_restart_neither_repeats_nor_skips() {
    let drive = Drive::start(TOKEN, 2);
    let setup = Setup::new("", &drive_block(&drive, "token_env = \"FANIN_TEST_DRIVE_TOKEN\""))
        .sop("all", &drive_sop("all", ""));
    let start = || {
        setup.start_with(|command| {
            command.env("FANIN_TEST_DRIVE_TOKEN", TOKEN);
        })
    };
    let mut d = start();
    wait_up(&d).await;
    for i in 0..3 {
        drive.create(&format!("a{i}"), "a.txt", "text/plain", &[]);
    }
    wait_payloads(&d, "all", 3).await;
    d.stop();

    for i in 0..5 {
        drive.create(&format!("b{i}"), "b.txt", "text/plain", &[]);
    }
    let d = start();
    let payloads = wait_payloads(&d, "all", 8).await;
    let expected: BTreeSet<String> = (0..3).map(|i| format!("a{i}")).chain((0..5).map(|i| format!("b{i}"))).collect();
    assert_eq!(file_ids(&payloads), expected);
    // One more poll after the last page: still eight runs.
    let polled = feed(&d.get("/ready").await.1)["last_poll_at"].clone();
    d.wait_ready("a later poll", |_, body| feed(body)["last_poll_at"] != polled).await;
    assert_eq!(d.runs_of("all").await.len(), 8, "a change started twice");
    let series = |name: &str| format!("{name}{{source=\"google_drive:shared\"}}");
    assert_eq!(d.metric(&series("fanin_source_events_total")).await, Some(5.0), "events since the restart");
    assert_eq!(d.metric(&series("fanin_source_up")).await, Some(1.0));
    assert!(d.metric(&series("fanin_source_last_poll_age_seconds")).await.is_some());
    assert!(
        drive.requests().iter().filter(|r| r.path == "/changes/startPageToken").count() == 1,
        "the cursor was kept"
    );
}

#[tokio::test]
async fn drive_going_away_shows_in_ready_and_nothing_is_lost_when_it_is_back() {
    let mut drive = Drive::start(TOKEN, 100);
    let setup = Setup::new("", &drive_block(&drive, &format!("token = \"{TOKEN}\""))).sop("all", &drive_sop("all", ""));
    let d = setup.start();
    wait_up(&d).await;
    drive.create("before", "a.txt", "text/plain", &[]);
    wait_payloads(&d, "all", 1).await;

    drive.stop();
    let (status, body) = d.wait_ready("google_drive:shared down", |_, body| feed(body)["status"] == "down").await;
    assert_eq!(status, 503, "{body}");
    drive.create("while-away", "b.txt", "text/plain", &[]);
    drive.resume();
    let payloads = wait_payloads(&d, "all", 2).await;
    assert_eq!(file_ids(&payloads), BTreeSet::from(["before".to_string(), "while-away".to_string()]));
    wait_up(&d).await;
    assert_eq!(d.runs_of("all").await.len(), 2, "a change started twice");
}

#[tokio::test]
async fn a_refused_token_shows_in_ready_until_drive_takes_it() {
    let drive = Drive::start("the-right-token", 100);
    let setup = Setup::new("", &drive_block(&drive, "token = \"a-stale-token\"")).sop("all", &drive_sop("all", ""));
    let d = setup.start();
    let (status, body) = d.wait_ready("google_drive:shared down", |_, body| feed(body)["status"] == "down").await;
    assert_eq!(status, 503, "{body}");
    let detail = feed(&body)["detail"].as_str().unwrap();
    assert!(detail.contains("401") && detail.contains("invalid authentication credentials"), "{detail}");
    assert!(!body.to_string().contains("a-stale-token"), "the token shows: {body}");

    drive.accept_token("a-stale-token");
    wait_up(&d).await;
    drive.create("f1", "a.txt", "text/plain", &[]);
    wait_payloads(&d, "all", 1).await;
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_retry_after() {
    let drive = Drive::start(TOKEN, 100);
    let setup = Setup::new("", &drive_block(&drive, &format!("token = \"{TOKEN}\""))).sop("all", &drive_sop("all", ""));
    let d = setup.start();
    wait_up(&d).await;
    drive.fail_next(429, Some(2));
    let (_, body) = d.wait_ready("google_drive:shared down", |_, body| feed(body)["status"] == "down").await;
    assert!(feed(&body)["detail"].as_str().unwrap().contains("429"), "{body}");
    wait_up(&d).await;
    let requests = drive.requests();
    let refused = requests.iter().position(|r| r.status == 429).expect("the 429 was answered");
    let next = &requests[refused + 1];
    let waited = next.at - requests[refused].at;
    assert!(waited >= std::time::Duration::from_secs(2), "asked again after {waited:?}, before Retry-After");
}

#[tokio::test]
async fn an_instance_folder_filters_what_is_dispatched() {
    let drive = Drive::start(TOKEN, 100);
    let setup = Setup::new("", &drive_block(&drive, &format!("token = \"{TOKEN}\"\nfolder_id = \"F1\"")))
        .sop("all", &drive_sop("all", ""));
    let d = setup.start();
    wait_up(&d).await;
    drive.create("elsewhere", "a.txt", "text/plain", &["F2"]);
    drive.create("inside", "b.txt", "text/plain", &["F0", "F1"]);
    let payloads = wait_payloads(&d, "all", 1).await;
    // Both changes were on one page, read in order: the first was skipped.
    assert_eq!(file_ids(&payloads), BTreeSet::from(["inside".to_string()]));
    assert_eq!(d.runs_of("all").await.len(), 1);
}

const CLIENT: &str = "1234-test.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "GOCSPX-test-client-secret";
const REFRESH_TOKEN: &str = "1//0test-refresh-token";

/// A feed whose access tokens come from the refresh-token grant, its two
/// secrets in the environment as an operator keeps them.
fn granted(drive: &Drive) -> Setup {
    let grant = format!(
        "client_id = \"{CLIENT}\"\nclient_secret_env = \"FANIN_TEST_DRIVE_SECRET\"\n\
         refresh_token_env = \"FANIN_TEST_DRIVE_REFRESH\"\ntoken_url = \"{}/token\"",
        drive.base_url
    );
    Setup::new("", &drive_block(drive, &grant)).sop("all", &drive_sop("all", ""))
}

fn start_granted(setup: &Setup, refresh_token: &str) -> Daemon {
    setup.start_with(|command| {
        command.env("FANIN_TEST_DRIVE_SECRET", CLIENT_SECRET).env("FANIN_TEST_DRIVE_REFRESH", refresh_token);
    })
}

/// Access tokens that last two seconds: the feed renews each before it
/// lapses, so Drive never refuses one, and one Drive revokes early is
/// renewed at once, the call made again; every change starts its run.
#[tokio::test]
async fn a_refresh_grant_keeps_the_feed_reading_past_each_token_s_life() {
    let drive = Drive::start("", 100);
    drive.grant_to(CLIENT, CLIENT_SECRET, REFRESH_TOKEN, std::time::Duration::from_secs(2));
    let setup = granted(&drive);
    let d = start_granted(&setup, REFRESH_TOKEN);
    wait_up(&d).await;
    drive.create("f1", "one.txt", "text/plain", &[]);
    wait_payloads(&d, "all", 1).await;
    eventually("three tokens granted in turn", async || drive.granted() >= 3).await;
    drive.create("f2", "two.txt", "text/plain", &[]);
    wait_payloads(&d, "all", 2).await;
    let refused: Vec<_> = drive.requests().into_iter().filter(|r| r.status != 200).collect();
    assert!(refused.is_empty(), "every token was renewed before it lapsed: {refused:?}");

    drive.revoke_access_tokens();
    let before = drive.granted();
    drive.create("f3", "three.txt", "text/plain", &[]);
    assert_eq!(file_ids(&wait_payloads(&d, "all", 3).await).len(), 3);
    assert!(drive.granted() > before, "a new token after the refusal");
    let (status, ready) = d.get("/ready").await;
    assert_eq!((status, &feed(&ready)["status"]), (200, &"up".into()), "{ready}");
    let counted = d.metric("fanin_drive_token_grants_total").await.unwrap_or(0.0);
    assert!(counted >= 4.0 && counted <= drive.granted() as f64, "{counted} of {} granted", drive.granted());
}

/// A refresh token Google no longer takes shows the feed down with the
/// endpoint's own words, and never a secret; once the grant holds again
/// the feed reads on.
#[tokio::test]
async fn a_refused_refresh_grant_shows_in_ready_without_the_secrets() {
    let drive = Drive::start("", 100);
    drive.grant_to(CLIENT, CLIENT_SECRET, REFRESH_TOKEN, std::time::Duration::from_secs(3600));
    let setup = granted(&drive);
    let stale = "1//0a-revoked-refresh-token";
    let d = start_granted(&setup, stale);
    let (status, body) = d.wait_ready("google_drive:shared down", |_, body| feed(body)["status"] == "down").await;
    assert_eq!(status, 503, "{body}");
    let detail = feed(&body)["detail"].as_str().unwrap();
    assert!(detail.contains("invalid_grant: Token has been expired or revoked."), "{detail}");
    for secret in [stale, CLIENT_SECRET] {
        assert!(!body.to_string().contains(secret), "a secret shows: {body}");
    }
    assert_eq!(drive.granted(), 0);

    drive.grant_to(CLIENT, CLIENT_SECRET, stale, std::time::Duration::from_secs(3600));
    wait_up(&d).await;
    drive.create("f1", "a.txt", "text/plain", &[]);
    wait_payloads(&d, "all", 1).await;
}

#[test]
fn a_grant_without_its_client_secret_stops_the_daemon_naming_the_key() {
    let drive = Drive::start("", 100);
    let stderr = granted(&drive).daemon_refusal_without("FANIN_TEST_DRIVE_SECRET");
    assert!(
        stderr.contains("channels_config.google_drive.shared.client_secret")
            && stderr.contains("FANIN_TEST_DRIVE_SECRET is not set"),
        "{stderr}"
    );
}

#[test]
fn a_missing_token_variable_stops_the_daemon_naming_the_key() {
    let drive = Drive::start(TOKEN, 100);
    let setup = Setup::new("", &drive_block(&drive, "token_env = \"FANIN_TEST_DRIVE_TOKEN_UNSET\""))
        .sop("all", &drive_sop("all", ""));
    let stderr = setup.daemon_refusal_without("FANIN_TEST_DRIVE_TOKEN_UNSET");
    assert!(
        stderr.contains("channels_config.google_drive.shared.token_env")
            && stderr.contains("FANIN_TEST_DRIVE_TOKEN_UNSET"),
        "{stderr}"
    );
}

#[test]
fn explain_tells_which_drive_triggers_a_change_matches() {
    let drive = Drive::start(TOKEN, 100);
    let setup = Setup::new("", &drive_block(&drive, &format!("token = \"{TOKEN}\""))).sop(
        "new-pdfs",
        &drive_sop("new-pdfs", "events = [\"created\"]\ncondition = '$.file.mimeType == \"application/pdf\"'"),
    );
    let payload = r#"{"change": "created", "file": {"id": "f1", "mimeType": "text/plain", "parents": []}}"#;
    let out = setup.cli_json(&[
        "explain",
        "--json",
        "--source",
        "google_drive",
        "--topic",
        "google_drive/shared",
        "--payload",
        payload,
    ]);
    assert_eq!(out["matches"].as_array().unwrap().len(), 0, "{out}");
    assert!(out["near_misses"][0]["reason"].as_str().unwrap().contains("mimeType"), "{out}");
}

/// Three replicas on one store: one follows the change feed (the duty
/// `google_drive:shared`) while the others stand by; when it is killed
/// another takes the feed within the lease and reads on from the page
/// token in the store: the change made meanwhile starts its run once, and
/// no change starts twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_follow_the_feed_once_and_another_takes_over_when_the_follower_dies() {
    let drive = Drive::start(TOKEN, 100);
    let block = drive_block(&drive, &format!("token = \"{TOKEN}\""));
    let sop = drive_sop("all", "");
    let test = "three_replicas_follow_the_feed_once";
    let Some(mut replicas) = Replicas::start(test, 3, "", &block, &[("all", &sop)]).await else { return };
    let owner = replicas.holder("google_drive:shared").await;
    wait_up(&replicas.daemons[owner]).await;
    drive.create("f1", "one.txt", "text/plain", &["F1"]);
    drive.create("f2", "two.txt", "text/plain", &["F1"]);
    let seen = wait_payloads(&replicas.daemons[owner], "all", 2).await;
    assert_eq!(file_ids(&seen), BTreeSet::from(["f1".to_string(), "f2".to_string()]), "{seen:?}");

    replicas.daemons[owner].kill();
    drive.create("f3", "three.txt", "text/plain", &["F1"]);
    let survivor = &replicas.daemons[(owner + 1) % 3];
    wait_payloads(survivor, "all", 3).await;
    // A later change, once its run is there, shows none before it came twice.
    drive.create("f4", "four.txt", "text/plain", &["F1"]);
    let all = wait_payloads(survivor, "all", 4).await;
    let mut ids: Vec<&str> = all.iter().map(|p| p["file"]["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["f1", "f2", "f3", "f4"], "each change once");
}
