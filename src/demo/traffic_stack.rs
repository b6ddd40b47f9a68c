//! Real traffic for the demo and the traffic tests: two tiny backends that answer their own
//! name, and a real HAProxy or nginx in front of them with a generated configuration, each on
//! free loopback ports in its own temporary directory.
//!
//! The proxies start with all traffic on the baseline (canary weight 0), as a production
//! configuration would before a rollout; canaryd's traffic providers move it from there.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tempfile::TempDir;

use super::DemoError;
use super::process::{ChildProcess, find_binary};

pub use super::backend::{BACKEND_FAMILIES, Backend};

/// Sends `n` GETs to `url` over `concurrency` connections at once and counts the answers by
/// body (a backend's name); failed requests count under `"error: <why>"`.
pub async fn send_requests(url: &str, n: usize, concurrency: usize) -> BTreeMap<String, u64> {
    let concurrency = concurrency.clamp(1, 256);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let url = url.to_string();
        let share = n / concurrency + usize::from(w < n % concurrency);
        workers.spawn(async move {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(5))
                .build();
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for _ in 0..share {
                let body = match &client {
                    Ok(c) => match c.get(&url).send().await {
                        Ok(r) if r.status().is_success() => r
                            .text()
                            .await
                            .unwrap_or_else(|e| format!("error: body {e}")),
                        Ok(r) => format!("error: HTTP {}", r.status().as_u16()),
                        Err(e) if e.is_timeout() => "error: timeout".into(),
                        Err(e) if e.is_connect() => "error: connect".into(),
                        Err(_) => "error: transport".into(),
                    },
                    Err(_) => "error: client".into(),
                };
                *counts.entry(body).or_default() += 1;
            }
            counts
        });
    }
    let mut total = BTreeMap::new();
    while let Some(Ok(counts)) = workers.join_next().await {
        for (k, v) in counts {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

/// Requests sent back to back over `concurrency` connections until the returned flag is set:
/// steady load for measuring when traffic moves.
pub fn background_load(url: &str, concurrency: usize) -> Arc<std::sync::atomic::AtomicBool> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..concurrency.clamp(1, 256) {
        let (url, stop) = (url.to_string(), stop.clone());
        tokio::spawn(async move {
            let Ok(client) = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(5))
                .build()
            else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                // A proxy that is down refuses at once: back off instead of spinning a core.
                if client.get(&url).send().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }
    stop
}

/// A real HAProxy in master-worker mode: frontend on a free port, backend `app` with servers
/// `canary` (weight 0) and `baseline` (weight 100), an admin socket and a master socket.
pub struct HaproxyProcess {
    process: ChildProcess,
    port: u16,
    dir: TempDir,
}

impl HaproxyProcess {
    pub async fn start(canary: SocketAddr, baseline: SocketAddr) -> Result<Self, DemoError> {
        let dir = tempfile::Builder::new()
            .prefix("canaryd-haproxy-")
            .tempdir()
            .map_err(|e| DemoError::io("creating a directory for HAProxy", e))?;
        let cfg = dir.path().join("haproxy.cfg");
        let admin = dir.path().join("admin.sock");
        let master = dir.path().join("master.sock");
        let binary = find_binary("haproxy", "/usr/sbin/haproxy");
        let (process, port) = ChildProcess::start_on_free_port(
            "haproxy",
            "haproxy",
            &binary,
            dir.path().join("haproxy.log"),
            "/haproxy-ready",
            |port| {
                // Written here because the port is only known now; a failed write shows up as
                // HAProxy not starting, with its log.
                let _ = std::fs::write(&cfg, haproxy_config(port, &admin, canary, baseline));
                vec![
                    "-W".into(),
                    "-S".into(),
                    master.clone().into_os_string(),
                    "-f".into(),
                    cfg.clone().into_os_string(),
                ]
            },
        )
        .await?;
        Ok(HaproxyProcess { process, port, dir })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// One runtime-API command, as an operator would type it into `socat`.
    pub async fn command(&self, line: &str) -> Result<String, DemoError> {
        unix_command(&self.admin_socket(), line).await
    }

    /// Reloads through the master socket (`reload`), as `systemctl reload haproxy` does, and
    /// waits until the new worker answers on the admin socket with its configured weights.
    pub async fn reload(&self) -> Result<(), DemoError> {
        let before = self.command("show info").await.map(|i| pid_of(&i))?;
        unix_command(&self.dir.path().join("master.sock"), "reload").await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(info) = self.command("show info").await
                && pid_of(&info).is_some()
                && pid_of(&info) != before
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DemoError::Unexpected(
                    "haproxy: no new worker 10 s after reload".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stop(self) {
        drop(self.process);
    }
}

fn pid_of(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .map(|p| p.trim().to_string())
}

/// The provider's own runtime-API exchange, with the demo's error type.
async fn unix_command(path: &Path, line: &str) -> Result<String, DemoError> {
    use crate::traffic::haproxy::{AdminSocket, admin_command};
    admin_command(AdminSocket::Unix(path), line, Duration::from_secs(5))
        .await
        .map_err(|e| DemoError::Unexpected(format!("haproxy: {e}")))
}

fn haproxy_config(port: u16, admin: &Path, canary: SocketAddr, baseline: SocketAddr) -> String {
    format!(
        "global\n    stats socket {admin} level admin\n\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    monitor-uri /haproxy-ready\n    default_backend app\n\n\
         backend app\n    balance roundrobin\n    server canary {canary} weight 0\n    server baseline {baseline} weight 100\n",
        admin = admin.display()
    )
}

/// A real nginx whose `http` block includes `upstream.conf` (canaryd's file) and proxies `/`
/// to `app` — or to `$app_pool` when `sticky` (a `split_clients` split on `$arg_user`).
pub struct NginxProcess {
    process: ChildProcess,
    binary: PathBuf,
    port: u16,
    dir: TempDir,
}

impl NginxProcess {
    /// `include` is the include's first content (canaryd's provider renders it).
    pub async fn start(include: &str, sticky: bool) -> Result<Self, DemoError> {
        let dir = tempfile::Builder::new()
            .prefix("canaryd-nginx-")
            .tempdir()
            .map_err(|e| DemoError::io("creating a directory for nginx", e))?;
        let conf = dir.path().join("nginx.conf");
        let upstream = dir.path().join("upstream.conf");
        std::fs::write(&upstream, include)
            .map_err(|e| DemoError::io(format!("writing {}", upstream.display()), e))?;
        let binary = find_binary("nginx", "/usr/sbin/nginx");
        let prefix = dir.path().to_path_buf();
        let (process, port) = ChildProcess::start_on_free_port(
            "nginx",
            "nginx",
            &binary,
            dir.path().join("nginx.out"),
            "/nginx-ready",
            |port| {
                let _ = std::fs::write(&conf, nginx_config(port, &prefix, sticky));
                let mut args = nginx_args(&prefix);
                args.extend(["-g".into(), "daemon off;".into()]);
                args
            },
        )
        .await?;
        Ok(NginxProcess {
            process,
            binary,
            port,
            dir,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn include(&self) -> PathBuf {
        self.dir.path().join("upstream.conf")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.path().join("nginx.pid")
    }

    /// argv of `nginx -t` / `nginx -s reload` for this instance.
    pub fn command(&self, tail: &[&str]) -> Vec<String> {
        std::iter::once(self.binary.clone().into_os_string())
            .chain(nginx_args(self.dir.path()))
            .map(|a| a.to_string_lossy().into_owned())
            .chain(tail.iter().map(|s| s.to_string()))
            .collect()
    }

    pub fn stop(self) {
        drop(self.process);
    }
}

fn nginx_args(prefix: &Path) -> Vec<OsString> {
    vec![
        "-p".into(),
        prefix.as_os_str().to_owned(),
        "-c".into(),
        prefix.join("nginx.conf").into_os_string(),
        "-e".into(),
        prefix.join("error.log").into_os_string(),
    ]
}

fn nginx_config(port: u16, prefix: &Path, sticky: bool) -> String {
    let p = prefix.display();
    let target = if sticky { "$app_pool" } else { "app" };
    format!(
        "worker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\nworker_shutdown_timeout 2s;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n    access_log off;\n\
         \x20   client_body_temp_path {p}/body;\n    proxy_temp_path {p}/proxy;\n\
         \x20   fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n\
         \x20   include {p}/upstream.conf;\n\
         \x20   server {{\n        listen 127.0.0.1:{port};\n\
         \x20       location = /nginx-ready {{ return 200 \"ok\"; }}\n\
         \x20       location / {{ proxy_pass http://{target}; }}\n    }}\n}}\n"
    )
}
