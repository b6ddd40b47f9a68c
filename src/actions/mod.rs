//! Actions on the outside world: hooks now; Alertmanager, notifications and reports later.
//!
//! Architecture Invariant: this folder knows how to deliver a message and report whether it
//! arrived; it knows nothing about statistics or when a rollout should advance.

pub mod hooks;

pub use hooks::{HookError, HookPayload, HookRunner};
