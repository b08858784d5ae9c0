//! MQTT 5 features with a real v5 client (rumqttc) and raw bytes where a client library will not misbehave:
//! topic aliases, subscription identifiers, No Local, Retain As Published, Retain Handling, Receive
//! Maximum, the client's Maximum Packet Size, request/response and user properties, Payload Format
//! Indicator, message expiry, CONNACK announcements, enhanced authentication.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Filter, PublishProperties, RetainForwardRule, SubscribeProperties};
use rumqttc::v5::mqttbytes::QoS;
use shardmq::protocol::Packet;
use support::raw::{self, Level, PacketFields, RawClient};
use support::v5::{self, user_properties, V5Client};
use support::{unique, Broker, BrokerLimits};

async fn client(broker: &Broker, prefix: &str) -> V5Client {
    V5Client::connect(v5::options(broker.port(), &unique(prefix))).await
}

async fn raw_client(broker: &Broker, connect_properties: &[u8]) -> RawClient {
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.handshake(&raw::connect_with(5, &unique("raw"), true, 30, None, connect_properties)).await;
    client
}

fn properties() -> PublishProperties {
    PublishProperties::default()
}

// ---- Topic aliases ----

#[tokio::test]
async fn topic_alias_from_client_stands_for_its_topic__mqtt_3_3_2_12() {
    let broker = Broker::start();
    let topic = unique("aliased");
    let mut subscriber = client(&broker, "sub").await;
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    let alias = |n| PublishProperties { topic_alias: Some(n), ..properties() };
    publisher.publish_with(&topic, QoS::AtLeastOnce, false, "sets alias", Some(alias(1))).await;
    publisher.publish_with("", QoS::AtLeastOnce, false, "uses alias", Some(alias(1))).await;
    for payload in ["sets alias", "uses alias"] {
        let message = subscriber.next_publish().await;
        assert_eq!(message.topic, topic.as_bytes());
        assert_eq!(message.payload, payload.as_bytes());
    }
}

#[tokio::test]
async fn topic_alias_0_is_a_protocol_error_0x94__mqtt_3_3_2_8() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto answers alias 0 with 0x81 Malformed Packet instead of 0x94") {
        return;
    }
    let mut client = raw_client(&broker, &[]).await;
    client.send(&raw::publish_with(Level::V5, b"a/b", 0, false, 0, &[0x23, 0, 0], b"x")).await;
    client.expect_disconnect_and_close(0x94).await;
}

#[tokio::test]
async fn topic_alias_over_server_maximum_is_refused_0x94__mqtt_3_3_2_9() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let connack = client.handshake(&raw::connect(Level::V5, &unique("c"), true, 30, None)).await;
    let Packet::ConnAck(connack) = connack else { unreachable!("handshake returns CONNACK") };
    let over = connack.properties.topic_alias_maximum.unwrap_or(0) + 1;
    let alias = [0x23, (over >> 8) as u8, over as u8];
    client.send(&raw::publish_with(Level::V5, b"a/b", 0, false, 0, &alias, b"x")).await;
    client.expect_disconnect_and_close(0x94).await;
}

#[tokio::test]
async fn unknown_topic_alias_with_empty_topic_is_a_protocol_error__mqtt_3_3_4_1() {
    let broker = Broker::start();
    let mut client = raw_client(&broker, &[]).await;
    client.send(&raw::publish_with(Level::V5, b"", 0, false, 0, &[0x23, 0, 1], b"x")).await;
    client.expect_disconnect_and_close(0x82).await;
}

#[tokio::test]
async fn no_server_topic_alias_when_client_allows_none__mqtt_3_3_2_10() {
    let broker = Broker::start();
    let topic = unique("no-alias");
    let mut subscriber = raw_client(&broker, &[]).await;
    subscriber.send(&raw::subscribe(Level::V5, 1, &[(&topic, 0)])).await;
    subscriber.expect_packet().await;
    let mut publisher = client(&broker, "pub").await;
    for _ in 0..3 {
        publisher.publish(&topic, QoS::AtLeastOnce, false, "x").await;
        let Packet::Publish(publish) = subscriber.expect_packet().await else { panic!("expected PUBLISH") };
        assert_eq!(publish.topic.to_string(), topic);
        assert_eq!(publish.properties.topic_alias, None, "client's Topic Alias Maximum is 0");
    }
}

