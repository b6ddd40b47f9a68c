//! The decision core's tests — state machine, judge, sequential tests, store — with no server and
//! no daemon: one binary, so `cargo mutants` (.cargo/mutants.toml) runs only these and the unit
//! tests per mutant.

mod machine_support;
mod sequential_support;

mod checks_mutants;
mod controls_machine;
mod judge_checks;
mod judge_mutants;
mod judge_score;
mod lifecycle_machine;
mod machine_at_least_once;
mod machine_keeps_tick;
mod machine_mutants;
mod rollout_machine;
mod sequential;
mod sequential_hist;
mod sequential_mutants;
mod stale_data_judge;
mod store_mutants;
mod verify_machine;
