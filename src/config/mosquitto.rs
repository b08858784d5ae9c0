//! Running from a Mosquitto 2.x `mosquitto.conf` (`--mosquitto-config`): reads the file and the `*.conf`
//! files of its `include_dir`s and turns them into our [`Config`], with Mosquitto 2's defaults (no listener
//! configured: localhost:1883 only, anonymous allowed; any listener configured: anonymous refused unless
//! `allow_anonymous true`).
//!
//! Every directive shardmq does not carry out is reported once, as one line with file:line: an error
//! (refuse to start) when ignoring it would let in clients or traffic the file meant to keep out, a
//! warning otherwise. Unknown directives are errors, as they are for Mosquitto: a typo in a security
//! option must not pass silently.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, ListenerAuth, ListenerConfig, TlsSettings, TransportKind};

/// Room for the topic, properties and fixed header on top of `message_size_limit` when it becomes our
/// whole-packet limit.
const MESSAGE_SIZE_HEADROOM_BYTES: u32 = 65_536;
/// The largest packet MQTT can encode (Remaining Length 268435455 plus a 5-byte fixed header): what
/// Mosquitto's `message_size_limit 0` (no limit) amounts to.
const MQTT_PACKET_BYTES_MAX: u32 = 268_435_460;
/// The one plugin shardmq serves built in: a `plugin` line naming a file of this name (any directory)
/// turns on `auth::dynsec` with the `plugin_opt_config_file` that follows it.
const DYNSEC_PLUGIN_FILE: &str = "mosquitto_dynamic_security.so";

/// Whether a directive shardmq does not carry out stops the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Ignoring it would weaken security (or the listener could not be served): refuse to start.
    Error,
    /// Ignoring it changes no access decision: start, and say so once.
    Warning,
}

/// One directive shardmq does not carry out as written, located by file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub directive: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {kind}: `{}`: {}", self.file.display(), self.line, self.directive, self.message)
    }
}

impl Finding {
    /// One line per finding, for an error message.
    pub fn lines(findings: &[Finding]) -> String {
        findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    }
}

/// A mosquitto.conf turned into our config, with the warnings to log at start.
#[derive(Debug)]
pub struct Converted {
    pub config: Config,
    pub warnings: Vec<Finding>,
}

/// Reads `path` (and its `include_dir`s). Errors: the file cannot be read, or it uses directives shardmq
/// must not ignore (all of them listed, one line each).
pub fn read(path: &Path) -> Result<Converted, ConfigError> {
    let mut lines = Vec::new();
    let mut findings = Vec::new();
    read_lines(path, true, &mut lines, &mut findings)?;
    let mut converted = convert(&lines, findings);
    // Listener problems are found once the whole file is read; list everything in file order, the main
    // file first.
    converted.findings.sort_by(|a, b| (a.file != path, &a.file, a.line).cmp(&(b.file != path, &b.file, b.line)));
    let (errors, warnings): (Vec<Finding>, Vec<Finding>) =
        converted.findings.into_iter().partition(|finding| finding.severity == Severity::Error);
    if errors.is_empty() {
        Ok(Converted { config: converted.config, warnings })
    } else {
        Err(ConfigError::Mosquitto(errors))
    }
}

/// Converts the text of one file (no `include_dir`s followed): for tests and tools that hold the text.
pub fn from_str(text: &str, file: &Path) -> (Config, Vec<Finding>) {
    let lines = split_lines(text, file);
    let converted = convert(&lines, Vec::new());
    (converted.config, converted.findings)
}

/// One non-comment line: where it is, the directive and the rest of the line.
#[derive(Debug)]
struct Line {
    file: PathBuf,
    number: usize,
    directive: String,
    value: String,
}

fn split_lines(text: &str, file: &Path) -> Vec<Line> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // Mosquitto separates the value by one space and keeps the rest verbatim (paths may hold spaces;
        // a `#` after the value is part of it, not a comment).
        let (directive, value) = trimmed.split_once([' ', '\t']).unwrap_or((trimmed, ""));
        lines.push(Line {
            file: file.to_path_buf(),
            number: index + 1,
            directive: directive.to_string(),
            value: value.trim().to_string(),
        });
    }
    lines
}

