//! What a load connection's MQTT bytes travel in: plain TCP, TLS (rustls), WebSocket (RFC 6455, as a
//! browser's MQTT.js sends it: one masked binary frame per write) or WebSocket over TLS, so a run can
//! price each transport against plain TCP on the same broker.
//!
//! A `Layer` is sans-I/O: MQTT bytes in, bytes for the socket out, and the reverse. The engine keeps its
//! own socket loop; with plain TCP there is no layer at all and nothing changes on that path.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use serde::{Deserialize, Serialize};

/// `--transport`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum TransportKind {
    #[default]
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl TransportKind {
    pub fn uses_tls(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::Wss)
    }

    pub fn uses_websocket(self) -> bool {
        matches!(self, TransportKind::Ws | TransportKind::Wss)
    }
}

/// What every connection of one engine shares to build its layer.
#[derive(Clone)]
pub struct LayerFactory {
    kind: TransportKind,
    tls: Option<Arc<ClientConfig>>,
    websocket_path: String,
}

impl LayerFactory {
    /// `ca_file` is required for TLS kinds: the broker's certificate must verify against it (for
    /// 127.0.0.1 or `localhost`).
    pub fn new(kind: TransportKind, ca_file: Option<&Path>, websocket_path: &str) -> Result<LayerFactory, String> {
        let tls = if kind.uses_tls() {
            let path =
                ca_file.ok_or("--transport tls/wss needs --ca-file (the CA that signed the broker's certificate)")?;
            Some(client_config(path)?)
        } else {
            None
        };
        Ok(LayerFactory { kind, tls, websocket_path: websocket_path.to_string() })
    }

    /// A new connection's layer; `None` for plain TCP.
    pub fn layer(&self, seed: u64) -> Result<Option<Box<Layer>>, String> {
        if self.kind == TransportKind::Tcp {
            return Ok(None);
        }
        let tls = match &self.tls {
            Some(config) => {
                let name = ServerName::try_from("localhost").expect("a valid DNS name");
                Some(ClientConnection::new(config.clone(), name).map_err(|err| format!("TLS client: {err}"))?)
            }
            None => None,
        };
        let websocket = self.kind.uses_websocket().then(|| WebSocketClient::new(&self.websocket_path, seed));
        Ok(Some(Box::new(Layer { tls, websocket })))
    }
}

fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, String> {
    let pem = std::fs::read(ca_file).map_err(|err| format!("read {}: {err}", ca_file.display()))?;
    let mut roots = RootCertStore::empty();
    for certificate in rustls_pemfile_certs(&pem) {
        roots.add(certificate).map_err(|err| format!("{}: {err}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

/// One connection's transport state: TLS next to the socket, WebSocket next to MQTT (either may be absent).
pub struct Layer {
    tls: Option<ClientConnection>,
    websocket: Option<WebSocketClient>,
}

impl Layer {
    /// Moves every MQTT byte of `plain` into the layer and appends what must go on the socket to `wire`.
    pub fn send(&mut self, plain: &mut BytesMut, wire: &mut BytesMut) -> Result<(), String> {
        let mut framed = BytesMut::new();
        let inner: &mut BytesMut = match &mut self.websocket {
            Some(websocket) => {
                websocket.send(plain, &mut framed);
                &mut framed
            }
            None => plain,
        };
        match &mut self.tls {
            Some(tls) => {
                if !inner.is_empty() {
                    tls.writer().write_all(inner).map_err(|err| format!("TLS write: {err}"))?;
                    inner.clear();
                }
                write_tls(tls, wire)
            }
            None => {
                wire.extend_from_slice(inner);
                inner.clear();
                Ok(())
            }
        }
    }

    /// Takes bytes from the socket, appends the MQTT bytes they carry to `plain` and anything the layer
    /// must answer (TLS handshake) to `wire`.
    pub fn receive(&mut self, mut data: &[u8], plain: &mut BytesMut, wire: &mut BytesMut) -> Result<(), String> {
        let mut decrypted = BytesMut::new();
        let inner: &[u8] = match &mut self.tls {
            Some(tls) => {
                while !data.is_empty() {
                    tls.read_tls(&mut data).map_err(|err| format!("TLS read: {err}"))?;
                    tls.process_new_packets().map_err(|err| format!("TLS: {err}"))?;
                    let mut chunk = [0u8; 16 * 1024];
                    loop {
                        match tls.reader().read(&mut chunk) {
                            Ok(0) => break,
                            Ok(read) => decrypted.extend_from_slice(&chunk[..read]),
                            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(err) => return Err(format!("TLS read: {err}")),
                        }
                    }
                }
                &decrypted
            }
            None => data,
        };
        match &mut self.websocket {
            Some(websocket) => websocket.receive(inner, plain)?,
            None => plain.extend_from_slice(inner),
        }
        // The WebSocket upgrade may have released held MQTT bytes; the TLS handshake may owe an answer.
        let mut nothing = BytesMut::new();
        self.send(&mut nothing, wire)
    }
}

fn write_tls(tls: &mut ClientConnection, wire: &mut BytesMut) -> Result<(), String> {
    while tls.wants_write() {
        let mut writer = wire.writer();
        tls.write_tls(&mut writer).map_err(|err| format!("TLS: {err}"))?;
    }
    Ok(())
}

/// The client side of RFC 6455: the upgrade request first, MQTT bytes held until the 101 answer, then
/// each write as one masked binary frame; server frames (unmasked) are unwrapped, pings answered.
struct WebSocketClient {
    /// The upgrade request not yet handed to the layer below.
    request: Option<Vec<u8>>,
    upgraded: bool,
    /// MQTT bytes written before the upgrade finished.
    held: BytesMut,
    /// Server bytes not yet a whole HTTP answer or frame.
    incoming: BytesMut,
    /// Control frames owed to the server (pong, close echo).
    owed: BytesMut,
    mask_state: u64,
}

impl WebSocketClient {
    fn new(path: &str, seed: u64) -> WebSocketClient {
        let key = {
            let mut state = seed | 1;
            let bytes: Vec<u8> = (0..16).map(|_| (next_random(&mut state) >> 24) as u8).collect();
            base64_encode(&bytes)
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        WebSocketClient {
            request: Some(request.into_bytes()),
            upgraded: false,
            held: BytesMut::new(),
            incoming: BytesMut::new(),
            owed: BytesMut::new(),
            mask_state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    fn send(&mut self, plain: &mut BytesMut, out: &mut BytesMut) {
        if let Some(request) = self.request.take() {
            out.extend_from_slice(&request);
        }
        out.extend_from_slice(&self.owed);
        self.owed.clear();
        if !self.upgraded {
            self.held.extend_from_slice(plain);
            plain.clear();
            return;
        }
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            self.frame(0x2, &held, out);
        }
        if !plain.is_empty() {
            self.frame(0x2, plain, out);
            plain.clear();
        }
    }

    /// One final masked frame of `opcode` carrying `payload` [RFC 6455 5.2].
    fn frame(&mut self, opcode: u8, payload: &[u8], out: &mut BytesMut) {
        out.put_u8(0x80 | opcode);
        match payload.len() {
            len @ 0..=125 => out.put_u8(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                out.put_u8(0x80 | 126);
                out.put_u16(len as u16);
            }
            len => {
                out.put_u8(0x80 | 127);
                out.put_u64(len as u64);
            }
        }
        let mask = (next_random(&mut self.mask_state) >> 16) as u32;
        let mask = mask.to_be_bytes();
        out.put_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(index, byte)| byte ^ mask[index % 4]));
    }

    fn receive(&mut self, data: &[u8], plain: &mut BytesMut) -> Result<(), String> {
        self.incoming.extend_from_slice(data);
        if !self.upgraded {
            let Some(end) = self.incoming.windows(4).position(|window| window == b"\r\n\r\n") else {
                return Ok(());
            };
            let head = self.incoming.split_to(end + 4).freeze();
            let head: &[u8] = &head;
            let status = head.split(|&byte| byte == b' ').nth(1).unwrap_or_default();
            if status != b"101" {
                let line = String::from_utf8_lossy(head.split(|&byte| byte == b'\r').next().unwrap_or_default());
                return Err(format!("WebSocket upgrade refused: {line}"));
            }
            self.upgraded = true;
        }
        while let Some((opcode, payload)) = self.next_frame()? {
            match opcode {
                0x0..=0x2 => plain.extend_from_slice(&payload),
                0x8 => return Err("broker closed the WebSocket".into()),
                0x9 => {
                    let mut pong = BytesMut::new();
                    self.frame(0xA, &payload, &mut pong);
                    self.owed.extend_from_slice(&pong);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The next whole server frame, unmasked, if one has arrived.
    fn next_frame(&mut self) -> Result<Option<(u8, BytesMut)>, String> {
        let bytes = &self.incoming[..];
        if bytes.len() < 2 {
            return Ok(None);
        }
        let opcode = bytes[0] & 0x0F;
        let masked = bytes[1] & 0x80 != 0;
        let (len, header) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")) as usize, 10),
            126 | 127 => return Ok(None),
            len => (len as usize, 2),
        };
        let header = header + if masked { 4 } else { 0 };
        if bytes.len() < header + len {
            return Ok(None);
        }
        if masked {
            return Err("the broker masked a frame [RFC 6455 5.1]".into());
        }
        self.incoming.advance(header);
        Ok(Some((opcode, self.incoming.split_to(len))))
    }
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let value =
            chunk.iter().enumerate().fold(0u32, |acc, (index, &byte)| acc | u32::from(byte) << (16 - 8 * index));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(value >> (18 - 6 * index) & 0x3F) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_examples() {
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn mqtt_bytes_wait_for_the_upgrade_and_then_go_as_one_masked_frame() {
        let mut client = WebSocketClient::new("/mqtt", 7);
        let (mut plain, mut out) = (BytesMut::from(&b"\x10\x00"[..]), BytesMut::new());
        client.send(&mut plain, &mut out);
        assert!(out.starts_with(b"GET /mqtt HTTP/1.1\r\n") && out.ends_with(b"\r\n\r\n"), "only the request");
        let mut received = BytesMut::new();
        client.receive(b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x82\x02\x20\x00", &mut received).unwrap();
        assert_eq!(&received[..], b"\x20\x00", "the server frame after the answer is unwrapped");
        let mut out = BytesMut::new();
        client.send(&mut BytesMut::new(), &mut out);
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1], 0x80 | 2, "masked, two bytes");
        let mask = [out[2], out[3], out[4], out[5]];
        assert_eq!([out[6] ^ mask[0], out[7] ^ mask[1]], [0x10, 0x00]);
    }

    #[test]
    fn a_refused_upgrade_is_an_error_naming_the_status_line() {
        let mut client = WebSocketClient::new("/mqtt", 1);
        let err = client.receive(b"HTTP/1.1 404 Not Found\r\n\r\n", &mut BytesMut::new()).unwrap_err();
        assert!(err.contains("404 Not Found"), "{err}");
    }
}
