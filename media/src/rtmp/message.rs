//! RTMP messages as both ends name them: message type ids, the chunk streams and message
//! stream id we send on, user control events, and a [`Frame`] as RTMP chunks.

use bytes::Bytes;

use super::chunk;
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