/// Appends the lines of `path`, expanding `include_dir` in the main file (Mosquitto processes it only
/// there) in Mosquitto's order: case-sensitive alphabetical, each upper-case letter before its lower case.
fn read_lines(path: &Path, main: bool, out: &mut Vec<Line>, findings: &mut Vec<Finding>) -> Result<(), ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    for line in split_lines(&text, path) {
        if line.directive != "include_dir" {
            out.push(line);
            continue;
        }
        if !main {
            findings.push(finding(Severity::Error, &line, "only allowed in the main config file (as in Mosquitto)"));
            continue;
        }
        let dir = PathBuf::from(&line.value);
        let entries = std::fs::read_dir(&dir).map_err(|source| ConfigError::Read { path: dir.clone(), source })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|file| file.extension().is_some_and(|ext| ext == "conf") && file.is_file())
            .collect();
        files.sort_by_key(|file| mosquitto_order_key(file));
        for file in files {
            read_lines(&file, false, out, findings)?;
        }
    }
    Ok(())
}

/// Sort key giving Mosquitto's include order: `00 01 A a B b`.
fn mosquitto_order_key(file: &Path) -> Vec<(char, bool)> {
    let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    name.chars().map(|c| (c.to_ascii_lowercase(), c.is_ascii_lowercase())).collect()
}

fn finding(severity: Severity, line: &Line, message: impl Into<String>) -> Finding {
    Finding {
        severity,
        file: line.file.clone(),
        line: line.number,
        directive: line.directive.clone(),
        message: message.into(),
    }
}

/// A listener while its options are being read (`listener` line, or the default listener of
/// `port` / `bind_address` and listener options before any `listener` line).
#[derive(Debug, Default)]
struct DraftListener {
    /// Where it starts (the `listener` line, or the first line that touched the default listener).
    origin: Option<(PathBuf, usize)>,
    port: Option<u16>,
    host: Option<String>,
    websockets: bool,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    cafile: Option<PathBuf>,
    require_certificate: Option<usize>,
    use_identity_as_username: bool,
    connections_max: Option<usize>,
    auth: ListenerAuth,
}

/// What the conversion builds up, line by line.
struct Conversion {
    config: Config,
    findings: Vec<Finding>,
    per_listener_settings: bool,
    default_listener: DraftListener,
    default_listener_used: bool,
    listeners: Vec<DraftListener>,
    /// Auth options before any `listener` line with `per_listener_settings true`: they belong to the
    /// default listener, and apply to nothing when it is not started.
    orphan_auth_lines: Vec<(PathBuf, usize, String)>,
    allow_anonymous: Option<bool>,
    bridge_open: bool,
    /// `persistence true` seen, and `persistence_location` (either order): combined into `[persistence]`.
    persistence_on: bool,
    persistence_location: Option<PathBuf>,
    log_levels: Vec<&'static str>,
    log_dest_none: bool,
    qos_max: Vec<u8>,
    topic_alias_max: Vec<u16>,
    /// The first `max_qos` / `max_topic_alias` line, to point at when they cannot stay per listener.
    listener_scoped_limit_line: Option<(PathBuf, usize, String)>,
    message_size_limit: Option<u32>,
    max_packet_size: Option<u32>,
    /// The `plugin .../mosquitto_dynamic_security.so` line, if any.
    dynsec_plugin_line: Option<(PathBuf, usize, String)>,
}

struct Output {
    config: Config,
    findings: Vec<Finding>,
}

