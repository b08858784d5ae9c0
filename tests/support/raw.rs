//! A client that speaks raw bytes, for what well-behaved client libraries refuse to send (malformed packets,
//! a second CONNECT, a PUBLISH before CONNECT) and for checking exact bytes the broker answers with.
//!
//! Packets are built by hand here; replies are split into packets by their fixed header only, with a few
//! small readers for the fields the tests look at.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::EVENT_TIMEOUT;

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBACK: u8 = 9;
pub const UNSUBACK: u8 = 11;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    V311 = 4,
    V5 = 5,
}

/// One packet the broker sent: the first byte of the fixed header and everything after the length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPacket {
    pub first_byte: u8,
    pub body: Vec<u8>,
}

impl RawPacket {
    pub fn kind(&self) -> u8 {
        self.first_byte >> 4
    }

    /// CONNACK: (session present, return code / reason code).
    pub fn connack(&self) -> (bool, u8) {
        assert_eq!(self.kind(), CONNACK, "expected CONNACK, got {self:?}");
        (self.body[0] & 1 == 1, self.body[1])
    }

    /// DISCONNECT reason code (0x00 when the body is empty).
    pub fn disconnect_reason(&self) -> u8 {
        assert_eq!(self.kind(), DISCONNECT, "expected DISCONNECT, got {self:?}");
        self.body.first().copied().unwrap_or(0)
    }

    /// SUBACK / UNSUBACK reason codes, one per filter (empty for a 3.1.1 UNSUBACK).
    pub fn ack_reasons(&self, level: Level) -> Vec<u8> {
        assert!(matches!(self.kind(), SUBACK | UNSUBACK), "expected SUBACK/UNSUBACK, got {self:?}");
        let mut at = 2;
        if level == Level::V5 {
            let (properties_len, used) = read_varint(&self.body[at..]);
            at += used + properties_len;
        }
        self.body[at..].to_vec()
    }

    /// Packet identifier of an ack, SUBACK or UNSUBACK.
    pub fn packet_id(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// PUBLISH: (topic, payload), skipping packet id and v5 properties.
    pub fn publish(&self, level: Level) -> (String, Vec<u8>) {
        assert_eq!(self.kind(), PUBLISH, "expected PUBLISH, got {self:?}");
        let topic_len = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let topic = String::from_utf8(self.body[2..2 + topic_len].to_vec()).expect("broker sent a UTF-8 topic");
        let mut at = 2 + topic_len;
        if (self.first_byte >> 1) & 3 > 0 {
            at += 2;
        }
        if level == Level::V5 {
            let (properties_len, used) = read_varint(&self.body[at..]);
            at += used + properties_len;
        }
        (topic, self.body[at..].to_vec())
    }
}

/// What reading from the broker gave.
#[derive(Debug)]
pub enum Received {
    Packet(RawPacket),
    /// EOF or connection reset.
    Closed,
    Timeout,
}

pub struct RawClient {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawClient {
    pub async fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("TCP connect to the broker");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RawClient { stream, buffer: Vec::new() }
    }

    /// Sends bytes; errors are ignored because a test may write to a connection the broker already closed.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends CONNECT and asserts a CONNACK with return/reason code 0.
    pub async fn handshake(&mut self, connect_packet: &[u8]) -> RawPacket {
        self.send(connect_packet).await;
        let connack = self.expect_packet().await;
        assert_eq!(connack.connack().1, 0, "CONNECT refused: {connack:?}");
        connack
    }

