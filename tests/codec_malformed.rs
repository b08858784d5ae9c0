//! Malformed packets, written as raw bytes, each with the error the decoder must report. Case names carry
//! the spec rule they break. Every case is decoded twice: from one buffer, and fed one byte at a time (the
//! first answer that is not "need more bytes" must be the same error).

use bytes::BytesMut;
use shardmq::protocol::topic::{validate_topic_filter, TopicError};
use shardmq::protocol::{decode_packet, DecodeError, Packet, PacketType, ProtocolVersion, ReasonCode};

use DecodeError as E;
use ProtocolVersion::{V3_1, V3_1_1, V5};

mod codec_support;
use codec_support::{pkt, props, s};

const MAX_PACKET_SIZE_BYTES: u32 = 1 << 20;

struct Case {
    name: String,
    version: ProtocolVersion,
    packet_size_max_bytes: u32,
    bytes: Vec<u8>,
    expected: DecodeError,
}

/// A user property (0x26) with the given raw key and value.
fn user_property(key: &[u8], value: &[u8]) -> Vec<u8> {
    [&[0x26u8][..], &s(key), &s(value)].concat()
}

/// A v5 CONNECT with the given flags, CONNECT properties and payload.
fn connect_v5(flags: u8, properties: &[u8], payload: &[&[u8]]) -> Vec<u8> {
    pkt(0x10, &[&s(b"MQTT"), &[5, flags, 0, 60], properties, &payload.concat()])
}

/// A 3.1.1 CONNECT with the given flags and payload.
fn connect_v4(flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    pkt(0x10, &[&s(b"MQTT"), &[4, flags, 0, 60], &payload.concat()])
}

/// A v5 QoS 0 PUBLISH to "t" with the given property section.
fn publish_v5(properties: &[u8]) -> Vec<u8> {
    pkt(0x30, &[&s(b"t"), properties, b"p"])
}

struct Table(Vec<Case>);

impl Table {
    fn add(&mut self, name: &str, version: ProtocolVersion, bytes: Vec<u8>, expected: DecodeError) {
        self.add_with_max(name, version, MAX_PACKET_SIZE_BYTES, bytes, expected);
    }

    fn add_with_max(&mut self, name: &str, version: ProtocolVersion, max: u32, bytes: Vec<u8>, expected: DecodeError) {
        self.0.push(Case { name: name.to_string(), version, packet_size_max_bytes: max, bytes, expected });
    }
}

fn fixed_header_cases(t: &mut Table) {
    t.add("reserved_packet_type_0_v5_2_1_2", V5, vec![0x00, 0x00], E::ReservedPacketType { packet_type: 0 });
    t.add("reserved_packet_type_0_v4_2_1_2", V3_1_1, vec![0x00, 0x00], E::ReservedPacketType { packet_type: 0 });
    t.add("auth_packet_type_15_in_v4_2_1_2", V3_1_1, vec![0xF0, 0x00], E::ReservedPacketType { packet_type: 15 });
    t.add("auth_packet_type_15_in_v3_2_1_2", V3_1, vec![0xF0, 0x00], E::ReservedPacketType { packet_type: 15 });
    // [MQTT-2.1.3-1]: every packet type but PUBLISH with each kind of wrong flags.
    let fixed_zero = [
        (0x10, PacketType::Connect),
        (0x20, PacketType::ConnAck),
        (0x40, PacketType::PubAck),
        (0x50, PacketType::PubRec),
        (0x70, PacketType::PubComp),
        (0x90, PacketType::SubAck),
        (0xB0, PacketType::UnsubAck),
        (0xC0, PacketType::PingReq),
        (0xD0, PacketType::PingResp),
        (0xE0, PacketType::Disconnect),
        (0xF0, PacketType::Auth),
    ];
    for (type_bits, packet_type) in fixed_zero {
        for flags in [0x1u8, 0x2, 0x8] {
            let name = format!("reserved_flags_{flags:x}_on_{packet_type:?}_mqtt_2_1_3_1");
            t.add(&name, V5, vec![type_bits | flags, 0], E::ReservedFlags { packet_type, flags });
        }
    }
    for (type_bits, packet_type) in
        [(0x60, PacketType::PubRel), (0x80, PacketType::Subscribe), (0xA0, PacketType::Unsubscribe)]
    {
        for flags in [0x0u8, 0x3, 0xA] {
            let name = format!("reserved_flags_{flags:x}_on_{packet_type:?}_mqtt_2_1_3_1");
            t.add(&name, V3_1_1, vec![type_bits | flags, 0], E::ReservedFlags { packet_type, flags });
        }
    }
    t.add(
        "remaining_length_5_bytes_1_5_5",
        V5,
        vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        E::VariableByteIntegerTooLong,
    );
    t.add(
        "remaining_length_4_continuations_1_5_5",
        V3_1_1,
        vec![0xC0, 0x80, 0x80, 0x80, 0x80],
        E::VariableByteIntegerTooLong,
    );
    t.add("remaining_length_padded_mqtt_1_5_5_1", V5, vec![0xC0, 0x80, 0x00], E::VariableByteIntegerNotMinimal);
    t.add(
        "remaining_length_padded_3_bytes_mqtt_1_5_5_1",
        V5,
        vec![0x30, 0x85, 0x80, 0x00],
        E::VariableByteIntegerNotMinimal,
    );
    t.add_with_max(
        "packet_too_large_from_header_3_1_2_11_4",
        V5,
        16,
        vec![0x30, 0x0F],
        E::PacketTooLarge { size_bytes: 17, max_bytes: 16 },
    );
    t.add_with_max(
        "packet_too_large_max_remaining_length_3_1_2_11_4",
        V3_1_1,
        1 << 20,
        vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F],
        E::PacketTooLarge { size_bytes: 5 + 268_435_455, max_bytes: 1 << 20 },
    );
}

