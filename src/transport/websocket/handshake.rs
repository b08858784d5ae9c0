//! The server side of the RFC 6455 section 4 opening handshake for MQTT: which upgrade requests we accept,
//! the `101 Switching Protocols` answer, and the HTTP error that answers the others.

use base64::Engine;
use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::transport::http::{self, RequestHead, Status};

/// RFC 6455 section 1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Subprotocols we speak, preferred first: `mqtt` (MQTT 3.1.1 and 5, [MQTT-6.0.0-4]) and the name
/// MQTT 3.1 clients used.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// What the handshake checks against: the listener's endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    pub path: &'a str,
    /// Allowed `Origin` values; empty = any.
    pub origins: &'a [String],
}

/// An accepted upgrade.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The whole `101` response.
    pub response: Bytes,
    /// The subprotocol chosen, `None` when the client offered none.
    pub subprotocol: Option<&'static str>,
}

/// Why an upgrade request was refused; [`HandshakeError::response`] is the answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("RFC 6455 4.2.1: the opening handshake must be a GET, not {0}")]
    NotGet(String),
    #[error("RFC 6455 4.2.1: the opening handshake needs HTTP/1.1 or higher")]
    HttpVersionTooOld,
    #[error("RFC 6455 4.2.1: no Host header")]
    NoHost,
    #[error("RFC 6455 4.2.1: no Upgrade header naming websocket")]
    NoUpgradeWebsocket,
    #[error("RFC 6455 4.2.1: no Connection header naming Upgrade")]
    NoConnectionUpgrade,
    #[error("RFC 6455 4.2.1: Sec-WebSocket-Key missing, repeated, or not 16 bytes in base64")]
    BadKey,
    #[error("RFC 6455 4.4: Sec-WebSocket-Version missing or not 13")]
    UnsupportedVersion,
    #[error("RFC 6455 4.2.1: path {0:?} is not this listener's MQTT endpoint")]
    UnknownPath(String),
    #[error("RFC 6455 10.2: Origin {0:?} is not allowed")]
    OriginNotAllowed(String),
    #[error("[MQTT-6.0.0-3]: the client offered subprotocols but not mqtt")]
    NoMqttSubprotocol,
}

impl HandshakeError {
    /// The HTTP response that refuses the upgrade (the connection closes after it).
    pub fn response(&self) -> Bytes {
        let reason = self.to_string();
        match self {
            HandshakeError::NotGet(_) => http::error_response(Status::METHOD_NOT_ALLOWED, &[("Allow", "GET")], &reason),
            HandshakeError::UnknownPath(_) => http::error_response(Status::NOT_FOUND, &[], &reason),
            HandshakeError::OriginNotAllowed(_) => http::error_response(Status::FORBIDDEN, &[], &reason),
            // RFC 6455 4.4: tell the client which version we do speak.
            HandshakeError::UnsupportedVersion => {
                http::error_response(Status::BAD_REQUEST, &[("Sec-WebSocket-Version", "13")], &reason)
            }
            _ => http::error_response(Status::BAD_REQUEST, &[], &reason),
        }
    }
}

