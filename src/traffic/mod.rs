//! Traffic providers: canaryd moves the canary's share of real requests itself, instead of
//! every user writing a `set_weight` hook.
//!
//! A provider sets a weight and reads back what the server now has ([`TrafficProvider`]). The
//! task compares that reading with the weight it last confirmed at every tick ([`reconcile`]):
//! a server that reloaded (HAProxy back at its configured weights) gets the weights again; a
//! weight someone changed by hand pauses the rollout and alerts. On rollback the canary is set
//! to 0 before any hook runs.
//!
//! Architecture Invariant: knows servers, files and commands, nothing about analysis. Every
//! socket read, command and file is bounded in time and size, and every name written into a
//! server's syntax passed [`crate::rules::traffic::check`] at load.

pub mod flag_file;
pub mod haproxy;
mod io;
pub mod nginx;
pub mod traefik;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use crate::rules::traffic::TrafficSpec;

/// Weights as the server holds them. canaryd sets `canary = pct`, `baseline = 100 - pct`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Weights {
    pub canary: u32,
    pub baseline: u32,
}

impl Weights {
    pub fn for_canary_pct(pct: u32) -> Weights {
        let canary = pct.min(100);
        Weights {
            canary,
            baseline: 100 - canary,
        }
    }

    /// The canary's share in whole percent, rounded; 0 when nothing takes traffic.
    pub fn canary_pct(&self) -> u32 {
        let (c, b) = (u64::from(self.canary), u64::from(self.baseline));
        let sum = c + b;
        if sum == 0 {
            return 0;
        }
        ((c * 100 + sum / 2) / sum) as u32
    }
}

impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "canary {} / baseline {}", self.canary, self.baseline)
    }
}

/// What a provider reads back from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub weights: Weights,
    /// The server's own configured weights (HAProxy's "initial"): a reading equal to them
    /// right after canaryd set others means the server reloaded, not that a human changed them.
    pub initial: Option<Weights>,
    /// Set when the file canaryd owns was edited outside canaryd.
    pub edited: Option<String>,
}

