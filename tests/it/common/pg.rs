//! A real PostgreSQL for tests, from Debian's `postgresql` package: a fresh cluster in a
//! temporary directory, on a free loopback port, with its socket in that directory.
//!
//! PostgreSQL refuses to run as root, so under root the cluster belongs to (and runs as) the
//! unprivileged `postgres` user the package creates; otherwise it runs as the current user.
//! Durability is off (`fsync`, `synchronous_commit`): these clusters live for one test.
//! Also [`HaStack`]: service, Prometheus, hook receiver and replicas sharing one cluster.

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::DemoService;

use super::{Daemon, RuleOpts, rule_yaml};

/// The newest installed major version's binaries.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = glob::glob("/usr/lib/postgresql/*/bin/postgres")
        .expect("glob")
        .filter_map(Result::ok)
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect(
        "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/postgres); see scripts/setup.sh",
    )
}

/// `(uid, gid)` to run as: the `postgres` user under root, else nobody to switch to.
fn run_as() -> Option<(u32, u32)> {
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1);
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .map(|f| {
            (
                f[2].parse().expect("postgres uid"),
                f[3].parse().expect("postgres gid"),
            )
        })
        .or_else(|| panic!("running as root, and there is no `postgres` user to run PostgreSQL as"))
}

pub struct PgServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PgServer {
    pub fn start() -> PgServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = run_as();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the cluster dir");
        }
        let bin = bin_dir();
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null());
        let out = as_user(&mut initdb, user).output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = PgServer {
            dir,
            port: 0,
            bin,
            user,
            child: None,
        };
        // The port is chosen before PostgreSQL binds it, so a parallel test can take it in
        // between: PostgreSQL then exits, and a new port is tried.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = canaryd::demo::free_loopback_port().expect("free port");
            match pg.try_run() {
                Ok(()) => return pg,
                Err(log) if log.contains("could not bind") => last = log,
                Err(log) => panic!("PostgreSQL did not start: {log}"),
            }
        }
        panic!("PostgreSQL found no free port in 5 tries: {last}");
    }

    fn run(&mut self) {
        if let Err(log) = self.try_run() {
            panic!("PostgreSQL did not start: {log}");
        }
    }

    /// Starts `postgres` on `self.port`; `Err` with its log when it exited or was not ready
    /// within 30 s.
    fn try_run(&mut self) -> Result<(), String> {
        let log_start = self.log_text().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("postgres log");
        if let Some((uid, gid)) = self.user {
            let _ = std::os::unix::fs::chown(
                self.dir.path().join("postgres.log"),
                Some(uid),
                Some(gid),
            );
        }
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(
            as_user(&mut cmd, self.user)
                .spawn()
                .expect("start postgres"),
        );
        self.wait_ready(log_start, Duration::from_secs(30))
    }

    /// Polls until *this* server takes connections. `pg_isready` alone would also accept
    /// another test's PostgreSQL on a port ours failed to bind, so the server's own log (from
    /// `log_start` on) must say it is ready and the child must still run.
    fn wait_ready(&mut self, log_start: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().is_ok_and(|s| s.is_some()));
            let log = self.log_text();
            if exited {
                self.child = None;
                return Err(log.get(log_start..).unwrap_or_default().to_string());
            }
            let ours = log
                .get(log_start..)
                .is_some_and(|l| l.contains("ready to accept connections"));
            let ok = ours
                && Command::new(self.bin.join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(format!("not ready after {timeout:?}: {log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A file holding the URL, as a deployment would mount its Secret.
    pub fn url_file(&self) -> PathBuf {
        let path = self.dir.path().join("url");
        std::fs::write(&path, self.url() + "\n").expect("write url file");
        path
    }

    /// Fast shutdown (SIGINT: sessions are cut, no new connection), reaped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Stops and starts again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    cmd
}

/// Flags that make a daemon a replica of `pg`'s store, with a short lease so a failover takes
/// seconds.
pub fn replica_args(url_file: &Path, lease: &str, renew: &str) -> Vec<String> {
    vec![
        "--state-postgres-url-file".into(),
        url_file.display().to_string(),
        "--state-postgres-lease".into(),
        lease.into(),
        "--state-postgres-renew-interval".into(),
        renew.into(),
    ]
}

/// Service, Prometheus, receiver and a rule file, with replicas started on demand.
pub struct HaStack {
    pub pg: PgServer,
    pub service: DemoService,
    pub prometheus: PrometheusProcess,
    pub receiver: HookReceiver,
    pub rule: String,
    pub rule_path: PathBuf,
    pub dir: tempfile::TempDir,
    pub url_file: PathBuf,
    pub lease: &'static str,
    pub renew: &'static str,
}

impl HaStack {
    pub async fn start(
        rule: &str,
        opts: RuleOpts,
        lease: &'static str,
        renew: &'static str,
    ) -> HaStack {
        let pg = PgServer::start();
        let url_file = pg.url_file();
        let dir = tempfile::tempdir().expect("tempdir");
        let service = DemoService::start(rule, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("demo service");
        let prometheus = PrometheusProcess::start(PrometheusOptions {
            targets: vec![service.addr().to_string()],
            ..PrometheusOptions::default()
        })
        .await
        .expect("prometheus");
        let receiver = HookReceiver::start().await.expect("receiver");
        let rule_path = dir.path().join(format!("{rule}.yaml"));
        std::fs::write(&rule_path, rule_yaml(rule, &receiver, &opts)).expect("write rule");
        prometheus
            .wait_for_series(
                &format!(
                    r#"sum(rate(http_requests_total{{service="{rule}", track="canary"}}[4s]))"#
                ),
                Duration::from_secs(30),
            )
            .await
            .expect("series in prometheus");
        HaStack {
            pg,
            service,
            prometheus,
            receiver,
            rule: rule.to_string(),
            rule_path,
            dir,
            url_file,
            lease,
            renew,
        }
    }

    /// One more replica, with its own state dir (unused by the shared store) for its log.
    pub async fn replica(&self, name: &str) -> Daemon {
        let state = self.dir.path().join(name);
        std::fs::create_dir_all(&state).expect("replica dir");
        let args = replica_args(&self.url_file, self.lease, self.renew);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::start(
            &self.prometheus.url(),
            std::slice::from_ref(&self.rule_path),
            &state,
            &args,
        )
        .await
    }
}

/// What `/health/ready` says a replica is: `("leader", Some(epoch))` or `("follower", None)`.
pub async fn role(d: &Daemon) -> (String, Option<u64>) {
    let Ok(resp) = d.http.get(format!("{}/health/ready", d.url)).send().await else {
        return ("down".into(), None);
    };
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    (
        v["role"].as_str().unwrap_or("").to_string(),
        v["epoch"].as_u64(),
    )
}

/// Polls until `d` leads; returns its epoch.
pub async fn wait_leader(d: &Daemon, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        if let (r, Some(epoch)) = role(d).await
            && r == "leader"
        {
            return epoch;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not lead within {timeout:?}; log:\n{}",
            d.url,
            super::tail(&d.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn wait_role(d: &Daemon, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while role(d).await.0 != want {
        assert!(
            Instant::now() < deadline,
            "{} not {want} within {timeout:?}; log:\n{}",
            d.url,
            super::tail(&d.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The epoch header of a received hook call.
pub fn epoch_of(call: &canaryd::demo::receiver::ReceivedCall) -> Option<u64> {
    call.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(canaryd::store::leadership::EPOCH_HEADER))
        .and_then(|(_, v)| v.parse().ok())
}
