//! Load shedding in the core, driven by hand: a client publishing past `publish_rate_max_per_second` is
//! throttled through the input gate (`InputGate::Paused`) until one timer-wheel entry opens it again
//! (a `Write` action, as the runtime resumes reading on); and while the process is over its memory
//! budget (`MemoryBudget`), a CONNECT gets v5 0x97 Quota exceeded (3.1.1: return code 3) and a QoS 0
//! delivery to a client that already has unsent bytes queued is dropped and counted, QoS 1 kept.

mod core_harness;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use core_harness::{connect, publish, subscribe};
use shardmq::broker::{Action, BrokerSettings, ConnId, InputGate, ListenerId, MemoryBudget, ShardCore};
use shardmq::protocol::{decode_packet, Packet, ProtocolVersion, QoS, ReasonCode};

const BUDGET_BYTES: u64 = 64 * 1024 * 1024;

fn open(core: &mut ShardCore, version: ProtocolVersion, client_id: &str, now: Instant) -> ConnId {
    let conn = core.open_connection(now, ListenerId(0));
    core.handle_packet(conn, Packet::Connect(Box::new(connect(version, client_id, true))), now);
    conn
}

/// Takes the connection's output and decodes it as a `version` client would.
fn take(core: &mut ShardCore, conn: ConnId, version: ProtocolVersion) -> Vec<Packet> {
    let mut frames = Vec::new();
    core.take_output(conn, &mut frames);
    let mut wire = BytesMut::new();
    frames.iter().for_each(|frame| wire.extend_from_slice(frame));
    std::iter::from_fn(|| decode_packet(&mut wire, version, u32::MAX).expect("server frame decodes")).collect()
}

fn write_requested(core: &mut ShardCore, conn: ConnId) -> bool {
    let mut requested = false;
    while let Some(action) = core.poll_action() {
        requested |= matches!(action, Action::Write(to) if to == conn);
    }
    requested
}

#[test]
fn publishing_past_publish_rate_max_per_second_pauses_input_until_the_timer_refills_the_bucket() {
    let settings = BrokerSettings { publish_rate_max_per_second: Some(10), ..BrokerSettings::default() };
    let (mut core, now) = (ShardCore::new(0, 1, Rc::new(settings)), Instant::now());
    let conn = open(&mut core, ProtocolVersion::V3_1_1, "fast-publisher", now);
    for n in 0..9 {
        core.handle_packet(conn, Packet::Publish(publish("rate/x", QoS::AtMostOnce, 0, "m")), now);
        assert_eq!(core.input_gate(conn, now), InputGate::Open, "PUBLISH {n} is within the one second's burst");
    }
    core.handle_packet(conn, Packet::Publish(publish("rate/x", QoS::AtMostOnce, 0, "m")), now);
    assert_eq!(core.input_gate(conn, now), InputGate::Paused, "the 10th empties the bucket");
    assert_eq!((core.stats().publish_throttled_rate, core.stats().input_paused), (1, 0), "a throttle, not a backlog");
    let resume_at = core.next_deadline().expect("the resume is armed");
    assert!(resume_at <= now + Duration::from_millis(200), "a tenth of the bucket refills in 100 ms");
    write_requested(&mut core, conn);
    core.tick(resume_at);
    assert!(write_requested(&mut core, conn), "the runtime is told to read the connection again");
    assert_eq!(core.input_gate(conn, resume_at), InputGate::Open);
    assert_eq!(core.stats().publish_throttled_bytes, 0, "no bytes limit set");
}

#[test]
fn a_client_paused_longer_than_its_keep_alive_by_publish_bytes_max_per_second_is_not_closed_for_silence_mqtt_3_1_2_24()
{
    let settings = BrokerSettings { publish_bytes_max_per_second: Some(1000), ..BrokerSettings::default() };
    let (mut core, now) = (ShardCore::new(0, 1, Rc::new(settings)), Instant::now());
    let mut connect = connect(ProtocolVersion::V5, "big-publisher", true);
    connect.keep_alive_secs = 1;
    let conn = core.open_connection(now, ListenerId(0));
    core.handle_packet(conn, Packet::Connect(Box::new(connect)), now);
    let ten_seconds_of_bytes = "x".repeat(10_000);
    core.handle_packet(conn, Packet::Publish(publish("big", QoS::AtLeastOnce, 1, &ten_seconds_of_bytes)), now);
    assert_eq!(core.input_gate(conn, now), InputGate::Paused);
    let mut at = now;
    while core.input_gate(conn, at) == InputGate::Paused && at < now + Duration::from_secs(12) {
        at += Duration::from_millis(100);
        core.tick(at);
        assert!(core.has_connection(conn), "closed {:?} into a 9 s pause with a 1 s keep-alive", at - now);
    }
    let paused = at - now;
    assert!(paused >= Duration::from_secs(9) && paused < Duration::from_millis(9500), "resumed after {paused:?}");
    core.tick(at + Duration::from_secs(2));
    assert!(!core.has_connection(conn), "silent for 1.5 x its keep-alive after the resume [MQTT-3.1.2-24]");
}

