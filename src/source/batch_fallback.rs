//! A wide job's fallback ([`super::batch::Job::Wide`]): the regex batches [`super::batch::plan`]
//! makes without wide queries, built from the wide job's members only when its query fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::batch::{Job, Keyed, Request};
use super::batch_cache;
use super::batch_request::Text;
use super::batch_rewrite::Shape;

/// The regex batches a wide job falls back to, built only when it does ([`Fallback::jobs`]):
/// built with every plan, they held a second copy of every member's key and a regex per batch
/// through every slot, for a fallback that a steady tick never takes.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// Each regex batch's size, in the wide job's member order, and the shape of its first
    /// member, which the batch is rewritten from.
    pub(super) chunks: Vec<(usize, Arc<Shape>)>,
}

impl PartialEq for Fallback {
    fn eq(&self, other: &Fallback) -> bool {
        self.chunks.len() == other.chunks.len()
            && self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|((n, a), (m, b))| n == m && a.key() == b.key() && a.values == b.values)
    }
}

impl Fallback {
    /// The regex batches (and singles) [`plan`] makes without wide queries, for the wide job's
    /// members: `indices` and `keys` in its member order. A member past the planned batches
    /// (never, unless the lists were changed) is asked alone.
    pub fn jobs<R: Request>(
        &self,
        requests: &[R],
        labels: &[String],
        indices: &[usize],
        keys: &[Vec<String>],
    ) -> Vec<Job> {
        let mut members = indices.iter().copied().zip(keys);
        let mut keyed: Vec<Keyed> = Vec::with_capacity(indices.len());
        let mut sizes = Vec::with_capacity(self.chunks.len());
        for (n, shape) in &self.chunks {
            let before = keyed.len();
            keyed.extend(
                members
                    .by_ref()
                    .take(*n)
                    .map(|(i, k)| (k.clone(), i, shape.clone())),
            );
            sizes.push(keyed.len() - before);
        }
        let mut jobs: Vec<Job> = members.map(|(i, _)| Job::Single(i)).collect();
        regex_batches(requests, keyed, &sizes, labels, &mut jobs);
        jobs
    }
}

/// One regex batch per run of `sizes` members of `keyed` (a run of one, or one whose rewrite is
/// refused: singles). The members' keys are moved into the jobs, not copied.
pub(super) fn regex_batches<R: Request>(
    requests: &[R],
    keyed: Vec<Keyed>,
    sizes: &[usize],
    labels: &[String],
    jobs: &mut Vec<Job>,
) {
    let mut keyed = keyed.into_iter();
    for &n in sizes {
        let chunk: Vec<Keyed> = keyed.by_ref().take(n).collect();
        if chunk.len() < 2 {
            jobs.extend(chunk.iter().map(|(_, i, _)| Job::Single(*i)));
            continue;
        }
        let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (k, _, _) in &chunk {
            for (l, v) in labels.iter().zip(k) {
                values.entry(l.clone()).or_default().insert(v.clone());
            }
        }
        match batch_cache::rewritten(&chunk[0].2, &values) {
            Ok(query) => jobs.push(Job::Batch {
                query,
                labels: labels.to_vec(),
                members: chunk.into_iter().map(|(k, i, _)| (i, k)).collect(),
            }),
            Err(why) => {
                tracing::debug!(query = %Text(&requests[chunk[0].1]), %why, "query not batched");
                jobs.extend(chunk.iter().map(|(_, i, _)| Job::Single(*i)));
            }
        }
    }
    // Members past the runs (never, unless the sizes were changed) are asked alone.
    jobs.extend(keyed.map(|(_, i, _)| Job::Single(i)));
}
