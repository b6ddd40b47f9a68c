//! A follower answers a mutating call by forwarding it to the leader, so the caller gets the
//! leader's answer whichever replica the load balancer picked.
//!
//! The leader's address comes from the lease row (each replica advertises its `external_url`).
//! A forwarded request is marked, and a follower never forwards a marked one again: two
//! replicas that each believe the other leads answer 503 instead of bouncing the call.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ALERTMANAGER_BODY_LIMIT, ApiError, AppState};

/// Marks a call a follower forwarded.
pub const FORWARDED_HEADER: &str = "Canaryd-Forwarded";

fn client() -> Option<&'static reqwest::Client> {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            crate::outbound::client_builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(30))
                .build()
                .ok()
        })
        .as_ref()
}

pub async fn to_leader(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let lead = state.controller.leadership();
    if !lead.replicated() || lead.is_leader() {
        return next.run(request).await;
    }
    if request.headers().contains_key(FORWARDED_HEADER) {
        return ApiError::Unavailable("this replica does not lead either; retry shortly".into())
            .into_response();
    }
    let (Some(base), Some(client)) = (lead.leader_url(), client()) else {
        return ApiError::Unavailable("no leader elected yet; retry shortly".into())
            .into_response();
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ALERTMANAGER_BODY_LIMIT).await else {
        return ApiError::TooLarge(ALERTMANAGER_BODY_LIMIT).into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut forward = client
        .request(parts.method.clone(), &url)
        .header(FORWARDED_HEADER, "1")
        .body(bytes);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            forward = forward.header(name, v.clone());
        }
    }
    let answer = match forward.send().await {
        Ok(a) => a,
        Err(e) => {
            return ApiError::Unavailable(format!(
                "the leader at {} did not answer: {}",
                crate::redact::url(&base),
                crate::redact::text(&e.to_string())
            ))
            .into_response();
        }
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let Ok(body) = answer.bytes().await else {
        return ApiError::Unavailable("the leader's answer was cut off".into()).into_response();
    };
    let mut response = (status, body).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}
