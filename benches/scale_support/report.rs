//! One measured run as a row of the scale table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::measure::{TickWindow, percentile};

/// Counters read at one end of the measured window.
pub struct Sample {
    pub at: Instant,
    /// CPU seconds used so far (user + system, all threads).
    pub canaryd_cpu: f64,
    pub prometheus_cpu: f64,
    /// The bench process itself: the exporter and the HTTP clients share the machine.
    pub bench_cpu: f64,
    pub prometheus_queries: Option<f64>,
    /// Range queries canaryd sent (its own histogram's count): the fallback when Prometheus
    /// does not answer for its counters.
    pub canaryd_queries: Option<f64>,
    /// When Prometheus answered with its counters: under load its `/metrics` waits behind the
    /// queries for a connection, so the query rate has its own clock.
    pub prometheus_at: Instant,
    /// `canaryd_store_commits_total`, when the daemon has it.
    pub store_commits: Option<f64>,
    pub tick_seq: i64,
    /// canaryd's own `/metrics` at this end, for the diagnostics line.
    pub daemon_metrics: String,
}

pub struct Row {
    pub n: usize,
    pub batch: bool,
    pub start_time: Duration,
    pub interval: Duration,
    pub first: Sample,
    pub last: Sample,
    pub window: TickWindow,
    /// fsync + fdatasync calls of canaryd per second, counted by perf.
    pub fsyncs_per_second: Option<f64>,
    pub prometheus_idle_cpu: Option<f64>,
    pub canaryd_hwm_kib: Option<u64>,
    pub prometheus_hwm_kib: Option<u64>,
    pub phases: BTreeMap<String, i64>,
    /// `diag::line`: open files, query failures, shed queries, /metrics and log sizes.
    pub diagnostics: String,
}

pub fn header() -> String {
    "| N | batching | rollouts started in | canaryd CPU | canaryd peak RSS | Prometheus CPU, scrapes only → with rollouts | Prometheus peak RSS | queries/s | queries per tick interval | tick gap p50 / p99 / max | ticks without data | tick saves/s | store commits/s | fsyncs/s | bench process CPU | rollouts at end |\n\
     |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        .to_string()
}

fn pct(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

impl Row {
    fn wall(&self) -> f64 {
        self.last.at.duration_since(self.first.at).as_secs_f64()
    }

    fn share(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        (f(&self.last) - f(&self.first)) / self.wall()
    }

    /// Queries per second, and whether they were counted by canaryd (Prometheus did not answer
    /// for its own counters at one end of the window).
    fn queries_per_second(&self) -> Option<(f64, bool)> {
        if let (Some(a), Some(b)) = (self.first.prometheus_queries, self.last.prometheus_queries) {
            let wall = self
                .last
                .prometheus_at
                .duration_since(self.first.prometheus_at)
                .as_secs_f64();
            return Some(((b - a) / wall, false));
        }
        let (a, b) = (self.first.canaryd_queries?, self.last.canaryd_queries?);
        Some(((b - a) / self.wall(), true))
    }

    fn gap(&self, p: f64) -> Option<f64> {
        percentile(&self.window.gaps, p)
    }

    pub fn line(&self) -> String {
        let (qps, per_tick) = match self.queries_per_second() {
            Some((q, by_canaryd)) => {
                let mark = if by_canaryd {
                    " (sent, by canaryd)"
                } else {
                    ""
                };
                (
                    format!("{q:.0}{mark}"),
                    format!("{:.0}{mark}", q * self.interval.as_secs_f64()),
                )
            }
            None => ("n/a".into(), "n/a".into()),
        };
        let gaps = match (self.gap(50.0), self.gap(99.0), self.window.gaps.last()) {
            (Some(a), Some(b), Some(c)) => format!("{a:.2} / {b:.2} / {c:.2} s"),
            _ => "n/a".into(),
        };
        let commits = match (self.first.store_commits, self.last.store_commits) {
            (Some(a), Some(b)) => format!("{:.1}", (b - a) / self.wall()),
            _ => "n/a".into(),
        };
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(p, c)| format!("{c} {p}"))
            .collect();
        format!(
            "| {n} | {batch} | {start:.0} s | {canaryd} | {rss} | {idle} → {prom} | {prom_rss} | {qps} | {per_tick} | {gaps} | {nodata} | {saves:.1} | {commits} | {fsyncs} | {bench} | {phases} |",
            n = self.n,
            batch = if self.batch { "on" } else { "off" },
            start = self.start_time.as_secs_f64(),
            canaryd = pct(self.share(|s| s.canaryd_cpu)),
            rss = mib(self.canaryd_hwm_kib),
            idle = self.prometheus_idle_cpu.map_or("n/a".into(), pct),
            prom = pct(self.share(|s| s.prometheus_cpu)),
            prom_rss = mib(self.prometheus_hwm_kib),
            nodata = if self.window.ticks == 0 {
                "n/a".into()
            } else {
                pct(self.window.without_data as f64 / self.window.ticks as f64)
            },
            saves = self.window.ticks as f64 / self.wall(),
            fsyncs = self
                .fsyncs_per_second
                .map_or("n/a".into(), |f| format!("{f:.1}")),
            bench = pct(self.share(|s| s.bench_cpu)),
            phases = phases.join(", "),
        )
    }

    /// For the smoke run: every column the table shows was really measured, so a broken probe
    /// (a renamed Prometheus metric, an empty ticks table, a PID not found) fails CI.
    pub fn check_measured(&self) -> Result<()> {
        let w = &self.window;
        if w.rollouts_ticked != self.n {
            bail!(
                "{} of {} rollouts ticked in the window",
                w.rollouts_ticked,
                self.n
            );
        }
        if w.gaps.is_empty() {
            bail!("no rollout ticked twice in the window: no tick gap measured");
        }
        if !self
            .queries_per_second()
            .is_some_and(|(q, by_canaryd)| q > 0.0 && !by_canaryd)
        {
            bail!(
                "Prometheus counted no queries while {} rollouts ticked",
                self.n
            );
        }
        if self.share(|s| s.canaryd_cpu) <= 0.0 || self.canaryd_hwm_kib.is_none() {
            bail!("canaryd's CPU or memory was not measured");
        }
        if self.share(|s| s.prometheus_cpu) <= 0.0 {
            bail!("Prometheus's CPU was not measured");
        }
        if self.phases.get("progressing").copied().unwrap_or(0) == 0 {
            bail!("no rollout progressing at the end: {:?}", self.phases);
        }
        Ok(())
    }
}
