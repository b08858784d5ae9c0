//! Valid edge cases, written as raw bytes, each with the packet it must decode to: every packet type at every
//! protocol level, Remaining Length boundaries, empty payloads and zero-length strings where the spec allows
//! them, every property in every packet that may carry it. Each case is also decoded byte by byte, re-encoded
//! and decoded again, and all cases of a version are decoded back to back from one buffer.

use bytes::{Bytes, BytesMut};
use shardmq::protocol::{
    decode_packet, encode_packet, Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResponse,
    Publish, QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

use ProtocolVersion::{V3_1, V3_1_1, V5};

mod codec_support;
use codec_support::{pkt, props, remaining_length, s};

const MAX_PACKET_SIZE_BYTES: u32 = 4 << 20;

struct Case {
    name: String,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    expected: Packet,
}

fn ack(packet_type: u8, packet: PubResponse) -> Packet {
    match packet_type {
        4 => Packet::PubAck(packet),
        5 => Packet::PubRec(packet),
        6 => Packet::PubRel(packet),
        _ => Packet::PubComp(packet),
    }
}

fn connect(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        version,
        clean_start: true,
        keep_alive_secs: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

fn publish(qos: QoS, topic: &str, packet_id: u16, payload: &'static [u8]) -> Publish {
    Publish { qos, topic: topic.into(), packet_id, payload: Bytes::from_static(payload), ..Publish::default() }
}

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions { qos, ..SubscriptionOptions::default() }
}

struct Table(Vec<Case>);

impl Table {
    fn add(&mut self, name: &str, version: ProtocolVersion, bytes: Vec<u8>, expected: Packet) {
        self.0.push(Case { name: name.to_string(), version, bytes, expected });
    }
}

/// One of each packet type, in its plainest form, at `version`.
fn every_packet_type(t: &mut Table, version: ProtocolVersion) {
    let v = version.level();
    let p: &[u8] = if version.is_v5() { &[0] } else { &[] };
    let (name, level): (&[u8], u8) = if version == V3_1 { (b"MQIsdp", 3) } else { (b"MQTT", v) };
    t.add(
        &format!("connect_minimal_v{v}"),
        version,
        pkt(0x10, &[&s(name), &[level, 0x02, 0, 60], p, &s(b"c")]),
        Packet::Connect(Box::new(connect(version, "c"))),
    );
    t.add(
        &format!("connack_session_present_v{v}"),
        version,
        pkt(0x20, &[&[1, 0], p]),
        Packet::ConnAck(ConnAck { session_present: true, ..ConnAck::default() }),
    );
    t.add(
        &format!("publish_qos0_v{v}"),
        version,
        pkt(0x30, &[&s(b"a/b"), p, b"hi"]),
        Packet::Publish(publish(QoS::AtMostOnce, "a/b", 0, b"hi")),
    );
    t.add(
        &format!("publish_qos1_retain_v{v}"),
        version,
        pkt(0x33, &[&s(b"a/b"), &[0, 9], p, b"hi"]),
        Packet::Publish(Publish { retain: true, ..publish(QoS::AtLeastOnce, "a/b", 9, b"hi") }),
    );
    t.add(
        &format!("publish_qos2_dup_v{v}"),
        version,
        pkt(0x3C, &[&s(b"a/b"), &[0xFF, 0xFF], p, b"hi"]),
        Packet::Publish(Publish { dup: true, ..publish(QoS::ExactlyOnce, "a/b", 0xFFFF, b"hi") }),
    );
    for (type_bits, label) in [(4u8, "puback"), (5, "pubrec"), (6, "pubrel"), (7, "pubcomp")] {
        let first_byte = type_bits << 4 | if type_bits == 6 { 2 } else { 0 };
        t.add(
            &format!("{label}_packet_id_only_v{v}"),
            version,
            vec![first_byte, 2, 0x12, 0x34],
            ack(type_bits, PubResponse { packet_id: 0x1234, ..PubResponse::default() }),
        );
    }
    t.add(
        &format!("subscribe_one_filter_v{v}"),
        version,
        pkt(0x82, &[&[0, 1], p, &s(b"a/+"), &[1]]),
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![("a/+".into(), options(QoS::AtLeastOnce))],
            ..Subscribe::default()
        }),
    );
    t.add(
        &format!("suback_granted_and_failed_v{v}"),
        version,
        pkt(0x90, &[&[0, 1], p, &[0, 1, 2, 0x80]]),
        Packet::SubAck(SubAck {
            packet_id: 1,
            reasons: vec![ReasonCode(0), ReasonCode(1), ReasonCode(2), ReasonCode(0x80)],
            ..SubAck::default()
        }),
    );
    t.add(
        &format!("unsubscribe_two_filters_v{v}"),
        version,
        pkt(0xA2, &[&[0, 2], p, &s(b"a/#"), &s(b"b")]),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec!["a/#".into(), "b".into()],
            ..Unsubscribe::default()
        }),
    );
    let unsuback_reasons: &[u8] = if version.is_v5() { &[0, 0x11] } else { &[] };
    t.add(
        &format!("unsuback_v{v}"),
        version,
        pkt(0xB0, &[&[0, 2], p, unsuback_reasons]),
        Packet::UnsubAck(UnsubAck {
            packet_id: 2,
            reasons: unsuback_reasons.iter().map(|&code| ReasonCode(code)).collect(),
            ..UnsubAck::default()
        }),
    );
    t.add(&format!("pingreq_v{v}"), version, vec![0xC0, 0], Packet::PingReq);
    t.add(&format!("pingresp_v{v}"), version, vec![0xD0, 0], Packet::PingResp);
    t.add(&format!("disconnect_empty_v{v}"), version, vec![0xE0, 0], Packet::Disconnect(Disconnect::default()));
}

