//! Per-client publish limits (issue 23), on the real binary with rumqttc: a client publishing QoS 1 as
//! fast as it can past `publish_rate_max_per_second` (3.1.1) or `publish_bytes_max_per_second` (5) is
//! throttled to about its limit (a token bucket holding one second's worth, as EMQX's per-client
//! limiter), not dropped: every message arrives, in order; a client of the same shard publishing under
//! its limit keeps fast round trips meanwhile; the throttling is logged and counted.

mod support;

use std::time::{Duration, Instant};

use support::any_version::{Client, Version};
use support::metrics::counter;
use support::{client_id_on_shard, free_port, skip_on_mosquitto, unique, Broker, BrokerLimits};

/// Round trips of the client under its limit, one every `BYSTANDER_PAUSE` (50 a second, far below 200).
const BYSTANDER_ROUND_TRIPS: usize = 40;
const BYSTANDER_PAUSE: Duration = Duration::from_millis(20);
/// Generous for a debug build on two shared CPUs; the throttled client alone would add nothing near it.
const BYSTANDER_P99_MAX: Duration = Duration::from_millis(250);
/// Every run is bounded: the slowest allowed rate (half the limit) finishes well within it.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

struct Limit {
    version: Version,
    setting: &'static str,
    per_second: u64,
    messages: usize,
    payload_bytes: usize,
}

/// What a throttled run measured.
struct Run {
    /// From the first PUBLISH requested to the last message received.
    elapsed: Duration,
    /// Topic + payload bytes of all messages (what `publish_bytes_max_per_second` counts).
    bytes: u64,
    bystander_p99: Duration,
}

fn payload(seq: usize, bytes: usize) -> Vec<u8> {
    let mut payload = format!("{seq}:").into_bytes();
    payload.resize(bytes.max(payload.len()), b'x');
    payload
}

fn start_broker(limit: &Limit, metrics_port: u16) -> Broker {
    Broker::start_with(&BrokerLimits {
        shardmq_mqtt_toml: Some(format!("{} = {}", limit.setting, limit.per_second)),
        shardmq_toml: Some(format!("[metrics]\nbind = \"127.0.0.1:{metrics_port}\"")),
        ..BrokerLimits::default()
    })
}

/// A publisher of `limit.version` floods `limit.messages` QoS 1 PUBLISHes as fast as rumqttc sends them
/// (its inflight window full all the time) while a subscriber takes them and a client on the same shard
/// does paced round trips.
async fn throttled_run(broker: &Broker, limit: &Limit) -> Run {
    let topic = unique("limited");
    let publisher_id = client_id_on_shard("flooder", 0);
    let mut subscriber = Client::connect(broker.port(), limit.version, &unique("limited-sub")).await;
    assert_eq!(subscriber.subscribe(&topic, 1).await, 1);
    let bystander = tokio::spawn(bystander_round_trips(broker.port(), limit.version));

    let mut publisher = Client::connect(broker.port(), limit.version, &publisher_id).await;
    let started = Instant::now();
    let (count, payload_bytes) = (limit.messages, limit.payload_bytes);
    let flood_topic = topic.clone();
    let flood = tokio::spawn(async move {
        for seq in 0..count {
            publisher.publish_no_wait(&flood_topic, 1, false, payload(seq, payload_bytes)).await;
        }
        publisher
    });
    let mut bytes = 0;
    for seq in 0..limit.messages {
        let message = subscriber.next_message().await;
        assert_eq!(message.payload, payload(seq, payload_bytes), "message {seq}: lost, duplicated or out of order");
        bytes += (message.topic.len() + message.payload.len()) as u64;
    }
    let elapsed = started.elapsed();
    subscriber.expect_no_message().await;
    let _publisher = flood.await.expect("publisher task");
    let mut round_trips = bystander.await.expect("bystander task");
    round_trips.sort();
    let bystander_p99 = round_trips[round_trips.len() * 99 / 100];
    Run { elapsed, bytes, bystander_p99 }
}

/// Round trips (PUBLISH QoS 1 to its own subscription until the message is back) of a client on the
/// flooder's shard, under its own limit.
async fn bystander_round_trips(port: u16, version: Version) -> Vec<Duration> {
    let topic = unique("bystander");
    let mut client = Client::connect(port, version, &client_id_on_shard("bystander", 0)).await;
    assert_eq!(client.subscribe(&topic, 1).await, 1);
    let mut round_trips = Vec::with_capacity(BYSTANDER_ROUND_TRIPS);
    for _ in 0..BYSTANDER_ROUND_TRIPS {
        let sent = Instant::now();
        client.publish(&topic, 1, false, &b"ping"[..]).await;
        assert_eq!(&client.next_message().await.payload[..], b"ping");
        round_trips.push(sent.elapsed());
        tokio::time::sleep(BYSTANDER_PAUSE).await;
    }
    round_trips
}

/// The measured rate stays within the bucket: at most 1.5 x the limit plus the one second's burst, and at
/// least half the limit (the throttled client is slowed to its limit, not stopped).
fn assert_rate_within(limit: &Limit, sent: u64, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let per_second = limit.per_second as f64;
    let measured = sent as f64 / seconds;
    let beyond_burst = (sent as f64 - per_second) / seconds;
    eprintln!(
        "{}: {sent} in {seconds:.2} s = {measured:.0}/s, {beyond_burst:.0}/s beyond the burst, limit {per_second}/s",
        limit.setting
    );
    assert!(
        sent as f64 <= 1.5 * per_second * seconds + per_second,
        "{sent} through in {seconds:.2} s: faster than {} = {per_second} allows (its burst included)",
        limit.setting
    );
    assert!(sent as f64 >= 0.5 * per_second * seconds, "{sent} in {seconds:.2} s: under half of {}", limit.setting);
}

async fn check_throttled(limit: Limit) {
    let metrics_port = free_port();
    let broker = start_broker(&limit, metrics_port);
    if skip_on_mosquitto(&broker, "Mosquitto has no per-client publish rate limit") {
        return;
    }
    let run = tokio::time::timeout(RUN_TIMEOUT, throttled_run(&broker, &limit))
        .await
        .unwrap_or_else(|_| panic!("the throttled run did not finish within {RUN_TIMEOUT:?}"));
    let sent = match limit.setting {
        "publish_rate_max_per_second" => limit.messages as u64,
        _ => run.bytes,
    };
    assert_rate_within(&limit, sent, run.elapsed);
    eprintln!("bystander p99 round trip: {:?}", run.bystander_p99);
    assert!(run.bystander_p99 <= BYSTANDER_P99_MAX, "a client under its limit slowed: p99 {:?}", run.bystander_p99);
    let logged = broker.wait_for_log_line(support::EVENT_TIMEOUT, |line| {
        line.contains("DEBUG") && line.contains("client throttled") && line.contains(limit.setting)
    });
    assert!(logged.is_some(), "no debug line naming {}", limit.setting);
    assert!(counter(metrics_port, "shardmq_publish_throttled_total") > 0, "throttling not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_qos1_flood_past_publish_rate_max_per_second_is_throttled_to_the_rate_without_loss_others_stay_fast() {
    check_throttled(Limit {
        version: Version::V311,
        setting: "publish_rate_max_per_second",
        per_second: 200,
        messages: 600,
        payload_bytes: 16,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos1_flood_past_publish_bytes_max_per_second_is_throttled_to_the_bytes_without_loss_others_stay_fast() {
    check_throttled(Limit {
        version: Version::V5,
        setting: "publish_bytes_max_per_second",
        per_second: 100_000,
        messages: 300,
        payload_bytes: 1000,
    })
    .await;
}
