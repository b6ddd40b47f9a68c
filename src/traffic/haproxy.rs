//! HAProxy through its runtime API (the admin socket): `set weight`, read back with
//! `get weight`. After a reload HAProxy serves the weights of its configuration file again
//! ("initial"); [`super::reconcile`] recognises that and the task sets canaryd's weights again.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Reading, TrafficError, TrafficFuture, TrafficProvider, Weights};
use crate::rules::traffic::HaproxySpec;

/// A runtime-API answer to the few commands canaryd sends is a line or two.
const MAX_ANSWER: u64 = 64 * 1024;
const NAME: &str = "haproxy";

pub struct Haproxy {
    spec: HaproxySpec,
}

impl Haproxy {
    pub fn new(spec: HaproxySpec) -> Haproxy {
        Haproxy { spec }
    }

    fn server(&self, name: &str) -> String {
        format!("{}/{}", self.spec.backend, name)
    }

    /// One connection, one command line (several commands joined by `;`), the whole answer.
    /// Names passed `spec::check`, so none holds a `;`, a space or a newline.
    async fn command(&self, line: &str) -> Result<String, TrafficError> {
        let target = match (&self.spec.socket, &self.spec.address) {
            (Some(path), _) => AdminSocket::Unix(path),
            (None, Some(addr)) => AdminSocket::Tcp(addr),
            (None, None) => return Err(TrafficError::failed(NAME, "no admin socket configured")),
        };
        admin_command(target, line, self.spec.timeout)
            .await
            .map_err(|e| TrafficError::failed(NAME, e))
    }

    async fn read_weights(&self) -> Result<(Weights, Weights), TrafficError> {
        let answer = self
            .command(&format!(
                "get weight {}; get weight {}",
                self.server(&self.spec.canary),
                self.server(&self.spec.baseline)
            ))
            .await?;
        let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
        let (Some(c), Some(b)) = (lines.next(), lines.next()) else {
            return Err(TrafficError::failed(
                NAME,
                format!("unexpected answer {answer:?}"),
            ));
        };
        let (c, ci) = parse_weight(c).map_err(|e| TrafficError::failed(NAME, e))?;
        let (b, bi) = parse_weight(b).map_err(|e| TrafficError::failed(NAME, e))?;
        Ok((
            Weights {
                canary: c,
                baseline: b,
            },
            Weights {
                canary: ci,
                baseline: bi,
            },
        ))
    }
}

/// Where HAProxy's runtime API listens.
#[derive(Debug, Clone, Copy)]
pub enum AdminSocket<'a> {
    Unix(&'a std::path::Path),
    Tcp(&'a str),
}

/// One runtime-API exchange, bounded in time and size: the provider's and the demo's (which
/// reloads through the master socket) one way to talk to HAProxy.
pub async fn admin_command(
    target: AdminSocket<'_>,
    line: &str,
    timeout: std::time::Duration,
) -> Result<String, String> {
    let talk = async {
        match target {
            AdminSocket::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
                exchange(s, line).await
            }
            AdminSocket::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                exchange(s, line).await
            }
        }
    };
    tokio::time::timeout(timeout, talk)
        .await
        .unwrap_or_else(|_| Err(format!("admin socket did not answer within {timeout:?}")))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    line: &str,
) -> Result<String, String> {
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| format!("cannot send to the admin socket: {e}"))?;
    let mut buf = Vec::new();
    (&mut s)
        .take(MAX_ANSWER + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| format!("cannot read the admin socket: {e}"))?;
    if buf.len() as u64 > MAX_ANSWER {
        return Err(format!(
            "admin socket answered more than {MAX_ANSWER} bytes"
        ));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `get weight` answers `"5 (initial 1)"`.
fn parse_weight(line: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!(
            "unexpected get weight answer {:?}",
            line.chars().take(200).collect::<String>()
        )
    };
    let (cur, rest) = line.trim().split_once(' ').ok_or_else(bad)?;
    let initial = rest
        .trim()
        .strip_prefix("(initial ")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(bad)?;
    Ok((
        cur.parse().map_err(|_| bad())?,
        initial.parse().map_err(|_| bad())?,
    ))
}

