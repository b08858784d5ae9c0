//! Target `websocket`: arbitrary bytes into the WebSocket transport, once as the upgrade request and once
//! as frames after a valid upgrade, delivered in pieces whose size the first byte chooses. The transport
//! must never panic nor yield more plaintext than it was given, and once it has failed it must queue only
//! its goodbye (an HTTP error or a close frame), send no MQTT frame and take no more input.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::transport::websocket::{WebSocketSettings, WebSocketTransport};
use crate::transport::Transport;

/// A valid upgrade request, for the second phase.
pub const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Our goodbye is an HTTP error (a few hundred bytes) or a close frame (at most 127), maybe behind a pong.
const GOODBYE_BYTES_MAX: usize = 1024;

pub fn check(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let chunk_bytes = usize::from(first % 32) + 1;
    check_phase(b"", rest, chunk_bytes);
    check_phase(UPGRADE, rest, chunk_bytes);
}

/// Feeds `prefix` (empty, or a valid upgrade) and then `data` in `chunk_bytes` pieces.
pub fn check_phase(prefix: &[u8], data: &[u8], chunk_bytes: usize) {
    let settings = WebSocketSettings { max_frame_bytes: 4096, ..WebSocketSettings::default() };
    let mut transport = WebSocketTransport::new(&settings);
    let mut plain = BytesMut::new();
    transport.received(prefix, &mut plain).expect("the valid upgrade is accepted");
    transport.send(&mut VecDeque::new(), &mut VecDeque::new()).expect("send the 101");
    let mut fed_bytes = 0;
    for chunk in data.chunks(chunk_bytes) {
        fed_bytes += chunk.len();
        let result = transport.received(chunk, &mut plain);
        assert!(plain.len() <= fed_bytes, "more plaintext than input");
        let mut wire = VecDeque::new();
        if result.is_err() {
            check_goodbye(&mut transport, &mut plain);
            return;
        }
        if transport.wants_write() {
            transport.send(&mut VecDeque::new(), &mut wire).expect("send");
        }
    }
}

/// After a failure: only the goodbye goes out, never an MQTT frame, and no more input is taken.
fn check_goodbye(transport: &mut WebSocketTransport, plain: &mut BytesMut) {
    let mqtt_frame = Bytes::from_static(&[0xD0, 0x00]);
    let mut frames = VecDeque::from([mqtt_frame.clone()]);
    let mut wire = VecDeque::new();
    transport.send(&mut frames, &mut wire).expect("send after failure");
    assert!(frames.is_empty());
    assert!(wire.iter().all(|bytes| bytes.as_ptr() != mqtt_frame.as_ptr()), "no MQTT frame after failure");
    let goodbye_bytes: usize = wire.iter().map(Bytes::len).sum();
    assert!(goodbye_bytes <= GOODBYE_BYTES_MAX, "only the goodbye goes out");
    assert!(!transport.wants_write());
    assert!(transport.received(b"\x82\x80\0\0\0\0", plain).is_err(), "no input after failure");
}
