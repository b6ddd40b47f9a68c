//! A percentage feature flag in a file (seed 003's `FEATURE_ROLLOUT_PCT`), for services that
//! split traffic in the application: `KEY=5` in an env file, or `"KEY": 5` in a JSON object.
//! Other lines and keys are kept. An optional restart command (argv, never a shell string)
//! runs after each write.
//!
//! Sticky by user: the application should send a user to the new code when
//! `hash(user_id) % 100 < FEATURE_ROLLOUT_PCT`. The set of users below the line only grows as
//! the percentage rises, so no user ever moves back to the old code during a rollout (and all
//! of them do on rollback, when canaryd writes 0).

use super::io;
use super::{Reading, TrafficError, TrafficFuture, TrafficProvider, Weights};
use crate::rules::traffic::{FlagFileSpec, FlagFormat};

const NAME: &str = "flag_file";

pub struct FlagFile {
    spec: FlagFileSpec,
}

impl FlagFile {
    pub fn new(spec: FlagFileSpec) -> FlagFile {
        FlagFile { spec }
    }

    fn existing(&self) -> Result<String, String> {
        if self.spec.path.exists() {
            io::read_bounded(&self.spec.path)
        } else {
            Ok(String::new())
        }
    }

    fn read(&self) -> Result<u32, String> {
        let text = io::read_bounded(&self.spec.path)?;
        read_pct(&text, self.spec.format, &self.spec.key)
    }
}

/// `old` with the key set to `pct`, everything else as it was.
pub fn write_pct(old: &str, format: FlagFormat, key: &str, pct: u32) -> Result<String, String> {
    match format {
        FlagFormat::Env => {
            let line = format!("{key}={pct}");
            let mut found = false;
            let mut out: Vec<String> = old
                .lines()
                .map(|l| {
                    if l.trim_start()
                        .strip_prefix(key)
                        .is_some_and(|r| r.trim_start().starts_with('='))
                    {
                        found = true;
                        line.clone()
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            if !found {
                out.push(line);
            }
            Ok(out.join("\n") + "\n")
        }
        FlagFormat::Json => {
            let mut v: serde_json::Value = if old.trim().is_empty() {
                serde_json::json!({})
            } else {
                serde_json::from_str(old).map_err(|e| format!("flag file is not JSON: {e}"))?
            };
            let obj = v
                .as_object_mut()
                .ok_or_else(|| "flag file is not a JSON object".to_string())?;
            obj.insert(key.to_string(), serde_json::json!(pct));
            serde_json::to_string_pretty(&v)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string())
        }
    }
}

pub fn read_pct(text: &str, format: FlagFormat, key: &str) -> Result<u32, String> {
    let value = match format {
        FlagFormat::Env => text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        }),
        FlagFormat::Json => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get(key).map(|x| x.to_string())),
    };
    value
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|p| *p <= 100)
        .ok_or_else(|| format!("flag file has no percentage {key} (0-100)"))
}

impl TrafficProvider for FlagFile {
    fn name(&self) -> &'static str {
        NAME
    }

    fn set_weight(&self, canary_pct: u32) -> TrafficFuture<'_, Weights> {
        Box::pin(async move {
            let pct = canary_pct.min(100);
            let refused = |message: String| TrafficError::Refused {
                provider: NAME,
                message,
            };
            let old = self.existing().map_err(refused)?;
            let new = write_pct(&old, self.spec.format, &self.spec.key, pct).map_err(refused)?;
            io::write_atomic(&self.spec.path, &new).map_err(refused)?;
            if let Some(argv) = &self.spec.restart {
                io::run(argv, self.spec.timeout)
                    .await
                    .map_err(|e| TrafficError::failed(NAME, format!("restart command: {e}")))?;
            }
            let found = self.read().map_err(|e| TrafficError::failed(NAME, e))?;
            Ok(Weights::for_canary_pct(found))
        })
    }

    fn current(&self) -> TrafficFuture<'_, Reading> {
        Box::pin(async move {
            Ok(Reading::of_file(&self.spec.path, |text| {
                let pct = read_pct(text, self.spec.format, &self.spec.key)?;
                Ok((Weights::for_canary_pct(pct), None))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keeps_other_lines_and_replaces_the_key() {
        let old = "DB_URL=x\nFEATURE_ROLLOUT_PCT=5\n";
        let new = write_pct(old, FlagFormat::Env, "FEATURE_ROLLOUT_PCT", 25).expect("w");
        assert_eq!(new, "DB_URL=x\nFEATURE_ROLLOUT_PCT=25\n");
        assert_eq!(
            read_pct(&new, FlagFormat::Env, "FEATURE_ROLLOUT_PCT"),
            Ok(25)
        );
        let added = write_pct("A=1", FlagFormat::Env, "K", 0).expect("w");
        assert_eq!(added, "A=1\nK=0\n");
    }

    #[test]
    fn json_keeps_other_keys() {
        let new = write_pct("{\"other\": true}", FlagFormat::Json, "PCT", 50).expect("w");
        let v: serde_json::Value = serde_json::from_str(&new).expect("json");
        assert_eq!(v["other"], true);
        assert_eq!(read_pct(&new, FlagFormat::Json, "PCT"), Ok(50));
        assert!(write_pct("[1]", FlagFormat::Json, "PCT", 5).is_err());
        assert!(read_pct("{\"PCT\": 500}", FlagFormat::Json, "PCT").is_err());
    }

    #[tokio::test]
    async fn runs_the_restart_argv_and_confirms() {
        let dir = tempfile::tempdir().expect("dir");
        let marker = dir.path().join("restarted");
        let f = FlagFile::new(FlagFileSpec {
            path: dir.path().join("flags.env"),
            format: FlagFormat::Env,
            key: "FEATURE_ROLLOUT_PCT".into(),
            restart: Some(vec!["touch".into(), marker.display().to_string()]),
            timeout: std::time::Duration::from_secs(5),
        });
        assert_eq!(f.set_weight(5).await.expect("set").canary, 5);
        assert!(marker.exists());
        assert_eq!(f.zero_canary().await.expect("zero").canary, 0);
    }
}
