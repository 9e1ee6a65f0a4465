//! RTMP chunk stream layer (RTMP 1.0 spec, sections 5.3 and 5.4), sans-IO.
//!
//! [`ChunkReader`] reassembles messages from interleaved chunks; [`ChunkWriter`] splits messages
//! into chunks with compressed headers; [`encode_standalone`] produces connection-independent
//! bytes for fan-out.
//!
//! Interpretation choices (the spec leaves room, so they are pinned down here):
//! - Timestamps are u32 and all delta arithmetic wraps (spec 5.3.1.2.5 / 5.3.1.3).
//! - A type-3 chunk that starts a new message adds the last delta to the previous message's
//!   timestamp. After a type-0 header that "delta" is the type-0 absolute timestamp itself, as
//!   spec 5.3.1.2.4 says ("the timestamp delta for this Type 3 chunk is the same as the timestamp
//!   of the Type 0 chunk"); ffmpeg and librtmp do the same.
//! - Extended timestamp on type-3 chunks: spec'd senders (Flash, FMS, ffmpeg, librtmp) repeat the
//!   4-byte field whenever the last type 0/1/2 header on that csid carried 0xFFFFFF; some encoders
//!   omit it. The reader therefore peeks: if the 4 bytes after a type-3 basic header equal the
//!   last extended field value on that csid (or the absolute timestamp of the message), they are
//!   taken as the extended field, otherwise as payload. If fewer than 4 bytes are buffered and
//!   they are a prefix of an expected value, it waits for more. A payload starting with exactly
//!   those 4 bytes from an omitting encoder would be misread; that is a 2^-32 risk we accept.
//! - A type 0/1/2 header on a csid whose message is still incomplete abandons that partial
//!   message (as an Abort would) and starts a new one; some encoders do this after errors.
//! - Set Chunk Size and Abort are honoured whatever csid / message stream id they arrive on.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Chunk size both directions start with (spec 5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest message the reader accepts by default. The 24-bit length field already caps declared
/// lengths at 16 MiB - 1, so use [`ChunkReader::with_max_message_size`] for a tighter limit.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// Largest chunk size a Set Chunk Size message may carry (the top bit must be zero).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// Smallest chunk stream id (0 and 1 are basic-header escape values).
pub const MIN_CSID: u32 = 2;
/// Largest chunk stream id a 3-byte basic header can express.
pub const MAX_CSID: u32 = 65599;
/// Message type id of Set Chunk Size.
pub const TYPE_SET_CHUNK_SIZE: u8 = 1;
/// Message type id of Abort Message.
pub const TYPE_ABORT: u8 = 2;

/// At most this many csids may have a partially received message at once.
const MAX_IN_PROGRESS: usize = 64;
/// Declared bytes of all incomplete messages together, by default: with [`MAX_IN_PROGRESS`]
/// messages of [`MAX_MESSAGE_SIZE`] a peer could otherwise make one connection hold a
/// gigabyte.
pub const MAX_IN_PROGRESS_BYTES: usize = 32 * 1024 * 1024;
/// At most this many csids are remembered per connection.
const MAX_KNOWN_CSIDS: usize = 1024;
/// Up-front allocation cap for a partial message: the rest grows as bytes actually arrive, so a
/// declared-but-never-sent 16 MiB message costs nothing.
const PREALLOC_CAP: usize = 64 * 1024;
/// Timestamp field value meaning "see the extended timestamp field".
const EXTENDED: u32 = 0xFF_FFFF;
/// Largest value of the 24-bit message length field.
const MAX_LENGTH_FIELD: usize = 0xFF_FFFF;

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpMessage {
    pub csid: u32,
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

/// Chunk stream errors. All of them are fatal for the connection: the reader stays failed and
/// returns the same error again on every later call.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("message length {length} exceeds the limit of {max} bytes")]
    MessageTooLarge { length: usize, max: usize },
    #[error("too many chunk streams (limit {limit})")]
    TooManyChunkStreams { limit: usize },
    #[error("chunk with header type {fmt} on chunk stream {csid} which never had a type 0 header")]
    UnknownChunkStream { csid: u32, fmt: u8 },
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
    #[error("malformed protocol control message of type {0}")]
    MalformedControl(u8),
    #[error("incomplete messages would hold more than {limit} bytes")]
    TooMuchInProgress { limit: usize },
}

/// What the reader remembers about one chunk stream.
#[derive(Debug, Default)]
struct StreamState {
    /// Absolute timestamp of the message being received / last received.
    timestamp: u32,
    /// Timestamp field of the last type 0/1/2 header; the delta a type-3 new message adds.
    delta: u32,
    /// The last type 0/1/2 header used the extended timestamp field.
    extended: bool,
    length: usize,
    type_id: u8,
    stream_id: u32,
    /// Bytes of the incomplete message, if one is in progress.
    partial: Option<BytesMut>,
}

/// A parsed (not yet applied) chunk header.
struct Header {
    fmt: u8,
    csid: u32,
    /// Basic header + message header + extended timestamp, in bytes.
    size: usize,
    /// Timestamp or delta, after resolving the extended field (fmt 0/1/2 only).
    ts_field: u32,
    extended: bool,
    length: usize,
    type_id: u8,
    stream_id: u32,
}

/// Payload bytes still expected for the chunk whose header was consumed last.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    csid: u32,
    remaining: usize,
}

