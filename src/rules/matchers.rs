//! Alertmanager label matchers (`alerts.rollback_on` / `alerts.pause_on`).
//!
//! The syntax is Prometheus's: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"`, several joined by commas (AND), optionally inside braces. A rule lists
//! several such sets (OR). Regexes are anchored at both ends, as in Prometheus and Alertmanager,
//! so `severity=~"crit"` does not match `critical`. Parsing happens at rule load time so that a
//! typo is reported with file:line:col instead of silently never matching during an incident.

use std::collections::BTreeMap;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One `name op "value"` term.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// A missing label has the value "", as in Prometheus: `foo!="x"` matches an alert without
    /// `foo`, and `foo=""` matches only such alerts.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

/// A comma-separated list of matchers that must all hold.
#[derive(Debug, Clone)]
pub struct MatcherSet(pub Vec<Matcher>);

impl MatcherSet {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|m| m.matches(labels))
    }
}

/// Parses one matcher set, e.g. `severity="critical", service=~"checkout-.*"`.
pub fn parse(text: &str) -> Result<MatcherSet, String> {
    let mut s = text.trim();
    if let Some(inner) = s.strip_prefix('{') {
        s = inner
            .strip_suffix('}')
            .ok_or("opening `{` without a closing `}`")?
            .trim();
    }
    if s.is_empty() {
        return Err("empty matcher; write e.g. alertname=\"APIDown\"".into());
    }
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let (m, after) = parse_one(rest)?;
        out.push(m);
        let after = after.trim_start();
        if after.is_empty() {
            break;
        }
        rest = after
            .strip_prefix(',')
            .ok_or_else(|| format!("expected `,` between matchers before {after:?}"))?
            .trim_start();
        if rest.is_empty() {
            break;
        }
    }
    Ok(MatcherSet(out))
}

fn parse_one(s: &str) -> Result<(Matcher, &str), String> {
    let name_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let name = &s[..name_len];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "expected a label name at {s:?}; write name=\"value\""
        ));
    }
    let rest = s[name_len..].trim_start();
    let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
        (MatchOp::Regex, r)
    } else if let Some(r) = rest.strip_prefix("!~") {
        (MatchOp::NotRegex, r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        (MatchOp::NotEqual, r)
    } else if let Some(r) = rest.strip_prefix('=') {
        (MatchOp::Equal, r)
    } else {
        return Err(format!(
            "label {name}: expected one of =, !=, =~, !~ after the name"
        ));
    };
    let (value, rest) = parse_value(rest.trim_start()).map_err(|e| format!("label {name}: {e}"))?;
    let regex = match op {
        MatchOp::Regex | MatchOp::NotRegex => Some(
            Regex::new(&format!("^(?:{value})$"))
                .map_err(|e| format!("label {name}: invalid regex {value:?}: {e}"))?,
        ),
        _ => None,
    };
    Ok((
        Matcher {
            name: name.to_string(),
            op,
            value,
            regex,
        },
        rest,
    ))
}

/// A double-quoted string with `\"`, `\\` and `\n` escapes, or a bare word up to the next comma.
fn parse_value(s: &str) -> Result<(String, &str), String> {
    let Some(body) = s.strip_prefix('"') else {
        let end = s.find([',', '}']).unwrap_or(s.len());
        let word = s[..end].trim();
        if word.is_empty() {
            return Err("missing value".into());
        }
        if word.contains(['"', '=', '!', '~', ' ', '{']) {
            return Err(format!("unquoted value {word:?}; quote it: \"value\""));
        }
        return Ok((word.to_string(), &s[end..]));
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, e)) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated quoted value".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_like_prometheus() {
        let l = labels(&[("alertname", "APIDown"), ("severity", "critical")]);
        assert!(parse(r#"alertname="APIDown""#).unwrap().matches(&l));
        assert!(!parse(r#"alertname!="APIDown""#).unwrap().matches(&l));
        assert!(parse(r#"severity=~"crit.*""#).unwrap().matches(&l));
        assert!(
            !parse(r#"severity=~"crit""#).unwrap().matches(&l),
            "anchored"
        );
        assert!(parse(r#"severity!~"warn|info""#).unwrap().matches(&l));
        assert!(
            parse(r#"service="""#).unwrap().matches(&l),
            "missing label is empty"
        );
    }

    #[test]
    fn comma_is_and_and_braces_are_optional() {
        let l = labels(&[("severity", "critical"), ("service", "checkout-api")]);
        let set = parse(r#"{severity="critical", service="checkout-api"}"#).unwrap();
        assert_eq!(set.0.len(), 2);
        assert!(set.matches(&l));
        assert!(
            !parse(r#"severity="critical", service="other""#)
                .unwrap()
                .matches(&l)
        );
    }

    #[test]
    fn mistakes_are_reported() {
        for bad in [
            "",
            "severity",
            r#"severity=="x""#,
            r#"severity="x" service="y""#,
            r#"severity=~"(""#,
            r#"severity="open"#,
            r#"{severity="x""#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
