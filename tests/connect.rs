//! CONNECT and CONNACK: return / reason codes, client identifiers, protocol errors around CONNECT, the
//! CONNECT timeout and the keep-alive timeout, for MQTT 3.1.1 and MQTT 5.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5ConnectCode;
use rumqttc::{ConnectReturnCode, QoS};
use support::raw::{self, Level, PacketFields, RawClient, RawWill};
use support::v4::{self, V4Client};
use support::v5::{self, V5Client};
use support::{unique, Broker, BrokerKind, BrokerLimits};

#[tokio::test]
async fn v311_clean_session_connack_accepted_without_session__mqtt_3_2_2_1() {
    let broker = Broker::start();
    let client = V4Client::connect(v4::options(broker.port(), &unique("c"))).await;
    assert_eq!(client.connack.code, ConnectReturnCode::Success);
    assert!(!client.session_present(), "clean session must have session present 0");
}

#[tokio::test]
async fn v5_clean_start_connack_success_without_session__mqtt_3_2_2_2() {
    let broker = Broker::start();
    let client = V5Client::connect(v5::options(broker.port(), &unique("c"))).await;
    assert_eq!(client.connack.code, V5ConnectCode::Success);
    assert!(!client.session_present(), "clean start must have session present 0");
}

#[tokio::test]
async fn v311_empty_client_id_with_clean_session_accepted__mqtt_3_1_3_6() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V311).await;
    let connack = client.handshake(&raw::connect(Level::V311, "", true, 30, None)).await;
    assert_eq!(connack.connack(), (false, 0x00));
    client.expect_alive().await;
}

#[tokio::test]
async fn v311_empty_client_id_without_clean_session_refused_0x02__mqtt_3_1_3_8() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V311).await;
    client.send(&raw::connect(Level::V311, "", false, 30, None)).await;
    let packets = client.expect_closed().await;
    assert_eq!(packets.len(), 1, "expected exactly one CONNACK before close: {packets:?}");
    // Return code 2 (identifier rejected); the codec reads 3.1.1 return codes as their v5 reasons (0x85).
    assert_eq!(packets[0].connack(), (false, 0x85), "identifier rejected");
}

#[tokio::test]
async fn v5_empty_client_id_gets_assigned_client_identifier__mqtt_3_2_2_16() {
    let broker = Broker::start();
    let first = V5Client::connect(v5::options(broker.port(), "")).await;
    let second = V5Client::connect(v5::options(broker.port(), "")).await;
    let assigned = |client: &V5Client| {
        client
            .connack
            .properties
            .as_ref()
            .and_then(|properties| properties.assigned_client_identifier.clone())
            .expect("CONNACK must carry an Assigned Client Identifier")
    };
    let (first_id, second_id) = (assigned(&first), assigned(&second));
    assert!(!first_id.is_empty());
    assert_ne!(first_id, second_id, "assigned identifiers must be unique");
}

#[tokio::test]
async fn v311_second_connect_closes_connection__mqtt_3_1_0_2() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V311).await;
    client.handshake(&raw::connect(Level::V311, &unique("c"), true, 30, None)).await;
    client.send(&raw::connect(Level::V311, &unique("c"), true, 30, None)).await;
    let packets = client.expect_closed().await;
    assert!(packets.is_empty(), "no reply expected to a second CONNECT: {packets:?}");
}

#[tokio::test]
async fn v5_second_connect_disconnect_0x82_protocol_error__mqtt_3_1_0_2() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto closes on a second CONNECT without sending DISCONNECT 0x82") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.handshake(&raw::connect(Level::V5, &unique("c"), true, 30, None)).await;
    client.send(&raw::connect(Level::V5, &unique("c"), true, 30, None)).await;
    client.expect_disconnect_and_close(0x82).await;
}

#[tokio::test]
async fn first_packet_not_connect_closes_connection__mqtt_3_1_0_1() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V311).await;
    client.send(&raw::publish(Level::V311, "a/b", 0, false, 0, b"early")).await;
    let packets = client.expect_closed().await;
    assert!(packets.is_empty(), "no reply expected before CONNECT: {packets:?}");
}

#[tokio::test]
async fn v311_unsupported_protocol_level_return_code_0x01__mqtt_3_1_2_2() {
    let broker = Broker::start();
    let mut client = RawClient::connect(broker.port(), Level::V311).await;
    client.send(&raw::connect_with(6, &unique("c"), true, 30, None, &[])).await;
    let bytes = client.bytes_until_closed().await;
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x01], "CONNACK with return code 1 (unacceptable protocol level)");
}

#[tokio::test]
async fn v5_unsupported_protocol_level_refused_0x84__mqtt_3_1_2_2() {
    let broker = Broker::start();
    // Some v5 clients probe with a level we do not know, carrying v5 connect properties: the same refusal.
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let mut connect = raw::connect_with(5, &unique("c"), true, 30, None, &[]);
    connect[8] = 7; // protocol level byte: fixed header (2) + "MQTT" (6)
    client.send(&connect).await;
    // The broker cannot know the CONNACK format of an unknown level: accept either form, or no CONNACK.
    let bytes = client.bytes_until_closed().await;
    if !bytes.is_empty() {
        assert_eq!(bytes[0], 0x20, "only a CONNACK may precede the close: {bytes:02X?}");
        let code = bytes[3];
        assert!(code == 0x01 || code == 0x84, "CONNACK code 0x{code:02X}, expected 0x01 or 0x84");
    }
}

