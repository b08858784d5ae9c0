//! Publish/subscribe through `ShardCore`: QoS 0/1/2 flows, cross-shard routing, overlapping subscriptions,
//! v5 delivery options, flow control and per-receiver limits.

mod core_harness;

use std::time::Duration;

use core_harness::*;
use shardmq::broker::BrokerSettings;
use shardmq::protocol::{Packet, Properties, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Two clients on the given shards, the second subscribed to `filter`.
fn publisher_and_subscriber(
    broker: &mut Broker,
    shards: (usize, usize),
    version: ProtocolVersion,
    filter: &str,
    qos: QoS,
) -> (Client, Client) {
    let (publisher, _) = broker.connect_on(shards.0, connect(version, "pub", true));
    let (subscriber, _) = broker.connect_on(shards.1, connect(version, "sub", true));
    broker.send(subscriber, Packet::Subscribe(subscribe(1, filter, qos)));
    match broker.recv(subscriber).as_slice() {
        [Packet::SubAck(suback)] => assert_eq!(suback.reasons, vec![ReasonCode(qos as u8)]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    (publisher, subscriber)
}

#[test]
fn qos0_delivered_same_shard_for_v311_and_v5() {
    for version in [V311, V5] {
        let mut broker = Broker::new(1);
        let (publisher, subscriber) = publisher_and_subscriber(&mut broker, (0, 0), version, "a/+", QoS::AtMostOnce);
        broker.send(publisher, Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, "hello")));
        let received = broker.recv_publishes(subscriber);
        assert_eq!(contents(&received), vec![("a/b".to_string(), "hello".to_string())]);
        assert_eq!(received[0].qos, QoS::AtMostOnce);
        assert!(broker.recv(publisher).is_empty(), "QoS 0 is not acknowledged");
    }
}

#[test]
fn qos1_puback_to_publisher_and_delivery_with_packet_id_mqtt_4_3_2() {
    let mut broker = Broker::new(1);
    let (publisher, subscriber) = publisher_and_subscriber(&mut broker, (0, 0), V5, "t", QoS::AtLeastOnce);
    broker.send(publisher, Packet::Publish(publish("t", QoS::AtLeastOnce, 9, "one")));
    match broker.recv(publisher).as_slice() {
        [Packet::PubAck(ack)] => assert_eq!((ack.packet_id, ack.reason), (9, ReasonCode::SUCCESS)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let received = broker.recv_publishes(subscriber);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].qos, QoS::AtLeastOnce);
    assert_ne!(received[0].packet_id, 0);
    assert!(!received[0].dup);
    broker.send(subscriber, Packet::PubAck(ack(received[0].packet_id)));
    assert!(broker.recv(subscriber).is_empty());
}

#[test]
fn v5_puback_reports_no_matching_subscribers() {
    let mut broker = Broker::new(2);
    let (publisher, _) = broker.connect(connect(V5, "lonely", true));
    broker.send(publisher, Packet::Publish(publish("nobody/here", QoS::AtLeastOnce, 1, "x")));
    match broker.recv(publisher).as_slice() {
        [Packet::PubAck(ack)] => assert_eq!(ack.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[test]
fn delivery_qos_is_minimum_of_publish_and_subscription() {
    let mut broker = Broker::new(1);
    let (publisher, subscriber) = publisher_and_subscriber(&mut broker, (0, 0), V311, "t", QoS::AtLeastOnce);
    broker.send(publisher, Packet::Publish(publish("t", QoS::ExactlyOnce, 3, "x")));
    assert_eq!(broker.recv_publishes(subscriber)[0].qos, QoS::AtLeastOnce);
    broker.send(publisher, Packet::Publish(publish("t", QoS::AtMostOnce, 0, "y")));
    assert_eq!(broker.recv_publishes(subscriber)[0].qos, QoS::AtMostOnce);
}

#[test]
fn qos2_both_directions_and_no_duplicate_routing_mqtt_4_3_3() {
    let mut broker = Broker::new(1);
    let (publisher, subscriber) = publisher_and_subscriber(&mut broker, (0, 0), V311, "q2", QoS::ExactlyOnce);
    broker.send(publisher, Packet::Publish(publish("q2", QoS::ExactlyOnce, 5, "once")));
    assert!(matches!(broker.recv(publisher).as_slice(), [Packet::PubRec(rec)] if rec.packet_id == 5));
    // The publisher did not see our PUBREC and sends the PUBLISH again: not routed twice [MQTT-4.3.3-9].
    let mut again = publish("q2", QoS::ExactlyOnce, 5, "once");
    again.dup = true;
    broker.send(publisher, Packet::Publish(again));
    assert!(matches!(broker.recv(publisher).as_slice(), [Packet::PubRec(rec)] if rec.packet_id == 5));
    broker.send(publisher, Packet::PubRel(ack(5)));
    assert!(matches!(broker.recv(publisher).as_slice(), [Packet::PubComp(comp)] if comp.packet_id == 5));

    let received = broker.recv_publishes(subscriber);
    assert_eq!(received.len(), 1, "delivered exactly once");
    let id = received[0].packet_id;
    broker.send(subscriber, Packet::PubRec(ack(id)));
    assert!(matches!(broker.recv(subscriber).as_slice(), [Packet::PubRel(rel)] if rel.packet_id == id));
    broker.send(subscriber, Packet::PubComp(ack(id)));
    assert!(broker.recv(subscriber).is_empty());

    // After PUBREL the id is free again: the same id carries a new message.
    broker.send(publisher, Packet::Publish(publish("q2", QoS::ExactlyOnce, 5, "twice")));
    assert_eq!(contents(&broker.recv_publishes(subscriber)), vec![("q2".into(), "twice".into())]);
}

#[test]
fn pubrel_for_unknown_id_answered_with_0x92() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(connect(V5, "rel", true));
    broker.send(client, Packet::PubRel(ack(77)));
    match broker.recv(client).as_slice() {
        [Packet::PubComp(comp)] => assert_eq!(comp.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}

#[test]
fn cross_shard_publish_delivered_once_and_stops_after_unsubscribe() {
    let mut broker = Broker::new(3);
    let (publisher, subscriber) = publisher_and_subscriber(&mut broker, (0, 2), V5, "x/#", QoS::AtLeastOnce);
    let (other, _) = broker.connect_on(1, connect(V5, "other", true));
    broker.send(other, Packet::Subscribe(subscribe(1, "x/y", QoS::AtMostOnce)));
    broker.recv(other);
    broker.send(publisher, Packet::Publish(publish("x/y", QoS::AtLeastOnce, 1, "far")));
    assert_eq!(contents(&broker.recv_publishes(subscriber)), vec![("x/y".into(), "far".into())]);
    assert_eq!(contents(&broker.recv_publishes(other)), vec![("x/y".into(), "far".into())]);

    broker.send(subscriber, Packet::Unsubscribe(unsubscribe(2, "x/#")));
    match broker.recv(subscriber).as_slice() {
        [Packet::UnsubAck(unsuback)] => assert_eq!(unsuback.reasons, vec![ReasonCode::SUCCESS]),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    assert_eq!(
        broker.shards[0].gauges().interest_trie_nodes,
        2,
        "wildcard trie root + exact x/y from shard 1; x/# pruned"
    );
    broker.send(publisher, Packet::Publish(publish("x/y", QoS::AtLeastOnce, 2, "gone")));
    assert!(broker.recv_publishes(subscriber).is_empty());
    assert_eq!(broker.recv_publishes(other).len(), 1);
}

#[test]
fn unsubscribe_unknown_filter_reports_0x11() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(connect(V5, "u", true));
    broker.send(client, Packet::Unsubscribe(unsubscribe(4, "never")));
    match broker.recv(client).as_slice() {
        [Packet::UnsubAck(unsuback)] => {
            assert_eq!(unsuback.packet_id, 4);
            assert_eq!(unsuback.reasons, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]);
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

#[test]
fn overlapping_subscriptions_deliver_one_copy_with_highest_qos_and_all_ids_mqtt_3_3_4_2() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(connect(V5, "overlap", true));
    for (packet_id, filter, qos, id) in [(1, "s/#", QoS::AtMostOnce, 11), (2, "s/+", QoS::AtLeastOnce, 22)] {
        let mut request = subscribe(packet_id, filter, qos);
        request.properties.subscription_identifiers.push(id);
        broker.send(client, Packet::Subscribe(request));
    }
    broker.recv(client);
    broker.send(client, Packet::Publish(publish("s/t", QoS::ExactlyOnce, 1, "x")));
    let received = broker.recv_publishes(client);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].qos, QoS::AtLeastOnce);
    let mut ids = received[0].properties.subscription_identifiers.to_vec();
    ids.sort();
    assert_eq!(ids, vec![11, 22]);
}

#[test]
fn no_local_skips_own_messages_mqtt_3_8_3_3() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(connect(V5, "self", true));
    let mut request = subscribe(1, "echo", QoS::AtMostOnce);
    request.filters[0].1.no_local = true;
    broker.send(client, Packet::Subscribe(request));
    broker.recv(client);
    broker.send(client, Packet::Publish(publish("echo", QoS::AtMostOnce, 0, "me")));
    assert!(broker.recv_publishes(client).is_empty());
    let (other, _) = broker.connect(connect(V5, "someone", true));
    broker.send(other, Packet::Publish(publish("echo", QoS::AtMostOnce, 0, "you")));
    assert_eq!(broker.recv_publishes(client).len(), 1);
}

#[test]
fn retain_flag_cleared_on_forward_unless_retain_as_published_mqtt_3_3_1_12() {
    let mut broker = Broker::new(1);
    let (plain, _) = broker.connect(connect(V5, "plain", true));
    let (rap, _) = broker.connect(connect(V5, "rap", true));
    broker.send(plain, Packet::Subscribe(subscribe(1, "r", QoS::AtMostOnce)));
    let mut request = subscribe(1, "r", QoS::AtMostOnce);
    request.filters[0].1.retain_as_published = true;
    broker.send(rap, Packet::Subscribe(request));
    broker.recv(plain);
    broker.recv(rap);
    let mut retained = publish("r", QoS::AtMostOnce, 0, "kept");
    retained.retain = true;
    let (publisher, _) = broker.connect(connect(V5, "publisher", true));
    broker.send(publisher, Packet::Publish(retained));
    assert!(!broker.recv_publishes(plain)[0].retain);
    assert!(broker.recv_publishes(rap)[0].retain);
}

#[test]
fn dollar_topics_not_matched_by_leading_wildcard_mqtt_4_7_2_1() {
    let mut broker = Broker::new(1);
    let (publisher, subscriber) = publisher_and_subscriber(&mut broker, (0, 0), V311, "#", QoS::AtMostOnce);
    broker.send(publisher, Packet::Publish(publish("$SYS/uptime", QoS::AtMostOnce, 0, "1")));
    assert!(broker.recv_publishes(subscriber).is_empty());
    broker.send(publisher, Packet::Publish(publish("normal", QoS::AtMostOnce, 0, "1")));
    assert_eq!(broker.recv_publishes(subscriber).len(), 1);
}

#[test]
fn client_receive_maximum_limits_inflight_rest_queued_in_order_mqtt_3_3_4_9() {
    let mut broker = Broker::new(1);
    let mut request = connect(V5, "slow", true);
    request.properties.receive_maximum = Some(2);
    let (subscriber, _) = broker.connect(request);
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "n", QoS::AtLeastOnce)));
    broker.recv(subscriber);
    let (publisher, _) = broker.connect(connect(V5, "fast", true));
    for i in 1..=5u16 {
        broker.send(publisher, Packet::Publish(publish("n", QoS::AtLeastOnce, i, &i.to_string())));
    }
    let first = broker.recv_publishes(subscriber);
    assert_eq!(contents(&first).iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), vec!["1", "2"]);
    broker.send(subscriber, Packet::PubAck(ack(first[0].packet_id)));
    let next = broker.recv_publishes(subscriber);
    assert_eq!(contents(&next), vec![("n".into(), "3".into())]);
    broker.send(subscriber, Packet::PubAck(ack(first[1].packet_id)));
    broker.send(subscriber, Packet::PubAck(ack(next[0].packet_id)));
    let rest = broker.recv_publishes(subscriber);
    assert_eq!(contents(&rest).iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), vec!["4", "5"]);
}

