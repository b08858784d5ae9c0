//! Streaming, strict decoding of MQTT 3.1 / 3.1.1 / 5.0 packets from a read buffer.
//!
//! `decode_packet` looks at the fixed header first: it rejects an oversized packet before its body has
//! arrived, returns `Ok(None)` until the whole packet is buffered, then splits the packet off the buffer and
//! parses it. Strings, binary fields and PUBLISH payloads are `Bytes` slices of that buffer: nothing is copied.

use bytes::{Buf, BytesMut};

use super::error::DecodeError;
use super::packet::*;
use super::properties::{Properties, PropertyScope};
use super::reason::ReasonCode;
use super::topic::{parse_shared_subscription, validate_topic_name, TopicError};
use super::wire::{decode_variable_byte_integer, Reader};

/// Decode one packet from the front of `buf` (advancing it). `Ok(None)` = need more bytes (nothing consumed).
///
/// `version` is the connection's level (use `ProtocolVersion::V5` before CONNECT: CONNECT carries its own
/// level). Fails with `PacketTooLarge` as soon as the fixed header shows a size over `packet_size_max_bytes`.
/// On error the connection must be closed: the buffer's position is then unspecified.
pub fn decode_packet(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    packet_size_max_bytes: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    let packet_type = packet_type_of(first_byte, version)?;
    let flags = first_byte & 0x0F;
    check_flags(packet_type, flags)?;
    let Some((remaining_len, len_bytes)) = decode_variable_byte_integer(&buf[1..])? else {
        return Ok(None);
    };
    let size_bytes = 1 + len_bytes as u64 + u64::from(remaining_len);
    if size_bytes > u64::from(packet_size_max_bytes) {
        return Err(DecodeError::PacketTooLarge { size_bytes, max_bytes: packet_size_max_bytes });
    }
    let size_bytes = size_bytes as usize;
    if buf.len() < size_bytes {
        return Ok(None);
    }
    let mut packet_bytes = buf.split_to(size_bytes);
    packet_bytes.advance(1 + len_bytes);
    let mut reader = Reader::new(packet_bytes.freeze(), packet_type);
    if packet_type == PacketType::Publish {
        // The hot path: fill the packet where it is returned rather than moving a large `Publish` around.
        let mut decoded = Ok(Some(Packet::Publish(Publish::default())));
        if let Ok(Some(Packet::Publish(publish))) = &mut decoded {
            decode_publish(&mut reader, flags, version, publish)?;
            reader.finish()?;
        }
        return decoded;
    }
    let packet = decode_body(&mut reader, packet_type, flags, version)?;
    reader.finish()?;
    Ok(Some(packet))
}

fn packet_type_of(first_byte: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
    Ok(match first_byte >> 4 {
        1 => PacketType::Connect,
        2 => PacketType::ConnAck,
        3 => PacketType::Publish,
        4 => PacketType::PubAck,
        5 => PacketType::PubRec,
        6 => PacketType::PubRel,
        7 => PacketType::PubComp,
        8 => PacketType::Subscribe,
        9 => PacketType::SubAck,
        10 => PacketType::Unsubscribe,
        11 => PacketType::UnsubAck,
        12 => PacketType::PingReq,
        13 => PacketType::PingResp,
        14 => PacketType::Disconnect,
        15 if version.is_v5() => PacketType::Auth,
        packet_type => return Err(DecodeError::ReservedPacketType { packet_type }),
    })
}

/// The fixed-header flags of every packet but PUBLISH are fixed [MQTT-2.1.3-1].
fn check_flags(packet_type: PacketType, flags: u8) -> Result<(), DecodeError> {
    let expected = match packet_type {
        PacketType::Publish => return Ok(()),
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::ReservedFlags { packet_type, flags });
    }
    Ok(())
}

