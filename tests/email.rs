//! The inbox source through a live daemon and a real IMAP server: a
//! Dovecot per test (see `common/imap.rs`), mail put in with IMAP APPEND,
//! runs and audit records read over the admin API. Nothing waits a fixed
//! time for an outcome: each waits, up to a generous deadline, for the
//! state it expects. The mailboxes poll only once an hour, so mail that
//! arrives while a session is open can only reach fanin through IDLE.
//! With replicas (PostgreSQL) one of them reads the mailbox at a time.

mod common;

use common::imap::{dovecot, message, Dovecot, PASSWORD, USER};
use common::replicas::Replicas;
use common::*;
use serde_json::{json, Value};

// ------------------------------------------------------------ daemon setup --

fn email_block(server: &Dovecot, security: &str, extra: &str) -> String {
    let port = if security == "tls" { server.tls_port } else { server.port };
    format!(
        "[channels_config.email.ops]\nimap_host = \"127.0.0.1\"\nimap_port = {port}\nsecurity = \"{security}\"\n\
         username = \"{USER}\"\npassword = \"{PASSWORD}\"\npoll_interval_secs = 3600\n{extra}\n"
    )
}

fn email_sop(name: &str, condition: Option<&str>) -> String {
    let condition = condition.map(|c| format!("condition = {c:?}\n")).unwrap_or_default();
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n\n\
         [[triggers]]\ntype = \"channel\"\nchannel = \"email\"\nalias = \"ops\"\n{condition}"
    )
}

fn mail(subject: &str, message_id: &str) -> Vec<u8> {
    message(
        &[
            ("From", "Alice <alice@example.com>"),
            ("To", "ops@example.com"),
            ("Subject", subject),
            ("Message-ID", message_id),
        ],
        &format!("body of {subject}"),
    )
}

fn mailbox(body: &Value) -> &Value {
    &body["sources"]["email:ops"]
}

async fn wait_up(d: &Daemon) {
    d.wait_polling("email:ops").await;
}

/// Waits until `sop` has `count` runs; returns their payloads' subjects,
/// sorted.
async fn wait_subjects(d: &Daemon, sop: &str, count: usize) -> Vec<String> {
    let runs = d.wait_runs_of(sop, count).await;
    let mut subjects = Vec::new();
    for run in &runs {
        assert_eq!(run["source"], json!("email"), "{run}");
        subjects.push(payload(d, run).await["subject"].as_str().unwrap().to_string());
    }
    subjects.sort();
    subjects
}

async fn payload(d: &Daemon, run: &Value) -> Value {
    d.run(run["run_id"].as_str().unwrap()).await["payload"].clone()
}