fn v5_forms(t: &mut Table) {
    t.add("auth_empty_means_success_3_15_2_1", V5, vec![0xF0, 0], Packet::Auth(Auth::default()));
    t.add(
        "auth_continue_without_properties_3_15_2_2",
        V5,
        vec![0xF0, 1, 0x18],
        Packet::Auth(Auth { reason: ReasonCode::CONTINUE_AUTHENTICATION, ..Auth::default() }),
    );
    t.add(
        "disconnect_reason_without_properties_3_14_2_2",
        V5,
        vec![0xE0, 1, 0x04],
        Packet::Disconnect(Disconnect { reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, ..Disconnect::default() }),
    );
    t.add(
        "disconnect_reason_and_empty_properties",
        V5,
        vec![0xE0, 2, 0x8E, 0],
        Packet::Disconnect(Disconnect { reason: ReasonCode::SESSION_TAKEN_OVER, ..Disconnect::default() }),
    );
    t.add(
        "puback_reason_without_properties_3_4_2_1",
        V5,
        vec![0x40, 3, 0, 7, 0x10],
        Packet::PubAck(PubResponse {
            packet_id: 7,
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            ..PubResponse::default()
        }),
    );
    t.add(
        "pubrel_reason_and_empty_properties",
        V5,
        vec![0x62, 4, 0, 7, 0x92, 0],
        Packet::PubRel(PubResponse {
            packet_id: 7,
            reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            ..PubResponse::default()
        }),
    );
    t.add(
        "connack_v5_refused_bad_credentials",
        V5,
        vec![0x20, 3, 0, 0x86, 0],
        Packet::ConnAck(ConnAck { reason: ReasonCode::BAD_USER_NAME_OR_PASSWORD, ..ConnAck::default() }),
    );
    let all_options =
        SubscriptionOptions { qos: QoS::ExactlyOnce, no_local: true, retain_as_published: true, retain_handling: 2 };
    t.add(
        "subscribe_v5_every_option_bit_3_8_3_1",
        V5,
        pkt(0x82, &[&[0, 3, 0], &s(b"a"), &[0x2E], &s(b"b"), &[0x10], &s(b"$share/g/c/#"), &[0x09]]),
        Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![
                ("a".into(), all_options),
                ("b".into(), SubscriptionOptions { retain_handling: 1, ..SubscriptionOptions::default() }),
                (
                    "$share/g/c/#".into(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        retain_as_published: true,
                        ..SubscriptionOptions::default()
                    },
                ),
            ],
            ..Subscribe::default()
        }),
    );
    t.add(
        "publish_empty_topic_with_alias_3_3_2_3_4",
        V5,
        pkt(0x30, &[&s(b""), &props(&[&[0x23, 0, 5]]), b"x"]),
        Packet::Publish(Publish {
            topic: "".into(),
            properties: Properties { topic_alias: Some(5), ..Properties::default() },
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        }),
    );
    t.add(
        "publish_several_subscription_identifiers_3_3_4",
        V5,
        pkt(0x30, &[&s(b"t"), &props(&[&[0x0B, 1, 0x0B, 0x80, 0x01, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F]])]),
        Packet::Publish(Publish {
            topic: "t".into(),
            properties: Properties {
                subscription_identifiers: [1, 128, 268_435_455].into_iter().collect(),
                ..Properties::default()
            },
            ..Publish::default()
        }),
    );
    t.add(
        "publish_user_properties_repeat_names_in_order_3_3_2_3_7",
        V5,
        pkt(
            0x30,
            &[&s(b"t"), &props(&[&[0x26], &s(b"k"), &s(b"1"), &[0x26], &s(b"k"), &s(b"2"), &[0x26], &s(b""), &s(b"")])],
        ),
        Packet::Publish(Publish {
            topic: "t".into(),
            properties: Properties {
                user_properties: vec![("k".into(), "1".into()), ("k".into(), "2".into()), ("".into(), "".into())],
                ..Properties::default()
            },
            ..Publish::default()
        }),
    );
    t.add(
        "connect_v5_password_without_username_3_1_2_9",
        V5,
        pkt(0x10, &[&s(b"MQTT"), &[5, 0x42, 0, 0, 0], &s(b"c"), &s(b"secret")]),
        Packet::Connect(Box::new(Connect {
            keep_alive_secs: 0,
            password: Some(Bytes::from_static(b"secret")),
            ..connect(V5, "c")
        })),
    );
    t.add(
        "suback_v5_every_failure_reason",
        V5,
        pkt(0x90, &[&[0, 4, 0], &[0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]]),
        Packet::SubAck(SubAck {
            packet_id: 4,
            reasons: [0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2].into_iter().map(ReasonCode).collect(),
            ..SubAck::default()
        }),
    );
}

