//! Property tests on what comes from outside: Prometheus responses, API request bodies and query
//! templates. Whatever arrives, canaryd answers with a typed result or a 4xx JSON error; it never
//! panics and never answers 5xx for a client's mistake.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use canaryd::api::{AppState, router};
use canaryd::rules::templates;
use canaryd::source::prometheus::observe;
use canaryd::store::MemoryStore;
use prometheus_http_query::response::Data;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::offline;

/// Arbitrary JSON, shallow enough to stay fast.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9 .+eE-]{0,12}".prop_map(Value::from),
        prop_oneof![Just("NaN"), Just("+Inf"), Just("-Inf"), Just("1e308")].prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metric".to_string()),
                    Just("values".to_string()),
                    Just("value".to_string()),
                    Just("rule".to_string()),
                    Just("version".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Prometheus-shaped results: the right envelope around arbitrary series.
fn prometheus_data() -> impl Strategy<Value = Value> {
    let sample = (
        any::<f64>(),
        prop_oneof![
            any::<f64>().prop_map(|f| f.to_string()),
            Just("NaN".to_string()),
            Just("+Inf".to_string()),
            "[0-9.]{0,5}",
        ],
    )
        .prop_map(|(t, v)| json!([t, v]));
    let series = (prop::collection::vec(sample.clone(), 0..6), sample).prop_map(
        |(values, value)| json!({"metric": {"job": "x"}, "values": values, "value": value}),
    );
    (prop_oneof![Just("matrix"), Just("vector"), Just("scalar")], prop::collection::vec(series, 0..3), json_value())
        .prop_map(|(kind, series, other)| match kind {
            "scalar" => json!({"resultType": "scalar", "result": series.first().map(|s| s["value"].clone()).unwrap_or(other)}),
            k => json!({"resultType": k, "result": series}),
        })
}

fn app() -> axum::Router {
    let controller = offline::controller(
        Vec::new(),
        Arc::new(MemoryStore::default()),
        std::time::Duration::from_millis(200),
    );
    router(AppState {
        controller,
        metrics: None,
        api_token: None,
        api_tokens: Default::default(),
        reports: canaryd::controller::report::ReportBook::default(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_prometheus_result_that_parses_is_observed_without_panicking(v in prometheus_data()) {
        if let Ok(data) = serde_json::from_value::<Data>(v) {
            let _ = observe(&data);
        }
    }

    #[test]
    fn templates_never_panic(t in "[{}%a-z_ .|()\"'#-]{0,40}", k in "[a-z_]{1,8}", val in ".{0,12}") {
        let vars: BTreeMap<String, String> = [(k, val)].into_iter().collect();
        let _ = templates::check(&t, &vars);
        let _ = templates::render(&t, &vars);
    }

    #[test]
    fn api_answers_any_body_with_a_4xx_json_error(
        body in prop_oneof![json_value().prop_map(|v| v.to_string().into_bytes()), prop::collection::vec(any::<u8>(), 0..64)],
        route in prop_oneof![
            Just("/api/v1/rollouts"), Just("/api/v1/rollouts/ro-x/abort"), Just("/api/v1/rollouts/ro-x/pause"),
            Just("/api/v1/rollouts/ro-x/bogus"), Just("/api/v1/alertmanager")
        ],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (status, text) = rt.block_on(async {
            let req = Request::post(route).header("content-type", "application/json").body(Body::from(body)).expect("request");
            let resp = app().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap_or_default();
            (status, String::from_utf8_lossy(&bytes).to_string())
        });
        prop_assert!(status.is_client_error(), "{route}: {status} {text}");
        prop_assert!(status != StatusCode::OK);
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        prop_assert!(parsed["error"].is_string(), "{route}: {status} not a JSON error: {text}");
    }
}
