//! The gateway's edge, driven as an outsider would through a real daemon:
//! who the client is behind proxies, the bearer scheme, IPv6 listeners,
//! secrets that cannot match, percent-encoded paths, JSON for every error,
//! and connections held open to exhaust descriptors.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn deploy(gateway_extra: &str) -> Setup {
    Setup::new(gateway_extra, "")
        .sop("deploy", &(webhook_sop("deploy", "/sop/deploy", "") + "\n[[triggers]]\ntype = \"manual\"\n"))
}

fn addr(d: &Daemon) -> String {
    d.base.trim_start_matches("http://").to_string()
}

/// A reply read off the wire: status, Content-Type, body (JSON when it
/// parses, else a string).
#[derive(Debug)]
struct Raw {
    status: u16,
    content_type: String,
    body: Value,
}

/// Sends `head` (request line and headers, without the blank line) and
/// `body` exactly as written, on a connection of its own.
async fn raw(d: &Daemon, head: &str, body: &str) -> Raw {
    let mut s = TcpStream::connect(addr(d)).await.unwrap();
    let request = format!("{head}\r\nHost: fanin\r\nConnection: close\r\n\r\n{body}");
    s.write_all(request.as_bytes()).await.unwrap();
    let reply = until_closed(&mut s).await;
    let text = String::from_utf8(reply).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no reply head in {text:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
            .map(str::to_string)
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Raw {
        status,
        content_type: header("content-type").unwrap_or_default(),
        body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
    }
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        text = &rest[n + 2..];
    }
    out
}

/// Reads until the server closes the connection (end of stream, or a reset
/// when it closed with bytes of ours unread); what it sent before.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut all)).await;
    match read.expect("the server closes the connection") {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    all
}

