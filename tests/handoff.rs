//! Home-shard handoff, forced: each test opens a TCP connection, reads from the broker's debug log which
//! shard accepted it, and only then picks a client id homed on the *other* shard, so the CONNECT always
//! moves (fd, bytes read after it, parsed CONNECT). The moved client must then behave like any other:
//! publish and receive across shards, be taken over, and have every packet that arrived in the same read
//! as its CONNECT handled in order on its home shard.

mod support;

use shardmq::protocol::Packet;
use support::raw::{self, Level, PacketFields, RawClient, PUBACK};
use support::{client_id_on_shard, unique, Broker, BrokerLimits, EVENT_TIMEOUT, SHARDS};

/// The accept and handoff lines are debug lines. None on Mosquitto, which has no shards.
fn broker_with_debug_log() -> Option<Broker> {
    let broker = Broker::start_with(&BrokerLimits { log_filter: Some("debug".into()), ..BrokerLimits::default() });
    (!support::skip_on_mosquitto(&broker, "home-shard handoff is shardmq's own")).then_some(broker)
}

/// Whether `line` has the field `name=value` (as a whole word: ids that share a prefix do not match).
fn has_field(line: &str, name: &str, value: &str) -> bool {
    let wanted = format!("{name}={value}");
    line.split_whitespace().any(|word| word == wanted)
}

fn field_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    line.split_whitespace().find_map(|word| word.strip_prefix(prefix.as_str()))
}

/// A connection the broker has accepted, and the shard that accepted it (from its debug log).
async fn accepted_connection(broker: &Broker, level: Level) -> (RawClient, usize) {
    let client = RawClient::connect(broker.port(), level).await;
    let peer = format!("127.0.0.1:{}", client.local_port());
    let line = broker
        .wait_for_log_line(EVENT_TIMEOUT, |line| line.contains("connection accepted") && has_field(line, "peer", &peer))
        .unwrap_or_else(|| panic!("no `connection accepted` line for peer {peer}:\n{}", broker.log()));
    let shard = field_value(&line, "shard").and_then(|shard| shard.parse().ok()).expect("shard field");
    (client, shard)
}

/// A connection accepted on one shard and a client id homed on another: its CONNECT must move.
async fn connection_that_moves(broker: &Broker, level: Level, prefix: &str) -> (RawClient, String) {
    let (client, accepted_on) = accepted_connection(broker, level).await;
    let home = (accepted_on + 1) % SHARDS;
    (client, client_id_on_shard(prefix, home))
}

/// Asserts the home shard logged taking over the connection of `client_id`.
fn assert_handed_over(broker: &Broker, client_id: &str) {
    let moved = broker.wait_for_log_line(EVENT_TIMEOUT, |line| {
        line.contains("connection handed over to its home shard") && has_field(line, "client_id", client_id)
    });
    assert!(moved.is_some(), "{client_id} was not handed over:\n{}", broker.log());
}

fn session_expiry(secs: u32) -> Vec<u8> {
    let mut property = vec![0x11];
    property.extend_from_slice(&secs.to_be_bytes());
    property
}