    pub async fn receive(&mut self, timeout: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(packet) = split_packet(&mut self.buffer) {
                return Received::Packet(packet);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_elapsed) => return Received::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Received::Closed,
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub async fn expect_packet(&mut self) -> RawPacket {
        match self.receive(EVENT_TIMEOUT).await {
            Received::Packet(packet) => packet,
            other => panic!("expected a packet from the broker, got {other:?}"),
        }
    }

    /// Waits up to `timeout` for the broker to close the connection; returns the packets sent before.
    pub async fn expect_closed_within(&mut self, timeout: Duration) -> Vec<RawPacket> {
        let mut before_close = Vec::new();
        loop {
            match self.receive(timeout).await {
                Received::Packet(packet) => before_close.push(packet),
                Received::Closed => return before_close,
                Received::Timeout => panic!("broker did not close the connection within {timeout:?}; got {before_close:?}"),
            }
        }
    }

    pub async fn expect_closed(&mut self) -> Vec<RawPacket> {
        self.expect_closed_within(EVENT_TIMEOUT).await
    }

    /// MQTT 5: the broker must send DISCONNECT with `reason` and close [MQTT-4.13.1-1].
    pub async fn expect_disconnect_and_close(&mut self, reason: u8) {
        let packets = self.expect_closed().await;
        let disconnect = packets.iter().find(|packet| packet.kind() == DISCONNECT);
        match disconnect {
            Some(packet) => assert_eq!(
                packet.disconnect_reason(),
                reason,
                "DISCONNECT reason 0x{:02X}, expected 0x{reason:02X}",
                packet.disconnect_reason()
            ),
            None => panic!("closed without DISCONNECT 0x{reason:02X}; packets before close: {packets:?}"),
        }
    }

    /// Asserts the connection is still open: a PINGREQ gets its PINGRESP.
    pub async fn expect_alive(&mut self) {
        self.send(&pingreq()).await;
        let packet = self.expect_packet().await;
        assert_eq!(packet.kind(), PINGRESP, "expected PINGRESP, got {packet:?}");
    }
}

/// Removes one whole packet from the front of `buffer`, if there is one.
fn split_packet(buffer: &mut Vec<u8>) -> Option<RawPacket> {
    if buffer.len() < 2 {
        return None;
    }
    let mut length = 0usize;
    let mut at = 1;
    loop {
        let byte = *buffer.get(at)?;
        length |= ((byte & 0x7F) as usize) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        assert!(at <= 4, "broker sent a remaining length over 4 bytes: {buffer:?}");
    }
    if buffer.len() < at + length {
        return None;
    }
    let body = buffer[at..at + length].to_vec();
    let first_byte = buffer[0];
    buffer.drain(..at + length);
    Some(RawPacket { first_byte, body })
}

/// (value, bytes used) of a variable byte integer.
fn read_varint(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().enumerate().take(4) {
        value |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("bad variable byte integer in {bytes:?}")
}

pub fn varint(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return out;
        }
    }
}

pub fn string(text: &str) -> Vec<u8> {
    binary(text.as_bytes())
}

pub fn binary(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A packet from its first byte and body, with the remaining length filled in.
pub fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// v5 properties block: length then the encoded properties.
pub fn properties(encoded: &[u8]) -> Vec<u8> {
    let mut out = varint(encoded.len());
    out.extend_from_slice(encoded);
    out
}

/// The will of a raw CONNECT.
pub struct RawWill<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

/// CONNECT with protocol name "MQTT"; `connect_properties` is the encoded v5 property list (ignored for 3.1.1).
pub fn connect(level: Level, client_id: &str, clean: bool, keep_alive_secs: u16, will: Option<&RawWill>) -> Vec<u8> {
    connect_with(level as u8, client_id, clean, keep_alive_secs, will, &[])
}

pub fn connect_with(
    level: u8,
    client_id: &str,
    clean: bool,
    keep_alive_secs: u16,
    will: Option<&RawWill>,
    connect_properties: &[u8],
) -> Vec<u8> {
    let mut flags = if clean { 0x02 } else { 0 };
    if let Some(will) = will {
        flags |= 0x04 | (will.qos << 3) | if will.retain { 0x20 } else { 0 };
    }
    let mut body = string("MQTT");
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    if level == Level::V5 as u8 {
        body.extend(properties(connect_properties));
    }
    body.extend(string(client_id));
    if let Some(will) = will {
        if level == Level::V5 as u8 {
            body.extend(properties(&[]));
        }
        body.extend(string(will.topic));
        body.extend(binary(will.payload));
    }
    packet(0x10, &body)
}

/// SUBSCRIBE; each filter with its options byte (QoS in the low bits).
pub fn subscribe(level: Level, packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if level == Level::V5 {
        body.extend(properties(&[]));
    }
    for (filter, options) in filters {
        body.extend(string(filter));
        body.push(*options);
    }
    packet(0x82, &body)
}

pub fn unsubscribe(level: Level, packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if level == Level::V5 {
        body.extend(properties(&[]));
    }
    for filter in filters {
        body.extend(string(filter));
    }
    packet(0xA2, &body)
}

/// PUBLISH; `packet_id` is written only for QoS > 0.
pub fn publish(level: Level, topic: &str, qos: u8, retain: bool, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    publish_with(level, topic.as_bytes(), qos, retain, packet_id, &[], payload)
}

/// PUBLISH with raw topic bytes (may be invalid UTF-8) and encoded v5 properties.
pub fn publish_with(
    level: Level,
    topic: &[u8],
    qos: u8,
    retain: bool,
    packet_id: u16,
    publish_properties: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = binary(topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    if level == Level::V5 {
        body.extend(properties(publish_properties));
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP with only the packet id.
pub fn publish_ack(kind: u8, packet_id: u16) -> Vec<u8> {
    let flags = if kind == PUBREL { 0x02 } else { 0 };
    packet((kind << 4) | flags, &packet_id.to_be_bytes())
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0x00]
}

/// DISCONNECT: empty for 3.1.1, with a reason code for v5.
pub fn disconnect(level: Level, reason: u8) -> Vec<u8> {
    match level {
        Level::V311 => vec![0xE0, 0x00],
        Level::V5 => vec![0xE0, 0x01, reason],
    }
}
