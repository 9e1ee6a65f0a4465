//! The session walked through as ffmpeg and GStreamer talk to a server (request texts as
//! they send them), answered by a driver that accepts everything.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::sdp::tests::FFMPEG_SDP;

const ID: &str = "9A3F01C2";

/// A driver that accepts every request: DESCRIBE gets a fixed SDP, UDP SETUPs server ports
/// 6970 and up, PLAY an RTP-Info entry per track.
fn answer(session: &mut ServerSession, event: &SessionEvent) {
    match event {
        SessionEvent::Describe { .. } => session.accept_describe("v=0\r\n").unwrap(),
        SessionEvent::Announce { .. } => session.accept_announce().unwrap(),
        SessionEvent::Setup {
            track, transport, ..
        } => {
            let port = 6970 + 2 * *track as u16;
            let ports = (transport.lower == Lower::Udp).then_some((port, port + 1));
            session
                .accept_setup(ports, Some(0xABC0 + *track as u32))
                .unwrap()
        }
        SessionEvent::Play { .. } => {
            let info: Vec<RtpInfo> = session
                .tracks()
                .iter()
                .map(|t| RtpInfo {
                    track: t.track,
                    sequence: 100,
                    rtp_time: 9000,
                })
                .collect();
            session.accept_play(&info).unwrap()
        }
        SessionEvent::Record { .. } => session.accept_record().unwrap(),
        _ => {}
    }
}

/// Feed `pieces` one after another, answering as they come; the events and the output.
fn drive(session: &mut ServerSession, pieces: &[&[u8]]) -> (Vec<SessionEvent>, String) {
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        input.extend_from_slice(piece);
        loop {
            let mut fresh = Vec::new();
            session.feed(&mut input, &mut fresh).unwrap();
            for event in &fresh {
                answer(session, event);
            }
            let done = fresh.is_empty();
            events.extend(fresh);
            if done {
                break;
            }
        }
    }
    let output = session.take_output();
    (events, String::from_utf8(output.to_vec()).unwrap())
}

fn path(control: Option<&str>) -> StreamPath {
    StreamPath {
        app: "live".into(),
        room: "room".into(),
        control: control.map(Into::into),
        query: String::new(),
    }
}

const FFMPEG_PLAY_TCP: &[u8] = b"OPTIONS rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\n\
CSeq: 1\r\nUser-Agent: Lavf60.16.100\r\n\r\n\
DESCRIBE rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\n\
Accept: application/sdp\r\nCSeq: 2\r\nUser-Agent: Lavf60.16.100\r\n\r\n\
SETUP rtsp://127.0.0.1:8554/live/room/trackID=0 RTSP/1.0\r\n\
Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nCSeq: 3\r\nUser-Agent: Lavf60.16.100\r\n\r\n\
SETUP rtsp://127.0.0.1:8554/live/room/trackID=1 RTSP/1.0\r\n\
Transport: RTP/AVP/TCP;unicast;interleaved=2-3\r\nCSeq: 4\r\nUser-Agent: Lavf60.16.100\r\nSession: 9A3F01C2\r\n\r\n\
PLAY rtsp://127.0.0.1:8554/live/room/ RTSP/1.0\r\n\
Range: npt=0.000-\r\nCSeq: 5\r\nUser-Agent: Lavf60.16.100\r\nSession: 9A3F01C2\r\n\r\n\
$\x01\x00\x08\x80\xC9\x00\x01\x00\x00\x00\x01\
GET_PARAMETER rtsp://127.0.0.1:8554/live/room/ RTSP/1.0\r\n\
CSeq: 6\r\nUser-Agent: Lavf60.16.100\r\nSession: 9A3F01C2\r\n\r\n\
TEARDOWN rtsp://127.0.0.1:8554/live/room/ RTSP/1.0\r\n\
CSeq: 7\r\nUser-Agent: Lavf60.16.100\r\nSession: 9A3F01C2\r\n\r\n";

