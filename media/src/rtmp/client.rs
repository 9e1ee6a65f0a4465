//! Client side of an RTMP connection as a sans-IO state machine: the counterpart of
//! [`super::session::ServerSession`], for load generators, test clients and relays.
//!
//! The driver sends what the session queued ([`ClientSession::take_output`]; C0+C1 are
//! queued at once), feeds received bytes with [`ClientSession::feed`] and gets back
//! [`ClientEvent`]s. The session runs the command flow itself: [`ClientSession::connect`],
//! then [`ClientSession::publish`] or [`ClientSession::play`], which may be called at once
//! (they wait for `connect`'s answer, create a stream and go out on it). It also answers what
//! the protocol expects without asking the driver: acknowledgements once the server's window
//! is reached, ping requests, a window acknowledgement size after Set Peer Bandwidth, and it
//! honours the server's Set Chunk Size.
//!
//! Media from the server comes out as [`ClientEvent::Media`] with wire (32-bit) timestamps,
//! `onMetaData` as [`MediaKind::Metadata`] (the same payload a publisher's metadata has in
//! [`super::session::SessionEvent::Media`]), so a relay can push what it plays unchanged with
//! [`ClientSession::send_media`]. Players that only count or forward media read with
//! [`ClientSession::feed_with_media`] instead, which hands each media message to a closure
//! as it is parsed.

use bytes::{BufMut, Bytes, BytesMut};

use super::chunk::{ChunkError, ChunkReader, ChunkWriter, RtmpMessage, MAX_CHUNK_SIZE};
use super::handshake::{ClientHandshake, HandshakeError, RANDOM_SIZE};
use super::message::{
    metadata_from_values, msg_type, split_aggregate, strip_amf3_format_byte, user_control,
    AggregateError, CSID_AUDIO, CSID_COMMAND, CSID_CONTROL, CSID_DATA, CSID_STREAM_COMMAND,
    CSID_VIDEO, OUT_CHUNK_SIZE,
};
use crate::amf::{self, Amf0Value, AmfError};
use crate::frame::MediaKind;

/// How much media a player asks the server to buffer (SetBufferLength after `play`), as
/// ffmpeg and Flash do; some servers hold media back until they hear it.
const PLAY_BUFFER_MS: u32 = 3000;
/// `play`'s start argument: live, falling back to recorded (the spec's -2).
const PLAY_START_LIVE_OR_RECORDED: f64 = -2.0;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("malformed {what}: {source}")]
    Amf {
        what: &'static str,
        source: AmfError,
    },
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// A method called when the session cannot do it (a driver bug, not the server's fault).
    #[error("cannot {action} while {state:?}")]
    InvalidState {
        action: &'static str,
        state: ClientState,
    },
}

/// Where the session is in the command flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// [`ClientSession::connect`] not called yet.
    Idle,
    /// `connect` sent (or waiting for the handshake to end), not answered yet.
    Connecting,
    /// `connect` accepted; no publish or play under way.
    Connected,
    /// `createStream` sent for a publish or play.
    CreatingStream,
    /// `publish` sent, waiting for NetStream.Publish.Start.
    PublishRequested,
    Publishing,
    /// `play` sent, waiting for NetStream.Play.Start.
    PlayRequested,
    Playing,
    /// The server answered `connect` with `_error`.
    Refused,
}

