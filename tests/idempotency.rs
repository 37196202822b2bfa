//! `X-Idempotency-Key`: duplicates, namespacing per endpoint path, survival
//! across a restart, and one run for concurrent requests with one key.

mod common;

use common::*;
use serde_json::json;

fn setup() -> Setup {
    Setup::new("webhook_rate_limit_per_minute = 0", "")
        .sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""))
        .sop("hook", &webhook_sop("hook", "/webhook", ""))
}

async fn run_count(d: &Daemon) -> usize {
    d.get("/admin/runs").await.1["runs"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_repeated_key_is_a_duplicate_and_starts_nothing() {
    let setup = setup();
    let d = setup.start();
    let token = d.pair().await;
    let key = [("X-Idempotency-Key", "abc")];
    let (status, first, _) = d.post("/sop/deploy", Some(&token), r#"{"n":1}"#, &key).await;
    assert_eq!((status, first["status"].clone()), (200, json!("accepted")));
    let (status, dup, _) = d.post("/sop/deploy", Some(&token), r#"{"n":2}"#, &key).await;
    assert_eq!(status, 200);
    assert_eq!(dup["status"], json!("duplicate"));
    assert_eq!(dup["idempotency_key"], json!("abc"));
    assert_eq!(dup["runs"], first["runs"], "a duplicate reports the original runs");
    assert_eq!(run_count(&d).await, 1);
}

#[tokio::test]
async fn keys_are_namespaced_per_endpoint_path() {
    let setup = setup();
    let d = setup.start();
    let token = d.pair().await;
    let key = [("X-Idempotency-Key", "same")];
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &key).await.1["status"], json!("accepted"));
    assert_eq!(d.post("/webhook", Some(&token), "{}", &key).await.1["status"], json!("accepted"));
    assert_eq!(d.post("/webhook", Some(&token), "{}", &key).await.1["status"], json!("duplicate"));
    assert_eq!(run_count(&d).await, 2);
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let setup = setup();
    let mut d = setup.start();
    let token = d.pair().await;
    let key = [("X-Idempotency-Key", "persisted")];
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &key).await.1["status"], json!("accepted"));
    d.kill();
    let d = setup.start();
    let (status, body, _) = d.post("/sop/deploy", Some(&token), "{}", &key).await;
    assert_eq!((status, body["status"].clone()), (200, json!("duplicate")));
    assert_eq!(run_count(&d).await, 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_start_one_run() {
    let setup = setup();
    let d = setup.start();
    let token = d.pair().await;
    let requests = (0..16).map(|_| d.post("/sop/deploy", Some(&token), "{}", &[("X-Idempotency-Key", "race")]));
    let replies = futures::future::join_all(requests).await;
    let accepted = replies.iter().filter(|(s, b, _)| *s == 200 && b["status"] == json!("accepted")).count();
    let duplicates = replies.iter().filter(|(s, b, _)| *s == 200 && b["status"] == json!("duplicate")).count();
    assert_eq!((accepted, duplicates), (1, 15));
    assert_eq!(run_count(&d).await, 1);
}
