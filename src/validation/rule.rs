//! `ValidationRule`: one `[[validation]]` table of the config as written (a topic filter, one check, what to
//! do with a message that fails it). `RuleSet::compile` turns a list of them into the set the core uses.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One `[[validation]]` table. Exactly one check field must be set; which one is decided at compile.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct ValidationRule {
    /// MQTT topic filter (`+` and `#` allowed) of the published topics the rule applies to.
    pub filter: String,
    /// Shown in reason strings, logs and the `shardmq-rejected-by` user property; default `INDEX:FILTER`.
    pub name: Option<String>,
    pub max_payload_bytes: Option<usize>,
    pub min_payload_bytes: Option<usize>,
    /// The payload must be UTF-8 (a v5 Payload Format Indicator of 1 was already checked by the core).
    pub require_utf8: Option<bool>,
    /// The payload must be one well-formed JSON value.
    pub require_json: Option<bool>,
    /// A JSON Schema (any draft the `jsonschema` crate knows) the JSON payload must match.
    pub json_schema_file: Option<PathBuf>,
    /// One word (matched as a whole word) or `regex:PATTERN` per line; blank lines and `#` lines skipped.
    pub forbidden_words_file: Option<PathBuf>,
    /// For `forbidden_words_file`: match words and patterns ignoring case.
    pub case_insensitive: bool,
    /// v5 user properties (by name) the message must carry.
    pub required_user_properties: Option<Vec<String>>,
    /// The v5 Content Type the message must carry.
    pub required_content_type: Option<String>,
    pub on_invalid: OnInvalid,
    /// For `on_invalid = "divert"`: the topic to publish a failing message to instead. `{N}` is level N
    /// (from 0) of the original topic, e.g. `chat/messages/{2}/{3}/rejected`.
    pub divert_to: Option<String>,
    /// Keys that are no field above; refused at compile, naming the rule (serde would not name it).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

/// What happens to a message that fails its rule.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Not routed; v5 QoS 1/2 get PUBACK/PUBREC 0x99, 3.1.1 QoS 1/2 a plain acknowledgement.
    #[default]
    Reject,
    /// Published to the `divert_to` topic instead (retain off, `shardmq-rejected-by` user property added).
    Divert,
    /// Not routed and the connection is closed (v5: DISCONNECT 0x99 first).
    Disconnect,
}
