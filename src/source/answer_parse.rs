//! Reading a Prometheus API answer's JSON into what the judge takes: the envelope
//! (`parse_response`), a range query's one series with its times (`series`), an observation
//! (`observe`). Pure functions of bytes and data, public so the parser can be fuzzed and recorded
//! answers tested without a server (re-exported by `prometheus.rs`, where callers find them).

use prometheus_http_query::error::PrometheusError;
use prometheus_http_query::response::Data;
use serde::Deserialize;

use crate::judge::Observation;
use crate::judge::observation::{Point, Points, Series};

#[derive(Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Envelope {
    Success { data: Data },
    Error(PrometheusError),
}

/// Parses one answer of the Prometheus HTTP API (`{"status": ..., "data": ...}`): public so the
/// parser can be fuzzed and recorded answers tested without a server.
pub fn parse_response(http_status: u16, body: &[u8]) -> Result<Data, (&'static str, String)> {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope::Success { data }) => Ok(data),
        Ok(Envelope::Error(e)) => Err(("query", format!("Prometheus rejected the query: {e}"))),
        Err(e) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            let text: String = text.chars().filter(|c| !c.is_control()).collect();
            Err((
                "other",
                format!(
                    "Prometheus answered HTTP {http_status} with no usable JSON ({e}): {text:?}"
                ),
            ))
        }
    }
}

/// The points of a range query's single series, with their times.
pub fn series(data: &Data) -> Series {
    let point = |s: &prometheus_http_query::response::Sample| Point {
        at: s.timestamp(),
        value: s.value(),
    };
    match data {
        Data::Matrix(m) => match m.len() {
            0 => Series::Points {
                points: Points::default(),
            },
            1 => Series::Points {
                points: m[0].samples().iter().map(point).collect(),
            },
            n => Series::Ambiguous { series: n },
        },
        Data::Vector(v) => match v.len() {
            0 => Series::Points {
                points: Points::default(),
            },
            1 => Series::Points {
                points: vec![point(v[0].sample())].into(),
            },
            n => Series::Ambiguous { series: n },
        },
        Data::Scalar(s) => Series::Points {
            points: vec![point(s)].into(),
        },
    }
}

/// Turns a query result into an observation; public so recorded JSON can be tested offline.
pub fn observe(data: &Data) -> Observation {
    match data {
        Data::Matrix(series) => match series.len() {
            0 => Observation::Empty { dropped: 0 },
            1 => Observation::from_values(series[0].samples().iter().map(|s| s.value())),
            n => Observation::Ambiguous { series: n },
        },
        Data::Vector(series) => match series.len() {
            0 => Observation::Empty { dropped: 0 },
            1 => Observation::from_values([series[0].sample().value()]),
            n => Observation::Ambiguous { series: n },
        },
        Data::Scalar(s) => Observation::from_values([s.value()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Data {
        #[derive(serde::Deserialize)]
        struct Body {
            data: Data,
        }
        serde_json::from_str::<Body>(json).unwrap().data
    }

    #[test]
    fn one_series_gives_its_finite_values_in_order() {
        let d = parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"0.1"],[2,"NaN"],[3,"0.3"],[4,"+Inf"]]}]}}"#,
        );
        assert_eq!(
            observe(&d),
            Observation::Samples {
                values: vec![0.1, 0.3],
                dropped: 2
            }
        );
    }

    #[test]
    fn empty_result_is_empty_not_zero() {
        let d = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#);
        assert_eq!(observe(&d), Observation::Empty { dropped: 0 });
    }

    #[test]
    fn all_nan_is_empty() {
        let d = parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"NaN"],[2,"NaN"]]}]}}"#,
        );
        assert_eq!(observe(&d), Observation::Empty { dropped: 2 });
    }

    #[test]
    fn several_series_are_ambiguous() {
        let d = parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[1,"1"]]},{"metric":{"a":"2"},"values":[[1,"2"]]}]}}"#,
        );
        assert_eq!(observe(&d), Observation::Ambiguous { series: 2 });
    }
}
