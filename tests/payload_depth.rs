//! One bad event must never stop delivery: every HTTP source refuses a
//! payload nested deeper than `[gateway] max_payload_depth` with `400
//! payload_too_deep`, and a record in the store that cannot be read back
//! (written here straight into the SQLite file) neither fails a listing nor
//! stops the outbox worker: it is shown with the reason, its envelope is
//! dead-lettered, and later envelopes still reach a real local destination.
//! The MQTT and serial sources are covered in `mqtt.rs` and `peripheral.rs`.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

/// A destination: a local HTTP server that accepts every envelope and keeps it.
struct Sink {
    url: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Sink {
    async fn start() -> Sink {
        use axum::routing::post;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/in",
            post(move |body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    // Kept as received: the destination must be able to read what it got.
                    let envelope: Value = serde_json::from_slice(&body).expect("an envelope the sink can read");
                    log.lock().unwrap().push(envelope);
                    axum::http::StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink { url: format!("http://127.0.0.1:{port}/in"), seen }
    }

    /// What arrived with the triggers of the envelopes received so far (a
    /// webhook's body, any other source's payload).
    fn bodies(&self) -> Vec<Value> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|e| &e["input"]["event"])
            .map(|event| event.get("body").unwrap_or(&event["payload"]).clone())
            .collect()
    }
}

/// `depth` arrays inside each other around `0`.
fn nested(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_value(depth: usize) -> Value {
    serde_json::from_str(&nested(depth)).unwrap()
}

fn setup(sink: &Sink) -> Setup {
    let rest = format!(
        "[peripherals.bridge]\ntransport = \"http\"\n\n\
         [delivery]\nmax_attempts = 3\nbackoff_initial_ms = 20\nbackoff_cap_secs = 1\n\n\
         [destinations.agent]\nurl = \"{}\"\n",
        sink.url
    );
    let peripheral_sop = "[sop]\nname = \"door\"\ndescription = \"test\"\nexecution_mode = \"auto\"\n\
        max_concurrent = 1000\n\n[[triggers]]\ntype = \"peripheral\"\nboard = \"bridge\"\nsignal = \"door\"\n";
    Setup::new("webhook_rate_limit_per_minute = 0", &rest)
        .sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""))
        .sop("hook", &webhook_sop("hook", "/webhook", ""))
        .sop("door", peripheral_sop)
}

async fn wait_delivered(sink: &Sink, body: &Value) {
    eventually(&format!("an envelope carrying {body} at the destination"), || async { sink.bodies().contains(body) })
        .await;
}

#[tokio::test]
async fn every_http_source_refuses_a_payload_deeper_than_the_limit() {
    let sink = Sink::start().await;
    let setup = setup(&sink);
    let d = setup.start();
    let token = d.pair().await;

    for path in ["/webhook", "/sop/deploy", "/peripheral/bridge/door"] {
        // 65 is one above the default limit; 125 was accepted and then
        // stopped every delivery, before the limit existed.
        for depth in [65, 125, 30_000] {
            let (status, body, headers) = d.post(path, Some(&token), &nested(depth), &[]).await;
            assert_eq!(status, 400, "{path} depth {depth}: {body}");
            assert_eq!(body["error"], json!("payload_too_deep"), "{path}: {body}");
            assert_eq!(body["max_payload_depth"], json!(64), "{path}: {body}");
            assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
        }
        // Brackets inside strings are text, not nesting.
        let bracket_text = serde_json::to_string(&json!([format!("{}", "[".repeat(500))])).unwrap();
        let (status, body, _) = d.post(path, Some(&token), &bracket_text, &[]).await;
        assert_eq!((status, body["status"].clone()), (200, json!("accepted")), "{path}: {body}");
        let (status, body, _) = d.post(path, Some(&token), &nested(64), &[]).await;
        assert_eq!((status, body["status"].clone()), (200, json!("accepted")), "{path} at the limit: {body}");
    }
    let (_, runs) = d.get("/admin/runs?limit=100").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 6, "only the accepted requests made runs: {runs}");

    // A payload at the limit is delivered, and so is the next one: nothing
    // accepted blocks the outbox.
    let at_limit = nested_value(64);
    eventually("the three payloads at the limit delivered", || async {
        sink.bodies().iter().filter(|b| **b == at_limit).count() == 3
    })
    .await;
    let (status, _, _) = d.post("/sop/deploy", Some(&token), r#"{"after":1}"#, &[]).await;
    assert_eq!(status, 200);
    wait_delivered(&sink, &json!({"after": 1})).await;
    let (status, _) = d.get("/admin/audit").await;
    assert_eq!(status, 200);
}

