//! Deploy windows: when promotion may advance (the runbooks' "Tue–Thu 10:00–14:00 US Eastern").
//!
//! Pure: `allows` takes the instant to judge, so the state machine stays clock-free and tests can
//! walk a week in a loop. Rollback ignores windows entirely; only advancing waits.

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;

/// A parsed `windows:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    pub timezone: Tz,
    pub allow: Vec<Window>,
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

    /// True when `now` falls inside any allowed window, in the rule's time zone.
    pub fn allows(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.timezone);
        let (day, time) = (local.weekday(), local.time());
        self.allow
            .iter()
            .any(|w| w.days.contains(&day) && w.start <= time && time < w.end)
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
