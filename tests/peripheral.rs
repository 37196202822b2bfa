//! Serial peripherals through the real daemon: a pseudo-terminal stands in
//! for the board. The config points at a symlink in the temp directory, so
//! a test can unplug the "board" (close the pty) and plug in a new one (a
//! fresh pty behind the same symlink), as a USB device re-enumerating would.
//! With replicas (PostgreSQL) one of them holds the port at a time.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::replicas::Replicas;
use common::*;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, unlockpt, PtyMaster};
use serde_json::{json, Value};

const BOARD: &str = "nucleo";

/// The board's side of a pseudo-terminal: we write lines to the master; the
/// daemon opens the slave by its path. Dropping it unplugs the board: the
/// daemon's reads fail with EIO and the slave path goes away.
struct FakeBoard {
    master: PtyMaster,
    slave_path: PathBuf,
}

impl FakeBoard {
    fn plug_in() -> FakeBoard {
        // Close-on-exec from the start: tests run in parallel threads, and a
        // master inherited by a daemon another test spawns would keep this
        // pty alive after it is dropped.
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).expect("posix_openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let slave_path = PathBuf::from(slave_name(&master));
        FakeBoard { master, slave_path }
    }

    fn send(&mut self, line: &str) {
        self.send_bytes(line.as_bytes());
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the pty master");
    }
}

#[cfg(target_os = "linux")]
fn slave_name(master: &PtyMaster) -> String {
    nix::pty::ptsname_r(master).expect("ptsname")
}

#[cfg(not(target_os = "linux"))]
fn slave_name(master: &PtyMaster) -> String {
    // SAFETY: no other thread calls ptsname (tests use ptsname only here,
    // one call at a time per test; the result is copied at once).
    unsafe { nix::pty::ptsname(master) }.expect("ptsname")
}

/// Points `link` at the board's device, replacing any previous link at once.
fn link_device(link: &Path, board: &FakeBoard) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&board.slave_path, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

fn peripheral_sop(name: &str, signal: &str, condition: Option<&str>) -> String {
    let condition = condition.map(|c| format!("condition = \"{c}\"\n")).unwrap_or_default();
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n\n\
         [[triggers]]\ntype = \"peripheral\"\nboard = \"{BOARD}\"\nsignal = \"{signal}\"\n{condition}"
    )
}

/// A daemon with a serial board at `<dir>/board-tty` and two SOPs: `button`
/// (`pin_3`, only when `> 0`) and `thermo` (`temp`, always).
fn setup() -> Setup {
    Setup::new("", &format!("[peripherals.{BOARD}]\ntransport = \"serial\"\npath = \"board-tty\"\nbaud = 115200\n"))
        .sop("button", &peripheral_sop("button", "pin_3", Some("> 0")))
        .sop("thermo", &peripheral_sop("thermo", "temp", None))
}

fn device_link(setup: &Setup) -> PathBuf {
    setup.dir.path().join("board-tty")
}

/// The reader's health entry, from `/ready` (which lists every source
/// whether or not it answers 200).
async fn port_state(d: &Daemon) -> Value {
    let (_, ready) = d.get("/ready").await;
    let state = &ready["sources"][format!("peripheral:{BOARD}")];
    assert!(state.is_object(), "/ready lists the board's port: {ready}");
    state.clone()
}

async fn wait_for_port(d: &Daemon, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("the serial port to become {what}"), async || {
        let state = port_state(d).await;
        if done(&state) {
            Ok(state)
        } else {
            Err(state)
        }
    })
    .await
}

async fn wait_until_up(d: &Daemon) -> Value {
    wait_for_port(d, "up", |s| s["status"] == json!("up")).await
}

/// Full records of the runs of one SOP, oldest first.
async fn runs_of(d: &Daemon, sop: &str) -> Vec<Value> {
    let (status, list) = d.get(&format!("/admin/runs?sop={sop}")).await;
    assert_eq!(status, 200, "{list}");
    let mut runs = Vec::new();
    for summary in list["runs"].as_array().unwrap() {
        let (status, run) = d.get(&format!("/admin/runs/{}", summary["run_id"].as_str().unwrap())).await;
        assert_eq!(status, 200, "{run}");
        runs.push(run);
    }
    runs.sort_by_key(|r| r["started_at"].as_str().unwrap().to_string());
    runs
}

