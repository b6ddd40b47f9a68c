//! What the scale bench reads: CPU and memory of processes from /proc, Prometheus's own query
//! counter, canaryd's counters, and tick times from canaryd's SQLite store.
//!
//! Tick punctuality comes from the store's `ticks` table: every judged tick is saved with `at`,
//! the instant its gathering started, so the gap between a rollout's consecutive rows is the gap
//! between its tick starts — no change to the daemon needed to measure it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

/// Kernel clock ticks per second, the unit of utime and stime in /proc/PID/stat.
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds `pid` has used, all threads included.
pub fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

/// A `Vm…:` line of /proc/PID/status in KiB (`VmHWM` is the peak resident set).
pub fn vm_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The process whose command line contains `needle` (the demo's Prometheus does not expose its
/// PID; its config path, unique to its temporary directory, finds it).
pub fn pid_with_arg(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == needle.as_bytes())
            .then_some(pid)
    })
}

/// The sum of the samples of `family` in a text exposition whose labels satisfy `keep`.
pub fn family_sum(exposition: &str, family: &str, keep: impl Fn(&str) -> bool) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let labels = match rest.strip_prefix('{') {
            Some(r) => r.split('}').next().unwrap_or(""),
            None if rest.starts_with(' ') => "",
            None => continue,
        };
        if !keep(labels) {
            continue;
        }
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

pub async fn get_text(http: &reqwest::Client, url: &str) -> Result<String> {
    http.get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .text()
        .await
        .with_context(|| format!("reading {url}"))
}

/// Queries Prometheus has answered on its query APIs (instant and range), from its own
/// `prometheus_http_requests_total`.
pub async fn prometheus_queries(http: &reqwest::Client, prometheus_url: &str) -> Result<f64> {
    let text = get_text(http, &format!("{prometheus_url}/metrics")).await?;
    family_sum(&text, "prometheus_http_requests_total", |labels| {
        labels.contains("handler=\"/api/v1/query\"")
            || labels.contains("handler=\"/api/v1/query_range\"")
    })
    .context("Prometheus exposes no prometheus_http_requests_total for its query handlers")
}

/// Tick times from canaryd's store, read through a second connection (WAL: the daemon's
/// writer is never blocked by it).
pub struct Ticks {
    conn: rusqlite::Connection,
}

/// What the ticks saved in a window say.
#[derive(Debug, Default)]
pub struct TickWindow {
    pub ticks: u64,
    /// Ticks with a metric judged `error` or `nodata` (a missed deadline is `error` on all).
    pub without_data: u64,
    pub rollouts_ticked: usize,
    /// Seconds between consecutive tick starts of the same rollout, sorted.
    pub gaps: Vec<f64>,
}

impl Ticks {
    pub fn open(db: &Path) -> Result<Ticks> {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {}", db.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Ticks { conn })
    }

    /// The newest tick's sequence number: marks the start or end of a window.
    pub fn last_seq(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM ticks", [], |r| r.get(0))?)
    }

    /// Rollouts by phase.
    pub fn phases(&self) -> Result<BTreeMap<String, i64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT phase, COUNT(*) FROM rollouts GROUP BY phase")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ticks with `after < seq <= until`.
    pub fn window(&self, after: i64, until: i64) -> Result<TickWindow> {
        let mut stmt = self.conn.prepare(
            "SELECT rollout_id, at, tick FROM ticks WHERE seq > ?1 AND seq <= ?2
             ORDER BY rollout_id, seq",
        )?;
        let mut rows = stmt.query([after, until])?;
        let mut w = TickWindow::default();
        let mut previous: Option<(String, chrono::DateTime<chrono::FixedOffset>)> = None;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let at: String = row.get(1)?;
            let tick: String = row.get(2)?;
            let at = chrono::DateTime::parse_from_rfc3339(&at)
                .with_context(|| format!("tick time {at:?} of {id}"))?;
            w.ticks += 1;
            if lacks_data(&tick) {
                w.without_data += 1;
            }
            match &previous {
                Some((prev_id, prev_at)) if *prev_id == id => {
                    w.gaps
                        .push((at - *prev_at).num_microseconds().unwrap_or(0) as f64 / 1e6);
                }
                _ => w.rollouts_ticked += 1,
            }
            previous = Some((id, at));
        }
        w.gaps.sort_by(f64::total_cmp);
        Ok(w)
    }
}

fn lacks_data(tick_json: &str) -> bool {
    let Ok(tick) = serde_json::from_str::<serde_json::Value>(tick_json) else {
        return true;
    };
    tick["checks"].as_array().is_some_and(|checks| {
        checks
            .iter()
            .any(|c| c["verdict"] == "error" || c["verdict"] == "nodata")
    })
}

/// Nearest-rank percentile of sorted values; `None` when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Starts counting the fsync and fdatasync calls of `pid` (every thread, those started later
/// too) for `d`, with `perf stat` on the syscall tracepoints: the store's real syncs, whatever
/// SQLite does per commit and at checkpoints. The task answers `None` where perf or the
/// tracepoints are unavailable (no root, no perf).
pub fn count_fsyncs(pid: u32, d: std::time::Duration) -> tokio::task::JoinHandle<Option<f64>> {
    tokio::spawn(async move {
        let mut perf = tokio::process::Command::new("perf");
        canaryd::demo::die_with_parent(&mut perf);
        let out = perf
            .args(["stat", "-x", ",", "-e"])
            .arg("syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync")
            .arg("-p")
            .arg(pid.to_string())
            .arg("--")
            .arg("sleep")
            .arg(format!("{:.3}", d.as_secs_f64()))
            .kill_on_drop(true)
            .output()
            .await
            .ok()?;
        if !out.status.success() {
            return None;
        }
        // CSV lines `count,unit,event,…`; a count of `<not counted>` means nothing was measured.
        let text = String::from_utf8_lossy(&out.stderr);
        let counts: Vec<Option<f64>> = text
            .lines()
            .filter(|l| l.contains("syscalls:sys_enter_f"))
            .map(|l| l.split(',').next().and_then(|c| c.trim().parse().ok()))
            .collect();
        if counts.len() != 2 {
            return None;
        }
        counts.into_iter().sum()
    })
}
