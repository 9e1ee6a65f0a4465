//! Tests for the server session state machine.

use super::*;
use crate::flv;
use crate::rtmp::handshake::ClientHandshake;
use proptest::prelude::*;

const SERVER_RANDOM: [u8; 1528] = [0x5A; 1528];
const CLIENT_RANDOM: [u8; 1528] = [0xA5; 1528];

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

fn ecma(props: &[(&str, Amf0Value)]) -> Amf0Value {
    Amf0Value::EcmaArray(
        props
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect(),
    )
}

/// Chunk stream ids as ffmpeg picks them.
fn client_csid(type_id: u8) -> u32 {
    match type_id {
        1..=6 => 2,
        msg_type::AUDIO => 4,
        msg_type::VIDEO => 6,
        msg_type::DATA_AMF0 | msg_type::DATA_AMF3 => 5,
        _ => 3,
    }
}

/// Drive the handshake like a client and return the session with it done.
fn handshaken_session() -> ServerSession {
    let mut session = ServerSession::new(SERVER_RANDOM);
    let mut hs = ClientHandshake::new(CLIENT_RANDOM);
    let mut c0c1 = BytesMut::new();
    hs.start(&mut c0c1);
    let mut events = Vec::new();
    session.feed(&mut c0c1, &mut events).unwrap();
    assert!(c0c1.is_empty() && events.is_empty());
    assert!(!session.handshake_done());
    let mut s0s1s2 = session.take_output();
    let mut c2 = BytesMut::new();
    assert!(hs.feed(&mut s0s1s2, &mut c2).unwrap());
    session.feed(&mut c2, &mut events).unwrap();
    assert!(c2.is_empty() && events.is_empty());
    assert!(session.handshake_done());
    session
}

/// A client talking to a [`ServerSession`] in memory.
struct Client {
    session: ServerSession,
    writer: ChunkWriter,
    reader: ChunkReader,
    /// Client bytes written but not consumed by the session yet.
    pending: BytesMut,
    /// Bytes the session consumed after the handshake.
    consumed: u64,
    next_tid: f64,
}

impl Client {
    fn new() -> Client {
        Client {
            session: handshaken_session(),
            writer: ChunkWriter::new(),
            reader: ChunkReader::new(),
            pending: BytesMut::new(),
            consumed: 0,
            next_tid: 1.0,
        }
    }

    /// Handshake and `connect` to app `live`, with the replies already read.
    fn connected() -> Client {
        let mut c = Client::new();
        let events = c.command(0, "connect", vec![obj(&[("app", s("live"))])]);
        assert!(events.is_empty());
        c.replies();
        c
    }

    /// Connected, createStream'ed and with `publish room` accepted.
    fn publishing() -> Client {
        let mut c = Client::connected();
        c.command(0, "createStream", vec![Amf0Value::Null]);
        let events = c.command(1, "publish", vec![Amf0Value::Null, s("room"), s("live")]);
        assert!(matches!(events[..], [SessionEvent::Publish { .. }]));
        c.session.accept_publish();
        c.replies();
        c
    }

    /// Connected, createStream'ed and with `play room` accepted.
    fn playing() -> Client {
        let mut c = Client::connected();
        c.command(0, "createStream", vec![Amf0Value::Null]);
        let events = c.command(1, "play", vec![Amf0Value::Null, s("room")]);
        assert!(matches!(events[..], [SessionEvent::Play { .. }]));
        c.session.accept_play("room");
        c.replies();
        c
    }

    fn write(&mut self, type_id: u8, stream_id: u32, timestamp: u32, payload: impl Into<Bytes>) {
        let msg = RtmpMessage {
            csid: client_csid(type_id),
            timestamp,
            type_id,
            stream_id,
            payload: payload.into(),
        };
        self.writer.write(&msg, &mut self.pending);
    }

    /// Write a command `name(tid, args...)`, numbering transactions like ffmpeg.
    fn write_command(&mut self, stream_id: u32, name: &str, args: Vec<Amf0Value>) {
        let mut values = vec![s(name), n(self.next_tid)];
        self.next_tid += 1.0;
        values.extend(args);
        self.write(
            msg_type::COMMAND_AMF0,
            stream_id,
            0,
            amf::encode_all(&values),
        );
    }

    /// Feed the session once with what is pending.
    fn pump(&mut self) -> Result<Vec<SessionEvent>, SessionError> {
        let before = self.pending.len();
        let mut events = Vec::new();
        let result = self.session.feed(&mut self.pending, &mut events);
        self.consumed += (before - self.pending.len()) as u64;
        result.map(|()| events)
    }

    fn command(&mut self, stream_id: u32, name: &str, args: Vec<Amf0Value>) -> Vec<SessionEvent> {
        self.write_command(stream_id, name, args);
        self.pump().unwrap()
    }

    fn media(&mut self, type_id: u8, timestamp: u32, payload: &[u8]) -> Vec<SessionEvent> {
        self.write(type_id, 1, timestamp, payload.to_vec());
        self.pump().unwrap()
    }

    /// Every message the session sent since the last call, with its size on the wire.
    fn replies_sized(&mut self) -> Vec<(RtmpMessage, usize)> {
        let mut out = self.session.take_output();
        let mut msgs = Vec::new();
        loop {
            let before = out.len();
            match self.reader.read(&mut out).unwrap() {
                Some(msg) => msgs.push((msg, before - out.len())),
                None => break,
            }
        }
        assert!(out.is_empty(), "session output ends mid-message");
        msgs
    }

