//! Prometheus query answers (the whole body of `/api/v1/query` and `/api/v1/query_range`), read
//! by the same function the client uses, then turned into both shapes the judge reads: a range
//! series with its points' times, and an observation. A Prometheus, or anything claiming to be
//! one, may answer anything.
#![no_main]

use canaryd::source::prometheus::{observe, parse_response, series};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_response(200, data) {
        Ok(parsed) => {
            let _ = format!("{:?} {:?}", series(&parsed), observe(&parsed));
        }
        Err((kind, message)) => {
            let _ = (kind, message.len());
        }
    }
});
