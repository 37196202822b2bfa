//! The console (docs/console.md) in a real browser: headless chromium,
//! driven through chromedriver, reading the real daemon's pages, clicking
//! their forms and running their script under their CSP; the results
//! checked through the CLI. Each test skips, saying so, where chromedriver
//! is not installed.

mod common;

use common::browser::Driver;
use common::*;
use fantoccini::{Client, Locator};
use serde_json::json;

fn supervised(name: &str) -> String {
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"supervised\"\nmax_concurrent = 10\n\n\
         [[triggers]]\ntype = \"manual\"\n"
    )
}

const ALERT: &str = "[sop]\nname = \"alert\"\ndescription = \"x\"\n\n[[triggers]]\ntype = \"mqtt\"\n\
                     topic = \"sensors/+/alert\"\ncondition = \"$.severity >= 2\"\n";

/// An MQTT source whose broker is nowhere: the source stays down, listed
/// with a reason.
fn mqtt_config() -> String {
    format!(
        "[channels_config.mqtt]\nbroker_url = \"mqtt://127.0.0.1:{}\"\nclient_id = \"console-browser\"\n\
         topics = [\"sensors/#\"]\nqos = 1\n",
        free_port()
    )
}

async fn fire(d: &Daemon, sop: &str) -> String {
    let (status, body, _) = d.post(&format!("/admin/sops/{sop}/run"), None, "{}", &[]).await;
    assert_eq!(status, 200, "{body}");
    body["runs"][0]["run_id"].as_str().unwrap().to_string()
}

/// The text of the first element `css` finds, once there is one.
async fn text_of(browser: &Client, css: &str) -> String {
    let element =
        browser.wait().at_most(DEADLINE).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    element.text().await.unwrap()
}

/// The page `path` of the daemon, once its heading is there.
async fn open(browser: &Client, d: &Daemon, path: &str) {
    browser.goto(&d.url(path)).await.unwrap();
    browser.wait().at_most(DEADLINE).for_element(Locator::Css("main h1")).await.unwrap();
}

