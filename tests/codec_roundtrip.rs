//! Property tests: every packet type at every protocol level survives encode -> decode unchanged (generating
//! only what that level can express), and decoding corrupted packets never panics and, when it succeeds,
//! re-encodes to a packet that decodes to the same value (the same check as the `decode` fuzz target).

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use shardmq::protocol::{
    decode_packet, encode_packet, Auth, ByteStr, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion,
    PubResponse, Publish, QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

const MAX_PACKET_SIZE_BYTES: u32 = 1 << 24;

const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B,
    0x9C, 0x9D, 0x9F,
];
/// The reason codes a 3.x CONNACK return code decodes to.
const CONNACK_V3_REASONS: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const SUBACK_REASONS: &[u8] = &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];
const SUBACK_V3_REASONS: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V3_1), Just(ProtocolVersion::V3_1_1), Just(ProtocolVersion::V5)]
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(codes).prop_map(ReasonCode)
}

fn text() -> impl Strategy<Value = ByteStr> {
    "[a-zA-Z0-9 _.é東-]{0,12}".prop_map(ByteStr::from)
}

fn topic_name() -> impl Strategy<Value = ByteStr> {
    "\\$?[a-z0-9]{1,6}(/[a-zé0-9]{0,6}){0,3}".prop_map(ByteStr::from)
}