fn shedding_core() -> (ShardCore, Arc<MemoryBudget>) {
    let mut core = ShardCore::new(0, 1, Rc::new(BrokerSettings::default()));
    let budget = Arc::new(MemoryBudget::new(Some(BUDGET_BYTES)));
    core.set_memory_budget(Arc::clone(&budget));
    (core, budget)
}

#[test]
fn over_memory_max_bytes_a_connect_gets_quota_exceeded_0x97_and_3_1_1_return_code_3_until_below_90_percent() {
    let ((mut core, budget), now) = (shedding_core(), Instant::now());
    budget.observe(BUDGET_BYTES + 1);
    for (version, id) in [(ProtocolVersion::V5, "late-v5"), (ProtocolVersion::V3_1_1, "late-v311")] {
        let conn = open(&mut core, version, id, now);
        let answer = take(&mut core, conn, version);
        let Some(Packet::ConnAck(connack)) = answer.first() else { panic!("{version:?}: no CONNACK: {answer:?}") };
        // A 3.x CONNACK carries return code 3, which decodes as Server unavailable.
        let expected = if version.is_v5() { ReasonCode::QUOTA_EXCEEDED } else { ReasonCode::SERVER_UNAVAILABLE };
        assert_eq!(connack.reason, expected, "{version:?}");
        assert!(!core.has_connection(conn), "{version:?}: closed after the refusal");
    }
    assert_eq!(core.stats().connects_refused.get(&0x97), Some(&2));
    budget.observe(BUDGET_BYTES / 100 * 95);
    let still = open(&mut core, ProtocolVersion::V5, "between", now);
    assert!(!core.has_connection(still), "below the budget but above 90% of it: still shedding");
    budget.observe(BUDGET_BYTES / 100 * 85);
    let back = open(&mut core, ProtocolVersion::V5, "recovered", now);
    assert!(
        matches!(take(&mut core, back, ProtocolVersion::V5).first(), Some(Packet::ConnAck(ack)) if ack.reason == ReasonCode::SUCCESS)
    );
}

#[test]
fn over_memory_max_bytes_qos0_to_a_client_with_unsent_bytes_is_dropped_and_qos1_kept() {
    let ((mut core, budget), now) = (shedding_core(), Instant::now());
    let v5 = ProtocolVersion::V5;
    let (at_most_once, at_least_once) = (open(&mut core, v5, "sub-qos0", now), open(&mut core, v5, "sub-qos1", now));
    core.handle_packet(at_most_once, Packet::Subscribe(subscribe(1, "shed/#", QoS::AtMostOnce)), now);
    core.handle_packet(at_least_once, Packet::Subscribe(subscribe(1, "shed/#", QoS::AtLeastOnce)), now);
    let publisher = open(&mut core, v5, "publisher", now);
    for conn in [at_most_once, at_least_once, publisher] {
        take(&mut core, conn, v5);
    }
    budget.observe(BUDGET_BYTES + 1);
    for (packet_id, payload) in [(1, "first"), (2, "second")] {
        core.handle_packet(publisher, Packet::Publish(publish("shed/x", QoS::AtLeastOnce, packet_id, payload)), now);
    }
    let payloads = |packets: Vec<Packet>| -> Vec<Vec<u8>> {
        packets
            .into_iter()
            .filter_map(|packet| match packet {
                Packet::Publish(publish) => Some(publish.payload.to_vec()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(payloads(take(&mut core, at_most_once, v5)), [b"first".to_vec()], "the second found bytes unsent");
    assert_eq!(payloads(take(&mut core, at_least_once, v5)), [b"first".to_vec(), b"second".to_vec()], "QoS 1 kept");
    assert_eq!(core.stats().dropped_memory_budget, 1);
    assert!(core.stats_snapshot().memory.shedding, "the snapshot (for /metrics) shows it");
}
