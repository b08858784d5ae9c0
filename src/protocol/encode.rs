//! Encoding of MQTT 3.1 / 3.1.1 / 5.0 packets straight into the caller's `BytesMut`.
//!
//! Each packet is measured first (which also checks every length limit), then written once with the buffer
//! reserved to its exact size: no intermediate buffers, and nothing written when encoding fails.
//! MQTT 5 properties not allowed in a packet are left out; 3.x packets carry none.

use bytes::{BufMut, BytesMut};

use super::error::EncodeError;
use super::packet::*;
use super::properties::{Properties, PropertyScope};
use super::reason::ReasonCode;
use super::wire::{field_len, put_field, put_fixed_header, variable_byte_integer_len};

/// Encode into the caller's buffer without intermediate allocation.
///
/// `version` is the connection's level; CONNECT is encoded at its own `Connect::version`.
pub fn encode_packet(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(connect) => encode_connect(connect, out),
        Packet::ConnAck(connack) => encode_connack(connack, version, out),
        Packet::Publish(publish) => encode_publish(publish, version, out),
        Packet::PubAck(response) => encode_pub_response(response, PacketType::PubAck, version, out),
        Packet::PubRec(response) => encode_pub_response(response, PacketType::PubRec, version, out),
        Packet::PubRel(response) => encode_pub_response(response, PacketType::PubRel, version, out),
        Packet::PubComp(response) => encode_pub_response(response, PacketType::PubComp, version, out),
        Packet::Subscribe(subscribe) => encode_subscribe(subscribe, version, out),
        Packet::SubAck(suback) => encode_suback(suback, version, out),
        Packet::Unsubscribe(unsubscribe) => encode_unsubscribe(unsubscribe, version, out),
        Packet::UnsubAck(unsuback) => encode_unsuback(unsuback, version, out),
        Packet::PingReq => put_fixed_header(out, 0xC0, 0),
        Packet::PingResp => put_fixed_header(out, 0xD0, 0),
        Packet::Disconnect(disconnect) => encode_reason_and_properties(
            0xE0,
            disconnect.reason,
            &disconnect.properties,
            Trailer::Disconnect,
            version,
            out,
        ),
        Packet::Auth(auth) => {
            if !version.is_v5() {
                return Err(EncodeError::PacketNotInVersion { packet_type: PacketType::Auth, version });
            }
            encode_reason_and_properties(0xF0, auth.reason, &auth.properties, Trailer::Auth, version, out)
        }
    }
}

/// Wire size of a property section (Property Length included) whose content is `content_len_bytes`.
pub(crate) fn property_section_len(content_len_bytes: usize) -> usize {
    variable_byte_integer_len(content_len_bytes) + content_len_bytes
}

/// Content length of `properties` in `scope` for MQTT 5, `None` for 3.x (no property section at all).
fn measure_properties(
    properties: &Properties,
    scope: PropertyScope,
    version: ProtocolVersion,
) -> Result<Option<usize>, EncodeError> {
    if version.is_v5() {
        properties.wire_len(scope).map(Some)
    } else {
        Ok(None)
    }
}

fn section_len(content_len_bytes: Option<usize>) -> usize {
    content_len_bytes.map_or(0, property_section_len)
}

fn put_properties(out: &mut BytesMut, properties: &Properties, scope: PropertyScope, len_bytes: Option<usize>) {
    if let Some(len_bytes) = len_bytes {
        properties.encode(scope, len_bytes, out);
    }
}

fn check_packet_id(packet_id: u16, packet_type: PacketType) -> Result<(), EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::PacketIdZero { packet_type });
    }
    Ok(())
}

fn check_reason(reason: ReasonCode, packet_type: PacketType) -> Result<(), EncodeError> {
    if !reason.is_valid_in(packet_type) {
        return Err(EncodeError::ReasonCodeInvalid { packet_type, code: reason.0 });
    }
    Ok(())
}

fn protocol_name(version: ProtocolVersion) -> &'static [u8] {
    match version {
        ProtocolVersion::V3_1 => b"MQIsdp",
        ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => b"MQTT",
    }
}

fn connect_flags(connect: &Connect) -> u8 {
    let mut flags = 0;
    if connect.clean_start {
        flags |= 0x02;
    }
    if let Some(will) = &connect.will {
        flags |= 0x04 | (will.qos as u8) << 3;
        if will.retain {
            flags |= 0x20;
        }
    }
    if connect.password.is_some() {
        flags |= 0x40;
    }
    if connect.username.is_some() {
        flags |= 0x80;
    }
    flags
}

