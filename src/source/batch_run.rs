//! Running the jobs [`super::batch::plan`] made: a wide batch, else its regex batches; a regex
//! batch, else one query per member; a single. Every member ends with a result its own query
//! could have given.
//!
//! "Else" means the answer came but is no use (too large, rejected, not splittable). A batch
//! that got no answer ([`QueryFailure::NoAnswer`]: refused, reset, timed out, 5xx) fails its
//! members for this tick instead: Prometheus is down or overloaded, and asking the same work as
//! 500 or 10,000 smaller queries would multiply the load that made it fail. The judge reports
//! those members `error`, which counts toward `nodata_limit` and never toward a promotion.

use futures_util::StreamExt;

use super::batch::{Job, Limits, RangeSource, Request, plan};
use super::batch_split::{Extra, Members};
use super::prometheus::QueryFailure;
use super::prometheus::series;
use super::tick_deadline::{TickDeadline, within};
use crate::judge::observation::Series;

/// Counts one query sent, by how: `batched`, `wide`, `single` or `fallback`.
pub fn count_queries(mode: &'static str, n: usize) {
    metrics::counter!("canaryd_prometheus_queries_total", "mode" => mode).increment(n as u64);
}

/// Answers every request, batching what can be batched; result `i` is request `i`'s. A job
/// still running at `by` gives its members the deadline's failure, and only them: the jobs that
/// answered in time keep their answers ([`super::tick_deadline`]).
pub async fn range_many_by<S: RangeSource, R: Request>(
    source: &S,
    requests: &[R],
    limits: &Limits,
    by: Option<TickDeadline>,
) -> Vec<Series> {
    let jobs = plan(requests, limits);
    // Futures collected first, so the whole stays `Send` (see `analysis::fetch`). Wide queries
    // share the pool with the rest: asked one after another, four shapes' wide queries took
    // longer than the tick's deadline at 3,000 rollouts on a loaded machine (BENCHMARKS.md).
    let runs: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let indices = job_members(&job);
            async move {
                let n = indices.len();
                match within(by, n, run(source, requests, job, limits.concurrency)).await {
                    Ok(answered) => answered,
                    Err(message) => {
                        let failed = Series::Failed { message };
                        indices.into_iter().map(|i| (i, failed.clone())).collect()
                    }
                }
            }
        })
        .collect();
    let answered: Vec<Vec<(usize, Series)>> = futures_util::stream::iter(runs)
        .buffer_unordered(limits.concurrency.max(1))
        .collect()
        .await;
    let mut out = vec![
        Series::Failed {
            message: "not asked (batching bug)".into(),
        };
        requests.len()
    ];
    for (i, s) in answered.into_iter().flatten() {
        out[i] = s;
    }
    out
}

/// The requests a job answers.
fn job_members(job: &Job) -> Vec<usize> {
    match job {
        Job::Single(i) => vec![*i],
        Job::Batch { members, .. } | Job::Wide { members, .. } => {
            members.iter().map(|(i, _)| *i).collect()
        }
    }
}

/// The members' keys, moved out once and shared ([`Members`]); the indexes stay behind.
fn split_members(
    members: Vec<(usize, Vec<String>)>,
    labels: Vec<String>,
    extra: Extra,
) -> (Vec<usize>, Members) {
    let (indices, keys): (Vec<usize>, Vec<Vec<String>>) = members.into_iter().unzip();
    let members = Members {
        labels: labels.into(),
        keys: keys.into(),
        extra,
    };
    (indices, members)
}

pub(super) async fn run<S: RangeSource, R: Request>(
    source: &S,
    requests: &[R],
    job: Job,
    concurrency: usize,
) -> Vec<(usize, Series)> {
    let Job::Wide {
        query,
        labels,
        members,
        fallback,
    } = job
    else {
        return run_one(source, requests, job, concurrency).await;
    };
    count_queries("wide", 1);
    let r = &requests[members[0].0];
    let (indices, wanted) = split_members(members, labels, Extra::Unlabelled);
    // Shared, not copied: the fallback is built from them only if the wide query fails.
    let (labels, keys) = (wanted.labels.clone(), wanted.keys.clone());
    let why = match source
        .range_split(&query, r.end(), r.window(), r.step(), wanted)
        .await
    {
        Ok(Ok(split)) => return indices.into_iter().zip(split).collect(),
        Ok(Err(why)) => why,
        Err(QueryFailure::NoAnswer(why)) => return shed(indices, &why, "wide"),
        Err(QueryFailure::Unusable(why)) => why,
    };
    tracing::warn!(members = indices.len(), %why, "wide query fell back to regex batches");
    let runs: Vec<_> = fallback
        .jobs(requests, &labels, &indices, &keys)
        .into_iter()
        .map(|job| run_one(source, requests, job, concurrency))
        .collect();
    let answered: Vec<Vec<(usize, Series)>> = futures_util::stream::iter(runs)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    answered.into_iter().flatten().collect()
}