/// Incoming side of the chunk stream: bytes in, messages out.
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: u32,
    max_message_size: usize,
    max_in_progress_bytes: usize,
    streams: HashMap<u32, StreamState>,
    /// Number of streams whose `partial` is `Some`.
    in_progress: usize,
    /// Sum of the declared lengths of the incomplete messages.
    in_progress_bytes: usize,
    current: Option<Cursor>,
    failed: Option<ChunkError>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkReader {
    pub fn new() -> Self {
        Self::with_max_message_size(MAX_MESSAGE_SIZE)
    }

    /// Reader that rejects messages declaring more than `max` bytes.
    pub fn with_max_message_size(max: usize) -> Self {
        ChunkReader {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message_size: max,
            max_in_progress_bytes: MAX_IN_PROGRESS_BYTES,
            streams: HashMap::new(),
            in_progress: 0,
            in_progress_bytes: 0,
            current: None,
            failed: None,
        }
    }

    /// Change the limits: the largest message the peer may declare, and the declared bytes
    /// of its incomplete messages together. Messages already in progress keep their size.
    pub fn set_limits(&mut self, max_message_size: usize, max_in_progress_bytes: usize) {
        self.max_message_size = max_message_size;
        self.max_in_progress_bytes = max_in_progress_bytes;
    }

    /// Declared bytes of the messages begun and not yet complete: at most what they will
    /// hold in memory.
    pub fn incomplete_bytes(&self) -> usize {
        self.in_progress_bytes
    }

    /// Current incoming chunk size (changed by Set Chunk Size messages from the peer).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Parse as much as possible from `buf` (consuming the bytes of every complete chunk) and
    /// return the next complete message, or Ok(None) when more bytes are needed.
    ///
    /// Chunk headers are consumed only once complete; chunk payload bytes are consumed as they
    /// arrive, so `buf` never has to hold a whole chunk. Call again until it returns Ok(None):
    /// it stops after each message so Set Chunk Size / Abort apply to the very next chunk.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<RtmpMessage>, ChunkError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.read_inner(buf);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn read_inner(&mut self, buf: &mut BytesMut) -> Result<Option<RtmpMessage>, ChunkError> {
        loop {
            if let Some(cursor) = self.current {
                match self.feed_payload(cursor, buf)? {
                    Feed::NeedMore => return Ok(None),
                    Feed::Message(msg) => return Ok(Some(msg)),
                    Feed::ChunkDone => continue,
                }
            }
            match self.parse_header(buf)? {
                None => return Ok(None),
                Some(header) => {
                    buf.advance(header.size);
                    self.apply_header(&header)?;
                }
            }
        }
    }

    /// Copy payload bytes of the current chunk; finish the message when its last byte arrived.
    fn feed_payload(&mut self, cursor: Cursor, buf: &mut BytesMut) -> Result<Feed, ChunkError> {
        let Some(st) = self.streams.get_mut(&cursor.csid) else {
            // Unreachable: a cursor is only set for a known stream.
            self.current = None;
            return Ok(Feed::ChunkDone);
        };
        let Some(partial) = st.partial.as_mut() else {
            self.current = None;
            return Ok(Feed::ChunkDone);
        };
        let n = cursor.remaining.min(buf.len());
        partial.extend_from_slice(&buf[..n]);
        buf.advance(n);
        let remaining = cursor.remaining - n;
        if remaining > 0 {
            self.current = Some(Cursor {
                remaining,
                ..cursor
            });
            return Ok(Feed::NeedMore);
        }
        self.current = None;
        if partial.len() < st.length {
            return Ok(Feed::ChunkDone);
        }
        let payload = st.partial.take().unwrap_or_default().freeze();
        self.in_progress = self.in_progress.saturating_sub(1);
        self.in_progress_bytes = self.in_progress_bytes.saturating_sub(st.length);
        let msg = RtmpMessage {
            csid: cursor.csid,
            timestamp: st.timestamp,
            type_id: st.type_id,
            stream_id: st.stream_id,
            payload,
        };
        self.apply_control(&msg)?;
        Ok(Feed::Message(msg))
    }

    /// Act on protocol control messages that change how the following chunks are parsed.
    fn apply_control(&mut self, msg: &RtmpMessage) -> Result<(), ChunkError> {
        match msg.type_id {
            TYPE_SET_CHUNK_SIZE => {
                let value =
                    be32_prefix(&msg.payload).ok_or(ChunkError::MalformedControl(msg.type_id))?;
                if value == 0 || value > MAX_CHUNK_SIZE {
                    return Err(ChunkError::InvalidChunkSize(value));
                }
                self.chunk_size = value;
            }
            TYPE_ABORT => {
                let csid =
                    be32_prefix(&msg.payload).ok_or(ChunkError::MalformedControl(msg.type_id))?;
                if let Some(st) = self.streams.get_mut(&csid) {
                    if st.partial.take().is_some() {
                        self.in_progress = self.in_progress.saturating_sub(1);
                        self.in_progress_bytes = self.in_progress_bytes.saturating_sub(st.length);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Parse the chunk header at the start of `buf` without consuming or changing anything.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, ChunkError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3F {
            0 => match buf.get(1) {
                Some(&b1) => (64 + u32::from(b1), 2),
                None => return Ok(None),
            },
            1 => match (buf.get(1), buf.get(2)) {
                (Some(&b1), Some(&b2)) => (64 + u32::from(b1) + 256 * u32::from(b2), 3),
                _ => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let state = self.streams.get(&csid);
        if fmt != 0 && state.is_none() {
            return Err(ChunkError::UnknownChunkStream { csid, fmt });
        }
        let mut header = Header {
            fmt,
            csid,
            size: 0,
            ts_field: 0,
            extended: false,
            length: 0,
            type_id: 0,
            stream_id: 0,
        };
        if fmt < 3 {
            let mh_len = [11, 7, 3][usize::from(fmt)];
            let Some(mh) = buf.get(pos..pos + mh_len) else {
                return Ok(None);
            };
            pos += mh_len;
            let field = be24(&mh[0..3]);
            if fmt <= 1 {
                header.length = be24(&mh[3..6]) as usize;
                header.type_id = mh[6];
            }
            if fmt == 0 {
                header.stream_id = u32::from_le_bytes([mh[7], mh[8], mh[9], mh[10]]);
            }
            if field == EXTENDED {
                let Some(ext) = buf.get(pos..pos + 4) else {
                    return Ok(None);
                };
                pos += 4;
                header.ts_field = be32(ext);
                header.extended = true;
            } else {
                header.ts_field = field;
            }
        } else if let Some(st) = state.filter(|st| st.extended) {
            // Type 3 after an extended header: the field may or may not be repeated (see the
            // module docs). Accept the last field value or the message's absolute timestamp.
            let absolute = if st.partial.is_some() {
                st.timestamp
            } else {
                st.timestamp.wrapping_add(st.delta)
            };
            let rest = buf.get(pos..).unwrap_or_default();
            let avail = &rest[..rest.len().min(4)];
            let is_prefix = |v: u32| v.to_be_bytes().starts_with(avail);
            if is_prefix(st.delta) || is_prefix(absolute) {
                if avail.len() < 4 {
                    return Ok(None);
                }
                pos += 4;
            }
        }
        header.size = pos;
        Ok(Some(header))
    }

    /// Update the stream state for a consumed header and set up the payload cursor.
    fn apply_header(&mut self, h: &Header) -> Result<(), ChunkError> {
        if !self.streams.contains_key(&h.csid) {
            // Only type 0 gets here (parse_header rejects the others).
            if self.streams.len() >= MAX_KNOWN_CSIDS {
                return Err(ChunkError::TooManyChunkStreams {
                    limit: MAX_KNOWN_CSIDS,
                });
            }
            self.streams.insert(h.csid, StreamState::default());
        }
        let Some(st) = self.streams.get_mut(&h.csid) else {
            return Err(ChunkError::UnknownChunkStream {
                csid: h.csid,
                fmt: h.fmt,
            });
        };
        let continuation = h.fmt == 3 && st.partial.is_some();
        if !continuation {
            if st.partial.take().is_some() {
                self.in_progress = self.in_progress.saturating_sub(1);
                self.in_progress_bytes = self.in_progress_bytes.saturating_sub(st.length);
            }
            match h.fmt {
                0 => {
                    st.timestamp = h.ts_field;
                    st.delta = h.ts_field;
                    st.extended = h.extended;
                    st.length = h.length;
                    st.type_id = h.type_id;
                    st.stream_id = h.stream_id;
                }
                1 | 2 => {
                    st.delta = h.ts_field;
                    st.timestamp = st.timestamp.wrapping_add(h.ts_field);
                    st.extended = h.extended;
                    if h.fmt == 1 {
                        st.length = h.length;
                        st.type_id = h.type_id;
                    }
                }
                _ => st.timestamp = st.timestamp.wrapping_add(st.delta),
            }
            if st.length > self.max_message_size {
                return Err(ChunkError::MessageTooLarge {
                    length: st.length,
                    max: self.max_message_size,
                });
            }
            // A zero-length message completes at once, so it does not count against the limit.
            if st.length > 0 && self.in_progress >= MAX_IN_PROGRESS {
                return Err(ChunkError::TooManyChunkStreams {
                    limit: MAX_IN_PROGRESS,
                });
            }
            if self.in_progress_bytes + st.length > self.max_in_progress_bytes {
                return Err(ChunkError::TooMuchInProgress {
                    limit: self.max_in_progress_bytes,
                });
            }
            st.partial = Some(BytesMut::with_capacity(st.length.min(PREALLOC_CAP)));
            self.in_progress += 1;
            self.in_progress_bytes += st.length;
        }
        let received = st.partial.as_ref().map_or(0, BytesMut::len);
        let remaining = (self.chunk_size as usize).min(st.length.saturating_sub(received));
        self.current = Some(Cursor {
            csid: h.csid,
            remaining,
        });
        Ok(())
    }
}

enum Feed {
    NeedMore,
    ChunkDone,
    Message(RtmpMessage),
}

fn be24(b: &[u8]) -> u32 {
    b.iter()
        .take(3)
        .fold(0, |acc, &x| (acc << 8) | u32::from(x))
}

fn be32(b: &[u8]) -> u32 {
    b.iter()
        .take(4)
        .fold(0, |acc, &x| (acc << 8) | u32::from(x))
}

fn be32_prefix(b: &[u8]) -> Option<u32> {
    b.get(..4).map(be32)
}

/// What the writer remembers about the last message sent on a csid.
#[derive(Debug, Clone, Copy)]
struct Sent {
    timestamp: u32,
    /// Timestamp field value of the last type 0/1/2 header (what a type-3 new message adds).
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
}

/// Outgoing side of the chunk stream: messages in, bytes out.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: u32,
    sent: HashMap<u32, Sent>,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkWriter {
    /// Writer with chunk size 128.
    pub fn new() -> Self {
        ChunkWriter {
            chunk_size: DEFAULT_CHUNK_SIZE,
            sent: HashMap::new(),
        }
    }

    /// Current outgoing chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Change the outgoing chunk size. The caller is responsible for having sent the Set Chunk
    /// Size message itself (which must be written with the OLD size: so `write` it first, then
    /// call this).
    ///
    /// # Panics
    /// If `size` is outside `1..=MAX_CHUNK_SIZE` (a programming error: the peer would reject it).
    pub fn set_chunk_size(&mut self, size: u32) {
        assert!(
            (1..=MAX_CHUNK_SIZE).contains(&size),
            "invalid RTMP chunk size {size}"
        );
        self.chunk_size = size;
    }

    /// Forget the header state of `csid`, so the next message on it gets a type-0 header. Call it
    /// after sending [`encode_standalone`] bytes on a csid this writer also uses.
    pub fn forget_csid(&mut self, csid: u32) {
        self.sent.remove(&csid);
    }

    /// Append the chunks of `msg` to `out`, compressing headers (fmt 1/2/3) against the previous
    /// message on the same csid as the spec allows.
    ///
    /// Type 0 is used for the first message on a csid, when the message stream id changes, and
    /// when the timestamp goes backwards (spec 5.3.1.2.1), never a wrapped "negative" delta.
    ///
    /// # Panics
    /// If `msg.csid` is outside `2..=65599` or the payload exceeds 16 MiB - 1 bytes (programming
    /// errors: neither can be encoded).
    pub fn write(&mut self, msg: &RtmpMessage, out: &mut BytesMut) {
        check_encodable(msg.csid, msg.payload.len());
        let len = msg.payload.len();
        let prev = self.sent.get(&msg.csid).copied();
        let (fmt, field) = match prev {
            Some(p) if p.stream_id == msg.stream_id && msg.timestamp >= p.timestamp => {
                let delta = msg.timestamp - p.timestamp;
                if p.length != len || p.type_id != msg.type_id {
                    (1, delta)
                } else if p.delta != delta {
                    (2, delta)
                } else {
                    (3, delta)
                }
            }
            _ => (0, msg.timestamp),
        };
        out.reserve(encoded_len(msg.csid, fmt, field, len, self.chunk_size));
        put_basic_header(out, fmt, msg.csid);
        let ts3 = field.min(EXTENDED);
        match fmt {
            0 => {
                out.put_uint(u64::from(ts3), 3);
                out.put_uint(len as u64, 3);
                out.put_u8(msg.type_id);
                out.put_u32_le(msg.stream_id);
            }
            1 => {
                out.put_uint(u64::from(ts3), 3);
                out.put_uint(len as u64, 3);
                out.put_u8(msg.type_id);
            }
            2 => out.put_uint(u64::from(ts3), 3),
            _ => {}
        }
        put_payload_chunks(out, msg.csid, field, &msg.payload, self.chunk_size);
        self.sent.insert(
            msg.csid,
            Sent {
                timestamp: msg.timestamp,
                delta: field,
                length: len,
                type_id: msg.type_id,
                stream_id: msg.stream_id,
            },
        );
    }
}

/// Stateless encoding used for media shared by many viewers: the first chunk always has a
/// type-0 header (absolute timestamp), continuation chunks type 3, so the bytes do not depend on
/// any per-connection state and one buffer can be sent to every viewer.
///
/// `chunk_size` must be the connection's current outgoing chunk size. If a [`ChunkWriter`] also
/// writes on `csid`, call [`ChunkWriter::forget_csid`] after sending these bytes.
///
/// # Panics
/// Same conditions as [`ChunkWriter::write`] and [`ChunkWriter::set_chunk_size`].
pub fn encode_standalone(
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: u32,
) -> Bytes {
    check_encodable(csid, payload.len());
    assert!(
        (1..=MAX_CHUNK_SIZE).contains(&chunk_size),
        "invalid RTMP chunk size {chunk_size}"
    );
    let mut out =
        BytesMut::with_capacity(encoded_len(csid, 0, timestamp, payload.len(), chunk_size));
    put_basic_header(&mut out, 0, csid);
    out.put_uint(u64::from(timestamp.min(EXTENDED)), 3);
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    put_payload_chunks(&mut out, csid, timestamp, payload, chunk_size);
    out.freeze()
}

fn check_encodable(csid: u32, len: usize) {
    assert!(
        (MIN_CSID..=MAX_CSID).contains(&csid),
        "invalid RTMP chunk stream id {csid}"
    );
    assert!(
        len <= MAX_LENGTH_FIELD,
        "RTMP message of {len} bytes does not fit the length field"
    );
}

fn basic_header_len(csid: u32) -> usize {
    match csid {
        0..=63 => 1,
        64..=319 => 2,
        _ => 3,
    }
}

/// Exact size of a message's chunks (used to reserve once).
fn encoded_len(csid: u32, fmt: u8, field: u32, len: usize, chunk_size: u32) -> usize {
    let ext = if field >= EXTENDED { 4 } else { 0 };
    let basic = basic_header_len(csid);
    let chunks = len.div_ceil(chunk_size as usize).max(1);
    let mh = [11, 7, 3, 0][usize::from(fmt & 3)];
    mh + chunks * (basic + ext) + len
}

fn put_basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    let fmt_bits = fmt << 6;
    match csid {
        0..=63 => out.put_u8(fmt_bits | csid as u8),
        64..=319 => {
            out.put_u8(fmt_bits);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            let v = csid - 64;
            out.put_u8(fmt_bits | 1);
            out.put_u8((v & 0xFF) as u8);
            out.put_u8((v >> 8) as u8);
        }
    }
}

/// Write the extended timestamp (if any) after the first header, the first chunk of payload,
/// then type-3 continuation chunks, each repeating the extended field like Flash/ffmpeg do.
fn put_payload_chunks(out: &mut BytesMut, csid: u32, field: u32, payload: &[u8], chunk_size: u32) {
    let extended = field >= EXTENDED;
    if extended {
        out.put_u32(field);
    }
    for (i, chunk) in payload.chunks(chunk_size as usize).enumerate() {
        if i > 0 {
            put_basic_header(out, 3, csid);
            if extended {
                out.put_u32(field);
            }
        }
        out.put_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> RtmpMessage {
        RtmpMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn set_chunk_size_msg(size: u32) -> RtmpMessage {
        msg(2, 0, TYPE_SET_CHUNK_SIZE, 0, &size.to_be_bytes())
    }

    /// Feed all of `bytes` at once and collect every message.
    fn read_all(reader: &mut ChunkReader, bytes: &[u8]) -> Result<Vec<RtmpMessage>, ChunkError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = reader.read(&mut buf)? {
            out.push(m);
        }
        assert!(buf.is_empty(), "{} bytes left unconsumed", buf.len());
        Ok(out)
    }

    /// Feed `bytes` in pieces whose sizes cycle through `splits`.
    fn read_split(bytes: &[u8], splits: &[usize]) -> Result<Vec<RtmpMessage>, ChunkError> {
        let mut reader = ChunkReader::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < bytes.len() {
            let n = splits[i % splits.len()].max(1).min(bytes.len() - pos);
            i += 1;
            buf.extend_from_slice(&bytes[pos..pos + n]);
            pos += n;
            while let Some(m) = reader.read(&mut buf)? {
                out.push(m);
            }
        }
        assert!(buf.is_empty(), "{} bytes left unconsumed", buf.len());
        Ok(out)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Spec 5.3.2.1: four audio messages, csid 3, stream 12345, type 8, 32 bytes, 20 ms apart.
    fn spec_audio_vector() -> (Vec<u8>, Vec<RtmpMessage>) {
        let payloads: Vec<Vec<u8>> = (0..4).map(|i| pattern(32, i)).collect();
        let mut v = vec![
            0x03, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x20, 0x08, 0x39, 0x30, 0x00, 0x00,
        ];
        v.extend_from_slice(&payloads[0]);
        v.extend_from_slice(&[0x83, 0x00, 0x00, 0x14]);
        v.extend_from_slice(&payloads[1]);
        v.push(0xC3);
        v.extend_from_slice(&payloads[2]);
        v.push(0xC3);
        v.extend_from_slice(&payloads[3]);
        let msgs = (0..4)
            .map(|i| msg(3, 1000 + 20 * i as u32, 8, 12345, &payloads[i]))
            .collect();
        (v, msgs)
    }

    /// Spec 5.3.2.2: a 307-byte video message, csid 4, stream 12346, split at 128 bytes.
    fn spec_video_vector() -> (Vec<u8>, RtmpMessage) {
        let payload = pattern(307, 7);
        let mut v = vec![
            0x04, 0x00, 0x03, 0xE8, 0x00, 0x01, 0x33, 0x09, 0x3A, 0x30, 0x00, 0x00,
        ];
        v.extend_from_slice(&payload[..128]);
        v.push(0xC4);
        v.extend_from_slice(&payload[128..256]);
        v.push(0xC4);
        v.extend_from_slice(&payload[256..]);
        (v, msg(4, 1000, 9, 12346, &payload))
    }

    #[test]
    fn spec_audio_example_reads_and_writes() {
        let (bytes, msgs) = spec_audio_vector();
        assert_eq!(read_all(&mut ChunkReader::new(), &bytes).unwrap(), msgs);
        assert_eq!(read_split(&bytes, &[1]).unwrap(), msgs);
        let mut w = ChunkWriter::new();
        let mut out = BytesMut::new();
        for m in &msgs {
            w.write(m, &mut out);
        }
        assert_eq!(&out[..], &bytes[..]);
    }

    #[test]
    fn spec_video_example_reads_and_writes() {
        let (bytes, m) = spec_video_vector();
        assert_eq!(
            read_all(&mut ChunkReader::new(), &bytes).unwrap(),
            vec![m.clone()]
        );
        let mut out = BytesMut::new();
        ChunkWriter::new().write(&m, &mut out);
        assert_eq!(&out[..], &bytes[..]);
        let standalone = encode_standalone(4, 1000, 9, 12346, &m.payload, 128);
        assert_eq!(&standalone[..], &bytes[..]);
    }

    #[test]
    fn writer_uses_fmt1_when_length_changes() {
        let mut w = ChunkWriter::new();
        let mut out = BytesMut::new();
        w.write(&msg(6, 100, 9, 1, &[1, 2, 3]), &mut out);
        out.clear();
        w.write(&msg(6, 140, 9, 1, &[1, 2]), &mut out);
        assert_eq!(&out[..], &[0x46, 0, 0, 40, 0, 0, 2, 9, 1, 2]);
        // Stream id change forces type 0 again.
        out.clear();
        w.write(&msg(6, 150, 9, 2, &[1, 2]), &mut out);
        assert_eq!(out[0], 0x06);
        // Timestamp going backwards forces type 0.
        out.clear();
        w.write(&msg(6, 10, 9, 2, &[1, 2]), &mut out);
        assert_eq!(&out[..4], &[0x06, 0, 0, 10]);
    }

    #[test]
    fn fmt3_new_message_after_fmt0_adds_the_absolute_timestamp() {
        // fmt 0 at ts 1000, then a type-3 chunk starting a new 1-byte message: ts 2000 (5.3.1.2.4).
        let bytes = [
            0x05, 0x00, 0x03, 0xE8, 0, 0, 1, 8, 0, 0, 0, 0, 0xAA, 0xC5, 0xBB, 0xC5, 0xCC,
        ];
        let got = read_all(&mut ChunkReader::new(), &bytes).unwrap();
        let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, vec![1000, 2000, 3000]);
        assert_eq!(got[2].payload, Bytes::from_static(&[0xCC]));
    }

    #[test]
    fn deltas_wrap_around_u32() {
        // fmt 0 with extended ts 0xFFFF_FFF0, then fmt 2 delta 0x20 -> 0x10.
        let bytes = [
            0x05, 0xFF, 0xFF, 0xFF, 0, 0, 0, 8, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xF0, //
            0x85, 0, 0, 0x20,
        ];
        let got = read_all(&mut ChunkReader::new(), &bytes).unwrap();
        assert_eq!(got[0].timestamp, 0xFFFF_FFF0);
        assert_eq!(got[1].timestamp, 0x10);
    }

    #[test]
    fn basic_header_forms() {
        for (csid, header) in [
            (2u32, vec![0x02]),
            (63, vec![0x3F]),
            (64, vec![0x00, 0x00]),
            (319, vec![0x00, 0xFF]),
            (320, vec![0x01, 0x00, 0x01]),
            (65599, vec![0x01, 0xFF, 0xFF]),
        ] {
            let mut out = BytesMut::new();
            ChunkWriter::new().write(&msg(csid, 0, 8, 0, &[9]), &mut out);
            assert_eq!(&out[..header.len()], &header[..], "csid {csid}");
            assert_eq!(out.len(), header.len() + 11 + 1);
            let got = read_all(&mut ChunkReader::new(), &out).unwrap();
            assert_eq!(got, vec![msg(csid, 0, 8, 0, &[9])]);
        }
        // The 3-byte form may also encode small ids (100 = 64 + 36).
        let bytes = [0x01, 36, 0, 0, 0, 5, 0, 0, 1, 8, 1, 0, 0, 0, 0x77];
        let got = read_all(&mut ChunkReader::new(), &bytes).unwrap();
        assert_eq!(got, vec![msg(100, 5, 8, 1, &[0x77])]);
    }

    fn ext_fmt0_header(csid: u8, ts: u32, len: u8) -> Vec<u8> {
        let mut v = vec![csid, 0xFF, 0xFF, 0xFF, 0, 0, len, 9, 1, 0, 0, 0];
        v.extend_from_slice(&ts.to_be_bytes());
        v
    }

    #[test]
    fn extended_timestamp_repeated_on_continuation() {
        let ts = 0x0100_0000;
        let payload = pattern(200, 3);
        let mut bytes = ext_fmt0_header(4, ts, 200);
        bytes.extend_from_slice(&payload[..128]);
        bytes.push(0xC4);
        bytes.extend_from_slice(&ts.to_be_bytes());
        bytes.extend_from_slice(&payload[128..]);
        let expected = vec![msg(4, ts, 9, 1, &payload)];
        assert_eq!(read_all(&mut ChunkReader::new(), &bytes).unwrap(), expected);
        assert_eq!(read_split(&bytes, &[1]).unwrap(), expected);
        // The writer produces exactly this.
        let mut out = BytesMut::new();
        ChunkWriter::new().write(&expected[0], &mut out);
        assert_eq!(&out[..], &bytes[..]);
    }

    #[test]
    fn extended_timestamp_omitted_on_continuation() {
        let ts = 0x0100_0000;
        let payload = pattern(200, 3);
        let mut bytes = ext_fmt0_header(4, ts, 200);
        bytes.extend_from_slice(&payload[..128]);
        bytes.push(0xC4);
        bytes.extend_from_slice(&payload[128..]);
        let expected = vec![msg(4, ts, 9, 1, &payload)];
        assert_eq!(read_all(&mut ChunkReader::new(), &bytes).unwrap(), expected);
        assert_eq!(read_split(&bytes, &[1]).unwrap(), expected);
        assert_eq!(read_split(&bytes, &[129, 3, 1]).unwrap(), expected);
    }

    #[test]
    fn extended_prefix_match_waits_then_decides() {
        // Continuation omits the field but its payload starts with the first two bytes of it:
        // the reader must wait, then treat the bytes as payload once they diverge.
        let ts = 0x0102_0304;
        let mut payload = pattern(130, 1);
        payload[128] = 0x01;
        payload[129] = 0x02;
        let mut bytes = ext_fmt0_header(4, ts, 130);
        bytes.extend_from_slice(&payload[..128]);
        bytes.push(0xC4);
        bytes.extend_from_slice(&payload[128..]);
        // A following message supplies the bytes that break the prefix match.
        bytes.extend_from_slice(&[0x05, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0]);
        let mut reader = ChunkReader::new();
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 12]);
        assert_eq!(reader.read(&mut buf).unwrap(), None);
        assert_eq!(
            buf.len(),
            3,
            "type-3 header must stay unconsumed while ambiguous"
        );
        buf.extend_from_slice(&bytes[bytes.len() - 12..]);
        assert_eq!(
            reader.read(&mut buf).unwrap(),
            Some(msg(4, ts, 9, 1, &payload))
        );
        assert_eq!(reader.read(&mut buf).unwrap(), Some(msg(5, 1, 8, 0, &[])));
    }

    #[test]
    fn extended_delta_on_fmt1_and_fmt3_new_message() {
        // fmt 0 ts 10; fmt 1 with extended delta 0x0100_0000; fmt 3 new message repeating the
        // extended field; fmt 3 new message without it (payload bytes differ).
        let delta: u32 = 0x0100_0000;
        let mut bytes = vec![0x06, 0, 0, 10, 0, 0, 1, 8, 0, 0, 0, 0, 0xA0];
        bytes.extend_from_slice(&[0x46, 0xFF, 0xFF, 0xFF, 0, 0, 1, 9]);
        bytes.extend_from_slice(&delta.to_be_bytes());
        bytes.push(0xA1);
        bytes.push(0xC6);
        bytes.extend_from_slice(&delta.to_be_bytes());
        bytes.push(0xA2);
        bytes.extend_from_slice(&[0xC6, 0xA3]);
        // Terminate with a message on another csid so the last prefix check can decide.
        bytes.extend_from_slice(&[0x07, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]);
        let got = read_all(&mut ChunkReader::new(), &bytes).unwrap();
        let summary: Vec<(u32, u8, u8)> = got
            .iter()
            .map(|m| {
                (
                    m.timestamp,
                    m.type_id,
                    m.payload.first().copied().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (10, 8, 0xA0),
                (10 + delta, 9, 0xA1),
                (10 + 2 * delta, 9, 0xA2),
                (10 + 3 * delta, 9, 0xA3),
                (0, 8, 0),
            ]
        );
    }

    #[test]
    fn set_chunk_size_applies_to_next_chunk() {
        let mut w = ChunkWriter::new();
        let mut out = BytesMut::new();
        let scs = set_chunk_size_msg(4);
        w.write(&scs, &mut out);
        w.set_chunk_size(4);
        let m = msg(3, 0, 8, 1, &pattern(10, 0));
        w.write(&m, &mut out);
        // 12 + 4 (SCS), then 12 + 4, 1 + 4, 1 + 2.
        assert_eq!(out.len(), 16 + 16 + 5 + 3);
        let mut reader = ChunkReader::new();
        let got = read_all(&mut reader, &out).unwrap();
        assert_eq!(got, vec![scs, m]);
        assert_eq!(reader.chunk_size(), 4);
        assert_eq!(read_split(&out, &[1]).unwrap(), got);
    }

    #[test]
    fn set_chunk_size_rejects_bad_values() {
        for (payload, err) in [
            (0u32.to_be_bytes().to_vec(), ChunkError::InvalidChunkSize(0)),
            (
                0x8000_0000u32.to_be_bytes().to_vec(),
                ChunkError::InvalidChunkSize(0x8000_0000),
            ),
            (vec![0, 1], ChunkError::MalformedControl(1)),
        ] {
            let mut bytes = vec![0x02, 0, 0, 0, 0, 0, payload.len() as u8, 1, 0, 0, 0, 0];
            bytes.extend_from_slice(&payload);
            let mut reader = ChunkReader::new();
            assert_eq!(read_all(&mut reader, &bytes), Err(err.clone()));
            // The reader stays failed.
            assert_eq!(reader.read(&mut BytesMut::new()), Err(err));
        }
        let bytes = [
            0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF,
        ];
        let mut reader = ChunkReader::new();
        read_all(&mut reader, &bytes).unwrap();
        assert_eq!(reader.chunk_size(), MAX_CHUNK_SIZE);
    }

    #[test]
    fn abort_discards_partial_message() {
        let mut bytes = vec![0x05, 0, 0, 0, 0, 1, 0x00, 9, 1, 0, 0, 0]; // 256-byte message
        bytes.extend_from_slice(&[0x11; 128]);
        bytes.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 5]); // Abort csid 5
                                                                                       // A type-3 chunk now starts a NEW 256-byte message instead of continuing the old one.
        bytes.push(0xC5);
        bytes.extend_from_slice(&[0x22; 128]);
        bytes.push(0xC5);
        bytes.extend_from_slice(&[0x33; 128]);
        let mut reader = ChunkReader::new();
        let got = read_all(&mut reader, &bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], msg(2, 0, TYPE_ABORT, 0, &[0, 0, 0, 5]));
        let mut expected = vec![0x22; 128];
        expected.extend_from_slice(&[0x33; 128]);
        assert_eq!(got[1], msg(5, 0, 9, 1, &expected));
        assert_eq!(reader.in_progress, 0);
    }

    #[test]
    fn new_header_mid_message_abandons_partial() {
        let mut bytes = vec![0x05, 0, 0, 0, 0, 1, 0x00, 9, 1, 0, 0, 0];
        bytes.extend_from_slice(&[0x11; 128]);
        bytes.extend_from_slice(&[0x45, 0, 0, 7, 0, 0, 2, 8, 0xAB, 0xCD]);
        let mut reader = ChunkReader::new();
        let got = read_all(&mut reader, &bytes).unwrap();
        assert_eq!(got, vec![msg(5, 7, 8, 1, &[0xAB, 0xCD])]);
        assert_eq!(reader.in_progress, 0);
    }

    #[test]
    fn message_size_limit() {
        let bytes = [0x03, 0, 0, 0, 0x00, 0x10, 0x01, 8, 0, 0, 0, 0];
        let mut reader = ChunkReader::with_max_message_size(4096);
        assert_eq!(
            read_all(&mut reader, &bytes),
            Err(ChunkError::MessageTooLarge {
                length: 4097,
                max: 4096
            })
        );
        // The largest encodable length is accepted by default and costs only the prealloc cap.
        let bytes = [0x03, 0, 0, 0, 0xFF, 0xFF, 0xFF, 8, 0, 0, 0, 0, 1];
        let mut reader = ChunkReader::new();
        assert_eq!(read_all(&mut reader, &bytes).unwrap(), vec![]);
        let partial = reader.streams[&3].partial.as_ref().unwrap();
        assert_eq!(partial.len(), 1);
        assert!(partial.capacity() <= PREALLOC_CAP);
    }

    #[test]
    fn too_many_messages_in_progress() {
        // Chunk size 1, then 2-byte messages on 65 csids that each send only their first byte.
        let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        for csid in 0..=MAX_IN_PROGRESS as u8 {
            bytes.extend_from_slice(&[0x00, csid, 0, 0, 0, 0, 0, 2, 8, 0, 0, 0, 0, 0xEE]);
        }
        let mut reader = ChunkReader::new();
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(reader.read(&mut buf).unwrap(), Some(set_chunk_size_msg(1)));
        assert_eq!(
            reader.read(&mut buf),
            Err(ChunkError::TooManyChunkStreams {
                limit: MAX_IN_PROGRESS
            })
        );
        // One fewer is fine, and completing one frees a slot.
        let mut reader = ChunkReader::new();
        let n = 16 + MAX_IN_PROGRESS * 14;
        assert_eq!(
            read_all(&mut reader, &bytes[..n]).unwrap(),
            vec![set_chunk_size_msg(1)]
        );
        assert_eq!(reader.in_progress, MAX_IN_PROGRESS);
        let done = read_all(&mut reader, &[0xC0, 0x05, 0xEF]).unwrap();
        assert_eq!(done, vec![msg(69, 0, 8, 0, &[0xEE, 0xEF])]);
        assert_eq!(read_all(&mut reader, &bytes[n..]).unwrap(), vec![]);
    }

    #[test]
    fn incomplete_messages_cannot_hold_more_than_the_byte_limit() {
        // Chunk size 1, then 16 MiB - 1 declared on each of three csids with one payload
        // byte each: the third would take the declared total over 32 MiB.
        let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        for csid in 3..6u8 {
            bytes.extend_from_slice(&[csid, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0, 0x17]);
        }
        let two = 16 + 2 * 13;
        let mut reader = ChunkReader::new();
        read_all(&mut reader, &bytes[..two]).unwrap();
        assert_eq!(reader.in_progress_bytes, 2 * 0xFF_FFFF);
        let mut buf = BytesMut::from(&bytes[two..]);
        assert_eq!(
            reader.read(&mut buf),
            Err(ChunkError::TooMuchInProgress {
                limit: MAX_IN_PROGRESS_BYTES
            })
        );
        // Aborting a message (csid 3) frees its share. At chunk size 1 the Abort's 4-byte
        // payload comes as four chunks.
        let mut reader = ChunkReader::new();
        read_all(&mut reader, &bytes[..16 + 13]).unwrap();
        assert_eq!(reader.in_progress_bytes, 0xFF_FFFF);
        let abort = [
            0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0xC2, 0, 0xC2, 0, 0xC2, 3,
        ];
        read_all(&mut reader, &abort).unwrap();
        assert_eq!(reader.in_progress_bytes, 0);
    }

    #[test]
    fn too_many_known_chunk_streams() {
        let mut out = BytesMut::new();
        let mut w = ChunkWriter::new();
        for csid in 2..(2 + MAX_KNOWN_CSIDS as u32) {
            w.write(&msg(csid, 0, 8, 0, &[]), &mut out);
        }
        let mut reader = ChunkReader::new();
        assert_eq!(read_all(&mut reader, &out).unwrap().len(), MAX_KNOWN_CSIDS);
        let mut more = BytesMut::new();
        w.write(&msg(5000, 0, 8, 0, &[]), &mut more);
        assert_eq!(
            reader.read(&mut more),
            Err(ChunkError::TooManyChunkStreams {
                limit: MAX_KNOWN_CSIDS
            })
        );
    }

    #[test]
    fn non_type0_on_unknown_csid_is_an_error() {
        for (bytes, fmt) in [(vec![0x47u8], 1u8), (vec![0x87], 2), (vec![0xC7], 3)] {
            assert_eq!(
                read_all(&mut ChunkReader::new(), &bytes),
                Err(ChunkError::UnknownChunkStream { csid: 7, fmt })
            );
        }
    }

    #[test]
    fn incomplete_input_is_not_consumed_until_header_complete() {
        let (bytes, _) = spec_video_vector();
        let mut reader = ChunkReader::new();
        let mut buf = BytesMut::from(&bytes[..11]);
        assert_eq!(reader.read(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 11);
        buf.extend_from_slice(&bytes[11..20]);
        assert_eq!(reader.read(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "payload bytes are consumed as they arrive");
    }

    // ---- property tests ----

    #[derive(Debug, Clone)]
    enum Ts {
        Step(u32),
        SameDelta,
        Absolute(u32),
        NearExtended(u32),
        NearWrap(u32),
        BigStep(u32),
    }

    #[derive(Debug, Clone)]
    enum Op {
        Msg {
            csid_idx: usize,
            ts: Ts,
            type_id: Option<u8>,
            stream_id: u32,
            len: Option<usize>,
            seed: u8,
        },
        ChunkSize(u32),
    }

    fn ts_strategy() -> impl Strategy<Value = Ts> {
        prop_oneof![
            3 => (0u32..100).prop_map(Ts::Step),
            2 => Just(Ts::SameDelta),
            1 => any::<u32>().prop_map(Ts::Absolute),
            2 => (0xFF_FFF0u32..=0x100_0010).prop_map(Ts::NearExtended),
            1 => (0xFFFF_FFF0u32..=u32::MAX).prop_map(Ts::NearWrap),
            1 => (0xFF_FFF0u32..=0x100_0010).prop_map(Ts::BigStep),
        ]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        // Types 1 and 2 are excluded: the reader interprets them.
        let type_id = prop_oneof![
            Just(None),
            Just(Some(8u8)),
            Just(Some(9)),
            (3u8..=255).prop_map(Some)
        ];
        let len = prop_oneof![
            2 => Just(None),
            1 => prop::sample::select(vec![0usize, 1, 127, 128, 129, 256, 4096]).prop_map(Some),
            2 => (0usize..20000).prop_map(Some),
        ];
        let stream_id = prop::sample::select(vec![0u32, 1, 12345, u32::MAX]);
        prop_oneof![
            8 => (0usize..4, ts_strategy(), type_id, stream_id, len, any::<u8>()).prop_map(
                |(csid_idx, ts, type_id, stream_id, len, seed)| Op::Msg { csid_idx, ts, type_id, stream_id, len, seed }
            ),
            1 => prop_oneof![1u32..=300, 1u32..=70000].prop_map(Op::ChunkSize),
        ]
    }

    fn csid_strategy() -> impl Strategy<Value = Vec<u32>> {
        let one = prop_oneof![
            prop::sample::select(vec![2u32, 3, 63, 64, 319, 320, 65599]),
            2u32..=65599,
        ];
        prop::collection::vec(one, 1..=4)
    }

    /// Turn ops into concrete messages, tracking per-csid state so "same" choices repeat values.
    fn build_messages(csids: &[u32], ops: &[Op]) -> Vec<(RtmpMessage, Option<u32>)> {
        let mut last: HashMap<u32, (u32, u32, u8, usize)> = HashMap::new(); // ts, delta, type, len
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::ChunkSize(size) => out.push((set_chunk_size_msg(*size), Some(*size))),
                Op::Msg {
                    csid_idx,
                    ts,
                    type_id,
                    stream_id,
                    len,
                    seed,
                } => {
                    let csid = csids[csid_idx % csids.len()];
                    let (prev_ts, prev_delta, prev_type, prev_len) =
                        last.get(&csid).copied().unwrap_or((0, 0, 8, 10));
                    let timestamp = match ts {
                        Ts::Step(d) | Ts::BigStep(d) => prev_ts.wrapping_add(*d),
                        Ts::SameDelta => prev_ts.wrapping_add(prev_delta),
                        Ts::Absolute(t) | Ts::NearExtended(t) | Ts::NearWrap(t) => *t,
                    };
                    let type_id = type_id.unwrap_or(prev_type);
                    let len = len.unwrap_or(prev_len);
                    last.insert(
                        csid,
                        (timestamp, timestamp.wrapping_sub(prev_ts), type_id, len),
                    );
                    // A set-chunk-size on csid 2 may share the csid; keep stream ids consistent.
                    out.push((
                        msg(csid, timestamp, type_id, *stream_id, &pattern(len, *seed)),
                        None,
                    ));
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn writer_reader_round_trip(
            csids in csid_strategy(),
            ops in prop::collection::vec(op_strategy(), 1..24),
            initial_size in prop_oneof![Just(None), (1u32..=70000).prop_map(Some)],
            splits in prop::collection::vec(prop_oneof![1usize..8, 1usize..400, 1usize..70000], 1..8),
        ) {
            let mut msgs = build_messages(&csids, &ops);
            if let Some(size) = initial_size {
                msgs.insert(0, (set_chunk_size_msg(size), Some(size)));
            }
            let mut w = ChunkWriter::new();
            let mut out = BytesMut::new();
            for (m, new_size) in &msgs {
                w.write(m, &mut out);
                if let Some(size) = new_size {
                    w.set_chunk_size(*size);
                }
            }
            let expected: Vec<RtmpMessage> = msgs.into_iter().map(|(m, _)| m).collect();
            let got = read_split(&out, &splits).unwrap();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn standalone_reader_round_trip(
            csids in csid_strategy(),
            ops in prop::collection::vec(op_strategy(), 1..24),
            splits in prop::collection::vec(prop_oneof![1usize..8, 1usize..400, 1usize..70000], 1..8),
        ) {
            let msgs = build_messages(&csids, &ops);
            let mut chunk_size = DEFAULT_CHUNK_SIZE;
            let mut out = BytesMut::new();
            for (m, new_size) in &msgs {
                out.extend_from_slice(&encode_standalone(m.csid, m.timestamp, m.type_id, m.stream_id, &m.payload, chunk_size));
                if let Some(size) = new_size {
                    chunk_size = *size;
                }
            }
            let expected: Vec<RtmpMessage> = msgs.into_iter().map(|(m, _)| m).collect();
            let got = read_split(&out, &splits).unwrap();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn random_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..4000),
            splits in prop::collection::vec(1usize..64, 1..6),
        ) {
            let _ = read_split_lenient(&bytes, &splits);
        }

        #[test]
        fn random_chunk_like_input_never_panics(
            pieces in prop::collection::vec(chunk_like(), 0..60),
            splits in prop::collection::vec(1usize..64, 1..6),
        ) {
            let bytes: Vec<u8> = pieces.concat();
            let _ = read_split_lenient(&bytes, &splits);
        }
    }

    /// Like `read_split` but tolerant of errors and leftovers: for fuzz-style tests.
    fn read_split_lenient(bytes: &[u8], splits: &[usize]) -> Result<usize, ChunkError> {
        let mut reader = ChunkReader::new();
        let mut buf = BytesMut::new();
        let mut count = 0;
        let mut pos = 0;
        let mut i = 0;
        while pos < bytes.len() {
            let n = splits[i % splits.len()].max(1).min(bytes.len() - pos);
            i += 1;
            buf.extend_from_slice(&bytes[pos..pos + n]);
            pos += n;
            while let Some(m) = reader.read(&mut buf)? {
                assert!(m.payload.len() <= MAX_MESSAGE_SIZE);
                count += 1;
            }
            assert!(reader.in_progress <= MAX_IN_PROGRESS);
            assert!(reader.streams.len() <= MAX_KNOWN_CSIDS);
        }
        Ok(count)
    }

    /// Plausible chunks with random fields so fuzzing reaches deep reader states.
    fn chunk_like() -> impl Strategy<Value = Vec<u8>> {
        let csid_byte = prop::sample::select(vec![0x02u8, 0x03, 0x04, 0x00, 0x01]);
        let ts = prop_oneof![Just([0xFFu8, 0xFF, 0xFF]), any::<[u8; 3]>()];
        let len = prop_oneof![
            Just([0u8, 0, 4]),
            Just([0u8, 0, 0]),
            (0u8..2).prop_map(|b| [0, b, 0x80]),
            any::<[u8; 3]>()
        ];
        let type_id = prop_oneof![Just(1u8), Just(2u8), any::<u8>()];
        (
            0u8..4,
            csid_byte,
            ts,
            len,
            type_id,
            prop::collection::vec(any::<u8>(), 0..140),
        )
            .prop_map(|(fmt, cb, ts, len, type_id, tail)| {
                let mut v = vec![(fmt << 6) | cb];
                if cb == 0 {
                    v.push(3);
                } else if cb == 1 {
                    v.extend_from_slice(&[3, 1]);
                }
                if fmt < 3 {
                    v.extend_from_slice(&ts);
                }
                if fmt < 2 {
                    v.extend_from_slice(&len);
                    v.push(type_id);
                }
                if fmt == 0 {
                    v.extend_from_slice(&[0, 0, 0, 0]);
                }
                v.extend_from_slice(&tail);
                v
            })
    }
}