/// Waits until `sop` has `count` runs and returns their payloads.
async fn wait_for_payloads(d: &Daemon, sop: &str, count: usize) -> Vec<Value> {
    let runs = eventually(&format!("{count} runs of {sop}"), async || {
        let runs = runs_of(d, sop).await;
        if runs.len() >= count {
            Ok(runs)
        } else {
            Err(format!("{} runs: {runs:?}", runs.len()))
        }
    })
    .await;
    runs.iter().map(|r| r["payload"].clone()).collect()
}

#[tokio::test]
async fn lines_from_the_board_start_runs_with_their_values() {
    let setup = setup();
    let mut board = FakeBoard::plug_in();
    link_device(&device_link(&setup), &board);
    let d = setup.start();
    wait_until_up(&d).await;

    board.send("temp=21.5\r\n");
    board.send("{\"signal\": \"temp\", \"value\": {\"c\": 22, \"unit\": \"C\"}}\n");
    board.send("temp=warm\n");

    assert_eq!(
        wait_for_payloads(&d, "thermo", 3).await,
        vec![json!(21.5), json!({"c": 22, "unit": "C"}), json!("warm")]
    );
    let run = &runs_of(&d, "thermo").await[0];
    assert_eq!(run["source"], json!("peripheral"));
    assert_eq!(run["topic"], json!("nucleo/temp"));
    assert_eq!(run["client"], json!("serial:nucleo"));
    assert_eq!(run["status"], json!("running"));
    let state = port_state(&d).await;
    assert!(state["last_event_at"].is_string(), "{state}");
}

#[tokio::test]
async fn the_direct_condition_form_decides_on_the_signal_value() {
    let setup = setup();
    let mut board = FakeBoard::plug_in();
    link_device(&device_link(&setup), &board);
    let d = setup.start();
    wait_until_up(&d).await;

    // Lines are handled in order, so once the run for `2` exists, `0` and
    // `-1` have been judged too.
    board.send("pin_3=0\npin_3=-1\npin_3=1\npin_3=0\npin_3=2\n");
    assert_eq!(wait_for_payloads(&d, "button", 2).await, vec![json!(1), json!(2)]);
    board.send("temp=1\n");
    wait_for_payloads(&d, "thermo", 1).await;
    assert_eq!(runs_of(&d, "button").await.len(), 2, "pin_3=0 and pin_3=-1 start nothing");
}

#[tokio::test]
async fn garbage_lines_are_skipped_and_later_lines_still_work() {
    let setup = setup();
    let mut board = FakeBoard::plug_in();
    link_device(&device_link(&setup), &board);
    let d = setup.start();
    wait_until_up(&d).await;

    board.send("hello world\n");
    board.send("pin/3=1\n");
    board.send("{\"signal\": \"temp\"}\n");
    board.send(&format!("temp={}\n", "9".repeat(70_000))); // over untrusted_payload_max_bytes
    board.send("\n\r\n");
    board.send_bytes(b"temp=\xff\xfe\n"); // not UTF-8: line noise at the wrong baud
    board.send("temp=20\n");

    assert_eq!(wait_for_payloads(&d, "thermo", 1).await, vec![json!(20)]);
    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    let bad = metrics
        .lines()
        .find(|l| l.starts_with("fanin_peripheral_bad_lines_total{board=\"nucleo\"}"))
        .unwrap_or_else(|| panic!("no bad-line counter in {metrics}"));
    assert!(bad.ends_with(" 5"), "five bad lines counted (blank lines are not bad): {bad}");
    assert_eq!(port_state(&d).await["status"], json!("up"), "bad lines do not close the port");
}

#[tokio::test]
async fn an_unplugged_board_is_reopened_when_it_comes_back() {
    let setup = setup();
    let link = device_link(&setup);
    let mut board = FakeBoard::plug_in();
    link_device(&link, &board);
    let d = setup.start();
    wait_until_up(&d).await;
    board.send("temp=1\n");
    wait_for_payloads(&d, "thermo", 1).await;

    drop(board);
    let down = wait_for_port(&d, "down", |s| s["status"] == json!("down")).await;
    assert!(down["detail"].as_str().is_some_and(|d| !d.is_empty()), "down says why: {down}");

    let mut board = FakeBoard::plug_in();
    link_device(&link, &board);
    let up = wait_for_port(&d, "up again", |s| s["status"] == json!("up") && s["reconnects"].as_u64() >= Some(1)).await;
    assert!(up.get("detail").is_none(), "{up}");
    board.send("temp=2\n");
    assert_eq!(wait_for_payloads(&d, "thermo", 2).await, vec![json!(1), json!(2)]);
}