fn convert(lines: &[Line], findings: Vec<Finding>) -> Output {
    // Order-independent, so `per_listener_settings` after some auth options still governs them.
    let per_listener_settings = lines
        .iter()
        .rev()
        .find(|line| line.directive == "per_listener_settings")
        .is_some_and(|line| line.value == "true");
    let mut conversion = Conversion {
        config: Config::default(),
        findings,
        per_listener_settings,
        default_listener: DraftListener::default(),
        default_listener_used: false,
        listeners: Vec::new(),
        orphan_auth_lines: Vec::new(),
        allow_anonymous: None,
        bridge_open: false,
        persistence_on: false,
        persistence_location: None,
        log_levels: Vec::new(),
        log_dest_none: false,
        qos_max: Vec::new(),
        topic_alias_max: Vec::new(),
        listener_scoped_limit_line: None,
        message_size_limit: None,
        max_packet_size: None,
        dynsec_plugin_line: None,
    };
    for line in lines {
        if let Err(problem) = conversion.apply(line) {
            conversion.findings.push(problem);
        }
    }
    conversion.finish()
}

/// A directive that is accepted but not carried out, and why that is harmless.
fn warning(line: &Line, message: &str) -> Result<(), Finding> {
    Err(finding(Severity::Warning, line, format!("not supported, ignored: {message}")))
}

fn error(line: &Line, message: &str) -> Result<(), Finding> {
    Err(finding(Severity::Error, line, message))
}

fn parse_bool(line: &Line) -> Result<bool, Finding> {
    match line.value.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(finding(Severity::Error, line, format!("expected `true` or `false`, got `{other}`"))),
    }
}

fn parse_number<T: std::str::FromStr>(line: &Line) -> Result<T, Finding> {
    line.value
        .parse()
        .map_err(|_| finding(Severity::Error, line, format!("expected a whole number, got `{}`", line.value)))
}

fn parse_path(line: &Line) -> Result<PathBuf, Finding> {
    if line.value.is_empty() {
        return Err(finding(Severity::Error, line, "needs a path"));
    }
    Ok(PathBuf::from(&line.value))
}

/// Options of the bridge opened by `connection`; shardmq has no bridges, so they are read and dropped.
const BRIDGE_OPTIONS: &[&str] = &[
    "address",
    "addresses",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_protocol_version",
    "cleansession",
    "local_cleansession",
    "keepalive_interval",
    "idle_timeout",
    "local_clientid",
    "local_password",
    "local_username",
    "notifications",
    "notifications_local_only",
    "notification_topic",
    "remote_clientid",
    "clientid",
    "remote_password",
    "password",
    "remote_username",
    "username",
    "restart_timeout",
    "round_robin",
    "start_type",
    "threshold",
    "topic",
    "try_private",
    "bridge_alpn",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
];

/// Listener options shardmq does not carry out, whether ignoring them would weaken security, and why.
const UNSUPPORTED_LISTENER_OPTIONS: &[(&str, Severity, &str)] = &[
    ("capath", Severity::Error, "put the CA certificates in one PEM file and name it with `cafile`"),
    ("crlfile", Severity::Error, "no certificate revocation lists: revoked client certificates would be accepted"),
    ("psk_hint", Severity::Error, "no pre-shared-key TLS"),
    ("use_subject_as_username", Severity::Error, "only use_identity_as_username: usernames, and so ACLs, would differ"),
    ("mount_point", Severity::Error, "clients of this listener would not be kept to their topic prefix"),
    ("use_username_as_clientid", Severity::Error, "clients could take over each other's sessions"),
    ("bind_interface", Severity::Error, "the listener would accept on every interface; give an address instead"),
    ("tls_engine", Severity::Error, "no OpenSSL engines; give a PEM key file"),
    ("tls_engine_kpass_sha1", Severity::Error, "no OpenSSL engines; give a PEM key file"),
    ("ciphers", Severity::Warning, "shardmq uses its own modern cipher suites (no weak ciphers)"),
    ("ciphers_tls1.3", Severity::Warning, "shardmq uses its own modern cipher suites"),
    ("dhparamfile", Severity::Warning, "shardmq uses ECDHE key exchange only"),
    ("socket_domain", Severity::Warning, "the listener binds the address family of its address"),
    ("http_dir", Severity::Warning, "WebSocket listeners serve no HTTP files"),
];

impl Conversion {
    /// The listener that listener options apply to: the last `listener`, or the default listener.
    fn current_listener(&mut self, line: &Line) -> &mut DraftListener {
        match self.listeners.last_mut() {
            Some(listener) => listener,
            None => {
                self.default_listener_used = true;
                self.default_listener.origin.get_or_insert_with(|| (line.file.clone(), line.number));
                &mut self.default_listener
            }
        }
    }