/// Inserts rows no fanin would write today into the daemon's SQLite file:
/// JSON nested beyond what serde_json reads back, and columns holding the
/// wrong type (the latter as an entry of `finished_run`). Returns the id of
/// the running run the unreadable envelope belongs to.
fn poison(db: &std::path::Path, finished_run: &str) -> &'static str {
    let conn = rusqlite::Connection::open(db).unwrap();
    let deep = nested(200);
    let run_id = "0190a0a0-0000-7000-8000-00000000dead";
    conn.execute(
        "INSERT INTO runs (run_id, sop, sop_version, status, trigger_index, trigger_desc, source, topic, event_id,
             payload, client, idempotency_key, started_at, updated_at, finished_at, coalesced, step)
         VALUES (?1, 'deploy', '1.0.0', 'running', 0, 'webhook /sop/deploy', 'sop_webhook', '/sop/deploy', 'ev-deep',
             ?2, 'ip:127.0.0.1', NULL, 1, 1, NULL, 0, 0)",
        rusqlite::params![run_id, deep],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO outbox (id, run_id, destination, envelope, status, attempts, next_attempt_at, created_at)
         VALUES ('env-deep', ?1, 'agent', ?2, 'pending', 0, 0, 1)",
        rusqlite::params![run_id, deep],
    )
    .unwrap();
    // A pending entry whose attempts column holds text.
    conn.execute(
        "INSERT INTO outbox (id, run_id, destination, envelope, status, attempts, next_attempt_at, created_at)
         VALUES ('env-garbled', ?1, 'agent', '{}', 'pending', 'many', 0, 1)",
        [finished_run],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO audit (at, kind, run_id, sop, detail) VALUES (1, 'run_started', ?1, 'deploy', ?2)",
        rusqlite::params![run_id, deep],
    )
    .unwrap();
    conn.execute("INSERT INTO audit (at, kind, run_id, sop, detail) VALUES (1, 'no_such_kind', NULL, NULL, '{}')", [])
        .unwrap();
    conn.execute(
        "INSERT INTO audit (at, kind, run_id, sop, detail) VALUES (1, 'approval', NULL, NULL, 'not json')",
        [],
    )
    .unwrap();
    run_id
}

fn cli_json(setup: &Setup, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = setup.cli(&full);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fanin {args:?}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    // One document, or one per line (`audit`): read as a stream either way.
    serde_json::Deserializer::from_str(&stdout).into_iter::<Value>().map(|v| v.expect("JSON output")).collect()
}

#[tokio::test]
async fn a_stored_record_that_cannot_be_read_stops_no_reader_and_no_delivery() {
    let sink = Sink::start().await;
    let setup = setup(&sink);
    let mut d = setup.start();
    let token = d.pair().await;
    let (status, first, _) = d.post("/sop/deploy", Some(&token), r#"{"n":1}"#, &[]).await;
    assert_eq!(status, 200);
    wait_delivered(&sink, &json!({"n": 1})).await;
    let first_run = first["runs"][0]["run_id"].as_str().unwrap().to_string();
    eventually("the first run completed", || async {
        d.get(&format!("/admin/runs/{first_run}")).await.1["status"] == json!("completed")
    })
    .await;
    d.stop();

    let poisoned_run = poison(&setup.db_path(), &first_run);
    let d = setup.start();

    // Delivery goes on past the unreadable entries.
    let (status, _, _) = d.post("/sop/deploy", Some(&token), r#"{"n":2}"#, &[]).await;
    assert_eq!(status, 200);
    wait_delivered(&sink, &json!({"n": 2})).await;

    // Each unreadable entry is a dead letter saying why, and the run whose
    // envelope it was failed as after its last attempt.
    let entry = |list: &[Value], id: &str| list.iter().find(|e| e["id"] == json!(id)).cloned();
    eventually("both unreadable outbox entries dead-lettered", || async {
        let (status, list) = d.get("/admin/outbox").await;
        assert_eq!(status, 200, "{list}");
        let list = list["outbox"].as_array().cloned().unwrap_or_default();
        ["env-deep", "env-garbled"].iter().all(|id| entry(&list, id).is_some_and(|e| e["status"] == json!("dead")))
    })
    .await;
    let outbox = &cli_json(&setup, &["outbox", "list"])[0]["outbox"];
    let outbox = outbox.as_array().unwrap();
    let deep = entry(outbox, "env-deep").unwrap();
    assert!(deep["envelope"]["unreadable"].as_str().unwrap().contains("recursion limit"), "{deep}");
    assert!(deep["last_error"].as_str().unwrap().contains("cannot be read"), "{deep}");
    assert!(outbox.iter().any(|e| e["status"] == json!("delivered")), "the readable entries are listed too");
    let garbled = entry(outbox, "env-garbled").unwrap();
    assert!(garbled["last_error"].as_str().unwrap().contains("cannot be read"), "{garbled}");
    let table = setup.cli(&["outbox", "list"]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    assert!(String::from_utf8_lossy(&table.stdout).contains("env-deep"));

    let (status, run) = d.get(&format!("/admin/runs/{poisoned_run}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], json!("failed"), "{run}");
    assert!(run["payload"]["unreadable"].is_string(), "{run}");
    let runs = cli_json(&setup, &["runs", "list"]);
    assert!(runs[0].to_string().contains(poisoned_run), "{runs:?}");

    // The audit trail reads, with the unreadable detail marked.
    let (status, audit) = d.get("/admin/audit?limit=1000").await;
    assert_eq!(status, 200, "{audit}");
    let records = audit["records"].as_array().unwrap();
    let marked = |records: &[Value]| {
        records.iter().filter(|r| r["detail"]["unreadable"].as_str().is_some_and(|why| why.contains("read"))).count()
    };
    assert_eq!(marked(records), 2, "the deep detail and the one that is not JSON: {audit}");
    assert!(records.iter().any(|r| r["kind"] == json!("envelope_failed") && r["run_id"] == json!(poisoned_run)));
    let cli_records = cli_json(&setup, &["audit"]);
    assert_eq!(marked(&cli_records), 2);
    assert!(cli_records.len() >= records.len(), "the CLI lists what the API does");
    let table = setup.cli(&["audit"]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));

    // And still later envelopes arrive.
    let (status, _, _) = d.post("/webhook", Some(&token), r#"{"n":3}"#, &[]).await;
    assert_eq!(status, 200);
    wait_delivered(&sink, &json!({"n": 3})).await;
}