    fn replies(&mut self) -> Vec<RtmpMessage> {
        self.replies_sized().into_iter().map(|(m, _)| m).collect()
    }
}

fn decode(msg: &RtmpMessage) -> Vec<Amf0Value> {
    assert!(matches!(
        msg.type_id,
        msg_type::COMMAND_AMF0 | msg_type::DATA_AMF0
    ));
    amf::decode_all(&msg.payload).unwrap()
}

/// `onStatus` code of a command or data message, if it is one.
fn status_code(msg: &RtmpMessage) -> Option<String> {
    if !matches!(msg.type_id, msg_type::COMMAND_AMF0 | msg_type::DATA_AMF0) {
        return None;
    }
    let values = decode(msg);
    if values.first()?.as_str()? != "onStatus" {
        return None;
    }
    let info = values.iter().skip(1).find(|v| v.get("code").is_some())?;
    Some(info.get("code")?.as_str()?.to_owned())
}

fn user_control(msg: &RtmpMessage) -> Option<(u16, u32)> {
    if msg.type_id != msg_type::USER_CONTROL || msg.payload.len() != 6 {
        return None;
    }
    let p = &msg.payload;
    Some((
        u16::from_be_bytes([p[0], p[1]]),
        u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
    ))
}

fn media(kind: MediaKind, timestamp: u32, payload: &[u8]) -> SessionEvent {
    SessionEvent::Media {
        kind,
        timestamp,
        payload: Bytes::copy_from_slice(payload),
    }
}

const AAC_RAW: &[u8] = &[0xAF, 0x01, 0x21, 0x10];
const AVC_KEY: &[u8] = &[0x17, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x65];

// --- handshake and connect ---

#[test]
fn handshake_answers_s0_s1_s2_and_holds_following_bytes() {
    let mut session = ServerSession::new(SERVER_RANDOM);
    let mut hs = ClientHandshake::new(CLIENT_RANDOM);
    let mut input = BytesMut::new();
    hs.start(&mut input);
    let mut events = Vec::new();
    session.feed(&mut input, &mut events).unwrap();
    let mut answer = session.take_output();
    assert_eq!(answer.len(), 1 + 2 * 1536);
    let mut c2 = BytesMut::new();
    assert!(hs.feed(&mut answer, &mut c2).unwrap());
    // C2 and connect in one read: the connect must be parsed right after C2.
    let mut writer = ChunkWriter::new();
    let connect = amf::encode_all(&[s("connect"), n(1.0), obj(&[("app", s("live"))])]);
    let msg = RtmpMessage {
        csid: 3,
        timestamp: 0,
        type_id: 20,
        stream_id: 0,
        payload: connect.into(),
    };
    writer.write(&msg, &mut c2);
    session.feed(&mut c2, &mut events).unwrap();
    assert!(c2.is_empty());
    assert_eq!(session.app(), Some("live"));
}

#[test]
fn connect_answers_window_bandwidth_chunk_size_and_success() {
    let mut c = Client::new();
    let events = c.command(
        0,
        "connect",
        vec![obj(&[("app", s("live")), ("objectEncoding", n(0.0))])],
    );
    assert!(events.is_empty());
    assert_eq!(c.session.app(), Some("live"));
    let replies = c.replies_sized();
    let types: Vec<u8> = replies.iter().map(|(m, _)| m.type_id).collect();
    assert_eq!(types, [5, 6, 1, 20]);
    assert_eq!(&replies[0].0.payload[..], &2_500_000u32.to_be_bytes());
    assert_eq!(&replies[1].0.payload[..], &[0x00, 0x26, 0x25, 0xA0, 2]);
    assert_eq!(&replies[2].0.payload[..], &4096u32.to_be_bytes());
    for (m, _) in &replies[..3] {
        assert_eq!((m.csid, m.stream_id), (CSID_CONTROL, 0));
    }

    let (result, wire_len) = &replies[3];
    let values = decode(result);
    assert_eq!(values[0], s("_result"));
    assert_eq!(values[1], n(1.0));
    assert_eq!(
        values[3].get("code"),
        Some(&s("NetConnection.Connect.Success"))
    );
    assert_eq!(values[3].get("level"), Some(&s("status")));
    // Sent after Set Chunk Size: one chunk (12-byte header) though it is over 128 bytes.
    assert!(result.payload.len() > 128);
    assert_eq!(*wire_len, 12 + result.payload.len());
    assert_eq!(c.reader.chunk_size(), 4096);
}

#[test]
fn connect_app_loses_query_and_slashes_and_echoes_object_encoding() {
    let mut c = Client::new();
    c.command(
        0,
        "connect",
        vec![obj(&[
            ("app", s("/live/?vhost=a")),
            ("objectEncoding", n(3.0)),
        ])],
    );
    assert_eq!(c.session.app(), Some("live"));
    let result = c.replies().pop().unwrap();
    assert_eq!(decode(&result)[3].get("objectEncoding"), Some(&n(3.0)));
}