#[test]
fn our_receive_maximum_exceeded_disconnects_0x93_mqtt_3_3_4_7() {
    let mut broker = Broker::with_settings(1, BrokerSettings { receive_maximum: 2, ..BrokerSettings::default() });
    let (client, connack) = broker.connect(connect(V5, "flood", true));
    assert_eq!(connack.properties.receive_maximum, Some(2));
    for id in 1..=2 {
        broker.send(client, Packet::Publish(publish("f", QoS::ExactlyOnce, id, "x")));
    }
    broker.recv(client);
    broker.send(client, Packet::Publish(publish("f", QoS::ExactlyOnce, 3, "x")));
    match broker.recv(client).as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
        }
        other => panic!("expected DISCONNECT 0x93, got {other:?}"),
    }
    assert!(broker.is_closed(client));
}

#[test]
fn topic_alias_from_client_set_then_used_mqtt_3_3_2_3_4() {
    let mut broker = Broker::new(1);
    let (publisher, subscriber) = publisher_and_subscriber(&mut broker, (0, 0), V5, "alias/#", QoS::AtMostOnce);
    let mut first = publish("alias/long/topic", QoS::AtMostOnce, 0, "1");
    first.properties.topic_alias = Some(3);
    broker.send(publisher, Packet::Publish(first));
    let mut second = publish("", QoS::AtMostOnce, 0, "2");
    second.properties.topic_alias = Some(3);
    broker.send(publisher, Packet::Publish(second));
    let received = broker.recv_publishes(subscriber);
    assert_eq!(
        contents(&received),
        vec![("alias/long/topic".into(), "1".into()), ("alias/long/topic".into(), "2".into())]
    );
    assert!(received.iter().all(|publish| publish.properties.topic_alias.is_none()), "aliases are per hop");
}

