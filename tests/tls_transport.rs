//! The TLS transport (`shardmq::transport::tls`) against a real rustls client, in memory: handshakes with
//! TLS 1.2 and 1.3, MQTT bytes both ways, byte-at-a-time delivery, client certificates (verified, refused),
//! plaintext MQTT on the TLS port, certificate reload, and configuration errors that name the file.

mod tls_support;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use rustls::version::{TLS12, TLS13};
use rustls::{AlertDescription, ProtocolVersion as TlsVersion};
use shardmq::protocol::{decode_packet, encode_packet, ConnAck, Connect, Packet, Properties, ProtocolVersion};
use shardmq::transport::tls::{TlsAcceptor, TlsError, TlsSettings};
use shardmq::transport::{Transport, TransportError};
use tls_support::{client_config, key_fixture, settings, Authority, Files, Pair};

fn connect_bytes(client_id: &str) -> Vec<u8> {
    let connect = Connect {
        version: ProtocolVersion::V3_1_1,
        clean_start: true,
        keep_alive_secs: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    let mut out = BytesMut::new();
    encode_packet(&Packet::Connect(Box::new(connect)), ProtocolVersion::V3_1_1, &mut out).expect("encode");
    out.to_vec()
}

fn connack_frame() -> Bytes {
    let mut out = BytesMut::new();
    encode_packet(&Packet::ConnAck(ConnAck::default()), ProtocolVersion::V3_1_1, &mut out).expect("encode");
    out.freeze()
}

fn decode_one(bytes: &[u8]) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode_packet(&mut buf, ProtocolVersion::V3_1_1, 1 << 20).expect("valid MQTT").expect("whole packet");
    assert!(buf.is_empty(), "exactly one packet");
    packet
}

/// A server with a certificate from its own CA, no client certificates.
struct Server {
    ca: Authority,
    _files: Files,
    acceptor: TlsAcceptor,
}

fn server(client_ca: Option<&Authority>, require_certificate: bool) -> Server {
    let ca = Authority::new("server CA");
    let files = Files::new();
    let acceptor = TlsAcceptor::new(settings(&files, &ca.server_cert("broker"), client_ca, require_certificate))
        .expect("acceptor");
    Server { ca, _files: files, acceptor }
}

/// Handshake, then a CONNECT up and a CONNACK down, checked on both sides.
fn mqtt_both_ways(pair: &mut Pair) {
    pair.pump().expect("handshake");
    assert!(pair.server.is_established());
    assert!(!pair.client.is_handshaking());
    let connect = connect_bytes("tls-client");
    pair.client_sends(&connect);
    pair.pump().expect("CONNECT");
    assert_eq!(&pair.server_plain[..], &connect[..], "the server's plaintext is the CONNECT, whole");
    assert!(matches!(decode_one(&pair.server_plain), Packet::Connect(c) if c.client_id.as_str() == "tls-client"));
    pair.server_sends(vec![connack_frame()]).expect("CONNACK");
    assert!(matches!(decode_one(&pair.client_plain), Packet::ConnAck(_)));
}

#[test]
fn tls13_handshake_then_mqtt_both_ways() {
    let server = server(None, false);
    let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[&TLS13], None));
    assert!(!pair.server.is_established());
    mqtt_both_ways(&mut pair);
    assert_eq!(pair.server.protocol_version(), Some(TlsVersion::TLSv1_3));
    assert_eq!(pair.server.peer_identity().certificate_common_name, None);
}

#[test]
fn tls12_handshake_then_mqtt_both_ways() {
    let server = server(None, false);
    let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[&TLS12], None));
    mqtt_both_ways(&mut pair);
    assert_eq!(pair.server.protocol_version(), Some(TlsVersion::TLSv1_2));
}

#[test]
fn byte_at_a_time_delivery_completes_handshake_and_yields_every_byte() {
    for version in [&TLS12, &TLS13] {
        let server = server(None, false);
        let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[version], None));
        pair.chunk_bytes = 1;
        mqtt_both_ways(&mut pair);
    }
}

#[test]
fn frames_sent_before_the_handshake_completes_arrive_after_it() {
    let server = server(None, false);
    let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[&TLS13], None));
    let mut frames: VecDeque<Bytes> = vec![connack_frame()].into();
    let mut wire = VecDeque::new();
    pair.server.send(&mut frames, &mut wire).expect("buffered send");
    assert!(frames.is_empty());
    assert!(wire.is_empty(), "nothing to send before the ClientHello");
    pair.pump().expect("handshake");
    assert!(matches!(decode_one(&pair.client_plain), Packet::ConnAck(_)));
}

