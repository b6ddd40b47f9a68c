//! `/api/v1/rollouts`: start, list, show and steer rollouts.

use axum::extract::rejection::QueryRejection;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::tokens::Actor;
use super::{ApiError, AppState};
use crate::controller::StartOptions;
use crate::rollout::controls::Control;
use crate::rollout::{Event, Rollout};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRollout {
    pub rule: String,
    pub version: String,
    /// `{"reversible": bool, "id": "..."}`: what a rollback must do about the database.
    #[serde(default)]
    pub migration: Option<crate::rollout::lifecycle::Migration>,
    /// Ignore deploy windows; a human approves the first step (`rollout::controls`).
    #[serde(default)]
    pub emergency: bool,
}

/// The body of a control: both fields optional, and so is the body itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    #[serde(default)]
    pub reason: Option<String>,
    /// `promote` only: skip every remaining step and analysis.
    #[serde(default)]
    pub full: bool,
}

/// A reason is a sentence for the audit trail, not a document.
pub const REASON_MAX_LEN: usize = 500;

/// Reasons reach logs, reports and chat: bounded here; each output escapes them (text logs
/// escape control characters, the CLI shows them as U+FFFD, Markdown tables flatten lines).
pub fn check_reason(reason: &str) -> Result<(), String> {
    let len = reason.chars().count();
    if len > REASON_MAX_LEN {
        return Err(format!(
            "reason is {len} characters long; at most {REASON_MAX_LEN} are allowed"
        ));
    }
    Ok(())
}

/// The rollout as users see it: its state plus where it stands in its plan.
pub fn view(state: &AppState, r: &Rollout) -> serde_json::Value {
    let rules = state.controller.rules();
    let steps: Vec<u32> = rules
        .get(&r.rule)
        .map(|rule| rule.steps().map(|s| s.weight).collect())
        .unwrap_or_default();
    // How far the current step's hold is, for `status --watch` and the web view's bar.
    let hold = rules
        .get(&r.rule)
        .and_then(|rule| rule.steps().nth(r.step).map(|s| s.hold()))
        .zip(r.step_started_at)
        .filter(|_| r.phase.is_watching())
        .map(|(total, started)| {
            let elapsed = (chrono::Utc::now() - started).num_seconds().max(0);
            json!({"elapsed_secs": elapsed, "total_secs": total.as_secs()})
        });
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("steps".into(), json!(steps));
        obj.insert("hold".into(), json!(hold));
        obj.insert(
            "checks".into(),
            json!(
                r.last_tick
                    .as_ref()
                    .map(|t| t.checks.clone())
                    .unwrap_or_default()
            ),
        );
        obj.insert(
            "score".into(),
            json!(r.last_tick.as_ref().map(|t| t.score.clone())),
        );
    }
    v
}

/// The longest version accepted: image tags stop at 128 characters too.
pub const VERSION_MAX_LEN: usize = 128;

/// A version is a name, not text: letters, digits and `.`, `_`, `+`, `-`, 1 to
/// [`VERSION_MAX_LEN`] characters — what image tags, git tags and semver with build metadata use.
/// It reaches queries, hook bodies, command arguments, log lines and reports; refusing everything
/// else at the door keeps each of those from having to trust it. (Queries escape it anyway.)
pub fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty() {
        return Err("version must not be empty".into());
    }
    let len = version.chars().count();
    if len > VERSION_MAX_LEN {
        return Err(format!(
            "version is {len} characters long; at most {VERSION_MAX_LEN} are allowed"
        ));
    }
    if let Some((i, c)) = version
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        // `{c:?}` prints a control character as an escape, never raw.
        return Err(format!(
            "version has {c:?} at position {}; allowed are letters, digits, '.', '_', '+' and '-'",
            i + 1
        ));
    }
    Ok(())
}

pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateRollout>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(super::BODY_LIMIT)
        } else {
            ApiError::BadRequest(format!("invalid request body: {}", e.body_text()))
        }
    })?;
    check_version(&req.version).map_err(ApiError::BadRequest)?;
    if let Some(m) = &req.migration
        && !m.id.is_empty()
    {
        // The id reaches hook bodies, alerts and reports: a name, like a version.
        check_version(&m.id).map_err(|e| ApiError::BadRequest(format!("migration id: {e}")))?;
    }
    let opts = StartOptions {
        emergency: req.emergency,
        migration: req.migration,
        ..StartOptions::default()
    };
    let r = state
        .controller
        .start_with(&req.rule, &req.version, opts)
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, &r))).into_response())
}

pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let all: Vec<serde_json::Value> = state
        .controller
        .list()?
        .iter()
        .map(|r| view(&state, r))
        .collect();
    Ok(Json(json!({ "rollouts": all })).into_response())
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = state.controller.get(&id)?;
    Ok(Json(view(&state, &r)).into_response())
}

/// `abort`, `pause`, `resume`, `promote` (`{"full": true}`: to the end), `approve`, `retry`,
/// each with an optional `{"reason": "..."}`; an empty body is no reason. Recorded with the
/// name of the token that sent it.
pub async fn act(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    actor: Option<Extension<Actor>>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(super::BODY_LIMIT)
        } else {
            ApiError::BadRequest(format!("cannot read request body: {}", e.body_text()))
        }
    })?;
    let req: ControlBody = if body.iter().all(u8::is_ascii_whitespace) {
        ControlBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?
    };
    let reason = req.reason.filter(|r| !r.trim().is_empty());
    if let Some(r) = &reason {
        check_reason(r).map_err(ApiError::BadRequest)?;
    }
    let by = actor.map_or_else(|| "anonymous".to_string(), |Extension(Actor(n))| n);
    if req.full && action != "promote" {
        return Err(ApiError::BadRequest(
            "\"full\" applies to promote only".into(),
        ));
    }
    let control = match action.as_str() {
        "abort" => Control::Abort,
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "promote" if req.full => Control::PromoteFull,
        "promote" => Control::Promote,
        "approve" => Control::Approve,
        "retry" => {
            let r = state.controller.retry(&id, by, reason).await?;
            return Ok((StatusCode::CREATED, Json(view(&state, &r))).into_response());
        }
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown action {other:?}; use abort, pause, resume, promote, approve or retry"
            )));
        }
    };
    state.controller.get(&id)?;
    let event = Event::Control {
        control,
        by,
        reason,
    };
    let r = state.controller.send(&id, event).await?;
    Ok(Json(view(&state, &r)).into_response())
}

/// The deployment record (JSON); the same data as the Markdown file in `reports_dir`. Live
/// rollouts answer their record so far (`outcome: in_progress`).
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state.reports.get(&id) {
        Some(r) => Ok(Json(r).into_response()),
        None => {
            state.controller.get(&id)?;
            Err(ApiError::NotFound(format!(
                "no report for rollout {id:?} yet: reports are recorded from this daemon's start"
            )))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// How many of the latest ticks (default 100, at most 10 000).
    pub limit: Option<usize>,
}

/// Every judged tick (latest `limit`, oldest first) and every hook delivery of a rollout.
pub async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    let (ticks, deliveries) = state.controller.history(&id, limit)?;
    let controls = state.controller.get(&id)?.controls;
    Ok(
        Json(
            json!({"id": id, "ticks": ticks, "hook_deliveries": deliveries, "controls": controls}),
        )
        .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::check_version;

    #[test]
    fn versions_are_names() {
        for ok in [
            "v1",
            "v2.0.1",
            "1.2.3+build.7",
            "sha-0a1b2c",
            "release_2026-11-30",
        ] {
            assert_eq!(check_version(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_version(&"a".repeat(128)), Ok(()));
        for bad in [
            "",
            " ",
            "v1 ",
            "x\"}[10s])) * 0 or vector(0) #",
            "v1\nforged line",
            "v1\u{7}",
            "a/b",
            "café",
        ] {
            assert!(check_version(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_version(&"a".repeat(129)).is_err());
        let e = check_version("v1\nx").unwrap_err();
        assert!(e.contains("'\\n'") && !e.contains('\n'), "{e}");
    }
}
