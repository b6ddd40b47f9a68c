//! `POST /api/v1/rollouts` bodies through the real router: whatever the body, the answer is a
//! 2xx or a 4xx, never a panic or a 5xx.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

#[path = "../fuzz_app.rs"]
mod fuzz_app;

fuzz_target!(|data: &[u8]| {
    let app = fuzz_app::app();
    let request = Request::post("/api/v1/rollouts")
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
        .expect("request");
    let status = app.block_on(request);
    assert!(
        status.is_success() || status.is_client_error() || status.as_u16() == 503,
        "{status} for {:?}",
        String::from_utf8_lossy(data)
    );
});
