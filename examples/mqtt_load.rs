//! The load generator and the bare subscriber of the MQTT ingest benchmark
//! (scripts/bench/mqtt_ingest.sh, BENCHMARKS.md).
//!
//! - `publish URL PREFIX COUNT RATE`: publishes COUNT QoS 1 JSON messages on
//!   `PREFIX/dev-<n>/alert` at RATE messages/s, every second one with
//!   `severity` 3 (matches `$.severity >= 2`) and the others with 1; waits
//!   for every PUBACK and prints `sent=… matching=… seconds=… rate=…`.
//! - `count URL FILTER EXPECT IDLE_SECS [RECEIVE_MAXIMUM]`: a bare subscriber (QoS 1, clean
//!   session, automatic acks) that only counts messages; prints `ready` once
//!   subscribed, then, when EXPECT arrived or nothing came for IDLE_SECS,
//!   `received=… seconds=… rate=…` (seconds from the first to the last). It
//!   speaks MQTT 5 and announces fanin's default Receive Maximum (or the one
//!   given), so both take the same window of unacknowledged messages from
//!   the broker.
//!
//! Pacing: the publisher keeps `sent = RATE × elapsed`, publishing in bursts
//! and sleeping a millisecond when ahead, so the offered rate is fixed
//! whatever the broker does; a publisher that cannot keep up shows it in
//! its own `rate=`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use fanin::config::DEFAULT_RECEIVE_MAXIMUM;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const USAGE: &str =
    "usage: mqtt_load publish URL PREFIX COUNT RATE | count URL FILTER EXPECT IDLE_SECS [RECEIVE_MAXIMUM]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["publish", url, prefix, count, rate] => match (count.parse(), rate.parse()) {
            (Ok(count), Ok(rate)) => publish(url, prefix, count, rate).await,
            _ => Err(USAGE.to_string()),
        },
        ["count", url, filter, expect, idle, window @ ..] => {
            let window = match window {
                [] => Ok(DEFAULT_RECEIVE_MAXIMUM),
                [n] => n.parse(),
                _ => return fail(USAGE),
            };
            match (expect.parse(), idle.parse(), window) {
                (Ok(expect), Ok(idle), Ok(window)) => {
                    count(url, filter, expect, Duration::from_secs(idle), window).await
                }
                _ => Err(USAGE.to_string()),
            }
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => fail(&reason),
    }
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("mqtt_load: {reason}");
    ExitCode::FAILURE
}

/// Host, port and a client id unique to this process, for `mqtt://host:port`.
fn endpoint(url: &str, role: &str) -> Result<(String, String, u16), String> {
    let url = url::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if url.scheme() != "mqtt" {
        return Err(format!("{url}: only mqtt:// (plaintext) is supported here"));
    }
    let host = url.host_str().ok_or_else(|| format!("{url}: no host"))?.to_string();
    Ok((format!("fanin-bench-{role}-{}", std::process::id()), host, url.port().unwrap_or(1883)))
}

fn options(url: &str, role: &str) -> Result<MqttOptions, String> {
    let (id, host, port) = endpoint(url, role)?;
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(30)).set_clean_session(true).set_inflight(1000);
    Ok(options)
}

/// Polls until the broker accepted the connection.
async fn connected(events: &mut EventLoop) -> Result<(), String> {
    loop {
        match events.poll().await.map_err(|e| format!("broker: {e}"))? {
            Event::Incoming(Packet::ConnAck(_)) => return Ok(()),
            _ => continue,
        }
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let severity = if seq % 2 == 0 { 3 } else { 1 };
    format!(r#"{{"seq":{seq},"sensor":"t-{}","severity":{severity},"reading":{{"celsius":21.5}}}}"#, seq % 16)
        .into_bytes()
}

async fn publish(url: &str, prefix: &str, count: u64, rate: u64) -> Result<(), String> {
    let (client, mut events) = AsyncClient::new(options(url, "pub")?, 10_000);
    connected(&mut events).await?;
    // The event loop runs beside the pacing loop and counts PUBACKs.
    let acks = tokio::spawn(async move {
        let mut acked = 0u64;
        while acked < count {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => return Err(format!("broker: {e} after {acked} acks")),
            }
        }
        Ok(Instant::now())
    });
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(count);
        if sent >= due {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for seq in sent..due {
            let topic = format!("{prefix}/dev-{}/alert", seq % 16);
            client.publish(topic, QoS::AtLeastOnce, false, payload(seq)).await.map_err(|e| e.to_string())?;
        }
        sent = due;
    }
    let all_acked = acks.await.map_err(|e| e.to_string())??;
    let seconds = all_acked.duration_since(start).as_secs_f64();
    let matching = count.div_ceil(2);
    println!("sent={count} matching={matching} seconds={seconds:.3} rate={:.0}", count as f64 / seconds);
    let _ = client.disconnect().await;
    Ok(())
}

async fn count(url: &str, filter: &str, expect: u64, idle: Duration, window: u16) -> Result<(), String> {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{mqttbytes::QoS, Event};
    let (id, host, port) = endpoint(url, "sub")?;
    let mut options = rumqttc::v5::MqttOptions::new(id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(true)
        .set_receive_maximum(Some(window))
        .set_max_packet_size(Some(1 << 20));
    let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.map_err(|e| e.to_string())?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.map_err(|e| format!("broker: {e}"))? {
            break;
        }
    }
    println!("ready");
    let (mut received, mut first, mut last) = (0u64, None, Instant::now());
    while received < expect {
        match tokio::time::timeout(idle, events.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => return Err(format!("broker: {e} after {received} messages")),
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                received += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            Ok(Ok(_)) => {}
        }
    }
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let rate = if seconds > 0.0 { received as f64 / seconds } else { 0.0 };
    println!("received={received} seconds={seconds:.3} rate={rate:.0}");
    Ok(())
}
