//! The real stack for integration tests: a simulated service, a real Prometheus scraping it every
//! second, a hook receiver, and `canaryd serve` as a child process, all on free loopback ports.
#![allow(dead_code)]

pub mod alerting;
pub mod hooked_store;
pub mod offline;
pub mod pg;
pub mod traffic;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::{HookReceiver, ReceivedCall};
use canaryd::demo::service::{DemoService, Track};
use serde_json::Value;

/// Knobs of the generated rule file.
#[derive(Clone)]
pub struct RuleOpts {
    pub hold: &'static str,
    pub warmup: &'static str,
    pub nodata_limit: u32,
    pub failure_limit: u32,
    pub on_nodata: &'static str,
    /// Range-query resolution; also the rate window of every query (4 s at least: a 1 s scrape).
    pub step: &'static str,
    pub window: &'static str,
    /// Points at the current weight each group needs before it is judged.
    pub min_samples: u32,
    /// Compare p95 latency with the baseline statistically (Mann-Whitney, mean ratio 1.1).
    pub statistical: bool,
    /// Add the anytime-valid sequential tests on error counts and on requests slower than
    /// 0.5 s, and drop the error ratio line (so only the sequential test can judge the ratio).
    pub sequential: bool,
    /// Metric YAML (list items under `metrics:`) added after the others.
    pub extra_metrics: &'static str,
}

impl Default for RuleOpts {
    fn default() -> Self {
        RuleOpts {
            hold: "4s",
            warmup: "2s",
            nodata_limit: 3,
            failure_limit: 3,
            on_nodata: "pause",
            step: "1s",
            window: "10s",
            min_samples: 3,
            statistical: false,
            sequential: false,
            extra_metrics: "",
        }
    }
}

/// A rule in the shape of the shipped policies, with second-scale timings.
pub fn rule_yaml(name: &str, receiver: &HookReceiver, o: &RuleOpts) -> String {
    let mut yaml = base_rule_yaml(name, receiver, o);
    if !o.extra_metrics.is_empty() {
        yaml = yaml.replacen("hooks:\n", &format!("{}hooks:\n", o.extra_metrics), 1);
    }
    if !o.sequential {
        return yaml;
    }
    yaml.replace("    max_ratio: 2.0\n", "").replace(
        "hooks:\n",
        r#"  - name: errors_vs_baseline
    test: sequential
    events: 'http_requests_total{ {{selector}}, code=~"5.." }'
    requests: 'http_requests_total{ {{selector}} }'
  - name: slow_requests
    test: sequential
    histogram: http_request_duration_seconds
    slower_than: 0.5
hooks:
"#,
    )
}

fn base_rule_yaml(name: &str, receiver: &HookReceiver, o: &RuleOpts) -> String {
    format!(
        r#"name: {name}
selector:
  canary: 'service="{name}", track="canary"'
  baseline: 'service="{name}", track="baseline"'
vars:
  rate: {rate}
steps:
  - {{ weight: 5, hold: {hold} }}
  - {{ weight: 25, hold: {hold} }}
  - {{ weight: 50, hold: {hold} }}
  - {{ weight: 100 }}
analysis:
  interval: 1s
  step: {step}
  window: {window}
  warmup: {warmup}
  failure_limit: {failure_limit}
  nodata_limit: {nodata_limit}
  on_nodata: {on_nodata}
  min_samples: {min_samples}
metrics:
  - name: error_rate
    query: |
      sum(rate(http_requests_total{{ {{{{selector}}}}, code=~"5.." }}[{{{{rate}}}}]))
        / sum(rate(http_requests_total{{ {{{{selector}}}} }}[{{{{rate}}}}]))
    rollback_above: 0.05
    warn_above: 0.01
    max_ratio: 2.0
    critical: true
  - name: p95_latency
    query: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{ {{{{selector}}}} }}[{{{{rate}}}}])))
    rollback_above: 10
    warn_above: 5{stat}
  - name: db_pool_utilization
    query: sum(db_pool_connections_in_use{{ {{{{selector}}}} }}) / sum(db_pool_connections_max{{ {{{{selector}}}} }})
    rollback_above: 0.95
    warn_above: 0.90
  - name: cpu_utilization
    query: avg(rate(process_cpu_seconds_total{{ {{{{selector}}}} }}[{{{{rate}}}}]))
    rollback_above: 0.90
    warn_above: 0.80
