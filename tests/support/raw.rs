//! A client that speaks raw bytes, for what well-behaved client libraries refuse to send (malformed packets,
//! a second CONNECT, a PUBLISH before CONNECT) and for checking exact fields of the broker's answers.
//!
//! Packets to send are built by hand here (so the tests do not trust our own encoder); replies are decoded
//! with `shardmq::protocol::decode_packet`.

use std::time::Duration;

use bytes::BytesMut;
use shardmq::protocol::{decode_packet, Packet, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::EVENT_TIMEOUT;

pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    V311 = 4,
    V5 = 5,
}

impl Level {
    pub fn protocol_version(self) -> ProtocolVersion {
        match self {
            Level::V311 => ProtocolVersion::V3_1_1,
            Level::V5 => ProtocolVersion::V5,
        }
    }
}

/// The fields of the broker's packets the tests look at.
pub trait PacketFields {
    /// CONNACK: (session present, return code / reason code).
    fn connack(&self) -> (bool, u8);
    /// DISCONNECT reason code.
    fn disconnect_reason(&self) -> u8;
    /// SUBACK / UNSUBACK reason codes, one per filter (empty for a 3.1.1 UNSUBACK).
    fn ack_reasons(&self) -> Vec<u8>;
    /// Packet identifier of SUBACK, UNSUBACK, PUBLISH or a PUBLISH acknowledgement.
    fn packet_id(&self) -> u16;
    /// PUBLISH: (topic, payload).
    fn publish(&self) -> (String, Vec<u8>);
}

impl PacketFields for Packet {
    fn connack(&self) -> (bool, u8) {
        match self {
            Packet::ConnAck(connack) => (connack.session_present, connack.reason.0),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn disconnect_reason(&self) -> u8 {
        match self {
            Packet::Disconnect(disconnect) => disconnect.reason.0,
            other => panic!("expected DISCONNECT, got {other:?}"),
        }
    }

    fn ack_reasons(&self) -> Vec<u8> {
        match self {
            Packet::SubAck(ack) => ack.reasons.iter().map(|reason| reason.0).collect(),
            Packet::UnsubAck(ack) => ack.reasons.iter().map(|reason| reason.0).collect(),
            other => panic!("expected SUBACK or UNSUBACK, got {other:?}"),
        }
    }

    fn packet_id(&self) -> u16 {
        match self {
            Packet::SubAck(ack) => ack.packet_id,
            Packet::UnsubAck(ack) => ack.packet_id,
            Packet::Publish(publish) => publish.packet_id,
            Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => ack.packet_id,
            other => panic!("expected a packet with a packet id, got {other:?}"),
        }
    }

    fn publish(&self) -> (String, Vec<u8>) {
        match self {
            Packet::Publish(publish) => (publish.topic.to_string(), publish.payload.to_vec()),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// What reading from the broker gave.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned and matched at once
pub enum Received {
    Packet(Packet),
    /// EOF or connection reset.
    Closed,
    Timeout,
}

pub struct RawClient {
    stream: TcpStream,
    buffer: BytesMut,
    level: Level,
}

impl RawClient {
    /// A TCP connection whose replies are decoded as `level` packets.
    pub async fn connect(port: u16, level: Level) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("TCP connect to the broker");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RawClient { stream, buffer: BytesMut::new(), level }
    }

    /// The client's own port, which the broker logs as the peer of the connection it accepted.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local address of a connected socket").port()
    }

    /// Sends bytes; errors are ignored because a test may write to a connection the broker already closed.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends CONNECT and asserts a CONNACK with return/reason code 0.
    pub async fn handshake(&mut self, connect_packet: &[u8]) -> Packet {
        self.send(connect_packet).await;
        let connack = self.expect_packet().await;
        assert_eq!(connack.connack().1, 0, "CONNECT refused: {connack:?}");
        connack
    }

    pub async fn receive(&mut self, timeout: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let before = self.buffer.clone();
            match decode_packet(&mut self.buffer, self.level.protocol_version(), u32::MAX) {
                Ok(Some(packet)) => return Received::Packet(packet),
                Ok(None) => {}
                Err(error) => panic!("broker sent a packet we cannot decode ({error}): {:02X?}", &before[..]),
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_elapsed) => return Received::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Received::Closed,
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub async fn expect_packet(&mut self) -> Packet {
        match self.receive(EVENT_TIMEOUT).await {
            Received::Packet(packet) => packet,
            other => panic!("expected a packet from the broker, got {other:?}"),
        }
    }

    /// Waits up to `timeout` for the broker to close the connection; returns the packets sent before.
    pub async fn expect_closed_within(&mut self, timeout: Duration) -> Vec<Packet> {
        let mut before_close = Vec::new();
        loop {
            match self.receive(timeout).await {
                Received::Packet(packet) => before_close.push(packet),
                Received::Closed => return before_close,
                Received::Timeout => {
                    panic!("broker did not close the connection within {timeout:?}; got {before_close:?}")
                }
            }
        }
    }

    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        self.expect_closed_within(EVENT_TIMEOUT).await
    }

    /// The bytes the broker sends until it closes the connection (undecoded: for answers whose format
    /// depends on a protocol level the broker does not know).
    pub async fn bytes_until_closed(&mut self) -> Vec<u8> {
        let mut received = self.buffer.split().to_vec();
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_elapsed) => panic!("broker did not close the connection; got {received:02X?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return received,
                Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// MQTT 5: the broker must send DISCONNECT with `reason` and close [MQTT-4.13.1-1].
    pub async fn expect_disconnect_and_close(&mut self, reason: u8) {
        let packets = self.expect_closed().await;
        let disconnect = packets.iter().find(|packet| matches!(packet, Packet::Disconnect(_)));
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
        assert_eq!(packet, Packet::PingResp, "expected PINGRESP");
    }
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
