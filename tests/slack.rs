//! The Slack source through a live daemon: requests signed as Slack signs
//! them (`common/slack.rs`) start runs, Slack's retries start nothing new,
//! `url_verification` is answered, and whatever is not proven Slack's is
//! refused with nothing stored.

mod common;

use common::slack::{message_callback, signed, signed_at};
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "slack-signing-secret-for-tests";

fn channel_sop(name: &str, channel: &str, alias: &str, condition: &str) -> String {
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n\n\
         [[triggers]]\ntype = \"channel\"\nchannel = \"{channel}\"\nalias = \"{alias}\"\n{condition}\n"
    )
}

fn setup() -> Setup {
    Setup::new(
        "",
        &format!("[channels_config.slack.team]\nsigning_secret = \"{SECRET}\"\n\n[channels_config.slack.off]\nenabled = false\nsigning_secret = \"{SECRET}\"\n"),
    )
    .sop("deploy", &channel_sop("deploy", "slack", "team", "condition = '$.text == \"deploy\"'"))
}

async fn post(d: &Daemon, path: &str, body: &str, headers: &[(String, String)]) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, body, _) = d.post(path, None, body, &headers).await;
    (status, body)
}

async fn runs(d: &Daemon) -> Vec<Value> {
    let (status, body) = d.get("/admin/runs?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().unwrap().clone()
}

async fn audit(d: &Daemon) -> Vec<Value> {
    let (status, body) = d.get("/admin/audit?limit=10000").await;
    assert_eq!(status, 200, "{body}");
    body["records"].as_array().unwrap().clone()
}

const EVENTS: &str = "/channels/slack/team/events";

#[tokio::test]
async fn a_signed_event_starts_a_run_once_however_often_slack_retries_it() {
    let setup = setup();
    let d = setup.start();
    let body = message_callback("Ev0001", "deploy");
    let (status, reply) = post(&d, EVENTS, &body, &signed(SECRET, &body)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "accepted", "{reply}");
    let run_id = reply["runs"][0]["run_id"].as_str().expect("a run started").to_string();

    // Slack retries what it thinks went unanswered: same event_id, a new
    // signature, X-Slack-Retry-Num.
    for retry in ["1", "2"] {
        let mut headers = signed(SECRET, &body);
        headers.push(("x-slack-retry-num".into(), retry.into()));
        headers.push(("x-slack-retry-reason".into(), "http_timeout".into()));
        let (status, reply) = post(&d, EVENTS, &body, &headers).await;
        assert_eq!((status, reply["status"].as_str()), (200, Some("duplicate")), "{reply}");
    }
    // The condition reads the event: another text starts nothing.
    let other = message_callback("Ev0002", "hello");
    let (status, reply) = post(&d, EVENTS, &other, &signed(SECRET, &other)).await;
    assert_eq!((status, reply["runs"].as_array().map(Vec::len)), (200, Some(0)), "{reply}");

    let runs = runs(&d).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (status, run) = d.get(&format!("/admin/runs/{run_id}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["source"], "slack", "{run}");
    assert_eq!(run["topic"], "slack/team", "{run}");
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["payload"], sent["event"], "the payload is the event as Slack sent it");

    let (status, ready) = d.get("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["sources"]["slack:team"]["status"], "up", "{ready}");
    assert!(ready["sources"]["slack:team"]["last_event_at"].is_string(), "{ready}");
    assert!(ready["sources"].get("slack:off").is_none(), "a disabled instance is not a source: {ready}");
}

#[tokio::test]
async fn url_verification_answers_its_challenge() {
    let setup = setup();
    let d = setup.start();
    let body = json!({"token": "unused", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification"})
    .to_string();
    let (status, reply) = post(&d, EVENTS, &body, &signed(SECRET, &body)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}));

    // Any other type is acknowledged and starts nothing.
    let body =
        json!({"type": "app_rate_limited", "team_id": "T0001", "minute_rate_limited": 1_700_000_000}).to_string();
    let (status, reply) = post(&d, EVENTS, &body, &signed(SECRET, &body)).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("ignored")), "{reply}");
    assert!(runs(&d).await.is_empty());
}

#[tokio::test]
async fn what_slack_did_not_sign_is_refused_and_leaves_nothing() {
    let setup = setup();
    let d = setup.start();
    let body = message_callback("Ev0003", "deploy");
    let now = chrono::Utc::now().timestamp();
    let only = |name: &str| signed(SECRET, &body).into_iter().filter(|(k, _)| k == name).collect::<Vec<_>>();
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("no headers", vec![]),
        ("no signature", only("x-slack-request-timestamp")),
        ("no timestamp", only("x-slack-signature")),
        ("another secret", signed("not the secret", &body)),
        ("an old timestamp", signed_at(SECRET, now - 301, &body)),
        ("a timestamp ahead", signed_at(SECRET, now + 301, &body)),
        ("another body", signed(SECRET, &message_callback("Ev0003", "rollback"))),
    ];
    for (what, headers) in &cases {
        let (status, reply) = post(&d, EVENTS, &body, headers).await;
        assert_eq!((status, reply.clone()), (401, json!({"error": "unauthorized"})), "{what}");
    }
    for alias in ["nobody", "off"] {
        let path = format!("/channels/slack/{alias}/events");
        let (status, reply) = post(&d, &path, &body, &signed(SECRET, &body)).await;
        assert_eq!((status, reply["error"].as_str()), (404, Some("unknown_channel")), "{alias}: {reply}");
    }
    assert!(runs(&d).await.is_empty());
    assert!(audit(&d).await.is_empty(), "nothing is stored of a refused request");
    let (_, page) = d.get("/metrics").await;
    let refused: f64 = page
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("fanin_source_requests_refused_total") && l.contains("slack:team"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(refused, cases.len() as f64, "{page}");

    // The same event, signed, is then accepted: nothing was claimed by the
    // refusals.
    let (status, reply) = post(&d, EVENTS, &body, &signed(SECRET, &body)).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("accepted")), "{reply}");
    assert_eq!(runs(&d).await.len(), 1);
}