async fn get_from(d: &Daemon, path: &str, forwarded_for: &str) -> (u16, Value) {
    let r = d.http.get(d.url(path)).header("X-Forwarded-For", forwarded_for).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn pair_from(d: &Daemon, code: &str, forwarded_for: &str) -> (u16, Value) {
    let r = d
        .http
        .post(d.url("/pair"))
        .header("X-Pairing-Code", code)
        .header("X-Forwarded-For", forwarded_for)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn behind_a_proxy_the_client_is_the_address_the_proxy_added() {
    // No proxies listed: a proxy on loopback is trusted (this test's peer).
    let setup =
        deploy("trust_forwarded_headers = true\nwebhook_rate_limit_per_minute = 2\npair_rate_limit_per_minute = 100");
    let d = setup.start();
    let code = d.pairing_code.clone().unwrap();
    let wrong = if code == "000000" { "000001" } else { "000000" };

    // What the client wrote to the left of the proxy's entry does not count.
    let (status, body) = get_from(&d, "/admin/runs", "127.0.0.1, 203.0.113.9").await;
    assert_eq!((status, body["error"].clone()), (403, json!("forbidden")));
    assert_eq!(get_from(&d, "/admin/runs", "203.0.113.9, 127.0.0.1").await.0, 403, "the proxy itself is skipped");
    assert_eq!(d.get("/admin/runs").await.0, 200, "the local peer without the header is local");

    // Rotating the client-written entries neither resets the rate limit...
    for i in 0..2 {
        let xff = format!("198.51.100.{i}, 203.0.113.9");
        assert_eq!(d.post("/sop/deploy", None, "{}", &[("X-Forwarded-For", &xff)]).await.0, 401);
    }
    let (status, body, _) =
        d.post("/sop/deploy", None, "{}", &[("X-Forwarded-For", "198.51.100.77, 203.0.113.9")]).await;
    assert_eq!((status, body["error"].clone()), (429, json!("rate_limited")));

    // ...nor the pairing lockout.
    for i in 0..5 {
        assert_eq!(pair_from(&d, wrong, &format!("10.0.0.{i}, 203.0.113.9")).await.0, 403, "attempt {i}");
    }
    let (status, body) = pair_from(&d, wrong, "10.9.9.9, 203.0.113.9").await;
    assert_eq!((status, body["error"].clone()), (429, json!("locked_out")));
    assert_eq!(pair_from(&d, wrong, "203.0.113.10").await.0, 403, "another client is not locked out");
}

#[tokio::test]
async fn only_listed_proxies_are_believed_and_nonsense_names_nobody() {
    // The peer (loopback) is not in the list: its header is ignored.
    let setup = deploy("trust_forwarded_headers = true\ntrusted_proxies = [\"10.0.0.0/8\"]");
    let d = setup.start();
    assert_eq!(get_from(&d, "/admin/runs", "203.0.113.9").await.0, 200);
    drop(d);

    let setup = deploy(
        "trust_forwarded_headers = true\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n\
         require_pairing = false\nwebhook_secret = \"s3cret\"",
    );
    let d = setup.start();
    let client_of = |forwarded_for: &'static str| {
        let d = &d;
        async move {
            let headers = [("X-Webhook-Secret", "s3cret"), ("X-Forwarded-For", forwarded_for)];
            let (status, body, _) = d.post("/sop/deploy", None, "{}", &headers).await;
            assert_eq!(status, 200, "{body}");
            let run_id = body["runs"][0]["run_id"].as_str().unwrap().to_string();
            let (_, audit) = d.get(&format!("/admin/audit?run_id={run_id}")).await;
            audit["records"][0]["detail"]["client"].clone()
        }
    };
    assert_eq!(client_of("127.0.0.1, 198.51.100.7, 10.1.2.3").await, json!("ip:198.51.100.7"));
    assert_eq!(client_of("198.51.100.7, 10.1.2.3:8080, 10.0.0.1").await, json!("ip:198.51.100.7"));
    assert_eq!(client_of("198.51.100.7, bogus").await, json!("ip:unknown"));
    assert_eq!(get_from(&d, "/admin/runs", "bogus").await.0, 403, "an unknown client is not local");
    assert_eq!(get_from(&d, "/admin/runs", "10.0.0.1, 127.0.0.1").await.0, 403, "all trusted: the leftmost");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_everywhere() {
    let setup = deploy("trust_forwarded_headers = true\nallow_remote_admin = true\nwebhook_rate_limit_per_minute = 0");
    let d = setup.start();
    let token = d.pair().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let auth = format!("{scheme} {token}");
        let (status, body, _) = d.post("/sop/deploy", None, "{}", &[("Authorization", &auth)]).await;
        assert_eq!(status, 200, "{scheme}: {body}");
        let remote_admin = d
            .http
            .get(d.url("/admin/runs"))
            .header("X-Forwarded-For", "203.0.113.9")
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(remote_admin.status(), 200, "{scheme} on /admin");
        let next = d.http.get(d.url("/v1/agent/next")).header("Authorization", &auth).send().await.unwrap();
        assert_eq!(next.status(), 204, "{scheme} on the agent loop");
    }
    let (status, _, _) = d.post("/sop/deploy", None, "{}", &[("Authorization", &format!("Basic {token}"))]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn on_an_ipv6_listener_local_ipv4_callers_are_loopback() {
    let setup = deploy("");
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), config.replacen("host = \"127.0.0.1\"", "host = \"::\"", 1)).unwrap();
    let d = setup.start();
    let port = d.base.rsplit(':').next().unwrap().to_string();
    for base in [format!("http://127.0.0.1:{port}"), format!("http://[::1]:{port}")] {
        let r = d.http.get(format!("{base}/admin/runs")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{base}");
    }
}

#[test]
fn secrets_that_no_request_could_send_are_refused() {
    for secret in ["   ", " s3cret", "s3cret\\t"] {
        let setup = Setup::new(&format!("webhook_secret = \"{secret}\""), "");
        let out = setup.cli(&["validate"]);
        assert_eq!(out.status.code(), Some(1), "{secret:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("config.toml") && err.contains("gateway.webhook_secret"), "{err}");
        assert!(err.contains("whitespace"), "{err}");
    }
    let setup = Setup::new("trust_forwarded_headers = true", "");
    let out = setup.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("warning:") && said.contains("gateway.trusted_proxies"), "{said}");
}

#[tokio::test]
async fn percent_encoded_paths_are_the_paths_they_spell() {
    let setup = deploy("").sop("cafe", &webhook_sop("cafe", "/sop/café", "")).sop(
        "door",
        "[sop]\nname = \"door\"\ndescription = \"x\"\nexecution_mode = \"auto\"\nmax_concurrent = 100\n\
             [[triggers]]\ntype = \"peripheral\"\nboard = \"nucleo\"\nsignal = \"pin_3\"\n",
    );
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), config + "\n[peripherals.nucleo]\ntransport = \"http\"\n").unwrap();
    let d = setup.start();
    let token = d.pair().await;
    let auth = format!("Authorization: Bearer {token}\r\nContent-Length: 2");
    let post = |target: &str, extra: &str| format!("POST {target} HTTP/1.1\r\n{auth}{extra}");

    let r = raw(&d, &post("/sop/%64eploy", "\r\nX-Idempotency-Key: once"), "{}").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((r.body["matched_sops"].clone(), r.body["path"].clone()), (json!(["deploy"]), json!("/sop/deploy")));
    let r = raw(&d, &post("/sop/deploy", "\r\nX-Idempotency-Key: once"), "{}").await;
    assert_eq!(r.body["status"], json!("duplicate"), "one path, one idempotency scope: {r:?}");

    for spelling in ["/sop/caf%C3%A9", "/sop/caf%c3%a9", "/sop/%63af%C3%A9"] {
        let r = raw(&d, &post(spelling, ""), "{}").await;
        assert_eq!((r.status, r.body["matched_sops"].clone()), (200, json!(["cafe"])), "{spelling}: {r:?}");
        assert_eq!(r.body["path"], json!("/sop/café"));
    }
    let r = raw(&d, &post("/peripheral/nucleo/pin_%33", ""), "{}").await;
    assert_eq!((r.status, r.body["matched_sops"].clone()), (200, json!(["door"])), "{r:?}");
    assert_eq!(r.body["path"], json!("/peripheral/nucleo/pin_3"));
    let r = raw(&d, &post("/%77ebhook", ""), "{}").await;
    assert_eq!((r.status, r.body["error"].clone()), (404, json!("no_matching_sop")), "routed as /webhook: {r:?}");

    for target in
        ["/sop/de%2Fploy", "/sop/%00", "/sop/deploy%0A", "/sop/%FF", "/sop/%zz", "/peripheral/nucleo%2Fx/pin_3"]
    {
        let r = raw(&d, &post(target, ""), "{}").await;
        assert_eq!((r.status, r.body["error"].clone()), (400, json!("invalid_path")), "{target}: {r:?}");
        assert!(r.content_type.starts_with("application/json"), "{r:?}");
    }
    let (_, runs) = d.get("/admin/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 5, "deploy once, café three times, door once");
}

#[tokio::test]
async fn every_error_fanin_answers_is_json() {
    let setup = deploy("max_body_bytes = 64");
    let d = setup.start();
    let token = d.pair().await;
    let auth = format!("Authorization: Bearer {token}");
    let chunked = format!("{:x}\r\n{}\r\n0\r\n\r\n", 100, "a".repeat(100));
    #[rustfmt::skip]
    let cases: Vec<(String, &str, u16, &str)> = vec![
        ("GET /admin/runs?limit=-1 HTTP/1.1".into(), "", 400, "invalid_query"),
        ("GET /admin/runs?limit=ten HTTP/1.1".into(), "", 400, "invalid_query"),
        ("GET /admin/audit?after=soon HTTP/1.1".into(), "", 400, "invalid_query"),
        ("GET /admin/outbox?limit=1&limit=2 HTTP/1.1".into(), "", 400, "invalid_query"),
        (format!("GET /v1/agent/next?wait=1&wait=2 HTTP/1.1\r\n{auth}"), "", 400, "invalid_query"),
        (format!("GET /v1/agent/next?lease_secs=0 HTTP/1.1\r\n{auth}"), "", 400, "invalid_query"),
        ("GET /admin/runs/%C3 HTTP/1.1".into(), "", 400, "invalid_path"),
        ("POST /admin/sops/deploy/run HTTP/1.1\r\nTransfer-Encoding: chunked".into(), &chunked, 413, "payload_too_large"),
        (format!("POST /sop/deploy HTTP/1.1\r\n{auth}\r\nContent-Length: 1"), "{", 400, "invalid_json"),
        ("GET /nope HTTP/1.1".into(), "", 404, "not_found"),
        ("DELETE /admin/runs HTTP/1.1".into(), "", 405, "method_not_allowed"),
        ("POST /sop/deploy HTTP/1.1\r\nContent-Length: 0".into(), "", 401, "unauthorized"),
    ];
    for (head, body, status, code) in cases {
        let r = raw(&d, &head, body).await;
        assert_eq!((r.status, r.body["error"].clone()), (status, json!(code)), "{head}: {r:?}");
        assert!(r.content_type.starts_with("application/json"), "{head}: {r:?}");
    }
}

/// Caps the daemon's descriptors (soft and hard) before it starts.
fn limit_descriptors(command: &mut std::process::Command, n: libc::rlim_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only setrlimit runs, which is
    // async-signal-safe, on a struct owned by the closure.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_keep_health_and_admin_out() {
    let setup = deploy("");
    let d = Daemon::start_with(&setup.config_path(), |command| limit_descriptors(command, 256));
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(addr(&d)).await.expect("the gateway keeps accepting"));
    }
    assert_eq!(d.get("/health").await.0, 200);
    assert_eq!(d.get("/admin/runs").await.0, 200);
    let token = d.pair().await;
    assert_eq!(d.post("/sop/deploy", Some(&token), "{}", &[]).await.0, 200);
    // The server made room by closing the connections idle the longest.
    assert!(until_closed(&mut idle[0]).await.is_empty());
    let (_, metrics) = d.get("/metrics").await;
    let text = metrics.as_str().unwrap();
    assert!(text.contains("fanin_http_connections_closed_total{reason=\"evicted\"}"), "{text}");
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_at_their_timeouts() {
    let setup = deploy("header_read_timeout_secs = 1\nidle_timeout_secs = 2");
    let d = setup.start();
    let mut silent = TcpStream::connect(addr(&d)).await.unwrap();
    let mut slow = TcpStream::connect(addr(&d)).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: fanin\r\n").await.unwrap();
    let mut kept = TcpStream::connect(addr(&d)).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: fanin\r\n\r\n").await.unwrap();
    let asked = Instant::now();

    assert!(until_closed(&mut silent).await.is_empty(), "nothing sent: closed at the header timeout");
    assert!(until_closed(&mut slow).await.is_empty(), "a head never finished: closed at the header timeout");
    let reply = String::from_utf8(until_closed(&mut kept).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(asked.elapsed() >= Duration::from_millis(1800), "kept alive for the idle timeout: {:?}", asked.elapsed());
    let (_, metrics) = d.get("/metrics").await;
    let text = metrics.as_str().unwrap();
    for reason in ["header_timeout", "idle_timeout"] {
        assert!(text.contains(&format!("fanin_http_connections_closed_total{{reason=\"{reason}\"}}")), "{text}");
    }
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_finishes_the_request_in_flight() {
    use std::sync::{Arc, Mutex};
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let entered = Arc::new(Mutex::new(Some(entered_tx)));
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let app = axum::Router::new().route(
        "/agent",
        axum::routing::post(move || {
            let (entered, gate) = (entered.clone(), gate.clone());
            async move {
                if let Some(tx) = entered.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                gate.notified().await;
                axum::Json(json!({"reply": "late"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = format!("http://{}/agent", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let setup = Setup::new("", &format!("[destinations.agent]\nurl = \"{agent}\"\n"));
    let mut d = setup.start();
    let token = d.pair().await;
    let (http, url) = (d.http.clone(), d.url("/webhook"));
    let in_flight = tokio::spawn(async move {
        let r = http.post(url).bearer_auth(token).body("{}").send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    entered_rx.await.unwrap();
    let pid = d.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let address = addr(&d);
    eventually("the listener to close", || {
        let address = address.clone();
        async move { TcpStream::connect(address).await.is_err() }
    })
    .await;
    release.notify_one();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body["response"].clone()), (200, json!({"reply": "late"})));
    assert!(d.child.wait().unwrap().success(), "a clean exit after the last request");
}
