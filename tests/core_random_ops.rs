//! Random sequences of client actions against two `ShardCore`s (proptest): whatever clients do, the core
//! never panics, every frame it writes decodes, and its bookkeeping stays within its limits.

mod core_harness;

use std::time::Duration;

use core_harness::*;
use proptest::prelude::*;
use shardmq::broker::BrokerSettings;
use shardmq::protocol::{Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};

const CLIENT_IDS: [&str; 4] = ["a", "b", "c", "d"];
const FILTERS: [&str; 6] = ["t/1", "t/+", "#", "$share/g/t/#", "t/2", "+/2"];
const TOPICS: [&str; 3] = ["t/1", "t/2", "u/2"];

#[derive(Clone, Debug)]
enum Op {
    Connect { client: usize, v5: bool, clean: bool, receive_maximum: u16 },
    Subscribe { client: usize, filter: usize, qos: u8 },
    Unsubscribe { client: usize, filter: usize },
    Publish { client: usize, topic: usize, qos: u8, retain: bool, packet_id: u16 },
    Ack { client: usize, kind: u8, packet_id: u16 },
    AckAll { client: usize },
    Ping { client: usize },
    Disconnect { client: usize, with_will: bool },
    Lose { client: usize },
    Advance { secs: u8 },
}

fn qos(value: u8) -> QoS {
    QoS::from_u8(value % 3).unwrap_or_default()
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENT_IDS.len();
    prop_oneof![
        (client.clone(), any::<bool>(), any::<bool>(), 1..4u16)
            .prop_map(|(client, v5, clean, receive_maximum)| Op::Connect { client, v5, clean, receive_maximum }),
        (client.clone(), 0..FILTERS.len(), 0..3u8).prop_map(|(client, filter, qos)| Op::Subscribe {
            client,
            filter,
            qos
        }),
        (client.clone(), 0..FILTERS.len()).prop_map(|(client, filter)| Op::Unsubscribe { client, filter }),
        (client.clone(), 0..TOPICS.len(), 0..3u8, any::<bool>(), 1..6u16)
            .prop_map(|(client, topic, qos, retain, packet_id)| Op::Publish { client, topic, qos, retain, packet_id }),
        (client.clone(), 0..4u8, 1..6u16).prop_map(|(client, kind, packet_id)| Op::Ack { client, kind, packet_id }),
        client.clone().prop_map(|client| Op::AckAll { client }),
        client.clone().prop_map(|client| Op::Ping { client }),
        (client.clone(), any::<bool>()).prop_map(|(client, with_will)| Op::Disconnect { client, with_will }),
        client.prop_map(|client| Op::Lose { client }),
        (0..40u8).prop_map(|secs| Op::Advance { secs }),
    ]
}

struct World {
    broker: Broker,
    clients: [Option<(Client, bool)>; 4],
    /// The client's last CONNECT asked for a 3.1.1 session that never expires.
    persistent: [bool; 4],
}

