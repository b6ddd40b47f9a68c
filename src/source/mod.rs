//! Where numbers come from: Prometheus (and compatible backends) and HTTP health probes.
//!
//! Architecture Invariant: this folder knows queries and endpoints, nothing about rollouts,
//! steps or verdicts. Failures come back as typed [`crate::judge::Observation`]s, never panics.

mod answer_parse;
mod answer_split;
pub mod batch;
mod batch_cache;
mod batch_fallback;
mod batch_request;
pub mod batch_rewrite;
mod batch_run;
mod batch_shape;
pub mod batch_split;
pub mod health;
pub mod prometheus;
mod shape_values;
pub mod tick_deadline;
pub mod window_cache;
mod window_cache_fill;

pub use health::HealthProbe;
pub use prometheus::{PrometheusConfig, PrometheusSource};