#[test]
fn output_after_connect_is_chunked_at_4096() {
    let mut c = Client::connected();
    c.command(0, "createStream", vec![Amf0Value::Null]);
    c.replies();
    let long_name = "n".repeat(1000);
    let events = c.command(1, "play", vec![Amf0Value::Null, s(&long_name)]);
    assert_eq!(events.len(), 1);
    c.session.accept_play(&long_name);
    let replies = c.replies_sized();
    let reset = replies
        .iter()
        .find(|(m, _)| status_code(m).as_deref() == Some("NetStream.Play.Reset"))
        .unwrap();
    assert!(reset.0.payload.len() > 1000);
    // Either a type-0 (12) or a compressed header, but never a continuation chunk.
    assert!(
        reset.1 <= 12 + reset.0.payload.len(),
        "{} bytes on the wire",
        reset.1
    );
}

// --- publish ---

#[test]
fn ffmpeg_publish_sequence() {
    let mut c = Client::connected();
    assert!(c
        .command(0, "releaseStream", vec![Amf0Value::Null, s("room")])
        .is_empty());
    assert!(c
        .command(0, "FCPublish", vec![Amf0Value::Null, s("room")])
        .is_empty());
    let replies = c.replies();
    assert_eq!(replies.len(), 2);
    assert_eq!(decode(&replies[0])[..2], [s("_result"), n(2.0)]);
    assert_eq!(decode(&replies[1])[..2], [s("_result"), n(3.0)]);

    assert!(c
        .command(0, "createStream", vec![Amf0Value::Null])
        .is_empty());
    let replies = c.replies();
    assert_eq!(
        decode(&replies[0]),
        [s("_result"), n(4.0), Amf0Value::Null, n(1.0)]
    );

    let events = c.command(
        1,
        "publish",
        vec![Amf0Value::Null, s("room?token=x"), s("live")],
    );
    assert_eq!(
        events,
        [SessionEvent::Publish {
            app: "live".into(),
            name: "room".into(),
            query: "token=x".into()
        }]
    );
    assert!(
        !c.session.has_output(),
        "nothing is answered before the driver decides"
    );

    c.session.accept_publish();
    let replies = c.replies();
    assert_eq!(
        replies.iter().filter_map(user_control).collect::<Vec<_>>(),
        [(0, 1)]
    );
    let start = replies.iter().find(|m| status_code(m).is_some()).unwrap();
    assert_eq!(
        status_code(start).as_deref(),
        Some("NetStream.Publish.Start")
    );
    assert_eq!(start.stream_id, 1);
    assert_eq!(decode(start)[3].get("level"), Some(&s("status")));
}

#[test]
fn second_create_stream_gets_the_next_id() {
    let mut c = Client::connected();
    c.command(0, "createStream", vec![Amf0Value::Null]);
    c.command(0, "createStream", vec![Amf0Value::Null]);
    let ids: Vec<Amf0Value> = c.replies().iter().map(|m| decode(m)[3].clone()).collect();
    assert_eq!(ids, [n(1.0), n(2.0)]);
}

#[test]
fn reject_publish_sends_bad_name_and_drops_media() {
    let mut c = Client::connected();
    c.command(0, "createStream", vec![Amf0Value::Null]);
    c.command(1, "publish", vec![Amf0Value::Null, s("room"), s("live")]);
    c.replies();
    c.session
        .reject_publish("NetStream.Publish.BadName", "taken");
    let replies = c.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        status_code(&replies[0]).as_deref(),
        Some("NetStream.Publish.BadName")
    );
    assert_eq!(replies[0].stream_id, 1);
    assert_eq!(decode(&replies[0])[3].get("level"), Some(&s("error")));
    assert!(c.media(msg_type::AUDIO, 0, AAC_RAW).is_empty());
}

#[test]
fn accept_without_pending_publish_sends_nothing() {
    let mut c = Client::connected();
    c.session.accept_publish();
    c.session.reject_publish("NetStream.Publish.BadName", "x");
    c.session.accept_play("room");
    assert!(!c.session.has_output());
}

#[test]
fn second_publish_on_a_connection_is_refused_without_event() {
    let mut c = Client::publishing();
    let events = c.command(1, "publish", vec![Amf0Value::Null, s("other"), s("live")]);
    assert!(events.is_empty());
    let replies = c.replies();
    assert_eq!(
        status_code(&replies[0]).as_deref(),
        Some("NetStream.Publish.BadName")
    );
    // Still publishing the first stream.
    assert_eq!(
        c.media(msg_type::AUDIO, 5, AAC_RAW),
        [media(MediaKind::Audio, 5, AAC_RAW)]
    );
}

#[test]
fn media_behind_publish_in_one_feed_waits_for_the_answer() {
    let mut c = Client::connected();
    c.command(0, "createStream", vec![Amf0Value::Null]);
    c.write_command(1, "publish", vec![Amf0Value::Null, s("room"), s("live")]);
    c.write(msg_type::AUDIO, 1, 10, AAC_RAW.to_vec());
    c.write(msg_type::VIDEO, 1, 20, AVC_KEY.to_vec());
    let events = c.pump().unwrap();
    assert!(matches!(events[..], [SessionEvent::Publish { .. }]));
    assert!(!c.pending.is_empty(), "media left for the next feed");
    c.session.accept_publish();
    let events = c.pump().unwrap();
    assert_eq!(
        events,
        [
            media(MediaKind::Audio, 10, AAC_RAW),
            media(MediaKind::Video, 20, AVC_KEY)
        ]
    );
    assert!(c.pending.is_empty());
}

