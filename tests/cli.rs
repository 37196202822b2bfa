//! The command line, run as a user would: exit codes, messages that name the
//! file, the key and the reason, and output that reads the daemon's store.

mod common;

use common::*;
use serde_json::{json, Value};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_shipped_example_validates() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.toml");
    let out = std::process::Command::new(BIN).args(["validate", "--config", config]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_unknown_config_key_is_refused_with_file_and_key() {
    let setup = Setup::new("webhook_secrte = \"x\"", "");
    let out = setup.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("config.toml"), "{err}");
    assert!(err.contains("webhook_secrte"), "{err}");
    // The daemon refuses to start on the same config.
    let out = setup.cli(&["daemon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("webhook_secrte"));
}

#[test]
fn every_invalid_sop_is_listed_with_file_trigger_and_reason() {
    let setup = Setup::new("", "")
        .sop("bad-condition", "[sop]\nname = \"bad-condition\"\ndescription = \"x\"\n[[triggers]]\ntype = \"mqtt\"\ntopic = \"a/b\"\ncondition = \"$.x >>= 2\"\n")
        .sop("bad-cron", "[sop]\nname = \"bad-cron\"\ndescription = \"x\"\n[[triggers]]\ntype = \"manual\"\n[[triggers]]\ntype = \"cron\"\nexpression = \"61 * * * *\"\n")
        .sop("bad-topic", "[sop]\nname = \"bad-topic\"\ndescription = \"x\"\n[[triggers]]\ntype = \"mqtt\"\ntopic = \"a/#/b\"\n");
    let out = setup.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for (sop, key) in [
        ("bad-condition", "triggers[0].condition"),
        ("bad-cron", "triggers[1].expression"),
        ("bad-topic", "triggers[0].topic"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("{sop}/SOP.toml")))
            .unwrap_or_else(|| panic!("{sop} not listed: {err}"));
        assert!(line.contains(key), "{line}");
    }
    assert_eq!(setup.cli(&["daemon"]).status.code(), Some(1), "the daemon refuses to start");
}

#[test]
fn usage_errors_exit_2() {
    let out = std::process::Command::new(BIN).args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(BIN).args(["explain", "--topic", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn explain_shows_matches_and_near_misses() {
    let setup = Setup::new("", "[channels_config.mqtt]\nbroker_url = \"mqtt://127.0.0.1:1883\"\nclient_id = \"t\"\ntopics = [\"sensors/#\"]\n")
        .sop("alert", "[sop]\nname = \"alert\"\ndescription = \"x\"\n[[triggers]]\ntype = \"mqtt\"\ntopic = \"sensors/+/alert\"\ncondition = \"$.severity >= 2\"\n")
        .sop("all", "[sop]\nname = \"all\"\ndescription = \"x\"\n[[triggers]]\ntype = \"mqtt\"\ntopic = \"sensors/#\"\n")
        .sop("other", "[sop]\nname = \"other\"\ndescription = \"x\"\n[[triggers]]\ntype = \"mqtt\"\ntopic = \"ops/#\"\n");
    let explain = |payload: &str| -> Value {
        let out = setup.cli(&[
            "explain",
            "--source",
            "mqtt",
            "--topic",
            "sensors/kitchen/alert",
            "--payload",
            payload,
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let hit = explain(r#"{"severity": 3}"#);
    let sops: Vec<&str> = hit["matches"].as_array().unwrap().iter().map(|m| m["sop"].as_str().unwrap()).collect();
    assert_eq!(sops, ["alert", "all"]);
    assert_eq!(hit["near_misses"], json!([]));

    let miss = explain(r#"{"severity": 1}"#);
    assert_eq!(miss["matches"].as_array().unwrap().len(), 1);
    let near = &miss["near_misses"][0];
    assert_eq!(near["sop"], json!("alert"));
    assert!(near["trigger"].as_str().unwrap().contains("sensors/+/alert"));
    assert!(near["reason"].as_str().unwrap().contains("severity"), "{near}");
}

#[tokio::test]
async fn fire_runs_and_audit_through_the_cli() {
    let setup = Setup::new("", "").sop(
        "deploy",
        "[sop]\nname = \"deploy\"\ndescription = \"x\"\nexecution_mode = \"supervised\"\n[[triggers]]\ntype = \"manual\"\n",
    );
    // Without a daemon, `fire` writes the store itself.
    let out = setup.cli(&["fire", "deploy", "--payload", r#"{"why":"cli"}"#, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = reply["runs"][0]["run_id"].as_str().unwrap().to_string();

    // With a daemon, `fire` goes through it.
    let d = setup.start();
    let out = setup.cli(&["fire", "deploy", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let second = reply["runs"][0]["run_id"].as_str().unwrap().to_string();
    let (_, runs) = d.get("/admin/runs").await;
    let ids: Vec<&str> = runs["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    assert_eq!(runs["runs"][1]["status"], json!("pending_approval"), "supervised runs wait for approval");
    assert_eq!(runs["runs"][0]["status"], json!("deferred"), "a run waiting for approval holds the only slot");

    let out = setup.cli(&["runs", "show", &first, "--json"]);
    assert!(out.status.success());
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["payload"], json!({"why": "cli"}));
    assert_eq!(run["source"], json!("manual"));

    let out = setup.cli(&["audit", "--run", &first, "--json"]);
    let kinds: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["run_started"]);

    let out = setup.cli(&["fire", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ghost"));
    let out = setup.cli(&["runs", "show", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn validate_warns_about_mqtt_filters_no_subscription_delivers() {
    let setup = Setup::new(
        "",
        "[channels_config.mqtt]\nbroker_url = \"mqtt://127.0.0.1:1883\"\nclient_id = \"t\"\ntopics = [\"ops/#\"]\n",
    )
    .sop(
        "covered",
        "[sop]\nname = \"covered\"\ndescription = \"x\"\n[[triggers]]\ntype = \"mqtt\"\ntopic = \"ops/deploy/+\"\n",
    )
    .sop(
        "orphan",
        "[sop]\nname = \"orphan\"\ndescription = \"x\"\n[[triggers]]\ntype = \"mqtt\"\ntopic = \"sensors/+/alert\"\n",
    );
    let out = setup.cli(&["validate"]);
    assert!(out.status.success(), "a warning is not an error: {}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert!(warnings[0].contains("orphan/SOP.toml") && warnings[0].contains("triggers[0].topic"), "{}", warnings[0]);
}

#[test]
fn validate_warns_about_a_peripheral_trigger_on_a_board_not_declared() {
    let peripheral = |name: &str, board: &str| {
        format!(
            "[sop]\nname = \"{name}\"\ndescription = \"x\"\n[[triggers]]\ntype = \"peripheral\"\nboard = \"{board}\"\n\
             signal = \"pin_3\"\n"
        )
    };
    let setup = Setup::new("", "[peripherals.uno]\ntransport = \"http\"\n")
        .sop("declared", &peripheral("declared", "uno"))
        .sop("orphan", &peripheral("orphan", "nano"));
    let out = setup.cli(&["validate"]);
    assert!(out.status.success(), "a warning is not an error: {}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    for part in ["orphan/SOP.toml", "triggers[0].board", "\"nano\"", "[peripherals]", "never fire"] {
        assert!(warnings[0].contains(part), "{part} missing: {}", warnings[0]);
    }
}

#[test]
fn a_read_command_on_a_store_never_written_says_so_and_creates_nothing() {
    let setup = Setup::new("", "");
    let out = setup.cli(&["runs", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("data/fanin.db") && err.contains("no such file"), "{err}");
    assert!(!setup.dir.path().join("data").exists(), "a read created the store");
}

#[cfg(unix)]
#[tokio::test]
async fn a_command_whose_output_is_closed_early_ends_quietly_by_sigpipe() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    let setup = Setup::new("", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let mut d = setup.start();
    d.pair().await;
    d.stop();
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors, each then owned exactly once.
    let (reader, writer) = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    // The reader is gone before anything is written, as `| head` that has
    // read its lines.
    drop(reader);
    let out = std::process::Command::new(BIN)
        .args(["runs", "list", "--config"])
        .arg(setup.config_path())
        .stdout(std::process::Stdio::from(writer))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {err}", out.status);
}
