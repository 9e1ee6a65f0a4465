//! The RTSP server session fed input in fuzzer-chosen pieces by a driver that answers every
//! request (accepting, but rejecting every third), checking that the events, the bytes
//! sent and the error do not depend on the split, and that nothing is consumed while a
//! request waits for its answer.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use media::rtsp::{Lower, RtpInfo, RtspError, ServerSession, SessionEvent};

#[path = "split.rs"]
mod split;

#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<SessionEvent>,
    output: Vec<u8>,
    error: Option<RtspError>,
}

fn answer(session: &mut ServerSession, event: &SessionEvent, count: &mut usize) {
    let waits = matches!(
        event,
        SessionEvent::Describe { .. }
            | SessionEvent::Announce { .. }
            | SessionEvent::Setup { .. }
            | SessionEvent::Play { .. }
            | SessionEvent::Record { .. }
    );
    if !waits {
        return;
    }
    *count += 1;
    if *count % 3 == 0 {
        session.reject(403).unwrap();
        return;
    }
    match event {
        SessionEvent::Describe { .. } => session.accept_describe("v=0\r\n").unwrap(),
        SessionEvent::Announce { .. } => session.accept_announce().unwrap(),
        SessionEvent::Setup { transport, .. } => {
            let ports = (transport.lower == Lower::Udp).then_some((6970, 6971));
            session.accept_setup(ports, Some(1)).unwrap()
        }
        SessionEvent::Play { .. } => {
            let info: Vec<RtpInfo> = session
                .tracks()
                .iter()
                .map(|t| RtpInfo { track: t.track, sequence: 1, rtp_time: 2 })
                .collect();
            session.accept_play(&info).unwrap()
        }
        _ => session.accept_record().unwrap(),
    }
}

fn run(pieces: &[&[u8]]) -> Outcome {
    let mut session = ServerSession::new("F00D".into(), 60);
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let mut count = 0;
    for piece in pieces {
        input.extend_from_slice(piece);
        loop {
            let mut fresh = Vec::new();
            let before = input.len();
            if let Err(error) = session.feed(&mut input, &mut fresh) {
                events.extend(fresh);
                let output = session.take_output().to_vec();
                return Outcome { events, output, error: Some(error) };
            }
            if session.is_waiting() {
                // A second feed while waiting must read nothing.
                let waiting = input.len();
                session.feed(&mut input, &mut Vec::new()).unwrap();
                assert_eq!(input.len(), waiting, "read past a request waiting for its answer");
            }
            for event in &fresh {
                answer(&mut session, event, &mut count);
            }
            assert!(!session.is_waiting(), "every waiting request was answered");
            let progressed = !fresh.is_empty() || input.len() != before;
            events.extend(fresh);
            if !progressed {
                break;
            }
        }
    }
    Outcome { events, output: session.take_output().to_vec(), error: None }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, payload) = split::split(data);
    let pieces = split::pieces(&sizes, payload);
    assert_eq!(run(&pieces), run(&[payload]));
});
