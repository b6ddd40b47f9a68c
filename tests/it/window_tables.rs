//! Deploy windows as the runbooks write them: weekly allow windows and dated blackouts, read in
//! the rule's time zone. Pure tables: a DST change, a blackout spanning midnight, and load-time
//! errors that point at the bad entry.

use std::path::Path;

use canaryd::rules::parse_rule;
use canaryd::rules::window::{Blackout, Window, Windows};
use chrono::{DateTime, TimeZone, Utc};

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn eastern(allow: &[&str], deny: &[&str]) -> Windows {
    Windows {
        timezone: Windows::parse_timezone("America/New_York").unwrap(),
        allow: allow.iter().map(|w| Window::parse(w).unwrap()).collect(),
        deny: deny.iter().map(|b| Blackout::parse(b).unwrap()).collect(),
    }
}

#[test]
fn blackout_spans_midnight_in_the_rules_time_zone_not_utc() {
    // Black Friday to Cyber Monday, every day allowed otherwise.
    let w = eastern(&[], &["2026-11-27/2026-11-30"]);
    let table = [
        // Thursday 26th 23:59 Eastern (04:59 UTC on the 27th): still allowed.
        (utc(2026, 11, 27, 4, 59), true),
        // Friday 27th 00:00 Eastern: the blackout starts at local midnight.
        (utc(2026, 11, 27, 5, 0), false),
        (utc(2026, 11, 28, 12, 0), false),
        // Monday 30th 23:59 Eastern (04:59 UTC on Dec 1st): the last day is included.
        (utc(2026, 12, 1, 4, 59), false),
        // Tuesday Dec 1st 00:00 Eastern: over.
        (utc(2026, 12, 1, 5, 0), true),
    ];
    for (now, allowed) in table {
        assert_eq!(w.allows(now), allowed, "{now}");
    }
    assert_eq!(
        w.blackout(utc(2026, 11, 27, 5, 0)).map(|b| b.to_string()),
        Some("2026-11-27/2026-11-30".to_string())
    );
}

#[test]
fn blackout_wins_over_an_allow_window() {
    let w = eastern(&["Mon-Fri 10:00-14:00"], &["2026-12-25"]);
    // Friday Dec 25th noon Eastern is inside Mon-Fri 10-14 but a blackout day.
    assert!(!w.allows(utc(2026, 12, 25, 17, 0)));
    assert!(w.allows(utc(2026, 12, 24, 17, 0)));
    assert!(!w.allows(utc(2026, 12, 26, 17, 0)), "Saturday");
}

#[test]
fn windows_keep_wall_clock_hours_across_a_dst_change() {
    // US DST ends Sunday 2026-11-01 (02:00 EDT -> 01:00 EST) and starts 2026-03-08.
    let w = eastern(&["Sat-Mon 10:00-14:00"], &[]);
    // 10:00 local is 14:00 UTC before the change and 15:00 UTC after.
    let table = [
        (utc(2026, 10, 31, 13, 59), false),
        (utc(2026, 10, 31, 14, 0), true),
        (utc(2026, 10, 31, 17, 59), true),
        (utc(2026, 10, 31, 18, 0), false),
        (utc(2026, 11, 1, 14, 30), false),
        (utc(2026, 11, 1, 15, 0), true),
        (utc(2026, 11, 1, 18, 59), true),
        (utc(2026, 11, 1, 19, 0), false),
    ];
    for (now, allowed) in table {
        assert_eq!(w.allows(now), allowed, "{now}");
    }
    // On the spring-forward night 02:00-03:00 does not exist: a 01:30-03:30 window lasts one
    // real hour (06:30-07:30 UTC), not two.
    let w = eastern(&["Sun 01:30-03:30"], &[]);
    let spring = [
        (utc(2026, 3, 8, 6, 29), false),
        (utc(2026, 3, 8, 6, 30), true),
        (utc(2026, 3, 8, 7, 29), true),
        (utc(2026, 3, 8, 7, 30), false),
    ];
    for (now, allowed) in spring {
        assert_eq!(w.allows(now), allowed, "{now}");
    }
    // A blackout day across the fall-back change is 25 real hours long.
    let w = eastern(&[], &["2026-11-01"]);
    assert!(w.allows(utc(2026, 11, 1, 3, 59)));
    assert!(!w.allows(utc(2026, 11, 1, 4, 0)));
    assert!(!w.allows(utc(2026, 11, 2, 4, 59)));
    assert!(w.allows(utc(2026, 11, 2, 5, 0)));
}

const RULE: &str = r#"name: demo
selector:
  canary: 'service="demo", track="canary"'
  baseline: 'service="demo", track="baseline"'
steps:
  - { weight: 5, hold: 1h }
  - { weight: 100 }
metrics:
  - name: error_rate
    query: sum(rate(http_requests_total{ {{selector}} }[{{step}}]))
    rollback_above: 0.05
windows:
  timezone: America/New_York
"#;

fn first_error(text: &str) -> String {
    match parse_rule(Path::new("rule.yaml"), text) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => e[0].to_string(),
    }
}

#[test]
fn blackouts_load_and_bad_ones_point_at_file_line_col() {
    let ok = format!(
        "{RULE}  allow: [\"Tue-Thu 10:00-14:00\"]\n  deny: [\"2026-11-27/2026-11-30\", \"2026-12-25\"]\n"
    );
    let rule = parse_rule(Path::new("rule.yaml"), &ok).expect("loads");
    let w = rule.windows.expect("windows");
    assert_eq!(w.deny.len(), 2);
    // Deny alone is a valid windows block: any time but the blackouts.
    let deny_only = format!("{RULE}  deny:\n    - 2026-11-27/2026-11-30\n");
    assert!(parse_rule(Path::new("rule.yaml"), &deny_only).is_ok());
    for (deny, col, says) in [
        ("2026-11-30/2026-11-27", 7, "ends before it starts"),
        ("2026-13-01", 7, "must be YYYY-MM-DD"),
        ("2026-11-27..2026-11-30", 7, "must be YYYY-MM-DD"),
        ("2026-01-01/2027-06-01", 7, "longer than 366 days"),
    ] {
        let text = format!("{RULE}  deny:\n    - \"2026-01-02\"\n    - \"{deny}\"\n");
        let e = first_error(&text);
        assert!(e.starts_with(&format!("rule.yaml:16:{col}: ")), "{e}");
        assert!(e.contains(says), "{deny}: {e}");
    }
    let e = first_error(RULE);
    assert!(
        e.contains("at least one allow window or deny blackout"),
        "{e}"
    );
}
