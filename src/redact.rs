//! The one place a URL becomes text: without its userinfo (`user:password@`), its query string
//! and its fragment, which is where hook, probe, notification, Prometheus and Alertmanager URLs
//! carry their credentials (`?token=…`, `https://user:pass@host`).
//!
//! Two entry points: [`url`] for a URL canaryd holds, and [`text`] for free text that may embed
//! one (an HTTP client's error message names the URL it failed on). Both work on the text
//! itself rather than on a parsed [`url::Url`](reqwest::Url): a URL with nothing to hide comes
//! out byte for byte as it went in (no added `/`, no re-encoding), and a URL too broken to parse
//! still loses its secrets.
//!
//! Architecture Invariant: every path from a configured URL to an output (API body, log line,
//! error, rollback reason, alert, hook payload) goes through this module; nothing here reads the
//! URL's secrets back out.

use serde::Serializer;

/// What stands in for a removed part, so a reader knows something was there.
pub const MASK: &str = "***";

/// `https://user:pw@host/path?token=x#frag` → `https://***@host/path?***#***`.
pub fn url(u: &str) -> String {
    let mut out = String::with_capacity(u.len());
    let start = u
        .find("://")
        .filter(|&i| is_scheme(&u[..i]))
        .map_or(0, |i| i + 3);
    out.push_str(&u[..start]);
    scrub_from(u, start, &mut out, |_| false);
    out
}

/// Redacts every URL embedded in `s` (anything of the form `scheme://…`), leaving the rest.
///
/// A URL inside prose ends at whitespace, a quote, an angle bracket or a closing parenthesis
/// (reqwest writes `… for url (http://…)`); a query or fragment is cut up to there too.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = 0;
    while let Some(found) = s[rest..].find("://") {
        let sep = rest + found;
        let scheme_start = s[..sep]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(sep, |(i, _)| i);
        let authority = sep + 3;
        out.push_str(&s[rest..authority]);
        if scheme_start == sep {
            // `://` with no scheme before it is not a URL; keep it and move on.
            rest = authority;
            continue;
        }
        rest = scrub_from(s, authority, &mut out, ends_in_prose);
    }
    out.push_str(&s[rest..]);
    out
}

/// Serializes a URL field redacted: for types whose `Serialize` is for display (the rule as
/// `GET /api/v1/rules` shows it), never for persistence.
pub fn serialize_url<S: Serializer>(u: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&url(u))
}

/// [`serialize_url`] for an optional URL.
pub fn serialize_opt_url<S: Serializer>(u: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => serialize_url(u, s),
        None => s.serialize_none(),
    }
}

fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn ends_in_prose(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')')
}

/// Copies the URL whose authority starts at byte `start` of `s` into `out`, masked; returns the
/// byte where the URL ended. `ends` says which characters end the URL besides the end of `s`.
fn scrub_from(s: &str, start: usize, out: &mut String, ends: impl Fn(char) -> bool) -> usize {
    let end = s[start..]
        .char_indices()
        .find(|(_, c)| ends(*c))
        .map_or(s.len(), |(i, _)| start + i);
    let u = &s[start..end];
    // The authority runs to the first `/`, `?` or `#` (RFC 3986 §3.2); userinfo is what comes
    // before its last `@`, since an unencoded `@` in a password is still the password's.
    let authority_len = u.find(['/', '?', '#', '\\']).unwrap_or(u.len());
    let (authority, after) = u.split_at(authority_len);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match after.find(['?', '#']) {
        Some(q) => {
            out.push_str(&after[..q]);
            let fragment = after[q..].find('#').map(|f| q + f);
            if after[q..].starts_with('?') {
                out.push('?');
                out.push_str(MASK);
            }
            if fragment.is_some() {
                out.push('#');
                out.push_str(MASK);
            }
        }
        None => out.push_str(after),
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_without_secrets_is_unchanged() {
        for u in [
            "http://127.0.0.1:9090",
            "http://127.0.0.1:8001/health/ready",
            "https://hooks.example.com/a/b/",
            "127.0.0.1:9093",
            "",
        ] {
            assert_eq!(url(u), u);
        }
    }

    #[test]
    fn url_loses_userinfo_query_and_fragment() {
        assert_eq!(
            url("https://user:s3cret@host:8443/path?token=t0ken&x=1#frag"),
            "https://***@host:8443/path?***#***"
        );
        assert_eq!(url("https://user@host/"), "https://***@host/");
        assert_eq!(url("http://host?token=t0ken"), "http://host?***");
        assert_eq!(url("http://host/p#access_token=t0ken"), "http://host/p#***");
        // An unencoded `@` in the password: everything up to the last one is userinfo.
        assert_eq!(url("http://u:p@ss@host/x"), "http://***@host/x");
    }

    #[test]
    fn url_too_broken_to_parse_still_loses_its_secrets() {
        assert_eq!(url("http://u:s3cret@[::1/x?t0ken"), "http://***@[::1/x?***");
        assert_eq!(url("u:s3cret@host:1/x"), "***@host:1/x");
        assert_eq!(url("host:1/p?next=http://a"), "host:1/p?***");
    }

    #[test]
    fn text_redacts_urls_inside_error_messages() {
        let e = "error sending request for url (https://user:s3cret@hooks.example/rb?token=t0ken): connection refused";
        assert_eq!(
            text(e),
            "error sending request for url (https://***@hooks.example/rb?***): connection refused"
        );
        let two = "a http://x:s3cret@a/ then \"https://b/p?k=t0ken\" end";
        assert_eq!(text(two), "a http://***@a/ then \"https://b/p?***\" end");
    }

    #[test]
    fn text_without_urls_is_unchanged() {
        for s in [
            "",
            "connection refused",
            "weird :// without scheme",
            "ratio 3:1 @ host",
        ] {
            assert_eq!(text(s), s);
        }
    }

    #[test]
    fn text_handles_multibyte_characters_around_urls() {
        assert_eq!(
            text("é http://ü:s3cret@hôst/ä?t0ken é"),
            "é http://***@hôst/ä?*** é"
        );
    }
}
