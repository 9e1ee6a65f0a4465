//! WebSocket frames from a client: read_client_frame() in a loop over input fed in
//! fuzzer-chosen pieces. Checks that the frames and the error do not depend on the split,
//! that an incomplete frame consumes nothing, and that no frame takes more than its bound.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use media::websocket::{read_client_frame, ClientFrame, WsError, MAX_CLIENT_FRAME};

#[path = "split.rs"]
mod split;

#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<ClientFrame>,
    error: Option<WsError>,
}

fn run(pieces: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match read_client_frame(&mut buf) {
                Ok(Some(frame)) => {
                    // Head (at most 14 bytes) and payload.
                    assert!(before - buf.len() <= 14 + MAX_CLIENT_FRAME, "frame past its bound");
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete frame consumed bytes");
                    break;
                }
                Err(error) => return Outcome { frames, error: Some(error) },
            }
        }
    }
    Outcome { frames, error: None }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, payload) = split::split(data);
    let pieces = split::pieces(&sizes, payload);
    assert_eq!(run(&pieces), run(&[payload]));
});