#[tokio::test]
async fn server_uses_topic_alias_when_client_allows__mqtt_3_3_2_11() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto never sends topic aliases") {
        return;
    }
    let topic = unique("server-alias");
    let mut subscriber = raw_client(&broker, &[0x22, 0, 5]).await; // Topic Alias Maximum 5
    subscriber.send(&raw::subscribe(Level::V5, 1, &[(&topic, 0)])).await;
    subscriber.expect_packet().await;
    let mut publisher = client(&broker, "pub").await;
    let mut alias_seen = None;
    for i in 0..3 {
        publisher.publish(&topic, QoS::AtLeastOnce, false, "x").await;
        let Packet::Publish(publish) = subscriber.expect_packet().await else { panic!("expected PUBLISH") };
        let alias = publish.properties.topic_alias.expect("an alias once the client allows them");
        assert!((1..=5).contains(&alias));
        if i > 0 {
            assert!(publish.topic.is_empty(), "repeat deliveries use the alias alone");
            assert_eq!(Some(alias), alias_seen);
        }
        alias_seen = Some(alias);
    }
}

#[tokio::test]
async fn server_topic_aliases_start_afresh_on_a_new_connection__mqtt_3_3_2_3_4() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto never sends topic aliases") {
        return;
    }
    let topic = unique("alias-reset");
    let id = unique("resumer");
    // Clean Start 0, Session Expiry 60 s, Topic Alias Maximum 5.
    let connect = raw::connect_with(5, &id, false, 30, None, &[0x11, 0, 0, 0, 60, 0x22, 0, 5]);
    let mut publisher = client(&broker, "pub").await;
    for connection in 0..2 {
        let mut subscriber = RawClient::connect(broker.port(), Level::V5).await;
        subscriber.handshake(&connect).await;
        if connection == 0 {
            subscriber.send(&raw::subscribe(Level::V5, 1, &[(&topic, 0)])).await;
            subscriber.expect_packet().await;
        }
        for i in 0..2 {
            publisher.publish(&topic, QoS::AtLeastOnce, false, "x").await;
            let Packet::Publish(publish) = subscriber.expect_packet().await else { panic!("expected PUBLISH") };
            assert!(publish.properties.topic_alias.is_some(), "connection {connection}: aliases allowed");
            assert_eq!(
                publish.topic.is_empty(),
                i > 0,
                "connection {connection}, message {i}: the first carries the topic"
            );
        }
        subscriber.send(&raw::disconnect(Level::V5, 0)).await;
        subscriber.expect_closed().await;
    }
}

/// More topics than the client allows aliases: the broker reuses its aliases (least recently used) and a
/// receiver that keeps the alias map the spec describes always resolves the right topic.
#[tokio::test]
async fn server_topic_aliases_reused_within_the_client_maximum__mqtt_3_3_2_10() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto never sends topic aliases") {
        return;
    }
    let root = unique("alias-lru");
    let mut subscriber = raw_client(&broker, &[0x22, 0, 2]).await; // Topic Alias Maximum 2
    subscriber.send(&raw::subscribe(Level::V5, 1, &[(&format!("{root}/#"), 0)])).await;
    subscriber.expect_packet().await;
    let mut publisher = client(&broker, "pub").await;
    let sent: Vec<String> = "abcabcaabcbba".chars().map(|level| format!("{root}/{level}")).collect();
    let mut aliases: std::collections::HashMap<u16, String> = std::collections::HashMap::new();
    for topic in &sent {
        publisher.publish(topic, QoS::AtLeastOnce, false, "x").await;
        let Packet::Publish(publish) = subscriber.expect_packet().await else { panic!("expected PUBLISH") };
        let resolved = match publish.properties.topic_alias {
            None => publish.topic.to_string(),
            Some(alias) => {
                assert!((1..=2).contains(&alias), "alias {alias} over the client's maximum [MQTT-3.3.2-10]");
                if !publish.topic.is_empty() {
                    aliases.insert(alias, publish.topic.to_string());
                }
                aliases.get(&alias).cloned().expect("an alias is set before it is used alone")
            }
        };
        assert_eq!(&resolved, topic);
    }
}

// ---- Subscription options and identifiers ----

