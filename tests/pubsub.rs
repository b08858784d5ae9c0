//! Publish/subscribe: QoS 0/1/2 in both directions, wildcards, `$` topics, overlapping subscriptions,
//! ordering, publisher and subscribers on different shards, SUBACK/UNSUBACK codes; MQTT 3.1.1 and 5.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use support::any_version::{Client, Version, BOTH_VERSIONS};
use support::raw::{self, Level, PacketFields, RawClient};

use support::{spread_client_ids, unique, Broker};

#[tokio::test]
async fn delivered_qos_is_minimum_of_publish_and_subscription_qos__mqtt_3_8_4_8() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let prefix = unique("qos");
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        for sub_qos in 0..=2u8 {
            let granted = subscriber.subscribe(&format!("{prefix}/sub{sub_qos}"), sub_qos).await;
            assert_eq!(granted, sub_qos, "{version:?}: SUBACK grants the requested QoS");
        }
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        for pub_qos in 0..=2u8 {
            for sub_qos in 0..=2u8 {
                let topic = format!("{prefix}/sub{sub_qos}");
                publisher.publish(&topic, pub_qos, false, format!("p{pub_qos}s{sub_qos}")).await;
                let message = subscriber.next_message().await;
                assert_eq!(message.topic, topic);
                assert_eq!(message.payload, format!("p{pub_qos}s{sub_qos}").as_bytes());
                assert_eq!(message.qos, pub_qos.min(sub_qos), "{version:?}: published {pub_qos}, subscribed {sub_qos}");
                assert!(!message.retain && !message.dup);
            }
        }
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn qos2_message_delivered_exactly_once__mqtt_4_3_3() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let topic = unique("exactly/once");
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&topic, 2).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        for i in 0..20 {
            publisher.publish(&topic, 2, false, format!("m{i}")).await;
        }
        let received = subscriber.next_messages(20).await;
        let payloads: Vec<_> = received.iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect();
        let expected: Vec<_> = (0..20).map(|i| format!("m{i}")).collect();
        assert_eq!(payloads, expected, "{version:?}");
        assert!(received.iter().all(|m| m.qos == 2));
        subscriber.expect_no_message().await;
    }
}

/// Publishes `count` messages without waiting for acknowledgements and checks they arrive in order.
async fn burst_arrives_in_order(broker: &Broker, version: Version, qos: u8, count: u32) {
    let topic = unique("ordered");
    let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
    subscriber.subscribe(&topic, qos).await;
    let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
    for i in 0..count {
        publisher.publish_no_wait(&topic, qos, false, i.to_be_bytes().to_vec()).await;
    }
    let received = subscriber.next_messages(count as usize).await;
    for (i, message) in received.iter().enumerate() {
        assert_eq!(&message.payload[..], &(i as u32).to_be_bytes(), "{version:?} QoS {qos}: message {i}");
    }
}

#[tokio::test]
async fn messages_on_one_topic_arrive_in_publish_order__mqtt_4_6_0_6() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        // 50 stays under rumqttc's 100 in-flight packet ids: past that it reuses ids and can stall.
        burst_arrives_in_order(&broker, version, 0, 50).await;
        burst_arrives_in_order(&broker, version, 1, 50).await;
        burst_arrives_in_order(&broker, version, 2, 20).await;
    }
}

#[tokio::test]
async fn qos2_burst_beyond_inflight_window_arrives_in_order__mqtt_4_6_0_6() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 stalls QoS 2 messages queued behind 20 in flight") {
        return;
    }
    for version in BOTH_VERSIONS {
        burst_arrives_in_order(&broker, version, 2, 50).await;
    }
}

#[tokio::test]
async fn single_level_wildcard_matches_exactly_one_level__mqtt_4_7_1_3() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let root = unique("sport");
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&format!("{root}/+/player1"), 1).await;
        subscriber.subscribe(&format!("{root}/+"), 1).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        for suffix in ["tennis/player1", "tennis/player2", "tennis/x/player1", "/player1", "", "tennis"] {
            publisher.publish(&format!("{root}/{suffix}"), 1, false, suffix.to_string()).await;
        }
        let mut topics: Vec<_> = subscriber.next_messages(4).await.into_iter().map(|m| m.topic).collect();
        topics.sort();
        let mut expected: Vec<_> =
            ["", "/player1", "tennis", "tennis/player1"].iter().map(|s| format!("{root}/{s}")).collect();
        expected.sort();
        assert_eq!(topics, expected, "{version:?}");
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn multi_level_wildcard_matches_parent_and_all_children__mqtt_4_7_1_2() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let root = unique("multi");
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&format!("{root}/a/#"), 1).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        for suffix in ["a", "a/b", "a/b/c/d", "a/", "b", "ab"] {
            publisher.publish(&format!("{root}/{suffix}"), 1, false, suffix.to_string()).await;
        }
        let mut topics: Vec<_> = subscriber.next_messages(4).await.into_iter().map(|m| m.topic).collect();
        topics.sort();
        let mut expected: Vec<_> = ["a", "a/", "a/b", "a/b/c/d"].iter().map(|s| format!("{root}/{s}")).collect();
        expected.sort();
        assert_eq!(topics, expected, "{version:?}");
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn dollar_topics_not_matched_by_leading_wildcards__mqtt_4_7_2_1() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let dollar_topic = format!("${}/x", unique("test"));
        let mut wildcard = Client::connect(broker.port(), version, &unique("wild")).await;
        wildcard.subscribe("#", 1).await;
        wildcard.subscribe("+/x", 1).await;
        let mut explicit = Client::connect(broker.port(), version, &unique("explicit")).await;
        let first_level = dollar_topic.split('/').next().expect("has a level");
        explicit.subscribe(&format!("{first_level}/#"), 1).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&dollar_topic, 1, false, "dollar").await;
        let message = explicit.next_message().await;
        assert_eq!(message.topic, dollar_topic, "{version:?}: `$x/#` matches `$x/...`");
        wildcard.expect_no_message().await;
    }
}

