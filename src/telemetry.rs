//! canaryd's own metrics and logs. Names are the contract of design.md.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::fmt::Write as _;
use std::io::IsTerminal as _;

use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::rollout::{Phase, Rollout, Tick};
use crate::rules::Rule;
use crate::verdict::Verdict;

/// Installs the global metrics recorder once per process and describes every metric, so
/// `/metrics` documents itself even before the first rollout.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<Result<PrometheusHandle, String>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| format!("cannot install metrics recorder: {e}"))?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    // canaryd_metric_threshold, canaryd_check_verdicts_total, canaryd_promotions_total and
    // canaryd_rollbacks_total: described where they are rendered (`telemetry_rules.rs`).
    describe_gauge!(
        "canaryd_leader",
        "1 while this replica leads (always with the embedded store), 0 on a follower"
    );
    describe_counter!(
        "canaryd_leader_changes_total",
        "Times this replica won or lost the leader lease"
    );
    describe_histogram!(
        "canaryd_prometheus_query_duration_seconds",
        Unit::Seconds,
        "Duration of range queries to Prometheus"
    );
    describe_counter!(
        "canaryd_prometheus_errors_total",
        "Failed Prometheus queries by kind"
    );
    describe_counter!(
        "canaryd_prometheus_answer_bytes_total",
        Unit::Bytes,
        "Bytes read from Prometheus answers, by the encoding they came in (gzip, identity): with prometheus.compress on, identity bytes mean something between strips the compression"
    );
    describe_counter!(
        "canaryd_prometheus_queries_total",
        "Range queries sent by how: batched (one for a group of alike queries), wide (one for a whole group, its varying matchers dropped), single, fallback (per member after a failed or ambiguous batch)"
    );
    describe_counter!(
        "canaryd_prometheus_shed_total",
        "Queries failed without being sent because their batch got no answer (Prometheus down, overloaded or too slow): the tick judges them error instead of asking each alone"
    );
    describe_counter!(
        "canaryd_prometheus_deadline_missed_total",
        "Queries given up at their tick's deadline: only their metrics are judged error that tick, the metrics that answered in time are judged"
    );
    describe_counter!(
        "canaryd_hook_calls_total",
        "Hook delivery attempts by hook and outcome (success, error)"
    );
    describe_counter!(
        "canaryd_rules_reloads_total",
        "Rule reloads attempted (SIGHUP or a content change of a watched rule file)"
    );
    describe_counter!(
        "canaryd_store_commits_total",
        "Store transactions that saved decisions (one fsync each with SQLite; group commit puts a scheduler slot's decisions in one)"
    );
    describe_counter!(
        "canaryd_store_saves_total",
        "Decisions saved (or refused) through the group commit"
    );
    describe_counter!(
        "canaryd_slot_ticks_total",
        "Ticks gathered by the scheduler's slots, by how: planned (from what the rollout published, at the slot instant), asked (its actor answered within the collect window), late (gathered in a later wave: its actor was busy or its state moved on)"
    );
    describe_gauge!(
        "canaryd_rules_reload_success",
        "1 when the last rule (re)load succeeded, 0 when it kept the previous rules"
    );
}

/// Counters start at 0 for every known label set, so a `rate()` or an alert on them works from
/// the first scrape instead of after the first incident.
pub fn init_series<'a>(rules: impl IntoIterator<Item = &'a str>) {
    counter!("canaryd_store_commits_total").increment(0);
    counter!("canaryd_store_saves_total").increment(0);
    {
        let mut kept = rules::registry();
        for rule in rules {
            kept.know_rule(rule);
        }
    }
    for hook in ["set_weight", "promote", "rollback"] {
        for outcome in ["success", "error"] {
            counter!("canaryd_hook_calls_total", "hook" => hook, "outcome" => outcome).increment(0);
        }
    }
    for kind in ["query", "transport", "other"] {
        counter!("canaryd_prometheus_errors_total", "kind" => kind).increment(0);
    }
    counter!("canaryd_prometheus_shed_total").increment(0);
    counter!("canaryd_prometheus_deadline_missed_total").increment(0);
    for encoding in ["gzip", "identity"] {
        counter!("canaryd_prometheus_answer_bytes_total", "encoding" => encoding).increment(0);
    }
    for how in ["planned", "asked", "late"] {
        counter!("canaryd_slot_ticks_total", "how" => how).increment(0);
    }
    for mode in ["batched", "wide", "single", "fallback"] {
        counter!("canaryd_prometheus_queries_total", "mode" => mode).increment(0);
    }
}

#[path = "telemetry_chunks.rs"]
mod chunks;
#[path = "telemetry_rollouts.rs"]
mod rollouts;
#[path = "telemetry_rules.rs"]
mod rules;

/// Appends the series kept outside the recorder (per rollout, per rule) to `out`, the
/// recorder's exposition: the text [`Exposition`] streams, whole.
pub fn render_rollouts(out: &mut String) {
    for chunk in Exposition::new(String::new()) {
        out.push_str(&chunk);
    }
}

pub use chunks::Exposition;

