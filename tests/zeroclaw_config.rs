//! ZeroClaw's config and SOP shapes through the real binary: its MQTT
//! blocks as its own configs write them (`enabled`, `excluded_tools`,
//! `[channels.mqtt]` and `[channels.mqtt.<alias>]`), and the trigger types
//! fanin does not serve yet, in `fanin validate` and at daemon start.
//! (An MQTT block in ZeroClaw's layout receiving messages is in `mqtt.rs`,
//! which has the broker.)

mod common;

use std::process::Output;

use common::*;
use serde_json::{json, Value};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn validate_json(setup: &Setup) -> (Option<i32>, Value) {
    let out = setup.cli(&["validate", "--json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {}", stderr(&out)));
    (out.status.code(), report)
}

fn warnings(report: &Value) -> Vec<String> {
    report["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string()).collect()
}

/// A block as ZeroClaw's current config writes it: one table per alias, the
/// broker on a port nothing listens on (these tests never reach a broker).
fn zeroclaw_block(alias: &str, enabled: bool) -> String {
    format!(
        "[channels.mqtt.{alias}]\nenabled = {enabled}\nbroker_url = \"mqtt://127.0.0.1:9\"\n\
         client_id = \"zeroclaw-{alias}\"\ntopics = [\"sensors/#\"]\nqos = 1\nuse_tls = false\n\
         keep_alive_secs = 30\nexcluded_tools = [\"shell\", \"file_write\"]\n"
    )
}

#[test]
fn a_zeroclaw_mqtt_block_validates_with_excluded_tools_warned_about() {
    let setup = Setup::new("", &zeroclaw_block("default", true));
    let (code, report) = validate_json(&setup);
    assert_eq!(code, Some(0), "{report}");
    let warnings = warnings(&report);
    assert!(
        warnings.iter().any(|w| w.contains("config.toml: channels.mqtt.default.excluded_tools: ignored")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn the_daemon_warns_at_start_and_a_parked_block_opens_no_connection() {
    let setup = Setup::new("", &format!("{}\n{}", zeroclaw_block("old", false), zeroclaw_block("edge", true)));
    let d = setup.start_logged();
    eventually("the start-up warnings", || async {
        setup.log().contains("channels.mqtt.edge.excluded_tools: ignored")
    })
    .await;
    assert!(setup.log().contains("channels.mqtt.old: enabled = false"), "{}", setup.log());
    // The enabled block is the one source; the parked one is not tried.
    let (_, ready) = d.get("/ready").await;
    assert!(ready["sources"]["mqtt"].is_object(), "{ready}");
    drop(d);

    let setup = Setup::new("", &zeroclaw_block("old", false));
    let d = setup.start();
    let (status, ready) = d.get("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["sources"]["mqtt"], Value::Null, "no MQTT source: {ready}");
}

#[test]
fn a_parked_block_may_be_half_written_but_not_misspelt() {
    let setup = Setup::new("", "[channels.mqtt.later]\nenabled = false\nbroker_url = \"\"\n");
    let (code, report) = validate_json(&setup);
    assert_eq!(code, Some(0), "{report}");
    let setup = Setup::new("", "[channels.mqtt.later]\nenabled = false\nbrokerurl = \"mqtt://b\"\n");
    let out = setup.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("channels.mqtt.later.brokerurl: unknown key"), "{}", stderr(&out));
}

#[test]
fn channels_and_channels_config_both_configuring_mqtt_are_refused_naming_both() {
    let native = "[channels_config.mqtt]\nbroker_url = \"mqtt://127.0.0.1:9\"\nclient_id = \"a\"\ntopics = [\"a/#\"]\n";
    let setup = Setup::new("", &format!("{native}\n{}", zeroclaw_block("default", true)));
    for command in ["validate", "daemon"] {
        let out = setup.cli(&[command]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let err = stderr(&out);
        assert!(err.contains("channels.mqtt:") && err.contains("[channels_config.mqtt]"), "{command}: {err}");
    }
}

#[test]
fn two_enabled_zeroclaw_blocks_are_refused_naming_them() {
    let setup = Setup::new("", &format!("{}\n{}", zeroclaw_block("a", true), zeroclaw_block("b", true)));
    let out = setup.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(channels.mqtt.a, channels.mqtt.b)"), "{}", stderr(&out));
}

#[tokio::test]
async fn zeroclaw_trigger_types_load_and_say_what_they_need() {
    // (type, its keys, what the warning names): served types whose source
    // is not configured say which block they wait for; unserved ones say so.
    let kinds = [
        ("filesystem", "path = \"/var/inbox\"\nevents = [\"created\"]\n", "[channels_config.filesystem]"),
        ("amqp", "routing_key = \"release.*\"\n", "[channels_config.amqp]"),
        ("channel", "channel = \"telegram\"\n", "[channels_config.telegram.<alias>]"),
        ("drive", "folder_id = \"1AbC\"\n", "[channels_config.google_drive.<alias>]"),
        ("calendar", "calendar_source = \"google\"\n", "\"calendar\" is not served by fanin yet"),
        ("sopcompletion", "sop_name = \"deploy\"\n", "\"sopcompletion\" is not served by fanin yet"),
    ];
    let mut setup = Setup::new("", "");
    for (kind, keys, _) in kinds {
        setup = setup.sop(
            &format!("on-{kind}"),
            &format!(
                "[sop]\nname = \"on-{kind}\"\ndescription = \"x\"\n[[triggers]]\ntype = \"manual\"\n\
                 [[triggers]]\ntype = \"{kind}\"\n{keys}"
            ),
        );
    }
    let (code, report) = validate_json(&setup);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sops"], json!(kinds.len()), "every SOP loads: {report}");
    let warnings = warnings(&report);
    for (kind, _, says) in kinds {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(&format!("on-{kind}/SOP.toml")) && w.contains("triggers[1]") && w.contains(says)),
            "{kind}: {warnings:?}"
        );
    }
    // The daemon starts on them, serving the triggers it has.
    let d = setup.start();
    let (status, ready) = d.get("/ready").await;
    assert_eq!(status, 200, "{ready}");
}