    fn apply(&mut self, line: &Line) -> Result<(), Finding> {
        let directive = line.directive.as_str();
        if self.bridge_open && BRIDGE_OPTIONS.contains(&directive) {
            return Ok(());
        }
        if self.apply_listener_option(line)? || self.apply_auth_option(line)? || self.apply_limit(line)? {
            return Ok(());
        }
        match directive {
            "per_listener_settings" => parse_bool(line).map(drop),
            "log_dest" => self.log_dest(line),
            "log_type" => self.log_type(line),
            "connection" => {
                self.bridge_open = true;
                warning(line, &format!("bridges are not supported, bridge `{}` will not run", line.value))
            }
            "persistence" => {
                self.persistence_on = parse_bool(line)?;
                self.apply_persistence();
                Ok(())
            }
            "sys_interval" => {
                self.config.sys_interval_secs = parse_number(line)?;
                Ok(())
            }
            "persistence_location" => {
                self.persistence_location = Some(PathBuf::from(line.value.trim()));
                self.apply_persistence();
                Ok(())
            }
            "persistence_file" | "autosave_interval" | "autosave_on_changes" => warning(
                line,
                "shardmq keeps an append-only log per shard under persistence_location (synced every 100 ms), not a snapshot file",
            ),
            "pid_file" => warning(line, "shardmq writes no pid file"),
            "user" => warning(line, "shardmq does not change user; start it as the user it should run as"),
            "connection_messages" => match parse_bool(line)? {
                true => Ok(()),
                false => warning(line, "connects and disconnects are always logged at info"),
            },
            "log_timestamp" | "log_timestamp_format" | "log_facility" => {
                warning(line, "log lines always carry an RFC 3339 timestamp")
            }
            "allow_duplicate_messages"
            | "allow_zero_length_clientid"
            | "auto_id_prefix"
            | "check_retain_source"
            | "max_inflight_bytes"
            | "persistent_client_expiration"
            | "queue_qos0_messages"
            | "set_tcp_nodelay"
            | "upgrade_outgoing_qos"
            | "retry_interval"
            | "websockets_log_level"
            | "websockets_headers_size" => warning(line, "no such setting in shardmq"),
            "plugin" | "global_plugin" | "auth_plugin" if line.value.ends_with(DYNSEC_PLUGIN_FILE) => {
                self.dynsec_plugin_line = Some((line.file.clone(), line.number, line.directive.clone()));
                Ok(())
            }
            "plugin_opt_config_file" if self.dynsec_plugin_line.is_some() => {
                let path = parse_path(line)?;
                super::listener::readable(&path).map_err(|reason| finding(Severity::Error, line, reason))?;
                self.config.auth.dynamic_security_file = Some(path);
                Ok(())
            }
            "auth_plugin" | "plugin" | "global_plugin" | "auth_plugin_deny_special_chars" => {
                error(line, "plugins are not supported, and the access checks they make would be skipped")
            }
            _ if directive.starts_with("auth_opt_") || directive.starts_with("plugin_opt_") => {
                error(line, "plugins are not supported, and the access checks they make would be skipped")
            }
            "psk_file" => error(line, "pre-shared-key TLS is not supported"),
            "clientid_prefixes" => error(line, "not supported, and ignoring it would let any client id connect"),
            _ if BRIDGE_OPTIONS.contains(&directive) => error(line, "a bridge option outside a `connection` bridge"),
            _ => error(line, "unknown directive"),
        }
    }

    /// Options of the current listener. `Ok(true)`: handled.
    /// `persistence true` keeps state under `persistence_location` (Mosquitto's default: the working
    /// directory) in `periodic` durability, Mosquitto's nearest equivalent.
    fn apply_persistence(&mut self) {
        self.config.persistence.dir = self
            .persistence_on
            .then(|| self.persistence_location.clone().unwrap_or_else(|| PathBuf::from("shardmq-data")));
    }