/// Per-tick gauges and verdict counters. The per-rollout gauges live in [`rollouts`], which
/// forgets ended rollouts; the per-rule verdict counters and thresholds in [`rules`].
pub fn record_tick(r: &Rollout, rule: &Rule, tick: &Tick) {
    let mut values = Vec::new();
    let mut evidence = Vec::new();
    for c in &tick.checks {
        if let Some(ev) = &c.evidence {
            evidence.push((&*c.metric, ev.e_value));
        }
        for (group, v) in [("canary", c.canary), ("baseline", c.baseline)] {
            if let Some(v) = v {
                values.push((&*c.metric, group, v));
            }
        }
    }
    rollouts::registry().set_tick(&r.id, &r.rule, tick.score.value, values, evidence);
    let mut kept = rules::registry();
    for c in &tick.checks {
        // In the order of `rules::VERDICTS`.
        let verdict = match c.verdict {
            Verdict::Pass => 0,
            Verdict::Warn => 1,
            Verdict::Fail => 2,
            Verdict::Nodata => 3,
            Verdict::Error => 4,
        };
        kept.count_verdict(&r.rule, &c.metric, verdict);
    }
    for m in rule.metrics() {
        // In the order of `rules::KINDS`.
        let values = [
            m.rollback_above,
            m.rollback_below,
            m.warn_above,
            m.warn_below,
            m.max_ratio,
        ];
        if values.iter().any(Option::is_some) {
            kept.set_thresholds(&r.rule, &m.name, values);
        }
    }
}

/// One group commit: `commits` transactions for `saves` decisions.
pub fn record_store_commits(commits: u64, saves: usize) {
    counter!("canaryd_store_commits_total").increment(commits);
    counter!("canaryd_store_saves_total").increment(saves as u64);
}

/// `n` ticks gathered by a slot, `how` (planned, asked or late).
pub fn record_slot_ticks(how: &'static str, n: usize) {
    if n > 0 {
        counter!("canaryd_slot_ticks_total", "how" => how).increment(n as u64);
    }
}

/// Phase and weight gauges, and the rollback/promotion counters on the edge that caused them.
pub fn record_rollout(r: &Rollout, before: &Rollout) {
    {
        let mut kept = rollouts::registry();
        kept.set_state(&r.id, &r.rule, r.phase.code(), f64::from(r.weight));
        if r.phase.is_terminal() {
            kept.ended(&r.id);
        }
    }
    if r.rollback_decided && !before.rollback_decided {
        rules::registry().count_rollback(&r.rule, rollback_kind(r.reason.as_deref()));
    }
    if r.phase == Phase::Succeeded && before.phase != Phase::Succeeded {
        rules::registry().count_promotion(&r.rule);
    }
}

/// A small fixed set of label values (`rules::ROLLBACK_REASONS`): free text in a label would
/// explode cardinality.
fn rollback_kind(reason: Option<&str>) -> &'static str {
    match reason.unwrap_or_default() {
        r if r.starts_with("aborted") => "abort",
        r if r.starts_with("alert fired") => "alert",
        r if r.starts_with("health check") => "health",
        r if r.contains("hook failed") => "hook",
        _ => "metric",
    }
}

/// Text or JSON logs to stderr; `RUST_LOG` overrides the default level.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests in one process) keeps the first subscriber.
    match format {
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .json()
                .flatten_event(true)
                .try_init();
        }
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            let _ = text_subscriber(filter, std::io::stderr, ansi).try_init();
        }
    }
}

/// The text log: one line per event, whatever its fields hold. Versions, abort reasons, rule
/// names and alert labels come from users and peers; a newline in one would otherwise start a
/// line that reads like canaryd's own ("… INFO rollout.promote …"). Fields are written through
/// [`escape_field`], so every event stays on its line. (JSON logs need nothing: JSON escapes.)
pub fn text_subscriber<W>(
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .fmt_fields(format::debug_fn(escape_field).delimited(" "))
        .finish()
}

/// Writes one field as `name=value` (the message bare), control characters escaped.
fn escape_field(
    w: &mut Writer<'_>,
    field: &Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    if field.name() != "message" {
        write!(w, "{}=", field.name())?;
    }
    write!(ControlEscaper(w), "{value:?}")
}

/// Passes text through with every control character (and Unicode's line and paragraph
/// separators) written as an escape: `\n`, `\r`, `\t`, `\u{1b}`.
struct ControlEscaper<'a, W: std::fmt::Write>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for ControlEscaper<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut clean = 0;
        for (i, c) in s.char_indices() {
            let short = match c {
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => None,
                _ => continue,
            };
            self.0.write_str(&s[clean..i])?;
            match short {
                Some(escape) => self.0.write_str(escape)?,
                None => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            clean = i + c.len_utf8();
        }
        self.0.write_str(&s[clean..])
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let sink = buf.clone();
        let subscriber = text_subscriber(EnvFilter::new("info"), move || sink.clone(), false);
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn a_newline_in_a_field_cannot_start_a_log_line() {
        let forged = "v1\n2026-01-01T00:00:00Z  INFO rollout.promote: promoted\r\u{1b}[2J\u{2028}x";
        let out = logged(
            || tracing::warn!(event = "rollout.rollback", version = %forged, reason = ?forged, "rolling back {forged}"),
        );
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("version=v1\\n2026-01-01T00:00:00Z  INFO rollout.promote: promoted\\r\\u{1b}[2J\\u{2028}x"), "{out}");
        assert!(out.contains("rolling back v1\\n2026"), "{out}");
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out}");
    }

    #[test]
    fn plain_fields_read_as_before() {
        let out = logged(
            || tracing::info!(event = "hook.call", rollout = %"ro-1", attempts = 2, "hook delivered"),
        );
        assert!(out.contains("hook delivered"), "{out}");
        assert!(
            out.contains(r#"event="hook.call" rollout=ro-1 attempts=2"#),
            "{out}"
        );
    }
}
