//! Traefik's file provider: canaryd owns one dynamic-configuration file holding a weighted
//! service over the canary and baseline services, replaced atomically (Traefik watches the
//! file and never reads half of it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

    /// Written by serde, so every name is a quoted YAML scalar wherever it needs to be (a
    /// `true`, `1e3` or `.inf` stays a string), whatever `spec::check` lets through.
    pub fn render(&self, w: Weights) -> Result<String, String> {
        let s = &self.spec;
        let member = |name: &str, weight: u32| Member {
            name: name.to_string(),
            weight,
        };
        let file = File {
            http: Http {
                services: [(
                    s.service.clone(),
                    Service {
                        weighted: Weighted {
                            services: vec![
                                member(&s.baseline, w.baseline),
                                member(&s.canary, w.canary),
                            ],
                        },
                    },
                )]
                .into(),
            },
        };
        let yaml = serde_saphyr::to_string(&file)
            .map_err(|e| format!("cannot write the weighted service as YAML: {e}"))?;
        Ok(format!(
            "# written by canaryd: a change by hand is reported as drift and pauses the rollout\n{yaml}"
        ))
    }

    fn read(&self) -> Result<Weights, String> {
        let text = io::read_bounded(&self.spec.path)?;
        parse(&text, &self.spec)
    }
}

#[derive(Serialize, Deserialize)]
struct File {
    http: Http,
}
#[derive(Serialize, Deserialize)]
struct Http {
    services: BTreeMap<String, Service>,
}
#[derive(Serialize, Deserialize)]
struct Service {
    weighted: Weighted,
}
#[derive(Serialize, Deserialize)]
struct Weighted {
    services: Vec<Member>,
}
#[derive(Serialize, Deserialize)]
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
            let refused = |message| TrafficError::Refused {
                provider: NAME,
                message,
            };
            let text = self.render(w).map_err(refused)?;
            io::write_atomic(&self.spec.path, &text).map_err(refused)?;
            self.read().map_err(|e| TrafficError::failed(NAME, e))
        })
    }

    fn current(&self) -> TrafficFuture<'_, Reading> {
        Box::pin(async move {
            Ok(Reading::of_file(&self.spec.path, |text| {
                Ok((parse(text, &self.spec)?, None))
            }))
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
        std::fs::write(&spec.path, text.replace("25", "60")).expect("edit");
        let r = t.current().await.expect("current");
        assert_eq!(r.weights.canary, 60);
        assert!(matches!(
            super::super::reconcile(25, &r),
            super::super::Reconcile::Drift { .. }
        ));
    }

    /// Names `spec::check` accepts that YAML would read as something else unquoted, and the
    /// provider-qualified form: each comes back from the file as the same string.
    #[test]
    fn names_are_quoted_yaml_strings() {
        let names = [
            "true",
            "null",
            "123",
            "1e3",
            ".inf",
            "0x1f",
            "~",
            "no",
            "app-v2@file",
            "a:b",
        ];
        for name in names {
            let spec = TraefikSpec {
                path: "unused.yml".into(),
                service: "svc".into(),
                canary: name.into(),
                baseline: "base@docker".into(),
            };
            let text = Traefik::new(spec.clone())
                .render(Weights::for_canary_pct(5))
                .expect("render");
            let v: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
            let members = &v["http"]["services"]["svc"]["weighted"]["services"];
            assert_eq!(members[1]["name"], serde_json::json!(name), "{text}");
            assert_eq!(members[0]["name"], "base@docker", "{text}");
            assert_eq!(parse(&text, &spec), Ok(Weights::for_canary_pct(5)));
        }
    }
}
