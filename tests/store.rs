//! The store under faults of the machine, through the real daemon and CLI:
//! one daemon per store, reads beside a daemon stopped in the middle of a
//! commit, and a `-shm` that stops taking writes.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn setup() -> Setup {
    Setup::new("webhook_rate_limit_per_minute = 0", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""))
}

/// A child process that is killed if the test ends before it does.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_second_daemon_on_the_same_store_is_refused_naming_the_store_and_the_first() {
    let setup = setup();
    let d = setup.start();
    let token = d.pair().await;
    // Another config with a port of its own, naming the same store.
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let other: String = config
        .lines()
        .map(|l| if l.starts_with("port = ") { "port = 0".to_string() } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    let other_path = setup.dir.path().join("other.toml");
    std::fs::write(&other_path, other).unwrap();

    let child = Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(&other_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut second = Reaped(child);
    let mut status = None;
    eventually("the second daemon to exit", || {
        status = second.0.try_wait().unwrap();
        std::future::ready(status.is_some())
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(second.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.unwrap().code(), Some(1), "{stderr}");
    assert!(stderr.contains("data/fanin.db"), "names the store: {stderr}");
    assert!(stderr.contains(&format!("pid {}", d.child.id())), "names the daemon holding it: {stderr}");

    // The first one never noticed.
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 200);
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses.
    stat.rsplit(')').next()?.trim_start().chars().next()
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

/// Whether a process holds the store's write lock now: a transaction that
/// asks for it without waiting is refused as busy.
fn write_lock_held(probe: &rusqlite::Connection) -> bool {
    match probe.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => {
            probe.execute_batch("ROLLBACK").unwrap();
            false
        }
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => true,
        Err(e) => panic!("probe: {e}"),
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_answer_while_the_daemon_is_stopped_mid_commit() {
    let setup = setup();
    let d = setup.start();
    let token = d.pair().await;
    let (done, accepted) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (http, url, token) = (d.http.clone(), d.url("/sop/deploy"), token.clone());
        let (done, accepted) = (done.clone(), accepted.clone());
        workers.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(r) = http.post(&url).bearer_auth(&token).body("{}").send().await {
                    if r.status() == 200 {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let probe = rusqlite::Connection::open(setup.db_path()).unwrap();
    let pid = d.child.id();
    // Not a wait for a signal: stops land at random points of the burst, so
    // the test samples, up to three catches within its budget, one required.
    let (mut caught, deadline) = (0, Instant::now() + Duration::from_secs(90));
    while caught < 3 && Instant::now() < deadline {
        let before = accepted.load(Ordering::Relaxed);
        eventually("the burst to make progress", || std::future::ready(accepted.load(Ordering::Relaxed) > before))
            .await;
        signal(pid, libc::SIGSTOP);
        eventually("the daemon to stop", || std::future::ready(process_state(pid) == Some('T'))).await;
        if write_lock_held(&probe) {
            caught += 1;
            for args in [
                &["runs", "list", "--limit", "1"][..],
                &["tokens", "list"],
                &["outbox", "list", "--limit", "1"],
                &["audit", "--run", "none"],
            ] {
                let began = Instant::now();
                let out = setup.cli(args);
                assert!(out.status.success(), "fanin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                assert!(began.elapsed() < Duration::from_secs(4), "fanin {args:?} waited for a lock");
            }
        }
        signal(pid, libc::SIGCONT);
    }
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(caught > 0, "the daemon was never caught holding the write lock");
}

/// Sets the immutable flag on a file (which stops even root from writing
/// it) and clears it when dropped; `None` where that cannot be done.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &std::path::Path) -> Option<Immutable> {
        let set = Command::new("chattr").arg("+i").arg(path).stderr(Stdio::null()).status().ok()?;
        set.success().then(|| Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[tokio::test]
async fn an_unwritable_shm_makes_the_store_unavailable_instead_of_killing_the_daemon() {
    // A SOP with a step: its runs wait for an agent and queue no envelope, so
    // no delivery writes the store behind the test's back while the file is
    // made unwritable (a write already past its check is the window the
    // check cannot close).
    let sop = format!("{}\n[[steps]]\ntitle = \"Check\"\nbody = \"Look\"\n", webhook_sop("deploy", "/sop/deploy", ""));
    let setup = Setup::new("webhook_rate_limit_per_minute = 0", "").sop("deploy", &sop);
    let mut d = setup.start();
    let token = d.pair().await;
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 200);
    let shm = std::path::PathBuf::from(format!("{}-shm", setup.db_path().display()));
    let Some(immutable) = Immutable::set(&shm) else {
        eprintln!("skipped: chattr +i is not available here (it needs root and a filesystem with the flag)");
        return;
    };

    let (status, body, _) = d.post("/sop/deploy", Some(&token), "{}", &[]).await;
    assert_eq!((status, &body["error"]), (503, &serde_json::json!("store_unavailable")), "{body}");
    let (status, ready) = d.get("/ready").await;
    assert_eq!(status, 503);
    assert!(ready["store"].as_str().unwrap().contains("fanin.db-shm is not writable"), "{ready}");
    assert_eq!(d.get("/health").await.0, 200, "the daemon is alive");
    let out = setup.cli(&["runs", "list"]);
    assert!(out.status.success(), "reading still works: {}", String::from_utf8_lossy(&out.stderr));

    drop(immutable);
    let (http, url) = (d.http.clone(), d.url("/sop/deploy"));
    eventually("writes to be taken again", || {
        let req = http.post(&url).bearer_auth(&token).body("{}").send();
        async move { req.await.map(|r| r.status() == 200).unwrap_or(false) }
    })
    .await;

    // A crash leaves the -shm behind; no daemon starts on it while it is unwritable.
    d.kill();
    let _immutable = Immutable::set(&shm).unwrap();
    let out = setup.cli(&["daemon"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("fanin.db-shm is not writable"), "{stderr}");
}
