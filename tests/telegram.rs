//! The Telegram source through a live daemon: in poll mode against a Bot
//! API double speaking `getUpdates` (`common/telegram.rs`), across restarts
//! of fanin and of the API, with the API's errors shown in `/ready`; in
//! webhook mode with Telegram's secret token; with replicas (PostgreSQL)
//! one of them polls at a time.

mod common;

use std::time::Duration;

use common::replicas::Replicas;
use common::telegram::BotApi;
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "123456:AAF-test-bot-token";

fn sop(name: &str, alias: &str, condition: &str) -> String {
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n\n\
         [[triggers]]\ntype = \"channel\"\nchannel = \"telegram\"\nalias = \"{alias}\"\n{condition}\n"
    )
}

fn polling(api: &BotApi, token: &str, condition: &str) -> Setup {
    Setup::new(
        "",
        &format!("[channels_config.telegram.bot]\nbot_token = \"{token}\"\napi_base_url = \"{}\"\n", api.base_url()),
    )
    .sop("chat", &sop("chat", "bot", condition))
}

/// The payloads of every run, by their `text`, oldest first.
async fn texts(d: &Daemon) -> Vec<String> {
    let (status, body) = d.get("/admin/runs?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    let mut texts = Vec::new();
    for run in body["runs"].as_array().unwrap().iter().rev() {
        let (status, full) = d.get(&format!("/admin/runs/{}", run["run_id"].as_str().unwrap())).await;
        assert_eq!(status, 200, "{full}");
        assert_eq!(full["source"], "telegram", "{full}");
        texts.push(full["payload"]["text"].as_str().unwrap_or_default().to_string());
    }
    texts.sort();
    texts
}

async fn wait_texts(d: &Daemon, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|t| t.to_string()).collect();
    want.sort();
    eventually(&format!("runs for {want:?}"), async || {
        let got = texts(d).await;
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
}

async fn wait_source(d: &Daemon, instance: &str, status: &str) -> Value {
    eventually(&format!("{instance} {status}"), async || {
        let (_, ready) = d.get("/ready").await;
        if ready["sources"][instance]["status"] == status {
            Ok(ready["sources"][instance].clone())
        } else {
            Err(ready.to_string())
        }
    })
    .await
}

#[tokio::test]
async fn updates_start_runs_and_a_restart_neither_repeats_nor_skips_one() {
    let api = BotApi::start(TOKEN);
    let setup = polling(&api, TOKEN, "");
    let mut d = setup.start();
    wait_source(&d, "telegram:bot", "up").await;
    let first = api.send_message("one");
    wait_texts(&d, &["one"]).await;
    let ready = wait_source(&d, "telegram:bot", "up").await;
    assert!(ready["last_event_at"].is_string() && ready["last_poll_at"].is_string(), "{ready}");
    let (_, run) = d.get("/admin/runs?limit=1").await;
    assert_eq!(run["runs"][0]["source"], "telegram", "{run}");

    // Updates arrive while fanin is down: each starts its run once.
    d.stop();
    let asked_before = api.asked().len();
    api.send_message("two");
    api.push("edited_message", json!({"message_id": 1, "text": "one, edited"}));
    api.send_message("three");
    let mut d = setup.start();
    wait_texts(&d, &["one", "three", "two"]).await;
    let after = &api.asked()[asked_before..];
    assert_eq!(after[0].offset, Some(first + 1), "the restarted source asks from the first update it did not keep");
    eventually("every update confirmed", async || api.unconfirmed() == 0).await;

    // Another restart: nothing is asked for again from before the offset.
    d.stop();
    let asked_before = api.asked().len();
    let d = setup.start();
    api.send_message("four");
    wait_texts(&d, &["four", "one", "three", "two"]).await;
    assert_eq!(api.asked()[asked_before].offset, Some(first + 4), "{:?}", api.asked());
}

#[tokio::test]
async fn the_condition_reads_the_message() {
    let api = BotApi::start(TOKEN);
    let setup = polling(&api, TOKEN, "condition = '$.text == \"deploy\"'");
    let d = setup.start();
    api.send_message("hello");
    api.send_message("deploy");
    let last = api.send_message("hello again");
    eventually("the three updates read", async || api.asked().iter().any(|a| a.offset == Some(last + 1))).await;
    assert_eq!(texts(&d).await, ["deploy"]);
}

#[tokio::test]
async fn a_refused_token_shows_in_ready_and_never_in_it() {
    let api = BotApi::start(TOKEN);
    let wrong = "999:wrong-token-value";
    let setup = polling(&api, wrong, "");
    let d = setup.start();
    let state = wait_source(&d, "telegram:bot", "down").await;
    let detail = state["detail"].as_str().unwrap();
    assert!(detail.contains("401 Unauthorized"), "{state}");
    assert!(!detail.contains(wrong) && !detail.contains("wrong-token"), "the token is never shown: {detail}");
    let (status, ready) = d.get("/ready").await;
    assert_eq!((status, ready["error"].as_str()), (503, Some("not_ready")), "{ready}");
}

#[tokio::test]
async fn a_429_is_waited_out_for_its_retry_after() {
    let api = BotApi::start(TOKEN);
    let setup = polling(&api, TOKEN, "");
    let d = setup.start();
    wait_source(&d, "telegram:bot", "up").await;
    api.script(
        429,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3",
               "parameters": {"retry_after": 3}}),
    );
    // The 429 answers the next request fanin sends: the one after the
    // update ends the poll held now (or the first, if none is held yet).
    api.send_message("one");
    let limited = eventually("the 429 answered", async || {
        api.asked().iter().position(|a| a.status == 429).ok_or(format!("{:?}", api.asked()))
    })
    .await;
    let state = wait_source(&d, "telegram:bot", "down").await;
    assert!(state["detail"].as_str().unwrap().contains("rate limited"), "{state}");
    let next = eventually("the poll after the 429", async || api.asked().get(limited + 1).cloned().ok_or("")).await;
    let waited = next.at - api.asked()[limited].at;
    assert!(waited >= Duration::from_secs(3), "asked again after {waited:?}");
    wait_texts(&d, &["one"]).await;
    api.send_message("two");
    wait_texts(&d, &["one", "two"]).await;
}

