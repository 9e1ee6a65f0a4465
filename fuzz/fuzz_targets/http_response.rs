//! HTTP responses as a relay's HTTP-FLV pull reads them: `take_response_head` and then, for a
//! chunked body, `ChunkedDecoder::decode`, over input fed in fuzzer-chosen pieces. Checks
//! that the head, the decoded body and the error do not depend on the split, that an
//! incomplete head consumes nothing but whole interim (1xx) heads, and that the body never
//! holds more than was fed.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use media::http::response::{
    take_response_head, BodyLength, ChunkedDecoder, ResponseError, ResponseHead,
};

#[path = "split.rs"]
mod split;

const MAX_HEAD: usize = 1024;

#[derive(Debug, PartialEq)]
struct Outcome {
    head: Option<ResponseHead>,
    body: Vec<u8>,
    done: bool,
    error: Option<ResponseError>,
}

fn run(pieces: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut outcome = Outcome {
        head: None,
        body: Vec::new(),
        done: false,
        error: None,
    };
    let mut decoder = ChunkedDecoder::new();
    let mut body = BytesMut::new();
    let mut fed = 0;
    for piece in pieces {
        buf.extend_from_slice(piece);
        fed += piece.len();
        if outcome.head.is_none() {
            let before = buf.clone();
            match take_response_head(&mut buf, MAX_HEAD) {
                Ok(Some(head)) => outcome.head = Some(head),
                Ok(None) => {
                    // Only whole interim (1xx) heads were consumed: read again, they are
                    // skipped again and nothing more is taken.
                    let mut consumed = BytesMut::from(&before[..before.len() - buf.len()]);
                    assert_eq!(take_response_head(&mut consumed, MAX_HEAD), Ok(None));
                    assert!(consumed.is_empty(), "an incomplete head consumed bytes");
                    continue;
                }
                Err(error) => {
                    outcome.error = Some(error);
                    break;
                }
            }
        }
        if outcome
            .head
            .as_ref()
            .is_some_and(|h| h.body == BodyLength::Chunked)
        {
            match decoder.decode(&mut buf, &mut body) {
                Ok(done) => outcome.done = done,
                Err(error) => {
                    outcome.error = Some(error);
                    break;
                }
            }
            assert!(body.len() <= fed, "more body than input");
        }
    }
    outcome.body = body.to_vec();
    outcome
}

fuzz_target!(|data: &[u8]| {
    let (sizes, payload) = split::split(data);
    let pieces = split::pieces(&sizes, payload);
    let split_outcome = run(&pieces);
    let whole = run(&[payload]);
    // A size limit is met at a point that depends on what was buffered.
    let limit = |o: &Outcome| matches!(o.error, Some(ResponseError::HeadTooLarge(_)));
    if !limit(&split_outcome) && !limit(&whole) {
        assert_eq!(split_outcome.head, whole.head);
        assert_eq!(split_outcome.error, whole.error);
        if whole.error.is_none() {
            assert_eq!(split_outcome.body, whole.body);
            assert_eq!(split_outcome.done, whole.done);
        }
    }
});