/// The `event_refused` audit records.
async fn refused(d: &Daemon) -> Vec<Value> {
    let (status, audit) = d.get("/admin/audit?limit=10000").await;
    assert_eq!(status, 200, "{audit}");
    audit["records"].as_array().unwrap().iter().filter(|r| r["kind"] == json!("event_refused")).cloned().collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ------------------------------------------------------------------ tests --

/// Every new mail starts a run of every SOP listening on the mailbox whose
/// condition holds; the mail already there at the first start is not
/// replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_new_mail_starts_a_run_and_conditions_see_the_subject() {
    let Some(server) = dovecot() else { return };
    server.append("INBOX", &mail("old", "<old@test>"));
    let setup = Setup::new("", &email_block(&server, "plain", ""))
        .sop("every", &email_sop("every", None))
        .sop("deploys", &email_sop("deploys", Some(r#"$.subject == "deploy""#)));
    let d = setup.start();
    wait_up(&d).await;

    server.append("INBOX", &mail("hello", "<hello@test>"));
    server.append("INBOX", &mail("deploy", "<deploy@test>"));
    assert_eq!(wait_subjects(&d, "every", 2).await, strings(&["deploy", "hello"]));
    assert_eq!(wait_subjects(&d, "deploys", 1).await, strings(&["deploy"]));

    let run = &d.runs_of("deploys").await[0];
    let p = payload(&d, run).await;
    assert_eq!(p["message_id"], "deploy@test");
    assert_eq!(p["from"], "alice@example.com");
    assert_eq!(p["to"], json!(["ops@example.com"]));
    assert_eq!(p["text"].as_str().unwrap().trim(), "body of deploy");
    assert_eq!(d.runs_of("every").await.len(), 2, "the mail there before the first start was replayed");
}

/// Mail that arrives while fanin is down starts its runs once after the
/// restart; none starts twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_fanin_loses_and_repeats_no_mail() {
    let Some(server) = dovecot() else { return };
    let setup = Setup::new("", &email_block(&server, "plain", "")).sop("every", &email_sop("every", None));
    let mut d = setup.start();
    wait_up(&d).await;
    server.append("INBOX", &mail("before", "<before@test>"));
    wait_subjects(&d, "every", 1).await;
    d.stop();

    server.append("INBOX", &mail("while down 1", "<down1@test>"));
    server.append("INBOX", &mail("while down 2", "<down2@test>"));
    let d = setup.start();
    wait_up(&d).await;
    server.append("INBOX", &mail("after", "<after@test>"));
    let expected = strings(&["after", "before", "while down 1", "while down 2"]);
    assert_eq!(wait_subjects(&d, "every", 4).await, expected);
    assert_eq!(d.runs_of("every").await.len(), 4);
}

/// A server restart shows in `/ready`, fanin dials again, IDLEs again, and
/// the next mail starts its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_reconnected_and_idled_on() {
    let Some(mut server) = dovecot() else { return };
    let setup = Setup::new("", &email_block(&server, "plain", "")).sop("every", &email_sop("every", None));
    let d = setup.start();
    wait_up(&d).await;
    server.append("INBOX", &mail("one", "<one@test>"));
    wait_subjects(&d, "every", 1).await;

    server.stop();
    let (status, _) = d.wait_ready("email:ops not up", |_, body| mailbox(body)["status"] != "up").await;
    assert_eq!(status, 503);
    server.start();
    wait_up(&d).await;
    server.append("INBOX", &mail("two", "<two@test>"));
    wait_subjects(&d, "every", 2).await;
    // Taken in by the new session's IDLE: the catch-up after the reconnect
    // is over once the previous mail started its run.
    server.append("INBOX", &mail("three", "<three@test>"));
    assert_eq!(wait_subjects(&d, "every", 3).await, strings(&["one", "three", "two"]));
}

/// A refused login shows the mailbox down in `/ready`, with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_in_ready() {
    let Some(server) = dovecot() else { return };
    let block = email_block(&server, "plain", "").replace(PASSWORD, "not-the-password");
    let setup = Setup::new("", &block).sop("every", &email_sop("every", None));
    let d = setup.start();
    let (status, body) = d.wait_ready("email:ops down", |_, body| mailbox(body)["status"] == "down").await;
    assert_eq!(status, 503, "{body}");
    let detail = mailbox(&body)["detail"].to_string();
    assert!(detail.contains("refused the login as ops"), "{body}");
    assert!(!body.to_string().contains("not-the-password"), "the password shows: {body}");
}

/// A mail over `max_message_bytes` starts nothing and is audited as refused
/// with its Message-ID; the mail after it is taken in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_over_the_size_limit_is_refused_with_its_message_id() {
    let Some(server) = dovecot() else { return };
    let setup = Setup::new("", &email_block(&server, "plain", "")).sop("every", &email_sop("every", None));
    let d = setup.start();
    wait_up(&d).await;
    let big_body = "x".repeat(76).repeat(12 * 1024 * 1024 / 77);
    let big = message(&[("From", "a@example.com"), ("Subject", "big"), ("Message-ID", "<big@test>")], &big_body);
    assert!(big.len() > 12_000_000);
    server.append("INBOX", &big);
    server.append("INBOX", &mail("small", "<small@test>"));
    assert_eq!(wait_subjects(&d, "every", 1).await, strings(&["small"]));
    let records = refused(&d).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let detail = &records[0]["detail"];
    assert_eq!(detail["source"], "email");
    assert_eq!(detail["topic"], "email/ops");
    assert_eq!(detail["reason"], "message_too_large");
    assert!(detail["detail"].as_str().unwrap().contains("big@test"), "{detail}");
    assert!(detail["bytes"].as_u64().unwrap() > 12_000_000, "{detail}");
}