#[test]
fn ffmpeg_plays_over_tcp() {
    let mut session = ServerSession::new(ID.into(), 60);
    let (events, output) = drive(&mut session, &[FFMPEG_PLAY_TCP]);
    let tcp = |rtp| Transport {
        lower: Lower::Tcp,
        unicast: true,
        interleaved: Some((rtp, rtp + 1)),
        client_port: None,
        server_port: None,
        ssrc: None,
        record: false,
    };
    assert_eq!(
        events,
        vec![
            SessionEvent::Describe { path: path(None) },
            SessionEvent::Setup {
                path: path(Some("trackID=0")),
                track: 0,
                transport: tcp(0)
            },
            SessionEvent::Setup {
                path: path(Some("trackID=1")),
                track: 1,
                transport: tcp(2)
            },
            SessionEvent::Play { path: path(None) },
            SessionEvent::Rtcp {
                track: 0,
                packet: Bytes::from_static(b"\x80\xC9\x00\x01\x00\x00\x00\x01")
            },
            SessionEvent::KeepAlive,
            SessionEvent::Teardown,
        ]
    );
    let expected = "RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, TEARDOWN, GET_PARAMETER\r\nServer: ferrolive\r\n\r\n\
RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://127.0.0.1:8554/live/room/\r\nContent-Type: application/sdp\r\nServer: ferrolive\r\nContent-Length: 5\r\n\r\nv=0\r\n\
RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=0000ABC0\r\nSession: 9A3F01C2;timeout=60\r\nServer: ferrolive\r\n\r\n\
RTSP/1.0 200 OK\r\nCSeq: 4\r\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=0000ABC1\r\nSession: 9A3F01C2;timeout=60\r\nServer: ferrolive\r\n\r\n\
RTSP/1.0 200 OK\r\nCSeq: 5\r\nSession: 9A3F01C2;timeout=60\r\nRange: npt=0.000-\r\n\
RTP-Info: url=rtsp://127.0.0.1:8554/live/room/trackID=0;seq=100;rtptime=9000,url=rtsp://127.0.0.1:8554/live/room/trackID=1;seq=100;rtptime=9000\r\nServer: ferrolive\r\n\r\n\
RTSP/1.0 200 OK\r\nCSeq: 6\r\nSession: 9A3F01C2;timeout=60\r\nServer: ferrolive\r\n\r\n\
RTSP/1.0 200 OK\r\nCSeq: 7\r\nServer: ferrolive\r\n\r\n";
    assert_eq!(output, expected);
    assert_eq!(session.state(), State::Init);
}

#[test]
fn any_split_gives_the_same_events_and_output() {
    let whole = drive(&mut ServerSession::new(ID.into(), 60), &[FFMPEG_PLAY_TCP]);
    let bytes = FFMPEG_PLAY_TCP;
    for size in [1, 2, 3, 7, 64, 500] {
        let pieces: Vec<&[u8]> = bytes.chunks(size).collect();
        assert_eq!(
            drive(&mut ServerSession::new(ID.into(), 60), &pieces),
            whole,
            "pieces of {size}"
        );
    }
}

#[test]
fn vlc_plays_over_udp() {
    let mut session = ServerSession::new(ID.into(), 60);
    let requests = "DESCRIBE rtsp://h/live/room?token=abc RTSP/1.0\r\nCSeq: 2\r\n\
User-Agent: LibVLC/3.0.20 (LIVE555 Streaming Media v2016.11.28)\r\nAccept: application/sdp\r\n\r\n\
SETUP rtsp://h/live/room?token=abc/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n\
Transport: RTP/AVP;unicast;client_port=50000-50001\r\n\r\n\
PLAY rtsp://h/live/room?token=abc/ RTSP/1.0\r\nCSeq: 4\r\nSession: 9A3F01C2\r\nRange: npt=0.000-\r\n\r\n";
    let (events, output) = drive(&mut session, &[requests.as_bytes()]);
    let SessionEvent::Describe { path } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(path.query, "token=abc");
    let SessionEvent::Setup {
        track: 0,
        transport,
        ..
    } = &events[1]
    else {
        panic!("{events:?}")
    };
    assert_eq!(transport.client_port, Some((50000, 50001)));
    assert!(output.contains("Content-Base: rtsp://h/live/room?token=abc/\r\n"));
    assert!(output.contains(
        "Transport: RTP/AVP;unicast;client_port=50000-50001;server_port=6970-6971;ssrc=0000ABC0\r\n"
    ));
    assert_eq!(session.state(), State::Playing);
    assert_eq!(
        session.tracks()[0].transport.server_port,
        Some((6970, 6971))
    );
}

