//! Nothing acknowledged is lost: a daemon killed with SIGKILL in the middle
//! of a burst of webhooks still has, after restart, every run it answered
//! "accepted" for, with its run-start audit record. A store that refuses
//! writes is said so by `/ready` until a write succeeds again.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_no_acknowledged_run() {
    let setup =
        Setup::new("webhook_rate_limit_per_minute = 0", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let mut d = setup.start();
    let token = d.pair().await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (http, url, token, acked) = (d.http.clone(), d.url("/sop/deploy"), token.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let sent =
                    http.post(&url).bearer_auth(&token).body(format!(r#"{{"worker":{w},"i":{i}}}"#)).send().await;
                let Ok(response) = sent else { return };
                if response.status() != 200 {
                    return;
                }
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                acked.lock().unwrap().push(body["runs"][0]["run_id"].as_str().unwrap().to_string());
            }
        }));
    }
    eventually("200 acknowledged webhooks", || async { acked.lock().unwrap().len() >= 200 }).await;
    d.kill(); // SIGKILL, with requests in flight
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200);

    // Read the store through the CLI, as an operator would after the crash.
    let out = setup.cli(&["runs", "list", "--json", "--limit", "1000000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stored: HashSet<&str> =
        runs["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(id.as_str())).collect();
    assert!(lost.is_empty(), "{} acknowledged runs lost: {lost:?}", lost.len());

    let out = setup.cli(&["audit", "--json"]);
    let audited: HashSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "run_started")
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    assert!(acked.iter().all(|id| audited.contains(id)), "every acknowledged run has its run-start audit record");

    // And the daemon starts again on the same store.
    let d = setup.start();
    assert_eq!(d.get("/health").await.0, 200);
}

#[tokio::test]
async fn a_store_refusing_writes_makes_ready_say_so_until_a_write_succeeds() {
    let manual = "[sop]\nname = \"poke\"\ndescription = \"x\"\nexecution_mode = \"auto\"\nmax_concurrent = 100\n\
        [[triggers]]\ntype = \"manual\"\n[[steps]]\ntitle = \"Look\"\nbody = \"b\"\n";
    let setup = Setup::new("", "").sop("poke", manual);
    let d = setup.start();
    let fire = || d.post("/admin/sops/poke/run", None, "{}", &[]);
    assert_eq!(fire().await.0, 200);
    assert_eq!(d.get("/ready").await.0, 200);

    // Another process holds the store's write lock (as a stuck `fanin` CLI
    // or a backup tool would): every write waits out the busy timeout and
    // is refused.
    let other = rusqlite::Connection::open(setup.db_path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, body, _) = fire().await;
    assert_eq!((status, body["error"].clone()), (503, json!("store_unavailable")), "{body}");
    let (status, ready) = d.get("/ready").await;
    assert_eq!((status, ready["error"].clone()), (503, json!("not_ready")), "{ready}");
    let said = ready["store"].as_str().unwrap();
    assert!(said.starts_with("failing: ") && said.contains("database is locked"), "the reason: {said}");
    assert_eq!(ready["store_failing"]["writes_refused"], json!(1), "{ready}");
    assert_eq!(d.metric("fanin_store_writes_failing").await, Some(1.0));

    // The lock is let go: the next write succeeds, and /ready says so.
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(fire().await.0, 200);
    let (status, ready) = d.get("/ready").await;
    assert_eq!((status, ready["store"].clone()), (200, json!("ok")), "{ready}");
    assert_eq!(d.metric("fanin_store_writes_failing").await, Some(0.0));
}