fn length_cases(t: &mut Table) {
    let end = |packet_type| E::UnexpectedEndOfPacket { packet_type };
    let trailing = |packet_type, count| E::TrailingBytes { packet_type, count };
    t.add("pingreq_with_body_2_1_4", V5, vec![0xC0, 1, 0], trailing(PacketType::PingReq, 1));
    t.add("pingresp_with_body_2_1_4", V3_1_1, vec![0xD0, 2, 0, 0], trailing(PacketType::PingResp, 2));
    t.add("disconnect_v4_with_body_2_1_4", V3_1_1, vec![0xE0, 1, 0], trailing(PacketType::Disconnect, 1));
    t.add("puback_v4_with_reason_2_1_4", V3_1_1, vec![0x40, 3, 0, 1, 0], trailing(PacketType::PubAck, 1));
    t.add("unsuback_v4_with_reason_2_1_4", V3_1_1, vec![0xB0, 3, 0, 1, 0], trailing(PacketType::UnsubAck, 1));
    t.add("connack_v4_extra_byte_2_1_4", V3_1_1, vec![0x20, 3, 0, 0, 0], trailing(PacketType::ConnAck, 1));
    t.add(
        "connect_v4_extra_byte_after_client_id_2_1_4",
        V3_1_1,
        connect_v4(0x02, &[&s(b"c"), &[0]]),
        trailing(PacketType::Connect, 1),
    );
    t.add("puback_v5_truncated_packet_id_2_1_4", V5, vec![0x40, 1, 0], end(PacketType::PubAck));
    t.add("connack_truncated_2_1_4", V5, vec![0x20, 1, 0], end(PacketType::ConnAck));
    t.add("connect_truncated_after_name_2_1_4", V5, pkt(0x10, &[&s(b"MQTT")]), end(PacketType::Connect));
    t.add("connect_name_length_overrun_2_1_4", V5, pkt(0x10, &[&[0, 9], b"MQTT"]), end(PacketType::Connect));
    t.add("connect_no_keep_alive_2_1_4", V3_1_1, pkt(0x10, &[&s(b"MQTT"), &[4, 2]]), end(PacketType::Connect));
    t.add("connect_no_client_id_2_1_4", V3_1_1, connect_v4(0x02, &[]), end(PacketType::Connect));
    t.add(
        "connect_will_payload_missing_2_1_4",
        V3_1_1,
        connect_v4(0x06, &[&s(b"c"), &s(b"w")]),
        end(PacketType::Connect),
    );
    t.add("connect_username_missing_2_1_4", V3_1_1, connect_v4(0x82, &[&s(b"c")]), end(PacketType::Connect));
    t.add("connect_password_missing_2_1_4", V3_1_1, connect_v4(0xC2, &[&s(b"c"), &s(b"u")]), end(PacketType::Connect));
    t.add("publish_topic_length_overrun_2_1_4", V3_1_1, pkt(0x30, &[&[0, 5], b"ab"]), end(PacketType::Publish));
    t.add("publish_qos1_no_packet_id_2_1_4", V3_1_1, pkt(0x32, &[&s(b"a"), &[0]]), end(PacketType::Publish));
    t.add("publish_v5_no_property_length_2_1_4", V5, pkt(0x30, &[&s(b"a")]), end(PacketType::Publish));
    t.add("subscribe_missing_options_2_1_4", V3_1_1, pkt(0x82, &[&[0, 1], &s(b"a")]), end(PacketType::Subscribe));
    t.add("subscribe_filter_overrun_2_1_4", V3_1_1, pkt(0x82, &[&[0, 1, 0, 4], b"a"]), end(PacketType::Subscribe));
    t.add("unsubscribe_filter_overrun_2_1_4", V5, pkt(0xA2, &[&[0, 1, 0, 0, 3], b"a"]), end(PacketType::Unsubscribe));
}

/// Builds a packet (and the version to decode it at) that carries the given raw bytes in one string field.
type PacketWithField = fn(&[u8]) -> (ProtocolVersion, Vec<u8>);

fn string_cases(t: &mut Table) {
    let bad_utf8: [(&str, &[u8]); 5] = [
        ("ff_byte", b"a\xFFb"),
        ("overlong_nul", b"\xC0\x80"),
        ("surrogate", b"\xED\xA0\x80"),
        ("truncated_sequence", b"\xE2\x82"),
        ("above_u10ffff", b"\xF4\x90\x80\x80"),
    ];
    for (label, text) in bad_utf8 {
        t.add(&format!("publish_topic_{label}_mqtt_1_5_4_1"), V3_1_1, pkt(0x30, &[&s(text), b"x"]), E::InvalidUtf8);
    }
    let cases: [(&str, PacketWithField); 10] = [
        ("client_id", |x| (V3_1_1, connect_v4(0x02, &[&s(x)]))),
        ("username", |x| (V3_1_1, connect_v4(0x82, &[&s(b"c"), &s(x)]))),
        ("will_topic", |x| (V3_1_1, connect_v4(0x06, &[&s(b"c"), &s(x), &s(b"")]))),
        ("subscribe_filter", |x| (V3_1_1, pkt(0x82, &[&[0, 1], &s(x), &[0]]))),
        ("unsubscribe_filter", |x| (V3_1_1, pkt(0xA2, &[&[0, 1], &s(x)]))),
        ("user_property_key", |x| (V5, publish_v5(&props(&[&user_property(x, b"v")])))),
        ("user_property_value", |x| (V5, publish_v5(&props(&[&user_property(b"k", x)])))),
        ("content_type", |x| (V5, publish_v5(&props(&[&[0x03], &s(x)])))),
        ("reason_string", |x| (V5, pkt(0x40, &[&[0, 1, 0x80], &props(&[&[0x1F], &s(x)])]))),
        ("auth_method", |x| (V5, pkt(0xF0, &[&[0x18], &props(&[&[0x15], &s(x)])]))),
    ];
    for (field, build) in cases {
        let (version, bytes) = build(b"a\xFEb");
        t.add(&format!("{field}_invalid_utf8_mqtt_1_5_4_1"), version, bytes, E::InvalidUtf8);
        let (version, bytes) = build(b"a\0b");
        t.add(&format!("{field}_contains_u0000_mqtt_1_5_4_2"), version, bytes, E::NullCharacter);
    }
    t.add("publish_topic_u0000_mqtt_1_5_4_2", V5, pkt(0x30, &[&s(b"a\0"), &[0]]), E::NullCharacter);
}

