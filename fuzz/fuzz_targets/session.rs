//! RTMP server session after a valid simple handshake (C0 = 3, C1 and C2 all zero), then
//! fuzz bytes fed in fuzzer-chosen pieces. Publish / Play requests are answered, alternately
//! accepted and rejected, so both paths are covered. Must not panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use media::rtmp::handshake::HANDSHAKE_SIZE;
use media::rtmp::session::{ServerSession, SessionEvent};

#[path = "split.rs"]
mod split;

fuzz_target!(|data: &[u8]| {
    let (sizes, fuzz) = split::split(data);
    let mut payload = Vec::with_capacity(1 + 2 * HANDSHAKE_SIZE + fuzz.len());
    payload.push(3);
    payload.resize(1 + 2 * HANDSHAKE_SIZE, 0);
    payload.extend_from_slice(fuzz);

    let mut session = ServerSession::new([0; 1528]);
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let mut accept_next_publish = true;
    let mut accept_next_play = true;
    for piece in split::pieces(&sizes, &payload) {
        input.extend_from_slice(piece);
        loop {
            let before = input.len();
            let result = session.feed(&mut input, &mut events);
            assert!(input.len() <= before);
            let got_events = !events.is_empty();
            for event in events.drain(..) {
                match event {
                    SessionEvent::Publish { .. } => {
                        if accept_next_publish {
                            session.accept_publish();
                        } else {
                            session.reject_publish("NetStream.Publish.BadName", "taken");
                        }
                        accept_next_publish = !accept_next_publish;
                    }
                    SessionEvent::Play { .. } => {
                        if accept_next_play {
                            session.accept_play("x");
                            assert!(session.play_stream_id().is_some());
                        } else {
                            session.reject_play("NetStream.Play.StreamNotFound", "none");
                        }
                        accept_next_play = !accept_next_play;
                    }
                    _ => {}
                }
            }
            let _ = session.app();
            let _ = session.take_output();
            assert!(!session.has_output());
            if result.is_err() {
                // Fatal for the connection: the driver would close it.
                return;
            }
            if input.len() == before && !got_events {
                break;
            }
        }
    }
    // A live viewer being told the stream ended must not panic either.
    session.end_play("x");
});