#[test]
fn many_small_frames_and_a_large_one_arrive_in_order() {
    let server = server(None, false);
    let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[&TLS13], None));
    pair.pump().expect("handshake");
    let mut frames: Vec<Bytes> = (0..200u32).map(|i| Bytes::from(i.to_be_bytes().to_vec())).collect();
    frames.push(Bytes::from(vec![7u8; 100_000]));
    let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    pair.server_sends(frames).expect("send");
    assert_eq!(pair.client_plain, expected);
    // And the other way: more than one TLS record's worth in one `received`.
    let upload = vec![9u8; 70_000];
    pair.client_sends(&upload);
    pair.pump().expect("upload");
    assert_eq!(&pair.server_plain[..], &upload[..], "no plaintext left inside the transport");
}

#[test]
fn mutual_tls_with_a_good_certificate_exposes_its_common_name() {
    let clients = Authority::new("client CA");
    let server = server(Some(&clients), true);
    let cert = clients.client_cert("sensor-17");
    for version in [&TLS12, &TLS13] {
        let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[version], Some(&cert)));
        mqtt_both_ways(&mut pair);
        assert_eq!(pair.server.peer_identity().certificate_common_name.as_deref(), Some("sensor-17"));
    }
}

#[test]
fn a_ca_file_without_require_certificate_asks_for_no_client_certificate_as_mosquitto() {
    // A browser asked for a certificate prompts its user (headless Chromium cancels the WebSocket); a
    // client holding one does not send it when not asked, so nothing is verified and nobody is named.
    let clients = Authority::new("client CA");
    let server = server(Some(&clients), false);
    let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[&TLS13], None));
    mqtt_both_ways(&mut pair);
    assert_eq!(pair.server.peer_identity().certificate_common_name, None);

    for holder in [clients.client_cert("sensor-17"), Authority::new("other CA").client_cert("intruder")] {
        let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[&TLS13, &TLS12], Some(&holder)));
        mqtt_both_ways(&mut pair);
        assert_eq!(pair.server.peer_identity().certificate_common_name, None, "no certificate was asked for");
    }
}

/// The handshake fails on the server with an error containing `reason`, and the client receives `alert`.
fn assert_refused(pair: &mut Pair, reason: &str, alert: AlertDescription) {
    let error = pair.pump().expect_err("refused");
    let TransportError::Protocol(text) = &error else { panic!("not a protocol error: {error:?}") };
    assert!(text.contains(reason), "{text}");
    assert!(text.contains(&format!("{alert:?}")), "the error names the alert: {text}");
    assert!(!pair.server.is_established());
    assert_eq!(pair.server.peer_identity().certificate_common_name, None);
    assert_eq!(pair.client_error, Some(rustls::Error::AlertReceived(alert)), "the client got the alert");
    assert!(pair.server_plain.is_empty());
}

#[test]
fn no_client_certificate_when_required_is_refused() {
    let clients = Authority::new("client CA");
    let server = server(Some(&clients), true);
    for version in [&TLS12, &TLS13] {
        let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[version], None));
        assert_refused(&mut pair, "peer sent no certificates", AlertDescription::CertificateRequired);
    }
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let clients = Authority::new("client CA");
    let server = server(Some(&clients), true);
    let stranger = Authority::new("other CA").client_cert("intruder");
    for version in [&TLS12, &TLS13] {
        let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[version], Some(&stranger)));
        assert_refused(&mut pair, "UnknownIssuer", AlertDescription::UnknownCA);
    }
}

#[test]
fn expired_client_certificate_is_refused() {
    let clients = Authority::new("client CA");
    let server = server(Some(&clients), true);
    let expired = clients.expired_client_cert("old-sensor");
    for version in [&TLS12, &TLS13] {
        let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[version], Some(&expired)));
        assert_refused(&mut pair, "expired", AlertDescription::CertificateExpired);
    }
}

#[test]
fn plaintext_mqtt_on_the_tls_port_is_a_clean_error() {
    let server = server(None, false);
    let mut transport = server.acceptor.accept();
    let mut plain = BytesMut::new();
    let error = transport.received(&connect_bytes("plain-client"), &mut plain).expect_err("not TLS");
    assert!(error.to_string().contains("not TLS: plaintext MQTT on a TLS port?"), "{error}");
    assert!(plain.is_empty());
    assert!(!transport.wants_write(), "nothing to answer a client that does not speak TLS");
    // Only the first byte gives it away: a CONNECT split after it fails just the same.
    let mut transport = server.acceptor.accept();
    assert!(transport.received(&[0x10], &mut plain).is_err());
    // A WebSocket upgrade sent to the TLS port instead of the WSS one.
    let mut transport = server.acceptor.accept();
    let error = transport.received(b"GET /mqtt HTTP/1.1\r\n", &mut plain).expect_err("not TLS");
    assert!(error.to_string().contains("not TLS: plaintext HTTP"), "{error}");
}

