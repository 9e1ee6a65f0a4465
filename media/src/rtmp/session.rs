//! Server side of an RTMP connection as a sans-IO state machine.
//!
//! The driver feeds received bytes with [`ServerSession::feed`], gets back [`SessionEvent`]s
//! (publish and play requests, media from a publisher, stream teardown) and sends whatever
//! the session queued in [`ServerSession::take_output`]. Decisions that need the rest of the
//! system (is this name free? is this stream live?) are answered by calling `accept_*` or
//! `reject_*`, which queue the status messages clients expect.

use bytes::{Bytes, BytesMut};

use super::chunk::{
    ChunkError, ChunkReader, ChunkWriter, RtmpMessage, MAX_IN_PROGRESS_BYTES, MAX_MESSAGE_SIZE,
};
use super::handshake::{HandshakeError, ServerHandshake};
use super::message::{
    metadata_from_data, msg_type, split_aggregate, strip_amf3_format_byte, user_control,
    AggregateError, CSID_COMMAND, CSID_CONTROL, CSID_DATA, MEDIA_STREAM_ID, OUT_CHUNK_SIZE,
    WINDOW_ACK_SIZE,
};
use crate::amf::{self, Amf0Value, AmfError};
use crate::frame::MediaKind;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
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
    #[error("command {0:?} before connect")]
    NotConnected(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// `publish`: answer with [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`].
    Publish {
        app: String,
        name: String,
        query: String,
    },
    /// `play`: answer with [`ServerSession::accept_play`] or [`ServerSession::reject_play`].
    Play {
        app: String,
        name: String,
        query: String,
    },
    /// Audio, video or metadata from the accepted publisher, with the wire (32-bit) timestamp.
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    },
    /// The publisher ended its stream cleanly (FCUnpublish / deleteStream / closeStream).
    Unpublish,
    /// The player stopped playing (deleteStream / closeStream).
    StopPlay,
    /// receiveAudio / receiveVideo from a player.
    ReceiveAudio(bool),
    ReceiveVideo(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Idle,
    PublishPending(u32),
    Publishing(u32),
    PlayPending(u32),
    Playing(u32),
}

/// The largest message a peer may send, and the most its incomplete messages may declare
/// together, until it is publishing: `connect`, `createStream`, `publish`, `play` and
/// their kin need a few hundred bytes. A player never needs more; a publisher gets the
/// chunk reader's full limits once its publish is accepted.
pub const NEGOTIATION_MESSAGE_LIMIT: usize = 64 * 1024;

pub struct ServerSession {
    handshake: Option<ServerHandshake>,
    reader: ChunkReader,
    writer: ChunkWriter,
    out: BytesMut,
    app: Option<String>,
    object_encoding: f64,
    next_stream_id: u32,
    role: Role,
    /// Acknowledgement bookkeeping: the peer's window and what we have received.
    peer_window: u32,
    received: u64,
    last_ack: u64,
}

impl ServerSession {
    /// `random` seeds the handshake's S1.
    pub fn new(random: [u8; 1528]) -> Self {
        ServerSession {
            handshake: Some(ServerHandshake::new(random)),
            reader: {
                let mut reader = ChunkReader::new();
                reader.set_limits(NEGOTIATION_MESSAGE_LIMIT, NEGOTIATION_MESSAGE_LIMIT);
                reader
            },
            writer: ChunkWriter::new(),
            out: BytesMut::new(),
            app: None,
            object_encoding: 0.0,
            next_stream_id: MEDIA_STREAM_ID,
            role: Role::Idle,
            peer_window: 0,
            received: 0,
            last_ack: 0,
        }
    }

    /// Declared bytes of the peer's messages begun and not yet complete.
    pub fn incomplete_bytes(&self) -> usize {
        self.reader.incomplete_bytes()
    }

    pub fn handshake_done(&self) -> bool {
        self.handshake.is_none()
    }

