//! The client side of MQTT framing that loadgen needs: encoding the few packets a load client sends and
//! splitting a read buffer into borrowed frames without copying, for MQTT 3.1.1 and 5.
//!
//! Deliberately tiny and allocation-free: the receive path must keep up with a million deliveries a second
//! on one core, so frames are views into the read buffer and only the fields loadgen uses are parsed.

use std::fmt;

/// Protocol level byte of CONNECT that loadgen speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MqttVersion {
    V311,
    V5,
}

impl MqttVersion {
    pub fn from_number(number: u8) -> Option<MqttVersion> {
        match number {
            3 | 4 => Some(MqttVersion::V311),
            5 => Some(MqttVersion::V5),
            _ => None,
        }
    }

    fn level(self) -> u8 {
        match self {
            MqttVersion::V311 => 4,
            MqttVersion::V5 => 5,
        }
    }
}

pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// Largest frame loadgen accepts from a broker; anything bigger is a broken stream.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A malformed stream from the broker: loadgen closes the connection and reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Remaining Length longer than 4 bytes [MQTT-2.2.3].
    MalformedRemainingLength,
    /// Frame larger than FRAME_BYTES_MAX.
    TooLarge(usize),
    /// A packet body shorter than its kind requires.
    Truncated(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::MalformedRemainingLength => write!(f, "malformed remaining length [MQTT-2.2.3]"),
            FrameError::TooLarge(bytes) => write!(f, "frame of {bytes} bytes exceeds {FRAME_BYTES_MAX}"),
            FrameError::Truncated(kind) => write!(f, "packet type {kind} shorter than its fixed fields"),
        }
    }
}

/// One complete frame borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub flags: u8,
    pub body: &'a [u8],
}

/// Splits the next complete frame off the front of `buf`. Ok(None) = need more bytes.
/// Returns the frame and the number of bytes it used.
pub fn next_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let mut remaining = 0usize;
    let mut shift = 0;
    let mut header_len = 1;
    loop {
        if header_len > 4 {
            return Err(FrameError::MalformedRemainingLength);
        }
        let Some(&byte) = buf.get(header_len) else { return Ok(None) };
        remaining |= ((byte & 0x7f) as usize) << shift;
        header_len += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    if remaining > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(remaining));
    }
    let total = header_len + remaining;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = Frame { kind: buf[0] >> 4, flags: buf[0] & 0x0f, body: &buf[header_len..total] };
    Ok(Some((frame, total)))
}

/// The fields of a received PUBLISH that loadgen uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishView<'a> {
    pub qos: u8,
    pub packet_id: u16,
    pub payload: &'a [u8],
}

pub fn parse_publish<'a>(frame: &Frame<'a>, version: MqttVersion) -> Result<PublishView<'a>, FrameError> {
    let truncated = FrameError::Truncated(PUBLISH);
    let body = frame.body;
    let qos = (frame.flags >> 1) & 0x03;
    let topic_len = u16::from_be_bytes([*body.first().ok_or(truncated.clone())?, *body.get(1).ok_or(truncated.clone())?]);
    let mut at = 2 + topic_len as usize;
    let mut packet_id = 0;
    if qos > 0 {
        let id = body.get(at..at + 2).ok_or(truncated.clone())?;
        packet_id = u16::from_be_bytes([id[0], id[1]]);
        at += 2;
    }
    if version == MqttVersion::V5 {
        let (props_len, used) = read_varint(body.get(at..).ok_or(truncated.clone())?).ok_or(truncated.clone())?;
        at += used + props_len;
    }
    let payload = body.get(at..).ok_or(truncated)?;
    Ok(PublishView { qos, packet_id, payload })
}

/// (session present, reason / return code) of a CONNACK, plus the v5 Receive Maximum if sent.
pub fn parse_connack(frame: &Frame<'_>, version: MqttVersion) -> Result<(bool, u8, Option<u16>), FrameError> {
    let body = frame.body;
    if body.len() < 2 {
        return Err(FrameError::Truncated(CONNACK));
    }
    let mut receive_maximum = None;
    if version == MqttVersion::V5 && body.len() > 2 {
        if let Some((props_len, used)) = read_varint(&body[2..]) {
            let props = body.get(2 + used..2 + used + props_len).unwrap_or(&[]);
            receive_maximum = find_u16_property(props, 0x21);
        }
    }
    Ok((body[0] & 1 == 1, body[1], receive_maximum))
}