#[tokio::test]
async fn a_board_missing_at_start_is_opened_once_it_appears() {
    let setup = setup();
    let link = device_link(&setup);
    let d = setup.start();
    let down = wait_for_port(&d, "down", |s| s["status"] == json!("down")).await;
    assert!(down["detail"].as_str().unwrap().contains("board-tty"), "the error names the device: {down}");

    let mut board = FakeBoard::plug_in();
    link_device(&link, &board);
    wait_until_up(&d).await;
    board.send("pin_3=5\n");
    assert_eq!(wait_for_payloads(&d, "button", 1).await, vec![json!(5)]);
}

#[tokio::test]
async fn a_daemon_reading_a_board_stops_cleanly_on_sigterm() {
    let setup = setup();
    let board = FakeBoard::plug_in();
    link_device(&device_link(&setup), &board);
    let mut d = setup.start();
    wait_until_up(&d).await;

    let pid = d.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = eventually("the daemon to stop while its serial reader is open", async || {
        d.child.try_wait().unwrap().ok_or("still running")
    })
    .await;
    assert!(status.success(), "graceful stop exits 0: {status}");
}

#[tokio::test]
async fn values_nested_deeper_than_the_limit_are_bad_lines() {
    let setup = Setup::new(
        "max_payload_depth = 3",
        &format!("[peripherals.{BOARD}]\ntransport = \"serial\"\npath = \"board-tty\"\nbaud = 115200\n"),
    )
    .sop("thermo", &peripheral_sop("thermo", "temp", None));
    let mut board = FakeBoard::plug_in();
    link_device(&device_link(&setup), &board);
    let d = setup.start();
    wait_until_up(&d).await;

    board.send("temp=[[[[1]]]]\n");
    board.send("{\"signal\": \"temp\", \"value\": [[[[1]]]]}\n");
    board.send(&format!("temp={}1{}\n", "[".repeat(5000), "]".repeat(5000)));
    board.send("temp=[[[1]]]\n");
    board.send("{\"signal\": \"temp\", \"value\": {\"a\": [[2]]}}\n");

    assert_eq!(wait_for_payloads(&d, "thermo", 2).await, vec![json!([[[1]]]), json!({"a": [[2]]})]);
    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    let bad = metrics
        .lines()
        .find(|l| l.starts_with("fanin_peripheral_bad_lines_total{board=\"nucleo\"}"))
        .unwrap_or_else(|| panic!("no bad-line counter in {metrics}"));
    assert!(bad.ends_with(" 3"), "the three lines nested too deep are bad lines: {bad}");
    assert_eq!(port_state(&d).await["status"], json!("up"));
}

/// Three replicas on one store, each configured with the same board: one
/// holds the port (the duty `peripheral:<board>`), the others stand by;
/// when the holder is killed another opens the port within the lease and
/// the board's lines go on starting runs, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_read_the_board_once_and_another_takes_over_when_the_reader_dies() {
    let mut board = FakeBoard::plug_in();
    let config = format!("[peripherals.{BOARD}]\ntransport = \"serial\"\npath = \"board-tty\"\nbaud = 115200\n");
    let sop = peripheral_sop("thermo", "temp", None);
    let test = "three_replicas_read_the_board_once";
    let Some(mut replicas) = Replicas::start(test, 3, "", &config, &[("thermo", &sop)]).await else { return };
    for setup in &replicas.setups {
        link_device(&device_link(setup), &board);
    }
    let duty = format!("peripheral:{BOARD}");
    let owner = replicas.holder(&duty).await;
    wait_until_up(&replicas.daemons[owner]).await;
    board.send("temp=1\ntemp=2\n");
    assert_eq!(wait_for_payloads(&replicas.daemons[owner], "thermo", 2).await, vec![json!(1), json!(2)]);

    replicas.daemons[owner].kill();
    let survivor = &replicas.daemons[(owner + 1) % 3];
    let taken = eventually("another replica to hold the port", async || {
        for d in replicas.daemons.iter().enumerate().filter(|(i, _)| *i != owner).map(|(_, d)| d) {
            if port_state(d).await["status"] == json!("up") {
                return Ok(());
            }
        }
        Err("none up yet")
    });
    taken.await;
    board.send("temp=3\n");
    let runs = eventually("the third run", async || {
        let runs = runs_of(survivor, "thermo").await;
        if runs.len() >= 3 {
            Ok(runs)
        } else {
            Err(runs.len())
        }
    })
    .await;
    let values: Vec<&Value> = runs.iter().map(|r| &r["payload"]).collect();
    assert_eq!(values, [&json!(1), &json!(2), &json!(3)], "each line once");
}