fn ffmpeg_publish() -> String {
    format!(
        "OPTIONS rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: Lavf60.16.100\r\n\r\n\
ANNOUNCE rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nContent-Type: application/sdp\r\nCSeq: 2\r\n\
User-Agent: Lavf60.16.100\r\nContent-Length: {}\r\n\r\n{FFMPEG_SDP}\
SETUP rtsp://127.0.0.1:8554/live/room/streamid=0 RTSP/1.0\r\n\
Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\nCSeq: 3\r\nUser-Agent: Lavf60.16.100\r\n\r\n\
SETUP rtsp://127.0.0.1:8554/live/room/streamid=1 RTSP/1.0\r\n\
Transport: RTP/AVP/TCP;unicast;interleaved=2-3;mode=record\r\nCSeq: 4\r\nUser-Agent: Lavf60.16.100\r\nSession: 9A3F01C2\r\n\r\n\
RECORD rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nRange: npt=0.000-\r\nCSeq: 5\r\n\
User-Agent: Lavf60.16.100\r\nSession: 9A3F01C2\r\n\r\n\
$\x00\x00\x04rtp0$\x02\x00\x04rtp1$\x03\x00\x04rtcp$\x07\x00\x01x\
TEARDOWN rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nCSeq: 6\r\nUser-Agent: Lavf60.16.100\r\nSession: 9A3F01C2\r\n\r\n",
        FFMPEG_SDP.len()
    )
}