/// Two subscriptions of one client match a message: it arrives once per subscription or once with the
/// highest QoS of them [MQTT-3.3.4-2]; never with a lower QoS, never more often than there are matches.
#[tokio::test]
async fn overlapping_subscriptions_deliver_with_highest_qos__mqtt_3_3_4_2() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let root = unique("overlap");
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&format!("{root}/#"), 0).await;
        subscriber.subscribe(&format!("{root}/+"), 2).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&format!("{root}/t"), 2, false, "once").await;
        let first = subscriber.next_message().await;
        let mut copies = vec![first];
        if let Some(second) = next_message_if_any(&mut subscriber).await {
            copies.push(second);
        }
        assert!(copies.iter().all(|m| m.payload == "once"), "{version:?}: {copies:?}");
        assert_eq!(copies.iter().map(|m| m.qos).max(), Some(2), "{version:?}: highest QoS must be honoured");
        subscriber.expect_no_message().await;
    }
}

async fn next_message_if_any(client: &mut Client) -> Option<support::any_version::Message> {
    tokio::time::timeout(support::SILENCE, client.next_message()).await.ok()
}

/// 16 publishers and 16 subscribers spread over both shards: each message crosses shards to some
/// subscribers and stays local for others.
#[tokio::test]
async fn publishers_and_subscribers_on_every_shard_all_receive__mqtt_3_3_4() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let topic = unique("mesh");
        let mut subscribers = Vec::new();
        for id in spread_client_ids("mesh-sub", 16) {
            let mut subscriber = Client::connect(broker.port(), version, &id).await;
            subscriber.subscribe(&topic, 1).await;
            subscribers.push(subscriber);
        }
        for (i, id) in spread_client_ids("mesh-pub", 16).into_iter().enumerate() {
            let mut publisher = Client::connect(broker.port(), version, &id).await;
            publisher.publish(&topic, 1, false, format!("from {i}")).await;
            publisher.disconnect().await;
        }
        // Order across publishers is not defined (a message may still be crossing shards while the next
        // publisher's is delivered locally), so compare sets.
        let mut expected: Vec<_> = (0..16).map(|i| format!("from {i}")).collect();
        expected.sort();
        for (i, subscriber) in subscribers.iter_mut().enumerate() {
            let mut payloads: Vec<_> = subscriber
                .next_messages(16)
                .await
                .into_iter()
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
                .collect();
            payloads.sort();
            assert_eq!(payloads, expected, "{version:?}");
            if i < 2 {
                // One subscriber per shard is enough to catch duplicates (each wait costs the silence).
                subscriber.expect_no_message().await;
            }
        }
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery__mqtt_3_10_4_1() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let topic = unique("unsub");
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&topic, 1).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, false, "before").await;
        assert_eq!(subscriber.next_message().await.payload, "before");
        subscriber.unsubscribe(&topic).await;
        publisher.publish(&topic, 1, false, "after").await;
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn suback_has_one_code_per_filter_in_order__mqtt_3_9_3_1() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let mut client = RawClient::connect(broker.port(), level).await;
        client.handshake(&raw::connect(level, &unique("c"), true, 30, None)).await;
        client.send(&raw::subscribe(level, 7, &[("a/2", 2), ("a/0", 0), ("a/1", 1)])).await;
        let suback = client.expect_packet().await;
        assert_eq!(suback.packet_id(), 7);
        assert_eq!(suback.ack_reasons(), vec![2, 0, 1], "{level:?}");
    }
}

#[tokio::test]
async fn v311_invalid_filter_gets_suback_0x80__mqtt_3_9_3_2() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto disconnects on an invalid filter instead of 0x80") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V311).await;
    client.handshake(&raw::connect(Level::V311, &unique("c"), true, 30, None)).await;
    client.send(&raw::subscribe(Level::V311, 3, &[("ok/+", 1), ("bad/#/x", 1), ("bad+", 0)])).await;
    let suback = client.expect_packet().await;
    assert_eq!(suback.ack_reasons(), vec![1, 0x80, 0x80]);
    client.expect_alive().await;
}

