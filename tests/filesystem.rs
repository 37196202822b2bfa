//! The filesystem source through a live daemon over real files in a
//! temporary directory: every kind of change, a burst, what changed while
//! the daemon was stopped, links out of the root, roots refused at start,
//! and two replicas watching one directory: one at a time, the survivor
//! taking over (with what changed meanwhile) when the watching one dies.
//! Each test waits for runs, audit records or `/ready`, never for time.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::replicas::Replicas;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A config directory with a watched `drop/` inside it.
struct Watched {
    setup: Setup,
    root: PathBuf,
}

fn watched(extra: &str) -> Watched {
    let setup = Setup::new("", "");
    let root = setup.dir.path().join("drop");
    std::fs::create_dir_all(&root).unwrap();
    let block = format!(
        "[channels_config.filesystem]\npaths = [{:?}]\ndebounce_ms = 100\n{extra}\n",
        root.display().to_string()
    );
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), format!("{config}\n{block}")).unwrap();
    Watched { setup, root }
}

fn fs_sop(name: &str, path: &str, events: &[&str]) -> String {
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 100000\n\n\
         [[triggers]]\ntype = \"filesystem\"\npath = {path:?}\nevents = {events:?}\n"
    )
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn path_of(p: &Path) -> String {
    p.display().to_string()
}

/// The payloads of `sop`'s runs once it has `count`, oldest first.
async fn payloads(d: &Daemon, sop: &str, count: usize) -> Vec<Value> {
    let runs = d.wait_runs_of(sop, count).await;
    let mut out = Vec::new();
    for run in runs.iter().rev() {
        let full = d.run(run["run_id"].as_str().unwrap()).await;
        assert_eq!(full["source"], json!("filesystem"), "{full}");
        out.push(full["payload"].clone());
    }
    out
}

/// Every run of `sop` (summaries) once there are at least `count`.
async fn every_run(d: &Daemon, sop: &str, count: usize) -> Vec<Value> {
    eventually(&format!("{count} runs of {sop}"), async || {
        let (status, body) = d.get(&format!("/admin/runs?sop={sop}&limit=100000")).await;
        assert_eq!(status, 200, "{body}");
        let runs = body["runs"].as_array().cloned().unwrap_or_default();
        match runs.len() >= count {
            true => Ok(runs),
            false => Err(format!("{} runs", runs.len())),
        }
    })
    .await
}

async fn events_seen(d: &Daemon) -> f64 {
    d.metric("fanin_source_events_total{source=\"filesystem\"}").await.unwrap_or(0.0)
}

async fn wait_events(d: &Daemon, count: f64) {
    eventually(&format!("{count} filesystem events"), async || {
        let seen = events_seen(d).await;
        match seen >= count {
            true => Ok(()),
            false => Err(format!("{seen} events")),
        }
    })
    .await;
}

