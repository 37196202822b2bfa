//! The MQTT source across replicas (docs/cluster.md): with `shared_group`
//! every replica subscribes as a member of one shared subscription and the
//! broker hands each message to one of them; without it the subscription is
//! the singleton duty `mqtt`, taken over when its holder dies.
//!
//! Replicas share a PostgreSQL schema (`common/replicas.rs`; skipped without
//! `FANIN_TEST_POSTGRES_URL`) and a broker (`common/mqtt.rs`). Each test uses
//! its own client id and topic prefix, and waits for the states it expects.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::mqtt::{broker, publish, unique, Protocol};
use common::replicas::{Replicas, LEASE_SECS};
use common::*;
use rumqttc::QoS;
use serde_json::Value;

fn mqtt_block(broker_url: &str, client_id: &str, filter: &str, extra: &str) -> String {
    format!(
        "[channels_config.mqtt]\nbroker_url = \"{broker_url}\"\nclient_id = \"{client_id}\"\n\
         topics = [\"{filter}\"]\nqos = 1\n{extra}\n"
    )
}

fn mqtt_sop(name: &str, topic: &str) -> String {
    format!(
        "[sop]\nname = \"{name}\"\ndescription = \"test\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n\n\
         [[triggers]]\ntype = \"mqtt\"\ntopic = \"{topic}\"\n"
    )
}

fn mqtt_status(ready: &Value) -> &str {
    ready["sources"]["mqtt"]["status"].as_str().unwrap_or("")
}

/// Messages `{prefix}/seq/<n>` for each `n`, the number in the payload too.
fn numbered(prefix: &str, numbers: impl IntoIterator<Item = usize>) -> Vec<(String, Vec<u8>)> {
    numbers.into_iter().map(|n| (format!("{prefix}/seq/{n}"), format!("{{\"seq\": {n}}}").into_bytes())).collect()
}