    /// The application name given in `connect` (`live` in `rtmp://host/live/room`).
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }

    /// The message stream id of the accepted play, for encoding media to this viewer.
    pub fn play_stream_id(&self) -> Option<u32> {
        match self.role {
            Role::Playing(id) => Some(id),
            _ => None,
        }
    }

    /// Bytes queued for the peer.
    pub fn take_output(&mut self) -> BytesMut {
        self.out.split()
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Consume what can be parsed from `input`, pushing events to `events`. Stops early
    /// after a publish or play request: answer it, then feed the rest.
    pub fn feed(
        &mut self,
        input: &mut BytesMut,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), SessionError> {
        if let Some(hs) = self.handshake.as_mut() {
            if !hs.feed(input, &mut self.out)? {
                return Ok(());
            }
            self.handshake = None;
        }
        let before = input.len();
        let result = self.read_messages(input, events);
        self.count_received((before - input.len()) as u64);
        result
    }

    fn read_messages(
        &mut self,
        input: &mut BytesMut,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), SessionError> {
        while let Some(msg) = self.reader.read(input)? {
            self.on_message(msg, events)?;
            // Media sent right behind publish must wait for the driver's answer.
            if matches!(self.role, Role::PublishPending(_) | Role::PlayPending(_)) {
                break;
            }
        }
        Ok(())
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

    fn on_message(
        &mut self,
        msg: RtmpMessage,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), SessionError> {
        match msg.type_id {
            // Set Chunk Size and Abort are applied by the chunk reader itself.
            msg_type::SET_CHUNK_SIZE | msg_type::ABORT | msg_type::ACKNOWLEDGEMENT => {}
            msg_type::WINDOW_ACK_SIZE => {
                let size =
                    read_u32(&msg.payload).ok_or(SessionError::Malformed("window ack size"))?;
                self.peer_window = size;
            }
            msg_type::SET_PEER_BANDWIDTH => {}
            msg_type::USER_CONTROL => self.on_user_control(&msg.payload)?,
            msg_type::AUDIO | msg_type::VIDEO
                if self.publishing_on(msg.stream_id) && !msg.payload.is_empty() =>
            {
                let kind = if msg.type_id == msg_type::AUDIO {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                events.push(SessionEvent::Media {
                    kind,
                    timestamp: msg.timestamp,
                    payload: msg.payload,
                });
            }
            msg_type::DATA_AMF0 | msg_type::DATA_AMF3 => {
                let body = strip_amf3_format_byte(msg.type_id == msg_type::DATA_AMF3, &msg.payload);
                if self.publishing_on(msg.stream_id) {
                    let metadata =
                        metadata_from_data(body).map_err(|source| SessionError::Amf {
                            what: "data message",
                            source,
                        })?;
                    if let Some(metadata) = metadata {
                        events.push(SessionEvent::Media {
                            kind: MediaKind::Metadata,
                            timestamp: msg.timestamp,
                            payload: metadata,
                        });
                    }
                }
            }
            msg_type::COMMAND_AMF0 | msg_type::COMMAND_AMF3 => {
                let body =
                    strip_amf3_format_byte(msg.type_id == msg_type::COMMAND_AMF3, &msg.payload);
                let values = amf::decode_all(body).map_err(|source| SessionError::Amf {
                    what: "command",
                    source,
                })?;
                self.on_command(msg.stream_id, values, events)?;
            }
            msg_type::AGGREGATE if self.publishing_on(msg.stream_id) => {
                split_aggregate(&msg, |kind, timestamp, payload| {
                    events.push(SessionEvent::Media {
                        kind,
                        timestamp,
                        payload,
                    })
                })
                .map_err(|e| match e {
                    AggregateError::Truncated => SessionError::Malformed("aggregate"),
                    AggregateError::Metadata(source) => SessionError::Amf {
                        what: "data message",
                        source,
                    },
                })?;
            }
            // Shared objects and anything unknown are not used by live streaming clients.
            _ => {}
        }
        Ok(())
    }

    fn publishing_on(&self, stream_id: u32) -> bool {
        self.role == Role::Publishing(stream_id)
    }

    fn on_user_control(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        if payload.len() < 2 {
            return Err(SessionError::Malformed("user control"));
        }
        let event = u16::from_be_bytes([payload[0], payload[1]]);
        if event == user_control::PING_REQUEST {
            let ts = read_u32(&payload[2..]).ok_or(SessionError::Malformed("ping request"))?;
            self.send_user_control(user_control::PING_RESPONSE, ts);
        }
        Ok(())
    }

    fn on_command(
        &mut self,
        stream_id: u32,
        values: Vec<Amf0Value>,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), SessionError> {
        let mut args = values.into_iter();
        let Some(name) = args.next().and_then(|v| v.as_str().map(str::to_owned)) else {
            return Err(SessionError::Malformed("command name"));
        };
        let tid = args.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
        let command_object = args.next().unwrap_or(Amf0Value::Null);
        let rest: Vec<Amf0Value> = args.collect();
        if name != "connect" && self.app.is_none() {
            return Err(SessionError::NotConnected(name));
        }
        match name.as_str() {
            "connect" => self.on_connect(tid, &command_object),
            "createStream" => {
                let id = self.next_stream_id;
                self.next_stream_id = self.next_stream_id.saturating_add(1);
                self.send_result(tid, vec![Amf0Value::Null, Amf0Value::Number(f64::from(id))]);
            }
            "releaseStream" | "FCPublish" | "getStreamLength"
                // ffmpeg and OBS fire these and mostly ignore the answers; an answer keeps
                // strict clients from waiting for one.
                if tid != 0.0 => {
                    let value = if name == "getStreamLength" {
                        Amf0Value::Number(0.0)
                    } else {
                        Amf0Value::Undefined
                    };
                    self.send_result(tid, vec![Amf0Value::Null, value]);
                }
            "publish" => {
                let raw = rest.first().and_then(Amf0Value::as_str).unwrap_or("");
                let (name, query) = split_query(raw);
                if self.role != Role::Idle {
                    self.send_status(stream_id, "error", "NetStream.Publish.BadName", "Already publishing or playing");
                    return Ok(());
                }
                self.role = Role::PublishPending(stream_id);
                events.push(SessionEvent::Publish {
                    app: self.app.clone().unwrap_or_default(),
                    name,
                    query,
                });
            }
            "play" => {
                let raw = rest.first().and_then(Amf0Value::as_str).unwrap_or("");
                let (name, query) = split_query(raw);
                if self.role != Role::Idle {
                    self.send_status(stream_id, "error", "NetStream.Play.Failed", "Already publishing or playing");
                    return Ok(());
                }
                self.role = Role::PlayPending(stream_id);
                events.push(SessionEvent::Play {
                    app: self.app.clone().unwrap_or_default(),
                    name,
                    query,
                });
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => match self.role {
                Role::Publishing(_) | Role::PublishPending(_) => {
                    self.role = Role::Idle;
                    events.push(SessionEvent::Unpublish);
                    if name == "FCUnpublish" && tid != 0.0 {
                        self.send_result(tid, vec![Amf0Value::Null, Amf0Value::Undefined]);
                    }
                }
                Role::Playing(_) | Role::PlayPending(_) => {
                    self.role = Role::Idle;
                    events.push(SessionEvent::StopPlay);
                }
                Role::Idle => {}
            },
            "receiveAudio" | "receiveVideo" => {
                let flag = rest.first().and_then(Amf0Value::as_bool).unwrap_or(true);
                events.push(if name == "receiveAudio" {
                    SessionEvent::ReceiveAudio(flag)
                } else {
                    SessionEvent::ReceiveVideo(flag)
                });
            }
            // pause, seek, _checkbw and friends make no sense on a live stream.
            _ => {}
        }
        Ok(())
    }

    fn on_connect(&mut self, tid: f64, command_object: &Amf0Value) {
        let app = command_object
            .get("app")
            .and_then(Amf0Value::as_str)
            .unwrap_or("");
        // Some clients put the query or a trailing slash into the app name.
        let (app, _) = split_query(app);
        self.app = Some(app.trim_matches('/').to_owned());
        self.object_encoding = command_object
            .get("objectEncoding")
            .and_then(Amf0Value::as_f64)
            .unwrap_or(0.0);

        self.send_control(msg_type::WINDOW_ACK_SIZE, &WINDOW_ACK_SIZE.to_be_bytes());
        let mut bandwidth = WINDOW_ACK_SIZE.to_be_bytes().to_vec();
        bandwidth.push(2); // dynamic
        self.send_control(msg_type::SET_PEER_BANDWIDTH, &bandwidth);
        self.send_control(msg_type::SET_CHUNK_SIZE, &OUT_CHUNK_SIZE.to_be_bytes());
        self.writer.set_chunk_size(OUT_CHUNK_SIZE);

        let properties = Amf0Value::Object(vec![
            ("fmsVer".into(), Amf0Value::String("FMS/3,0,1,123".into())),
            ("capabilities".into(), Amf0Value::Number(31.0)),
        ]);
        let information = Amf0Value::Object(vec![
            ("level".into(), Amf0Value::String("status".into())),
            (
                "code".into(),
                Amf0Value::String("NetConnection.Connect.Success".into()),
            ),
            (
                "description".into(),
                Amf0Value::String("Connection succeeded.".into()),
            ),
            (
                "objectEncoding".into(),
                Amf0Value::Number(self.object_encoding),
            ),
        ]);
        self.send_result(tid, vec![properties, information]);
    }

    /// Answer a pending publish with NetStream.Publish.Start.
    pub fn accept_publish(&mut self) {
        if let Role::PublishPending(id) = self.role {
            self.role = Role::Publishing(id);
            // Media may come now: keyframes of megabytes.
            self.reader
                .set_limits(MAX_MESSAGE_SIZE, MAX_IN_PROGRESS_BYTES);
            self.send_user_control(user_control::STREAM_BEGIN, id);
            self.send_status(id, "status", "NetStream.Publish.Start", "Start publishing");
        }
    }

    /// Answer a pending publish with an error status such as NetStream.Publish.BadName. The
    /// driver closes the connection after sending it.
    pub fn reject_publish(&mut self, code: &str, description: &str) {
        if let Role::PublishPending(id) = self.role {
            self.role = Role::Idle;
            self.send_status(id, "error", code, description);
        }
    }

    /// Answer a pending play: StreamBegin, Play.Reset, Play.Start and the sample-access
    /// notice players wait for. Media follows on [`MEDIA_STREAM_ID`] (or the stream id
    /// the client created).
    pub fn accept_play(&mut self, name: &str) {
        if let Role::PlayPending(id) = self.role {
            self.role = Role::Playing(id);
            self.send_user_control(user_control::STREAM_IS_RECORDED, id);
            self.send_user_control(user_control::STREAM_BEGIN, id);
            let reset = format!("Playing and resetting {name}.");
            self.send_status(id, "status", "NetStream.Play.Reset", &reset);
            let start = format!("Started playing {name}.");
            self.send_status(id, "status", "NetStream.Play.Start", &start);
            let access = amf::encode_all(&[
                Amf0Value::String("|RtmpSampleAccess".into()),
                Amf0Value::Boolean(true),
                Amf0Value::Boolean(true),
            ]);
            self.send(CSID_DATA, msg_type::DATA_AMF0, id, access);
            // No `onStatus` NetStream.Data.Start data message: libavformat (ffplay,
            // ffprobe, VLC, OBS) turns a data message of any other name than onMetaData,
            // onCuePoint or |RtmpSampleAccess into a phantom data stream, and no client
            // needs it (nginx-rtmp does not send it either).
        }
    }

    /// Answer a pending play with NetStream.Play.StreamNotFound (or another error code).
    pub fn reject_play(&mut self, code: &str, description: &str) {
        if let Role::PlayPending(id) = self.role {
            self.role = Role::Idle;
            self.send_status(id, "error", code, description);
        }
    }

    /// Tell a player the stream ended: UnpublishNotify, Play.Stop and StreamEOF.
    pub fn end_play(&mut self, name: &str) {
        if let Role::Playing(id) = self.role {
            let text = format!("{name} is now unpublished.");
            self.send_status(id, "status", "NetStream.Play.UnpublishNotify", &text);
            let text = format!("Stopped playing {name}.");
            self.send_status(id, "status", "NetStream.Play.Stop", &text);
            self.send_user_control(user_control::STREAM_EOF, id);
            self.role = Role::Idle;
        }
    }

    fn send_result(&mut self, tid: f64, mut values: Vec<Amf0Value>) {
        let mut all = vec![Amf0Value::String("_result".into()), Amf0Value::Number(tid)];
        all.append(&mut values);
        self.send(
            CSID_COMMAND,
            msg_type::COMMAND_AMF0,
            0,
            amf::encode_all(&all),
        );
    }

    fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let body = amf::encode_all(&[
            Amf0Value::String("onStatus".into()),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            status_object(level, code, description),
        ]);
        self.send(CSID_COMMAND, msg_type::COMMAND_AMF0, stream_id, body);
    }

    fn send_user_control(&mut self, event: u16, value: u32) {
        let mut body = event.to_be_bytes().to_vec();
        body.extend_from_slice(&value.to_be_bytes());
        self.send_control(msg_type::USER_CONTROL, &body);
    }

    fn send_control(&mut self, type_id: u8, body: &[u8]) {
        self.send(CSID_CONTROL, type_id, 0, body.to_vec());
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        if csid == CSID_DATA {
            // Media metadata goes out on this chunk stream too, as shared chunks this
            // writer never sees: compressing against our own last message there would
            // leave the client reading the metadata's header fields.
            self.writer.forget_csid(csid);
        }
        let msg = RtmpMessage {
            csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload: Bytes::from(payload),
        };
        self.writer.write(&msg, &mut self.out);
    }
}

fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::Object(vec![
        ("level".into(), Amf0Value::String(level.into())),
        ("code".into(), Amf0Value::String(code.into())),
        ("description".into(), Amf0Value::String(description.into())),
    ])
}

fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Split `name?query` as publishers append tokens to stream names.
fn split_query(raw: &str) -> (String, String) {
    match raw.split_once('?') {
        Some((name, query)) => (name.to_owned(), query.to_owned()),
        None => (raw.to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests;
