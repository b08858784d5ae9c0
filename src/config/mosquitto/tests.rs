//! The mosquitto.conf reader: Mosquitto 2 defaults, listeners, auth scoping, limits, include_dir, and
//! which unsupported directives stop the start.

use super::*;
use crate::config::{AuthSettings, DEFAULT_WEBSOCKET_PATH};

fn convert_text(text: &str) -> (Config, Vec<Finding>) {
    from_str(text, Path::new("test.conf"))
}

fn errors(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|finding| finding.severity == Severity::Error).collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardmq-mosquitto-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pem_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let files = (dir.join("server.crt"), dir.join("server.key"), dir.join("ca.crt"));
    for file in [&files.0, &files.1, &files.2] {
        std::fs::write(file, "pem").unwrap();
    }
    files
}

#[test]
fn no_listener_means_localhost_1883_only_with_anonymous_allowed() {
    let (config, findings) = convert_text("# nothing but a comment\n\nmax_queued_messages 50\n");
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(config.effective_listeners().unwrap(), vec![ListenerConfig::mqtt("127.0.0.1:1883")]);
    assert!(config.auth.allow_anonymous);
    assert!(config.anonymous_remote_listeners().unwrap().is_empty());
    assert_eq!(config.mqtt.session_queue_max_messages, 50);
}

#[test]
fn any_listener_turns_anonymous_off_unless_allowed() {
    let (config, findings) = convert_text("listener 1883\n");
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(config.effective_listeners().unwrap(), vec![ListenerConfig::mqtt("0.0.0.0:1883")]);
    assert!(!config.auth.allow_anonymous);
    let (config, _) = convert_text("listener 1883\nallow_anonymous true\n");
    assert!(config.auth.allow_anonymous);
    let (config, _) = convert_text("port 1884\n");
    assert_eq!(config.effective_listeners().unwrap(), vec![ListenerConfig::mqtt("0.0.0.0:1884")]);
    assert!(!config.auth.allow_anonymous, "`port` configures the default listener");
}

