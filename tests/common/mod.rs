//! A harness for whole-daemon tests: writes a config and SOPs into a temp
//! directory, starts the real `fanin` binary on a free port, and talks to it
//! over HTTP like any client would.

#![allow(dead_code)]

pub mod browser;
pub mod destination;
pub mod drive;
pub mod imap;
pub mod mqtt;
pub mod postgres;
pub mod proxy;
pub mod replicas;
pub mod slack;
pub mod telegram;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_fanin");

/// A config directory: `config.toml`, `sops/<name>/SOP.toml`, the store.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// `gateway_extra` goes inside `[gateway]` (after host and port = 0);
    /// `rest` is appended after it (other tables).
    pub fn new(gateway_extra: &str, rest: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "[gateway]\nhost = \"127.0.0.1\"\nport = 0\n{gateway_extra}\n\n[store]\nurl = \"sqlite://data/fanin.db\"\n\n{rest}\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        std::fs::create_dir_all(dir.path().join("sops")).unwrap();
        Setup { dir }
    }

    pub fn sop(self, name: &str, toml: &str) -> Setup {
        let d = self.dir.path().join("sops").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("SOP.toml"), toml).unwrap();
        self
    }

    /// Names another store in `[store].url` (a PostgreSQL URL).
    pub fn store_url(self, url: &str) -> Setup {
        let config = std::fs::read_to_string(self.config_path()).unwrap();
        let config = config.replacen("url = \"sqlite://data/fanin.db\"", &format!("url = {url:?}"), 1);
        std::fs::write(self.config_path(), config).unwrap();
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/fanin.db")
    }

    /// Starts the daemon. The config then names the port it took, so CLI
    /// commands that talk to a running daemon (`fire`, `outbox retry`) find
    /// it, and a restart takes the same port.
    pub fn start(&self) -> Daemon {
        self.start_with(|_| {})
    }

    /// As [`Setup::start`], with the daemon's log (its stderr) written to a
    /// file, so a test can wait for a line of it ([`Setup::log`]): the
    /// signal for what the daemon only logs, such as a refused reload.
    pub fn start_logged(&self) -> Daemon {
        let file = std::fs::File::create(self.log_path()).expect("create the daemon's log file");
        self.start_with(|command| {
            command.stderr(file);
        })
    }

    /// What the daemon started last by [`Setup::start_logged`] logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).expect("the daemon's log file")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// As [`Setup::start`], with the command adjusted first (an environment variable set).
    pub fn start_with(&self, adjust: impl FnOnce(&mut Command)) -> Daemon {
        let d = Daemon::start_with(&self.config_path(), adjust);
        let port = d.base.rsplit(':').next().unwrap();
        let config = std::fs::read_to_string(self.config_path()).unwrap();
        std::fs::write(self.config_path(), config.replacen("port = 0\n", &format!("port = {port}\n"), 1)).unwrap();
        d
    }

    /// What a source is given, built in-process from this config over a
    /// store that refuses commits on demand: for the tests of a source's
    /// answer to a store failure, which a daemon cannot be made to show.
    pub async fn faulty_sources(
        &self,
    ) -> (fanin::sources::SourceContext, std::sync::Arc<fanin::store::faults::FaultyStore>) {
        use std::sync::Arc;
        let config = fanin::config::load(&self.config_path()).expect("config");
        let (catalog, _) = fanin::daemon::load_catalog(&config).expect("SOPs");
        std::fs::create_dir_all(self.dir.path().join("data")).unwrap();
        let sqlite = fanin::store::sqlite::SqliteStore::open(&self.db_path()).expect("store");
        let store = Arc::new(fanin::store::faults::FaultyStore::new(Arc::new(sqlite)));
        let dispatcher =
            fanin::dispatch::Dispatcher::new(catalog, store.clone(), fanin::daemon::dispatch_settings(&config))
                .await
                .unwrap();
        let ctx = fanin::sources::SourceContext {
            config: Arc::new(config),
            dispatcher: Arc::new(dispatcher),
            store: store.clone(),
            health: Arc::new(fanin::sources::SourcesHealth::default()),
            shutdown: tokio_util::sync::CancellationToken::new(),
            cluster: None,
        };
        (ctx, store)
    }

    /// Runs a `fanin` subcommand against this config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).arg("--config").arg(self.config_path()).output().expect("run fanin")
    }

    /// A CLI command that must succeed, its JSON output parsed.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `fanin daemon` started with the environment variable `var` unset:
    /// it must refuse to start; what it printed.
    pub fn daemon_refusal_without(&self, var: &str) -> String {
        let out =
            Command::new(BIN).args(["daemon", "--config"]).arg(self.config_path()).env_remove(var).output().unwrap();
        assert!(!out.status.success(), "the daemon started without {var}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A CLI command that must be refused (exit 1): the one line it prints.
    pub fn cli_refusal(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or_default().to_string()
    }
}

/// How long a test waits for a signal before it fails: generous, for a
/// loaded machine (a reconnecting source backs off for up to half a minute);
/// a passing test never waits it out.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// What a probe of [`eventually`] answers: whether the state waited for
/// holds (`bool`), or the state once it holds and, until then, what was seen
/// instead (`Result`), which the failure shows.
pub trait Probe {
    type Held;
    fn held(self) -> Result<Self::Held, String>;
}

impl Probe for bool {
    type Held = ();
    fn held(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T, E: std::fmt::Display> Probe for Result<T, E> {
    type Held = T;
    fn held(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// Polls `probe` until it holds, for at most [`DEADLINE`], then fails the
/// test naming `what` (and what the probe saw last). The one way a
/// whole-daemon test waits for a signal; a synchronous check is a probe too
/// (`|| async { check() }`).
pub async fn eventually<P: Probe>(what: &str, mut probe: impl AsyncFnMut() -> P) -> P::Held {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match probe().await.held() {
            Ok(held) => return held,
            Err(seen) if Instant::now() >= deadline => match seen.is_empty() {
                true => panic!("timed out waiting for {what}"),
                false => panic!("timed out waiting for {what}; last seen: {seen}"),
            },
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A loopback port nothing listens on now (for a server a test starts, or
/// one that must be unreachable).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A webhook SOP in `auto` mode (runs start `running`).
pub fn webhook_sop(name: &str, path: &str, extra: &str) -> String {
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n{extra}\n\n\
         [[triggers]]\ntype = \"webhook\"\npath = \"{path}\"\n"
    )
}

pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub pairing_code: Option<String>,
    pub http: reqwest::Client,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_with(config, |_| {})
    }

    /// As [`Daemon::start`], with `adjust` applied to the command first
    /// (environment, resource limits in `pre_exec`).
    pub fn start_with(config: &Path, adjust: impl FnOnce(&mut Command)) -> Daemon {
        let mut command = Command::new(BIN);
        command
            .arg("daemon")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        adjust(&mut command);
        let mut child = command.spawn().expect("spawn fanin daemon");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut pairing_code = None;
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => line,
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    panic!("daemon did not report its address (exit status {status:?})");
                }
            };
            if let Some(code) = line.strip_prefix("Pairing code: ") {
                pairing_code = Some(code.trim().to_string());
            }
            if let Some(addr) = line.strip_prefix("Listening on ") {
                let base = format!("http://{}", addr.trim());
                let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                return Daemon { child, base, pairing_code, http };
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Pairs with the start-up code and returns the token.
    pub async fn pair(&self) -> String {
        let code = self.pairing_code.clone().expect("daemon printed a pairing code");
        let r = self.http.post(self.url("/pair")).header("X-Pairing-Code", code).send().await.unwrap();
        assert_eq!(r.status(), 200, "pairing with the printed code");
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.post(self.url(path)).header("content-type", "application/json").body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body, headers)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Daemon {
    /// The run summaries of `sop`, newest first, as `GET /admin/runs` lists them.
    pub async fn runs_of(&self, sop: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/admin/runs?sop={sop}&limit=1000")).await;
        assert_eq!(status, 200, "{body}");
        body["runs"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `sop` has at least `count` runs; their summaries,
    /// newest first.
    pub async fn wait_runs_of(&self, sop: &str, count: usize) -> Vec<Value> {
        eventually(&format!("{count} runs of {sop}"), async || {
            let runs = self.runs_of(sop).await;
            match runs.len() >= count {
                true => Ok(runs),
                false => Err(format!("{} runs", runs.len())),
            }
        })
        .await
    }

    /// Waits until the source `instance` (`email:ops`) is up and has been
    /// answered a poll, with the daemon ready.
    pub async fn wait_polling(&self, instance: &str) {
        self.wait_ready(&format!("{instance} up"), |status, body| {
            let source = &body["sources"][instance];
            status == 200 && source["status"] == "up" && !source["last_poll_at"].is_null()
        })
        .await;
    }

    /// A run's whole record, as `GET /admin/runs/{id}` gives it.
    pub async fn run(&self, run: &str) -> Value {
        let (status, body) = self.get(&format!("/admin/runs/{run}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until `/ready` satisfies `check`, and returns its answer.
    pub async fn wait_ready(&self, what: &str, check: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
        eventually(&format!("/ready to show {what}"), async || {
            let (status, body) = self.get("/ready").await;
            if check(status, &body) {
                Ok((status, body))
            } else {
                Err(format!("{status} {body}"))
            }
        })
        .await
    }

    /// A run's status, as `GET /admin/runs/{id}` gives it.
    pub async fn run_status(&self, run: &str) -> Value {
        let (status, body) = self.get(&format!("/admin/runs/{run}")).await;
        assert_eq!(status, 200, "{body}");
        body["status"].clone()
    }

    /// A run's audit records, oldest first.
    pub async fn audit_of(&self, run: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/admin/audit?run_id={run}")).await;
        assert_eq!(status, 200, "{body}");
        body["records"].as_array().unwrap().clone()
    }

    /// The value of one series of `/metrics` (`name` or `name{labels}`, as
    /// the exporter writes it), if the page has it.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (status, page) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics");
        let page = page.as_str().expect("metrics are text").to_string();
        page.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a metric value is a number"))
        })
    }
}

/// The kinds of audit records, in order.
pub fn kinds(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["kind"].as_str().unwrap()).collect()
}

/// A test CA, a server certificate for localhost and 127.0.0.1, and a
/// client certificate, all signed by the CA: `ca.pem`, `server.pem`/`.key`,
/// `client.pem`/`.key` in `dir` (the MQTT broker's and Dovecot's).
pub fn write_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "fanin test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let leaf = |name: &str, sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        if name == "server" {
            params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        }
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    leaf("server", vec!["localhost".into()]);
    leaf("client", vec!["fanin-client".into()]);
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
}
