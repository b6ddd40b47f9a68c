//! Hook delivery: HTTP POST of the design.md payload, or a command with `CANARYD_*` variables.
//!
//! Both retry with exponential backoff and jitter, so a receiver that blips does not fail a
//! rollout, and both carry an idempotency key, so a receiver that sees a retry can ignore it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::outbound::{self, Redirect};
use crate::redact;
use crate::rollout::HookKind;
use crate::rules::schema::HookSpec;
use crate::rules::templates;
use crate::store::leadership::{EPOCH_HEADER, Fence};
use crate::verdict::Check;

/// The JSON body of every HTTP hook (design.md "Hooks").
#[derive(Debug, Clone, Serialize)]
pub struct HookPayload {
    pub event: HookKind,
    pub rollout_id: String,
    pub rule: String,
    pub version: String,
    pub step: usize,
    pub weight: u32,
    pub phase: String,
    pub reason: Option<String>,
    pub checks: Vec<Check>,
    pub time: DateTime<Utc>,
}

impl HookPayload {
    /// Same action, same key: across retries and across restarts of canaryd.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.rollout_id,
            self.event.as_str(),
            self.step,
            self.weight
        )
    }
}

/// Every `url` here is already redacted ([`crate::redact`]): these errors become rollback
/// reasons, delivery records and log lines.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} answered {redirect}")]
    Redirect { url: String, redirect: Redirect },
    #[error("{url} unreachable: {message}")]
    Transport { url: String, message: String },
    #[error("command {program:?} exited with {code:?}: {stderr}")]
    Exit {
        program: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("command {program:?} did not finish within {timeout:?} and was killed")]
    Timeout { program: String, timeout: Duration },
    #[error("command {program:?} could not start: {message}")]
    Spawn { program: String, message: String },
    #[error("hook template: {0}")]
    Template(String),
    /// Names the file, never its content.
    #[error("hook secret_file {path} cannot be used: {message}")]
    Secret { path: String, message: String },
    /// Decided under a leader term this replica no longer holds: not sent.
    #[error("not sent: this replica no longer leads under epoch {epoch}")]
    NotLeader { epoch: u64 },
}

impl HookError {
    /// Some errors repeat identically on every try; retrying them only delays the rollback.
    fn retryable(&self) -> bool {
        match self {
            HookError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            HookError::Redirect { .. }
            | HookError::Template(_)
            | HookError::Spawn { .. }
            | HookError::Secret { .. }
            | HookError::NotLeader { .. } => false,
            _ => true,
        }
    }
}

/// Delivers hooks. Cheap to clone: one HTTP connection pool for all rollouts.
#[derive(Clone)]
pub struct HookRunner {
    http: reqwest::Client,
    /// First retry delay; tests shorten it.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl HookRunner {
    pub fn new() -> Result<HookRunner, reqwest::Error> {
        Ok(HookRunner {
            http: outbound::client_builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        })
    }

    /// Delivers one hook with its retries. `None` (no hook configured) succeeds at once: a rule
    /// may watch and decide without acting. Returns the number of attempts it took.
    pub async fn call(
        &self,
        spec: Option<&HookSpec>,
        payload: &HookPayload,
    ) -> Result<u32, HookError> {
        let (attempts, result) = self.deliver(spec, payload).await;
        result.map(|()| attempts)
    }

    /// Like [`HookRunner::call`], but also says how many attempts a failed delivery took, for
    /// the delivery log.
    pub async fn deliver(
        &self,
        spec: Option<&HookSpec>,
        payload: &HookPayload,
    ) -> (u32, Result<(), HookError>) {
        self.deliver_fenced(spec, payload, None).await
    }

    /// Like [`HookRunner::deliver`] for a replica of a shared store: each attempt is sent only
    /// while `fence`'s term is held, and carries its epoch ([`EPOCH_HEADER`], or
    /// `CANARYD_LEADER_EPOCH` for a command), so a receiver can refuse a deposed leader too.
    pub async fn deliver_fenced(
        &self,
        spec: Option<&HookSpec>,
        payload: &HookPayload,
        fence: Option<Fence>,
    ) -> (u32, Result<(), HookError>) {
        let Some(spec) = spec else {
            tracing::info!(target: "hook.call", hook = payload.event.as_str(), rollout = %payload.rollout_id, "no hook configured; nothing to call");
            return (0, Ok(()));
        };
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(spec.retries as usize)
            .with_jitter();
        let result = (|| async {
            if let Some(f) = fence.as_ref().filter(|f| !f.holds()) {
                return Err(HookError::NotLeader { epoch: f.epoch });
            }
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let epoch = fence.as_ref().map(|f| f.epoch);
            let outcome = self.attempt(spec, payload, epoch).await;
            let label = if outcome.is_ok() { "success" } else { "error" };
            metrics::counter!("canaryd_hook_calls_total", "hook" => payload.event.as_str(), "outcome" => label)
                .increment(1);
            outcome
        })
        .retry(backoff)
        .when(HookError::retryable)
        .notify(|e, after| {
            tracing::warn!(target: "hook.call", hook = payload.event.as_str(), rollout = %payload.rollout_id, error = %e, retry_in = ?after, "hook attempt failed; retrying");
        })
        .await;
        let n = attempts.load(std::sync::atomic::Ordering::Relaxed);
        match &result {
            Ok(()) => {
                tracing::info!(target: "hook.call", hook = payload.event.as_str(), rollout = %payload.rollout_id, weight = payload.weight, attempts = n, "hook delivered")
            }
            Err(e) => {
                tracing::error!(target: "hook.call", hook = payload.event.as_str(), rollout = %payload.rollout_id, attempts = n, error = %e, "hook not delivered")
            }
        }
        (n, result)
    }

