//! `canaryd rollout wait` and `canaryd rollout status --watch`: follow one rollout until it
//! ends, for pipelines (an exit code) and for the on-call engineer (a screen redrawn in place).
//!
//! Both poll `GET /api/v1/rollouts/{id}`: the API is the contract, so they work against any
//! daemon version that serves it, through any proxy, with no connection held open.

use crate::html::path_segment;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Exit codes of `wait` (and of `status --watch`): what a pipeline branches on.
pub const EXIT_SUCCEEDED: i32 = 0;
pub const EXIT_ROLLED_BACK: i32 = 1;
pub const EXIT_TIMEOUT: i32 = 2;

/// What one poll found.
enum Poll {
    Live(Value),
    Ended(Value, i32),
    /// The daemon could not be reached or did not answer usable JSON.
    Unreachable(String),
    /// The daemon answered an error (unknown rollout): waiting longer will not help.
    Refused(String),
}

pub struct Follow<'a> {
    pub http: &'a reqwest::Client,
    pub base: &'a str,
    pub id: &'a str,
    pub timeout: Duration,
    pub interval: Duration,
    /// How long the daemon may stay unreachable before `wait` gives up (a restart is brief).
    pub grace: Duration,
}

impl Follow<'_> {
    async fn poll(&self) -> Poll {
        // An id typed by a user is one path segment: `/`, `?` or `#` in it cannot change the route.
        let url = format!("{}/api/v1/rollouts/{}", self.base, path_segment(self.id));
        let resp = match self
            .http
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Poll::Unreachable(crate::redact::text(&e.to_string())),
        };
        let status = resp.status();
        // A daemon that is stopping, restarting or failing over answers 5xx: that is the
        // daemon being away, which `--grace` waits out, not an answer about the rollout.
        if status.is_server_error() {
            return Poll::Unreachable(format!("daemon answered {status}"));
        }
        let value: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => return Poll::Unreachable(format!("answer is not JSON: {e}")),
        };
        if !status.is_success() {
            let why = value["error"].as_str().unwrap_or("request failed");
            return Poll::Refused(format!("{} ({status})", clean(why)));
        }
        match value["phase"].as_str().unwrap_or("") {
            "succeeded" => Poll::Ended(value, EXIT_SUCCEEDED),
            "rolled_back" | "failed" => Poll::Ended(value, EXIT_ROLLED_BACK),
            _ => Poll::Live(value),
        }
    }

    /// Polls until the rollout ends, calling `show` on every answer; returns the exit code.
    async fn run(&self, mut show: impl FnMut(&Value)) -> i32 {
        let deadline = Instant::now() + self.timeout;
        let mut unreachable_since: Option<Instant> = None;
        loop {
            match self.poll().await {
                Poll::Ended(v, code) => {
                    show(&v);
                    println!("{}", outcome_line(&v));
                    return code;
                }
                Poll::Live(v) => {
                    unreachable_since = None;
                    show(&v);
                }
                Poll::Refused(why) => {
                    println!("rollout {}: {why}", clean(self.id));
                    return EXIT_TIMEOUT;
                }
                Poll::Unreachable(why) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.grace {
                        println!(
                            "rollout {}: canaryd at {} unreachable for {}: {why}",
                            clean(self.id),
                            crate::redact::url(self.base),
                            humantime::format_duration(Duration::from_secs(
                                since.elapsed().as_secs()
                            ))
                        );
                        return EXIT_TIMEOUT;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                println!(
                    "rollout {}: still not ended after {}",
                    clean(self.id),
                    humantime::format_duration(self.timeout)
                );
                return EXIT_TIMEOUT;
            }
            tokio::time::sleep(self.interval.min(deadline - now)).await;
        }
    }

    /// `wait`: silent until the end, then the outcome and its reason.
    pub async fn wait(&self) -> i32 {
        self.run(|_| {}).await
    }

    /// `status --watch`: a screen redrawn in place on a terminal; otherwise one plain line
    /// each time something a human would notice changed (phase, step, weight, reason, tick).
    pub async fn watch(&self) -> i32 {
        let tty = std::io::stdout().is_terminal();
        let mut last = String::new();
        self.run(|v| {
            if tty {
                let mut out = std::io::stdout().lock();
                // Home, clear: redraw in place.
                let _ = write!(out, "\x1b[H\x1b[2J{}", screen(v));
                let _ = out.flush();
            } else {
                let line = plain_line(v);
                if line != last {
                    println!("{line}");
                    last = line;
                }
            }
        })
        .await
    }
}

/// Text from the daemon reaches a terminal: control characters (escapes) are shown, not sent.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// `succeeded ro-…: checkout-api v2 — reason`.
pub fn outcome_line(v: &Value) -> String {
    let reason = clean(text(v, "reason"));
    format!(
        "{} {}: {} {}{}",
        clean(text(v, "phase")),
        clean(text(v, "id")),
        clean(text(v, "rule")),
        clean(text(v, "version")),
        if reason.is_empty() {
            String::new()
        } else {
            format!(" — {reason}")
        }
    )
}