/// `allowed_senders` refuses, audited, a sender not on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_not_allowed_is_refused_and_audited() {
    let Some(server) = dovecot() else { return };
    let block = email_block(&server, "plain", "allowed_senders = [\"@corp.example\"]");
    let setup = Setup::new("", &block).sop("every", &email_sop("every", None));
    let d = setup.start();
    wait_up(&d).await;
    let from = |sender: &str, subject: &str| message(&[("From", sender), ("Subject", subject)], "b");
    server.append("INBOX", &from("mallory@elsewhere.example", "outsider"));
    server.append("INBOX", &from("Boss <boss@CORP.example>", "insider"));
    assert_eq!(wait_subjects(&d, "every", 1).await, strings(&["insider"]));
    let records = refused(&d).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["detail"]["reason"], "sender_not_allowed");
    assert!(records[0]["detail"]["detail"].as_str().unwrap().contains("mallory@elsewhere.example"));
}

/// Implicit TLS, the server's certificate trusted through `ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_a_test_ca() {
    let Some(server) = dovecot() else { return };
    let ca = format!("ca_file = {:?}", server.ca_file().display().to_string());
    let setup = Setup::new("", &email_block(&server, "tls", &ca)).sop("every", &email_sop("every", None));
    let d = setup.start();
    wait_up(&d).await;
    server.append("INBOX", &mail("over tls", "<tls@test>"));
    assert_eq!(wait_subjects(&d, "every", 1).await, strings(&["over tls"]));
}

/// STARTTLS on the plain port; without the CA the certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_test_ca_and_refused_without_it() {
    let Some(server) = dovecot() else { return };
    let ca = format!("ca_file = {:?}", server.ca_file().display().to_string());
    let setup = Setup::new("", &email_block(&server, "starttls", &ca)).sop("every", &email_sop("every", None));
    let d = setup.start();
    wait_up(&d).await;
    server.append("INBOX", &mail("after starttls", "<starttls@test>"));
    assert_eq!(wait_subjects(&d, "every", 1).await, strings(&["after starttls"]));

    let untrusted = Setup::new("", &email_block(&server, "starttls", "")).sop("every", &email_sop("every", None));
    let d = untrusted.start();
    let (_, body) = d.wait_ready("email:ops down", |_, body| mailbox(body)["status"] == "down").await;
    assert!(mailbox(&body)["detail"].to_string().contains("TLS handshake"), "{body}");
}

/// A new UIDVALIDITY is audited; the mail since the cursor last moved is
/// read again by Message-ID, so what had started does not start again, and
/// what came meanwhile starts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uidvalidity_change_is_audited_and_read_again_by_message_id() {
    let Some(mut server) = dovecot() else { return };
    let setup = Setup::new("", &email_block(&server, "plain", "")).sop("every", &email_sop("every", None));
    let mut d = setup.start();
    wait_up(&d).await;
    server.append("INBOX", &mail("one", "<one@test>"));
    server.append("INBOX", &mail("two", "<two@test>"));
    wait_subjects(&d, "every", 2).await;
    d.stop();

    server.renumber();
    server.append("INBOX", &mail("three", "<three@test>"));
    let d = setup.start();
    wait_up(&d).await;
    server.append("INBOX", &mail("four", "<four@test>"));
    assert_eq!(wait_subjects(&d, "every", 4).await, strings(&["four", "one", "three", "two"]));
    let (status, audit) = d.get("/admin/audit?limit=10000").await;
    assert_eq!(status, 200, "{audit}");
    let resets: Vec<&Value> =
        audit["records"].as_array().unwrap().iter().filter(|r| r["kind"] == "source_reset").collect();
    assert_eq!(resets.len(), 1, "{audit}");
    let detail = &resets[0]["detail"];
    assert_eq!(detail["source"], "email:ops");
    assert_ne!(detail["old_uidvalidity"], detail["new_uidvalidity"], "{detail}");
    assert_eq!(d.runs_of("every").await.len(), 4, "a mail started twice");
}

