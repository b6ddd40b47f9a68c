//! Supervision of the external programs in the stack (Prometheus, Alertmanager).
//!
//! Both need the same care: find the binary or say how to install it, start it on a free port
//! (retrying when another process grabs that port first), send its output to a log file whose
//! tail ends up in the error when it fails, wait until it says it is ready, and never outlive the
//! test that started it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{DemoError, free_loopback_port};

/// How long a child gets to answer its readiness endpoint; Prometheus replays its WAL first.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a start is retried when the chosen port was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;
/// Lines of the log shown in a [`DemoError::NotReady`].
const TAIL_LINES: usize = 30;
/// Polls of 5 ms that `Drop` spends reaping a killed child (at most 1 s).
const REAP_POLLS: usize = 200;

/// Returns `program` as found on `PATH`, else `fallback`, so that defaults work both on a
/// developer machine with a custom build first on `PATH` and under a minimal test environment.
pub(crate) fn find_binary(program: &str, fallback: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(fallback))
}

/// A child process with a fixed command line, restartable, killed on drop.
pub(crate) struct ChildProcess {
    program: &'static str,
    binary: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    ready_url: String,
    port: u16,
    child: Option<Child>,
}

impl ChildProcess {
    /// Starts `binary` with the arguments `args(port)` on a free loopback port and waits until
    /// `http://127.0.0.1:PORT{ready_path}` answers 2xx. Returns the process and its port.
    pub(crate) async fn start_on_free_port(
        program: &'static str,
        package: &str,
        binary: &Path,
        log: PathBuf,
        ready_path: &str,
        args: impl Fn(u16) -> Vec<OsString>,
    ) -> Result<(ChildProcess, u16), DemoError> {
        if !binary.is_file() {
            return Err(DemoError::BinaryNotFound {
                program: program.to_owned(),
                package: package.to_owned(),
            });
        }
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_loopback_port()
                .map_err(|e| DemoError::io("picking a free loopback port", e))?;
            let mut process = ChildProcess {
                program,
                binary: binary.to_owned(),
                args: args(port),
                log: log.clone(),
                ready_url: format!("http://127.0.0.1:{port}{ready_path}"),
                port,
                child: None,
            };
            match process.start().await {
                Ok(()) => return Ok((process, port)),
                Err(DemoError::NotReady { log_tail, .. })
                    if log_tail
                        .to_ascii_lowercase()
                        .contains("address already in use") =>
                {
                    last_error = Some(port);
                }
                Err(e) => return Err(e),
            }
        }
        Err(DemoError::Unexpected(format!(
            "{program}: every port tried was taken by another process (last: {last_error:?})"
        )))
    }

    /// Spawns the child (again) with the same arguments and waits until it is ready.
    pub(crate) async fn start(&mut self) -> Result<(), DemoError> {
        self.stop().await;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| DemoError::io(format!("opening {}", self.log.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| DemoError::io(format!("duplicating {}", self.log.display()), e))?;
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .process_group(0);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|e| DemoError::io(format!("spawning {}", self.binary.display()), e))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    /// Kills the child and reaps it; a no-op when it is not running.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            // An error means the child already exited; either way it is gone once `wait` returns.
            let _ = child.kill().await;
        }
    }

    async fn wait_ready(&mut self) -> Result<(), DemoError> {
        let client = local_client(Duration::from_secs(1))?;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.not_ready(format!("it exited early with {status}")));
            }
            if let Ok(response) = client.get(&self.ready_url).send().await
                && response.status().is_success()
                && self.holds_port() != Some(false)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.stop().await;
                return Err(self.not_ready(format!(
                    "{} did not answer 2xx within {READY_TIMEOUT:?}",
                    self.ready_url
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the answer on our port can be the child's own (see [`super::listener`]).
    fn holds_port(&self) -> Option<bool> {
        let pid = self.child.as_ref()?.id()?;
        super::listener::holds_listener(pid, self.port)
    }

    fn not_ready(&self, reason: String) -> DemoError {
        DemoError::NotReady {
            program: self.program.to_owned(),
            reason,
            log: self.log.clone(),
            log_tail: log_tail(&self.log, TAIL_LINES),
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // `kill_on_drop` would send the signal too, but leaves reaping to tokio in the
        // background; a test process that exits right after dropping us hands the zombie to
        // PID 1, which in containers often never reaps it. SIGKILL is prompt, so wait briefly.
        kill_group(child);
        if child.start_kill().is_err() {
            return;
        }
        for _ in 0..REAP_POLLS {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }
}

/// Has the child killed (SIGKILL) when the thread that spawned it ends (`PR_SET_PDEATHSIG`):
/// when its parent is killed outright (SIGKILL, or a signal it does not handle), no destructor
/// runs to stop the child, and a Prometheus in its own process group would outlive the test or
/// bench that started it. The kernel ties this to the spawning *thread*: spawn from the main
/// thread or a runtime worker, which live as long as the process, never from a short-lived one.
/// A no-op off Linux.
pub fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = rustix::process::getpid();
        // SAFETY: runs in the forked child before exec and only makes two syscalls (prctl,
        // getppid), both async-signal-safe; it allocates nothing and touches no lock.
        unsafe {
            command.pre_exec(move || {
                use rustix::process::{Signal, getppid, set_parent_process_death_signal};
                set_parent_process_death_signal(Some(Signal::KILL))?;
                // The parent may have died between fork and prctl: then no signal would come.
                if getppid() != Some(parent) {
                    return Err(std::io::Error::other("the parent exited before exec"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// SIGKILL to the child's whole process group (it leads one, `process_group(0)`): nginx's
/// workers outlived a SIGKILL to their master alone and piled up, orphaned, run after run.
/// An error means the group is already gone.
pub fn kill_group(child: &Child) {
    use rustix::process::{Pid, Signal, kill_process_group};
    if let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(Pid::from_raw)
    {
        let _ = kill_process_group(pid, Signal::KILL);
    }
}

/// The last `lines` lines of the file at `path`, or a note saying why it could not be read.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// An HTTP client for our own local children. It never follows a redirect: only our own
/// processes are asked, and an answer that sends us elsewhere is wrong.
pub(crate) fn local_client(timeout: Duration) -> Result<reqwest::Client, DemoError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| DemoError::http("building an HTTP client", e))
}

/// Asks a Prometheus-family server at `base_url` to re-read its configuration
/// (`POST /-/reload`), returning once it has (or said why not).
pub(crate) async fn post_reload(client: &reqwest::Client, base_url: &str) -> Result<(), DemoError> {
    let url = format!("{base_url}/-/reload");
    client
        .post(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| DemoError::http(format!("reloading via {url}"), e))?;
    Ok(())
}
