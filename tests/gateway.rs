//! The HTTP gateway, driven over real sockets against a real daemon process
//! with a real SQLite store: every route, every status code it answers.

mod common;

use common::*;
use serde_json::{json, Value};

fn deploy() -> Setup {
    Setup::new("", "")
        .sop("deploy", &(webhook_sop("deploy", "/sop/deploy", "") + "\n[[triggers]]\ntype = \"manual\"\n"))
}

#[tokio::test]
async fn probes_answer() {
    let setup = deploy();
    let d = setup.start();
    assert_eq!(d.get("/health").await, (200, json!({"status": "ok"})));
    let (status, ready) = d.get("/ready").await;
    assert_eq!(status, 200);
    assert_eq!(ready["store"], json!("ok"));
    let (status, metrics) = d.get("/metrics").await;
    assert_eq!(status, 200);
    let text = metrics.as_str().expect("metrics are text");
    assert!(text.contains("fanin_http_requests_total"), "{text}");
}

#[tokio::test]
async fn an_accepted_webhook_is_a_stored_run_with_its_audit_record() {
    let setup = deploy();
    let d = setup.start();
    let token = d.pair().await;
    let (_, ready) = d.get("/ready").await;
    assert_eq!(ready["sources"]["webhook"]["last_event_at"], Value::Null, "nothing heard yet: {ready}");
    let (status, body, _) =
        d.post("/sop/deploy", Some(&token), r#"{"service":"a"}"#, &[("X-Idempotency-Key", "k-1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("accepted"));
    assert_eq!(body["matched_sops"], json!(["deploy"]));
    assert_eq!(body["source"], json!("sop_webhook"));
    assert_eq!(body["path"], json!("/sop/deploy"));
    assert_eq!(body["runs"][0]["outcome"], json!("started"));
    let run_id = body["runs"][0]["run_id"].as_str().unwrap().to_string();
    let (_, ready) = d.get("/ready").await;
    assert!(ready["sources"]["webhook"]["last_event_at"].is_string(), "the webhook heard it: {ready}");

    let (status, runs) = d.get("/admin/runs").await;
    assert_eq!(status, 200);
    assert_eq!(runs["runs"][0]["run_id"], json!(run_id));
    assert_eq!(runs["runs"][0]["status"], json!("running"));
    assert_eq!(runs["runs"][0]["source"], json!("sop_webhook"));
    assert_eq!(runs["runs"][0]["topic"], json!("/sop/deploy"));
    assert!(runs["runs"][0]["started_at"].is_string());

    let (status, run) = d.get(&format!("/admin/runs/{run_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(run["payload"], json!({"service": "a"}));
    assert_eq!(d.get("/admin/runs/nope").await.0, 404);

    let (status, audit) = d.get(&format!("/admin/audit?run_id={run_id}")).await;
    assert_eq!(status, 200);
    let first = &audit["records"][0];
    assert_eq!(first["kind"], json!("run_started"));
    let detail = &first["detail"];
    assert_eq!(detail["run_id"], json!(run_id));
    assert_eq!(detail["sop"], json!("deploy"));
    assert_eq!(detail["sop_version"], json!("0.1.0"), "the default version");
    assert_eq!(detail["source"], json!("sop_webhook"));
    assert_eq!(detail["topic"], json!("/sop/deploy"));
    assert_eq!(detail["payload"], json!({"service": "a"}));
    assert_eq!(detail["idempotency_key"], json!("k-1"));
    assert!(detail["client"].as_str().unwrap().starts_with("token:"));
    assert!(detail["event_id"].is_string() && detail["trigger"]["type"] == json!("webhook"));

    // Group commit is observable: transactions and the requests they carried.
    let (_, metrics) = d.get("/metrics").await;
    let text = metrics.as_str().expect("metrics are text");
    let value = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (transactions, requests) = (value("fanin_store_transactions_total"), value("fanin_store_requests_total"));
    assert!(transactions >= 1 && requests >= transactions, "{transactions} transactions, {requests} requests");
}

#[tokio::test]
async fn bad_requests_get_precise_status_codes() {
    let setup = Setup::new("max_body_bytes = 64", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let d = setup.start();
    let token = d.pair().await;

    let (status, missing, _) = d.post("/sop/deploy", None, "{}", &[]).await;
    assert_eq!((status, &missing), (401, &json!({"error": "unauthorized"})));
    let bogus = format!("fanin_{}", "0".repeat(64));
    let (status, wrong, _) = d.post("/sop/deploy", Some(&bogus), "{}", &[]).await;
    assert_eq!((status, wrong), (401, missing.clone()), "every 401 looks the same");

    let (status, body, _) = d.post("/sop/nope", Some(&token), "{}", &[]).await;
    assert_eq!((status, body), (404, json!({"error": "no_matching_sop", "path": "/sop/nope"})));

    let (status, body, _) = d.post("/sop/deploy", Some(&token), "{not json", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], json!("invalid_json"));

    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(100));
    let (status, body, _) = d.post("/sop/deploy", Some(&token), &big, &[]).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], json!("payload_too_large"));

    let long_key = "k".repeat(256);
    let (status, body, _) = d.post("/sop/deploy", Some(&token), "{}", &[("X-Idempotency-Key", &long_key)]).await;
    assert_eq!((status, body["error"].clone()), (400, json!("invalid_idempotency_key")));
    let (status, _, _) = d.post("/sop/deploy", Some(&token), "{}", &[("X-Idempotency-Key", "a\tb")]).await;
    assert_eq!(status, 400);

    let (status, body) = d.get("/nope").await;
    assert_eq!((status, body["error"].clone()), (404, json!("not_found")));
    let (status, body) = d.get("/sop/deploy").await;
    assert_eq!((status, body["error"].clone()), (405, json!("method_not_allowed")));

    // None of the refused requests left a run behind.
    let (_, runs) = d.get("/admin/runs").await;
    assert_eq!(runs["runs"], json!([]));
}