fn step_of(v: &Value) -> String {
    let n = v["steps"].as_array().map_or(0, Vec::len);
    format!("step {}/{n}", v["step"].as_u64().unwrap_or(0) + 1)
}

/// One line for logs and pipes.
pub fn plain_line(v: &Value) -> String {
    format!(
        "{} {} {} weight {}% hold {}{}",
        clean(text(v, "phase")),
        clean(text(v, "id")),
        step_of(v),
        v["weight"].as_u64().unwrap_or(0),
        hold_text(v),
        match clean(text(v, "reason")) {
            r if r.is_empty() => String::new(),
            r => format!(" — {r}"),
        }
    )
}

fn hold_text(v: &Value) -> String {
    let h = &v["hold"];
    match (h["elapsed_secs"].as_u64(), h["total_secs"].as_u64()) {
        (Some(e), Some(t)) => format!("{}s/{}s", e.min(t), t),
        _ => "-".into(),
    }
}

/// `[#####.....]` for the step's hold.
pub fn bar(elapsed: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        ((elapsed.min(total) as f64 / total as f64) * width as f64).round() as usize
    };
    format!(
        "[{}{}]",
        "#".repeat(filled.min(width)),
        ".".repeat(width - filled.min(width))
    )
}

fn num(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.4}"))
}

/// The full screen: header, hold bar, one row per metric, the last event.
pub fn screen(v: &Value) -> String {
    let mut s = format!(
        "{}  {}  {}\nphase {}   {}   weight {}%{}\n",
        clean(text(v, "id")),
        clean(text(v, "rule")),
        clean(text(v, "version")),
        clean(text(v, "phase")),
        step_of(v),
        v["weight"].as_u64().unwrap_or(0),
        if v["emergency"].as_bool() == Some(true) {
            "   EMERGENCY"
        } else {
            ""
        }
    );
    let h = &v["hold"];
    if let (Some(e), Some(t)) = (h["elapsed_secs"].as_u64(), h["total_secs"].as_u64()) {
        s += &format!("hold {} {}s/{}s\n", bar(e, t, 30), e.min(t), t);
    }
    s += &format!(
        "\n{:<24} {:<8} {:>12} {:>12} {:>22} {:>10}\n",
        "METRIC", "VERDICT", "CANARY", "BASELINE", "THRESHOLD", "EVIDENCE"
    );
    for c in v["checks"].as_array().into_iter().flatten() {
        let threshold = match (
            c["threshold"]["kind"].as_str(),
            c["threshold"]["value"].as_f64(),
        ) {
            (Some(k), Some(x)) => format!("{} {x}", clean(k)),
            _ => "-".into(),
        };
        let evidence = match c["evidence"]["e_value"].as_f64() {
            Some(e) => format!(
                "{e:.2}/{}",
                c["evidence"]["threshold"].as_f64().unwrap_or(0.0)
            ),
            None => "-".into(),
        };
        s += &format!(
            "{:<24} {:<8} {:>12} {:>12} {:>22} {:>10}\n",
            clean(c["metric"].as_str().unwrap_or("")),
            clean(c["verdict"].as_str().unwrap_or("")),
            num(&c["canary"]),
            num(&c["baseline"]),
            threshold,
            evidence
        );
    }
    let last = v["controls"].as_array().and_then(|c| c.last()).map(|c| {
        format!(
            "{} by {} at {}{}",
            clean(text(c, "action")),
            clean(text(c, "by")),
            clean(text(c, "at")),
            match clean(text(c, "reason")) {
                r if r.is_empty() => String::new(),
                r => format!(": {r}"),
            }
        )
    });
    s += &format!(
        "\nlast event {}  {}\n",
        clean(text(v, "updated_at")),
        clean(text(v, "reason"))
    );
    if let Some(c) = last {
        s += &format!("last control {c}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bar_fills_with_the_hold_and_never_overflows() {
        assert_eq!(bar(0, 10, 10), "[..........]");
        assert_eq!(bar(5, 10, 10), "[#####.....]");
        assert_eq!(bar(50, 10, 10), "[##########]");
        assert_eq!(bar(0, 0, 4), "[####]");
    }

    #[test]
    fn screen_shows_every_metric_and_escapes_control_characters() {
        let v = json!({
            "id": "ro-1", "rule": "api", "version": "v2", "phase": "progressing",
            "step": 1, "steps": [5, 25, 100], "weight": 25,
            "hold": {"elapsed_secs": 30, "total_secs": 60},
            "reason": "evil\u{1b}[2Jreason",
            "checks": [{"metric": "error_rate", "verdict": "pass", "canary": 0.01,
                        "baseline": 0.02, "threshold": {"kind": "rollback_above", "value": 0.05}}],
        });
        let s = screen(&v);
        assert!(
            s.contains("step 2/3") && s.contains("[###############...............]"),
            "{s}"
        );
        assert!(
            s.contains("error_rate") && s.contains("0.0100") && s.contains("rollback_above 0.05")
        );
        assert!(!s.contains('\u{1b}'), "{s}");
        assert_eq!(
            plain_line(&v),
            "progressing ro-1 step 2/3 weight 25% hold 30s/60s — evil\u{fffd}[2Jreason"
        );
    }
}
