//! MQTT over WebSocket (RFC 6455, MQTT 5 section 6) as a sans-I/O [`Transport`]: the server side of the
//! HTTP/1.1 upgrade, then binary frames in both directions.
//!
//! Inbound, frame payloads are unmasked straight into the codec's buffer as they arrive, whatever their
//! alignment with MQTT packets ([MQTT-6.0.0-2]): the codec reassembles, so nothing but control frames
//! (at most 125 bytes) is buffered here. Outbound, each `send` becomes as few binary frames as
//! `max_frame_bytes` allows: a small header `Bytes` followed by the MQTT frames as they are.
//!
//! Any broken rule queues a close frame with the status code RFC 6455 7.4.1 gives it (1002 protocol
//! error, 1003 text data, 1009 too large) and returns the error; the session then takes no more input.

mod frame;
mod handshake;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use self::frame::{FrameHeader, HeaderReader};
pub use self::handshake::{accept_value, HandshakeError};
use super::http::{error_response, HttpError, RequestLimits, RequestReader};
use super::{Transport, TransportError};

/// RFC 6455 7.4.1 status codes we send.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
const CLOSE_INVALID_PAYLOAD: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;

/// Frame headers are cut from blocks of this size, so a `send` does not allocate one each.
const HEADER_BLOCK_BYTES: usize = 128;

/// One WebSocket listener's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSocketSettings {
    /// The request path MQTT is served on; other paths get 404.
    pub path: String,
    /// Allowed `Origin` header values (e.g. `https://app.example`); empty = any. A request without
    /// `Origin` (not a browser) is always allowed.
    pub origins: Vec<String>,
    /// Largest frame payload and largest reassembled message accepted (else close 1009), and the
    /// largest frame payload sent. Keep it above the broker's maximum packet size plus 5 bytes.
    pub max_frame_bytes: usize,
    /// Bounds on the upgrade request.
    pub request_limits: RequestLimits,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            path: "/mqtt".to_owned(),
            origins: Vec::new(),
            max_frame_bytes: 2 * 1024 * 1024,
            request_limits: RequestLimits::default(),
        }
    }
}

/// Where the session is.
enum Phase {
    /// Waiting for the whole upgrade request.
    Upgrading(Box<Upgrading>),
    /// Upgraded: frames flow (possibly after our close frame, until the peer's).
    Open,
    /// The peer closed (`true`) or we failed the connection (`false`): no more input.
    Ended { by_peer: bool },
}

struct Upgrading {
    reader: RequestReader,
    path: String,
    origins: Vec<String>,
}

/// The data frame whose payload is arriving.
struct PayloadInProgress {
    header: FrameHeader,
    mask: [u8; 4],
    received_bytes: u64,
}

/// One connection's WebSocket session (see the module doc).
pub struct WebSocketTransport {
    phase: Phase,
    max_frame_bytes: usize,
    /// Our own bytes, in order: the HTTP answer, pongs, close frames.
    own: VecDeque<Bytes>,
    /// MQTT frames handed to `send` before the upgrade completed.
    early_frames: VecDeque<Bytes>,
    /// `close` was called and our close frame is not yet out.
    goodbye_pending: bool,
    /// A close frame of ours is queued: no data frame may follow it (RFC 6455 5.5.1).
    close_queued: bool,
    subprotocol: Option<&'static str>,
    header: HeaderReader,
    payload: Option<PayloadInProgress>,
    /// The control frame payload being collected (at most 125 bytes).
    control: Vec<u8>,
    /// Inside a fragmented message, and its bytes so far.
    message_open: bool,
    message_bytes: u64,
    header_block: BytesMut,
}

impl WebSocketTransport {
    pub fn new(settings: &WebSocketSettings) -> Self {
        WebSocketTransport {
            phase: Phase::Upgrading(Box::new(Upgrading {
                reader: RequestReader::new(settings.request_limits),
                path: settings.path.clone(),
                origins: settings.origins.clone(),
            })),
            max_frame_bytes: settings.max_frame_bytes,
            own: VecDeque::new(),
            early_frames: VecDeque::new(),
            goodbye_pending: false,
            close_queued: false,
            subprotocol: None,
            header: HeaderReader::default(),
            payload: None,
            control: Vec::new(),
            message_open: false,
            message_bytes: 0,
            header_block: BytesMut::new(),
        }
    }

