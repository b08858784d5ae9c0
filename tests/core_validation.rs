//! `[[validation]]` rules in the core: a PUBLISH failing a rule is rejected (v5 0x99 with the rule in the
//! Reason String; 3.1.1 acknowledged and dropped), diverted (to a topic built from its levels, retain off,
//! `shardmq-rejected-by` user property) or ends the connection (v5 DISCONNECT 0x99), on the publishing
//! shard; a message no rule matches is routed untouched. Counted per rule.

mod core_harness;

use std::sync::Arc;

use core_harness::*;
use shardmq::broker::BrokerSettings;
use shardmq::protocol::{ByteStr, Packet, ProtocolVersion, QoS, ReasonCode};
use shardmq::validation::{OnInvalid, RuleSet, ValidationRule};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Rule 0 on `chat/messages/+/+`: payloads over 8 bytes fail, with the given action (divert goes to
/// `chat/messages/{2}/{3}/rejected`). Rule 1: `chat/messages/#` payloads must be JSON, rejected.
fn chat_rules(on_invalid: OnInvalid) -> Arc<RuleSet> {
    let divert_to = (on_invalid == OnInvalid::Divert).then(|| "chat/messages/{2}/{3}/rejected".to_string());
    let rules = [
        ValidationRule {
            filter: "chat/messages/+/+".into(),
            name: Some("short-messages".into()),
            max_payload_bytes: Some(8),
            on_invalid,
            divert_to,
            ..ValidationRule::default()
        },
        ValidationRule { filter: "chat/messages/#".into(), require_json: Some(true), ..ValidationRule::default() },
    ];
    Arc::new(RuleSet::compile(&rules).expect("rules compile"))
}

fn broker_with(shards: usize, rules: Arc<RuleSet>) -> Broker {
    Broker::with_settings(shards, BrokerSettings { validation_rules: Some(rules), ..BrokerSettings::default() })
}

/// A publisher on shard `shards.0` and a subscriber to `filter` on shard `shards.1`.
fn pair(broker: &mut Broker, version: ProtocolVersion, shards: (usize, usize), filter: &str) -> (Client, Client) {
    let (publisher, _) = broker.connect_on(shards.0, connect(version, "alice", true));
    let (subscriber, _) = broker.connect_on(shards.1, connect(version, "room", true));
    broker.send(subscriber, Packet::Subscribe(subscribe(1, filter, QoS::ExactlyOnce)));
    assert!(matches!(broker.recv(subscriber).as_slice(), [Packet::SubAck(_)]));
    (publisher, subscriber)
}

const TOPIC: &str = "chat/messages/lobby/alice";
const TOO_LONG: &str = "\"far too long\"";

#[test]
fn clean_message_is_routed_and_nothing_is_counted() {
    for version in [V311, V5] {
        let mut broker = broker_with(2, chat_rules(OnInvalid::Reject));
        let (publisher, subscriber) = pair(&mut broker, version, (0, 1), "chat/#");
        broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtLeastOnce, 1, "\"hi\"")));
        assert!(
            matches!(broker.recv(publisher).as_slice(), [Packet::PubAck(ack)] if ack.reason == ReasonCode::SUCCESS)
        );
        assert_eq!(contents(&broker.recv_publishes(subscriber)), vec![(TOPIC.to_string(), "\"hi\"".to_string())]);
        assert_eq!(broker.shards[0].stats().validation_failures, vec![0, 0]);
    }
}

#[test]
fn v5_reject_answers_0x99_with_the_rule_in_the_reason_string() {
    let mut broker = broker_with(1, chat_rules(OnInvalid::Reject));
    let (publisher, subscriber) = pair(&mut broker, V5, (0, 0), "chat/#");
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtLeastOnce, 7, TOO_LONG)));
    match broker.recv(publisher).as_slice() {
        [Packet::PubAck(ack)] => {
            assert_eq!((ack.packet_id, ack.reason), (7, ReasonCode::PAYLOAD_FORMAT_INVALID));
            let text = ack.properties.reason_string.as_deref().expect("reason string");
            assert!(text.contains("short-messages") && text.contains("over 8"), "{text}");
        }
        other => panic!("expected PUBACK 0x99, got {other:?}"),
    }
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::ExactlyOnce, 8, "not json")));
    match broker.recv(publisher).as_slice() {
        [Packet::PubRec(rec)] => {
            assert_eq!((rec.packet_id, rec.reason), (8, ReasonCode::PAYLOAD_FORMAT_INVALID));
            let text = rec.properties.reason_string.as_deref().expect("reason string");
            assert!(text.contains("1:chat/messages/#") && text.contains("not JSON"), "{text}");
        }
        other => panic!("expected PUBREC 0x99, got {other:?}"),
    }
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtMostOnce, 0, TOO_LONG)));
    assert!(broker.recv(publisher).is_empty(), "QoS 0: dropped without a word");
    assert!(!broker.is_closed(publisher));
    assert!(broker.recv_publishes(subscriber).is_empty(), "nothing rejected was routed");
    assert_eq!(broker.shards[0].stats().validation_failures, vec![2, 1]);
}

