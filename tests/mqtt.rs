//! The MQTT source through a live daemon and a real broker (see
//! `common/mqtt.rs`: the one named by `FANIN_TEST_MQTT_URL`, or one embedded
//! in this test process). The TLS test always uses the embedded broker, which
//! also listens with TLS, the client certificate required.
//!
//! Tests share one broker and run in parallel, so each uses its own client
//! id and topic prefix. Nothing waits a fixed time for an outcome: each
//! waits, up to a generous deadline, for the state it expects.

mod common;

use common::mqtt::{broker, embedded, external_broker, publish, unique, Protocol};
use common::proxy::Proxy;
use common::*;
use rumqttc::QoS;
use serde_json::{json, Value};

// -------------------------------------------------------------- publishing --

fn text(topic: &str, payload: &str) -> (String, Vec<u8>) {
    (topic.to_string(), payload.as_bytes().to_vec())
}

// ------------------------------------------------------------ daemon setup --

fn mqtt_block(broker_url: &str, client_id: &str, topics: &[&str], extra: &str) -> String {
    let topics = topics.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", ");
    format!(
        "[channels_config.mqtt]\nbroker_url = \"{broker_url}\"\nclient_id = \"{client_id}\"\n\
         topics = [{topics}]\nqos = 1\n{extra}\n"
    )
}

fn mqtt_sop(name: &str, topic: &str, condition: Option<&str>) -> String {
    let condition = condition.map(|c| format!("condition = {c:?}\n")).unwrap_or_default();
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n\n\
         [[triggers]]\ntype = \"mqtt\"\ntopic = \"{topic}\"\n{condition}"
    )
}

async fn ready(d: &Daemon) -> (u16, Value) {
    d.get("/ready").await
}