/// When FANIN_CONSOLE_SCREENSHOTS names a directory, the page as it shows
/// now is saved there as `<name>.png` (scripts/console_screenshots.sh).
async fn screenshot(browser: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("FANIN_CONSOLE_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        let png = browser.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

#[tokio::test]
async fn the_overview_lists_the_sources_with_their_status() {
    let Some(driver) = Driver::start("the_overview_lists_the_sources_with_their_status").await else { return };
    let setup = Setup::new("", &mqtt_config()).sop("alert", ALERT);
    let d = setup.start();
    let (_, ready) = d.wait_ready("the MQTT source failing", |_, b| !b["sources"]["mqtt"]["detail"].is_null()).await;
    let browser = driver.session().await;
    open(&browser, &d, "/ui").await;
    let table = text_of(&browser, "main table").await;
    for (name, state) in ready["sources"].as_object().unwrap() {
        let row = table.lines().find(|l| l.starts_with(name.as_str())).unwrap_or_else(|| panic!("{name}: {table}"));
        assert!(row.contains(state["status"].as_str().unwrap()), "{name}'s status: {row}");
    }
    assert!(table.contains("webhook") && table.contains("mqtt"), "{table}");
    assert_eq!(browser.title().await.unwrap(), "Overview · fanin");
    screenshot(&browser, "overview").await;
    browser.close().await.unwrap();
}

#[tokio::test]
async fn approving_from_the_approvals_page_moves_the_run_on() {
    let Some(driver) = Driver::start("approving_from_the_approvals_page_moves_the_run_on").await else { return };
    let setup = Setup::new("", "").sop("gated", &supervised("gated"));
    let d = setup.start();
    let run = fire(&d, "gated").await;
    let browser = driver.session().await;
    open(&browser, &d, "/ui/approvals").await;
    screenshot(&browser, "approvals").await;
    let form = browser.find(Locator::Css(&format!("form[action='/ui/approvals/{run}/approve']"))).await.unwrap();
    form.find(Locator::Css("input[name=reason]")).await.unwrap().send_keys("ship it").await.unwrap();
    form.find(Locator::Css("button")).await.unwrap().click().await.unwrap();
    let shown = url::Url::parse(&d.url(&format!("/ui/runs/{run}"))).unwrap();
    browser.wait().at_most(DEADLINE).for_url(&shown).await.unwrap();
    assert_eq!(setup.cli_json(&["runs", "show", &run])["status"], json!("running"), "the approved run moved on");
    let timeline = text_of(&browser, "main").await;
    assert!(timeline.contains("approval") && timeline.contains("ship it"), "{timeline}");
    screenshot(&browser, "run").await;
    browser.close().await.unwrap();
}

#[tokio::test]
async fn explain_shows_a_near_miss_with_its_reason() {
    let Some(driver) = Driver::start("explain_shows_a_near_miss_with_its_reason").await else { return };
    let setup = Setup::new("", &mqtt_config()).sop("alert", ALERT);
    let d = setup.start();
    let browser = driver.session().await;
    open(&browser, &d, "/ui/explain").await;
    let form = browser.find(Locator::Css("form.explain")).await.unwrap();
    form.find(Locator::Css("select[name=source]")).await.unwrap().select_by_value("mqtt").await.unwrap();
    form.find(Locator::Css("input[name=topic]")).await.unwrap().send_keys("sensors/a/alert").await.unwrap();
    form.find(Locator::Css("textarea[name=payload]")).await.unwrap().send_keys(r#"{"severity": 1}"#).await.unwrap();
    form.find(Locator::Css("button")).await.unwrap().click().await.unwrap();
    let near = browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::XPath("//h2[.='Near misses']/following-sibling::table[1]"))
        .await;
    let near = near.unwrap().text().await.unwrap();
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
    let reason = cli["near_misses"][0]["reason"].as_str().unwrap();
    assert!(near.contains("alert") && near.contains(reason), "the reason `fanin explain` gives, {reason}: {near}");
    screenshot(&browser, "explain").await;
    browser.close().await.unwrap();
}

/// What the payload's markup would do if it ran: retitle the page, add an
/// element.
const HOSTILE: &str =
    "<script>document.title='pwned';document.body.appendChild(document.createElement('p')).id='injected'\
                       </script><img src=x onerror=\"document.title='pwned'\">";

#[tokio::test]
async fn markup_in_a_payload_shows_as_text_and_does_not_run() {
    let Some(driver) = Driver::start("markup_in_a_payload_shows_as_text_and_does_not_run").await else { return };
    let setup = Setup::new("", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let d = setup.start();
    let token = d.pair().await;
    let (status, reply, _) = d.post("/sop/deploy", Some(&token), &json!({ "note": HOSTILE }).to_string(), &[]).await;
    assert_eq!(status, 200, "{reply}");
    let run = reply["runs"][0]["run_id"].as_str().unwrap().to_string();

    let browser = driver.session().await;
    open(&browser, &d, &format!("/ui/runs/{run}")).await;
    let shown = browser.find_all(Locator::Css("main pre")).await.unwrap();
    let mut texts = Vec::new();
    for pre in shown {
        texts.push(pre.text().await.unwrap());
    }
    assert!(texts.iter().any(|t| t.contains("<script>document.title='pwned'")), "the payload as text: {texts:?}");
    assert!(browser.title().await.unwrap().ends_with(" · fanin"), "the page's own title");
    assert!(browser.find(Locator::Id("injected")).await.is_err(), "no element made by the payload");
    let made = browser.execute("return document.querySelectorAll('main script, main img').length", vec![]).await;
    assert_eq!(made.unwrap(), json!(0), "no element of the payload's markup");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_form_whose_csrf_token_was_removed_is_refused_and_changes_nothing() {
    let Some(driver) = Driver::start("a_form_whose_csrf_token_was_removed_is_refused_and_changes_nothing").await else {
        return;
    };
    let setup = Setup::new("", "").sop("gated", &supervised("gated"));
    let d = setup.start();
    let run = fire(&d, "gated").await;
    let browser = driver.session().await;
    open(&browser, &d, "/ui/approvals").await;
    let form = format!("form[action='/ui/approvals/{run}/approve']");
    let removed = browser
        .execute(&format!("const f = document.querySelector(\"{form}\"); f.querySelector('[name=csrf]').remove(); return f.elements.length"), vec![])
        .await
        .unwrap();
    assert_eq!(removed, json!(2), "the reason and the button are left");
    browser.find(Locator::Css(&format!("{form} button"))).await.unwrap().click().await.unwrap();
    let notice = text_of(&browser, "p.notice").await;
    assert!(notice.contains("403") && notice.contains("csrf_refused"), "{notice}");
    assert_eq!(setup.cli_json(&["runs", "show", &run])["status"], json!("pending_approval"), "nothing moved");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_webhook_run_appears_in_the_open_runs_page_without_a_reload() {
    let Some(driver) = Driver::start("a_webhook_run_appears_in_the_open_runs_page_without_a_reload").await else {
        return;
    };
    // The stream outlasts the wait, so the run is shown on its event, not
    // on the refresh that follows the stream's reopening.
    let setup = Setup::new("request_timeout_secs = 600", "").sop("deploy", &webhook_sop("deploy", "/sop/deploy", ""));
    let d = setup.start();
    let token = d.pair().await;
    let browser = driver.session().await;
    open(&browser, &d, "/ui/runs").await;
    assert!(text_of(&browser, "#live table").await.contains("no runs"));
    browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css("html[data-live=open]"))
        .await
        .expect("the event stream opened");
    // The page says so when a reload happens, which must not.
    browser.execute("window.notReloaded = true", vec![]).await.unwrap();
    let (status, reply, _) = d.post("/sop/deploy", Some(&token), r#"{"version": "1.2"}"#, &[]).await;
    assert_eq!(status, 200, "{reply}");
    let run = reply["runs"][0]["run_id"].as_str().unwrap().to_string();
    let cell = Locator::XPath(&format!("//div[@id='live']//code[.='{run}']"));
    let row = browser.wait().at_most(DEADLINE).for_element(cell).await;
    assert!(row.is_ok(), "the run {run} listed: {}", text_of(&browser, "#live").await);
    assert_eq!(browser.execute("return window.notReloaded === true", vec![]).await.unwrap(), json!(true));
    screenshot(&browser, "runs").await;
    browser.close().await.unwrap();
}