fn connect_edge_cases(t: &mut Table) {
    t.add(
        "connect_v4_empty_client_id_3_1_3_6",
        V3_1_1,
        pkt(0x10, &[&s(b"MQTT"), &[4, 0x02, 0, 60], &s(b"")]),
        Packet::Connect(Box::new(connect(V3_1_1, ""))),
    );
    t.add(
        "connect_v5_empty_client_id_not_clean",
        V5,
        pkt(0x10, &[&s(b"MQTT"), &[5, 0x00, 0xFF, 0xFF, 0], &s(b"")]),
        Packet::Connect(Box::new(Connect { clean_start: false, keep_alive_secs: 0xFFFF, ..connect(V5, "") })),
    );
    t.add(
        "connect_v4_empty_username_and_password",
        V3_1_1,
        pkt(0x10, &[&s(b"MQTT"), &[4, 0xC2, 0, 60], &s(b"c"), &s(b""), &s(b"")]),
        Packet::Connect(Box::new(Connect {
            username: Some("".into()),
            password: Some(Bytes::new()),
            ..connect(V3_1_1, "c")
        })),
    );
    t.add(
        "connect_v3_every_flag",
        V3_1,
        pkt(
            0x10,
            &[&s(b"MQIsdp"), &[3, 0xF6, 0, 10], &s(b"client"), &s(b"w/t"), &s(b"bye"), &s(b"user"), &s(b"\x00\xFF")],
        ),
        Packet::Connect(Box::new(Connect {
            keep_alive_secs: 10,
            will: Some(Will {
                topic: "w/t".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: Properties::default(),
            }),
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"\x00\xFF")),
            ..connect(V3_1, "client")
        })),
    );
    t.add(
        "connect_v4_will_empty_payload_qos1",
        V3_1_1,
        pkt(0x10, &[&s(b"MQTT"), &[4, 0x0E, 0, 60], &s(b"c"), &s(b"w"), &s(b"")]),
        Packet::Connect(Box::new(Connect {
            will: Some(Will {
                topic: "w".into(),
                payload: Bytes::new(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
            }),
            ..connect(V3_1_1, "c")
        })),
    );
    t.add(
        "connect_v4_unicode_client_id",
        V3_1_1,
        pkt(0x10, &[&s(b"MQTT"), &[4, 0x02, 0, 60], &s("Zürich-東京-𝄞".as_bytes())]),
        Packet::Connect(Box::new(connect(V3_1_1, "Zürich-東京-𝄞"))),
    );
}