    fn apply_listener_option(&mut self, line: &Line) -> Result<bool, Finding> {
        match line.directive.as_str() {
            "listener" => self.start_listener(line)?,
            "port" => {
                let port = parse_number(line)?;
                self.touch_default_listener(line).port = Some(port);
            }
            "bind_address" => {
                let host = line.value.clone();
                self.touch_default_listener(line).host = Some(host);
            }
            "protocol" => {
                let websockets = match line.value.as_str() {
                    "mqtt" => false,
                    "websockets" => true,
                    other => {
                        return error(line, &format!("expected `mqtt` or `websockets`, got `{other}`")).map(|()| true)
                    }
                };
                self.current_listener(line).websockets = websockets;
            }
            "certfile" => self.current_listener(line).certfile = Some(parse_path(line)?),
            "keyfile" => self.current_listener(line).keyfile = Some(parse_path(line)?),
            "cafile" => self.current_listener(line).cafile = Some(parse_path(line)?),
            "require_certificate" => {
                let required = parse_bool(line)?;
                self.current_listener(line).require_certificate = required.then_some(line.number);
            }
            "use_identity_as_username" => self.current_listener(line).use_identity_as_username = parse_bool(line)?,
            "max_connections" => {
                let count: i64 = parse_number(line)?;
                let limit = if count < 0 { None } else { Some(usize::try_from(count).unwrap_or(usize::MAX)) };
                if limit == Some(0) {
                    return error(line, "0 would refuse every client; use -1 for no limit").map(|()| true);
                }
                self.current_listener(line).connections_max = limit;
            }
            "max_qos" => {
                let qos: u8 = parse_number(line)?;
                if qos > 2 {
                    return error(line, "expected 0, 1 or 2").map(|()| true);
                }
                self.current_listener(line);
                self.note_listener_scoped_limit(line);
                self.qos_max.push(qos);
            }
            "max_topic_alias" => {
                let aliases = parse_number(line)?;
                self.current_listener(line);
                self.note_listener_scoped_limit(line);
                self.topic_alias_max.push(aliases);
            }
            "tls_keyform" => {
                self.current_listener(line);
                if line.value != "pem" {
                    error(line, "only `pem` key files are supported")?
                }
            }
            "tls_version" => {
                self.current_listener(line);
                match line.value.as_str() {
                    "tlsv1.3" => error(line, "a TLS 1.3 minimum is not supported; shardmq accepts TLS 1.2 and 1.3")?,
                    _ => warning(line, "shardmq accepts TLS 1.2 and 1.3 only")?,
                }
            }
            directive => {
                let Some((_, severity, reason)) =
                    UNSUPPORTED_LISTENER_OPTIONS.iter().find(|(name, _, _)| *name == directive)
                else {
                    return Ok(false);
                };
                // Still a listener option: before any `listener` line it starts the default listener.
                self.current_listener(line);
                let message = match severity {
                    Severity::Error => format!("not supported: {reason}"),
                    Severity::Warning => format!("not supported, ignored: {reason}"),
                };
                return Err(finding(*severity, line, message));
            }
        }
        Ok(true)
    }

    fn touch_default_listener(&mut self, line: &Line) -> &mut DraftListener {
        self.default_listener_used = true;
        self.default_listener.origin.get_or_insert_with(|| (line.file.clone(), line.number));
        &mut self.default_listener
    }

    fn start_listener(&mut self, line: &Line) -> Result<(), Finding> {
        self.bridge_open = false;
        let (port, host) = match line.value.split_once(' ') {
            Some((port, host)) => (port, Some(host.trim().to_string())),
            None => (line.value.as_str(), None),
        };
        let port: u16 = port.parse().map_err(|_| {
            finding(Severity::Error, line, format!("expected `listener PORT [ADDRESS]`, got `{}`", line.value))
        })?;
        if port == 0 && host.as_deref().is_some_and(|host| host.starts_with('/')) {
            return error(line, "unix socket listeners are not supported");
        }
        self.listeners.push(DraftListener {
            origin: Some((line.file.clone(), line.number)),
            port: Some(port),
            host,
            ..DraftListener::default()
        });
        Ok(())
    }

