//! canaryd: progressive delivery with statistics.
pub mod actions;
pub mod api;
pub mod cli;
pub mod config;
pub mod demo;
pub mod faults;
pub mod judge;
pub mod outbound;
pub mod redact;
pub mod rollout;
pub mod rules;
pub mod simulate;
pub mod source;
pub mod telemetry;
pub mod traffic;
pub mod web;