fn publish_edge_cases(t: &mut Table) {
    for (version, p) in [(V3_1_1, &[][..]), (V5, &[0u8][..])] {
        let v = version.level();
        t.add(
            &format!("publish_empty_payload_qos0_v{v}"),
            version,
            pkt(0x30, &[&s(b"t"), p]),
            Packet::Publish(publish(QoS::AtMostOnce, "t", 0, b"")),
        );
        t.add(
            &format!("publish_empty_payload_qos2_v{v}"),
            version,
            pkt(0x34, &[&s(b"t"), &[0, 1], p]),
            Packet::Publish(publish(QoS::ExactlyOnce, "t", 1, b"")),
        );
        t.add(
            &format!("publish_topic_slash_v{v}"),
            version,
            pkt(0x30, &[&s(b"/"), p]),
            Packet::Publish(publish(QoS::AtMostOnce, "/", 0, b"")),
        );
        t.add(
            &format!("publish_dollar_topic_v{v}"),
            version,
            pkt(0x31, &[&s(b"$SYS/broker/uptime"), p, b"1"]),
            Packet::Publish(Publish { retain: true, ..publish(QoS::AtMostOnce, "$SYS/broker/uptime", 0, b"1") }),
        );
        t.add(
            &format!("publish_unicode_topic_v{v}"),
            version,
            pkt(0x30, &[&s("température/°C".as_bytes()), p]),
            Packet::Publish(publish(QoS::AtMostOnce, "température/°C", 0, b"")),
        );
        t.add(
            &format!("publish_binary_payload_v{v}"),
            version,
            pkt(0x30, &[&s(b"t"), p, b"\x00\xFF\x00"]),
            Packet::Publish(publish(QoS::AtMostOnce, "t", 0, b"\x00\xFF\x00")),
        );
    }
    // Remaining Length boundaries: 1, 2, 3 and 4 bytes.
    for remaining in [127usize, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
        let payload: &'static [u8] = Box::leak(vec![0xA5u8; remaining - 3].into_boxed_slice());
        let bytes = [&[0x30][..], &remaining_length(remaining), &s(b"t"), payload].concat();
        t.add(
            &format!("publish_remaining_length_{remaining}_2_1_4"),
            V3_1_1,
            bytes,
            Packet::Publish(publish(QoS::AtMostOnce, "t", 0, payload)),
        );
    }
    let long_topic = "x".repeat(65_535);
    let topic: &'static str = Box::leak(long_topic.into_boxed_str());
    t.add(
        "publish_topic_65535_bytes_1_5_4",
        V3_1_1,
        pkt(0x30, &[&s(topic.as_bytes())]),
        Packet::Publish(publish(QoS::AtMostOnce, topic, 0, b"")),
    );
}

