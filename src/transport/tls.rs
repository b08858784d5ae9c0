//! The TLS transport: a rustls `ServerConnection` behind the sans-I/O [`Transport`] seam.
//!
//! [`TlsAcceptor`] owns a TLS listener's server configuration (certificate chain, private key, optional
//! client CA) built from [`TlsSettings`]; it is shared by every shard and [`TlsAcceptor::reload`] swaps the
//! configuration for new connections (SIGHUP) while existing ones keep theirs. [`TlsAcceptor::accept`]
//! makes one connection's [`TlsTransport`], which decrypts what the socket read into plaintext MQTT bytes
//! and encrypts the codec's frames into TLS records, never touching a socket itself.

use std::collections::VecDeque;
use std::io::{self, BufRead, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, RootCertStore, ServerConfig, ServerConnection};

use super::{PeerIdentity, Transport, TransportError};

/// The TLS part of a listener's configuration (`[listeners.tls]`).
pub use crate::config::TlsSettings;

/// Why a TLS listener's configuration could not be built. Each names the setting and file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS {setting} {}: cannot read the file: {source}", .path.display())]
    ReadFile { setting: &'static str, path: PathBuf, source: io::Error },
    #[error("TLS {setting} {}: not valid PEM: {reason}", .path.display())]
    BadPem { setting: &'static str, path: PathBuf, reason: String },
    #[error("TLS {setting} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file", .path.display())]
    NoCertificate { setting: &'static str, path: PathBuf },
    #[error("TLS {setting} {}: unusable certificate: {reason}", .path.display())]
    BadCertificate { setting: &'static str, path: PathBuf, reason: String },
    #[error(
        "TLS key_file {}: no private key in the file (expected PEM \"PRIVATE KEY\" (PKCS#8), \
         \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")",
        .path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error("TLS key_file {}: unusable private key: {reason}", .path.display())]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error(
        "TLS key_file {} does not match the certificate in cert_file {}",
        .key_file.display(),
        .cert_file.display()
    )]
    KeyMismatch { cert_file: PathBuf, key_file: PathBuf },
    #[error("TLS {0} needs a ca_file to verify client certificates against")]
    NeedsCaFile(&'static str),
    #[error("TLS server configuration refused by rustls: {0}")]
    Config(rustls::Error),
}

/// A TLS listener's server configuration, shared by all shards (`Send + Sync`).
pub struct TlsAcceptor {
    settings: TlsSettings,
    /// The configuration new connections get; each connection holds its own `Arc`, so a swap leaves
    /// connections already accepted on the configuration they started with.
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    /// Read the files named by `settings` and build the server configuration.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let config = build_server_config(&settings)?;
        Ok(TlsAcceptor { settings, current: RwLock::new(config) })
    }

    /// Re-read the files (after SIGHUP) and use them for new connections. On error the previous
    /// configuration stays in use and the error says which file is wrong.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_server_config(&self.settings)?;
        // A poisoned lock only means a panic elsewhere while swapping an `Arc`: the value is still whole.
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// The settings this acceptor reads its files from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// A new connection's transport, on the current configuration.
    pub fn accept(&self) -> TlsTransport {
        TlsTransport::new(self.server_connection())
    }

    /// A new connection's rustls state on the current configuration, for a server that does its own I/O
    /// (the HTTP API's blocking threads).
    pub fn server_connection(&self) -> ServerConnection {
        let config = self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        new_server_connection(config)
            .expect("build_server_config made a ServerConnection from this configuration before accepting it")
    }
}

fn new_server_connection(config: Arc<ServerConfig>) -> Result<ServerConnection, rustls::Error> {
    let mut connection = ServerConnection::new(config)?;
    // `send` encrypts every frame it is given and hands all records to the runtime at once, so rustls never
    // holds more than one `send` worth; the broker bounds that by its out-queue limit. A rustls limit would
    // make it refuse part of the frames, which the `Transport` contract has no way to hand back.
    connection.set_buffer_limit(None);
    Ok(connection)
}

