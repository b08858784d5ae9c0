//! The provided receive buffers running dry under a flood: with one 512-byte buffer per shard, 8
//! publishers write 100 PUBLISHes of 1,500 bytes each in one go (every packet spans three buffers, and
//! every receive but one finds the ring empty: ENOBUFS). The shard must degrade to slower reads, never
//! drop or reorder a byte, and stay idle once the flood is through (no re-arm loop); the dry receives are
//! counted (`shardmq_receive_buffers_dry_total`).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::any_version::{Client, Version};
use support::metrics::counter;
use support::raw::{self, Level, RawClient};
use support::{free_port, unique, Broker, BrokerLimits};

const PUBLISHERS: usize = 8;
const MESSAGES_EACH: usize = 100;
const PAYLOAD_BYTES: usize = 1500;

fn payload(publisher: usize, seq: usize) -> Vec<u8> {
    let mut bytes = format!("{publisher}:{seq}:").into_bytes();
    bytes.extend((0..PAYLOAD_BYTES - bytes.len()).map(|n| b'a' + ((n + seq + publisher) % 26) as u8));
    bytes
}

/// Broker CPU (utime + stime) in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("broker stat");
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_one_small_read_buffer_arrives_whole_in_order_and_the_shard_then_sleeps() {
    let metrics_port = free_port();
    let limits = BrokerLimits {
        shardmq_toml: Some(format!(
            "shards = 1\nread_buffers = 1\nread_buffer_bytes = 512\nmetrics = {{ bind = \"127.0.0.1:{metrics_port}\" }}\n"
        )),
        ..BrokerLimits::default()
    };
    let broker = Broker::start_with(&limits);
    if support::skip_on_mosquitto(&broker, "shardmq's io_uring provided buffers") {
        return;
    }
    let prefix = unique("dry");
    let mut subscriber = Client::connect(broker.port(), Version::V5, &unique("dry-sub")).await;
    assert_eq!(subscriber.subscribe(&format!("{prefix}/#"), 1).await, 1);

    let mut publishers = Vec::new();
    for publisher in 0..PUBLISHERS {
        let level = if publisher % 2 == 0 { Level::V5 } else { Level::V311 };
        let mut client = RawClient::connect(broker.port(), level).await;
        client.handshake(&raw::connect(level, &unique("dry-pub"), true, 60, None)).await;
        let mut flood = Vec::new();
        for seq in 0..MESSAGES_EACH {
            let topic = format!("{prefix}/{publisher}");
            flood.extend(raw::publish(level, &topic, 1, false, seq as u16 + 1, &payload(publisher, seq)));
        }
        publishers.push((client, flood));
    }
    for (client, flood) in &mut publishers {
        client.send(flood).await;
    }

    let mut next_seq: HashMap<usize, usize> = HashMap::new();
    for _ in 0..PUBLISHERS * MESSAGES_EACH {
        let message = subscriber.next_message().await;
        let publisher: usize = message.topic.rsplit('/').next().and_then(|p| p.parse().ok()).expect("publisher topic");
        let seq = next_seq.entry(publisher).or_default();
        assert_eq!(
            &message.payload[..],
            &payload(publisher, *seq)[..],
            "publisher {publisher} message {seq}: bytes lost or out of order"
        );
        *seq += 1;
    }
    assert!(next_seq.values().all(|&count| count == MESSAGES_EACH), "{next_seq:?}");
    subscriber.expect_no_message().await;
    let dry = counter(metrics_port, "shardmq_receive_buffers_dry_total");
    assert!(dry > 0, "the flood never found the buffer ring empty, so this test proves nothing");

    // Through the flood, the shard sleeps: under 5% of a core over two seconds.
    let (before, started) = (cpu_ticks(broker.pid()), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let share = (cpu_ticks(broker.pid()) - before) as f64 / ticks_per_sec / started.elapsed().as_secs_f64();
    assert!(share < 0.05, "an idle shard after the flood used {:.0}% of a core", share * 100.0);
    drop(publishers);
}