#[tokio::test]
async fn connect_reserved_flag_set_is_malformed_and_closed__mqtt_3_1_2_3() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let mut client = RawClient::connect(broker.port(), level).await;
        let mut connect = raw::connect(level, &unique("c"), true, 30, None);
        connect[9] |= 0x01; // connect flags byte, bit 0 is reserved
        client.send(&connect).await;
        let packets = client.expect_closed().await;
        for packet in &packets {
            let (_, code) = packet.connack();
            assert!(code != 0x00, "{level:?}: malformed CONNECT accepted: {packets:?}");
        }
    }
}

#[tokio::test]
async fn no_connect_within_timeout_closes_connection__mqtt_3_1_4() {
    let broker = Broker::start_with(&BrokerLimits { connect_timeout_secs: Some(1), ..Default::default() });
    if support::skip_on_mosquitto(&broker, "Mosquitto has no configurable CONNECT timeout") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V311).await;
    let started = Instant::now();
    let packets = client.expect_closed_within(Duration::from_secs(4)).await;
    assert!(packets.is_empty(), "{packets:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", started.elapsed());
}

/// Keep-alive of 1 s: the broker must close between 1.5 s and a little more [MQTT-3.1.2-24] and then
/// publish the will, as for any close the client did not ask for [MQTT-3.1.2-8].
async fn keep_alive_timeout_closes_and_publishes_will(level: Level) {
    let broker = Broker::start();
    let will_topic = unique("will/keepalive");
    let mut watcher = V4Client::connect(v4::options(broker.port(), &unique("watcher"))).await;
    watcher.subscribe(&will_topic, QoS::AtLeastOnce).await;

    let mut client = RawClient::connect(broker.port(), level).await;
    let will = RawWill { topic: &will_topic, payload: b"gone", qos: 1, retain: false };
    client.handshake(&raw::connect(level, &unique("silent"), true, 1, Some(&will))).await;
    // Mosquitto checks keep-alives only every few seconds (it closed this one after ~4.8 s), so it is held
    // to the lower bound only.
    let latest_close = match broker.kind() {
        BrokerKind::Shardmq => Duration::from_millis(2600),
        BrokerKind::Mosquitto => Duration::from_secs(7),
    };
    let started = Instant::now();
    let packets = client.expect_closed_within(latest_close + Duration::from_secs(1)).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1400), "closed after {elapsed:?}, before 1.5 x keep-alive");
    assert!(elapsed <= latest_close, "closed after {elapsed:?}, long after 1.5 x keep-alive");
    if level == Level::V5 {
        for packet in &packets {
            assert_eq!(packet.disconnect_reason(), 0x8D, "v5 DISCONNECT must say Keep Alive timeout");
        }
    }
    let will = watcher.next_publish().await;
    assert_eq!(will.topic, will_topic);
    assert_eq!(&will.payload[..], b"gone");
}

#[tokio::test]
async fn v311_keep_alive_timeout_closes_after_one_and_a_half_and_sends_will__mqtt_3_1_2_24() {
    keep_alive_timeout_closes_and_publishes_will(Level::V311).await;
}

#[tokio::test]
async fn v5_keep_alive_timeout_closes_after_one_and_a_half_and_sends_will__mqtt_3_1_2_24() {
    keep_alive_timeout_closes_and_publishes_will(Level::V5).await;
}

#[tokio::test]
async fn pingreq_gets_pingresp_and_keeps_connection_alive__mqtt_3_12_4_1() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let mut client = RawClient::connect(broker.port(), level).await;
        client.handshake(&raw::connect(level, &unique("pinger"), true, 1, None)).await;
        // 3 pings 700 ms apart span 2.1 s, past 1.5 x the 1 s keep-alive: each ping must reset the timer.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            client.expect_alive().await;
        }
    }
}

#[tokio::test]
async fn v31_mqisdp_connect_accepted_and_served__mqtt_3_1() {
    let broker = Broker::start();
    let topic = unique("v31");
    let mut client = RawClient::connect(broker.port(), Level::V311).await;
    let mut connect = raw::string("MQIsdp");
    connect.extend([3, 0x02, 0, 30]);
    connect.extend(raw::string(&unique("old")));
    client.send(&raw::packet(0x10, &connect)).await;
    // A 3.1 CONNACK has the same shape as 3.1.1's.
    assert_eq!(client.expect_packet().await.connack(), (false, 0x00));
    client.send(&raw::subscribe(Level::V311, 1, &[(&topic, 1)])).await;
    assert_eq!(client.expect_packet().await.ack_reasons(), vec![1]);
    client.send(&raw::publish(Level::V311, &topic, 1, false, 2, b"3.1 works")).await;
    let mut packets = vec![client.expect_packet().await, client.expect_packet().await];
    packets.sort_by_key(|packet| matches!(packet, shardmq::protocol::Packet::Publish(_)));
    assert_eq!(packets[0].packet_id(), 2, "PUBACK for our PUBLISH: {packets:?}");
    assert_eq!(packets[1].publish(), (topic, b"3.1 works".to_vec()));
}