/// Where a property can sit; builds a packet around a property section.
#[derive(Clone, Copy, Debug)]
enum Scope {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

const ALL_SCOPES: [Scope; 14] = [
    Scope::Connect,
    Scope::Will,
    Scope::ConnAck,
    Scope::Publish,
    Scope::PubAck,
    Scope::PubRec,
    Scope::PubRel,
    Scope::PubComp,
    Scope::Subscribe,
    Scope::SubAck,
    Scope::Unsubscribe,
    Scope::UnsubAck,
    Scope::Disconnect,
    Scope::Auth,
];

fn packet_with_properties(scope: Scope, section: &[u8], properties: Properties) -> (Vec<u8>, Packet) {
    let response = |packet_type: u8| {
        let first_byte = packet_type << 4 | if packet_type == 6 { 2 } else { 0 };
        let packet =
            ack(packet_type, PubResponse { packet_id: 1, reason: ReasonCode::SUCCESS, properties: properties.clone() });
        (pkt(first_byte, &[&[0, 1, 0], section]), packet)
    };
    match scope {
        Scope::Connect => (
            pkt(0x10, &[&s(b"MQTT"), &[5, 0x02, 0, 60], section, &s(b"c")]),
            Packet::Connect(Box::new(Connect { properties, ..connect(V5, "c") })),
        ),
        Scope::Will => (
            pkt(0x10, &[&s(b"MQTT"), &[5, 0x06, 0, 60, 0], &s(b"c"), section, &s(b"w"), &s(b"m")]),
            Packet::Connect(Box::new(Connect {
                will: Some(Will {
                    topic: "w".into(),
                    payload: Bytes::from_static(b"m"),
                    qos: QoS::AtMostOnce,
                    retain: false,
                    properties,
                }),
                ..connect(V5, "c")
            })),
        ),
        Scope::ConnAck => {
            (pkt(0x20, &[&[0, 0], section]), Packet::ConnAck(ConnAck { properties, ..ConnAck::default() }))
        }
        Scope::Publish => (
            pkt(0x30, &[&s(b"t"), section, b"p"]),
            Packet::Publish(Publish { properties, ..publish(QoS::AtMostOnce, "t", 0, b"p") }),
        ),
        Scope::PubAck => response(4),
        Scope::PubRec => response(5),
        Scope::PubRel => response(6),
        Scope::PubComp => response(7),
        Scope::Subscribe => (
            pkt(0x82, &[&[0, 1], section, &s(b"a"), &[0]]),
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![("a".into(), options(QoS::AtMostOnce))],
                properties,
            }),
        ),
        Scope::SubAck => (
            pkt(0x90, &[&[0, 1], section, &[0]]),
            Packet::SubAck(SubAck { packet_id: 1, reasons: vec![ReasonCode(0)], properties }),
        ),
        Scope::Unsubscribe => (
            pkt(0xA2, &[&[0, 1], section, &s(b"a")]),
            Packet::Unsubscribe(Unsubscribe { packet_id: 1, filters: vec!["a".into()], properties }),
        ),
        Scope::UnsubAck => (
            pkt(0xB0, &[&[0, 1], section, &[0]]),
            Packet::UnsubAck(UnsubAck { packet_id: 1, reasons: vec![ReasonCode(0)], properties }),
        ),
        Scope::Disconnect => {
            (pkt(0xE0, &[&[0], section]), Packet::Disconnect(Disconnect { properties, ..Disconnect::default() }))
        }
        Scope::Auth => (
            pkt(0xF0, &[&[0x18], section]),
            Packet::Auth(Auth { reason: ReasonCode::CONTINUE_AUTHENTICATION, properties }),
        ),
    }
}

