//! Tests for the client session: against the real [`ServerSession`] in memory, and against
//! a scripted server for what the server session never sends (pings, refusals, aggregates).

use super::*;
use crate::frame::Frame;
use crate::rtmp::chunk::TYPE_SET_CHUNK_SIZE;
use crate::rtmp::handshake::{DigestSchema, ServerHandshake, HANDSHAKE_SIZE};
use crate::rtmp::session::{ServerSession, SessionEvent};
use proptest::prelude::*;

const CLIENT_RANDOM: [u8; RANDOM_SIZE] = [0xA5; RANDOM_SIZE];
const SERVER_RANDOM: [u8; RANDOM_SIZE] = [0x5A; RANDOM_SIZE];

fn s(v: &str) -> Amf0Value {
    Amf0Value::String(v.into())
}

fn n(v: f64) -> Amf0Value {
    Amf0Value::Number(v)
}

fn obj(props: &[(&str, Amf0Value)]) -> Amf0Value {
    Amf0Value::Object(
        props
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect(),
    )
}

/// `onMetaData` and its object, as the hub and both sessions carry metadata.
fn metadata(width: f64) -> Bytes {
    Bytes::from(amf::encode_all(&[
        s("onMetaData"),
        Amf0Value::EcmaArray(vec![
            ("width".into(), n(width)),
            ("encoder".into(), s("test")),
        ]),
    ]))
}

/// Deterministic payload bytes of a given length.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// A [`ClientSession`] and a [`ServerSession`] joined in memory. Bytes cross in pieces whose
/// sizes cycle through `splits`, so every read split is exercised; the server answers
/// publish and play the way `accept` says, as the node's driver would.
struct Link {
    client: ClientSession,
    server: ServerSession,
    /// Written by the client, not yet delivered / delivered, not yet consumed.
    to_server: BytesMut,
    server_in: BytesMut,
    to_client: BytesMut,
    client_in: BytesMut,
    splits: Vec<usize>,
    next_split: usize,
    accept: bool,
    /// Feed the client with `feed_with_media` (media to a closure) instead of `feed`.
    media_to_closure: bool,
    client_events: Vec<ClientEvent>,
    server_events: Vec<SessionEvent>,
}

