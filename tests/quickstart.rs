//! The shipped `examples/` as README's quick start uses them: every SOP
//! there loads, and the daemon on `examples/config.toml` answers the seed's
//! own request by starting a run.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

/// Environment that would point the registries at Drive instead of the
/// example copies.
const DRIVE_ENV: &[&str] =
    &["GOOGLE_DRIVE_TOKEN", "REGISTRY_TOOLS_FILE_ID", "REGISTRY_CAPABILITIES_FILE_ID", "REGISTRY_USECASES_FILE_ID"];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `examples/config.toml` with its SOPs and registries in a temp directory,
/// so the store it names is written there. The one change is the port (0,
/// any free one), so that tests running at once never collide.
fn examples_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["sops", "registries"] {
        copy_dir(&Path::new(EXAMPLES).join(sub), &dir.path().join(sub));
    }
    let config = std::fs::read_to_string(Path::new(EXAMPLES).join("config.toml")).unwrap();
    assert_eq!(config.matches("\nport = 3000\n").count(), 1, "the example config names port 3000 once");
    std::fs::write(dir.path().join("config.toml"), config.replacen("\nport = 3000\n", "\nport = 0\n", 1)).unwrap();
    dir
}

fn cli_json(config: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN).args(args).arg("--json").arg("--config").arg(config).output().unwrap();
    assert!(out.status.success(), "fanin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("fanin {args:?} printed no JSON ({e})"))
}

#[test]
fn every_example_sop_loads_under_validate_without_errors() {
    let config = Path::new(EXAMPLES).join("config.toml");
    let report = cli_json(&config, &["validate"]);
    assert_eq!(report["ok"], json!(true), "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    let dirs =
        std::fs::read_dir(Path::new(EXAMPLES).join("sops")).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir());
    assert_eq!(report["sops"], json!(dirs.count()), "every directory of examples/sops is a loaded SOP: {report}");
}

#[tokio::test]
async fn the_seeds_request_starts_a_run_on_the_shipped_examples() {
    let dir = examples_copy();
    let config = dir.path().join("config.toml");
    let d = Daemon::start_with(&config, |command| {
        for name in DRIVE_ENV {
            command.env_remove(name);
        }
    });
    let token = d.pair().await;

    // The request of the quick start, as README.md writes it.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for part in [
        "curl -s -X POST http://127.0.0.1:3000/sop/deploy",
        "-H 'Authorization: Bearer fanin_…' -H \"X-Idempotency-Key: $(uuidgen)\"",
        r#"-d '{"message":"deploy-service-a"}'"#,
    ] {
        assert!(readme.contains(part), "README.md's quick start no longer sends {part}");
    }
    let (status, body, _) = d
        .post(
            "/sop/deploy",
            Some(&token),
            r#"{"message":"deploy-service-a"}"#,
            &[("X-Idempotency-Key", "5b0f7f2e-6a55-4c2b-9d1e-quick-start")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("accepted"), "{body}");
    assert_eq!(body["matched_sops"], json!(["deploy-pipeline"]), "{body}");
    assert_eq!(body["source"], json!("sop_webhook"), "{body}");
    assert_eq!(body["path"], json!("/sop/deploy"), "{body}");
    assert_eq!(body["runs"][0]["outcome"], json!("started"), "{body}");
    let run_id = body["runs"][0]["run_id"].as_str().expect("a started run has an id").to_string();

    let listed = cli_json(&config, &["runs", "list"]);
    let runs = listed["runs"].as_array().expect("runs list prints runs");
    let run = runs.iter().find(|r| r["run_id"] == json!(run_id)).unwrap_or_else(|| panic!("{run_id} in {listed}"));
    assert_eq!(run["sop"], json!("deploy-pipeline"), "{run}");
    assert!(dir.path().join("data/fanin.db").exists(), "the store is the copy's own");

    // The example's condition lives on the CI path: only builds of main match.
    let (status, body, _) = d.post("/sop/deploy/ci", Some(&token), r#"{"branch":"dev"}"#, &[]).await;
    assert_eq!((status, &body["error"]), (404, &json!("no_matching_sop")), "{body}");
    let (status, body, _) = d.post("/sop/deploy/ci", Some(&token), r#"{"branch":"main"}"#, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matched_sops"], json!(["deploy-pipeline"]), "{body}");
}
