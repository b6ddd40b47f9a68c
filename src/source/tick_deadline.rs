//! The instant a tick stops waiting for Prometheus, carried down to every query of the tick.
//!
//! Why per query and not only around the whole tick: at 10,000 rollouts one metric shape's
//! whole-window query took longer than the tick's deadline, and a deadline wrapped around the
//! whole slot then cost every rollout all of its metrics, although the other shapes had
//! answered in time (BENCHMARKS.md, "Scale"). Bounding each query instead fails only the
//! members whose queries were still running; the rest are judged. A failed member is judged
//! `error`, which never counts as healthy, so a tick with a late metric cannot advance a step.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::judge::observation::Series;

/// When the queries of one tick must have answered, and the tick deadline it stands for (named
/// in the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickDeadline {
    /// The instant the queries are given up.
    pub at: Instant,
    /// The tick's deadline as configured (the smaller of interval and Prometheus timeout).
    pub of: Duration,
}

impl TickDeadline {
    /// Why a query that had not answered by [`Self::at`] has no data.
    pub fn message(&self) -> String {
        format!(
            "no answer from Prometheus by the tick's deadline of {} (the smaller of \
             analysis.interval and the Prometheus timeout); metrics that answered in time \
             were judged",
            humantime::format_duration(self.of)
        )
    }

    /// The series of a query given up at the deadline.
    pub fn failed(&self) -> Series {
        Series::Failed {
            message: self.message(),
        }
    }
}

/// Runs `fut` until `by` (forever when `None`); `Err` with the deadline's message when given
/// up. Counts the members given up as `canaryd_prometheus_deadline_missed_total`.
pub async fn within<F: Future>(
    by: Option<TickDeadline>,
    members: usize,
    fut: F,
) -> Result<F::Output, String> {
    let Some(by) = by else {
        return Ok(fut.await);
    };
    match tokio::time::timeout_at(by.at, fut).await {
        Ok(out) => Ok(out),
        Err(_) => {
            metrics::counter!("canaryd_prometheus_deadline_missed_total").increment(members as u64);
            Err(by.message())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_query_still_running_at_the_deadline_is_given_up_with_the_deadline_named() {
        let by = TickDeadline {
            at: Instant::now() + Duration::from_millis(50),
            of: Duration::from_millis(1500),
        };
        let late = within(Some(by), 1, tokio::time::sleep(Duration::from_secs(5))).await;
        let err = late.expect_err("given up");
        assert!(err.contains("deadline of 1s 500ms"), "{err}");
        let on_time = within(Some(by), 1, async { 7 }).await;
        assert_eq!(on_time, Ok(7));
        assert_eq!(within(None, 1, async { 8 }).await, Ok(8));
    }
}
