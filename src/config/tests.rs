//! Loading the native config: defaults, file fields, flag overrides, the listener list and its checks.

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardmq-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load_toml(text: &str) -> Result<Config, ConfigError> {
    let config = Config::from_toml(text).map_err(|source| ConfigError::Parse { path: "test".into(), source })?;
    config.validate()?;
    Ok(config)
}

#[test]
fn defaults_work_without_a_file() {
    let config = Config::load(&RunArgs::default()).unwrap().config;
    assert_eq!(config.listen_addr().unwrap(), "0.0.0.0:1883".parse().unwrap());
    assert_eq!(config.shards, None);
    assert!(config.connections_max > 0);
}

#[test]
fn no_file_listens_for_mqtt_on_1883_and_websocket_on_8083() {
    let listeners = Config::default().effective_listeners().unwrap();
    let expected = vec![ListenerConfig::mqtt("0.0.0.0:1883"), ListenerConfig::websocket("0.0.0.0:8083")];
    assert_eq!(listeners, expected);
    assert_eq!(listeners[1].transport, TransportKind::Ws);
    assert_eq!(listeners[1].websocket_path, "/mqtt");
    assert!(Config::default().auth.allow_anonymous);
}

#[test]
fn file_fields_are_read() {
    let config = Config::from_toml(
        "listen = \"127.0.0.1:0\"\nshards = 3\nconnections_max = 10\nsocket_send_buffer_bytes = 8192\n",
    )
    .unwrap();
    assert_eq!(config.listen.as_deref(), Some("127.0.0.1:0"));
    assert_eq!(config.shards, Some(3));
    assert_eq!(config.connections_max, 10);
    assert_eq!(config.socket_send_buffer_bytes, Some(8192));
    assert_eq!(config.socket_recv_buffer_bytes, None);
}

#[test]
fn listen_in_the_file_is_one_plain_mqtt_listener() {
    let config = load_toml("listen = \"127.0.0.1:1999\"\n").unwrap();
    assert_eq!(config.effective_listeners().unwrap(), vec![ListenerConfig::mqtt("127.0.0.1:1999")]);
}

#[test]
fn the_mqtt_table_fills_broker_settings() {
    let config = Config::from_toml("[mqtt]\nmax_qos = 1\nkeepalive_max_secs = 60\n").unwrap();
    assert_eq!(config.mqtt.qos_max, 1);
    assert_eq!(config.mqtt.keepalive_max_secs, 60);
    assert_eq!(config.mqtt.receive_maximum, BrokerSettings::default().receive_maximum);
    assert!(Config::from_toml("[mqtt]\nmax_qoss = 1\n").unwrap_err().to_string().contains("max_qoss"));
}

#[test]
fn unknown_field_is_an_error_naming_it() {
    let err = Config::from_toml("listn = \"127.0.0.1:1\"").unwrap_err();
    assert!(err.to_string().contains("listn"), "{err}");
    let err = Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:1\"\nwebsocket_pth = \"/\"\n").unwrap_err();
    assert!(err.to_string().contains("websocket_pth"), "{err}");
}

#[test]
fn wrong_type_is_an_error() {
    assert!(Config::from_toml("shards = \"two\"").is_err());
    let err = Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:1\"\ntransport = \"quic\"\n").unwrap_err();
    assert!(err.to_string().contains("quic"), "{err}");
}

