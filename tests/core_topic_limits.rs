//! `[mqtt] topic_length_max_bytes` and `topic_levels_max`: a SUBSCRIBE filter over them gets 0x8F in its
//! SUBACK (3.1.1: 0x80) and the other filters are granted [MQTT-3.8.4-6]; a PUBLISH topic over them closes
//! a v5 client with DISCONNECT 0x90 Topic Name Invalid. Each refusal is counted in `CoreStats`.

mod core_harness;

use core_harness::{connect, publish, subscribe, Broker};
use shardmq::broker::BrokerSettings;
use shardmq::protocol::{Packet, ProtocolVersion, QoS, SubAck};

fn broker() -> Broker {
    Broker::with_settings(
        1,
        BrokerSettings { topic_length_max_bytes: 40, topic_levels_max: 4, ..BrokerSettings::default() },
    )
}

fn suback_reasons(packets: Vec<Packet>) -> Vec<u8> {
    match packets.as_slice() {
        [Packet::SubAck(SubAck { reasons, .. })] => reasons.iter().map(|reason| reason.0).collect(),
        other => panic!("expected one SUBACK, got {other:?}"),
    }
}

#[test]
fn filters_deeper_than_topic_levels_max_or_longer_than_topic_length_max_bytes_are_refused_per_filter_mqtt_3_8_4_6() {
    for (version, refused) in [(ProtocolVersion::V5, 0x8F), (ProtocolVersion::V3_1_1, 0x80)] {
        let mut broker = broker();
        let (client, _) = broker.connect(connect(version, "deep-subscriber", true));
        for (filter, expected) in [("a/b/c/d", 1), ("a/b/c/d/e", refused), ("x".repeat(41).as_str(), refused)] {
            broker.send(client, Packet::Subscribe(subscribe(1, filter, QoS::AtLeastOnce)));
            assert_eq!(suback_reasons(broker.recv(client)), vec![expected], "{version:?} {filter}");
        }
        assert_eq!(broker.shards[0].stats().refused_topic_limits, 2);
    }
}

#[test]
fn a_publish_deeper_than_topic_levels_max_closes_a_v5_client_with_0x90() {
    let mut broker = broker();
    let (client, _) = broker.connect(connect(ProtocolVersion::V5, "deep-publisher", true));
    broker.send(client, Packet::Publish(publish("a/b/c/d", QoS::AtLeastOnce, 1, "fits")));
    assert!(matches!(broker.recv(client).as_slice(), [Packet::PubAck(_)]));
    broker.send(client, Packet::Publish(publish("a/b/c/d/e", QoS::AtLeastOnce, 2, "too deep")));
    let packets = broker.recv(client);
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(disconnect)] if disconnect.reason.0 == 0x90),
        "{packets:?}"
    );
    assert!(broker.is_closed(client));
    assert_eq!(broker.shards[0].stats().refused_topic_limits, 1);
}