fn packet_id_cases(t: &mut Table) {
    for version in [V3_1_1, V5] {
        let v = version.level();
        let zero = |packet_type| E::PacketIdZero { packet_type };
        let props_v5: &[u8] = if version.is_v5() { &[0] } else { &[] };
        t.add(
            &format!("publish_qos1_packet_id_0_v{v}_mqtt_2_2_1_3"),
            version,
            pkt(0x32, &[&s(b"a"), &[0, 0], props_v5]),
            zero(PacketType::Publish),
        );
        t.add(
            &format!("publish_qos2_packet_id_0_v{v}_mqtt_2_2_1_3"),
            version,
            pkt(0x34, &[&s(b"a"), &[0, 0], props_v5]),
            zero(PacketType::Publish),
        );
        t.add(&format!("puback_packet_id_0_v{v}_mqtt_2_2_1_3"), version, vec![0x40, 2, 0, 0], zero(PacketType::PubAck));
        t.add(&format!("pubrec_packet_id_0_v{v}_mqtt_2_2_1_3"), version, vec![0x50, 2, 0, 0], zero(PacketType::PubRec));
        t.add(&format!("pubrel_packet_id_0_v{v}_mqtt_2_2_1_3"), version, vec![0x62, 2, 0, 0], zero(PacketType::PubRel));
        t.add(
            &format!("pubcomp_packet_id_0_v{v}_mqtt_2_2_1_3"),
            version,
            vec![0x70, 2, 0, 0],
            zero(PacketType::PubComp),
        );
        t.add(
            &format!("subscribe_packet_id_0_v{v}_mqtt_2_2_1_3"),
            version,
            pkt(0x82, &[&[0, 0], props_v5, &s(b"a"), &[0]]),
            zero(PacketType::Subscribe),
        );
        t.add(
            &format!("suback_packet_id_0_v{v}_mqtt_2_2_1_3"),
            version,
            pkt(0x90, &[&[0, 0], props_v5, &[0]]),
            zero(PacketType::SubAck),
        );
        t.add(
            &format!("unsubscribe_packet_id_0_v{v}_mqtt_2_2_1_3"),
            version,
            pkt(0xA2, &[&[0, 0], props_v5, &s(b"a")]),
            zero(PacketType::Unsubscribe),
        );
        t.add(
            &format!("unsuback_packet_id_0_v{v}_mqtt_2_2_1_3"),
            version,
            pkt(0xB0, &[&[0, 0], props_v5]),
            zero(PacketType::UnsubAck),
        );
    }
}

