//! RTMP client session after a valid simple handshake (S0 = 3, S1 and S2 all zero), with
//! connect and play already asked for, then fuzz bytes as the server's, fed in
//! fuzzer-chosen pieces. Whenever the session says it is publishing or playing, the calls a
//! driver would make then (media, delete_stream) are made too. Must not panic.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use media::frame::MediaKind;
use media::rtmp::client::{ClientEvent, ClientSession, ClientState};
use media::rtmp::handshake::HANDSHAKE_SIZE;

#[path = "split.rs"]
mod split;

fuzz_target!(|data: &[u8]| {
    let (sizes, fuzz) = split::split(data);
    let mut payload = Vec::with_capacity(1 + 2 * HANDSHAKE_SIZE + fuzz.len());
    payload.push(3);
    payload.resize(1 + 2 * HANDSHAKE_SIZE, 0);
    payload.extend_from_slice(fuzz);

    let mut session = ClientSession::new([0; 1528]);
    session.connect("live", "rtmp://fuzz/live", vec![]).unwrap();
    session.play("room").unwrap();
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    for piece in split::pieces(&sizes, &payload) {
        input.extend_from_slice(piece);
        let before = input.len();
        let result = session.feed(&mut input, &mut events);
        assert!(input.len() <= before);
        for event in events.drain(..) {
            match event {
                ClientEvent::Publishing => {
                    assert_eq!(session.state(), ClientState::Publishing);
                    session
                        .send_media(MediaKind::Video, 0, Bytes::from_static(&[0x17, 1]))
                        .unwrap();
                }
                ClientEvent::Playing => {
                    assert_eq!(session.state(), ClientState::Playing);
                    assert!(session.stream_id().is_some());
                }
                ClientEvent::Status(status) if status.is_error() => {
                    if session.stream_id().is_some() {
                        session.delete_stream().unwrap();
                        // Ask again, so refusals and retries are reached too.
                        let _ = session.publish("room", "live");
                    }
                }
                _ => {}
            }
        }
        let _ = session.take_output();
        assert!(!session.has_output());
        if result.is_err() {
            // Fatal for the connection: the driver would close it.
            return;
        }
    }
});
