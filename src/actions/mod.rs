//! Actions on the outside world: hooks, alerts to Alertmanager, notifications and reports.
//!
//! Architecture Invariant: this folder knows how to deliver a message and report whether it
//! arrived; it knows nothing about statistics or when a rollout should advance. Everything but
//! hooks is a subscriber of the controller's update stream, so the controller does not know
//! these exist.

pub mod alertmanager;
pub mod canary_alerts;
pub mod hooks;
pub mod notify;
pub mod report;
pub mod templates;

pub use hooks::{HookError, HookPayload, HookRunner};
