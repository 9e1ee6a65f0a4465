//! RTMP server handshake fed arbitrary bytes in arbitrary pieces. Checks that the outcome
//! (result, S0+S1+S2 bytes, unconsumed input) does not depend on how the input was split,
//! that nothing past C2 is consumed, and that Done / Failed are sticky.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use media::rtmp::handshake::{HandshakeError, HandshakeKind, ServerHandshake, HANDSHAKE_SIZE};

#[path = "split.rs"]
mod split;

#[derive(Debug, PartialEq)]
struct Outcome {
    result: Result<bool, HandshakeError>,
    out: Vec<u8>,
    leftover: Vec<u8>,
    kind: Option<HandshakeKind>,
}

fn run(pieces: &[&[u8]]) -> Outcome {
    let mut hs = ServerHandshake::new([0; 1528]);
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    let mut result = Ok(false);
    for piece in pieces {
        input.extend_from_slice(piece);
        let before = input.len();
        let prev = result.clone();
        result = hs.feed(&mut input, &mut out);
        assert!(input.len() <= before);
        match (&prev, &result) {
            (Ok(true), r) => {
                assert_eq!(r, &Ok(true), "Done must be sticky");
                assert_eq!(input.len(), before, "nothing consumed after Done");
            }
            (Err(e), r) => assert_eq!(r, &Err(e.clone()), "errors must be sticky"),
            _ => {}
        }
    }
    assert!(out.is_empty() || out.len() == 1 + 2 * HANDSHAKE_SIZE);
    assert_eq!(hs.kind().is_some(), !out.is_empty());
    Outcome {
        result,
        out: out.to_vec(),
        leftover: input.to_vec(),
        kind: hs.kind(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, payload) = split::split(data);
    let whole = run(&[payload]);
    if whole.result == Ok(true) {
        // Never consumes past C2: the rest belongs to the chunk stream.
        assert_eq!(whole.leftover, &payload[1 + 2 * HANDSHAKE_SIZE..]);
    }
    let split = run(&split::pieces(&sizes, payload));
    assert_eq!(whole, split, "outcome depends on how the input was split");
});
