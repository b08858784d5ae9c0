//! `RuleSet`: the compiled `[[validation]]` rules, built once at start and shared by every shard
//! (`Arc<RuleSet>`, immutable, Send + Sync). A topic finds the rules whose filter matches it with one
//! lookup in a `FilterMap` (exact filters in a hash map, wildcard filters in a trie), then the rules run
//! in config order and the first that fails decides.

use std::fmt;

use smallvec::SmallVec;

use super::check::Check;
use super::divert::DivertTemplate;
use super::error::{RuleProblem, ValidationError};
use super::rule::{OnInvalid, ValidationRule};
use crate::broker::trie::{FilterMap, TrieValue};
use crate::protocol::topic::validate_topic_filter;
use crate::protocol::Properties;

/// Most `[[validation]]` tables one config may have.
pub const RULES_MAX: usize = 1024;

/// Indices (config order) of the rules with one filter.
#[derive(Default)]
struct RuleIndices(SmallVec<[u16; 2]>);

impl TrieValue for RuleIndices {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One compiled rule.
pub struct CompiledRule {
    label: String,
    filter: String,
    check: Check,
    on_invalid: OnInvalid,
    divert_to: Option<DivertTemplate>,
}

impl CompiledRule {
    /// The rule's `name`, or `INDEX:FILTER` when it has none.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }

    pub fn on_invalid(&self) -> OnInvalid {
        self.on_invalid
    }

    /// Where a message on `topic` that failed goes with `on_invalid = "divert"`; `None` if the template
    /// gives no valid topic name for it (the message is then rejected).
    pub fn divert_topic(&self, topic: &str) -> Option<String> {
        self.divert_to.as_ref()?.render(topic)
    }
}

/// A message failed rule `rule` (index into the set) because of `detail`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub rule: usize,
    pub detail: String,
}

/// The compiled rules; see the module doc.
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    filters: FilterMap<RuleIndices>,
    /// The rules as configured, for `reload` and equality.
    source: Vec<ValidationRule>,
}

impl RuleSet {
    /// Compiles `rules` (reading their schema and word files). The error names the rule and the file.
    pub fn compile(rules: &[ValidationRule]) -> Result<RuleSet, ValidationError> {
        let mut set =
            RuleSet { rules: Vec::with_capacity(rules.len()), filters: FilterMap::default(), source: rules.to_vec() };
        for (index, rule) in rules.iter().enumerate() {
            let error = |problem| ValidationError { index, filter: rule.filter.clone(), problem };
            if index >= RULES_MAX {
                return Err(error(RuleProblem::TooManyRules { max: RULES_MAX }));
            }
            let compiled = compile_rule(index, rule).map_err(error)?;
            set.filters.value_or_default(&rule.filter).0.push(index as u16);
            set.rules.push(compiled);
        }
        Ok(set)
    }

    /// The same rules compiled again, their schema and word files read anew (for SIGHUP). On error the
    /// caller keeps using `self`.
    pub fn reload(&self) -> Result<RuleSet, ValidationError> {
        RuleSet::compile(&self.source)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule(&self, index: usize) -> Option<&CompiledRule> {
        self.rules.get(index)
    }

    /// The rules as configured.
    pub fn source(&self) -> &[ValidationRule] {
        &self.source
    }

    /// The first rule (in config order) that a message on `topic` fails, if any.
    pub fn check(&self, topic: &str, payload: &[u8], properties: &Properties) -> Option<Failure> {
        let mut matching: SmallVec<[u16; 8]> = SmallVec::new();
        self.filters.for_each_match(topic, |indices| matching.extend_from_slice(&indices.0));
        if matching.is_empty() {
            return None;
        }
        matching.sort_unstable();
        matching.into_iter().find_map(|index| {
            let index = usize::from(index);
            let detail = self.rules[index].check.failure(payload, properties)?;
            Some(Failure { rule: index, detail })
        })
    }
}

fn compile_rule(index: usize, rule: &ValidationRule) -> Result<CompiledRule, RuleProblem> {
    if rule.filter.is_empty() {
        return Err(RuleProblem::BadValue { field: "filter", reason: "is missing" });
    }
    validate_topic_filter(&rule.filter).map_err(|err| RuleProblem::BadFilter { reason: err.to_string() })?;
    if rule.filter.starts_with("$share/") {
        return Err(RuleProblem::BadFilter { reason: "a shared subscription is no topic filter here".into() });
    }
    let check = Check::compile(rule)?;
    let divert_to = match (rule.on_invalid, &rule.divert_to) {
        (OnInvalid::Divert, None) => return Err(RuleProblem::DivertWithoutTarget),
        (OnInvalid::Divert, Some(template)) => Some(
            DivertTemplate::parse(template, &rule.filter)
                .map_err(|reason| RuleProblem::BadDivertTarget { template: template.clone(), reason })?,
        ),
        (_, Some(_)) => return Err(RuleProblem::TargetWithoutDivert),
        (_, None) => None,
    };
    let label = match &rule.name {
        Some(name) if !name.is_empty() => name.clone(),
        _ => format!("{index}:{}", rule.filter),
    };
    Ok(CompiledRule { label, filter: rule.filter.clone(), check, on_invalid: rule.on_invalid, divert_to })
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.rules.iter().map(|rule| (&rule.label, rule.on_invalid))).finish()
    }
}

/// Two sets are equal when they were compiled from the same rules (so `BrokerSettings` can compare).
impl PartialEq for RuleSet {
    fn eq(&self, other: &RuleSet) -> bool {
        self.source == other.source
    }
}