/// What the session tells its driver. Media is nearly all a player gets, so the rare,
/// large variants are boxed: an event is 48 bytes instead of 96, and a player's event
/// buffer, sized by its largest burst, half as big.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `connect` accepted: the server's properties (fmsVer, capabilities) and information
    /// (code NetConnection.Connect.Success, objectEncoding) objects.
    Connected {
        properties: Box<Amf0Value>,
        information: Box<Amf0Value>,
    },
    /// `createStream` answered with the message stream id publish or play goes out on.
    StreamCreated { stream_id: u32 },
    /// NetStream.Publish.Start: [`ClientSession::send_media`] may be used.
    Publishing,
    /// NetStream.Play.Start: media follows as [`ClientEvent::Media`].
    Playing,
    /// Every `onStatus` (command or data message), including the ones that also give
    /// `Publishing` / `Playing` (the status comes first). An error after a publish or play
    /// means it was refused; `_error` answers to `connect` and `createStream` come here
    /// too, as errors.
    Status(Box<Status>),
    /// Audio or video with the wire timestamp, or `onMetaData` as [`MediaKind::Metadata`]
    /// (`onMetaData` and its object in AMF0, no `@setDataFrame`). Aggregate messages come
    /// out as the media they carry.
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    },
    /// Any other data message (`|RtmpSampleAccess`, cue points, text), decoded.
    Data(Vec<Amf0Value>),
    /// Any other command: calls from the server (`onBWDone`), and answers to commands this
    /// session does not wait for (`releaseStream`, `FCPublish`, [`ClientSession::send_command`]).
    Command(Vec<Amf0Value>),
    /// User control events other than ping, which the session answers itself: StreamBegin,
    /// StreamEOF, StreamIsRecorded with their stream id.
    UserControl { event: u16, value: u32 },
}

/// An `onStatus` information object (or an `_error` answer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `status`, `warning` or `error`.
    pub level: String,
    /// `NetStream.Play.Start`, `NetStream.Publish.BadName`...
    pub code: String,
    pub description: String,
}

impl Status {
    pub fn is_error(&self) -> bool {
        self.level == "error"
    }
}

/// What [`ClientSession::publish`] or [`ClientSession::play`] asked for, kept until the
/// connection and a stream are there to carry it.
#[derive(Debug, Clone)]
enum Request {
    Publish { name: String, publish_type: String },
    Play { name: String },
}

/// The `connect` properties an FMLE-style encoder sends about itself (`flashVer` naming
/// `client`): some servers treat clients that send them as publishers of live streams.
pub fn encoder_properties(client: &str) -> Vec<(String, Amf0Value)> {
    let string = |s: &str| Amf0Value::String(s.to_owned());
    vec![
        ("type".into(), string("nonprivate")),
        (
            "flashVer".into(),
            string(&format!("FMLE/3.0 (compatible; {client})")),
        ),
        ("fpad".into(), Amf0Value::Boolean(false)),
        ("capabilities".into(), Amf0Value::Number(15.0)),
        ("audioCodecs".into(), Amf0Value::Number(3191.0)),
        ("videoCodecs".into(), Amf0Value::Number(252.0)),
        ("videoFunction".into(), Amf0Value::Number(1.0)),
        ("objectEncoding".into(), Amf0Value::Number(0.0)),
    ]
}

pub struct ClientSession {
    handshake: Option<ClientHandshake>,
    reader: ChunkReader,
    writer: ChunkWriter,
    out: BytesMut,
    /// Messages queued before the handshake ended, sent right after it.
    held: BytesMut,
    state: ClientState,
    request: Option<Request>,
    /// The name of the stream being published, for FCUnpublish.
    publishing_name: Option<String>,
    stream_id: Option<u32>,
    next_transaction: f64,
    connect_transaction: Option<f64>,
    create_stream_transaction: Option<f64>,
    /// Acknowledgement bookkeeping: the server's window and what we have received.
    peer_window: u32,
    received: u64,
    last_ack: u64,
    /// The window acknowledgement size we last announced, answering Set Peer Bandwidth.
    announced_window: Option<u32>,
}

impl ClientSession {
    /// A session with the plain handshake; `random` fills C1. C0+C1 are queued at once.
    pub fn new(random: [u8; RANDOM_SIZE]) -> Self {
        Self::with_handshake(ClientHandshake::new(random))
    }

