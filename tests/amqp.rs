//! The AMQP source through a live daemon and the real RabbitMQ named by
//! `FANIN_TEST_AMQP_URL` (`.ci/run` sets it when 5672 answers); without it
//! each test says it is skipped and why. The broker is shared: every test
//! declares its own exchange and queue (unique names) and deletes them at
//! the end, and a lost connection is made by cutting a proxy, never by
//! restarting the broker.

mod common;

use common::proxy::Proxy;
use common::*;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};

/// The broker's URL, or `None` after saying the test is skipped.
fn broker_url(test: &str) -> Option<String> {
    let url = std::env::var("FANIN_TEST_AMQP_URL").ok().filter(|u| !u.trim().is_empty());
    if url.is_none() {
        eprintln!("{test}: skipped: FANIN_TEST_AMQP_URL is not set (no AMQP broker to test against)");
    }
    url
}

/// A test's own exchange and queue, and a publisher on them.
struct Broker {
    exchange: String,
    queue: String,
    channel: Channel,
    _connection: Connection,
}

impl Broker {
    async fn new(url: &str, label: &str) -> Broker {
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let connection = Connection::connect(url, properties).await.expect("the test broker");
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let id = uuid::Uuid::new_v4().simple().to_string();
        Broker {
            exchange: format!("fanin-test-{label}-{id}"),
            queue: format!("fanin-test-{label}-{id}"),
            channel,
            _connection: connection,
        }
    }

    /// `[channels_config.amqp]` on this exchange and queue, bound to `bindings`.
    fn block(&self, url: &str, bindings: &[&str], extra: &str) -> String {
        format!(
            "[channels_config.amqp]\nurl = \"{url}\"\nexchange = \"{}\"\nqueue = \"{}\"\nbindings = {bindings:?}\n{extra}\n",
            self.exchange, self.queue
        )
    }

    /// Publishes (persistent) and waits for the broker's confirm.
    async fn publish(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let properties = properties.with_delivery_mode(2);
        let confirm = self
            .channel
            .basic_publish(&self.exchange, routing_key, BasicPublishOptions::default(), body, properties)
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack(), "the broker took the message");
    }

    /// Messages ready in the queue (not those delivered and unacked).
    async fn ready(&self) -> u32 {
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        self.channel.queue_declare(&self.queue, options, FieldTable::default()).await.unwrap().message_count()
    }

    async fn delete(self) {
        let _ = self.channel.queue_delete(&self.queue, QueueDeleteOptions::default()).await;
        let _ = self.channel.exchange_delete(&self.exchange, ExchangeDeleteOptions::default()).await;
    }
}

fn with_id(id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(id.into())
}

fn amqp_sop(name: &str, routing_key: &str, condition: Option<&str>) -> String {
    let condition = condition.map(|c| format!("condition = {c:?}\n")).unwrap_or_default();
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n\n\
         [[triggers]]\ntype = \"amqp\"\nrouting_key = \"{routing_key}\"\n{condition}"
    )
}

async fn wait_amqp(d: &Daemon, status: &str) -> Value {
    let (_, body) =
        d.wait_ready(&format!("amqp {status}"), |_, b| b["sources"]["amqp"]["status"] == json!(status)).await;
    body["sources"]["amqp"].clone()
}

/// Waits for `count` runs of `sop` and returns their whole records.
async fn wait_runs(d: &Daemon, sop: &str, count: usize) -> Vec<Value> {
    let runs = d.wait_runs_of(sop, count).await;
    let mut full = Vec::new();
    for run in &runs {
        assert_eq!(run["source"], json!("amqp"), "{run}");
        full.push(d.run(run["run_id"].as_str().unwrap()).await);
    }
    full
}

