//! Approvals end to end (docs/operations.md#approvals): supervised runs wait at their gate,
//! operators list, approve and deny them over the admin API and through
//! `fanin runs pending|approve|deny`, which talks to the running daemon.

mod common;

use common::*;
use serde_json::{json, Value};

/// A supervised SOP with a manual trigger and `steps` agent steps.
fn supervised(name: &str, steps: usize) -> String {
    let mut toml = format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"supervised\"\nmax_concurrent = 10\n\n\
         [[triggers]]\ntype = \"manual\"\n"
    );
    for i in 1..=steps {
        toml.push_str(&format!("\n[[steps]]\ntitle = \"Step {i}\"\nbody = \"Do {i}\"\n"));
    }
    toml
}

async fn fire(d: &Daemon, sop: &str) -> String {
    let (status, body, _) = d.post(&format!("/admin/sops/{sop}/run"), None, "{}", &[]).await;
    assert_eq!(status, 200, "{body}");
    body["runs"][0]["run_id"].as_str().unwrap().to_string()
}

async fn decide(d: &Daemon, what: &str, body: Value) -> (u16, Value) {
    let (status, reply, _) = d.post(&format!("/admin/sop/{what}"), None, &body.to_string(), &[]).await;
    (status, reply)
}

async fn pending(d: &Daemon) -> Vec<Value> {
    let (status, body) = d.get("/admin/sop/pending").await;
    assert_eq!(status, 200, "{body}");
    body["pending"].as_array().unwrap().clone()
}

async fn audit_kinds(d: &Daemon, run: &str) -> Vec<String> {
    kinds(&d.audit_of(run).await).into_iter().map(str::to_string).collect()
}

async fn approval_record(d: &Daemon, run: &str) -> Value {
    d.audit_of(run).await.into_iter().find(|r| r["kind"] == "approval").expect("an approval record")
}

#[tokio::test]
async fn supervised_runs_wait_and_move_on_when_approved_or_end_when_denied() {
    let setup = Setup::new("", "").sop("steps", &supervised("steps", 3)).sop("stepless", &supervised("stepless", 0));
    let d = setup.start();
    let first = fire(&d, "steps").await;
    let second = fire(&d, "steps").await;
    let stepless = fire(&d, "stepless").await;

    let list = pending(&d).await;
    let ids: Vec<&str> = list.iter().map(|p| p["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str(), stepless.as_str()], "oldest first");
    assert_eq!(
        (list[0]["sop"].clone(), list[0]["step"].clone(), list[0]["total_steps"].clone()),
        (json!("steps"), json!(1), json!(3))
    );
    assert!(list[0]["waiting_since"].is_string());
    assert_eq!((list[2]["step"].clone(), list[2]["total_steps"].clone()), (json!(1), json!(0)));

    // Approved: step 1 becomes pending for the agent loop.
    let (status, reply) = decide(&d, "approve", json!({"run_id": first, "reason": "checked"})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"outcome": "approved", "run_id": first, "status": "waiting_agent"}));
    assert_eq!(audit_kinds(&d, &first).await, ["run_started", "approval", "run_transition", "step_pending"]);
    let approval = approval_record(&d, &first).await;
    assert_eq!(approval["detail"]["outcome"], json!("approved"));
    assert_eq!(approval["detail"]["reason"], json!("checked"));
    assert_eq!(approval["detail"]["by"], json!("admin:127.0.0.1"));

    // Approving twice is a conflict that says where the run is.
    let (status, reply) = decide(&d, "approve", json!({"run_id": first})).await;
    assert_eq!(
        (status, reply["error"].clone(), reply["status"].clone()),
        (409, json!("not_pending"), json!("waiting_agent"))
    );

    // Denied: cancelled, and no longer listed.
    let (status, reply) = decide(&d, "deny", json!({"run_id": second, "reason": "not now"})).await;
    assert_eq!((status, reply["outcome"].clone(), reply["status"].clone()), (200, json!("denied"), json!("cancelled")));
    let (status, reply) = decide(&d, "approve", json!({"run_id": second})).await;
    assert_eq!((status, reply["status"].clone()), (409, json!("cancelled")));

    // A stepless SOP goes out as one envelope once approved.
    let (status, reply) = decide(&d, "approve", json!({"run_id": stepless})).await;
    assert_eq!((status, reply["status"].clone()), (200, json!("running")), "{reply}");
    assert!(audit_kinds(&d, &stepless).await.contains(&"envelope_queued".to_string()));

    assert!(pending(&d).await.is_empty());

    let (status, reply) = decide(&d, "approve", json!({"run_id": "no-such-run"})).await;
    assert_eq!((status, reply["error"].clone()), (404, json!("run_not_found")));
    for bad in ["{", "[]", r#"{"id":"x"}"#, r#"{"run_id":7}"#] {
        let (status, reply, _) = d.post("/admin/sop/approve", None, bad, &[]).await;
        assert_eq!(status, 400, "{bad}: {reply}");
    }
}

#[tokio::test]
async fn the_cli_lists_approves_and_denies_through_the_running_daemon() {
    let setup = Setup::new("", "").sop("steps", &supervised("steps", 2));
    let mut d = setup.start();
    let approved = fire(&d, "steps").await;
    let denied = fire(&d, "steps").await;

    let list = setup.cli_json(&["runs", "pending", "--json"]);
    let ids: Vec<&str> = list["pending"].as_array().unwrap().iter().map(|p| p["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [approved.as_str(), denied.as_str()]);
    assert_eq!((list["pending"][0]["step"].clone(), list["pending"][0]["total_steps"].clone()), (json!(1), json!(2)));
    let text = setup.cli(&["runs", "pending"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&approved));

    let reply = setup.cli_json(&["runs", "approve", &approved, "--reason", "ok", "--json"]);
    assert_eq!(reply, json!({"outcome": "approved", "run_id": approved, "status": "waiting_agent"}));
    // The daemon decided (its admin identity), not the CLI on its own.
    assert_eq!(approval_record(&d, &approved).await["detail"]["by"], json!("admin:127.0.0.1"));

    let reply = setup.cli_json(&["runs", "deny", &denied, "--reason", "no", "--json"]);
    assert_eq!((reply["outcome"].clone(), reply["status"].clone()), (json!("denied"), json!("cancelled")));

    let line = setup.cli_refusal(&["runs", "approve", &approved]);
    assert!(line.contains("not waiting for approval") && line.contains("waiting_agent"), "{line}");
    let line = setup.cli_refusal(&["runs", "deny", "no-such-run"]);
    assert!(line.contains("no run no-such-run"), "{line}");

    // Without a daemon the CLI decides in-process.
    d.stop();
    let third = {
        let out = setup.cli(&["fire", "steps", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        reply["runs"][0]["run_id"].as_str().unwrap().to_string()
    };
    let reply = setup.cli_json(&["runs", "approve", &third, "--json"]);
    assert_eq!(reply["status"], json!("waiting_agent"));
    let out = setup.cli(&["audit", "--run", &third, "--json"]);
    let by: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "approval")
        .map(|r| r["detail"]["by"].clone())
        .collect();
    assert_eq!(by, [json!("cli")]);
}
