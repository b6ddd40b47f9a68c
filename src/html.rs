//! Text into HTML and URLs, a leaf the web pages, notifications and the CLI share. The one way text enters a page: [`escape`]. Versions, reasons, rule names, hook errors and
//! metric names are user input; every one of them goes through here, in element content and in
//! quoted attribute values alike, so a page never has to know which strings are trusted.

use std::fmt::Write;

use chrono::{DateTime, Utc};

/// HTML-escapes `s` for element content and for double- or single-quoted attribute values.
///
/// The five characters that can end a text run or an attribute (`&`, `<`, `>`, `"`, `'`) become
/// character references; everything else is copied. NUL and other C0 controls except tab and
/// newline become U+FFFD, since the HTML parser treats some of them as errors and they carry no
/// meaning a reader needs.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A path segment for a link: unreserved characters kept, every other byte percent-encoded, so
/// an id can never add a `/`, `?`, `#` or a scheme to the URL it is put in.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A number as a person reads it on a dashboard: four significant digits, no exponent for the
/// ranges metrics have, `—` for a missing or non-finite value.
pub fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => {
            let a = x.abs();
            if a != 0.0 && !(1e-4..1e7).contains(&a) {
                format!("{x:.3e}")
            } else {
                let digits = if a == 0.0 {
                    0
                } else {
                    (3 - a.log10().floor() as i32).clamp(0, 8) as usize
                };
                let s = format!("{x:.digits$}");
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s
                }
            }
        }
        _ => "—".to_string(),
    }
}

/// A clock time in UTC, `HH:MM:SS`.
pub fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

/// How long ago `then` was, coarse: `42s`, `3m 12s`, `2h 5m`, `3d 4h`. Never negative.
pub fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_markup_and_no_way_out_of_an_attribute() {
        let attack = r#"<script>alert(1)</script>"' onmouseover=x &amp; </textarea>"#;
        let e = escape(attack);
        for bad in ['<', '>', '"', '\''] {
            assert!(!e.contains(bad), "{bad} survived in {e}");
        }
        assert_eq!(
            escape("a<b>&\"'"),
            "a&lt;b&gt;&amp;&quot;&#39;",
            "each special character has its reference"
        );
        assert!(
            e.contains("&amp;amp;"),
            "an existing reference is escaped again"
        );
        assert_eq!(escape("v1.2.3+build"), "v1.2.3+build");
        assert_eq!(escape("x\u{0}y\u{1b}"), "x\u{FFFD}y\u{FFFD}");
        assert_eq!(escape("é ✓"), "é ✓");
    }

    #[test]
    fn path_segments_cannot_change_the_url() {
        assert_eq!(path_segment("0a1b-c2"), "0a1b-c2");
        assert_eq!(path_segment("../x?y#z"), "..%2Fx%3Fy%23z");
        assert_eq!(path_segment("\"><"), "%22%3E%3C");
    }

    #[test]
    fn numbers_read_as_on_a_dashboard() {
        assert_eq!(num(Some(0.0)), "0");
        assert_eq!(num(Some(0.05)), "0.05");
        assert_eq!(num(Some(0.012345)), "0.01235");
        assert_eq!(num(Some(123.456)), "123.5");
        assert_eq!(num(Some(2.0)), "2");
        assert_eq!(num(Some(1234567.0)), "1234567");
        assert_eq!(num(Some(1e-9)), "1.000e-9");
        assert_eq!(num(Some(f64::NAN)), "—");
        assert_eq!(num(None), "—");
    }

    #[test]
    fn ages_are_coarse_and_never_negative() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        assert_eq!(age(t0, at(42)), "42s");
        assert_eq!(age(t0, at(192)), "3m 12s");
        assert_eq!(age(t0, at(7500)), "2h 5m");
        assert_eq!(age(t0, at(3 * 86400 + 4 * 3600)), "3d 4h");
        assert_eq!(age(at(10), t0), "0s");
    }
}
