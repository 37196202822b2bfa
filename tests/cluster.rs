//! What holds across three `fanin daemon` replicas on one PostgreSQL store
//! (docs/cluster.md), each test driving real processes on their own ports
//! as clients and operators do: a token paired on one replica works on all
//! and its revocation too; one run per idempotency key whichever replicas
//! get copies; `max_concurrent = 1` holds one slot across all of them and
//! the backlog is promoted in order; a cooldown begun on one holds on all;
//! each envelope is delivered once, and a replica killed mid-delivery
//! leaves it to another; a long poll on one
//! replica takes a step pended on another; the console of one replica
//! hears of a run started on another; every accepted webhook of a
//! burst has its run when a replica is killed in the middle of it. Cron and
//! MQTT across replicas are in `cron.rs` and `cluster_mqtt.rs`; each
//! singleton source's takeover beside that source's tests (`email.rs`,
//! `drive.rs`, `telegram.rs`, `peripheral.rs`, `filesystem.rs`). Each test
//! skips, saying so, without `FANIN_TEST_POSTGRES_URL`.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use common::destination::Destination;
use common::replicas::Replicas;
use common::*;
use serde_json::{json, Value};

const NO_RATE_LIMIT: &str = "webhook_rate_limit_per_minute = 0";

/// `fanin <args> --json` with replica `index`'s config, parsed.
fn cli_json(replicas: &Replicas, index: usize, args: &[&str]) -> Value {
    replicas.setups[index].cli_json(args)
}

