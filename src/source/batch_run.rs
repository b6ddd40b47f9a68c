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

use super::batch::{Job, RangeRequest, RangeSource, Wanted};
use super::batch_split::Extra;
use super::prometheus::QueryFailure;
use super::prometheus::series;
use crate::judge::observation::Series;

/// Counts one query sent, by how: `batched`, `wide`, `single` or `fallback`.
pub fn count_queries(mode: &'static str, n: usize) {
    metrics::counter!("canaryd_prometheus_queries_total", "mode" => mode).increment(n as u64);
}

pub(super) async fn run<S: RangeSource>(
    source: &S,
    requests: &[RangeRequest],
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
    let keys: Vec<Vec<String>> = members.iter().map(|(_, k)| k.clone()).collect();
    let wanted = Wanted {
        labels: &labels,
        keys: &keys,
        extra: Extra::Unlabelled,
    };
    let why = match source
        .range_split(&query, r.end, r.window, r.step, wanted)
        .await
    {
        Ok(Ok(split)) => return members.iter().map(|(i, _)| *i).zip(split).collect(),
        Ok(Err(why)) => why,
        Err(QueryFailure::NoAnswer(why)) => return shed(members, &why, "wide"),
        Err(QueryFailure::Unusable(why)) => why,
    };
    tracing::warn!(members = members.len(), %why, "wide query fell back to regex batches");
    let runs: Vec<_> = fallback
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
async fn run_one<S: RangeSource>(
    source: &S,
    requests: &[RangeRequest],
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
            return per_member(source, requests, members, concurrency).await;
        }
    };
    count_queries("batched", 1);
    let r = &requests[members[0].0];
    let answer = if labels.is_empty() {
        // Identical queries: every member gets the whole (single-series) answer.
        match source.range_data(&query, r.end, r.window, r.step).await {
            Ok(data) => {
                let s = series(&data);
                return members.into_iter().map(|(i, _)| (i, s.clone())).collect();
            }
            Err(failure) => Err(failure),
        }
    } else {
        let keys: Vec<Vec<String>> = members.iter().map(|(_, k)| k.clone()).collect();
        let wanted = Wanted {
            labels: &labels,
            keys: &keys,
            extra: Extra::Combinations,
        };
        source
            .range_split(&query, r.end, r.window, r.step, wanted)
            .await
    };
    let why = match answer {
        Ok(Ok(split)) => return members.iter().map(|(i, _)| *i).zip(split).collect(),
        Ok(Err(why)) => why,
        Err(QueryFailure::NoAnswer(why)) => return shed(members, &why, "batched"),
        Err(QueryFailure::Unusable(why)) => why,
    };
    tracing::warn!(members = members.len(), %why, "batched query fell back to one query per member");
    count_queries("fallback", members.len());
    per_member(source, requests, members, concurrency).await
}

async fn per_member<S: RangeSource>(
    source: &S,
    requests: &[RangeRequest],
    members: Vec<(usize, Vec<String>)>,
    concurrency: usize,
) -> Vec<(usize, Series)> {
    let singles: Vec<_> = members
        .into_iter()
        .map(|(i, _)| async move { (i, single(source, &requests[i]).await) })
        .collect();
    futures_util::stream::iter(singles)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// A batch that got no answer: every member fails this tick with the batch's reason, and
/// nothing more is sent (see the module doc). Counted as `canaryd_prometheus_shed_total`.
fn shed(members: Vec<(usize, Vec<String>)>, why: &str, mode: &str) -> Vec<(usize, Series)> {
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
    members
        .into_iter()
        .map(|(i, _)| (i, failed.clone()))
        .collect()
}

/// One request alone, with `range_series`' semantics.
async fn single<S: RangeSource>(source: &S, r: &RangeRequest) -> Series {
    match source.range_data(&r.query, r.end, r.window, r.step).await {
        Ok(data) => series(&data),
        Err(failure) => Series::Failed {
            message: failure.into_message(),
        },
    }
}
