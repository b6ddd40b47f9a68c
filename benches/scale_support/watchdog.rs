//! Kills a process group once the bench is gone, however it went: a `sh` in its own process
//! group blocks reading a pipe from the bench, which the kernel closes when the bench exits —
//! SIGKILL included, when no destructor runs. `die_with_parent` kills only the daemon's first
//! process; under a wrapper (`SCALE_CANARYD` a script that runs canaryd, a profiler) the
//! daemon itself is the wrapper's child, and this takes the whole group.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result};

/// The watchdog of one process group; dropping it stands it down (the group is then the
/// owner's to kill, which `ScaleDaemon` does first).
pub struct Watchdog {
    sh: Child,
    pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// Watches process group `pgid` (a child spawned with `process_group(0)`: its PID).
    pub fn start(pgid: u32) -> Result<Watchdog> {
        // `read` ends at EOF with `line` empty when the bench died, or with "done" from `drop`.
        // The group is killed only in the first case: after a normal end the PID may be reused.
        // No `--` before the group: dash (Debian's sh) takes it for a PID.
        let mut sh = Command::new("sh")
            .arg("-c")
            .arg(r#"read -r line; [ "$line" = done ] || kill -9 "-$0" 2>/dev/null; exit 0"#)
            .arg(pgid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: the Ctrl-C that the bench handles does not end the watchdog first.
            .process_group(0)
            .spawn()
            .context("spawning the daemon's watchdog (sh)")?;
        let pipe = sh.stdin.take();
        Ok(Watchdog { sh, pipe })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"done\n");
        }
        let _ = self.sh.wait();
    }
}
