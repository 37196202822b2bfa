//! SOPs written for ZeroClaw, through the real binary: their conditions
//! start runs as ZeroClaw's docs say they should, and what fanin reads
//! otherwise (unquoted words, numeric weekdays in 6/7-field cron, day of
//! month with weekday) is warned about by `fanin validate` and at daemon
//! start, naming the file, the key and what to write instead.

mod common;

use std::fs::File;

use common::*;
use serde_json::{json, Value};

fn sop(name: &str, trigger: &str) -> String {
    format!("[sop]\nname = \"{name}\"\ndescription = \"written for ZeroClaw\"\n\n[[triggers]]\n{trigger}")
}

/// A SOP per thing ZeroClaw users write that fanin reads otherwise, and
/// one it reads the same.
fn setup() -> Setup {
    Setup::new("", "")
        .sop(
            "word",
            &sop("word", "type = \"webhook\"\npath = \"/sop/word\"\ncondition = \"$.data.temp == critical\"\n"),
        )
        .sop("weekdays", &sop("weekdays", "type = \"cron\"\nexpression = \"0 0 9 * * 2-6\"\n"))
        .sop("first-monday", &sop("first-monday", "type = \"cron\"\nexpression = \"0 9 1 * MON\"\n"))
        .sop("blank", &sop("blank", "type = \"webhook\"\npath = \"/sop/blank\"\ncondition = \"\"\n"))
        .sop("named", &sop("named", "type = \"cron\"\nexpression = \"0 0 9 * * MON-FRI\"\n"))
}

/// The three warnings, each found by its SOP and key, with what it must say.
const EXPECTED: &[(&str, &str, &[&str])] = &[
    ("word/SOP.toml", "triggers[0].condition", &["unquoted `critical`", "the string \"critical\""]),
    ("weekdays/SOP.toml", "triggers[0].expression", &["fires on TUE-SAT", "fired on MON-FRI", "`0 0 9 * * MON-FRI`"]),
    ("first-monday/SOP.toml", "triggers[0].expression", &["either matches", "`0 9 1 * +MON`"]),
];

#[track_caller]
fn assert_warned(lines: &[&str]) {
    for (file, key, phrases) in EXPECTED {
        let line =
            lines.iter().find(|l| l.contains(file)).unwrap_or_else(|| panic!("no warning about {file} in {lines:#?}"));
        assert!(line.contains(key), "{key} not in {line}");
        for phrase in *phrases {
            assert!(line.contains(phrase), "{phrase:?} not in {line}");
        }
    }
    for quiet in ["blank/SOP.toml", "named/SOP.toml"] {
        assert!(!lines.iter().any(|l| l.contains(quiet)), "{quiet} needs no warning: {lines:#?}");
    }
}

#[test]
fn validate_loads_them_and_warns_where_fanin_reads_them_otherwise() {
    let setup = setup();
    let out = setup.cli(&["validate"]);
    assert!(out.status.success(), "warnings are not errors: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), EXPECTED.len(), "{stdout}");
    assert_warned(&warnings);
    assert!(stdout.contains("5 SOP(s) are valid"), "{stdout}");

    let out = setup.cli(&["validate", "--json"]);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], json!(true));
    assert_eq!(report["sops"], json!(5));
    let warnings: Vec<&str> = report["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_warned(&warnings);
}

#[tokio::test]
async fn the_daemon_logs_the_same_warnings_at_start() {
    let setup = setup();
    let log = setup.dir.path().join("daemon.log");
    let file = File::create(&log).unwrap();
    let _d = Daemon::start_with(&setup.config_path(), |command| {
        command.stderr(file);
    });
    eventually("the start-up warnings in the log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { EXPECTED.iter().all(|(file, ..)| text.contains(file)) }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("SOP.toml")).collect();
    assert_warned(&lines);
}

/// `(SOP, condition, payload that starts a run, payload that does not)`.
const CONDITIONS: &[(&str, &str, &str, &str)] = &[
    // ZeroClaw's docs: "compare them as quoted strings".
    ("bool", r#"$.active == "true""#, r#"{"active": true}"#, r#"{"active": false}"#),
    ("word", "$.data.temp == critical", r#"{"data": {"temp": "critical"}}"#, r#"{"data": {"temp": "ok"}}"#),
    ("numeric-key", "$.codes.0 == 7", r#"{"codes": {"0": 7}}"#, r#"{"codes": {"1": 7}}"#),
    ("numeric-index", "$.readings.1 == 20", r#"{"readings": [10, 20, 30]}"#, r#"{"readings": [20]}"#),
    ("dashed", "$.error-rate > 0.05", r#"{"error-rate": 0.2}"#, r#"{"error-rate": 0.01}"#),
    // Kept on purpose: fanin's `== null` is JSON null, not ZeroClaw's text.
    ("null", "$.x == null", r#"{"x": null}"#, r#"{"x": "null"}"#),
];

#[tokio::test]
async fn their_conditions_start_runs_as_zeroclaw_says() {
    let mut setup = Setup::new("", "");
    for (name, condition, ..) in CONDITIONS {
        let trigger = format!("condition = {}\n", toml::Value::from(*condition));
        setup = setup.sop(name, &(webhook_sop(name, &format!("/sop/{name}"), "") + &trigger));
    }
    setup = setup.sop("blank", &(webhook_sop("blank", "/sop/blank", "") + "condition = \"  \"\n"));
    let d = setup.start();
    let token = d.pair().await;
    for (name, condition, hit, miss) in CONDITIONS {
        let path = format!("/sop/{name}");
        let (status, body, _) = d.post(&path, Some(&token), hit, &[]).await;
        assert_eq!(status, 200, "`{condition}` on {hit}: {body}");
        assert_eq!(body["matched_sops"], json!([name]), "{body}");
        let (status, body, _) = d.post(&path, Some(&token), miss, &[]).await;
        assert_eq!((status, &body["error"]), (404, &json!("no_matching_sop")), "`{condition}` on {miss}: {body}");
    }
    // A blank condition is no condition: every body starts a run.
    for body in ["{}", r#"{"anything": [1, 2]}"#] {
        let (status, reply, _) = d.post("/sop/blank", Some(&token), body, &[]).await;
        assert_eq!(status, 200, "{body}: {reply}");
    }
    let out = setup.cli(&["sop", "list", "--json"]);
    let sops: Value = serde_json::from_slice(&out.stdout).unwrap();
    let blank = sops["sops"].as_array().unwrap().iter().find(|s| s["name"] == "blank").expect("blank is loaded");
    assert_eq!(blank["triggers"], json!(["webhook /sop/blank"]), "listed without a condition: {blank}");
}
