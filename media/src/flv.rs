//! FLV container framing (Adobe FLV spec v10.1, annex E), as served by HTTP-FLV.
//!
//! Muxing is a handful of pure functions producing headers/trailers so callers can
//! write tag payloads with vectored I/O; demuxing is the sans-IO [`FlvReader`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::{Frame, MediaKind};

/// Tag type of an audio tag (same value as the RTMP audio message type).
pub const TAG_AUDIO: u8 = 8;
/// Tag type of a video tag (same value as the RTMP video message type).
pub const TAG_VIDEO: u8 = 9;
/// Tag type of a script data (AMF0 `onMetaData`) tag.
pub const TAG_SCRIPT: u8 = 18;

/// Length of the fixed FLV file header.
pub const FILE_HEADER_LEN: usize = 9;
/// Length of a tag header.
pub const TAG_HEADER_LEN: usize = 11;
/// Length of the PreviousTagSize field that follows each tag.
pub const TAG_TRAILER_LEN: usize = 4;
/// Largest payload the 24-bit DataSize field can express.
pub const MAX_TAG_DATA_SIZE: usize = 0x00FF_FFFF;

/// Default cap on a tag payload accepted by [`FlvReader`].
const DEFAULT_MAX_TAG_SIZE: usize = 16 * 1024 * 1024;
/// Headers declaring a larger DataOffset are refused: no real muxer pads the header,
/// and a huge offset would make the reader silently swallow the stream.
const MAX_DATA_OFFSET: u32 = 64 * 1024;
/// Bit of the tag type byte signalling encrypted/filtered payloads (FLV 10.1).
const FILTER_BIT: u8 = 0x20;

const FLAG_AUDIO: u8 = 0x04;
const FLAG_VIDEO: u8 = 0x01;

/// FLV file header plus PreviousTagSize0, i.e. the first 13 bytes of every FLV stream.
pub fn header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let mut flags = 0;
    if has_audio {
        flags |= FLAG_AUDIO;
    }
    if has_video {
        flags |= FLAG_VIDEO;
    }
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// The 11-byte tag header for a payload of `payload_len` bytes.
///
/// The timestamp's low 24 bits go in Timestamp and its high 8 bits in
/// TimestampExtended, so full 32-bit millisecond timestamps survive. `payload_len`
/// must not exceed [`MAX_TAG_DATA_SIZE`] (RTMP message lengths are 24-bit too);
/// larger values are truncated to 24 bits and the resulting stream is corrupt.
pub fn tag_header(tag_type: u8, timestamp: u32, payload_len: usize) -> [u8; 11] {
    let len = (payload_len & MAX_TAG_DATA_SIZE) as u32;
    let [_, l2, l1, l0] = len.to_be_bytes();
    let [t3, t2, t1, t0] = timestamp.to_be_bytes();
    [tag_type & 0x1F, l2, l1, l0, t2, t1, t0, t3, 0, 0, 0]
}

/// PreviousTagSize for a tag with `payload_len` bytes of payload (header + payload).
pub fn tag_trailer(payload_len: usize) -> [u8; 4] {
    let len = (payload_len & MAX_TAG_DATA_SIZE) as u32;
    (len + TAG_HEADER_LEN as u32).to_be_bytes()
}

/// A complete tag (header, payload, PreviousTagSize) in one buffer.
pub fn encode_tag(tag_type: u8, timestamp: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(TAG_HEADER_LEN + payload.len() + TAG_TRAILER_LEN);
    out.put_slice(&tag_header(tag_type, timestamp, payload.len()));
    out.put_slice(payload);
    out.put_slice(&tag_trailer(payload.len()));
    out.freeze()
}