/// Check an upgrade request (RFC 6455 4.2.1) and build the answer (4.2.2).
pub fn accept(head: &RequestHead, endpoint: Endpoint<'_>) -> Result<Accepted, HandshakeError> {
    if head.method != "GET" {
        return Err(HandshakeError::NotGet(head.method.clone()));
    }
    if head.minor_version < 1 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    if head.path() != endpoint.path {
        return Err(HandshakeError::UnknownPath(head.path().to_owned()));
    }
    if head.single_value("Host").is_err() {
        return Err(HandshakeError::NoHost);
    }
    if !head.has_token("Upgrade", "websocket") {
        return Err(HandshakeError::NoUpgradeWebsocket);
    }
    if !head.has_token("Connection", "Upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    if head.single_value("Sec-WebSocket-Version") != Ok(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = head.single_value("Sec-WebSocket-Key").map_err(|_| HandshakeError::BadKey)?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(nonce) if nonce.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    check_origin(head, endpoint.origins)?;
    let subprotocol = choose_subprotocol(head)?;
    let accept = accept_value(key);
    let mut headers = vec![("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", &accept)];
    if let Some(name) = subprotocol {
        headers.push(("Sec-WebSocket-Protocol", name));
    }
    Ok(Accepted { response: http::response(Status::SWITCHING_PROTOCOLS, &headers, b""), subprotocol })
}

/// A browser always sends `Origin`; a client that sends none is not a browser, and an allow-list (which
/// protects browser users from other sites' scripts) cannot constrain it anyway, so it passes.
fn check_origin(head: &RequestHead, origins: &[String]) -> Result<(), HandshakeError> {
    if origins.is_empty() {
        return Ok(());
    }
    let mut sent = head.values("Origin").peekable();
    if sent.peek().is_none() {
        return Ok(());
    }
    for origin in sent {
        // RFC 6454 6.1: an origin is serialized in lowercase, so compare ASCII case-insensitively.
        if !origins.iter().any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin)) {
            return Err(HandshakeError::OriginNotAllowed(String::from_utf8_lossy(origin).into_owned()));
        }
    }
    Ok(())
}

