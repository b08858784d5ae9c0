//! The `[http]` table: where the HTTP API listens (`bind`, and more `[[http.listeners]]`, each plain or
//! TLS), its admin token, where API tokens are kept, and the bounds on requests. Off (no listener) by
//! default.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[http]`: the HTTP API listener.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// `host:port` of the HTTP API; None = no listener here (short for one `[[http.listeners]]` entry).
    pub bind: Option<String>,
    /// PEM certificate chain (leaf first) and private key of `bind`: with both set it speaks HTTPS only,
    /// read as a TLS listener's `cert_file` / `key_file` are. None = plain HTTP.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// More listeners of the same API (e.g. plain HTTP on loopback, HTTPS outside), each with its own
    /// certificate; they share every other setting, the connection cap and the rate limit.
    pub listeners: Vec<HttpListener>,
    /// `Authorization: Bearer` value that may do everything; None = only API tokens are accepted (and no
    /// token can be made).
    pub admin_token: Option<String>,
    /// JSON file where API tokens (their SHA-256, never the secret) survive a restart; None = in memory.
    pub tokens_file: Option<PathBuf>,
    /// Longest `ttl_seconds` a token may be given.
    pub token_ttl_max_secs: u64,
    /// Largest request body accepted, bytes (413 beyond).
    #[serde(alias = "body_bytes_max")]
    pub body_max_bytes: usize,
    /// Largest request head (request line and header fields), bytes (431 beyond).
    #[serde(alias = "head_bytes_max")]
    pub head_max_bytes: usize,
    /// A request must arrive whole within this many seconds of its first byte (408 otherwise).
    pub request_timeout_secs: u64,
    /// An idle keep-alive connection is closed after this many seconds.
    pub idle_timeout_secs: u64,
    /// HTTP connections open at once; more get 503 and are closed.
    #[serde(alias = "max_connections")]
    pub connections_max: usize,
    /// Requests per second over all connections (a token bucket with one second of burst); 0 = no limit.
    /// Requests beyond it get 429.
    #[serde(alias = "requests_per_sec_max")]
    pub request_rate_max_per_second: u32,
    /// Messages one `POST /api/v1/publish/batch` may carry.
    #[serde(alias = "batch_messages_max")]
    pub batch_max_messages: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            bind: None,
            cert_file: None,
            key_file: None,
            listeners: Vec::new(),
            admin_token: None,
            tokens_file: None,
            token_ttl_max_secs: 30 * 24 * 3600,
            body_max_bytes: 1024 * 1024,
            head_max_bytes: 8 * 1024,
            request_timeout_secs: 10,
            idle_timeout_secs: 60,
            connections_max: 256,
            request_rate_max_per_second: 0,
            batch_max_messages: 1000,
        }
    }
}

