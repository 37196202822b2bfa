//! Pairing codes, bearer tokens, the guess budget and the lockout, through
//! HTTP, the CLI and the store's files.

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
async fn five_wrong_codes_lock_out_a_clients_wrong_codes_but_a_live_code_still_pairs() {
    let setup = setup();
    let d = setup.start();
    let code = d.pairing_code.clone().unwrap();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    // Everyone behind one proxy shares the operator's address.
    for _ in 0..5 {
        assert_eq!(pair_with(&d, wrong).await.0, 403);
    }
    // Locked out: further wrong codes get 429, with a Retry-After.
    let (status, body, headers) = pair_with(&d, wrong).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], json!("locked_out"));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((290..=300).contains(&retry), "Retry-After {retry}");
    // The operator's fresh code pairs all the same.
    let (status, body, _) = pair_with(&d, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paired"], json!(true));
}

/// A client whose requests come from `ip` (any 127.0.0.0/8 address reaches
/// the daemon's loopback listener).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}

#[tokio::test]
async fn wrong_codes_from_many_addresses_retire_a_code_and_a_code_issued_later_still_pairs() {
    let setup = setup();
    let d = setup.start();
    let code = d.pairing_code.clone().unwrap();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    // The budget is 100 wrong codes per code, whoever sends them: one each
    // from 100 addresses, none of them ever locked out.
    for i in 1..=100 {
        let r = client_from(&format!("127.0.1.{i}"))
            .post(d.url("/pair"))
            .header("X-Pairing-Code", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "guess {i}");
    }
    let (status, body, _) = pair_with(&d, &code).await;
    assert_eq!((status, body), (403, json!({"error": "invalid_pairing_code"})), "the code is retired");
    let out = setup.cli(&["audit", "--json"]);
    let retired = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "pairing_code_retired")
        .count();
    assert_eq!(retired, 1, "the retirement is audited");

    // Those guesses were made before this code existed: it has its whole budget.
    let out = setup.cli(&["pair"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let fresh = stdout.trim().strip_prefix("Pairing code: ").unwrap().to_string();
    let (status, body, _) = pair_with(&d, &fresh).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_store_does_not_give_a_pairing_code_away() {
    let setup = setup();
    let d = setup.start();
    let code = d.pairing_code.clone().unwrap();
    let text = store_text(&setup);
    assert!(!text.contains(&hex_sha256(&code)), "the code's plain SHA-256 is in the store");
    // What it holds is the code's HMAC under the key beside it.
    let key = std::fs::read(setup.dir.path().join("data/pairing.key")).unwrap();
    assert_eq!(key.len(), 32);
    assert!(text.contains(&hex_hmac(&key, &code)), "the store keeps the code's HMAC-SHA256");
    assert_eq!(pair_with(&d, &code).await.0, 200);
}

#[cfg(unix)]
#[tokio::test]
async fn the_store_and_the_files_beside_it_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let setup = setup();
    let mut d = setup.start();
    d.pair().await;
    let data = setup.dir.path().join("data");
    let files = ["fanin.db", "fanin.db-wal", "fanin.db-shm", "fanin.db.lock", "pairing.key"];
    assert_eq!(mode(&data), 0o700, "the data directory");
    for f in files {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    d.stop();
    // A store someone opened up is made owner-only again at start.
    for f in ["fanin.db", "pairing.key"] {
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let _d = setup.start();
    for f in files {
        assert_eq!(mode(&data.join(f)), 0o600, "{f} after a restart");
    }
}

#[tokio::test]
async fn the_store_never_holds_a_token_in_clear() {
    let setup = setup();
    let mut d = setup.start();
    let token = d.pair().await;
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 200);
    d.stop();
    let text = store_text(&setup);
    assert!(!text.contains(&token[6..]), "the token's secret part is in the database file");
    let hash = hex_sha256(&token);
    assert!(text.contains(&hash), "the token's SHA-256 is what the store keeps");
}

/// Everything the store's files hold, as text.
fn store_text(setup: &Setup) -> String {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = setup.db_path().into_os_string();
        p.push(suffix);
        if let Ok(b) = std::fs::read(&p) {
            bytes.extend(b);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn hex_sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn hex_hmac(key: &[u8], s: &str) -> String {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(s.as_bytes());
    hex::encode(mac.finalize().into_bytes())
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
