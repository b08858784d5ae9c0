//! A full disk as the core sees it (`ShardCore::set_disk_full`, set by the runtime from the log writer):
//! new QoS 1/2 PUBLISHes are refused and not routed, QoS 0 goes on, and everything is accepted again once
//! the disk has room. The real disk is in tests/python/test_persistence_disk.py.

mod core_harness;

use core_harness::*;
use shardmq::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn set_disk_full(broker: &mut Broker, full: bool) {
    for shard in &mut broker.shards {
        shard.set_disk_full(full);
    }
}

#[test]
fn full_disk_refuses_v5_qos1_and_qos2_with_0x97_routes_nothing_and_keeps_qos0() {
    let mut broker = Broker::new(2);
    let (subscriber, _) = broker.connect(connect(V5, "watcher", true));
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "t", QoS::ExactlyOnce)));
    broker.recv(subscriber);
    let (publisher, _) = broker.connect(connect(V5, "publisher", true));
    set_disk_full(&mut broker, true);
    broker.send(publisher, Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "q1")));
    broker.send(publisher, Packet::Publish(publish("t", QoS::ExactlyOnce, 2, "q2")));
    broker.send(publisher, Packet::Publish(publish("t", QoS::AtMostOnce, 0, "q0")));
    match broker.recv(publisher).as_slice() {
        [Packet::PubAck(puback), Packet::PubRec(pubrec)] => {
            assert_eq!((puback.packet_id, puback.reason), (1, ReasonCode::QUOTA_EXCEEDED));
            assert_eq!((pubrec.packet_id, pubrec.reason), (2, ReasonCode::QUOTA_EXCEEDED));
        }
        other => panic!("expected PUBACK and PUBREC 0x97, got {other:?}"),
    }
    let got = contents(&broker.recv_publishes(subscriber));
    assert_eq!(got, [("t".to_string(), "q0".to_string())], "only QoS 0 was routed");
    assert_eq!(broker.shards.iter().map(|shard| shard.refused_disk_full()).sum::<u64>(), 2);

    set_disk_full(&mut broker, false);
    broker.send(publisher, Packet::Publish(publish("t", QoS::AtLeastOnce, 3, "again")));
    match broker.recv(publisher).as_slice() {
        [Packet::PubAck(puback)] => assert_eq!((puback.packet_id, puback.reason), (3, ReasonCode::SUCCESS)),
        other => panic!("expected PUBACK 0x00, got {other:?}"),
    }
    assert_eq!(contents(&broker.recv_publishes(subscriber)), [("t".to_string(), "again".to_string())]);
}

#[test]
fn full_disk_closes_a_3_1_1_qos1_publisher_without_a_puback() {
    let mut broker = Broker::new(1);
    let (publisher, _) = broker.connect(connect(V311, "old-publisher", true));
    set_disk_full(&mut broker, true);
    broker.send(publisher, Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "q1")));
    assert!(broker.recv(publisher).iter().all(|packet| !matches!(packet, Packet::PubAck(_))), "no PUBACK");
    assert!(broker.is_closed(publisher), "the connection is closed, the client keeps its message");
}

#[test]
fn full_disk_answers_a_resent_qos2_publish_already_awaiting_pubrel() {
    let mut broker = Broker::new(1);
    let (publisher, _) = broker.connect(connect(V5, "resender", true));
    broker.send(publisher, Packet::Publish(publish("t", QoS::ExactlyOnce, 7, "once")));
    broker.recv(publisher);
    set_disk_full(&mut broker, true);
    let mut resend = publish("t", QoS::ExactlyOnce, 7, "once");
    resend.dup = true;
    broker.send(publisher, Packet::Publish(resend));
    match broker.recv(publisher).as_slice() {
        [Packet::PubRec(pubrec)] => assert_ne!(pubrec.reason, ReasonCode::QUOTA_EXCEEDED, "already kept"),
        other => panic!("expected a PUBREC, got {other:?}"),
    }
}
