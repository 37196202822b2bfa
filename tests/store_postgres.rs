//! A daemon whose store is PostgreSQL, through the real binary and CLI:
//! a webhook's run is there for the CLI on the same URL, and still there
//! after the daemon restarts; a second daemon on the same store is refused;
//! an envelope another process queues there wakes the daemon's outbox
//! worker; every command of the CLI works on it. Skipped, saying so,
//! without `FANIN_TEST_POSTGRES_URL`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::postgres::TestSchema;
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_daemon_on_postgres_keeps_its_runs_for_the_cli_and_across_a_restart() {
    let Some(schema) = TestSchema::from_env("a_daemon_on_postgres_keeps_its_runs").await else { return };
    let setup = Setup::new("webhook_rate_limit_per_minute = 0", "")
        .sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""))
        .store_url(&schema.url);
    let mut d = setup.start();
    let (status, ready) = d.wait_ready("the store up", |status, _| status == 200).await;
    assert_eq!((status, &ready["store"], &ready["store_kind"]), (200, &json!("ok"), &json!("postgres")), "{ready}");
    let token = d.pair().await;
    let (status, body, _) = d.post("/sop/deploy", Some(&token), r#"{"n": 1}"#, &[("X-Idempotency-Key", "k-1")]).await;
    assert_eq!(status, 200, "{body}");
    let run_id = body["runs"][0]["run_id"].as_str().expect("a run").to_string();

    let listed = setup.cli_json(&["runs", "list", "--json"]);
    let ids: Vec<&str> = listed["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [run_id.as_str()], "the CLI reads the daemon's store: {listed}");
    assert!(!setup.db_path().exists(), "no SQLite file beside the config");
    assert!(setup.dir.path().join("pairing.key").exists(), "the pairing key lives beside config.toml");

    d.stop();
    let d = setup.start();
    assert_eq!(d.run(&run_id).await["run_id"], json!(run_id), "the run survives the restart");
    let (status, again, _) = d.post("/sop/deploy", Some(&token), r#"{"n": 1}"#, &[("X-Idempotency-Key", "k-1")]).await;
    assert_eq!((status, &again["runs"][0]["run_id"]), (200, &json!(run_id)), "the key still holds: {again}");
    assert_eq!(setup.cli_json(&["runs", "list", "--json"])["runs"].as_array().unwrap().len(), 1);
    let stored: i64 = schema.client().await.query_one("SELECT COUNT(*) FROM runs", &[]).await.unwrap().get(0);
    assert_eq!(stored, 1, "in the test's own schema");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_postgres_store_is_refused() {
    let Some(schema) = TestSchema::from_env("a_second_daemon_on_the_same_postgres_store_is_refused").await else {
        return;
    };
    let setup = Setup::new("", "").store_url(&schema.url);
    let _first = setup.start();
    // The same store from another directory (its own config, port 0).
    let other = Setup::new("", "").store_url(&schema.url);
    let out = std::process::Command::new(BIN).args(["daemon", "--config"]).arg(other.config_path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another fanin daemon is running on it") && stderr.contains(&schema.name), "{stderr}");
}

/// The Agent: a server that takes every envelope, and how many it took.
async fn agent() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = Arc::new(AtomicUsize::new(0));
    let count = taken.clone();
    let app = axum::Router::new().route(
        "/in",
        axum::routing::post(move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::OK }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}/in"), taken)
}

#[tokio::test]
async fn an_envelope_another_process_queues_on_the_store_wakes_the_daemon_s_outbox_worker() {
    let Some(schema) = TestSchema::from_env("an_envelope_another_process_queues").await else { return };
    let (url, taken) = agent().await;
    let destination = format!("[destinations.agent]\nurl = \"{url}\"\n");
    let sop =
        "[sop]\nname = \"notify\"\ndescription = \"x\"\nexecution_mode = \"auto\"\n[[triggers]]\ntype = \"manual\"\n";
    let setup = Setup::new("", &destination).sop("notify", sop).store_url(&schema.url);
    let log = setup.dir.path().join("listen.log");
    let file = std::fs::File::create(&log).unwrap();
    let _d = setup.start_with(|command| {
        command.stderr(file).env("RUST_LOG", "warn,fanin::store::postgres::listen=info");
    });
    // Listening starts by waking everybody; from then on only a
    // notification can wake a worker that has nothing due.
    eventually("the daemon to listen", || async {
        std::fs::read_to_string(&log).unwrap().contains("listening for other processes' commits")
    })
    .await;
    // The same store and SOPs under a config whose daemon does not run: the
    // CLI fires in its own process, as a replica's dispatcher would.
    let elsewhere = Setup::new("", &destination).sop("notify", sop).store_url(&schema.url);
    for fired in 1..=2 {
        let out = elsewhere.cli(&["fire", "notify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        eventually("the envelope delivered by the daemon", || async { taken.load(Ordering::SeqCst) == fired }).await;
    }
}

/// Every command of the CLI on a PostgreSQL store, as on SQLite: those that
/// read and those that write, without the daemon (writing the store
/// themselves) and beside it (through it where they go through it).
#[tokio::test]
async fn every_command_of_the_cli_works_on_a_postgres_store() {
    let Some(schema) = TestSchema::from_env("every_command_of_the_cli_works").await else { return };
    let gated = "[sop]\nname = \"gated\"\ndescription = \"x\"\nexecution_mode = \"supervised\"\nmax_concurrent = 10\n\
                 [[triggers]]\ntype = \"manual\"\n";
    let setup = Setup::new("", "")
        .sop("deploy", &(webhook_sop("deploy", "/sop/deploy", "") + "\n[[triggers]]\ntype = \"manual\"\n"))
        .sop("gated", gated)
        .store_url(&schema.url);
    let ok = |args: &[&str]| {
        let out = setup.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let run_of = |reply: &serde_json::Value| reply["runs"][0]["run_id"].as_str().expect("a run").to_string();

    // Without a daemon.
    ok(&["validate"]);
    let sops = setup.cli_json(&["sop", "list", "--json"]);
    assert_eq!(sops["sops"].as_array().map(Vec::len), Some(2), "{sops}");
    assert!(ok(&["sop", "show", "gated"]).contains("supervised"));
    let explained = setup.cli_json(&["explain", "--source", "sop_webhook", "--topic", "/sop/deploy", "--json"]);
    assert_eq!(explained["matches"][0]["sop"], json!("deploy"), "{explained}");
    let first = run_of(&setup.cli_json(&["fire", "gated", "--json"]));
    let second = run_of(&setup.cli_json(&["fire", "gated", "--json"]));
    let pending = setup.cli_json(&["runs", "pending", "--json"]);
    let waiting: Vec<&str> =
        pending["pending"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(waiting, [first.as_str(), second.as_str()], "oldest first: {pending}");
    ok(&["runs", "approve", &first]);
    ok(&["runs", "deny", &second, "--reason", "not now"]);
    assert_eq!(setup.cli_json(&["runs", "show", &first, "--json"])["status"], json!("running"));
    assert_eq!(setup.cli_json(&["runs", "show", &second, "--json"])["status"], json!("cancelled"));
    ok(&["runs", "cancel", &first]);
    assert_eq!(setup.cli_json(&["runs", "show", &first, "--json"])["status"], json!("cancelled"));
    let kinds: Vec<String> = ok(&["audit", "--run", &first, "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.starts_with(&["run_started".to_string()]) && kinds.contains(&"run_cancelled".into()), "{kinds:?}");
    let code = ok(&["pair"]);
    assert!(code.chars().any(|c| c.is_ascii_digit()), "a code: {code}");

    // Beside the daemon.
    let d = setup.start();
    let token = d.pair().await;
    let tokens = setup.cli_json(&["tokens", "list", "--json"]);
    let prefix = tokens["tokens"][0]["prefix"].as_str().expect("the paired token").to_string();
    assert!(token.contains(&prefix), "{tokens}");
    let fired = run_of(&setup.cli_json(&["fire", "deploy", "--json"]));
    assert_eq!(d.run(&fired).await["source"], json!("manual"), "the daemon started it");
    let outbox = setup.cli_json(&["outbox", "list", "--json"]);
    let entry = outbox["outbox"].as_array().unwrap().iter().find(|e| e["run_id"] == json!(fired)).cloned();
    let entry = entry.unwrap_or_else(|| panic!("the run's envelope waits for its destination: {outbox}"));
    let retry = setup.cli(&["outbox", "retry", entry["id"].as_str().unwrap()]);
    assert_eq!(retry.status.code(), Some(1), "only a dead letter is retried");
    ok(&["runs", "list"]);
    ok(&["tokens", "revoke", &prefix]);
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 401, "revoked");
}
