//! Actions on the outside world: hooks, which alerts a rollout raises, and message templates.
//!
//! Architecture Invariant: this folder knows how to deliver a message and report whether it
//! arrived; it knows nothing about statistics or when a rollout should advance, and imports no
//! controller. The subscribers of the controller's update stream (Alertmanager publisher,
//! notifications, reports) live in [`crate::controller`], which calls into here.

pub mod canary_alerts;
pub mod hooks;
pub mod templates;

pub use hooks::{HookError, HookPayload, HookRunner};