#[tokio::test]
async fn an_event_the_store_cannot_keep_is_answered_503_for_slack_to_retry() {
    let setup = setup();
    let d = setup.start();
    let body = message_callback("Ev0004", "deploy");
    // Another process holds the store's write lock: the dispatch cannot commit.
    let other = rusqlite::Connection::open(setup.db_path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, reply) = post(&d, EVENTS, &body, &signed(SECRET, &body)).await;
    assert_eq!((status, reply["error"].as_str()), (503, Some("store_unavailable")), "{reply}");
    other.execute_batch("ROLLBACK").unwrap();

    // Slack's retry is then the first the store keeps.
    let mut headers = signed(SECRET, &body);
    headers.push(("x-slack-retry-num".into(), "1".into()));
    let (status, reply) = post(&d, EVENTS, &body, &headers).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("accepted")), "{reply}");
    assert_eq!(runs(&d).await.len(), 1);
}

#[test]
fn an_unset_signing_secret_variable_stops_the_daemon_naming_the_key() {
    let setup = Setup::new("", "[channels_config.slack.team]\nsigning_secret_env = \"FANIN_TEST_SLACK_UNSET\"\n");
    let stderr = setup.daemon_refusal_without("FANIN_TEST_SLACK_UNSET");
    assert!(
        stderr.contains("channels_config.slack.team.signing_secret") && stderr.contains("FANIN_TEST_SLACK_UNSET"),
        "{stderr}"
    );
}

#[test]
fn explain_reads_a_slack_event() {
    let setup = setup();
    let explain = |text: &str| -> Value {
        let payload = json!({"type": "message", "text": text, "user": "U0001"}).to_string();
        setup.cli_json(&["explain", "--source", "slack", "--topic", "slack/team", "--payload", &payload, "--json"])
    };
    let hit = explain("deploy");
    assert_eq!(hit["matches"][0]["sop"], "deploy", "{hit}");
    let miss = explain("hello");
    assert_eq!(miss["matches"], json!([]), "{miss}");
    assert_eq!(miss["near_misses"][0]["sop"], "deploy", "{miss}");
}