fn build_server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certificates("cert_file", &settings.cert_file)?;
    let key = read_private_key(&settings.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = match &settings.ca_file {
        None if settings.require_certificate => return Err(TlsError::NeedsCaFile("require_certificate")),
        None if settings.use_identity_as_username => return Err(TlsError::NeedsCaFile("use_identity_as_username")),
        None => builder.with_no_client_auth(),
        Some(ca_file) if settings.require_certificate => {
            builder.with_client_cert_verifier(client_verifier(ca_file, provider)?)
        }
        // As Mosquitto: without `require_certificate` no certificate is asked for. An optional request
        // is not harmless: a browser asked for one prompts the user (headless Chromium cancels the
        // WebSocket), and a certificate nobody requires would authenticate no one. The file is still
        // read, so a bad `ca_file` is an error at start rather than on the day it is required.
        Some(ca_file) => {
            client_verifier(ca_file, provider)?;
            builder.with_no_client_auth()
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => {
            TlsError::KeyMismatch { cert_file: settings.cert_file.clone(), key_file: settings.key_file.clone() }
        }
        rustls::Error::InvalidCertificate(reason) => TlsError::BadCertificate {
            setting: "cert_file",
            path: settings.cert_file.clone(),
            reason: format!("{reason:?}"),
        },
        // The only other step that can fail is the provider loading the key.
        other => TlsError::BadPrivateKey { path: settings.key_file.clone(), reason: other.to_string() },
    })?;
    let config = Arc::new(config);
    // Whatever would make a connection fail to start is found here, so `accept` cannot fail.
    new_server_connection(config.clone()).map_err(TlsError::Config)?;
    Ok(config)
}

fn client_verifier(
    ca_file: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates("ca_file", ca_file)? {
        roots.add(certificate).map_err(|error| TlsError::BadCertificate {
            setting: "ca_file",
            path: ca_file.to_path_buf(),
            reason: error.to_string(),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().map_err(|error| {
        TlsError::BadCertificate { setting: "ca_file", path: ca_file.to_path_buf(), reason: error.to_string() }
    })
}

fn read_file(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile { setting, path: path.to_path_buf(), source })
}

fn read_certificates(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read_file(setting, path)?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadPem { setting, path: path.to_path_buf(), reason: pem_reason(&error) })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate { setting, path: path.to_path_buf() });
    }
    Ok(certificates)
}

const ENCRYPTED_KEY_LABEL: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_file("key_file", path)?;
    if text.windows(ENCRYPTED_KEY_LABEL.len()).any(|window| window == ENCRYPTED_KEY_LABEL) {
        return Err(TlsError::BadPrivateKey {
            path: path.to_path_buf(),
            reason: "the key is encrypted (no passphrase support): store it decrypted \
                     (`openssl pkey -in KEY -out PLAIN_KEY`) with file permissions protecting it"
                .to_owned(),
        });
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: path.to_path_buf() },
        other => TlsError::BadPem { setting: "key_file", path: path.to_path_buf(), reason: pem_reason(&other) },
    })
}

