//! The scale bench's parameters (arguments override environment variables) and the rule files
//! it generates.

use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

/// Every parameter: its flag (`--n 1000,3000`) and its environment variable.
const KEYS: [(&str, &str); 9] = [
    ("n", "SCALE_N"),
    ("duration", "SCALE_DURATION"),
    ("settle", "SCALE_SETTLE"),
    ("idle", "SCALE_IDLE"),
    ("batch", "SCALE_BATCH"),
    ("daemon-arg", "SCALE_DAEMON_ARGS"),
    ("start-concurrency", "SCALE_START_CONCURRENCY"),
    ("interval", "SCALE_INTERVAL"),
    ("scrape", "SCALE_SCRAPE"),
];

/// The daemon arguments that turn query batching on and off (`prometheus.batch_queries`, on by
/// default in the daemon); per run, `SCALE_BATCH_ON_ARGS` / `SCALE_BATCH_OFF_ARGS`
/// (whitespace-separated) replace them, e.g. empty to measure an older build without the flag.
const BATCH_ON_ARGS: &[&str] = &["--prometheus-batch-queries", "true"];
const BATCH_OFF_ARGS: &[&str] = &["--prometheus-batch-queries", "false"];

/// Timings of one run: the production-like ones, or the smoke test's, which fit in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub scrape: Duration,
    pub interval: Duration,
    pub step: Duration,
    pub window: Duration,
    /// The `rate()` window of every query: at least 4 scrapes, so rates are stable.
    pub rate: Duration,
    pub warmup: Duration,
}

const FULL: Timing = Timing {
    scrape: Duration::from_secs(5),
    interval: Duration::from_secs(10),
    step: Duration::from_secs(10),
    window: Duration::from_secs(120),
    rate: Duration::from_secs(30),
    warmup: Duration::from_secs(10),
};

const SMOKE: Timing = Timing {
    scrape: Duration::from_secs(1),
    interval: Duration::from_secs(2),
    step: Duration::from_secs(2),
    window: Duration::from_secs(20),
    rate: Duration::from_secs(5),
    warmup: Duration::from_secs(1),
};

#[derive(Debug)]
pub struct Config {
    /// Under `cargo test --benches`: one tiny run that checks the harness measures something.
    pub smoke: bool,
    pub ns: Vec<usize>,
    /// The measured window, after `settle`.
    pub duration: Duration,
    /// From the last rollout started to the measured window: warmups pass, ticks spread.
    pub settle: Duration,
    /// Prometheus's CPU share with only the scrapes, measured before canaryd starts.
    pub idle: Duration,
    pub batch: bool,
    /// Passed to `canaryd serve` after the batch arguments.
    pub daemon_args: Vec<String>,
    /// Rollout starts in flight at once.
    pub start_concurrency: usize,
    /// How often canaryd's `/metrics` is scraped during the run (zero: never).
    pub scrape_every: Duration,
    pub timing: Timing,
}

