//! `broker::Refusal`, the one type every refusal goes through: the CONNACK, SUBACK and DISCONNECT a client
//! gets carry the variant's reason code and its rule as the v5 Reason String, so tests (and anyone reading
//! the logs) name the variant, not a copy of its text.

mod core_harness;

use core_harness::{connect, publish, subscribe, Broker};
use shardmq::broker::{BrokerSettings, Refusal};
use shardmq::protocol::{Packet, ProtocolVersion, QoS};

fn reason_string(text: &Option<shardmq::protocol::ByteStr>) -> Option<&str> {
    text.as_deref()
}

#[test]
fn an_empty_client_id_without_clean_start_is_refused_with_the_rules_connack_mqtt_3_1_3_8() {
    let mut broker = Broker::new(1);
    let (_, connack) = broker.connect(connect(ProtocolVersion::V3_1_1, "", false));
    // 3.1.1 knows only return codes: 0x85 is sent as 2, Identifier rejected.
    let refusal = Refusal::ClientIdEmptyWithoutCleanSession;
    assert_eq!(connack.reason.to_v3_connack_return_code(), 2);
    assert_eq!(connack.reason.to_v3_connack_return_code(), refusal.reason().to_v3_connack_return_code());
}

#[test]
fn a_too_long_client_id_gets_connack_0x85_naming_client_id_length_max_bytes() {
    let settings = BrokerSettings { client_id_length_max_bytes: 4, ..BrokerSettings::default() };
    let mut broker = Broker::with_settings(1, settings);
    let (client, connack) = broker.connect(connect(ProtocolVersion::V5, "far-too-long", true));
    let refusal = Refusal::ClientIdTooLong;
    assert_eq!(connack.reason, refusal.reason());
    assert_eq!(reason_string(&connack.properties.reason_string), Some(refusal.rule()));
    assert!(broker.is_closed(client));
}

#[test]
fn a_second_connect_is_a_disconnect_with_the_rule_mqtt_3_1_0_2() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(connect(ProtocolVersion::V5, "twice", true));
    broker.send(client, Packet::Connect(Box::new(connect(ProtocolVersion::V5, "twice", true))));
    let refusal = Refusal::SecondConnect;
    match broker.recv(client).as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, refusal.reason());
            assert_eq!(reason_string(&disconnect.properties.reason_string), Some(refusal.rule()));
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(broker.is_closed(client));
}

#[test]
fn a_topic_alias_above_our_maximum_is_a_disconnect_0x94_mqtt_3_3_2_8() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(connect(ProtocolVersion::V5, "aliaser", true));
    let mut aliased = publish("a", QoS::AtMostOnce, 0, "x");
    aliased.properties.topic_alias = Some(u16::MAX);
    broker.send(client, Packet::Publish(aliased));
    let refusal = Refusal::TopicAliasInvalid;
    match broker.recv(client).as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason.0, 0x94);
            assert_eq!(disconnect.reason, refusal.reason());
            assert_eq!(reason_string(&disconnect.properties.reason_string), Some(refusal.rule()));
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

#[test]
fn a_refused_filter_gets_its_refusals_reason_code_and_rule_in_the_suback_mqtt_3_8_4_6() {
    let settings = BrokerSettings { shared_subscriptions_available: false, ..BrokerSettings::default() };
    let mut broker = Broker::with_settings(1, settings);
    let (client, _) = broker.connect(connect(ProtocolVersion::V5, "sharer", true));
    broker.send(client, Packet::Subscribe(subscribe(1, "$share/g/t", QoS::AtLeastOnce)));
    let refusal = Refusal::SharedSubscriptionsUnavailable;
    match broker.recv(client).as_slice() {
        [Packet::SubAck(suback)] => {
            assert_eq!(suback.reasons, vec![refusal.reason()]);
            assert_eq!(reason_string(&suback.properties.reason_string), Some(refusal.rule()));
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}