#[test]
fn media_before_publish_is_accepted_is_dropped() {
    let mut c = Client::connected();
    c.command(0, "createStream", vec![Amf0Value::Null]);
    assert!(c.media(msg_type::AUDIO, 0, AAC_RAW).is_empty());
    assert!(c.media(msg_type::VIDEO, 0, AVC_KEY).is_empty());
    c.command(1, "publish", vec![Amf0Value::Null, s("room"), s("live")]);
    c.session.accept_publish();
    assert_eq!(
        c.media(msg_type::AUDIO, 1234, AAC_RAW),
        [media(MediaKind::Audio, 1234, AAC_RAW)]
    );
    assert_eq!(
        c.media(msg_type::VIDEO, 1250, AVC_KEY),
        [media(MediaKind::Video, 1250, AVC_KEY)]
    );
}

#[test]
fn media_keeps_large_wire_timestamps() {
    let mut c = Client::publishing();
    let ts = 0xFFFF_FF00;
    assert_eq!(
        c.media(msg_type::VIDEO, ts, AVC_KEY),
        [media(MediaKind::Video, ts, AVC_KEY)]
    );
}

#[test]
fn media_on_another_stream_id_or_empty_is_dropped() {
    let mut c = Client::publishing();
    c.write(msg_type::AUDIO, 2, 0, AAC_RAW.to_vec());
    c.write(msg_type::VIDEO, 1, 0, Bytes::new());
    assert!(c.pump().unwrap().is_empty());
}

// --- metadata ---

fn metadata_object() -> Amf0Value {
    ecma(&[
        ("width", n(1280.0)),
        ("height", n(720.0)),
        ("encoder", s("Lavf61")),
    ])
}

fn metadata_payload_of(event: &SessionEvent) -> Vec<Amf0Value> {
    match event {
        SessionEvent::Media {
            kind: MediaKind::Metadata,
            payload,
            ..
        } => amf::decode_all(payload).unwrap(),
        other => panic!("not metadata: {other:?}"),
    }
}

#[test]
fn set_data_frame_becomes_metadata_without_the_wrapper() {
    let mut c = Client::publishing();
    let body = amf::encode_all(&[s("@setDataFrame"), s("onMetaData"), metadata_object()]);
    c.write(msg_type::DATA_AMF0, 1, 0, body);
    let events = c.pump().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        metadata_payload_of(&events[0]),
        [s("onMetaData"), metadata_object()]
    );
}

#[test]
fn plain_on_metadata_is_kept() {
    let mut c = Client::publishing();
    let body = amf::encode_all(&[s("onMetaData"), metadata_object()]);
    c.write(msg_type::DATA_AMF0, 1, 7, body.clone());
    let events = c.pump().unwrap();
    assert_eq!(
        events,
        [SessionEvent::Media {
            kind: MediaKind::Metadata,
            timestamp: 7,
            payload: body.into()
        }]
    );
}

#[test]
fn amf3_data_message_with_format_byte_is_metadata() {
    let mut c = Client::publishing();
    let mut body = vec![0];
    body.extend(amf::encode_all(&[
        s("@setDataFrame"),
        s("onMetaData"),
        metadata_object(),
    ]));
    c.write(msg_type::DATA_AMF3, 1, 0, body);
    let events = c.pump().unwrap();
    assert_eq!(
        metadata_payload_of(&events[0]),
        [s("onMetaData"), metadata_object()]
    );
}

#[test]
fn other_data_messages_are_ignored() {
    let mut c = Client::publishing();
    for values in [
        vec![
            s("@setDataFrame"),
            s("onTextData"),
            obj(&[("text", s("hi"))]),
        ],
        vec![s("onCuePoint"), obj(&[("name", s("c"))])],
        vec![s("onMetaData")],
        vec![n(1.0)],
    ] {
        c.write(msg_type::DATA_AMF0, 1, 0, amf::encode_all(&values));
    }
    assert_eq!(c.pump().unwrap(), []);
}

#[test]
fn metadata_before_publish_is_ignored() {
    let mut c = Client::connected();
    let body = amf::encode_all(&[s("@setDataFrame"), s("onMetaData"), metadata_object()]);
    c.write(msg_type::DATA_AMF0, 1, 0, body);
    assert!(c.pump().unwrap().is_empty());
}

// --- play ---

#[test]
fn play_sequence() {
    let mut c = Client::connected();
    c.command(0, "createStream", vec![Amf0Value::Null]);
    c.replies();
    let events = c.command(1, "play", vec![Amf0Value::Null, s("room?k=v"), n(-2000.0)]);
    assert_eq!(
        events,
        [SessionEvent::Play {
            app: "live".into(),
            name: "room".into(),
            query: "k=v".into()
        }]
    );
    assert_eq!(c.session.play_stream_id(), None);
    c.session.accept_play("room");
    assert_eq!(c.session.play_stream_id(), Some(1));

    let replies = c.replies();
    let controls: Vec<(u16, u32)> = replies.iter().filter_map(user_control).collect();
    assert_eq!(
        controls,
        [(4, 1), (0, 1)],
        "StreamIsRecorded then StreamBegin"
    );
    let codes: Vec<String> = replies.iter().filter_map(status_code).collect();
    assert_eq!(codes[..2], ["NetStream.Play.Reset", "NetStream.Play.Start"]);
    let access = replies
        .iter()
        .find(|m| m.type_id == msg_type::DATA_AMF0 && decode(m)[0] == s("|RtmpSampleAccess"))
        .expect("|RtmpSampleAccess");
    assert_eq!(
        decode(access)[1..],
        [Amf0Value::Boolean(true), Amf0Value::Boolean(true)]
    );
    for m in replies
        .iter()
        .filter(|m| m.type_id != msg_type::USER_CONTROL)
    {
        assert_eq!(m.stream_id, 1, "{m:?}");
    }
}

