//! The web view: the rollout list at `/`, one page per rollout at `/rollouts/{id}`, and a live
//! feed at `/events` (server-sent events from the controller's update stream) that tells open
//! pages to refresh.
//!
//! Pages are rendered on the server (`pages`, `rollout_page`, `metrics_view`, SVG charts from
//! `chart`); the only script is `static/app.js`, served from this binary, which refreshes the
//! live part of a page and sends the buttons' controls to the API with the token the user typed.
//! Nothing is fetched from elsewhere, and a strict Content-Security-Policy says so to the browser.
//!
//! Architecture Invariant: the web view decides nothing and changes nothing by itself. It reads
//! what the API reads; every control goes through the API's authenticated routes.

mod chart;
mod metrics_view;
pub mod pages;
pub mod rollout_page;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, Semaphore};

use crate::api::AppState;
use crate::controller::ControlError;

/// Pages load no code, style, image or connection from anywhere but this origin, run no inline
/// script, apply no inline style, submit no form and cannot be framed: an escaped value that was
/// somehow not escaped still could not run.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self'; connect-src 'self'; form-action 'none'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// Ticks drawn on a rollout's page: at a 10 s interval, more than five hours.
pub const CHART_TICKS: usize = 2000;

/// Open live feeds at once. Each holds a connection and a broadcast receiver; more are refused
/// (503) and the page falls back to its slow poll.
pub const MAX_FEEDS: usize = 64;
static FEEDS: Semaphore = Semaphore::const_new(MAX_FEEDS);

/// A feed ends after this long; the browser's EventSource reconnects by itself, so no
/// connection is held forever by a tab left open.
const FEED_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Feeds end when the daemon stops: a graceful shutdown waits for every open response, and a
/// feed is a response that never finishes by itself, so one open tab would hold SIGTERM for
/// [`FEED_LIFETIME`].
static CLOSING: Notify = Notify::const_new();
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Ends every open live feed and refuses new ones. `serve` calls it when its shutdown signal
/// arrives, before the HTTP server waits for open responses.
pub fn close_feeds() {
    CLOSED.store(true, Ordering::SeqCst);
    CLOSING.notify_waiters();
}

async fn feeds_closed() {
    // Registered before the flag is read, so a close between the two is not missed.
    let notified = CLOSING.notified();
    if CLOSED.load(Ordering::SeqCst) {
        return;
    }
    notified.await;
}

const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

/// The daemon's whole HTTP surface: the API's routes and these pages. Composed here, not in
/// `api`, so the pages may read the API's state without the two rooms importing each other.
pub fn app(state: AppState) -> axum::Router {
    crate::api::router(state.clone()).merge(router().with_state(state))
}

/// The web view's routes.
fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list))
        .route("/rollouts/{id}", get(rollout))
        .route("/events", get(events))
        .route("/static/app.js", get(|| asset("text/javascript", APP_JS)))
        .route("/static/app.css", get(|| asset("text/css", APP_CSS)))
        .layer(axum::middleware::map_response(secure))
}

/// Headers every web response carries.
async fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn error_page(e: ControlError) -> Response {
    let status = match e {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Store(_) | ControlError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = format!(
        "<h1>{}</h1><p class=\"reason\">{}</p><p><a href=\"/\">All rollouts</a></p>",
        status.as_u16(),
        crate::html::escape(&e.to_string())
    );
    (status, Html(pages::layout("Error", "", &body))).into_response()
}

async fn list(State(state): State<AppState>) -> Response {
    let all = match state.controller.list() {
        Ok(all) => all,
        Err(e) => return error_page(e),
    };
    let rules = state.controller.rules();
    let rows: Vec<pages::Row<'_>> = all
        .iter()
        .map(|r| pages::Row {
            rollout: r,
            steps: rules.get(&r.rule).map_or(0, |rule| rule.steps().len()),
        })
        .collect();
    Html(pages::list(&rows, Utc::now())).into_response()
}

async fn rollout(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let read = state
        .controller
        .get(&id)
        .and_then(|r| Ok((r, state.controller.history(&id, CHART_TICKS)?)));
    let (r, (ticks, deliveries)) = match read {
        Ok(x) => x,
        Err(e) => return error_page(e),
    };
    let weights: Vec<u32> = state
        .controller
        .rules()
        .get(&r.rule)
        .map(|rule| rule.steps().map(|s| s.weight).collect())
        .unwrap_or_default();
    let report = state.reports.get(&id);
    let page = rollout_page::RolloutPage {
        rollout: &r,
        weights: &weights,
        ticks: &ticks,
        deliveries: &deliveries,
        steps: report.as_ref().map(|rep| rep.steps.as_slice()),
        now: Utc::now(),
    };
    Html(rollout_page::render(&page)).into_response()
}

/// `update` events carrying the id of the rollout that changed (`*` after the feed fell behind:
/// anything may have changed). Pages re-read themselves; the feed carries no rollout data, so it
/// needs no token and shows nothing the pages do not.
async fn events(State(state): State<AppState>) -> Response {
    if CLOSED.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let Ok(permit) = FEEDS.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live feeds open; pages fall back to polling",
        )
            .into_response();
    };
    let rx = state.controller.subscribe();
    let stream = futures_util::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        let id = match rx.recv().await {
            Ok(u) => u.rollout.id.clone(),
            Err(RecvError::Lagged(_)) => "*".to_string(),
            Err(RecvError::Closed) => return None,
        };
        let event = Event::default().event("update").data(id);
        Some((Ok::<_, Infallible>(event), (rx, permit)))
    })
    .take_until(async {
        tokio::select! {
            _ = tokio::time::sleep(FEED_LIFETIME) => {}
            _ = feeds_closed() => {}
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
