//! Pairing codes, bearer tokens and the lockout, through HTTP and the CLI.

mod common;

use common::*;
use serde_json::json;

fn setup() -> Setup {
    Setup::new("pair_rate_limit_per_minute = 100", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""))
}

async fn pair_with(d: &Daemon, code: &str) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let r = d.http.post(d.url("/pair")).header("X-Pairing-Code", code).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap(), headers)
}

#[tokio::test]
async fn a_pairing_code_works_once() {
    let setup = setup();
    let d = setup.start();
    let code = d.pairing_code.clone().expect("daemon prints a code when no token exists");
    assert_eq!(code.len(), 6);
    let (status, body, _) = pair_with(&d, &code).await;
    assert_eq!(status, 200);
    assert_eq!(body["paired"], json!(true));
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("fanin_") && token.len() == 70);
    let (status, body, _) = pair_with(&d, &code).await;
    assert_eq!((status, body), (403, json!({"error": "invalid_pairing_code"})));
}

#[tokio::test]
async fn no_code_is_printed_once_a_token_exists_and_fanin_pair_prints_one_any_time() {
    let setup = setup();
    let mut d = setup.start();
    let token = d.pair().await;
    d.stop();
    let d = setup.start();
    assert_eq!(d.pairing_code, None);
    // The daemon is running; the CLI writes a fresh code into the same store.
    let out = setup.cli(&["pair"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let code = stdout.trim().strip_prefix("Pairing code: ").expect("prints the code").to_string();
    let (status, body, _) = pair_with(&d, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["token"].as_str().unwrap(), token);
}

#[tokio::test]
async fn five_wrong_codes_lock_the_client_out() {
    let setup = setup();
    let d = setup.start();
    let code = d.pairing_code.clone().unwrap();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        assert_eq!(pair_with(&d, wrong).await.0, 403);
    }
    // Locked out: even the right code is refused now, with a Retry-After.
    let (status, body, headers) = pair_with(&d, &code).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], json!("locked_out"));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((290..=300).contains(&retry), "Retry-After {retry}");
}

#[tokio::test]
async fn the_store_never_holds_a_token_in_clear() {
    let setup = setup();
    let mut d = setup.start();
    let token = d.pair().await;
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 200);
    d.stop();
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = setup.db_path().into_os_string();
        p.push(suffix);
        if let Ok(b) = std::fs::read(&p) {
            bytes.extend(b);
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains(&token[6..]), "the token's secret part is in the database file");
    let hash = hex_sha256(&token);
    assert!(text.contains(&hash), "the token's SHA-256 is what the store keeps");
}

fn hex_sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[tokio::test]
async fn tokens_are_listed_and_revoked_from_the_cli_while_the_daemon_runs() {
    let setup = setup();
    let d = setup.start();
    let token = d.pair().await;
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 200);

    let out = setup.cli(&["tokens", "list", "--json"]);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["tokens"][0]["prefix"], json!(&token[6..14]));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&token[14..]), "list shows only the prefix");

    let out = setup.cli(&["tokens", "revoke", &token[6..14]]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 401, "a revoked token is refused at once");

    let out = setup.cli(&["tokens", "revoke", "ffffffff"]);
    assert_eq!(out.status.code(), Some(1), "revoking nothing is a user error");
}
