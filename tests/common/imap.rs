//! A real IMAP server for whole-daemon tests: Dovecot (Debian's
//! `dovecot-imapd`, which `.ci/run` installs), started per test in the
//! foreground with its own config, user, maildir and run directories in a
//! temp dir, on free loopback ports: one plain port that also offers
//! STARTTLS, one implicit-TLS port, both with a certificate signed by a test
//! CA whose PEM is written for `ca_file`. It can be stopped and started again
//! on the same ports and maildir, for the tests of a server restart. Mail is
//! put in with IMAP APPEND over a small blocking client, so the test side
//! shares no code with the source it checks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, write_certificates, DEADLINE};

pub const USER: &str = "ops";
pub const PASSWORD: &str = "imap-test-password";
const DOVECOT: &str = "/usr/sbin/dovecot";

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    /// Plain IMAP, with STARTTLS offered.
    pub port: u16,
    /// Implicit TLS (IMAPS).
    pub tls_port: u16,
    child: Option<Child>,
}

/// Dovecot, started; `None` (with the reason printed) only when it is not
/// installed, so a machine without it skips rather than fails.
pub fn dovecot() -> Option<Dovecot> {
    dovecot_with("")
}

/// As [`dovecot`], with `extra` lines added to its config (e.g. an
/// `imap_capability` without IDLE).
pub fn dovecot_with(extra: &str) -> Option<Dovecot> {
    if !Path::new(DOVECOT).exists() {
        eprintln!("skipped: {DOVECOT} is not installed (apt-get install dovecot-imapd; .ci/run does)");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Dovecot's own processes run as its unprivileged users and must reach
    // the config, the password file and the maildir.
    set_mode(dir.path(), 0o755);
    let mut server = Dovecot { dir, port: free_port(), tls_port: free_port(), child: None };
    server.write_config(extra);
    server.start();
    Some(server)
}

impl Dovecot {
    /// The test CA's PEM, for `ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn write_config(&self, extra: &str) {
        let dir = self.dir.path();
        write_certificates(dir);
        let (uid, gid) = mail_owner();
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        chown(&mail, uid, gid);
        std::fs::write(dir.join("passwd"), format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n")).unwrap();
        let (internal, login) = service_users();
        let d = dir.display();
        let config = format!(
            "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
             protocols = imap\nlisten = 127.0.0.1\n\
             ssl = yes\nssl_cert = <{d}/server.pem\nssl_key = <{d}/server.key\n\
             disable_plaintext_auth = no\nauth_mechanisms = plain login\n\
             default_internal_user = {internal}\ndefault_login_user = {login}\n\
             first_valid_uid = {uid}\nmail_uid = {uid}\nmail_gid = {gid}\n\
             mail_location = maildir:{d}/mail/%u\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/mail/%u\n}}\n\
             namespace inbox {{\n  inbox = yes\n}}\n\
             service imap-login {{\n\
               inet_listener imap {{\n    address = 127.0.0.1\n    port = {}\n  }}\n\
               inet_listener imaps {{\n    address = 127.0.0.1\n    port = {}\n    ssl = yes\n  }}\n\
             }}\n{extra}\n",
            self.port, self.tls_port
        );
        std::fs::write(dir.join("dovecot.conf"), config).unwrap();
        for file in ["dovecot.conf", "passwd", "server.pem", "server.key", "ca.pem"] {
            set_mode(&dir.join(file), 0o644);
        }
    }

    /// Starts Dovecot in the foreground and waits until a client is greeted
    /// with the server ready (its authentication process up).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "Dovecot is already running");
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dovecot");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while Client::connect(self.port).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dovecot exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "dovecot did not become ready: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops Dovecot (SIGTERM, then waits), keeping its maildir and ports.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
            // The master leaves once its children have; wait until nothing
            // answers on the port, so a restart binds it again.
            let deadline = Instant::now() + DEADLINE;
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                assert!(Instant::now() < deadline, "dovecot still answers after stopping");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// What Dovecot logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Puts `raw` (an RFC 822 message) into `mailbox` with IMAP APPEND.
    pub fn append(&self, mailbox: &str, raw: &[u8]) {
        let mut client = Client::connect(self.port).expect("connect to dovecot");
        client.command(&format!("LOGIN {USER} {PASSWORD}")).expect("LOGIN");
        client.append(mailbox, raw).expect("APPEND");
        let _ = client.command("LOGOUT");
    }

    /// Creates a mailbox (a folder other than INBOX).
    pub fn create(&self, mailbox: &str) {
        let mut client = Client::connect(self.port).expect("connect to dovecot");
        client.command(&format!("LOGIN {USER} {PASSWORD}")).expect("LOGIN");
        client.command(&format!("CREATE {mailbox}")).expect("CREATE");
        let _ = client.command("LOGOUT");
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A message with the given headers (`Name: value` lines) and a text body.
pub fn message(headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut raw = String::new();
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    raw.push_str(&body.replace('\n', "\r\n"));
    raw.push_str("\r\n");
    raw.into_bytes()
}

/// The blocking IMAP client of the test side: tagged commands, answers read
/// up to their tagged completion.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

impl Client {
    /// Connects and reads the greeting; an error until Dovecot says it is
    /// ready (its first greeting may only say it waits for authentication).
    fn connect(port: u16) -> std::io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(DEADLINE))?;
        let mut client = Client { reader: BufReader::new(stream.try_clone()?), writer: stream, tag: 0 };
        loop {
            let line = client.line()?;
            if line.starts_with("* OK [CAPABILITY") {
                return Ok(client);
            }
            if !line.starts_with("* OK") {
                return Err(std::io::Error::other(format!("greeting: {line}")));
            }
        }
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("t{}", self.tag)
    }

    fn command(&mut self, command: &str) -> std::io::Result<()> {
        let tag = self.next_tag();
        self.writer.write_all(format!("{tag} {command}\r\n").as_bytes())?;
        self.completion(&tag)
    }

    fn append(&mut self, mailbox: &str, raw: &[u8]) -> std::io::Result<()> {
        let tag = self.next_tag();
        self.writer.write_all(format!("{tag} APPEND {mailbox} {{{}}}\r\n", raw.len()).as_bytes())?;
        let go_ahead = self.line()?;
        if !go_ahead.starts_with('+') {
            return Err(std::io::Error::other(format!("APPEND refused: {go_ahead}")));
        }
        self.writer.write_all(raw)?;
        self.writer.write_all(b"\r\n")?;
        self.completion(&tag)
    }

    /// Reads up to the tagged answer; anything but OK is an error. Literals
    /// in untagged answers are skipped by their announced size.
    fn completion(&mut self, tag: &str) -> std::io::Result<()> {
        loop {
            let line = self.line()?;
            if let Some(size) = literal_size(&line) {
                let mut skip = vec![0; size];
                self.reader.read_exact(&mut skip)?;
                continue;
            }
            if let Some(rest) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                return match rest.starts_with("OK") {
                    true => Ok(()),
                    false => Err(std::io::Error::other(format!("{tag}: {rest}"))),
                };
            }
        }
    }
}