fn encode_connect(connect: &Connect, out: &mut BytesMut) -> Result<(), EncodeError> {
    let version = connect.version;
    let name = protocol_name(version);
    let properties_len = measure_properties(&connect.properties, PropertyScope::Connect, version)?;
    let mut len = field_len(name.len())? + 4 + section_len(properties_len) + field_len(connect.client_id.len())?;
    let will_properties_len = match &connect.will {
        Some(will) => {
            let will_properties_len = measure_properties(&will.properties, PropertyScope::Will, version)?;
            len += section_len(will_properties_len) + field_len(will.topic.len())? + field_len(will.payload.len())?;
            will_properties_len
        }
        None => None,
    };
    if let Some(username) = &connect.username {
        len += field_len(username.len())?;
    }
    if let Some(password) = &connect.password {
        len += field_len(password.len())?;
    }
    put_fixed_header(out, 0x10, len)?;
    put_field(out, name);
    out.put_u8(version.level());
    out.put_u8(connect_flags(connect));
    out.put_u16(connect.keep_alive_secs);
    put_properties(out, &connect.properties, PropertyScope::Connect, properties_len);
    put_field(out, connect.client_id.as_str().as_bytes());
    if let Some(will) = &connect.will {
        put_properties(out, &will.properties, PropertyScope::Will, will_properties_len);
        put_field(out, will.topic.as_str().as_bytes());
        put_field(out, &will.payload);
    }
    if let Some(username) = &connect.username {
        put_field(out, username.as_str().as_bytes());
    }
    if let Some(password) = &connect.password {
        put_field(out, password);
    }
    Ok(())
}

/// CONNACK: MQTT 5 sends the reason code; 3.x maps it to a return code 0..=5
/// (see [`ReasonCode::to_v3_connack_return_code`]).
fn encode_connack(connack: &ConnAck, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    let code = if version.is_v5() {
        check_reason(connack.reason, PacketType::ConnAck)?;
        connack.reason.0
    } else {
        connack.reason.to_v3_connack_return_code()
    };
    let properties_len = measure_properties(&connack.properties, PropertyScope::ConnAck, version)?;
    put_fixed_header(out, 0x20, 2 + section_len(properties_len))?;
    out.put_u8(u8::from(connack.session_present));
    out.put_u8(code);
    put_properties(out, &connack.properties, PropertyScope::ConnAck, properties_len);
    Ok(())
}

/// The first byte of a PUBLISH: type, DUP, QoS and RETAIN.
pub(crate) fn publish_first_byte(dup: bool, qos: QoS, retain: bool) -> u8 {
    0x30 | u8::from(dup) << 3 | (qos as u8) << 1 | u8::from(retain)
}

