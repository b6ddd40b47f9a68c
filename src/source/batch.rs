//! Batched range queries: many requests that differ only in the values of their equality label
//! matchers (the same metric for many services, canary and baseline) become one query per group
//! and tick, and the answer is split back so every request gets exactly the [`Series`] its own
//! query would have returned.
//!
//! Knows PromQL (through [`batch_rewrite`](super::batch_rewrite)), nothing about rollouts. A
//! request that cannot be batched safely is asked alone (`mode="single"`); a batch whose answer
//! is unusable (too large, rejected) or cannot be split faithfully is asked again per member
//! (`mode="fallback"`), never turned into a result nobody asked for. A batch that got no answer
//! at all (Prometheus down, overloaded, too slow: [`QueryFailure::NoAnswer`]) is not asked again:
//! its members fail for that tick (`error`), so an outage sheds load instead of multiplying it. Every outcome of a member is
//! one its own query could have given, so batching can change how many queries Prometheus sees,
//! never a verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_http_query::response::Data;

use super::PrometheusSource;
pub use super::answer_split::Wanted;
use super::batch_cache;
pub use super::batch_cache::{Parsed, parsed};
pub use super::batch_fallback::Fallback;
use super::batch_fallback::regex_batches;
pub use super::batch_request::Request;
use super::batch_request::Text;
use super::batch_rewrite::{Shape, member_key, varying_labels};
pub use super::batch_run::count_queries;
pub use super::batch_run::range_many_by;
pub use super::batch_split::Members;
use super::batch_split::{Split, split};
use super::prometheus::QueryFailure;
use crate::judge::observation::Series;

/// One range query as `PrometheusSource::range_series` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeRequest {
    pub query: String,
    pub end: SystemTime,
    pub window: Duration,
    pub step: Duration,
}

/// Bounds on one batch: its members, the length of each regex it sends, and how many of its
/// label-value combinations it may make Prometheus compute (the regexes select their cross
/// product); larger groups are split into several batches.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_members: usize,
    pub max_regex_bytes: usize,
    pub max_combinations: usize,
    /// Queries in flight at once, batches and singles together.
    pub concurrency: usize,
    /// A group too large for one regex batch is asked as one wide batch (its varying matchers
    /// dropped: one query per shape whatever the number of rollouts), falling back to the regex
    /// batches when the wide answer cannot be had (larger than `max_response_bytes`).
    pub wide: bool,
}

impl Default for Limits {
    /// 500 members of ~20-byte values is a 10 KiB regex and, at 11 points each, an answer of a
    /// few hundred KiB: far below `max_response_bytes`, and Prometheus matches a literal
    /// alternation as a set.
    fn default() -> Self {
        Limits {
            max_members: 500,
            max_regex_bytes: 32 * 1024,
            max_combinations: 2000,
            concurrency: 8,
            wide: true,
        }
    }
}

/// Where range queries go: Prometheus in the daemon, a recorded answer in unit tests.
pub trait RangeSource: Sync {
    /// One range query's whole answer, or why it failed: no answer at all, or an unusable one.
    fn range_data(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
    ) -> impl Future<Output = Result<Data, QueryFailure>> + Send;

    /// One batch query's answer split back per member ([`split`]): the split's refusal inside,
    /// the query's failure outside. Prometheus splits the JSON as it reads it
    /// ([`super::answer_split`]) instead of building the whole answer first.
    fn range_split(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
        members: Members,
    ) -> impl Future<Output = Result<Split, QueryFailure>> + Send {
        async move {
            let data = self.range_data(query, end, window, step).await?;
            Ok(split(&data, &members.labels, &members.keys, members.extra))
        }
    }
}

impl RangeSource for PrometheusSource {
    fn range_data(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
    ) -> impl Future<Output = Result<Data, QueryFailure>> + Send {
        PrometheusSource::range_answer(self, query, end, window, step)
    }

    fn range_split(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
        members: Members,
    ) -> impl Future<Output = Result<Split, QueryFailure>> + Send {
        PrometheusSource::range_split(self, query, end, window, step, members)
    }
}

/// What will be sent for a set of requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Request `i` alone.
    Single(usize),
    /// One query for several requests. Empty `labels`: the members' queries are identical and
    /// each gets the whole answer; otherwise member `(i, key)` gets the series whose `labels`
    /// carry `key`.
    Batch {
        query: String,
        labels: Vec<String>,
        members: Vec<(usize, Vec<String>)>,
    },
    /// One query for a group of any size ([`batch_cache::rewritten_wide`]); `fallback` (regex
    /// batches and singles) is asked when it fails or cannot be split.
    Wide {
        query: String,
        labels: Vec<String>,
        members: Vec<(usize, Vec<String>)>,
        fallback: Fallback,
    },
}

/// A member of a group: its values of the batch labels, its request, its shape.
pub(super) type Keyed = (Vec<String>, usize, Arc<Shape>);

/// Requests batch together when their shapes and their (end, window, step) are equal.
type GroupKey = (Arc<str>, SystemTime, Duration, Duration);

/// Groups `requests` into jobs; every request is in exactly one.
pub fn plan<R: Request>(requests: &[R], limits: &Limits) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut groups: BTreeMap<GroupKey, Vec<(usize, Arc<Shape>)>> = BTreeMap::new();
    for (i, parsed) in shapes(requests).into_iter().enumerate() {
        let r = &requests[i];
        match parsed {
            Some(Ok(s)) => groups
                .entry((s.key().clone(), r.end(), r.window(), r.step()))
                .or_default()
                .push((i, s)),
            Some(Err(_)) | None => jobs.push(Job::Single(i)),
        }
    }
    for group in groups.into_values() {
        plan_group(requests, group, limits, &mut jobs);
    }
    jobs
}

