//! The HTTP API (axum): health, metrics, rules and rollouts.
//!
//! Handlers translate HTTP to controller calls and back; they decide nothing themselves.

mod alertmanager;
mod error;
pub mod forward;
mod rollouts;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

pub use error::ApiError;

use crate::controller::Controller;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub controller: Controller,
    pub metrics: Option<PrometheusHandle>,
    pub api_token: Option<Arc<str>>,
    /// Every accepted token by name (the single token as `default`): controls record who.
    pub api_tokens: Arc<tokens::Tokens>,
    /// Deployment records, live and from `reports_dir`.
    pub reports: crate::controller::report::ReportBook,
}

/// Request bodies are small JSON documents; anything larger is a mistake or an attack.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Alertmanager's webhook carries every alert of a group, each with its labels, annotations and
/// links: a group of 120 alerts is already past 64 KiB, and the big incidents `rollback_on` is
/// for have hundreds. 8 MiB holds thousands, and is still a bound.
pub const ALERTMANAGER_BODY_LIMIT: usize = 8 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let mutating = Router::new()
        .route("/api/v1/rollouts", post(rollouts::create))
        .route("/api/v1/rollouts/{id}/{action}", post(rollouts::act))
        .route(
            "/api/v1/alertmanager",
            // The innermost limit wins over the router-wide one below.
            post(alertmanager::receive).layer(DefaultBodyLimit::max(ALERTMANAGER_BODY_LIMIT)),
        )
        // Inner layer: a follower forwards to the leader once the token was checked here.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            forward::to_leader,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route(
            "/health/live",
            get(|| async { axum::Json(json!({"status": "alive"})) }),
        )
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/rollouts", get(rollouts::list))
        .route("/api/v1/rollouts/{id}", get(rollouts::show))
        .route("/api/v1/rollouts/{id}/report", get(rollouts::report))
        .route("/api/v1/rollouts/{id}/history", get(rollouts::history))
        .merge(mutating)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Bearer token on mutating routes, compared in constant time so timing leaks nothing.
async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    if !state.api_tokens.is_empty() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let Some(name) = state.api_tokens.identify(given.trim()) else {
            return ApiError::Unauthorized.into_response();
        };
        request.extensions_mut().insert(tokens::Actor(name));
        return next.run(request).await;
    }
    let who = if state.api_token.is_some() {
        "default"
    } else {
        "anonymous"
    };
    request.extensions_mut().insert(tokens::Actor(who.into()));
    if let Some(expected) = &state.api_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq::constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn ready(State(state): State<AppState>) -> Response {
    let mut failing = Vec::new();
    let rules = state.controller.rules();
    if rules.is_empty() {
        failing.push("rules: no rule loaded".to_string());
    }
    if let Err(e) = state.controller.source().ping().await {
        failing.push(format!("prometheus: {e}"));
    }
    if let Err(e) = state.controller.store_health() {
        failing.push(format!("store: {e}"));
    }
    // Both roles are ready: a follower serves every read and forwards every write.
    let epoch = state.controller.leadership().epoch();
    let role = if epoch.is_some() {
        "leader"
    } else {
        "follower"
    };
    if failing.is_empty() {
        axum::Json(json!({"status": "ready", "rules": rules.len(), "role": role, "epoch": epoch}))
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "not_ready", "failing": failing, "role": role, "epoch": epoch}),
            ),
        )
            .into_response()
    }
}

/// The exposition, streamed a chunk at a time ([`crate::telemetry::Exposition`]): at 10,000
/// rollouts the whole text is ~29 MB, and Prometheus asks for it every 15–60 s.
async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(h) => {
            let chunks = crate::telemetry::Exposition::new(h.render())
                .map(Ok::<String, std::convert::Infallible>);
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
            )
                .into_response()
        }
        None => ApiError::NotFound("metrics are not enabled".into()).into_response(),
    }
}

async fn rules(State(state): State<AppState>) -> Response {
    let rules = state.controller.rules();
    let list: Vec<serde_json::Value> = rules
        .values()
        .map(|r| {
            // Hook and probe URLs serialize redacted (`rules::schema`): the API shows where a
            // hook goes, never its credentials.
            let spec = serde_json::to_value(&r.spec).unwrap_or_default();
            json!({"name": r.name(), "path": r.path, "spec": spec})
        })
        .collect();
    axum::Json(json!({ "rules": list })).into_response()
}