/// Every property, with its raw encoding, the scopes that allow it (MQTT 5 table 2.2.2.2) and its value.
fn property_table() -> Vec<(&'static str, Vec<u8>, Vec<Scope>, Properties)> {
    use Scope::*;
    let message = vec![Will, Publish];
    let reason_string_scopes = vec![ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth];
    let p = Properties::default;
    vec![
        (
            "payload_format_indicator",
            vec![0x01, 1],
            message.clone(),
            Properties { payload_format_indicator: Some(1), ..p() },
        ),
        (
            "message_expiry_interval",
            vec![0x02, 0, 0, 1, 0],
            message.clone(),
            Properties { message_expiry_interval_secs: Some(256), ..p() },
        ),
        (
            "content_type",
            [&[0x03][..], &s(b"text/plain")].concat(),
            message.clone(),
            Properties { content_type: Some("text/plain".into()), ..p() },
        ),
        (
            "response_topic",
            [&[0x08][..], &s(b"reply/to")].concat(),
            message.clone(),
            Properties { response_topic: Some("reply/to".into()), ..p() },
        ),
        (
            "correlation_data_empty",
            [&[0x09][..], &s(b"")].concat(),
            message,
            Properties { correlation_data: Some(Bytes::new()), ..p() },
        ),
        (
            "subscription_identifier_max",
            vec![0x0B, 0xFF, 0xFF, 0xFF, 0x7F],
            vec![Publish, Subscribe],
            Properties { subscription_identifiers: [268_435_455].into_iter().collect(), ..p() },
        ),
        (
            "session_expiry_interval_max",
            vec![0x11, 0xFF, 0xFF, 0xFF, 0xFF],
            vec![Connect, ConnAck, Disconnect],
            Properties { session_expiry_interval_secs: Some(u32::MAX), ..p() },
        ),
        (
            "assigned_client_identifier",
            [&[0x12][..], &s(b"auto-1")].concat(),
            vec![ConnAck],
            Properties { assigned_client_identifier: Some("auto-1".into()), ..p() },
        ),
        ("server_keep_alive_0", vec![0x13, 0, 0], vec![ConnAck], Properties { server_keep_alive_secs: Some(0), ..p() }),
        (
            "authentication_method",
            [&[0x15][..], &s(b"SCRAM-SHA-1")].concat(),
            vec![Connect, ConnAck, Auth],
            Properties { authentication_method: Some("SCRAM-SHA-1".into()), ..p() },
        ),
        (
            "authentication_method_and_data",
            [&[0x15][..], &s(b"m"), &[0x16], &s(b"\x00\x01")].concat(),
            vec![Connect, ConnAck, Auth],
            Properties {
                authentication_method: Some("m".into()),
                authentication_data: Some(Bytes::from_static(b"\x00\x01")),
                ..p()
            },
        ),
        (
            "request_problem_information_0",
            vec![0x17, 0],
            vec![Connect],
            Properties { request_problem_information: Some(0), ..p() },
        ),
        (
            "will_delay_interval",
            vec![0x18, 0, 0, 0, 30],
            vec![Will],
            Properties { will_delay_interval_secs: Some(30), ..p() },
        ),
        (
            "request_response_information_1",
            vec![0x19, 1],
            vec![Connect],
            Properties { request_response_information: Some(1), ..p() },
        ),
        (
            "response_information",
            [&[0x1A][..], &s(b"resp/")].concat(),
            vec![ConnAck],
            Properties { response_information: Some("resp/".into()), ..p() },
        ),
        (
            "server_reference",
            [&[0x1C][..], &s(b"other:1883")].concat(),
            vec![ConnAck, Disconnect],
            Properties { server_reference: Some("other:1883".into()), ..p() },
        ),
        (
            "reason_string",
            [&[0x1F][..], &s(b"why")].concat(),
            reason_string_scopes,
            Properties { reason_string: Some("why".into()), ..p() },
        ),
        (
            "receive_maximum_max",
            vec![0x21, 0xFF, 0xFF],
            vec![Connect, ConnAck],
            Properties { receive_maximum: Some(u16::MAX), ..p() },
        ),
        (
            "topic_alias_maximum_0",
            vec![0x22, 0, 0],
            vec![Connect, ConnAck],
            Properties { topic_alias_maximum: Some(0), ..p() },
        ),
        // Topic Alias 0 is invalid, but that is the connection layer's call (it replies 0x94); the codec decodes it.
        ("topic_alias_0", vec![0x23, 0, 0], vec![Publish], Properties { topic_alias: Some(0), ..p() }),
        ("maximum_qos_0", vec![0x24, 0], vec![ConnAck], Properties { maximum_qos: Some(0), ..p() }),
        ("retain_available_1", vec![0x25, 1], vec![ConnAck], Properties { retain_available: Some(1), ..p() }),
        (
            "user_property",
            [&[0x26][..], &s(b"region"), &s(b"eu")].concat(),
            ALL_SCOPES.to_vec(),
            Properties { user_properties: vec![("region".into(), "eu".into())], ..p() },
        ),
        (
            "maximum_packet_size_max",
            vec![0x27, 0xFF, 0xFF, 0xFF, 0xFF],
            vec![Connect, ConnAck],
            Properties { maximum_packet_size: Some(u32::MAX), ..p() },
        ),
        (
            "wildcard_subscription_available_0",
            vec![0x28, 0],
            vec![ConnAck],
            Properties { wildcard_subscription_available: Some(0), ..p() },
        ),
        (
            "subscription_identifier_available_1",
            vec![0x29, 1],
            vec![ConnAck],
            Properties { subscription_identifier_available: Some(1), ..p() },
        ),
        (
            "shared_subscription_available_0",
            vec![0x2A, 0],
            vec![ConnAck],
            Properties { shared_subscription_available: Some(0), ..p() },
        ),
    ]
}

