//! A rule file's text as a loaded rule keeps it: deflated against a dictionary its load shares.
//!
//! Every rule keeps the text it was parsed from, for the snapshot a rollout stores when it
//! starts (`Rule::source`; `design.md`: a recovered rollout runs the rule it started with). It
//! is read only then and when a restart compares a stored snapshot with the loaded rule, yet it
//! was 0.9 KB a rule at rest: 8.6 MB of the heap at 10,000 rules (heaptrack, issue 14).
//!
//! Rule files of one load are mostly alike (one per service, written from one example), so a
//! text is deflated after the load's first rule text (the *dictionary*, [`Dictionary`]): the
//! dictionary is deflated once and flushed to a byte boundary (a sync flush keeps the window),
//! and each rule keeps only the bytes that follow, which may refer back into the dictionary.
//! Reading a text inflates the dictionary's bytes and the rule's, and drops the dictionary.
//! The scale bench's rules keep ~30 bytes each instead of ~860; a text unlike the dictionary
//! still deflates on its own. A text is checked to read back byte for byte when it is kept,
//! and kept as it is otherwise, so what a rollout stores never depends on the deflater.

use std::io::Read;
use std::sync::Arc;

use flate2::{Compress, Compression, FlushCompress, Status};

/// The longest dictionary: deflate refers back at most 32 KiB, and a dictionary plus a text
/// are both inflated each time the text is read; the shipped rules are a few KiB.
const MAX_DICTIONARY_BYTES: usize = 16 * 1024;

/// The text every rule of one load is deflated after, and its deflated, sync-flushed bytes.
#[derive(Debug)]
pub(crate) struct Dictionary {
    text: Box<[u8]>,
    prefix: Box<[u8]>,
}

impl Dictionary {
    /// `text` as a dictionary, or `None` when it is too long to be one.
    pub(crate) fn new(text: &str) -> Option<Dictionary> {
        if text.len() > MAX_DICTIONARY_BYTES {
            return None;
        }
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(text.len() + 64);
        deflate(&mut c, text.as_bytes(), &mut out, FlushCompress::Sync)?;
        Some(Dictionary {
            text: text.as_bytes().into(),
            prefix: out.into(),
        })
    }
}

/// A kept text: deflated (after a dictionary or alone), or as it is when that does not pay or
/// would not read back.
#[derive(Debug, Clone)]
pub(crate) enum KeptText {
    Plain(Box<str>),
    Deflated {
        after: Option<Arc<Dictionary>>,
        bytes: Box<[u8]>,
        /// The text's length and CRC-32, checked when it is read back.
        len: u32,
        crc: u32,
    },
}

/// A kept text that did not read back: never made by a text that was checked when kept, so a
/// bug (or memory gone bad), reported rather than stored as a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a kept rule text does not read back: {0}")]
pub struct KeptTextError(&'static str);

impl KeptText {
    /// Keeps `text`, deflated after `dictionary` when given.
    pub(crate) fn new(text: &str, dictionary: Option<&Arc<Dictionary>>) -> KeptText {
        let deflated = deflated(text, dictionary).and_then(|bytes| {
            Some(KeptText::Deflated {
                after: dictionary.cloned(),
                bytes: bytes.into(),
                len: u32::try_from(text.len()).ok()?,
                crc: crc(text.as_bytes()),
            })
        });
        match deflated {
            Some(kept) if kept.text().is_ok_and(|back| back == text) => kept,
            _ => KeptText::Plain(text.into()),
        }
    }

    /// The text, byte for byte as it was given.
    pub(crate) fn text(&self) -> Result<String, KeptTextError> {
        let (after, bytes, len, sum) = match self {
            KeptText::Plain(text) => return Ok(text.to_string()),
            KeptText::Deflated {
                after,
                bytes,
                len,
                crc,
            } => (after.as_deref(), bytes, *len as usize, *crc),
        };
        let (dict, prefix): (&[u8], &[u8]) = match after {
            Some(d) => (&d.text, &d.prefix),
            None => (&[], &[]),
        };
        let whole = dict.len().saturating_add(len);
        let mut out = Vec::with_capacity(whole);
        flate2::bufread::DeflateDecoder::new(prefix.chain(&bytes[..]))
            .take(whole as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| KeptTextError("not a deflate stream"))?;
        if out.len() != whole || out.get(..dict.len()) != Some(dict) {
            return Err(KeptTextError("not the text it was kept as"));
        }
        let text = out.split_off(dict.len());
        if crc(&text) != sum {
            return Err(KeptTextError("not the text it was kept as"));
        }
        String::from_utf8(text).map_err(|_| KeptTextError("not UTF-8"))
    }

    /// The bytes held for the text (its dictionary aside, which the load's rules share).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        match self {
            KeptText::Plain(text) => text.len(),
            KeptText::Deflated { bytes, .. } => bytes.len(),
        }
    }
}

fn crc(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// `text` deflated after `dictionary`: the bytes past the dictionary's own, or `None` when the
/// deflater fails, its dictionary bytes differ from the dictionary's (they never should), or
/// the result is no shorter than the text.
fn deflated(text: &str, dictionary: Option<&Arc<Dictionary>>) -> Option<Vec<u8>> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(text.len() + 64);
    if let Some(d) = dictionary {
        deflate(&mut c, &d.text, &mut out, FlushCompress::Sync)?;
        if out != *d.prefix {
            return None;
        }
        out.clear();
    }
    deflate(&mut c, text.as_bytes(), &mut out, FlushCompress::Finish)?;
    (out.len() < text.len()).then_some(out)
}

