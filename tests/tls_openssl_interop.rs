//! The TLS transport against OpenSSL (Python's `ssl` module and `openssl s_client`) over a real loopback socket: a test thread
//! plays the runtime (socket reads -> `received`, `wants_write`/`send` -> socket writes) and answers a
//! CONNECT with a CONNACK. Checks TLS 1.3 and 1.2 handshakes and a client certificate's CN seen by us.

mod tls_support;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shardmq::transport::tls::TlsAcceptor;
use shardmq::transport::{PeerIdentity, Transport};
use tls_support::{settings, Authority, Files};

const CONNACK: &[u8] = &[0x20, 0x02, 0x00, 0x00];

/// Serve one TLS connection on `listener` like the runtime would; returns the peer identity and the
/// plaintext received (a CONNECT is answered with a CONNACK).
fn serve_one(listener: TcpListener, acceptor: &TlsAcceptor) -> (PeerIdentity, Vec<u8>) {
    let (mut socket, _) = listener.accept().expect("accept");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut transport = acceptor.accept();
    let mut plain = BytesMut::new();
    let mut answered = false;
    let mut buf = [0u8; 4096];
    loop {
        let read = socket.read(&mut buf).unwrap_or(0);
        if read == 0 {
            break;
        }
        let result = transport.received(&buf[..read], &mut plain);
        let mut frames = VecDeque::new();
        if result.is_ok() && !answered && plain.first() == Some(&0x10) {
            answered = true;
            frames.push_back(Bytes::from_static(CONNACK));
        }
        if transport.wants_write() || !frames.is_empty() {
            write_all(&mut socket, &mut transport, &mut frames);
        }
        if result.is_err() {
            break;
        }
    }
    (transport.peer_identity(), plain.to_vec())
}

fn write_all(socket: &mut TcpStream, transport: &mut impl Transport, frames: &mut VecDeque<Bytes>) {
    let mut wire = VecDeque::new();
    let _ = transport.send(frames, &mut wire);
    for chunk in wire {
        if socket.write_all(&chunk).is_err() {
            return;
        }
    }
}

/// A Python ssl client: connects, sends a CONNECT, reads the CONNACK, prints the TLS version.
const CLIENT: &str = r#"
import socket, ssl, sys
port, cafile, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context(cafile=cafile)
context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
if len(sys.argv) > 5:
    context.load_cert_chain(sys.argv[4], sys.argv[5])
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(bytes([0x10, 0x10, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 4]) + b"test")
        connack = b""
        while len(connack) < 4:
            chunk = tls.recv(4 - len(connack))
            if not chunk:
                break
            connack += chunk
        print(tls.version(), connack.hex())
"#;

fn run_client(port: u16, ca_file: &std::path::Path, version: &str, cert: Option<(&str, &str)>) -> String {
    let mut command = Command::new("python3");
    command.arg("-c").arg(CLIENT).arg(port.to_string()).arg(ca_file).arg(version);
    if let Some((cert_file, key_file)) = cert {
        command.arg(cert_file).arg(key_file);
    }
    let output = command.output().expect("python3 runs (scripts/test needs it for the paho tests too)");
    assert!(output.status.success(), "python ssl client failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn handshake_with_python(version: &str, expected: &str) {
    let ca = Authority::new("server CA");
    let files = Files::new();
    let acceptor = TlsAcceptor::new(settings(&files, &ca.server_cert("broker"), None, false)).expect("acceptor");
    let ca_file = files.write("server-ca.crt", &ca.cert_pem);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::scope(|scope| {
        let server = scope.spawn(|| serve_one(listener, &acceptor));
        let printed = run_client(port, &ca_file, version, None);
        assert_eq!(printed, format!("{expected} 20020000"), "TLS version and CONNACK");
        let (_, plain) = server.join().expect("server thread");
        assert_eq!(plain.first(), Some(&0x10), "the CONNECT reached the codec side");
    });
}

#[test]
fn python_ssl_client_completes_a_tls13_handshake_and_gets_a_connack() {
    handshake_with_python("TLSv1_3", "TLSv1.3");
}

#[test]
fn python_ssl_client_completes_a_tls12_handshake_and_gets_a_connack() {
    handshake_with_python("TLSv1_2", "TLSv1.2");
}

#[test]
fn python_ssl_client_certificate_common_name_reaches_the_transport() {
    let server_ca = Authority::new("server CA");
    let client_ca = Authority::new("client CA");
    let files = Files::new();
    let acceptor =
        TlsAcceptor::new(settings(&files, &server_ca.server_cert("broker"), Some(&client_ca), true)).expect("acceptor");
    let ca_file = files.write("server-ca.crt", &server_ca.cert_pem);
    let client = client_ca.client_cert("python-device");
    let cert_file = files.write("client.crt", &client.cert_pem);
    let key_file = files.write("client.key", &client.key_pem);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::scope(|scope| {
        let server = scope.spawn(|| serve_one(listener, &acceptor));
        let cert = (cert_file.to_str().expect("utf-8 path"), key_file.to_str().expect("utf-8 path"));
        let printed = run_client(port, &ca_file, "TLSv1_3", Some(cert));
        assert_eq!(printed, "TLSv1.3 20020000");
        let (identity, _) = server.join().expect("server thread");
        assert_eq!(identity.certificate_common_name.as_deref(), Some("python-device"));
    });
}

#[test]
fn openssl_s_client_completes_handshakes_and_gets_a_connack() {
    let ca = Authority::new("server CA");
    let files = Files::new();
    let acceptor = TlsAcceptor::new(settings(&files, &ca.server_cert("broker"), None, false)).expect("acceptor");
    let ca_file = files.write("server-ca.crt", &ca.cert_pem);
    for version in ["-tls1_3", "-tls1_2"] {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::scope(|scope| {
            let server = scope.spawn(|| serve_one(listener, &acceptor));
            let mut client = Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
                .arg("-CAfile")
                .arg(&ca_file)
                .args(["-verify_return_error", "-quiet", version])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("openssl runs (scripts/test installs it)");
            let connect = [0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 4, b't', b'e', b's', b't'];
            client.stdin.as_mut().expect("stdin").write_all(&connect).expect("send CONNECT");
            let mut connack = [0u8; 4];
            let read = client.stdout.as_mut().expect("stdout").read_exact(&mut connack);
            // -quiet implies -ign_eof: s_client waits for the server after stdin closes, so end it here.
            let _ = client.kill();
            let _ = client.wait();
            read.expect("CONNACK through openssl s_client");
            assert_eq!(connack, CONNACK, "{version}");
            let (_, plain) = server.join().expect("server thread");
            assert_eq!(&plain[..], &connect[..], "{version}: the CONNECT reached the codec side");
        });
    }
}
