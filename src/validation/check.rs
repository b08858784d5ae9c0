//! `Check`: the compiled check of one rule and how a message is tested against it. Each `failure` answers
//! `None` for a message that passes, else a short text saying why (sent back as a v5 Reason String and
//! with a diverted message, so it never echoes the payload).

use std::path::{Path, PathBuf};

use crate::protocol::Properties;

use super::error::RuleProblem;
use super::forbidden_words::ForbiddenWords;
use super::rule::ValidationRule;

pub enum Check {
    MaxPayloadBytes(usize),
    MinPayloadBytes(usize),
    Utf8,
    Json,
    JsonSchema { path: PathBuf, validator: jsonschema::Validator },
    ForbiddenWords(ForbiddenWords),
    RequiredUserProperties(Vec<String>),
    RequiredContentType(String),
}

impl Check {
    /// The one check `rule` sets, compiled (schema and word files read now).
    pub fn compile(rule: &ValidationRule) -> Result<Check, RuleProblem> {
        if let Some(key) = rule.unknown.keys().next() {
            return Err(RuleProblem::UnknownCheck { key: key.clone() });
        }
        let set: Vec<&str> = [
            ("max_payload_bytes", rule.max_payload_bytes.is_some()),
            ("min_payload_bytes", rule.min_payload_bytes.is_some()),
            ("require_utf8", rule.require_utf8 == Some(true)),
            ("require_json", rule.require_json == Some(true)),
            ("json_schema_file", rule.json_schema_file.is_some()),
            ("forbidden_words_file", rule.forbidden_words_file.is_some()),
            ("required_user_properties", rule.required_user_properties.is_some()),
            ("required_content_type", rule.required_content_type.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, is_set)| is_set.then_some(name))
        .collect();
        match set.as_slice() {
            [] => return Err(RuleProblem::NoCheck),
            [_] => {}
            several => return Err(RuleProblem::SeveralChecks { checks: several.join(", ") }),
        }
        if rule.case_insensitive && rule.forbidden_words_file.is_none() {
            return Err(RuleProblem::BadValue {
                field: "case_insensitive",
                reason: "applies only to forbidden_words_file",
            });
        }
        if let Some(bytes) = rule.max_payload_bytes {
            return Ok(Check::MaxPayloadBytes(bytes));
        }
        if let Some(bytes) = rule.min_payload_bytes {
            return Ok(Check::MinPayloadBytes(bytes));
        }
        if rule.require_utf8 == Some(true) {
            return Ok(Check::Utf8);
        }
        if rule.require_json == Some(true) {
            return Ok(Check::Json);
        }
        if let Some(path) = &rule.json_schema_file {
            return Ok(Check::JsonSchema { path: path.clone(), validator: load_schema(path)? });
        }
        if let Some(path) = &rule.forbidden_words_file {
            return Ok(Check::ForbiddenWords(ForbiddenWords::load(path, rule.case_insensitive)?));
        }
        if let Some(names) = &rule.required_user_properties {
            if names.is_empty() {
                return Err(RuleProblem::BadValue { field: "required_user_properties", reason: "lists no name" });
            }
            return Ok(Check::RequiredUserProperties(names.clone()));
        }
        let content_type = rule.required_content_type.clone().unwrap_or_default();
        Ok(Check::RequiredContentType(content_type))
    }