#[tokio::test]
async fn tokens_idempotency_keys_and_the_cli_hold_across_replicas() {
    let sop = webhook_sop("hook", "/sop/hook", "");
    let test = "tokens_idempotency_keys_and_the_cli_hold";
    let Some(replicas) = Replicas::start(test, 3, NO_RATE_LIMIT, "", &[("hook", &sop)]).await else { return };
    for (i, d) in replicas.daemons.iter().enumerate() {
        let (_, ready) = d.wait_ready("ready", |status, _| status == 200).await;
        assert_eq!(
            (ready["node_id"].clone(), ready["store_kind"].clone()),
            (json!(format!("r{}", i + 1)), json!("postgres"))
        );
    }
    let token = replicas.pair().await;

    // Every replica gets a copy of each request, at once.
    for k in 0..10 {
        let key = format!("key-{k}");
        let body = format!(r#"{{"k":{k}}}"#);
        let headers = [("X-Idempotency-Key", key.as_str())];
        let copies = replicas.daemons.iter().map(|d| d.post("/sop/hook", Some(&token), &body, &headers));
        let answers = futures::future::join_all(copies).await;
        let mut runs = BTreeSet::new();
        for (status, reply, _) in &answers {
            assert_eq!(*status, 200, "{reply}");
            runs.insert(reply["runs"][0]["run_id"].as_str().expect("a run id").to_string());
        }
        assert_eq!(runs.len(), 1, "one run for key {key}: {answers:?}");
        let accepted = answers.iter().filter(|(_, reply, _)| reply["status"] == "accepted").count();
        assert_eq!(accepted, 1, "one copy started it, the others are duplicates: {answers:?}");
    }
    let listed = cli_json(&replicas, 2, &["runs", "list", "--json"]);
    assert_eq!(listed["runs"].as_array().unwrap().len(), 10, "the CLI reads the shared store: {listed}");

    let out = replicas.setups[1].cli(&["tokens", "revoke", &token[6..14]]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for d in &replicas.daemons {
        assert_eq!(d.post("/sop/hook", Some(&token), "{}", &[]).await.0, 401, "revoked on every replica");
    }
}

/// A supervised SOP: each run waits at its approval gate, holding its slot.
fn gated_sop(max_concurrent: u32) -> String {
    format!(
        "[sop]\nname = \"gated\"\ndescription = \"test\"\nexecution_mode = \"supervised\"\n\
         max_concurrent = {max_concurrent}\n\n[[triggers]]\ntype = \"webhook\"\npath = \"/sop/gated\"\n"
    )
}

/// The runs of `sop` by status, oldest first within each.
async fn by_status(d: &Daemon, sop: &str) -> (Vec<Value>, Vec<Value>) {
    let mut runs = d.runs_of(sop).await;
    runs.reverse();
    let of = |status: &str| runs.iter().filter(|r| r["status"] == status).cloned().collect::<Vec<_>>();
    (of("pending_approval"), of("deferred"))
}

#[tokio::test]
async fn max_concurrent_one_holds_one_slot_across_replicas_and_promotes_the_backlog_in_order() {
    let sop = gated_sop(1);
    let test = "max_concurrent_one_holds_one_slot";
    let Some(replicas) = Replicas::start(test, 3, NO_RATE_LIMIT, "", &[("gated", &sop)]).await else { return };
    let token = replicas.pair().await;
    let posts = (0..9).map(|i| {
        let d = &replicas.daemons[i % 3];
        let (body, token) = (format!(r#"{{"i":{i}}}"#), token.clone());
        async move { d.post("/sop/gated", Some(&token), &body, &[]).await }
    });
    for (status, reply, _) in futures::future::join_all(posts).await {
        assert_eq!(status, 200, "{reply}");
    }
    let (active, deferred) = by_status(&replicas.daemons[0], "gated").await;
    assert_eq!((active.len(), deferred.len()), (1, 8), "one slot across replicas: {active:?} {deferred:?}");

    // Each denial, on a replica in turn, frees the slot for the oldest waiting run.
    let mut expected: Vec<String> = deferred.iter().map(|r| r["run_id"].as_str().unwrap().to_string()).collect();
    let mut current = active[0]["run_id"].as_str().unwrap().to_string();
    for turn in 0..8 {
        let d = &replicas.daemons[turn % 3];
        let (status, reply, _) = d.post("/admin/sop/deny", None, &json!({"run_id": current}).to_string(), &[]).await;
        assert_eq!(status, 200, "{reply}");
        let (active, deferred) = by_status(&replicas.daemons[(turn + 1) % 3], "gated").await;
        let next = expected.remove(0);
        assert_eq!(active.len(), 1, "never two runs in the slot: {active:?}");
        assert_eq!(active[0]["run_id"].as_str(), Some(next.as_str()), "the oldest deferred run is promoted");
        assert_eq!(deferred.len(), expected.len());
        current = next;
    }
}

/// Waits until one replica delivers to `destination` and the others name
/// it in `/ready` (`delivered_by`); returns its index.
async fn deliverer(replicas: &Replicas, destination: &str) -> usize {
    eventually(&format!("one replica to deliver to {destination}"), async || {
        let mut by = Vec::new();
        for d in &replicas.daemons {
            let (_, ready) = d.get("/ready").await;
            by.push(ready["outbox"]["destinations"][destination]["delivered_by"].as_str().map(str::to_string));
        }
        let owners: Vec<usize> = (0..by.len()).filter(|&i| by[i].is_none()).collect();
        match owners.as_slice() {
            [one] if by.iter().flatten().all(|id| *id == format!("r{}", one + 1)) => Ok(*one),
            _ => Err(format!("delivered_by: {by:?}")),
        }
    })
    .await
}

#[tokio::test]
async fn a_cooldown_that_began_on_one_replica_holds_on_another() {
    let sop = "[sop]\nname = \"cool\"\ndescription = \"test\"\nexecution_mode = \"supervised\"\n\
               max_concurrent = 10\ncooldown_secs = 3600\n\n[[triggers]]\ntype = \"webhook\"\npath = \"/sop/cool\"\n";
    let test = "a_cooldown_that_began_on_one_replica";
    let Some(replicas) = Replicas::start(test, 2, NO_RATE_LIMIT, "", &[("cool", sop)]).await else { return };
    let token = replicas.pair().await;
    let (a, b) = (&replicas.daemons[0], &replicas.daemons[1]);
    let (status, first, _) = a.post("/sop/cool", Some(&token), "{}", &[]).await;
    assert_eq!((status, first["runs"][0]["outcome"].clone()), (200, json!("started")), "{first}");
    // Before any run finished, no cooldown: B starts one too.
    let (_, second, _) = b.post("/sop/cool", Some(&token), "{}", &[]).await;
    assert_eq!(second["runs"][0]["outcome"], "started", "{second}");
    let denied = json!({"run_id": first["runs"][0]["run_id"]}).to_string();
    let (status, reply, _) = a.post("/admin/sop/deny", None, &denied, &[]).await;
    assert_eq!(status, 200, "{reply}");
    let (status, third, _) = b.post("/sop/cool", Some(&token), "{}", &[]).await;
    assert_eq!((status, third["runs"][0]["outcome"].clone()), (200, json!("skipped")), "{third}");
    assert!(third["runs"][0]["reason"].as_str().unwrap().contains("cooldown"), "{third}");
}

#[tokio::test]
async fn each_envelope_is_delivered_once_and_a_killed_deliverers_envelope_passes_on() {
    let agent = Destination::start(0).await;
    let sop = webhook_sop("notify", "/sop/notify", "");
    let rest = format!(
        "[destinations.agent]\nurl = \"{}\"\n[delivery]\nbackoff_initial_ms = 20\nbackoff_cap_secs = 1\n",
        agent.url
    );
    let test = "each_envelope_is_delivered_once";
    let Some(mut replicas) = Replicas::start(test, 3, NO_RATE_LIMIT, &rest, &[("notify", &sop)]).await else { return };
    let token = replicas.pair().await;
    for i in 0..30 {
        let (status, reply, _) = replicas.daemons[i % 3].post("/sop/notify", Some(&token), "{}", &[]).await;
        assert_eq!(status, 200, "{reply}");
    }
    eventually("30 envelopes delivered", || async { agent.accepted().len() >= 30 }).await;
    let d = &replicas.daemons[0];
    eventually("every run completed", async || {
        let runs = d.runs_of("notify").await;
        let done = runs.iter().filter(|r| r["status"] == "completed").count();
        if done == 30 {
            Ok(())
        } else {
            Err(format!("{done} of 30 completed"))
        }
    })
    .await;
    let keys: HashSet<Option<String>> = agent.seen.lock().unwrap().iter().map(|s| s.idempotency_key.clone()).collect();
    assert_eq!((keys.len(), agent.seen.lock().unwrap().len()), (30, 30), "each envelope sent once");

    // One in flight when its deliverer dies.
    agent.hold();
    let owner = deliverer(&replicas, "agent").await;
    let (status, reply, _) = replicas.daemons[(owner + 1) % 3].post("/sop/notify", Some(&token), "{}", &[]).await;
    assert_eq!(status, 200, "{reply}");
    let run = reply["runs"][0]["run_id"].as_str().unwrap().to_string();
    eventually("the envelope in flight", || async { agent.arrived.lock().unwrap().len() == 31 }).await;
    let in_flight = agent.arrived.lock().unwrap()[30].clone();
    replicas.daemons[owner].kill();
    agent.release();
    let survivor = &replicas.daemons[(owner + 1) % 3];
    eventually("another replica to deliver it", async || match survivor.run_status(&run).await {
        status if status == "completed" => Ok(()),
        status => Err(format!("{status}")),
    })
    .await;
    let seen = agent.seen.lock().unwrap().clone();
    let accepted: Vec<&Option<String>> = seen[30..].iter().filter(|s| s.accepted).map(|s| &s.idempotency_key).collect();
    assert!(!accepted.is_empty() && accepted.iter().all(|k| **k == in_flight), "redelivered under its key: {seen:?}");
}

#[tokio::test]
async fn a_long_poll_on_one_replica_takes_a_step_pended_on_another() {
    let sop = "[sop]\nname = \"triage\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 10\n\n\
               [[triggers]]\ntype = \"manual\"\n\n[[steps]]\ntitle = \"Look\"\nbody = \"Look at it\"\n";
    let test = "a_long_poll_on_one_replica_takes_a_step";
    let Some(replicas) = Replicas::start(test, 2, "", "", &[("triage", sop)]).await else { return };
    let token = replicas.pair().await;
    let (a, b) = (&replicas.daemons[0], &replicas.daemons[1]);
    let woken_before = a.metric("fanin_store_wakeups_total{kind=\"step\"}").await.unwrap_or(0.0);
    let poll = {
        let (http, url, token) = (a.http.clone(), a.url("/v1/agent/next?wait=25"), token.clone());
        tokio::spawn(async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    eventually("the poll to wait", || async { a.metric("fanin_agent_polls_waiting").await == Some(1.0) }).await;
    let (status, fired, _) = b.post("/admin/sops/triage/run", None, "{}", &[]).await;
    assert_eq!(status, 200, "{fired}");
    let (status, leased) = poll.await.unwrap();
    assert_eq!(status, 200, "{leased}");
    assert_eq!(leased["run_id"], fired["runs"][0]["run_id"]);
    let woken = a.metric("fanin_store_wakeups_total{kind=\"step\"}").await.unwrap_or(0.0);
    assert!(woken > woken_before, "replica A was told of B's step: {woken_before} then {woken}");
    // The lease is the store's: B cannot hand the same step out again.
    let second = b.http.get(b.url("/v1/agent/next")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(second.status().as_u16(), 204, "the step is leased once across replicas");
}

#[tokio::test]
async fn the_console_of_one_replica_hears_of_a_run_started_on_another() {
    let test = "the_console_of_one_replica_hears";
    let Some(replicas) = Replicas::start(test, 2, "", "", &[("gated", &gated_sop(10))]).await else { return };
    let token = replicas.pair().await;
    let (a, b) = (&replicas.daemons[0], &replicas.daemons[1]);
    eventually("replica A to listen to the store", || async {
        a.metric("fanin_store_wakeups_total{kind=\"all\"}").await.is_some()
    })
    .await;
    let mut events = a.http.get(a.url("/ui/events")).send().await.unwrap();
    assert_eq!(events.status(), 200);
    let (status, reply, _) = b.post("/sop/gated", Some(&token), "{}", &[]).await;
    assert_eq!(status, 200, "{reply}");
    let mut seen = String::new();
    while !seen.contains("event: runs\n") {
        let chunk = tokio::time::timeout(DEADLINE, events.chunk()).await.expect("an event from A").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("the stream is open")));
    }
    assert!(a.metric("fanin_store_wakeups_total{kind=\"runs\"}").await.is_some_and(|n| n >= 1.0));
    let page = a.http.get(a.url("/ui/runs")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(reply["runs"][0]["run_id"].as_str().unwrap()), "A lists B's run: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_webhook_of_a_burst_has_its_run_when_a_replica_is_killed() {
    let sop = webhook_sop("deploy", "/sop/deploy", "");
    let test = "every_accepted_webhook_of_a_burst";
    let Some(mut replicas) = Replicas::start(test, 3, NO_RATE_LIMIT, "", &[("deploy", &sop)]).await else { return };
    let token = replicas.pair().await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..6 {
        let d = &replicas.daemons[w % 3];
        let (http, url, token, acked) = (d.http.clone(), d.url("/sop/deploy"), token.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            for i in 0..150 {
                let sent = http.post(&url).bearer_auth(&token).body(format!(r#"{{"w":{w},"i":{i}}}"#)).send().await;
                let Ok(response) = sent else { return };
                if response.status() != 200 {
                    return;
                }
                let Ok(body) = response.json::<Value>().await else { return };
                acked.lock().unwrap().push(body["runs"][0]["run_id"].as_str().unwrap().to_string());
            }
        }));
    }
    eventually("150 accepted webhooks", || async { acked.lock().unwrap().len() >= 150 }).await;
    replicas.daemons[1].kill();
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let listed = cli_json(&replicas, 0, &["runs", "list", "--json", "--limit", "100000"]);
    let stored: HashSet<&str> =
        listed["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(id.as_str())).collect();
    assert!(lost.is_empty(), "{} of {} accepted runs lost: {lost:?}", lost.len(), acked.len());
    assert!(acked.len() >= 4 * 150, "the other replicas accepted all they were sent: {}", acked.len());
}