/// `data` as one chunk of HTTP chunked transfer encoding. HTTP-FLV sends each tag as its
/// own chunk, so a viewer that falls behind can drop whole tags without breaking the framing.
pub fn http_chunk(data: &[u8]) -> Bytes {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.reserve(data.len() + 2);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

impl Frame {
    /// The FLV tag type of the frame's kind.
    pub fn flv_tag_type(&self) -> u8 {
        match self.kind {
            MediaKind::Audio => TAG_AUDIO,
            MediaKind::Video => TAG_VIDEO,
            MediaKind::Metadata => TAG_SCRIPT,
        }
    }

    /// The frame as one FLV tag (header, payload, previous-tag-size) wrapped in one HTTP
    /// chunk, built once. Each frame being a whole chunk lets a viewer that falls behind
    /// drop queued frames without breaking the chunked framing.
    pub fn flv_http_chunk(&self) -> &Bytes {
        self.flv_chunk.get_or_init(|| {
            let tag = encode_tag(self.flv_tag_type(), self.wire_timestamp(), &self.payload);
            http_chunk(&tag)
        })
    }

    /// The frame as one FLV tag in one binary WebSocket message, built once.
    pub fn flv_ws_message(&self) -> &Bytes {
        self.flv_ws.get_or_init(|| {
            let tag = encode_tag(self.flv_tag_type(), self.wire_timestamp(), &self.payload);
            crate::websocket::binary(&tag)
        })
    }
}

/// An FLV file: the header, then each frame as a tag with its time counted from the
/// file's start. Sequence headers and metadata written at the start (taken from before the
/// file's first frame) are at time 0; media from before the start is not written, so every
/// track's time starts at or after 0 and only goes forward.
#[derive(Debug, Clone)]
pub struct FlvFileWriter {
    has_audio: bool,
    has_video: bool,
    start_ms: u64,
}

impl FlvFileWriter {
    /// A file whose time 0 is the stream time `start_ms` (its first keyframe).
    pub fn new(has_audio: bool, has_video: bool, start_ms: u64) -> FlvFileWriter {
        FlvFileWriter {
            has_audio,
            has_video,
            start_ms,
        }
    }

    /// The FLV header and the first PreviousTagSize.
    pub fn header(&self) -> Bytes {
        Bytes::copy_from_slice(&header(self.has_audio, self.has_video))
    }

    /// `frame` as a tag of this file; `None` for media from before its start.
    pub fn tag(&self, frame: &Frame) -> Option<Bytes> {
        let time = match frame.timestamp.checked_sub(self.start_ms) {
            Some(time) => time,
            None if frame.sequence_header || frame.kind == MediaKind::Metadata => 0,
            None => return None,
        };
        // A file longer than the 32-bit millisecond clock (49 days) wraps like a stream.
        Some(encode_tag(
            frame.flv_tag_type(),
            time as u32,
            &frame.payload,
        ))
    }
}

/// The timestamp of the last whole tag in `tail`, the end of an FLV file: the tag the
/// file's final PreviousTagSize points at or, in a file cut off mid-tag (a crash), the last
/// well-formed tag whose PreviousTagSize follows it. `None` when `tail` holds no whole tag.
pub fn last_tag_time(tail: &[u8]) -> Option<u32> {
    // `end` is where a PreviousTagSize field starts; the tag it closes is just before it.
    (TAG_HEADER_LEN..=tail.len().saturating_sub(4))
        .rev()
        .find_map(|end| {
            let size = u32::from_be_bytes(tail[end..end + 4].try_into().ok()?) as usize;
            if size < TAG_HEADER_LEN {
                return None;
            }
            let tag = tail.get(end.checked_sub(size)?..end)?;
            let data_len = u32::from_be_bytes([0, tag[1], tag[2], tag[3]]) as usize;
            let well_formed = matches!(tag[0] & 0x1f, 8 | 9 | 18)
                && data_len + TAG_HEADER_LEN == size
                && tag[8..11] == [0, 0, 0];
            well_formed.then(|| u32::from_be_bytes([tag[7], tag[4], tag[5], tag[6]]))
        })
}

/// One demuxed FLV tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// Tag type with the reserved and filter bits masked off (8 audio, 9 video, 18 script, or other).
    pub tag_type: u8,
    /// Full 32-bit timestamp in milliseconds (extended byte already applied).
    pub timestamp: u32,
    pub payload: Bytes,
}

/// What the FLV file header claims about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvHeader {
    pub has_audio: bool,
    pub has_video: bool,
}