fn decode_body(
    r: &mut Reader,
    packet_type: PacketType,
    flags: u8,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    Ok(match packet_type {
        PacketType::Connect => Packet::Connect(Box::new(decode_connect(r)?)),
        PacketType::ConnAck => Packet::ConnAck(decode_connack(r, version)?),
        PacketType::Publish => {
            let mut publish = Publish::default();
            decode_publish(r, flags, version, &mut publish)?;
            Packet::Publish(publish)
        }
        PacketType::PubAck => Packet::PubAck(decode_pub_response(r, version)?),
        PacketType::PubRec => Packet::PubRec(decode_pub_response(r, version)?),
        PacketType::PubRel => Packet::PubRel(decode_pub_response(r, version)?),
        PacketType::PubComp => Packet::PubComp(decode_pub_response(r, version)?),
        PacketType::Subscribe => Packet::Subscribe(decode_subscribe(r, version)?),
        PacketType::SubAck => Packet::SubAck(decode_suback(r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(decode_unsuback(r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(decode_disconnect(r, version)?),
        PacketType::Auth => Packet::Auth(decode_auth(r)?),
    })
}

fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::PacketIdZero { packet_type: r.packet_type() }),
        id => Ok(id),
    }
}

fn properties_if_v5(r: &mut Reader, version: ProtocolVersion, scope: PropertyScope) -> Result<Properties, DecodeError> {
    if version.is_v5() {
        Properties::decode(r, scope)
    } else {
        Ok(Properties::default())
    }
}

fn reason_code(r: &mut Reader) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8()?);
    if !code.is_valid_in(r.packet_type()) {
        return Err(DecodeError::ReasonCodeInvalid { packet_type: r.packet_type(), code: code.0 });
    }
    Ok(code)
}

/// The protocol name and level decide the version: "MQIsdp" 3, "MQTT" 4 or 5 [MQTT-3.1.2-1] [MQTT-3.1.2-2].
fn decode_protocol(r: &mut Reader) -> Result<ProtocolVersion, DecodeError> {
    let is_mqtt = match r.binary_borrowed()? {
        b"MQTT" => true,
        b"MQIsdp" => false,
        _ => return Err(DecodeError::ProtocolNameInvalid),
    };
    match (is_mqtt, r.u8()?) {
        (false, 3) => Ok(ProtocolVersion::V3_1),
        (true, 4) => Ok(ProtocolVersion::V3_1_1),
        (true, 5) => Ok(ProtocolVersion::V5),
        (_, level) => Err(DecodeError::UnsupportedProtocolLevel { level }),
    }
}

mod connect_flag {
    pub const RESERVED: u8 = 0x01;
    pub const CLEAN_START: u8 = 0x02;
    pub const WILL: u8 = 0x04;
    pub const WILL_QOS_SHIFT: u8 = 3;
    pub const WILL_RETAIN: u8 = 0x20;
    pub const PASSWORD: u8 = 0x40;
    pub const USERNAME: u8 = 0x80;
}

fn check_connect_flags(flags: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    use connect_flag::*;
    if flags & RESERVED != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_qos = (flags >> WILL_QOS_SHIFT) & 0b11;
    if flags & WILL == 0 {
        if will_qos != 0 {
            return Err(DecodeError::WillQosWithoutWill);
        }
        if flags & WILL_RETAIN != 0 {
            return Err(DecodeError::WillRetainWithoutWill);
        }
    } else if will_qos == 3 {
        return Err(DecodeError::WillQosInvalid);
    }
    if !version.is_v5() && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    Ok(())
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    use connect_flag::*;
    let version = decode_protocol(r)?;
    let flags = r.u8()?;
    check_connect_flags(flags, version)?;
    let keep_alive_secs = r.u16()?;
    let properties = properties_if_v5(r, version, PropertyScope::Connect)?;
    let client_id = r.string()?;
    let will = if flags & WILL != 0 {
        let properties = properties_if_v5(r, version, PropertyScope::Will)?;
        let topic = r.string()?;
        validate_topic_name(&topic).map_err(DecodeError::TopicNameInvalid)?;
        let payload = r.binary()?;
        let qos = QoS::from_u8((flags >> WILL_QOS_SHIFT) & 0b11).ok_or(DecodeError::WillQosInvalid)?;
        Some(Will { topic, payload, qos, retain: flags & WILL_RETAIN != 0, properties })
    } else {
        None
    };
    let username = if flags & USERNAME != 0 { Some(r.string()?) } else { None };
    let password = if flags & PASSWORD != 0 { Some(r.binary()?) } else { None };
    Ok(Connect {
        version,
        clean_start: flags & CLEAN_START != 0,
        keep_alive_secs,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    let reason = if version.is_v5() {
        reason_code(r)?
    } else {
        let code = r.u8()?;
        ReasonCode::from_v3_connack_return_code(code).ok_or(DecodeError::ConnAckReturnCodeInvalid { code })?
    };
    let properties = properties_if_v5(r, version, PropertyScope::ConnAck)?;
    Ok(ConnAck { session_present: flags & 1 != 0, reason, properties })
}

fn decode_publish(
    r: &mut Reader,
    flags: u8,
    version: ProtocolVersion,
    publish: &mut Publish,
) -> Result<(), DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::PublishQosInvalid)?;
    let dup = flags & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupOnQos0);
    }
    publish.topic = r.string()?;
    if qos != QoS::AtMostOnce {
        publish.packet_id = packet_id(r)?;
    }
    if version.is_v5() {
        publish.properties.decode_into(r, PropertyScope::Publish)?;
    }
    if publish.topic.is_empty() {
        // A zero-length Topic Name is allowed only with a Topic Alias (section 3.3.2.3.4).
        if publish.properties.topic_alias.is_none() {
            return Err(DecodeError::TopicNameInvalid(TopicError::Empty));
        }
    } else {
        validate_topic_name(&publish.topic).map_err(DecodeError::TopicNameInvalid)?;
    }
    publish.dup = dup;
    publish.qos = qos;
    publish.retain = flags & 1 != 0;
    publish.payload = r.take_rest();
    Ok(())
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In MQTT 5 the reason code and properties may be left out.
fn decode_pub_response(r: &mut Reader, version: ProtocolVersion) -> Result<PubResponse, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut response = PubResponse { packet_id, ..PubResponse::default() };
    if version.is_v5() && r.remaining() > 0 {
        response.reason = reason_code(r)?;
        if r.remaining() > 0 {
            response.properties = Properties::decode(r, PropertyScope::PubResponse(r.packet_type()))?;
        }
    }
    Ok(response)
}