impl TrafficProvider for Haproxy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn set_weight(&self, canary_pct: u32) -> TrafficFuture<'_, Weights> {
        Box::pin(async move {
            let w = Weights::for_canary_pct(canary_pct);
            // Nothing is sent when the weights cannot be read first, so the old ones still
            // serve: the rollout may hold.
            let (before, _) = self
                .read_weights()
                .await
                .map_err(|e| TrafficError::Refused {
                    provider: NAME,
                    message: format!("nothing sent, the weights cannot be read first: {e}"),
                })?;
            // Both in one line: HAProxy applies them back to back, so there is no moment with
            // the canary raised and the baseline not yet lowered.
            let answer = self
                .command(&format!(
                    "set weight {} {}; set weight {} {}",
                    self.server(&self.spec.canary),
                    w.canary,
                    self.server(&self.spec.baseline),
                    w.baseline
                ))
                .await?;
            let (after, _) = self.read_weights().await?;
            if answer.trim().is_empty() || after == w {
                return Ok(after);
            }
            // HAProxy answers each command of the line on its own: one may have been refused
            // and the other applied. Say what the server holds now, never "unchanged" on a
            // guess: drift detection and the rollback's canary-to-0 start from this.
            let message: String = answer.trim().chars().take(500).collect();
            Err(if after == before {
                TrafficError::Refused {
                    provider: NAME,
                    message,
                }
            } else {
                TrafficError::PartlyApplied {
                    provider: NAME,
                    wanted: w,
                    found: after,
                    message,
                }
            })
        })
    }

    fn current(&self) -> TrafficFuture<'_, Reading> {
        Box::pin(async move {
            let (weights, initial) = self.read_weights().await?;
            Ok(Reading {
                weights,
                initial: Some(initial),
                edited: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_weight_answers() {
        assert_eq!(parse_weight("5 (initial 1)"), Ok((5, 1)));
        assert_eq!(parse_weight("0 (initial 100)\n"), Ok((0, 100)));
        assert!(parse_weight("No such server.").is_err());
        assert!(parse_weight("x (initial 1)").is_err());
    }

    /// A runtime API that holds weights per server and refuses `set weight` for the servers
    /// named in `refuse`, answering each command of a `;` line on its own, as HAProxy does.
    async fn fake_haproxy(dir: &std::path::Path, refuse: &'static [&'static str]) -> Haproxy {
        use std::collections::BTreeMap;
        let path = dir.join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let mut weights: BTreeMap<String, u32> =
                [("app/canary".into(), 0), ("app/baseline".into(), 100)].into();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n]).to_string();
                let mut answer = String::new();
                for cmd in line.trim().split(';').map(str::trim) {
                    let words: Vec<&str> = cmd.split_whitespace().collect();
                    match words.as_slice() {
                        ["get", "weight", server] => {
                            let w = weights.get(*server).copied().unwrap_or(0);
                            answer += &format!("{w} (initial 1)\n");
                        }
                        ["set", "weight", server, _] if refuse.contains(server) => {
                            answer += "Backend is using a static LB algorithm.\n";
                        }
                        ["set", "weight", server, w] => {
                            weights.insert(server.to_string(), w.parse().unwrap_or(0));
                        }
                        _ => answer += "Unknown command.\n",
                    }
                }
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        Haproxy::new(HaproxySpec {
            socket: Some(path),
            address: None,
            backend: "app".into(),
            canary: "canary".into(),
            baseline: "baseline".into(),
            timeout: std::time::Duration::from_secs(2),
        })
    }

    #[tokio::test]
    async fn a_half_applied_change_reports_what_the_server_now_holds() {
        let dir = tempfile::tempdir().expect("dir");
        let h = fake_haproxy(dir.path(), &["app/baseline"]).await;
        match h.set_weight(25).await {
            Err(e @ TrafficError::PartlyApplied { found, .. }) => {
                assert_eq!(
                    found,
                    Weights {
                        canary: 25,
                        baseline: 100
                    }
                );
                assert!(!e.traffic_unchanged(), "{e}");
            }
            other => panic!("expected PartlyApplied, got {other:?}"),
        }
        assert_eq!(h.current().await.expect("current").weights.canary, 25);
    }

    #[tokio::test]
    async fn a_refusal_of_both_is_unchanged_and_a_clean_set_is_confirmed() {
        let dir = tempfile::tempdir().expect("dir");
        let h = fake_haproxy(dir.path(), &["app/canary", "app/baseline"]).await;
        let e = h.set_weight(25).await.expect_err("refused");
        assert!(e.traffic_unchanged(), "{e}");
        let dir2 = tempfile::tempdir().expect("dir");
        let ok = fake_haproxy(dir2.path(), &[]).await;
        assert_eq!(
            ok.set_weight(25).await.expect("set"),
            Weights::for_canary_pct(25)
        );
    }
}