    async fn attempt(
        &self,
        spec: &HookSpec,
        payload: &HookPayload,
        epoch: Option<u64>,
    ) -> Result<(), HookError> {
        match (&spec.url, &spec.command) {
            (Some(url), _) => {
                self.post(
                    url,
                    spec.timeout,
                    spec.secret_file.as_deref(),
                    payload,
                    epoch,
                )
                .await
            }
            (None, Some(argv)) => run_command(argv, spec.timeout, payload, epoch).await,
            (None, None) => Err(HookError::Template(
                "hook has neither url nor command".into(),
            )),
        }
    }

    async fn post(
        &self,
        url: &str,
        timeout: Duration,
        secret_file: Option<&Path>,
        payload: &HookPayload,
        epoch: Option<u64>,
    ) -> Result<(), HookError> {
        let body = serde_json::to_vec(payload)
            .map_err(|e| HookError::Template(format!("cannot encode the payload: {e}")))?;
        let mut request = self
            .http
            .post(url)
            .timeout(timeout)
            .header("Idempotency-Key", payload.idempotency_key())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(path) = secret_file {
            request = request.header(SIGNATURE_HEADER, signature(&read_key(path)?, &body));
        }
        if let Some(e) = epoch {
            request = request.header(EPOCH_HEADER, e.to_string());
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| HookError::Transport {
                url: redact::url(url),
                message: if e.is_timeout() {
                    format!("no answer within {timeout:?}")
                } else {
                    redact::text(&e.to_string())
                },
            })?;
        if response.status().is_success() {
            Ok(())
        } else if let Some(redirect) = Redirect::of(&response) {
            Err(HookError::Redirect {
                url: redact::url(url),
                redirect,
            })
        } else {
            Err(HookError::Status {
                url: redact::url(url),
                status: response.status().as_u16(),
            })
        }
    }
}

/// Lets a receiver check that a hook came from canaryd and was not altered on the way.
pub const SIGNATURE_HEADER: &str = "X-Canaryd-Signature";

/// `sha256=<hex>` of HMAC-SHA256(key, body), the GitHub-webhook convention receivers know.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Read at each call, so a rotated key takes effect without a reload and the key is never kept
/// in a rule (which the API shows) or in a log line.
fn read_key(path: &Path) -> Result<Vec<u8>, HookError> {
    let text = std::fs::read_to_string(path).map_err(|e| HookError::Secret {
        path: path.display().to_string(),
        message: e.kind().to_string(),
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(HookError::Secret {
            path: path.display().to_string(),
            message: "file is empty".into(),
        });
    }
    Ok(key.as_bytes().to_vec())
}

fn hook_vars(payload: &HookPayload) -> BTreeMap<String, String> {
    [
        ("event", payload.event.as_str().to_string()),
        ("rollout", payload.rollout_id.clone()),
        ("rule", payload.rule.clone()),
        ("version", payload.version.clone()),
        ("weight", payload.weight.to_string()),
        ("reason", payload.reason.clone().unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn run_command(
    argv: &[String],
    timeout: Duration,
    payload: &HookPayload,
    epoch: Option<u64>,
) -> Result<(), HookError> {
    let vars = hook_vars(payload);
    let rendered: Vec<String> = argv
        .iter()
        .map(|a| templates::render(a, &vars).map_err(|e| HookError::Template(e.to_string())))
        .collect::<Result<_, _>>()?;
    let program = rendered.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&rendered[1..])
        .env("CANARYD_EVENT", payload.event.as_str())
        .env("CANARYD_ROLLOUT", &payload.rollout_id)
        .env("CANARYD_RULE", &payload.rule)
        .env("CANARYD_VERSION", &payload.version)
        .env("CANARYD_WEIGHT", payload.weight.to_string())
        .env("CANARYD_REASON", payload.reason.clone().unwrap_or_default())
        .env("CANARYD_IDEMPOTENCY_KEY", payload.idempotency_key())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(e) = epoch {
        cmd.env("CANARYD_LEADER_EPOCH", e.to_string());
    }
    let child = cmd.spawn().map_err(|e| HookError::Spawn {
        program: program.clone(),
        message: e.to_string(),
    })?;
    // Dropping the future on timeout drops the child, and kill_on_drop kills it.
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(HookError::Timeout { program, timeout }),
        Ok(Err(e)) => Err(HookError::Spawn {
            program,
            message: e.to_string(),
        }),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(HookError::Exit {
            program,
            code: out.status.code(),
            // A command's own error may name a URL with its credentials (curl does).
            stderr: redact::text(
                &String::from_utf8_lossy(&out.stderr)
                    .chars()
                    .take(500)
                    .collect::<String>(),
            ),
        }),
    }
}