/// A single or regex batch job (a wide job is [`run`]'s).
async fn run_one<S: RangeSource, R: Request>(
    source: &S,
    requests: &[R],
    job: Job,
    concurrency: usize,
) -> Vec<(usize, Series)> {
    let (query, labels, members) = match job {
        Job::Single(i) => {
            count_queries("single", 1);
            return vec![(i, single(source, &requests[i]).await)];
        }
        Job::Batch {
            query,
            labels,
            members,
        } => (query, labels, members),
        Job::Wide { members, .. } => {
            // Never planned as a fallback; answered per member rather than not at all.
            count_queries("fallback", members.len());
            let indices = members.into_iter().map(|(i, _)| i).collect();
            return per_member(source, requests, indices, concurrency).await;
        }
    };
    count_queries("batched", 1);
    let r = &requests[members[0].0];
    let identical = labels.is_empty();
    let (indices, wanted) = split_members(members, labels, Extra::Combinations);
    let answer = if identical {
        // Identical queries: every member gets the whole (single-series) answer.
        match source
            .range_data(&query, r.end(), r.window(), r.step())
            .await
        {
            Ok(data) => {
                let s = series(&data);
                return indices.into_iter().map(|i| (i, s.clone())).collect();
            }
            Err(failure) => Err(failure),
        }
    } else {
        source
            .range_split(&query, r.end(), r.window(), r.step(), wanted)
            .await
    };
    let why = match answer {
        Ok(Ok(split)) => return indices.into_iter().zip(split).collect(),
        Ok(Err(why)) => why,
        Err(QueryFailure::NoAnswer(why)) => return shed(indices, &why, "batched"),
        Err(QueryFailure::Unusable(why)) => why,
    };
    tracing::warn!(members = indices.len(), %why, "batched query fell back to one query per member");
    count_queries("fallback", indices.len());
    per_member(source, requests, indices, concurrency).await
}

async fn per_member<S: RangeSource, R: Request>(
    source: &S,
    requests: &[R],
    members: Vec<usize>,
    concurrency: usize,
) -> Vec<(usize, Series)> {
    let singles: Vec<_> = members
        .into_iter()
        .map(|i| async move { (i, single(source, &requests[i]).await) })
        .collect();
    futures_util::stream::iter(singles)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// A batch that got no answer: every member fails this tick with the batch's reason, and
/// nothing more is sent (see the module doc). Counted as `canaryd_prometheus_shed_total`.
fn shed(members: Vec<usize>, why: &str, mode: &str) -> Vec<(usize, Series)> {
    tracing::warn!(members = members.len(), mode, %why,
        "batch query got no answer; its members are errors this tick, not asked again one by one");
    metrics::counter!("canaryd_prometheus_shed_total").increment(members.len() as u64);
    let failed = Series::Failed {
        message: format!(
            "no answer to the batch query asked for {} queries (not asked again one by one \
             this tick, to spare an overloaded Prometheus): {why}",
            members.len()
        ),
    };
    members.into_iter().map(|i| (i, failed.clone())).collect()
}

/// One request alone, with `range_series`' semantics; its text is made only now.
async fn single<S: RangeSource, R: Request>(source: &S, r: &R) -> Series {
    let query = match r.text() {
        Ok(query) => query,
        Err(message) => return Series::Failed { message },
    };
    match source
        .range_data(&query, r.end(), r.window(), r.step())
        .await
    {
        Ok(data) => series(&data),
        Err(failure) => Series::Failed {
            message: failure.into_message(),
        },
    }
}