/// Walks v5 properties looking for a two-byte integer property; stops at anything it cannot size.
fn find_u16_property(mut props: &[u8], wanted_id: u8) -> Option<u16> {
    while let Some((&id, rest)) = props.split_first() {
        let size = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize
            }
            0x26 => {
                let key = 2 + u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
                key + 2 + u16::from_be_bytes([*rest.get(key)?, *rest.get(key + 1)?]) as usize
            }
            0x0B => read_varint(rest)?.1,
            _ => return None,
        };
        if id == wanted_id && size == 2 {
            return Some(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
        }
        props = rest.get(size..)?;
    }
    None
}

/// Packet id of PUBACK / PUBREC / PUBREL / PUBCOMP / SUBACK.
pub fn parse_packet_id(frame: &Frame<'_>) -> Result<u16, FrameError> {
    match frame.body {
        [high, low, ..] => Ok(u16::from_be_bytes([*high, *low])),
        _ => Err(FrameError::Truncated(frame.kind)),
    }
}

/// SUBACK return codes (after packet id and, for v5, properties).
pub fn parse_suback_codes<'a>(frame: &Frame<'a>, version: MqttVersion) -> Result<&'a [u8], FrameError> {
    let truncated = FrameError::Truncated(SUBACK);
    let mut at = 2;
    if version == MqttVersion::V5 {
        let (props_len, used) = read_varint(frame.body.get(at..).ok_or(truncated.clone())?).ok_or(truncated.clone())?;
        at += used + props_len;
    }
    frame.body.get(at..).ok_or(truncated)
}

fn read_varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (index, &byte) in buf.iter().enumerate().take(4) {
        value |= ((byte & 0x7f) as usize) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value & 0x7f) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

fn write_str(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
}

/// What a load client puts in its CONNECT.
pub struct ConnectOptions<'a> {
    pub version: MqttVersion,
    pub client_id: &'a str,
    pub clean_start: bool,
    pub keepalive_secs: u16,
    /// v5 only: sent when the session should outlive the connection.
    pub session_expiry_secs: u32,
}

pub fn encode_connect(out: &mut Vec<u8>, options: &ConnectOptions<'_>) {
    let mut props = Vec::new();
    if options.version == MqttVersion::V5 && options.session_expiry_secs > 0 {
        props.push(0x11);
        props.extend_from_slice(&options.session_expiry_secs.to_be_bytes());
    }
    let props_bytes = if options.version == MqttVersion::V5 { varint_len(props.len()) + props.len() } else { 0 };
    let remaining = 10 + props_bytes + 2 + options.client_id.len();
    out.push(CONNECT << 4);
    write_varint(out, remaining);
    write_str(out, b"MQTT");
    out.push(options.version.level());
    out.push(if options.clean_start { 0x02 } else { 0x00 });
    out.extend_from_slice(&options.keepalive_secs.to_be_bytes());
    if options.version == MqttVersion::V5 {
        write_varint(out, props.len());
        out.extend_from_slice(&props);
    }
    write_str(out, options.client_id.as_bytes());
}

pub fn encode_subscribe(out: &mut Vec<u8>, version: MqttVersion, packet_id: u16, filter: &str, qos: u8) {
    let props_bytes = usize::from(version == MqttVersion::V5);
    out.push((SUBSCRIBE << 4) | 0x02);
    write_varint(out, 2 + props_bytes + 2 + filter.len() + 1);
    out.extend_from_slice(&packet_id.to_be_bytes());
    if version == MqttVersion::V5 {
        out.push(0);
    }
    write_str(out, filter.as_bytes());
    out.push(qos);
}