/// Why an FLV byte stream was rejected. All are fatal: FLV has no resync marker.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("not an FLV stream (bad signature)")]
    BadSignature,
    #[error("unsupported FLV version {0}")]
    UnsupportedVersion(u8),
    #[error("invalid FLV header data offset {0}")]
    BadDataOffset(u32),
    #[error("FLV tag of {size} bytes exceeds the limit of {max}")]
    TagTooLarge { size: usize, max: usize },
    #[error("encrypted/filtered FLV tags are not supported")]
    Encrypted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the 9-byte file header.
    FileHeader,
    /// Discarding this many bytes (extra header bytes, PreviousTagSize fields).
    Skip(usize),
    /// Waiting for a tag header.
    TagHeader,
    /// Tag header parsed; waiting for `size` payload bytes.
    Payload {
        tag_type: u8,
        timestamp: u32,
        size: usize,
    },
}

/// Incremental, sans-IO demuxer for an FLV byte stream (HTTP-FLV pull, files).
///
/// Feed it whatever bytes arrived; it consumes what it can and hands out whole tags.
/// PreviousTagSize fields are skipped without checking, as many muxers write them
/// wrong. After an error the reader stays failed and keeps returning that error.
#[derive(Debug, Clone)]
pub struct FlvReader {
    state: State,
    header: Option<FlvHeader>,
    max_tag_size: usize,
    failed: Option<FlvError>,
}

impl Default for FlvReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvReader {
    /// A reader expecting the FLV file header first, accepting tags up to 16 MiB.
    pub fn new() -> Self {
        Self::with_max_tag_size(DEFAULT_MAX_TAG_SIZE)
    }

    /// A reader with a custom payload size cap (tags above it are an error).
    pub fn with_max_tag_size(max_tag_size: usize) -> Self {
        Self {
            state: State::FileHeader,
            header: None,
            max_tag_size,
            failed: None,
        }
    }

    /// The file header, once it has been read.
    pub fn header(&self) -> Option<FlvHeader> {
        self.header
    }