fn property_cases(t: &mut Table) {
    for (name, raw, scopes, properties) in property_table() {
        for scope in scopes {
            let (bytes, expected) = packet_with_properties(scope, &props(&[&raw]), properties.clone());
            t.add(&format!("property_{name}_in_{scope:?}"), V5, bytes, expected);
        }
    }
    // Every property a CONNACK may carry, all at once.
    let mut raw = Vec::new();
    let mut all = Properties::default();
    for (name, bytes, scopes, properties) in property_table() {
        if scopes.iter().any(|scope| matches!(scope, Scope::ConnAck)) && name != "authentication_method" {
            raw.extend_from_slice(&bytes);
            merge(&mut all, properties);
        }
    }
    let (bytes, expected) = packet_with_properties(Scope::ConnAck, &props(&[&raw]), all);
    t.add("connack_every_allowed_property_at_once", V5, bytes, expected);
}

/// Copies the fields set in `from` into `into`.
fn merge(into: &mut Properties, from: Properties) {
    macro_rules! take {
        ($($field:ident),*) => { $(if from.$field.is_some() { into.$field = from.$field; })* };
    }
    take!(
        payload_format_indicator,
        message_expiry_interval_secs,
        content_type,
        response_topic,
        correlation_data,
        session_expiry_interval_secs,
        assigned_client_identifier,
        server_keep_alive_secs,
        authentication_method,
        authentication_data,
        request_problem_information,
        will_delay_interval_secs,
        request_response_information,
        response_information,
        server_reference,
        reason_string,
        receive_maximum,
        topic_alias_maximum,
        topic_alias,
        maximum_qos,
        retain_available,
        maximum_packet_size,
        wildcard_subscription_available,
        subscription_identifier_available,
        shared_subscription_available
    );
    into.subscription_identifiers.extend(from.subscription_identifiers);
    into.user_properties.extend(from.user_properties);
}

fn all_cases() -> Vec<Case> {
    let mut table = Table(Vec::new());
    for version in [V3_1, V3_1_1, V5] {
        every_packet_type(&mut table, version);
    }
    v5_forms(&mut table);
    connect_edge_cases(&mut table);
    publish_edge_cases(&mut table);
    property_cases(&mut table);
    table.0
}