    /// The subprotocol agreed in the upgrade (`mqtt` or `mqttv3.1`), `None` if the client offered none.
    pub fn subprotocol(&self) -> Option<&'static str> {
        self.subprotocol
    }

    fn upgrade(&mut self, wire: &[u8], plain: &mut BytesMut) -> Result<(), TransportError> {
        let Phase::Upgrading(upgrading) = &mut self.phase else {
            return Ok(());
        };
        let (head, rest) = match upgrading.reader.push(wire) {
            Ok(None) => return Ok(()),
            Ok(Some(complete)) => complete,
            Err(error) => {
                self.own.push_back(error_response(error.status(), &[], &error.to_string()));
                self.phase = Phase::Ended { by_peer: false };
                return Err(http_error(&error));
            }
        };
        let endpoint = handshake::Endpoint { path: &upgrading.path, origins: &upgrading.origins };
        match handshake::accept(&head, endpoint) {
            Ok(accepted) => {
                self.own.push_back(accepted.response);
                self.subprotocol = accepted.subprotocol;
                self.phase = Phase::Open;
                // A client may send its first frames right behind the request.
                self.read_frames(&rest, plain)
            }
            Err(error) => {
                self.own.push_back(error.response());
                self.phase = Phase::Ended { by_peer: false };
                Err(TransportError::Protocol(error.to_string()))
            }
        }
    }

    fn read_frames(&mut self, mut input: &[u8], plain: &mut BytesMut) -> Result<(), TransportError> {
        while !input.is_empty() {
            if self.payload.is_some() {
                let taken = self.read_payload(input, plain)?;
                input = &input[taken..];
                continue;
            }
            let (taken, header) = match self.header.push(input) {
                Ok(read) => read,
                Err(frame::LengthMsbSet) => {
                    return Err(self
                        .fail(CLOSE_PROTOCOL_ERROR, "RFC 6455 5.2: payload length with its most significant bit set"))
                }
            };
            input = &input[taken..];
            if let Some(header) = header {
                self.start_frame(header)?;
                if header.payload_bytes == 0 {
                    self.finish_frame()?;
                }
            }
        }
        Ok(())
    }

    /// Check a frame header against RFC 6455 and MQTT's binary-only rule before its payload arrives.
    fn start_frame(&mut self, header: FrameHeader) -> Result<(), TransportError> {
        if header.reserved_bits != 0 {
            return Err(
                self.fail(CLOSE_PROTOCOL_ERROR, "RFC 6455 5.2: reserved bits set without a negotiated extension")
            );
        }
        let Some(mask) = header.mask else {
            return Err(self.fail(CLOSE_PROTOCOL_ERROR, "RFC 6455 5.1: client frame not masked"));
        };
        if header.is_control() {
            self.check_control(&header)?;
            self.control.clear();
        } else {
            self.check_data(&header)?;
        }
        self.payload = Some(PayloadInProgress { header, mask, received_bytes: 0 });
        Ok(())
    }

    fn check_control(&mut self, header: &FrameHeader) -> Result<(), TransportError> {
        if !matches!(header.opcode, frame::OPCODE_CLOSE | frame::OPCODE_PING | frame::OPCODE_PONG) {
            return Err(self.fail(CLOSE_PROTOCOL_ERROR, &format!("RFC 6455 5.2: reserved opcode {:#x}", header.opcode)));
        }
        if !header.fin {
            return Err(self.fail(CLOSE_PROTOCOL_ERROR, "RFC 6455 5.5: fragmented control frame"));
        }
        if header.payload_bytes > frame::CONTROL_PAYLOAD_BYTES_MAX as u64 {
            return Err(self.fail(CLOSE_PROTOCOL_ERROR, "RFC 6455 5.5: control frame payload over 125 bytes"));
        }
        Ok(())
    }

    fn check_data(&mut self, header: &FrameHeader) -> Result<(), TransportError> {
        match header.opcode {
            frame::OPCODE_BINARY if self.message_open => {
                return Err(self.fail(CLOSE_PROTOCOL_ERROR, "RFC 6455 5.4: new message inside a fragmented one"));
            }
            frame::OPCODE_CONTINUATION if !self.message_open => {
                return Err(self.fail(CLOSE_PROTOCOL_ERROR, "RFC 6455 5.4: continuation frame outside a message"));
            }
            frame::OPCODE_BINARY | frame::OPCODE_CONTINUATION => {}
            frame::OPCODE_TEXT => {
                return Err(
                    self.fail(CLOSE_UNSUPPORTED_DATA, "[MQTT-6.0.0-1]: text frame; MQTT is carried in binary frames")
                );
            }
            reserved => {
                return Err(self.fail(CLOSE_PROTOCOL_ERROR, &format!("RFC 6455 5.2: reserved opcode {reserved:#x}")));
            }
        }
        let limit = self.max_frame_bytes as u64;
        if header.payload_bytes > limit {
            let text =
                format!("RFC 6455 7.4.1 (1009): frame of {} bytes over the {limit}-byte limit", header.payload_bytes);
            return Err(self.fail_too_large(&text));
        }
        let message_bytes = self.message_bytes + header.payload_bytes;
        if message_bytes > limit {
            let text = format!(
                "RFC 6455 7.4.1 (1009): fragmented message of {message_bytes} bytes over the {limit}-byte limit"
            );
            return Err(self.fail_too_large(&text));
        }
        self.message_open = !header.fin;
        self.message_bytes = if header.fin { 0 } else { message_bytes };
        Ok(())
    }

    /// Take payload bytes of the current frame from `input`; returns how many.
    fn read_payload(&mut self, input: &[u8], plain: &mut BytesMut) -> Result<usize, TransportError> {
        let Some(payload) = &mut self.payload else {
            return Ok(0);
        };
        let left = payload.header.payload_bytes - payload.received_bytes;
        let taken = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let chunk = &input[..taken];
        if payload.header.is_control() {
            let start = self.control.len();
            self.control.extend_from_slice(chunk);
            frame::unmask(&mut self.control[start..], payload.mask, payload.received_bytes);
        } else {
            let start = plain.len();
            plain.extend_from_slice(chunk);
            frame::unmask(&mut plain[start..], payload.mask, payload.received_bytes);
        }
        payload.received_bytes += taken as u64;
        if payload.received_bytes == payload.header.payload_bytes {
            self.finish_frame()?;
        }
        Ok(taken)
    }

    /// The current frame's payload is complete: act on a control frame.
    fn finish_frame(&mut self) -> Result<(), TransportError> {
        let Some(payload) = self.payload.take() else {
            return Ok(());
        };
        match payload.header.opcode {
            frame::OPCODE_PING if !self.close_queued => {
                let mut pong = BytesMut::with_capacity(2 + self.control.len());
                frame::put_server_header(&mut pong, frame::OPCODE_PONG, self.control.len());
                pong.extend_from_slice(&self.control);
                self.own.push_back(pong.freeze());
                Ok(())
            }
            frame::OPCODE_CLOSE => self.peer_closed(),
            _ => Ok(()),
        }
    }

    /// The peer's close frame is in `control`: check it, echo its code, end the session (RFC 6455 5.5.1).
    fn peer_closed(&mut self) -> Result<(), TransportError> {
        let code = match self.control.as_slice() {
            [] => None,
            [_] => return Err(self.fail(CLOSE_PROTOCOL_ERROR, "RFC 6455 5.5.1: close payload of one byte")),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                if !close_code_is_valid(code) {
                    return Err(
                        self.fail(CLOSE_PROTOCOL_ERROR, &format!("RFC 6455 7.4.1: close code {code} may not be sent"))
                    );
                }
                if std::str::from_utf8(reason).is_err() {
                    return Err(self.fail(CLOSE_INVALID_PAYLOAD, "RFC 6455 5.5.1: close reason not UTF-8"));
                }
                Some(code)
            }
        };
        if !self.close_queued {
            self.queue_close(code, "");
        }
        self.phase = Phase::Ended { by_peer: true };
        Err(TransportError::PeerClosed("websocket"))
    }

    /// Fail the connection (RFC 6455 7.1.7): close frame with `code` and the rule as its reason.
    fn fail(&mut self, code: u16, rule: &str) -> TransportError {
        self.end_with_close(code, rule);
        TransportError::Protocol(rule.to_owned())
    }

    fn fail_too_large(&mut self, rule: &str) -> TransportError {
        self.end_with_close(CLOSE_TOO_BIG, rule);
        TransportError::TooLarge(rule.to_owned())
    }

    fn end_with_close(&mut self, code: u16, rule: &str) {
        if !self.close_queued {
            self.queue_close(Some(code), rule);
        }
        self.phase = Phase::Ended { by_peer: false };
        self.payload = None;
    }

    fn queue_close(&mut self, code: Option<u16>, reason: &str) {
        let mut close = BytesMut::with_capacity(4 + reason.len());
        frame::put_close_frame(&mut close, code, reason);
        self.own.push_back(close.freeze());
        self.close_queued = true;
        self.goodbye_pending = false;
    }

    /// `frames` as binary frames of at most `max_frame_bytes` payload each, sharing the frames' bytes.
    fn write_binary(&mut self, frames: &mut VecDeque<Bytes>, wire: &mut VecDeque<Bytes>) {
        let limit = self.max_frame_bytes.max(1);
        while !frames.is_empty() {
            let mut total_bytes = 0;
            let mut count = 0;
            for frame in frames.iter() {
                if total_bytes + frame.len() > limit {
                    break;
                }
                total_bytes += frame.len();
                count += 1;
            }
            if count == 0 {
                // One MQTT frame over the limit: its first `limit` bytes make a frame of their own
                // (MQTT packets may span WebSocket frames, [MQTT-6.0.0-2]).
                let Some(mut large) = frames.pop_front() else {
                    break;
                };
                let head = large.split_to(limit);
                frames.push_front(large);
                wire.push_back(self.header_bytes(limit));
                wire.push_back(head);
                continue;
            }
            if total_bytes > 0 {
                wire.push_back(self.header_bytes(total_bytes));
            }
            wire.extend(frames.drain(..count).filter(|frame| !frame.is_empty()));
        }
    }

    fn header_bytes(&mut self, payload_bytes: usize) -> Bytes {
        if self.header_block.capacity() < 10 {
            self.header_block.reserve(HEADER_BLOCK_BYTES);
        }
        frame::put_server_header(&mut self.header_block, frame::OPCODE_BINARY, payload_bytes);
        self.header_block.split().freeze()
    }
}