#[test]
fn v5_reject_has_no_reason_string_when_problem_information_is_off_mqtt_3_1_2_29() {
    let mut broker = broker_with(1, chat_rules(OnInvalid::Reject));
    let mut quiet = connect(V5, "quiet", true);
    quiet.properties.request_problem_information = Some(0);
    let (publisher, _) = broker.connect_on(0, quiet);
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtLeastOnce, 3, TOO_LONG)));
    match broker.recv(publisher).as_slice() {
        [Packet::PubAck(ack)] => {
            assert_eq!(ack.reason, ReasonCode::PAYLOAD_FORMAT_INVALID);
            assert_eq!(ack.properties.reason_string, None);
        }
        other => panic!("expected PUBACK 0x99, got {other:?}"),
    }
}

#[test]
fn v311_reject_acknowledges_and_drops() {
    let mut broker = broker_with(2, chat_rules(OnInvalid::Reject));
    let (publisher, subscriber) = pair(&mut broker, V311, (0, 1), "chat/#");
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtLeastOnce, 4, TOO_LONG)));
    assert!(matches!(broker.recv(publisher).as_slice(), [Packet::PubAck(ack)] if ack.packet_id == 4));
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::ExactlyOnce, 5, TOO_LONG)));
    assert!(matches!(broker.recv(publisher).as_slice(), [Packet::PubRec(rec)] if rec.packet_id == 5));
    broker.send(publisher, Packet::PubRel(ack(5)));
    assert!(matches!(broker.recv(publisher).as_slice(), [Packet::PubComp(comp)] if comp.packet_id == 5));
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtMostOnce, 0, TOO_LONG)));
    assert!(broker.recv(publisher).is_empty());
    assert!(!broker.is_closed(publisher));
    assert!(broker.recv_publishes(subscriber).is_empty());
    assert_eq!(broker.shards[0].stats().validation_failures, vec![3, 0], "counted on the publishing shard");
    assert_eq!(broker.shards[1].stats().validation_failures, vec![0, 0]);
}

#[test]
fn divert_publishes_to_the_senders_rejected_topic_with_the_rule_named_for_v5() {
    let mut broker = broker_with(2, chat_rules(OnInvalid::Divert));
    let (publisher, room) = pair(&mut broker, V5, (0, 1), "chat/messages/+/+");
    let (watcher, _) = broker.connect_on(1, connect(V5, "alice-watch", true));
    broker.send(watcher, Packet::Subscribe(subscribe(1, "chat/messages/lobby/alice/rejected", QoS::AtLeastOnce)));
    broker.recv(watcher);
    let mut message = publish(TOPIC, QoS::AtLeastOnce, 9, TOO_LONG);
    message.retain = true;
    message.properties.content_type = Some(ByteStr::from("application/json"));
    broker.send(publisher, Packet::Publish(message));
    assert!(matches!(broker.recv(publisher).as_slice(), [Packet::PubAck(ack)] if ack.reason == ReasonCode::SUCCESS));
    assert!(broker.recv_publishes(room).is_empty(), "the room does not see it");
    let diverted = broker.recv_publishes(watcher);
    assert_eq!(contents(&diverted), vec![("chat/messages/lobby/alice/rejected".to_string(), TOO_LONG.to_string())]);
    assert!(!diverted[0].retain, "a diverted message is never retained");
    assert_eq!(diverted[0].qos, QoS::AtLeastOnce);
    assert_eq!(diverted[0].properties.content_type.as_deref(), Some("application/json"));
    let properties: Vec<(&str, &str)> =
        diverted[0].properties.user_properties.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    assert_eq!(properties[0], ("shardmq-rejected-by", "short-messages"));
    assert_eq!(properties[1].0, "shardmq-rejection-reason");
    assert!(properties[1].1.contains("over 8"), "{properties:?}");
    // Rule 1 (reject) still applies to messages that pass rule 0.
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtLeastOnce, 10, "short")));
    assert!(
        matches!(broker.recv(publisher).as_slice(), [Packet::PubAck(ack)] if ack.reason == ReasonCode::PAYLOAD_FORMAT_INVALID)
    );
    assert_eq!(broker.shards[0].stats().validation_failures, vec![1, 1]);
}

