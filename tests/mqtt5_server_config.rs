//! MQTT 5 behaviour the broker's config decides, each with its normal case and its refusal: Response
//! Information (`response_information_prefix`), Reason Strings (`reason_strings`, and the client's Request
//! Problem Information), a configured redirect (`server_reference`), Maximum QoS and Retain Available
//! (`qos_max`, `retain_available`), the availability flags of wildcard / shared subscriptions and
//! subscription identifiers, and Server Keep Alive (`keepalive_max_secs`). Raw bytes, so every field of the
//! broker's answers can be checked.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use std::time::{Duration, Instant};

use shardmq::protocol::{encode_packet, ConnAck, Packet, Properties, ProtocolVersion};
use support::raw::{self, Level, PacketFields, RawClient, RawWill};
use support::{skip_on_mosquitto, unique, Broker, BrokerLimits};

const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_PACKET_SIZE_ID: u8 = 0x27;

fn broker_with(mqtt_toml: &str) -> Broker {
    Broker::start_with(&BrokerLimits { shardmq_mqtt_toml: Some(mqtt_toml.into()), ..BrokerLimits::default() })
}

/// Sends a v5 CONNECT with `properties` and returns the CONNACK (accepted or not).
async fn connack_for(broker: &Broker, client_id: &str, properties: &[u8]) -> (RawClient, ConnAck) {
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.send(&raw::connect_with(5, client_id, true, 30, None, properties)).await;
    match client.expect_packet().await {
        Packet::ConnAck(connack) => (client, connack),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A connected v5 client, CONNECT carrying `properties`.
async fn connected(broker: &Broker, properties: &[u8]) -> RawClient {
    let (client, connack) = connack_for(broker, &unique("c"), properties).await;
    assert_eq!(connack.reason.0, 0, "CONNECT refused: {connack:?}");
    client
}

fn reason_string(properties: &Properties) -> Option<String> {
    properties.reason_string.as_ref().map(|text| text.to_string())
}

// ---- Response Information ----

#[tokio::test]
async fn response_information_sent_when_requested__mqtt_3_2_2_3_15() {
    let broker = broker_with("response_information_prefix = \"replies/\"");
    if skip_on_mosquitto(&broker, "Mosquitto sends no Response Information") {
        return;
    }
    let id = unique("asker");
    let (_client, connack) = connack_for(&broker, &id, &[REQUEST_RESPONSE_INFORMATION, 1]).await;
    assert_eq!(connack.reason.0, 0);
    assert_eq!(connack.properties.response_information.as_deref(), Some(format!("replies/{id}").as_str()));
}

#[tokio::test]
async fn response_information_absent_unless_requested_and_configured__mqtt_3_1_2_28() {
    let configured = broker_with("response_information_prefix = \"replies/\"");
    for request in [&[][..], &[REQUEST_RESPONSE_INFORMATION, 0][..]] {
        let (_client, connack) = connack_for(&configured, &unique("quiet"), request).await;
        assert_eq!(connack.reason.0, 0);
        assert_eq!(connack.properties.response_information, None, "not requested: {request:?}");
    }
    let unconfigured = Broker::start();
    let (_client, connack) = connack_for(&unconfigured, &unique("asker"), &[REQUEST_RESPONSE_INFORMATION, 1]).await;
    assert_eq!(connack.reason.0, 0);
    assert_eq!(connack.properties.response_information, None, "no prefix configured");
}

// ---- Reason Strings ----

/// The Reason Strings of four refusals on one broker: CONNACK (client id too long), SUBACK (invalid
/// filter), PUBACK (payload not UTF-8) and DISCONNECT (topic alias 0), the client sending `connect_properties`.
async fn refusal_reason_strings(broker: &Broker, connect_properties: &[u8]) -> [Option<String>; 4] {
    let (_refused, connack) = connack_for(broker, &"x".repeat(300), connect_properties).await;
    assert_eq!(connack.reason.0, 0x85, "Client Identifier not valid");

    let mut client = connected(broker, connect_properties).await;
    client.send(&raw::subscribe(Level::V5, 1, &[("a/#/b", 0)])).await;
    let Packet::SubAck(suback) = client.expect_packet().await else { panic!("expected SUBACK") };
    assert_eq!(suback.reasons[0].0, 0x8F, "Topic Filter invalid");

    let not_utf8 = [0xFF, 0xFE];
    let text_marked = [PAYLOAD_FORMAT_INDICATOR, 1];
    client.send(&raw::publish_with(Level::V5, b"a/b", 1, false, 7, &text_marked, &not_utf8)).await;
    let Packet::PubAck(puback) = client.expect_packet().await else { panic!("expected PUBACK") };
    assert_eq!(puback.reason.0, 0x99, "Payload format invalid");

    client.send(&raw::publish_with(Level::V5, b"a/b", 0, false, 0, &[TOPIC_ALIAS, 0, 0], b"x")).await;
    let packets = client.expect_closed().await;
    let Some(Packet::Disconnect(disconnect)) = packets.first() else { panic!("expected DISCONNECT: {packets:?}") };
    assert_eq!(disconnect.reason.0, 0x94, "Topic Alias invalid");

    [&connack.properties, &suback.properties, &puback.properties, &disconnect.properties].map(reason_string)
}

#[tokio::test]
async fn refusals_carry_reason_strings_by_default__mqtt_3_14_2_2_3() {
    let broker = Broker::start();
    if skip_on_mosquitto(&broker, "Mosquitto sends no Reason Strings") {
        return;
    }
    let texts = refusal_reason_strings(&broker, &[]).await;
    for (packet, text) in ["CONNACK", "SUBACK", "PUBACK", "DISCONNECT"].iter().zip(&texts) {
        assert!(text.as_ref().is_some_and(|text| !text.is_empty()), "{packet} without Reason String: {texts:?}");
    }
    assert!(texts[2].as_ref().is_some_and(|text| text.contains("UTF-8")), "PUBACK says why: {texts:?}");
}

#[tokio::test]
async fn reason_strings_off_in_config_sends_none__mqtt_3_14_2_2_3() {
    let broker = broker_with("reason_strings = false");
    if skip_on_mosquitto(&broker, "Mosquitto accepts client ids of 300 bytes") {
        return;
    }
    assert_eq!(refusal_reason_strings(&broker, &[]).await, [None, None, None, None]);
}

#[tokio::test]
async fn request_problem_information_0_keeps_reason_strings_off_acknowledgements__mqtt_3_1_2_29() {
    let broker = Broker::start();
    if skip_on_mosquitto(&broker, "Mosquitto sends no Reason Strings") {
        return;
    }
    let [connack, suback, puback, disconnect] =
        refusal_reason_strings(&broker, &[REQUEST_PROBLEM_INFORMATION, 0]).await;
    assert_eq!((suback, puback), (None, None), "only CONNACK, DISCONNECT and PUBLISH may carry one");
    assert!(connack.is_some() && disconnect.is_some(), "CONNACK and DISCONNECT still may [MQTT-3.1.2-29]");
}

/// Size of a packet as the broker encodes it for a v5 client.
fn encoded_len(packet: &Packet) -> usize {
    let mut out = bytes::BytesMut::new();
    encode_packet(packet, ProtocolVersion::V5, &mut out).expect("a packet the broker sent encodes again");
    out.len()
}

#[tokio::test]
async fn reason_strings_left_out_beyond_the_client_maximum_packet_size__mqtt_3_1_2_25() {
    let broker = Broker::start();
    const MAXIMUM_PACKET_SIZE: usize = 24;
    let small = [MAXIMUM_PACKET_SIZE_ID, 0, 0, 0, MAXIMUM_PACKET_SIZE as u8];
    let [connack, suback, puback, disconnect] = refusal_reason_strings(&broker, &small).await;
    assert_eq!([connack, suback, puback, disconnect], [None, None, None, None], "every refusal still arrives, bare");

    let mut client = connected(&broker, &small).await;
    client.send(&raw::subscribe(Level::V5, 1, &[("a/#/b", 0), ("c/#/d", 0)])).await;
    let suback = client.expect_packet().await;
    assert_eq!(suback.ack_reasons(), vec![0x8F, 0x8F]);
    assert!(encoded_len(&suback) <= MAXIMUM_PACKET_SIZE, "{suback:?}");
}

// ---- Server Reference ----

#[tokio::test]
async fn configured_redirect_refuses_v5_with_0x9c_and_server_reference__mqtt_4_11() {
    let broker = broker_with("server_reference = \"other.example:1883\"");
    if skip_on_mosquitto(&broker, "Mosquitto has no redirect") {
        return;
    }
    let (mut client, connack) = connack_for(&broker, &unique("moved"), &[]).await;
    assert_eq!(connack.reason.0, 0x9C, "Use another server");
    assert_eq!(connack.properties.server_reference.as_deref(), Some("other.example:1883"));
    client.expect_closed().await;

    // 3.1.1 has no redirect: return code 3, Server unavailable, and nothing it cannot decode.
    let mut old = RawClient::connect(broker.port(), Level::V311).await;
    old.send(&raw::connect(Level::V311, &unique("old"), true, 30, None)).await;
    let packets = old.expect_closed().await;
    // The codec reads 3.1.1 return codes as their v5 reasons: return code 3 is 0x88 Server unavailable.
    assert_eq!(packets.iter().map(|packet| packet.connack()).collect::<Vec<_>>(), vec![(false, 0x88)]);
}

#[tokio::test]
async fn no_server_reference_without_a_redirect__mqtt_4_11() {
    let broker = Broker::start();
    let (mut client, connack) = connack_for(&broker, &unique("stays"), &[]).await;
    assert_eq!(connack.reason.0, 0);
    assert_eq!(connack.properties.server_reference, None);
    client.expect_alive().await;
}

// ---- Maximum QoS and Retain Available ----

#[tokio::test]
async fn maximum_qos_1_accepts_qos1_and_refuses_a_qos2_will_0x9b__mqtt_3_2_2_12() {
    let broker = Broker::start_with(&BrokerLimits { qos_max: Some(1), ..Default::default() });
    let mut client = connected(&broker, &[]).await;
    client.send(&raw::publish(Level::V5, &unique("qos1"), 1, false, 3, b"x")).await;
    let Packet::PubAck(puback) = client.expect_packet().await else { panic!("expected PUBACK") };
    assert!(puback.reason.0 < 0x80, "QoS 1 within the maximum is accepted: {puback:?}");

    let will = RawWill { topic: "will/qos2", payload: b"w", qos: 2, retain: false };
    let mut refused = RawClient::connect(broker.port(), Level::V5).await;
    refused.send(&raw::connect(Level::V5, &unique("will2"), true, 30, Some(&will))).await;
    let packets = refused.expect_closed().await;
    assert_eq!(packets.first().map(|packet| packet.connack().1), Some(0x9B), "QoS not supported: {packets:?}");
}

#[tokio::test]
async fn retain_unavailable_accepts_plain_publish_and_refuses_a_retained_will_0x9a__mqtt_3_2_2_13() {
    let broker = Broker::start_with(&BrokerLimits { retain_available: Some(false), ..Default::default() });
    let mut client = connected(&broker, &[]).await;
    client.send(&raw::publish(Level::V5, &unique("plain"), 1, false, 3, b"x")).await;
    let Packet::PubAck(puback) = client.expect_packet().await else { panic!("expected PUBACK") };
    assert!(puback.reason.0 < 0x80, "a PUBLISH without retain is accepted: {puback:?}");

    let will = RawWill { topic: "will/retained", payload: b"w", qos: 0, retain: true };
    let mut refused = RawClient::connect(broker.port(), Level::V5).await;
    refused.send(&raw::connect(Level::V5, &unique("will-retain"), true, 30, Some(&will))).await;
    let packets = refused.expect_closed().await;
    assert_eq!(packets.first().map(|packet| packet.connack().1), Some(0x9A), "Retain not supported: {packets:?}");
}

// ---- Availability flags ----

/// SUBSCRIBE of one filter with a Subscription Identifier.
fn subscribe_with_id(packet_id: u16, filter: &str, id: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend(raw::properties(&[SUBSCRIPTION_IDENTIFIER, id]));
    body.extend(raw::string(filter));
    body.push(1);
    raw::packet(0x82, &body)
}

#[tokio::test]
async fn features_announced_available_by_default_and_served__mqtt_3_2_2_3() {
    let broker = Broker::start();
    let (mut client, connack) = connack_for(&broker, &unique("flags"), &[]).await;
    let properties = &connack.properties;
    // Absent means available (v5 sections 3.2.2.3.12-14).
    for (name, flag) in [
        ("wildcard", properties.wildcard_subscription_available),
        ("subscription identifier", properties.subscription_identifier_available),
        ("shared", properties.shared_subscription_available),
    ] {
        assert_ne!(flag, Some(0), "{name} subscriptions announced unavailable");
    }
    let root = unique("flags");
    client.send(&raw::subscribe(Level::V5, 1, &[(&format!("{root}/+"), 1), (&format!("$share/g/{root}"), 1)])).await;
    assert_eq!(client.expect_packet().await.ack_reasons(), vec![1, 1]);
    client.send(&subscribe_with_id(2, &format!("{root}/id"), 9)).await;
    assert_eq!(client.expect_packet().await.ack_reasons(), vec![1]);
}

#[tokio::test]
async fn features_turned_off_are_announced_and_refused_in_suback__mqtt_3_2_2_3() {
    let broker = broker_with(
        "wildcard_subscriptions_available = false\nsubscription_identifiers_available = false\nshared_subscriptions_available = false",
    );
    if skip_on_mosquitto(&broker, "the config is shardmq's") {
        return;
    }
    let (mut client, connack) = connack_for(&broker, &unique("flags"), &[]).await;
    let properties = &connack.properties;
    assert_eq!(properties.wildcard_subscription_available, Some(0));
    assert_eq!(properties.subscription_identifier_available, Some(0));
    assert_eq!(properties.shared_subscription_available, Some(0));
    let root = unique("flags");
    let filters = [(format!("{root}/+"), 1), (format!("$share/g/{root}"), 1), (root.clone(), 1)];
    let filters: Vec<(&str, u8)> = filters.iter().map(|(filter, options)| (filter.as_str(), *options)).collect();
    client.send(&raw::subscribe(Level::V5, 1, &filters)).await;
    assert_eq!(client.expect_packet().await.ack_reasons(), vec![0xA2, 0x9E, 1], "wildcard, shared, plain");
    client.send(&subscribe_with_id(2, &format!("{root}/id"), 9)).await;
    assert_eq!(client.expect_packet().await.ack_reasons(), vec![0xA1], "Subscription Identifiers not supported");
}

// ---- Server Keep Alive ----

#[tokio::test]
async fn client_silent_past_the_server_keep_alive_is_disconnected_0x8d__mqtt_3_1_2_21() {
    let broker = Broker::start_with(&BrokerLimits { keepalive_max_secs: Some(1), ..Default::default() });
    if skip_on_mosquitto(&broker, "Mosquitto closes without DISCONNECT 0x8D") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let Packet::ConnAck(connack) = client.handshake(&raw::connect(Level::V5, &unique("slow"), true, 60, None)).await
    else {
        unreachable!("handshake returns CONNACK")
    };
    let connected_at = Instant::now();
    assert_eq!(connack.properties.server_keep_alive_secs, Some(1), "asked 60 s, capped to 1 s");
    client.expect_disconnect_and_close(0x8D).await;
    let silent_for = connected_at.elapsed();
    assert!(silent_for >= Duration::from_millis(1400), "closed after {silent_for:?}, before 1.5 x 1 s");
    assert!(silent_for < Duration::from_secs(4), "closed after {silent_for:?}, not held to the 1 s Server Keep Alive");
}
