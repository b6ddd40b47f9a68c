//! The measurement every real-proxy test makes: the canary's share of real requests follows each
//! weight, and after the canary is zeroed no request reaches it.

use canaryd::demo::traffic_stack::{Backend, send_requests};
use canaryd::traffic::{TrafficProvider, set_confirmed};

/// Answers the share is measured over, at each weight.
pub const REQUESTS: usize = 2_000;
/// Sent per weight: REQUESTS answers even if a few time out on a loaded machine.
pub const SENT: usize = 2_020;
pub const CONCURRENCY: usize = 32;

/// At 5/25/50/100 % the canary's share of ≥ REQUESTS answers through `url` is within 2 points
/// of the weight `p` confirmed; after `p.zero_canary()` the `canary` backend gets no request.
pub async fn assert_share_follows_each_weight_then_none(
    p: &dyn TrafficProvider,
    url: &str,
    canary: &Backend,
) {
    for pct in [5u32, 25, 50, 100] {
        let set = set_confirmed(p, pct).await.expect("set weight");
        assert_eq!(set.canary_pct(), pct);
        let counts = send_requests(url, SENT, CONCURRENCY).await;
        let c = counts.get("canary").copied().unwrap_or(0);
        let total = c + counts.get("baseline").copied().unwrap_or(0);
        // A few requests may time out on a loaded 2-core machine; the share is measured over
        // at least REQUESTS answers, and failures stay rare.
        let failed = SENT as u64 - total;
        assert!(
            total >= REQUESTS as u64 && failed * 100 <= SENT as u64,
            "too many failed requests: {counts:?}"
        );
        let share = c as f64 * 100.0 / total as f64;
        println!("weight {pct:3} %: canary share {share:6.2} % of {total}");
        assert!(
            (share - f64::from(pct)).abs() <= 2.0,
            "weight {pct} %: canary got {share:.2} % of {total} ({counts:?})"
        );
    }
    p.zero_canary().await.expect("zero canary");
    let before = canary.hits();
    let counts = send_requests(url, REQUESTS, CONCURRENCY).await;
    assert_eq!(
        counts.get("canary"),
        None,
        "canary answered after rollback: {counts:?}"
    );
    assert!(
        counts.get("baseline").copied().unwrap_or(0) * 100 >= REQUESTS as u64 * 99,
        "{counts:?}"
    );
    assert_eq!(
        canary.hits(),
        before,
        "a request reached the canary after rollback"
    );
}
