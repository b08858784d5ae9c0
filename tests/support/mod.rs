//! Shared harness of the integration tests: starts a real broker (shardmq, or Mosquitto with
//! `SHARDMQ_TEST_BROKER=mosquitto`) on a free loopback port and drives it with clients nobody here wrote
//! (rumqttc v4 and v5) and with raw bytes.
//!
//! Each test binary uses only part of this module, hence the dead-code allowance.
#![allow(dead_code)]

pub mod any_version;
pub mod broker;
pub mod events;
pub mod metrics;
pub mod mosquitto_clients;
pub mod raw;
mod rumqttc_common;
pub mod v4;
pub mod v5;

#[allow(unused_imports)] // for the tests that serve /metrics
pub use broker::free_port;
#[allow(unused_imports)] // not every test binary configures limits
pub use broker::BrokerLimits;
pub use broker::{Broker, BrokerKind, SHARDS};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a test waits for something that should happen (a CONNACK, a delivered message).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits to be confident something does *not* happen (a message that must not arrive).
pub const SILENCE: Duration = Duration::from_millis(300);

/// A client id / topic suffix unique in this process, so parallel tests never share names.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A unique client id whose home is `shard` of the 2-shard broker the tests start.
pub fn client_id_on_shard(prefix: &str, shard: usize) -> String {
    let base = unique(prefix);
    (0..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| shardmq::broker::home_shard(id, SHARDS) == shard)
        .expect("some suffix hashes to every shard")
}

/// `count` unique client ids alternating between the shards, so every shard gets clients.
pub fn spread_client_ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| client_id_on_shard(prefix, i % SHARDS)).collect()
}

/// Returns true (and says so on stderr) when the test must not run against the broker in use, because
/// Mosquitto deliberately behaves differently from what shardmq does; `why` names the difference.
pub fn skip_on_mosquitto(broker: &Broker, why: &str) -> bool {
    if broker.kind() == BrokerKind::Mosquitto {
        eprintln!("skipped on Mosquitto: {why}");
        return true;
    }
    false
}