#[tokio::test]
async fn subscription_identifier_sent_with_matching_messages__mqtt_3_3_4_6() {
    let broker = Broker::start();
    let root = unique("subid");
    let mut subscriber = client(&broker, "sub").await;
    let with_id = |id| Some(SubscribeProperties { id: Some(id), user_properties: vec![] });
    subscriber.subscribe_with(vec![Filter::new(format!("{root}/a/+"), QoS::AtLeastOnce)], with_id(7)).await;
    subscriber.subscribe_with(vec![Filter::new(format!("{root}/#"), QoS::AtLeastOnce)], with_id(300)).await;
    let mut publisher = client(&broker, "pub").await;
    publisher.publish(&format!("{root}/b"), QoS::AtLeastOnce, false, "one match").await;
    let message = subscriber.next_publish().await;
    assert_eq!(message.properties.expect("properties").subscription_identifiers, vec![300]);

    publisher.publish(&format!("{root}/a/x"), QoS::AtLeastOnce, false, "two matches").await;
    // One copy with both identifiers, or one copy per subscription with its own [MQTT-3.3.4-3..5].
    let mut ids = subscriber.next_publish().await.properties.expect("properties").subscription_identifiers;
    if ids.len() == 1 {
        ids.extend(subscriber.next_publish().await.properties.expect("properties").subscription_identifiers);
    }
    ids.sort();
    assert_eq!(ids, vec![7, 300]);
    subscriber.expect_no_publish().await;
}

#[tokio::test]
async fn no_local_subscription_skips_own_messages__mqtt_3_8_3_3() {
    let broker = Broker::start();
    let topic = unique("nolocal");
    let mut client_a = client(&broker, "a").await;
    let mut filter = Filter::new(&topic, QoS::AtLeastOnce);
    filter.nolocal = true;
    client_a.subscribe_with(vec![filter], None).await;
    client_a.publish(&topic, QoS::AtLeastOnce, false, "own").await;
    let mut client_b = client(&broker, "b").await;
    client_b.publish(&topic, QoS::AtLeastOnce, false, "other").await;
    assert_eq!(client_a.next_publish().await.payload, "other");
    client_a.expect_no_publish().await;
}

#[tokio::test]
async fn retain_as_published_keeps_retain_flag_on_live_messages__mqtt_3_3_1_12() {
    let broker = Broker::start();
    let topic = unique("rap");
    let mut keeps = client(&broker, "keeps").await;
    let mut filter = Filter::new(&topic, QoS::AtLeastOnce);
    filter.preserve_retain = true;
    keeps.subscribe_with(vec![filter], None).await;
    let mut clears = client(&broker, "clears").await;
    clears.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    publisher.publish(&topic, QoS::AtLeastOnce, true, "retained").await;
    assert!(keeps.next_publish().await.retain, "Retain As Published 1");
    assert!(!clears.next_publish().await.retain, "Retain As Published 0");
}

#[tokio::test]
async fn subscription_identifier_from_a_client_in_publish_is_a_protocol_error__mqtt_3_3_4_6() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 ignores it") {
        return;
    }
    let topic = unique("subid-in-publish");
    let mut subscriber = client(&broker, "sub").await;
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut publisher = raw_client(&broker, &[]).await;
    publisher.send(&raw::publish_with(Level::V5, topic.as_bytes(), 1, false, 1, &[0x0B, 5], b"x")).await;
    publisher.expect_disconnect_and_close(0x82).await;
    subscriber.expect_no_publish().await;
}

/// SUBSCRIBE with the given properties and one filter with its options byte.
fn subscribe_raw(filter: &str, options: u8, properties: &[u8]) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend(raw::properties(properties));
    body.extend(raw::string(filter));
    body.push(options);
    raw::packet(0x82, &body)
}