    /// Consume bytes from `buf`: `Ok(Some(tag))` for each complete tag, `Ok(None)` when
    /// more input is needed (everything usable has then been consumed or is buffered).
    ///
    /// Unknown tag types are returned as-is; the caller decides what to do with them.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<FlvTag>, FlvError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.step(buf);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<FlvTag>, FlvError> {
        loop {
            match self.state {
                State::FileHeader => {
                    // Reject a wrong signature as soon as the bytes disagree, so a
                    // non-FLV response fails fast instead of waiting for 9 bytes.
                    let seen = buf.len().min(3);
                    if buf[..seen] != b"FLV"[..seen] {
                        return Err(FlvError::BadSignature);
                    }
                    if buf.len() < FILE_HEADER_LEN {
                        return Ok(None);
                    }
                    let version = buf[3];
                    if version != 1 {
                        return Err(FlvError::UnsupportedVersion(version));
                    }
                    let flags = buf[4];
                    let offset = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
                    if offset < FILE_HEADER_LEN as u32 || offset > MAX_DATA_OFFSET {
                        return Err(FlvError::BadDataOffset(offset));
                    }
                    buf.advance(FILE_HEADER_LEN);
                    self.header = Some(FlvHeader {
                        has_audio: flags & FLAG_AUDIO != 0,
                        has_video: flags & FLAG_VIDEO != 0,
                    });
                    // Extra header bytes, then PreviousTagSize0.
                    let extra = (offset as usize) - FILE_HEADER_LEN;
                    self.state = State::Skip(extra + TAG_TRAILER_LEN);
                }
                State::Skip(n) => {
                    let take = n.min(buf.len());
                    buf.advance(take);
                    if take < n {
                        self.state = State::Skip(n - take);
                        return Ok(None);
                    }
                    self.state = State::TagHeader;
                }
                State::TagHeader => {
                    if buf.len() < TAG_HEADER_LEN {
                        return Ok(None);
                    }
                    let type_byte = buf[0];
                    if type_byte & FILTER_BIT != 0 {
                        return Err(FlvError::Encrypted);
                    }
                    let size = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
                    if size > self.max_tag_size {
                        return Err(FlvError::TagTooLarge {
                            size,
                            max: self.max_tag_size,
                        });
                    }
                    let timestamp = u32::from_be_bytes([buf[7], buf[4], buf[5], buf[6]]);
                    // StreamID (buf[8..11]) is always 0 in practice and carries nothing.
                    buf.advance(TAG_HEADER_LEN);
                    self.state = State::Payload {
                        tag_type: type_byte & 0x1F,
                        timestamp,
                        size,
                    };
                }
                State::Payload {
                    tag_type,
                    timestamp,
                    size,
                } => {
                    // No reserve() here: the size is peer-controlled, so memory grows
                    // only as bytes actually arrive.
                    if buf.len() < size {
                        return Ok(None);
                    }
                    let payload = buf.split_to(size).freeze();
                    // The PreviousTagSize is skipped lazily so a tag is handed out as
                    // soon as its payload is complete.
                    self.state = State::Skip(TAG_TRAILER_LEN);
                    return Ok(Some(FlvTag {
                        tag_type,
                        timestamp,
                        payload,
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_tag_time_of_a_whole_and_of_a_cut_off_file() {
        let mut file = header(true, true).to_vec();
        for (tag_type, time, len) in [
            (9u8, 0u32, 40usize),
            (8, 23, 7),
            (9, 40, 3000),
            (9, 0x0100_0010, 9),
        ] {
            file.extend_from_slice(&encode_tag(tag_type, time, &vec![0x17; len]));
        }
        assert_eq!(last_tag_time(&file), Some(0x0100_0010));
        // A crash mid-tag: the last whole tag counts.
        let whole = file.len();
        file.extend_from_slice(&encode_tag(9, 80, &[0; 500])[..300]);
        assert_eq!(last_tag_time(&file), Some(0x0100_0010));
        // Only the end of the file, starting mid-tag, is enough.
        assert_eq!(last_tag_time(&file[whole - 30..]), Some(0x0100_0010));
        assert_eq!(last_tag_time(&file[..13]), None);
        assert_eq!(last_tag_time(&[]), None);
    }
    use proptest::prelude::*;

    #[test]
    fn a_file_counts_time_from_its_start_and_drops_media_from_before() {
        let file = FlvFileWriter::new(true, true, 1000);
        let tags = |frames: &[Frame]| -> Vec<(u8, u32)> {
            let mut out = BytesMut::new();
            out.extend_from_slice(&file.header());
            for frame in frames {
                if let Some(tag) = file.tag(frame) {
                    out.extend_from_slice(&tag);
                }
            }
            let mut reader = FlvReader::new();
            read_all(&mut reader, &mut out)
                .unwrap()
                .into_iter()
                .map(|t| (t.tag_type, t.timestamp))
                .collect()
        };
        let video_header = Frame::new(
            MediaKind::Video,
            400,
            Bytes::from_static(&[0x17, 0, 0, 0, 0]),
        );
        let key = Frame::new(
            MediaKind::Video,
            1000,
            Bytes::from_static(&[0x17, 1, 0, 0, 0, 9]),
        );
        let early_audio = Frame::new(MediaKind::Audio, 990, Bytes::from_static(&[0xAF, 1, 9]));
        let audio = Frame::new(MediaKind::Audio, 1010, Bytes::from_static(&[0xAF, 1, 9]));
        assert_eq!(
            tags(&[video_header, key, early_audio, audio]),
            [(TAG_VIDEO, 0), (TAG_VIDEO, 0), (TAG_AUDIO, 10)]
        );
    }

    fn read_all(reader: &mut FlvReader, buf: &mut BytesMut) -> Result<Vec<FlvTag>, FlvError> {
        let mut out = Vec::new();
        while let Some(tag) = reader.read(buf)? {
            out.push(tag);
        }
        Ok(out)
    }

    /// libavformat takes a script tag with a non-zero timestamp for a subtitle stream, so
    /// metadata goes out at 0 however late in the stream it comes, in FLV and in RTMP.
    #[test]
    fn metadata_goes_out_at_time_zero() {
        use crate::frame::{Frame, MediaKind};
        use crate::rtmp::chunk::ChunkReader;
        let meta = Frame::new(
            MediaKind::Metadata,
            324_028,
            Bytes::from_static(b"\x02\x00\x00"),
        );
        let video = Frame::new(
            MediaKind::Video,
            324_028,
            Bytes::from_static(&[0x27, 1, 0, 0, 0, 9]),
        );
        for (frame, expected) in [(&meta, 0), (&video, 324_028)] {
            let chunk = frame.flv_http_chunk();
            let start = chunk.iter().position(|&b| b == b'\n').unwrap() + 1;
            let tag = &chunk[start..chunk.len() - 2];
            let mut buf = BytesMut::from(&header(true, true)[..]);
            buf.extend_from_slice(tag);
            let tags = read_all(&mut FlvReader::new(), &mut buf).unwrap();
            assert_eq!(tags[0].timestamp, expected);
            let mut chunks = BytesMut::from(&frame.rtmp_chunks()[..]);
            let message = ChunkReader::default().read(&mut chunks).unwrap().unwrap();
            assert_eq!(message.timestamp, expected);
        }
    }

    #[test]
    fn header_flags() {
        assert_eq!(
            header(true, true),
            [0x46, 0x4C, 0x56, 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]
        );
        assert_eq!(header(true, false)[4], 0x04);
        assert_eq!(header(false, true)[4], 0x01);
        assert_eq!(header(false, false)[4], 0x00);
    }

    #[test]
    fn tag_bytes_match_spec() {
        let tag = encode_tag(TAG_VIDEO, 0x1234_5678, &[0xAA, 0xBB, 0xCC]);
        assert_eq!(
            &tag[..],
            &[9, 0, 0, 3, 0x34, 0x56, 0x78, 0x12, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0, 0, 0, 14][..]
        );
        assert_eq!(
            tag_header(TAG_AUDIO, 0, 0x01_0203),
            [8, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(tag_trailer(0x100), [0, 0, 1, 11]);
    }

    #[test]
    fn reads_header_and_tags() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&header(true, false));
        buf.extend_from_slice(&encode_tag(TAG_SCRIPT, 0, b"meta"));
        buf.extend_from_slice(&encode_tag(TAG_AUDIO, 40, &[0xAF, 1, 2]));
        let mut reader = FlvReader::new();
        assert_eq!(reader.header(), None);
        let tags = read_all(&mut reader, &mut buf).unwrap();
        assert_eq!(
            reader.header(),
            Some(FlvHeader {
                has_audio: true,
                has_video: false
            })
        );
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].tag_type, TAG_SCRIPT);
        assert_eq!(&tags[0].payload[..], b"meta");
        assert_eq!(
            tags[1],
            FlvTag {
                tag_type: TAG_AUDIO,
                timestamp: 40,
                payload: Bytes::from_static(&[0xAF, 1, 2])
            }
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn skips_extra_header_bytes_and_masks_reserved_bits() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[
            b'F', b'L', b'V', 1, 5, 0, 0, 0, 12, 0xEE, 0xEE, 0xEE, 0, 0, 0, 0,
        ]);
        let mut tag = encode_tag(TAG_VIDEO, 7, &[1]).to_vec();
        tag[0] |= 0xC0; // reserved bits
        buf.extend_from_slice(&tag);
        buf.extend_from_slice(&encode_tag(31, 8, &[2])); // unknown type is passed through
        let mut reader = FlvReader::new();
        let tags = read_all(&mut reader, &mut buf).unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(
            (tags[0].tag_type, tags[0].timestamp, &tags[0].payload[..]),
            (TAG_VIDEO, 7, &[1u8][..])
        );
        assert_eq!(tags[1].tag_type, 31);
    }

    #[test]
    fn tag_is_returned_before_its_trailer_arrives() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&header(false, true));
        let tag = encode_tag(TAG_VIDEO, 1, &[9, 9]);
        buf.extend_from_slice(&tag[..tag.len() - 4]);
        let mut reader = FlvReader::new();
        assert!(reader.read(&mut buf).unwrap().is_some());
        assert_eq!(reader.read(&mut buf).unwrap(), None);
    }

    #[test]
    fn rejects_bad_headers() {
        let mut r = FlvReader::new();
        assert_eq!(
            r.read(&mut BytesMut::from(&b"HTTP/1.1"[..])),
            Err(FlvError::BadSignature)
        );
        // Sticky.
        assert_eq!(
            r.read(&mut BytesMut::from(&header(true, true)[..])),
            Err(FlvError::BadSignature)
        );
        // Early rejection on a short prefix; a correct short prefix just waits.
        assert_eq!(
            FlvReader::new().read(&mut BytesMut::from(&b"FX"[..])),
            Err(FlvError::BadSignature)
        );
        assert_eq!(
            FlvReader::new().read(&mut BytesMut::from(&b"FL"[..])),
            Ok(None)
        );

        let mut v2 = header(true, true);
        v2[3] = 2;
        assert_eq!(
            FlvReader::new().read(&mut BytesMut::from(&v2[..])),
            Err(FlvError::UnsupportedVersion(2))
        );
        let mut short = header(true, true);
        short[8] = 8;
        assert_eq!(
            FlvReader::new().read(&mut BytesMut::from(&short[..])),
            Err(FlvError::BadDataOffset(8))
        );
        let mut huge = header(true, true);
        huge[5] = 0x7F;
        assert!(matches!(
            FlvReader::new().read(&mut BytesMut::from(&huge[..])),
            Err(FlvError::BadDataOffset(_))
        ));
    }

    #[test]
    fn rejects_oversize_and_encrypted_tags() {
        let mut buf = BytesMut::from(&header(true, true)[..]);
        buf.extend_from_slice(&tag_header(TAG_VIDEO, 0, 1001));
        let mut r = FlvReader::with_max_tag_size(1000);
        assert_eq!(
            r.read(&mut buf),
            Err(FlvError::TagTooLarge {
                size: 1001,
                max: 1000
            })
        );

        // The default limit is 16 MiB, so the largest 24-bit size is accepted (and waits for data).
        let mut buf = BytesMut::from(&header(true, true)[..]);
        buf.extend_from_slice(&tag_header(TAG_VIDEO, 0, MAX_TAG_DATA_SIZE));
        assert_eq!(FlvReader::new().read(&mut buf), Ok(None));

        let mut buf = BytesMut::from(&header(true, true)[..]);
        let mut tag = encode_tag(TAG_AUDIO, 0, &[1]).to_vec();
        tag[0] |= 0x20;
        buf.extend_from_slice(&tag);
        assert_eq!(FlvReader::new().read(&mut buf), Err(FlvError::Encrypted));
    }

    fn arb_tag() -> impl Strategy<Value = (u8, u32, Vec<u8>)> {
        (
            prop_oneof![Just(TAG_AUDIO), Just(TAG_VIDEO), Just(TAG_SCRIPT), 0u8..32],
            prop_oneof![any::<u32>(), 0u32..0x0100_0000, 0x00FF_FFF0u32..0x0100_0010],
            proptest::collection::vec(any::<u8>(), 0..300),
        )
    }

    proptest! {
        #[test]
        fn round_trip_with_random_splits(
            audio: bool,
            video: bool,
            tags in proptest::collection::vec(arb_tag(), 0..12),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..20),
        ) {
            let mut stream = header(audio, video).to_vec();
            for (t, ts, p) in &tags {
                stream.extend_from_slice(&encode_tag(*t, *ts, p));
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.push(stream.len());
            points.sort_unstable();

            let mut reader = FlvReader::new();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut fed = 0;
            for p in points {
                buf.extend_from_slice(&stream[fed..p]);
                fed = p;
                got.extend(read_all(&mut reader, &mut buf).unwrap());
            }
            prop_assert_eq!(reader.header(), Some(FlvHeader { has_audio: audio, has_video: video }));
            let got: Vec<(u8, u32, Vec<u8>)> =
                got.into_iter().map(|t| (t.tag_type, t.timestamp, t.payload.to_vec())).collect();
            prop_assert_eq!(got, tags);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn never_panics_on_garbage(
            prefix in proptest::bool::ANY,
            data in proptest::collection::vec(any::<u8>(), 0..600),
            chunk in 1usize..64,
        ) {
            let mut stream = if prefix { header(true, true).to_vec() } else { Vec::new() };
            stream.extend_from_slice(&data);
            let mut reader = FlvReader::with_max_tag_size(256);
            let mut buf = BytesMut::new();
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Ok(Some(tag)) = reader.read(&mut buf) {
                    prop_assert!(tag.payload.len() <= 256 && tag.tag_type < 32);
                }
            }
        }
    }
}
