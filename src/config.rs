//! Broker configuration: the TOML file (`--config`), command-line overrides, defaults that work with no
//! file at all, and validation with errors that name the bad field.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::broker::BrokerSettings;

/// Default listen address: every interface, the MQTT port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:1883";

/// Everything the runtime needs to start. Built by [`Config::load`] from an optional file plus CLI flags.
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `host:port` to accept MQTT over TCP on. Port 0 picks a free port (printed at start).
    pub listen: String,
    /// Number of shards (one pinned executor each). `None`: the CPUs in the process affinity mask.
    pub shards: Option<usize>,
    /// Connections open at once over the whole process; more are closed right after accept (no CONNACK,
    /// as Mosquitto and EMQX do; a warning says why, at most once a second per shard).
    pub max_connections: usize,
    /// Cap on each socket's kernel send buffer (SO_SNDBUF). `None` leaves the kernel default.
    pub socket_send_buffer_bytes: Option<u32>,
    /// Cap on each socket's kernel receive buffer (SO_RCVBUF). `None` leaves the kernel default.
    pub socket_recv_buffer_bytes: Option<u32>,
    /// Locked io_uring memory per shard. `None`: sized from RLIMIT_MEMLOCK and the shard count.
    pub io_memory_bytes: Option<usize>,
    /// Microseconds a shard with nothing to run keeps polling before it sleeps (0: sleep at once). Trades
    /// CPU at low message rates for a cheaper wake-up under steady load.
    pub spin_before_park_micros: u64,
    /// Log filter used when `RUST_LOG` is not set (`error`, `warn`, `info`, `debug`, `trace`, or directives).
    pub log_level: String,
    /// Batches a shard may have queued towards one other shard before it parks batches in its overflow list.
    pub mesh_queue_batches: usize,
    /// Messages a shard may hold for one other shard while their queue is full. Past this QoS 0 publishes
    /// to that shard are dropped, past twice this QoS 1/2 publishes too (counted, logged); control
    /// messages are always kept. Never blocks the shard.
    pub mesh_overflow_messages_max: usize,
    /// Bytes a shard reads from one socket in one go (size of each pooled read buffer).
    pub read_buffer_bytes: usize,
    /// MQTT limits and switches (the `[mqtt]` table).
    pub mqtt: BrokerSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_string(),
            shards: None,
            max_connections: 19_000,
            socket_send_buffer_bytes: None,
            socket_recv_buffer_bytes: None,
            io_memory_bytes: None,
            spin_before_park_micros: 0,
            log_level: "info".to_string(),
            mesh_queue_batches: 1024,
            mesh_overflow_messages_max: 65_536,
            read_buffer_bytes: 16 * 1024,
            mqtt: BrokerSettings::default(),
        }
    }
}

/// Flags given on the command line; each one overrides the file.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct CliArgs {
    pub config_path: Option<PathBuf>,
    pub shards: Option<usize>,
    pub listen: Option<String>,
    pub help: bool,
}

pub const USAGE: &str = "usage: shardmq [--config FILE] [--shards N] [--listen ADDR:PORT]";

/// Why the configuration cannot be used. Each message names the field or flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("bad config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{0}\n{USAGE}")]
    Cli(String),
    #[error("bad value for `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl CliArgs {
    /// Parses `--config FILE`, `--shards N`, `--listen ADDR` (also as `--flag=value`) and `--help`.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<CliArgs, ConfigError> {
        let mut parsed = CliArgs::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline_value) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.to_string())),
                _ => (arg, None),
            };
            if flag == "--help" || flag == "-h" {
                parsed.help = true;
                continue;
            }
            let mut value = || {
                inline_value
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| ConfigError::Cli(format!("`{flag}` needs a value")))
            };
            match flag.as_str() {
                "--config" | "-c" => parsed.config_path = Some(PathBuf::from(value()?)),
                "--listen" | "-l" => parsed.listen = Some(value()?),
                "--shards" | "-s" => {
                    let text = value()?;
                    let shards = text
                        .parse::<usize>()
                        .map_err(|_| ConfigError::Cli(format!("`--shards {text}` is not a whole number")))?;
                    parsed.shards = Some(shards);
                }
                _ => return Err(ConfigError::Cli(format!("unknown argument `{flag}`"))),
            }
        }
        Ok(parsed)
    }
}

