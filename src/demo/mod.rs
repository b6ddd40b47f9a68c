//! The local stack behind `canaryd demo` and the integration tests.
//!
//! canaryd's promise is that it rolls back a bad canary *as judged by a real Prometheus*. A mocked
//! Prometheus can prove that responses are parsed, never that the queries in a rule file mean what
//! their author thinks over real scrapes, rate windows and staleness. So the demo and the tests
//! share one stack made of real parts, started on free loopback ports and torn down on `Drop`:
//!
//! - [`service`]: a simulated web API with a baseline and a canary track whose behaviour
//!   (error rate, latency, pool use, CPU, health) can be changed while it runs;
//! - [`prometheus`]: a real `prometheus` process scraping it every second;
//! - [`alertmanager`]: a real `prometheus-alertmanager` posting to webhooks;
//! - [`receiver`]: an HTTP endpoint that records the hooks canaryd (or Alertmanager) calls.
//!
//! Architecture Invariant: nothing here is used by the daemon's decision path; this module only
//! provides things for canaryd to observe and act upon.

pub mod alertmanager;
mod backend;
mod listener;
mod process;
pub mod prometheus;
pub mod real_traffic;
pub mod receiver;
pub mod service;
mod simulation;
pub mod traffic_stack;

pub use process::{die_with_parent, kill_group};

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while bringing up or driving the demo stack.
///
/// Each variant carries enough context (which program, which address, the tail of its log) for a
/// failing test or demo to say what to fix without re-running it.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A required external program is not installed.
    #[error("{program} not found on PATH: install it with `sudo apt-get install {package}`")]
    BinaryNotFound {
        /// The program that was looked for, e.g. `prometheus`.
        program: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// An I/O operation failed; `context` says which one.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "writing /tmp/x/prometheus.yml".
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A child process did not become ready in time or exited early.
    #[error("{program} did not become ready: {reason}\n--- last lines of {log} ---\n{log_tail}")]
    NotReady {
        /// The program that was started.
        program: String,
        /// Why we gave up (timeout, exit status).
        reason: String,
        /// The log file holding its stdout and stderr.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
    /// An HTTP request to a component of the stack failed.
    #[error("{context}: {source}")]
    Http {
        /// What was being requested.
        context: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A component answered, but not with what we expected.
    #[error("{0}")]
    Unexpected(String),
    /// A condition polled for did not hold before the deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What we were waiting for.
        what: String,
        /// How long we waited.
        after: Duration,
    },
}

impl DemoError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        DemoError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn http(context: impl Into<String>, source: reqwest::Error) -> Self {
        DemoError::Http {
            context: context.into(),
            source,
        }
    }
}

/// Asks the kernel for a loopback port that is free right now.
///
/// The port is released before returning, so another process could take it before the caller
/// binds it; callers that spawn a child retry on "address already in use" for that reason.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
