//! `ValidationError`: why a `[[validation]]` rule cannot be compiled. Every error names the rule by index
//! and filter, and the file when a file is at fault.

use std::path::PathBuf;

/// A rule that cannot be used; `problem` says which of its fields is wrong.
#[derive(Debug, thiserror::Error)]
#[error("validation rule {index} (filter {filter:?}): {problem}")]
pub struct ValidationError {
    pub index: usize,
    pub filter: String,
    pub problem: RuleProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleProblem {
    #[error("more than {max} validation rules")]
    TooManyRules { max: usize },
    #[error("`filter` is not a valid topic filter ({reason})")]
    BadFilter { reason: String },
    #[error("no check: set one of {KNOWN_CHECKS}")]
    NoCheck,
    #[error("more than one check ({checks}): write one rule per check")]
    SeveralChecks { checks: String },
    #[error("unknown check or field `{key}` (checks: {KNOWN_CHECKS})")]
    UnknownCheck { key: String },
    #[error("`{field}` {reason}")]
    BadValue { field: &'static str, reason: &'static str },
    #[error("on_invalid = \"divert\" needs `divert_to`")]
    DivertWithoutTarget,
    #[error("`divert_to` is set but on_invalid is not \"divert\"")]
    TargetWithoutDivert,
    #[error("bad `divert_to` {template:?}: {reason}")]
    BadDivertTarget { template: String, reason: String },
    #[error("cannot read {field} {path}: {source}")]
    ReadFile { field: &'static str, path: PathBuf, source: std::io::Error },
    #[error("json_schema_file {path}: not JSON ({reason})")]
    SchemaNotJson { path: PathBuf, reason: String },
    #[error("json_schema_file {path}: not a valid JSON Schema ({reason})")]
    BadSchema { path: PathBuf, reason: String },
    #[error("forbidden_words_file {path} line {line}: bad regex ({reason})")]
    BadRegex { path: PathBuf, line: usize, reason: String },
    #[error("forbidden_words_file {path}: the words and patterns together are too large ({reason})")]
    WordsTooLarge { path: PathBuf, reason: String },
    #[error("forbidden_words_file {path}: no words in it")]
    NoWords { path: PathBuf },
}

pub const KNOWN_CHECKS: &str = "max_payload_bytes, min_payload_bytes, require_utf8, require_json, json_schema_file, \
                                forbidden_words_file, required_user_properties, required_content_type";
