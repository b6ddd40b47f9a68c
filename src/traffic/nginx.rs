//! nginx: canaryd owns one include file (a weighted upstream, or a sticky `split_clients`
//! split), tests the whole configuration with `nginx -t`, reloads, and confirms.
//!
//! A configuration nginx rejects never stays in place: the new include is renamed over the old
//! one, tested, and the old text renamed back on any failure, so the error is
//! [`TrafficError::Refused`] and the old weights keep serving. The include starts with a marker
//! line holding the weights and a checksum of the rest, so a hand edit reads as drift.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::io;
use super::{Reading, TrafficError, TrafficFuture, TrafficProvider, Weights};
use crate::rules::traffic::NginxSpec;

const NAME: &str = "nginx";
const MARKER: &str = "# canaryd-weights";

pub struct Nginx {
    spec: NginxSpec,
}

impl Nginx {
    pub fn new(spec: NginxSpec) -> Nginx {
        Nginx { spec }
    }

    /// The include for `w`: the marker line, then the body.
    pub fn render(&self, w: Weights) -> Result<String, String> {
        let body = match &self.spec.template {
            Some(path) => {
                let template = io::read_bounded(path)?;
                let vars: BTreeMap<String, String> = [
                    ("canary_weight", w.canary.to_string()),
                    ("baseline_weight", w.baseline.to_string()),
                    ("canary", self.spec.canary.clone()),
                    ("baseline", self.spec.baseline.clone()),
                    ("upstream", self.spec.upstream.clone()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                crate::rules::templates::render(&template, &vars)
                    .map_err(|e| format!("template {}: {e}", path.display()))?
            }
            None => self.default_body(w),
        };
        Ok(format!(
            "{MARKER} canary={} baseline={} sum={:016x}\n{body}",
            w.canary,
            w.baseline,
            checksum(&body)
        ))
    }

    /// nginx refuses `weight=0`, so a side with no traffic is `down` (or left out of the split).
    /// Every value here is a number or passed `spec::check`.
    fn default_body(&self, w: Weights) -> String {
        let s = &self.spec;
        let server = |addr: &str, weight: u32| {
            if weight == 0 {
                format!("    server {addr} down;\n")
            } else {
                format!("    server {addr} weight={weight};\n")
            }
        };
        match &s.sticky_key {
            None => format!(
                "upstream {} {{\n{}{}}}\n",
                s.upstream,
                server(&s.canary, w.canary),
                server(&s.baseline, w.baseline)
            ),
            // split_clients hashes the key into ordered ranges: the canary's range is always
            // the first `pct` percent, so raising the percentage only ever adds users to it.
            Some(key) => {
                let split = match w.canary_pct() {
                    0 => format!("    * {}_baseline;\n", s.upstream),
                    100 => format!("    * {}_canary;\n", s.upstream),
                    p => format!(
                        "    {p}% {u}_canary;\n    * {u}_baseline;\n",
                        u = s.upstream
                    ),
                };
                format!(
                    "split_clients \"{key}\" ${u}_pool {{\n{split}}}\n\
                     upstream {u}_canary {{\n    server {c};\n}}\n\
                     upstream {u}_baseline {{\n    server {b};\n}}\n",
                    u = s.upstream,
                    c = s.canary,
                    b = s.baseline,
                )
            }
        }
    }

    async fn apply(&self, content: &str) -> Result<(), TrafficError> {
        let refused = |message: String| TrafficError::Refused {
            provider: NAME,
            message,
        };
        let include = &self.spec.include;
        let old = if include.exists() {
            Some(io::read_bounded(include).map_err(refused)?)
        } else {
            None
        };
        io::write_atomic(include, content).map_err(refused)?;
        let restore = || match &old {
            Some(text) => io::write_atomic(include, text),
            None => std::fs::remove_file(include).map_err(|e| e.to_string()),
        };
        if let Err(e) = io::run(&self.spec.test_command, self.spec.timeout).await {
            return Err(match restore() {
                Ok(()) => refused(format!(
                    "nginx -t rejected the new include (old one restored): {e}"
                )),
                Err(r) => TrafficError::failed(
                    NAME,
                    format!(
                        "nginx -t rejected the new include: {e}; restoring the old one failed: {r}"
                    ),
                ),
            });
        }
        let workers = self.spec.pid_file.as_deref().map(workers_of);
        if let Err(e) = io::run(&self.spec.reload_command, self.spec.timeout).await {
            let _ = restore();
            return Err(refused(format!(
                "reload failed (old include restored): {e}"
            )));
        }
        if let (Some(pid_file), Some(before)) = (&self.spec.pid_file, workers)
            && !wait_new_workers(pid_file, &before, self.spec.timeout).await
        {
            let _ = restore();
            return Err(TrafficError::failed(
                NAME,
                format!(
                    "nginx did not replace its workers within {:?} after the reload; \
                     the old include is back, the next reload applies it",
                    self.spec.timeout
                ),
            ));
        }
        Ok(())
    }
}

/// FNV-1a: a checksum against hand edits, not a defence against an adversary.
fn checksum(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Reads the weights canaryd wrote, or says why the file is not what canaryd wrote.
pub fn parse(text: &str) -> Result<(Weights, Option<String>), String> {
    let (marker, body) = text.split_once('\n').unwrap_or((text, ""));
    let fields = marker
        .strip_prefix(MARKER)
        .ok_or_else(|| "the include has no canaryd marker line".to_string())?;
    let get = |key: &str| {
        fields
            .split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let bad = || "the include's marker line is malformed".to_string();
    let canary: u32 = get("canary").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let baseline: u32 = get("baseline")
        .and_then(|v| v.parse().ok())
        .ok_or_else(bad)?;
    let sum = get("sum").ok_or_else(bad)?;
    let edited = (sum != format!("{:016x}", checksum(body)))
        .then(|| "the include was edited outside canaryd".to_string());
    Ok((Weights { canary, baseline }, edited))
}

/// nginx's worker processes: the children of the master named in the pid file.
fn workers_of(pid_file: &Path) -> Vec<u32> {
    let Some(master) = io::read_bounded(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(master)
        })
        .collect()
}

/// A reload is in effect once no worker from before it is left and a new one runs.
async fn wait_new_workers(pid_file: &Path, before: &[u32], timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = workers_of(pid_file);
        if !now.is_empty() && now.iter().all(|p| !before.contains(p)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TrafficProvider for Nginx {
    fn name(&self) -> &'static str {
        NAME
    }

    fn set_weight(&self, canary_pct: u32) -> TrafficFuture<'_, Weights> {
        Box::pin(async move {
            let w = Weights::for_canary_pct(canary_pct);
            let content = self.render(w).map_err(|message| TrafficError::Refused {
                provider: NAME,
                message,
            })?;
            self.apply(&content).await?;
            let text =
                io::read_bounded(&self.spec.include).map_err(|e| TrafficError::failed(NAME, e))?;
            let (found, edited) = parse(&text).map_err(|e| TrafficError::failed(NAME, e))?;
            if let Some(e) = edited {
                return Err(TrafficError::failed(NAME, e));
            }
            Ok(found)
        })
    }

    fn current(&self) -> TrafficFuture<'_, Reading> {
        Box::pin(async move { Ok(Reading::of_file(&self.spec.include, parse)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sticky: Option<&str>) -> NginxSpec {
        serde_json::from_value(serde_json::json!({
            "include": "/nonexistent/up.conf", "upstream": "app",
            "canary": "127.0.0.1:8081", "baseline": "127.0.0.1:8080", "sticky_key": sticky,
        }))
        .expect("spec")
    }

    #[test]
    fn renders_weighted_upstream_with_down_for_zero() {
        let n = Nginx::new(spec(None));
        let text = n.render(Weights::for_canary_pct(25)).expect("render");
        assert!(text.contains("server 127.0.0.1:8081 weight=25;"), "{text}");
        assert!(text.contains("server 127.0.0.1:8080 weight=75;"), "{text}");
        let zero = n.render(Weights::for_canary_pct(0)).expect("render");
        assert!(zero.contains("server 127.0.0.1:8081 down;"), "{zero}");
        assert_eq!(parse(&text), Ok((Weights::for_canary_pct(25), None)));
    }

    #[test]
    fn sticky_split_keeps_the_canary_range_first() {
        let n = Nginx::new(spec(Some("$cookie_user")));
        let text = n.render(Weights::for_canary_pct(5)).expect("render");
        assert!(text.contains("split_clients \"$cookie_user\" $app_pool {\n    5% app_canary;\n    * app_baseline;"), "{text}");
        let all = n.render(Weights::for_canary_pct(100)).expect("render");
        assert!(all.contains("    * app_canary;\n}"), "{all}");
    }

    #[test]
    fn a_hand_edit_is_seen() {
        let n = Nginx::new(spec(None));
        let text = n
            .render(Weights::for_canary_pct(5))
            .expect("render")
            .replace("weight=5;", "weight=50;");
        let (_, edited) = parse(&text).expect("parse");
        assert!(edited.is_some());
        assert!(parse("upstream app {}").is_err());
    }
}