/// `mqtt` if offered, else `mqttv3.1`; no header at all is accepted too (answered without one).
fn choose_subprotocol(head: &RequestHead) -> Result<Option<&'static str>, HandshakeError> {
    let mut offered = head.tokens("Sec-WebSocket-Protocol").peekable();
    if offered.peek().is_none() {
        return Ok(None);
    }
    let offered: Vec<&[u8]> = offered.collect();
    // Subprotocol names compare case-sensitively (RFC 6455 4.1, item 10 of the client's checks).
    SUBPROTOCOLS
        .into_iter()
        .find(|name| offered.contains(&name.as_bytes()))
        .map(Some)
        .ok_or(HandshakeError::NoMqttSubprotocol)
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 4.2.2, item 5.4).
pub fn accept_value(key: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(key);
    hasher.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::http::{RequestLimits, RequestReader};

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn head(extra: &str) -> RequestHead {
        head_with(&format!(
            "GET /mqtt HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        ))
    }

    fn head_with(text: &str) -> RequestHead {
        RequestReader::new(RequestLimits::default()).push(text.as_bytes()).unwrap().unwrap().0
    }

    fn endpoint(origins: &[String]) -> Endpoint<'_> {
        Endpoint { path: "/mqtt", origins }
    }

    #[test]
    fn accept_value_matches_the_rfc_6455_example() {
        // RFC 6455 section 1.3.
        assert_eq!(accept_value(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn mqtt_is_chosen_over_mqttv31_when_both_are_offered() {
        let accepted = accept(&head("Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n"), endpoint(&[])).unwrap();
        assert_eq!(accepted.subprotocol, Some("mqtt"));
        let text = std::str::from_utf8(&accepted.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn mqttv31_is_chosen_when_it_is_the_only_mqtt_offer() {
        let accepted =
            accept(&head("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: mqttv3.1\r\n"), endpoint(&[]));
        assert_eq!(accepted.unwrap().subprotocol, Some("mqttv3.1"));
    }

    #[test]
    fn no_subprotocol_offered_is_answered_without_the_header() {
        let accepted = accept(&head(""), endpoint(&[])).unwrap();
        assert_eq!(accepted.subprotocol, None);
        assert!(!std::str::from_utf8(&accepted.response).unwrap().contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn offering_only_other_subprotocols_is_refused_mqtt_6_0_0_3() {
        let error = accept(&head("Sec-WebSocket-Protocol: chat, MQTT\r\n"), endpoint(&[])).unwrap_err();
        assert_eq!(error, HandshakeError::NoMqttSubprotocol);
        assert!(error.response().starts_with(b"HTTP/1.1 400 "));
    }

    #[test]
    fn header_names_and_upgrade_tokens_are_case_insensitive() {
        let text = format!(
            "GET /mqtt?client=1 HTTP/1.1\r\nhost: b\r\nupgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: {KEY}\r\n\r\n"
        );
        assert!(accept(&head_with(&text), endpoint(&[])).is_ok());
    }

    #[test]
    fn wrong_path_is_refused_with_404() {
        let text = format!(
            "GET /other HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        );
        let error = accept(&head_with(&text), endpoint(&[])).unwrap_err();
        assert_eq!(error, HandshakeError::UnknownPath("/other".into()));
        assert!(error.response().starts_with(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n"));
    }

    #[test]
    fn origin_outside_the_allow_list_is_refused_with_403() {
        let allowed = vec!["https://app.example".to_owned()];
        let error = accept(&head("Origin: https://evil.example\r\n"), endpoint(&allowed)).unwrap_err();
        assert_eq!(error, HandshakeError::OriginNotAllowed("https://evil.example".into()));
        assert!(error.response().starts_with(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n"));
        assert!(accept(&head("Origin: https://APP.example\r\n"), endpoint(&allowed)).is_ok());
        assert!(accept(&head("Origin: https://evil.example\r\n"), endpoint(&[])).is_ok(), "empty list = any");
        assert!(accept(&head(""), endpoint(&allowed)).is_ok(), "no Origin = not a browser");
    }

    #[test]
    fn missing_or_wrong_upgrade_headers_are_refused_with_400() {
        let cases: [(&str, HandshakeError); 6] = [
            ("GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", HandshakeError::NoHost),
            ("GET /mqtt HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\n", HandshakeError::NoUpgradeWebsocket),
            (
                "GET /mqtt HTTP/1.1\r\nHost: b\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n",
                HandshakeError::NoUpgradeWebsocket,
            ),
            (
                "GET /mqtt HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n",
                HandshakeError::NoConnectionUpgrade,
            ),
            (
                "GET /mqtt HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
                HandshakeError::UnsupportedVersion,
            ),
            (
                "GET /mqtt HTTP/1.0\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
                HandshakeError::HttpVersionTooOld,
            ),
        ];
        for (text, expected) in cases {
            let full = format!("{text}Sec-WebSocket-Key: {KEY}\r\n\r\n");
            let error = accept(&head_with(&full), endpoint(&[])).unwrap_err();
            assert_eq!(error, expected, "{text:?}");
            let response = error.response();
            assert!(response.starts_with(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"), "{text:?}");
        }
    }

    #[test]
    fn version_other_than_13_is_answered_with_the_version_we_speak() {
        let text = format!(
            "GET /mqtt HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        );
        let error = accept(&head_with(&text), endpoint(&[])).unwrap_err();
        assert_eq!(error, HandshakeError::UnsupportedVersion);
        assert!(std::str::from_utf8(&error.response()).unwrap().contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn bad_keys_are_refused() {
        for key_lines in [
            "",
            "Sec-WebSocket-Key: not base64!\r\n",
            "Sec-WebSocket-Key: AAAA\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ] {
            let text = format!(
                "GET /mqtt HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\n{key_lines}\r\n"
            );
            assert_eq!(accept(&head_with(&text), endpoint(&[])), Err(HandshakeError::BadKey), "{key_lines:?}");
        }
    }

    #[test]
    fn other_methods_are_refused_with_405() {
        let text = format!("POST /mqtt HTTP/1.1\r\nHost: b\r\nSec-WebSocket-Key: {KEY}\r\n\r\n");
        let error = accept(&head_with(&text), endpoint(&[])).unwrap_err();
        assert_eq!(error, HandshakeError::NotGet("POST".into()));
        assert!(std::str::from_utf8(&error.response()).unwrap().contains("\r\nAllow: GET\r\n"));
    }
}