// A compiled set never holds unknown keys (compile refuses them), so no float can make `eq` irreflexive.
impl Eq for RuleSet {}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(filter: &str) -> ValidationRule {
        ValidationRule { filter: filter.into(), max_payload_bytes: Some(4), ..ValidationRule::default() }
    }

    #[test]
    fn a_topic_no_filter_matches_passes_whatever_it_carries() {
        let set = RuleSet::compile(&[rule("chat/+"), rule("devices/exact")]).unwrap();
        assert_eq!(set.check("other/topic", b"far too long", &Properties::default()), None);
        assert_eq!(set.check("devices/exact/more", b"far too long", &Properties::default()), None);
        assert_eq!(
            set.check("chat/room", b"far too long", &Properties::default()).map(|failure| failure.rule),
            Some(0)
        );
        assert_eq!(
            set.check("devices/exact", b"far too long", &Properties::default()).map(|failure| failure.rule),
            Some(1)
        );
        assert_eq!(set.check("chat/room", b"ok", &Properties::default()), None);
    }

    #[test]
    fn rules_run_in_config_order_and_the_first_failure_decides() {
        let rules = [
            ValidationRule { filter: "a/#".into(), require_json: Some(true), ..ValidationRule::default() },
            ValidationRule { filter: "a/b".into(), max_payload_bytes: Some(2), ..ValidationRule::default() },
            ValidationRule { filter: "+/b".into(), min_payload_bytes: Some(100), ..ValidationRule::default() },
        ];
        let set = RuleSet::compile(&rules).unwrap();
        assert_eq!(set.check("a/b", b"[1, 2]", &Properties::default()).map(|failure| failure.rule), Some(1));
        assert_eq!(set.check("a/b", b"nope", &Properties::default()).map(|failure| failure.rule), Some(0));
        assert_eq!(set.check("x/b", b"{}", &Properties::default()).map(|failure| failure.rule), Some(2));
    }

    #[test]
    fn wildcards_do_not_match_dollar_topics_mqtt_4_7_2_1() {
        let set = RuleSet::compile(&[rule("#"), rule("+/x")]).unwrap();
        assert_eq!(set.check("$SYS/x", b"far too long", &Properties::default()), None);
        assert!(set.check("a/x", b"far too long", &Properties::default()).is_some());
    }

    #[test]
    fn labels_are_the_name_or_index_and_filter() {
        let named = ValidationRule { name: Some("chat-size".into()), ..rule("chat/#") };
        let set = RuleSet::compile(&[rule("a"), named]).unwrap();
        assert_eq!(set.rule(0).unwrap().label(), "0:a");
        assert_eq!(set.rule(1).unwrap().label(), "chat-size");
    }

    #[test]
    fn config_errors_name_the_rule_by_index_and_filter() {
        let bad_filter = RuleSet::compile(&[rule("ok"), rule("a/#/b")]).unwrap_err().to_string();
        assert!(bad_filter.starts_with("validation rule 1 (filter \"a/#/b\")"), "{bad_filter}");
        let divert = ValidationRule { on_invalid: OnInvalid::Divert, ..rule("a/+") };
        let err = RuleSet::compile(&[divert]).unwrap_err();
        assert!(matches!(err.problem, RuleProblem::DivertWithoutTarget), "{err}");
        let target = ValidationRule { divert_to: Some("x".into()), ..rule("a/+") };
        assert!(matches!(RuleSet::compile(&[target]).unwrap_err().problem, RuleProblem::TargetWithoutDivert));
        let far = ValidationRule { on_invalid: OnInvalid::Divert, divert_to: Some("r/{5}".into()), ..rule("a/+") };
        let err = RuleSet::compile(&[far]).unwrap_err().to_string();
        assert!(err.contains("bad `divert_to` \"r/{5}\""), "{err}");
        let shared = RuleSet::compile(&[rule("$share/g/a")]).unwrap_err();
        assert!(matches!(shared.problem, RuleProblem::BadFilter { .. }));
    }

    #[test]
    fn divert_topics_are_built_from_the_original_levels() {
        let divert = ValidationRule {
            on_invalid: OnInvalid::Divert,
            divert_to: Some("chat/messages/{2}/{3}/rejected".into()),
            ..rule("chat/messages/+/+")
        };
        let set = RuleSet::compile(&[divert]).unwrap();
        let topic = set.rule(0).unwrap().divert_topic("chat/messages/lobby/alice");
        assert_eq!(topic.as_deref(), Some("chat/messages/lobby/alice/rejected"));
    }

    #[test]
    fn the_set_is_shared_between_threads_and_reload_reads_files_again() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<RuleSet>();
        let dir = std::env::temp_dir().join(format!("shardmq-rule-set-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("words.txt");
        std::fs::write(&path, "spam\n").unwrap();
        let words = ValidationRule {
            filter: "#".into(),
            forbidden_words_file: Some(path.clone()),
            ..ValidationRule::default()
        };
        let set = RuleSet::compile(&[words]).unwrap();
        assert!(set.check("t", b"eggs", &Properties::default()).is_none());
        std::fs::write(&path, "eggs\n").unwrap();
        let reloaded = set.reload().expect("valid file");
        assert!(reloaded.check("t", b"eggs", &Properties::default()).is_some());
        assert!(set.check("t", b"eggs", &Properties::default()).is_none(), "the old set is unchanged");
        std::fs::write(&path, "regex:(\n").unwrap();
        let err = reloaded.reload().unwrap_err().to_string();
        assert!(err.contains("validation rule 0 (filter \"#\")") && err.contains("line 1: bad regex"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