    /// Why the message fails this check, or `None` if it passes.
    pub fn failure(&self, payload: &[u8], properties: &Properties) -> Option<String> {
        match self {
            Check::MaxPayloadBytes(max) => {
                (payload.len() > *max).then(|| format!("payload of {} bytes is over {max}", payload.len()))
            }
            Check::MinPayloadBytes(min) => {
                (payload.len() < *min).then(|| format!("payload of {} bytes is under {min}", payload.len()))
            }
            // Payload Format Indicator 1: the core has already refused a payload that is not UTF-8.
            Check::Utf8 if properties.payload_format_indicator == Some(1) => None,
            Check::Utf8 => std::str::from_utf8(payload).is_err().then(|| "payload is not UTF-8".to_string()),
            Check::Json => serde_json::from_slice::<serde::de::IgnoredAny>(payload)
                .err()
                .map(|err| format!("payload is not JSON ({err})")),
            Check::JsonSchema { path, validator } => schema_failure(path, validator, payload),
            Check::ForbiddenWords(words) => words.first_match(payload).map(|line| {
                let file = words.path().file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
                format!("contains a forbidden word ({file} line {line})")
            }),
            Check::RequiredUserProperties(names) => names
                .iter()
                .find(|name| !properties.user_properties.iter().any(|(key, _)| key == name.as_str()))
                .map(|name| format!("user property {name:?} is missing")),
            Check::RequiredContentType(wanted) => match properties.content_type.as_deref() {
                Some(content_type) if content_type == wanted => None,
                Some(content_type) => Some(format!("content type {content_type:?} is not {wanted:?}")),
                None => Some(format!("content type {wanted:?} is missing")),
            },
        }
    }
}

fn load_schema(path: &Path) -> Result<jsonschema::Validator, RuleProblem> {
    let text = std::fs::read_to_string(path).map_err(|source| RuleProblem::ReadFile {
        field: "json_schema_file",
        path: path.to_path_buf(),
        source,
    })?;
    let schema: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| RuleProblem::SchemaNotJson { path: path.to_path_buf(), reason: err.to_string() })?;
    jsonschema::validator_for(&schema)
        .map_err(|err| RuleProblem::BadSchema { path: path.to_path_buf(), reason: err.to_string() })
}

