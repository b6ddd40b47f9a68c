//! What the batch engine ([`super::batch`]) asks of a request: its range, its shape when the
//! caller already knows it, and its text — asked for only when a query is sent alone, a group's
//! queries are identical, or a log names it.
//!
//! A live rollout's window queries are the same text every tick; rendering all of them every
//! tick to plan batches the shapes already decide was most of a slot's transient memory
//! (heaptrack at 10,000 rollouts: 18 MB of rendered texts and 14 MB of requests holding them at
//! the peak). A caller that remembers the shapes ([`crate::controller::gather_memo`]) hands them
//! over with a way to render the text, and the engine renders only the few it sends.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use super::batch::RangeRequest;
use super::batch_cache::Parsed;

/// One range query as the batch engine takes it.
pub trait Request: Sync {
    /// The query's text, or why it cannot be had (it is then that request's failure).
    fn text(&self) -> Result<Cow<'_, str>, String>;

    /// Its parsed shape when the caller already has it; `None` has the engine parse the text
    /// (through the per-process memo, [`super::batch_cache::shapes`]).
    fn known_shape(&self) -> Option<&Parsed> {
        None
    }

    fn end(&self) -> SystemTime;
    fn window(&self) -> Duration;
    fn step(&self) -> Duration;
}

impl Request for RangeRequest {
    fn text(&self) -> Result<Cow<'_, str>, String> {
        Ok(Cow::Borrowed(&self.query))
    }

    fn end(&self) -> SystemTime {
        self.end
    }

    fn window(&self) -> Duration {
        self.window
    }

    fn step(&self) -> Duration {
        self.step
    }
}

/// A request's text for a log line, made only if the line is written.
pub(super) struct Text<'a, R>(pub(super) &'a R);

impl<R: Request> fmt::Display for Text<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.text() {
            Ok(text) => f.write_str(&text),
            Err(why) => write!(f, "<{why}>"),
        }
    }
}
