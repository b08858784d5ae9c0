//! `DivertTemplate`: the `divert_to` topic of a rule, with `{N}` standing for level N (counted from 0) of
//! the original topic. Checked at load against the rule's filter, so every `{N}` names a level that any
//! matching topic has.

use crate::protocol::topic::validate_topic_name;

#[derive(Debug)]
enum Part {
    Literal(String),
    Level(usize),
}

#[derive(Debug)]
pub struct DivertTemplate {
    parts: Vec<Part>,
}

impl DivertTemplate {
    /// Parses `template`; `filter` is the rule's filter, which bounds the levels a `{N}` may name.
    pub fn parse(template: &str, filter: &str) -> Result<DivertTemplate, String> {
        // Every topic name has a level 0; `a/#` also matches `a`, so the `#` level itself is not sure.
        let guaranteed_levels = filter.split('/').take_while(|level| *level != "#").count().max(1);
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or("`{` without `}`")? + open;
            let number = &rest[open + 1..close];
            let level: usize = number.parse().map_err(|_| format!("`{{{number}}}` is not a level number"))?;
            if level >= guaranteed_levels {
                return Err(format!(
                    "`{{{level}}}`: topics matching the filter are only sure to have levels 0 to {}",
                    guaranteed_levels.saturating_sub(1)
                ));
            }
            parts.push(Part::Level(level));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        for part in &parts {
            if let Part::Literal(text) = part {
                if text.contains(['+', '#', '}']) {
                    return Err("a topic name has no `+`, `#` or stray `}`".to_string());
                }
            }
        }
        if parts.is_empty() {
            return Err("empty".to_string());
        }
        Ok(DivertTemplate { parts })
    }

    /// The divert topic for `topic`; `None` if it comes out as no valid topic name (e.g. empty).
    pub fn render(&self, topic: &str) -> Option<String> {
        let mut out = String::with_capacity(topic.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Level(level) => out.push_str(topic.split('/').nth(*level)?),
            }
        }
        validate_topic_name(&out).ok().map(|()| out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_counted_from_zero() {
        let template = DivertTemplate::parse("chat/messages/{2}/{3}/rejected", "chat/messages/+/+").expect("valid");
        assert_eq!(template.render("chat/messages/lobby/alice").as_deref(), Some("chat/messages/lobby/alice/rejected"));
        let template = DivertTemplate::parse("rejected/{0}", "#").expect("every topic has a level 0");
        assert_eq!(template.render("lobby").as_deref(), Some("rejected/lobby"));
    }

    #[test]
    fn a_level_beyond_what_the_filter_guarantees_is_refused() {
        let err = DivertTemplate::parse("x/{2}", "chat/#").expect_err("chat/# guarantees one level");
        assert!(err.contains("levels 0 to 0"), "{err}");
        assert!(DivertTemplate::parse("x/{1}", "chat/+/#").is_ok());
    }

    #[test]
    fn wildcards_and_bad_placeholders_are_refused() {
        assert!(DivertTemplate::parse("bad/+/{0}", "a/b").is_err());
        assert!(DivertTemplate::parse("bad/{x}", "a/b").is_err());
        assert!(DivertTemplate::parse("bad/{0", "a/b").is_err());
        assert!(DivertTemplate::parse("bad/0}", "a/b").is_err());
        assert!(DivertTemplate::parse("", "a/b").is_err());
    }

    #[test]
    fn a_template_without_levels_is_a_fixed_topic() {
        let template = DivertTemplate::parse("quarantine", "a/#").expect("valid");
        assert_eq!(template.render("a/b/c").as_deref(), Some("quarantine"));
    }
}
