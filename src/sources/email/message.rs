//! A fetched mail as the event payload SOPs see (docs/operations.md, "Inbox (IMAP)"): headers
//! decoded (RFC 2047 words, charsets), the text and HTML bodies, and of each
//! attachment only its name, type, size and SHA-256, so a run's stored
//! payload never holds an attachment's content.
//!
//! Addresses are bare, as written after decoding (`alice@example.com`, no
//! display name): `from` is the first sender's address or null, `to` and
//! `cc` are arrays (group members flattened), so a condition compares
//! `$.from == "alice@example.com"` without parsing. `text` is the first
//! plain-text body, or the HTML body's text when the mail has only HTML;
//! `html` is the first HTML body, null when the mail has none (never HTML
//! made from plain text). `date` is the Date header in RFC 3339.

use mail_parser::{Address, MessageParser, MimeHeaders, PartType};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What the source needs of a parsed mail: the payload and the Message-ID
/// its idempotency key is made from.
#[derive(Debug)]
pub struct Parsed {
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub payload: Value,
}

/// Parses a raw RFC 822 mail. A mail mail-parser cannot read at all still
/// gives a payload (every field null or empty), so a malformed mail starts
/// its runs like any other rather than stopping the mailbox.
pub fn parse(raw: &[u8]) -> Parsed {
    let Some(mail) = MessageParser::default().parse(raw) else {
        return Parsed { message_id: None, from: None, payload: empty_payload() };
    };
    let message_id = mail.message_id().map(str::to_string);
    let from = mail.from().and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_string);
    let html = mail.html_part(0).filter(|part| matches!(part.body, PartType::Html(_))).map(|_| mail.body_html(0));
    let attachments: Vec<Value> = mail
        .attachments()
        .map(|part| {
            let content_type = part.content_type().map(|t| match t.subtype() {
                Some(sub) => format!("{}/{sub}", t.ctype()),
                None => t.ctype().to_string(),
            });
            json!({
                "filename": part.attachment_name(),
                "content_type": content_type,
                "size": part.len(),
                "sha256": hex::encode(Sha256::digest(part.contents())),
            })
        })
        .collect();
    let payload = json!({
        "message_id": message_id,
        "from": from,
        "to": addresses(mail.to()),
        "cc": addresses(mail.cc()),
        "subject": mail.subject(),
        "date": mail.date().map(|d| d.to_rfc3339()),
        "text": mail.body_text(0),
        "html": html.flatten(),
        "attachments": attachments,
        "in_reply_to": mail.in_reply_to().as_text(),
    });
    Parsed { message_id, from, payload }
}

fn addresses(list: Option<&Address<'_>>) -> Vec<String> {
    list.map(|l| l.iter().filter_map(|a| a.address()).map(str::to_string).collect()).unwrap_or_default()
}

fn empty_payload() -> Value {
    json!({
        "message_id": null, "from": null, "to": [], "cc": [], "subject": null, "date": null,
        "text": null, "html": null, "attachments": [], "in_reply_to": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crlf(text: &str) -> Vec<u8> {
        text.replace('\n', "\r\n").into_bytes()
    }

    #[test]
    fn encoded_headers_are_decoded_and_addresses_are_bare() {
        let raw = crlf(
            "From: =?UTF-8?Q?J=C3=BCrgen?= <Juergen@Example.com>\n\
             To: ops@example.com, \"Team\" <team@example.com>\n\
             Cc: Group: a@example.com, b@example.com;\n\
             Subject: =?UTF-8?B?RGVwbG95IMOcYmVyc2ljaHQ=?=\n\
             Date: Tue, 1 Jul 2025 10:00:00 +0200\n\
             Message-ID: <abc@example.com>\n\
             \n\
             hello\n",
        );
        let parsed = parse(&raw);
        let p = &parsed.payload;
        assert_eq!(p["subject"], "Deploy Übersicht");
        assert_eq!(p["from"], "Juergen@Example.com");
        assert_eq!(p["to"], json!(["ops@example.com", "team@example.com"]));
        assert_eq!(p["cc"], json!(["a@example.com", "b@example.com"]));
        assert_eq!(p["message_id"], "abc@example.com");
        assert_eq!(parsed.message_id.as_deref(), Some("abc@example.com"));
        assert_eq!(p["date"], "2025-07-01T10:00:00+02:00");
        assert_eq!(p["text"].as_str().unwrap().trim(), "hello");
        assert_eq!(p["html"], Value::Null, "no HTML is made from plain text");
        assert_eq!(p["attachments"], json!([]));
        assert_eq!(p["in_reply_to"], Value::Null);
    }

    #[test]
    fn a_multipart_mail_gives_its_bodies_and_attachment_metadata_only() {
        let raw = crlf(
            "From: a@example.com\n\
             Subject: report\n\
             In-Reply-To: <first@example.com>\n\
             MIME-Version: 1.0\n\
             Content-Type: multipart/mixed; boundary=\"b1\"\n\
             \n\
             --b1\n\
             Content-Type: multipart/alternative; boundary=\"b2\"\n\
             \n\
             --b2\n\
             Content-Type: text/plain; charset=utf-8\n\
             \n\
             plain body\n\
             --b2\n\
             Content-Type: text/html; charset=utf-8\n\
             \n\
             <p>html body</p>\n\
             --b2--\n\
             --b1\n\
             Content-Type: application/pdf; name=\"r.pdf\"\n\
             Content-Disposition: attachment; filename=\"r.pdf\"\n\
             Content-Transfer-Encoding: base64\n\
             \n\
             aGVsbG8=\n\
             --b1--\n",
        );
        let p = parse(&raw).payload;
        assert_eq!(p["text"].as_str().unwrap().trim(), "plain body");
        assert_eq!(p["html"].as_str().unwrap().trim(), "<p>html body</p>");
        assert_eq!(p["in_reply_to"], "first@example.com");
        assert_eq!(
            p["attachments"],
            json!([{
                "filename": "r.pdf",
                "content_type": "application/pdf",
                "size": 5,
                "sha256": hex::encode(Sha256::digest(b"hello")),
            }])
        );
        assert!(!p.to_string().contains("aGVsbG8"), "no content is kept: {p}");
    }

    #[test]
    fn an_html_only_mail_has_its_html_and_a_text_made_from_it() {
        let raw = crlf(
            "From: a@example.com\nSubject: s\nMIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n\
             <html><body><p>Deploy <b>now</b></p></body></html>\n",
        );
        let p = parse(&raw).payload;
        assert!(p["html"].as_str().unwrap().contains("<b>now</b>"), "{p}");
        assert!(p["text"].as_str().unwrap().contains("Deploy now"), "{p}");
        assert_eq!(parse(&raw).message_id, None);
    }

    #[test]
    fn what_cannot_be_parsed_still_gives_every_field() {
        let p = parse(b"").payload;
        for key in ["message_id", "from", "subject", "date", "text", "html", "in_reply_to"] {
            assert_eq!(p[key], Value::Null, "{key}");
        }
        assert_eq!(p["attachments"], json!([]));
    }
}
