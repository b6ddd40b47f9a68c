//! Alertmanager webhook bodies (`POST /api/v1/alertmanager`) through the real router, against a
//! rule with `rollback_on` and `pause_on` matchers: never a panic or a 5xx.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

#[path = "../fuzz_app.rs"]
mod fuzz_app;

fuzz_target!(|data: &[u8]| {
    let app = fuzz_app::app();
    let request = Request::post("/api/v1/alertmanager")
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
        .expect("request");
    let status = app.block_on(request);
    assert!(
        status.is_success() || status.is_client_error(),
        "{status} for {:?}",
        String::from_utf8_lossy(data)
    );
});