fn connect_cases(t: &mut Table) {
    let client = s(b"c");
    t.add(
        "protocol_name_mqtx_mqtt_3_1_2_1",
        V5,
        pkt(0x10, &[&s(b"MQTX"), &[4, 2, 0, 60], &client]),
        E::ProtocolNameInvalid,
    );
    t.add(
        "protocol_name_lowercase_mqtt_3_1_2_1",
        V5,
        pkt(0x10, &[&s(b"mqtt"), &[4, 2, 0, 60], &client]),
        E::ProtocolNameInvalid,
    );
    t.add(
        "protocol_name_empty_mqtt_3_1_2_1",
        V5,
        pkt(0x10, &[&s(b""), &[4, 2, 0, 60], &client]),
        E::ProtocolNameInvalid,
    );
    for (name, level) in
        [(&b"MQTT"[..], 3u8), (b"MQTT", 6), (b"MQTT", 0), (b"MQIsdp", 4), (b"MQIsdp", 5), (b"MQTT", 0x84)]
    {
        t.add(
            &format!("protocol_{}_level_{level}_mqtt_3_1_2_2", String::from_utf8_lossy(name)),
            V5,
            pkt(0x10, &[&s(name), &[level, 2, 0, 60], &client]),
            E::UnsupportedProtocolLevel { level },
        );
    }
    t.add("connect_reserved_flag_v4_mqtt_3_1_2_3", V3_1_1, connect_v4(0x03, &[&client]), E::ConnectReservedFlag);
    t.add("connect_reserved_flag_v5_mqtt_3_1_2_3", V5, connect_v5(0x01, &[0], &[&client]), E::ConnectReservedFlag);
    t.add(
        "connect_reserved_flag_v3_mqtt_3_1_2_3",
        V3_1,
        pkt(0x10, &[&s(b"MQIsdp"), &[3, 0x03, 0, 60], &client]),
        E::ConnectReservedFlag,
    );
    t.add("will_qos1_without_will_v4_mqtt_3_1_2_11", V3_1_1, connect_v4(0x0A, &[&client]), E::WillQosWithoutWill);
    t.add("will_qos2_without_will_v5_mqtt_3_1_2_11", V5, connect_v5(0x12, &[0], &[&client]), E::WillQosWithoutWill);
    t.add("will_retain_without_will_v4_mqtt_3_1_2_13", V3_1_1, connect_v4(0x22, &[&client]), E::WillRetainWithoutWill);
    t.add(
        "will_retain_without_will_v5_mqtt_3_1_2_13",
        V5,
        connect_v5(0x20, &[0], &[&client]),
        E::WillRetainWithoutWill,
    );
    let will = [&client[..], &s(b"w"), &s(b"m")];
    t.add("will_qos3_v4_mqtt_3_1_2_12", V3_1_1, connect_v4(0x1E, &will), E::WillQosInvalid);
    t.add(
        "will_qos3_v5_mqtt_3_1_2_12",
        V5,
        connect_v5(0x1C, &[0], &[&client, &[0], &s(b"w"), &s(b"m")]),
        E::WillQosInvalid,
    );
    t.add(
        "password_without_username_v4_mqtt_3_1_2_22",
        V3_1_1,
        connect_v4(0x42, &[&client, &s(b"p")]),
        E::PasswordWithoutUsername,
    );
    t.add(
        "password_without_username_v3_mqtt_3_1_2_22",
        V3_1,
        pkt(0x10, &[&s(b"MQIsdp"), &[3, 0x42, 0, 60], &client, &s(b"p")]),
        E::PasswordWithoutUsername,
    );
    t.add(
        "will_topic_wildcard_v4_mqtt_3_3_2_2",
        V3_1_1,
        connect_v4(0x06, &[&client, &s(b"a/#"), &s(b"")]),
        E::TopicNameInvalid(TopicError::WildcardInName),
    );
    t.add(
        "will_topic_plus_v5_mqtt_3_3_2_2",
        V5,
        connect_v5(0x06, &[0], &[&client, &[0], &s(b"+"), &s(b"")]),
        E::TopicNameInvalid(TopicError::WildcardInName),
    );
    t.add(
        "will_topic_empty_v4_mqtt_4_7_3_1",
        V3_1_1,
        connect_v4(0x06, &[&client, &s(b""), &s(b"")]),
        E::TopicNameInvalid(TopicError::Empty),
    );
    let connect_props = |properties: Vec<u8>| connect_v5(0x02, &properties, &[&client]);
    t.add(
        "connect_topic_alias_not_allowed_2_2_2_2",
        V5,
        connect_props(props(&[&[0x23, 0, 1]])),
        E::PropertyNotAllowed { id: 0x23, packet_type: PacketType::Connect },
    );
    t.add(
        "connect_reason_string_not_allowed_2_2_2_2",
        V5,
        connect_props(props(&[&[0x1F], &s(b"r")])),
        E::PropertyNotAllowed { id: 0x1F, packet_type: PacketType::Connect },
    );
    t.add(
        "connect_will_delay_not_allowed_2_2_2_2",
        V5,
        connect_props(props(&[&[0x18, 0, 0, 0, 1]])),
        E::PropertyNotAllowed { id: 0x18, packet_type: PacketType::Connect },
    );
    t.add(
        "connect_session_expiry_twice_2_2_2_2",
        V5,
        connect_props(props(&[&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]])),
        E::PropertyDuplicate { id: 0x11 },
    );
    t.add(
        "connect_receive_maximum_0_3_1_2_11_3",
        V5,
        connect_props(props(&[&[0x21, 0, 0]])),
        E::PropertyValueInvalid { id: 0x21, value: 0 },
    );
    t.add(
        "connect_maximum_packet_size_0_3_1_2_11_4",
        V5,
        connect_props(props(&[&[0x27, 0, 0, 0, 0]])),
        E::PropertyValueInvalid { id: 0x27, value: 0 },
    );
    t.add(
        "connect_request_problem_information_2_3_1_2_11_7",
        V5,
        connect_props(props(&[&[0x17, 2]])),
        E::PropertyValueInvalid { id: 0x17, value: 2 },
    );
    t.add(
        "connect_request_response_information_2_3_1_2_11_6",
        V5,
        connect_props(props(&[&[0x19, 2]])),
        E::PropertyValueInvalid { id: 0x19, value: 2 },
    );
    t.add(
        "connect_auth_data_without_method_3_1_2_11_10",
        V5,
        connect_props(props(&[&[0x16], &s(b"d")])),
        E::AuthDataWithoutMethod,
    );
    t.add(
        "connect_auth_method_twice_2_2_2_2",
        V5,
        connect_props(props(&[&[0x15], &s(b"a"), &[0x15], &s(b"b")])),
        E::PropertyDuplicate { id: 0x15 },
    );
    t.add(
        "connect_property_length_overrun_2_2_2_1",
        V5,
        connect_v5(0x02, &[50, 0x11], &[&client]),
        E::PropertyLengthOverrun,
    );
    let will_props = |properties: Vec<u8>| connect_v5(0x06, &[0], &[&client, &properties, &s(b"w"), &s(b"m")]);
    t.add(
        "will_session_expiry_not_allowed_2_2_2_2",
        V5,
        will_props(props(&[&[0x11, 0, 0, 0, 1]])),
        E::PropertyNotAllowed { id: 0x11, packet_type: PacketType::Connect },
    );
    t.add(
        "will_topic_alias_not_allowed_2_2_2_2",
        V5,
        will_props(props(&[&[0x23, 0, 1]])),
        E::PropertyNotAllowed { id: 0x23, packet_type: PacketType::Connect },
    );
    t.add(
        "will_delay_twice_2_2_2_2",
        V5,
        will_props(props(&[&[0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 1]])),
        E::PropertyDuplicate { id: 0x18 },
    );
    t.add(
        "will_payload_format_2_2_2_2",
        V5,
        will_props(props(&[&[0x01, 2]])),
        E::PropertyValueInvalid { id: 0x01, value: 2 },
    );
    t.add(
        "will_response_topic_wildcard_mqtt_3_3_2_14",
        V5,
        will_props(props(&[&[0x08], &s(b"r/#")])),
        E::TopicNameInvalid(TopicError::WildcardInName),
    );
}