/// Media metadata goes out on the data chunk stream as shared chunks the session's writer
/// never sees: playing again on the connection must not compress the new play's data
/// messages against the old play's.
#[test]
fn playing_again_after_media_sends_data_messages_with_full_headers() {
    let mut c = Client::playing();
    let metadata = crate::rtmp::chunk::encode_standalone(
        CSID_DATA,
        5000,
        msg_type::DATA_AMF0,
        1,
        &amf::encode_all(&[s("onMetaData"), metadata_object()]),
        OUT_CHUNK_SIZE,
    );
    let mut metadata = BytesMut::from(&metadata[..]);
    assert!(c.reader.read(&mut metadata).unwrap().is_some());
    assert_eq!(
        c.command(1, "closeStream", vec![Amf0Value::Null]),
        [SessionEvent::StopPlay]
    );
    c.command(1, "play", vec![Amf0Value::Null, s("room")]);
    c.session.accept_play("room");
    let data: Vec<RtmpMessage> = c
        .replies()
        .into_iter()
        .filter(|m| m.csid == CSID_DATA)
        .collect();
    // |RtmpSampleAccess only: no onStatus data message, which libavformat would take
    // for a data stream.
    assert_eq!(data.len(), 1, "|RtmpSampleAccess");
    for m in data {
        assert_eq!(m.timestamp, 0, "{:?}", decode(&m)[0]);
    }
}

#[test]
fn reject_play_sends_stream_not_found() {
    let mut c = Client::connected();
    c.command(0, "createStream", vec![Amf0Value::Null]);
    c.command(1, "play", vec![Amf0Value::Null, s("nope")]);
    c.replies();
    c.session
        .reject_play("NetStream.Play.StreamNotFound", "no such stream");
    let replies = c.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        status_code(&replies[0]).as_deref(),
        Some("NetStream.Play.StreamNotFound")
    );
    assert_eq!(replies[0].stream_id, 1);
    assert_eq!(c.session.play_stream_id(), None);
}

#[test]
fn end_play_notifies_unpublish_stop_and_eof() {
    let mut c = Client::playing();
    c.session.end_play("room");
    let replies = c.replies();
    let codes: Vec<String> = replies.iter().filter_map(status_code).collect();
    assert_eq!(
        codes,
        ["NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"]
    );
    assert_eq!(
        replies.iter().filter_map(user_control).collect::<Vec<_>>(),
        [(1, 1)]
    );
    assert_eq!(c.session.play_stream_id(), None);
    c.session.end_play("room");
    assert!(!c.session.has_output(), "ends once");
}

#[test]
fn player_media_is_not_forwarded() {
    let mut c = Client::playing();
    assert!(c.media(msg_type::AUDIO, 0, AAC_RAW).is_empty());
}

// --- teardown and player controls ---

#[test]
fn fc_unpublish_ends_publishing_and_answers() {
    let mut c = Client::publishing();
    assert_eq!(
        c.command(0, "FCUnpublish", vec![Amf0Value::Null, s("room")]),
        [SessionEvent::Unpublish]
    );
    assert_eq!(decode(&c.replies()[0])[0], s("_result"));
    assert!(
        c.command(0, "deleteStream", vec![Amf0Value::Null, n(1.0)])
            .is_empty(),
        "only once"
    );
    assert!(c.media(msg_type::AUDIO, 0, AAC_RAW).is_empty());
}

#[test]
fn delete_or_close_stream_unpublishes_a_publisher() {
    for cmd in ["deleteStream", "closeStream"] {
        let mut c = Client::publishing();
        assert_eq!(
            c.command(0, cmd, vec![Amf0Value::Null, n(1.0)]),
            [SessionEvent::Unpublish],
            "{cmd}"
        );
    }
}

#[test]
fn delete_or_close_stream_stops_a_player() {
    for cmd in ["deleteStream", "closeStream"] {
        let mut c = Client::playing();
        assert_eq!(
            c.command(0, cmd, vec![Amf0Value::Null, n(1.0)]),
            [SessionEvent::StopPlay],
            "{cmd}"
        );
        assert_eq!(c.session.play_stream_id(), None);
    }
}

#[test]
fn teardown_when_idle_is_silent() {
    let mut c = Client::connected();
    assert!(c
        .command(0, "deleteStream", vec![Amf0Value::Null, n(1.0)])
        .is_empty());
}

#[test]
fn receive_audio_and_video_flags() {
    let mut c = Client::playing();
    let ev = c.command(
        1,
        "receiveAudio",
        vec![Amf0Value::Null, Amf0Value::Boolean(false)],
    );
    assert_eq!(ev, [SessionEvent::ReceiveAudio(false)]);
    let ev = c.command(
        1,
        "receiveVideo",
        vec![Amf0Value::Null, Amf0Value::Boolean(true)],
    );
    assert_eq!(ev, [SessionEvent::ReceiveVideo(true)]);
}

// --- AMF3 commands, control messages ---