    /// A session on a given handshake (say [`ClientHandshake::new_complex`], to exercise a
    /// server's digest handshake).
    pub fn with_handshake(mut handshake: ClientHandshake) -> Self {
        let mut out = BytesMut::new();
        handshake.start(&mut out);
        ClientSession {
            handshake: Some(handshake),
            reader: ChunkReader::new(),
            writer: ChunkWriter::new(),
            out,
            held: BytesMut::new(),
            state: ClientState::Idle,
            request: None,
            publishing_name: None,
            stream_id: None,
            next_transaction: 1.0,
            connect_transaction: None,
            create_stream_transaction: None,
            peer_window: 0,
            received: 0,
            last_ack: 0,
            announced_window: None,
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn handshake_done(&self) -> bool {
        self.handshake.is_none()
    }

    /// The message stream id from `createStream`, once answered (until `delete_stream`).
    pub fn stream_id(&self) -> Option<u32> {
        self.stream_id
    }

    /// Bytes queued for the server.
    pub fn take_output(&mut self) -> BytesMut {
        self.out.split()
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Consume everything that can be parsed from `input`, pushing events to `events`.
    /// An error is fatal for the connection.
    pub fn feed(
        &mut self,
        input: &mut BytesMut,
        events: &mut Vec<ClientEvent>,
    ) -> Result<(), ClientError> {
        self.feed_inner(input, events, &mut |events, kind, timestamp, payload| {
            events.push(ClientEvent::Media {
                kind,
                timestamp,
                payload,
            })
        })
    }

    /// Like [`ClientSession::feed`], but what would be [`ClientEvent::Media`] goes to
    /// `on_media` (kind, wire timestamp, payload) as each message is parsed; everything
    /// else still comes as events. For players, whose every message is media: no event is
    /// made and read back per message, and the payload is handled while it is in cache
    /// (measured: about 40 ns less per message, of about 600 to read one, on a mix of
    /// 11 KB video and 190 B audio messages).
    pub fn feed_with_media(
        &mut self,
        input: &mut BytesMut,
        events: &mut Vec<ClientEvent>,
        mut on_media: impl FnMut(MediaKind, u32, Bytes),
    ) -> Result<(), ClientError> {
        self.feed_inner(input, events, &mut |_, kind, timestamp, payload| {
            on_media(kind, timestamp, payload)
        })
    }

    /// `media` gets the events too, so that `feed` can push media into them.
    fn feed_inner<M: FnMut(&mut Vec<ClientEvent>, MediaKind, u32, Bytes)>(
        &mut self,
        input: &mut BytesMut,
        events: &mut Vec<ClientEvent>,
        media: &mut M,
    ) -> Result<(), ClientError> {
        if let Some(hs) = self.handshake.as_mut() {
            if !hs.feed(input, &mut self.out)? {
                return Ok(());
            }
            self.handshake = None;
            // Taken, not split: the held buffer is not needed again, so it is freed.
            let held = std::mem::take(&mut self.held);
            self.out.extend_from_slice(&held);
        }
        let before = input.len();
        let result = self.read_messages(input, events, media);
        self.count_received((before - input.len()) as u64);
        result
    }

    /// Queue Set Chunk Size and then `connect` (both go out once the handshake is done).
    /// `extra` properties follow `app` and `tcUrl` in the command object (flashVer,
    /// capabilities, objectEncoding...).
    pub fn connect(
        &mut self,
        app: &str,
        tc_url: &str,
        extra: Vec<(String, Amf0Value)>,
    ) -> Result<(), ClientError> {
        self.require(ClientState::Idle, "connect")?;
        // Announce a large chunk size first, as ffmpeg and OBS do: 128-byte chunks would
        // cost a header every 128 bytes of media.
        self.set_chunk_size(OUT_CHUNK_SIZE);
        let mut properties = vec![
            ("app".to_owned(), Amf0Value::String(app.to_owned())),
            ("tcUrl".to_owned(), Amf0Value::String(tc_url.to_owned())),
        ];
        properties.extend(extra);
        let tid = self.call("connect", vec![Amf0Value::Object(properties)]);
        self.connect_transaction = Some(tid);
        self.state = ClientState::Connecting;
        Ok(())
    }

    /// Publish `name` (`publish_type` is `live`, `record` or `append`): as soon as the
    /// connection is up, releaseStream and FCPublish (which OBS and ffmpeg send and some
    /// servers wait for), createStream, publish. [`ClientEvent::Publishing`] says it started;
    /// a `Status` of level `error` that it was refused.
    pub fn publish(&mut self, name: &str, publish_type: &str) -> Result<(), ClientError> {
        self.request(Request::Publish {
            name: name.to_owned(),
            publish_type: publish_type.to_owned(),
        })
    }

    /// Play `name`: createStream as soon as the connection is up, play, SetBufferLength.
    /// [`ClientEvent::Playing`] says it started; a `Status` of level `error` that it was
    /// refused (NetStream.Play.StreamNotFound).
    pub fn play(&mut self, name: &str) -> Result<(), ClientError> {
        self.request(Request::Play {
            name: name.to_owned(),
        })
    }

    fn request(&mut self, request: Request) -> Result<(), ClientError> {
        let action = match request {
            Request::Publish { .. } => "publish",
            Request::Play { .. } => "play",
        };
        match self.state {
            ClientState::Connecting => {
                if self.request.is_some() {
                    return Err(ClientError::InvalidState {
                        action,
                        state: self.state,
                    });
                }
                self.request = Some(request);
            }
            ClientState::Connected => {
                self.request = Some(request);
                self.start_request();
            }
            state => return Err(ClientError::InvalidState { action, state }),
        }
        Ok(())
    }

    /// Send the pending request: on the stream we have, or create one first.
    fn start_request(&mut self) {
        let Some(request) = self.request.clone() else {
            return;
        };
        let Some(stream_id) = self.stream_id else {
            if let Request::Publish { name, .. } = &request {
                let name = Amf0Value::String(name.clone());
                self.call("releaseStream", vec![Amf0Value::Null, name.clone()]);
                self.call("FCPublish", vec![Amf0Value::Null, name]);
            }
            let tid = self.call("createStream", vec![Amf0Value::Null]);
            self.create_stream_transaction = Some(tid);
            self.state = ClientState::CreatingStream;
            return;
        };
        self.request = None;
        match request {
            Request::Publish { name, publish_type } => {
                let tid = self.take_transaction();
                self.send_command(
                    stream_id,
                    &[
                        Amf0Value::String("publish".into()),
                        Amf0Value::Number(tid),
                        Amf0Value::Null,
                        Amf0Value::String(name.clone()),
                        Amf0Value::String(publish_type),
                    ],
                );
                self.publishing_name = Some(name);
                self.state = ClientState::PublishRequested;
            }
            Request::Play { name } => {
                let tid = self.take_transaction();
                self.send_command(
                    stream_id,
                    &[
                        Amf0Value::String("play".into()),
                        Amf0Value::Number(tid),
                        Amf0Value::Null,
                        Amf0Value::String(name),
                        Amf0Value::Number(PLAY_START_LIVE_OR_RECORDED),
                    ],
                );
                let mut body = [0u8; 10];
                body[..2].copy_from_slice(&user_control::SET_BUFFER_LENGTH.to_be_bytes());
                body[2..6].copy_from_slice(&stream_id.to_be_bytes());
                body[6..].copy_from_slice(&PLAY_BUFFER_MS.to_be_bytes());
                self.send_control(msg_type::USER_CONTROL, &body);
                self.state = ClientState::PlayRequested;
            }
        }
    }

    /// Audio, video or metadata while publishing. `timestamp` is the wire timestamp (a
    /// relay passes a 64-bit stream clock truncated: RTMP's timestamps wrap). Metadata is
    /// `onMetaData` and its object, as [`ClientEvent::Media`] and the server session give it;
    /// it goes out wrapped in `@setDataFrame`.
    pub fn send_media(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        let stream_id = match (self.state, self.stream_id) {
            (ClientState::Publishing, Some(id)) => id,
            _ => return Err(self.invalid("send media")),
        };
        let (csid, type_id, payload) = match kind {
            MediaKind::Audio => (CSID_AUDIO, msg_type::AUDIO, payload),
            MediaKind::Video => (CSID_VIDEO, msg_type::VIDEO, payload),
            MediaKind::Metadata => (
                CSID_DATA,
                msg_type::DATA_AMF0,
                with_set_data_frame(&payload),
            ),
        };
        self.write(&RtmpMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload,
        });
        Ok(())
    }

    /// What [`ClientSession::send_media`] sends, as standalone chunks (type 0 headers,
    /// depending on nothing sent before) for a caller that writes the bytes itself. A
    /// caller that does must send all its media this way: the session's own compressed
    /// headers would be read against these.
    pub fn media_chunks(
        &self,
        kind: MediaKind,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<Bytes, ClientError> {
        let stream_id = match (self.state, self.stream_id) {
            (ClientState::Publishing, Some(id)) => id,
            _ => return Err(self.invalid("send media")),
        };
        let (csid, type_id) = match kind {
            MediaKind::Audio => (CSID_AUDIO, msg_type::AUDIO),
            MediaKind::Video => (CSID_VIDEO, msg_type::VIDEO),
            MediaKind::Metadata => (CSID_DATA, msg_type::DATA_AMF0),
        };
        let wrapped;
        let payload = match kind {
            MediaKind::Metadata => {
                wrapped = with_set_data_frame(payload);
                &wrapped[..]
            }
            _ => payload,
        };
        Ok(super::chunk::encode_standalone(
            csid,
            timestamp,
            type_id,
            stream_id,
            payload,
            OUT_CHUNK_SIZE,
        ))
    }

    /// `@setDataFrame("onMetaData", ...)` at timestamp 0, before the sequence headers: what
    /// encoders send first. `metadata` is `onMetaData` and its object in AMF0.
    pub fn set_data_frame(&mut self, metadata: &[u8]) -> Result<(), ClientError> {
        self.send_media(MediaKind::Metadata, 0, Bytes::copy_from_slice(metadata))
    }

    /// End the publish or play and delete the stream: FCUnpublish (a publisher's, as
    /// ffmpeg sends it) then deleteStream. The session is `Connected` again.
    pub fn delete_stream(&mut self) -> Result<(), ClientError> {
        let Some(stream_id) = self.stream_id else {
            return Err(self.invalid("delete a stream"));
        };
        if let Some(name) = self.publishing_name.take() {
            self.call(
                "FCUnpublish",
                vec![Amf0Value::Null, Amf0Value::String(name)],
            );
        }
        let tid = self.take_transaction();
        self.send_command(
            0,
            &[
                Amf0Value::String("deleteStream".into()),
                Amf0Value::Number(tid),
                Amf0Value::Null,
                Amf0Value::Number(f64::from(stream_id)),
            ],
        );
        self.stream_id = None;
        if self.state != ClientState::Refused {
            self.state = ClientState::Connected;
        }
        self.request = None;
        Ok(())
    }

    /// Announce `size` as our outgoing chunk size and use it from the next message on.
    ///
    /// # Panics
    /// If `size` is outside `1..=0x7FFF_FFFF` (the server would reject it).
    pub fn set_chunk_size(&mut self, size: u32) {
        assert!(
            (1..=MAX_CHUNK_SIZE).contains(&size),
            "invalid RTMP chunk size {size}"
        );
        self.send_control(msg_type::SET_CHUNK_SIZE, &size.to_be_bytes());
        self.writer.set_chunk_size(size);
    }

    /// Send a command as given: `values` are the whole message (name, transaction id,
    /// command object, arguments). Answers come back as [`ClientEvent::Command`]. Commands
    /// on stream 0 go on the connection's command chunk stream, others on the stream's.
    pub fn send_command(&mut self, stream_id: u32, values: &[Amf0Value]) {
        let csid = if stream_id == 0 {
            CSID_COMMAND
        } else {
            CSID_STREAM_COMMAND
        };
        self.write(&RtmpMessage {
            csid,
            timestamp: 0,
            type_id: msg_type::COMMAND_AMF0,
            stream_id,
            payload: Bytes::from(amf::encode_all(values)),
        });
    }

    /// Send exactly `msg` (through the chunk writer, so headers stay consistent with what
    /// the session sends): for tests that need messages the session would never send. A
    /// valid Set Chunk Size also switches the writer to it, or what follows would be
    /// unreadable.
    ///
    /// # Panics
    /// If `msg.csid` is outside `2..=65599` or the payload over 16 MiB - 1 bytes.
    pub fn send_message(&mut self, msg: &RtmpMessage) {
        self.write(msg);
        if msg.type_id == msg_type::SET_CHUNK_SIZE {
            if let Some(size) = read_u32(&msg.payload).filter(|s| (1..=MAX_CHUNK_SIZE).contains(s))
            {
                self.writer.set_chunk_size(size);
            }
        }
    }

    fn require(&self, state: ClientState, action: &'static str) -> Result<(), ClientError> {
        if self.state == state {
            Ok(())
        } else {
            Err(self.invalid(action))
        }
    }

    fn invalid(&self, action: &'static str) -> ClientError {
        ClientError::InvalidState {
            action,
            state: self.state,
        }
    }

    fn take_transaction(&mut self) -> f64 {
        let tid = self.next_transaction;
        self.next_transaction += 1.0;
        tid
    }

    /// Send `name(tid, args...)` on stream 0 with a fresh transaction id; returns it.
    fn call(&mut self, name: &str, args: Vec<Amf0Value>) -> f64 {
        let tid = self.take_transaction();
        let mut values = Vec::with_capacity(2 + args.len());
        values.push(Amf0Value::String(name.to_owned()));
        values.push(Amf0Value::Number(tid));
        values.extend(args);
        self.send_command(0, &values);
        tid
    }

    fn send_control(&mut self, type_id: u8, body: &[u8]) {
        self.write(&RtmpMessage {
            csid: CSID_CONTROL,
            timestamp: 0,
            type_id,
            stream_id: 0,
            payload: Bytes::copy_from_slice(body),
        });
    }

    fn write(&mut self, msg: &RtmpMessage) {
        // Until the handshake is over, messages wait behind C2.
        let out = if self.handshake.is_some() {
            &mut self.held
        } else {
            &mut self.out
        };
        self.writer.write(msg, out);
    }

    fn count_received(&mut self, n: u64) {
        self.received += n;
        if self.peer_window > 0 && self.received - self.last_ack >= u64::from(self.peer_window) {
            self.last_ack = self.received;
            // The sequence number is the byte count modulo 2^32, as the spec wraps it.
            let seq = (self.received as u32).to_be_bytes();
            self.send_control(msg_type::ACKNOWLEDGEMENT, &seq);
        }
    }

    fn read_messages<M: FnMut(&mut Vec<ClientEvent>, MediaKind, u32, Bytes)>(
        &mut self,
        input: &mut BytesMut,
        events: &mut Vec<ClientEvent>,
        media: &mut M,
    ) -> Result<(), ClientError> {
        while let Some(msg) = self.reader.read(input)? {
            // Media is nearly everything a player receives, so it is handed on here, ahead
            // of the dispatch of everything else. Empty media messages carry nothing to
            // decode; the server session drops them the same way.
            let kind = match msg.type_id {
                msg_type::AUDIO => MediaKind::Audio,
                msg_type::VIDEO => MediaKind::Video,
                _ => {
                    self.on_message(msg, events, media)?;
                    continue;
                }
            };
            if !msg.payload.is_empty() {
                media(events, kind, msg.timestamp, msg.payload);
            }
        }
        Ok(())
    }

    fn on_message<M: FnMut(&mut Vec<ClientEvent>, MediaKind, u32, Bytes)>(
        &mut self,
        msg: RtmpMessage,
        events: &mut Vec<ClientEvent>,
        media: &mut M,
    ) -> Result<(), ClientError> {
        match msg.type_id {
            // Set Chunk Size and Abort are applied by the chunk reader itself.
            msg_type::SET_CHUNK_SIZE | msg_type::ABORT | msg_type::ACKNOWLEDGEMENT => {}
            msg_type::WINDOW_ACK_SIZE => {
                self.peer_window =
                    read_u32(&msg.payload).ok_or(ClientError::Malformed("window ack size"))?;
            }
            msg_type::SET_PEER_BANDWIDTH => {
                // The spec asks for our window acknowledgement size in answer whenever the
                // bandwidth differs from the last one we announced.
                let size =
                    read_u32(&msg.payload).ok_or(ClientError::Malformed("set peer bandwidth"))?;
                if self.announced_window != Some(size) {
                    self.announced_window = Some(size);
                    self.send_control(msg_type::WINDOW_ACK_SIZE, &size.to_be_bytes());
                }
            }
            msg_type::USER_CONTROL => self.on_user_control(&msg.payload, events)?,
            msg_type::DATA_AMF0 | msg_type::DATA_AMF3 => {
                let body = strip_amf3_format_byte(msg.type_id == msg_type::DATA_AMF3, &msg.payload);
                let values = amf::decode_all(body).map_err(|source| ClientError::Amf {
                    what: "data message",
                    source,
                })?;
                self.on_data(msg.timestamp, values, events, media);
            }
            msg_type::COMMAND_AMF0 | msg_type::COMMAND_AMF3 => {
                let body =
                    strip_amf3_format_byte(msg.type_id == msg_type::COMMAND_AMF3, &msg.payload);
                let values = amf::decode_all(body).map_err(|source| ClientError::Amf {
                    what: "command",
                    source,
                })?;
                self.on_command(values, events);
            }
            msg_type::AGGREGATE => {
                split_aggregate(&msg, |kind, timestamp, payload| {
                    media(events, kind, timestamp, payload)
                })
                .map_err(|e| match e {
                    AggregateError::Truncated => ClientError::Malformed("aggregate"),
                    AggregateError::Metadata(source) => ClientError::Amf {
                        what: "data message",
                        source,
                    },
                })?;
            }
            // Shared objects and anything unknown: nothing a live stream uses.
            _ => {}
        }
        Ok(())
    }

    fn on_user_control(
        &mut self,
        payload: &[u8],
        events: &mut Vec<ClientEvent>,
    ) -> Result<(), ClientError> {
        let (Some(event), Some(value)) = (
            payload.get(..2),
            read_u32(payload.get(2..).unwrap_or_default()),
        ) else {
            return Err(ClientError::Malformed("user control"));
        };
        let event = u16::from_be_bytes([event[0], event[1]]);
        if event == user_control::PING_REQUEST {
            let mut pong = [0u8; 6];
            pong[..2].copy_from_slice(&user_control::PING_RESPONSE.to_be_bytes());
            pong[2..].copy_from_slice(&value.to_be_bytes());
            self.send_control(msg_type::USER_CONTROL, &pong);
        } else {
            events.push(ClientEvent::UserControl { event, value });
        }
        Ok(())
    }

    fn on_data<M: FnMut(&mut Vec<ClientEvent>, MediaKind, u32, Bytes)>(
        &mut self,
        timestamp: u32,
        values: Vec<Amf0Value>,
        events: &mut Vec<ClientEvent>,
        media: &mut M,
    ) {
        match values.first().and_then(Amf0Value::as_str) {
            Some("onMetaData" | "@setDataFrame") => {
                if let Some(payload) = metadata_from_values(values) {
                    media(events, MediaKind::Metadata, timestamp, payload);
                }
            }
            // NetStream.Data.Start comes this way.
            Some("onStatus") => self.on_status(&values, events),
            _ => events.push(ClientEvent::Data(values)),
        }
    }

    fn on_command(&mut self, values: Vec<Amf0Value>, events: &mut Vec<ClientEvent>) {
        let name = values.first().and_then(Amf0Value::as_str).unwrap_or("");
        let tid = values.get(1).and_then(Amf0Value::as_f64);
        let answer = matches!(name, "_result" | "_error");
        if answer && tid.is_some() && tid == self.connect_transaction {
            self.connect_transaction = None;
            self.on_connect_answer(name == "_result", values, events);
        } else if answer && tid.is_some() && tid == self.create_stream_transaction {
            self.create_stream_transaction = None;
            self.on_create_stream_answer(name == "_result", &values, events);
        } else if name == "onStatus" {
            self.on_status(&values, events);
        } else {
            events.push(ClientEvent::Command(values));
        }
    }

    fn on_connect_answer(
        &mut self,
        accepted: bool,
        values: Vec<Amf0Value>,
        events: &mut Vec<ClientEvent>,
    ) {
        if !accepted {
            self.state = ClientState::Refused;
            self.request = None;
            events.push(error_status(&values, "NetConnection.Connect.Rejected"));
            return;
        }
        let mut values = values.into_iter().skip(2);
        let properties = values.next().unwrap_or(Amf0Value::Null);
        let information = values.next().unwrap_or(Amf0Value::Null);
        self.state = ClientState::Connected;
        events.push(ClientEvent::Connected {
            properties: Box::new(properties),
            information: Box::new(information),
        });
        self.start_request();
    }

    fn on_create_stream_answer(
        &mut self,
        accepted: bool,
        values: &[Amf0Value],
        events: &mut Vec<ClientEvent>,
    ) {
        // The id is the first number after the transaction id (the command object is null).
        let stream_id = values
            .iter()
            .skip(2)
            .find_map(Amf0Value::as_f64)
            .filter(|id| accepted && *id >= 0.0 && *id <= f64::from(u32::MAX));
        let Some(stream_id) = stream_id else {
            self.state = ClientState::Connected;
            self.request = None;
            events.push(error_status(values, "NetConnection.Call.Failed"));
            return;
        };
        let stream_id = stream_id as u32;
        self.stream_id = Some(stream_id);
        self.state = ClientState::Connected;
        events.push(ClientEvent::StreamCreated { stream_id });
        self.start_request();
    }

    fn on_status(&mut self, values: &[Amf0Value], events: &mut Vec<ClientEvent>) {
        let information = values.iter().skip(1).find(|v| v.get("code").is_some());
        let text = |key: &str| {
            information
                .and_then(|info| info.get(key))
                .and_then(Amf0Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (level, code) = (text("level"), text("code"));
        let started = match (self.state, code.as_str()) {
            (ClientState::PublishRequested, "NetStream.Publish.Start") => {
                self.state = ClientState::Publishing;
                Some(ClientEvent::Publishing)
            }
            (ClientState::PlayRequested, "NetStream.Play.Start") => {
                self.state = ClientState::Playing;
                Some(ClientEvent::Playing)
            }
            _ => None,
        };
        let refused = level == "error"
            && matches!(
                self.state,
                ClientState::PublishRequested
                    | ClientState::Publishing
                    | ClientState::PlayRequested
                    | ClientState::Playing
            );
        // The stream stays ours: a new publish or play may go out on it.
        if refused || (self.state == ClientState::Playing && code == "NetStream.Play.Stop") {
            self.state = ClientState::Connected;
            self.publishing_name = None;
        }
        events.push(ClientEvent::Status(Box::new(Status {
            level,
            code,
            description: text("description"),
        })));
        events.extend(started);
    }
}

/// A `Status` of level `error` for an `_error` answer: the server's information object if
/// it has one, else `code`.
fn error_status(values: &[Amf0Value], code: &str) -> ClientEvent {
    let information = values.iter().skip(2).find(|v| v.get("code").is_some());
    let text = |key: &str| {
        information
            .and_then(|info| info.get(key))
            .and_then(Amf0Value::as_str)
            .map(str::to_owned)
    };
    ClientEvent::Status(Box::new(Status {
        level: "error".to_owned(),
        code: text("code").unwrap_or_else(|| code.to_owned()),
        description: text("description").unwrap_or_default(),
    }))
}

/// `@setDataFrame` in front of an encoded `onMetaData(object)`.
fn with_set_data_frame(metadata: &[u8]) -> Bytes {
    // The marker, a u16 length and the 13 bytes of "@setDataFrame".
    let mut out = BytesMut::with_capacity(16 + metadata.len());
    out.put_slice(&amf::encode_all(&[Amf0Value::String(
        "@setDataFrame".into(),
    )]));
    out.put_slice(metadata);
    out.freeze()
}

fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests;
