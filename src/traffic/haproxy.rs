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
        let exchange = async {
            match (&self.spec.socket, &self.spec.address) {
                (Some(path), _) => {
                    let s = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
                    exchange(s, line).await
                }
                (None, Some(addr)) => {
                    let s = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                    exchange(s, line).await
                }
                (None, None) => Err("no admin socket configured".to_string()),
            }
        };
        match tokio::time::timeout(self.spec.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(TrafficError::failed(NAME, e)),
            Err(_) => Err(TrafficError::failed(
                NAME,
                format!("admin socket did not answer within {:?}", self.spec.timeout),
            )),
        }
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
            if !answer.trim().is_empty() {
                return Err(TrafficError::Refused {
                    provider: NAME,
                    message: answer.trim().chars().take(500).collect(),
                });
            }
            Ok(self.read_weights().await?.0)
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
}