#[test]
fn ffmpeg_publishes_over_tcp() {
    let mut session = ServerSession::new(ID.into(), 60);
    let (events, output) = drive(&mut session, &[ffmpeg_publish().as_bytes()]);
    let SessionEvent::Announce {
        path: announced,
        description,
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert_eq!(announced, &path(None));
    assert_eq!(description.media.len(), 2);
    let tracks: Vec<_> = events[1..3]
        .iter()
        .map(|e| match e {
            SessionEvent::Setup {
                track, transport, ..
            } => (*track, transport.interleaved, transport.record),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        tracks,
        vec![(0, Some((0, 1)), true), (1, Some((2, 3)), true)]
    );
    assert_eq!(
        events[3..],
        [
            SessionEvent::Record { path: path(None) },
            SessionEvent::Rtp {
                track: 0,
                packet: Bytes::from_static(b"rtp0")
            },
            SessionEvent::Rtp {
                track: 1,
                packet: Bytes::from_static(b"rtp1")
            },
            SessionEvent::Rtcp {
                track: 1,
                packet: Bytes::from_static(b"rtcp")
            },
            SessionEvent::Teardown,
        ]
    );
    assert!(output
        .contains("Transport: RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=0000ABC1;mode=record\r\n"));
    assert_eq!(output.matches("RTSP/1.0 200 OK").count(), 6);
}

#[test]
fn gstreamer_sets_up_absolute_controls() {
    let sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:rtsp://h/live/room/stream=0\r\n";
    let requests = format!(
        "ANNOUNCE rtsp://h/live/room RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}\
SETUP rtsp://h/live/room/stream=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP;unicast;client_port=40000-40001;mode=record\r\n\r\n",
        sdp.len()
    );
    let mut session = ServerSession::new(ID.into(), 60);
    let (events, _) = drive(&mut session, &[requests.as_bytes()]);
    assert!(
        matches!(events[1], SessionEvent::Setup { track: 0, .. }),
        "{events:?}"
    );
}

/// The status line of each answer to `requests`, fed to a fresh session.
fn statuses(requests: &str) -> Vec<String> {
    let (_, output) = drive(
        &mut ServerSession::new(ID.into(), 60),
        &[requests.as_bytes()],
    );
    output
        .lines()
        .filter(|l| l.starts_with("RTSP/1.0"))
        .map(str::to_string)
        .collect()
}

#[test]
fn wrong_requests_get_their_status() {
    assert_eq!(
        statuses("OPTIONS * RTSP/1.0\r\n\r\n"),
        ["RTSP/1.0 400 Bad Request"]
    );
    assert_eq!(
        statuses("FLY rtsp://h/a/b RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
        ["RTSP/1.0 501 Not Implemented"]
    );
    assert_eq!(
        statuses("PAUSE rtsp://h/a/b RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
        ["RTSP/1.0 501 Not Implemented"]
    );
    assert_eq!(
        statuses("PLAY rtsp://h/a/b RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
        ["RTSP/1.0 455 Method Not Valid in This State"]
    );
    assert_eq!(
        statuses("RECORD rtsp://h/a/b RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
        ["RTSP/1.0 455 Method Not Valid in This State"]
    );
    assert_eq!(
        statuses("GET_PARAMETER rtsp://h/a/b RTSP/1.0\r\nCSeq: 1\r\nSession: other\r\n\r\n"),
        ["RTSP/1.0 454 Session Not Found"]
    );
    assert_eq!(
        statuses("DESCRIBE rtsp://h/onlyapp RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
        ["RTSP/1.0 404 Not Found"]
    );
    let setup = "SETUP rtsp://h/a/b/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n";
    assert_eq!(
        statuses(&format!(
            "{setup}PLAY rtsp://h/a/b RTSP/1.0\r\nCSeq: 2\r\n\r\n"
        )),
        ["RTSP/1.0 200 OK", "RTSP/1.0 454 Session Not Found"],
        "PLAY needs the session"
    );
    assert_eq!(
        statuses(&format!("{setup}SETUP rtsp://h/other/room/trackID=1 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP\r\n\r\n")),
        ["RTSP/1.0 200 OK", "RTSP/1.0 404 Not Found"],
        "one stream per session"
    );
    assert_eq!(
        statuses("SETUP rtsp://h/a/b/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP;multicast\r\n\r\n"),
        ["RTSP/1.0 461 Unsupported Transport"]
    );
    assert_eq!(
        statuses("ANNOUNCE rtsp://h/a/b RTSP/1.0\r\nCSeq: 1\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nv=0"),
        ["RTSP/1.0 415 Unsupported Media Type"]
    );
    assert_eq!(
        statuses("ANNOUNCE rtsp://h/a/b RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0"),
        ["RTSP/1.0 400 Bad Request"],
        "an SDP without media"
    );
    // A player's session cannot RECORD, a publisher's cannot PLAY.
    let play_session =
        format!("{setup}RECORD rtsp://h/a/b RTSP/1.0\r\nCSeq: 2\r\nSession: {ID}\r\n\r\n");
    assert_eq!(
        statuses(&play_session)[1],
        "RTSP/1.0 455 Method Not Valid in This State"
    );
}

#[test]
fn rejected_and_unexpected_answers() {
    let mut session = ServerSession::new(ID.into(), 60);
    assert_eq!(
        session.accept_play(&[]),
        Err(AnswerError::NotPending("PLAY"))
    );
    let mut input = BytesMut::from("DESCRIBE rtsp://h/live/room RTSP/1.0\r\nCSeq: 9\r\n\r\nOPTIONS * RTSP/1.0\r\nCSeq: 10\r\n\r\n");
    let mut events = Vec::new();
    session.feed(&mut input, &mut events).unwrap();
    assert!(session.is_waiting());
    assert!(
        !input.is_empty(),
        "nothing more is read while DESCRIBE waits"
    );
    assert_eq!(
        session.accept_record(),
        Err(AnswerError::NotPending("RECORD"))
    );
    session.reject(404).unwrap();
    session.feed(&mut input, &mut events).unwrap();
    let output = String::from_utf8(session.take_output().to_vec()).unwrap();
    assert!(output.starts_with("RTSP/1.0 404 Not Found\r\nCSeq: 9\r\n"));
    assert!(output.contains("CSeq: 10\r\nPublic:"));
    assert_eq!(session.reject(400), Err(AnswerError::NotPending("any")));
}

#[test]
fn oversized_heads_end_the_session() {
    let mut session = ServerSession::new(ID.into(), 60);
    let mut input = BytesMut::from(&[b'A'; super::super::message::MAX_HEAD + 1][..]);
    assert_eq!(
        session.feed(&mut input, &mut Vec::new()),
        Err(RtspError::HeadTooLarge)
    );
}