impl World {
    fn live(&self, index: usize) -> Option<(Client, bool)> {
        self.clients[index].filter(|(client, _)| !self.broker.is_closed(*client))
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Connect { client, v5, clean, receive_maximum } => {
                let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
                let mut request = connect(version, CLIENT_IDS[client], clean);
                request.keep_alive_secs = 30;
                request.will = Some(will("will/t", CLIENT_IDS[client]));
                if v5 {
                    request.properties.session_expiry_interval_secs = Some(if clean { 0 } else { 60 });
                    request.properties.receive_maximum = Some(receive_maximum);
                }
                let (connection, connack) = self.broker.connect(request);
                assert_eq!(connack.reason, ReasonCode::SUCCESS);
                self.clients[client] = Some((connection, v5));
                self.persistent[client] = !v5 && !clean;
            }
            Op::Subscribe { client, filter, qos: level } => {
                if let Some((connection, _)) = self.live(client) {
                    self.broker.send(connection, Packet::Subscribe(subscribe(1, FILTERS[filter], qos(level))));
                }
            }
            Op::Unsubscribe { client, filter } => {
                if let Some((connection, _)) = self.live(client) {
                    self.broker.send(connection, Packet::Unsubscribe(unsubscribe(2, FILTERS[filter])));
                }
            }
            Op::Publish { client, topic, qos: level, retain, packet_id } => {
                if let Some((connection, _)) = self.live(client) {
                    let mut message =
                        publish(TOPICS[topic], qos(level), if level % 3 == 0 { 0 } else { packet_id }, "m");
                    message.retain = retain;
                    self.broker.send(connection, Packet::Publish(message));
                }
            }
            Op::Ack { client, kind, packet_id } => {
                if let Some((connection, _)) = self.live(client) {
                    let packet = match kind {
                        0 => Packet::PubAck(ack(packet_id)),
                        1 => Packet::PubRec(ack(packet_id)),
                        2 => Packet::PubRel(ack(packet_id)),
                        _ => Packet::PubComp(ack(packet_id)),
                    };
                    self.broker.send(connection, packet);
                }
            }
            Op::AckAll { client } => self.ack_all(client),
            Op::Ping { client } => {
                if let Some((connection, _)) = self.live(client) {
                    self.broker.send(connection, Packet::PingReq);
                }
            }
            Op::Disconnect { client, with_will } => {
                if let Some((connection, v5)) = self.live(client) {
                    let reason =
                        if with_will && v5 { ReasonCode::DISCONNECT_WITH_WILL_MESSAGE } else { ReasonCode::SUCCESS };
                    self.broker.send(connection, Packet::Disconnect(Disconnect { reason, ..Disconnect::default() }));
                }
            }
            Op::Lose { client } => {
                if let Some((connection, _)) = self.live(client) {
                    self.broker.lose(connection);
                }
            }
            Op::Advance { secs } => self.broker.advance(Duration::from_secs(u64::from(secs))),
        }
    }

    /// Acknowledges what the client received, as a well-behaved client would.
    fn ack_all(&mut self, client: usize) {
        let Some((connection, _)) = self.live(client) else { return };
        for packet in self.broker.recv(connection) {
            let reply = match packet {
                Packet::Publish(publish) if publish.qos == QoS::AtLeastOnce => Packet::PubAck(ack(publish.packet_id)),
                Packet::Publish(publish) if publish.qos == QoS::ExactlyOnce => Packet::PubRec(ack(publish.packet_id)),
                Packet::PubRel(rel) => Packet::PubComp(ack(rel.packet_id)),
                Packet::PubRec(rec) => Packet::PubRel(ack(rec.packet_id)),
                _ => continue,
            };
            if !self.broker.is_closed(connection) {
                self.broker.send(connection, reply);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_client_behaviour_never_breaks_the_core(ops in prop::collection::vec(op(), 1..60)) {
        let settings = BrokerSettings { receive_maximum: 3, session_queue_max_messages: 5, ..BrokerSettings::default() };
        let mut world = World { broker: Broker::with_settings(2, settings), clients: [None; 4], persistent: [false; 4] };
        for op in ops {
            world.apply(op);
        }
        for index in 0..CLIENT_IDS.len() {
            world.ack_all(index);
        }
        // First the keep-alive closes silent connections, then their sessions' expiry runs out.
        world.broker.advance(Duration::from_secs(3600));
        world.broker.advance(Duration::from_secs(3600));
        let sessions: usize = world.broker.shards.iter().map(|shard| shard.gauges().sessions).sum();
        let connections: usize = world.broker.shards.iter().map(|shard| shard.gauges().connections).sum();
        prop_assert_eq!(connections, 0, "keep-alive closed every silent connection");
        let persistent = world.persistent.iter().filter(|&&kept| kept).count();
        prop_assert_eq!(sessions, persistent, "after an hour only 3.1.1 sessions without clean session remain");
    }
}