#[test]
fn each_listener_line_starts_a_listener_with_its_own_options() {
    let dir = temp_dir("listeners");
    let (cert, key, ca) = pem_files(&dir);
    let text = format!(
        "listener 1883 127.0.0.1\nmax_connections 100\n\
         listener 8883\ncertfile {}\nkeyfile {}\ncafile {}\nrequire_certificate true\nuse_identity_as_username true\n\
         listener 9001 ::1\nprotocol websockets\nmax_connections -1\n\
         listener 9443\nprotocol websockets\ncertfile {}\nkeyfile {}\n",
        cert.display(),
        key.display(),
        ca.display(),
        cert.display(),
        key.display()
    );
    let (config, findings) = convert_text(&text);
    assert!(findings.is_empty(), "{findings:?}");
    let listeners = config.effective_listeners().unwrap();
    let kinds: Vec<(&str, TransportKind, Option<usize>)> =
        listeners.iter().map(|l| (l.bind.as_str(), l.transport, l.connections_max)).collect();
    assert_eq!(
        kinds,
        vec![
            ("127.0.0.1:1883", TransportKind::Mqtt, Some(100)),
            ("0.0.0.0:8883", TransportKind::Tls, None),
            ("[::1]:9001", TransportKind::Ws, None),
            ("0.0.0.0:9443", TransportKind::Wss, None),
        ]
    );
    let tls = listeners[1].tls.as_ref().unwrap();
    assert_eq!(
        tls,
        &TlsSettings {
            cert_file: cert.clone(),
            key_file: key.clone(),
            ca_file: Some(ca),
            require_certificate: true,
            use_identity_as_username: true
        }
    );
    assert_eq!(listeners[2].websocket_path, DEFAULT_WEBSOCKET_PATH);
    assert!(!listeners[3].tls.as_ref().unwrap().require_certificate);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn default_listener_options_come_before_the_first_listener_line() {
    let (config, findings) = convert_text("bind_address 127.0.0.1\nport 1885\nmax_connections 7\nlistener 1886\n");
    assert!(findings.is_empty(), "{findings:?}");
    let listeners = config.effective_listeners().unwrap();
    assert_eq!(listeners[0].bind, "127.0.0.1:1885");
    assert_eq!(listeners[0].connections_max, Some(7));
    assert_eq!(listeners[1], ListenerConfig::mqtt("0.0.0.0:1886"));
}

#[test]
fn auth_options_are_global_without_per_listener_settings() {
    let dir = temp_dir("global-auth");
    let (acl, pw) = auth_files(&dir);
    let text = format!(
        "listener 1883\npassword_file {}\nlistener 1884\nacl_file {}\nallow_anonymous true\n",
        pw.display(),
        acl.display()
    );
    let (config, findings) = convert_text(&text);
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(
        config.auth,
        AuthSettings {
            allow_anonymous: true,
            password_file: Some(pw),
            acl_file: Some(acl),
            identity_as_username: false,
            dynamic_security_file: None,
            http: None,
            postgres: None,
        }
    );
    assert!(config.listeners.iter().all(|listener| listener.auth == ListenerAuth::default()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreadable_password_file_is_an_error_at_its_line() {
    let (_, findings) = convert_text("listener 1883\n\npassword_file /nonexistent/pw\n");
    let errors = errors(&findings);
    assert_eq!(errors.len(), 1, "{findings:?}");
    assert_eq!(errors[0].line, 3);
    assert!(errors[0].message.contains("/nonexistent/pw"), "{}", errors[0]);
}

/// An ACL file and a password file that exist (listeners refuse unreadable ones).
fn auth_files(dir: &Path) -> (PathBuf, PathBuf) {
    let files = (dir.join("acl"), dir.join("pw"));
    std::fs::write(&files.0, "topic read #\n").unwrap();
    std::fs::write(&files.1, "").unwrap();
    files
}

#[test]
fn per_listener_settings_scopes_auth_to_each_listener() {
    let dir = temp_dir("per-listener");
    let (acl, pw) = auth_files(&dir);
    let text = format!(
        "per_listener_settings true\nlistener 1883\nallow_anonymous true\nacl_file {}\nlistener 1884\npassword_file {}\n",
        acl.display(),
        pw.display()
    );
    let (config, findings) = convert_text(&text);
    assert!(findings.is_empty(), "{findings:?}");
    let first = config.listeners[0].effective_auth(&config.auth);
    assert!(first.allow_anonymous);
    assert_eq!(first.acl_file, Some(acl));
    assert_eq!(first.password_file, None);
    let second = config.listeners[1].effective_auth(&config.auth);
    assert!(!second.allow_anonymous, "a configured listener defaults to allow_anonymous false");
    assert_eq!(second.password_file, Some(pw));
    assert_eq!(second.acl_file, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn per_listener_settings_given_late_still_governs_earlier_lines() {
    let (config, _) = convert_text("listener 1883\nallow_anonymous true\nlistener 1884\nper_listener_settings true\n");
    assert_eq!(config.listeners[0].auth.allow_anonymous, Some(true));
    assert_eq!(config.listeners[1].auth.allow_anonymous, Some(false));
}

#[test]
fn per_listener_acl_before_any_listener_is_refused_when_the_default_listener_is_not_started() {
    let (_, findings) = convert_text("per_listener_settings true\nacl_file /etc/mosquitto/acl\nlistener 1883\n");
    let errors = errors(&findings);
    assert_eq!(errors.len(), 1, "{findings:?}");
    assert_eq!((errors[0].line, errors[0].directive.as_str()), (2, "acl_file"));
    let dir = temp_dir("per-listener-default");
    let (_, pw) = auth_files(&dir);
    let text = format!("per_listener_settings true\npassword_file {}\nlistener 1884\n", pw.display());
    let (config, findings) = convert_text(&text);
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(config.listeners[0].bind, "0.0.0.0:1883", "password_file starts the default listener");
    assert_eq!(config.listeners[0].auth.password_file, Some(pw));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn limits_map_to_broker_settings() {
    let text = "max_inflight_messages 5\nmax_queued_messages 0\nmax_queued_bytes 4096\nmax_keepalive 120\n\
                retain_available false\nmax_packet_size 2048\n";
    let (config, findings) = convert_text(text);
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(config.mqtt.inflight_max_messages, 5);
    assert_eq!(config.mqtt.session_queue_max_messages, usize::MAX, "0 is no maximum");
    assert_eq!(config.mqtt.session_queue_max_bytes, 4096);
    assert_eq!(config.mqtt.keepalive_max_secs, 120);
    assert!(!config.mqtt.retain_available);
    assert_eq!(config.mqtt.packet_size_max_bytes, 2048);
    let (config, _) = convert_text("max_inflight_messages 0\n");
    assert_eq!(config.mqtt.inflight_max_messages, u16::MAX);
}

#[test]
fn memory_limit_becomes_the_memory_budget_with_one_warning_and_0_is_none() {
    let (config, findings) = convert_text("memory_limit 268435456\n");
    assert_eq!(config.memory_max_bytes, Some(268_435_456));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].severity, Severity::Warning);
    assert!(findings[0].to_string().contains("memory_max_bytes"), "{}", findings[0]);
    let (config, findings) = convert_text("memory_limit 0\n");
    assert_eq!((config.memory_max_bytes, findings.len()), (None, 0));
    let (_, findings) = convert_text("memory_limit 4096\n");
    assert_eq!(findings[0].severity, Severity::Error, "below shardmq's 1 MiB minimum");
}

#[test]
fn message_size_limit_becomes_a_packet_limit_with_one_warning() {
    let (config, findings) = convert_text("message_size_limit 1000\n");
    assert_eq!(config.mqtt.packet_size_max_bytes, 1000 + MESSAGE_SIZE_HEADROOM_BYTES);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].severity, Severity::Warning);
    assert!(findings[0].to_string().starts_with("test.conf:1: warning: `message_size_limit`"), "{}", findings[0]);
}

#[test]
fn max_qos_and_topic_aliases_apply_globally_at_their_lowest() {
    let (config, findings) = convert_text("listener 1883\nmax_qos 1\nlistener 1884\nmax_topic_alias 3\n");
    assert_eq!(config.mqtt.qos_max, 1);
    assert_eq!(config.mqtt.topic_alias_max, 3);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!((findings[0].severity, findings[0].line), (Severity::Warning, 2));
}

#[test]
fn log_type_and_log_dest_set_the_log_level() {
    assert_eq!(convert_text("log_type error\nlog_type warning\n").0.log_level, "warn");
    assert_eq!(convert_text("log_type all\n").0.log_level, "debug");
    assert_eq!(convert_text("log_type information\n").0.log_level, "info");
    assert_eq!(convert_text("log_dest none\n").0.log_level, "off");
    assert_eq!(convert_text("").0.log_level, "info");
    let (_, findings) = convert_text("log_dest stderr\nlog_dest file /var/log/mosquitto.log\n");
    assert_eq!(findings.len(), 1);
    assert_eq!((findings[0].line, findings[0].severity), (2, Severity::Warning));
}

#[test]
fn persistence_true_and_its_location_map_to_the_persistence_dir_in_either_order() {
    let (config, findings) = convert_text("persistence_location /var/lib/mosquitto/\npersistence true\n");
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(config.persistence.dir.as_deref(), Some(Path::new("/var/lib/mosquitto/")));
    let (config, _) = convert_text("persistence true\npersistence_location /data\n");
    assert_eq!(config.persistence.dir.as_deref(), Some(Path::new("/data")));
    let (config, _) = convert_text("persistence true\npersistence_location /data\npersistence false\n");
    assert_eq!(config.persistence.dir, None, "off again");
    let (_, findings) = convert_text("persistence true\npersistence_file m.db\n");
    assert_eq!(findings.len(), 1);
    assert!(findings[0].message.contains("append-only log"), "{}", findings[0]);
}

#[test]
fn harmless_unsupported_directives_are_one_warning_line_each() {
    let text = "autosave_interval 1800\npid_file /run/m.pid\nset_tcp_nodelay true\n";
    let (_, findings) = convert_text(text);
    let lines: Vec<usize> = findings.iter().map(|finding| finding.line).collect();
    assert_eq!(lines, vec![1, 2, 3]);
    assert!(findings.iter().all(|finding| finding.severity == Severity::Warning));
    assert!(findings.iter().all(|finding| !finding.to_string().contains('\n')));
}

#[test]
fn sys_interval_sets_the_sys_topic_interval() {
    let (config, findings) = convert_text("sys_interval 3\n");
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(config.sys_interval_secs, 3);
}

#[test]
fn directives_whose_absence_would_weaken_security_are_errors() {
    for directive in [
        "auth_plugin /usr/lib/mosquitto_dynamic_security.so",
        "plugin /usr/lib/mosquitto_dynamic_security.so",
        "plugin_opt_config_file /etc/dynsec.json",
        "auth_opt_db_host localhost",
        "psk_hint broker",
        "psk_file /etc/mosquitto/psk",
        "crlfile /etc/mosquitto/crl.pem",
        "capath /etc/ssl/certs",
        "mount_point tenant/",
        "use_username_as_clientid true",
        "use_subject_as_username true",
        "bind_interface eth0",
        "clientid_prefixes secure-",
        "no_such_directive 1",
    ] {
        let (_, findings) = convert_text(&format!("listener 1883\n{directive}\n"));
        let errors = errors(&findings);
        assert_eq!(errors.len(), 1, "{directive}: {findings:?}");
        assert_eq!(errors[0].line, 2, "{directive}");
        assert!(errors[0].to_string().starts_with("test.conf:2: error: `"), "{}", errors[0]);
    }
}

#[test]
fn certificate_options_on_a_listener_without_tls_are_errors() {
    let (_, findings) = convert_text("listener 1883\nrequire_certificate true\n");
    let errors = errors(&findings);
    assert_eq!(errors.len(), 1, "{findings:?}");
    assert_eq!(errors[0].line, 1);
    assert!(errors[0].message.contains("without TLS"), "{}", errors[0]);
    let (_, findings) = convert_text("listener 8883\ncertfile /a.crt\n");
    assert!(errors_of(&findings).contains("certfile and keyfile"));
}

fn errors_of(findings: &[Finding]) -> String {
    Finding::lines(&errors(findings).into_iter().cloned().collect::<Vec<_>>())
}

#[test]
fn unreadable_certificate_files_are_errors_at_the_listener_line() {
    let (_, findings) =
        convert_text("listener 1883\nlistener 8883\ncertfile /nonexistent/a.crt\nkeyfile /nonexistent/a.key\n");
    let errors = errors(&findings);
    assert_eq!(errors.len(), 1, "{findings:?}");
    assert_eq!(errors[0].line, 2);
    assert!(errors[0].message.contains("/nonexistent/a.crt"), "{}", errors[0]);
}

#[test]
fn duplicate_listener_ports_are_errors() {
    let (_, findings) = convert_text("listener 1883\nlistener 1883 127.0.0.1\n");
    let errors = errors(&findings);
    assert_eq!(errors.len(), 1, "{findings:?}");
    assert_eq!(errors[0].line, 2);
}

#[test]
fn bad_values_are_errors_naming_the_line() {
    for (text, line) in [
        ("listener one\n", 1),
        ("listener 1883\nprotocol quic\n", 2),
        ("retain_available yes\n", 1),
        ("max_queued_messages many\n", 1),
        ("listener 0 /run/mosquitto.sock\n", 1),
        ("max_packet_size 10\n", 1),
    ] {
        let (_, findings) = convert_text(text);
        let errors = errors(&findings);
        assert_eq!(errors.len(), 1, "{text}: {findings:?}");
        assert_eq!(errors[0].line, line, "{text}");
    }
}

#[test]
fn bridges_are_one_warning_and_their_options_are_skipped() {
    let text = "connection upstream\naddress broker.example:1883\ntopic # both 0\nremote_username u\nlistener 1883\n";
    let (config, findings) = convert_text(text);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!((findings[0].line, findings[0].severity), (1, Severity::Warning));
    assert!(findings[0].message.contains("upstream"));
    assert_eq!(config.listeners.len(), 1);
    let (_, findings) = convert_text("topic # both 0\n");
    assert_eq!(errors(&findings).len(), 1, "a bridge option outside a bridge");
}

#[test]
fn include_dir_reads_conf_files_in_mosquitto_order() {
    let dir = temp_dir("include");
    let conf_d = dir.join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    // Each file sets max_keepalive; the last one read wins.
    for (name, port) in [("b.conf", 1), ("A.conf", 2), ("01.conf", 3), ("a.conf", 4), ("B.conf", 5), ("00.conf", 6)] {
        std::fs::write(conf_d.join(name), format!("max_keepalive {}\n", 100 + port)).unwrap();
    }
    std::fs::write(conf_d.join("README"), "not a config file\n").unwrap();
    std::fs::write(conf_d.join("z.conf.disabled"), "auth_plugin /x.so\n").unwrap();
    let main = dir.join("mosquitto.conf");
    std::fs::write(&main, format!("max_keepalive 60\ninclude_dir {}\n", conf_d.display())).unwrap();
    let converted = read(&main).unwrap();
    // Order 00 01 A a B b: b.conf (101) is read last.
    assert_eq!(converted.config.mqtt.keepalive_max_secs, 101);
    assert!(converted.warnings.is_empty(), "{:?}", converted.warnings);
    let mut names: Vec<PathBuf> =
        ["b.conf", "A.conf", "01.conf", "a.conf", "B.conf", "00.conf"].iter().map(PathBuf::from).collect();
    names.sort_by_key(|name| mosquitto_order_key(name));
    let order: Vec<String> = names.iter().map(|name| name.display().to_string()).collect();
    assert_eq!(order, ["00.conf", "01.conf", "A.conf", "a.conf", "B.conf", "b.conf"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn findings_in_included_files_name_that_file() {
    let dir = temp_dir("include-findings");
    let conf_d = dir.join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    std::fs::write(conf_d.join("auth.conf"), "# plugin\n\nauth_plugin /usr/lib/x.so\n").unwrap();
    let main = dir.join("mosquitto.conf");
    std::fs::write(&main, format!("include_dir {}\n", conf_d.display())).unwrap();
    let err = read(&main).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:3: error: `auth_plugin`", conf_d.join("auth.conf").display())), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn include_dir_in_an_included_file_is_refused() {
    let dir = temp_dir("nested-include");
    let conf_d = dir.join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    std::fs::write(conf_d.join("x.conf"), format!("include_dir {}\n", dir.display())).unwrap();
    let main = dir.join("mosquitto.conf");
    std::fs::write(&main, format!("include_dir {}\n", conf_d.display())).unwrap();
    assert!(read(&main).unwrap_err().to_string().contains("only allowed in the main config file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Debian's packaged config (`apt-get install mosquitto`, which scripts/test does): pid file, persistence,
/// a log file, and an include_dir with only a README.
#[test]
fn debian_packaged_mosquitto_conf_is_read() {
    let path = Path::new("/etc/mosquitto/mosquitto.conf");
    assert!(path.exists(), "{} is missing: install Debian's `mosquitto` package (scripts/test does)", path.display());
    let converted = read(path).unwrap();
    assert_eq!(converted.config.effective_listeners().unwrap(), vec![ListenerConfig::mqtt("127.0.0.1:1883")]);
    assert!(converted.config.auth.allow_anonymous);
    let warned: Vec<&str> = converted.warnings.iter().map(|finding| finding.directive.as_str()).collect();
    assert_eq!(converted.config.persistence.dir.as_deref(), Some(Path::new("/var/lib/mosquitto/")));
    for directive in ["pid_file", "log_dest"] {
        assert!(warned.contains(&directive), "{directive} not in {warned:?}");
    }
    assert!(converted.warnings.iter().all(|finding| finding.file.starts_with("/etc/mosquitto")));
}

#[test]
fn a_missing_file_names_the_path() {
    let err = read(Path::new("/nonexistent/mosquitto.conf")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/mosquitto.conf"), "{err}");
}

#[test]
fn the_dynamic_security_plugin_lines_turn_on_the_built_in_dynamic_security() {
    let dir = temp_dir("dynsec-plugin");
    let file = dir.join("dynamic-security.json");
    std::fs::write(&file, "{}").unwrap();
    let text = format!(
        "listener 1883\nplugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file {}\n",
        file.display()
    );
    let (config, findings) = convert_text(&text);
    assert!(errors(&findings).is_empty(), "{findings:?}");
    assert_eq!(config.auth.dynamic_security_file, Some(file));
    assert!(!config.auth.allow_anonymous, "a listener line turns anonymous off, as in Mosquitto");

    let (_, findings) = convert_text("listener 1883\nplugin /opt/mosquitto_dynamic_security.so\n");
    let errors = errors(&findings);
    assert_eq!(errors.len(), 1, "{findings:?}");
    assert!(errors[0].message.contains("plugin_opt_config_file"), "{}", errors[0]);
    let (_, findings) = convert_text("listener 1883\nplugin /usr/lib/other_plugin.so\n");
    assert_eq!(self::errors(&findings).len(), 1, "other plugins are still refused");
}