impl Link {
    fn new(splits: Vec<usize>) -> Link {
        Link {
            client: ClientSession::new(CLIENT_RANDOM),
            server: ServerSession::new(SERVER_RANDOM),
            to_server: BytesMut::new(),
            server_in: BytesMut::new(),
            to_client: BytesMut::new(),
            client_in: BytesMut::new(),
            splits,
            next_split: 0,
            accept: true,
            media_to_closure: false,
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// Handshaken and connected to app `live`, with every event so far taken.
    fn connected(splits: Vec<usize>) -> Link {
        let mut link = Link::new(splits);
        link.client
            .connect("live", "rtmp://test/live", vec![])
            .unwrap();
        link.pump();
        assert_eq!(link.client.state(), ClientState::Connected);
        link.take_client_events();
        link
    }

    fn split(&mut self) -> usize {
        let n = self.splits[self.next_split % self.splits.len()].max(1);
        self.next_split += 1;
        n
    }

    fn move_piece(from: &mut BytesMut, to: &mut BytesMut, n: usize) -> bool {
        let n = n.min(from.len());
        to.extend_from_slice(&from.split_to(n));
        n > 0
    }

    /// Move bytes both ways until neither side has anything more to say.
    fn pump(&mut self) {
        loop {
            let mut progress = false;
            self.to_server.extend_from_slice(&self.client.take_output());
            let n = self.split();
            progress |= Link::move_piece(&mut self.to_server, &mut self.server_in, n);
            self.feed_server();
            self.to_client.extend_from_slice(&self.server.take_output());
            let n = self.split();
            progress |= Link::move_piece(&mut self.to_client, &mut self.client_in, n);
            if self.media_to_closure {
                // Back into events, so that tests read both ways alike.
                let mut media = Vec::new();
                let before = self.client_events.len();
                self.client
                    .feed_with_media(&mut self.client_in, &mut self.client_events, |k, t, p| {
                        media.push((k, t, p))
                    })
                    .unwrap();
                assert!(!self.client_events[before..]
                    .iter()
                    .any(|e| matches!(e, ClientEvent::Media { .. })));
                self.client_events
                    .extend(media.into_iter().map(|(kind, timestamp, payload)| {
                        ClientEvent::Media {
                            kind,
                            timestamp,
                            payload,
                        }
                    }));
            } else {
                self.client
                    .feed(&mut self.client_in, &mut self.client_events)
                    .unwrap();
            }
            if !progress && !self.client.has_output() && !self.server.has_output() {
                assert!(self.server_in.is_empty() && self.client_in.is_empty());
                return;
            }
        }
    }

    /// The server stops after a publish or play request until it is answered, so feed it
    /// again after each answer.
    fn feed_server(&mut self) {
        loop {
            let before = self.server_in.len();
            let mut events = Vec::new();
            self.server.feed(&mut self.server_in, &mut events).unwrap();
            let answered = !events.is_empty();
            for event in events {
                match &event {
                    SessionEvent::Publish { .. } if self.accept => self.server.accept_publish(),
                    SessionEvent::Publish { .. } => self
                        .server
                        .reject_publish("NetStream.Publish.BadName", "Stream taken"),
                    SessionEvent::Play { name, .. } if self.accept => {
                        let name = name.clone();
                        self.server.accept_play(&name);
                    }
                    SessionEvent::Play { .. } => self
                        .server
                        .reject_play("NetStream.Play.StreamNotFound", "Stream not found"),
                    _ => {}
                }
                self.server_events.push(event);
            }
            if !answered && self.server_in.len() == before {
                return;
            }
        }
    }

    /// Media the node's fan-out would send this player: the shared, pre-chunked frame,
    /// behind whatever the server session queued.
    fn server_sends(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) {
        self.to_client.extend_from_slice(&self.server.take_output());
        let frame = Frame::new(kind, u64::from(timestamp), payload);
        let stream_id = self.server.play_stream_id().expect("playing");
        self.to_client
            .extend_from_slice(&frame.rtmp_chunks_for(stream_id));
    }

    fn take_client_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.client_events)
    }

    fn take_server_events(&mut self) -> Vec<SessionEvent> {
        std::mem::take(&mut self.server_events)
    }
}

fn status<'a>(level: &'a str, code: &'a str) -> impl Fn(&ClientEvent) -> bool + 'a {
    move |e| matches!(e, ClientEvent::Status(s) if s.level == level && s.code == code)
}

fn media_events(events: &[ClientEvent]) -> Vec<(MediaKind, u32, Bytes)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Media {
                kind,
                timestamp,
                payload,
            } => Some((*kind, *timestamp, payload.clone())),
            _ => None,
        })
        .collect()
}