impl Config {
    /// `--bench` is what `cargo bench` passes; without it this is `cargo test --benches`.
    pub fn from_env_and_args() -> Result<Config> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let smoke = !args.iter().any(|a| a == "--bench");
        let mut values: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (key, var) in KEYS {
            if let Ok(v) = std::env::var(var) {
                let v = if key == "daemon-arg" {
                    v.split_whitespace().map(str::to_string).collect()
                } else {
                    vec![v]
                };
                values.insert(key, v);
            }
        }
        // Flags override variables; `--daemon-arg` repeats.
        let mut cli: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix("--") else {
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (flag, None),
            };
            let key = match KEYS.iter().map(|(k, _)| *k).find(|k| *k == name) {
                Some(k) => k,
                None if name == "bench" => continue,
                None => bail!("unknown argument --{name} (see the header of benches/scale.rs)"),
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .with_context(|| format!("--{key} needs a value"))?
                    .clone(),
            };
            cli.entry(key).or_default().push(value);
        }
        values.extend(cli);
        let one = |key: &str, default: &str| -> String {
            values
                .get(key)
                .and_then(|v| v.last().cloned())
                .unwrap_or_else(|| default.to_string())
        };
        let duration = |key: &str, default: &str| -> Result<Duration> {
            let v = one(key, default);
            humantime::parse_duration(&v).with_context(|| format!("--{key} {v:?}"))
        };
        let batch = match one("batch", "on").as_str() {
            "on" => true,
            "off" => false,
            other => bail!("--batch is on or off, not {other:?}"),
        };
        let (ns_default, duration_default, settle_default, idle_default, scrape_default) = if smoke
        {
            ("5", "6s", "4s", "0s", "2s")
        } else {
            ("1000,3000", "3m", "60s", "20s", "15s")
        };
        let ns = one("n", ns_default)
            .split(',')
            .map(|n| {
                n.trim()
                    .parse::<usize>()
                    .with_context(|| format!("--n {n:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        if ns.iter().any(|n| *n == 0 || *n > 100_000) {
            bail!("every N must be in 1..=100000");
        }
        let mut daemon_args = batch_args(batch)?;
        daemon_args.extend(values.get("daemon-arg").cloned().unwrap_or_default());
        let start_concurrency = one("start-concurrency", "8")
            .parse::<usize>()
            .context("--start-concurrency")?
            .clamp(1, 256);
        Ok(Config {
            smoke,
            ns,
            duration: duration("duration", duration_default)?,
            settle: duration("settle", settle_default)?,
            idle: duration("idle", idle_default)?,
            batch,
            daemon_args,
            start_concurrency,
            scrape_every: duration("scrape", scrape_default)?,
            timing: if smoke {
                SMOKE
            } else {
                // The operator's lever when Prometheus cannot answer a tick's queries in time:
                // a longer analysis interval (with `--daemon-arg --prometheus-timeout …`).
                Timing {
                    interval: duration("interval", "10s")?,
                    ..FULL
                }
            },
        })
    }
}

fn batch_args(on: bool) -> Result<Vec<String>> {
    let (var, default) = if on {
        ("SCALE_BATCH_ON_ARGS", BATCH_ON_ARGS)
    } else {
        ("SCALE_BATCH_OFF_ARGS", BATCH_OFF_ARGS)
    };
    let args: Vec<String> = match std::env::var(var) {
        Ok(v) => v.split_whitespace().map(str::to_string).collect(),
        Err(_) => default.iter().map(|s| s.to_string()).collect(),
    };
    if on && args.is_empty() {
        bail!(
            "--batch on: this build knows no daemon flag for batching; set {var} (or \
             BATCH_ON_ARGS in benches/scale_support/setup.rs) to the flag"
        );
    }
    Ok(args)
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// The one template file every rule of the run uses (issue 14 measures "rules built on one
/// template file"): the four signals of the shipped rules (README, "Why the shipped metrics are
/// configured as they are") with their shipped lines, the rate window a rule variable.
pub const TEMPLATES_YAML: &str = r#"kind: metric_templates
vars:
  rate: 30s # each rule sets its own
templates:
  - name: error_rate
    query: |
      sum(rate(http_requests_total{ {{selector}}, code=~"5.." }[{{rate}}]))
        / sum(rate(http_requests_total{ {{selector}} }[{{rate}}]))
    rollback_above: 0.05
    warn_above: 0.01
    max_ratio: 2.0
    critical: true
  - name: p95_latency
    query: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{ {{selector}} }[{{rate}}])))
    rollback_above: 10
    warn_above: 5
  - name: db_pool_utilization
    query: sum(db_pool_connections_in_use{ {{selector}} }) / sum(db_pool_connections_max{ {{selector}} })
    rollback_above: 0.95
    warn_above: 0.90
  - name: cpu_utilization
    query: avg(rate(process_cpu_seconds_total{ {{selector}} }[{{rate}}]))
    rollback_above: 0.90
    warn_above: 0.80
"#;

/// A rule for one synthetic service on [`TEMPLATES_YAML`]: holds of a day so the rollout stays
/// live for the whole run, and a no-data limit high enough that an overloaded Prometheus shows
/// up as ticks without data rather than as rollouts that paused and stopped costing queries.
pub fn rule_yaml(service: &str, t: &Timing, hook: impl Fn(&str) -> String) -> String {
    format!(
        r#"name: {service}
selector:
  canary: 'service="{service}", track="canary"'
  baseline: 'service="{service}", track="baseline"'
vars:
  rate: {rate}
steps:
  - {{ weight: 5, hold: 24h }}
  - {{ weight: 25, hold: 24h }}
  - {{ weight: 50, hold: 24h }}
  - {{ weight: 100 }}
analysis:
  interval: {interval}
  step: {step}
  window: {window}
  warmup: {warmup}
  failure_limit: 3
  nodata_limit: 1000
  min_samples: 3
metrics:
  - {{ name: error_rate, template: error_rate }}
  - {{ name: p95_latency, template: p95_latency }}
  - {{ name: db_pool_utilization, template: db_pool_utilization }}
  - {{ name: cpu_utilization, template: cpu_utilization }}
hooks:
  set_weight: {{ url: "{sw}", timeout: 10s, retries: 4 }}
  promote: {{ url: "{pr}", timeout: 10s, retries: 4 }}
  rollback: {{ url: "{rb}", timeout: 10s, retries: 4 }}
"#,
        rate = secs(t.rate),
        interval = secs(t.interval),
        step = secs(t.step),
        window = secs(t.window),
        warmup = secs(t.warmup),
        sw = hook("/weight"),
        pr = hook("/promote"),
        rb = hook("/rollback"),
    )
}