#[test]
fn amf3_command_with_format_byte_works_like_amf0() {
    let mut c = Client::new();
    let mut body = vec![0];
    body.extend(amf::encode_all(&[
        s("connect"),
        n(1.0),
        obj(&[("app", s("live"))]),
    ]));
    c.write(msg_type::COMMAND_AMF3, 0, 0, body);
    assert!(c.pump().unwrap().is_empty());
    assert_eq!(c.session.app(), Some("live"));
    let result = c.replies().pop().unwrap();
    assert_eq!(
        decode(&result)[3].get("code"),
        Some(&s("NetConnection.Connect.Success"))
    );

    let mut body = vec![0];
    body.extend(amf::encode_all(&[
        s("publish"),
        n(5.0),
        Amf0Value::Null,
        s("room?a=b"),
    ]));
    c.write(msg_type::COMMAND_AMF3, 1, 0, body);
    assert_eq!(
        c.pump().unwrap(),
        [SessionEvent::Publish {
            app: "live".into(),
            name: "room".into(),
            query: "a=b".into()
        }]
    );
}

#[test]
fn ping_request_gets_ping_response_with_same_timestamp() {
    let mut c = Client::connected();
    let mut body = vec![0, 6];
    body.extend(0xDEAD_BEEFu32.to_be_bytes());
    c.write(msg_type::USER_CONTROL, 0, 0, body);
    assert!(c.pump().unwrap().is_empty());
    let replies = c.replies();
    assert_eq!(
        replies.iter().filter_map(user_control).collect::<Vec<_>>(),
        [(7, 0xDEAD_BEEF)]
    );
}

#[test]
fn other_user_control_events_are_ignored() {
    let mut c = Client::connected();
    // Set Buffer Length (3) as ffplay sends it.
    c.write(
        msg_type::USER_CONTROL,
        0,
        0,
        vec![0, 3, 0, 0, 0, 1, 0, 0, 0x0B, 0xB8],
    );
    assert!(c.pump().unwrap().is_empty());
    assert!(!c.session.has_output());
}

#[test]
fn truncated_ping_is_an_error() {
    let mut c = Client::connected();
    c.write(msg_type::USER_CONTROL, 0, 0, vec![0, 6, 0]);
    assert!(matches!(c.pump(), Err(SessionError::Malformed(_))));
}

#[test]
fn acknowledgements_follow_the_peer_window() {
    let mut c = Client::connected();
    c.write(
        msg_type::WINDOW_ACK_SIZE,
        0,
        0,
        1000u32.to_be_bytes().to_vec(),
    );
    c.pump().unwrap();
    assert!(c.replies().is_empty());
    let mut acks = Vec::new();
    let mut last_ack = 0u64;
    for i in 0..60u32 {
        c.write(msg_type::AUDIO, 1, i * 23, vec![0xAF; 90]);
        c.pump().unwrap();
        for m in c.replies() {
            assert_eq!(m.type_id, msg_type::ACKNOWLEDGEMENT);
            let seq = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
            assert_eq!(
                u64::from(seq),
                c.consumed,
                "sequence number is the bytes received"
            );
            assert!(c.consumed - last_ack >= 1000);
            assert!(
                c.consumed - last_ack < 1000 + 100,
                "sent as soon as the window is full"
            );
            last_ack = c.consumed;
            acks.push(seq);
        }
    }
    // About 60 * 91 bytes (type-3 chunks after the first): five windows.
    assert!(acks.len() >= 4, "{acks:?}");
}

#[test]
fn no_acknowledgements_without_a_peer_window() {
    let mut c = Client::publishing();
    for i in 0..100u32 {
        c.write(msg_type::AUDIO, 1, i, vec![0xAF, 0x01, 0, 0]);
    }
    c.pump().unwrap();
    assert!(c.replies().is_empty());
}

#[test]
fn client_set_chunk_size_applies_to_following_messages() {
    let mut c = Client::publishing();
    c.write(
        msg_type::SET_CHUNK_SIZE,
        0,
        0,
        4096u32.to_be_bytes().to_vec(),
    );
    c.writer.set_chunk_size(4096);
    let big: Vec<u8> = [0x17, 0x01, 0, 0, 0]
        .into_iter()
        .chain((0..3000).map(|i| i as u8))
        .collect();
    c.write(msg_type::VIDEO, 1, 40, big.clone());
    assert_eq!(c.pump().unwrap(), [media(MediaKind::Video, 40, &big)]);
}

// --- aggregate ---

fn aggregate_body(tags: &[(u8, u32, &[u8])]) -> Vec<u8> {
    tags.iter()
        .flat_map(|&(t, ts, p)| flv::encode_tag(t, ts, p).to_vec())
        .collect()
}

#[test]
fn aggregate_is_split_with_rebased_timestamps() {
    let mut c = Client::publishing();
    let meta = amf::encode_all(&[s("onMetaData"), metadata_object()]);
    let body = aggregate_body(&[
        (8, 1000, AAC_RAW),
        (9, 1040, AVC_KEY),
        (18, 1040, &meta),
        (8, 1023, AAC_RAW),
    ]);
    c.write(msg_type::AGGREGATE, 1, 5000, body);
    let events = c.pump().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0], media(MediaKind::Audio, 5000, AAC_RAW));
    assert_eq!(events[1], media(MediaKind::Video, 5040, AVC_KEY));
    assert_eq!(events[2], media(MediaKind::Metadata, 5040, &meta));
    assert_eq!(events[3], media(MediaKind::Audio, 5023, AAC_RAW));
}