fn schema_failure(path: &Path, validator: &jsonschema::Validator, payload: &[u8]) -> Option<String> {
    let instance: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(instance) => instance,
        Err(err) => return Some(format!("payload is not JSON ({err})")),
    };
    if validator.is_valid(&instance) {
        return None;
    }
    let file = path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    let detail = match validator.validate(&instance) {
        Err(err) => {
            let at = err.instance_path().to_string();
            let at = if at.is_empty() { String::new() } else { format!(" at {at}") };
            format!("{}{at}", err.masked())
        }
        Ok(()) => "no detail".to_string(),
    };
    Some(format!("does not match {file}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ByteStr;

    fn compile(rule: ValidationRule) -> Check {
        Check::compile(&rule).expect("rule compiles")
    }

    fn fails(check: &Check, payload: &[u8]) -> Option<String> {
        check.failure(payload, &Properties::default())
    }

    #[test]
    fn payload_size_bounds() {
        let max = compile(ValidationRule { max_payload_bytes: Some(3), ..ValidationRule::default() });
        assert_eq!(fails(&max, b"abc"), None);
        assert_eq!(fails(&max, b"abcd").as_deref(), Some("payload of 4 bytes is over 3"));
        let min = compile(ValidationRule { min_payload_bytes: Some(1), ..ValidationRule::default() });
        assert!(fails(&min, b"").is_some());
        assert_eq!(fails(&min, b"x"), None);
    }

    #[test]
    fn utf8_check_trusts_a_payload_format_indicator_the_core_checked() {
        let check = compile(ValidationRule { require_utf8: Some(true), ..ValidationRule::default() });
        assert_eq!(fails(&check, "héllo".as_bytes()), None);
        assert_eq!(fails(&check, &[0xc3, 0x28]).as_deref(), Some("payload is not UTF-8"));
        let declared = Properties { payload_format_indicator: Some(1), ..Properties::default() };
        assert_eq!(check.failure("ok".as_bytes(), &declared), None);
        let bytes = Properties { payload_format_indicator: Some(0), ..Properties::default() };
        assert!(check.failure(&[0xff], &bytes).is_some(), "indicator 0 says nothing: still checked");
    }

    #[test]
    fn json_well_formedness() {
        let check = compile(ValidationRule { require_json: Some(true), ..ValidationRule::default() });
        assert_eq!(fails(&check, br#"{"a": [1, 2]}"#), None);
        assert_eq!(fails(&check, b"42"), None);
        assert!(fails(&check, br#"{"a": "#).unwrap().starts_with("payload is not JSON"));
        assert!(fails(&check, br#"{} {}"#).is_some(), "one value, nothing after it");
    }

    #[test]
    fn json_schema_names_the_missing_property_without_echoing_the_payload() {
        let dir = std::env::temp_dir().join(format!("shardmq-check-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chat.schema.json");
        std::fs::write(
            &path,
            r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string","maxLength":10}}}"#,
        )
        .unwrap();
        let check = compile(ValidationRule { json_schema_file: Some(path), ..ValidationRule::default() });
        assert_eq!(fails(&check, br#"{"text":"hi"}"#), None);
        let missing = fails(&check, br#"{"secret":"s3cr3t"}"#).expect("text is required");
        assert!(
            missing.contains("chat.schema.json") && missing.contains("\"text\" is a required property"),
            "{missing}"
        );
        assert!(!missing.contains("s3cr3t"), "{missing}");
        let long = fails(&check, br#"{"text":"far too long for it"}"#).expect("maxLength");
        assert!(long.contains("/text"), "{long}");
        assert!(fails(&check, b"not json").unwrap().contains("not JSON"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn required_user_properties_and_content_type() {
        let check = compile(ValidationRule {
            required_user_properties: Some(vec!["room".into(), "nick".into()]),
            ..ValidationRule::default()
        });
        let some =
            Properties { user_properties: vec![(ByteStr::from("room"), ByteStr::from("1"))], ..Properties::default() };
        assert_eq!(check.failure(b"", &some).as_deref(), Some("user property \"nick\" is missing"));
        let all = Properties {
            user_properties: vec![
                (ByteStr::from("nick"), ByteStr::from("a")),
                (ByteStr::from("room"), ByteStr::from("1")),
            ],
            ..Properties::default()
        };
        assert_eq!(check.failure(b"", &all), None);
        let check = compile(ValidationRule {
            required_content_type: Some("application/json".into()),
            ..ValidationRule::default()
        });
        assert!(fails(&check, b"{}").unwrap().contains("missing"));
        let json = Properties { content_type: Some(ByteStr::from("application/json")), ..Properties::default() };
        assert_eq!(check.failure(b"{}", &json), None);
        let text = Properties { content_type: Some(ByteStr::from("text/plain")), ..Properties::default() };
        assert!(check.failure(b"{}", &text).unwrap().contains("is not"));
    }

    #[test]
    fn a_rule_needs_exactly_one_known_check() {
        let none = Check::compile(&ValidationRule::default()).err().expect("no check");
        assert!(matches!(none, RuleProblem::NoCheck));
        let two = ValidationRule { max_payload_bytes: Some(1), require_json: Some(true), ..ValidationRule::default() };
        let err = Check::compile(&two).err().expect("two checks").to_string();
        assert!(err.contains("max_payload_bytes, require_json"), "{err}");
        let mut unknown = ValidationRule { require_json: Some(true), ..ValidationRule::default() };
        unknown.unknown.insert("max_payload_byte".into(), toml::Value::Integer(3));
        let err = Check::compile(&unknown).err().expect("unknown").to_string();
        assert!(err.contains("`max_payload_byte`"), "{err}");
    }

    #[test]
    fn a_broken_schema_file_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("shardmq-check-badschema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_json = dir.join("broken.json");
        std::fs::write(&not_json, "{\"type\": ").unwrap();
        let err =
            Check::compile(&ValidationRule { json_schema_file: Some(not_json.clone()), ..ValidationRule::default() });
        assert!(err.err().unwrap().to_string().contains(&*not_json.to_string_lossy()));
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"type": "no-such-type"}"#).unwrap();
        let err = Check::compile(&ValidationRule { json_schema_file: Some(bad.clone()), ..ValidationRule::default() });
        let err = err.err().expect("bad schema").to_string();
        assert!(err.contains("not a valid JSON Schema") && err.contains("bad.json"), "{err}");
        let missing = dir.join("missing.json");
        let err = Check::compile(&ValidationRule { json_schema_file: Some(missing), ..ValidationRule::default() });
        assert!(err.err().unwrap().to_string().contains("cannot read json_schema_file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
