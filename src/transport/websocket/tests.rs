//! Unit tests of the WebSocket transport: raw bytes for every rule, and an independent client
//! (tungstenite over an in-memory stream) exchanging real MQTT packets.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{WebSocketSettings, WebSocketTransport};
use crate::transport::{Transport, TransportError};

const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A client frame: masked unless `mask` is `None`, with the raw first byte (FIN, RSV, opcode).
fn client_frame_raw(first_byte: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(mask_bit | payload.len() as u8);
    } else if payload.len() <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(index, byte)| byte ^ key[index % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_raw(if fin { 0x80 } else { 0 } | opcode, payload, Some(MASK))
}

fn binary(payload: &[u8]) -> Vec<u8> {
    client_frame(true, 0x2, payload)
}

/// A frame the server wrote.
#[derive(Debug, PartialEq, Eq)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// Split server output into frames, checking what RFC 6455 5.1 requires of a server frame.
fn server_frames(mut bytes: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert_eq!(bytes[0] & 0xF0, 0x80, "final, no reserved bits");
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        let (len, at) = match bytes[1] & 0x7F {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10),
            short => (short as usize, 2),
        };
        frames.push(ServerFrame { opcode: bytes[0] & 0x0F, payload: bytes[at..at + len].to_vec() });
        bytes = &bytes[at + len..];
    }
    frames
}

fn close_payload(code: u16) -> Vec<u8> {
    code.to_be_bytes().to_vec()
}

fn transport() -> WebSocketTransport {
    WebSocketTransport::new(&WebSocketSettings::default())
}

/// Collect what `send` with no frames yields, as one byte string.
fn drain(transport: &mut WebSocketTransport) -> Vec<u8> {
    let mut wire = VecDeque::new();
    transport.send(&mut VecDeque::new(), &mut wire).unwrap();
    wire.iter().flat_map(|bytes| bytes.iter().copied()).collect()
}

/// A transport past the upgrade, its 101 response already collected.
fn upgraded() -> WebSocketTransport {
    upgraded_with(&WebSocketSettings::default())
}

fn upgraded_with(settings: &WebSocketSettings) -> WebSocketTransport {
    let mut transport = WebSocketTransport::new(settings);
    let mut plain = BytesMut::new();
    transport.received(UPGRADE, &mut plain).unwrap();
    assert!(transport.is_established());
    let response = drain(&mut transport);
    assert!(response.starts_with(b"HTTP/1.1 101 "));
    transport
}

/// Feed `wire` and expect the transport to fail with a close frame carrying `code`.
fn expect_close(transport: &mut WebSocketTransport, wire: &[u8], code: u16) -> TransportError {
    let error = transport.received(wire, &mut BytesMut::new()).unwrap_err();
    assert!(transport.wants_write());
    let frames = server_frames(&drain(transport));
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].opcode, 0x8);
    assert_eq!(frames[0].payload[..2], code.to_be_bytes(), "{error}");
    assert!(transport.received(&binary(b"x"), &mut BytesMut::new()).is_err(), "no input after failing");
    error
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

// ---- handshake ----

