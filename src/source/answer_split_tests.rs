//! The streaming split gives what parsing the whole answer and splitting it gave, on the same
//! bytes: canonical answers split alike, and every other body (malformed, truncated, error,
//! another shape) is left to the old parser so its error is the one it always was.

use super::*;
use crate::source::batch_split::split;
use crate::source::prometheus::parse_response;

fn labels() -> Vec<String> {
    vec!["service".into(), "track".into()]
}

fn key(service: &str, track: &str) -> Vec<String> {
    vec![service.into(), track.into()]
}

fn wanted<'a>(labels: &'a [String], keys: &'a [Vec<String>], extra: Extra) -> Wanted<'a> {
    Wanted {
        labels,
        keys,
        extra,
    }
}

/// What the old path gives: the whole answer parsed, then split (`Err` is a parse failure).
fn old(body: &str, w: Wanted<'_>) -> Result<Split, (&'static str, String)> {
    parse_response(200, body.as_bytes()).map(|d| split(&d, w.labels, w.keys, w.extra))
}

/// One series: its labels, then its `[t, "v"]` samples.
type Raw<'a> = (&'a [(&'a str, &'a str)], &'a [(f64, &'a str)]);

/// Series as JSON.
fn answer(series: &[Raw<'_>]) -> String {
    let result: Vec<String> = series
        .iter()
        .map(|(labels, samples)| {
            let metric: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{}:{}", json(k), json(v)))
                .collect();
            let values: Vec<String> = samples
                .iter()
                .map(|(t, v)| format!("[{t},{}]", json(v)))
                .collect();
            format!(
                r#"{{"metric":{{{}}},"values":[{}]}}"#,
                metric.join(","),
                values.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        result.join(",")
    )
}

fn json(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Both ways agree, and the streaming one read the body itself (`Some`).
fn assert_alike(body: &str, w: Wanted<'_>) -> Split {
    let new = split_json(body.as_bytes(), w);
    let old = old(body, w).unwrap_or_else(|e| panic!("the old parser refused {body}: {e:?}"));
    let Some(new) = new else {
        panic!("a canonical answer was not read by the streaming split: {body}")
    };
    assert_eq!(format!("{new:?}"), format!("{old:?}"), "{body}");
    // The same answer gzip-compressed, split as it is inflated, gives the same.
    let streamed = streamed(body, w).expect("the gzip answer is read too");
    assert_eq!(format!("{streamed:?}"), format!("{new:?}"), "{body}");
    new
}

/// `body` gzip-compressed, split through the decoder as a gzip answer is.
fn streamed(body: &str, w: Wanted<'_>) -> Option<Split> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body.as_bytes()).expect("compress");
    let gz = e.finish().expect("compress");
    split_reader(
        std::io::BufReader::new(flate2::bufread::GzDecoder::new(gz.as_slice())),
        w,
    )
}

fn points(s: &Series) -> Vec<(f64, f64)> {
    match s {
        Series::Points { points } => points.iter().map(|p| (p.at, p.value)).collect(),
        other => panic!("not points: {other:?}"),
    }
}

#[test]
fn members_get_their_series_and_everyone_else_is_left_out() {
    let l = labels();
    let keys = [key("a", "canary"), key("b", "baseline"), key("z", "canary")];
    let body = answer(&[
        (
            &[("service", "a"), ("track", "canary")],
            &[(1.0, "0.5"), (2.0, "0.25")],
        ),
        (&[("service", "a"), ("track", "baseline")], &[(1.0, "9")]),
        (
            &[("track", "baseline"), ("service", "b"), ("zone", "x")],
            &[(1.0, "1e-3")],
        ),
        (&[("service", "c"), ("track", "canary")], &[(1.0, "7")]),
    ]);
    for extra in [Extra::Combinations, Extra::Unlabelled] {
        let got = assert_alike(&body, wanted(&l, &keys, extra)).expect("splits");
        assert_eq!(points(&got[0]), vec![(1.0, 0.5), (2.0, 0.25)]);
        assert_eq!(points(&got[1]), vec![(1.0, 0.001)]);
        // No series for z: its empty result, as its own query would give.
        assert_eq!(points(&got[2]), vec![]);
    }
}

#[test]
fn nan_and_infinities_are_kept_as_points_for_the_judge_to_drop() {
    let l = labels();
    let keys = [key("a", "canary")];
    let body = answer(&[(
        &[("service", "a"), ("track", "canary")],
        &[(1.0, "NaN"), (2.0, "+Inf"), (3.0, "-Inf"), (4.0, "1")],
    )]);
    let got = assert_alike(&body, wanted(&l, &keys, Extra::Unlabelled)).expect("splits");
    let p = points(&got[0]);
    assert!(p[0].1.is_nan());
    assert_eq!(
        p[1..],
        [(2.0, f64::INFINITY), (3.0, f64::NEG_INFINITY), (4.0, 1.0)]
    );
}

#[test]
fn two_series_for_one_member_cannot_be_split() {
    let l = labels();
    let keys = [key("a", "canary")];
    let sel: &[(&str, &str)] = &[("service", "a"), ("track", "canary")];
    let body = answer(&[(sel, &[(1.0, "1")]), (sel, &[(1.0, "2")])]);
    let got = assert_alike(&body, wanted(&l, &keys, Extra::Unlabelled));
    assert_eq!(got, Err("several batch series for one member".into()));
}

#[test]
fn a_series_without_a_batch_label_refuses_a_regex_batch_and_is_left_out_of_a_wide_one() {
    let l = labels();
    let keys = [key("a", "canary")];
    let body = answer(&[
        (&[("track", "canary")], &[(1.0, "3")]),
        (&[("service", "a"), ("track", "canary")], &[(1.0, "1")]),
    ]);
    let regex = assert_alike(&body, wanted(&l, &keys, Extra::Combinations));
    assert_eq!(regex, Err("a batch series lacks a batch label".into()));
    let wide = assert_alike(&body, wanted(&l, &keys, Extra::Unlabelled)).expect("splits");
    assert_eq!(points(&wide[0]), vec![(1.0, 1.0)]);
}

#[test]
fn escaped_label_values_and_reordered_keys_read_alike() {
    let l = labels();
    let keys = [key("a\"b\\c", "canary"), key("ü", "baseline")];
    let body = r#"{"data":{"result":[
        {"values":[[1,"2"]],"extra":{"x":[1,2]},"metric":{"service":"a\"b\\c","track":"canary"}},
        {"metric":{"service":"\u00fc","track":"baseline","track":"baseline"},"values":[]}
      ],"resultType":"matrix"},"warnings":["w"],"status":"success"}"#;
    let got = assert_alike(body, wanted(&l, &keys, Extra::Unlabelled)).expect("splits");
    assert_eq!(points(&got[0]), vec![(1.0, 2.0)]);
    assert_eq!(points(&got[1]), vec![]);
}

#[test]
fn every_truncation_of_an_answer_is_left_to_the_old_parser_which_refuses_it() {
    let l = labels();
    let keys = [key("a", "canary")];
    let body = answer(&[
        (
            &[("service", "a"), ("track", "canary")],
            &[(1.0, "1"), (2.0, "NaN")],
        ),
        (&[("service", "b"), ("track", "canary")], &[(1.0, "2")]),
    ]);
    for end in 0..body.len() {
        let cut = &body[..end];
        assert_eq!(
            split_json(cut.as_bytes(), wanted(&l, &keys, Extra::Unlabelled)),
            None,
            "{cut}"
        );
        assert_eq!(
            streamed(cut, wanted(&l, &keys, Extra::Unlabelled)),
            None,
            "{cut}"
        );
        assert!(
            old(cut, wanted(&l, &keys, Extra::Unlabelled)).is_err(),
            "{cut}"
        );
    }
}

#[test]
fn anything_but_a_canonical_matrix_answer_is_left_to_the_old_parser() {
    let l = labels();
    let keys = [key("a", "canary")];
    let w = wanted(&l, &keys, Extra::Unlabelled);
    let bodies = [
        // An error answer: the old parser names Prometheus's error.
        r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#,
        // Another result type: the old split says it is not a range vector.
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"service":"a","track":"canary"},"value":[1,"1"]}]}}"#,
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#,
        // Malformed: a value that is not a number (in a series nobody asked for), a label
        // that is not a string, a sample with three elements, a series without values.
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"service":"q","track":"canary"},"values":[[1,"abc"]]}]}}"#,
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"service":1},"values":[]}]}}"#,
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1",2]]}]}}"#,
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{}}]}}"#,
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,1]]}]}}"#,
        // No status, no data, a repeated key, trailing bytes, not JSON at all.
        r#"{"data":{"resultType":"matrix","result":[]}}"#,
        r#"{"status":"success"}"#,
        r#"{"status":"success","status":"success","data":{"resultType":"matrix","result":[]}}"#,
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}} x"#,
        "<html>502 Bad Gateway</html>",
        "",
    ];
    for body in bodies {
        assert_eq!(split_json(body.as_bytes(), w), None, "{body}");
        assert_eq!(streamed(body, w), None, "{body}");
        let old = old(body, w);
        assert!(
            matches!(old, Err(_) | Ok(Err(_))),
            "the old path must refuse it too: {body} gave {old:?}"
        );
    }
}