fn connack_cases(t: &mut Table) {
    t.add("connack_reserved_flags_v4_mqtt_3_2_2_1", V3_1_1, vec![0x20, 2, 0x02, 0], E::ConnAckReservedFlags);
    t.add("connack_reserved_flags_v5_mqtt_3_2_2_1", V5, vec![0x20, 3, 0x80, 0, 0], E::ConnAckReservedFlags);
    t.add("connack_v4_return_code_6_3_2_2_3", V3_1_1, vec![0x20, 2, 0, 6], E::ConnAckReturnCodeInvalid { code: 6 });
    t.add(
        "connack_v3_return_code_0x80_3_2_2_3",
        V3_1,
        vec![0x20, 2, 0, 0x80],
        E::ConnAckReturnCodeInvalid { code: 0x80 },
    );
    for code in [0x01u8, 0x04, 0x8B, 0x8E, 0xA2] {
        t.add(
            &format!("connack_v5_reason_{code:02x}_2_4"),
            V5,
            vec![0x20, 3, 0, code, 0],
            E::ReasonCodeInvalid { packet_type: PacketType::ConnAck, code },
        );
    }
    t.add(
        "connack_topic_alias_not_allowed_2_2_2_2",
        V5,
        pkt(0x20, &[&[0, 0], &props(&[&[0x23, 0, 1]])]),
        E::PropertyNotAllowed { id: 0x23, packet_type: PacketType::ConnAck },
    );
    t.add(
        "connack_maximum_qos_2_3_2_2_3_4",
        V5,
        pkt(0x20, &[&[0, 0], &props(&[&[0x24, 2]])]),
        E::PropertyValueInvalid { id: 0x24, value: 2 },
    );
    t.add(
        "connack_retain_available_twice_2_2_2_2",
        V5,
        pkt(0x20, &[&[0, 0], &props(&[&[0x25, 1, 0x25, 1]])]),
        E::PropertyDuplicate { id: 0x25 },
    );
    t.add(
        "connack_shared_available_5_3_2_2_3_13",
        V5,
        pkt(0x20, &[&[0, 0], &props(&[&[0x2A, 5]])]),
        E::PropertyValueInvalid { id: 0x2A, value: 5 },
    );
}

fn publish_cases(t: &mut Table) {
    for (first_byte, label) in [(0x36u8, "qos3"), (0x3E, "qos3_dup"), (0x37, "qos3_retain")] {
        t.add(
            &format!("publish_{label}_v4_mqtt_3_3_1_4"),
            V3_1_1,
            pkt(first_byte, &[&s(b"a"), &[0, 1]]),
            E::PublishQosInvalid,
        );
        t.add(
            &format!("publish_{label}_v5_mqtt_3_3_1_4"),
            V5,
            pkt(first_byte, &[&s(b"a"), &[0, 1, 0]]),
            E::PublishQosInvalid,
        );
    }
    t.add("publish_dup_qos0_v4_mqtt_3_3_1_2", V3_1_1, pkt(0x38, &[&s(b"a")]), E::DupOnQos0);
    t.add("publish_dup_qos0_retain_v5_mqtt_3_3_1_2", V5, pkt(0x39, &[&s(b"a"), &[0]]), E::DupOnQos0);
    let wildcard = E::TopicNameInvalid(TopicError::WildcardInName);
    for topic in [&b"a/+"[..], b"#", b"a/#", b"+/b", b"a+b", b"sport/tennis#"] {
        let label = String::from_utf8_lossy(topic).replace('+', "plus").replace('#', "hash").replace('/', "_");
        t.add(&format!("publish_topic_{label}_v4_mqtt_3_3_2_2"), V3_1_1, pkt(0x30, &[&s(topic)]), wildcard.clone());
        t.add(&format!("publish_topic_{label}_v5_mqtt_3_3_2_2"), V5, pkt(0x30, &[&s(topic), &[0]]), wildcard.clone());
    }
    t.add(
        "publish_topic_empty_v4_mqtt_4_7_3_1",
        V3_1_1,
        pkt(0x30, &[&s(b""), b"x"]),
        E::TopicNameInvalid(TopicError::Empty),
    );
    t.add(
        "publish_topic_empty_without_alias_v5_3_3_2_3_4",
        V5,
        pkt(0x30, &[&s(b""), &[0], b"x"]),
        E::TopicNameInvalid(TopicError::Empty),
    );
    let not_allowed = |id| E::PropertyNotAllowed { id, packet_type: PacketType::Publish };
    t.add(
        "publish_session_expiry_not_allowed_2_2_2_2",
        V5,
        publish_v5(&props(&[&[0x11, 0, 0, 0, 1]])),
        not_allowed(0x11),
    );
    t.add("publish_receive_maximum_not_allowed_2_2_2_2", V5, publish_v5(&props(&[&[0x21, 0, 1]])), not_allowed(0x21));
    t.add("publish_will_delay_not_allowed_2_2_2_2", V5, publish_v5(&props(&[&[0x18, 0, 0, 0, 1]])), not_allowed(0x18));
    t.add("publish_reason_string_not_allowed_2_2_2_2", V5, publish_v5(&props(&[&[0x1F], &s(b"r")])), not_allowed(0x1F));
    t.add("publish_auth_method_not_allowed_2_2_2_2", V5, publish_v5(&props(&[&[0x15], &s(b"m")])), not_allowed(0x15));
    for id in [0x00u8, 0x04, 0x05, 0x0A, 0x14, 0x1B, 0x20, 0x2B, 0x7F, 0x80, 0xFF] {
        t.add(
            &format!("publish_property_id_{id:02x}_unknown_2_2_2_2"),
            V5,
            publish_v5(&props(&[&[id, 0, 0, 0, 0]])),
            E::PropertyIdInvalid { id },
        );
    }
    t.add(
        "publish_payload_format_twice_2_2_2_2",
        V5,
        publish_v5(&props(&[&[0x01, 0, 0x01, 1]])),
        E::PropertyDuplicate { id: 0x01 },
    );
    t.add(
        "publish_topic_alias_twice_2_2_2_2",
        V5,
        publish_v5(&props(&[&[0x23, 0, 1, 0x23, 0, 1]])),
        E::PropertyDuplicate { id: 0x23 },
    );
    t.add(
        "publish_message_expiry_twice_2_2_2_2",
        V5,
        publish_v5(&props(&[&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1]])),
        E::PropertyDuplicate { id: 0x02 },
    );
    t.add(
        "publish_content_type_twice_2_2_2_2",
        V5,
        publish_v5(&props(&[&[0x03], &s(b"a"), &[0x03], &s(b"a")])),
        E::PropertyDuplicate { id: 0x03 },
    );
    t.add(
        "publish_correlation_data_twice_2_2_2_2",
        V5,
        publish_v5(&props(&[&[0x09], &s(b"a"), &[0x09], &s(b"a")])),
        E::PropertyDuplicate { id: 0x09 },
    );
    t.add(
        "publish_payload_format_2_3_3_2_3_2",
        V5,
        publish_v5(&props(&[&[0x01, 2]])),
        E::PropertyValueInvalid { id: 0x01, value: 2 },
    );
    t.add(
        "publish_subscription_identifier_0_3_3_2_3_8",
        V5,
        publish_v5(&props(&[&[0x0B, 0]])),
        E::PropertyValueInvalid { id: 0x0B, value: 0 },
    );
    t.add(
        "publish_subscription_identifier_padded_mqtt_1_5_5_1",
        V5,
        publish_v5(&props(&[&[0x0B, 0x81, 0x00]])),
        E::VariableByteIntegerNotMinimal,
    );
    t.add(
        "publish_response_topic_wildcard_mqtt_3_3_2_14",
        V5,
        publish_v5(&props(&[&[0x08], &s(b"a/+")])),
        E::TopicNameInvalid(TopicError::WildcardInName),
    );
    t.add(
        "publish_property_length_overrun_2_2_2_1",
        V5,
        pkt(0x30, &[&s(b"t"), &[9, 0x01, 0]]),
        E::PropertyLengthOverrun,
    );
    t.add(
        "publish_property_value_past_property_length_2_2_2_1",
        V5,
        pkt(0x30, &[&s(b"t"), &[2, 0x02, 0, 0, 0], b"payload"]),
        E::PropertyLengthOverrun,
    );
    t.add(
        "publish_property_string_past_property_length_2_2_2_1",
        V5,
        pkt(0x30, &[&s(b"t"), &[3, 0x03, 0, 5], b"abcdef"]),
        E::PropertyLengthOverrun,
    );
    t.add(
        "publish_user_property_value_missing_2_2_2_1",
        V5,
        publish_v5(&props(&[&[0x26], &s(b"k")])),
        E::PropertyLengthOverrun,
    );
    t.add(
        "publish_property_length_5_bytes_1_5_5",
        V5,
        pkt(0x30, &[&s(b"t"), &[0xFF, 0xFF, 0xFF, 0xFF, 0x01]]),
        E::VariableByteIntegerTooLong,
    );
}

