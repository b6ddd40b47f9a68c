//! Which process holds a listening loopback port, read from Linux's `/proc`.
//!
//! A free port is chosen before the child binds it, so another process can take it in between.
//! That process may well answer the readiness URL (another test's Prometheus answers
//! `/-/ready`), and our child, failing to bind, has not always exited by the first poll. An
//! answer only counts once the port's listening socket is one of the child's own descriptors.

use std::collections::HashSet;

/// Whether process `pid` holds the socket listening on TCP `port`. `None` when `/proc` cannot
/// tell (not Linux, or not readable): the caller then falls back to trusting the answer.
pub(crate) fn holds_listener(pid: u32, port: u16) -> Option<bool> {
    let mut inodes = HashSet::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            readable = true;
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if !readable {
        return None;
    }
    // HAProxy in master-worker mode hands its listeners to the worker it forks: the child's
    // children count as the child.
    Some(
        std::iter::once(pid)
            .chain(children(pid))
            .any(|p| holds_any(p, &inodes)),
    )
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            // `/proc/P/stat` is "P (comm) S PPID ...", and comm may hold spaces or ')'.
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = &stat[stat.rfind(')')? + 1..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Whether one of `pid`'s descriptors is a socket with one of `inodes`.
fn holds_any(pid: u32, inodes: &HashSet<u64>) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| {
                let t = target.to_string_lossy().into_owned();
                t.strip_prefix("socket:[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

/// The inodes of the sockets in LISTEN state (`0A`) on `port` in one `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            let listening = *cols.get(3)? == "0A";
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| cols.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_ours_and_not_another_pids() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let Some(ours) = holds_listener(std::process::id(), port) else {
            return; // no /proc here: nothing to check
        };
        assert!(ours);
        // Init (PID 1) never holds this test's socket.
        assert_ne!(holds_listener(1, port), Some(true));
        drop(listener);
        assert_eq!(holds_listener(std::process::id(), port), Some(false));
    }

    #[test]
    fn only_listening_rows_on_the_port_count() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1\n\
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 8080), vec![111]);
        assert_eq!(listening_inodes(table, 8081), vec![333]);
        assert!(listening_inodes(table, 9090).is_empty());
    }
}