fn server_media(events: &[SessionEvent]) -> Vec<(MediaKind, u32, Bytes)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Media {
                kind,
                timestamp,
                payload,
            } => Some((*kind, *timestamp, payload.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn events_stay_small() {
    // Every media message a player receives is one event: see `ClientEvent`.
    assert!(std::mem::size_of::<ClientEvent>() <= 48);
}

#[test]
fn connects_to_the_server_session() {
    let mut link = Link::new(vec![usize::MAX]);
    assert!(link.client.has_output(), "C0+C1 are queued at once");
    let extra = vec![("flashVer".to_owned(), s("FMLE/3.0 (test)"))];
    link.client
        .connect("live", "rtmp://test/live", extra)
        .unwrap();
    assert_eq!(link.client.state(), ClientState::Connecting);
    link.pump();
    assert!(link.client.handshake_done());
    assert_eq!(link.server.app(), Some("live"));
    assert_eq!(link.client.state(), ClientState::Connected);
    let events = link.take_client_events();
    let [ClientEvent::Connected {
        properties,
        information,
    }] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert!(properties.get("fmsVer").is_some());
    assert_eq!(
        information.get("code").and_then(Amf0Value::as_str),
        Some("NetConnection.Connect.Success")
    );
    // The server's Set Chunk Size applies to what the client reads, ours to what it writes.
    assert_eq!(link.client.reader.chunk_size(), OUT_CHUNK_SIZE);
    assert_eq!(link.client.writer.chunk_size(), OUT_CHUNK_SIZE);
}

#[test]
fn connects_with_the_digest_handshake() {
    let mut link = Link::new(vec![7, 500, 3]);
    link.client = ClientSession::with_handshake(ClientHandshake::new_complex(
        CLIENT_RANDOM,
        DigestSchema::DigestFirst,
    ));
    link.client
        .connect("live", "rtmp://test/live", vec![])
        .unwrap();
    link.pump();
    assert_eq!(link.client.state(), ClientState::Connected);
}

#[test]
fn publishes_media_to_the_server_session() {
    let mut link = Link::new(vec![usize::MAX]);
    // Publish may be asked for before the connection is even up.
    link.client
        .connect("live", "rtmp://test/live", vec![])
        .unwrap();
    link.client.publish("room?token=1", "live").unwrap();
    link.pump();
    assert_eq!(link.client.state(), ClientState::Publishing);
    assert_eq!(link.client.stream_id(), Some(1));
    let events = link.take_client_events();
    assert!(
        matches!(events[0], ClientEvent::Connected { .. }),
        "{events:?}"
    );
    assert!(events.contains(&ClientEvent::StreamCreated { stream_id: 1 }));
    let start = events
        .iter()
        .position(status("status", "NetStream.Publish.Start"))
        .expect("Publish.Start");
    assert_eq!(events[start + 1], ClientEvent::Publishing);
    // releaseStream and FCPublish are answered; those answers are the driver's to ignore.
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Command(v) if v[0] == s("_result")))
            .count(),
        2
    );
    assert_eq!(
        link.take_server_events(),
        [SessionEvent::Publish {
            app: "live".into(),
            name: "room".into(),
            query: "token=1".into()
        }]
    );

    link.client.set_data_frame(&metadata(1280.0)).unwrap();
    let video = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]);
    link.client
        .send_media(MediaKind::Video, 0, video.clone())
        .unwrap();
    let audio = Bytes::from_static(&[0xAF, 0, 0x12, 0x10]);
    link.client
        .send_media(MediaKind::Audio, 0, audio.clone())
        .unwrap();
    let frame = pattern(10_000, 3);
    link.client
        .send_media(MediaKind::Video, 40, frame.clone())
        .unwrap();
    link.pump();
    assert_eq!(
        server_media(&link.take_server_events()),
        [
            (MediaKind::Metadata, 0, metadata(1280.0)),
            (MediaKind::Video, 0, video),
            (MediaKind::Audio, 0, audio),
            (MediaKind::Video, 40, frame),
        ]
    );

    link.client.delete_stream().unwrap();
    assert_eq!(link.client.state(), ClientState::Connected);
    assert_eq!(link.client.stream_id(), None);
    link.pump();
    assert!(link.take_server_events().contains(&SessionEvent::Unpublish));
    assert!(matches!(
        link.client
            .send_media(MediaKind::Audio, 80, Bytes::from_static(&[0xAF, 1])),
        Err(ClientError::InvalidState {
            state: ClientState::Connected,
            ..
        })
    ));
}