/// Reads packets until a PUBLISH arrives (acknowledging it), skipping acknowledgements of our own.
async fn next_publish(client: &mut RawClient) -> (String, Vec<u8>) {
    loop {
        let packet = client.expect_packet().await;
        if let Packet::Publish(publish) = &packet {
            if publish.qos as u8 > 0 {
                client.send(&raw::publish_ack(PUBACK, publish.packet_id)).await;
            }
            return packet.publish();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_client_publishes_and_receives_across_shards_and_no_false_disconnect_is_logged() {
    let Some(broker) = broker_with_debug_log() else { return };
    let mut connected = Vec::new();
    for level in [Level::V311, Level::V5] {
        let (mut moved, moved_id) = connection_that_moves(&broker, level, "moved").await;
        moved.handshake(&raw::connect(level, &moved_id, true, 30, None)).await;
        assert_handed_over(&broker, &moved_id);
        let home = shardmq::broker::home_shard(&moved_id, SHARDS);
        // The peer lives on the shard that accepted the moved client, so every message crosses the mesh.
        let peer_id = client_id_on_shard("peer", (home + 1) % SHARDS);
        let mut peer = RawClient::connect(broker.port(), level).await;
        peer.handshake(&raw::connect(level, &peer_id, true, 30, None)).await;

        let to_moved = unique("handoff/to-moved");
        let to_peer = unique("handoff/to-peer");
        moved.send(&raw::subscribe(level, 1, &[(&to_moved, 1)])).await;
        assert_eq!(moved.expect_packet().await.ack_reasons(), vec![1]);
        peer.send(&raw::subscribe(level, 1, &[(&to_peer, 1)])).await;
        assert_eq!(peer.expect_packet().await.ack_reasons(), vec![1]);

        peer.send(&raw::publish(level, &to_moved, 1, false, 2, b"peer to moved")).await;
        assert_eq!(next_publish(&mut moved).await, (to_moved.clone(), b"peer to moved".to_vec()));
        moved.send(&raw::publish(level, &to_peer, 1, false, 2, b"moved to peer")).await;
        assert_eq!(next_publish(&mut peer).await, (to_peer.clone(), b"moved to peer".to_vec()));
        connected.extend([moved, peer]);
    }
    // Every client is still connected: the shard that accepted a moved connection must not have reported
    // it as a disconnect (it used to, through `connection_lost`).
    let log = broker.log();
    let disconnects: Vec<&str> = log.lines().filter(|line| line.contains("client disconnected")).collect();
    assert!(disconnects.is_empty(), "disconnect lines while every client is connected: {disconnects:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_client_is_taken_over_and_its_session_carries_over() {
    let Some(broker) = broker_with_debug_log() else { return };
    let (mut first, id) = connection_that_moves(&broker, Level::V5, "takeover").await;
    let persistent = session_expiry(60);
    first.handshake(&raw::connect_with(5, &id, false, 30, None, &persistent)).await;
    assert_handed_over(&broker, &id);
    let topic = unique("handoff/takeover");
    first.send(&raw::subscribe(Level::V5, 1, &[(&topic, 1)])).await;
    assert_eq!(first.expect_packet().await.ack_reasons(), vec![1]);

    // The second connection is accepted wherever the kernel puts it; the session is on the home shard.
    let mut second = RawClient::connect(broker.port(), Level::V5).await;
    second.send(&raw::connect_with(5, &id, false, 30, None, &persistent)).await;
    let connack = second.expect_packet().await;
    assert_eq!(connack.connack(), (true, 0), "session present after taking over a moved client");
    first.expect_disconnect_and_close(0x8E).await;

    let mut publisher = RawClient::connect(broker.port(), Level::V5).await;
    publisher.handshake(&raw::connect(Level::V5, &unique("takeover-pub"), true, 30, None)).await;
    publisher.send(&raw::publish(Level::V5, &topic, 1, false, 1, b"to the new connection")).await;
    assert_eq!(next_publish(&mut second).await, (topic, b"to the new connection".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_sent_with_the_connect_in_one_write_are_all_delivered_in_order_after_the_move() {
    // More than one read buffer (16 KiB) of PUBLISHes behind the CONNECT: the accepting shard reads part
    // of them with the CONNECT (they travel as leftover bytes), the home shard reads the rest from the
    // moved socket, and a packet is split between the two.
    const PUBLISHES: u16 = 90; // under the default Receive Maximum of 100
    let payload_bytes = 400;
    let Some(broker) = broker_with_debug_log() else { return };
    for level in [Level::V311, Level::V5] {
        let topic = unique("handoff/burst");
        let mut subscriber = RawClient::connect(broker.port(), level).await;
        subscriber.handshake(&raw::connect(level, &unique("burst-sub"), true, 30, None)).await;
        subscriber.send(&raw::subscribe(level, 1, &[(&topic, 1)])).await;
        assert_eq!(subscriber.expect_packet().await.ack_reasons(), vec![1]);

        let (mut moved, id) = connection_that_moves(&broker, level, "burst").await;
        let mut first_write = raw::connect(level, &id, true, 30, None);
        for n in 1..=PUBLISHES {
            let mut payload = format!("message {n:03} ").into_bytes();
            payload.resize(payload_bytes, b'.');
            first_write.extend(raw::publish(level, &topic, 1, false, n, &payload));
        }
        assert!(first_write.len() > 2 * 16 * 1024, "{} bytes", first_write.len());
        moved.send(&first_write).await;

        assert_eq!(moved.expect_packet().await.connack().1, 0, "{level:?}: CONNACK");
        for n in 1..=PUBLISHES {
            let ack = moved.expect_packet().await;
            assert!(matches!(ack, Packet::PubAck(_)), "{level:?}: expected PUBACK {n}, got {ack:?}");
            assert_eq!(ack.packet_id(), n, "{level:?}: PUBACKs in order");
        }
        for n in 1..=PUBLISHES {
            let (_, payload) = next_publish(&mut subscriber).await;
            let expected = format!("message {n:03} ");
            assert!(
                payload.starts_with(expected.as_bytes()),
                "{level:?}: expected {expected:?} next, got {:?}",
                String::from_utf8_lossy(&payload[..16])
            );
            assert_eq!(payload.len(), payload_bytes);
        }
        assert_handed_over(&broker, &id);
    }
}