#[tokio::test]
async fn the_webhook_secret_is_a_second_layer() {
    let setup = Setup::new("require_pairing = false\nwebhook_secret = \"s3cret\"", "")
        .sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let d = setup.start();
    assert_eq!(d.pairing_code, None, "no code is printed when pairing is off");
    let (status, body, _) = d.post("/sop/deploy", None, "{}", &[]).await;
    assert_eq!((status, body), (401, json!({"error": "unauthorized"})));
    let (status, body, _) = d.post("/sop/deploy", None, "{}", &[("X-Webhook-Secret", "wrong")]).await;
    assert_eq!((status, body), (401, json!({"error": "unauthorized"})));
    let (status, body, _) = d.post("/sop/deploy", None, "{}", &[("X-Webhook-Secret", "s3cret")]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn with_no_way_to_authenticate_dispatch_fails_closed() {
    let agent = Agent::start(200, json!({"ok": true})).await;
    let setup = Setup::new("require_pairing = false", &format!("[destinations.agent]\nurl = \"{}\"\n", agent.url))
        .sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""))
        .sop("hook", &(webhook_sop("hook", "/webhook", "") + "condition = '$.kind == \"sop\"'\n"));
    let d = setup.start();
    assert_eq!(d.post("/sop/deploy", None, "{}", &[]).await.0, 401);
    let (status, body, _) = d.post("/webhook", None, r#"{"kind":"sop"}"#, &[]).await;
    assert_eq!((status, body), (401, json!({"error": "unauthorized"})));
    // Not matching a SOP, it may still go to the agent.
    let (status, body, _) = d.post("/webhook", None, r#"{"kind":"chat"}"#, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("routed"));
    let (_, runs) = d.get("/admin/runs").await;
    assert_eq!(runs["runs"], json!([]));
}

#[tokio::test]
async fn over_the_rate_a_client_gets_429_with_retry_after() {
    let setup =
        Setup::new("webhook_rate_limit_per_minute = 2", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let d = setup.start();
    // Unauthenticated requests count against the peer address.
    assert_eq!(d.post("/sop/deploy", None, "{}", &[]).await.0, 401);
    assert_eq!(d.post("/sop/deploy", None, "{}", &[]).await.0, 401);
    let (status, body, headers) = d.post("/sop/deploy", None, "{}", &[]).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], json!("rate_limited"));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // A token has its own budget, whatever its address did.
    let token = d.pair().await;
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 200);
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 200);
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 429);
}

