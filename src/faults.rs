//! Test-only stop points: with `CANARYD_TEST_STOP_AT=<point>[#<n>]` the daemon stops dead the
//! `n`-th time (default: the first) it reaches `point`, so a test can kill it *exactly* in a
//! window where a crash could lose a rollback or let a promote slip through, restart it on the
//! same state directory and check what survived.
//!
//! A random kill rarely lands in a window a few microseconds wide; a named stop always does. The
//! daemon writes `canaryd: fault point <point> reached` to stderr, then stops its whole process
//! with SIGSTOP (nothing else it runs can move on), and the test sends SIGKILL. Where SIGSTOP
//! cannot be sent, the reaching thread parks forever instead.
//!
//! Points are `<where>:<detail>`, e.g. `before_hook:rollback`; the variable may name the full
//! point or only `<where>` (any detail). Compiled into debug builds only: a release binary never
//! reads the variable, and every call compiles to nothing.

/// The environment variable naming the stop point.
pub const STOP_ENV: &str = "CANARYD_TEST_STOP_AT";

/// Stops the process dead if `place:detail` is the point `CANARYD_TEST_STOP_AT` names and this
/// is the named occurrence. `place` is one of `before_hook` (a decision with an action is saved,
/// its hook not yet called), `after_hook` (the hook answered, its outcome not yet saved),
/// `mid_tick` (a tick's queries answered, nothing decided) and `mid_reload` (new rules parsed,
/// not yet swapped in).
#[cfg(debug_assertions)]
pub fn stop_at(place: &str, detail: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static TARGET: OnceLock<Option<(String, u32)>> = OnceLock::new();
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let Some((point, nth)) = TARGET.get_or_init(|| parse(std::env::var(STOP_ENV).ok()?.as_str()))
    else {
        return;
    };
    let full = format!("{place}:{detail}");
    if point != place && *point != full {
        return;
    }
    if SEEN.fetch_add(1, Ordering::SeqCst).saturating_add(1) != *nth {
        return;
    }
    eprintln!("canaryd: fault point {full} reached");
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    loop {
        std::thread::park();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn stop_at(_place: &str, _detail: &str) {}

/// `point` or `point#n` (n ≥ 1); anything else names no point.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
fn parse(value: &str) -> Option<(String, u32)> {
    let value = value.trim();
    let (point, nth) = match value.split_once('#') {
        Some((p, n)) => (p, n.parse().ok().filter(|n| *n >= 1)?),
        None => (value, 1),
    };
    (!point.is_empty()).then(|| (point.to_string(), nth))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_point_names_its_occurrence_or_the_first() {
        assert_eq!(
            parse("before_hook:rollback"),
            Some(("before_hook:rollback".into(), 1))
        );
        assert_eq!(parse("mid_tick#3"), Some(("mid_tick".into(), 3)));
        assert_eq!(parse("mid_tick#0"), None);
        assert_eq!(parse("mid_tick#x"), None);
        assert_eq!(parse(""), None);
    }
}