#[test]
fn flags_override_the_file() {
    let dir = temp_dir("flags");
    let path = dir.join("broker.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:1999\"\nshards = 4\n").unwrap();
    let args = RunArgs { config: Some(path), shards: Some(2), ..RunArgs::default() };
    let config = Config::load(&args).unwrap().config;
    assert_eq!(config.shards, Some(2));
    assert_eq!(config.listen.as_deref(), Some("127.0.0.1:1999"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn listen_flag_replaces_every_listener_of_the_file_with_one_plain_mqtt_listener() {
    let dir = temp_dir("listen-flag");
    let path = dir.join("broker.toml");
    let text =
        "[[listeners]]\nbind = \"127.0.0.1:1884\"\n[[listeners]]\nbind = \"127.0.0.1:8084\"\ntransport = \"ws\"\n";
    std::fs::write(&path, text).unwrap();
    let args = RunArgs { config: Some(path), listen: Some("127.0.0.1:0".into()), ..RunArgs::default() };
    let config = Config::load(&args).unwrap().config;
    assert_eq!(config.effective_listeners().unwrap(), vec![ListenerConfig::mqtt("127.0.0.1:0")]);
    assert_eq!(config.listen_addr().unwrap(), "127.0.0.1:0".parse().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn listener_tables_are_read_with_their_defaults() {
    let dir = temp_dir("listener-tables");
    let (cert, key, ca) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
    for file in [&cert, &key, &ca] {
        std::fs::write(file, "pem").unwrap();
    }
    let text = format!(
        "[[listeners]]\nbind = \"127.0.0.1:1883\"\n\
         [[listeners]]\nbind = \"127.0.0.1:8883\"\ntransport = \"tls\"\nconnections_max = 5\n\
         [listeners.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nca_file = {ca:?}\nrequire_certificate = true\n\
         use_identity_as_username = true\n[listeners.auth]\nallow_anonymous = false\n\
         [[listeners]]\nbind = \"127.0.0.1:8083\"\ntransport = \"ws\"\nwebsocket_origins = [\"https://a.example\"]\n\
         [auth]\nallow_anonymous = true\n"
    );
    let config = load_toml(&text).unwrap();
    let listeners = config.effective_listeners().unwrap();
    assert_eq!(listeners.len(), 3);
    assert_eq!(listeners[0], ListenerConfig::mqtt("127.0.0.1:1883"));
    let tls = &listeners[1];
    assert_eq!(tls.transport, TransportKind::Tls);
    assert_eq!(tls.connections_max, Some(5));
    let settings = tls.tls.as_ref().unwrap();
    assert_eq!((settings.cert_file.clone(), settings.ca_file.clone()), (cert, Some(ca)));
    assert!(settings.require_certificate && settings.use_identity_as_username);
    assert!(!tls.effective_auth(&config.auth).allow_anonymous);
    assert_eq!(listeners[2].transport, TransportKind::Ws);
    assert_eq!(listeners[2].websocket_path, DEFAULT_WEBSOCKET_PATH);
    assert_eq!(listeners[2].websocket_origins, vec!["https://a.example".to_string()]);
    assert!(listeners[2].effective_auth(&config.auth).allow_anonymous);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tls_and_wss_listeners_need_a_tls_table_with_readable_files() {
    let err = load_toml("[[listeners]]\nbind = \"127.0.0.1:8883\"\ntransport = \"tls\"\n").unwrap_err();
    assert!(err.to_string().contains("listeners[0].tls"), "{err}");
    let err = load_toml("[[listeners]]\nbind = \"127.0.0.1:8884\"\ntransport = \"wss\"\n").unwrap_err();
    assert!(err.to_string().contains("listeners[0].tls"), "{err}");
    let text = "[[listeners]]\nbind = \"127.0.0.1:8883\"\ntransport = \"tls\"\n\
                [listeners.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n";
    let err = load_toml(text).unwrap_err().to_string();
    assert!(err.contains("listeners[0].tls.cert_file") && err.contains("/nonexistent/cert.pem"), "{err}");
    let err =
        Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:8883\"\n[listeners.tls]\nkey_file = \"k\"\n").unwrap_err();
    assert!(err.to_string().contains("cert_file"), "{err}");
}

#[test]
fn tls_settings_on_a_plain_listener_are_refused() {
    let dir = temp_dir("tls-on-plain");
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "pem").unwrap();
    let text = format!(
        "[[listeners]]\nbind = \"127.0.0.1:1883\"\n[listeners.tls]\ncert_file = {cert:?}\nkey_file = {cert:?}\n"
    );
    let err = load_toml(&text).unwrap_err().to_string();
    assert!(err.contains("listeners[0].tls") && err.contains("mqtt"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn client_certificate_checks_need_a_ca_and_identity_needs_a_required_certificate() {
    let dir = temp_dir("client-certs");
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "pem").unwrap();
    let base = format!("[[listeners]]\nbind = \"127.0.0.1:8883\"\ntransport = \"tls\"\n[listeners.tls]\ncert_file = {cert:?}\nkey_file = {cert:?}\n");
    let err = load_toml(&format!("{base}require_certificate = true\n")).unwrap_err().to_string();
    assert!(err.contains("listeners[0].tls.ca_file"), "{err}");
    let err = load_toml(&format!("{base}use_identity_as_username = true\n")).unwrap_err().to_string();
    assert!(err.contains("listeners[0].tls.use_identity_as_username"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn duplicate_bind_addresses_are_refused() {
    let same =
        "[[listeners]]\nbind = \"127.0.0.1:1883\"\n[[listeners]]\nbind = \"127.0.0.1:1883\"\ntransport = \"ws\"\n";
    let err = load_toml(same).unwrap_err().to_string();
    assert!(err.contains("listeners[1].bind") && err.contains("listeners[0]"), "{err}");
    let wildcard = "[[listeners]]\nbind = \"0.0.0.0:1883\"\n[[listeners]]\nbind = \"127.0.0.1:1883\"\n";
    assert!(load_toml(wildcard).unwrap_err().to_string().contains("listeners[1].bind"));
    let free_ports = "[[listeners]]\nbind = \"127.0.0.1:0\"\n[[listeners]]\nbind = \"127.0.0.1:0\"\n";
    assert!(load_toml(free_ports).is_ok());
    let other_ports = "[[listeners]]\nbind = \"0.0.0.0:1883\"\n[[listeners]]\nbind = \"127.0.0.1:1884\"\n";
    assert!(load_toml(other_ports).is_ok());
}

#[test]
fn listen_and_listeners_together_are_refused() {
    let err = load_toml("listen = \"127.0.0.1:1883\"\n[[listeners]]\nbind = \"127.0.0.1:1884\"\n").unwrap_err();
    assert!(err.to_string().contains("`listen`"), "{err}");
}

#[test]
fn websocket_settings_belong_to_websocket_listeners() {
    let err = load_toml("[[listeners]]\nbind = \"127.0.0.1:1\"\nwebsocket_path = \"/ws\"\n").unwrap_err();
    assert!(err.to_string().contains("listeners[0].websocket_path"), "{err}");
    let err =
        load_toml("[[listeners]]\nbind = \"127.0.0.1:1\"\ntransport = \"ws\"\nwebsocket_path = \"ws\"\n").unwrap_err();
    assert!(err.to_string().contains("must start with `/`"), "{err}");
}

#[test]
fn listen_addr_is_the_first_plain_mqtt_listener() {
    let text =
        "[[listeners]]\nbind = \"127.0.0.1:8083\"\ntransport = \"ws\"\n[[listeners]]\nbind = \"127.0.0.1:1884\"\n";
    assert_eq!(load_toml(text).unwrap().listen_addr().unwrap(), "127.0.0.1:1884".parse().unwrap());
    let only_ws = load_toml("[[listeners]]\nbind = \"127.0.0.1:8083\"\ntransport = \"ws\"\n").unwrap();
    assert!(only_ws.listen_addr().unwrap_err().to_string().contains("listeners"));
}

#[test]
fn anonymous_warning_names_only_listeners_reachable_from_other_machines() {
    let loopback =
        load_toml("[[listeners]]\nbind = \"127.0.0.1:1883\"\n[[listeners]]\nbind = \"[::1]:1884\"\n").unwrap();
    assert!(loopback.anonymous_remote_listeners().unwrap().is_empty());
    let localhost = load_toml("listen = \"localhost:1883\"\n").unwrap();
    assert!(localhost.anonymous_remote_listeners().unwrap().is_empty());
    let open = load_toml("[[listeners]]\nbind = \"0.0.0.0:1883\"\n[[listeners]]\nbind = \"127.0.0.1:1884\"\n").unwrap();
    let binds: Vec<String> = open.anonymous_remote_listeners().unwrap().into_iter().map(|l| l.bind).collect();
    assert_eq!(binds, vec!["0.0.0.0:1883".to_string()]);
    let closed = load_toml("[auth]\nallow_anonymous = false\n[[listeners]]\nbind = \"0.0.0.0:1883\"\n").unwrap();
    assert!(closed.anonymous_remote_listeners().unwrap().is_empty());
    let overridden = "[auth]\nallow_anonymous = false\n[[listeners]]\nbind = \"0.0.0.0:1883\"\n\
                      [listeners.auth]\nallow_anonymous = true\n";
    assert_eq!(load_toml(overridden).unwrap().anonymous_remote_listeners().unwrap().len(), 1);
    assert_eq!(Config::default().anonymous_remote_listeners().unwrap().len(), 2);
}

#[test]
fn listener_auth_inherits_the_top_level_auth_where_unset() {
    let global = AuthSettings {
        allow_anonymous: false,
        password_file: Some("/etc/shardmq/passwd".into()),
        acl_file: Some("/etc/shardmq/acl".into()),
        identity_as_username: false,
        dynamic_security_file: None,
        http: None,
        postgres: None,
    };
    let mut listener = ListenerConfig::mqtt("127.0.0.1:1883");
    assert_eq!(listener.effective_auth(&global), global);
    listener.auth.acl_file = Some("/etc/shardmq/guest-acl".into());
    listener.auth.allow_anonymous = Some(true);
    let effective = listener.effective_auth(&global);
    assert_eq!(effective.acl_file, Some(PathBuf::from("/etc/shardmq/guest-acl")));
    assert_eq!(effective.password_file, global.password_file);
    assert!(effective.allow_anonymous);
}

#[test]
fn unreadable_auth_files_are_refused_at_start() {
    let err = load_toml("[auth]\npassword_file = \"/nonexistent/passwd\"\n").unwrap_err().to_string();
    assert!(err.contains("auth.password_file") && err.contains("/nonexistent/passwd"), "{err}");
    let text = "[[listeners]]\nbind = \"127.0.0.1:1\"\n[listeners.auth]\nacl_file = \"/nonexistent/acl\"\n";
    assert!(load_toml(text).unwrap_err().to_string().contains("listeners[0].auth.acl_file"));
}

#[test]
fn invalid_values_are_rejected_with_the_field_name() {
    let args = RunArgs { shards: Some(0), ..RunArgs::default() };
    assert!(Config::load(&args).unwrap_err().to_string().contains("shards"));
    let args = RunArgs { listen: Some("nonsense".into()), ..RunArgs::default() };
    assert!(Config::load(&args).unwrap_err().to_string().contains("listen"));
    let config = Config { log_level: "info,[".into(), ..Config::default() };
    assert!(config.validate().unwrap_err().to_string().contains("log_level"));
    let err = load_toml("[[listeners]]\nbind = \"127.0.0.1:1\"\nconnections_max = 0\n").unwrap_err();
    assert!(err.to_string().contains("listeners[0].connections_max"), "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let args = RunArgs { config: Some("/nonexistent/shardmq.toml".into()), ..RunArgs::default() };
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/shardmq.toml"), "{err}");
}

#[test]
fn old_mqtt_names_are_read_with_one_warning_each() {
    let path = std::path::Path::new("old.toml");
    let text = "[mqtt]\nmax_packet_size_bytes = 4096\nclient_id_max_bytes = 23\nreceive_maximum = 5\n";
    let config = Config::from_toml(text).expect("old names still parse");
    assert_eq!((config.mqtt.packet_size_max_bytes, config.mqtt.client_id_length_max_bytes), (4096, 23));
    let warnings = super::deprecated_name_warnings(text, path);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("max_packet_size_bytes is deprecated, read as packet_size_max_bytes"), "{warnings:?}");
    assert!(super::deprecated_name_warnings("[mqtt]\npacket_size_max_bytes = 1\n", path).is_empty());
}

#[test]
fn old_names_outside_mqtt_read_as_the_new_ones_with_a_warning_each() {
    let path = std::path::Path::new("old.toml");
    for (table, old, new) in super::RENAMED_FIELDS {
        let spelled = |name: &str| match *table {
            "" => format!("{name} = 7\n"),
            "listeners" => format!("[[listeners]]\nbind = \"127.0.0.1:1\"\n{name} = 7\n"),
            dotted => format!("[{dotted}]\n{name} = 7\n"),
        };
        let by_old = Config::from_toml(&spelled(old)).unwrap_or_else(|err| panic!("{table} {old}: {err}"));
        let by_new = Config::from_toml(&spelled(new)).unwrap_or_else(|err| panic!("{table} {new}: {err}"));
        assert_eq!(by_old, by_new, "[{table}] {old} is read as {new}");
        assert_ne!(by_new, Config::default(), "[{table}] {new} = 7 changed nothing");
        let warnings = super::deprecated_name_warnings(&spelled(old), path);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains(&format!("{old} is deprecated, read as {new}")), "{warnings:?}");
        assert!(super::deprecated_name_warnings(&spelled(new), path).is_empty());
    }
}
