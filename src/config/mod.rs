//! Broker configuration: the TOML file (`--config`) or a Mosquitto `mosquitto.conf`
//! (`--mosquitto-config`), command-line overrides, defaults that work with no file at all, the listener
//! list the runtime binds, and validation with errors that name the bad field.

mod cli;
mod default_file;
mod listener;
pub mod mosquitto;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::broker::BrokerSettings;

pub use cli::{Cli, Command, ConfigCommand, RunArgs};
pub use default_file::DEFAULT_CONFIG_TOML;
pub use listener::{AuthSettings, ListenerAuth, ListenerConfig, TlsSettings, TransportKind, DEFAULT_WEBSOCKET_PATH};

/// Plain MQTT listener used when neither `listeners` nor `listen` is configured: every interface, the MQTT
/// port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:1883";
/// WebSocket listener used beside [`DEFAULT_LISTEN`] when nothing is configured (Mosquitto's and EMQX's
/// usual WebSocket port), on [`DEFAULT_WEBSOCKET_PATH`].
pub const DEFAULT_WEBSOCKET_LISTEN: &str = "0.0.0.0:8083";

/// Everything the runtime needs to start. Built by [`Config::load`] from an optional file plus CLI flags.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `host:port` of a single plain MQTT listener (the short form of one `[[listeners]]` entry). Port 0
    /// picks a free port (printed at start). Not together with `listeners`.
    pub listen: Option<String>,
    /// Where clients connect (`[[listeners]]`); see [`Config::effective_listeners`] for what applies when
    /// this is empty.
    pub listeners: Vec<ListenerConfig>,
    /// Who may connect (`[auth]`), for every listener without its own `[listeners.auth]`.
    pub auth: AuthSettings,
    /// Number of shards (one pinned executor each). `None`: the CPUs in the process affinity mask.
    pub shards: Option<usize>,
    /// Connections open at once over the whole process; more are closed right after accept (no CONNACK,
    /// as Mosquitto and EMQX do; a warning says why, at most once a second per shard).
    #[serde(alias = "max_connections")]
    pub connections_max: usize,
    /// Connections one source IP address may hold open at once, on all listeners together; more are
    /// closed right after accept, like `connections_max`. `None`: no limit.
    pub connections_per_address_max: Option<usize>,
    /// New connections one source IP address may open per second (a token bucket holding one second's
    /// worth), on all listeners together; faster ones are closed right after accept. `None`: no limit.
    pub connect_rate_per_address_max_per_second: Option<u32>,
    /// The process's memory budget, bytes of resident memory (Mosquitto's `memory_limit`). Above it the
    /// broker sheds load: new CONNECTs are refused (v5 0x97 Quota exceeded, 3.x return code 3) and QoS 0
    /// deliveries to clients with unsent bytes queued are dropped, until it is below 90% of it. `None`:
    /// no budget.
    pub memory_max_bytes: Option<u64>,
    /// Cap on each socket's kernel send buffer (SO_SNDBUF). `None` leaves the kernel default.
    pub socket_send_buffer_bytes: Option<u32>,
    /// Cap on each socket's kernel receive buffer (SO_RCVBUF). `None` leaves the kernel default.
    pub socket_recv_buffer_bytes: Option<u32>,
    /// Submission queue entries of each shard's io_uring (its completion queue holds four times as many);
    /// an unprivileged broker shrinks it to fit the locked-memory limit (`ulimit -l`).
    pub ring_entries: u32,
    /// Provided receive buffers per shard (a power of two, at most 32768), each `read_buffer_bytes` long.
    /// An idle connection holds none; a receive takes one and gives it back as soon as it is copied out.
    pub read_buffers: u16,
    /// Log filter used when `RUST_LOG` is not set (`error`, `warn`, `info`, `debug`, `trace`, or directives).
    pub log_level: String,
    /// Batches a shard may have queued towards one other shard before it parks batches in its overflow list.
    pub mesh_queue_batches: usize,
    /// Messages a shard may hold for one other shard while their queue is full. Past this QoS 0 publishes
    /// to that shard are dropped, past twice this QoS 1/2 publishes too (counted, logged); control
    /// messages are always kept. Never blocks the shard.
    #[serde(alias = "mesh_overflow_messages_max")]
    pub mesh_overflow_max_messages: usize,
    /// Bytes a shard reads from one socket in one go (size of each pooled read buffer).
    pub read_buffer_bytes: usize,
    /// MQTT limits and switches (the `[mqtt]` table).
    pub mqtt: BrokerSettings,
    /// Checks on published messages (`[[validation]]` tables), applied in order; see `crate::validation`.
    pub validation: Vec<crate::validation::ValidationRule>,
    /// The HTTP API (`[http]`); off unless `bind` is set.
    pub http: crate::http::HttpSettings,
    /// Seconds between two publications of the `$SYS/broker/...` topics; 0 = none (Mosquitto's `sys_interval`).
    #[serde(alias = "sys_interval_seconds")]
    pub sys_interval_secs: u64,
    /// Where `/metrics` and the dashboard are served (`[metrics]`).
    pub metrics: MetricsSettings,
    /// Crash-safe persistence (`[persistence]`); off unless `dir` is set.
    pub persistence: crate::persist::PersistenceSettings,
}

