//! Checks the scale simulation's own counts, so `benches/scale.rs` cannot silently measure nothing: every
//! simulated session really connects and subscribes, point publishes reach exactly their one device, pings
//! are answered, silent clients time out, and a broadcast reaches every subscriber on both shards.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shardmq::broker::BrokerSettings;
use shardmq::protocol::{ProtocolVersion, QoS};
use shardmq::sim::{OutputMode, SimCluster};

const SESSIONS: usize = 10_000;

fn cluster(version: ProtocolVersion) -> SimCluster {
    SimCluster::new(2, BrokerSettings::default(), version, OutputMode::Decode)
}

#[test]
fn simulated_sessions_connect_subscribe_and_receive_point_publishes() {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let now = Instant::now();
        let mut sim = cluster(version);
        let clients: Vec<_> = (0..SESSIONS).map(|id| sim.connect(&format!("dev{id}"), 30, now)).collect();
        sim.pump(now);
        assert_eq!(sim.counts().connacks, SESSIONS as u64, "{version:?}: one successful CONNACK per session");
        let per_shard: Vec<usize> = sim.cores().iter().map(|core| core.gauges().connections).collect();
        assert!(per_shard.iter().all(|&n| n > SESSIONS / 4), "{version:?}: both shards hold sessions: {per_shard:?}");

        for (id, client) in clients.iter().enumerate() {
            sim.subscribe(*client, &format!("devices/dev{id}/cmd"), QoS::AtLeastOnce, 1, now);
        }
        sim.pump(now);
        assert_eq!(sim.counts().subacks, SESSIONS as u64, "{version:?}: one SUBACK per SUBSCRIBE");
        assert!(sim.counts().mesh_messages > 0, "{version:?}: interest must cross to the other shard");

        let publisher = sim.connect("publisher", 0, now);
        sim.pump(now);
        for id in (0..SESSIONS).step_by(7) {
            sim.publish(publisher, &format!("devices/dev{id}/cmd"), Bytes::from_static(b"on"), now);
        }
        sim.publish(publisher, "devices/nobody/cmd", Bytes::from_static(b"lost"), now);
        sim.pump(now);
        let expected = (0..SESSIONS).step_by(7).count() as u64;
        assert_eq!(sim.counts().publishes_delivered, expected, "{version:?}: each point publish reaches one device");
    }
}

#[test]
fn simulated_keepalive_pings_are_answered_and_silent_clients_time_out() {
    let start = Instant::now();
    let mut sim = cluster(ProtocolVersion::V5);
    let clients: Vec<_> = (0..1000).map(|id| sim.connect(&format!("k{id}"), 10, start)).collect();
    sim.pump(start);
    // The first half pings every 5 s for 30 s; the second half stays silent and must be closed after 15 s.
    for step in 1..=6u64 {
        let now = start + Duration::from_secs(5 * step);
        for client in &clients[..500] {
            sim.ping(*client, now);
        }
        sim.tick(now);
        sim.pump(now);
    }
    assert_eq!(sim.counts().pingresps, 6 * 500, "every PINGREQ gets a PINGRESP");
    let connected: usize = sim.cores().iter().map(|core| core.gauges().connections).sum();
    assert_eq!(connected, 500, "clients silent for 1.5x keep-alive are closed [MQTT-3.1.2-24]");
}

#[test]
fn simulated_broadcast_reaches_every_subscriber_on_both_shards() {
    let now = Instant::now();
    let mut sim = cluster(ProtocolVersion::V5);
    let clients: Vec<_> = (0..SESSIONS).map(|id| sim.connect(&format!("b{id}"), 0, now)).collect();
    for client in &clients {
        sim.subscribe(*client, "broadcast/all", QoS::AtMostOnce, 1, now);
    }
    sim.pump(now);
    let publisher = sim.connect("broadcaster", 0, now);
    sim.pump(now);
    sim.publish(publisher, "broadcast/all", Bytes::from_static(&[7; 64]), now);
    sim.pump(now);
    assert_eq!(sim.counts().publishes_delivered, SESSIONS as u64);
}
