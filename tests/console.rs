//! The console (docs/console.md) end to end: the real daemon's `/ui` pages
//! fetched and its forms posted over HTTP as a browser without JavaScript
//! would, the results checked through the admin API and the CLI.

mod common;

use common::*;
use reqwest::header::{HeaderMap, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};

const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A browser without JavaScript: follows no redirect on its own, keeps the
/// console's cookies; one made `from` an address comes through a trusted
/// proxy (`X-Forwarded-For`), and `over_tls` through one that says so.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: std::collections::BTreeMap<String, String>,
    forwarded: Vec<(&'static str, String)>,
}

struct Page {
    status: u16,
    headers: HeaderMap,
    html: String,
}

impl Page {
    /// The CSRF token the page's forms carry.
    fn token(&self) -> String {
        let (_, rest) = self.html.split_once(r#"name="csrf" value=""#).expect("the page has a form with a token");
        rest.split('"').next().unwrap().to_string()
    }

    /// The `Set-Cookie` of the cookie `name`, whole.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with(&format!("{name}=")))
    }
}

impl Browser {
    fn new(d: &Daemon) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, base: d.base.clone(), cookies: Default::default(), forwarded: Vec::new() }
    }

    fn from(mut self, address: &str) -> Browser {
        self.forwarded.push(("X-Forwarded-For", address.to_string()));
        self
    }

    fn over_tls(mut self) -> Browser {
        self.forwarded.push(("X-Forwarded-Proto", "https".to_string()));
        self
    }

    /// The `Cookie` header this browser sends.
    fn cookie(&self) -> Option<String> {
        let pairs: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    async fn read(&mut self, mut request: reqwest::RequestBuilder) -> Page {
        if let Some(cookie) = self.cookie() {
            request = request.header(COOKIE, cookie);
        }
        for (name, value) in &self.forwarded {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request");
        for set in response.headers().get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (name, value) = set.split(';').next().unwrap().split_once('=').unwrap();
            if set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Page { status, headers, html: response.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.read(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.read(request).await
    }

    /// A page that must be served, with the console's headers.
    async fn page(&mut self, path: &str) -> Page {
        let page = self.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.html);
        assert_eq!(page.headers[CONTENT_SECURITY_POLICY], CSP, "{path}");
        assert_eq!(page.headers["x-content-type-options"], "nosniff", "{path}");
        page
    }
}

fn supervised(name: &str) -> String {
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"supervised\"\nmax_concurrent = 10\n\n\
         [[triggers]]\ntype = \"manual\"\n"
    )
}

async fn fire(d: &Daemon, sop: &str) -> String {
    let (status, body, _) = d.post(&format!("/admin/sops/{sop}/run"), None, "{}", &[]).await;
    assert_eq!(status, 200, "{body}");
    body["runs"][0]["run_id"].as_str().unwrap().to_string()
}

/// A run as `fanin runs show` prints it.
fn shown(setup: &Setup, run: &str) -> Value {
    setup.cli_json(&["runs", "show", run])
}

async fn approval_of(d: &Daemon, run: &str) -> Value {
    d.audit_of(run).await.into_iter().find(|r| r["kind"] == "approval").expect("an approval record")
}

#[tokio::test]
async fn pages_show_sources_runs_and_sops_with_their_text_escaped() {
    let mqtt = mqtt_config(free_port());
    let setup = Setup::new("", &mqtt)
        .sop("deploy", &webhook_sop("deploy", "/sop/deploy", "").replace("\"test\"", "\"ships <script>x()</script>\""))
        .sop("alert", ALERT);
    let d = setup.start();
    let mut browser = Browser::new(&d);
    let (_, ready) = d.wait_ready("the MQTT source failing", |_, b| !b["sources"]["mqtt"]["detail"].is_null()).await;

    let overview = browser.page("/ui").await;
    let sources = ready["sources"].as_object().unwrap();
    assert!(sources.contains_key("webhook") && sources.contains_key("mqtt"), "{ready}");
    for (name, state) in sources {
        assert!(overview.html.contains(&format!(">{name}<")), "{name} on the overview: {}", overview.html);
        assert!(overview.html.contains(state["status"].as_str().unwrap()), "{name}'s status");
    }
    let css = overview.html.split_once(r#"rel="stylesheet" href=""#).unwrap().1.split('"').next().unwrap();
    let sheet = browser.get(css).await;
    assert_eq!(sheet.status, 200);
    assert!(sheet.headers["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(sheet.headers["cache-control"].to_str().unwrap().contains("immutable"));
    let js = overview.html.split_once(r#"<script src=""#).unwrap().1.split('"').next().unwrap();
    let script = browser.get(js).await;
    assert_eq!(script.status, 200, "{js}");
    assert!(script.headers["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(script.html.contains("EventSource"), "the live lists' script");
    assert_eq!(browser.get("/ui/assets/other.css").await.status, 404);
    for (method, path, status) in [("GET", "/ui/nothing/here", 404), ("POST", "/ui/sops", 405)] {
        let request = browser.http.request(method.parse().unwrap(), format!("{}{path}", browser.base));
        let reply = browser.read(request).await;
        assert_eq!(reply.status, status, "{method} {path}");
        assert_eq!(reply.headers[CONTENT_SECURITY_POLICY], CSP, "{method} {path}");
    }

    let token = d.pair().await;
    let payload = r#"{"note": "<script>alert(1)</script>"}"#;
    let (status, reply, _) = d.post("/sop/deploy", Some(&token), payload, &[]).await;
    assert_eq!(status, 200, "{reply}");
    let run = reply["runs"][0]["run_id"].as_str().unwrap().to_string();

    assert!(browser.page("/ui/runs").await.html.contains(&run), "the webhook run is listed");
    let source = d.run(&run).await["source"].as_str().unwrap().to_string();
    let filtered = format!("/ui/runs?status=running&sop=deploy&source={source}");
    assert!(browser.page(&filtered).await.html.contains(&run), "{filtered}");
    for other in ["/ui/runs?source=mqtt", "/ui/runs?status=completed", "/ui/runs?sop=alert", "/ui/runs?page=2"] {
        assert!(!browser.page(other).await.html.contains(&run), "{other}");
    }
    assert_eq!(browser.get("/ui/runs?status=bogus").await.status, 400);

    let page = browser.page(&format!("/ui/runs/{run}")).await;
    assert!(page.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", page.html);
    assert!(!page.html.contains("<script>"), "no markup from the payload: {}", page.html);
    assert!(page.html.contains("run_started"), "the audit timeline");
    assert_eq!(browser.get("/ui/runs/no-such-run").await.status, 404);

    let sops = browser.page("/ui/sops").await;
    assert!(sops.html.contains("ships &lt;script&gt;x()&lt;/script&gt;") && !sops.html.contains("<script>"));
    assert!(sops.html.contains("mqtt sensors/+/alert"), "the triggers: {}", sops.html);
    for path in ["/ui/approvals", "/ui/outbox", "/ui/outbox?status=all", "/ui/explain"] {
        browser.page(path).await;
    }
}

const ALERT: &str = "[sop]\nname = \"alert\"\ndescription = \"x\"\n\n[[triggers]]\ntype = \"mqtt\"\n\
                     topic = \"sensors/+/alert\"\ncondition = \"$.severity >= 2\"\n";

/// An MQTT source whose broker is nowhere: the source stays down, with a
/// reason.
fn mqtt_config(port: u16) -> String {
    format!(
        "[channels_config.mqtt]\nbroker_url = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"console-test\"\n\
         topics = [\"sensors/#\"]\nqos = 1\n"
    )
}

#[tokio::test]
async fn explain_shows_matches_and_near_misses_with_their_reasons() {
    let setup = Setup::new("", &mqtt_config(free_port())).sop("alert", ALERT);
    let d = setup.start();
    let mut browser = Browser::new(&d);
    let miss = browser.page("/ui/explain?source=mqtt&topic=sensors%2Fa%2Falert&payload=%7B%22severity%22%3A1%7D").await;
    let (_, near) = miss.html.split_once("Near misses").unwrap();
    assert!(near.contains("alert") && near.contains("is false"), "{}", miss.html);
    let cli = setup.cli_json(&[
        "explain",
        "--source",
        "mqtt",
        "--topic",
        "sensors/a/alert",
        "--payload",
        r#"{"severity":1}"#,
        "--json",
    ]);
    let reason = cli["near_misses"][0]["reason"].as_str().unwrap().replace('>', "&gt;");
    assert!(near.contains(&reason), "the reason `fanin explain` gives, {reason}: {near}");

    let hit = browser.page("/ui/explain?source=mqtt&topic=sensors%2Fa%2Falert&payload=%7B%22severity%22%3A3%7D").await;
    let (matches, near) = hit.html.split_once("Near misses").unwrap();
    assert!(matches.split_once("Matches").unwrap().1.contains("alert"), "{}", hit.html);
    assert!(near.contains("no near misses"));
    let elsewhere = browser.page("/ui/explain?source=mqtt&topic=other%2Ftopic&payload=").await;
    assert!(elsewhere.html.contains("no trigger matches"), "{}", elsewhere.html);
    assert_eq!(browser.get("/ui/explain?source=carrier_pigeon&topic=x").await.status, 400);
}

#[tokio::test]
async fn approving_and_denying_through_the_forms_moves_runs_under_the_callers_name() {
    let setup = Setup::new("", "").sop("gated", &supervised("gated"));
    let d = setup.start();
    let (approved, denied) = (fire(&d, "gated").await, fire(&d, "gated").await);
    let mut browser = Browser::new(&d);
    let page = browser.page("/ui/approvals").await;
    let at = |run: &str| page.html.find(run).unwrap_or_else(|| panic!("{run} listed: {}", page.html));
    assert!(at(&approved) < at(&denied), "oldest first");
    assert!(browser.cookies.contains_key("fanin_csrf"), "the page set the CSRF cookie");
    let token = page.token();

    let reply =
        browser.post(&format!("/ui/approvals/{approved}/approve"), &[("csrf", &token), ("reason", "looks good")]).await;
    assert_eq!(reply.status, 303, "{}", reply.html);
    assert_eq!(reply.headers[LOCATION], format!("/ui/runs/{approved}"));
    assert_eq!(shown(&setup, &approved)["status"], json!("running"), "the approved run moved on");
    let record = approval_of(&d, &approved).await;
    assert_eq!(
        (&record["detail"]["outcome"], &record["detail"]["by"], &record["detail"]["reason"]),
        (&json!("approved"), &json!("admin:127.0.0.1"), &json!("looks good"))
    );

    let reply =
        browser.post(&format!("/ui/approvals/{denied}/deny"), &[("csrf", &token), ("reason", "wrong target")]).await;
    assert_eq!(reply.status, 303, "{}", reply.html);
    assert_eq!(shown(&setup, &denied)["status"], json!("cancelled"));
    let record = approval_of(&d, &denied).await;
    assert_eq!(
        (&record["detail"]["outcome"], &record["detail"]["by"], &record["detail"]["reason"]),
        (&json!("denied"), &json!("admin:127.0.0.1"), &json!("wrong target"))
    );
    let again = browser.post(&format!("/ui/approvals/{denied}/approve"), &[("csrf", &token)]).await;
    assert_eq!(again.status, 409, "a decided run is not pending: {}", again.html);
    assert!(again.html.contains("not_pending"), "{}", again.html);
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused_and_change_nothing() {
    let setup = Setup::new("", "").sop("gated", &supervised("gated"));
    let d = setup.start();
    let run = fire(&d, "gated").await;
    let mut browser = Browser::new(&d);
    let token = browser.page(&format!("/ui/runs/{run}")).await.token();
    let other_token = Browser::new(&d).page("/ui/approvals").await.token();
    let wrong = "0".repeat(64);

    let refusals: [(&str, Vec<(&str, &str)>); 4] = [
        ("without a token", vec![("reason", "x")]),
        ("an empty token", vec![("csrf", "")]),
        ("a made-up token", vec![("csrf", wrong.as_str())]),
        ("another browser's token", vec![("csrf", other_token.as_str())]),
    ];
    for (what, form) in &refusals {
        for action in ["approvals/{run}/approve", "approvals/{run}/deny", "runs/{run}/cancel", "outbox/{run}/retry"] {
            let path = format!("/ui/{}", action.replace("{run}", &run));
            let reply = browser.post(&path, form).await;
            assert_eq!(reply.status, 403, "{what}, {path}: {}", reply.html);
            assert!(reply.html.contains("csrf_refused"), "{}", reply.html);
            assert_eq!(reply.headers[CONTENT_SECURITY_POLICY], CSP);
        }
    }
    let cookieless = Browser::new(&d).post(&format!("/ui/runs/{run}/cancel"), &[("csrf", &token)]).await;
    assert_eq!(cookieless.status, 403, "the token without its cookie");
    assert_eq!(shown(&setup, &run)["status"], json!("pending_approval"), "nothing moved");
    assert!(d.audit_of(&run).await.iter().all(|r| r["kind"] != "approval" && r["kind"] != "run_cancelled"));

    let reply = browser.post(&format!("/ui/runs/{run}/cancel"), &[("csrf", &token), ("reason", "not today")]).await;
    assert_eq!(reply.status, 303, "{}", reply.html);
    assert_eq!(shown(&setup, &run)["status"], json!("cancelled"));
    let cancelled = d.audit_of(&run).await.into_iter().find(|r| r["kind"] == "run_cancelled").unwrap();
    assert_eq!(
        (&cancelled["detail"]["by"], &cancelled["detail"]["interface"], &cancelled["detail"]["reason"]),
        (&json!("admin:127.0.0.1"), &json!("console"), &json!("not today"))
    );
}

#[tokio::test]
async fn remote_clients_are_refused_unless_remote_admin_is_allowed_and_then_need_a_bearer() {
    let setup = Setup::new("trust_forwarded_headers = true", "").sop("gated", &supervised("gated"));
    let d = setup.start();
    let run = fire(&d, "gated").await;
    let remote = "203.0.113.9";
    for path in ["/ui", "/ui/runs", &format!("/ui/runs/{run}"), "/ui/approvals", "/ui/explain"] {
        let reply = d.http.get(d.url(path)).header("X-Forwarded-For", remote).send().await.unwrap();
        assert_eq!(reply.status(), 403, "{path}");
        assert_eq!(reply.headers()[CONTENT_SECURITY_POLICY], CSP);
    }
    let mut local = Browser::new(&d);
    let token = local.page("/ui/approvals").await.token();
    let post = d
        .http
        .post(d.url(&format!("/ui/approvals/{run}/approve")))
        .header("X-Forwarded-For", remote)
        .header(COOKIE, local.cookie().unwrap())
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403, "a remote POST, even with a good token");
    assert_eq!(shown(&setup, &run)["status"], json!("pending_approval"));
    drop(d);

    let setup = Setup::new("trust_forwarded_headers = true\nallow_remote_admin = true", "");
    let d = setup.start();
    let bearer = d.pair().await;
    let get = |bearer: Option<&str>| {
        let r = d.http.get(d.url("/ui")).header("X-Forwarded-For", remote);
        match bearer {
            Some(b) => r.bearer_auth(b),
            None => r,
        }
        .send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("fanin_nope")).await.unwrap().status(), 401);
    assert_eq!(get(Some(&bearer)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_remote_operator_signs_in_once_with_a_token_and_the_session_ends_with_the_token() {
    let setup = Setup::new("trust_forwarded_headers = true\nallow_remote_admin = true\nconsole_session_secs = 600", "")
        .sop("gated", &supervised("gated"));
    let d = setup.start();
    let run = fire(&d, "gated").await;
    let bearer = d.pair().await;
    let run_page = format!("/ui/runs/{run}");
    let mut remote = Browser::new(&d).from("203.0.113.9");

    let asked = remote.get(&run_page).await;
    assert_eq!(asked.status, 401, "{}", asked.html);
    assert_eq!(asked.headers["www-authenticate"], r#"Bearer realm="fanin console""#);
    assert_eq!(asked.headers[CONTENT_SECURITY_POLICY], CSP);
    assert!(asked.html.contains(r#"action="/ui/login""#), "the sign-in form: {}", asked.html);
    assert!(asked.html.contains(&format!(r#"name="next" value="{run_page}""#)), "back to the page asked for");
    let csrf = asked.token();

    let forged = remote.post("/ui/login", &[("token", &bearer), ("next", &run_page)]).await;
    assert_eq!(forged.status, 403, "a sign-in without the form's CSRF token");
    let wrong = format!("fanin_{}", "0".repeat(64));
    let refused = remote.post("/ui/login", &[("csrf", &csrf), ("token", &wrong), ("next", &run_page)]).await;
    assert_eq!(refused.status, 401);
    assert!(refused.html.contains("not a live bearer token"), "{}", refused.html);
    assert!(!remote.cookies.contains_key("fanin_session"));

    let elsewhere = "https://evil.example/ui";
    let signed = remote.post("/ui/login", &[("csrf", &csrf), ("token", &bearer), ("next", elsewhere)]).await;
    assert_eq!((signed.status, &signed.headers[LOCATION]), (303, &"/ui".parse().unwrap()), "never off the console");
    let set = signed.set_cookie("fanin_session").expect("a session cookie");
    for attribute in ["Path=/ui", "HttpOnly", "SameSite=Strict", "Max-Age=600"] {
        assert!(set.contains(attribute), "{attribute}: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(!set.contains(&bearer["fanin_".len()..]), "the token is not in the cookie: {set}");

    let page = remote.page(&run_page).await;
    assert!(page.html.contains("Sign out"), "{}", page.html);
    let approved = remote.post(&format!("/ui/approvals/{run}/approve"), &[("csrf", &page.token())]).await;
    assert_eq!(approved.status, 303, "{}", approved.html);
    let subject = setup.cli_json(&["tokens", "list", "--json"])["tokens"][0]["subject"].clone();
    assert!(subject.as_str().unwrap().starts_with("token:"), "{subject}");
    assert_eq!(approval_of(&d, &run).await["detail"]["by"], subject, "audited under the token's identity");

    // Behind a proxy that terminates TLS, both cookies are Secure; signing
    // out forgets the session.
    let mut tls = Browser::new(&d).from("203.0.113.10").over_tls();
    let asked = tls.get("/ui").await;
    assert!(asked.set_cookie("fanin_csrf").unwrap().ends_with("; Secure"));
    let signed = tls.post("/ui/login", &[("csrf", &asked.token()), ("token", &bearer), ("next", "/ui")]).await;
    assert!(signed.set_cookie("fanin_session").unwrap().ends_with("; Secure"));
    let overview = tls.page("/ui").await;
    let out = tls.post("/ui/logout", &[("csrf", &overview.token())]).await;
    assert_eq!(out.status, 303);
    assert!(out.set_cookie("fanin_session").unwrap().contains("Max-Age=0"));
    assert_eq!(tls.get("/ui").await.status, 401, "signed out");

    // Revoking the token ends its sessions on their next request.
    let revoked = setup.cli(&["tokens", "revoke", &bearer["fanin_".len().."fanin_".len() + 8]]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let ended = remote.get("/ui").await;
    assert_eq!(ended.status, 401);
    assert!(ended.html.contains("has ended"), "{}", ended.html);
    assert!(ended.set_cookie("fanin_session").unwrap().contains("Max-Age=0"), "the dead cookie is removed");
}

#[tokio::test]
async fn the_agent_steps_page_lists_what_waits_for_an_agent_and_what_one_holds() {
    let sop = "[sop]\nname = \"triage\"\ndescription = \"x\"\nexecution_mode = \"auto\"\nmax_concurrent = 10\n\n\
               [[triggers]]\ntype = \"manual\"\n\n[[steps]]\ntitle = \"Look <b>closer</b>\"\nbody = \"b\"\n";
    let setup = Setup::new("", "").sop("triage", sop);
    let d = setup.start();
    let token = d.pair().await;
    let mut browser = Browser::new(&d);
    assert!(browser.page("/ui/agent").await.html.contains("no step waits for an agent"));

    let (first, second) = (fire(&d, "triage").await, fire(&d, "triage").await);
    let listed = browser.page("/ui/agent").await.html;
    let at = |run: &str| listed.find(&format!("<code>{run}</code>")).unwrap_or_else(|| panic!("{run}: {listed}"));
    assert!(at(&first) < at(&second), "oldest first");
    assert_eq!(listed.matches(r#"class="status-pending">pending"#).count(), 2, "{listed}");
    assert!(listed.contains("1: Look &lt;b&gt;closer&lt;/b&gt;"), "the step's title, escaped: {listed}");

    let r = d.http.get(d.url("/v1/agent/next")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let leased: Value = r.json().await.unwrap();
    assert_eq!(leased["run_id"], json!(first));
    let listed = browser.page("/ui/agent").await.html;
    let row = listed.split_once(&format!("<code>{first}</code>")).unwrap().1.split("</tr>").next().unwrap();
    assert!(row.contains(r#"class="status-leased">leased"#), "{row}");
    assert!(listed.matches(r#"class="status-pending">pending"#).count() == 1, "{listed}");

    let cancelled = setup.cli(&["runs", "cancel", &second]);
    assert!(cancelled.status.success(), "{}", String::from_utf8_lossy(&cancelled.stderr));
    let listed = browser.page("/ui/agent").await.html;
    assert!(!listed.contains(&second), "a cancelled run leaves nothing to take: {listed}");
}

#[tokio::test]
async fn runs_are_counted_per_minute_and_filtered_by_source_and_start_time() {
    let setup = Setup::new("", "").sop("gated", &supervised("gated"));
    let d = setup.start();
    let runs = [fire(&d, "gated").await, fire(&d, "gated").await, fire(&d, "gated").await];
    let mut browser = Browser::new(&d);

    let overview = browser.page("/ui").await.html;
    assert!(overview.contains(r#"href="/ui/runs?source=sop_webhook">/sop/*</a>"#), "{overview}");
    let (_, chart) = overview.split_once("Runs per minute").unwrap();
    let link = chart.split_once(r#"<a href=""#).unwrap().1.split('"').next().unwrap().replace("&amp;", "&");
    assert!(link.starts_with("/ui/runs?since=") && link.contains("&until="), "{link}");
    let minutes: u64 = chart
        .split("<tr><td><a href=")
        .skip(1)
        .map(|row| row.split("</a></td><td>").nth(1).unwrap().split('<').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(minutes == 3, "three runs in the chart's minutes: {chart}");
    let (_, by_status) = overview.split_once("Runs by status").unwrap();
    assert!(by_status.contains(">pending_approval</a></td><td>3</td>"), "{by_status}");

    let minute = browser.page(&link).await.html;
    let in_minute = runs.iter().filter(|r| minute.contains(r.as_str())).count();
    // The runs may straddle a minute's end; then the first minute holds fewer.
    assert!(
        in_minute >= 1
            && minute.contains(&format!("{in_minute} {}", if in_minute == 1 { "run matches" } else { "runs match" })),
        "{minute}"
    );

    let all = browser.page("/ui/runs?source=manual").await.html;
    assert!(all.contains("3 runs match") && runs.iter().all(|r| all.contains(r.as_str())), "{all}");
    assert!(all.contains("page 1 of 1"), "{all}");
    assert!(browser.page("/ui/runs?source=mqtt").await.html.contains("0 runs match"));
    let later = browser.page("/ui/runs?since=2999-01-01T00:00").await.html;
    assert!(later.contains("0 runs match") && later.contains(r#"value="2999-01-01T00:00""#), "{later}");
    let earlier = browser.page("/ui/runs?until=2000-01-01T00:00:00Z").await.html;
    assert!(earlier.contains("0 runs match"), "{earlier}");
    let window = browser.page("/ui/runs?since=2000-01-01T00:00&until=2999-01-01T00:00&status=pending_approval").await;
    assert!(window.html.contains("3 runs match"), "{}", window.html);

    let wrong = browser.get("/ui/runs?since=yesterday").await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.html.contains("invalid_time") && wrong.html.contains("yesterday"), "{}", wrong.html);
}

#[tokio::test]
async fn a_dead_letter_is_listed_with_its_error_and_retried_from_its_form() {
    use std::sync::atomic::Ordering;
    let agent = common::destination::Destination::start(usize::MAX).await;
    let config = format!(
        "[destinations.agent]\nurl = \"{}\"\n[delivery]\nmax_attempts = 2\nbackoff_initial_ms = 20\nbackoff_cap_secs = 1\n",
        agent.url
    );
    let sop =
        "[sop]\nname = \"notify\"\ndescription = \"x\"\nexecution_mode = \"auto\"\n[[triggers]]\ntype = \"manual\"\n";
    let setup = Setup::new("", &config).sop("notify", sop);
    let d = setup.start();
    let run = fire(&d, "notify").await;
    eventually("the run to fail", async || d.run_status(&run).await == json!("failed")).await;
    let dead = setup.cli_json(&["outbox", "list", "--status", "dead", "--json"])["outbox"][0].clone();
    let id = dead["id"].as_str().unwrap().to_string();

    let mut browser = Browser::new(&d);
    let outbox = browser.page("/ui/outbox").await;
    let row = outbox.html.split_once(&format!("<code>{id}</code>")).expect("the dead letter is listed").1;
    assert!(row.contains("HTTP 500 Internal Server Error") && row.contains("<td>2</td>"), "{}", outbox.html);
    let run_page = browser.page(&format!("/ui/runs/{run}")).await;
    assert!(run_page.html.contains(&id) && run_page.html.contains("envelope_failed"), "{}", run_page.html);
    let attempt = run_page.html.split_once("<td>envelope_attempt_failed</td>").expect("the failed attempt's row").1;
    let attempt = attempt.split_once("</tr>").unwrap().0;
    assert!(attempt.contains("HTTP 500 Internal Server Error") && attempt.contains(&id), "with its error: {attempt}");
    assert!(run_page.html.contains(&format!("envelope <code>{id}</code> as sent")), "the envelope itself");
    assert!(!browser.page("/ui/outbox?status=delivered").await.html.contains(&id));

    agent.refuse.store(0, Ordering::SeqCst);
    let reply = browser.post(&format!("/ui/outbox/{id}/retry"), &[("csrf", &outbox.token())]).await;
    assert_eq!(
        (reply.status, &reply.headers[LOCATION]),
        (303, &"/ui/outbox".parse::<reqwest::header::HeaderValue>().unwrap())
    );
    eventually("the retried envelope to be delivered", async || {
        setup.cli_json(&["outbox", "list", "--json"])["outbox"][0]["status"] == json!("delivered")
    })
    .await;
    let again = browser.post(&format!("/ui/outbox/{id}/retry"), &[("csrf", &outbox.token())]).await;
    assert_eq!(again.status, 409, "only a dead letter: {}", again.html);
}

#[tokio::test]
async fn the_event_stream_tells_of_each_change_to_the_runs() {
    let setup = Setup::new("", "").sop("gated", &supervised("gated"));
    let d = setup.start();
    let mut reply = d.http.get(d.url("/ui/events")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["content-type"], "text/event-stream");
    assert_eq!(reply.headers()[CONTENT_SECURITY_POLICY], CSP);
    fire(&d, "gated").await;
    let mut seen = String::new();
    while !seen.contains("event: runs\n") {
        let chunk = tokio::time::timeout(DEADLINE, reply.chunk()).await.expect("an event").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("the stream is open")));
    }
}