fn pub_response_cases(t: &mut Table) {
    let types = [
        (0x40u8, PacketType::PubAck, 0x01u8),
        (0x50, PacketType::PubRec, 0x92),
        (0x62, PacketType::PubRel, 0x10),
        (0x70, PacketType::PubComp, 0x80),
    ];
    for (first_byte, packet_type, bad_code) in types {
        let name = format!("{packet_type:?}").to_lowercase();
        t.add(
            &format!("{name}_reason_{bad_code:02x}_2_4"),
            V5,
            vec![first_byte, 3, 0, 1, bad_code],
            E::ReasonCodeInvalid { packet_type, code: bad_code },
        );
        t.add(
            &format!("{name}_payload_format_not_allowed_2_2_2_2"),
            V5,
            pkt(first_byte, &[&[0, 1, 0], &props(&[&[0x01, 0]])]),
            E::PropertyNotAllowed { id: 0x01, packet_type },
        );
        t.add(
            &format!("{name}_reason_string_twice_2_2_2_2"),
            V5,
            pkt(first_byte, &[&[0, 1, 0], &props(&[&[0x1F], &s(b"a"), &[0x1F], &s(b"b")])]),
            E::PropertyDuplicate { id: 0x1F },
        );
        t.add(
            &format!("{name}_property_length_overrun_2_2_2_1"),
            V5,
            vec![first_byte, 4, 0, 1, 0, 7],
            E::PropertyLengthOverrun,
        );
    }
}