/// pem's own texts print markers and lines as byte arrays; say it in words.
fn pem_reason(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("a section has no end line {:?}", String::from_utf8_lossy(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("bad section start line {:?}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}

/// The TLS record content type every TLS client's first record has (a ClientHello is a handshake record).
const HANDSHAKE_RECORD_TYPE: u8 = 0x16;

/// One connection's TLS state (see the module doc and the [`Transport`] contract).
pub struct TlsTransport {
    connection: ServerConnection,
    /// Whether the first byte has been checked for being a TLS record (and not plaintext MQTT).
    first_byte_seen: bool,
    /// The verified client certificate's Common Name, read once when the handshake completes.
    identity: PeerIdentity,
    identity_read: bool,
    /// `close` was called: close_notify goes out after the frames of the next `send`.
    closing: bool,
    close_notify_queued: bool,
    /// What rustls had queued when it failed (its alert), taken out to name the alert; sent by `send`.
    pending_records: Option<Bytes>,
}

impl TlsTransport {
    fn new(connection: ServerConnection) -> Self {
        TlsTransport {
            connection,
            first_byte_seen: false,
            identity: PeerIdentity::default(),
            identity_read: false,
            closing: false,
            close_notify_queued: false,
            pending_records: None,
        }
    }

    /// The negotiated TLS version, once the handshake got that far (for logs and tests).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.connection.protocol_version()
    }

    /// Move every decrypted byte out of rustls, as the contract wants nothing left buffered.
    fn drain_plaintext(&mut self, plain: &mut BytesMut) {
        let mut reader = self.connection.reader();
        // `Err(WouldBlock)` = nothing more; `Ok(empty)` = close_notify received. Both end the drain.
        while let Ok(chunk) = reader.fill_buf() {
            if chunk.is_empty() {
                break;
            }
            let len = chunk.len();
            plain.extend_from_slice(chunk);
            reader.consume(len);
        }
    }

    fn read_identity_once(&mut self) {
        if self.identity_read || self.connection.is_handshaking() {
            return;
        }
        self.identity_read = true;
        // Present only when the verifier accepted the chain: the handshake fails otherwise.
        let leaf = self.connection.peer_certificates().and_then(|chain| chain.first());
        self.identity.certificate_common_name = leaf.and_then(|leaf| common_name(leaf));
    }

    /// A TLS error from rustls. Most errors queue a fatal alert (sent by the next `send`); the error
    /// text says which one went out, or that none did.
    fn protocol_error(&mut self, error: rustls::Error) -> TransportError {
        let during = if self.connection.is_handshaking() { "handshake" } else { "session" };
        if let rustls::Error::AlertReceived(_) = error {
            return TransportError::Protocol(format!("TLS {during}: {error}"));
        }
        let records = self.take_records();
        let alert = last_plaintext_alert(&records).or_else(|| match &error {
            // Encrypted alerts cannot be read back: these are the ones rustls sends for these errors.
            _ if records.is_empty() => None,
            rustls::Error::InvalidCertificate(reason) => Some(AlertDescription::from(reason.clone())),
            rustls::Error::NoCertificatesPresented => Some(AlertDescription::CertificateRequired),
            _ => None,
        });
        let sent = match alert {
            Some(alert) => format!("alert {alert:?} sent"),
            None if records.is_empty() => "no alert sent".to_owned(),
            None => "fatal alert sent".to_owned(),
        };
        if !records.is_empty() {
            self.pending_records = Some(Bytes::from(records));
        }
        TransportError::Protocol(format!("TLS {during}: {error} ({sent})"))
    }

    /// Every TLS byte rustls has queued, in one buffer.
    fn take_records(&mut self) -> Vec<u8> {
        let mut records = Vec::new();
        while self.connection.wants_write() {
            // Writing into a `Vec` cannot fail or stop short.
            if self.connection.write_tls(&mut records).is_err() {
                break;
            }
        }
        records
    }
}

/// The description of the last record in `records` if it is an unencrypted alert.
fn last_plaintext_alert(mut records: &[u8]) -> Option<AlertDescription> {
    const ALERT_RECORD_TYPE: u8 = 0x15;
    const HEADER_BYTES: usize = 5;
    let mut last = None;
    while records.len() >= HEADER_BYTES {
        let len = usize::from(u16::from_be_bytes([records[3], records[4]]));
        let body = records.get(HEADER_BYTES..HEADER_BYTES + len)?;
        last = (records[0] == ALERT_RECORD_TYPE && len == 2).then(|| AlertDescription::from(body[1]));
        records = &records[HEADER_BYTES + len..];
    }
    last
}

/// The Common Name of a DER certificate's subject (the first, if there are several).
fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(name)
}

/// What a first byte that cannot start TLS most likely is, for the log line.
fn not_tls(first_byte: u8) -> TransportError {
    let guess = match first_byte {
        0x10 => "plaintext MQTT on a TLS port? (0x10 is an MQTT CONNECT)".to_owned(),
        b'A'..=b'Z' => "plaintext HTTP or text on a TLS port?".to_owned(),
        other => format!("first byte 0x{other:02x}"),
    };
    TransportError::Protocol(format!(
        "not TLS: {guess}; a TLS client starts with a handshake record (0x{HANDSHAKE_RECORD_TYPE:02x})"
    ))
}

impl Transport for TlsTransport {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn received(&mut self, wire: &[u8], plain: &mut BytesMut) -> Result<(), TransportError> {
        if !self.first_byte_seen {
            if let Some(&first_byte) = wire.first() {
                self.first_byte_seen = true;
                if first_byte != HANDSHAKE_RECORD_TYPE {
                    // rustls needs a 5-byte record header before it can judge, which a short CONNECT may
                    // never supply (the client then waits for a CONNACK): fail on the first byte.
                    return Err(not_tls(first_byte));
                }
            }
        }
        let mut input = wire;
        let mut peer_closed = false;
        while !input.is_empty() {
            // Never called with empty input: rustls takes a read of 0 bytes for the socket's EOF.
            let read = self
                .connection
                .read_tls(&mut input)
                .map_err(|error| TransportError::Protocol(format!("TLS: {error}")))?;
            if read == 0 {
                // close_notify arrived: anything after it is not part of the session.
                break;
            }
            // Processed after each read: rustls takes a bounded amount per `read_tls`.
            let processed = self.connection.process_new_packets();
            self.drain_plaintext(plain);
            match processed {
                Ok(state) => peer_closed = state.peer_has_closed(),
                Err(error) => return Err(self.protocol_error(error)),
            }
        }
        self.read_identity_once();
        if peer_closed {
            // Answer the peer's close_notify with ours; the runtime writes it and closes.
            self.closing = true;
            return Err(TransportError::PeerClosed("TLS"));
        }
        Ok(())
    }

    fn send(&mut self, frames: &mut VecDeque<Bytes>, wire: &mut VecDeque<Bytes>) -> Result<(), TransportError> {
        if let Some(records) = self.pending_records.take() {
            wire.push_back(records);
        }
        if self.close_notify_queued {
            // The session is over: nothing may follow close_notify.
            frames.clear();
        }
        let written = write_frames(&mut self.connection, frames);
        frames.clear();
        if self.closing && !self.close_notify_queued {
            self.close_notify_queued = true;
            self.connection.send_close_notify();
        }
        let records = self.take_records();
        if !records.is_empty() {
            wire.push_back(Bytes::from(records));
        }
        written.map_err(|error| TransportError::Protocol(format!("TLS: cannot encrypt frames: {error}")))
    }

    fn wants_write(&self) -> bool {
        self.pending_records.is_some() || self.connection.wants_write() || (self.closing && !self.close_notify_queued)
    }

    fn is_established(&self) -> bool {
        !self.connection.is_handshaking()
    }

    fn close(&mut self) {
        self.closing = true;
    }

    fn peer_identity(&self) -> PeerIdentity {
        self.identity.clone()
    }
}

/// Hand all frames to rustls, up to 64 slices per write so that small frames share TLS records.
fn write_frames(connection: &mut ServerConnection, frames: &VecDeque<Bytes>) -> io::Result<()> {
    const SLICES_PER_WRITE: usize = 64;
    let mut pending = frames.iter().filter(|frame| !frame.is_empty());
    let mut batch = [IoSlice::new(&[]); SLICES_PER_WRITE];
    loop {
        let mut count = 0;
        for (slot, frame) in batch.iter_mut().zip(pending.by_ref()) {
            *slot = IoSlice::new(frame);
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let mut slices = &mut batch[..count];
        while !slices.is_empty() {
            let written = connection.writer().write_vectored(slices)?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, written);
        }
    }
}
