//! Prometheus query answers (the `data` object of `/api/v1/query` and `/api/v1/query_range`),
//! parsed as canaryd's client parses them and folded into the observation the judge reads. A
//! Prometheus, or anything claiming to be one, may answer anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prometheus_http_query::response::PromqlResult;

fuzz_target!(|data: &[u8]| {
    if let Ok(result) = serde_json::from_slice::<PromqlResult>(data) {
        let observation = canaryd::source::prometheus::observe(result.data());
        let _ = format!("{observation:?}");
    }
});
