//! Nothing acknowledged is lost: a daemon killed with SIGKILL in the middle
//! of a burst of webhooks still has, after restart, every run it answered
//! "accepted" for, with its run-start audit record.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::Value;

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
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
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
