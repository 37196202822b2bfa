//! Cancelling a run, through the daemon's admin API and `fanin runs
//! cancel`: every state a run can be cancelled in, the slot it frees going
//! to the deferred run behind it, its steps refused to the agent loop, what
//! a run that has ended or does not exist gets, and the CLI with and
//! without a running daemon. (Withdrawn envelopes never reaching their
//! destination is in tests/delivery.rs, beside its destination.)

mod common;

use common::*;
use serde_json::{json, Value};

/// A SOP with a manual trigger: `mode`, `max_concurrent` and `steps` agent
/// steps (none: it goes out as one envelope, for the agent destination,
/// which no test here configures, so its run stays `running`).
fn sop(name: &str, mode: &str, max_concurrent: u32, steps: usize) -> String {
    let mut toml = format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"{mode}\"\n\
         max_concurrent = {max_concurrent}\n\n[[triggers]]\ntype = \"manual\"\n"
    );
    for i in 1..=steps {
        toml.push_str(&format!("\n[[steps]]\ntitle = \"Step {i}\"\nbody = \"Do {i}\"\n"));
    }
    toml
}

/// Fires `sop`; returns the run id and its outcome (`started`, `deferred`).
async fn fire(d: &Daemon, sop: &str) -> (String, String) {
    let (status, body, _) = d.post(&format!("/admin/sops/{sop}/run"), None, "{}", &[]).await;
    assert_eq!(status, 200, "{body}");
    let run = &body["runs"][0];
    (run["run_id"].as_str().unwrap().to_string(), run["outcome"].as_str().unwrap().to_string())
}

async fn cancel(d: &Daemon, run: &str, body: &str) -> (u16, Value) {
    let (status, reply, _) = d.post(&format!("/admin/runs/{run}/cancel"), None, body, &[]).await;
    (status, reply)
}

fn record<'a>(records: &'a [Value], kind: &str) -> &'a Value {
    records.iter().find(|r| r["kind"] == kind).unwrap_or_else(|| panic!("no {kind} record in {records:?}"))
}

