//! The transport seam: what sits between a connection's socket bytes and the MQTT codec.
//!
//! A transport is sans-I/O and lives in the connection's slot on its shard (it moves with the home-shard
//! handoff). The runtime owns the socket: it hands the transport the bytes a read produced and gets back
//! the plaintext MQTT bytes for the codec; it hands it the encoded MQTT frames and gets back the bytes to
//! put on the wire. Plain TCP is the identity and never goes through this trait on the hot path (the
//! runtime decodes and sends the frames as they are); TLS (rustls `ServerConnection`) and WebSocket
//! (HTTP/1.1 upgrade + RFC 6455 framing) implement it, and WSS stacks WebSocket on TLS ([`Stacked`]).
//!
//! The contract, which keeps a connection from waiting for a readiness event that will not come:
//! - `received` hands over *all* plaintext it can produce from what it was given (no plaintext stays
//!   buffered inside the transport after it returns).
//! - After `received` returns (Ok or Err), the runtime asks `wants_write` and, when true, calls `send`
//!   with no frames to collect the transport's own bytes (handshake records, pongs, HTTP responses,
//!   close frames) and writes them.
//! - On `Err`, the runtime writes whatever `send` then yields (a close frame, an HTTP 400, a TLS alert)
//!   and closes the socket.
//! - `close` is called when the broker closes the connection: it queues the transport's goodbye
//!   (WebSocket close frame, TLS close_notify) after the last frames.

pub mod http;
pub mod tls;
pub mod websocket;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Why a transport gave up on its connection. Each variant is one log line at the runtime's edge.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    /// The peer ended the transport cleanly (WebSocket close frame, TLS close_notify).
    #[error("peer closed the {0} session")]
    PeerClosed(&'static str),
    /// The peer broke the transport's protocol (bad TLS record, bad handshake, bad frame): the text says
    /// which rule, e.g. "RFC 6455 5.1: client frame not masked".
    #[error("{0}")]
    Protocol(String),
    /// Input over a configured bound (HTTP header size, WebSocket frame size).
    #[error("{0}")]
    TooLarge(String),
}

/// Who the peer proved to be at the transport level, for authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The Common Name of a verified TLS client certificate (for `use_identity_as_username`).
    pub certificate_common_name: Option<String>,
}

/// One connection's transport state machine (see the module doc for the contract).
pub trait Transport {
    /// Short name for logs: "tls", "websocket", "wss".
    fn name(&self) -> &'static str;

    /// `wire` arrived from the socket; append every plaintext MQTT byte it yields to `plain`.
    fn received(&mut self, wire: &[u8], plain: &mut BytesMut) -> Result<(), TransportError>;

    /// Turn the encoded MQTT `frames` (taken from the front, all of them) into bytes for the socket,
    /// appended to `wire`, together with any bytes the transport itself has to send. Plain frames may be
    /// passed through without copying.
    fn send(&mut self, frames: &mut VecDeque<Bytes>, wire: &mut VecDeque<Bytes>) -> Result<(), TransportError>;

    /// Whether the transport has bytes of its own to send (call `send` with no frames).
    fn wants_write(&self) -> bool;

    /// Whether the transport is ready to carry MQTT frames (TLS handshake done, WebSocket upgraded).
    /// Frames sent before are buffered by the transport.
    fn is_established(&self) -> bool;

    /// The broker is closing the connection: queue the transport's goodbye for the next `send`.
    fn close(&mut self);

    /// What the transport learned about the peer (set once established).
    fn peer_identity(&self) -> PeerIdentity {
        PeerIdentity::default()
    }
}

/// A connection's transport as the runtime holds it (it moves between shard threads with a handoff).
pub type BoxedTransport = Box<dyn Transport + Send>;

/// Two transports stacked: `outer` is next to the socket (TLS), `inner` next to the codec (WebSocket).
pub struct Stacked<O, I> {
    pub outer: O,
    pub inner: I,
    between_in: BytesMut,
    between_out: VecDeque<Bytes>,
}

impl<O: Transport, I: Transport> Stacked<O, I> {
    pub fn new(outer: O, inner: I) -> Self {
        Stacked { outer, inner, between_in: BytesMut::new(), between_out: VecDeque::new() }
    }
}

impl<O: Transport, I: Transport> Transport for Stacked<O, I> {
    fn name(&self) -> &'static str {
        "wss"
    }

    fn received(&mut self, wire: &[u8], plain: &mut BytesMut) -> Result<(), TransportError> {
        // What the outer transport decrypted before failing (or closing) still reaches the inner one.
        let outer = self.outer.received(wire, &mut self.between_in);
        let inner = if self.between_in.is_empty() { Ok(()) } else { self.inner.received(&self.between_in, plain) };
        self.between_in.clear();
        outer.and(inner)
    }

    fn send(&mut self, frames: &mut VecDeque<Bytes>, wire: &mut VecDeque<Bytes>) -> Result<(), TransportError> {
        self.inner.send(frames, &mut self.between_out)?;
        self.outer.send(&mut self.between_out, wire)
    }

    fn wants_write(&self) -> bool {
        self.inner.wants_write() || self.outer.wants_write()
    }

    fn is_established(&self) -> bool {
        self.outer.is_established() && self.inner.is_established()
    }

    fn close(&mut self) {
        self.inner.close();
        self.outer.close();
    }

    fn peer_identity(&self) -> PeerIdentity {
        self.outer.peer_identity()
    }
}