#[test]
fn table_has_at_least_150_distinct_cases() {
    let cases = all_cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    eprintln!("{} valid cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|case| case.name.as_str()).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(count, names.len(), "case names are unique");
}

#[test]
fn every_valid_packet_decodes_to_its_expected_value() {
    let mut failures = Vec::new();
    for case in all_cases() {
        let mut buf = BytesMut::from(&case.bytes[..]);
        match decode_packet(&mut buf, case.version, MAX_PACKET_SIZE_BYTES) {
            Ok(Some(packet)) if packet == case.expected && buf.is_empty() => {}
            other => failures.push(format!(
                "{}: got {:?} ({} bytes left)",
                case.name,
                other.map(|p| p.map(|p| p.packet_type())),
                buf.len()
            )),
        }
    }
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_valid_packet_decodes_the_same_when_streamed() {
    for case in all_cases() {
        // Byte by byte for small packets, in odd-sized chunks for the large ones.
        let chunk = if case.bytes.len() > 4096 { 65_521 } else { 1 };
        let mut buf = BytesMut::new();
        let mut decoded = None;
        for piece in case.bytes.chunks(chunk) {
            assert!(decoded.is_none(), "{}: decoded before the last byte", case.name);
            buf.extend_from_slice(piece);
            decoded = decode_packet(&mut buf, case.version, MAX_PACKET_SIZE_BYTES).expect(&case.name);
        }
        assert_eq!(decoded.as_ref(), Some(&case.expected), "{}", case.name);
    }
}

#[test]
fn every_valid_packet_re_encodes_to_an_equal_packet() {
    for case in all_cases() {
        let mut out = BytesMut::new();
        encode_packet(&case.expected, case.version, &mut out).expect(&case.name);
        let decoded = decode_packet(&mut out, case.version, MAX_PACKET_SIZE_BYTES).expect(&case.name);
        assert_eq!(decoded.as_ref(), Some(&case.expected), "{}", case.name);
        assert!(out.is_empty(), "{}", case.name);
    }
}

#[test]
fn back_to_back_packets_decode_in_order_from_one_buffer() {
    for version in [V3_1, V3_1_1, V5] {
        let cases: Vec<Case> = all_cases().into_iter().filter(|case| case.version == version).collect();
        let mut buf = BytesMut::new();
        for case in &cases {
            buf.extend_from_slice(&case.bytes);
        }
        for case in &cases {
            let decoded = decode_packet(&mut buf, version, MAX_PACKET_SIZE_BYTES).expect(&case.name);
            assert_eq!(decoded.as_ref(), Some(&case.expected), "{}", case.name);
        }
        assert!(buf.is_empty());
    }
}

#[test]
fn encoder_chooses_the_shortest_v5_acknowledgement_forms() {
    let cases = [
        (Packet::PubAck(PubResponse { packet_id: 1, ..PubResponse::default() }), vec![0x40, 2, 0, 1]),
        (
            Packet::PubRec(PubResponse {
                packet_id: 1,
                reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
                ..PubResponse::default()
            }),
            vec![0x50, 3, 0, 1, 0x10],
        ),
        (Packet::Disconnect(Disconnect::default()), vec![0xE0, 0]),
        (
            Packet::Disconnect(Disconnect { reason: ReasonCode::SERVER_SHUTTING_DOWN, ..Disconnect::default() }),
            vec![0xE0, 1, 0x8B],
        ),
        (Packet::Auth(Auth::default()), vec![0xF0, 0]),
    ];
    for (packet, expected) in cases {
        let mut out = BytesMut::new();
        encode_packet(&packet, V5, &mut out).expect("encodes");
        assert_eq!(&out[..], &expected[..], "{packet:?}");
    }
}

#[test]
fn v3_connack_return_codes_map_to_reason_codes_and_back() {
    let pairs = [
        (0u8, ReasonCode::SUCCESS),
        (1, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        (2, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        (3, ReasonCode::SERVER_UNAVAILABLE),
        (4, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (5, ReasonCode::NOT_AUTHORIZED),
    ];
    for (code, reason) in pairs {
        let mut buf = BytesMut::from(&[0x20, 2, 0, code][..]);
        let decoded = decode_packet(&mut buf, V3_1_1, MAX_PACKET_SIZE_BYTES).expect("decodes");
        assert_eq!(decoded, Some(Packet::ConnAck(ConnAck { reason, ..ConnAck::default() })));
        let mut out = BytesMut::new();
        encode_packet(&Packet::ConnAck(ConnAck { reason, ..ConnAck::default() }), V3_1_1, &mut out).expect("encodes");
        assert_eq!(&out[..], &[0x20, 2, 0, code]);
    }
    for (reason, code) in [
        (ReasonCode::SERVER_BUSY, 3u8),
        (ReasonCode::BANNED, 5),
        (ReasonCode::BAD_AUTHENTICATION_METHOD, 4),
        (ReasonCode::QUOTA_EXCEEDED, 3),
    ] {
        let mut out = BytesMut::new();
        encode_packet(&Packet::ConnAck(ConnAck { reason, ..ConnAck::default() }), V3_1, &mut out).expect("encodes");
        assert_eq!(&out[..], &[0x20, 2, 0, code], "{reason:?}");
    }
}