#[test]
fn topic_alias_zero_or_over_maximum_disconnects_0x94_mqtt_3_3_2_8() {
    for alias in [0u16, 11] {
        let mut broker = Broker::new(1);
        let (client, _) = broker.connect(connect(V5, "alias", true));
        let mut request = publish("t", QoS::AtMostOnce, 0, "x");
        request.properties.topic_alias = Some(alias);
        broker.send(client, Packet::Publish(request));
        match broker.recv(client).as_slice() {
            [Packet::Disconnect(disconnect)] => {
                assert_eq!(disconnect.reason, ReasonCode::TOPIC_ALIAS_INVALID)
            }
            other => panic!("alias {alias}: expected DISCONNECT 0x94, got {other:?}"),
        }
    }
}

#[test]
fn payload_format_utf8_with_invalid_payload_refused_0x99() {
    let mut broker = Broker::new(1);
    let (publisher, subscriber) = publisher_and_subscriber(&mut broker, (0, 0), V5, "text", QoS::AtLeastOnce);
    let mut request = publish("text", QoS::AtLeastOnce, 4, "");
    request.payload = bytes::Bytes::from_static(&[0xff, 0xfe]);
    request.properties.payload_format_indicator = Some(1);
    broker.send(publisher, Packet::Publish(request));
    match broker.recv(publisher).as_slice() {
        [Packet::PubAck(ack)] => assert_eq!(ack.reason, ReasonCode::PAYLOAD_FORMAT_INVALID),
        other => panic!("expected PUBACK 0x99, got {other:?}"),
    }
    assert!(broker.recv_publishes(subscriber).is_empty());
}