#[test]
fn plays_media_from_the_server_session() {
    let mut link = Link::connected(vec![1, 1000, 13]);
    link.client.play("room").unwrap();
    assert_eq!(link.client.state(), ClientState::CreatingStream);
    link.pump();
    assert_eq!(link.client.state(), ClientState::Playing);
    assert!(matches!(
        link.take_server_events()[..],
        [SessionEvent::Play { ref name, .. }] if name == "room"
    ));
    let events = link.take_client_events();
    let codes: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Status(status) => Some(status.code.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(codes, ["NetStream.Play.Reset", "NetStream.Play.Start",]);
    assert!(events.contains(&ClientEvent::Playing));
    assert!(events.contains(&ClientEvent::UserControl {
        event: user_control::STREAM_BEGIN,
        value: 1
    }));
    assert!(events.contains(&ClientEvent::Data(vec![
        s("|RtmpSampleAccess"),
        Amf0Value::Boolean(true),
        Amf0Value::Boolean(true)
    ])));

    // What a relay needs, in the order it needs it: metadata, sequence headers, frames;
    // wire timestamps, extended ones included.
    let sent = vec![
        (MediaKind::Metadata, 0, metadata(640.0)),
        (
            MediaKind::Video,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
        ),
        (
            MediaKind::Audio,
            0,
            Bytes::from_static(&[0xAF, 0, 0x12, 0x10]),
        ),
        (MediaKind::Video, 0xFF_FFFE, pattern(9000, 1)),
        (MediaKind::Audio, 0x100_0005, pattern(300, 2)),
        (MediaKind::Video, u32::MAX, pattern(5000, 3)),
    ];
    for (kind, timestamp, payload) in &sent {
        link.server_sends(*kind, *timestamp, payload.clone());
    }
    link.pump();
    assert_eq!(media_events(&link.take_client_events()), sent);

    // The end of the stream, as the node tells a player.
    link.server.end_play("room");
    link.pump();
    let events = link.take_client_events();
    assert!(events
        .iter()
        .any(status("status", "NetStream.Play.UnpublishNotify")));
    assert!(events.iter().any(status("status", "NetStream.Play.Stop")));
    assert!(events.contains(&ClientEvent::UserControl {
        event: user_control::STREAM_EOF,
        value: 1
    }));
    assert_eq!(link.client.state(), ClientState::Connected);
}

#[test]
fn a_refused_publish_or_play_leaves_the_stream_for_another_try() {
    let mut link = Link::connected(vec![usize::MAX]);
    link.accept = false;
    link.client.publish("room", "live").unwrap();
    link.pump();
    let events = link.take_client_events();
    assert!(events
        .iter()
        .any(status("error", "NetStream.Publish.BadName")));
    assert!(!events.contains(&ClientEvent::Publishing));
    assert_eq!(link.client.state(), ClientState::Connected);
    assert_eq!(link.client.stream_id(), Some(1));

    link.client.play("room").unwrap();
    assert_eq!(
        link.client.state(),
        ClientState::PlayRequested,
        "no second createStream"
    );
    link.pump();
    assert!(link
        .take_client_events()
        .iter()
        .any(status("error", "NetStream.Play.StreamNotFound")));
    assert_eq!(link.client.state(), ClientState::Connected);

    link.accept = true;
    link.client.publish("room", "live").unwrap();
    link.pump();
    assert_eq!(link.client.state(), ClientState::Publishing);
    assert_eq!(link.client.stream_id(), Some(1));
}

#[test]
fn calls_that_make_no_sense_now_are_errors() {
    let mut link = Link::new(vec![usize::MAX]);
    assert!(matches!(
        link.client.publish("room", "live"),
        Err(ClientError::InvalidState {
            action: "publish",
            state: ClientState::Idle
        })
    ));
    assert!(link.client.delete_stream().is_err());
    link.client
        .connect("live", "rtmp://test/live", vec![])
        .unwrap();
    assert!(link
        .client
        .connect("live", "rtmp://test/live", vec![])
        .is_err());
    link.client.play("room").unwrap();
    assert!(
        link.client.publish("room", "live").is_err(),
        "one request at a time"
    );
    link.pump();
    assert_eq!(link.client.state(), ClientState::Playing);
    assert!(link.client.publish("room", "live").is_err());
    assert!(link
        .client
        .send_media(MediaKind::Video, 0, Bytes::from_static(&[0x17]))
        .is_err());
}

#[test]
fn exact_messages_and_commands_go_out_as_given() {
    let mut link = Link::connected(vec![usize::MAX]);
    // A tiny chunk size sent by hand: the writer follows it, the server reads on.
    let set_chunk_size = RtmpMessage {
        csid: CSID_CONTROL,
        timestamp: 0,
        type_id: TYPE_SET_CHUNK_SIZE,
        stream_id: 0,
        payload: Bytes::copy_from_slice(&7u32.to_be_bytes()),
    };
    link.client.send_message(&set_chunk_size);
    assert_eq!(link.client.writer.chunk_size(), 7);
    link.client
        .send_command(0, &[s("createStream"), n(42.0), Amf0Value::Null]);
    link.pump();
    // Not the session's transaction: the answer is the driver's.
    let events = link.take_client_events();
    assert_eq!(
        events,
        [ClientEvent::Command(vec![
            s("_result"),
            n(42.0),
            Amf0Value::Null,
            n(1.0)
        ])]
    );
    assert_eq!(link.client.stream_id(), None);
}

#[test]
fn large_chunk_sizes_and_media_cross_intact() {
    let mut link = Link::connected(vec![4096, 1, 65536]);
    link.client.set_chunk_size(60_000);
    link.client.publish("room", "live").unwrap();
    link.pump();
    let frame = pattern(200_000, 9);
    link.client
        .send_media(MediaKind::Video, 1, frame.clone())
        .unwrap();
    link.pump();
    assert_eq!(
        server_media(&link.take_server_events()),
        [(MediaKind::Video, 1, frame)]
    );
}

/// A scripted server: a real server handshake, then whatever messages a test writes.
struct ScriptedServer {
    handshake: ServerHandshake,
    writer: ChunkWriter,
    reader: ChunkReader,
    client: ClientSession,
    events: Vec<ClientEvent>,
    /// What the client sent, read back into messages.
    received: Vec<RtmpMessage>,
}

impl ScriptedServer {
    /// Handshake done and the client's connect read (not answered).
    fn new() -> ScriptedServer {
        let mut server = ScriptedServer {
            handshake: ServerHandshake::new(SERVER_RANDOM),
            writer: ChunkWriter::new(),
            reader: ChunkReader::new(),
            client: ClientSession::new(CLIENT_RANDOM),
            events: Vec::new(),
            received: Vec::new(),
        };
        server
            .client
            .connect("live", "rtmp://test/live", vec![])
            .unwrap();
        let mut c0c1 = server.client.take_output();
        let mut s0s1s2 = BytesMut::new();
        assert!(!server.handshake.feed(&mut c0c1, &mut s0s1s2).unwrap());
        server.client.feed(&mut s0s1s2, &mut server.events).unwrap();
        let mut c2_and_more = server.client.take_output();
        assert!(server
            .handshake
            .feed(&mut c2_and_more, &mut s0s1s2)
            .unwrap());
        while let Some(msg) = server.reader.read(&mut c2_and_more).unwrap() {
            server.received.push(msg);
        }
        assert!(c2_and_more.is_empty());
        server
    }

    /// Send `msg` to the client; returns what the client answered.
    fn send(
        &mut self,
        csid: u32,
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> Vec<RtmpMessage> {
        let mut bytes = BytesMut::new();
        self.writer.write(
            &RtmpMessage {
                csid,
                timestamp,
                type_id,
                stream_id,
                payload: Bytes::copy_from_slice(payload),
            },
            &mut bytes,
        );
        self.client.feed(&mut bytes, &mut self.events).unwrap();
        assert!(bytes.is_empty());
        let mut out = self.client.take_output();
        let mut answers = Vec::new();
        while let Some(msg) = self.reader.read(&mut out).unwrap() {
            answers.push(msg);
        }
        answers
    }

    fn command(&mut self, stream_id: u32, values: &[Amf0Value]) -> Vec<RtmpMessage> {
        self.send(
            3,
            msg_type::COMMAND_AMF0,
            stream_id,
            0,
            &amf::encode_all(values),
        )
    }

    fn control(&mut self, type_id: u8, body: &[u8]) -> Vec<RtmpMessage> {
        self.send(2, type_id, 0, 0, body)
    }
}

fn control_message(type_id: u8, body: &[u8]) -> RtmpMessage {
    RtmpMessage {
        csid: CSID_CONTROL,
        timestamp: 0,
        type_id,
        stream_id: 0,
        payload: Bytes::copy_from_slice(body),
    }
}

#[test]
fn connect_goes_out_right_after_the_handshake_behind_the_chunk_size() {
    let server = ScriptedServer::new();
    assert_eq!(server.received.len(), 2, "{:?}", server.received);
    assert_eq!(
        server.received[0],
        control_message(msg_type::SET_CHUNK_SIZE, &OUT_CHUNK_SIZE.to_be_bytes())
    );
    let connect = amf::decode_all(&server.received[1].payload).unwrap();
    assert_eq!(connect[0], s("connect"));
    assert_eq!(connect[2].get("app"), Some(&s("live")));
    assert_eq!(connect[2].get("tcUrl"), Some(&s("rtmp://test/live")));
}

#[test]
fn answers_pings_windows_and_bandwidth_on_its_own() {
    let mut server = ScriptedServer::new();
    let mut ping = user_control::PING_REQUEST.to_be_bytes().to_vec();
    ping.extend_from_slice(&1234u32.to_be_bytes());
    let mut pong = user_control::PING_RESPONSE.to_be_bytes().to_vec();
    pong.extend_from_slice(&1234u32.to_be_bytes());
    assert_eq!(
        server.control(msg_type::USER_CONTROL, &ping),
        [control_message(msg_type::USER_CONTROL, &pong)]
    );
    let bandwidth = [0, 0, 0x13, 0x88, 2];
    assert_eq!(
        server.control(msg_type::SET_PEER_BANDWIDTH, &bandwidth),
        [control_message(
            msg_type::WINDOW_ACK_SIZE,
            &5000u32.to_be_bytes()
        )]
    );
    assert_eq!(server.control(msg_type::SET_PEER_BANDWIDTH, &bandwidth), []);
    // A window of 100 bytes: the media message after it crosses it.
    assert_eq!(
        server.control(msg_type::WINDOW_ACK_SIZE, &100u32.to_be_bytes()),
        []
    );
    let acks = server.send(6, msg_type::VIDEO, 1, 0, &pattern(150, 0));
    let [ack] = &acks[..] else { panic!("{acks:?}") };
    assert_eq!(ack.type_id, msg_type::ACKNOWLEDGEMENT);
    let seq = read_u32(&ack.payload).unwrap();
    assert_eq!(u64::from(seq), server.client.received);
    assert!(seq > 100);
    assert!(server
        .events
        .iter()
        .all(|e| !matches!(e, ClientEvent::UserControl { .. })));
}

#[test]
fn a_refused_connect_is_the_end() {
    let mut server = ScriptedServer::new();
    server.client.play("room").unwrap();
    let information = obj(&[
        ("level", s("error")),
        ("code", s("NetConnection.Connect.Rejected")),
        ("description", s("go away")),
    ]);
    assert_eq!(
        server.command(0, &[s("_error"), n(1.0), Amf0Value::Null, information]),
        []
    );
    assert_eq!(server.client.state(), ClientState::Refused);
    assert_eq!(
        server.events,
        [ClientEvent::Status(Box::new(Status {
            level: "error".into(),
            code: "NetConnection.Connect.Rejected".into(),
            description: "go away".into()
        }))]
    );
    assert!(server.client.play("room").is_err());
}

#[test]
fn a_refused_create_stream_drops_the_request() {
    let mut server = ScriptedServer::new();
    server.command(0, &[s("_result"), n(1.0), Amf0Value::Null, Amf0Value::Null]);
    server.client.play("room").unwrap();
    let mut out = server.client.take_output();
    let create = server.reader.read(&mut out).unwrap().unwrap();
    assert_eq!(
        amf::decode_all(&create.payload).unwrap(),
        [s("createStream"), n(2.0), Amf0Value::Null]
    );
    server.command(0, &[s("_error"), n(2.0), Amf0Value::Null, Amf0Value::Null]);
    assert_eq!(server.client.state(), ClientState::Connected);
    assert!(server
        .events
        .iter()
        .any(status("error", "NetConnection.Call.Failed")));
}

#[test]
fn aggregates_amf3_and_other_messages_from_the_server() {
    let mut server = ScriptedServer::new();
    server.command(0, &[s("_result"), n(1.0), Amf0Value::Null, Amf0Value::Null]);
    server.events.clear();
    // Two FLV tags at 100 and 140 in an aggregate stamped 1000.
    let mut aggregate = Vec::new();
    for (tag_type, ts, body) in [
        (9u8, 100u32, &[0x17u8, 1, 0, 0, 0, 7][..]),
        (8, 140, &[0xAF, 1, 9][..]),
    ] {
        aggregate.push(tag_type);
        aggregate.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        aggregate.extend_from_slice(&ts.to_be_bytes()[1..]);
        aggregate.push((ts >> 24) as u8);
        aggregate.extend_from_slice(&[0, 0, 0]);
        aggregate.extend_from_slice(body);
        aggregate.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
    }
    server.send(7, msg_type::AGGREGATE, 1, 1000, &aggregate);
    // AMF3 command: a format byte before AMF0 values.
    let mut amf3 = vec![0];
    amf3.extend_from_slice(&amf::encode_all(&[
        s("onStatus"),
        n(0.0),
        Amf0Value::Null,
        obj(&[
            ("level", s("status")),
            ("code", s("NetStream.Play.PublishNotify")),
        ]),
    ]));
    server.send(3, msg_type::COMMAND_AMF3, 1, 0, &amf3);
    server.command(0, &[s("onBWDone"), n(0.0), Amf0Value::Null]);
    server.send(
        5,
        msg_type::DATA_AMF0,
        1,
        0,
        &amf::encode_all(&[s("onCuePoint"), n(1.0)]),
    );
    // An encoder's metadata passed through by a server: the wrapper goes.
    let mut wrapped = amf::encode_all(&[s("@setDataFrame")]);
    wrapped.extend_from_slice(&metadata(1.0));
    server.send(5, msg_type::DATA_AMF0, 1, 5, &wrapped);
    // Empty media carries nothing.
    server.send(6, msg_type::VIDEO, 1, 0, &[]);
    assert_eq!(
        server.events,
        [
            ClientEvent::Media {
                kind: MediaKind::Video,
                timestamp: 1000,
                payload: Bytes::from_static(&[0x17, 1, 0, 0, 0, 7])
            },
            ClientEvent::Media {
                kind: MediaKind::Audio,
                timestamp: 1040,
                payload: Bytes::from_static(&[0xAF, 1, 9])
            },
            ClientEvent::Status(Box::new(Status {
                level: "status".into(),
                code: "NetStream.Play.PublishNotify".into(),
                description: String::new()
            })),
            ClientEvent::Command(vec![s("onBWDone"), n(0.0), Amf0Value::Null]),
            ClientEvent::Data(vec![s("onCuePoint"), n(1.0)]),
            ClientEvent::Media {
                kind: MediaKind::Metadata,
                timestamp: 5,
                payload: metadata(1.0)
            },
        ]
    );
}

#[test]
fn malformed_server_messages_are_errors() {
    let cases: [(u8, &[u8]); 5] = [
        (msg_type::WINDOW_ACK_SIZE, &[0, 1]),
        (msg_type::SET_PEER_BANDWIDTH, &[]),
        (msg_type::USER_CONTROL, &[0, 6, 1]),
        (msg_type::COMMAND_AMF0, &[0x02, 0, 9, b'x']),
        (msg_type::AGGREGATE, &[9, 0, 0, 5]),
    ];
    for (type_id, body) in cases {
        let mut server = ScriptedServer::new();
        let mut bytes = BytesMut::new();
        server.writer.write(
            &RtmpMessage {
                csid: 3,
                timestamp: 0,
                type_id,
                stream_id: 0,
                payload: Bytes::copy_from_slice(body),
            },
            &mut bytes,
        );
        let result = server.client.feed(&mut bytes, &mut server.events);
        assert!(
            matches!(
                result,
                Err(ClientError::Malformed(_) | ClientError::Amf { .. })
            ),
            "type {type_id}: {result:?}"
        );
    }
}

#[test]
fn a_bad_server_version_fails_the_handshake() {
    let mut client = ClientSession::new(CLIENT_RANDOM);
    let mut input = BytesMut::from(&[6u8; 1 + HANDSHAKE_SIZE][..]);
    assert!(matches!(
        client.feed(&mut input, &mut Vec::new()),
        Err(ClientError::Handshake(HandshakeError::UnsupportedVersion(
            6
        )))
    ));
}

// ---- property tests: against the real server session, at random splits and chunk sizes ----

fn kind_strategy() -> impl Strategy<Value = MediaKind> {
    prop_oneof![
        4 => Just(MediaKind::Video),
        3 => Just(MediaKind::Audio),
        1 => Just(MediaKind::Metadata),
    ]
}

/// Media as (kind, timestamp step, payload length, seed); steps may jump across the
/// extended timestamp boundary.
fn media_strategy() -> impl Strategy<Value = Vec<(MediaKind, u32, usize, u8)>> {
    let step = prop_oneof![4 => 0u32..100, 1 => 0xFF_FF00u32..0x100_0100];
    let len = prop_oneof![3 => 1usize..300, 2 => 1usize..20_000, 1 => Just(4096), 1 => Just(4097)];
    prop::collection::vec((kind_strategy(), step, len, any::<u8>()), 1..24)
}

fn splits_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..8, 1usize..400, 1usize..70_000], 1..8)
}