/// The sequence number of each run, from the topic it was started by.
fn sequences(runs: &[Value], prefix: &str) -> Vec<usize> {
    let head = format!("{prefix}/seq/");
    runs.iter()
        .map(|run| {
            let topic = run["topic"].as_str().unwrap_or_else(|| panic!("a run's topic: {run}"));
            let n = topic.strip_prefix(&head).unwrap_or_else(|| panic!("the published topic, not a $share one: {run}"));
            n.parse().unwrap_or_else(|_| panic!("a sequence number: {run}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_spreads_messages_over_the_replicas_and_runs_each_once_in_mqtt_5() {
    shared_group_spreads_and_runs_each_once(Protocol::V5, "cluster_mqtt_shared_5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_spreads_messages_over_the_replicas_and_runs_each_once_in_mqtt_3_1_1() {
    shared_group_spreads_and_runs_each_once(Protocol::V311, "cluster_mqtt_shared_311").await;
}

async fn shared_group_spreads_and_runs_each_once(protocol: Protocol, test: &str) {
    let (broker, publisher) = (broker(protocol).await, broker(Protocol::V311).await);
    let prefix = unique("fanin-test/shared");
    let client_id = unique("fanin-shared");
    // A group of its own: tests share the broker.
    let extra = format!("shared_group = \"{}\"\n{}", unique("fanin"), protocol.config_line());
    let block = mqtt_block(&broker.url(), &client_id, &format!("{prefix}/#"), &extra);
    let sop = mqtt_sop("seq", &format!("{prefix}/seq/+"));
    let Some(replicas) = Replicas::start(test, 3, "", &block, &[("seq", &sop)]).await else {
        return;
    };
    // Every member subscribed first, or the broker hands all to the first.
    for d in &replicas.daemons {
        d.wait_ready("mqtt up", |status, body| status == 200 && mqtt_status(body) == "up").await;
    }

    const COUNT: usize = 300;
    publish(&publisher, QoS::AtLeastOnce, &numbered(&prefix, 0..COUNT)).await;

    // The store is shared: any replica lists every run.
    let runs = replicas.daemons[1].wait_runs_of("seq", COUNT).await;
    let mut seen = sequences(&runs, &prefix);
    seen.sort_unstable();
    assert_eq!(seen, (0..COUNT).collect::<Vec<_>>(), "each message ran once, none missing");

    // Who ran what: each member under its own client id, more than one of them.
    let mut by_client: BTreeMap<String, usize> = BTreeMap::new();
    for run in &runs {
        let full = replicas.daemons[0].run(run["run_id"].as_str().unwrap()).await;
        let client = full["client"].as_str().unwrap_or_else(|| panic!("a client: {full}")).to_string();
        *by_client.entry(client).or_default() += 1;
    }
    let members: BTreeSet<String> = (1..=3).map(|i| format!("mqtt:{client_id}-r{i}")).collect();
    assert!(by_client.keys().all(|client| members.contains(client)), "{by_client:?}");
    assert!(by_client.len() > 1, "the broker spread the messages over the members: {by_client:?}");

    // Each replica's own count of what it received agrees, and adds up to
    // the messages published: none was delivered twice.
    let mut received = 0;
    for (i, d) in replicas.daemons.iter().enumerate() {
        let own = d.metric("fanin_mqtt_messages_total").await.unwrap_or(0.0) as usize;
        let ran = by_client.get(&format!("mqtt:{client_id}-r{}", i + 1)).copied().unwrap_or(0);
        assert_eq!(own, ran, "replica r{}: received {own}, ran {ran}", i + 1);
        received += own;
    }
    assert_eq!(received, COUNT);
    assert_eq!(replicas.daemons[2].runs_of("seq").await.len(), COUNT, "no run more than once");
}

/// Waits until one replica holds `mqtt` and the other stands by; returns
/// the holder's index.
async fn holder_of_mqtt(replicas: &Replicas) -> usize {
    eventually("one replica to hold mqtt, the other on standby", async || {
        let mut states = Vec::new();
        for d in &replicas.daemons {
            states.push(d.get("/ready").await.1);
        }
        let holders: Vec<usize> = (0..states.len()).filter(|&i| mqtt_status(&states[i]) == "up").collect();
        let standby = states.iter().filter(|s| mqtt_status(s) == "standby").count();
        match (holders.as_slice(), standby) {
            ([holder], 1) => Ok(*holder),
            _ => Err(format!("{states:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_group_one_replica_subscribes_and_another_takes_over_when_it_dies() {
    let (broker, publisher) = (broker(Protocol::V5).await, broker(Protocol::V311).await);
    let prefix = unique("fanin-test/duty");
    let block = mqtt_block(&broker.url(), &unique("fanin-duty"), &format!("{prefix}/#"), "");
    let sop = mqtt_sop("seq", &format!("{prefix}/seq/+"));
    let Some(mut replicas) = Replicas::start("cluster_mqtt_duty", 2, "", &block, &[("seq", &sop)]).await else {
        return;
    };
    let holder = holder_of_mqtt(&replicas).await;
    let other = 1 - holder;
    // Standby counts as ready (once the replica's other duties settled too).
    let (_, ready) = replicas.daemons[other]
        .wait_ready("ready, mqtt on standby", |status, body| status == 200 && mqtt_status(body) == "standby")
        .await;
    let detail = ready["sources"]["mqtt"]["detail"].as_str().unwrap_or_default();
    assert_eq!(detail, format!("held by replica r{}", holder + 1), "{ready}");

    publish(&publisher, QoS::AtLeastOnce, &numbered(&prefix, [0])).await;
    replicas.daemons[other].wait_runs_of("seq", 1).await;

    // Published while nobody is subscribed: the broker keeps them in the
    // session, which the next holder resumes under the same client id.
    replicas.daemons[holder].kill();
    let killed = Instant::now();
    publish(&publisher, QoS::AtLeastOnce, &numbered(&prefix, 1..6)).await;
    let survivor = &replicas.daemons[other];
    survivor.wait_ready("mqtt taken over", |status, body| status == 200 && mqtt_status(body) == "up").await;
    let took = killed.elapsed();
    // The lease lapses 3/4 of lease_secs after its last renewal; the rest
    // is the connection.
    assert!(took < Duration::from_secs(2 * LEASE_SECS), "took over after {took:?}");

    let runs = survivor.wait_runs_of("seq", 6).await;
    let mut seen = sequences(&runs, &prefix);
    seen.sort_unstable();
    assert_eq!(seen, (0..6).collect::<Vec<_>>(), "what was published after the kill ran, once");
}
