//! The core's gate on a connection's input (`ShardCore::input_gate`), driven by hand without taking the
//! output, as a client that never reads would leave it: answers to PINGREQ [MQTT-3.12.4-1] and to PUBREL
//! of unknown packet ids [MQTT-4.3.3-11] pile up until reading pauses, a drained queue opens it again,
//! and past `out_queue_close_bytes` or `out_queue_stall_max_secs` the connection is closed and counted.

mod core_harness;

use std::rc::Rc;
use std::time::{Duration, Instant};

use core_harness::connect;
use shardmq::broker::{Action, BrokerSettings, ConnId, InputGate, ListenerId, ShardCore};
use shardmq::protocol::{Packet, ProtocolVersion, PubResponse};

fn core() -> ShardCore {
    let settings = BrokerSettings {
        out_queue_pause_bytes: 1000,
        out_queue_close_bytes: 5000,
        out_queue_stall_max_secs: 2,
        ..BrokerSettings::default()
    };
    ShardCore::new(0, 1, Rc::new(settings))
}

fn connected(core: &mut ShardCore, client_id: &str, now: Instant) -> ConnId {
    let conn = core.open_connection(now, ListenerId(0));
    core.handle_packet(conn, Packet::Connect(Box::new(connect(ProtocolVersion::V5, client_id, true))), now);
    assert_eq!(core.input_gate(conn, now), InputGate::Open, "a CONNACK alone owes little");
    conn
}

/// A PINGREQ and a PUBREL for a packet id never seen, `pairs` times, none of the answers taken.
fn unread_requests(core: &mut ShardCore, conn: ConnId, pairs: u16, now: Instant) {
    for packet_id in 1..=pairs {
        core.handle_packet(conn, Packet::PingReq, now);
        core.handle_packet(conn, Packet::PubRel(PubResponse { packet_id, ..PubResponse::default() }), now);
    }
}

fn closed(core: &mut ShardCore, conn: ConnId) -> bool {
    let mut closed = false;
    while let Some(action) = core.poll_action() {
        closed |= matches!(action, Action::Close(closing) if closing == conn);
    }
    closed && !core.has_connection(conn)
}

#[test]
fn unread_answers_pause_input_and_a_drained_queue_opens_it_again_mqtt_3_12_4_1() {
    let (mut core, now) = (core(), Instant::now());
    let conn = connected(&mut core, "reader-later", now);
    unread_requests(&mut core, conn, 10, now);
    assert_eq!(core.input_gate(conn, now), InputGate::Paused);
    assert_eq!(core.stats().input_paused, 1);
    let mut frames = Vec::new();
    core.take_output(conn, &mut frames);
    assert!(frames.len() > 20, "PINGRESP and PUBCOMP frames were queued: {}", frames.len());
    assert_eq!(core.input_gate(conn, now), InputGate::Open, "the socket took everything");
    // Drained before the stall bound: the timer armed by the pause does nothing.
    core.tick(now + Duration::from_secs(3));
    assert!(core.has_connection(conn));
}

#[test]
fn a_connection_owing_more_than_out_queue_close_bytes_is_closed_and_counted_mqtt_4_3_3_11() {
    let (mut core, now) = (core(), Instant::now());
    let conn = connected(&mut core, "never-reads", now);
    unread_requests(&mut core, conn, 50, now);
    assert_eq!(core.input_gate(conn, now), InputGate::Closed);
    assert!(closed(&mut core, conn), "a Close action for the connection");
    assert_eq!(core.stats().closed_output_backlog, 1);
}

#[test]
fn a_connection_paused_for_out_queue_stall_max_secs_is_closed() {
    let (mut core, now) = (core(), Instant::now());
    let conn = connected(&mut core, "stalled", now);
    let other = connected(&mut core, "fine", now);
    unread_requests(&mut core, conn, 10, now);
    assert_eq!(core.input_gate(conn, now), InputGate::Paused);
    core.tick(now + Duration::from_secs(1));
    assert!(core.has_connection(conn), "not yet stalled");
    core.tick(now + Duration::from_millis(2200));
    assert!(closed(&mut core, conn), "closed after out_queue_stall_max_secs");
    assert!(core.has_connection(other), "another client is untouched");
    assert_eq!(core.stats().closed_output_backlog, 1);
}