    /// `allow_anonymous`, `password_file`, `acl_file`: global, or per listener with
    /// `per_listener_settings true` (before any `listener` line: the default listener's, which a
    /// `password_file` starts, as in Mosquitto). `Ok(true)`: handled.
    fn apply_auth_option(&mut self, line: &Line) -> Result<bool, Finding> {
        let directive = line.directive.as_str();
        if !matches!(directive, "allow_anonymous" | "password_file" | "acl_file") {
            return Ok(false);
        }
        let (allow, path) = match directive {
            "allow_anonymous" => (Some(parse_bool(line)?), None),
            _ => (None, Some(parse_path(line)?)),
        };
        if !self.per_listener_settings {
            // Checked here to point at the line; per-listener files are checked with their listener.
            if let Some(path) = &path {
                super::listener::readable(path).map_err(|reason| finding(Severity::Error, line, reason))?;
            }
            match directive {
                "allow_anonymous" => self.allow_anonymous = allow,
                "password_file" => self.config.auth.password_file = path,
                _ => self.config.auth.acl_file = path,
            }
            return Ok(true);
        }
        let auth = match (self.listeners.last_mut(), directive) {
            (Some(listener), _) => &mut listener.auth,
            (None, "password_file") => &mut self.touch_default_listener(line).auth,
            (None, _) => {
                self.orphan_auth_lines.push((line.file.clone(), line.number, directive.to_string()));
                &mut self.default_listener.auth
            }
        };
        match directive {
            "allow_anonymous" => auth.allow_anonymous = allow,
            "password_file" => auth.password_file = path,
            _ => auth.acl_file = path,
        }
        Ok(true)
    }