#[test]
fn an_empty_answer_gives_every_member_its_empty_result() {
    let l = labels();
    let keys = [key("a", "canary"), key("a", "canary")];
    let body = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    let got = assert_alike(body, wanted(&l, &keys, Extra::Combinations)).expect("splits");
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|s| points(s).is_empty()));
}

#[test]
fn a_wide_answer_of_many_services_splits_like_the_whole_parse() {
    let l = labels();
    let services: Vec<String> = (0..2000).map(|i| format!("svc-{i:05}")).collect();
    let mut series = Vec::new();
    for s in &services {
        for t in ["canary", "baseline"] {
            series.push(format!(
                r#"{{"metric":{{"service":"{s}","track":"{t}"}},"values":[[1,"{}"],[2,"{}"]]}}"#,
                s.len(),
                t.len()
            ));
        }
    }
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        series.join(",")
    );
    // Every third service is a member, canary and baseline.
    let keys: Vec<Vec<String>> = services
        .iter()
        .step_by(3)
        .flat_map(|s| [key(s, "canary"), key(s, "baseline")])
        .collect();
    let got = assert_alike(&body, wanted(&l, &keys, Extra::Unlabelled)).expect("splits");
    assert_eq!(got.len(), keys.len());
    assert_eq!(points(&got[1]), vec![(1.0, 9.0), (2.0, 8.0)]);
}

#[test]
fn a_member_asked_twice_gets_its_points_both_times_both_ways() {
    // The answer's points are moved out, not copied; a repeated key must still get them twice.
    let (l, k) = (
        labels(),
        vec![key("a", "canary"), key("b", "canary"), key("a", "canary")],
    );
    let body = answer(&[
        (&[("service", "a"), ("track", "canary")], &[(1.0, "1")]),
        (&[("service", "b"), ("track", "canary")], &[(1.0, "2")]),
    ]);
    let got = assert_alike(&body, wanted(&l, &k, Extra::Combinations));
    let got = got.expect("splits");
    assert_eq!(points(&got[0]), vec![(1.0, 1.0)]);
    assert_eq!(points(&got[1]), vec![(1.0, 2.0)]);
    assert_eq!(points(&got[2]), vec![(1.0, 1.0)], "the repeated member too");
}
