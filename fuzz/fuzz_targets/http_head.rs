//! HTTP request heads: take_head() in a loop over input fed in fuzzer-chosen pieces, and the
//! Range each head asks for. Checks
//! that the heads and the error do not depend on the split, that an error leaves the buffer
//! as it was, and that what a head consumed never exceeds the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use media::http::{byte_range, take_head, HeadError, RequestHead};

#[path = "split.rs"]
mod split;

const MAX_HEAD: usize = 1024;

#[derive(Debug, PartialEq)]
struct Outcome {
    heads: Vec<RequestHead>,
    error: Option<HeadError>,
}

fn run(pieces: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut heads = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match take_head(&mut buf, MAX_HEAD) {
                Ok(Some(head)) => {
                    assert!(before - buf.len() <= MAX_HEAD, "consumed past the limit");
                    // Any Range header gives a range inside the resource, or none.
                    for len in [0, 1, 1000, u64::MAX] {
                        if let Ok(Some((first, last))) = byte_range(head.range.as_deref(), len) {
                            assert!(first <= last && last < len, "{:?} for {len}", head.range);
                        }
                    }
                    heads.push(head);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete head consumed bytes");
                    break;
                }
                Err(error) => return Outcome { heads, error: Some(error) },
            }
        }
    }
    Outcome { heads, error: None }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, payload) = split::split(data);
    let pieces = split::pieces(&sizes, payload);
    let split_outcome = run(&pieces);
    let whole = run(&[payload]);
    // A limit error depends on how much was buffered when it was seen; everything else
    // must match exactly.
    let limit = |o: &Outcome| {
        matches!(o.error, Some(HeadError::LineTooLong(_) | HeadError::HeadTooLarge(_)))
    };
    if limit(&split_outcome) || limit(&whole) {
        let n = split_outcome.heads.len().min(whole.heads.len());
        assert_eq!(split_outcome.heads[..n], whole.heads[..n]);
    } else {
        assert_eq!(split_outcome, whole);
    }
});