/// Encodes a PUBLISH whose payload is `stamp` followed by zero padding up to `payload_bytes`.
pub fn encode_publish(out: &mut Vec<u8>, version: MqttVersion, publish: &OutgoingPublish<'_>) {
    let OutgoingPublish { topic, qos, packet_id, stamp, payload_bytes } = *publish;
    let id_bytes = if qos > 0 { 2 } else { 0 };
    let props_bytes = usize::from(version == MqttVersion::V5);
    let payload_bytes = payload_bytes.max(stamp.len());
    out.push((PUBLISH << 4) | (qos << 1));
    write_varint(out, 2 + topic.len() + id_bytes + props_bytes + payload_bytes);
    write_str(out, topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    if version == MqttVersion::V5 {
        out.push(0);
    }
    out.extend_from_slice(stamp);
    out.resize(out.len() + payload_bytes - stamp.len(), 0);
}

#[derive(Clone, Copy)]
pub struct OutgoingPublish<'a> {
    pub topic: &'a str,
    pub qos: u8,
    pub packet_id: u16,
    pub stamp: &'a [u8],
    pub payload_bytes: usize,
}

/// PUBACK, PUBREC, PUBREL (flags 0b0010) or PUBCOMP with reason "success".
pub fn encode_ack(out: &mut Vec<u8>, kind: u8, packet_id: u16) {
    let flags = if kind == PUBREL { 0x02 } else { 0x00 };
    out.push((kind << 4) | flags);
    out.push(2);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

pub fn encode_pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[PINGREQ << 4, 0]);
}

pub fn encode_disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[DISCONNECT << 4, 0]);
}

fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Human text for a CONNACK refusal, for error messages.
pub fn connack_refusal_text(version: MqttVersion, code: u8) -> &'static str {
    match (version, code) {
        (MqttVersion::V311, 1) => "unacceptable protocol version",
        (MqttVersion::V311, 2) => "identifier rejected",
        (MqttVersion::V311, 3) => "server unavailable",
        (MqttVersion::V311, 4) => "bad user name or password",
        (MqttVersion::V311, 5) => "not authorized",
        (MqttVersion::V5, 0x84) => "unsupported protocol version",
        (MqttVersion::V5, 0x85) => "client identifier not valid",
        (MqttVersion::V5, 0x86) => "bad user name or password",
        (MqttVersion::V5, 0x87) => "not authorized",
        (MqttVersion::V5, 0x88) => "server unavailable",
        (MqttVersion::V5, 0x89) => "server busy",
        (MqttVersion::V5, 0x8A) => "banned",
        (MqttVersion::V5, 0x97) => "quota exceeded",
        (MqttVersion::V5, 0x9F) => "connection rate exceeded",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_frame_split_for_both_versions() {
        for version in [MqttVersion::V311, MqttVersion::V5] {
            for qos in [0u8, 1, 2] {
                let mut out = Vec::new();
                let stamp = [7u8; 20];
                let publish = OutgoingPublish { topic: "a/b", qos, packet_id: 42, stamp: &stamp, payload_bytes: 200 };
                encode_publish(&mut out, version, &publish);
                let (frame, used) = next_frame(&out).unwrap().unwrap();
                assert_eq!(used, out.len());
                let view = parse_publish(&frame, version).unwrap();
                assert_eq!(view.qos, qos);
                assert_eq!(view.packet_id, if qos > 0 { 42 } else { 0 });
                assert_eq!(view.payload.len(), 200);
                assert_eq!(&view.payload[..20], &stamp);
            }
        }
    }

    #[test]
    fn partial_frame_needs_more_bytes() {
        let mut out = Vec::new();
        encode_subscribe(&mut out, MqttVersion::V5, 1, "x/#", 1);
        for cut in 0..out.len() {
            assert_eq!(next_frame(&out[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn five_byte_remaining_length_is_malformed_mqtt_2_2_3() {
        let bytes = [0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(next_frame(&bytes), Err(FrameError::MalformedRemainingLength));
    }

    #[test]
    fn v5_connack_receive_maximum_is_found_after_other_properties() {
        // session present 0, reason 0, props: topic alias max (0x22 = 10), receive maximum (0x21 = 20).
        let body = [0, 0, 6, 0x22, 0, 10, 0x21, 0, 20];
        let frame = Frame { kind: CONNACK, flags: 0, body: &body };
        assert_eq!(parse_connack(&frame, MqttVersion::V5).unwrap(), (false, 0, Some(20)));
    }
}
