//! `ForbiddenWords`: the words and patterns of a `forbidden_words_file`, compiled into one `RegexSet` so a
//! payload is scanned once however many lines the file has.
//!
//! A plain line is a word, matched whole (`ass` does not match `class`) and literally; a `regex:` line is a
//! pattern. Blank lines and lines starting with `#` are skipped.

use std::path::{Path, PathBuf};

use regex::bytes::{RegexSet, RegexSetBuilder};

use super::error::RuleProblem;

/// Compiled set of one file's lines; `lines[i]` is the file line of pattern `i`, for reports.
pub struct ForbiddenWords {
    set: RegexSet,
    lines: Vec<usize>,
    path: PathBuf,
}

/// Bound on the compiled automaton, so a huge word list fails at load instead of eating memory.
const COMPILED_BYTES_MAX: usize = 64 * 1024 * 1024;

impl ForbiddenWords {
    pub fn load(path: &Path, case_insensitive: bool) -> Result<ForbiddenWords, RuleProblem> {
        let text = std::fs::read_to_string(path).map_err(|source| RuleProblem::ReadFile {
            field: "forbidden_words_file",
            path: path.to_path_buf(),
            source,
        })?;
        ForbiddenWords::parse(&text, path, case_insensitive)
    }

    pub fn parse(text: &str, path: &Path, case_insensitive: bool) -> Result<ForbiddenWords, RuleProblem> {
        let mut patterns = Vec::new();
        let mut lines = Vec::new();
        for (number, line) in text.lines().enumerate().map(|(index, line)| (index + 1, line.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let pattern = match line.strip_prefix("regex:") {
                Some(pattern) => pattern.to_string(),
                None => whole_word(line),
            };
            // Compiled alone first so a bad line is reported by its number, not as "the set failed".
            RegexSetBuilder::new([&pattern]).case_insensitive(case_insensitive).build().map_err(|err| {
                RuleProblem::BadRegex { path: path.to_path_buf(), line: number, reason: one_line(&err.to_string()) }
            })?;
            patterns.push(pattern);
            lines.push(number);
        }
        if patterns.is_empty() {
            return Err(RuleProblem::NoWords { path: path.to_path_buf() });
        }
        let set = RegexSetBuilder::new(&patterns)
            .case_insensitive(case_insensitive)
            .size_limit(COMPILED_BYTES_MAX)
            .build()
            .map_err(|err| RuleProblem::WordsTooLarge {
                path: path.to_path_buf(),
                reason: one_line(&err.to_string()),
            })?;
        Ok(ForbiddenWords { set, lines, path: path.to_path_buf() })
    }

    /// The file line of the first word or pattern found in `payload`, if any.
    pub fn first_match(&self, payload: &[u8]) -> Option<usize> {
        if !self.set.is_match(payload) {
            return None;
        }
        self.set.matches(payload).iter().next().map(|pattern| self.lines[pattern])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A literal word with word boundaries on the sides that are word characters (`\b` next to `@` would
/// never match).
fn whole_word(word: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let start = if is_word(word.chars().next()) { r"\b" } else { "" };
    let end = if is_word(word.chars().next_back()) { r"\b" } else { "" };
    format!("{start}{}{end}", regex::escape(word))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, case_insensitive: bool) -> ForbiddenWords {
        ForbiddenWords::parse(text, Path::new("words.txt"), case_insensitive).expect("valid word list")
    }

    #[test]
    fn a_word_matches_whole_words_only() {
        let list = words("ass\n", false);
        assert_eq!(list.first_match(b"you ass!"), Some(1));
        assert_eq!(list.first_match(b"first class"), None);
        assert_eq!(list.first_match(b"ass"), Some(1));
    }

    #[test]
    fn words_are_literal_not_patterns() {
        let list = words("a.b\n", false);
        assert_eq!(list.first_match(b"say a.b now"), Some(1));
        assert_eq!(list.first_match(b"say axb now"), None);
    }

    #[test]
    fn regex_lines_are_patterns_and_comments_are_skipped() {
        let list = words("# comment\n\nspam\nregex:buy\\s+now\n", false);
        assert_eq!(list.first_match(b"please BUY NOW"), None, "case sensitive by default");
        assert_eq!(list.first_match(b"please buy   now"), Some(4));
        assert_eq!(list.first_match(b"# comment"), None);
    }

    #[test]
    fn case_insensitive_covers_words_and_patterns() {
        let list = words("spam\nregex:buy\\s+now\n", true);
        assert_eq!(list.first_match(b"SPAM"), Some(1));
        assert_eq!(list.first_match(b"Buy Now"), Some(2));
    }

    #[test]
    fn non_ascii_words_and_payloads_that_are_not_utf8() {
        let list = words("größe\n", true);
        assert_eq!(list.first_match("die GRÖSSE, die größe".as_bytes()), Some(1));
        assert_eq!(list.first_match(&[0xff, 0xfe, b' ', b'x']), None);
    }

    #[test]
    fn a_bad_regex_is_refused_with_file_and_line() {
        let err =
            ForbiddenWords::parse("fine\nregex:([a-z\n", Path::new("/etc/words.txt"), false).err().expect("bad regex");
        let text = err.to_string();
        assert!(text.contains("/etc/words.txt line 2: bad regex"), "{text}");
    }

    #[test]
    fn an_empty_list_is_refused() {
        let err = ForbiddenWords::parse("# only a comment\n", Path::new("w.txt"), false).err().expect("empty");
        assert!(matches!(err, RuleProblem::NoWords { .. }), "{err}");
    }
}