#[test]
fn garbage_after_a_good_start_is_a_protocol_error_with_an_alert() {
    let server = server(None, false);
    let mut transport = server.acceptor.accept();
    let mut plain = BytesMut::new();
    // A handshake record header claiming a ClientHello, then junk.
    let error = transport
        .received(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0xff, 0xff, 0xff, 0xff], &mut plain)
        .expect_err("bad ClientHello");
    // rustls refuses it before any alert could make sense; the error says none was sent.
    assert!(error.to_string().contains("HandshakePayloadTooLarge (no alert sent)"), "{error}");
    assert!(!transport.wants_write());
    assert!(plain.is_empty());

    // An empty ClientHello: rustls answers with a decode_error alert, and the error names it.
    let mut transport = server.acceptor.accept();
    let error = transport
        .received(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00], &mut plain)
        .expect_err("empty ClientHello");
    assert!(error.to_string().contains("(alert DecodeError sent)"), "{error}");
    assert!(transport.wants_write(), "the alert is queued");
    let mut wire = VecDeque::new();
    let _ = transport.send(&mut VecDeque::new(), &mut wire);
    let bytes: Vec<u8> = wire.iter().flat_map(|b| b.iter().copied()).collect();
    assert_eq!(bytes.first(), Some(&0x15), "a TLS alert record: {bytes:02x?}");
    assert!(!transport.wants_write());
}

#[test]
fn close_sends_close_notify_after_the_last_frames() {
    let server = server(None, false);
    let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[&TLS13], None));
    pair.pump().expect("handshake");
    pair.server.close();
    assert!(pair.server.wants_write());
    pair.server_sends(vec![connack_frame()]).expect("last frames");
    assert!(matches!(decode_one(&pair.client_plain), Packet::ConnAck(_)), "the frames came first");
    assert!(pair.client.process_new_packets().expect("client state").peer_has_closed(), "then close_notify");
    assert!(!pair.server.wants_write());
}

#[test]
fn peer_close_notify_ends_the_session_after_its_data() {
    let server = server(None, false);
    let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[&TLS13], None));
    pair.pump().expect("handshake");
    pair.client_sends(&connect_bytes("leaving"));
    pair.client.send_close_notify();
    assert_eq!(pair.pump(), Err(TransportError::PeerClosed("TLS")));
    assert_eq!(&pair.server_plain[..], &connect_bytes("leaving")[..], "data before close_notify is kept");
    assert!(pair.client.process_new_packets().expect("client state").peer_has_closed(), "answered");
}

#[test]
fn reload_gives_new_connections_the_new_certificate_and_keeps_existing_ones() {
    let first_ca = Authority::new("first CA");
    let second_ca = Authority::new("second CA");
    let files = Files::new();
    let tls = settings(&files, &first_ca.server_cert("first"), None, false);
    let acceptor = TlsAcceptor::new(tls.clone()).expect("acceptor");
    let mut before = Pair::new(&acceptor, client_config(&first_ca, &[&TLS13], None));
    before.pump().expect("handshake on the first certificate");

    let second = second_ca.server_cert("second");
    std::fs::write(&tls.cert_file, &second.cert_pem).unwrap();
    std::fs::write(&tls.key_file, &second.key_pem).unwrap();
    acceptor.reload().expect("reload");

    let mut after = Pair::new(&acceptor, client_config(&second_ca, &[&TLS13], None));
    after.pump().expect("new connections get the second certificate");
    let mut stale = Pair::new(&acceptor, client_config(&first_ca, &[&TLS13], None));
    let error = stale.pump().expect_err("a client trusting only the first CA refuses the new certificate");
    assert!(error.to_string().contains("received fatal alert: UnknownCA"), "{error}");
    // The connection made before the reload carries on.
    before.client_sends(b"still here");
    before.pump().expect("old connection");
    assert_eq!(&before.server_plain[..], b"still here");
}