fn subscribe_cases(t: &mut Table) {
    let sub_v4 = |filter: &[u8], options: u8| pkt(0x82, &[&[0, 1], &s(filter), &[options]]);
    let sub_v5 = |filter: &[u8], options: u8| pkt(0x82, &[&[0, 1, 0], &s(filter), &[options]]);
    t.add("subscribe_empty_v4_mqtt_3_8_3_3", V3_1_1, pkt(0x82, &[&[0, 1]]), E::SubscribeEmpty);
    t.add("subscribe_empty_v3_mqtt_3_8_3_3", V3_1, pkt(0x82, &[&[0, 1]]), E::SubscribeEmpty);
    t.add("subscribe_empty_v5_mqtt_3_8_3_2", V5, pkt(0x82, &[&[0, 1, 0]]), E::SubscribeEmpty);
    for options in [0x04u8, 0x08, 0x10, 0x40, 0x80] {
        t.add(
            &format!("subscribe_v4_options_{options:02x}_reserved_mqtt_3_8_3_5"),
            V3_1_1,
            sub_v4(b"a", options),
            E::SubscriptionOptionsReserved,
        );
    }
    for options in [0x40u8, 0x80, 0xC1] {
        t.add(
            &format!("subscribe_v5_options_{options:02x}_reserved_mqtt_3_8_3_5"),
            V5,
            sub_v5(b"a", options),
            E::SubscriptionOptionsReserved,
        );
    }
    t.add("subscribe_v4_qos3_3_8_3_1", V3_1_1, sub_v4(b"a", 3), E::SubscriptionQosInvalid);
    t.add("subscribe_v5_qos3_3_8_3_1", V5, sub_v5(b"a", 3), E::SubscriptionQosInvalid);
    t.add("subscribe_v5_retain_handling_3_3_8_3_1", V5, sub_v5(b"a", 0x30), E::RetainHandlingInvalid);
    t.add(
        "subscribe_v5_no_local_on_shared_mqtt_3_8_3_4",
        V5,
        sub_v5(b"$share/g/a", 0x04),
        E::NoLocalOnSharedSubscription,
    );
    let sub_props = |properties: Vec<u8>| pkt(0x82, &[&[0, 1], &properties, &s(b"a"), &[0]]);
    t.add(
        "subscribe_two_subscription_identifiers_3_8_2_1_2",
        V5,
        sub_props(props(&[&[0x0B, 1, 0x0B, 2]])),
        E::PropertyDuplicate { id: 0x0B },
    );
    t.add(
        "subscribe_subscription_identifier_0_3_8_2_1_2",
        V5,
        sub_props(props(&[&[0x0B, 0]])),
        E::PropertyValueInvalid { id: 0x0B, value: 0 },
    );
    t.add(
        "subscribe_topic_alias_not_allowed_2_2_2_2",
        V5,
        sub_props(props(&[&[0x23, 0, 1]])),
        E::PropertyNotAllowed { id: 0x23, packet_type: PacketType::Subscribe },
    );
    t.add(
        "subscribe_property_length_overrun_2_2_2_1",
        V5,
        pkt(0x82, &[&[0, 1, 20], &s(b"a"), &[0]]),
        E::PropertyLengthOverrun,
    );
}

/// Filters that break the wildcard or shared-subscription rules. They are not malformed packets: the
/// broker refuses each in its SUBACK (0x80 for 3.x, 0x8F for v5) or UNSUBACK and keeps the connection,
/// so the decoder must hand them over untouched.
fn invalid_filters() -> [(&'static [u8], TopicError, &'static str); 9] {
    [
        (b"a/#/b", TopicError::MultiLevelWildcardMisplaced, "hash_not_last_mqtt_4_7_1_1"),
        (b"a#", TopicError::MultiLevelWildcardMisplaced, "hash_not_alone_mqtt_4_7_1_1"),
        (b"#/", TopicError::MultiLevelWildcardMisplaced, "hash_then_level_mqtt_4_7_1_1"),
        (b"a+", TopicError::SingleLevelWildcardMisplaced, "plus_not_alone_mqtt_4_7_1_2"),
        (b"a/+b/c", TopicError::SingleLevelWildcardMisplaced, "plus_inside_level_mqtt_4_7_1_2"),
        (b"", TopicError::Empty, "empty_mqtt_4_7_3_1"),
        (b"$share//a", TopicError::SharedGroupInvalid, "shared_empty_group_mqtt_4_8_2_1"),
        (b"$share/g+/a", TopicError::SharedGroupInvalid, "shared_wildcard_group_mqtt_4_8_2_2"),
        (b"$share/g", TopicError::SharedFilterMissing, "shared_without_filter_mqtt_4_8_2_2"),
    ]
}

#[test]
fn invalid_filters_decode_for_the_broker_to_refuse_per_filter_mqtt_4_7_1_1() {
    for (filter, error, label) in invalid_filters() {
        let text = std::str::from_utf8(filter).expect("test filters are UTF-8");
        assert_eq!(validate_topic_filter(text), Err(error), "{label}");
        let packets = [
            (V3_1_1, pkt(0x82, &[&[0, 1], &s(b"ok/+"), &[1], &s(filter), &[0]])),
            (V5, pkt(0x82, &[&[0, 1], &[0], &s(filter), &[0]])),
            (V3_1_1, pkt(0xA2, &[&[0, 1], &s(filter)])),
        ];
        for (version, bytes) in packets {
            let decoded = decode_packet(&mut BytesMut::from(&bytes[..]), version, MAX_PACKET_SIZE_BYTES);
            let filters: Vec<String> = match decoded {
                Ok(Some(Packet::Subscribe(subscribe))) => {
                    subscribe.filters.iter().map(|(f, _)| f.to_string()).collect()
                }
                Ok(Some(Packet::Unsubscribe(unsubscribe))) => {
                    unsubscribe.filters.iter().map(|f| f.to_string()).collect()
                }
                other => panic!("{label} {version:?}: expected a SUBSCRIBE/UNSUBSCRIBE, got {other:?}"),
            };
            assert_eq!(filters.last().map(String::as_str), Some(text), "{label} {version:?}");
        }
    }
}

