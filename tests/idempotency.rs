//! `X-Idempotency-Key`: duplicates, scoping per caller and endpoint path,
//! a reused key with another body refused, survival across a restart, and
//! one run for concurrent requests with one key.

mod common;

use common::*;
use serde_json::json;

fn setup() -> Setup {
    let door = "[sop]\nname = \"door\"\ndescription = \"test\"\nexecution_mode = \"auto\"\n\
        max_concurrent = 1000\n\n[[triggers]]\ntype = \"peripheral\"\nboard = \"bridge\"\nsignal = \"door\"\n";
    Setup::new("webhook_rate_limit_per_minute = 0", "[peripherals.bridge]\ntransport = \"http\"\n")
        .sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""))
        .sop("hook", &webhook_sop("hook", "/webhook", ""))
        .sop("door", door)
}

/// A second caller: a token bought with a fresh code from `fanin pair`.
async fn another_token(setup: &Setup, d: &Daemon) -> String {
    let out = setup.cli(&["pair"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let code = stdout.trim().strip_prefix("Pairing code: ").expect("prints the code").to_string();
    let r = d.http.post(d.url("/pair")).header("X-Pairing-Code", code).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_string()
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
    let (status, dup, _) = d.post("/sop/deploy", Some(&token), r#"{"n":1}"#, &key).await;
    assert_eq!(status, 200);
    assert_eq!(dup["status"], json!("duplicate"));
    assert_eq!(dup["idempotency_key"], json!("abc"));
    assert_eq!(dup["runs"], first["runs"], "a duplicate reports the original runs");
    assert_eq!(dup.as_object().unwrap().get("request_sha256"), None, "the fingerprint stays in the store");
    assert_eq!(run_count(&d).await, 1);
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused_and_starts_nothing() {
    let setup = setup();
    let mut d = setup.start();
    let token = d.pair().await;
    let key = [("X-Idempotency-Key", "abc")];
    assert_eq!(d.post("/sop/deploy", Some(&token), r#"{"n":1}"#, &key).await.1["status"], json!("accepted"));
    let (status, body, headers) = d.post("/sop/deploy", Some(&token), r#"{"n":2}"#, &key).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], json!("idempotency_key_reused"));
    assert_eq!(body["idempotency_key"], json!("abc"));
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    // Byte for byte: the same JSON written differently is another body.
    assert_eq!(d.post("/sop/deploy", Some(&token), r#"{ "n": 1 }"#, &key).await.0, 422);
    assert_eq!(run_count(&d).await, 1);

    // The same on a board's signal.
    let path = "/peripheral/bridge/door";
    assert_eq!(d.post(path, Some(&token), "open", &key).await.1["status"], json!("accepted"));
    assert_eq!(d.post(path, Some(&token), "open", &key).await.1["status"], json!("duplicate"));
    assert_eq!(d.post(path, Some(&token), "closed", &key).await.0, 422);
    assert_eq!(run_count(&d).await, 2);

    // And after a restart.
    d.kill();
    let d = setup.start();
    assert_eq!(d.post("/sop/deploy", Some(&token), r#"{"n":2}"#, &key).await.0, 422);
    assert_eq!(d.post("/sop/deploy", Some(&token), r#"{"n":1}"#, &key).await.1["status"], json!("duplicate"));
    assert_eq!(run_count(&d).await, 2);
}

#[tokio::test]
async fn two_callers_with_one_key_get_runs_of_their_own() {
    let setup = setup();
    let mut d = setup.start();
    let a = d.pair().await;
    let b = another_token(&setup, &d).await;
    let key = [("X-Idempotency-Key", "shared")];
    let (_, first_a, _) = d.post("/sop/deploy", Some(&a), r#"{"from":"a"}"#, &key).await;
    let (_, first_b, _) = d.post("/sop/deploy", Some(&b), r#"{"from":"b"}"#, &key).await;
    assert_eq!(first_a["status"], json!("accepted"), "{first_a}");
    assert_eq!(first_b["status"], json!("accepted"), "B's event is not dropped as A's duplicate: {first_b}");
    assert_ne!(first_a["runs"], first_b["runs"], "B does not get A's run ids");
    // The same body from both: still each caller's own key.
    assert_eq!(d.post("/webhook", Some(&a), "{}", &key).await.1["status"], json!("accepted"));
    assert_eq!(d.post("/webhook", Some(&b), "{}", &key).await.1["status"], json!("accepted"));
    assert_eq!(run_count(&d).await, 4);

    d.kill();
    let d = setup.start();
    let (_, again_b, _) = d.post("/sop/deploy", Some(&b), r#"{"from":"b"}"#, &key).await;
    assert_eq!(again_b["status"], json!("duplicate"), "{again_b}");
    assert_eq!(again_b["runs"], first_b["runs"], "a retry gets the caller's own runs back");
    let (_, again_a, _) = d.post("/sop/deploy", Some(&a), r#"{"from":"a"}"#, &key).await;
    assert_eq!(again_a["runs"], first_a["runs"]);
    let run_b = first_b["runs"][0]["run_id"].as_str().unwrap();
    assert_eq!(d.get(&format!("/admin/runs/{run_b}")).await.1["payload"], json!({"from": "b"}));
    assert_eq!(run_count(&d).await, 4);
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