fn decode_subscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties_if_v5(r, version, PropertyScope::Subscribe)?;
    if r.remaining() == 0 {
        return Err(DecodeError::SubscribeEmpty);
    }
    let mut filters = Vec::with_capacity(1);
    while r.remaining() > 0 {
        // An invalid filter is refused per filter in the SUBACK (0x80 / 0x8F) by the broker, not here.
        let filter = r.string()?;
        let options = decode_subscription_options(r.u8()?, version)?;
        if options.no_local && matches!(parse_shared_subscription(&filter), Ok(Some(_))) {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        filters.push((filter, options));
    }
    Ok(Subscribe { packet_id, filters, properties })
}

/// The subscription options byte: 3.x has only the QoS bits, MQTT 5 adds No Local, Retain As Published and
/// Retain Handling; the rest are reserved [MQTT-3.8.3-5].
fn decode_subscription_options(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    let reserved_bits = if version.is_v5() { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved_bits != 0 {
        return Err(DecodeError::SubscriptionOptionsReserved);
    }
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::SubscriptionQosInvalid)?;
    let retain_handling = (byte >> 4) & 0b11;
    if retain_handling == 3 {
        return Err(DecodeError::RetainHandlingInvalid);
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

/// SUBACK return codes: 3.x knows 0, 1, 2 and 0x80 (failure); MQTT 5 its own table.
fn decode_suback(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties_if_v5(r, version, PropertyScope::SubAck)?;
    let mut reasons = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let reason = if version.is_v5() {
            reason_code(r)?
        } else {
            match r.u8()? {
                code @ (0x00..=0x02 | 0x80) => ReasonCode(code),
                code => return Err(DecodeError::ReasonCodeInvalid { packet_type: PacketType::SubAck, code }),
            }
        };
        reasons.push(reason);
    }
    Ok(SubAck { packet_id, reasons, properties })
}

fn decode_unsubscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties_if_v5(r, version, PropertyScope::Unsubscribe)?;
    if r.remaining() == 0 {
        return Err(DecodeError::UnsubscribeEmpty);
    }
    let mut filters = Vec::with_capacity(1);
    while r.remaining() > 0 {
        // An invalid filter is answered in the UNSUBACK by the broker, not refused here.
        let filter = r.string()?;
        filters.push(filter);
    }
    Ok(Unsubscribe { packet_id, filters, properties })
}

fn decode_unsuback(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties_if_v5(r, version, PropertyScope::UnsubAck)?;
    let mut reasons = Vec::new();
    while version.is_v5() && r.remaining() > 0 {
        reasons.push(reason_code(r)?);
    }
    Ok(UnsubAck { packet_id, reasons, properties })
}

/// DISCONNECT: empty in 3.x; in MQTT 5 the reason code and properties may be left out.
fn decode_disconnect(r: &mut Reader, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    if version.is_v5() && r.remaining() > 0 {
        disconnect.reason = reason_code(r)?;
        if r.remaining() > 0 {
            disconnect.properties = Properties::decode(r, PropertyScope::Disconnect)?;
        }
    }
    Ok(disconnect)
}

