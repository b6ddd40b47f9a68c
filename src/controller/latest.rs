//! The last state the controller announced of every live rollout, and of the rollouts that ended
//! most recently: what a subscriber that fell behind the update stream resyncs from
//! ([`super::feed`]) instead of reading and parsing every rollout from the store, which at
//! thousands of rollouts cost more than the ticks themselves and held the store's connection
//! the group commit writes through (BENCHMARKS.md, "Scale").
//!
//! Ended rollouts are kept up to [`ENDED_KEPT`]; a subscriber that may have missed more endings
//! than that since it last synced gets `None` and reads the store, so it never misses an outcome.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::rollout::Rollout;

/// Ended rollouts remembered for resyncs: far more than end between two lags of a subscriber
/// in practice, small next to the live states (about 2 KB each).
pub(super) const ENDED_KEPT: usize = 1_024;

#[derive(Default)]
pub(super) struct Latest {
    live: HashMap<String, Arc<Rollout>>,
    ended: VecDeque<Arc<Rollout>>,
    /// Rollouts that ended since the controller started: a subscriber compares it with the
    /// count at its last sync to know whether [`Latest::ended`] still holds all it may miss.
    endings: u64,
}

/// What a subscriber resyncs from, and the ending count it was taken at.
pub(super) struct Snapshot {
    pub rollouts: Vec<Arc<Rollout>>,
    pub endings: u64,
}

impl Latest {
    /// Records the state announced in an update.
    pub(super) fn record(&mut self, r: Arc<Rollout>) {
        if r.is_live() {
            self.live.insert(r.id.clone(), r);
            return;
        }
        if self.live.remove(&r.id).is_none() && self.ended.iter().any(|e| e.id == r.id) {
            // A later update of an ended rollout (a verification checkpoint): replace in place.
            if let Some(e) = self.ended.iter_mut().find(|e| e.id == r.id) {
                *e = r;
            }
            return;
        }
        self.ended.push_back(r);
        if self.ended.len() > ENDED_KEPT {
            self.ended.pop_front();
        }
        self.endings = self.endings.saturating_add(1);
    }

    /// Forgets a live rollout without an ending (its task stopped: shutdown, lost lease).
    pub(super) fn forget(&mut self, id: &str) {
        self.live.remove(id);
    }

    pub(super) fn endings(&self) -> u64 {
        self.endings
    }

    /// Every live rollout and the recently ended ones, oldest first — or `None` when more than
    /// [`ENDED_KEPT`] rollouts ended since `since` (some outcome may be gone from memory).
    pub(super) fn snapshot(&self, since: u64) -> Option<Snapshot> {
        if self.endings.saturating_sub(since) > ENDED_KEPT as u64 {
            return None;
        }
        let mut rollouts: Vec<Arc<Rollout>> = self
            .live
            .values()
            .chain(self.ended.iter())
            .cloned()
            .collect();
        rollouts.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Some(Snapshot {
            rollouts,
            endings: self.endings,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use std::sync::Arc;

    use super::{ENDED_KEPT, Latest};
    use crate::rollout::{Phase, Rollout};

    fn rollout(i: i64, phase: Phase) -> Rollout {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(i);
        let mut r = Rollout::new(format!("ro-{i}"), format!("rule-{i}"), "v2".into(), at);
        r.phase = phase;
        r
    }

    #[test]
    fn a_resync_holds_the_last_state_of_every_live_and_recently_ended_rollout() {
        let mut latest = Latest::default();
        latest.record(Arc::new(rollout(2, Phase::Progressing)));
        latest.record(Arc::new(rollout(1, Phase::Progressing)));
        latest.record(Arc::new(rollout(3, Phase::Progressing)));
        latest.record(Arc::new(rollout(3, Phase::RolledBack)));
        let snap = latest.snapshot(0).expect("nothing overflowed");
        let seen: Vec<(String, Phase)> = snap
            .rollouts
            .iter()
            .map(|r| (r.id.clone(), r.phase))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("ro-1".into(), Phase::Progressing),
                ("ro-2".into(), Phase::Progressing),
                ("ro-3".into(), Phase::RolledBack),
            ]
        );
        assert_eq!(snap.endings, 1);
    }

    #[test]
    fn ended_rollouts_are_bounded_and_an_overflow_sends_the_subscriber_to_the_store() {
        let mut latest = Latest::default();
        let n = ENDED_KEPT as i64 + 10;
        for i in 0..n {
            latest.record(Arc::new(rollout(i, Phase::Progressing)));
            latest.record(Arc::new(rollout(i, Phase::Succeeded)));
        }
        assert!(latest.live.is_empty());
        assert_eq!(latest.ended.len(), ENDED_KEPT);
        assert_eq!(latest.endings(), n as u64);
        // A subscriber synced before all of them may have missed an outcome no longer kept.
        assert!(latest.snapshot(0).is_none());
        // One synced after the first ten missed only what is still kept.
        let snap = latest.snapshot(10).expect("within the bound");
        assert_eq!(snap.rollouts.len(), ENDED_KEPT);
        assert_eq!(snap.rollouts[0].id, "ro-10");
    }

    #[test]
    fn a_later_update_of_an_ended_rollout_replaces_it_without_counting_an_ending() {
        let mut latest = Latest::default();
        latest.record(Arc::new(rollout(1, Phase::Progressing)));
        latest.record(Arc::new(rollout(1, Phase::Succeeded)));
        let mut later = rollout(1, Phase::Succeeded);
        later.reason = Some("verified".into());
        latest.record(Arc::new(later));
        assert_eq!(latest.endings(), 1);
        assert_eq!(latest.ended.len(), 1);
        assert_eq!(latest.ended[0].reason.as_deref(), Some("verified"));
        latest.record(Arc::new(rollout(2, Phase::Progressing)));
        latest.forget("ro-2");
        assert_eq!(latest.snapshot(0).map(|s| s.rollouts.len()), Some(1));
    }
}