/// Stops the daemon and waits until nothing is left in the queue: every
/// delivery was acked (a graceful stop hands unacked ones back).
async fn stop_and_expect_drained(d: &mut Daemon, broker: &Broker) {
    d.stop();
    eventually("the queue to be empty", async || {
        let ready = broker.ready().await;
        if ready == 0 {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    })
    .await;
}

async fn refused(d: &Daemon) -> Vec<Value> {
    let (status, audit) = d.get("/admin/audit?limit=10000").await;
    assert_eq!(status, 200, "{audit}");
    audit["records"].as_array().unwrap().iter().filter(|r| r["kind"] == json!("event_refused")).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_deliveries_start_runs_with_the_body_as_payload_and_the_properties_beside_it() {
    let Some(url) = broker_url("matching_deliveries") else { return };
    let broker = Broker::new(&url, "match").await;
    let setup = Setup::new("", &broker.block(&url, &["sensors.#"], ""))
        .sop("alerts", &amqp_sop("alerts", "sensors.*.alert", Some("$.severity >= 2")))
        .sop("notes", &amqp_sop("notes", "sensors.*.note", None));
    let mut d = setup.start();
    wait_amqp(&d, "up").await;

    let mut headers = FieldTable::default();
    headers.insert("site".into(), AMQPValue::LongString("north".into()));
    let first = with_id("m-1").with_content_type("application/json".into()).with_headers(headers);
    broker.publish("sensors.kitchen.alert", br#"{"severity": 3}"#, first).await;
    broker.publish("sensors.kitchen.alert", br#"{"severity": 1}"#, with_id("m-2")).await; // condition false
    broker.publish("sensors.kitchen.info", br#"{"severity": 5}"#, with_id("m-3")).await; // no trigger
    broker.publish("other.kitchen.alert", br#"{"severity": 5}"#, with_id("m-4")).await; // not bound
    broker.publish("sensors.kitchen.alert", br#"{"severity": 9}"#, with_id("m-1")).await; // a duplicate
    broker.publish("sensors.hall.note", b"disk full", BasicProperties::default()).await; // text, no id

    let alerts = wait_runs(&d, "alerts", 1).await;
    let notes = wait_runs(&d, "notes", 1).await;
    let (_, ready) = d.get("/ready").await;
    assert!(ready["sources"]["amqp"]["last_event_at"].is_string(), "{ready}");
    stop_and_expect_drained(&mut d, &broker).await;
    let d = setup.start();
    let (alerts_after, notes_after) = (d.runs_of("alerts").await, d.runs_of("notes").await);
    assert_eq!((alerts_after.len(), notes_after.len()), (1, 1), "{alerts_after:?} {notes_after:?}");

    let run = &alerts[0];
    assert_eq!(run["topic"], json!("sensors.kitchen.alert"));
    assert_eq!(run["payload"], json!({"severity": 3}), "the body itself, the first of the two m-1");
    let properties = &run["request"]["headers"];
    assert_eq!(properties["message_id"], json!("m-1"), "{run}");
    assert_eq!(properties["content_type"], json!("application/json"));
    assert_eq!(properties["headers"]["site"], json!("north"));
    assert_eq!((&properties["exchange"], &properties["redelivered"]), (&json!(broker.exchange), &json!(false)));
    assert_eq!(notes[0]["payload"], json!("disk full"));
    drop(d);
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_shows_down_and_is_made_again_consuming_what_waited() {
    let Some(url) = broker_url("a_cut_connection") else { return };
    let broker = Broker::new(&url, "cut").await;
    let upstream = url::Url::parse(&url).unwrap();
    let proxy = Proxy::start(upstream.host_str().unwrap(), upstream.port().unwrap_or(5672)).await;
    let mut via_proxy = upstream.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.port())).unwrap();
    let setup =
        Setup::new("", &broker.block(via_proxy.as_str(), &["cut.#"], "")).sop("cut", &amqp_sop("cut", "cut.#", None));
    let d = setup.start();
    wait_amqp(&d, "up").await;
    broker.publish("cut.a", br#"{"n": 1}"#, with_id("c-1")).await;
    wait_runs(&d, "cut", 1).await;

    proxy.cut_and_refuse();
    let down = wait_amqp(&d, "down").await;
    assert!(down["detail"].as_str().is_some_and(|r| !r.is_empty()), "{down}");
    // Published while fanin cannot hear: the durable queue keeps it.
    broker.publish("cut.a", br#"{"n": 2}"#, with_id("c-2")).await;
    proxy.restore();
    let up = wait_amqp(&d, "up").await;
    assert!(up["reconnects"].as_u64() >= Some(1), "{up}");
    let runs = wait_runs(&d, "cut", 2).await;
    let mut payloads: Vec<Value> = runs.iter().map(|r| r["payload"].clone()).collect();
    payloads.sort_by_key(|p| p["n"].as_i64());
    assert_eq!(payloads, vec![json!({"n": 1}), json!({"n": 2})]);
    drop(d);
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_leaves_every_message_with_exactly_one_run() {
    let Some(url) = broker_url("sigkill_mid_stream") else { return };
    const N: usize = 1000;
    let broker = Broker::new(&url, "kill").await;
    let setup = Setup::new("", &broker.block(&url, &["kill.#"], "prefetch = 32"))
        .sop("kill", &amqp_sop("kill", "kill.#", None));
    // Declare the topology first, so what is published before the kill waits
    // in the queue.
    let mut d = setup.start();
    wait_amqp(&d, "up").await;
    d.stop();
    for i in 0..N {
        broker.publish("kill.m", format!(r#"{{"i": {i}}}"#).as_bytes(), with_id(&format!("k-{i}"))).await;
    }

    let mut d = setup.start();
    eventually("some runs before the kill", async || {
        let n = d.runs_of("kill").await.len();
        if n >= 20 {
            Ok(())
        } else {
            Err(format!("{n} runs"))
        }
    })
    .await;
    d.kill();
    let ready = broker.ready().await as usize;
    assert!(ready > 0, "the kill came mid-stream: nothing was left in the queue");

    let mut d = setup.start();
    let runs = eventually(&format!("{N} runs"), async || {
        let runs = d.runs_of("kill").await;
        if runs.len() >= N {
            Ok(runs)
        } else {
            Err(format!("{} runs", runs.len()))
        }
    })
    .await;
    stop_and_expect_drained(&mut d, &broker).await;
    let d = setup.start();
    let runs_after = d.runs_of("kill").await;
    assert_eq!(runs_after.len(), N, "no message started twice ({} runs)", runs_after.len());
    let mut seen = std::collections::BTreeSet::new();
    for run in &runs {
        let full = d.run(run["run_id"].as_str().unwrap()).await;
        seen.insert(full["payload"]["i"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), N, "every message has its run");
    drop(d);
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_bodies_are_audited_as_refused_and_acked_not_redelivered() {
    let Some(url) = broker_url("poison_bodies") else { return };
    let broker = Broker::new(&url, "poison").await;
    let setup = Setup::new("", &broker.block(&url, &["p.#"], "max_message_bytes = 4096"))
        .sop("poison", &amqp_sop("poison", "p.#", None));
    let mut d = setup.start();
    wait_amqp(&d, "up").await;

    let nested = |depth: usize| format!("{}0{}", "[".repeat(depth), "]".repeat(depth));
    broker.publish("p.huge", &vec![b'x'; 5000], with_id("huge")).await;
    broker.publish("p.deep", nested(65).as_bytes(), with_id("deep")).await;
    broker.publish("p.binary", &[0xff, 0x00, 0xfe, b'!'], with_id("binary")).await;
    broker.publish("p.ok", br#"{"ok": true}"#, with_id("ok")).await;

    let runs = wait_runs(&d, "poison", 2).await;
    let mut payloads: Vec<Value> = runs.iter().map(|r| r["payload"].clone()).collect();
    payloads.sort_by_key(|p| p.is_object());
    assert_eq!(payloads, vec![json!("\u{fffd}\u{0}\u{fffd}!"), json!({"ok": true})], "binary arrives as text");
    let records = eventually("two refusals", async || {
        let records = refused(&d).await;
        if records.len() >= 2 {
            Ok(records)
        } else {
            Err(format!("{records:?}"))
        }
    })
    .await;
    let mut reasons: Vec<(Value, Value)> =
        records.iter().map(|r| (r["detail"]["topic"].clone(), r["detail"]["reason"].clone())).collect();
    reasons.sort_by_key(|(topic, _)| topic.to_string());
    assert_eq!(
        reasons,
        vec![(json!("p.deep"), json!("payload_too_deep")), (json!("p.huge"), json!("message_too_large"))]
    );
    assert!(records.iter().all(|r| r["detail"]["source"] == json!("amqp")), "{records:?}");

    stop_and_expect_drained(&mut d, &broker).await;
    let d = setup.start();
    wait_amqp(&d, "up").await;
    broker.publish("p.ok", br#"{"ok": 2}"#, with_id("ok-2")).await;
    wait_runs(&d, "poison", 3).await;
    assert_eq!(refused(&d).await.len(), 2, "a refused message came back");
    drop(d);
    broker.delete().await;
}

/// The source in-process over a store that refuses a commit: the refused
/// delivery is rejected with requeue, the session ends and is made again,
/// and the redelivery starts its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_store_refused_is_requeued_not_lost() {
    use fanin::sources::health::Status;
    let Some(url) = broker_url("a_delivery_the_store_refused") else { return };
    let broker = Broker::new(&url, "store").await;
    let setup = Setup::new("", &broker.block(&url, &["s.#"], "")).sop("store", &amqp_sop("store", "s.#", None));
    let (ctx, store) = setup.faulty_sources().await;
    let task = fanin::sources::amqp::start(&ctx).unwrap().expect("an AMQP block starts a consumer");
    let state = || ctx.health.snapshot()["amqp"].clone();
    eventually("amqp up", || async { state().status == Status::Up }).await;

    store.refuse_next_commits(1);
    for i in 0..3 {
        broker.publish("s.m", format!(r#"{{"i": {i}}}"#).as_bytes(), with_id(&format!("s-{i}"))).await;
    }
    let query = fanin::store::RunQuery { sop: Some("store".into()), ..Default::default() };
    eventually("every delivery to run, the refused one too", || async {
        let runs = store.inner().list_runs(&query).await.unwrap();
        (0..3).all(|i| runs.iter().any(|r| r.payload == json!({"i": i})))
    })
    .await;
    assert_eq!(store.refusals_left(), 0, "the store did refuse a commit");
    assert!(state().reconnects >= 1, "the session was made again: {:?}", state());
    assert_eq!(store.inner().list_runs(&query).await.unwrap().len(), 3, "message_id kept redeliveries single");

    ctx.shutdown.cancel();
    tokio::time::timeout(DEADLINE, task).await.expect("the consumer stops on shutdown").unwrap();
    broker.delete().await;
}

/// `amqps://` against the real broker behind a TLS listener whose
/// certificate only the test CA (`ca_file`) vouches for: fanin connects,
/// consumes and starts the run; without the CA it refuses the certificate
/// and says so in `/ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_verifies_the_broker_against_ca_file_and_consumes() {
    let Some(url) = broker_url("amqps_verifies") else { return };
    let broker = Broker::new(&url, "tls").await;
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let upstream = url::Url::parse(&url).unwrap();
    let front =
        common::proxy::tls_front(upstream.host_str().unwrap(), upstream.port().unwrap_or(5672), certs.path()).await;
    let mut tls_url = upstream.clone();
    tls_url.set_scheme("amqps").unwrap();
    tls_url.set_host(Some("127.0.0.1")).unwrap();
    tls_url.set_port(Some(front)).unwrap();
    let ca = certs.path().join("ca.pem").display().to_string();

    let untrusted =
        Setup::new("", &broker.block(tls_url.as_str(), &["tls.#"], "")).sop("tls", &amqp_sop("tls", "tls.#", None));
    let d = untrusted.start();
    let down = wait_amqp(&d, "down").await;
    assert!(down["detail"].as_str().unwrap().to_lowercase().contains("certificate"), "{down}");
    drop(d);

    let trusted = Setup::new("", &broker.block(tls_url.as_str(), &["tls.#"], &format!("ca_file = {ca:?}")))
        .sop("tls", &amqp_sop("tls", "tls.#", None));
    let d = trusted.start();
    wait_amqp(&d, "up").await;
    broker.publish("tls.m", br#"{"over": "tls"}"#, with_id("t-1")).await;
    let runs = wait_runs(&d, "tls", 1).await;
    assert_eq!(runs[0]["payload"], json!({"over": "tls"}));
    drop(d);
    broker.delete().await;
}

#[tokio::test]
async fn an_unreachable_broker_shows_amqp_down_and_keeps_retrying() {
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let block = format!("[channels_config.amqp]\nurl = \"{url}\"\nqueue = \"nowhere\"\n");
    let setup = Setup::new("", &block).sop("hook", &webhook_sop("hook", "/sop/hook", ""));
    let d = setup.start();
    let (status, body) =
        d.wait_ready("two retries", |_, b| b["sources"]["amqp"]["reconnects"].as_u64() >= Some(2)).await;
    assert_eq!(status, 503, "{body}");
    let amqp = &body["sources"]["amqp"];
    assert_eq!(amqp["status"], json!("down"), "{body}");
    assert!(amqp["detail"].as_str().unwrap().contains("cannot connect"), "{body}");
    assert!(!amqp["detail"].as_str().unwrap().contains("guest:guest"), "no credentials in /ready: {body}");
    assert_eq!(body["sources"]["webhook"]["status"], json!("up"));
}

/// A queue the operator declared with arguments (a quorum queue, as
/// RabbitMQ recommends for durable work): without `queue_arguments` the
/// broker refuses fanin's declare and `/ready` says why in its words; with
/// them the queue is consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_is_consumed_with_its_arguments_and_refused_without_them() {
    let Some(url) = broker_url("a_quorum_queue") else { return };
    let broker = Broker::new(&url, "quorum").await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    broker.channel.queue_declare(&broker.queue, durable, arguments).await.expect("a quorum queue");

    let sop = amqp_sop("all", "orders.#", None);
    let plain = Setup::new("", &broker.block(&url, &["orders.#"], "")).sop("all", &sop);
    let d = plain.start();
    let down = wait_amqp(&d, "down").await;
    let detail = down["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("PRECONDITION_FAILED") && detail.contains("x-queue-type"), "{down}");
    drop(d);

    let quorum = "queue_arguments = { \"x-queue-type\" = \"quorum\" }";
    let setup = Setup::new("", &broker.block(&url, &["orders.#"], quorum)).sop("all", &sop);
    let d = setup.start();
    wait_amqp(&d, "up").await;
    broker.publish("orders.new", br#"{"order": 7}"#, with_id("o-7")).await;
    let runs = wait_runs(&d, "all", 1).await;
    assert_eq!(runs[0]["payload"], json!({"order": 7}));
    drop(d);
    broker.delete().await;
}
