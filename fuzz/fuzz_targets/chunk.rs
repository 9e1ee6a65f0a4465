//! RTMP chunk reader: read() in a loop until None/Err, input fed in fuzzer-chosen pieces.
//! Checks that the messages, the error and the unconsumed bytes do not depend on the split,
//! and that errors are sticky.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use media::rtmp::chunk::{ChunkError, ChunkReader, RtmpMessage};

#[path = "split.rs"]
mod split;

#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<RtmpMessage>,
    error: Option<ChunkError>,
    /// Unconsumed bytes (only compared when no error happened).
    leftover: Vec<u8>,
    chunk_size: u32,
}

fn run(pieces: &[&[u8]]) -> Outcome {
    let mut reader = ChunkReader::new();
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut error = None;
    'outer: for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match reader.read(&mut buf) {
                Ok(Some(msg)) => messages.push(msg),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(
                        reader.read(&mut buf),
                        Err(e.clone()),
                        "errors must be sticky"
                    );
                    error = Some(e);
                    break 'outer;
                }
            }
            assert!(buf.len() <= before);
        }
    }
    Outcome {
        messages,
        leftover: if error.is_none() {
            buf.to_vec()
        } else {
            Vec::new()
        },
        error,
        chunk_size: reader.chunk_size(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, payload) = split::split(data);
    let whole = run(&[payload]);
    let split = run(&split::pieces(&sizes, payload));
    assert_eq!(whole, split, "outcome depends on how the input was split");
});
