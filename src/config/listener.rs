//! The listener list of the config: where clients connect (`[[listeners]]`), with which transport, TLS
//! settings and per-listener auth overrides; the top-level `[auth]` table they inherit from; and the
//! checks that refuse a listener the runtime could not serve safely.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// WebSocket listeners answer the upgrade on this HTTP path unless told otherwise (Mosquitto, EMQX and
/// MQTT.js all use it).
pub const DEFAULT_WEBSOCKET_PATH: &str = "/mqtt";

/// The byte stream a listener speaks MQTT over.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// MQTT over plain TCP.
    Mqtt,
    /// MQTT over TLS over TCP.
    Tls,
    /// MQTT over WebSocket over TCP.
    Ws,
    /// MQTT over WebSocket over TLS over TCP.
    Wss,
}

impl TransportKind {
    /// The name used in the TOML file.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Mqtt => "mqtt",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::Wss)
    }

    pub fn uses_websocket(self) -> bool {
        matches!(self, TransportKind::Ws | TransportKind::Wss)
    }
}

/// `[listeners.tls]`: the server certificate and, optionally, client-certificate checks.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the server certificate (chain), leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the server's private key.
    pub key_file: PathBuf,
    /// PEM file with the CAs trusted to sign client certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Refuse the TLS handshake of a client without a certificate signed by `ca_file`.
    #[serde(default)]
    pub require_certificate: bool,
    /// Use the Common Name of the client certificate as the MQTT username (its password is not checked).
    #[serde(default)]
    pub use_identity_as_username: bool,
}

/// `[listeners.auth]`: per-listener overrides of the top-level `[auth]`; `None` inherits it.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerAuth {
    pub allow_anonymous: Option<bool>,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    /// `false`: this listener does not use the `[auth.http]` / `[auth.postgres]` backend (its password / ACL files decide).
    pub external: Option<bool>,
}

/// `[auth]`: who may connect and what they may do, for every listener without its own override.
pub use crate::auth::AuthSettings;

/// One `[[listeners]]` entry: an address clients connect to and how they talk there.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `host:port` to accept on. Port 0 picks a free port.
    pub bind: String,
    #[serde(default = "default_transport")]
    pub transport: TransportKind,
    /// HTTP path of the WebSocket upgrade (ws/wss only).
    #[serde(default = "default_websocket_path")]
    pub websocket_path: String,
    /// Allowed `Origin` headers of a WebSocket upgrade; empty = any origin (ws/wss only).
    #[serde(default)]
    pub websocket_origins: Vec<String>,
    /// Required for tls/wss, refused for mqtt/ws.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    #[serde(default)]
    pub auth: ListenerAuth,
    /// Connections open at once on this listener; more are closed at accept. `None`: only the
    /// process-wide `connections_max` applies.
    #[serde(default, alias = "max_connections")]
    pub connections_max: Option<usize>,
}

fn default_transport() -> TransportKind {
    TransportKind::Mqtt
}

fn default_websocket_path() -> String {
    DEFAULT_WEBSOCKET_PATH.to_string()
}

impl ListenerConfig {
    /// A plain MQTT/TCP listener on `bind`, inheriting `[auth]`.
    pub fn mqtt(bind: impl Into<String>) -> ListenerConfig {
        ListenerConfig::new(bind, TransportKind::Mqtt)
    }

    /// A WebSocket listener on `bind` answering on [`DEFAULT_WEBSOCKET_PATH`].
    pub fn websocket(bind: impl Into<String>) -> ListenerConfig {
        ListenerConfig::new(bind, TransportKind::Ws)
    }

    pub fn new(bind: impl Into<String>, transport: TransportKind) -> ListenerConfig {
        ListenerConfig {
            bind: bind.into(),
            transport,
            websocket_path: default_websocket_path(),
            websocket_origins: Vec::new(),
            tls: None,
            auth: ListenerAuth::default(),
            connections_max: None,
        }
    }

    /// The bind address, resolved (a host name resolves to its first address).
    pub fn bind_addr(&self) -> Result<SocketAddr, String> {
        self.bind_addrs()?.into_iter().next().ok_or_else(|| format!("`{}` resolves to no address", self.bind))
    }