#[test]
fn upgrade_is_answered_with_101_and_the_mqtt_subprotocol() {
    let mut transport = transport();
    assert!(!transport.is_established());
    transport.received(UPGRADE, &mut BytesMut::new()).unwrap();
    assert!(transport.is_established());
    assert!(transport.wants_write());
    assert_eq!(transport.subprotocol(), Some("mqtt"));
    let response = drain(&mut transport);
    let response = text(&response);
    assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(response.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(response.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"));
    assert!(!transport.wants_write());
}

#[test]
fn upgrade_delivered_one_byte_at_a_time_completes_on_the_last_byte() {
    let mut transport = transport();
    let mut plain = BytesMut::new();
    for &byte in &UPGRADE[..UPGRADE.len() - 1] {
        transport.received(&[byte], &mut plain).unwrap();
        assert!(!transport.is_established());
        assert!(!transport.wants_write());
    }
    transport.received(&UPGRADE[UPGRADE.len() - 1..], &mut plain).unwrap();
    assert!(transport.is_established());
    assert!(drain(&mut transport).starts_with(b"HTTP/1.1 101 "));
}

#[test]
fn frames_right_behind_the_upgrade_request_are_read_in_the_same_call() {
    let mut input = UPGRADE.to_vec();
    input.extend(binary(&[0xC0, 0x00]));
    let mut plain = BytesMut::new();
    let mut transport = transport();
    transport.received(&input, &mut plain).unwrap();
    assert_eq!(&plain[..], &[0xC0, 0x00]);
}

/// Feed a bad upgrade request: `received` fails, and `send` yields the HTTP refusal.
fn refused(settings: &WebSocketSettings, request: &[u8]) -> (TransportError, String) {
    let mut transport = WebSocketTransport::new(settings);
    let error = transport.received(request, &mut BytesMut::new()).unwrap_err();
    assert!(!transport.is_established());
    assert!(transport.wants_write());
    let response = String::from_utf8(drain(&mut transport)).unwrap();
    assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
    assert!(!transport.wants_write());
    assert!(transport.received(UPGRADE, &mut BytesMut::new()).is_err(), "no second attempt");
    (error, response)
}

#[test]
fn upgrade_on_another_path_is_refused_with_404() {
    let request = text(UPGRADE).replace("GET /mqtt ", "GET /ws ");
    let (error, response) = refused(&WebSocketSettings::default(), request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 404 "));
    assert!(matches!(error, TransportError::Protocol(text) if text.contains("/ws")));
}

#[test]
fn upgrade_on_a_configured_path_with_a_query_is_accepted() {
    let settings = WebSocketSettings { path: "/".into(), ..WebSocketSettings::default() };
    let request = text(UPGRADE).replace("GET /mqtt ", "GET /?token=1 ");
    let mut transport = WebSocketTransport::new(&settings);
    transport.received(request.as_bytes(), &mut BytesMut::new()).unwrap();
    assert!(transport.is_established());
}

#[test]
fn upgrade_from_an_origin_outside_the_allow_list_is_refused_with_403() {
    let settings = WebSocketSettings { origins: vec!["https://app.example".into()], ..WebSocketSettings::default() };
    let request = text(UPGRADE).replace("Host: broker\r\n", "Host: broker\r\nOrigin: https://evil.example\r\n");
    let (_, response) = refused(&settings, request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 403 "));
    let allowed = text(UPGRADE).replace("Host: broker\r\n", "Host: broker\r\nOrigin: https://app.example\r\n");
    let mut transport = WebSocketTransport::new(&settings);
    transport.received(allowed.as_bytes(), &mut BytesMut::new()).unwrap();
    assert!(transport.is_established());
}

#[test]
fn upgrade_without_upgrade_headers_is_refused_with_400() {
    for header in ["Upgrade: websocket\r\n", "Connection: Upgrade\r\n", "Sec-WebSocket-Version: 13\r\n"] {
        let request = text(UPGRADE).replace(header, "");
        let (error, response) = refused(&WebSocketSettings::default(), request.as_bytes());
        assert!(response.starts_with("HTTP/1.1 400 "), "without {header:?}: {response}");
        assert!(matches!(error, TransportError::Protocol(text) if text.starts_with("RFC 6455 4.")));
    }
}

#[test]
fn plain_mqtt_on_a_websocket_listener_is_refused_with_400() {
    // A CONNECT sent to the wrong port: not HTTP at all.
    let (error, response) =
        refused(&WebSocketSettings::default(), b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 400 "));
    assert!(matches!(error, TransportError::Protocol(text) if text.starts_with("RFC 9112")));
}

#[test]
fn upgrade_request_over_8_kib_is_refused_with_431() {
    let mut request = b"GET /mqtt HTTP/1.1\r\nX-Padding: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 9000));
    let (error, response) = refused(&WebSocketSettings::default(), &request);
    assert!(response.starts_with("HTTP/1.1 431 "));
    assert!(matches!(error, TransportError::TooLarge(_)));
}

#[test]
fn frames_sent_before_the_upgrade_wait_behind_the_101() {
    let mut transport = transport();
    let mut frames = VecDeque::from([Bytes::from_static(&[0xD0, 0x00])]);
    let mut wire = VecDeque::new();
    transport.send(&mut frames, &mut wire).unwrap();
    assert!(frames.is_empty() && wire.is_empty(), "nothing goes out before the upgrade");
    assert!(!transport.wants_write());
    transport.received(UPGRADE, &mut BytesMut::new()).unwrap();
    let out = drain(&mut transport);
    let end = out.windows(4).position(|window| window == b"\r\n\r\n").unwrap() + 4;
    assert!(out.starts_with(b"HTTP/1.1 101 "));
    assert_eq!(server_frames(&out[end..]), vec![ServerFrame { opcode: 0x2, payload: vec![0xD0, 0x00] }]);
}

// ---- frames in ----

#[test]
fn binary_frame_delivered_one_byte_at_a_time_yields_its_payload() {
    let mut transport = upgraded();
    let payload: Vec<u8> = (0..300u16).map(|value| value as u8).collect();
    let mut plain = BytesMut::new();
    for byte in binary(&payload) {
        transport.received(&[byte], &mut plain).unwrap();
    }
    assert_eq!(&plain[..], &payload[..]);
    assert!(!transport.wants_write());
}

#[test]
fn mqtt_packet_split_over_frames_and_packets_sharing_a_frame_reach_the_codec_mqtt_6_0_0_2() {
    use crate::protocol::{decode_packet, encode_packet, Packet, ProtocolVersion, Publish};
    let publish =
        Packet::Publish(Publish { topic: "a/b".into(), payload: Bytes::from_static(b"hello"), ..Default::default() });
    let mut encoded = BytesMut::new();
    encode_packet(&publish, ProtocolVersion::V3_1_1, &mut encoded).unwrap();
    encode_packet(&Packet::PingReq, ProtocolVersion::V3_1_1, &mut encoded).unwrap();
    encode_packet(&publish, ProtocolVersion::V3_1_1, &mut encoded).unwrap();
    // Frame 1: the first PUBLISH and half of PINGREQ; frame 2: the rest of PINGREQ and the second PUBLISH.
    let split = encoded.len() / 2;
    let mut wire = binary(&encoded[..split]);
    wire.extend(binary(&encoded[split..]));
    let mut transport = upgraded();
    let mut plain = BytesMut::new();
    transport.received(&wire, &mut plain).unwrap();
    let mut packets = Vec::new();
    while let Some(packet) = decode_packet(&mut plain, ProtocolVersion::V3_1_1, 1024).unwrap() {
        packets.push(packet);
    }
    assert_eq!(packets, vec![publish.clone(), Packet::PingReq, publish]);
}

#[test]
fn fragmented_message_with_a_ping_in_between_is_reassembled_in_order() {
    let mut wire = client_frame(false, 0x2, b"ab");
    wire.extend(client_frame(true, 0x9, b"ping-data"));
    wire.extend(client_frame(false, 0x0, b"cd"));
    wire.extend(client_frame(false, 0x0, b""));
    wire.extend(client_frame(true, 0x0, b"ef"));
    wire.extend(binary(b"gh"));
    let mut transport = upgraded();
    let mut plain = BytesMut::new();
    transport.received(&wire, &mut plain).unwrap();
    assert_eq!(&plain[..], b"abcdefgh");
    assert_eq!(
        server_frames(&drain(&mut transport)),
        vec![ServerFrame { opcode: 0xA, payload: b"ping-data".to_vec() }]
    );
}

#[test]
fn ping_split_across_reads_is_answered_with_a_pong_carrying_its_payload() {
    let ping = client_frame(true, 0x9, b"0123456789");
    let mut transport = upgraded();
    let mut plain = BytesMut::new();
    transport.received(&ping[..3], &mut plain).unwrap();
    assert!(!transport.wants_write());
    transport.received(&ping[3..9], &mut plain).unwrap();
    transport.received(&ping[9..], &mut plain).unwrap();
    assert!(plain.is_empty());
    assert!(transport.wants_write());
    assert_eq!(
        server_frames(&drain(&mut transport)),
        vec![ServerFrame { opcode: 0xA, payload: b"0123456789".to_vec() }]
    );
}

#[test]
fn unsolicited_pong_and_empty_binary_frames_are_ignored() {
    let mut wire = client_frame(true, 0xA, b"x");
    wire.extend(binary(b""));
    let mut transport = upgraded();
    let mut plain = BytesMut::new();
    transport.received(&wire, &mut plain).unwrap();
    assert!(plain.is_empty());
    assert!(!transport.wants_write());
}

#[test]
fn close_is_echoed_with_its_code_then_reported_as_peer_closed() {
    let mut transport = upgraded();
    let mut close = close_payload(1001);
    close.extend_from_slice(b"going away");
    let mut wire = binary(&[0xE0, 0x00]);
    wire.extend(client_frame(true, 0x8, &close));
    wire.extend(binary(b"ignored after close"));
    let mut plain = BytesMut::new();
    assert_eq!(transport.received(&wire, &mut plain), Err(TransportError::PeerClosed("websocket")));
    assert_eq!(&plain[..], &[0xE0, 0x00], "a DISCONNECT before the close frame still reaches the codec");
    assert_eq!(server_frames(&drain(&mut transport)), vec![ServerFrame { opcode: 0x8, payload: close_payload(1001) }]);
    assert!(!transport.is_established());
    assert_eq!(transport.received(b"x", &mut plain), Err(TransportError::PeerClosed("websocket")));
}

#[test]
fn close_without_a_code_is_echoed_without_one() {
    let mut transport = upgraded();
    let error = transport.received(&client_frame(true, 0x8, b""), &mut BytesMut::new());
    assert_eq!(error, Err(TransportError::PeerClosed("websocket")));
    assert_eq!(server_frames(&drain(&mut transport)), vec![ServerFrame { opcode: 0x8, payload: vec![] }]);
}

#[test]
fn malformed_close_frames_are_protocol_errors() {
    expect_close(&mut upgraded(), &client_frame(true, 0x8, &[0x03]), 1002);
    expect_close(&mut upgraded(), &client_frame(true, 0x8, &close_payload(1005)), 1002);
    expect_close(&mut upgraded(), &client_frame(true, 0x8, &close_payload(999)), 1002);
    let mut bad_reason = close_payload(1000);
    bad_reason.extend_from_slice(&[0xFF, 0xFE]);
    expect_close(&mut upgraded(), &client_frame(true, 0x8, &bad_reason), 1007);
}

#[test]
fn unmasked_client_frame_is_closed_with_1002_rfc_6455_5_1() {
    let error = expect_close(&mut upgraded(), &client_frame_raw(0x82, b"ab", None), 1002);
    assert_eq!(error, TransportError::Protocol("RFC 6455 5.1: client frame not masked".into()));
}

#[test]
fn text_frame_is_closed_with_1003_mqtt_6_0_0_1() {
    let error = expect_close(&mut upgraded(), &client_frame(true, 0x1, b"{}"), 1003);
    assert!(matches!(error, TransportError::Protocol(text) if text.contains("[MQTT-6.0.0-1]")));
}

#[test]
fn reserved_bits_and_opcodes_are_closed_with_1002() {
    expect_close(&mut upgraded(), &client_frame_raw(0xC2, b"a", Some(MASK)), 1002); // RSV1
    expect_close(&mut upgraded(), &client_frame_raw(0x92, b"a", Some(MASK)), 1002); // RSV3
    expect_close(&mut upgraded(), &client_frame(true, 0x3, b"a"), 1002);
    expect_close(&mut upgraded(), &client_frame(true, 0xB, b"a"), 1002);
}

#[test]
fn fragmentation_errors_are_closed_with_1002_rfc_6455_5_4() {
    expect_close(&mut upgraded(), &client_frame(true, 0x0, b"a"), 1002);
    let mut wire = client_frame(false, 0x2, b"a");
    wire.extend(binary(b"b"));
    expect_close(&mut upgraded(), &wire, 1002);
}

#[test]
fn fragmented_or_oversized_control_frames_are_closed_with_1002_rfc_6455_5_5() {
    expect_close(&mut upgraded(), &client_frame(false, 0x9, b"a"), 1002);
    expect_close(&mut upgraded(), &client_frame(true, 0x9, &[0u8; 126]), 1002);
}

#[test]
fn length_with_its_top_bit_set_is_closed_with_1002() {
    let mut wire = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
    wire.extend_from_slice(&MASK);
    expect_close(&mut upgraded(), &wire, 1002);
}

#[test]
fn frame_over_the_limit_is_closed_with_1009_before_its_payload_arrives() {
    let settings = WebSocketSettings { max_frame_bytes: 100, ..WebSocketSettings::default() };
    let mut transport = upgraded_with(&settings);
    let frame = binary(&[0u8; 101]);
    // The header alone is enough to refuse it.
    let error = expect_close(&mut transport, &frame[..8], 1009);
    assert!(matches!(error, TransportError::TooLarge(text) if text.contains("101 bytes")));
    let mut exact = upgraded_with(&settings);
    exact.received(&binary(&[0u8; 100]), &mut BytesMut::new()).unwrap();
}

#[test]
fn fragmented_message_over_the_limit_is_closed_with_1009() {
    let settings = WebSocketSettings { max_frame_bytes: 100, ..WebSocketSettings::default() };
    let mut wire = client_frame(false, 0x2, &[0u8; 60]);
    wire.extend(client_frame(true, 0x0, &[0u8; 41]));
    let error = expect_close(&mut upgraded_with(&settings), &wire, 1009);
    assert!(matches!(error, TransportError::TooLarge(_)));
    // The limit is per message: the next message starts from zero.
    let mut ok = client_frame(false, 0x2, &[0u8; 60]);
    ok.extend(client_frame(true, 0x0, &[0u8; 40]));
    ok.extend(binary(&[0u8; 100]));
    upgraded_with(&settings).received(&ok, &mut BytesMut::new()).unwrap();
}

// ---- frames out ----

#[test]
fn frames_of_one_send_go_out_as_one_binary_frame_without_copying_them() {
    let mut transport = upgraded();
    let first = Bytes::from(vec![0x30, 0x03, 0x00, 0x01, b'a']);
    let second = Bytes::from(vec![0xD0, 0x00]);
    let mut frames = VecDeque::from([first.clone(), second.clone()]);
    let mut wire = VecDeque::new();
    transport.send(&mut frames, &mut wire).unwrap();
    assert!(frames.is_empty());
    assert_eq!(wire.len(), 3, "a header, then the frames as they are");
    assert_eq!(&wire[0][..], &[0x82, 7]);
    assert_eq!(wire[1].as_ptr(), first.as_ptr());
    assert_eq!(wire[2].as_ptr(), second.as_ptr());
}

#[test]
fn sends_over_the_frame_limit_are_split_into_several_frames() {
    let settings = WebSocketSettings { max_frame_bytes: 10, ..WebSocketSettings::default() };
    let mut transport = upgraded_with(&settings);
    let frames_in = [vec![1u8; 4], vec![2u8; 4], vec![3u8; 25], vec![4u8; 1]];
    let mut frames: VecDeque<Bytes> = frames_in.iter().cloned().map(Bytes::from).collect();
    let mut wire = VecDeque::new();
    transport.send(&mut frames, &mut wire).unwrap();
    let out: Vec<u8> = wire.iter().flat_map(|bytes| bytes.iter().copied()).collect();
    let sizes: Vec<usize> = server_frames(&out).iter().map(|frame| frame.payload.len()).collect();
    assert_eq!(sizes, vec![8, 10, 10, 6], "whole frames fill a frame, a large one is cut");
    let joined: Vec<u8> = server_frames(&out).into_iter().flat_map(|frame| frame.payload).collect();
    assert_eq!(joined, frames_in.concat());
}

#[test]
fn close_queues_a_1000_close_frame_after_the_last_frames() {
    let mut transport = upgraded();
    transport.close();
    assert!(transport.wants_write());
    let mut frames = VecDeque::from([Bytes::from_static(&[0xE0, 0x00])]);
    let mut wire = VecDeque::new();
    transport.send(&mut frames, &mut wire).unwrap();
    let out: Vec<u8> = wire.iter().flat_map(|bytes| bytes.iter().copied()).collect();
    assert_eq!(
        server_frames(&out),
        vec![
            ServerFrame { opcode: 0x2, payload: vec![0xE0, 0x00] },
            ServerFrame { opcode: 0x8, payload: close_payload(1000) }
        ]
    );
    assert!(!transport.wants_write());
    // Nothing follows the close frame; the peer's answering close is not echoed.
    let mut late = VecDeque::from([Bytes::from_static(&[0xD0, 0x00])]);
    let mut wire = VecDeque::new();
    transport.send(&mut late, &mut wire).unwrap();
    assert!(late.is_empty() && wire.is_empty());
    let answer = client_frame(true, 0x8, &close_payload(1000));
    assert_eq!(transport.received(&answer, &mut BytesMut::new()), Err(TransportError::PeerClosed("websocket")));
    assert!(drain(&mut transport).is_empty());
}

#[test]
fn close_during_the_upgrade_sends_nothing() {
    let mut transport = transport();
    transport.received(&UPGRADE[..10], &mut BytesMut::new()).unwrap();
    transport.close();
    assert!(!transport.wants_write());
    assert!(drain(&mut transport).is_empty());
}

// ---- against an independent client ----

mod tungstenite_client {
    use std::io::{self, Read, Write};

    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::protocol::CloseFrame;
    use tungstenite::{ClientRequestBuilder, HandshakeError, Message, WebSocket};

    use super::*;
    use crate::protocol::*;

    /// The client's end of an in-memory connection: it reads what the server sent, writes what the
    /// server will receive.
    #[derive(Default)]
    struct Pipe {
        to_client: VecDeque<u8>,
        to_server: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.to_client.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.to_client.len());
            for (slot, byte) in buf.iter_mut().zip(self.to_client.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.to_server.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The broker side: our transport plus the codec.
    struct Server {
        transport: WebSocketTransport,
        plain: BytesMut,
    }

    impl Server {
        /// Move the client's bytes into the transport (in small reads, as a socket might) and the
        /// transport's output back; returns what `received` reported last.
        fn pump(&mut self, pipe: &mut Pipe) -> Result<(), TransportError> {
            let input = std::mem::take(&mut pipe.to_server);
            let mut result = Ok(());
            for chunk in input.chunks(7) {
                result = self.transport.received(chunk, &mut self.plain);
                if result.is_err() {
                    break;
                }
            }
            self.flush(pipe);
            result
        }

        fn flush(&mut self, pipe: &mut Pipe) {
            if self.transport.wants_write() {
                self.send(Vec::new(), pipe);
            }
        }

        fn send(&mut self, packets: Vec<Packet>, pipe: &mut Pipe) {
            let mut frames: VecDeque<Bytes> = packets
                .iter()
                .map(|packet| {
                    let mut out = BytesMut::new();
                    encode_packet(packet, ProtocolVersion::V3_1_1, &mut out).unwrap();
                    out.freeze()
                })
                .collect();
            let mut wire = VecDeque::new();
            self.transport.send(&mut frames, &mut wire).unwrap();
            for bytes in wire {
                pipe.to_client.extend(bytes.iter().copied());
            }
        }

        fn packets(&mut self) -> Vec<Packet> {
            let mut packets = Vec::new();
            while let Some(packet) = decode_packet(&mut self.plain, ProtocolVersion::V3_1_1, 1 << 20).unwrap() {
                packets.push(packet);
            }
            packets
        }
    }

    fn connect(settings: &WebSocketSettings) -> (WebSocket<Pipe>, Server) {
        let mut server = Server { transport: WebSocketTransport::new(settings), plain: BytesMut::new() };
        let request = ClientRequestBuilder::new("ws://broker.test/mqtt".parse().unwrap()).with_sub_protocol("mqtt");
        let mut attempt = tungstenite::client::client(request, Pipe::default());
        loop {
            match attempt {
                Ok((socket, response)) => {
                    assert_eq!(response.status(), 101);
                    assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
                    assert!(server.transport.is_established());
                    return (socket, server);
                }
                Err(HandshakeError::Interrupted(mut mid)) => {
                    server.pump(mid.get_mut().get_mut()).unwrap();
                    attempt = mid.handshake();
                }
                Err(HandshakeError::Failure(error)) => panic!("client handshake failed: {error}"),
            }
        }
    }

    fn client_send(socket: &mut WebSocket<Pipe>, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for packet in packets {
            encode_packet(packet, ProtocolVersion::V3_1_1, &mut out).unwrap();
        }
        socket.send(Message::Binary(out.freeze())).unwrap();
    }

    /// Every message the client can read now.
    fn client_read(socket: &mut WebSocket<Pipe>) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            match socket.read() {
                Ok(message) => messages.push(message),
                Err(tungstenite::Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => return messages,
                Err(tungstenite::Error::ConnectionClosed) => return messages,
                Err(error) => panic!("client read failed: {error}"),
            }
        }
    }

    fn client_packets(messages: Vec<Message>) -> Vec<Packet> {
        let mut bytes = BytesMut::new();
        for message in messages {
            match message {
                Message::Binary(data) => bytes.extend_from_slice(&data),
                other => panic!("expected binary frames, got {other:?}"),
            }
        }
        let mut packets = Vec::new();
        while let Some(packet) = decode_packet(&mut bytes, ProtocolVersion::V3_1_1, 1 << 20).unwrap() {
            packets.push(packet);
        }
        assert!(bytes.is_empty(), "no partial packet left");
        packets
    }

    fn connect_packet() -> Packet {
        Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V3_1_1,
            clean_start: true,
            keep_alive_secs: 30,
            client_id: "ws-client".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }))
    }

    #[test]
    fn tungstenite_client_exchanges_mqtt_packets_and_closes_cleanly() {
        let (mut socket, mut server) = connect(&WebSocketSettings::default());
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![("t/#".into(), SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() })],
            properties: Properties::default(),
        });
        client_send(&mut socket, &[connect_packet(), subscribe.clone()]);
        server.pump(socket.get_mut()).unwrap();
        let received = server.packets();
        assert_eq!(received.len(), 2);
        assert!(matches!(&received[0], Packet::Connect(connect) if connect.client_id == "ws-client"));
        assert_eq!(received[1], subscribe);

        let publish = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "t/x".into(),
            packet_id: 7,
            payload: Bytes::from(vec![0xAB; 70_000]),
            ..Default::default()
        });
        let replies = vec![
            Packet::ConnAck(ConnAck::default()),
            Packet::SubAck(SubAck {
                packet_id: 1,
                reasons: vec![ReasonCode::GRANTED_QOS_1],
                properties: Properties::default(),
            }),
            publish.clone(),
        ];
        server.send(replies.clone(), socket.get_mut());
        assert_eq!(client_packets(client_read(&mut socket)), replies);

        // A ping from the client is answered by the transport itself.
        socket.send(Message::Ping(Bytes::from_static(b"are you there"))).unwrap();
        server.pump(socket.get_mut()).unwrap();
        assert_eq!(client_read(&mut socket), vec![Message::Pong(Bytes::from_static(b"are you there"))]);

        client_send(&mut socket, &[Packet::Disconnect(Disconnect::default())]);
        socket.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).unwrap();
        assert_eq!(server.pump(socket.get_mut()), Err(TransportError::PeerClosed("websocket")));
        assert_eq!(server.packets(), vec![Packet::Disconnect(Disconnect::default())]);
        let closing = client_read(&mut socket);
        assert!(
            matches!(closing.as_slice(), [Message::Close(Some(frame))] if frame.code == CloseCode::Normal),
            "{closing:?}"
        );
    }

    #[test]
    fn tungstenite_client_reassembles_a_large_publish_split_by_the_frame_limit() {
        let settings = WebSocketSettings { max_frame_bytes: 16 * 1024, ..WebSocketSettings::default() };
        let (mut socket, mut server) = connect(&settings);
        let publish = Packet::Publish(Publish {
            topic: "big".into(),
            payload: Bytes::from((0..100_000u32).map(|value| value as u8).collect::<Vec<u8>>()),
            ..Default::default()
        });
        server.send(vec![publish.clone(), Packet::PingResp], socket.get_mut());
        let messages = client_read(&mut socket);
        assert!(messages.len() >= 7, "split into frames of at most 16 KiB: {}", messages.len());
        assert!(messages.iter().all(|message| message.len() <= 16 * 1024));
        assert_eq!(client_packets(messages), vec![publish, Packet::PingResp]);
    }

    #[test]
    fn broker_close_reaches_the_tungstenite_client_as_a_normal_close() {
        let (mut socket, mut server) = connect(&WebSocketSettings::default());
        server.transport.close();
        server.send(vec![Packet::Disconnect(Disconnect::default())], socket.get_mut());
        let messages = client_read(&mut socket);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(client_packets(vec![messages[0].clone()]), vec![Packet::Disconnect(Disconnect::default())]);
        assert!(matches!(&messages[1], Message::Close(Some(frame)) if frame.code == CloseCode::Normal));
        // tungstenite answers our close; the transport reports the session over without echoing again.
        socket.flush().ok();
        assert_eq!(server.pump(socket.get_mut()), Err(TransportError::PeerClosed("websocket")));
        assert!(!server.transport.wants_write());
    }
}

// ---- arbitrary input (the fuzz target `websocket` runs the same check for longer) ----

/// Feed `data` in `chunk_bytes` pieces after `prefix`: the invariants of the fuzz target's check.
fn check_arbitrary_input(prefix: &[u8], data: &[u8], chunk_bytes: usize) {
    crate::fuzz_checks::websocket::check_phase(prefix, data, chunk_bytes);
}

/// Client frames with fuzzed headers, so that most inputs get past the first frame.
fn arbitrary_frames() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200), any::<bool>()), 0..8)
        .prop_map(|frames| {
            frames
                .into_iter()
                .flat_map(|(first, payload, masked)| client_frame_raw(first, &payload, masked.then_some(MASK)))
                .collect()
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_input_never_panics_in_either_phase(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        frames in arbitrary_frames(),
        chunk_bytes in 1usize..40,
    ) {
        check_arbitrary_input(b"", &data, chunk_bytes);
        check_arbitrary_input(UPGRADE, &data, chunk_bytes);
        check_arbitrary_input(UPGRADE, &frames, chunk_bytes);
    }
}