#[test]
fn divert_reaches_a_v311_subscriber_and_qos2_completes() {
    let mut broker = broker_with(1, chat_rules(OnInvalid::Divert));
    let (publisher, watcher) = pair(&mut broker, V311, (0, 0), "chat/messages/+/+/rejected");
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::ExactlyOnce, 2, TOO_LONG)));
    assert!(matches!(broker.recv(publisher).as_slice(), [Packet::PubRec(rec)] if rec.packet_id == 2));
    broker.send(publisher, Packet::PubRel(ack(2)));
    assert!(matches!(broker.recv(publisher).as_slice(), [Packet::PubComp(comp)] if comp.reason == ReasonCode::SUCCESS));
    let diverted = broker.recv_publishes(watcher);
    assert_eq!(contents(&diverted), vec![("chat/messages/lobby/alice/rejected".to_string(), TOO_LONG.to_string())]);
    assert_eq!(diverted[0].qos, QoS::ExactlyOnce);
}

#[test]
fn disconnect_closes_v5_with_0x99_and_v311_without_a_word() {
    let mut broker = broker_with(1, chat_rules(OnInvalid::Disconnect));
    let (publisher, subscriber) = pair(&mut broker, V5, (0, 0), "chat/#");
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtMostOnce, 0, TOO_LONG)));
    match broker.recv(publisher).as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::PAYLOAD_FORMAT_INVALID);
            assert!(disconnect.properties.reason_string.as_deref().is_some_and(|text| text.contains("short-messages")));
        }
        other => panic!("expected DISCONNECT 0x99, got {other:?}"),
    }
    assert!(broker.is_closed(publisher));
    assert!(broker.recv_publishes(subscriber).is_empty());

    let mut broker = broker_with(1, chat_rules(OnInvalid::Disconnect));
    let (publisher, subscriber) = pair(&mut broker, V311, (0, 0), "chat/#");
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtLeastOnce, 1, TOO_LONG)));
    assert!(broker.recv(publisher).is_empty(), "3.1.1 has no server DISCONNECT, and no PUBACK is due");
    assert!(broker.is_closed(publisher));
    assert!(broker.recv_publishes(subscriber).is_empty());
}

#[test]
fn topics_no_rule_matches_and_brokers_without_rules_route_untouched() {
    let mut broker = broker_with(1, chat_rules(OnInvalid::Disconnect));
    let (publisher, subscriber) = pair(&mut broker, V5, (0, 0), "#");
    broker.send(publisher, Packet::Publish(publish("chat/other", QoS::AtMostOnce, 0, TOO_LONG)));
    assert_eq!(broker.recv_publishes(subscriber).len(), 1);
    assert!(!broker.is_closed(publisher));

    let mut broker = Broker::new(1);
    assert!(broker.shards[0].validation().is_none());
    assert!(broker.shards[0].stats().validation_failures.is_empty());
    let (publisher, subscriber) = pair(&mut broker, V5, (0, 0), "#");
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtMostOnce, 0, TOO_LONG)));
    assert_eq!(broker.recv_publishes(subscriber).len(), 1);
}

#[test]
fn set_validation_swaps_the_rules_and_restarts_the_counts() {
    let mut broker = broker_with(1, chat_rules(OnInvalid::Reject));
    let (publisher, subscriber) = pair(&mut broker, V5, (0, 0), "chat/#");
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtMostOnce, 0, TOO_LONG)));
    assert_eq!(broker.shards[0].stats().validation_failures, vec![1, 0]);
    let looser = ValidationRule { filter: "chat/#".into(), max_payload_bytes: Some(100), ..ValidationRule::default() };
    broker.shards[0].set_validation(Some(Arc::new(RuleSet::compile(&[looser]).expect("compiles"))));
    assert_eq!(broker.shards[0].stats().validation_failures, vec![0]);
    broker.send(publisher, Packet::Publish(publish(TOPIC, QoS::AtMostOnce, 0, TOO_LONG)));
    assert_eq!(broker.recv_publishes(subscriber).len(), 1);
    broker.shards[0].set_validation(Some(Arc::new(RuleSet::compile(&[]).expect("empty compiles"))));
    assert!(broker.shards[0].validation().is_none(), "an empty set turns validation off");
}