fn topic_filter() -> impl Strategy<Value = ByteStr> {
    let level = prop_oneof![Just("+".to_string()), "[a-z0-9]{0,5}"];
    (vec(level, 1..4), any::<bool>(), option::of("[a-z]{1,4}"))
        .prop_map(|(levels, multi_level, share_group)| {
            let mut filter = levels.join("/");
            if multi_level {
                filter.push_str("/#");
            } else if filter.is_empty() {
                filter.push('x');
            }
            match share_group {
                Some(group) => format!("$share/{group}/{filter}"),
                None => filter,
            }
        })
        .prop_map(ByteStr::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    option::of(0u8..=1)
}

/// Where a property section sits, for generating only allowed properties (MQTT 5 table 2.2.2.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scope {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubResponse,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Any property values (each property valid in itself), before restricting them to a scope.
fn any_properties() -> impl Strategy<Value = Properties> {
    let message =
        (flag(), option::of(any::<u32>()), option::of(text()), option::of(topic_name()), option::of(binary()));
    let session = (
        vec(1u32..=268_435_455, 0..3),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
        option::of((text(), option::of(binary()))),
        flag(),
        option::of(any::<u32>()),
        flag(),
    );
    let server = (
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(1u16..),
        option::of(any::<u16>()),
        option::of(any::<u16>()),
        flag(),
        flag(),
        vec((text(), text()), 0..3),
        option::of(1u32..),
        (flag(), flag(), flag()),
    );
    (message, session, server).prop_map(|(message, session, server)| {
        let (payload_format_indicator, message_expiry_interval_secs, content_type, response_topic, correlation_data) =
            message;
        let (
            subscription_ids,
            session_expiry,
            assigned_id,
            server_keep_alive,
            auth,
            request_problem,
            will_delay,
            request_response,
        ) = session;
        let (
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            available,
        ) = server;
        let (authentication_method, authentication_data) = match auth {
            Some((method, data)) => (Some(method), data),
            None => (None, None),
        };
        Properties {
            payload_format_indicator,
            message_expiry_interval_secs,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers: subscription_ids.into_iter().collect(),
            session_expiry_interval_secs: session_expiry,
            assigned_client_identifier: assigned_id,
            server_keep_alive_secs: server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information: request_problem,
            will_delay_interval_secs: will_delay,
            request_response_information: request_response,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum: alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available: available.0,
            subscription_identifier_available: available.1,
            shared_subscription_available: available.2,
        }
    })
}

fn keep<T>(allowed: bool, value: Option<T>) -> Option<T> {
    value.filter(|_| allowed)
}

/// Keeps only what `scope` allows.
fn restrict(p: Properties, scope: Scope) -> Properties {
    use Scope::*;
    let is = |scopes: &[Scope]| scopes.contains(&scope);
    let message = is(&[Will, Publish]);
    let mut subscription_identifiers = p.subscription_identifiers;
    match scope {
        Publish => {}
        Subscribe => subscription_identifiers.truncate(1),
        _ => subscription_identifiers.clear(),
    }
    let auth = is(&[Connect, ConnAck, Auth]);
    let connack = is(&[ConnAck]);
    Properties {
        payload_format_indicator: keep(message, p.payload_format_indicator),
        message_expiry_interval_secs: keep(message, p.message_expiry_interval_secs),
        content_type: keep(message, p.content_type),
        response_topic: keep(message, p.response_topic),
        correlation_data: keep(message, p.correlation_data),
        subscription_identifiers,
        session_expiry_interval_secs: keep(is(&[Connect, ConnAck, Disconnect]), p.session_expiry_interval_secs),
        assigned_client_identifier: keep(connack, p.assigned_client_identifier),
        server_keep_alive_secs: keep(connack, p.server_keep_alive_secs),
        authentication_method: keep(auth, p.authentication_method),
        authentication_data: keep(auth, p.authentication_data),
        request_problem_information: keep(is(&[Connect]), p.request_problem_information),
        will_delay_interval_secs: keep(is(&[Will]), p.will_delay_interval_secs),
        request_response_information: keep(is(&[Connect]), p.request_response_information),
        response_information: keep(connack, p.response_information),
        server_reference: keep(is(&[ConnAck, Disconnect]), p.server_reference),
        reason_string: keep(is(&[ConnAck, PubResponse, SubAck, UnsubAck, Disconnect, Auth]), p.reason_string),
        receive_maximum: keep(is(&[Connect, ConnAck]), p.receive_maximum),
        topic_alias_maximum: keep(is(&[Connect, ConnAck]), p.topic_alias_maximum),
        topic_alias: keep(is(&[Publish]), p.topic_alias),
        maximum_qos: keep(connack, p.maximum_qos),
        retain_available: keep(connack, p.retain_available),
        user_properties: p.user_properties,
        maximum_packet_size: keep(is(&[Connect, ConnAck]), p.maximum_packet_size),
        wildcard_subscription_available: keep(connack, p.wildcard_subscription_available),
        subscription_identifier_available: keep(connack, p.subscription_identifier_available),
        shared_subscription_available: keep(connack, p.shared_subscription_available),
    }
}

/// Properties for `scope` at `version`: none at all before MQTT 5.
fn properties(version: ProtocolVersion, scope: Scope) -> BoxedStrategy<Properties> {
    if version.is_v5() {
        any_properties().prop_map(move |p| restrict(p, scope)).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (topic_name(), binary(), qos(), any::<bool>(), properties(version, Scope::Will))
        .prop_map(|(topic, payload, qos, retain, properties)| Will { topic, payload, qos, retain, properties });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        option::of(will),
        option::of(text()),
        option::of(binary()),
        properties(version, Scope::Connect),
    )
        .prop_map(move |(clean_start, keep_alive_secs, client_id, will, username, password, properties)| {
            // 3.x sends a password only with a user name [MQTT-3.1.2-22].
            let password = if version.is_v5() || username.is_some() { password } else { None };
            Packet::Connect(Box::new(Connect {
                version,
                clean_start,
                keep_alive_secs,
                client_id,
                will,
                username,
                password,
                properties,
            }))
        })
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        1u16..,
        properties(version, Scope::Publish),
        binary(),
        any::<bool>(),
    )
        .prop_map(move |(qos, dup, retain, topic, packet_id, properties, payload, alias_only)| {
            let at_most_once = qos == QoS::AtMostOnce;
            // An empty topic name is only valid in MQTT 5 with a Topic Alias.
            let topic = if alias_only && properties.topic_alias.is_some() { ByteStr::default() } else { topic };
            Packet::Publish(Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic,
                packet_id: if at_most_once { 0 } else { packet_id },
                properties,
                payload,
            })
        })
}

fn pub_response(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = if version.is_v5() { (PUBACK_REASONS, PUBREL_REASONS) } else { (&[0u8][..], &[0u8][..]) };
    (0u8..4, 1u16.., reason(reasons.0), reason(reasons.1), properties(version, Scope::PubResponse)).prop_map(
        |(kind, packet_id, ack_reason, rel_reason, properties)| {
            let response = |reason| PubResponse { packet_id, reason, properties: properties.clone() };
            match kind {
                0 => Packet::PubAck(response(ack_reason)),
                1 => Packet::PubRec(response(ack_reason)),
                2 => Packet::PubRel(response(rel_reason)),
                _ => Packet::PubComp(response(rel_reason)),
            }
        },
    )
}

