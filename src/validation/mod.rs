//! Message validation: the `[[validation]]` rules of the config, checked by the publishing shard before a
//! message is routed (payload size, UTF-8, JSON, a JSON Schema, forbidden words, required v5 properties).
//!
//! - `rule`: a rule as configured (`ValidationRule`, `OnInvalid`); `error`: why one cannot be compiled.
//! - `rule_set`: the compiled, shared set (`RuleSet`) and its lookup by topic; `check`: one compiled
//!   check; `forbidden_words`: a word file as one `RegexSet`; `divert`: the `divert_to` template.
//!
//! What the core does with a `Failure` (reject, divert, disconnect) is in `broker::validation`.

mod check;
mod divert;
mod error;
mod forbidden_words;
mod rule;
mod rule_set;

pub use error::{RuleProblem, ValidationError, KNOWN_CHECKS};
pub use rule::{OnInvalid, ValidationRule};
pub use rule_set::{CompiledRule, Failure, RuleSet, RULES_MAX};