#[test]
fn aggregate_timestamps_wrap_like_wire_timestamps() {
    let mut c = Client::publishing();
    let body = aggregate_body(&[(8, 0, AAC_RAW), (8, 50, AAC_RAW)]);
    c.write(msg_type::AGGREGATE, 1, u32::MAX - 9, body);
    let events = c.pump().unwrap();
    assert_eq!(
        events,
        [
            media(MediaKind::Audio, u32::MAX - 9, AAC_RAW),
            media(MediaKind::Audio, 40, AAC_RAW)
        ]
    );
}

#[test]
fn aggregate_before_publish_is_dropped() {
    let mut c = Client::connected();
    c.write(
        msg_type::AGGREGATE,
        1,
        0,
        aggregate_body(&[(8, 0, AAC_RAW)]),
    );
    assert!(c.pump().unwrap().is_empty());
}

#[test]
fn truncated_aggregate_is_an_error() {
    let mut c = Client::publishing();
    let mut body = aggregate_body(&[(8, 0, AAC_RAW), (9, 0, AVC_KEY)]);
    body.truncate(body.len() - 6);
    c.write(msg_type::AGGREGATE, 1, 0, body);
    assert!(matches!(
        c.pump(),
        Err(SessionError::Malformed("aggregate"))
    ));
}

// --- errors ---

#[test]
fn commands_before_connect_are_an_error() {
    let mut c = Client::new();
    c.write_command(0, "createStream", vec![Amf0Value::Null]);
    match c.pump() {
        Err(SessionError::NotConnected(name)) => assert_eq!(name, "createStream"),
        other => panic!("{other:?}"),
    }
    assert!(!c.session.has_output());
}

#[test]
fn publish_before_connect_is_an_error() {
    let mut c = Client::new();
    c.write_command(1, "publish", vec![Amf0Value::Null, s("room")]);
    assert!(matches!(c.pump(), Err(SessionError::NotConnected(_))));
}

#[test]
fn truncated_command_is_an_error() {
    let mut c = Client::connected();
    let mut body = amf::encode_all(&[s("createStream"), n(2.0), Amf0Value::Null]);
    body.truncate(5);
    c.write(msg_type::COMMAND_AMF0, 0, 0, body);
    assert!(matches!(
        c.pump(),
        Err(SessionError::Amf {
            what: "command",
            ..
        })
    ));
}

#[test]
fn command_without_a_name_is_an_error() {
    for body in [
        amf::encode_all(&[n(1.0), s("connect")]),
        Vec::new(),
        vec![0x0E],
    ] {
        let mut c = Client::connected();
        c.write(msg_type::COMMAND_AMF0, 0, 0, body.clone());
        assert!(
            matches!(c.pump(), Err(SessionError::Malformed(_))),
            "{body:?}"
        );
    }
}

#[test]
fn malformed_data_message_from_publisher_is_an_error() {
    let mut c = Client::publishing();
    c.write(msg_type::DATA_AMF0, 1, 0, vec![0x02, 0x00, 0x09, b'o']);
    assert!(matches!(c.pump(), Err(SessionError::Amf { .. })));
}

#[test]
fn short_window_ack_size_is_an_error() {
    let mut c = Client::connected();
    c.write(msg_type::WINDOW_ACK_SIZE, 0, 0, vec![0, 1]);
    assert!(matches!(c.pump(), Err(SessionError::Malformed(_))));
}

#[test]
fn bad_handshake_version_is_an_error() {
    let mut session = ServerSession::new(SERVER_RANDOM);
    let mut input = BytesMut::from(&[0x16, 0x03, 0x01][..]);
    assert!(matches!(
        session.feed(&mut input, &mut Vec::new()),
        Err(SessionError::Handshake(_))
    ));
}

// --- the whole byte stream in random pieces ---

/// Everything an ffmpeg-like publisher sends, handshake included, from one session's view.
fn publisher_byte_stream() -> BytesMut {
    let mut session = ServerSession::new(SERVER_RANDOM);
    let mut hs = ClientHandshake::new(CLIENT_RANDOM);
    let mut all = BytesMut::new();
    hs.start(&mut all);
    let mut c0c1 = all.clone();
    session.feed(&mut c0c1, &mut Vec::new()).unwrap();
    let mut c2 = BytesMut::new();
    assert!(hs.feed(&mut session.take_output(), &mut c2).unwrap());
    all.extend_from_slice(&c2);

    let mut c = Client {
        session,
        writer: ChunkWriter::new(),
        reader: ChunkReader::new(),
        pending: BytesMut::new(),
        consumed: 0,
        next_tid: 1.0,
    };
    c.write_command(
        0,
        "connect",
        vec![obj(&[("app", s("live")), ("tcUrl", s("rtmp://h/live"))])],
    );
    c.write(
        msg_type::SET_CHUNK_SIZE,
        0,
        0,
        4096u32.to_be_bytes().to_vec(),
    );
    c.writer.set_chunk_size(4096);
    c.write_command(0, "releaseStream", vec![Amf0Value::Null, s("room")]);
    c.write_command(0, "FCPublish", vec![Amf0Value::Null, s("room")]);
    c.write_command(0, "createStream", vec![Amf0Value::Null]);
    c.write_command(
        1,
        "publish",
        vec![Amf0Value::Null, s("room?token=x"), s("live")],
    );
    let meta = amf::encode_all(&[s("@setDataFrame"), s("onMetaData"), metadata_object()]);
    c.write(msg_type::DATA_AMF0, 1, 0, meta);
    c.write(msg_type::AUDIO, 1, 0, vec![0xAF, 0x00, 0x12, 0x10]);
    for i in 0..6u32 {
        let size = if i % 3 == 0 { 9000 } else { 300 };
        let video: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        c.write(msg_type::VIDEO, 1, i * 40, video);
        c.write(msg_type::AUDIO, 1, i * 23, AAC_RAW.to_vec());
    }
    let mut ping = vec![0, 6];
    ping.extend(77u32.to_be_bytes());
    c.write(msg_type::USER_CONTROL, 0, 0, ping);
    c.write_command(0, "FCUnpublish", vec![Amf0Value::Null, s("room")]);
    c.write_command(0, "deleteStream", vec![Amf0Value::Null, n(1.0)]);
    all.extend_from_slice(&c.pending);
    all
}