fn subscription_options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if version.is_v5() {
                SubscriptionOptions { qos, no_local, retain_as_published, retain_handling }
            } else {
                SubscriptionOptions { qos, ..SubscriptionOptions::default() }
            }
        },
    )
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (1u16.., vec((topic_filter(), subscription_options(version)), 1..4), properties(version, Scope::Subscribe))
        .prop_map(|(packet_id, filters, properties)| {
            // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
            let filters = filters
                .into_iter()
                .map(|(filter, mut options)| {
                    options.no_local &= !filter.starts_with("$share/");
                    (filter, options)
                })
                .collect();
            Packet::Subscribe(Subscribe { packet_id, filters, properties })
        })
}

fn acks(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let suback_reasons = if version.is_v5() { SUBACK_REASONS } else { SUBACK_V3_REASONS };
    let unsuback_reasons =
        if version.is_v5() { vec(reason(UNSUBACK_REASONS), 0..4).boxed() } else { Just(Vec::new()).boxed() };
    prop_oneof![
        (1u16.., vec(reason(suback_reasons), 0..4), properties(version, Scope::SubAck))
            .prop_map(|(packet_id, reasons, properties)| Packet::SubAck(SubAck { packet_id, reasons, properties })),
        (1u16.., vec(topic_filter(), 1..4), properties(version, Scope::Unsubscribe)).prop_map(
            |(packet_id, filters, properties)| Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties })
        ),
        (1u16.., unsuback_reasons, properties(version, Scope::UnsubAck))
            .prop_map(|(packet_id, reasons, properties)| Packet::UnsubAck(UnsubAck { packet_id, reasons, properties })),
    ]
}

fn control(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let connack_reasons = if version.is_v5() { CONNACK_REASONS } else { CONNACK_V3_REASONS };
    let connack = (any::<bool>(), reason(connack_reasons), properties(version, Scope::ConnAck)).prop_map(
        |(session_present, reason, properties)| Packet::ConnAck(ConnAck { session_present, reason, properties }),
    );
    let simple = prop_oneof![Just(Packet::PingReq), Just(Packet::PingResp)];
    if !version.is_v5() {
        return prop_oneof![connack, simple, Just(Packet::Disconnect(Disconnect::default()))].boxed();
    }
    let disconnect = (reason(DISCONNECT_REASONS), properties(version, Scope::Disconnect))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    let auth = (reason(AUTH_REASONS), properties(version, Scope::Auth))
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }));
    prop_oneof![connack, simple, disconnect, auth].boxed()
}

/// Any packet `version` can express.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    prop_oneof![
        connect(version),
        publish(version),
        pub_response(version),
        subscribe(version),
        acks(version),
        control(version)
    ]
    .boxed()
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|version| (Just(version), packet(version)))
}

fn encode(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    encode_packet(packet, version, &mut out).expect("a generated packet encodes");
    out
}

/// The `decode` fuzz target's check: whatever decodes must re-encode and decode to the same packet.
fn check_decode_reencode(bytes: &[u8], version: ProtocolVersion) {
    shardmq::fuzz_checks::decode::check_version(bytes, version);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_packet_round_trips((version, packet) in versioned_packet()) {
        let mut wire = encode(&packet, version);
        let decoded = decode_packet(&mut wire, version, MAX_PACKET_SIZE_BYTES);
        prop_assert_eq!(decoded, Ok(Some(packet)));
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn back_to_back_packets_round_trip_in_order((version, packets) in version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..8)))) {
        let mut wire = BytesMut::new();
        for packet in &packets {
            encode_packet(packet, version, &mut wire).expect("encodes");
        }
        for packet in packets {
            prop_assert_eq!(decode_packet(&mut wire, version, MAX_PACKET_SIZE_BYTES), Ok(Some(packet)));
        }
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn decoding_a_prefix_never_consumes_or_fails((version, packet) in versioned_packet(), cut in any::<proptest::sample::Index>()) {
        let wire = encode(&packet, version);
        let cut = cut.index(wire.len());
        let mut partial = BytesMut::from(&wire[..cut]);
        prop_assert_eq!(decode_packet(&mut partial, version, MAX_PACKET_SIZE_BYTES), Ok(None));
        prop_assert_eq!(partial.len(), cut);
    }

    /// Mirrors the `decode` fuzz target: corrupt a valid packet, decode at every version, and re-encode
    /// whatever decodes.
    #[test]
    fn corrupted_packets_never_panic_and_re_encode((version, packet) in versioned_packet(), edits in vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4)) {
        let mut wire = encode(&packet, version).to_vec();
        for (index, byte) in edits {
            let at = index.index(wire.len());
            wire[at] = byte;
        }
        for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            check_decode_reencode(&wire, version);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_re_encode(bytes in vec(any::<u8>(), 0..64)) {
        for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            check_decode_reencode(&bytes, version);
        }
    }
}