/// One `[[http.listeners]]` entry (or `[http]`'s own `bind`).
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpListener {
    /// `host:port`; port 0 picks a free port.
    pub bind: String,
    /// Set both for HTTPS only on this listener.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl HttpListener {
    /// The TLS settings of an HTTPS listener (no client certificates), when `cert_file` and `key_file` are
    /// set.
    pub fn tls(&self) -> Option<crate::config::TlsSettings> {
        Some(crate::config::TlsSettings {
            cert_file: self.cert_file.clone()?,
            key_file: self.key_file.clone()?,
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        })
    }

    /// "https" or "http".
    pub fn scheme(&self) -> &'static str {
        if self.cert_file.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

impl HttpSettings {
    /// Every listener of the API: `bind` first (as written in `[http]`), then `[[http.listeners]]`.
    pub fn effective_listeners(&self) -> Vec<HttpListener> {
        let shorthand = self.bind.as_ref().map(|bind| HttpListener {
            bind: bind.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        });
        shorthand.into_iter().chain(self.listeners.iter().cloned()).collect()
    }

    /// Whether the HTTP API is on.
    pub fn enabled(&self) -> bool {
        self.bind.is_some() || !self.listeners.is_empty()
    }

    /// The reason the settings cannot be used, naming the field.
    pub fn check(&self) -> Result<Vec<SocketAddr>, (&'static str, String)> {
        if self.bind.is_none() && (self.cert_file.is_some() || self.key_file.is_some()) {
            return Err(("http.cert_file / http.key_file", "they belong to http.bind, which is not set".into()));
        }
        let mut addrs = Vec::new();
        for (index, listener) in self.effective_listeners().iter().enumerate() {
            let field = match (index, self.bind.is_some()) {
                (0, true) => "http.bind",
                _ => "http.listeners.bind",
            };
            let addr =
                listener.bind.parse::<SocketAddr>().map_err(|err| (field, format!("{:?}: {err}", listener.bind)))?;
            if listener.cert_file.is_some() != listener.key_file.is_some() {
                let field = match field {
                    "http.bind" => "http.cert_file / http.key_file",
                    _ => "http.listeners.cert_file / key_file",
                };
                return Err((field, format!("{}: set both (HTTPS) or neither (plain HTTP)", listener.bind)));
            }
            if addr.port() != 0 && addrs.contains(&addr) {
                return Err((field, format!("{addr} is listed twice")));
            }
            addrs.push(addr);
        }
        if self.admin_token.as_ref().is_some_and(|token| token.len() < 16) {
            return Err(("http.admin_token", "at least 16 characters".into()));
        }
        if self.token_ttl_max_secs == 0 {
            return Err(("http.token_ttl_max_secs", "must be at least 1".into()));
        }
        if self.body_max_bytes < 1024 || self.head_max_bytes < 1024 {
            return Err(("http.body_max_bytes / http.head_max_bytes", "must be at least 1024".into()));
        }
        if self.request_timeout_secs == 0 || self.idle_timeout_secs == 0 {
            return Err(("http.request_timeout_secs / http.idle_timeout_secs", "must be at least 1".into()));
        }
        if self.connections_max == 0 || self.batch_max_messages == 0 {
            return Err(("http.connections_max / http.batch_max_messages", "must be at least 1".into()));
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> HttpSettings {
        toml::from_str(text).expect("valid [http] table")
    }

    #[test]
    fn bind_comes_first_then_the_listener_entries_each_with_its_scheme() {
        let settings = parsed(
            "bind = \"127.0.0.1:8080\"\n[[listeners]]\nbind = \"127.0.0.1:8443\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        );
        let listeners = settings.effective_listeners();
        let shown: Vec<_> = listeners.iter().map(|listener| (listener.bind.as_str(), listener.scheme())).collect();
        assert_eq!(shown, [("127.0.0.1:8080", "http"), ("127.0.0.1:8443", "https")]);
        assert_eq!(settings.check().map(|addrs| addrs.len()), Ok(2));
        assert!(settings.enabled());
        assert!(parsed("[[listeners]]\nbind = \"127.0.0.1:8443\"\n").enabled());
        assert!(!HttpSettings::default().enabled());
    }

    #[test]
    fn a_listener_with_half_a_certificate_twice_the_same_address_or_a_bindless_certificate_is_refused() {
        let half = parsed("[[listeners]]\nbind = \"127.0.0.1:8443\"\ncert_file = \"c.pem\"\n");
        assert_eq!(half.check().map_err(|(field, _)| field), Err("http.listeners.cert_file / key_file"));
        let twice = parsed("bind = \"127.0.0.1:8080\"\n[[listeners]]\nbind = \"127.0.0.1:8080\"\n");
        assert_eq!(twice.check().map_err(|(field, _)| field), Err("http.listeners.bind"));
        let bindless = parsed("cert_file = \"c.pem\"\nkey_file = \"k.pem\"\n");
        assert_eq!(bindless.check().map_err(|(field, _)| field), Err("http.cert_file / http.key_file"));
    }
}