hooks:
  set_weight: {{ url: "{sw}", timeout: 2s, retries: 4 }}
  promote: {{ url: "{pr}", timeout: 2s, retries: 4 }}
  rollback: {{ url: "{rb}", timeout: 2s, retries: 4 }}
"#,
        hold = o.hold,
        step = o.step,
        window = o.window,
        rate = if o.step == "1s" { "4s" } else { o.step },
        stat = if o.statistical {
            "\n    compare: mann_whitney\n    allowed_increase: 1.1\n    critical: false"
        } else {
            ""
        },
        warmup = o.warmup,
        failure_limit = o.failure_limit,
        nodata_limit = o.nodata_limit,
        on_nodata = o.on_nodata,
        min_samples = o.min_samples,
        sw = receiver.url("/weight"),
        pr = receiver.url("/promote"),
        rb = receiver.url("/rollback"),
    )
}

/// A running `canaryd serve`, killed on drop.
pub struct Daemon {
    child: tokio::process::Child,
    pub url: String,
    pub log: PathBuf,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl Daemon {
    pub async fn start(
        prometheus_url: &str,
        rules: &[PathBuf],
        dir: &std::path::Path,
        extra: &[&str],
    ) -> Daemon {
        Daemon::start_on_free_port(prometheus_url, rules, dir, extra, &[]).await
    }

    /// Starts on a free port, and on a new one when another process took the port between its
    /// choice and canaryd's bind (the daemon then exits saying it cannot listen).
    pub async fn start_on_free_port(
        prometheus_url: &str,
        rules: &[PathBuf],
        dir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_on_free_port_with(prometheus_url, rules, dir, env, |_| {
            extra.iter().map(|s| s.to_string()).collect()
        })
        .await
    }

    /// Like [`Daemon::start_on_free_port`] for a daemon whose arguments name its own port (an
    /// `external_url` in a config file `extra` writes, say): `extra` is called again with each
    /// new port tried.
    pub async fn start_on_free_port_with(
        prometheus_url: &str,
        rules: &[PathBuf],
        dir: &std::path::Path,
        env: &[(&str, &str)],
        mut extra: impl FnMut(u16) -> Vec<String>,
    ) -> Daemon {
        let mut last = String::new();
        for _ in 0..5 {
            let port = canaryd::demo::free_loopback_port().expect("free port");
            let args = extra(port);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match Daemon::try_start(port, prometheus_url, rules, dir, &args, env).await {
                Ok(d) => return d,
                Err(log) if log.contains("cannot listen on") => last = log,
                Err(log) => panic!("canaryd did not start; log:\n{log}"),
            }
        }
        panic!("canaryd found no free port in 5 tries; last log:\n{last}");
    }

    /// The port canaryd listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the daemon URL ends in its port")
    }

