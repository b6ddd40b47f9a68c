//! Deploy windows: when promotion may advance (the runbooks' "Tue–Thu 10:00–14:00 US Eastern").
//!
//! Pure: `allows` takes the instant to judge, so the state machine stays clock-free and tests can
//! walk a week in a loop. Rollback ignores windows entirely; only advancing waits.
//!
//! Dated blackouts (`deny:`, the runbooks' Black Friday to Cyber Monday) win over the weekly
//! `allow` windows. Both are read in the rule's time zone, so a DST change moves the instants,
//! never the wall-clock hours the runbook wrote.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;

/// A parsed `windows:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    pub timezone: Tz,
    /// Weekly windows; none means any time that is not a blackout.
    pub allow: Vec<Window>,
    /// Dated blackouts, inclusive, in `timezone`.
    pub deny: Vec<Blackout>,
}

/// One `deny` entry: the local dates `first` to `last`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blackout {
    pub first: NaiveDate,
    pub last: NaiveDate,
}

/// The longest blackout accepted: a year. Longer is a typo (2026 for 2027), not a freeze.
pub const MAX_BLACKOUT_DAYS: i64 = 366;

impl Blackout {
    /// Parses `2026-11-27/2026-11-30` or a single day `2026-12-25`.
    pub fn parse(text: &str) -> Result<Blackout, String> {
        let (a, b) = text.split_once('/').unwrap_or((text, text));
        let date = |t: &str| {
            NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d").map_err(|_| {
                format!("date {t:?} must be YYYY-MM-DD (blackouts are FIRST/LAST, both included)")
            })
        };
        let (first, last) = (date(a)?, date(b)?);
        if last < first {
            return Err(format!("blackout {text:?} ends before it starts"));
        }
        if (last - first).num_days() >= MAX_BLACKOUT_DAYS {
            return Err(format!(
                "blackout {text:?} is longer than {MAX_BLACKOUT_DAYS} days"
            ));
        }
        Ok(Blackout { first, last })
    }

    pub fn contains(&self, day: NaiveDate) -> bool {
        self.first <= day && day <= self.last
    }
}

impl std::fmt::Display for Blackout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.first, self.last)
    }
}

/// One `allow` entry: days of the week and a half-open local time range.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub days: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Windows {
    pub fn parse_timezone(name: &str) -> Result<Tz, String> {
        name.parse::<Tz>().map_err(|_| {
            format!("unknown time zone {name:?}; use an IANA name like America/New_York")
        })
    }

    /// True when `now` is in no blackout and inside an allowed window (or no window is
    /// listed), in the rule's time zone.
    pub fn allows(&self, now: DateTime<Utc>) -> bool {
        if self.blackout(now).is_some() {
            return false;
        }
        let local = now.with_timezone(&self.timezone);
        let (day, time) = (local.weekday(), local.time());
        self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|w| w.days.contains(&day) && w.start <= time && time < w.end)
    }

    /// The blackout `now` falls in, if any, for the reason a rollout waits.
    pub fn blackout(&self, now: DateTime<Utc>) -> Option<Blackout> {
        let day = now.with_timezone(&self.timezone).date_naive();
        self.deny.iter().copied().find(|b| b.contains(day))
    }
}

impl Window {
    /// Parses `Tue-Thu 10:00-14:00`, `Mon,Wed,Fri 09:30-17:00` or `Mon-Fri` (all day).
    pub fn parse(text: &str) -> Result<Window, String> {
        let mut parts = text.split_whitespace();
        let days_text = parts
            .next()
            .ok_or_else(|| "empty window; write e.g. \"Tue-Thu 10:00-14:00\"".to_string())?;
        let days = parse_days(days_text)?;
        let (start, end) = match parts.next() {
            None => (
                NaiveTime::MIN,
                NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN),
            ),
            Some(range) => {
                let (a, b) = range
                    .split_once('-')
                    .ok_or_else(|| format!("time range {range:?} must look like 10:00-14:00"))?;
                (parse_time(a)?, parse_time(b)?)
            }
        };
        if parts.next().is_some() {
            return Err(format!("unexpected text in window {text:?}"));
        }
        if start >= end {
            return Err(format!("window {text:?} ends before it starts"));
        }
        Ok(Window { days, start, end })
    }
}

fn parse_time(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| format!("time {text:?} must be HH:MM"))
}

fn parse_day(text: &str) -> Result<Weekday, String> {
    text.parse::<Weekday>()
        .map_err(|_| format!("day {text:?} must be one of Mon Tue Wed Thu Fri Sat Sun"))
}

fn parse_days(text: &str) -> Result<Vec<Weekday>, String> {
    let mut days = Vec::new();
    for item in text.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (mut d, end) = (parse_day(a)?, parse_day(b)?);
                days.push(d);
                while d != end {
                    d = d.succ();
                    days.push(d);
                }
            }
            None => days.push(parse_day(item)?),
        }
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn eastern_tue_thu() -> Windows {
        Windows {
            timezone: Windows::parse_timezone("America/New_York").unwrap(),
            allow: vec![Window::parse("Tue-Thu 10:00-14:00").unwrap()],
            deny: vec![],
        }
    }

    #[test]
    fn allows_wednesday_noon_eastern() {
        // 2026-11-18 is a Wednesday; 17:00 UTC is 12:00 EST.
        let now = Utc.with_ymd_and_hms(2026, 11, 18, 17, 0, 0).unwrap();
        assert!(eastern_tue_thu().allows(now));
    }

    #[test]
    fn refuses_friday_and_after_hours() {
        let friday = Utc.with_ymd_and_hms(2026, 11, 20, 17, 0, 0).unwrap();
        let wednesday_evening = Utc.with_ymd_and_hms(2026, 11, 18, 20, 0, 0).unwrap();
        assert!(!eastern_tue_thu().allows(friday));
        assert!(!eastern_tue_thu().allows(wednesday_evening));
    }

    #[test]
    fn end_of_window_is_exclusive() {
        let two_pm = Utc.with_ymd_and_hms(2026, 11, 18, 19, 0, 0).unwrap();
        assert!(!eastern_tue_thu().allows(two_pm));
    }

    #[test]
    fn day_ranges_wrap_the_week() {
        let w = Window::parse("Fri-Mon").unwrap();
        assert_eq!(
            w.days,
            vec![Weekday::Fri, Weekday::Sat, Weekday::Sun, Weekday::Mon]
        );
    }

    #[test]
    fn rejects_bad_windows_with_reason() {
        assert!(
            Window::parse("Tue-Thu 14:00-10:00")
                .unwrap_err()
                .contains("ends before")
        );
        assert!(
            Window::parse("Tus 10:00-14:00")
                .unwrap_err()
                .contains("day")
        );
        assert!(Window::parse("Tue 10-14").unwrap_err().contains("HH:MM"));
    }
}