#[tokio::test]
async fn fanin_hears_again_once_the_bot_api_is_back() {
    let mut api = BotApi::start(TOKEN);
    let setup = polling(&api, TOKEN, "");
    let d = setup.start();
    wait_source(&d, "telegram:bot", "up").await;
    api.stop();
    let state = wait_source(&d, "telegram:bot", "down").await;
    assert!(state["detail"].as_str().unwrap().starts_with("getUpdates: "), "{state}");
    assert!(!state["detail"].as_str().unwrap().contains(TOKEN), "{state}");
    api.send_message("while away");
    api.resume();
    wait_texts(&d, &["while away"]).await;
    wait_source(&d, "telegram:bot", "up").await;
}

fn hooked() -> Setup {
    Setup::new(
        "",
        "[channels_config.telegram.hook]\nbot_token = \"1:x\"\nmode = \"webhook\"\nsecret_token = \"hook-secret\"\n",
    )
    .sop("chat", &sop("chat", "hook", ""))
}

#[tokio::test]
async fn webhook_mode_takes_updates_with_the_secret_token_once_each() {
    let setup = hooked();
    let d = setup.start();
    let update = json!({"update_id": 500, "message": {"message_id": 9, "text": "hi", "chat": {"id": 1}}}).to_string();
    let path = "/channels/telegram/hook";
    for headers in [vec![], vec![("x-telegram-bot-api-secret-token", "not-it")]] {
        let (status, reply, _) = d.post(path, None, &update, &headers).await;
        assert_eq!((status, reply), (401, json!({"error": "unauthorized"})), "{headers:?}");
    }
    let (status, audit) = d.get("/admin/audit").await;
    assert_eq!((status, audit["records"].as_array().map(Vec::len)), (200, Some(0)), "{audit}");

    let secret = [("x-telegram-bot-api-secret-token", "hook-secret")];
    let (status, reply, _) = d.post(path, None, &update, &secret).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("accepted")), "{reply}");
    // Telegram resends an update it got no 200 for: the same update_id.
    let (status, reply, _) = d.post(path, None, &update, &secret).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("duplicate")), "{reply}");
    let other = json!({"update_id": 501, "callback_query": {"id": "q"}}).to_string();
    let (status, reply, _) = d.post(path, None, &other, &secret).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("ignored")), "{reply}");
    assert_eq!(texts(&d).await, ["hi"]);

    // A poll-mode alias has no webhook.
    let (status, reply, _) = d.post("/channels/telegram/bot", None, &update, &secret).await;
    assert_eq!((status, reply["error"].as_str()), (404, Some("unknown_channel")), "{reply}");
    let (_, ready) = d.get("/ready").await;
    assert_eq!(ready["sources"]["telegram:hook"]["status"], "up", "{ready}");
}