/// Codes a peer may put in a close frame (RFC 6455 7.4.1 and 7.4.2, and the IANA registry's 1012..1014).
fn close_code_is_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// An unreadable upgrade request is a protocol error, an oversized one is over a bound.
fn http_error(error: &HttpError) -> TransportError {
    match error {
        HttpError::Malformed(_) => TransportError::Protocol(error.to_string()),
        HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => {
            TransportError::TooLarge(error.to_string())
        }
    }
}

impl Transport for WebSocketTransport {
    fn name(&self) -> &'static str {
        "websocket"
    }

    fn received(&mut self, wire: &[u8], plain: &mut BytesMut) -> Result<(), TransportError> {
        match self.phase {
            Phase::Upgrading(_) => self.upgrade(wire, plain),
            Phase::Open => self.read_frames(wire, plain),
            Phase::Ended { by_peer: true } => Err(TransportError::PeerClosed("websocket")),
            Phase::Ended { by_peer: false } => {
                Err(TransportError::Protocol("RFC 6455 7.1.7: input after the connection was failed".to_owned()))
            }
        }
    }

    fn send(&mut self, frames: &mut VecDeque<Bytes>, wire: &mut VecDeque<Bytes>) -> Result<(), TransportError> {
        wire.append(&mut self.own);
        match self.phase {
            Phase::Upgrading(_) => self.early_frames.append(frames),
            Phase::Open if !self.close_queued => {
                if !self.early_frames.is_empty() {
                    let mut early = std::mem::take(&mut self.early_frames);
                    self.write_binary(&mut early, wire);
                }
                self.write_binary(frames, wire);
                if self.goodbye_pending {
                    self.queue_close(Some(CLOSE_NORMAL), "");
                    wire.append(&mut self.own);
                }
            }
            // Nothing may follow our close frame.
            _ => {
                frames.clear();
                self.early_frames.clear();
            }
        }
        Ok(())
    }

    fn wants_write(&self) -> bool {
        let open = matches!(self.phase, Phase::Open) && !self.close_queued;
        !self.own.is_empty() || (open && (self.goodbye_pending || !self.early_frames.is_empty()))
    }

    fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    fn close(&mut self) {
        match self.phase {
            Phase::Open if !self.close_queued => self.goodbye_pending = true,
            // Mid-upgrade there is no WebSocket session to close yet: the runtime just closes the socket.
            Phase::Upgrading(_) => {
                self.phase = Phase::Ended { by_peer: false };
                self.early_frames.clear();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