    /// Global limits that map onto `[mqtt]`. `Ok(true)`: handled.
    fn apply_limit(&mut self, line: &Line) -> Result<bool, Finding> {
        let mqtt = &mut self.config.mqtt;
        match line.directive.as_str() {
            "max_inflight_messages" => {
                let count: u32 = parse_number(line)?;
                mqtt.inflight_max_messages =
                    if count == 0 { u16::MAX } else { u16::try_from(count).unwrap_or(u16::MAX) };
            }
            "max_queued_messages" => {
                let count: usize = parse_number(line)?;
                mqtt.session_queue_max_messages = if count == 0 { usize::MAX } else { count };
            }
            "max_queued_bytes" => {
                let bytes: usize = parse_number(line)?;
                mqtt.session_queue_max_bytes = if bytes == 0 { usize::MAX } else { bytes };
            }
            "memory_limit" => {
                let bytes: u64 = parse_number(line)?;
                if bytes != 0 && bytes < super::MEMORY_MAX_BYTES_MIN {
                    return error(line, "below 1048576 bytes (1 MiB), which shardmq refuses").map(|()| true);
                }
                self.config.memory_max_bytes = (bytes != 0).then_some(bytes);
                if bytes != 0 {
                    let message = "applied as memory_max_bytes: shardmq measures the process's resident memory (not \
                                   heap bytes) and, above it, refuses new CONNECTs and drops QoS 0 to slow clients";
                    return Err(finding(Severity::Warning, line, message.to_string()));
                }
            }
            "max_keepalive" => mqtt.keepalive_max_secs = parse_number(line)?,
            "retain_available" => mqtt.retain_available = parse_bool(line)?,
            "max_packet_size" => {
                let bytes: u32 = parse_number(line)?;
                if bytes != 0 && bytes < 20 {
                    return error(line, "below 20 bytes is refused (as Mosquitto does)").map(|()| true);
                }
                self.max_packet_size = Some(if bytes == 0 { MQTT_PACKET_BYTES_MAX } else { bytes });
            }
            "message_size_limit" => {
                let bytes: u32 = parse_number(line)?;
                self.message_size_limit = Some(bytes);
                if bytes != 0 {
                    let packet = bytes.saturating_add(MESSAGE_SIZE_HEADROOM_BYTES);
                    let message = format!(
                        "applied as a whole-packet limit of {packet} bytes (payload + {MESSAGE_SIZE_HEADROOM_BYTES} \
                         for topic and properties); a larger PUBLISH closes the connection instead of being dropped"
                    );
                    return Err(finding(Severity::Warning, line, message));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn log_dest(&mut self, line: &Line) -> Result<(), Finding> {
        match line.value.split(' ').next().unwrap_or("") {
            "stderr" => Ok(()),
            "none" => {
                self.log_dest_none = true;
                Ok(())
            }
            "stdout" | "file" | "syslog" | "topic" | "dlt" => {
                warning(line, "shardmq logs to stderr only (redirect it, or let systemd's journal keep it)")
            }
            other => error(line, &format!("unknown log destination `{other}`")),
        }
    }

    fn log_type(&mut self, line: &Line) -> Result<(), Finding> {
        let level = match line.value.as_str() {
            "none" => "off",
            "error" => "error",
            "warning" => "warn",
            "notice" | "information" | "subscribe" | "unsubscribe" | "websockets" => "info",
            "debug" | "all" => "debug",
            other => return error(line, &format!("unknown log type `{other}`")),
        };
        self.log_levels.push(level);
        Ok(())
    }

    fn finish(mut self) -> Output {
        let listeners_configured = self.default_listener_used || !self.listeners.is_empty();
        // Mosquitto 2: with no listener configured, listen on this machine only and allow anonymous
        // clients; once any listener is configured, anonymous clients are refused unless allowed.
        let allow_anonymous_default = !listeners_configured;
        self.config.auth.allow_anonymous = self.allow_anonymous.unwrap_or(allow_anonymous_default);
        if !self.default_listener_used && self.listeners.is_empty() {
            self.default_listener.host = Some("127.0.0.1".to_string());
            self.default_listener_used = true;
        }
        if !self.default_listener_used {
            for (file, line, directive) in std::mem::take(&mut self.orphan_auth_lines) {
                let (severity, consequence) = match directive.as_str() {
                    "acl_file" => (Severity::Error, "its ACL would apply to no client"),
                    _ => (Severity::Warning, "ignored; each listener defaults to `allow_anonymous false`"),
                };
                let message = format!(
                    "with per_listener_settings true this belongs to the default listener, which is not started \
                     (no `port`): {consequence}; put it under a `listener` line"
                );
                self.findings.push(Finding { severity, file, line, directive, message });
            }
        }
        if let (Some((file, line, directive)), None) =
            (self.dynsec_plugin_line.clone(), &self.config.auth.dynamic_security_file)
        {
            let message = "the dynamic security plugin needs `plugin_opt_config_file FILE` after it (make one with \
                           `mosquitto_ctrl dynsec init FILE admin`)"
                .to_string();
            self.findings.push(Finding { severity: Severity::Error, file, line, directive, message });
        }
        let mut drafts = std::mem::take(&mut self.listeners);
        if self.default_listener_used {
            drafts.insert(0, std::mem::take(&mut self.default_listener));
        }
        for draft in &drafts {
            if let Some(listener) = self.build_listener(draft, allow_anonymous_default) {
                self.config.listeners.push(listener);
            }
        }
        self.apply_log_level();
        self.apply_packet_limit();
        self.apply_listener_scoped_limits(drafts.len());
        self.check_listeners(&drafts);
        Output { config: self.config, findings: self.findings }
    }

    fn build_listener(&mut self, draft: &DraftListener, allow_anonymous_default: bool) -> Option<ListenerConfig> {
        let (file, line) = draft.origin.clone().unwrap_or_else(|| (PathBuf::from("(default)"), 0));
        let mut problem = |message: String| {
            self.findings.push(Finding {
                severity: Severity::Error,
                file: file.clone(),
                line,
                directive: "listener".to_string(),
                message,
            });
        };
        let port = draft.port.unwrap_or(1883);
        let bind = match draft.host.as_deref() {
            Some(host) if host.contains(':') && !host.starts_with('[') => {
                format!("[{host}]:{port}")
            }
            Some(host) => format!("{host}:{port}"),
            None => format!("0.0.0.0:{port}"),
        };
        let tls = match (&draft.certfile, &draft.keyfile) {
            (Some(cert_file), Some(key_file)) => Some(TlsSettings {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                ca_file: draft.cafile.clone(),
                require_certificate: draft.require_certificate.is_some(),
                use_identity_as_username: draft.use_identity_as_username,
            }),
            (None, None) => {
                if draft.cafile.is_some() || draft.require_certificate.is_some() || draft.use_identity_as_username {
                    problem(format!(
                        "{bind}: cafile / require_certificate / use_identity_as_username without certfile and \
                         keyfile: the listener would run without TLS and accept clients without certificates"
                    ));
                    return None;
                }
                None
            }
            _ => {
                problem(format!("{bind}: TLS needs both certfile and keyfile"));
                return None;
            }
        };
        let transport = match (draft.websockets, tls.is_some()) {
            (false, false) => TransportKind::Mqtt,
            (false, true) => TransportKind::Tls,
            (true, false) => TransportKind::Ws,
            (true, true) => TransportKind::Wss,
        };
        let mut auth = draft.auth.clone();
        if self.per_listener_settings && auth.allow_anonymous.is_none() {
            auth.allow_anonymous = Some(allow_anonymous_default);
        }
        Some(ListenerConfig {
            tls,
            auth,
            connections_max: draft.connections_max,
            ..ListenerConfig::new(bind, transport)
        })
    }

    /// Runs our own listener checks (readable files, distinct ports) and reports a failure at the
    /// listener's line.
    fn check_listeners(&mut self, drafts: &[DraftListener]) {
        if let Err(err) = self.config.effective_listeners() {
            let index = match &err {
                ConfigError::Listener { index, .. } => *index,
                _ => 0,
            };
            let (file, line) = drafts
                .get(index)
                .and_then(|draft| draft.origin.clone())
                .unwrap_or_else(|| (PathBuf::from("(default)"), 0));
            self.findings.push(Finding {
                severity: Severity::Error,
                file,
                line,
                directive: "listener".to_string(),
                message: err.to_string(),
            });
        }
    }

    fn apply_log_level(&mut self) {
        if self.log_dest_none {
            self.config.log_level = "off".to_string();
            return;
        }
        if self.log_levels.is_empty() {
            return;
        }
        let rank = |level: &str| ["off", "error", "warn", "info", "debug"].iter().position(|known| *known == level);
        let most_verbose = self.log_levels.iter().copied().max_by_key(|level| rank(level)).unwrap_or("info");
        self.config.log_level = most_verbose.to_string();
    }

    fn apply_packet_limit(&mut self) {
        let from_message_limit = self.message_size_limit.map(|bytes| match bytes {
            0 => MQTT_PACKET_BYTES_MAX,
            bytes => bytes.saturating_add(MESSAGE_SIZE_HEADROOM_BYTES),
        });
        let limits = [self.max_packet_size, from_message_limit];
        if let Some(bytes) = limits.into_iter().flatten().min() {
            self.config.mqtt.packet_size_max_bytes = bytes;
        }
    }

    /// `max_qos` and `max_topic_alias` are per listener in Mosquitto and global in shardmq: the strictest
    /// value applies to all.
    fn apply_listener_scoped_limits(&mut self, listener_count: usize) {
        if let Some(qos) = self.qos_max.iter().copied().min() {
            self.config.mqtt.qos_max = qos;
        }
        if let Some(aliases) = self.topic_alias_max.iter().copied().min() {
            self.config.mqtt.topic_alias_max = aliases;
        }
        if let (Some((file, line, directive)), true) = (self.listener_scoped_limit_line.take(), listener_count > 1) {
            self.findings.push(Finding {
                severity: Severity::Warning,
                file,
                line,
                directive,
                message: "per listener in Mosquitto, global in shardmq: the lowest max_qos / max_topic_alias \
                    applies to every listener"
                    .to_string(),
            });
        }
    }

    fn note_listener_scoped_limit(&mut self, line: &Line) {
        self.listener_scoped_limit_line.get_or_insert_with(|| (line.file.clone(), line.number, line.directive.clone()));
    }
}

#[cfg(test)]
mod tests;