#[test]
fn an_unset_token_variable_stops_the_daemon_naming_the_key() {
    let setup = Setup::new("", "[channels_config.telegram.bot]\nbot_token_env = \"FANIN_TEST_TELEGRAM_UNSET\"\n");
    let stderr = setup.daemon_refusal_without("FANIN_TEST_TELEGRAM_UNSET");
    assert!(
        stderr.contains("channels_config.telegram.bot.bot_token") && stderr.contains("FANIN_TEST_TELEGRAM_UNSET"),
        "{stderr}"
    );
}

#[test]
fn explain_tells_which_telegram_triggers_a_message_matches() {
    let setup = hooked().sop("deploys", &sop("deploys", "hook", "condition = '$.text == \"/deploy\"'"));
    let explain = |topic: &str| {
        let payload = r#"{"message_id": 1, "chat": {"id": 42}, "text": "/status"}"#;
        setup.cli_json(&["explain", "--json", "--source", "telegram", "--topic", topic, "--payload", payload])
    };
    let seen = explain("telegram/hook");
    let matched: Vec<&str> = seen["matches"].as_array().unwrap().iter().map(|m| m["sop"].as_str().unwrap()).collect();
    assert_eq!(matched, ["chat"], "{seen}");
    assert_eq!(seen["near_misses"][0]["sop"], "deploys", "{seen}");
    assert_eq!(explain("telegram/other")["matches"], json!([]), "another bot's messages match no trigger of this one");
}

/// Three replicas on one store: one polls `getUpdates` (the duty
/// `telegram:bot`), so Telegram never sees two pollers at once (no 409);
/// when that one is killed another takes the duty within the lease and
/// reads on from the offset in the store: each update starts one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_poll_as_one_bot_and_another_takes_over_when_the_poller_dies() {
    let api = BotApi::start(TOKEN);
    let block =
        format!("[channels_config.telegram.bot]\nbot_token = \"{TOKEN}\"\napi_base_url = \"{}\"\n", api.base_url());
    let test = "three_replicas_poll_as_one_bot";
    let chat = sop("chat", "bot", "");
    let Some(mut replicas) = Replicas::start(test, 3, "", &block, &[("chat", &chat)]).await else { return };
    let owner = replicas.holder("telegram:bot").await;
    wait_source(&replicas.daemons[owner], "telegram:bot", "up").await;
    api.send_message("one");
    api.send_message("two");
    wait_texts(&replicas.daemons[owner], &["one", "two"]).await;
    assert_eq!(api.conflicts(), 0, "one poller at a time: {:?}", api.asked());

    replicas.daemons[owner].kill();
    api.send_message("three");
    let survivor = &replicas.daemons[(owner + 1) % 3];
    wait_texts(survivor, &["one", "three", "two"]).await;
    api.send_message("four");
    wait_texts(survivor, &["four", "one", "three", "two"]).await;
}
