//! Who may write the store: one leader at a time among replicas that share a PostgreSQL store,
//! with fencing. The stores check it on every write and the hooks on every attempt; the loop that
//! wins and renews the lease is the controller's ([`crate::controller::lease`]).
//!
//! The lease is a row in the shared database (holder, epoch, expiry on the database's clock, so
//! replicas' clocks never have to agree). A replica that takes an expired lease bumps the epoch.
//! Three fences keep a leader that paused (GC, SIGSTOP, a lost network) from acting after its
//! successor took over:
//! - locally, a term ends at `renew sent + lease` on the monotonic clock, which is never later
//!   than the database's expiry: a paused leader wakes up already knowing it is not leading;
//! - every store write checks, in its transaction and under a share lock on the lease row, that
//!   the lease still carries the writer's epoch ([`super::postgres`]);
//! - every hook attempt is refused unless the term it was decided in is still held, and carries
//!   the epoch (`Canaryd-Leader-Epoch`) so a receiver can refuse an older one too.
//!
//! With the embedded store there is one daemon per state dir: [`Leadership::always`], epoch 0,
//! no lease, no header.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The header every hook call of a replicated daemon carries beside its Idempotency-Key.
pub const EPOCH_HEADER: &str = "Canaryd-Leader-Epoch";

/// A held lease: its epoch, and until when (monotonic) this replica may act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub epoch: u64,
    /// `None`: for ever (the embedded store).
    pub until: Option<Instant>,
}

struct Shared {
    term: watch::Sender<Option<Term>>,
    /// Replicated (PostgreSQL): hooks carry the epoch, followers forward mutating calls.
    replicated: bool,
    /// Where the current leader answers, as the lease row names it (followers forward there).
    leader_url: RwLock<Option<String>>,
}

/// Whether this replica leads, and under which epoch. Cheap to clone; every clone sees the same
/// term.
#[derive(Clone)]
pub struct Leadership {
    shared: Arc<Shared>,
}

impl Leadership {
    fn with(term: Option<Term>, replicated: bool) -> Leadership {
        Leadership {
            shared: Arc::new(Shared {
                term: watch::channel(term).0,
                replicated,
                leader_url: RwLock::new(None),
            }),
        }
    }

    /// The only daemon on its store: leads for ever under epoch 0.
    pub fn always() -> Leadership {
        Leadership::with(
            Some(Term {
                epoch: 0,
                until: None,
            }),
            false,
        )
    }

    /// A replica of a shared store: follows until the lease loop wins the lease.
    pub fn replica() -> Leadership {
        Leadership::with(None, true)
    }

    pub fn replicated(&self) -> bool {
        self.shared.replicated
    }

    /// The epoch this replica may act under now, if it leads.
    pub fn epoch(&self) -> Option<u64> {
        let term = *self.shared.term.borrow();
        term.filter(|t| t.until.is_none_or(|u| Instant::now() < u))
            .map(|t| t.epoch)
    }

    pub fn is_leader(&self) -> bool {
        self.epoch().is_some()
    }

    /// Wakes on every grant and step-down.
    pub fn subscribe(&self) -> watch::Receiver<Option<Term>> {
        self.shared.term.subscribe()
    }

    /// A fence for actions decided under `epoch`; `None` for the embedded store (no header).
    pub fn fence(&self, epoch: u64) -> Option<Fence> {
        self.replicated().then(|| Fence {
            leadership: self.clone(),
            epoch,
        })
    }

    /// Starts a term (the lease loop, and tests that play a paused leader).
    pub fn grant(&self, epoch: u64, until: Instant) {
        self.shared.term.send_replace(Some(Term {
            epoch,
            until: Some(until),
        }));
    }

    /// Ends the term of `epoch` (not a newer one): a fenced write or a lost renewal.
    pub fn step_down(&self, epoch: u64) {
        self.shared.term.send_if_modified(|t| {
            if t.is_some_and(|t| t.epoch == epoch) {
                *t = None;
                true
            } else {
                false
            }
        });
    }

    pub fn leader_url(&self) -> Option<String> {
        self.shared
            .leader_url
            .read()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    pub(crate) fn set_leader_url(&self, url: Option<String>) {
        if let Ok(mut u) = self.shared.leader_url.write() {
            *u = url;
        }
    }
}

/// An action decided under one epoch may be performed only while that epoch is held.
#[derive(Clone)]
pub struct Fence {
    leadership: Leadership,
    pub epoch: u64,
}

impl Fence {
    pub fn holds(&self) -> bool {
        self.leadership.epoch() == Some(self.epoch)
    }
}

/// Lease timing. Failover takes at most `lease + renew_interval` (the successor's next try after
/// the expiry); the defaults give ≤ 8 s.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    pub lease: Duration,
    pub renew_interval: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease: Duration::from_secs(6),
            renew_interval: Duration::from_secs(2),
        }
    }
}

/// What the lease loop needs from the shared database (blocking calls, run off the workers).
pub trait LeaseBackend: Send + Sync + 'static {
    /// Takes the lease if it expired (or this holder's own term ended), bumping the epoch.
    /// `Err(url)`: somebody else holds it, and where it answers.
    fn acquire(
        &self,
        holder: &str,
        url: &str,
        lease: Duration,
    ) -> Result<Result<u64, Option<String>>, String>;
    /// Extends the lease if it still carries `epoch` for `holder`; `false` when it was taken.
    fn renew(&self, holder: &str, epoch: u64, lease: Duration) -> Result<bool, String>;
    /// Ends `epoch`'s lease now, so a successor need not wait for it to expire.
    fn release(&self, holder: &str, epoch: u64) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_term_ends_by_itself_and_step_down_spares_a_newer_one() {
        let l = Leadership::replica();
        assert_eq!(l.epoch(), None);
        l.grant(3, Instant::now() + Duration::from_secs(60));
        assert_eq!(l.epoch(), Some(3));
        let fence = l.fence(3).expect("replicated");
        assert!(fence.holds());
        l.step_down(2);
        assert_eq!(
            l.epoch(),
            Some(3),
            "an older epoch's step-down ends nothing"
        );
        l.grant(4, Instant::now() + Duration::from_secs(60));
        assert!(
            !fence.holds(),
            "a fence of epoch 3 does not hold under epoch 4"
        );
        l.grant(5, Instant::now() - Duration::from_millis(1));
        assert_eq!(l.epoch(), None, "an expired term is not leadership");
        assert!(Leadership::always().fence(0).is_none());
        assert_eq!(Leadership::always().epoch(), Some(0));
    }
}
