//! Runs reach the Executor and the Agent through the durable outbox: schema
//! valid envelopes, a stable `Idempotency-Key` across retries, dead letters
//! and their retry, a restart with envelopes still queued, envelopes of a
//! cancelled run withdrawn and never sent, and what an operator sees of it:
//! the cause of failed attempts, `/ready`, and the outbox and approval
//! metrics.

mod common;

use std::sync::atomic::Ordering;

use common::destination::{Destination, Seen};
use common::*;
use serde_json::{json, Value};

fn delivery(max_attempts: u32) -> String {
    format!("[delivery]\nmax_attempts = {max_attempts}\nbackoff_initial_ms = 20\nbackoff_cap_secs = 1\n")
}

fn destinations(executor: &str, agent: &str) -> String {
    format!(
        "[destinations.executor]\nurl = \"{executor}\"\nbearer_token = \"exec-secret\"\n\
         [destinations.agent]\nurl = \"{agent}\"\n"
    )
}

/// A registries directory beside the config, from the shipped examples.
fn with_registries(setup: Setup) -> Setup {
    let dir = setup.dir.path().join("registries");
    std::fs::create_dir_all(&dir).unwrap();
    for category in ["tools", "capabilities", "usecases"] {
        let example = format!("{}/examples/registries/{category}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(example, dir.join(format!("{category}.json"))).unwrap();
    }
    setup
}

const EXECUTOR_SOP: &str = "[sop]\nname = \"deploy\"\ndescription = \"x\"\nexecution_mode = \"auto\"\n\
    destination = \"executor\"\nmax_concurrent = 100\n[[triggers]]\ntype = \"manual\"\n\
    [[steps]]\ntitle = \"Check\"\nbody = \"b\"\ntype = \"tool\"\nref = \"ci_status\"\n\
    [[steps]]\ntitle = \"Roll\"\nbody = \"b\"\ntype = \"usecase\"\nref = \"rolling_deploy\"\nparams = { zones = 2 }\n";

const AGENT_SOP: &str = "[sop]\nname = \"notify\"\ndescription = \"x\"\nexecution_mode = \"auto\"\n\
    max_concurrent = 100\n[[triggers]]\ntype = \"manual\"\n";

async fn fire(d: &Daemon, sop: &str, payload: &str) -> String {
    let (status, body, _) = d.post(&format!("/admin/sops/{sop}/run"), None, payload, &[]).await;
    assert_eq!(status, 200, "{body}");
    body["runs"][0]["run_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn execution_and_legacy_envelopes_arrive_valid_and_complete_their_runs() {
    let executor = Destination::start(0).await;
    let agent = Destination::start(0).await;
    let setup = with_registries(Setup::new("", &(destinations(&executor.url, &agent.url) + &delivery(5))))
        .sop("deploy", EXECUTOR_SOP)
        .sop("notify", AGENT_SOP);
    let d = setup.start();
    let (_, ready) = d.get("/ready").await;
    let copies: Vec<&str> =
        ready["registries"].as_array().unwrap().iter().map(|c| c["copy"].as_str().unwrap()).collect();
    assert_eq!(copies, ["local", "local", "local"], "no Drive file ids: every category uses its local copy");
    let deploy = fire(&d, "deploy", r#"{"branch":"main"}"#).await;
    let notify = fire(&d, "notify", r#"{"text":"hi"}"#).await;
    eventually("both envelopes", || async { executor.accepted().len() == 1 && agent.accepted().len() == 1 }).await;

    let exec = &executor.accepted()[0];
    fanin::envelope::schema::validate(&exec.envelope).expect("execution envelope matches the shipped schema");
    let header = &exec.envelope["header"];
    assert_eq!(exec.idempotency_key.as_deref(), header["id"].as_str(), "Idempotency-Key is the envelope id");
    assert_eq!(exec.authorization.as_deref(), Some("Bearer exec-secret"));
    assert_eq!(
        (header["source"].clone(), header["destination"].clone()),
        (json!("so.trigger.manual"), json!("executor"))
    );
    let payload = &exec.envelope["payload"];
    assert_eq!(payload["memory"]["session_id"], json!(deploy));
    assert_eq!(payload["memory"]["state"]["trigger"]["payload"], json!({"branch": "main"}));
    let refs: Vec<&str> = payload["steps"].as_array().unwrap().iter().map(|s| s["ref"].as_str().unwrap()).collect();
    assert_eq!(refs, ["ci_status", "rolling_deploy"]);
    assert_eq!(payload["registryFiles"].as_array().unwrap().len(), 3);
    assert!(
        payload["options"]["fallbackRegistry"]["tools"].is_object()
            || payload["options"]["fallbackRegistry"]["tools"].is_array()
    );

    let legacy = &agent.accepted()[0];
    fanin::envelope::schema::validate(&legacy.envelope).expect("legacy envelope matches the shipped schema");
    assert_eq!(legacy.envelope["context"]["memory"]["session_id"], json!(notify));
    assert_eq!(legacy.envelope["input"]["event"]["payload"], json!({"text": "hi"}));
    assert!(legacy.envelope["input"].get("steps").is_none(), "a stepless SOP sends the event alone");
    assert_eq!(legacy.authorization, None);

    for run in [&deploy, &notify] {
        eventually("the run to complete", || async { d.run_status(run).await == json!("completed") }).await;
        let (_, audit) = d.get(&format!("/admin/audit?run_id={run}")).await;
        let kinds: Vec<&str> =
            audit["records"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["run_started", "envelope_queued", "envelope_delivered", "run_transition"]);
    }
}

#[tokio::test]
async fn a_destination_that_refuses_at_first_gets_each_envelope_with_a_stable_key() {
    let agent = Destination::start(5).await;
    let setup =
        Setup::new("", &(destinations("http://127.0.0.1:9/none", &agent.url) + &delivery(20))).sop("notify", AGENT_SOP);
    let d = setup.start();
    let runs = [fire(&d, "notify", r#"{"n":1}"#).await, fire(&d, "notify", r#"{"n":2}"#).await];
    eventually("both envelopes accepted", || async { agent.accepted().len() == 2 }).await;

    let seen = agent.seen.lock().unwrap().clone();
    assert!(seen.len() >= 7, "5 refusals and 2 acceptances: {}", seen.len());
    for run in &runs {
        let keys: std::collections::HashSet<_> = seen
            .iter()
            .filter(|s| s.envelope["context"]["memory"]["session_id"] == json!(run))
            .map(|s| s.idempotency_key.clone().expect("every attempt has an Idempotency-Key"))
            .collect();
        assert_eq!(keys.len(), 1, "one key across all attempts of run {run}");
        eventually("the run to complete", || async { d.run_status(run).await == json!("completed") }).await;
    }
    let out = setup.cli(&["outbox", "list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let attempts: u64 = list["outbox"].as_array().unwrap().iter().map(|e| e["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, seen.len() as u64, "every attempt is counted");
}

#[tokio::test]
async fn a_restart_with_a_full_outbox_delivers_the_rest() {
    // A port nobody listens on yet: the destination is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/in");
    let setup =
        Setup::new("", &(destinations("http://127.0.0.1:9/none", &url) + &delivery(1000))).sop("notify", AGENT_SOP);
    let mut d = setup.start();
    let mut runs = Vec::new();
    for n in 0..3 {
        runs.push(fire(&d, "notify", &format!(r#"{{"n":{n}}}"#)).await);
    }
    eventually("failed attempts to be recorded", || async {
        let list: Value = serde_json::from_slice(&setup.cli(&["outbox", "list", "--json"]).stdout).unwrap();
        list["outbox"].as_array().unwrap().iter().all(|e| e["attempts"].as_u64().unwrap() >= 1)
    })
    .await;
    d.kill();

    let agent = Destination::start_on(port).await;
    let d = setup.start();
    eventually("all three envelopes", || async { agent.accepted().len() == 3 }).await;
    let mut sessions: Vec<String> = agent
        .accepted()
        .iter()
        .map(|s| s.envelope["context"]["memory"]["session_id"].as_str().unwrap().to_string())
        .collect();
    sessions.sort();
    runs.sort();
    assert_eq!(sessions, runs, "each queued envelope arrives exactly once after the restart");
    for run in &runs {
        eventually("the run to complete", || async { d.run_status(run).await == json!("completed") }).await;
    }
    assert_eq!(agent.refuse.load(Ordering::SeqCst), 0);
    let _ = agent.port;
}

#[tokio::test]
async fn dead_letters_fail_their_run_and_can_be_retried() {
    let agent = Destination::start(usize::MAX).await;
    let setup =
        Setup::new("", &(destinations("http://127.0.0.1:9/none", &agent.url) + &delivery(2))).sop("notify", AGENT_SOP);
    let d = setup.start();
    let run = fire(&d, "notify", "{}").await;
    eventually("the run to fail", || async { d.run_status(&run).await == json!("failed") }).await;
    assert_eq!(agent.seen.lock().unwrap().len(), 2, "max_attempts = 2");

    let out = setup.cli(&["outbox", "list", "--status", "dead", "--json"]);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dead = &list["outbox"][0];
    assert_eq!((dead["run_id"].clone(), dead["status"].clone()), (json!(run), json!("dead")));
    let (_, audit) = d.get(&format!("/admin/audit?run_id={run}")).await;
    let records = audit["records"].as_array().unwrap();
    let of = |kind: &str| records.iter().filter(|r| r["kind"] == kind).map(|r| &r["detail"]).collect::<Vec<_>>();
    let (retried, failed) = (of("envelope_attempt_failed"), of("envelope_failed"));
    assert_eq!(retried.len(), 1, "the first attempt failed and was retried: {records:?}");
    assert_eq!(
        (&retried[0]["envelope_id"], &retried[0]["attempts"], &retried[0]["error"]),
        (&dead["id"], &json!(1), &json!("HTTP 500 Internal Server Error"))
    );
    assert!(retried[0]["next_attempt_at"].is_string(), "{}", retried[0]);
    assert_eq!(failed.len(), 1, "{records:?}");
    assert_eq!((&failed[0]["attempts"], &failed[0]["error"]), (&json!(2), &json!("HTTP 500 Internal Server Error")));
    assert_eq!(dead["last_error"], json!("HTTP 500 Internal Server Error"));
    assert_eq!(d.metric("fanin_outbox_dead_letters_total{destination=\"agent\"}").await, Some(1.0));
    assert_eq!(d.metric("fanin_outbox_failed_attempts_total{destination=\"agent\"}").await, Some(2.0));
    assert_eq!(d.metric("fanin_outbox_depth").await, Some(0.0), "a dead letter is not pending");

    // The destination recovers; the operator retries the dead letter.
    agent.refuse.store(0, Ordering::SeqCst);
    let out = setup.cli(&["outbox", "retry", dead["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the retried envelope", || async { agent.accepted().len() == 1 }).await;
    assert_eq!(agent.accepted()[0].idempotency_key.as_deref(), dead["id"].as_str(), "the same key as before");
    eventually("the entry to be delivered", || async {
        let list: Value = serde_json::from_slice(&setup.cli(&["outbox", "list", "--json"]).stdout).unwrap();
        list["outbox"][0]["status"] == json!("delivered")
    })
    .await;
    assert_eq!(d.run_status(&run).await, json!("failed"), "the run keeps how it ended");
    assert_eq!(d.metric("fanin_outbox_depth").await, Some(0.0));
    assert_eq!(d.metric("fanin_outbox_dead_letters_total{destination=\"agent\"}").await, Some(1.0));
    let out = setup.cli(&["outbox", "retry", dead["id"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "only a dead letter can be retried");
}

/// `fanin outbox list --json`, as an operator reads it.
fn outbox_list(setup: &Setup) -> Vec<Value> {
    let out = setup.cli(&["outbox", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["outbox"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_refused_connection_is_named_in_last_error_ready_and_metrics() {
    // A port nobody listens on: every connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/in");
    let setup =
        Setup::new("", &(destinations("http://127.0.0.1:9/none", &url) + &delivery(1000))).sop("notify", AGENT_SOP);
    let mut d = setup.start();
    fire(&d, "notify", "{}").await;
    eventually("two failed attempts", || async { outbox_list(&setup)[0]["attempts"].as_u64().unwrap() >= 2 }).await;

    let entry = &outbox_list(&setup)[0];
    let error = entry["last_error"].as_str().unwrap();
    assert!(error.starts_with("error sending request"), "{error}");
    assert!(error.to_lowercase().contains("connection refused"), "LAST ERROR names the cause: {error}");
    let table = String::from_utf8(setup.cli(&["outbox", "list"]).stdout).unwrap();
    assert!(table.contains("LAST ERROR") && table.to_lowercase().contains("connection refused"), "{table}");

    let failed = d.metric("fanin_outbox_failed_attempts_total{destination=\"agent\"}").await.unwrap();
    assert!(failed >= 2.0, "{failed}");
    assert_eq!(d.metric("fanin_outbox_depth").await, Some(1.0));
    let (status, ready) = d.get("/ready").await;
    assert_eq!(status, 200, "a failing destination does not make fanin unready: {ready}");
    let agent = &ready["outbox"]["destinations"]["agent"];
    assert_eq!((agent["configured"].clone(), agent["deliveries"].clone()), (json!(true), json!("failing")), "{ready}");
    assert!(agent["cause"].as_str().unwrap().to_lowercase().contains("connection refused"), "{ready}");
    assert_eq!(ready["outbox"]["pending"], json!(1));

    // The depth is the store's, not this process's: the same after a restart.
    d.kill();
    let d = setup.start();
    assert_eq!(d.metric("fanin_outbox_depth").await, Some(1.0));
}

#[tokio::test]
async fn envelopes_for_an_unconfigured_destination_wait_untouched_and_are_counted() {
    let setup = Setup::new("", &delivery(3)).sop("notify", AGENT_SOP);
    let mut d = setup.start();
    for n in 0..3 {
        fire(&d, "notify", &format!(r#"{{"n":{n}}}"#)).await;
    }
    let waiting = |ready: &Value| ready["outbox"]["destinations"]["agent"].clone();
    let (status, ready) = d.get("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(waiting(&ready), json!({"configured": false, "waiting": 3}));
    assert_eq!(d.metric("fanin_outbox_depth").await, Some(3.0));
    for entry in outbox_list(&setup) {
        assert_eq!((entry["attempts"].clone(), entry["last_error"].clone()), (json!(0), Value::Null), "untouched");
    }
    assert_eq!(d.metric("fanin_outbox_failed_attempts_total{destination=\"agent\"}").await, None);

    d.kill();
    let d = setup.start();
    fire(&d, "notify", "{}").await;
    assert_eq!(waiting(&d.get("/ready").await.1), json!({"configured": false, "waiting": 4}));
    assert_eq!(d.metric("fanin_outbox_depth").await, Some(4.0));
}

#[tokio::test]
async fn a_cancelled_runs_envelope_is_withdrawn_and_never_delivered() {
    // No destination yet: both envelopes wait untouched.
    let setup = Setup::new("", &delivery(3)).sop("notify", AGENT_SOP);
    let mut d = setup.start();
    let cancelled = fire(&d, "notify", r#"{"n":1}"#).await;
    let kept = fire(&d, "notify", r#"{"n":2}"#).await;
    let entry_of = |run: &str| {
        outbox_list(&setup).into_iter().find(|e| e["run_id"] == json!(run)).expect("the run's outbox entry")
    };
    let withdrawn = entry_of(&cancelled)["id"].as_str().unwrap().to_string();

    let (status, reply, _) = d.post(&format!("/admin/runs/{cancelled}/cancel"), None, "", &[]).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["withdrawn"], json!({"envelopes": [withdrawn], "steps": []}));
    assert_eq!(entry_of(&cancelled)["status"], json!("withdrawn"));
    assert_eq!(entry_of(&kept)["status"], json!("pending"));
    let out = setup.cli(&["outbox", "list", "--status", "withdrawn", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed["outbox"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [withdrawn.as_str()]);
    assert_eq!(d.metric("fanin_outbox_depth").await, Some(1.0), "a withdrawn envelope is not pending");
    let (_, ready) = d.get("/ready").await;
    assert_eq!(ready["outbox"]["destinations"]["agent"], json!({"configured": false, "waiting": 1}));

    // Not a dead letter: it cannot be queued again.
    let (status, reply, _) = d.post(&format!("/admin/outbox/{withdrawn}/retry"), None, "", &[]).await;
    assert_eq!((status, reply["error"].clone(), reply["status"].clone()), (409, json!("not_dead"), json!("withdrawn")));
    let out = setup.cli(&["outbox", "retry", &withdrawn]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("not a dead letter (it is withdrawn)"), "{err}");

    // The destination configured: at start both entries would be due in the
    // worker's first round; only the kept one is sent.
    d.kill();
    let agent = Destination::start(0).await;
    let mut config = std::fs::read_to_string(setup.config_path()).unwrap();
    config.push_str(&format!("\n[destinations.agent]\nurl = \"{}\"\n", agent.url));
    std::fs::write(setup.config_path(), config).unwrap();
    let d = setup.start();
    eventually("the kept run's envelope", || async { agent.accepted().len() == 1 }).await;
    eventually("the kept run to complete", || async { d.run_status(&kept).await == json!("completed") }).await;
    let seen = agent.seen.lock().unwrap().clone();
    let sessions: Vec<&Value> = seen.iter().map(|s| &s.envelope["context"]["memory"]["session_id"]).collect();
    assert_eq!(sessions, [&json!(kept)], "only the kept run's envelope left fanin");
    assert_eq!(entry_of(&cancelled)["status"], json!("withdrawn"));
    assert_eq!(d.run_status(&cancelled).await, json!("cancelled"));
    let (_, audit) = d.get(&format!("/admin/audit?run_id={cancelled}")).await;
    let kinds: Vec<&str> = audit["records"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["run_started", "envelope_queued", "run_cancelled", "run_transition"]);
}

const SUPERVISED_SOP: &str = "[sop]\nname = \"gated\"\ndescription = \"x\"\nexecution_mode = \"supervised\"\n\
    max_concurrent = 100\n[[triggers]]\ntype = \"manual\"\n";

#[tokio::test]
async fn the_pending_approvals_gauge_follows_supervised_runs_across_a_restart() {
    let agent = Destination::start(0).await;
    let setup = Setup::new("", &(destinations("http://127.0.0.1:9/none", &agent.url) + &delivery(5)))
        .sop("gated", SUPERVISED_SOP);
    let mut d = setup.start();
    assert_eq!(d.metric("fanin_runs_pending_approval").await, Some(0.0));
    let first = fire(&d, "gated", "{}").await;
    let second = fire(&d, "gated", "{}").await;
    assert_eq!(d.run_status(&first).await, json!("pending_approval"));
    assert_eq!(d.metric("fanin_runs_pending_approval").await, Some(2.0));

    let decide = |what: &'static str, run: String| {
        let d = &d;
        async move {
            let body = json!({"run_id": run}).to_string();
            let (status, reply, _) = d.post(&format!("/admin/sop/{what}"), None, &body, &[]).await;
            assert_eq!(status, 200, "{reply}");
        }
    };
    decide("approve", first.clone()).await;
    assert_eq!(d.metric("fanin_runs_pending_approval").await, Some(1.0));
    eventually("the approved run's envelope", || async { agent.accepted().len() == 1 }).await;
    eventually("the approved run to complete", || async { d.run_status(&first).await == json!("completed") }).await;
    decide("deny", second).await;
    assert_eq!(d.metric("fanin_runs_pending_approval").await, Some(0.0));

    fire(&d, "gated", "{}").await;
    assert_eq!(d.metric("fanin_runs_pending_approval").await, Some(1.0));
    d.kill();
    let d = setup.start();
    assert_eq!(d.metric("fanin_runs_pending_approval").await, Some(1.0), "seeded from the store at start");
    assert_eq!(d.metric("fanin_outbox_depth").await, Some(0.0));
}

/// A registries directory beside the config in Smart Office's own shape:
/// each registry a JSON array of entries.
fn with_array_registries(setup: Setup) -> Setup {
    let dir = setup.dir.path().join("registries");
    std::fs::create_dir_all(&dir).unwrap();
    let registries = [
        ("tools", json!([{"id": "ci_status", "version": "1.0.0", "actions": [{"name": "build.status"}]}])),
        ("capabilities", json!([{"key": "health_watch", "operations": ["ci_status.build.status"]}])),
        ("usecases", json!([{"id": "rolling_deploy", "version": "1.0.0"}])),
    ];
    for (category, content) in registries {
        std::fs::write(dir.join(format!("{category}.json")), content.to_string()).unwrap();
    }
    setup
}

const LEAD_SOP: &str = "[sop]\nname = \"lead\"\ndescription = \"x\"\nexecution_mode = \"auto\"\n\
    max_concurrent = 100\n[[triggers]]\ntype = \"webhook\"\npath = \"/sop/lead\"\n";

/// A body in the shape of Smart Office's CRM samples.
fn lead_body(extra: Value) -> Value {
    let mut body = json!({"contact": {"id": "c-118", "email": "ines.martin@example.org", "status": "prospect"}});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

/// The run-start audit record of `run`.
async fn start_record(d: &Daemon, run: &str) -> Value {
    let (_, audit) = d.get(&format!("/admin/audit?run_id={run}")).await;
    audit["records"].as_array().unwrap().iter().find(|r| r["kind"] == json!("run_started")).unwrap()["detail"].clone()
}

/// A webhook run's legacy envelope, field by field as Smart Office's
/// webhook trigger builds it: the body's session, the body, the decoded
/// query and the request headers without a single credential.
#[tokio::test]
async fn a_webhook_envelope_carries_query_headers_and_the_session_it_continues() {
    let agent = Destination::start(0).await;
    let setup = Setup::new("webhook_secret = \"hook-s3cret\"", &destinations("http://127.0.0.1:9/none", &agent.url))
        .sop("lead", LEAD_SOP);
    let d = setup.start();
    let token = d.pair().await;
    let secrets = [token.as_str(), "hook-s3cret", "sid=77aa", "ak-123", "zz-auth"];
    let body = lead_body(json!({"session_id": "sess_1740816000000"}));
    let (status, reply, _) = d
        .post(
            "/sop/lead?campaign=spring&tag=a&tag=b&q=caf%C3%A9+cr%C3%A8me",
            Some(&token),
            &body.to_string(),
            &[
                ("X-Webhook-Secret", "hook-s3cret"),
                ("Cookie", "sid=77aa"),
                ("X-Api-Key", "ak-123"),
                ("X-Auth-Token", "zz-auth"),
                ("X-Request-Id", "req-42"),
                ("User-Agent", "crm-hook/3.1"),
                ("X-Idempotency-Key", "lead-c-118"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let run = reply["runs"][0]["run_id"].as_str().unwrap().to_string();
    eventually("the legacy envelope", || async { agent.accepted().len() == 1 }).await;

    let envelope = &agent.accepted()[0].envelope;
    fanin::envelope::schema::validate(envelope).expect("what fanin emits");
    fanin::envelope::schema::validate_contract(envelope).expect("what Smart Office accepts");
    assert_eq!(envelope.as_object().unwrap().keys().collect::<Vec<_>>(), ["context", "error", "input", "output"]);
    assert_eq!((&envelope["output"], &envelope["error"]), (&json!({}), &Value::Null));
    let event = &envelope["input"]["event"];
    let keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["body", "headers", "id", "path", "query", "source", "timestamp"]);
    assert_eq!(event["id"], reply["event_id"]);
    assert_eq!(event["source"], json!("webhook"));
    assert_eq!(event["path"], json!("/sop/lead"));
    chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap()).expect("an RFC 3339 timestamp");
    assert_eq!(event["body"], body);
    assert_eq!(event["query"], json!({"campaign": "spring", "tag": ["a", "b"], "q": "café crème"}));
    let headers = event["headers"].as_object().unwrap();
    assert_eq!(headers["x-request-id"], json!("req-42"));
    assert_eq!(headers["user-agent"], json!("crm-hook/3.1"));
    assert_eq!(headers["content-type"], json!("application/json"));
    assert_eq!(headers["x-idempotency-key"], json!("lead-c-118"));
    for withheld in ["authorization", "cookie", "x-webhook-secret", "x-api-key", "x-auth-token"] {
        assert!(!headers.contains_key(withheld), "{withheld} left fanin: {headers:?}");
    }
    let text = envelope.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} left fanin: {text}");
    }
    let memory = &envelope["context"]["memory"];
    assert_eq!(memory["session_id"], json!("sess_1740816000000"), "the body's session goes on");
    assert_eq!(memory["state"]["trigger"], *event);
    assert_eq!(memory["state"]["sop"], json!({"name": "lead", "version": "0.1.0"}));
    assert_eq!(memory["stack"], json!([]));
    assert_eq!(start_record(&d, &run).await["session"], json!({"continued": "sess_1740816000000"}));

    // A memory sent back whole goes on with its state and stack.
    let memory_back = json!({"session_id": "sess_9", "state": {"round": 2}, "stack": ["planner"]});
    let body = lead_body(json!({"context": {"memory": memory_back}}));
    let (status, reply, _) =
        d.post("/sop/lead", Some(&token), &body.to_string(), &[("X-Webhook-Secret", "hook-s3cret")]).await;
    assert_eq!(status, 200, "{reply}");
    eventually("the second envelope", || async { agent.accepted().len() == 2 }).await;
    let memory = agent.accepted()[1].envelope["context"]["memory"].clone();
    assert_eq!(
        (&memory["session_id"], &memory["state"]["round"], &memory["stack"]),
        (&json!("sess_9"), &json!(2), &json!(["planner"]))
    );
    assert_eq!(agent.accepted()[1].envelope["input"]["event"]["query"], json!({}));

    // One the contract refuses starts a new session, and the audit says why.
    let body = lead_body(json!({"context": {"memory": {"session_id": "sess_9", "state": {}, "stack": [1]}}}));
    let (status, reply, _) =
        d.post("/sop/lead", Some(&token), &body.to_string(), &[("X-Webhook-Secret", "hook-s3cret")]).await;
    assert_eq!(status, 200, "{reply}");
    let run = reply["runs"][0]["run_id"].as_str().unwrap().to_string();
    eventually("the third envelope", || async { agent.accepted().len() == 3 }).await;
    assert_eq!(agent.accepted()[2].envelope["context"]["memory"]["session_id"], json!(run));
    let ignored = start_record(&d, &run).await["session"]["ignored"].clone();
    assert!(ignored.as_str().unwrap().contains("stack must be a list of strings"), "{ignored}");
}

/// A run that waits in the backlog across a restart starts with the same
/// event: its query, headers and session come back from the store.
#[tokio::test]
async fn a_deferred_webhook_run_keeps_its_request_and_session_across_a_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/in");
    let sop = LEAD_SOP.replace("max_concurrent = 100", "max_concurrent = 1");
    let setup = Setup::new("", &(destinations("http://127.0.0.1:9/none", &url) + &delivery(1000))).sop("lead", &sop);
    let mut d = setup.start();
    let token = d.pair().await;
    let mut runs = Vec::new();
    for n in 0..2 {
        let body = lead_body(json!({"session_id": format!("sess_{n}")}));
        let path = format!("/sop/lead?n={n}");
        let (status, reply, _) = d.post(&path, Some(&token), &body.to_string(), &[("X-Request-Id", "req-7")]).await;
        assert_eq!(status, 200, "{reply}");
        runs.push(reply["runs"][0].clone());
    }
    assert_eq!(runs[1]["outcome"], json!("deferred"), "{runs:?}");
    d.kill();

    let agent = Destination::start_on(port).await;
    let _d = setup.start();
    eventually("both envelopes", || async { agent.accepted().len() == 2 }).await;
    let deferred = agent
        .accepted()
        .into_iter()
        .find(|s| s.envelope["context"]["memory"]["session_id"] == json!("sess_1"))
        .expect("the deferred run continued its session");
    let event = &deferred.envelope["input"]["event"];
    assert_eq!(event["query"], json!({"n": "1"}));
    assert_eq!(event["headers"]["x-request-id"], json!("req-7"));
    assert!(event["headers"].get("authorization").is_none());
    fanin::envelope::schema::validate(&deferred.envelope).unwrap();
}

/// A cron run is the schedule trigger in both forms, a fired SOP the manual
/// trigger; the registries travel filed under their category, wrapped as
/// Smart Office's registry loader wraps its arrays, and nothing names a
/// path of this machine.
#[tokio::test]
async fn cron_and_manual_runs_are_named_as_smart_office_names_them() {
    let executor = Destination::start(0).await;
    let agent = Destination::start(0).await;
    let cron_executor = "[sop]\nname = \"nightly\"\ndescription = \"x\"\nexecution_mode = \"auto\"\n\
        destination = \"executor\"\nmax_concurrent = 100000\n[[triggers]]\ntype = \"cron\"\nexpression = \"* * * * * *\"\n\
        [[triggers]]\ntype = \"manual\"\n\
        [[steps]]\ntitle = \"Check\"\nbody = \"b\"\ntype = \"tool\"\nref = \"ci_status\"\n";
    let cron_agent = "[sop]\nname = \"digest\"\ndescription = \"x\"\nexecution_mode = \"auto\"\n\
        max_concurrent = 100000\n[[triggers]]\ntype = \"cron\"\nexpression = \"* * * * * *\"\n";
    let setup = with_array_registries(Setup::new("", &destinations(&executor.url, &agent.url)))
        .sop("nightly", cron_executor)
        .sop("digest", cron_agent)
        .sop("notify", AGENT_SOP);
    let d = setup.start();
    eventually("a scheduled envelope of each form", || async {
        !executor.accepted().is_empty() && !agent.accepted().is_empty()
    })
    .await;
    fire(&d, "nightly", r#"{"reason":"by hand"}"#).await;
    fire(&d, "notify", "{}").await;
    let by_source = |seen: Vec<Seen>, source: &str, at: &[&str]| {
        seen.into_iter()
            .map(|s| s.envelope)
            .find(|e| at.iter().fold(e, |v, k| &v[*k]) == &json!(source))
            .unwrap_or_else(|| panic!("no envelope from {source}"))
    };
    eventually("the fired envelopes", || async {
        let sources: Vec<Value> = executor.accepted().iter().map(|s| s.envelope["header"]["source"].clone()).collect();
        sources.contains(&json!("so.trigger.manual"))
            && agent.accepted().iter().any(|s| s.envelope["input"]["event"]["source"] == json!("manual"))
    })
    .await;

    let scheduled = by_source(executor.accepted(), "so.trigger.schedule", &["header", "source"]);
    let trigger = &scheduled["payload"]["memory"]["state"]["trigger"];
    assert_eq!(trigger["source"], json!("schedule"));
    assert_eq!(trigger["rule"], json!("* * * * * *"));
    assert_eq!(trigger["payload"]["expression"], json!("* * * * * *"));
    assert!(trigger.get("topic").is_none() && trigger.get("body").is_none());
    let legacy = by_source(agent.accepted(), "schedule", &["input", "event", "source"]);
    assert_eq!(legacy["input"]["event"]["rule"], json!("* * * * * *"));
    let manual = by_source(executor.accepted(), "so.trigger.manual", &["header", "source"]);
    assert_eq!(manual["payload"]["memory"]["state"]["trigger"]["source"], json!("manual"));
    assert_eq!(manual["payload"]["memory"]["state"]["trigger"]["payload"], json!({"reason": "by hand"}));
    let legacy = by_source(agent.accepted(), "manual", &["input", "event", "source"]);
    assert_eq!(legacy["input"]["event"]["topic"], json!("notify"));

    let files = manual["payload"]["registryFiles"].as_array().unwrap();
    let refs: Vec<&str> = files.iter().map(|f| f["ref"].as_str().unwrap()).collect();
    assert_eq!(refs, ["tools", "capabilities", "usecases"]);
    assert_eq!(files[0]["content"]["tools"][0]["id"], json!("ci_status"), "an array registry wrapped in its category");
    assert_eq!(
        manual["payload"]["options"]["fallbackRegistry"]["usecases"]["usecases"][0]["id"],
        json!("rolling_deploy")
    );
    let dir = setup.dir.path().to_str().unwrap().to_string();
    for seen in executor.accepted().into_iter().chain(agent.accepted()) {
        fanin::envelope::schema::validate(&seen.envelope).unwrap();
        fanin::envelope::schema::validate_contract(&seen.envelope).unwrap();
        assert!(!seen.envelope.to_string().contains(&dir), "a server path left fanin: {}", seen.envelope);
    }
}