/// Feeds all of `input` to `c` and flushes it as `flush` says, growing `out` as needed.
fn deflate(
    c: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> Option<()> {
    // Each round either consumes input, writes output or ends; bounded all the same.
    for _ in 0..1_000_000 {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.len().max(256));
        }
        let before = c.total_in();
        let status = c.compress_vec(input, out, flush).ok()?;
        let used = usize::try_from(c.total_in() - before).ok()?;
        input = input.get(used..)?;
        let room_left = out.len() < out.capacity();
        match (flush, status) {
            (FlushCompress::Finish, Status::StreamEnd) => return Some(()),
            (FlushCompress::Sync, Status::Ok) if input.is_empty() && room_left => return Some(()),
            (_, Status::BufError) if input.is_empty() && room_left => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(service: &str) -> String {
        format!(
            "name: {service}\nselector:\n  canary: 'service=\"{service}\", track=\"canary\"'\n  baseline: 'service=\"{service}\", track=\"baseline\"'\nsteps:\n  - {{ weight: 5, hold: 24h }}\n  - {{ weight: 100 }}\nmetrics:\n  - {{ name: error_rate, template: error_rate }}\n  - {{ name: p95_latency, template: p95_latency }}\nhooks:\n  rollback: {{ url: \"http://hooks.example/rollback\", timeout: 10s, retries: 4 }}\n"
        )
    }

    /// What a rollout stores is this text: it must come back byte for byte, after a
    /// dictionary, alone, empty, multibyte, and unlike anything.
    #[test]
    fn every_text_reads_back_byte_for_byte() {
        let dict = Arc::new(Dictionary::new(&rule("svc-0")).expect("a dictionary"));
        let odd = "é\u{0}\"\\\n".repeat(300);
        for text in [
            rule("svc-0"),
            rule("svc-12345"),
            String::new(),
            odd,
            "x".into(),
        ] {
            for after in [Some(&dict), None] {
                let kept = KeptText::new(&text, after);
                assert_eq!(kept.text().as_deref(), Ok(text.as_str()));
            }
        }
    }

    /// The point of the dictionary: a rule like the load's first keeps a few dozen bytes.
    #[test]
    fn a_rule_like_the_dictionary_keeps_a_few_dozen_bytes() {
        let dict = Arc::new(Dictionary::new(&rule("svc-0")).expect("a dictionary"));
        let text = rule("svc-12345");
        let kept = KeptText::new(&text, Some(&dict));
        assert!(matches!(kept, KeptText::Deflated { .. }), "{kept:?}");
        assert!(
            kept.held() < 64,
            "{} bytes kept of {}",
            kept.held(),
            text.len()
        );
        let alone = KeptText::new(&text, None);
        assert!(alone.held() < text.len(), "{} alone", alone.held());
    }

    /// A text that deflates to no less than itself is kept as it is.
    #[test]
    fn a_text_that_does_not_shrink_is_kept_plain() {
        let kept = KeptText::new("ab", None);
        assert!(matches!(kept, KeptText::Plain(_)), "{kept:?}");
        assert!(Dictionary::new(&"y".repeat(MAX_DICTIONARY_BYTES + 1)).is_none());
    }

    /// Bytes that are not what was kept are an error, never another text or a panic.
    #[test]
    fn damaged_bytes_are_an_error() {
        let dict = Arc::new(Dictionary::new(&rule("svc-0")).expect("a dictionary"));
        let similar = Arc::new(Dictionary::new(&rule("svc-9")).expect("a dictionary"));
        let other = Arc::new(Dictionary::new(&"other words ".repeat(40)).expect("a dictionary"));
        let KeptText::Deflated {
            bytes, len, crc, ..
        } = KeptText::new(&rule("svc-1"), Some(&dict))
        else {
            panic!("deflated");
        };
        let read = |after: &Arc<Dictionary>, bytes: &[u8], len: u32| {
            KeptText::Deflated {
                after: Some(after.clone()),
                bytes: bytes.into(),
                len,
                crc,
            }
            .text()
        };
        assert!(read(&dict, &bytes, len + 1).is_err(), "wrong length");
        assert!(read(&dict, &bytes[..bytes.len() / 2], len).is_err(), "cut");
        assert!(read(&other, &bytes, len).is_err(), "another dictionary");
        // One differing where the text does not refer may read back: then as itself.
        if let Ok(text) = read(&similar, &bytes, len) {
            assert_eq!(text, rule("svc-1"));
        }
        assert_eq!(read(&dict, &bytes, len), Ok(rule("svc-1")));
        // Any one bit flipped: an error, or (where deflate does not look) the text itself.
        for i in 0..bytes.len() * 8 {
            let mut flipped = bytes.to_vec();
            flipped[i / 8] ^= 1 << (i % 8);
            if let Ok(text) = read(&dict, &flipped, len) {
                assert_eq!(text, rule("svc-1"), "bit {i}");
            }
        }
    }
}
