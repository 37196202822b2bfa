//! `fanin store copy` through the real binary: a daemon's SQLite store,
//! copied into PostgreSQL once the daemon is stopped, is the same store to
//! the CLI and to a daemon started on the PostgreSQL URL (runs, audit,
//! idempotency keys, the paired token). Refused while the daemon runs and
//! into a target that has rows. Skipped, saying so, without
//! `FANIN_TEST_POSTGRES_URL`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::postgres::TestSchema;
use common::*;
use serde_json::{json, Value};

/// `fanin store copy` run in `cwd`, where no config.toml is.
fn copy(cwd: &Path, from: &str, to: &str, json: bool) -> Output {
    let mut command = Command::new(BIN);
    command.current_dir(cwd).args(["store", "copy", "--from", from, "--to", to]);
    if json {
        command.arg("--json");
    }
    command.output().expect("run fanin store copy")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn audit_lines(setup: &Setup) -> Vec<Value> {
    let out = setup.cli(&["audit", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[tokio::test]
async fn a_stopped_daemons_store_copied_into_postgres_is_the_same_store_there() {
    let Some(schema) = TestSchema::from_env("a_stopped_daemons_store_copied_into_postgres").await else { return };
    let setup =
        Setup::new("webhook_rate_limit_per_minute = 0", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let data = setup.dir.path().join("data");
    let mut d = setup.start();
    let token = d.pair().await;
    let (status, body, _) = d.post("/sop/deploy", Some(&token), r#"{"n": 1}"#, &[("X-Idempotency-Key", "k-1")]).await;
    assert_eq!(status, 200, "{body}");
    let run_id = body["runs"][0]["run_id"].as_str().expect("a run").to_string();

    let refused = copy(&data, "sqlite://fanin.db", &schema.url, false);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("another fanin daemon is running on it"), "{}", stderr(&refused));
    d.stop();
    let before = audit_lines(&setup);

    let copied = copy(&data, "sqlite://fanin.db", &schema.url, true);
    assert!(copied.status.success(), "{}", stderr(&copied));
    let summary: Value = serde_json::from_slice(&copied.stdout).unwrap();
    assert_eq!(summary["tables"][0], json!({"table": "runs", "rows": 1}), "{summary}");
    assert_eq!(summary["from"], json!(data.join("fanin.db").display().to_string()), "{summary}");
    assert!(stderr(&copied).contains("runs: 1 row copied"), "{}", stderr(&copied));
    assert!(stderr(&copied).contains("pairing_codes: 1 not copied"), "{}", stderr(&copied));

    let again = copy(&data, "sqlite://fanin.db", &schema.url, false);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let first = stderr(&again).lines().next().unwrap_or_default().to_owned();
    assert!(first.starts_with("error: store postgres://") && first.contains("not empty: tables runs, "), "{first}");

    let setup = setup.store_url(&schema.url);
    let listed = setup.cli_json(&["runs", "list", "--json"]);
    let ids: Vec<&str> = listed["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [run_id.as_str()], "{listed}");
    assert_eq!(audit_lines(&setup), before, "the audit trail, numbers and all");

    let d = setup.start();
    assert_eq!(d.pairing_code, None, "the copied token counts: no code is printed");
    let (status, again, _) = d.post("/sop/deploy", Some(&token), r#"{"n": 1}"#, &[("X-Idempotency-Key", "k-1")]).await;
    assert_eq!((status, &again["runs"][0]["run_id"]), (200, &json!(run_id)), "the key still holds: {again}");
    let (status, next, _) = d.post("/sop/deploy", Some(&token), r#"{"n": 2}"#, &[("X-Idempotency-Key", "k-2")]).await;
    assert_eq!(status, 200, "the token still works: {next}");
    let next_id = next["runs"][0]["run_id"].as_str().unwrap();
    let copied_max = before.iter().map(|r| r["seq"].as_i64().unwrap()).max().unwrap();
    let records = d.audit_of(next_id).await;
    assert!(records.iter().all(|r| r["seq"].as_i64().unwrap() > copied_max), "{records:?}");
}