/// Waits until `/ready` satisfies `check`, and returns its answer.
async fn wait_ready(d: &Daemon, what: &str, check: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    eventually(&format!("/ready to show {what}"), async || {
        let (status, body) = ready(d).await;
        if check(status, &body) {
            Ok((status, body))
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await
}

async fn wait_mqtt_up(d: &Daemon) {
    wait_ready(d, "mqtt up", |status, body| status == 200 && body["sources"]["mqtt"]["status"] == "up").await;
}

async fn runs_of(d: &Daemon, sop: &str) -> Vec<Value> {
    let (status, body) = d.get(&format!("/admin/runs?sop={sop}&limit=1000")).await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().cloned().unwrap_or_default()
}

/// Waits until `sop` has at least `count` runs; returns their payloads.
async fn wait_runs(d: &Daemon, sop: &str, count: usize) -> Vec<Value> {
    let runs = eventually(&format!("{count} runs of {sop}"), async || {
        let runs = runs_of(d, sop).await;
        if runs.len() >= count {
            Ok(runs)
        } else {
            Err(format!("{} runs", runs.len()))
        }
    })
    .await;
    let mut payloads = Vec::new();
    for run in &runs {
        assert_eq!(run["source"], json!("mqtt"), "{run}");
        let (status, full) = d.get(&format!("/admin/runs/{}", run["run_id"].as_str().unwrap())).await;
        assert_eq!(status, 200, "{full}");
        payloads.push(full["payload"].clone());
    }
    payloads
}

fn sorted(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by_key(|v| v.to_string());
    values
}

// ------------------------------------------------------------------ tests --

/// One test per MQTT version fanin speaks, each running `body(protocol)`.
macro_rules! in_both_protocols {
    ($body:ident: $v5:ident, $v311:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $v5() {
            $body(Protocol::V5).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $v311() {
            $body(Protocol::V311).await;
        }
    };
}

in_both_protocols!(
    messages_that_match_and_meet_the_condition_start_runs:
    messages_that_match_and_meet_the_condition_start_runs_in_mqtt_5,
    messages_that_match_and_meet_the_condition_start_runs_in_mqtt_3_1_1
);

async fn messages_that_match_and_meet_the_condition_start_runs(protocol: Protocol) {
    let (broker, publisher) = (broker(protocol).await, broker(Protocol::V311).await);
    let prefix = unique("fanin-test/match");
    let block = mqtt_block(&broker.url(), &unique("fanin-match"), &[&format!("{prefix}/#")], protocol.config_line());
    let setup = Setup::new("", &block)
        .sop("alerts", &mqtt_sop("alerts", &format!("{prefix}/sensors/+/alert"), Some("$.severity >= 2")))
        .sop("logs", &mqtt_sop("logs", &format!("{prefix}/logs/#"), None));
    let d = setup.start();
    wait_mqtt_up(&d).await;

    // 200 KB of binary, over the stored cap (64 KiB) and rumqttc's default
    // packet limit (10 KiB): dispatched, stored capped.
    let binary: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 | 0x80).collect();
    let messages = vec![
        text(&format!("{prefix}/sensors/a/alert"), r#"{"severity": 3, "id": "a"}"#),
        text(&format!("{prefix}/sensors/b/alert"), r#"{"severity": 1, "id": "low"}"#),
        text(&format!("{prefix}/sensors/c/alert"), r#"{"id": "no severity"}"#),
        text(&format!("{prefix}/sensors/d/alert"), "severity 5, as text"),
        text(&format!("{prefix}/sensors/e/other"), r#"{"severity": 9, "id": "other topic"}"#),
        text(&format!("{prefix}/sensors/f/g/alert"), r#"{"severity": 9, "id": "two levels"}"#),
        text(&format!("{prefix}/sensors/h/alert"), r#"{"severity": "2", "id": "string number"}"#),
        text(&format!("{prefix}/logs/app/1"), "plain text line"),
        text(&format!("{prefix}/logs"), r#"{"parent": "level"}"#),
        (format!("{prefix}/logs/bin"), binary),
    ];
    publish(&publisher, QoS::AtLeastOnce, &messages).await;

    let logs = wait_runs(&d, "logs", 3).await;
    let alerts = wait_runs(&d, "alerts", 2).await;
    assert_eq!(
        sorted(alerts),
        sorted(vec![json!({"severity": 3, "id": "a"}), json!({"severity": "2", "id": "string number"})])
    );
    let capped = logs.iter().find(|p| p["truncated"] == json!(true)).expect("the binary payload, capped");
    assert!(capped["bytes"].as_u64().unwrap() > 200_000, "{capped}");
    assert!(logs.contains(&json!("plain text line")), "text arrives as a JSON string: {logs:?}");
    assert!(logs.contains(&json!({"parent": "level"})), "`#` matches the parent level too: {logs:?}");
    assert_eq!(logs.len(), 3);

    // The listener survived all of that, and what did not match never ran.
    publish(&publisher, QoS::AtLeastOnce, &[text(&format!("{prefix}/sensors/z/alert"), r#"{"severity": 2}"#)]).await;
    assert_eq!(wait_runs(&d, "alerts", 3).await.len(), 3);
    assert_eq!(runs_of(&d, "logs").await.len(), 3);
    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(metrics.contains("fanin_mqtt_messages_total"), "{metrics}");
}

/// MQTT 5 tells the broker the largest packet fanin reads, so the broker
/// discards a larger message instead of sending it (over 3.1.1 it would be
/// redelivered after every reconnection): the messages after it flow on, on
/// the same connection. The discarding is the broker's part (MQTT 5
/// §3.1.2.11.4): Mosquitto does it, the embedded rumqttd does not, so this
/// runs against `FANIN_TEST_MQTT_URL` only (CI sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_fanin_reads_is_discarded_by_the_broker_in_mqtt_5() {
    if external_broker().is_none() {
        eprintln!("skipped: needs a broker that honours Maximum Packet Size (FANIN_TEST_MQTT_URL)");
        return;
    }
    let (broker, publisher) = (broker(Protocol::V5).await, broker(Protocol::V311).await);
    let prefix = unique("fanin-test/large");
    let block = mqtt_block(&broker.url(), &unique("fanin-large"), &[&format!("{prefix}/#")], "");
    let setup = Setup::new("", &block).sop("large", &mqtt_sop("large", &format!("{prefix}/#"), None));
    let d = setup.start();
    wait_mqtt_up(&d).await;

    // fanin reads at most 1 MiB with the default payload cap.
    let too_large = (format!("{prefix}/big"), vec![b'x'; (1 << 20) + 1]);
    publish(&publisher, QoS::AtLeastOnce, &[too_large, text(&format!("{prefix}/after"), r#"{"n": 1}"#)]).await;
    assert_eq!(wait_runs(&d, "large", 1).await, vec![json!({"n": 1})]);
    let (_, body) = ready(&d).await;
    assert_eq!(body["sources"]["mqtt"]["status"], json!("up"), "{body}");
    assert_eq!(body["sources"]["mqtt"]["reconnects"], json!(0), "the connection was never dropped: {body}");
    assert_eq!(runs_of(&d, "large").await.len(), 1, "the large message never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_come_back_after_the_broker_connection_does() {
    let (broker, publisher) = (broker(Protocol::V5).await, broker(Protocol::V311).await);
    let proxy = Proxy::start(&broker.host, broker.port).await;
    let prefix = unique("fanin-test/resub");
    // A clean session: the broker forgets the subscription with the
    // connection, so only a resubscription brings messages back.
    let block = mqtt_block(
        &format!("mqtt://127.0.0.1:{}", proxy.port()),
        &unique("fanin-resub"),
        &[&format!("{prefix}/+")],
        "clean_session = true",
    );
    let setup = Setup::new("", &block).sop("resub", &mqtt_sop("resub", &format!("{prefix}/+"), None));
    let d = setup.start();
    wait_mqtt_up(&d).await;
    publish(&publisher, QoS::AtLeastOnce, &[text(&format!("{prefix}/before"), r#"{"n": 1}"#)]).await;
    wait_runs(&d, "resub", 1).await;

    proxy.cut_and_refuse();
    let (status, body) = wait_ready(&d, "mqtt down", |_, b| b["sources"]["mqtt"]["status"] != "up").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["sources"]["webhook"]["status"], json!("up"), "{body}");
    assert!(body["sources"]["mqtt"]["detail"].is_string(), "the reason is shown: {body}");
    // Stay down over at least one refused retry.
    wait_ready(&d, "a retry", |_, b| b["sources"]["mqtt"]["reconnects"].as_u64() >= Some(1)).await;
    proxy.restore();

    wait_mqtt_up(&d).await;
    publish(&publisher, QoS::AtLeastOnce, &[text(&format!("{prefix}/after"), r#"{"n": 2}"#)]).await;
    let payloads = wait_runs(&d, "resub", 2).await;
    assert_eq!(sorted(payloads), vec![json!({"n": 1}), json!({"n": 2})]);
}

in_both_protocols!(
    messages_published_while_the_daemon_is_stopped_start_runs_when_it_returns:
    messages_published_while_the_daemon_is_stopped_start_runs_when_it_returns_in_mqtt_5,
    messages_published_while_the_daemon_is_stopped_start_runs_when_it_returns_in_mqtt_3_1_1
);

async fn messages_published_while_the_daemon_is_stopped_start_runs_when_it_returns(protocol: Protocol) {
    let (broker, publisher) = (broker(protocol).await, broker(Protocol::V311).await);
    let prefix = unique("fanin-test/session");
    let block = mqtt_block(&broker.url(), &unique("fanin-session"), &[&format!("{prefix}/#")], protocol.config_line());
    let setup = Setup::new("", &block).sop("session", &mqtt_sop("session", &format!("{prefix}/#"), None));
    let mut d = setup.start();
    wait_mqtt_up(&d).await;
    d.stop();

    let messages: Vec<_> = (0..5).map(|i| text(&format!("{prefix}/m"), &format!(r#"{{"i": {i}}}"#))).collect();
    publish(&publisher, QoS::AtLeastOnce, &messages).await;

    let d = setup.start();
    let payloads = wait_runs(&d, "session", 5).await;
    assert_eq!(sorted(payloads), (0..5).map(|i| json!({"i": i})).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_test_ca_and_a_client_certificate_starts_runs() {
    let broker = embedded().await;
    let prefix = unique("fanin-test/tls");
    let block = mqtt_block(
        &format!("mqtts://localhost:{}", broker.tls_port(Protocol::V5)),
        &unique("fanin-tls"),
        &[&format!("{prefix}/#")],
        "ca_file = \"ca.pem\"\nclient_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"",
    );
    let setup = Setup::new("", &block);
    for file in ["ca.pem", "client.pem", "client.key"] {
        std::fs::copy(broker.certs.join(file), setup.dir.path().join(file)).unwrap();
    }
    let setup = setup.sop("tls", &mqtt_sop("tls", &format!("{prefix}/#"), Some("$.secure == true")));
    let d = setup.start();
    wait_mqtt_up(&d).await;
    publish(&broker.plain(Protocol::V311), QoS::AtLeastOnce, &[text(&format!("{prefix}/x"), r#"{"secure": true}"#)])
        .await;
    assert_eq!(wait_runs(&d, "tls", 1).await, vec![json!({"secure": true})]);
}

#[tokio::test]
async fn without_the_test_ca_the_broker_certificate_is_refused() {
    let broker = embedded().await;
    let block = mqtt_block(
        &format!("mqtts://localhost:{}", broker.tls_port(Protocol::V5)),
        &unique("fanin-noca"),
        &["x/#"],
        "",
    );
    let setup = Setup::new("", &block);
    let d = setup.start();
    let (status, body) = wait_ready(&d, "a TLS failure", |_, b| b["sources"]["mqtt"]["detail"].is_string()).await;
    assert_eq!(status, 503);
    let detail = body["sources"]["mqtt"]["detail"].as_str().unwrap();
    assert!(detail.contains("cannot connect") && detail.to_lowercase().contains("certificate"), "{detail}");
}

/// MQTT 5 is the default; a broker that speaks only 3.1.1 (rumqttd serves
/// one version per listener) leaves the source down with the key to set.
#[tokio::test]
async fn a_broker_without_mqtt_5_is_reported_with_the_protocol_key_to_set() {
    let only_311 = embedded().await.plain(Protocol::V311);
    let setup = Setup::new("", &mqtt_block(&only_311.url(), &unique("fanin-old"), &["x/#"], ""));
    let d = setup.start();
    let (status, body) = wait_ready(&d, "a refusal", |_, b| b["sources"]["mqtt"]["detail"].is_string()).await;
    assert_eq!(status, 503);
    let detail = body["sources"]["mqtt"]["detail"].as_str().unwrap();
    assert!(detail.contains("cannot connect") && detail.contains("protocol = \"3.1.1\""), "{detail}");
}

#[test]
fn a_scheme_and_use_tls_mismatch_is_refused_by_validate_and_daemon() {
    for (url, use_tls) in [("mqtts://broker.example.com", "false"), ("mqtt://broker.example.com", "true")] {
        let setup = Setup::new("", &mqtt_block(url, "fanin-mismatch", &["a/#"], &format!("use_tls = {use_tls}")));
        for command in ["validate", "daemon"] {
            let out = setup.cli(&[command]);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(1), "{command} {url}: {err}");
            assert!(err.contains(&setup.config_path().display().to_string()), "names the file: {err}");
            assert!(err.contains("channels_config.mqtt.use_tls"), "names the key: {err}");
            assert!(err.contains("contradicts"), "says why: {err}");
        }
    }
}

#[test]
fn an_unreadable_ca_file_stops_the_daemon_naming_file_and_key() {
    let block = mqtt_block("mqtts://broker.example.com", "fanin-badca", &["a/#"], "ca_file = \"missing-ca.pem\"");
    let setup = Setup::new("", &block);
    let out = setup.cli(&["daemon"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("channels_config.mqtt.ca_file") && err.contains("missing-ca.pem"), "{err}");
}

#[tokio::test]
async fn an_unreachable_broker_leaves_webhooks_served_and_mqtt_retrying() {
    let port = free_port();
    let block = mqtt_block(&format!("mqtt://127.0.0.1:{port}"), &unique("fanin-unreachable"), &["a/#"], "");
    let setup = Setup::new("", &block).sop("hook", &webhook_sop("hook", "/sop/hook", ""));
    let d = setup.start();
    assert_eq!(d.get("/health").await.0, 200);
    let token = d.pair().await;
    let (status, body, _) = d.post("/sop/hook", Some(&token), "{}", &[]).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) =
        wait_ready(&d, "two retries", |_, b| b["sources"]["mqtt"]["reconnects"].as_u64() >= Some(2)).await;
    assert_eq!(status, 503, "{body}");
    let mqtt = &body["sources"]["mqtt"];
    assert_eq!(mqtt["status"], json!("down"), "{body}");
    assert!(mqtt["detail"].as_str().unwrap().contains("cannot connect"), "{body}");
    assert_eq!(body["sources"]["webhook"]["status"], json!("up"));
}

/// A block copied from a ZeroClaw config as its current layout writes it
/// (one table per alias, `enabled`, `use_tls`, `excluded_tools`) is the MQTT
/// source as it is: it subscribes and its messages start runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zeroclaw_mqtt_block_starts_runs_as_written() {
    let (broker, publisher) = (broker(Protocol::V5).await, broker(Protocol::V311).await);
    let prefix = unique("fanin-test/zeroclaw");
    let block = format!(
        "[channels.mqtt.default]\nenabled = true\nbroker_url = \"{}\"\nclient_id = \"{}\"\n\
         topics = [\"{prefix}/#\"]\nqos = 1\nuse_tls = false\nkeep_alive_secs = 30\n\
         excluded_tools = [\"shell\"]\n",
        broker.url(),
        unique("zeroclaw")
    );
    let setup = Setup::new("", &block).sop("alerts", &mqtt_sop("alerts", &format!("{prefix}/+/alert"), None));
    let d = setup.start();
    wait_mqtt_up(&d).await;
    publish(&publisher, QoS::AtLeastOnce, &[text(&format!("{prefix}/kitchen/alert"), r#"{"severity": 3}"#)]).await;
    assert_eq!(wait_runs(&d, "alerts", 1).await, vec![json!({"severity": 3})]);
}

in_both_protocols!(
    a_message_the_store_refused_is_redelivered_not_lost:
    a_message_the_store_refused_is_redelivered_not_lost_in_mqtt_5,
    a_message_the_store_refused_is_redelivered_not_lost_in_mqtt_3_1_1
);

/// The MQTT source in-process over a store that refuses the first commit:
/// the refused message is not acknowledged, the connection is made again,
/// and the broker's redelivery turns every message into a run.
async fn a_message_the_store_refused_is_redelivered_not_lost(protocol: Protocol) {
    use fanin::sources::health::Status;
    let (broker, publisher) = (broker(protocol).await, broker(Protocol::V311).await);
    let prefix = unique("fanin-test/refused");
    let block = mqtt_block(&broker.url(), &unique("fanin-refused"), &[&format!("{prefix}/#")], protocol.config_line());
    let setup = Setup::new("", &block).sop("refused", &mqtt_sop("refused", &format!("{prefix}/#"), None));
    let (ctx, store) = setup.faulty_sources().await;
    let task = fanin::sources::mqtt::start(&ctx).unwrap().expect("an MQTT block starts a listener");
    let mqtt_state = || ctx.health.snapshot()["mqtt"].clone();
    eventually("mqtt up", || async { mqtt_state().status == Status::Up }).await;

    store.refuse_next_commits(1);
    let messages: Vec<_> = (0..3).map(|i| text(&format!("{prefix}/m"), &format!(r#"{{"i": {i}}}"#))).collect();
    publish(&publisher, QoS::AtLeastOnce, &messages).await;

    let query = fanin::store::RunQuery { sop: Some("refused".into()), ..Default::default() };
    let all_ran = || async {
        let runs = store.inner().list_runs(&query).await.unwrap();
        (0..3).all(|i| runs.iter().any(|r| r.payload == json!({"i": i})))
    };
    eventually("every message to run, the refused one too", all_ran).await;
    assert_eq!(store.refusals_left(), 0, "the store did refuse a commit");
    assert!(mqtt_state().reconnects >= 1, "the connection was made again: {:?}", mqtt_state());

    ctx.shutdown.cancel();
    tokio::time::timeout(DEADLINE, task).await.expect("the listener stops on shutdown").unwrap();
    assert_eq!(mqtt_state().status, Status::Down);
}

in_both_protocols!(
    a_message_nested_too_deep_is_acknowledged_and_audited_as_refused:
    a_message_nested_too_deep_is_acknowledged_and_audited_as_refused_in_mqtt_5,
    a_message_nested_too_deep_is_acknowledged_and_audited_as_refused_in_mqtt_3_1_1
);

/// A payload nested deeper than `max_payload_depth` (default 64) starts
/// nothing; it is audited as `event_refused` and acknowledged, so neither
/// the messages after it nor a restart bring it back.
async fn a_message_nested_too_deep_is_acknowledged_and_audited_as_refused(protocol: Protocol) {
    let (broker, publisher) = (broker(protocol).await, broker(Protocol::V311).await);
    let prefix = unique("fanin-test/deep");
    let block = mqtt_block(&broker.url(), &unique("fanin-deep"), &[&format!("{prefix}/#")], protocol.config_line());
    let setup = Setup::new("", &block).sop("deep", &mqtt_sop("deep", &format!("{prefix}/#"), None));
    let mut d = setup.start();
    wait_mqtt_up(&d).await;

    let nested = |depth: usize| format!("{}0{}", "[".repeat(depth), "]".repeat(depth));
    let deep_topic = format!("{prefix}/deep");
    let messages = [
        text(&deep_topic, &nested(65)),
        text(&format!("{prefix}/limit"), &nested(64)),
        text(&format!("{prefix}/ok"), r#"{"n": 1}"#),
    ];
    publish(&publisher, QoS::AtLeastOnce, &messages).await;
    let payloads = wait_runs(&d, "deep", 2).await;
    let at_limit: Value = serde_json::from_str(&nested(64)).unwrap();
    assert_eq!(sorted(payloads), sorted(vec![at_limit, json!({"n": 1})]));

    let records = refused(&d).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let detail = &records[0]["detail"];
    assert_eq!(detail["source"], json!("mqtt"));
    assert_eq!(detail["topic"], json!(deep_topic));
    assert_eq!(detail["reason"], json!("payload_too_deep"));
    assert!(detail["detail"].as_str().unwrap().contains("deeper than 64"), "{detail}");
    assert_eq!(detail["bytes"], json!(nested(65).len()));
    let (_, metrics) = d.get("/metrics").await;
    let counted =
        metrics.as_str().unwrap().lines().any(|l| {
            l.starts_with("fanin_events_refused_total{") && l.contains("source=\"mqtt\"") && l.ends_with(" 1")
        });
    assert!(counted, "{metrics}");

    // Unacknowledged, the broker would hand the message over again on the
    // next session, before anything published after it.
    d.stop();
    let d = setup.start();
    wait_mqtt_up(&d).await;
    publish(&publisher, QoS::AtLeastOnce, &[text(&format!("{prefix}/ok"), r#"{"n": 2}"#)]).await;
    wait_runs(&d, "deep", 3).await;
    assert_eq!(refused(&d).await.len(), 1, "the refused message came back");
}

/// The `event_refused` audit records.
async fn refused(d: &Daemon) -> Vec<Value> {
    let (status, audit) = d.get("/admin/audit?limit=10000").await;
    assert_eq!(status, 200, "{audit}");
    audit["records"].as_array().unwrap().iter().filter(|r| r["kind"] == json!("event_refused")).cloned().collect()
}