#[test]
fn v5_properties_forwarded_untouched() {
    let mut broker = Broker::new(2);
    let (publisher, subscriber) = publisher_and_subscriber(&mut broker, (0, 1), V5, "req", QoS::AtMostOnce);
    let mut request = publish("req", QoS::AtMostOnce, 0, "{}");
    request.properties = Properties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("reply/to".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr")),
        user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        ..Properties::default()
    };
    broker.send(publisher, Packet::Publish(request.clone()));
    let received = broker.recv_publishes(subscriber);
    assert_eq!(received[0].properties, request.properties);
}

#[test]
fn message_too_large_for_client_maximum_packet_size_is_dropped_and_counted() {
    let mut broker = Broker::new(1);
    let mut request = connect(V5, "small", true);
    request.properties.maximum_packet_size = Some(64);
    let (subscriber, _) = broker.connect(request);
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "big", QoS::AtMostOnce)));
    broker.recv(subscriber);
    let (publisher, _) = broker.connect(connect(V5, "pub", true));
    broker.send(publisher, Packet::Publish(publish("big", QoS::AtMostOnce, 0, &"x".repeat(100))));
    broker.send(publisher, Packet::Publish(publish("big", QoS::AtMostOnce, 0, "small")));
    assert_eq!(contents(&broker.recv_publishes(subscriber)), vec![("big".into(), "small".into())]);
    assert_eq!(broker.shards[0].stats().dropped_too_large, 1);
}