fn literal_size(line: &str) -> Option<usize> {
    let open = line.trim_end().strip_suffix('}')?.rfind('{')?;
    line.trim_end()[open + 1..line.trim_end().len() - 1].parse().ok()
}

/// The uid and gid that own the mail: Dovecot refuses uid 0, so as root the
/// package's `dovecot` user; else whoever runs the test.
fn mail_owner() -> (u32, u32) {
    if unsafe { libc::geteuid() } != 0 {
        return unsafe { (libc::geteuid(), libc::getegid()) };
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let entry = passwd.lines().find(|l| l.starts_with("dovecot:")).expect("the dovecot user (dovecot-core makes it)");
    let fields: Vec<&str> = entry.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// The users Dovecot runs its internal and login processes as: the
/// package's when root, else the user running the test (Dovecot started by
/// a user runs everything as that user).
fn service_users() -> (String, String) {
    if unsafe { libc::geteuid() } == 0 {
        return ("dovecot".into(), "dovenull".into());
    }
    let user = std::env::var("USER").expect("USER names who runs the test");
    (user.clone(), user)
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown the maildir");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Dovecot {
    /// Makes the server renumber the mailbox (a new UIDVALIDITY), as a
    /// restore would: stopped, its UID list and indexes removed, started.
    pub fn renumber(&mut self) {
        self.stop();
        let maildir = self.dir.path().join("mail").join(USER);
        for entry in std::fs::read_dir(&maildir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("dovecot") {
                std::fs::remove_file(&path).unwrap();
            }
        }
        self.start();
    }
}