#[tokio::test]
async fn a_run_is_cancelled_from_every_state_that_has_not_ended() {
    let setup = Setup::new("", "")
        .sop("gated", &sop("gated", "supervised", 10, 0))
        .sop("agent", &sop("agent", "auto", 10, 1))
        .sop("notify", &sop("notify", "auto", 1, 0));
    let d = setup.start();
    let (gated, _) = fire(&d, "gated").await;
    let (agent, _) = fire(&d, "agent").await;
    let (running, _) = fire(&d, "notify").await;
    let (deferred, outcome) = fire(&d, "notify").await;
    assert_eq!(outcome, "deferred");
    let cases =
        [(&gated, "pending_approval"), (&agent, "waiting_agent"), (&deferred, "deferred"), (&running, "running")];
    for (run, state) in cases {
        assert_eq!(d.run_status(run).await, json!(state));
        let (status, reply) =
            cancel(&d, run, &json!({"reason": format!("no longer needed ({state})")}).to_string()).await;
        assert_eq!(status, 200, "{state}: {reply}");
        assert_eq!((reply["outcome"].clone(), reply["run_id"].clone()), (json!("cancelled"), json!(run)));
        assert_eq!((reply["status"].clone(), reply["from"].clone()), (json!("cancelled"), json!(state)));
        assert_eq!(d.run_status(run).await, json!("cancelled"), "{state}");

        let records = d.audit_of(run).await;
        assert_eq!(kinds(&records)[records.len() - 2..], ["run_cancelled", "run_transition"], "{state}");
        let cancelled = &record(&records, "run_cancelled")["detail"];
        assert_eq!(cancelled["by"], json!("admin:127.0.0.1"));
        assert_eq!(cancelled["interface"], json!("admin_api"));
        assert_eq!(cancelled["reason"], json!(format!("no longer needed ({state})")));
        assert_eq!(cancelled["from"], json!(state));
        let transition = records.last().unwrap();
        assert_eq!(
            (transition["detail"]["from"].clone(), transition["detail"]["to"].clone()),
            (json!(state), json!("cancelled"))
        );
    }
    // The cancelled runs are no longer waiting anywhere.
    let (_, pending) = d.get("/admin/sop/pending").await;
    assert_eq!(pending["pending"], json!([]));
    let (_, runs) = d.get("/admin/runs?status=cancelled").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn the_deferred_run_behind_a_cancelled_one_takes_its_slot() {
    let setup =
        Setup::new("", "").sop("notify", &sop("notify", "auto", 1, 0)).sop("gated", &sop("gated", "supervised", 1, 0));
    let d = setup.start();
    let (first, _) = fire(&d, "notify").await;
    let (second, second_outcome) = fire(&d, "notify").await;
    let (third, third_outcome) = fire(&d, "notify").await;
    assert_eq!((second_outcome.as_str(), third_outcome.as_str()), ("deferred", "deferred"));

    // A deferred run held no slot: cancelling it starts nothing.
    let (status, reply) = cancel(&d, &second, "").await;
    assert_eq!((status, reply["promoted"].clone()), (200, json!([])), "{reply}");
    assert_eq!(d.run_status(&third).await, json!("deferred"));

    // The running one did: the oldest deferred run still waiting takes it.
    let (status, reply) = cancel(&d, &first, "").await;
    assert_eq!((status, reply["promoted"].clone()), (200, json!([third])), "{reply}");
    assert_eq!(d.run_status(&third).await, json!("running"));
    let promoted = record(&d.audit_of(&third).await, "run_promoted").clone();
    assert_eq!(promoted["detail"]["slot_freed_by"], json!(first));
    // Admission counted exactly that: the one slot is taken again, and
    // freed by cancelling its holder with nothing waiting.
    let (fourth, outcome) = fire(&d, "notify").await;
    assert_eq!(outcome, "deferred");
    assert_eq!(cancel(&d, &fourth, "").await.0, 200);
    assert_eq!(cancel(&d, &third, "").await.1["promoted"], json!([]));
    assert_eq!(fire(&d, "notify").await.1, "started");

    // So does a run waiting at its approval gate.
    let (gate, _) = fire(&d, "gated").await;
    let (behind, outcome) = fire(&d, "gated").await;
    assert_eq!(outcome, "deferred");
    let (status, reply) = cancel(&d, &gate, "").await;
    assert_eq!((status, reply["promoted"].clone()), (200, json!([behind])), "{reply}");
    assert_eq!(d.run_status(&behind).await, json!("pending_approval"));
}

#[tokio::test]
async fn a_cancelled_runs_steps_are_neither_leased_nor_reported() {
    let setup = Setup::new("", "").sop("agent", &sop("agent", "auto", 10, 2));
    let d = setup.start();
    let token = d.pair().await;
    let (leased, _) = fire(&d, "agent").await;
    let (waiting, _) = fire(&d, "agent").await;
    let lease = {
        let r = d.http.get(d.url("/v1/agent/next")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    assert_eq!(lease["run_id"], json!(leased));

    for run in [&leased, &waiting] {
        let (status, reply) = cancel(&d, run, "").await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["withdrawn"], json!({"envelopes": [], "steps": [1]}), "the open step, leased or not");
    }
    let report = json!({"status": "completed", "output": {}, "lease_id": lease["lease_id"]}).to_string();
    let (status, reply, _) = d.post(&format!("/v1/runs/{leased}/steps/1"), Some(&token), &report, &[]).await;
    assert_eq!(status, 409, "{reply}");
    assert!(reply["error"].is_string() && reply["detail"].as_str().unwrap().contains("cancelled"), "{reply}");
    let r = d.http.get(d.url("/v1/agent/next")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 204, "nothing left to lease");
    assert_eq!(d.run_status(&leased).await, json!("cancelled"));
    let kinds_after: Vec<String> = kinds(&d.audit_of(&leased).await).into_iter().map(str::to_string).collect();
    assert!(!kinds_after.contains(&"step_reported".to_string()), "{kinds_after:?}");
}

#[tokio::test]
async fn a_run_that_ended_or_does_not_exist_is_refused() {
    let setup =
        Setup::new("", "").sop("agent", &sop("agent", "auto", 10, 1)).sop("gated", &sop("gated", "supervised", 10, 0));
    let d = setup.start();
    let token = d.pair().await;

    let (done, _) = fire(&d, "agent").await;
    let r = d.http.get(d.url("/v1/agent/next")).bearer_auth(&token).send().await.unwrap();
    let lease: Value = r.json().await.unwrap();
    let report = json!({"status": "completed", "lease_id": lease["lease_id"]}).to_string();
    let (status, _, _) = d.post(&format!("/v1/runs/{done}/steps/1"), Some(&token), &report, &[]).await;
    assert_eq!(status, 200);
    let (status, reply) = cancel(&d, &done, "").await;
    assert_eq!(
        (status, reply["error"].clone(), reply["status"].clone(), reply["run_id"].clone()),
        (409, json!("run_not_cancellable"), json!("completed"), json!(done))
    );
    assert_eq!(d.run_status(&done).await, json!("completed"));

    // Cancelling twice: the second is refused, saying the run is cancelled.
    let (gated, _) = fire(&d, "gated").await;
    assert_eq!(cancel(&d, &gated, "").await.0, 200);
    let (status, reply) = cancel(&d, &gated, "").await;
    assert_eq!(
        (status, reply["error"].clone(), reply["status"].clone()),
        (409, json!("run_not_cancellable"), json!("cancelled"))
    );
    let cancelled = d.audit_of(&gated).await.iter().filter(|r| r["kind"] == "run_cancelled").count();
    assert_eq!(cancelled, 1, "the refused cancel wrote nothing");

    let (status, reply) = cancel(&d, "no-such-run", "").await;
    assert_eq!(
        (status, reply["error"].clone(), reply["run_id"].clone()),
        (404, json!("run_not_found"), json!("no-such-run"))
    );
    let (live, _) = fire(&d, "gated").await;
    for bad in [r#"{"why":"x"}"#, "[]", "{", r#"{"reason":5}"#] {
        let (status, reply) = cancel(&d, &live, bad).await;
        assert_eq!((status, reply["error"].is_string()), (400, true), "{bad}: {reply}");
    }
    assert_eq!(d.run_status(&live).await, json!("pending_approval"), "a refused request changes nothing");
}

fn cancel_record(setup: &Setup, run: &str) -> Value {
    let out = setup.cli(&["audit", "--run", run, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["kind"] == "run_cancelled")
        .expect("a run_cancelled record")
}

#[tokio::test]
async fn the_cli_cancels_through_the_running_daemon_and_without_one() {
    let setup = Setup::new("", "").sop("notify", &sop("notify", "auto", 1, 0));
    let mut d = setup.start();
    let (first, _) = fire(&d, "notify").await;
    let (second, _) = fire(&d, "notify").await;

    let reply = setup.cli_json(&["runs", "cancel", &first, "--reason", "wrong target", "--json"]);
    assert_eq!((reply["status"].clone(), reply["from"].clone()), (json!("cancelled"), json!("running")));
    assert_eq!(reply["promoted"], json!([second]), "the daemon, which owns admission, started the next run");
    let by_daemon = cancel_record(&setup, &first);
    assert_eq!(
        (by_daemon["detail"]["by"].clone(), by_daemon["detail"]["interface"].clone()),
        (json!("admin:127.0.0.1"), json!("admin_api"))
    );
    assert_eq!(by_daemon["detail"]["reason"], json!("wrong target"));

    let line = setup.cli_refusal(&["runs", "cancel", &first]);
    assert_eq!(line, format!("error: run {first} is already cancelled"));
    let line = setup.cli_refusal(&["runs", "cancel", "no-such-run"]);
    assert_eq!(line, "error: no run no-such-run");

    // Without a daemon the CLI cancels in the store, and refuses alike.
    d.stop();
    let out = setup.cli(&["runs", "cancel", &second]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&second) && text.contains("running"), "{text}");
    let by_cli = cancel_record(&setup, &second);
    assert_eq!((by_cli["detail"]["by"].clone(), by_cli["detail"]["interface"].clone()), (json!("cli"), json!("cli")));
    let run = setup.cli_json(&["runs", "show", &second, "--json"]);
    assert_eq!(run["status"], json!("cancelled"));
    assert_eq!(setup.cli_refusal(&["runs", "cancel", &second]), format!("error: run {second} is already cancelled"));
    assert_eq!(setup.cli_refusal(&["runs", "cancel", "no-such-run"]), "error: no run no-such-run");
}