#[tokio::test]
async fn subscription_identifier_0_is_a_protocol_error__mqtt_3_8_2_1_2() {
    let broker = Broker::start();
    let mut client = raw_client(&broker, &[]).await;
    client.send(&subscribe_raw("a/b", 1, &[0x0B, 0])).await;
    client.expect_disconnect_and_close(0x82).await;
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error__mqtt_3_8_3_4() {
    let broker = Broker::start();
    let mut client = raw_client(&broker, &[]).await;
    client.send(&subscribe_raw(&format!("$share/g/{}", unique("t")), 0x04 | 1, &[])).await;
    client.expect_disconnect_and_close(0x82).await;
}

#[tokio::test]
async fn retain_handling_3_is_a_protocol_error__mqtt_3_8_3_1() {
    let broker = Broker::start();
    let mut client = raw_client(&broker, &[]).await;
    client.send(&subscribe_raw(&unique("t"), 0x30 | 1, &[])).await;
    client.expect_disconnect_and_close(0x82).await;
}

async fn retained_on_subscribe(subscriber: &mut V5Client, topic: &str, rule: RetainForwardRule) -> bool {
    let mut filter = Filter::new(topic, QoS::AtLeastOnce);
    filter.retain_forward_rule = rule;
    subscriber.subscribe_with(vec![filter], None).await;
    tokio::time::timeout(support::SILENCE, subscriber.next_publish()).await.is_ok()
}

#[tokio::test]
async fn retain_handling_0_1_2__mqtt_3_3_1_9_and_3_3_1_10() {
    let broker = Broker::start();
    let topic = unique("rh");
    let mut publisher = client(&broker, "pub").await;
    publisher.publish(&topic, QoS::AtLeastOnce, true, "retained").await;
    let mut subscriber = client(&broker, "sub").await;
    use RetainForwardRule::*;
    assert!(retained_on_subscribe(&mut subscriber, &topic, OnEverySubscribe).await, "0: on subscribe");
    assert!(retained_on_subscribe(&mut subscriber, &topic, OnEverySubscribe).await, "0: on every subscribe");
    assert!(!retained_on_subscribe(&mut subscriber, &topic, OnNewSubscribe).await, "1: not when it existed");
    let mut fresh = client(&broker, "fresh").await;
    assert!(retained_on_subscribe(&mut fresh, &topic, OnNewSubscribe).await, "1: on a new subscription");
    let mut never = client(&broker, "never").await;
    assert!(!retained_on_subscribe(&mut never, &topic, Never).await, "2: never");
}

// ---- Flow control and sizes ----

#[tokio::test]
async fn client_receive_maximum_limits_unacknowledged_deliveries__mqtt_3_3_4_9() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 had 3 unacknowledged PUBLISHes out after the first acks") {
        return;
    }
    let topic = unique("receive-max");
    let mut options = v5::options(broker.port(), &unique("slow"));
    options.set_receive_maximum(Some(2)).set_manual_acks(true);
    let mut subscriber = V5Client::connect(options).await;
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    for i in 0..5 {
        publisher.publish(&topic, QoS::AtLeastOnce, false, format!("m{i}")).await;
    }
    let first_two = subscriber.next_publishes(2).await;
    subscriber.expect_no_publish().await;
    for publish in &first_two {
        subscriber.client.ack(publish).await.expect("request channel open");
    }
    let rest = subscriber.next_publishes(2).await;
    subscriber.expect_no_publish().await;
    let payloads: Vec<_> = first_two.iter().chain(&rest).map(|p| p.payload.clone()).collect();
    assert_eq!(payloads, ["m0", "m1", "m2", "m3"].map(|s| Bytes::from(s.as_bytes())));
}

#[tokio::test]
async fn client_receive_maximum_0_is_refused__mqtt_3_1_2_11_3() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.send(&raw::connect_with(5, &unique("rm0"), true, 30, None, &[0x21, 0, 0])).await;
    let packets = client.expect_closed().await;
    assert!(
        packets.iter().all(|packet| matches!(packet, Packet::ConnAck(connack) if connack.reason.0 >= 0x80)),
        "closed, at most with a refusing CONNACK: {packets:?}"
    );
}

#[tokio::test]
async fn message_over_client_maximum_packet_size_not_sent__mqtt_3_1_2_25() {
    let broker = Broker::start();
    let topic = unique("small-client");
    let mut options = v5::options(broker.port(), &unique("small"));
    options.set_max_packet_size(Some(200));
    let mut subscriber = V5Client::connect(options).await;
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    publisher.publish(&topic, QoS::AtLeastOnce, false, vec![0u8; 500]).await;
    publisher.publish(&topic, QoS::AtLeastOnce, false, "fits").await;
    assert_eq!(subscriber.next_publish().await.payload, "fits", "the large message is dropped for this client");
}