async fn refused(d: &Daemon) -> Vec<Value> {
    let (status, audit) = d.get("/admin/audit?limit=10000").await;
    assert_eq!(status, 200, "{audit}");
    audit["records"].as_array().unwrap().iter().filter(|r| r["kind"] == json!("event_refused")).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_modified_renamed_and_deleted_files_start_runs_with_their_state() {
    let w = watched("");
    let root = path_of(&w.root);
    let setup = w.setup.sop("csv", &fs_sop("csv", &format!("{root}/**/*.csv"), &[]));
    std::fs::create_dir(w.root.join("done")).unwrap();
    let d = setup.start();
    d.wait_polling("filesystem").await;
    let a = w.root.join("a.csv");
    std::fs::write(&a, "x,y\n1,2\n").unwrap();
    let created = &payloads(&d, "csv", 1).await[0];
    assert_eq!(
        created,
        &json!({"kind": "created", "path": path_of(&a), "size": 8, "sha256": sha(b"x,y\n1,2\n"), "content": "x,y\n1,2\n"})
    );

    // Not a CSV: an event, but no run.
    std::fs::write(w.root.join("notes.txt"), "hello").unwrap();
    wait_events(&d, 2.0).await;
    assert_eq!(d.runs_of("csv").await.len(), 1);

    std::fs::write(&a, "x,y\n1,2\n3,4\n").unwrap();
    let modified = &payloads(&d, "csv", 2).await[1];
    assert_eq!((&modified["kind"], &modified["size"]), (&json!("modified"), &json!(12)), "{modified}");
    assert_eq!(modified["sha256"], json!(sha(b"x,y\n1,2\n3,4\n")));

    let b = w.root.join("done/b.csv");
    std::fs::rename(&a, &b).unwrap();
    let renamed = &payloads(&d, "csv", 3).await[2];
    assert_eq!(renamed["kind"], json!("renamed"), "one event for a rename: {renamed}");
    assert_eq!((&renamed["path"], &renamed["from"]), (&json!(path_of(&b)), &json!(path_of(&a))));
    assert_eq!(renamed["content"], json!("x,y\n1,2\n3,4\n"));

    std::fs::remove_file(&b).unwrap();
    let deleted = &payloads(&d, "csv", 4).await[3];
    assert_eq!(
        deleted,
        &json!({"kind": "deleted", "path": path_of(&b), "size": 12, "sha256": sha(b"x,y\n1,2\n3,4\n"), "content": null})
    );

    // Binary and oversized files travel without their content.
    std::fs::write(w.root.join("bin.csv"), [0u8, 159, 146, 150]).unwrap();
    let binary = &payloads(&d, "csv", 5).await[4];
    assert_eq!((&binary["size"], &binary["content"]), (&json!(4), &json!(null)), "{binary}");

    let (_, ready) = d.get("/ready").await;
    let source = &ready["sources"]["filesystem"];
    assert_eq!(source["status"], json!("up"), "{ready}");
    assert!(source["last_event_at"].is_string(), "{ready}");
    assert_eq!(d.metric("fanin_source_up{source=\"filesystem\"}").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_files_starts_each_run_once() {
    const N: usize = 1000;
    let w = watched("");
    let root = path_of(&w.root);
    let setup = w.setup.sop("burst", &fs_sop("burst", &format!("{root}/*.dat"), &["created"]));
    let d = setup.start();
    d.wait_polling("filesystem").await;
    for i in 0..N {
        std::fs::write(w.root.join(format!("f{i:04}.dat")), format!("file {i}\n")).unwrap();
    }
    let runs = every_run(&d, "burst", N).await;
    assert_eq!(runs.len(), N);
    // A later file, once its run is there, shows nothing of the burst came twice.
    std::fs::write(w.root.join("last.dat"), "last").unwrap();
    let runs = every_run(&d, "burst", N + 1).await;
    assert_eq!(runs.len(), N + 1, "a file of the burst started twice");
    let paths: std::collections::BTreeSet<&str> = runs.iter().map(|r| r["topic"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), N + 1, "every file has its own run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_daemon_was_stopped_are_found_at_start() {
    let w = watched("");
    let root = path_of(&w.root);
    let setup = w.setup.sop("all", &fs_sop("all", &root, &[]));
    let file = |name: &str| w.root.join(name);
    std::fs::write(file("before.txt"), "there before the first start").unwrap();

    let mut d = setup.start();
    d.wait_polling("filesystem").await;
    std::fs::write(file("kept.txt"), "v1").unwrap();
    std::fs::write(file("gone.txt"), "soon gone").unwrap();
    std::fs::write(file("moved.txt"), "moving").unwrap();
    let seen = payloads(&d, "all", 3).await;
    assert!(seen.iter().all(|p| p["kind"] == json!("created")), "{seen:?}");
    d.stop();

    std::fs::write(file("kept.txt"), "v2, while stopped").unwrap();
    std::fs::remove_file(file("gone.txt")).unwrap();
    std::fs::rename(file("moved.txt"), file("arrived.txt")).unwrap();
    std::fs::write(file("new.txt"), "new").unwrap();

    let mut d = setup.start();
    let after = payloads(&d, "all", 7).await;
    let mut found: Vec<(String, String)> = after[3..]
        .iter()
        .map(|p| (p["kind"].as_str().unwrap().to_string(), p["path"].as_str().unwrap().to_string()))
        .collect();
    found.sort();
    let at = |name: &str| path_of(&file(name));
    assert_eq!(
        found,
        vec![
            ("created".to_string(), at("new.txt")),
            ("deleted".to_string(), at("gone.txt")),
            ("modified".to_string(), at("kept.txt")),
            ("renamed".to_string(), at("arrived.txt")),
        ]
    );
    let renamed = after.iter().find(|p| p["kind"] == json!("renamed")).unwrap();
    assert_eq!(renamed["from"], json!(at("moved.txt")));

    // Nothing more on a restart without changes, and never the file that
    // was there before the first start.
    d.stop();
    let d = setup.start();
    d.wait_polling("filesystem").await;
    std::fs::write(file("marker.txt"), "m").unwrap();
    let last = payloads(&d, "all", 8).await;
    assert_eq!(last.len(), 8, "{last:?}");
    assert_eq!(last[7]["path"], json!(at("marker.txt")));
    assert!(!last.iter().any(|p| p["path"] == json!(at("before.txt"))), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_leading_out_of_the_root_is_refused_and_never_read() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "the secret").unwrap();
    let w = watched("");
    let root = path_of(&w.root);
    let setup = w.setup.sop("all", &fs_sop("all", &root, &[]));
    std::fs::write(w.root.join("inside.txt"), "inside").unwrap();
    let d = setup.start();
    d.wait_polling("filesystem").await;

    let escape = w.root.join("escape.txt");
    symlink(&secret, &escape).unwrap();
    symlink(w.root.join("inside.txt"), w.root.join("alias.txt")).unwrap();
    std::fs::write(w.root.join("after.txt"), "after").unwrap();
    let runs = payloads(&d, "all", 1).await;
    let refusals = eventually("the link's refusal", async || {
        let refusals = refused(&d).await;
        match refusals.is_empty() {
            false => Ok(refusals),
            true => Err("no event_refused yet".to_string()),
        }
    })
    .await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let detail = &refusals[0]["detail"];
    assert_eq!((&detail["reason"], &detail["topic"]), (&json!("link_outside_roots"), &json!(path_of(&escape))));
    assert!(detail["detail"].as_str().unwrap().contains(&path_of(&secret.canonicalize().unwrap())), "{detail}");

    assert_eq!(runs[0]["path"], json!(path_of(&w.root.join("after.txt"))));
    let all = d.runs_of("all").await;
    assert_eq!(all.len(), 1, "no run for either link: {all:?}");
    let (_, audit) = d.get("/admin/audit?limit=10000").await;
    assert!(!audit.to_string().contains("the secret"), "the link's target was read");
}

#[test]
fn roots_that_are_missing_broad_or_resolve_to_broad_ones_are_refused_at_start() {
    let refusal = |paths: &str, extra: &str| {
        let setup = Setup::new("", &format!("[channels_config.filesystem]\npaths = [{paths}]\n{extra}"));
        let out =
            std::process::Command::new(BIN).args(["daemon", "--config"]).arg(setup.config_path()).output().unwrap();
        assert!(!out.status.success(), "the daemon started watching {paths}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = refusal("\"/nonexistent/fanin-drop\"", "");
    assert!(missing.contains("channels_config.filesystem.paths[0]") && missing.contains("does not exist"), "{missing}");
    let broad = refusal("\"/etc\"", "");
    assert!(broad.contains("paths[0]") && broad.contains("too broad"), "{broad}");

    let links = tempfile::tempdir().unwrap();
    let to_etc = links.path().join("etc-link");
    symlink("/etc", &to_etc).unwrap();
    let resolved = refusal(&format!("{:?}", path_of(&to_etc)), "");
    assert!(resolved.contains("paths[0]") && resolved.contains("\"/etc\" is too broad"), "{resolved}");

    let file = links.path().join("plain-file");
    std::fs::write(&file, "").unwrap();
    let not_dir = refusal(&format!("{:?}", path_of(&file)), "");
    assert!(not_dir.contains("is not a directory"), "{not_dir}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_goes_away_shows_the_source_down_and_deletes_nothing() {
    let w = watched("");
    let root = path_of(&w.root);
    let setup = w.setup.sop("all", &fs_sop("all", &root, &[]));
    let d = setup.start();
    d.wait_polling("filesystem").await;
    std::fs::write(w.root.join("a.txt"), "a").unwrap();
    payloads(&d, "all", 1).await;

    let aside = w.root.with_file_name("drop-aside");
    std::fs::rename(&w.root, &aside).unwrap();
    let (_, ready) =
        d.wait_ready("filesystem down", |_, body| body["sources"]["filesystem"]["status"] == json!("down")).await;
    let detail = ready["sources"]["filesystem"]["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains(&root), "{ready}");

    std::fs::rename(&aside, &w.root).unwrap();
    d.wait_ready("filesystem up again", |_, body| body["sources"]["filesystem"]["status"] == json!("up")).await;
    std::fs::write(w.root.join("b.txt"), "b").unwrap();
    let runs = payloads(&d, "all", 2).await;
    assert_eq!(runs[1]["path"], json!(path_of(&w.root.join("b.txt"))));
    assert!(runs.iter().all(|p| p["kind"] == json!("created")), "nothing was taken for deleted: {runs:?}");
}

/// The source in-process over a store that refuses a commit: the change it
/// could not store is not forgotten; the next session finds it again and
/// starts its run, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_store_refused_is_found_again_not_lost() {
    use fanin::sources::health::Status;
    let w = watched("");
    let root = path_of(&w.root);
    let setup = w.setup.sop("all", &fs_sop("all", &root, &[]));
    let (ctx, store) = setup.faulty_sources().await;
    let task = fanin::sources::filesystem::start(&ctx).unwrap().expect("a filesystem block starts a watcher");
    let state = || ctx.health.snapshot()["filesystem"].clone();
    eventually("filesystem up", || async { state().status == Status::Up }).await;

    store.refuse_next_commits(1);
    std::fs::write(w.root.join("refused.txt"), "first").unwrap();
    let query = fanin::store::RunQuery { sop: Some("all".into()), ..Default::default() };
    let runs = eventually("the refused change to start its run", || async {
        let runs = store.inner().list_runs(&query).await.unwrap();
        match runs.iter().any(|r| r.topic == path_of(&w.root.join("refused.txt"))) {
            true => Ok(runs),
            false => Err(format!("{} runs, {:?}", runs.len(), state())),
        }
    })
    .await;
    assert_eq!(store.refusals_left(), 0, "the store did refuse a commit");
    assert!(state().reconnects >= 1, "the session was made again: {:?}", state());
    assert_eq!(runs.len(), 1, "{runs:?}");
    let stored = store.inner().file_states("filesystem").await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].1.sha256, sha(b"first"));

    ctx.shutdown.cancel();
    tokio::time::timeout(DEADLINE, task).await.expect("the watcher stops on shutdown").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_watch_once_and_the_survivor_takes_over_with_what_changed_meanwhile() {
    let shared = tempfile::tempdir().unwrap();
    let root = path_of(shared.path());
    let block = format!("[channels_config.filesystem]\npaths = [{root:?}]\ndebounce_ms = 100\n");
    let sop = fs_sop("all", &root, &["created"]);
    let test = "two_replicas_watch_once";
    let Some(mut replicas) = Replicas::start(test, 2, "", &block, &[("all", &sop)]).await else { return };
    let owner = replicas.holder("filesystem").await;
    let watcher = &replicas.daemons[owner];
    watcher.wait_polling("filesystem").await;
    std::fs::write(shared.path().join("a.txt"), "a").unwrap();
    every_run(watcher, "all", 1).await;
    // A later file, once its run is there, shows the first did not come twice.
    std::fs::write(shared.path().join("b.txt"), "b").unwrap();
    assert_eq!(every_run(watcher, "all", 2).await.len(), 2, "one replica watches");

    replicas.daemons[owner].kill();
    std::fs::write(shared.path().join("c.txt"), "written while nobody watched").unwrap();
    let survivor = &replicas.daemons[1 - owner];
    every_run(survivor, "all", 3).await;
    std::fs::write(shared.path().join("d.txt"), "d").unwrap();
    let runs = every_run(survivor, "all", 4).await;
    let paths: std::collections::BTreeSet<&str> = runs.iter().map(|r| r["topic"].as_str().unwrap()).collect();
    assert_eq!((runs.len(), paths.len()), (4, 4), "a, b, c and d once each: {runs:?}");
    assert!(paths.contains(path_of(&shared.path().join("c.txt")).as_str()), "{paths:?}");
}
