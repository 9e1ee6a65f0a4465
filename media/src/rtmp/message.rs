//! RTMP messages as both ends name them: message type ids, the chunk streams and message
//! stream id we send on, user control events, a [`Frame`] as RTMP chunks, and the reading of
//! data and aggregate messages that both the server and the client session need.

use bytes::Bytes;

use super::chunk::{self, RtmpMessage};
use crate::amf::{self, Amf0Value, AmfError};
use crate::frame::{Frame, MediaKind};

/// Chunk size we announce and use for everything we send.
pub const OUT_CHUNK_SIZE: u32 = 4096;
/// The message stream id given to the first `createStream`: media for every viewer is
/// chunked once for this id, so a client that uses it shares the pre-encoded bytes.
pub const MEDIA_STREAM_ID: u32 = 1;
/// Chunk stream ids we send on (any consistent choice works; these are what FMS uses).
pub const CSID_CONTROL: u32 = 2;
pub const CSID_COMMAND: u32 = 3;
pub const CSID_AUDIO: u32 = 4;
pub const CSID_DATA: u32 = 5;
pub const CSID_VIDEO: u32 = 6;
/// Where a client sends commands on a media stream (publish, play): ffmpeg's choice, which
/// keeps them off the chunk stream of the connection-level commands.
pub const CSID_STREAM_COMMAND: u32 = 8;

/// The acknowledgement window we ask peers for.
pub const WINDOW_ACK_SIZE: u32 = 2_500_000;

pub mod msg_type {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const SHARED_OBJECT_AMF3: u8 = 16;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const SHARED_OBJECT_AMF0: u8 = 19;
    pub const COMMAND_AMF0: u8 = 20;
    pub const AGGREGATE: u8 = 22;
}

/// User control message event types (the first two bytes of a type 4 message).
pub mod user_control {
    pub const STREAM_BEGIN: u16 = 0;
    pub const STREAM_EOF: u16 = 1;
    pub const STREAM_IS_RECORDED: u16 = 4;
    pub const SET_BUFFER_LENGTH: u16 = 3;
    pub const PING_REQUEST: u16 = 6;
    pub const PING_RESPONSE: u16 = 7;
}

impl Frame {
    /// The frame as RTMP chunks on [`MEDIA_STREAM_ID`] at [`OUT_CHUNK_SIZE`], built once.
    pub fn rtmp_chunks(&self) -> &Bytes {
        self.rtmp
            .get_or_init(|| self.rtmp_chunks_for(MEDIA_STREAM_ID))
    }

    /// RTMP chunks for another message stream id (a client that created several streams).
    pub fn rtmp_chunks_for(&self, stream_id: u32) -> Bytes {
        let (csid, type_id) = match self.kind {
            MediaKind::Audio => (CSID_AUDIO, msg_type::AUDIO),
            MediaKind::Video => (CSID_VIDEO, msg_type::VIDEO),
            MediaKind::Metadata => (CSID_DATA, msg_type::DATA_AMF0),
        };
        chunk::encode_standalone(
            csid,
            self.wire_timestamp(),
            type_id,
            stream_id,
            &self.payload,
            OUT_CHUNK_SIZE,
        )
    }
}

/// AMF3 command and data messages start with a format byte (0) before AMF0-encoded values.
pub(crate) fn strip_amf3_format_byte(is_amf3: bool, payload: &[u8]) -> &[u8] {
    if is_amf3 && payload.first() == Some(&0) {
        &payload[1..]
    } else {
        payload
    }
}

/// The `onMetaData` payload players expect from a data message's values:
/// `@setDataFrame("onMetaData", obj)` loses its wrapper, `onMetaData(obj)` is kept as is,
/// anything else (cue points, text, sample access) is not metadata.
pub(crate) fn metadata_from_values(values: Vec<Amf0Value>) -> Option<Bytes> {
    let mut values = values.into_iter();
    let first = values.next();
    let (name, object) = match first.as_ref().and_then(Amf0Value::as_str) {
        Some("@setDataFrame") => {
            let name = values.next();
            (
                name.and_then(|v| v.as_str().map(str::to_owned)),
                values.next(),
            )
        }
        Some(name) => (Some(name.to_owned()), values.next()),
        None => (None, None),
    };
    match (name.as_deref(), object) {
        (Some("onMetaData"), Some(object)) => Some(Bytes::from(amf::encode_all(&[
            Amf0Value::String("onMetaData".into()),
            object,
        ]))),
        _ => None,
    }
}

/// [`metadata_from_values`] of an encoded data message body.
pub(crate) fn metadata_from_data(body: &[u8]) -> Result<Option<Bytes>, AmfError> {
    Ok(metadata_from_values(amf::decode_all(body)?))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AggregateError {
    #[error("aggregate message cut inside a tag")]
    Truncated,
    #[error("malformed data tag in an aggregate message: {0}")]
    Metadata(AmfError),
}

/// An aggregate message is a run of FLV tags whose timestamps are relative to the first one;
/// the message timestamp replaces the first tag's. Audio, video and `onMetaData` tags are
/// handed to `emit` in order; empty media and other tags are skipped, as in plain messages.
pub(crate) fn split_aggregate(
    msg: &RtmpMessage,
    mut emit: impl FnMut(MediaKind, u32, Bytes),
) -> Result<(), AggregateError> {
    let mut rest = msg.payload.clone();
    let mut base: Option<u32> = None;
    while !rest.is_empty() {
        if rest.len() < 11 {
            return Err(AggregateError::Truncated);
        }
        let tag_type = rest[0] & 0x1f;
        let size = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
        let ts = u32::from_be_bytes([rest[7], rest[4], rest[5], rest[6]]);
        if rest.len() < 11 + size + 4 {
            return Err(AggregateError::Truncated);
        }
        let payload = rest.slice(11..11 + size);
        let first = *base.get_or_insert(ts);
        let timestamp = msg.timestamp.wrapping_add(ts.wrapping_sub(first));
        let kind = match tag_type {
            8 => Some(MediaKind::Audio),
            9 => Some(MediaKind::Video),
            _ => None,
        };
        if let Some(kind) = kind {
            if !payload.is_empty() {
                emit(kind, timestamp, payload);
            }
        } else if tag_type == 18 {
            if let Some(payload) = metadata_from_data(&payload).map_err(AggregateError::Metadata)? {
                emit(MediaKind::Metadata, timestamp, payload);
            }
        }
        rest = rest.slice(11 + size + 4..);
    }
    Ok(())
}
