//! The async shell around the pure machine: one place that owns time and does I/O for the
//! rollouts. It gathers and judges ticks (`analysis`, `checkpoint`, `deadline`), runs each live
//! rollout (`task` under its `supervisor`), saves every decision to the [`crate::store`] before
//! acting on it through [`crate::actions`] (decide → save → act), runs health probes, streams
//! updates (`feed`) to the outputs that follow them (Alertmanager alerts, notifications,
//! deployment reports), reloads rule files (`reload`) and keeps the lease of a replica (`lease`,
//! `replica`).

pub mod alertmanager;
pub mod analysis;
mod analysis_counters;
mod analysis_judge;
pub mod checkpoint;
mod commands;
mod deadline;
mod decide;
mod due_cell;
pub mod feed;
pub mod gather;
pub mod gather_many;
mod gather_memo;
mod group_commit;
mod latest;
pub mod lease;
mod live;
pub mod notify;
mod pacer;
mod perform;
pub mod probes;
mod recover;
mod registry;
pub mod reload;
pub mod replica;
pub mod report;
mod report_book;
mod report_seen;
mod report_thresholds;
mod scheduler;
mod shell;
pub mod slots;
mod start;
mod stops;
mod supervisor;
mod task;
mod task_slot;
mod transition_log;

pub use shell::{ControlError, Controller, RuleSet, StartOptions, Update};
