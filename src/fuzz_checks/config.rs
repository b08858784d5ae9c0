//! Target `config`: arbitrary text as a shardmq TOML config and as a mosquitto.conf (the first byte picks
//! which). Parsing, validating and listing the listeners must never panic, whatever the file says; a config
//! that parses and validates must give its listeners without error or panic.

use std::path::Path;

use crate::config::{deprecated_name_warnings, mosquitto, Config};

pub fn check(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let path = Path::new("fuzz.conf");
    if first % 2 == 0 {
        let _ = deprecated_name_warnings(text, path);
        if let Ok(config) = Config::from_toml(text) {
            if config.validate().is_ok() {
                let _ = config.effective_listeners();
                let _ = config.anonymous_remote_listeners();
            }
        }
    } else {
        let (config, findings) = mosquitto::from_str(text, path);
        let _ = mosquitto::Finding::lines(&findings);
        let _ = config.validate();
        let _ = config.effective_listeners();
    }
}
