//! Target `dynsec`: arbitrary bytes as a dynamic-security JSON file, then (after the first NUL byte, if
//! any) as a `$CONTROL/dynamic-security/v1` command payload applied to it. Parsing, compiling the rules,
//! checking them and applying commands must never panic; a command payload always gets a JSON answer; a
//! changed state must write and read back as the same file.

use crate::auth::dynsec::{apply_commands, DynsecFile, Rules};

const EMPTY_FILE: &[u8] = br#"{"clients":[],"groups":[],"roles":[]}"#;

pub fn check(data: &[u8]) {
    let (file_bytes, payload) = match data.iter().position(|&byte| byte == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let file = serde_json::from_slice::<DynsecFile>(file_bytes).ok();
    if let Some(file) = &file {
        check_rules(file);
    }
    let Some(payload) = payload else { return };
    let mut state = match file {
        Some(file) => file,
        None => serde_json::from_slice(EMPTY_FILE).expect("the empty file parses"),
    };
    let outcome = apply_commands(&mut state, payload);
    serde_json::from_slice::<serde_json::Value>(&outcome.response).expect("the answer is JSON");
    if outcome.changed {
        check_rules(&state);
        let text = serde_json::to_vec(&state).expect("the state serialises");
        let again: DynsecFile = serde_json::from_slice(&text).expect("the written state parses");
        assert_eq!(again, state, "writing and reading changed the state");
    }
}

fn check_rules(file: &DynsecFile) {
    let rules = Rules::compile(file);
    for username in [Some("admin"), Some("u"), None] {
        for topic in ["a/b", "$CONTROL/dynamic-security/v1", "#", "a/+"] {
            let _ = rules.may_publish(username, topic);
            let _ = rules.may_receive(username, topic);
            let _ = rules.may_subscribe(username, topic);
            let _ = rules.may_unsubscribe(username, topic);
        }
    }
}