#[tokio::test]
async fn connack_announces_maximum_packet_size_and_server_keep_alive__mqtt_3_2_2_3() {
    let broker = Broker::start_with(&BrokerLimits {
        packet_size_max_bytes: Some(4096),
        keepalive_max_secs: Some(20),
        ..Default::default()
    });
    let mut options = v5::options(broker.port(), &unique("c"));
    options.set_keep_alive(Duration::from_secs(60));
    let client = V5Client::connect(options).await;
    let properties = client.connack.properties.clone().expect("CONNACK properties");
    assert_eq!(properties.max_packet_size, Some(4096));
    assert_eq!(properties.server_keep_alive, Some(20));
}

// ---- Properties forwarded ----

#[tokio::test]
async fn request_response_and_user_properties_forwarded_in_order__mqtt_3_3_2_17() {
    let broker = Broker::start();
    let topic = unique("request");
    let mut responder = client(&broker, "responder").await;
    responder.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut requester = client(&broker, "requester").await;
    let sent = PublishProperties {
        response_topic: Some(format!("{topic}/reply")),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        content_type: Some("application/json".into()),
        user_properties: user_properties(&[("b", "2"), ("a", "1"), ("b", "3")]),
        payload_format_indicator: Some(1),
        ..properties()
    };
    requester.publish_with(&topic, QoS::AtLeastOnce, false, "{}", Some(sent.clone())).await;
    let got = responder.next_publish().await.properties.expect("properties forwarded");
    assert_eq!(got.response_topic, sent.response_topic);
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(got.content_type, sent.content_type);
    assert_eq!(got.user_properties, sent.user_properties, "same pairs in the same order [MQTT-3.3.2-18]");
    assert_eq!(got.payload_format_indicator, Some(1));
}

#[tokio::test]
async fn response_topic_with_a_wildcard_is_refused__mqtt_3_3_2_14() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 answers 0x82 Protocol error instead of 0x90") {
        return;
    }
    let topic = unique("bad-response-topic");
    let mut responder = client(&broker, "responder").await;
    responder.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut requester = raw_client(&broker, &[]).await;
    let mut response_topic = vec![0x08];
    response_topic.extend(raw::string("replies/#"));
    requester.send(&raw::publish_with(Level::V5, topic.as_bytes(), 1, false, 1, &response_topic, b"?")).await;
    requester.expect_disconnect_and_close(0x90).await;
    responder.expect_no_publish().await;
}

#[tokio::test]
async fn payload_format_utf8_with_invalid_payload_refused_0x99__mqtt_3_3_2_4() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 does not check payloads marked UTF-8") {
        return;
    }
    let topic = unique("pfi");
    let mut subscriber = client(&broker, "sub").await;
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut publisher = raw_client(&broker, &[]).await;
    let utf8_marked = [0x01, 1];
    publisher.send(&raw::publish_with(Level::V5, topic.as_bytes(), 1, false, 9, &utf8_marked, &[0xFF, 0xFE])).await;
    match publisher.expect_packet().await {
        Packet::PubAck(ack) => assert_eq!((ack.packet_id, ack.reason.0), (9, 0x99)),
        Packet::Disconnect(disconnect) => assert_eq!(disconnect.reason.0, 0x99),
        other => panic!("expected PUBACK or DISCONNECT 0x99, got {other:?}"),
    }
    subscriber.expect_no_publish().await;
}

#[tokio::test]
async fn message_expiry_interval_forwarded_reduced__mqtt_3_3_2_6() {
    let broker = Broker::start();
    let topic = unique("expiry");
    let mut subscriber = client(&broker, "sub").await;
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    let expiring = PublishProperties { message_expiry_interval: Some(100), ..properties() };
    publisher.publish_with(&topic, QoS::AtLeastOnce, false, "x", Some(expiring)).await;
    let interval = subscriber.next_publish().await.properties.and_then(|p| p.message_expiry_interval);
    assert!(matches!(interval, Some(98..=100)), "remaining interval forwarded, got {interval:?}");
}

#[tokio::test]
async fn expired_message_not_delivered_to_offline_session__mqtt_3_3_2_5() {
    let broker = Broker::start();
    let topic = unique("expired");
    let id = unique("offline");
    let mut options = v5::options(broker.port(), &id);
    options.set_clean_start(false).set_session_expiry_interval(Some(300));
    let mut subscriber = V5Client::connect(options.clone()).await;
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    let mut publisher = client(&broker, "pub").await;
    let short = PublishProperties { message_expiry_interval: Some(1), ..properties() };
    publisher.publish_with(&topic, QoS::AtLeastOnce, false, "expires", Some(short)).await;
    publisher.publish(&topic, QoS::AtLeastOnce, false, "stays").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut subscriber = V5Client::connect(options).await;
    assert_eq!(subscriber.next_publish().await.payload, "stays");
    subscriber.expect_no_publish().await;
}

