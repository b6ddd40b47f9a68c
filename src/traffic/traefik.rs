//! Traefik's file provider: canaryd owns one dynamic-configuration file holding a weighted
//! service over the canary and baseline services, replaced atomically (Traefik watches the
//! file and never reads half of it).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::io;
use super::{Reading, TrafficError, TrafficFuture, TrafficProvider, Weights};
use crate::rules::traffic::TraefikSpec;

const NAME: &str = "traefik";

pub struct Traefik {
    spec: TraefikSpec,
}

impl Traefik {
    pub fn new(spec: TraefikSpec) -> Traefik {
        Traefik { spec }
    }

    /// Every name passed `spec::check`: none can start a YAML structure or comment.
    pub fn render(&self, w: Weights) -> String {
        let s = &self.spec;
        format!(
            "# written by canaryd: a change by hand is reported as drift and pauses the rollout\n\
             http:\n  services:\n    {svc}:\n      weighted:\n        services:\n\
             \x20         - name: {b}\n            weight: {bw}\n\
             \x20         - name: {c}\n            weight: {cw}\n",
            svc = s.service,
            b = s.baseline,
            bw = w.baseline,
            c = s.canary,
            cw = w.canary,
        )
    }

    fn read(&self) -> Result<Weights, String> {
        let text = io::read_bounded(&self.spec.path)?;
        parse(&text, &self.spec)
    }
}

#[derive(Deserialize)]
struct File {
    http: Http,
}
#[derive(Deserialize)]
struct Http {
    services: BTreeMap<String, Service>,
}
#[derive(Deserialize)]
struct Service {
    weighted: Weighted,
}
#[derive(Deserialize)]
struct Weighted {
    services: Vec<Member>,
}
#[derive(Deserialize)]
struct Member {
    name: String,
    #[serde(default)]
    weight: u32,
}

fn parse(text: &str, s: &TraefikSpec) -> Result<Weights, String> {
    let file: File = serde_saphyr::from_str(text)
        .map_err(|e| format!("{} is not a weighted service: {e}", s.path.display()))?;
    let service = file
        .http
        .services
        .get(&s.service)
        .ok_or_else(|| format!("{} has no service {}", s.path.display(), s.service))?;
    let weight = |name: &str| {
        service
            .weighted
            .services
            .iter()
            .find(|m| m.name == name)
            .map_or(0, |m| m.weight)
    };
    Ok(Weights {
        canary: weight(&s.canary),
        baseline: weight(&s.baseline),
    })
}

impl TrafficProvider for Traefik {
    fn name(&self) -> &'static str {
        NAME
    }

    fn set_weight(&self, canary_pct: u32) -> TrafficFuture<'_, Weights> {
        Box::pin(async move {
            let w = Weights::for_canary_pct(canary_pct);
            io::write_atomic(&self.spec.path, &self.render(w)).map_err(|message| {
                TrafficError::Refused {
                    provider: NAME,
                    message,
                }
            })?;
            self.read().map_err(|e| TrafficError::failed(NAME, e))
        })
    }

    fn current(&self) -> TrafficFuture<'_, Reading> {
        Box::pin(async move {
            Ok(match self.read() {
                Ok(weights) => Reading {
                    weights,
                    initial: None,
                    edited: None,
                },
                Err(e) => Reading {
                    weights: Weights::for_canary_pct(0),
                    initial: None,
                    edited: Some(e),
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_and_reads_back_a_weighted_service() {
        let dir = tempfile::tempdir().expect("dir");
        let spec = TraefikSpec {
            path: dir.path().join("canary.yml"),
            service: "app".into(),
            canary: "app-canary".into(),
            baseline: "app-baseline".into(),
        };
        let t = Traefik::new(spec.clone());
        assert_eq!(
            t.set_weight(25).await.expect("set"),
            Weights::for_canary_pct(25)
        );
        let text = std::fs::read_to_string(&spec.path).expect("read");
        assert!(
            text.contains("- name: app-canary\n            weight: 25"),
            "{text}"
        );
        std::fs::write(&spec.path, text.replace("weight: 25", "weight: 60")).expect("edit");
        let r = t.current().await.expect("current");
        assert_eq!(r.weights.canary, 60);
        assert!(matches!(
            super::super::reconcile(25, &r),
            super::super::Reconcile::Drift { .. }
        ));
    }
}
