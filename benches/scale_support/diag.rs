//! What the table does not show but a failing run needs explained: open files against their
//! limits (the first suspect when a server "refuses connections"), how canaryd's queries failed
//! and how many it shed, the mean query time, the size of canaryd's own `/metrics` and of its
//! log. Printed as one line after each run's row.

use std::path::Path;
use std::time::Duration;

use super::measure::family_sum;

/// Open file descriptors of `pid` and its soft limit (`Max open files`).
pub fn fds(pid: u32) -> String {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count);
    let limit = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        });
    match (open, limit) {
        (Ok(o), Some(l)) => format!("{o} of {l}"),
        (Ok(o), None) => format!("{o} of ?"),
        _ => "n/a".into(),
    }
}

/// The change of a counter family (filtered by `keep` on its labels) between two expositions.
fn delta(first: &str, last: &str, family: &str, keep: impl Fn(&str) -> bool + Copy) -> String {
    match (
        family_sum(first, family, keep),
        family_sum(last, family, keep),
    ) {
        (Some(a), Some(b)) => format!("{:.0}", b - a),
        (None, Some(b)) => format!("{b:.0}"),
        _ => "n/a".into(),
    }
}

/// One line of diagnostics for a run: `first` and `last` are canaryd's `/metrics` at the ends
/// of the window, `fds` what [`fds`] said for canaryd and Prometheus at its end.
pub fn line(
    first: &str,
    last: &str,
    fds_canaryd: &str,
    fds_prometheus: &str,
    log: &Path,
) -> String {
    let errors: Vec<String> = ["transport", "query", "too_large", "other"]
        .iter()
        .map(|k| {
            let label = format!("kind=\"{k}\"");
            format!(
                "{k} {}",
                delta(first, last, "canaryd_prometheus_errors_total", |l| l
                    .contains(&label))
            )
        })
        .collect();
    let modes: Vec<String> = ["wide", "batched", "single", "fallback"]
        .iter()
        .map(|m| {
            let label = format!("mode=\"{m}\"");
            format!(
                "{m} {}",
                delta(first, last, "canaryd_prometheus_queries_total", |l| l
                    .contains(&label))
            )
        })
        .collect();
    let slots: Vec<String> = ["planned", "asked", "late"]
        .iter()
        .map(|h| {
            let label = format!("how=\"{h}\"");
            format!(
                "{h} {}",
                delta(first, last, "canaryd_slot_ticks_total", |l| l
                    .contains(&label))
            )
        })
        .collect();
    let windows: Vec<String> = ["full", "partial"]
        .iter()
        .map(|h| {
            let label = format!("how=\"{h}\"");
            format!(
                "{h} {}",
                delta(first, last, "canaryd_prometheus_windows_total", |l| l
                    .contains(&label))
            )
        })
        .collect();
    let mean_query = match (
        family_sum(
            last,
            "canaryd_prometheus_query_duration_seconds_sum",
            |_| true,
        ),
        family_sum(
            last,
            "canaryd_prometheus_query_duration_seconds_count",
            |_| true,
        ),
        family_sum(
            first,
            "canaryd_prometheus_query_duration_seconds_sum",
            |_| true,
        ),
        family_sum(
            first,
            "canaryd_prometheus_query_duration_seconds_count",
            |_| true,
        ),
    ) {
        (Some(s1), Some(c1), Some(s0), Some(c0)) if c1 > c0 => {
            format!("{:.2} s", (s1 - s0) / (c1 - c0))
        }
        _ => "n/a".into(),
    };
    let series = last.lines().filter(|l| !l.starts_with('#')).count();
    let log_text = std::fs::read_to_string(log).unwrap_or_default();
    format!(
        "diagnostics: open files canaryd {fds_canaryd}, Prometheus {fds_prometheus}; \
         ticks in the window by how the slot got them: {}; queries in the window by mode: {}; \
         batch windows asked: {}; errors by kind: {}; shed (not sent after a batch \
         got no answer): {}; given up at the tick deadline: {}; mean query time {mean_query}; canaryd /metrics {series} series, \
         {} KiB; canaryd log {} lines, {} KiB ({} WARN)",
        slots.join(", "),
        modes.join(", "),
        windows.join(", "),
        errors.join(", "),
        delta(first, last, "canaryd_prometheus_shed_total", |_| true),
        delta(
            first,
            last,
            "canaryd_prometheus_deadline_missed_total",
            |_| true
        ),
        last.len() / 1024,
        log_text.lines().count(),
        log_text.len() / 1024,
        log_text.lines().filter(|l| l.contains(" WARN ")).count(),
    )
}

/// The Prometheus answer bytes canaryd read in the window, by encoding
/// (`canaryd_prometheus_answer_bytes_total`), in all and per tick interval: what
/// `prometheus.compress` saves on the wire. "n/a" on builds without the metric.
pub fn answer_bytes(first: &str, last: &str, window: Duration, interval: Duration) -> String {
    const FAMILY: &str = "canaryd_prometheus_answer_bytes_total";
    let intervals = window.as_secs_f64() / interval.as_secs_f64().max(1e-9);
    let by: Vec<String> = ["gzip", "identity"]
        .iter()
        .map(|e| {
            let label = format!("encoding=\"{e}\"");
            let keep = |l: &str| l.contains(&label);
            match (
                family_sum(first, FAMILY, keep),
                family_sum(last, FAMILY, keep),
            ) {
                (Some(a), Some(b)) => format!(
                    "{e} {:.2} MB ({:.3} MB per tick interval)",
                    (b - a) / 1e6,
                    (b - a) / 1e6 / intervals
                ),
                _ => format!("{e} n/a"),
            }
        })
        .collect();
    format!("answer bytes read in the window: {}", by.join(", "))
}