fn ack_cases(t: &mut Table) {
    for code in [0x03u8, 0x81, 0x10] {
        t.add(
            &format!("suback_v4_return_code_{code:02x}_3_9_3"),
            V3_1_1,
            vec![0x90, 3, 0, 1, code],
            E::ReasonCodeInvalid { packet_type: PacketType::SubAck, code },
        );
    }
    for code in [0x03u8, 0x10, 0x8E] {
        t.add(
            &format!("suback_v5_reason_{code:02x}_3_9_3"),
            V5,
            vec![0x90, 4, 0, 1, 0, code],
            E::ReasonCodeInvalid { packet_type: PacketType::SubAck, code },
        );
    }
    t.add(
        "suback_subscription_identifier_not_allowed_2_2_2_2",
        V5,
        pkt(0x90, &[&[0, 1], &props(&[&[0x0B, 1]]), &[0]]),
        E::PropertyNotAllowed { id: 0x0B, packet_type: PacketType::SubAck },
    );
    t.add("unsubscribe_empty_v4_mqtt_3_10_3_2", V3_1_1, pkt(0xA2, &[&[0, 1]]), E::UnsubscribeEmpty);
    t.add("unsubscribe_empty_v5_mqtt_3_10_3_2", V5, pkt(0xA2, &[&[0, 1, 0]]), E::UnsubscribeEmpty);
    t.add(
        "unsubscribe_subscription_identifier_not_allowed_2_2_2_2",
        V5,
        pkt(0xA2, &[&[0, 1], &props(&[&[0x0B, 1]]), &s(b"a")]),
        E::PropertyNotAllowed { id: 0x0B, packet_type: PacketType::Unsubscribe },
    );
    for code in [0x01u8, 0x10, 0x8E] {
        t.add(
            &format!("unsuback_v5_reason_{code:02x}_3_11_3"),
            V5,
            vec![0xB0, 4, 0, 1, 0, code],
            E::ReasonCodeInvalid { packet_type: PacketType::UnsubAck, code },
        );
    }
    for code in [0x01u8, 0x84, 0x86, 0x8A] {
        t.add(
            &format!("disconnect_v5_reason_{code:02x}_3_14_2_1"),
            V5,
            vec![0xE0, 1, code],
            E::ReasonCodeInvalid { packet_type: PacketType::Disconnect, code },
        );
    }
    let not_allowed = |id, packet_type| E::PropertyNotAllowed { id, packet_type };
    t.add(
        "disconnect_topic_alias_not_allowed_2_2_2_2",
        V5,
        pkt(0xE0, &[&[0], &props(&[&[0x23, 0, 1]])]),
        not_allowed(0x23, PacketType::Disconnect),
    );
    t.add(
        "disconnect_will_delay_not_allowed_2_2_2_2",
        V5,
        pkt(0xE0, &[&[0], &props(&[&[0x18, 0, 0, 0, 0]])]),
        not_allowed(0x18, PacketType::Disconnect),
    );
    t.add(
        "disconnect_server_reference_twice_2_2_2_2",
        V5,
        pkt(0xE0, &[&[0x9C], &props(&[&[0x1C], &s(b"a"), &[0x1C], &s(b"b")])]),
        E::PropertyDuplicate { id: 0x1C },
    );
    for code in [0x01u8, 0x80, 0x87] {
        t.add(
            &format!("auth_reason_{code:02x}_3_15_2_1"),
            V5,
            vec![0xF0, 1, code],
            E::ReasonCodeInvalid { packet_type: PacketType::Auth, code },
        );
    }
    t.add(
        "auth_session_expiry_not_allowed_2_2_2_2",
        V5,
        pkt(0xF0, &[&[0x18], &props(&[&[0x11, 0, 0, 0, 0]])]),
        not_allowed(0x11, PacketType::Auth),
    );
    t.add(
        "auth_method_twice_2_2_2_2",
        V5,
        pkt(0xF0, &[&[0x18], &props(&[&[0x15], &s(b"a"), &[0x15], &s(b"a")])]),
        E::PropertyDuplicate { id: 0x15 },
    );
    t.add(
        "auth_data_without_method_3_15_2_2",
        V5,
        pkt(0xF0, &[&[0x18], &props(&[&[0x16], &s(b"d")])]),
        E::AuthDataWithoutMethod,
    );
}

fn all_cases() -> Vec<Case> {
    let mut table = Table(Vec::new());
    fixed_header_cases(&mut table);
    length_cases(&mut table);
    string_cases(&mut table);
    packet_id_cases(&mut table);
    connect_cases(&mut table);
    connack_cases(&mut table);
    publish_cases(&mut table);
    pub_response_cases(&mut table);
    subscribe_cases(&mut table);
    ack_cases(&mut table);
    table.0
}

#[test]
fn table_has_at_least_150_distinct_cases() {
    let cases = all_cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    eprintln!("{} malformed cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|case| case.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "case names are unique");
    let mut inputs: Vec<(u8, &[u8])> = cases.iter().map(|case| (case.version.level(), &case.bytes[..])).collect();
    inputs.sort_unstable();
    inputs.dedup();
    assert_eq!(before, inputs.len(), "case inputs are distinct");
}

#[test]
fn every_malformed_packet_fails_with_its_error() {
    let mut failures = Vec::new();
    for case in all_cases() {
        let mut buf = BytesMut::from(&case.bytes[..]);
        let got = decode_packet(&mut buf, case.version, case.packet_size_max_bytes);
        if got != Err(case.expected.clone()) {
            failures.push(format!("{}: expected {:?}, got {:?}", case.name, case.expected, got));
        }
    }
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_malformed_packet_fails_the_same_when_streamed_byte_by_byte() {
    for case in all_cases() {
        let mut buf = BytesMut::new();
        let mut outcome = Ok(None);
        for &byte in &case.bytes {
            buf.extend_from_slice(&[byte]);
            outcome = decode_packet(&mut buf, case.version, case.packet_size_max_bytes);
            if outcome != Ok(None) {
                break;
            }
        }
        assert_eq!(outcome, Err(case.expected.clone()), "{}", case.name);
    }
}

#[test]
fn malformed_packets_map_to_v5_reason_codes() {
    for case in all_cases() {
        let expected = match &case.expected {
            E::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            E::ProtocolNameInvalid | E::UnsupportedProtocolLevel { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            E::TopicNameInvalid(TopicError::Empty) => ReasonCode::PROTOCOL_ERROR,
            E::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
            E::PropertyDuplicate { .. }
            | E::PropertyValueInvalid { .. }
            | E::AuthDataWithoutMethod
            | E::PacketIdZero { .. }
            | E::SubscribeEmpty
            | E::UnsubscribeEmpty
            | E::RetainHandlingInvalid
            | E::NoLocalOnSharedSubscription => ReasonCode::PROTOCOL_ERROR,
            _ => ReasonCode::MALFORMED_PACKET,
        };
        assert_eq!(case.expected.reason_code(), expected, "{}", case.name);
    }
}