/// AUTH (MQTT 5 only): the reason code and properties may be left out.
fn decode_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut auth = Auth::default();
    if r.remaining() > 0 {
        auth.reason = reason_code(r)?;
        if r.remaining() > 0 {
            auth.properties = Properties::decode(r, PropertyScope::Auth)?;
        }
    }
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes};

    use super::*;
    use crate::protocol::encode_packet;

    const MAX: u32 = 1 << 20;

    fn sample_packets(version: ProtocolVersion) -> Vec<Packet> {
        let mut properties = Properties::default();
        if version.is_v5() {
            properties.user_properties.push(("k".into(), "v".into()));
        }
        let mut packets = vec![
            Packet::Connect(Box::new(Connect {
                version,
                clean_start: true,
                keep_alive_secs: 30,
                client_id: "c1".into(),
                will: Some(Will {
                    topic: "w/t".into(),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: properties.clone(),
                }),
                username: Some("u".into()),
                password: Some(Bytes::from_static(b"p")),
                properties: properties.clone(),
            })),
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason: ReasonCode::NOT_AUTHORIZED,
                ..Default::default()
            }),
            Packet::Publish(Publish {
                qos: QoS::ExactlyOnce,
                dup: true,
                retain: true,
                topic: "a/b".into(),
                packet_id: 7,
                properties: properties.clone(),
                payload: Bytes::from_static(b"hello"),
            }),
            Packet::PubAck(PubResponse { packet_id: 1, ..Default::default() }),
            Packet::PubRec(PubResponse { packet_id: 2, ..Default::default() }),
            Packet::PubRel(PubResponse { packet_id: 3, ..Default::default() }),
            Packet::PubComp(PubResponse { packet_id: 4, ..Default::default() }),
            Packet::Subscribe(Subscribe {
                packet_id: 5,
                filters: vec![("a/+".into(), SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() })],
                properties: properties.clone(),
            }),
            Packet::SubAck(SubAck {
                packet_id: 5,
                reasons: vec![ReasonCode(1), ReasonCode(0x80)],
                ..Default::default()
            }),
            Packet::Unsubscribe(Unsubscribe { packet_id: 6, filters: vec!["a/#".into()], ..Default::default() }),
            Packet::UnsubAck(UnsubAck { packet_id: 6, ..Default::default() }),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect(Disconnect::default()),
        ];
        if version.is_v5() {
            packets.push(Packet::Auth(Auth { reason: ReasonCode::CONTINUE_AUTHENTICATION, properties }));
        }
        packets
    }

    #[test]
    fn every_packet_round_trips_back_to_back_at_every_version() {
        for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let packets = sample_packets(version);
            let mut buf = BytesMut::new();
            for packet in &packets {
                encode_packet(packet, version, &mut buf).expect("encodes");
            }
            for packet in &packets {
                assert_eq!(decode_packet(&mut buf, version, MAX).as_ref(), Ok(&Some(packet.clone())), "{version:?}");
            }
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn partial_input_needs_more_bytes_and_consumes_nothing() {
        let mut whole = BytesMut::new();
        encode_packet(&sample_packets(ProtocolVersion::V5)[0], ProtocolVersion::V5, &mut whole).expect("encodes");
        for cut in 0..whole.len() {
            let mut partial = BytesMut::from(&whole[..cut]);
            assert_eq!(decode_packet(&mut partial, ProtocolVersion::V5, MAX), Ok(None), "cut at {cut}");
            assert_eq!(partial.len(), cut);
        }
    }

    #[test]
    fn oversized_packet_fails_from_the_fixed_header_alone() {
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
        assert_eq!(
            decode_packet(&mut buf, ProtocolVersion::V5, 1024),
            Err(DecodeError::PacketTooLarge { size_bytes: 3 + 16_383, max_bytes: 1024 })
        );
    }

    #[test]
    fn publish_payload_is_a_slice_of_the_read_buffer() {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_slice(&[0x30, 8, 0, 1, b't', b'p', b'a', b'y', b'l', b'd']);
        let start = buf.as_ptr() as usize;
        let Ok(Some(Packet::Publish(publish))) = decode_packet(&mut buf, ProtocolVersion::V3_1_1, MAX) else {
            panic!("expected a PUBLISH");
        };
        assert_eq!(&publish.payload[..], b"payld");
        assert_eq!(publish.payload.as_ptr() as usize, start + 5);
    }

    #[test]
    fn wildcard_topic_name_is_rejected_with_topic_name_invalid_mqtt_3_3_2_2() {
        let mut buf = BytesMut::from(&[0x30, 6, 0, 3, b'a', b'/', b'+', 0][..]);
        let err = decode_packet(&mut buf, ProtocolVersion::V5, MAX).expect_err("wildcard");
        assert_eq!(err, DecodeError::TopicNameInvalid(TopicError::WildcardInName));
        assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
    }
}
