//! The `[http]` table: where the HTTP API listens (plain or TLS), its admin token, where API tokens are
//! kept, and the bounds on requests. Off (no `bind`) by default.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[http]`: the HTTP API listener.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// `host:port` of the HTTP API; None = no HTTP API.
    pub bind: Option<String>,
    /// PEM certificate chain (leaf first) and private key: with both set the API speaks HTTPS only, read
    /// as a TLS listener's `cert_file` / `key_file` are. None = plain HTTP.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `Authorization: Bearer` value that may do everything; None = only API tokens are accepted (and no
    /// token can be made).
    pub admin_token: Option<String>,
    /// JSON file where API tokens (their SHA-256, never the secret) survive a restart; None = in memory.
    pub tokens_file: Option<PathBuf>,
    /// Longest `ttl_seconds` a token may be given.
    pub token_ttl_max_secs: u64,
    /// Largest request body accepted, bytes (413 beyond).
    pub body_bytes_max: usize,
    /// Largest request head (request line and header fields), bytes (431 beyond).
    pub head_bytes_max: usize,
    /// A request must arrive whole within this many seconds of its first byte (408 otherwise).
    pub request_timeout_secs: u64,
    /// An idle keep-alive connection is closed after this many seconds.
    pub idle_timeout_secs: u64,
    /// HTTP connections open at once; more get 503 and are closed.
    pub max_connections: usize,
    /// Requests per second over all connections (a token bucket with one second of burst); 0 = no limit.
    /// Requests beyond it get 429.
    pub requests_per_sec_max: u32,
    /// Messages one `POST /api/v1/publish/batch` may carry.
    pub batch_messages_max: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            bind: None,
            cert_file: None,
            key_file: None,
            admin_token: None,
            tokens_file: None,
            token_ttl_max_secs: 30 * 24 * 3600,
            body_bytes_max: 1024 * 1024,
            head_bytes_max: 8 * 1024,
            request_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 256,
            requests_per_sec_max: 0,
            batch_messages_max: 1000,
        }
    }
}

impl HttpSettings {
    /// The TLS settings of an HTTPS API (no client certificates), when `cert_file` and `key_file` are set.
    pub fn tls(&self) -> Option<crate::config::TlsSettings> {
        Some(crate::config::TlsSettings {
            cert_file: self.cert_file.clone()?,
            key_file: self.key_file.clone()?,
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        })
    }

    /// Whether the HTTP API is on.
    pub fn enabled(&self) -> bool {
        self.bind.is_some()
    }

    /// The reason the settings cannot be used, naming the field.
    pub fn check(&self) -> Result<Option<SocketAddr>, (&'static str, String)> {
        let addr = match &self.bind {
            Some(bind) => Some(bind.parse::<SocketAddr>().map_err(|err| ("http.bind", format!("{bind:?}: {err}")))?),
            None => None,
        };
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(("http.cert_file / http.key_file", "set both (HTTPS) or neither (plain HTTP)".into()));
        }
        if self.admin_token.as_ref().is_some_and(|token| token.len() < 16) {
            return Err(("http.admin_token", "at least 16 characters".into()));
        }
        if self.token_ttl_max_secs == 0 {
            return Err(("http.token_ttl_max_secs", "must be at least 1".into()));
        }
        if self.body_bytes_max < 1024 || self.head_bytes_max < 1024 {
            return Err(("http.body_bytes_max / http.head_bytes_max", "must be at least 1024".into()));
        }
        if self.request_timeout_secs == 0 || self.idle_timeout_secs == 0 {
            return Err(("http.request_timeout_secs / http.idle_timeout_secs", "must be at least 1".into()));
        }
        if self.max_connections == 0 || self.batch_messages_max == 0 {
            return Err(("http.max_connections / http.batch_messages_max", "must be at least 1".into()));
        }
        Ok(addr)
    }
}
