//! Malformed and forbidden input as raw bytes: a v5 client gets DISCONNECT with the reason the spec gives,
//! a 3.1.1 client is disconnected, and another client of the same broker keeps working.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use support::any_version::{Client, Version};
use support::raw::{self, Level, RawClient};
use support::{client_id_on_shard, unique, Broker, BrokerLimits};

const MALFORMED_PACKET: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;
const TOPIC_NAME_INVALID: u8 = 0x90;
const PACKET_TOO_LARGE: u8 = 0x95;

/// Sends `bad` after a good CONNECT and checks the broker's answer: for v5, a DISCONNECT whose reason is
/// one of `v5_reasons`, for 3.1.1 a plain close; then checks a bystander client still publishes and
/// receives.
async fn rejected(broker: &Broker, level: Level, bad: &[u8], v5_reasons: &[u8]) {
    let topic = unique("bystander");
    let mut bystander = Client::connect(broker.port(), Version::V5, &unique("bystander")).await;
    bystander.subscribe(&topic, 1).await;

    let mut offender = RawClient::connect(broker.port(), level).await;
    offender.handshake(&raw::connect(level, &unique("offender"), true, 30, None)).await;
    offender.send(bad).await;
    let packets = offender.expect_closed().await;
    match level {
        Level::V311 => assert!(packets.is_empty(), "3.1.1: expected a plain close, got {packets:?}"),
        Level::V5 => match &packets[..] {
            [shardmq::protocol::Packet::Disconnect(disconnect)] => assert!(
                v5_reasons.contains(&disconnect.reason.0),
                "DISCONNECT reason 0x{:02X}, expected one of {v5_reasons:02X?}",
                disconnect.reason.0
            ),
            other => panic!("v5: expected one DISCONNECT before the close, got {other:?}"),
        },
    }

    bystander.publish(&topic, 1, false, "still here").await;
    assert_eq!(bystander.next_message().await.payload, "still here", "bystander unaffected");
}

#[tokio::test]
async fn subscribe_with_reserved_flags_0_is_malformed__mqtt_3_8_1_1() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let mut bad = raw::subscribe(level, 1, &[("a/b", 1)]);
        bad[0] = 0x80;
        rejected(&broker, level, &bad, &[MALFORMED_PACKET]).await;
    }
}

#[tokio::test]
async fn publish_with_qos_3_is_malformed__mqtt_3_3_1_4() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let mut bad = raw::publish(level, "a/b", 1, false, 1, b"x");
        bad[0] |= 0x06; // QoS bits 11
        rejected(&broker, level, &bad, &[MALFORMED_PACKET]).await;
    }
}

#[tokio::test]
async fn remaining_length_over_four_bytes_is_malformed__mqtt_1_5_5() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        if level == Level::V5
            && support::skip_on_mosquitto(&broker, "Mosquitto closes on a 5-byte remaining length without DISCONNECT")
        {
            continue;
        }
        let bad = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00];
        rejected(&broker, level, &bad, &[MALFORMED_PACKET]).await;
    }
}

#[tokio::test]
async fn packet_over_maximum_packet_size_is_refused_0x95__mqtt_3_1_2_24() {
    let broker = Broker::start_with(&BrokerLimits { packet_size_max_bytes: Some(1024), ..Default::default() });
    for level in [Level::V311, Level::V5] {
        let bad = raw::publish(level, "big", 0, false, 0, &[7u8; 2000]);
        rejected(&broker, level, &bad, &[PACKET_TOO_LARGE]).await;
    }
}

#[tokio::test]
async fn packet_of_exactly_maximum_packet_size_is_accepted_and_delivered__mqtt_3_1_2_24() {
    let broker = Broker::start_with(&BrokerLimits { packet_size_max_bytes: Some(1024), ..Default::default() });
    for (publisher_shard, subscriber_shard) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let topic = unique("fits");
        let mut subscriber =
            Client::connect(broker.port(), Version::V311, &client_id_on_shard("sub", subscriber_shard)).await;
        subscriber.subscribe(&topic, 0).await;
        let mut publisher = RawClient::connect(broker.port(), Level::V311).await;
        let publisher_id = client_id_on_shard("pub", publisher_shard);
        publisher.handshake(&raw::connect(Level::V311, &publisher_id, true, 30, None)).await;
        // Fixed header 1 + 2 (remaining length 1021 takes two bytes), topic 2 + len, payload the rest.
        let payload_len = 1024 - 1 - 2 - (2 + topic.len());
        let packet = raw::publish(Level::V311, &topic, 0, false, 0, &vec![1u8; payload_len]);
        assert_eq!(packet.len(), 1024);
        publisher.send(&packet).await;
        let message = subscriber.next_message().await;
        assert_eq!(
            message.payload.len(),
            payload_len,
            "publisher on shard {publisher_shard}, subscriber on {subscriber_shard}"
        );
        publisher.expect_alive().await;
    }
}

#[tokio::test]
async fn topic_with_invalid_utf8_is_malformed__mqtt_1_5_4_1() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let bad = raw::publish_with(level, &[b'a', 0xC3, 0x28], 0, false, 0, &[], b"x");
        rejected(&broker, level, &bad, &[MALFORMED_PACKET]).await;
    }
}

#[tokio::test]
async fn topic_with_null_character_is_malformed__mqtt_1_5_4_2() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let bad = raw::publish_with(level, b"a\0b", 0, false, 0, &[], b"x");
        rejected(&broker, level, &bad, &[MALFORMED_PACKET]).await;
    }
}

#[tokio::test]
async fn wildcard_in_publish_topic_is_refused__mqtt_3_3_2_2() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        for topic in ["a/+", "a/#"] {
            let bad = raw::publish(level, topic, 1, false, 1, b"x");
            rejected(&broker, level, &bad, &[TOPIC_NAME_INVALID, MALFORMED_PACKET, PROTOCOL_ERROR]).await;
        }
    }
}

#[tokio::test]
async fn publish_qos1_with_packet_id_0_is_refused__mqtt_2_2_1_3() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let bad = raw::publish(level, "a/b", 1, false, 0, b"x");
        rejected(&broker, level, &bad, &[MALFORMED_PACKET, PROTOCOL_ERROR]).await;
    }
}

#[tokio::test]
async fn subscribe_with_packet_id_0_is_refused__mqtt_2_2_1_3() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let bad = raw::subscribe(level, 0, &[("a/b", 1)]);
        rejected(&broker, level, &bad, &[MALFORMED_PACKET, PROTOCOL_ERROR]).await;
    }
}

#[tokio::test]
async fn truncated_packet_body_is_malformed__mqtt_1_5_4() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        // Remaining length 3 but the topic length says 10 bytes follow.
        let bad = [0x30, 0x03, 0x00, 0x0A, b'a'];
        rejected(&broker, level, &bad, &[MALFORMED_PACKET]).await;
    }
}

#[tokio::test]
async fn garbage_bytes_are_closed_and_bystander_unaffected__mqtt_4_8_0_1() {
    let broker = Broker::start();
    let mut bystander = Client::connect(broker.port(), Version::V311, &unique("bystander")).await;
    let topic = unique("bystander");
    bystander.subscribe(&topic, 1).await;
    for garbage in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x00, 0x00], &[0xF0, 0x00], &[0xFF; 64]] {
        let mut offender = RawClient::connect(broker.port(), Level::V311).await;
        offender.send(garbage).await;
        offender.expect_closed().await;
    }
    bystander.publish(&topic, 1, false, "fine").await;
    assert_eq!(bystander.next_message().await.payload, "fine");
}
