//! Fixtures the pure sequential-test files share: one tick's counts, and the published
//! vectors' eight ticks (`tests/pure/sequential.rs` pins their E values; E passes 20 = 1/α at
//! tick 6).
//!
//! Kept apart from `tests/it/common/` on purpose, like `tests/pure/machine_support/`: these binaries
//! start no server and `cargo mutants` rebuilds them for every mutant, so they must stay cheap.

use canaryd::judge::sequential::TickCounts;

/// One tick's increases: canary and baseline requests, then canary and baseline events.
pub fn tick(cr: f64, br: f64, ce: f64, be: f64) -> TickCounts {
    TickCounts {
        canary_events: ce,
        canary_requests: cr,
        baseline_events: be,
        baseline_requests: br,
    }
}

/// The published vectors' ticks, as (canary requests, baseline requests, canary events,
/// baseline events).
pub const SEQUENCE: [(f64, f64, f64, f64); 8] = [
    (100.0, 1900.0, 2.0, 19.0),
    (104.0, 1896.0, 3.0, 18.0),
    (98.0, 1902.0, 1.0, 20.0),
    (500.0, 1500.0, 9.0, 15.0),
    (510.0, 1490.0, 11.0, 14.0),
    (495.0, 1505.0, 12.0, 16.0),
    (1000.0, 1000.0, 22.0, 10.0),
    (1003.0, 997.0, 19.0, 9.0),
];