/// The `[metrics]` table.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// `host:port` of the HTTP listener for `/metrics` and `/`; `None`: not served.
    pub bind: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: None,
            listeners: Vec::new(),
            auth: AuthSettings::default(),
            shards: None,
            connections_max: 19_000,
            connections_per_address_max: None,
            connect_rate_per_address_max_per_second: None,
            memory_max_bytes: None,
            socket_send_buffer_bytes: None,
            socket_recv_buffer_bytes: None,
            ring_entries: 4096,
            read_buffers: 256,
            log_level: "info".to_string(),
            mesh_queue_batches: 1024,
            mesh_overflow_max_messages: 65_536,
            read_buffer_bytes: 16 * 1024,
            mqtt: BrokerSettings::default(),
            validation: Vec::new(),
            http: crate::http::HttpSettings::default(),
            sys_interval_secs: 10,
            metrics: MetricsSettings::default(),
            persistence: crate::persist::PersistenceSettings::default(),
        }
    }
}

/// Why the configuration cannot be used. Each message names the field, flag or file line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("bad config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("bad value for `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("bad value for `listeners[{index}].{field}`: {reason}")]
    Listener { index: usize, field: &'static str, reason: String },
    /// The mosquitto.conf uses directives shardmq must not ignore; one line each, with file:line.
    #[error("{}", mosquitto::Finding::lines(.0))]
    Mosquitto(Vec<mosquitto::Finding>),
    #[error("[auth]: {0}")]
    Auth(#[from] crate::auth::AuthLoadError),
}

/// A usable configuration and what the user should hear about it at start (directives of a
/// mosquitto.conf that are ignored, one line each).
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads the file named by `--config` or `--mosquitto-config` (if any), applies the flags, and
    /// validates the result.
    pub fn load(args: &RunArgs) -> Result<LoadedConfig, ConfigError> {
        let (mut config, warnings) = match (&args.config, &args.mosquitto_config) {
            (Some(path), _) => Config::from_file_with_warnings(path)?,
            (None, Some(path)) => {
                let converted = mosquitto::read(path)?;
                (converted.config, converted.warnings.iter().map(ToString::to_string).collect())
            }
            (None, None) => (Config::default(), Vec::new()),
        };
        if let Some(shards) = args.shards {
            config.shards = Some(shards);
        }
        if let Some(listen) = &args.listen {
            // `--listen` means exactly one plain MQTT listener there, whatever the file lists.
            config.listen = Some(listen.clone());
            config.listeners.clear();
        }
        config.validate()?;
        config.load_access()?;
        config.compile_validation()?;
        Ok(LoadedConfig { config, warnings })
    }

    /// Compiles the `[[validation]]` rules (schemas and word lists read once) into the set every shard
    /// shares (`mqtt.validation_rules`); no rules, nothing checked.
    pub fn compile_validation(&mut self) -> Result<(), ConfigError> {
        let rules = crate::validation::RuleSet::compile(&self.validation)
            .map_err(|err| ConfigError::Invalid { field: "validation", reason: err.to_string() })?;
        self.mqtt.validation_rules = (!rules.is_empty()).then(|| std::sync::Arc::new(rules));
        Ok(())
    }

    /// Reads every listener's password and ACL files into the access control all shards share
    /// (`mqtt.access`, indexed by listener as `effective_listeners()` orders them).
    pub fn load_access(&mut self) -> Result<(), ConfigError> {
        let per_listener: Vec<AuthSettings> =
            self.effective_listeners()?.iter().map(|listener| listener.effective_auth(&self.auth)).collect();
        if per_listener.iter().any(|auth| {
            !auth.allow_anonymous
                && auth.password_file.is_none()
                && auth.dynamic_security_file.is_none()
                && auth.http.as_ref().is_none_or(|http| http.authenticate_url.is_none())
        }) {
            // Logging starts after the config is loaded, so this goes to stderr directly.
            eprintln!("shardmq: warning: allow_anonymous = false without a password_file: any client giving a user name is accepted (as Mosquitto does)");
        }
        let mut access = crate::auth::AccessControl::load(&per_listener)?;
        if self.http.enabled() {
            // API tokens are accepted on every listener once the HTTP API (which makes them) is on.
            let tokens = match &self.http.tokens_file {
                Some(path) => crate::auth::TokenStore::open(path, std::time::SystemTime::now())
                    .map_err(|err| ConfigError::Invalid { field: "http.tokens_file", reason: err.to_string() })?,
                None => crate::auth::TokenStore::in_memory(),
            };
            access = access.with_tokens(std::sync::Arc::new(tokens));
        }
        self.mqtt.access = std::sync::Arc::new(access);
        Ok(())
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
    }

    /// As [`Config::from_file`], with one warning per `[mqtt]` key spelled by its old name.
    pub fn from_file_with_warnings(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let config =
            Config::from_toml(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })?;
        Ok((config, deprecated_name_warnings(&text, path)))
    }

    pub fn from_toml(text: &str) -> Result<Config, Box<toml::de::Error>> {
        toml::from_str(text).map_err(Box::new)
    }

    /// The listeners the runtime binds, in order (a connection's `ListenerId` is its index here):
    /// `listeners` when it has entries (`--listen` replaces them with one); else one plain MQTT listener
    /// on `listen` when set; else MQTT/TCP on [`DEFAULT_LISTEN`] and WebSocket on
    /// [`DEFAULT_WEBSOCKET_LISTEN`]. Each is validated.
    pub fn effective_listeners(&self) -> Result<Vec<ListenerConfig>, ConfigError> {
        let listeners = if !self.listeners.is_empty() {
            self.listeners.clone()
        } else if let Some(listen) = &self.listen {
            vec![ListenerConfig::mqtt(listen.clone())]
        } else {
            vec![ListenerConfig::mqtt(DEFAULT_LISTEN), ListenerConfig::websocket(DEFAULT_WEBSOCKET_LISTEN)]
        };
        for (index, listener) in listeners.iter().enumerate() {
            listener.validate(index)?;
        }
        listener::check_distinct_binds(&listeners)?;
        Ok(listeners)
    }

    /// The address of the first plain MQTT listener: what the runtime binds until it binds every entry of
    /// [`Config::effective_listeners`].
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let listeners = self.effective_listeners()?;
        let (index, first) =
            listeners.iter().enumerate().find(|(_, listener)| listener.transport == TransportKind::Mqtt).ok_or_else(
                || ConfigError::Invalid {
                    field: "listeners",
                    reason: "no plain MQTT (`transport = \"mqtt\"`) listener".to_string(),
                },
            )?;
        first.bind_addr().map_err(|reason| ConfigError::Listener { index, field: "bind", reason })
    }

    /// The listeners that accept clients with no username and no certificate from other machines: the
    /// ones a start-up warning should name.
    pub fn anonymous_remote_listeners(&self) -> Result<Vec<ListenerConfig>, ConfigError> {
        let mut listeners = self.effective_listeners()?;
        listeners.retain(|listener| listener.is_open_to_anonymous_remote_clients(&self.auth));
        Ok(listeners)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| Err(ConfigError::Invalid { field, reason: reason.to_string() });
        if self.listen.is_some() && !self.listeners.is_empty() {
            return invalid("listen", "set either `listen` or `[[listeners]]`, not both");
        }
        if let Some(listen) = &self.listen {
            ListenerConfig::mqtt(listen.clone())
                .bind_addr()
                .map_err(|reason| ConfigError::Invalid { field: "listen", reason })?;
        }
        self.effective_listeners()?;
        for (field, path) in [
            ("auth.password_file", &self.auth.password_file),
            ("auth.acl_file", &self.auth.acl_file),
            ("auth.dynamic_security_file", &self.auth.dynamic_security_file),
        ] {
            if let Some(path) = path {
                listener::readable(path).map_err(|reason| ConfigError::Invalid { field, reason })?;
            }
        }
        if self.shards == Some(0) {
            return invalid("shards", "must be at least 1");
        }
        if self.shards.is_some_and(|shards| shards > MAX_SHARDS) {
            return invalid("shards", &format!("at most {MAX_SHARDS}"));
        }
        if self.connections_per_address_max == Some(0) {
            return invalid("connections_per_address_max", "must be at least 1 (leave it out for no limit)");
        }
        if self.connect_rate_per_address_max_per_second == Some(0) {
            return invalid(
                "connect_rate_per_address_max_per_second",
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if self.memory_max_bytes.is_some_and(|bytes| bytes < MEMORY_MAX_BYTES_MIN) {
            return invalid("memory_max_bytes", "must be at least 1048576 (1 MiB; leave it out for no budget)");
        }
        if self.connections_max == 0 {
            return invalid("connections_max", "must be at least 1");
        }
        if self.socket_send_buffer_bytes == Some(0) || self.socket_recv_buffer_bytes == Some(0) {
            return invalid("socket_send_buffer_bytes / socket_recv_buffer_bytes", "must be above 0 when set");
        }
        if self.mesh_queue_batches == 0 {
            return invalid("mesh_queue_batches", "must be at least 1");
        }
        if self.mesh_overflow_max_messages == 0 {
            return invalid("mesh_overflow_max_messages", "must be at least 1");
        }
        if !(8..=32768).contains(&self.ring_entries) || !self.ring_entries.is_power_of_two() {
            return invalid("ring_entries", "must be a power of two between 8 and 32768");
        }
        if !self.read_buffers.is_power_of_two() || self.read_buffers > 32768 {
            return invalid("read_buffers", "must be a power of two, at most 32768");
        }
        if !(512..=16 * 1024 * 1024).contains(&self.read_buffer_bytes) {
            return invalid("read_buffer_bytes", "must be between 512 and 16777216");
        }
        if let Err((field, reason)) = self.mqtt.check() {
            return Err(ConfigError::Invalid { field, reason });
        }
        if let Err((field, reason)) = self.http.check() {
            return Err(ConfigError::Invalid { field, reason });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return invalid("log_level", "not a level (error, warn, info, debug, trace) or filter directive");
        }
        Ok(())
    }
}

/// Fields renamed since an earlier version outside `[mqtt]` (whose renames are
/// [`crate::broker::DEPRECATED_NAMES`]), still read as serde aliases: table, old name, new name. Table `""`
/// is the top level, `"listeners"` every `[[listeners]]` entry.
pub const RENAMED_FIELDS: &[(&str, &str, &str)] = &[
    ("", "max_connections", "connections_max"),
    ("", "mesh_overflow_messages_max", "mesh_overflow_max_messages"),
    ("", "sys_interval_seconds", "sys_interval_secs"),
    ("listeners", "max_connections", "connections_max"),
    ("http", "max_connections", "connections_max"),
    ("http", "body_bytes_max", "body_max_bytes"),
    ("http", "head_bytes_max", "head_max_bytes"),
    ("http", "requests_per_sec_max", "request_rate_max_per_second"),
    ("http", "batch_messages_max", "batch_max_messages"),
    ("auth.http", "cache_entries_max", "cache_max_entries"),
];

/// One line per key of `text` spelled by its old name (still read, as an alias), naming the new one.
pub fn deprecated_name_warnings(text: &str, path: &Path) -> Vec<String> {
    let Ok(top) = text.parse::<toml::Table>() else { return Vec::new() };
    let mqtt_renames = crate::broker::DEPRECATED_NAMES.iter().map(|(old, new)| ("mqtt", *old, *new));
    let mut warnings = Vec::new();
    for (table, old, new) in RENAMED_FIELDS.iter().copied().chain(mqtt_renames) {
        let tables: Vec<&toml::Table> = match table {
            "" => vec![&top],
            "listeners" => top
                .get("listeners")
                .and_then(toml::Value::as_array)
                .map(|entries| entries.iter().filter_map(toml::Value::as_table).collect())
                .unwrap_or_default(),
            dotted => {
                let mut at = Some(&top);
                for part in dotted.split('.') {
                    at = at.and_then(|table| table.get(part)).and_then(toml::Value::as_table);
                }
                at.into_iter().collect()
            }
        };
        if tables.iter().any(|keys| keys.contains_key(old)) {
            let shown = if table.is_empty() { String::new() } else { format!("[{table}] ") };
            warnings.push(format!("{}: {shown}{old} is deprecated, read as {new}; rename it", path.display()));
        }
    }
    warnings
}

/// The smallest memory budget accepted (a budget in the wrong unit, say MiB for bytes, is refused).
pub const MEMORY_MAX_BYTES_MIN: u64 = 1024 * 1024;

/// Upper bound on shards: the mesh has shards^2 queues.
pub const MAX_SHARDS: usize = 256;

#[cfg(test)]
mod tests;