/// Every request's shape: the one it knows, else its text's from the memo (`None`: it has no
/// text, and is asked alone to fail with why).
fn shapes<R: Request>(requests: &[R]) -> Vec<Option<Parsed>> {
    let mut out: Vec<Option<Parsed>> = requests.iter().map(|r| r.known_shape().cloned()).collect();
    let unknown: Vec<(usize, std::borrow::Cow<'_, str>)> = requests
        .iter()
        .enumerate()
        .filter(|(i, _)| out[*i].is_none())
        .filter_map(|(i, r)| Some((i, r.text().ok()?)))
        .collect();
    let texts: Vec<&str> = unknown.iter().map(|(_, t)| t.as_ref()).collect();
    for ((i, _), parsed) in unknown.iter().zip(batch_cache::shapes(&texts)) {
        out[*i] = Some(parsed);
    }
    out
}

fn plan_group<R: Request>(
    requests: &[R],
    group: Vec<(usize, Arc<Shape>)>,
    limits: &Limits,
    jobs: &mut Vec<Job>,
) {
    if group.len() < 2 {
        jobs.extend(group.into_iter().map(|(i, _)| Job::Single(i)));
        return;
    }
    let labels = varying_labels(group.iter().map(|(_, s)| s.as_ref()));
    if labels.is_empty() {
        // Identical queries: one answer serves them all, up to the member cap.
        for chunk in group.chunks(limits.max_members.max(2)) {
            match requests[chunk[0].0].text() {
                Ok(query) => push_batch(jobs, query.into_owned(), Vec::new(), chunk),
                // Without a text none is sent: each member fails alone with why.
                Err(_) => jobs.extend(chunk.iter().map(|(i, _)| Job::Single(*i))),
            }
        }
        return;
    }
    let mut keyed: Vec<Keyed> = Vec::new();
    for (i, s) in group {
        match member_key(&s, &labels) {
            Ok(k) => keyed.push((k, i, s)),
            Err(_) => jobs.push(Job::Single(i)),
        }
    }
    // Sorted, so canary and baseline of one service (and services with alike names) share a
    // batch and its regexes stay short.
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let chunked = chunks(&keyed, labels.len(), limits);
    if limits.wide && chunked.len() > 1 {
        match batch_cache::rewritten_wide(&keyed[0].2, &labels) {
            Ok(query) => {
                let fallback = Fallback {
                    chunks: chunked
                        .iter()
                        .filter_map(|c| Some((c.len(), c.first()?.2.clone())))
                        .collect(),
                };
                // Moved, not cloned: the job holds the only copy of the members' keys.
                jobs.push(Job::Wide {
                    query,
                    labels,
                    members: keyed.into_iter().map(|(k, i, _)| (i, k)).collect(),
                    fallback,
                });
                return;
            }
            Err(why) => {
                tracing::debug!(query = %Text(&requests[keyed[0].1]), %why, "no wide batch");
            }
        }
    }
    let sizes: Vec<usize> = chunked.iter().map(|c| c.len()).collect();
    regex_batches(requests, keyed, &sizes, &labels, jobs);
}

fn push_batch(
    jobs: &mut Vec<Job>,
    query: String,
    labels: Vec<String>,
    chunk: &[(usize, Arc<Shape>)],
) {
    if chunk.len() < 2 {
        jobs.extend(chunk.iter().map(|(i, _)| Job::Single(*i)));
    } else {
        jobs.push(Job::Batch {
            query,
            labels,
            members: chunk.iter().map(|(i, _)| (*i, Vec::new())).collect(),
        });
    }
}

/// Cuts sorted members into runs within the limits.
fn chunks<'a, T>(
    keyed: &'a [(Vec<String>, usize, T)],
    n_labels: usize,
    limits: &Limits,
) -> Vec<&'a [(Vec<String>, usize, T)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut sets: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); n_labels];
    let mut bytes = vec![0usize; n_labels];
    for (at, (key, _, _)) in keyed.iter().enumerate() {
        let mut grown = sets.clone();
        let mut grown_bytes = bytes.clone();
        for (l, v) in key.iter().enumerate() {
            if grown[l].insert(v.as_str()) {
                grown_bytes[l] += v.len() * 2 + 1;
            }
        }
        let combinations = grown
            .iter()
            .map(BTreeSet::len)
            .fold(1usize, usize::saturating_mul);
        let full = at - start >= limits.max_members
            || grown_bytes.iter().any(|b| *b > limits.max_regex_bytes)
            || combinations > limits.max_combinations;
        if full && at > start {
            out.push(&keyed[start..at]);
            start = at;
            sets = vec![BTreeSet::new(); n_labels];
            bytes = vec![0; n_labels];
            for (l, v) in key.iter().enumerate() {
                sets[l].insert(v.as_str());
                bytes[l] = v.len() * 2 + 1;
            }
        } else {
            sets = grown;
            bytes = grown_bytes;
        }
    }
    if start < keyed.len() {
        out.push(&keyed[start..]);
    }
    out
}

/// Answers every request, batching what can be batched; result `i` is request `i`'s.
pub async fn range_many<S: RangeSource, R: Request>(
    source: &S,
    requests: &[R],
    limits: &Limits,
) -> Vec<Series> {
    range_many_by(source, requests, limits, None).await
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "batch_wide_tests.rs"]
mod wide_tests;

#[cfg(test)]
#[path = "batch_shed_tests.rs"]
mod shed_tests;