#[test]
fn message_expiry_forwards_remaining_interval_and_drops_expired_mqtt_3_3_2_5() {
    let mut broker = Broker::new(1);
    let mut request = connect(V5, "late", false);
    request.properties.session_expiry_interval_secs = Some(600);
    let (subscriber, _) = broker.connect(request.clone());
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "exp", QoS::AtLeastOnce)));
    broker.lose(subscriber);
    let (publisher, _) = broker.connect(connect(V5, "pub", true));
    for (payload, secs) in [("short", 5), ("long", 100)] {
        let mut message = publish("exp", QoS::AtLeastOnce, 1, payload);
        message.properties.message_expiry_interval_secs = Some(secs);
        broker.send(publisher, Packet::Publish(message));
    }
    broker.advance(Duration::from_secs(10));
    let (subscriber, connack) = broker.connect(request);
    assert!(connack.session_present);
    let received = broker.recv_publishes(subscriber);
    assert_eq!(contents(&received), vec![("exp".into(), "long".into())]);
    assert_eq!(received[0].properties.message_expiry_interval_secs, Some(90));
    assert_eq!(broker.shards[0].stats().dropped_expired, 1);
}

#[test]
fn suback_reason_codes_per_filter() {
    let settings = BrokerSettings { qos_max: 1, shared_subscriptions_available: false, ..BrokerSettings::default() };
    let mut broker = Broker::with_settings(1, settings);
    let (v5, _) = broker.connect(connect(V5, "codes5", true));
    let mut request = subscribe(1, "ok", QoS::ExactlyOnce);
    request.filters.push(("$share/g/t".into(), SubscriptionOptions::default()));
    broker.send(v5, Packet::Subscribe(request.clone()));
    match broker.recv(v5).as_slice() {
        [Packet::SubAck(suback)] => {
            assert_eq!(suback.reasons, vec![ReasonCode::GRANTED_QOS_1, ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED])
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let (v3, _) = broker.connect(connect(V311, "codes3", true));
    broker.send(v3, Packet::Subscribe(request));
    match broker.recv(v3).as_slice() {
        [Packet::SubAck(suback)] => {
            assert_eq!(suback.reasons, vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR])
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[test]
fn v311_subscriber_gets_v5_message_without_properties() {
    let mut broker = Broker::new(1);
    let (publisher, _) = broker.connect(connect(V5, "p5", true));
    let (subscriber, _) = broker.connect(connect(V311, "s3", true));
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "mix", QoS::AtMostOnce)));
    broker.recv(subscriber);
    let mut message = publish("mix", QoS::AtMostOnce, 0, "hi");
    message.properties.user_properties.push(("k".into(), "v".into()));
    broker.send(publisher, Packet::Publish(message));
    let received = broker.recv_publishes(subscriber);
    assert_eq!(contents(&received), vec![("mix".into(), "hi".into())]);
    assert!(received[0].properties.is_empty());
}

#[test]
fn qos0_fanout_with_shared_headers_decodes_for_each_protocol_family() {
    let mut broker = Broker::new(1);
    let mut receivers = Vec::new();
    for (i, version) in [V311, V311, V5, V5].into_iter().enumerate() {
        let (client, _) = broker.connect(connect(version, &format!("r{i}"), true));
        broker.send(client, Packet::Subscribe(subscribe(1, "fan", QoS::AtMostOnce)));
        broker.recv(client);
        receivers.push(client);
    }
    let (publisher, _) = broker.connect(connect(V5, "source", true));
    broker.send(publisher, Packet::Publish(publish("fan", QoS::AtMostOnce, 0, "shared")));
    for client in &receivers {
        assert_eq!(contents(&broker.recv_publishes(*client)), vec![("fan".into(), "shared".into())]);
    }
}

#[test]
fn server_sends_topic_alias_when_client_allows_and_topic_only_once() {
    let mut broker = Broker::new(1);
    let mut request = connect(V5, "aliased", true);
    request.properties.topic_alias_maximum = Some(1);
    let (subscriber, _) = broker.connect(request);
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "al/#", QoS::AtMostOnce)));
    broker.recv(subscriber);
    let (publisher, _) = broker.connect(connect(V5, "p", true));
    for topic in ["al/one", "al/one", "al/two", "al/one"] {
        broker.send(publisher, Packet::Publish(publish(topic, QoS::AtMostOnce, 0, "x")));
    }
    let received: Vec<(String, Option<u16>)> = broker
        .recv_publishes(subscriber)
        .iter()
        .map(|publish| (publish.topic.to_string(), publish.properties.topic_alias))
        .collect();
    let expected = [("al/one", Some(1)), ("", Some(1)), ("al/two", Some(1)), ("al/one", Some(1))];
    assert_eq!(received, expected.map(|(topic, alias)| (topic.to_string(), alias)).to_vec());
}

#[test]
fn suback_waits_until_other_shards_know_the_subscription_mqtt_3_8_4() {
    let mut broker = Broker::new(2);
    let (subscriber, _) = broker.connect_on(1, connect(V311, "sub", true));
    let (publisher, _) = broker.connect_on(0, connect(V311, "pub", true));
    broker.pause_mesh(true);
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "fresh", QoS::AtLeastOnce)));
    assert!(broker.recv(subscriber).is_empty(), "no SUBACK while shard 0 has not applied the interest");
    broker.send(subscriber, Packet::Subscribe(subscribe(2, "local/only", QoS::AtMostOnce)));
    assert!(broker.recv(subscriber).is_empty(), "later SUBACKs stay behind the held one");
    broker.pause_mesh(false);
    let packet_ids: Vec<u16> = broker
        .recv(subscriber)
        .iter()
        .filter_map(|packet| match packet {
            Packet::SubAck(suback) => Some(suback.packet_id),
            _ => None,
        })
        .collect();
    assert_eq!(packet_ids, vec![1, 2]);
    broker.send(publisher, Packet::Publish(publish("fresh", QoS::AtLeastOnce, 1, "now")));
    assert_eq!(broker.recv_publishes(subscriber).len(), 1);
}