/// The concrete media: metadata gets a real `onMetaData` object (its payload is AMF).
fn build_media(spec: &[(MediaKind, u32, usize, u8)]) -> Vec<(MediaKind, u32, Bytes)> {
    let mut timestamp = 0u32;
    spec.iter()
        .map(|&(kind, step, len, seed)| {
            timestamp = timestamp.wrapping_add(step);
            let payload = match kind {
                MediaKind::Metadata => metadata(f64::from(seed)),
                _ => pattern(len, seed),
            };
            (kind, timestamp, payload)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn publish_end_to_end(
        splits in splits_strategy(),
        chunk_size in prop_oneof![Just(None), (1u32..=70_000).prop_map(Some)],
        media in media_strategy(),
        pump_every in 1usize..6,
    ) {
        let mut link = Link::new(splits);
        link.client.connect("live", "rtmp://test/live", vec![]).unwrap();
        if let Some(size) = chunk_size {
            link.client.set_chunk_size(size);
        }
        link.client.publish("room", "live").unwrap();
        link.pump();
        prop_assert_eq!(link.client.state(), ClientState::Publishing);
        let media = build_media(&media);
        for (i, (kind, timestamp, payload)) in media.iter().enumerate() {
            link.client.send_media(*kind, *timestamp, payload.clone()).unwrap();
            if i % pump_every == 0 {
                link.pump();
            }
        }
        link.client.delete_stream().unwrap();
        link.pump();
        let events = link.take_server_events();
        prop_assert_eq!(server_media(&events), media);
        prop_assert_eq!(events.last(), Some(&SessionEvent::Unpublish));
    }

    #[test]
    fn play_end_to_end(
        splits in splits_strategy(),
        media in media_strategy(),
        pump_every in 1usize..6,
        media_to_closure in any::<bool>(),
    ) {
        let mut link = Link::new(splits);
        link.media_to_closure = media_to_closure;
        link.client.connect("live", "rtmp://test/live", vec![]).unwrap();
        link.client.play("room").unwrap();
        link.pump();
        prop_assert_eq!(link.client.state(), ClientState::Playing);
        link.take_client_events();
        let media = build_media(&media);
        for (i, (kind, timestamp, payload)) in media.iter().enumerate() {
            link.server_sends(*kind, *timestamp, payload.clone());
            if i % pump_every == 0 {
                link.pump();
            }
        }
        link.pump();
        // Metadata goes out at time 0 (see Frame::wire_timestamp).
        let expected: Vec<_> = media
            .into_iter()
            .map(|(kind, timestamp, payload)| {
                let timestamp = if kind == MediaKind::Metadata { 0 } else { timestamp };
                (kind, timestamp, payload)
            })
            .collect();
        prop_assert_eq!(media_events(&link.take_client_events()), expected);
    }

    #[test]
    fn random_server_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4000),
        splits in prop::collection::vec(1usize..64, 1..6),
    ) {
        let mut client = ClientSession::new(CLIENT_RANDOM);
        client.connect("live", "rtmp://test/live", vec![]).unwrap();
        client.play("room").unwrap();
        let mut handshake = vec![3u8];
        handshake.resize(1 + 2 * HANDSHAKE_SIZE, 0);
        let mut input = BytesMut::from(&handshake[..]);
        client.feed(&mut input, &mut Vec::new()).unwrap();
        prop_assert!(client.handshake_done());
        let mut events = Vec::new();
        let mut pos = 0;
        for split in splits.iter().cycle() {
            if pos >= bytes.len() {
                break;
            }
            let end = (pos + split).min(bytes.len());
            input.extend_from_slice(&bytes[pos..end]);
            pos = end;
            if client.feed(&mut input, &mut events).is_err() {
                break;
            }
            let _ = client.take_output();
        }
    }
}
