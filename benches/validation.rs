//! Cost of `[[validation]]` rules per message: a JSON Schema check of a 200-byte chat message, a
//! forbidden-words scan of it, and the lookup a publish pays when no rule's filter matches its topic.
//!
//! `cargo bench --bench validation` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardmq::protocol::Properties;
use shardmq::validation::{RuleSet, ValidationRule};

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["text", "user", "sent_at"],
  "additionalProperties": false,
  "properties": {
    "text": {"type": "string", "minLength": 1, "maxLength": 500},
    "user": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"},
    "sent_at": {"type": "integer", "minimum": 0},
    "reply_to": {"type": ["string", "null"]}
  }
}"#;

fn message_200_bytes() -> Vec<u8> {
    let text = "x".repeat(125);
    let message = format!(r#"{{"text":"{text}","user":"alice_42","sent_at":1764700000,"reply_to":null}}"#);
    let mut bytes = message.into_bytes();
    while bytes.len() < 200 {
        bytes.insert(9, b'y');
    }
    assert_eq!(bytes.len(), 200);
    bytes
}

fn rules(dir: &std::path::Path) -> RuleSet {
    let schema = dir.join("chat.schema.json");
    std::fs::write(&schema, SCHEMA).expect("write schema");
    let words = dir.join("words.txt");
    let list: String = (0..200).map(|n| format!("badword{n}\n")).collect::<String>() + "regex:free\\s+money\n";
    std::fs::write(&words, list).expect("write words");
    let chat = |filter: &str| ValidationRule { filter: filter.into(), ..ValidationRule::default() };
    RuleSet::compile(&[
        ValidationRule { json_schema_file: Some(schema), ..chat("chat/messages/+/+") },
        ValidationRule { forbidden_words_file: Some(words), case_insensitive: true, ..chat("words/messages/+/+") },
        ValidationRule { max_payload_bytes: Some(4096), ..chat("devices/+/telemetry") },
        ValidationRule { require_json: Some(true), ..chat("orders/new") },
    ])
    .expect("rules compile")
}

fn validation(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("shardmq-bench-validation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let set = rules(&dir);
    let payload = message_200_bytes();
    let properties = Properties::default();
    assert_eq!(set.check("chat/messages/lobby/alice", &payload, &properties), None);
    assert_eq!(set.check("words/messages/lobby/alice", &payload, &properties), None);

    let mut group = c.benchmark_group("validation");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_schema_200_bytes", |b| {
        b.iter(|| set.check(black_box("chat/messages/lobby/alice"), black_box(&payload), &properties))
    });
    group.bench_function("forbidden_words_201_lines_200_bytes", |b| {
        b.iter(|| set.check(black_box("words/messages/lobby/alice"), black_box(&payload), &properties))
    });
    group.bench_function("no_rule_matches_wildcard_levels", |b| {
        b.iter(|| set.check(black_box("chat/presence/lobby/alice"), black_box(&payload), &properties))
    });
    group.bench_function("no_rule_matches_other_root", |b| {
        b.iter(|| set.check(black_box("sensors/building-7/floor-3/temp"), black_box(&payload), &properties))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, validation);
criterion_main!(benches);