    fn bind_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        self.bind
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|err| format!("`{}` is not host:port ({err})", self.bind))
    }

    /// True when every address `bind` resolves to is a loopback address: only this machine can connect.
    pub fn is_loopback_only(&self) -> bool {
        self.bind_addrs().is_ok_and(|addrs| !addrs.is_empty() && addrs.iter().all(|addr| addr.ip().is_loopback()))
    }

    /// The auth this listener applies: its own overrides over the top-level `[auth]`.
    pub fn effective_auth(&self, global: &AuthSettings) -> AuthSettings {
        AuthSettings {
            allow_anonymous: self.auth.allow_anonymous.unwrap_or(global.allow_anonymous),
            password_file: self.auth.password_file.clone().or_else(|| global.password_file.clone()),
            acl_file: self.auth.acl_file.clone().or_else(|| global.acl_file.clone()),
            identity_as_username: self.tls.as_ref().is_some_and(|tls| tls.use_identity_as_username),
            // One dynamic security for the whole broker, as Mosquitto recommends (per_listener_settings false).
            dynamic_security_file: global.dynamic_security_file.clone(),
            http: if self.auth.external == Some(false) { None } else { global.http.clone() },
            postgres: if self.auth.external == Some(false) { None } else { global.postgres.clone() },
        }
    }

    /// True when a client with no username and no client certificate may connect from another machine.
    pub fn is_open_to_anonymous_remote_clients(&self, global: &AuthSettings) -> bool {
        let certificate_required = self.tls.as_ref().is_some_and(|tls| tls.require_certificate);
        self.effective_auth(global).allow_anonymous && !certificate_required && !self.is_loopback_only()
    }

    /// Checks this entry alone; `index` is its place in `listeners`, named in the error.
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| ConfigError::Listener { index, field, reason };
        self.bind_addr().map_err(|reason| invalid("bind", reason))?;
        if self.transport.uses_websocket() {
            if !self.websocket_path.starts_with('/') {
                return Err(invalid("websocket_path", format!("`{}` must start with `/`", self.websocket_path)));
            }
        } else if self.websocket_path != DEFAULT_WEBSOCKET_PATH || !self.websocket_origins.is_empty() {
            let reason = format!("only for ws/wss listeners, this one is `{}`", self.transport.as_str());
            return Err(invalid("websocket_path / websocket_origins", reason));
        }
        match (&self.tls, self.transport.uses_tls()) {
            (None, true) => {
                let reason = format!(
                    "a `{}` listener needs a [listeners.tls] table with cert_file and key_file",
                    self.transport.as_str()
                );
                return Err(invalid("tls", reason));
            }
            (Some(_), false) => {
                let reason = format!("only for tls/wss listeners, this one is `{}`", self.transport.as_str());
                return Err(invalid("tls", reason));
            }
            (Some(tls), true) => tls.validate().map_err(|(field, reason)| invalid(field, reason))?,
            (None, false) => {}
        }
        if self.connections_max == Some(0) {
            return Err(invalid("connections_max", "must be at least 1 when set".into()));
        }
        for (field, path) in [("auth.password_file", &self.auth.password_file), ("auth.acl_file", &self.auth.acl_file)]
        {
            if let Some(path) = path {
                readable(path).map_err(|reason| invalid(field, reason))?;
            }
        }
        Ok(())
    }
}

impl TlsSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        readable(&self.cert_file).map_err(|reason| ("tls.cert_file", reason))?;
        readable(&self.key_file).map_err(|reason| ("tls.key_file", reason))?;
        if let Some(ca_file) = &self.ca_file {
            readable(ca_file).map_err(|reason| ("tls.ca_file", reason))?;
        }
        if self.require_certificate && self.ca_file.is_none() {
            return Err(("tls.ca_file", "require_certificate needs the CAs that sign client certificates".into()));
        }
        if self.use_identity_as_username && !self.require_certificate {
            let reason = "needs require_certificate = true (without a certificate there is no identity)";
            return Err(("tls.use_identity_as_username", reason.into()));
        }
        Ok(())
    }
}

/// Opens the file to prove it can be read at start, rather than failing on the first connection.
pub(super) fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path).map(drop).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

/// Refuses two listeners that cannot both bind: the same port on the same address, or on an address and
/// the wildcard of its family. Port 0 (a free port each) never clashes.
pub(super) fn check_distinct_binds(listeners: &[ListenerConfig]) -> Result<(), ConfigError> {
    let mut seen: Vec<(usize, SocketAddr)> = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.iter().enumerate() {
        let Ok(addr) = listener.bind_addr() else {
            continue;
        };
        if addr.port() == 0 {
            continue;
        }
        let clash = seen.iter().find(|(_, other)| {
            other.port() == addr.port()
                && other.is_ipv4() == addr.is_ipv4()
                && (other.ip() == addr.ip() || other.ip().is_unspecified() || addr.ip().is_unspecified())
        });
        if let Some((first, other)) = clash {
            let reason = format!("{addr} clashes with listeners[{first}] on {other}; each listener needs its own port");
            return Err(ConfigError::Listener { index, field: "bind", reason });
        }
        seen.push((index, addr));
    }
    Ok(())
}