impl Config {
    /// Reads the file named by `--config` (if any), applies the flags, and validates the result.
    pub fn load(cli: &CliArgs) -> Result<Config, ConfigError> {
        let mut config = match &cli.config_path {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(shards) = cli.shards {
            config.shards = Some(shards);
        }
        if let Some(listen) = &cli.listen {
            config.listen = listen.clone();
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
    }

    pub fn from_toml(text: &str) -> Result<Config, Box<toml::de::Error>> {
        toml::from_str(text).map_err(Box::new)
    }

    /// The listen address, resolved (a host name resolves to its first address).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { field: "listen", reason };
        self.listen
            .to_socket_addrs()
            .map_err(|err| invalid(format!("`{}` is not host:port ({err})", self.listen)))?
            .next()
            .ok_or_else(|| invalid(format!("`{}` resolves to no address", self.listen)))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let invalid = |field, reason: &str| Err(ConfigError::Invalid { field, reason: reason.to_string() });
        if self.shards == Some(0) {
            return invalid("shards", "must be at least 1");
        }
        if self.shards.is_some_and(|shards| shards > MAX_SHARDS) {
            return invalid("shards", &format!("at most {MAX_SHARDS}"));
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.socket_send_buffer_bytes == Some(0) || self.socket_recv_buffer_bytes == Some(0) {
            return invalid("socket_send_buffer_bytes / socket_recv_buffer_bytes", "must be above 0 when set");
        }
        if self.mesh_queue_batches == 0 {
            return invalid("mesh_queue_batches", "must be at least 1");
        }
        if self.mesh_overflow_messages_max == 0 {
            return invalid("mesh_overflow_messages_max", "must be at least 1");
        }
        if self.spin_before_park_micros > 10_000 {
            return invalid("spin_before_park_micros", "at most 10000 (10 ms)");
        }
        if !(512..=16 * 1024 * 1024).contains(&self.read_buffer_bytes) {
            return invalid("read_buffer_bytes", "must be between 512 and 16777216");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return invalid("log_level", "not a level (error, warn, info, debug, trace) or filter directive");
        }
        Ok(())
    }
}

/// Upper bound on shards: the mesh has shards^2 queues.
pub const MAX_SHARDS: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn defaults_work_without_a_file() {
        let config = Config::load(&CliArgs::default()).unwrap();
        assert_eq!(config.listen_addr().unwrap(), "0.0.0.0:1883".parse().unwrap());
        assert_eq!(config.shards, None);
        assert!(config.max_connections > 0);
    }

    #[test]
    fn file_fields_are_read() {
        let config = Config::from_toml(
            "listen = \"127.0.0.1:0\"\nshards = 3\nmax_connections = 10\nsocket_send_buffer_bytes = 8192\n",
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.shards, Some(3));
        assert_eq!(config.max_connections, 10);
        assert_eq!(config.socket_send_buffer_bytes, Some(8192));
        assert_eq!(config.socket_recv_buffer_bytes, None);
    }

    #[test]
    fn the_mqtt_table_fills_broker_settings() {
        let config = Config::from_toml("[mqtt]\nmax_qos = 1\nkeepalive_max_secs = 60\n").unwrap();
        assert_eq!(config.mqtt.max_qos, 1);
        assert_eq!(config.mqtt.keepalive_max_secs, 60);
        assert_eq!(config.mqtt.receive_maximum, BrokerSettings::default().receive_maximum);
        assert!(Config::from_toml("[mqtt]\nmax_qoss = 1\n").unwrap_err().to_string().contains("max_qoss"));
    }

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let err = Config::from_toml("listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        assert!(Config::from_toml("shards = \"two\"").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("shardmq-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broker.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1999\"\nshards = 4\n").unwrap();
        let cli = CliArgs::parse(args(&["--config", path.to_str().unwrap(), "--shards=2"])).unwrap();
        let config = Config::load(&cli).unwrap();
        assert_eq!(config.shards, Some(2));
        assert_eq!(config.listen, "127.0.0.1:1999");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cli_parses_every_flag() {
        let cli = CliArgs::parse(args(&["--listen", "127.0.0.1:0", "-s", "2", "--config=x.toml"])).unwrap();
        assert_eq!(
            cli,
            CliArgs {
                config_path: Some(PathBuf::from("x.toml")),
                shards: Some(2),
                listen: Some("127.0.0.1:0".into()),
                help: false
            }
        );
    }

    #[test]
    fn cli_rejects_unknown_flags_and_missing_values() {
        assert!(CliArgs::parse(args(&["--bogus"])).unwrap_err().to_string().contains("--bogus"));
        assert!(CliArgs::parse(args(&["--shards"])).unwrap_err().to_string().contains("needs a value"));
        assert!(CliArgs::parse(args(&["--shards", "x"])).is_err());
    }

    #[test]
    fn invalid_values_are_rejected_with_the_field_name() {
        let cli = CliArgs { shards: Some(0), ..CliArgs::default() };
        assert!(Config::load(&cli).unwrap_err().to_string().contains("shards"));
        let cli = CliArgs { listen: Some("nonsense".into()), ..CliArgs::default() };
        assert!(Config::load(&cli).unwrap_err().to_string().contains("listen"));
        let config = Config { log_level: "info,[".into(), ..Config::default() };
        assert!(config.validate().unwrap_err().to_string().contains("log_level"));
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let cli = CliArgs { config_path: Some("/nonexistent/shardmq.toml".into()), ..CliArgs::default() };
        let err = Config::load(&cli).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/shardmq.toml"), "{err}");
    }
}
