//! Shared by the TLS transport tests: certificates made on the spot (rcgen), files to put them in, and an
//! in-memory pair of a rustls client and our `TlsTransport` with the bytes carried between them by hand.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};
use shardmq::transport::tls::{TlsAcceptor, TlsSettings, TlsTransport};
use shardmq::transport::{Transport, TransportError};

/// A certificate authority made for one test.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

/// A certificate and its private key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Authority { issuer: Issuer::new(params, key), cert_pem: cert.pem() }
    }

    /// A server certificate for `localhost` and 127.0.0.1 with Common Name `name`.
    pub fn server_cert(&self, name: &str) -> Leaf {
        self.server_cert_for_key(name, KeyPair::generate().expect("generate server key"))
    }

    /// A server certificate for an existing key (rcgen loads only PKCS#8; the caller may keep another form).
    pub fn server_cert_for_key(&self, name: &str, key: KeyPair) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, key)
    }

    /// A client certificate with Common Name `common_name`.
    pub fn client_cert(&self, common_name: &str) -> Leaf {
        self.sign(client_params(common_name), KeyPair::generate().expect("generate client key"))
    }

    /// A client certificate that expired on 2020-01-01.
    pub fn expired_client_cert(&self, common_name: &str) -> Leaf {
        let mut params = client_params(common_name);
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        self.sign(params, KeyPair::generate().expect("generate client key"))
    }

    fn sign(&self, params: CertificateParams, key: KeyPair) -> Leaf {
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

fn client_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// A fresh directory for one test's files, removed when dropped.
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shardmq-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create test dir");
        Files { dir }
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Settings for a server certificate from `server` and, when `client_ca` is given, client certificates
/// verified against it.
pub fn settings(files: &Files, server: &Leaf, client_ca: Option<&Authority>, require: bool) -> TlsSettings {
    TlsSettings {
        cert_file: files.write("server.crt", &server.cert_pem),
        key_file: files.write("server.key", &server.key_pem),
        ca_file: client_ca.map(|ca| files.write("clients-ca.crt", &ca.cert_pem)),
        require_certificate: require,
        use_identity_as_username: false,
    }
}

pub fn key_fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_support/keys").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A rustls client trusting `ca`, speaking only `versions`, presenting `client_cert` if given.
pub fn client_config(
    ca: &Authority,
    versions: &[&'static SupportedProtocolVersion],
    client_cert: Option<&Leaf>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("CA PEM")).expect("trust CA");
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("client versions")
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("client cert PEM")],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("client key PEM"),
            )
            .expect("client auth cert"),
    };
    Arc::new(config)
}

/// A rustls client and our server transport, wired together in memory.
pub struct Pair {
    pub client: ClientConnection,
    pub server: TlsTransport,
    /// Plaintext the server transport produced (for the codec).
    pub server_plain: BytesMut,
    /// Plaintext the client received.
    pub client_plain: Vec<u8>,
    /// The first error the client's rustls reported (e.g. the alert our server sent).
    pub client_error: Option<rustls::Error>,
    /// Bytes handed to `TlsTransport::received` per call (1 = byte at a time).
    pub chunk_bytes: usize,
}

impl Pair {
    pub fn new(acceptor: &TlsAcceptor, config: Arc<ClientConfig>) -> Self {
        let name = ServerName::try_from("localhost").expect("server name");
        let mut client = ClientConnection::new(config, name).expect("client connection");
        client.set_buffer_limit(None); // tests send more than 64 KiB at once
        Pair {
            client,
            server: acceptor.accept(),
            server_plain: BytesMut::new(),
            client_plain: Vec::new(),
            client_error: None,
            chunk_bytes: usize::MAX,
        }
    }

    /// Carry bytes both ways until neither side has more to send. Returns the server transport's first
    /// error, after delivering what it then had to send (its alert) to the client, as the runtime would.
    pub fn pump(&mut self) -> Result<(), TransportError> {
        for _ in 0..1000 {
            let to_server = self.client_output();
            let mut server_result = Ok(());
            for chunk in to_server.chunks(self.chunk_bytes.max(1)) {
                server_result = self.server.received(chunk, &mut self.server_plain);
                if server_result.is_err() {
                    break;
                }
            }
            let to_client = self.server_output();
            self.deliver_to_client(&to_client);
            server_result?;
            if to_server.is_empty() && to_client.is_empty() {
                return Ok(());
            }
        }
        panic!("the TLS pair never went quiet");
    }

    /// The client sends `bytes` as application data.
    pub fn client_sends(&mut self, bytes: &[u8]) {
        self.client.writer().write_all(bytes).expect("client write");
    }

    /// The server transport sends `frames`; returns what it put on the wire (not yet delivered).
    pub fn server_sends(&mut self, frames: Vec<Bytes>) -> Result<(), TransportError> {
        let mut frames: VecDeque<Bytes> = frames.into();
        let mut wire = VecDeque::new();
        let result = self.server.send(&mut frames, &mut wire);
        assert!(frames.is_empty(), "send takes every frame");
        let bytes: Vec<u8> = wire.iter().flat_map(|chunk| chunk.iter().copied()).collect();
        self.deliver_to_client(&bytes);
        result
    }

    fn client_output(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut bytes).expect("client write_tls into a Vec");
        }
        bytes
    }

    fn server_output(&mut self) -> Vec<u8> {
        if !self.server.wants_write() {
            return Vec::new();
        }
        let mut wire = VecDeque::new();
        // The transport's own bytes (handshake, alert, close_notify); an error here is the one it reported.
        let _ = self.server.send(&mut VecDeque::new(), &mut wire);
        wire.iter().flat_map(|chunk| chunk.iter().copied()).collect()
    }

    fn deliver_to_client(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.client_error.is_none() {
            match self.client.read_tls(&mut bytes) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Err(error) = self.client.process_new_packets() {
                self.client_error = Some(error);
            }
            let mut reader = self.client.reader();
            while let Ok(chunk) = reader.fill_buf() {
                if chunk.is_empty() {
                    break;
                }
                let len = chunk.len();
                self.client_plain.extend_from_slice(chunk);
                reader.consume(len);
            }
        }
    }
}
