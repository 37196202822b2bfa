//! The inbox source through a live daemon and a real IMAP server: a
//! Dovecot per test (see `common/imap.rs`), mail put in with IMAP APPEND,
//! runs and audit records read over the admin API. Nothing waits a fixed
//! time for an outcome: each waits, up to a generous deadline, for the
//! state it expects.

mod common;

use common::imap::{dovecot, message};

#[test]
fn the_harness_appends_and_keeps_mail_across_a_server_restart() {
    let Some(mut server) = dovecot() else { return };
    server.append("INBOX", &message(&[("Subject", "one")], "1"));
    server.stop();
    server.start();
    server.append("INBOX", &message(&[("Subject", "two")], "2"));
    let new = std::fs::read_dir(server.dir.path().join("mail").join(common::imap::USER).join("new")).unwrap();
    assert_eq!(new.count(), 2, "{}", server.log());
}