/// A driver that accepts every publish; returns the events and everything the session sent.
fn drive(pieces: &[&[u8]]) -> (Vec<SessionEvent>, Vec<RtmpMessage>) {
    let mut session = ServerSession::new(SERVER_RANDOM);
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let mut output = BytesMut::new();
    for piece in pieces {
        input.extend_from_slice(piece);
        loop {
            let before = input.len();
            let mut new = Vec::new();
            session.feed(&mut input, &mut new).unwrap();
            let progressed = !new.is_empty() || input.len() != before;
            for e in new {
                if matches!(e, SessionEvent::Publish { .. }) {
                    session.accept_publish();
                }
                events.push(e);
            }
            if !progressed {
                break;
            }
        }
        output.extend_from_slice(&session.take_output());
    }
    assert!(input.is_empty());
    // Skip S0+S1+S2, then parse the messages.
    let mut rest = output.split_off(1 + 2 * 1536);
    let mut reader = ChunkReader::new();
    let mut replies = Vec::new();
    while let Some(m) = reader.read(&mut rest).unwrap() {
        replies.push(m);
    }
    assert!(rest.is_empty());
    (events, replies)
}

#[test]
fn whole_publisher_stream_in_one_piece() {
    let stream = publisher_byte_stream();
    let (events, replies) = drive(&[&stream]);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            SessionEvent::Publish { .. } => "publish",
            SessionEvent::Media {
                kind: MediaKind::Metadata,
                ..
            } => "meta",
            SessionEvent::Media {
                kind: MediaKind::Audio,
                ..
            } => "audio",
            SessionEvent::Media {
                kind: MediaKind::Video,
                ..
            } => "video",
            SessionEvent::Unpublish => "unpublish",
            _ => "other",
        })
        .collect();
    let mut expected = vec!["publish", "meta", "audio"];
    for _ in 0..6 {
        expected.extend(["video", "audio"]);
    }
    expected.push("unpublish");
    assert_eq!(kinds, expected);
    assert_eq!(
        events[0],
        SessionEvent::Publish {
            app: "live".into(),
            name: "room".into(),
            query: "token=x".into()
        }
    );
    assert!(replies
        .iter()
        .filter_map(user_control)
        .any(|uc| uc == (7, 77)));
    assert!(replies
        .iter()
        .any(|m| status_code(m).as_deref() == Some("NetStream.Publish.Start")));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_splits_yield_the_same_events(cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..48)) {
        let stream = publisher_byte_stream();
        let (expected_events, expected_replies) = drive(&[&stream]);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
        let (events, replies) = drive(&pieces);
        prop_assert_eq!(events, expected_events);
        prop_assert_eq!(replies, expected_replies);
    }

    #[test]
    fn byte_at_a_time_after_random_prefix(prefix in 0usize..4000) {
        let stream = publisher_byte_stream();
        let (expected, _) = drive(&[&stream]);
        let prefix = prefix.min(stream.len());
        let mut pieces: Vec<&[u8]> = vec![&stream[..prefix]];
        pieces.extend(stream[prefix..].chunks(1));
        let (events, _) = drive(&pieces);
        prop_assert_eq!(events, expected);
    }
}

/// Until a publish is accepted, a peer may not declare messages beyond what commands need:
/// a connection that never publishes cannot hold megabytes of a message it never ends.
#[test]
fn large_messages_wait_for_an_accepted_publish() {
    let big = vec![0x17u8; NEGOTIATION_MESSAGE_LIMIT + 1];
    for mut c in [Client::connected(), Client::playing()] {
        c.write(msg_type::VIDEO, 1, 0, big.clone());
        assert!(matches!(
            c.pump(),
            Err(SessionError::Chunk(ChunkError::MessageTooLarge { .. }))
        ));
    }
    // Many small messages begun on separate chunk streams count together.
    let mut c = Client::connected();
    for csid in 10..30u8 {
        // A type 0 header declaring 4 KiB, and the first 128 bytes.
        c.pending
            .extend_from_slice(&[csid, 0, 0, 0, 0, 0x10, 0x00, msg_type::VIDEO, 1, 0, 0, 0]);
        c.pending.extend_from_slice(&[0x17; 128]);
    }
    assert!(matches!(
        c.pump(),
        Err(SessionError::Chunk(ChunkError::TooMuchInProgress { .. }))
    ));

    let mut c = Client::publishing();
    let events = c.media(msg_type::VIDEO, 0, &big);
    assert!(matches!(events[..], [SessionEvent::Media { .. }]));
    assert_eq!(c.session.incomplete_bytes(), 0);
}