#[tokio::test]
async fn manual_runs_through_the_admin_api() {
    let setup = deploy().sop("nomanual", &webhook_sop("nomanual", "/sop/x", ""));
    let d = setup.start();
    let (status, body, _) = d.post("/admin/sops/deploy/run", None, r#"{"why":"test"}"#, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], json!("manual"));
    assert_eq!(body["runs"][0]["outcome"], json!("started"));
    let (status, body, _) = d.post("/admin/sops/nomanual/run", None, "", &[]).await;
    assert_eq!((status, body["error"].clone()), (404, json!("no_matching_sop")));
    let (status, _, _) = d.post("/admin/sops/ghost/run", None, "", &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn admin_is_loopback_only_unless_allowed_and_then_needs_a_bearer() {
    let setup =
        Setup::new("trust_forwarded_headers = true", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let d = setup.start();
    let remote = d.http.get(d.url("/admin/runs")).header("X-Forwarded-For", "203.0.113.9").send().await.unwrap();
    assert_eq!(remote.status(), 403);
    assert_eq!(remote.json::<Value>().await.unwrap()["error"], json!("forbidden"));
    assert_eq!(d.get("/admin/runs").await.0, 200);
    drop(d);

    let setup = Setup::new("trust_forwarded_headers = true\nallow_remote_admin = true", "")
        .sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let d = setup.start();
    let token = d.pair().await;
    let get = |bearer: Option<String>| {
        let mut r = d.http.get(d.url("/admin/runs")).header("X-Forwarded-For", "203.0.113.9");
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("fanin_nope".into())).await.unwrap().status(), 401);
    assert_eq!(get(Some(token)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_store_that_cannot_write_answers_503_and_keeps_nothing_half_written() {
    let setup = deploy();
    let d = setup.start();
    let token = d.pair().await;
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 200);

    // Another process holds the write lock past the store's busy timeout.
    let db = setup.db_path();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    let (status, body, _) = d.post("/sop/deploy", Some(&token), "{}", &[("X-Idempotency-Key", "during-outage")]).await;
    assert_eq!((status, body), (503, json!({"error": "store_unavailable"})));
    release_tx.send(()).unwrap();
    holder.join().unwrap();

    // The refused request left nothing: its key is free and one run exists.
    let (status, body, _) = d.post("/sop/deploy", Some(&token), "{}", &[("X-Idempotency-Key", "during-outage")]).await;
    assert_eq!((status, body["status"].clone()), (200, json!("accepted")));
    let (_, runs) = d.get("/admin/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
}

/// A stand-in Agent: a real HTTP server that records what it receives and
/// answers with a fixed status and JSON body.
pub struct Agent {
    pub url: String,
    /// Each envelope received, with its Authorization header.
    pub received: Received,
}

type Received = std::sync::Arc<std::sync::Mutex<Vec<(Value, Option<String>)>>>;

impl Agent {
    pub async fn start(status: u16, reply: Value) -> Agent {
        use axum::routing::post;
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = received.clone();
        let app = axum::Router::new().route(
            "/agent",
            post(move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                let seen = seen.clone();
                let reply = reply.clone();
                async move {
                    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
                    seen.lock().unwrap().push((body.0, auth));
                    (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(reply))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/agent", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Agent { url, received }
    }
}

#[tokio::test]
async fn webhook_tries_sops_first_then_the_agent() {
    let agent = Agent::start(200, json!({"reply": "hello"})).await;
    let setup =
        Setup::new("", &format!("[destinations.agent]\nurl = \"{}\"\nbearer_token = \"agent-secret\"\n", agent.url))
            // Supervised: the run waits for approval, so the only thing the
            // agent could receive here is the fallback call.
            .sop(
                "hook",
                "[sop]\nname = \"hook\"\ndescription = \"x\"\nexecution_mode = \"supervised\"\n\
                 [[triggers]]\ntype = \"webhook\"\npath = \"/webhook\"\ncondition = '$.kind == \"deploy\"'\n",
            );
    let d = setup.start();
    let token = d.pair().await;

    let (status, body, _) = d.post("/webhook", Some(&token), r#"{"kind":"deploy"}"#, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("accepted"));
    assert_eq!(body["source"], json!("webhook"));
    assert_eq!(body["matched_sops"], json!(["hook"]));
    assert!(agent.received.lock().unwrap().is_empty(), "a SOP match never reaches the agent");

    let (status, body, _) = d.post("/webhook", Some(&token), r#"{"kind":"chat","text":"hi"}"#, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "routed", "destination": "agent", "response": {"reply": "hello"}}));
    let received = agent.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (envelope, auth) = &received[0];
    assert_eq!(auth.as_deref(), Some("Bearer agent-secret"));
    assert!(envelope["context"]["memory"].is_object(), "context.memory is always present");
    assert_eq!(envelope["input"]["event"]["source"], json!("webhook"));
    assert_eq!(envelope["input"]["event"]["path"], json!("/webhook"));
    assert_eq!(envelope["input"]["event"]["body"], json!({"kind": "chat", "text": "hi"}));
    assert!(envelope["input"]["event"]["timestamp"].is_string());
    fanin::envelope::schema::validate(envelope).expect("what fanin emits");
    fanin::envelope::schema::validate_contract(envelope).expect("what Smart Office accepts");
}

#[tokio::test]
async fn webhook_without_a_working_agent() {
    // No agent configured: 404.
    let setup = Setup::new("", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let d = setup.start();
    let token = d.pair().await;
    let (status, body, _) = d.post("/webhook", Some(&token), "{}", &[]).await;
    assert_eq!((status, body), (404, json!({"error": "no_matching_sop", "path": "/webhook"})));
    drop(d);

    // An agent that fails: 502.
    let failing = Agent::start(500, json!({"oops": true})).await;
    let setup = Setup::new("", &format!("[destinations.agent]\nurl = \"{}\"\n", failing.url));
    let d = setup.start();
    let token = d.pair().await;
    let (status, body, _) = d.post("/webhook", Some(&token), "{}", &[]).await;
    assert_eq!((status, body["error"].clone()), (502, json!("agent_unavailable")));
    drop(d);

    // An agent nobody listens for: 502.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/agent", closed.local_addr().unwrap());
    drop(closed);
    let setup = Setup::new("", &format!("[destinations.agent]\nurl = \"{url}\"\n"));
    let d = setup.start();
    let token = d.pair().await;
    let (status, body, _) = d.post("/webhook", Some(&token), "{}", &[]).await;
    assert_eq!((status, body), (502, json!({"error": "agent_unavailable"})));
}

#[tokio::test]
async fn the_peripheral_bridge_starts_runs_from_signals() {
    let setup = Setup::new("", "[peripherals.nucleo]\ntransport = \"http\"\n").sop(
        "door",
        "[sop]\nname = \"door\"\ndescription = \"x\"\nexecution_mode = \"auto\"\nmax_concurrent = 100\n\
         [[triggers]]\ntype = \"peripheral\"\nboard = \"nucleo\"\nsignal = \"pin_3\"\ncondition = \"> 0\"\n",
    );
    let d = setup.start();
    let token = d.pair().await;

    let (status, body, _) = d.post("/peripheral/nucleo/pin_3", Some(&token), "1", &[("X-Idempotency-Key", "p1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], json!("peripheral"));
    assert_eq!(body["path"], json!("/peripheral/nucleo/pin_3"));
    assert_eq!(body["matched_sops"], json!(["door"]));
    let run_id = body["runs"][0]["run_id"].as_str().unwrap().to_string();
    let (_, run) = d.get(&format!("/admin/runs/{run_id}")).await;
    assert_eq!((run["topic"].clone(), run["payload"].clone()), (json!("nucleo/pin_3"), json!(1)));

    // The direct condition `> 0` is false for 0 and for text; that is not an error.
    for value in ["0", "on"] {
        let (status, body, _) = d.post("/peripheral/nucleo/pin_3", Some(&token), value, &[]).await;
        assert_eq!((status, body["runs"].clone()), (200, json!([])), "{value}");
    }
    let (status, body, _) = d.post("/peripheral/nucleo/pin_3", Some(&token), "1", &[("X-Idempotency-Key", "p1")]).await;
    assert_eq!((status, body["status"].clone()), (200, json!("duplicate")));

    let (status, body, _) = d.post("/peripheral/ghost/pin_3", Some(&token), "1", &[]).await;
    assert_eq!((status, body), (404, json!({"error": "unknown_board", "board": "ghost"})));
    let (status, body, _) = d.post("/peripheral/nucleo/pin_3", None, "1", &[]).await;
    assert_eq!((status, body), (401, json!({"error": "unauthorized"})));

    let (_, runs) = d.get("/admin/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_peripheral_bridge_refuses_signal_names_a_trigger_could_not_name() {
    let setup = Setup::new("", "[peripherals.nucleo]\ntransport = \"http\"\n");
    let d = setup.start();
    let token = d.pair().await;
    let (status, body, _) = d.post("/peripheral/nucleo/a%20b", Some(&token), "1", &[]).await;
    assert_eq!((status, body["error"].clone()), (400, json!("invalid_signal")));
}