#[tokio::test]
async fn v5_invalid_filter_gets_suback_0x8f__mqtt_3_9_3_1() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto disconnects on an invalid filter instead of 0x8F") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.handshake(&raw::connect(Level::V5, &unique("c"), true, 30, None)).await;
    client.send(&raw::subscribe(Level::V5, 3, &[("ok/+", 1), ("bad/#/x", 1), ("bad+", 0)])).await;
    let suback = client.expect_packet().await;
    assert_eq!(suback.ack_reasons(), vec![1, 0x8F, 0x8F]);
    client.expect_alive().await;
}

#[tokio::test]
async fn v5_unsuback_success_and_no_subscription_existed_0x11__mqtt_3_11_3_1() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.handshake(&raw::connect(Level::V5, &unique("c"), true, 30, None)).await;
    client.send(&raw::subscribe(Level::V5, 1, &[("x/y", 1)])).await;
    client.expect_packet().await;
    client.send(&raw::unsubscribe(Level::V5, 2, &["x/y", "never/subscribed"])).await;
    let unsuback = client.expect_packet().await;
    assert_eq!(unsuback.packet_id(), 2);
    assert_eq!(unsuback.ack_reasons(), vec![0x00, 0x11]);
}

#[tokio::test]
async fn v311_unsuback_echoes_packet_id__mqtt_3_10_4_4() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V311).await;
    client.handshake(&raw::connect(Level::V311, &unique("c"), true, 30, None)).await;
    client.send(&raw::unsubscribe(Level::V311, 513, &["never/subscribed"])).await;
    let unsuback = client.expect_packet().await;
    assert_eq!(unsuback.packet_id(), 513);
    assert_eq!(unsuback.ack_reasons(), Vec::<u8>::new());
}

#[tokio::test]
async fn v311_and_v5_clients_exchange_messages_both_ways__mqtt_3_3_4() {
    let broker = Broker::start();
    let topic = unique("mixed");
    let mut old = Client::connect(broker.port(), Version::V311, &unique("old")).await;
    let mut new = Client::connect(broker.port(), Version::V5, &unique("new")).await;
    old.subscribe(&topic, 2).await;
    new.subscribe(&topic, 2).await;
    old.publish(&topic, 2, false, "from 3.1.1").await;
    new.publish(&topic, 1, false, "from 5").await;
    for client in [&mut old, &mut new] {
        let payloads: Vec<_> = client.next_messages(2).await.into_iter().map(|m| (m.payload, m.qos)).collect();
        assert_eq!(payloads, vec![("from 3.1.1".into(), 2), ("from 5".into(), 1)]);
    }
}

/// Once SUBACK is back, a message published on another shard must reach the new subscription: the
/// subscription must not depend on a cross-shard interest update that is still on its way.
#[tokio::test]
async fn subscription_covers_other_shards_as_soon_as_suback_arrives__mqtt_3_8_4() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        for (publisher_shard, subscriber_shard) in [(0, 1), (1, 0)] {
            let mut subscriber =
                Client::connect(broker.port(), version, &support::client_id_on_shard("sub", subscriber_shard)).await;
            let mut publisher =
                Client::connect(broker.port(), version, &support::client_id_on_shard("pub", publisher_shard)).await;
            for round in 0..50 {
                let topic = unique("fresh");
                subscriber.subscribe(&topic, 1).await;
                publisher.publish(&topic, 1, false, format!("{round}")).await;
                let message = subscriber.next_message().await;
                assert_eq!(message.payload, format!("{round}").as_bytes(), "{version:?} round {round}");
            }
        }
    }
}

/// A publisher resends a QoS 2 PUBLISH (DUP) before PUBREL, as after a lost PUBREC: one delivery only.
#[tokio::test]
async fn qos2_publish_resent_before_pubrel_delivered_once__mqtt_4_3_3_10() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let topic = unique("qos2-dup");
        let mut subscriber = Client::connect(broker.port(), Version::V311, &unique("sub")).await;
        subscriber.subscribe(&topic, 2).await;
        let mut publisher = RawClient::connect(broker.port(), level).await;
        publisher.handshake(&raw::connect(level, &unique("pub"), true, 30, None)).await;
        let publish = raw::publish(level, &topic, 2, false, 7, b"once");
        publisher.send(&publish).await;
        assert_eq!(publisher.expect_packet().await.packet_id(), 7, "PUBREC");
        let mut resent = publish.clone();
        resent[0] |= 0x08; // DUP
        publisher.send(&resent).await;
        assert_eq!(publisher.expect_packet().await.packet_id(), 7, "PUBREC again");
        publisher.send(&raw::publish_ack(raw::PUBREL, 7)).await;
        assert_eq!(publisher.expect_packet().await.packet_id(), 7, "PUBCOMP");
        assert_eq!(subscriber.next_message().await.payload, "once");
        subscriber.expect_no_message().await;
    }
}
