//! canaryd: progressive delivery with statistics.
pub mod demo;
pub mod judge;
pub mod rules;
pub mod source;
pub mod rollout;
pub mod actions;
pub mod telemetry;
pub mod config;
pub mod api;
pub mod cli;
