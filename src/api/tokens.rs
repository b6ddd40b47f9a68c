//! Named API tokens, so every control is recorded with who applied it.
//!
//! `api_tokens_file` holds `name:token` lines (one per person or pipeline); the single
//! `CANARYD_API_TOKEN` / `api_token_file` keeps working as the token named `default`. A token is
//! compared in constant time against every entry (no early exit on a match), and only its name
//! ever leaves this module.

use std::sync::Arc;

/// Who sent a request: the name of its token, `anonymous` when the API has no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

/// The shortest token accepted, as for the single token (`Config::check_safe`).
pub const MIN_TOKEN_LEN: usize = 16;
/// Names reach logs, the API and reports: short, and nothing that needs escaping.
pub const MAX_NAME_LEN: usize = 64;
/// More lines than this is not a token file.
pub const MAX_TOKENS: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, Arc<str>)>,
}

impl Tokens {
    /// The configured tokens: the single token as `default`, then the named ones.
    pub fn new(default: Option<&str>, named: Vec<(String, String)>) -> Tokens {
        let mut entries: Vec<(String, Arc<str>)> = default
            .map(|t| ("default".to_string(), Arc::from(t)))
            .into_iter()
            .collect();
        entries.extend(named.into_iter().map(|(n, t)| (n, Arc::from(t.as_str()))));
        Tokens { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the token `given`, comparing against every entry in constant time.
    pub fn identify(&self, given: &str) -> Option<String> {
        let mut found = None;
        for (name, token) in &self.entries {
            if constant_time_eq::constant_time_eq(given.as_bytes(), token.as_bytes())
                && found.is_none()
            {
                found = Some(name.clone());
            }
        }
        found
    }

    /// Parses a tokens file: `name:token` per line, `#` comments and blank lines ignored.
    /// Errors name the line, never its token.
    pub fn parse_file(text: &str) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, token)) = line.split_once(':') else {
                return Err(format!("line {n}: expected name:token"));
            };
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty()
                || name.len() > MAX_NAME_LEN
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
            {
                return Err(format!(
                    "line {n}: a token name is 1 to {MAX_NAME_LEN} letters, digits, '.', '_', '-' or '@'"
                ));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {n}: the token of {name:?} is shorter than {MIN_TOKEN_LEN} characters"
                ));
            }
            if out.iter().any(|(other, _)| other == name) {
                return Err(format!("line {n}: token name {name:?} appears twice"));
            }
            if out.iter().any(|(_, other)| other == token) {
                return Err(format!(
                    "line {n}: the token of {name:?} is also another name's token"
                ));
            }
            out.push((name.to_string(), token.to_string()));
            if out.len() > MAX_TOKENS {
                return Err(format!("more than {MAX_TOKENS} tokens"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tokens_and_keeps_the_single_token_as_default() {
        let named = Tokens::parse_file(
            "# people\nalice: aaaaaaaaaaaaaaaaaaaa\n\nci-pipeline:bbbbbbbbbbbbbbbbbbbb\n",
        )
        .unwrap();
        let t = Tokens::new(Some("cccccccccccccccccccc"), named);
        assert_eq!(t.identify("aaaaaaaaaaaaaaaaaaaa").as_deref(), Some("alice"));
        assert_eq!(
            t.identify("bbbbbbbbbbbbbbbbbbbb").as_deref(),
            Some("ci-pipeline")
        );
        assert_eq!(
            t.identify("cccccccccccccccccccc").as_deref(),
            Some("default")
        );
        assert_eq!(t.identify("aaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(t.identify(""), None);
    }

    #[test]
    fn refuses_bad_lines_without_printing_the_token() {
        for (text, want) in [
            ("alice", "expected name:token"),
            ("alice:short", "shorter than 16"),
            ("al ice:aaaaaaaaaaaaaaaaaaaa", "token name"),
            (
                "a:aaaaaaaaaaaaaaaaaaaa\na:bbbbbbbbbbbbbbbbbbbb",
                "appears twice",
            ),
            (
                "a:aaaaaaaaaaaaaaaaaaaa\nb:aaaaaaaaaaaaaaaaaaaa",
                "also another",
            ),
        ] {
            let e = Tokens::parse_file(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("aaaaaaaaaaaa") && !e.contains("short\""), "{e}");
        }
    }
}