#[tokio::test]
async fn retained_message_expires__mqtt_3_3_2_5() {
    let broker = Broker::start();
    let topic = unique("retained-expiry");
    let mut publisher = client(&broker, "pub").await;
    let short = PublishProperties { message_expiry_interval: Some(1), ..properties() };
    publisher.publish_with(&topic, QoS::AtLeastOnce, true, "short-lived", Some(short)).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut subscriber = client(&broker, "sub").await;
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
    subscriber.expect_no_publish().await;
}

// ---- Enhanced authentication ----

#[tokio::test]
async fn unknown_authentication_method_refused_0x8c__mqtt_4_12_0_1() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let mut method = vec![0x15];
    method.extend(raw::string("NO-SUCH-METHOD"));
    client.send(&raw::connect_with(5, &unique("auth"), true, 30, None, &method)).await;
    let packets = client.expect_closed().await;
    assert_eq!(packets.len(), 1, "one CONNACK then close: {packets:?}");
    assert_eq!(packets[0].connack().1, 0x8C, "Bad authentication method");
}

// ---- Server capabilities from config ----

#[tokio::test]
async fn maximum_qos_1_announced_qos2_subscribe_downgraded_qos2_publish_refused_0x9b__mqtt_3_2_2_11() {
    let broker = Broker::start_with(&BrokerLimits { qos_max: Some(1), ..Default::default() });
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let connack = client.handshake(&raw::connect(Level::V5, &unique("c"), true, 30, None)).await;
    let Packet::ConnAck(connack) = connack else { unreachable!("handshake returns CONNACK") };
    assert_eq!(connack.properties.maximum_qos, Some(1));
    client.send(&raw::subscribe(Level::V5, 1, &[("a/b", 2)])).await;
    assert_eq!(client.expect_packet().await.ack_reasons(), vec![1], "QoS 2 subscription granted QoS 1");
    client.send(&raw::publish(Level::V5, "a/b", 2, false, 2, b"x")).await;
    client.expect_disconnect_and_close(0x9B).await;
}

#[tokio::test]
async fn retain_unavailable_announced_and_retained_publish_refused_0x9a__mqtt_3_2_2_14() {
    let broker = Broker::start_with(&BrokerLimits { retain_available: Some(false), ..Default::default() });
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let connack = client.handshake(&raw::connect(Level::V5, &unique("c"), true, 30, None)).await;
    let Packet::ConnAck(connack) = connack else { unreachable!("handshake returns CONNACK") };
    assert_eq!(connack.properties.retain_available, Some(0));
    client.send(&raw::publish(Level::V5, "a/b", 0, true, 0, b"x")).await;
    client.expect_disconnect_and_close(0x9A).await;
}

#[tokio::test]
async fn more_unacknowledged_qos2_than_server_receive_maximum_refused_0x93__mqtt_3_3_4_8() {
    let broker = Broker::start_with(&BrokerLimits {
        shardmq_mqtt_toml: Some("receive_maximum = 4".into()),
        ..Default::default()
    });
    if support::skip_on_mosquitto(&broker, "Mosquitto answers PUBREC 0x97 Quota exceeded instead of DISCONNECT 0x93") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let connack = client.handshake(&raw::connect(Level::V5, &unique("c"), true, 30, None)).await;
    let Packet::ConnAck(connack) = connack else { unreachable!("handshake returns CONNACK") };
    let receive_maximum = connack.properties.receive_maximum.unwrap_or(u16::MAX);
    assert!(receive_maximum <= 100, "test needs a small Receive Maximum, broker announced {receive_maximum}");
    // QoS 2 PUBLISHes stay unacknowledged until PUBREL, which we never send.
    for packet_id in 1..=receive_maximum {
        client.send(&raw::publish(Level::V5, "flood", 2, false, packet_id, b"x")).await;
        assert_eq!(client.expect_packet().await.packet_id(), packet_id, "PUBREC");
    }
    client.send(&raw::publish(Level::V5, "flood", 2, false, receive_maximum + 1, b"x")).await;
    client.expect_disconnect_and_close(0x93).await;
}