    /// Spawns `canaryd serve` and waits until it answers; `Err` with its log when it exited
    /// or did not answer within 20 s (it is then killed and reaped).
    async fn try_start(
        port: u16,
        prometheus_url: &str,
        rules: &[PathBuf],
        dir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon, String> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--prometheus-url".into(),
            prometheus_url.into(),
            "--prometheus-timeout".into(),
            "2s".into(),
            "--state-dir".into(),
            dir.into(),
        ];
        args.extend(extra.iter().map(Into::into));
        for r in rules {
            args.push("--rules".into());
            args.push(r.into());
        }
        Daemon::try_start_args(port, dir, &args, env).await
    }

    /// Spawns `canaryd serve` with exactly `args` (no defaults: for tests of the configuration
    /// itself), its log in `dir`, and waits until `port` answers. `Err` with its log when it
    /// exited or did not answer within 20 s (it is then killed and reaped).
    pub async fn try_start_args(
        port: u16,
        dir: &std::path::Path,
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
    ) -> Result<Daemon, String> {
        let log = dir.join(format!("canaryd-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_canaryd"));
        cmd.arg("serve")
            .args(args)
            .env_remove("CANARYD_API_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn canaryd");
        let mut d = Daemon {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
            token: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // An answer alone is not proof: when another process took the port before canaryd
            // bound it, *that* process answers. canaryd logs "canaryd serving" only once its
            // own listener is bound, so a foreign answer never counts as ours.
            if d.log_text().contains("canaryd serving")
                && d.http
                    .get(format!("{}/health/live", d.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                return Ok(d);
            }
            if let Ok(Some(_)) = d.child.try_wait() {
                return Err(d.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d.kill_and_wait().await;
        Err(d.log_text())
    }

    /// Waits until the daemon reports reaching the test-only stop point `point`
    /// (`CANARYD_TEST_STOP_AT`, see `src/faults.rs`); panics with the log after `timeout`.
    pub async fn wait_stopped_at(&self, point: &str, timeout: Duration) {
        let needle = format!("canaryd: fault point {point} reached");
        self.wait_log(&needle, timeout).await;
    }

    /// Waits until the daemon's log contains `needle`; panics with the log tail after `timeout`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not in the log within {timeout:?}; log tail:\n{}",
                tail(&self.log_text(), 40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default()
    }

    pub async fn start_rollout(&self, rule: &str, version: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/rollouts",
                Some(serde_json::json!({"rule": rule, "version": version})),
            )
            .await;
        assert_eq!(status, 201, "start rollout: {body}");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn rollout(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/rollouts/{id}")).await.1
    }

    /// Polls until the rollout ended: rolled back, failed or succeeded (the test then says which
    /// it should be, so a wrong ending fails with the state rather than a timeout).
    pub async fn wait_ended(&self, id: &str, timeout: Duration) -> Value {
        self.wait_phase(id, &["rolled_back", "failed", "succeeded"], timeout)
            .await
    }

    /// Polls until the rollout's phase is one of `phases`; panics with its state and the log.
    pub async fn wait_phase(&self, id: &str, phases: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.rollout(id).await;
            if phases.contains(&r["phase"].as_str().unwrap_or("")) {
                return r;
            }
            if Instant::now() > deadline {
                panic!(
                    "rollout {id} not in {phases:?} after {timeout:?}: {}\nlog tail:\n{}",
                    serde_json::to_string_pretty(&r).unwrap_or_default(),
                    tail(&self.log_text(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Sends `signal` (a `kill -s` name such as `TERM`, `INT`, `HUP`) to the daemon.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("daemon still running").to_string();
        let ok = std::process::Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -s {signal} {pid} failed");
    }

    /// Waits for the daemon to exit by itself; `None` if it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// SIGKILL, then reap: the state directory's lock is free when this returns.
    pub async fn kill_and_wait(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Killed and reaped even when a test panics, so the state directory's lock is free and no
/// stopped or zombie child outlives its test.
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The sum of every sample of the metric family `name` in a Prometheus text exposition (0 when
/// there is none), so a test checks a counter's value, not that its name is registered.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Service + Prometheus + receiver + one rule file + canaryd.
pub struct Stack {
    pub service: DemoService,
    pub prometheus: PrometheusProcess,
    pub receiver: HookReceiver,
    pub daemon: Daemon,
    pub rule: String,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(rule: &str, opts: RuleOpts) -> Stack {
        Stack::start_with(rule, opts, "", &[]).await
    }

    /// Like [`Stack::start`], with YAML appended to the rule file (extra top-level keys) and
    /// extra environment variables for the daemon (test-only fault injection).
    pub async fn start_with(
        rule: &str,
        opts: RuleOpts,
        extra_rule: &str,
        env: &[(&str, &str)],
    ) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = DemoService::start(rule, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("demo service");
        // Captured, so shown when the test fails: replays the service's noise.
        println!(
            "demo service seed {} (replay: {}={})",
            service.seed(),
            canaryd::demo::service::SEED_ENV,
            service.seed()
        );
        let prometheus = PrometheusProcess::start(PrometheusOptions {
            targets: vec![service.addr().to_string()],
            ..PrometheusOptions::default()
        })
        .await
        .expect("prometheus");
        let receiver = HookReceiver::start().await.expect("receiver");
        let rule_path = dir.path().join(format!("{rule}.yaml"));
        std::fs::write(&rule_path, rule_yaml(rule, &receiver, &opts) + extra_rule)
            .expect("write rule");
        // Wait until rates exist, so the first tick has data.
        wait_for_canary_rate(&prometheus, rule, Duration::from_secs(30)).await;
        let daemon =
            Daemon::start_on_free_port(&prometheus.url(), &[rule_path], dir.path(), &[], env).await;
        Stack {
            service,
            prometheus,
            receiver,
            daemon,
            rule: rule.to_string(),
            dir,
        }
    }

    /// Starts a rollout of this stack's rule and returns once its first weight is confirmed:
    /// the receiver answers before canaryd records the success, so both are waited for.
    pub async fn start_at_first_step(&self, version: &str) -> String {
        let id = self.daemon.start_rollout(&self.rule, version).await;
        assert!(
            self.receiver
                .wait_for(|c| !c.is_empty(), Duration::from_secs(20))
                .await,
            "no set_weight call within 20 s"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.daemon.rollout(&id).await;
            if r["weight"] == 5 {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "first weight never confirmed: {r}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The rule file this stack's daemon was started with.
    pub fn rule_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.yaml", self.rule))
    }

    /// kill -9 the daemon, reap it, and start a new one on the same state directory and rule
    /// file with `env` (the old one's environment is not carried over).
    pub async fn restart(&mut self, env: &[(&str, &str)]) {
        self.daemon.kill_and_wait().await;
        self.daemon = Daemon::start_on_free_port(
            &self.prometheus.url(),
            &[self.rule_path()],
            self.dir.path(),
            &[],
            env,
        )
        .await;
    }

    pub fn degrade_canary_errors(&self, rate: f64) {
        self.service.update(Track::Canary, |p| p.error_rate = rate);
    }
}

/// One metric's last check in a rollout's status, if the status has it.
pub fn check_of(rollout: &Value, metric: &str) -> Option<Value> {
    rollout["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["metric"] == metric))
        .cloned()
}

/// Calls to one hook path, in order.
pub fn calls_to<'a>(calls: &'a [ReceivedCall], path: &str) -> Vec<&'a ReceivedCall> {
    calls.iter().filter(|c| c.path == path).collect()
}

pub fn weights(calls: &[ReceivedCall]) -> Vec<u64> {
    calls_to(calls, "/weight")
        .iter()
        .filter_map(|c| c.body["weight"].as_u64())
        .collect()
}

/// Waits until Prometheus has a request rate (over the rules' 4 s) for `service`'s canary, so
/// a rollout's first tick has data.
pub async fn wait_for_canary_rate(
    prometheus: &canaryd::demo::prometheus::PrometheusProcess,
    service: &str,
    timeout: Duration,
) {
    prometheus
        .wait_for_series(
            &format!(
                r#"sum(rate(http_requests_total{{service="{service}", track="canary"}}[4s]))"#
            ),
            timeout,
        )
        .await
        .unwrap_or_else(|e| panic!("{service}'s canary rate in prometheus: {e}"));
}