/// A server without IDLE is checked every `poll_interval_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_idle_is_polled() {
    let Some(server) = common::imap::dovecot_with("imap_capability = IMAP4rev1 LITERAL+ UIDPLUS") else { return };
    let block = email_block(&server, "plain", "").replace("poll_interval_secs = 3600", "poll_interval_secs = 1");
    let setup = Setup::new("", &block).sop("every", &email_sop("every", None));
    let d = setup.start();
    wait_up(&d).await;
    let (_, first) = d.get("/ready").await;
    server.append("INBOX", &mail("polled", "<polled@test>"));
    assert_eq!(wait_subjects(&d, "every", 1).await, strings(&["polled"]));
    d.wait_ready("a later poll", |_, body| mailbox(body)["last_poll_at"] != mailbox(&first)["last_poll_at"]).await;
}

#[test]
fn explain_tells_which_email_triggers_a_mail_matches() {
    let setup = Setup::new("", "")
        .sop("deploys", &email_sop("deploys", Some("$.subject == \"deploy\"")))
        .sop("every", &email_sop("every", None));
    let explain = |payload: &str| {
        setup.cli_json(&["explain", "--json", "--source", "email", "--topic", "email/ops", "--payload", payload])
    };
    let hit = explain(r#"{"subject": "deploy", "from": "alice@example.com"}"#);
    let sops: Vec<&str> = hit["matches"].as_array().unwrap().iter().map(|m| m["sop"].as_str().unwrap()).collect();
    assert_eq!(sops, ["deploys", "every"], "{hit}");
    let miss = explain(r#"{"subject": "lunch"}"#);
    assert_eq!(miss["near_misses"][0]["sop"], "deploys", "{miss}");
    assert!(miss["near_misses"][0]["reason"].as_str().unwrap().contains("subject"), "{miss}");
}

/// Three replicas on one store: one reads the mailbox (the duty
/// `email:ops`) while the others stand by; when the reader is killed
/// another takes the mailbox within the lease and reads on from the UID
/// in the store: the mail that came meanwhile starts its run once, and no
/// mail starts twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_read_a_mailbox_once_and_another_takes_over_when_the_reader_dies() {
    let Some(server) = dovecot() else { return };
    let block = email_block(&server, "plain", "");
    let sop = email_sop("every", None);
    let test = "three_replicas_read_a_mailbox_once";
    let Some(mut replicas) = Replicas::start(test, 3, "", &block, &[("every", &sop)]).await else { return };
    let owner = replicas.holder("email:ops").await;
    wait_up(&replicas.daemons[owner]).await;
    server.append("INBOX", &mail("one", "<one@test>"));
    server.append("INBOX", &mail("two", "<two@test>"));
    assert_eq!(wait_subjects(&replicas.daemons[owner], "every", 2).await, strings(&["one", "two"]));

    replicas.daemons[owner].kill();
    server.append("INBOX", &mail("three", "<three@test>"));
    let survivor = &replicas.daemons[(owner + 1) % 3];
    assert_eq!(wait_subjects(survivor, "every", 3).await, strings(&["one", "three", "two"]));
    // A later mail, once its run is there, shows none before it came twice.
    server.append("INBOX", &mail("four", "<four@test>"));
    assert_eq!(wait_subjects(survivor, "every", 4).await, strings(&["four", "one", "three", "two"]));
}