fn encode_publish(publish: &Publish, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    let has_packet_id = publish.qos != QoS::AtMostOnce;
    if has_packet_id {
        check_packet_id(publish.packet_id, PacketType::Publish)?;
    }
    let properties_len = measure_properties(&publish.properties, PropertyScope::Publish, version)?;
    let len = field_len(publish.topic.len())?
        + if has_packet_id { 2 } else { 0 }
        + section_len(properties_len)
        + publish.payload.len();
    put_fixed_header(out, publish_first_byte(publish.dup, publish.qos, publish.retain), len)?;
    put_field(out, publish.topic.as_str().as_bytes());
    if has_packet_id {
        out.put_u16(publish.packet_id);
    }
    put_properties(out, &publish.properties, PropertyScope::Publish, properties_len);
    out.put_slice(&publish.payload);
    Ok(())
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. MQTT 5 leaves out what it may: the reason code when it is Success
/// without properties, the Property Length when there are no properties.
fn encode_pub_response(
    response: &PubResponse,
    packet_type: PacketType,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    check_packet_id(response.packet_id, packet_type)?;
    let first_byte = (packet_type as u8) << 4 | if packet_type == PacketType::PubRel { 0b0010 } else { 0 };
    let scope = PropertyScope::PubResponse(packet_type);
    let properties_len = measure_properties(&response.properties, scope, version)?;
    let len = match properties_len {
        None => 2,
        Some(0) if response.reason == ReasonCode::SUCCESS => 2,
        Some(0) => 3,
        Some(len) => 3 + property_section_len(len),
    };
    if len > 2 {
        check_reason(response.reason, packet_type)?;
    }
    put_fixed_header(out, first_byte, len)?;
    out.put_u16(response.packet_id);
    if len > 2 {
        out.put_u8(response.reason.0);
    }
    if len > 3 {
        put_properties(out, &response.properties, scope, properties_len);
    }
    Ok(())
}

/// The subscription options byte; 3.x carries only the QoS.
fn subscription_options_byte(options: &SubscriptionOptions, version: ProtocolVersion) -> u8 {
    let mut byte = options.qos as u8;
    if version.is_v5() {
        byte |= u8::from(options.no_local) << 2
            | u8::from(options.retain_as_published) << 3
            | (options.retain_handling & 0b11) << 4;
    }
    byte
}

fn encode_subscribe(subscribe: &Subscribe, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    check_packet_id(subscribe.packet_id, PacketType::Subscribe)?;
    if subscribe.filters.is_empty() {
        return Err(EncodeError::NoTopicFilters { packet_type: PacketType::Subscribe });
    }
    let properties_len = measure_properties(&subscribe.properties, PropertyScope::Subscribe, version)?;
    let mut len = 2 + section_len(properties_len);
    for (filter, _) in &subscribe.filters {
        len += field_len(filter.len())? + 1;
    }
    put_fixed_header(out, 0x82, len)?;
    out.put_u16(subscribe.packet_id);
    put_properties(out, &subscribe.properties, PropertyScope::Subscribe, properties_len);
    for (filter, options) in &subscribe.filters {
        put_field(out, filter.as_str().as_bytes());
        out.put_u8(subscription_options_byte(options, version));
    }
    Ok(())
}

/// A SUBACK return code: MQTT 5 checks its table; 3.x knows 0, 1, 2 and 0x80, to which every failure maps.
fn suback_code(reason: ReasonCode, version: ProtocolVersion) -> Result<u8, EncodeError> {
    if version.is_v5() {
        check_reason(reason, PacketType::SubAck)?;
        return Ok(reason.0);
    }
    match reason.0 {
        code @ 0x00..=0x02 => Ok(code),
        0x80.. => Ok(0x80),
        code => Err(EncodeError::ReasonCodeInvalid { packet_type: PacketType::SubAck, code }),
    }
}

fn encode_suback(suback: &SubAck, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    check_packet_id(suback.packet_id, PacketType::SubAck)?;
    for &reason in &suback.reasons {
        suback_code(reason, version)?;
    }
    let properties_len = measure_properties(&suback.properties, PropertyScope::SubAck, version)?;
    put_fixed_header(out, 0x90, 2 + section_len(properties_len) + suback.reasons.len())?;
    out.put_u16(suback.packet_id);
    put_properties(out, &suback.properties, PropertyScope::SubAck, properties_len);
    for &reason in &suback.reasons {
        out.put_u8(suback_code(reason, version)?);
    }
    Ok(())
}

fn encode_unsubscribe(
    unsubscribe: &Unsubscribe,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    check_packet_id(unsubscribe.packet_id, PacketType::Unsubscribe)?;
    if unsubscribe.filters.is_empty() {
        return Err(EncodeError::NoTopicFilters { packet_type: PacketType::Unsubscribe });
    }
    let properties_len = measure_properties(&unsubscribe.properties, PropertyScope::Unsubscribe, version)?;
    let mut len = 2 + section_len(properties_len);
    for filter in &unsubscribe.filters {
        len += field_len(filter.len())?;
    }
    put_fixed_header(out, 0xA2, len)?;
    out.put_u16(unsubscribe.packet_id);
    put_properties(out, &unsubscribe.properties, PropertyScope::Unsubscribe, properties_len);
    for filter in &unsubscribe.filters {
        put_field(out, filter.as_str().as_bytes());
    }
    Ok(())
}

/// UNSUBACK: 3.x carries only the packet id; MQTT 5 adds properties and one reason code per filter.
fn encode_unsuback(unsuback: &UnsubAck, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    check_packet_id(unsuback.packet_id, PacketType::UnsubAck)?;
    let properties_len = measure_properties(&unsuback.properties, PropertyScope::UnsubAck, version)?;
    let reasons: &[ReasonCode] = if version.is_v5() { &unsuback.reasons } else { &[] };
    for &reason in reasons {
        check_reason(reason, PacketType::UnsubAck)?;
    }
    put_fixed_header(out, 0xB0, 2 + section_len(properties_len) + reasons.len())?;
    out.put_u16(unsuback.packet_id);
    put_properties(out, &unsuback.properties, PropertyScope::UnsubAck, properties_len);
    for &reason in reasons {
        out.put_u8(reason.0);
    }
    Ok(())
}

/// Packets that end with an optional reason code and optional properties.
#[derive(Clone, Copy)]
enum Trailer {
    Disconnect,
    Auth,
}

/// DISCONNECT and AUTH: empty in 3.x; in MQTT 5 the reason code is left out when it is Success without
/// properties, the Property Length when there are no properties.
fn encode_reason_and_properties(
    first_byte: u8,
    reason: ReasonCode,
    properties: &Properties,
    trailer: Trailer,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if !version.is_v5() {
        return put_fixed_header(out, first_byte, 0);
    }
    let (scope, packet_type) = match trailer {
        Trailer::Disconnect => (PropertyScope::Disconnect, PacketType::Disconnect),
        Trailer::Auth => (PropertyScope::Auth, PacketType::Auth),
    };
    check_reason(reason, packet_type)?;
    let properties_len = properties.wire_len(scope)?;
    let len = match properties_len {
        0 if reason == ReasonCode::SUCCESS => 0,
        0 => 1,
        len => 1 + property_section_len(len),
    };
    put_fixed_header(out, first_byte, len)?;
    if len > 0 {
        out.put_u8(reason.0);
    }
    if len > 1 {
        properties.encode(scope, properties_len, out);
    }
    Ok(())
}
