//! The scheduler's slot arithmetic, pure: times are offsets from the scheduler's origin (the
//! instant it started), so the same inputs give the same slots.
//!
//! A rollout with interval `i` ticks only on boundaries `k · i` of the origin. Rollouts with
//! equal intervals therefore share every slot, whenever they started, and the scheduler takes
//! each slot's ticks together (one gathering, one group commit).
//!
//! How a rollout's phase is kept: its first tick is the first boundary at or after
//! `start + i` — never before `start + i`, where the task-per-rollout loop before the
//! scheduler would have ticked, so a hold (counted by the machine from the step's start) is
//! never shortened; at most it waits one interval less a nanosecond longer. After a tick at a
//! boundary the next is the following boundary; a rollout that analyses at once (recovered
//! from the store, restarted after a panic) ticks now and then joins the boundaries the same
//! way, from now. A scheduler that fell behind by more than an interval skips the missed
//! boundaries instead of firing them in a burst.

use std::time::Duration;

/// The first slot of a rollout that starts at `start`: the first boundary of `interval` at or
/// after `start + interval`. Saturates instead of overflowing (intervals are bounded anyway).
pub fn first_slot(start: Duration, interval: Duration) -> Duration {
    ceil_to_boundary(start.saturating_add(interval), interval)
}

/// The slot after one that fired at `slot`, seen at `now`: the next boundary, or when the
/// scheduler is behind by more than one interval, the first boundary after `now`.
pub fn next_slot(slot: Duration, now: Duration, interval: Duration) -> Duration {
    let next = ceil_to_boundary(slot.saturating_add(interval), interval);
    if next > now {
        next
    } else {
        ceil_to_boundary(now.saturating_add(Duration::from_nanos(1)), interval)
    }
}

/// The smallest multiple of `interval` that is `>= t`. A zero interval has no boundaries: `t`.
fn ceil_to_boundary(t: Duration, interval: Duration) -> Duration {
    let (t_ns, i_ns) = (t.as_nanos(), interval.as_nanos());
    if i_ns == 0 {
        return t;
    }
    let k = t_ns.div_ceil(i_ns);
    let ns = k.saturating_mul(i_ns);
    // Durations hold u64 seconds; anything beyond is clamped to the largest.
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    let nanos = u32::try_from(ns % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_tick_is_never_earlier_than_one_interval_after_the_start() {
        let i = ms(10_000);
        for start in [0, 1, 2_500, 9_999, 10_000, 10_001, 123_456, 7_777_777] {
            let first = first_slot(ms(start), i);
            assert!(first >= ms(start) + i, "start {start}: {first:?}");
            assert!(first < ms(start) + i + i, "start {start}: {first:?}");
            assert_eq!(first.as_nanos() % i.as_nanos(), 0, "on a boundary");
        }
    }

    #[test]
    fn rollouts_with_equal_intervals_share_every_slot() {
        let i = ms(10_000);
        let (mut a, mut b) = (first_slot(ms(1_234), i), first_slot(ms(8_765), i));
        assert_eq!(a, b, "started in the same interval: the same first slot");
        let mut c = first_slot(ms(15_000), i);
        for _ in 0..5 {
            a = next_slot(a, a, i);
            b = next_slot(b, b, i);
            assert_eq!(a, b);
            if c < a {
                c = next_slot(c, c, i);
            }
            assert_eq!(c, a, "a later start joins the same slots");
        }
    }

    #[test]
    fn consecutive_ticks_are_one_interval_apart_and_a_late_scheduler_skips_missed_slots() {
        let i = ms(10_000);
        assert_eq!(next_slot(ms(20_000), ms(20_003), i), ms(30_000));
        // Fell 35 s behind: no burst of the missed slots, the next boundary after now.
        assert_eq!(next_slot(ms(20_000), ms(55_000), i), ms(60_000));
        assert_eq!(next_slot(ms(20_000), ms(60_000), i), ms(70_000));
    }

    #[test]
    fn a_recovered_rollout_ticks_now_then_joins_the_boundaries_without_a_short_gap() {
        let i = ms(10_000);
        let now = ms(43_210);
        let second = first_slot(now, i);
        assert_eq!(second, ms(60_000));
        assert!(second - now >= i);
    }

    #[test]
    fn extreme_values_saturate_instead_of_panicking() {
        let _ = first_slot(Duration::MAX, ms(10));
        let _ = next_slot(Duration::MAX, Duration::MAX, Duration::MAX);
        assert_eq!(first_slot(ms(5), Duration::ZERO), ms(5));
    }
}
