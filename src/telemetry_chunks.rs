//! `/metrics` a piece at a time: the series kept outside the recorder (per rollout, per rule)
//! are rendered in chunks of about [`CHUNK`] bytes, each under its registry's lock only while
//! it is written, and streamed; the whole text was built in memory per scrape before (29 MB at
//! 10,000 rollouts, 340,045 series; BENCHMARKS.md "Scale — resting controller memory and
//! /metrics"). A scrape is not a snapshot across chunks: a rollout that starts or ends while one
//! streams may show in some families and not others, as with any exporter whose series change
//! between two reads; each line is whole.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Bytes rendered per chunk: large enough that locking and writing a chunk costs little per
/// series, small enough that a scrape holds a few of them at once, not the whole text.
pub const CHUNK: usize = 64 * 1024;

/// Where the rendering stopped: a family (an index the registry gives meaning to) and the last
/// key written in it (`None`: the family is not started).
#[derive(Debug, Default, Clone)]
pub(crate) struct Cursor {
    pub(crate) family: usize,
    after: Option<String>,
}

/// Writes one family of `map`, from `cursor` on: its head first when it is not started, then
/// the lines of each entry, until `out` holds `budget` bytes. `true` (and the cursor at the next
/// family) when the family is written whole.
pub(crate) fn section<V>(
    map: &BTreeMap<String, V>,
    cursor: &mut Cursor,
    out: &mut String,
    budget: usize,
    head: impl FnOnce(&mut String),
    mut lines: impl FnMut(&mut String, &str, &V),
) -> bool {
    let from = match &cursor.after {
        Some(k) => Bound::Excluded(k.as_str()),
        None => {
            head(out);
            Bound::Unbounded
        }
    };
    for (k, v) in map.range::<str, _>((from, Bound::Unbounded)) {
        lines(out, k, v);
        if out.len() >= budget {
            cursor.after = Some(k.clone());
            return false;
        }
    }
    cursor.family += 1;
    cursor.after = None;
    true
}

/// `/metrics` in chunks of about [`CHUNK`] bytes: the recorder's text, then the series
/// kept outside the recorder, per rollout then per rule, each chunk rendered when the one before
/// was taken. Concatenated, the chunks are the whole exposition.
pub struct Exposition {
    recorder: Option<String>,
    /// 0: per-rollout series, 1: per-rule series, 2: done.
    part: u8,
    cursor: Cursor,
}

impl Exposition {
    /// Starts with `recorder`, the recorder's own exposition.
    pub fn new(recorder: String) -> Exposition {
        Exposition {
            recorder: Some(recorder),
            part: 0,
            cursor: Cursor::default(),
        }
    }
}

impl Iterator for Exposition {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if let Some(text) = self.recorder.take()
            && !text.is_empty()
        {
            return Some(text);
        }
        let mut out = String::with_capacity(CHUNK + 1024);
        while self.part < 2 && out.len() < CHUNK {
            let done = if self.part == 0 {
                super::rollouts::registry().render_some(&mut self.cursor, &mut out, CHUNK)
            } else {
                super::rules::registry().render_some(&mut self.cursor, &mut out, CHUNK)
            };
            if done {
                self.part += 1;
                self.cursor = Cursor::default();
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// A family's `# HELP` and `# TYPE` lines, as both registries write them.
pub(crate) fn head(out: &mut String, name: &str, help: &str, kind: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A registry's text rendered `budget` bytes at a time by `render_some`, joined, with the
/// number of chunks it took; fails the test the moment the chunks run past `whole` (a cursor
/// that does not move fails here, not by filling memory). The registries' chunk tests share it.
#[cfg(test)]
pub(crate) fn render_in_chunks(
    whole: &str,
    budget: usize,
    mut render_some: impl FnMut(&mut Cursor, &mut String, usize) -> bool,
) -> (String, usize) {
    let (mut text, mut cursor, mut chunks) = (String::new(), Cursor::default(), 0);
    loop {
        let mut chunk = String::new();
        let done = render_some(&mut cursor, &mut chunk, budget);
        text.push_str(&chunk);
        chunks += 1;
        assert!(
            text.len() <= whole.len(),
            "budget {budget}: past the whole text"
        );
        if done {
            return (text, chunks);
        }
    }
}
