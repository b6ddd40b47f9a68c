//! A compressed answer reads as its JSON would, within the same cap: inflated whole for the
//! plain parser, streamed for the split, and every broken or oversized stream an error (or
//! `None` for the split, whose caller then takes that error from [`Body::inflated`]).

use std::io::{Read, Write};

use super::*;
use crate::source::batch_split::Extra;
use crate::source::prometheus::parse_response;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("compress");
    e.finish().expect("compress")
}

/// A gzip stream of about `mib` MiB of spaces from a few KiB: one compressed MiB of spaces
/// after a sync flush is a byte-aligned run of blocks that refers only to spaces, so it can be
/// repeated. No trailer: a reader must stop at its cap long before one would be due.
pub(crate) fn bomb(prefix: &[u8], mib: usize) -> Vec<u8> {
    let spaces = vec![b' '; 1024 * 1024];
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(prefix).expect("compress");
    e.write_all(&spaces).expect("compress");
    e.flush().expect("flush");
    let head = e.get_ref().len();
    e.write_all(&spaces).expect("compress");
    e.flush().expect("flush");
    let out = e.get_ref();
    let mut gz = out[..head].to_vec();
    for _ in 1..mib {
        gz.extend_from_slice(&out[head..]);
    }
    gz
}

const ANSWER: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"service":"a"},"values":[[1,"1"],[2,"2"]]},{"metric":{"service":"b"},"values":[[1,"3"]]}]}}"#;

fn wanted<'a>(labels: &'a [String], keys: &'a [Vec<String>]) -> Wanted<'a> {
    Wanted {
        labels,
        keys,
        extra: Extra::Unlabelled,
    }
}

#[test]
fn a_gzip_answer_inflates_to_its_json_and_splits_as_the_plain_one() {
    let gz = Body::Gzip(gzip(ANSWER.as_bytes()));
    assert_eq!(&*gz.inflated(1 << 20).expect("inflates"), ANSWER.as_bytes());
    let plain = Body::Plain(ANSWER.as_bytes().to_vec());
    assert_eq!(
        &*plain.inflated(1 << 20).expect("as read"),
        ANSWER.as_bytes()
    );
    let labels = vec!["service".to_string()];
    let keys = vec![vec!["b".to_string()], vec!["a".to_string()]];
    let split = gz.split(1 << 20, wanted(&labels, &keys));
    assert!(split.is_some());
    assert_eq!(split, plain.split(1 << 20, wanted(&labels, &keys)));
}

#[test]
fn the_cap_bounds_the_inflated_json_to_the_byte() {
    let gz = Body::Gzip(gzip(ANSWER.as_bytes()));
    let labels = vec!["service".to_string()];
    let keys = vec![vec!["a".to_string()]];
    let exact = ANSWER.len();
    assert!(gz.inflated(exact).is_ok());
    assert!(gz.split(exact, wanted(&labels, &keys)).is_some());
    let (kind, message) = gz.inflated(exact - 1).expect_err("one byte over the cap");
    assert_eq!(kind, "too_large");
    assert!(
        message.contains(&format!("max_response_bytes ({} bytes", exact - 1)),
        "{message}"
    );
    assert_eq!(gz.split(exact - 1, wanted(&labels, &keys)), None);
}

#[test]
fn a_gzip_bomb_is_too_large_and_is_never_inflated_past_the_cap() {
    let cap = 256 * 1024;
    // A canonical answer followed by 64 MiB of whitespace: valid JSON, ~1000× its size.
    let gz = bomb(
        br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        64,
    );
    assert!(gz.len() < cap, "{} bytes compressed", gz.len());
    // What any reader of it can get: one byte past the cap, then the end.
    let mut reader = inflater(&gz, cap);
    let mut seen = 0usize;
    let mut buf = vec![0u8; 8192];
    loop {
        match reader.read(&mut buf).expect("inflates") {
            0 => break,
            n => seen += n,
        }
    }
    assert_eq!(seen, cap + 1);
    let body = Body::Gzip(gz);
    let (kind, message) = body.inflated(cap).expect_err("a bomb");
    assert_eq!(kind, "too_large", "{message}");
    assert!(message.contains("more once inflated"), "{message}");
    let labels = vec!["service".to_string()];
    assert_eq!(body.split(cap, wanted(&labels, &[])), None);
}