#[test]
fn reload_with_a_broken_file_keeps_the_old_configuration() {
    let ca = Authority::new("server CA");
    let files = Files::new();
    let tls = settings(&files, &ca.server_cert("broker"), None, false);
    let acceptor = TlsAcceptor::new(tls.clone()).expect("acceptor");

    std::fs::write(&tls.cert_file, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n").unwrap();
    let error = acceptor.reload().expect_err("broken certificate");
    assert!(error.to_string().contains(&tls.cert_file.display().to_string()), "{error}");

    // A certificate and key that do not belong together are refused too.
    let other = ca.server_cert("other");
    std::fs::write(&tls.cert_file, &other.cert_pem).unwrap();
    assert!(matches!(acceptor.reload(), Err(TlsError::KeyMismatch { .. })));

    let mut pair = Pair::new(&acceptor, client_config(&ca, &[&TLS13], None));
    mqtt_both_ways(&mut pair);
}

fn error_for(tls: TlsSettings) -> String {
    match TlsAcceptor::new(tls) {
        Ok(_) => panic!("settings accepted"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn configuration_errors_name_the_file_and_the_problem() {
    let ca = Authority::new("server CA");
    let files = Files::new();
    let server = ca.server_cert("broker");
    let good = settings(&files, &server, None, false);

    let missing = TlsSettings { cert_file: files.dir.join("nope.crt"), ..good.clone() };
    let text = error_for(missing);
    assert!(text.contains("cert_file") && text.contains("nope.crt") && text.contains("cannot read"), "{text}");

    let key_as_cert = TlsSettings { cert_file: good.key_file.clone(), ..good.clone() };
    let text = error_for(key_as_cert);
    assert!(text.contains("server.key") && text.contains("no PEM certificate"), "{text}");

    let cert_as_key = TlsSettings { key_file: good.cert_file.clone(), ..good.clone() };
    let text = error_for(cert_as_key);
    assert!(text.contains("key_file") && text.contains("no private key"), "{text}");

    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkq\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let encrypted_key = files.write("encrypted.key", encrypted);
    let text = error_for(TlsSettings { key_file: encrypted_key, ..good.clone() });
    assert!(text.contains("encrypted.key") && text.contains("the key is encrypted"), "{text}");

    let other_key = files.write("other.key", &ca.server_cert("other").key_pem);
    let text = error_for(TlsSettings { key_file: other_key, ..good.clone() });
    assert!(text.contains("does not match the certificate") && text.contains("server.crt"), "{text}");

    let unterminated = files.write("cut.crt", &server.cert_pem[..server.cert_pem.len() - 30]);
    let text = error_for(TlsSettings { cert_file: unterminated, ..good.clone() });
    assert!(text.contains("cut.crt") && text.contains("not valid PEM"), "{text}");

    let text = error_for(TlsSettings { require_certificate: true, ..good.clone() });
    assert!(text.contains("require_certificate needs a ca_file"), "{text}");
    let text = error_for(TlsSettings { use_identity_as_username: true, ..good.clone() });
    assert!(text.contains("use_identity_as_username needs a ca_file"), "{text}");

    let empty_ca = files.write("empty-ca.crt", "");
    let text = error_for(TlsSettings { ca_file: Some(empty_ca), ..good });
    assert!(text.contains("ca_file") && text.contains("empty-ca.crt"), "{text}");
}

#[test]
fn rsa_pkcs1_and_ec_sec1_keys_are_accepted() {
    for (traditional, pkcs8) in [("rsa.pkcs1.pem", "rsa.pkcs8.pem"), ("ec.sec1.pem", "ec.pkcs8.pem")] {
        let ca = Authority::new("server CA");
        let key = rcgen::KeyPair::from_pem(&key_fixture(pkcs8)).expect("fixture key");
        let mut leaf = ca.server_cert_for_key("broker", key);
        leaf.key_pem = key_fixture(traditional);
        let files = Files::new();
        let acceptor = TlsAcceptor::new(settings(&files, &leaf, None, false))
            .unwrap_or_else(|error| panic!("{traditional}: {error}"));
        for version in [&TLS12, &TLS13] {
            let mut pair = Pair::new(&acceptor, client_config(&ca, &[version], None));
            mqtt_both_ways(&mut pair);
        }
    }
}

#[test]
fn acceptor_is_shared_by_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TlsAcceptor>();
    // A connection's transport moves with it when the client's home shard takes it over.
    fn assert_send<T: Send>() {}
    assert_send::<shardmq::transport::tls::TlsTransport>();
    let server = server(None, false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut pair = Pair::new(&server.acceptor, client_config(&server.ca, &[&TLS13], None));
                mqtt_both_ways(&mut pair);
            });
        }
    });
}