impl Reading {
    /// The weights of a file canaryd owns (nginx's include, Traefik's dynamic file, the flag
    /// file). The one semantics of every file provider's `current()`: a file that cannot be
    /// read, or is not what canaryd wrote, is drift naming why (the rollout pauses and alerts),
    /// never an error only logged: canaryd can no longer say where the traffic goes.
    fn of_file(
        path: &std::path::Path,
        parse: impl FnOnce(&str) -> Result<(Weights, Option<String>), String>,
    ) -> Reading {
        match io::read_bounded(path).and_then(|text| parse(&text)) {
            Ok((weights, edited)) => Reading {
                weights,
                initial: None,
                edited,
            },
            Err(why) => Reading {
                weights: Weights {
                    canary: 0,
                    baseline: 0,
                },
                initial: None,
                edited: Some(why),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The server refused the new weights and still serves the old ones: holding is safe.
    #[error("{provider} refused the new weights; traffic unchanged: {message}")]
    Refused {
        provider: &'static str,
        message: String,
    },
    /// Traffic may be anywhere between the old and the new weights.
    #[error("{provider}: {message}")]
    Failed {
        provider: &'static str,
        message: String,
    },
    /// The server applied part of the change and refused the rest: it now holds `found`,
    /// which is neither the old weights nor the new ones.
    #[error("{provider} applied only part of {wanted} ({message}); it now holds {found}")]
    PartlyApplied {
        provider: &'static str,
        wanted: Weights,
        found: Weights,
        message: String,
    },
    #[error("{provider} was set to {wanted} but reads back {found}")]
    Unconfirmed {
        provider: &'static str,
        wanted: Weights,
        found: Weights,
    },
}

impl TrafficError {
    /// The old weights still serve, so the rollout may wait instead of rolling back.
    pub fn traffic_unchanged(&self) -> bool {
        matches!(self, TrafficError::Refused { .. })
    }

    fn failed(provider: &'static str, message: impl Into<String>) -> TrafficError {
        TrafficError::Failed {
            provider,
            message: message.into(),
        }
    }
}

pub type TrafficFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TrafficError>> + Send + 'a>>;

/// One way of moving traffic. Each call is bounded by the provider's timeout.
pub trait TrafficProvider: Send + Sync {
    fn name(&self) -> &'static str;

    /// Sets the canary to `canary_pct` and returns the weights read back after the change: a
    /// provider never reports a weight it did not see on the server.
    fn set_weight(&self, canary_pct: u32) -> TrafficFuture<'_, Weights>;

    /// What the server holds now, to find drift.
    fn current(&self) -> TrafficFuture<'_, Reading>;

    /// Rollback: the canary gets nothing, before any other rollback action.
    fn zero_canary(&self) -> TrafficFuture<'_, Weights> {
        self.set_weight(0)
    }
}

/// The provider a rule's `traffic:` names.
pub fn provider(spec: &TrafficSpec) -> Box<dyn TrafficProvider> {
    match spec {
        TrafficSpec::Haproxy(s) => Box::new(haproxy::Haproxy::new(s.clone())),
        TrafficSpec::Nginx(s) => Box::new(nginx::Nginx::new(s.clone())),
        TrafficSpec::Traefik(s) => Box::new(traefik::Traefik::new(s.clone())),
        TrafficSpec::FlagFile(s) => Box::new(flag_file::FlagFile::new(s.clone())),
    }
}

/// Sets `pct` and checks the server holds it.
pub async fn set_confirmed(p: &dyn TrafficProvider, pct: u32) -> Result<Weights, TrafficError> {
    let wanted = Weights::for_canary_pct(pct);
    let found = if pct == 0 {
        p.zero_canary().await?
    } else {
        p.set_weight(pct).await?
    };
    if found.canary_pct() != wanted.canary_pct() {
        return Err(TrafficError::Unconfirmed {
            provider: p.name(),
            wanted,
            found,
        });
    }
    Ok(found)
}

/// How a reading compares with the weight canaryd last confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconcile {
    InSync,
    /// The server is back at its own configured weights (it reloaded): set ours again.
    Reloaded,
    /// Someone else changed the weights: a human must look.
    Drift {
        found: String,
    },
}

/// Pure: the task decides what a reading means here, the same way for every provider.
pub fn reconcile(expected_pct: u32, r: &Reading) -> Reconcile {
    if let Some(why) = &r.edited {
        return Reconcile::Drift { found: why.clone() };
    }
    if r.weights.canary_pct() == expected_pct.min(100) {
        return Reconcile::InSync;
    }
    if r.initial == Some(r.weights) {
        return Reconcile::Reloaded;
    }
    Reconcile::Drift {
        found: format!(
            "{} ({} % canary), canaryd set {} %",
            r.weights,
            r.weights.canary_pct(),
            expected_pct
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::traffic as spec;

    fn reading(c: u32, b: u32, initial: Option<(u32, u32)>) -> Reading {
        Reading {
            weights: Weights {
                canary: c,
                baseline: b,
            },
            initial: initial.map(|(canary, baseline)| Weights { canary, baseline }),
            edited: None,
        }
    }

    #[test]
    fn canary_share_rounds_and_never_divides_by_zero() {
        assert_eq!(Weights::for_canary_pct(25).canary_pct(), 25);
        assert_eq!(Weights::for_canary_pct(250), Weights::for_canary_pct(100));
        assert_eq!(
            Weights {
                canary: 0,
                baseline: 0
            }
            .canary_pct(),
            0
        );
        assert_eq!(
            Weights {
                canary: 1,
                baseline: 2
            }
            .canary_pct(),
            33
        );
        assert_eq!(
            Weights {
                canary: u32::MAX,
                baseline: u32::MAX
            }
            .canary_pct(),
            50
        );
    }

    /// nginx, Traefik and the flag file read their own file the same way: a missing or
    /// unreadable file is drift the task pauses on, with the file's name in the reason.
    #[tokio::test]
    async fn every_file_provider_reports_an_unreadable_file_as_drift() {
        let dir = tempfile::tempdir().expect("dir");
        let unreadable = dir.path().join("a-directory");
        std::fs::create_dir(&unreadable).expect("dir");
        for path in [dir.path().join("missing"), unreadable] {
            let providers: Vec<Box<dyn TrafficProvider>> = vec![
                Box::new(nginx::Nginx::new(spec::NginxSpec {
                    include: path.clone(),
                    ..serde_json::from_value(serde_json::json!({
                        "include": "x", "upstream": "app",
                        "canary": "127.0.0.1:1", "baseline": "127.0.0.1:2"
                    }))
                    .expect("nginx spec")
                })),
                Box::new(traefik::Traefik::new(spec::TraefikSpec {
                    path: path.clone(),
                    service: "app".into(),
                    canary: "c".into(),
                    baseline: "b".into(),
                })),
                Box::new(flag_file::FlagFile::new(spec::FlagFileSpec {
                    path: path.clone(),
                    format: spec::FlagFormat::Env,
                    key: "PCT".into(),
                    restart: None,
                    timeout: std::time::Duration::from_secs(1),
                })),
            ];
            for p in providers {
                let r = p
                    .current()
                    .await
                    .expect("a reading, not an error only logged");
                match reconcile(25, &r) {
                    Reconcile::Drift { found } => assert!(
                        found.contains(&path.display().to_string()),
                        "{}: {found}",
                        p.name()
                    ),
                    other => panic!("{}: {other:?}", p.name()),
                }
            }
        }
    }

    #[test]
    fn reconcile_tells_reload_from_drift() {
        let cases = [
            (25, reading(25, 75, Some((1, 1))), Reconcile::InSync),
            (25, reading(1, 1, Some((1, 1))), Reconcile::Reloaded),
            (
                25,
                reading(60, 40, Some((1, 1))),
                Reconcile::Drift {
                    found: "canary 60 / baseline 40 (60 % canary), canaryd set 25 %".into(),
                },
            ),
            (
                0,
                reading(5, 95, None),
                Reconcile::Drift {
                    found: "canary 5 / baseline 95 (5 % canary), canaryd set 0 %".into(),
                },
            ),
            (0, reading(0, 100, None), Reconcile::InSync),
        ];
        for (expected, r, want) in cases {
            assert_eq!(reconcile(expected, &r), want, "{expected} {r:?}");
        }
        let mut edited = reading(25, 75, None);
        edited.edited = Some("edited by hand".into());
        assert!(matches!(reconcile(25, &edited), Reconcile::Drift { .. }));
    }
}