#[test]
fn the_bomb_is_what_it_claims() {
    // Guards the bomb test: without the cap the stream really gives its megabytes of spaces.
    let gz = bomb(b"{}", 4);
    let mut reader = flate2::bufread::GzDecoder::new(gz.as_slice());
    let mut seen = 0usize;
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| b"{} ".contains(b)));
        seen += n;
    }
    assert_eq!(seen, 2 + 4 * 1024 * 1024);
}

#[test]
fn every_truncation_of_a_gzip_answer_is_a_broken_answer() {
    let gz = gzip(ANSWER.as_bytes());
    let labels = vec!["service".to_string()];
    let keys = vec![vec!["a".to_string()]];
    for end in 0..gz.len() {
        let body = Body::Gzip(gz[..end].to_vec());
        let (kind, message) = body.inflated(1 << 20).expect_err("truncated");
        assert_eq!(kind, "other", "{end}: {message}");
        assert!(
            message.contains("gzip body that does not inflate"),
            "{message}"
        );
        assert_eq!(body.split(1 << 20, wanted(&labels, &keys)), None, "{end}");
    }
}

#[test]
fn a_body_that_claims_gzip_but_is_not_is_a_broken_answer() {
    let labels = vec!["service".to_string()];
    let keys = vec![vec!["a".to_string()]];
    let mut flipped = gzip(ANSWER.as_bytes());
    // A bit of the CRC in the trailer: every byte inflates, the check fails.
    let at = flipped.len() - 6;
    flipped[at] ^= 1;
    for bytes in [ANSWER.as_bytes().to_vec(), b"".to_vec(), flipped] {
        let body = Body::Gzip(bytes);
        let (kind, message) = body.inflated(1 << 20).expect_err("not gzip");
        assert_eq!(kind, "other");
        assert!(message.contains("does not inflate"), "{message}");
        assert_eq!(body.split(1 << 20, wanted(&labels, &keys)), None);
    }
}

#[test]
fn a_compressed_error_answer_keeps_its_kind_and_message() {
    let error =
        r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4: unexpected"}"#;
    let plain = parse_response(400, error.as_bytes()).expect_err("an error");
    let body = Body::Gzip(gzip(error.as_bytes()));
    let labels = vec!["service".to_string()];
    let keys = vec![vec!["a".to_string()]];
    assert_eq!(body.split(1 << 20, wanted(&labels, &keys)), None);
    let inflated = body.inflated(1 << 20).expect("inflates");
    assert_eq!(parse_response(400, &inflated).expect_err("an error"), plain);
    assert_eq!(plain.0, "query");
    assert!(plain.1.contains("parse error at char 4"), "{}", plain.1);
}

#[test]
fn only_gzip_or_no_encoding_is_read() {
    for ok in ["gzip", "GZIP", " gzip ", "identity", ""] {
        let v = HeaderValue::from_static(ok);
        let want = ok.trim().eq_ignore_ascii_case("gzip");
        assert_eq!(gzip_encoded(Some(&v)), Ok(want), "{ok:?}");
    }
    assert_eq!(gzip_encoded(None), Ok(false));
    for other in ["br", "deflate", "gzip, br", "x-gzip"] {
        let v = HeaderValue::from_static(other);
        let (kind, message) = gzip_encoded(Some(&v)).expect_err(other);
        assert_eq!(kind, "other");
        assert!(message.contains(&format!("{other:?}")), "{message}");
        assert!(message.contains("only gzip or uncompressed"), "{message}");
    }
}
