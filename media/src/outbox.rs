//! What one viewer has yet to receive: its frames encoded for its protocol, queued as
//! shared buffers, and the policy for a viewer that falls behind (drop what it has not
//! started and resume at the next keyframe). Sans-IO: the caller writes the buffers
//! [`Outbox::io_slices`] hands out and reports how much went with [`Outbox::advance`].

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::flv;
use crate::frame::{Frame, MediaKind, Tracks};
use crate::rtmp::message::MEDIA_STREAM_ID;
use crate::websocket;

/// How a viewer's frames are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RTMP messages on the viewer's play stream.
    Rtmp { stream_id: u32 },
    /// FLV tags in an HTTP body; `marks` sends each HLS segment mark as a script tag
    /// ahead of its frame (for edges).
    Flv { framing: FlvFraming, marks: bool },
    /// RTP packets interleaved on an RTSP connection (see [`crate::rtp`]).
    Rtp,
}

/// How an FLV response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlvFraming {
    /// Each tag one chunk (HTTP/1.1): a viewer that falls behind drops whole chunks.
    Chunked,
    /// Raw tags until the connection closes, for HTTP/1.0 clients.
    UntilClose,
    /// Each tag one binary WebSocket message (WebSocket-FLV: mpegts.js, flv.js).
    WebSocket,
}

impl FlvFraming {
    /// `tag` (a whole FLV tag) framed for the body.
    pub fn frame(self, tag: &[u8]) -> Bytes {
        match self {
            FlvFraming::Chunked => flv::http_chunk(tag),
            FlvFraming::UntilClose => Bytes::copy_from_slice(tag),
            FlvFraming::WebSocket => websocket::binary(tag),
        }
    }

    /// A frame's tag framed for the body, borrowed from the frame's HTTP chunk (or its
    /// WebSocket message).
    fn framed(self, frame: &Frame) -> &[u8] {
        match self {
            FlvFraming::Chunked => frame.flv_http_chunk(),
            FlvFraming::UntilClose => {
                let chunk = frame.flv_http_chunk();
                let start = chunk.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
                &chunk[start..chunk.len() - 2]
            }
            FlvFraming::WebSocket => frame.flv_ws_message(),
        }
    }

    /// The frame's buffer that [`FlvFraming::framed`] borrows from.
    fn buffer(self, frame: &Frame) -> &Bytes {
        match self {
            FlvFraming::Chunked | FlvFraming::UntilClose => frame.flv_http_chunk(),
            FlvFraming::WebSocket => frame.flv_ws_message(),
        }
    }
}

/// An encoding of frames that many viewers share byte for byte: what goes out for a frame
/// is the same slice of the frame's cached buffers for each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// RTMP messages on [`MEDIA_STREAM_ID`].
    Rtmp,
    /// FLV tags framed for an HTTP body.
    Flv(FlvFraming),
    /// The stream's RTP packets, interleaved for RTSP over TCP.
    Rtp,
}

impl Shared {
    /// Every shared encoding, in [`Shared::index`] order.
    pub const ALL: [Shared; 5] = [
        Shared::Rtmp,
        Shared::Flv(FlvFraming::Chunked),
        Shared::Flv(FlvFraming::UntilClose),
        Shared::Flv(FlvFraming::WebSocket),
        Shared::Rtp,
    ];

    /// Its place in [`Shared::ALL`].
    pub fn index(self) -> usize {
        match self {
            Shared::Rtmp => 0,
            Shared::Flv(FlvFraming::Chunked) => 1,
            Shared::Flv(FlvFraming::UntilClose) => 2,
            Shared::Flv(FlvFraming::WebSocket) => 3,
            Shared::Rtp => 4,
        }
    }

    /// The bytes that go out for `frame` in a live batch. Metadata goes to HTTP-FLV
    /// viewers only when they start (in their replay): players such as mpegts.js take a
    /// second onMetaData mid-stream for a broken stream.
    pub fn bytes(self, frame: &Frame) -> &[u8] {
        match self {
            Shared::Rtmp => frame.rtmp_chunks(),
            Shared::Flv(_) if frame.kind == MediaKind::Metadata => &[],
            Shared::Flv(framing) => framing.framed(frame),
            Shared::Rtp => Shared::rtp(frame),
        }
    }

    /// A frame's interleaved RTP packets: nothing for what has none (metadata, headers,
    /// which travel in the SDP and in-band).
    fn rtp(frame: &Frame) -> &Bytes {
        static NONE: Bytes = Bytes::new();
        frame
            .rtp
            .get()
            .map_or(&NONE, |packets| packets.interleaved())
    }

    /// The frame's buffer that [`Shared::bytes`] borrows from.
    fn buffer(self, frame: &Frame) -> &Bytes {
        match self {
            Shared::Rtmp => frame.rtmp_chunks(),
            Shared::Flv(framing) => framing.buffer(frame),
            Shared::Rtp => Shared::rtp(frame),
        }
    }
}

/// Upper bound on the buffers handed to one vectored write.
pub const MAX_IOVECS: usize = 64;

struct Unit {
    bytes: Bytes,
    kind: UnitKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UnitKind {
    /// Brings a new viewer up to date; does not count as falling behind.
    Replay,
    /// A live frame: counts toward the limit.
    Live,
    /// The connection's own message (an RTMP command reply): never dropped.
    Own,
}

pub struct Outbox {
    format: Format,
    tracks: Tracks,
    units: VecDeque<Unit>,
    /// The front unit is partly written: it must be finished before anything else.
    front_started: bool,
    /// Live units queued.
    live: usize,
    /// Live units queued beyond this mean the viewer is not keeping up.
    limit: usize,
    /// What [`Outbox::push_frame`] queues frames as.
    pushing: UnitKind,
    waiting_for_key: bool,
    /// The latest sequence headers seen, resent ahead of the keyframe after a skip.
    video_header: Option<Arc<Frame>>,
    audio_header: Option<Arc<Frame>>,
}

impl Outbox {
    /// An outbox that lets a viewer fall `limit` frames behind before it skips.
    pub fn new(format: Format, limit: usize) -> Outbox {
        Outbox {
            format,
            tracks: Tracks::default(),
            units: VecDeque::new(),
            front_started: false,
            live: 0,
            limit: limit.max(1),
            pushing: UnitKind::Live,
            waiting_for_key: false,
            video_header: None,
            audio_header: None,
        }
    }

    pub fn tracks(&self) -> Tracks {
        self.tracks
    }

    pub fn set_tracks(&mut self, tracks: Tracks) {
        let audio_back = tracks.audio && !self.tracks.audio;
        let video_back = tracks.video && !self.tracks.video;
        self.tracks = tracks;
        // A track turned back on starts at what it can be decoded from.
        if video_back {
            self.waiting_for_key = true;
        } else if let Some(header) = self.audio_header.clone().filter(|_| audio_back) {
            self.encode(&header);
        }
    }

    /// Queue what brings a new viewer up to date (metadata, headers, the GOP so far);
    /// with `waiting_for_key`, its video starts at the next keyframe.
    pub fn replay(&mut self, frames: &[Arc<Frame>], waiting_for_key: bool) {
        self.waiting_for_key = waiting_for_key;
        self.catch_up(frames);
    }

    /// Queue batches that went by between a viewer's join and its first live batch: like
    /// the replay, they bring it up to date and do not count as falling behind.
    pub fn catch_up(&mut self, frames: &[Arc<Frame>]) {
        self.pushing = UnitKind::Replay;
        for frame in frames {
            self.push_frame(frame);
        }
        self.pushing = UnitKind::Live;
    }

    /// Queue a batch of live frames. When the viewer has fallen too far behind, everything
    /// not yet started is dropped and it resumes at the next keyframe: returns the number
    /// of frames dropped (0 normally).
    pub fn push(&mut self, frames: &[Arc<Frame>]) -> u64 {
        for frame in frames {
            self.push_frame(frame);
        }
        if self.live > self.limit {
            self.skip()
        } else {
            0
        }
    }

    /// For a viewer with nothing queued: the buffers [`Outbox::push`] would queue for
    /// `frames`, borrowed from the frames themselves, into `out`; returns how many. A
    /// viewer that keeps up is written to straight from these and never queues anything.
    /// `None` when a frame needs encoding for this viewer alone (a track turned off, a
    /// stream id of its own, a segment mark for an edge, waiting for a keyframe), or when
    /// they need more buffers than `out` holds. Whatever the write leaves must be queued
    /// with [`Outbox::push_unwritten`].
    pub fn shared_slices<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a Arc<Frame>>,
        out: &mut [IoSlice<'a>],
    ) -> Option<usize> {
        if !self.units.is_empty() || self.waiting_for_key || self.tracks != Tracks::BOTH {
            return None;
        }
        let mut count = 0;
        for frame in frames {
            let (_, bytes) = self.shared(frame)?;
            self.note_header(frame);
            if bytes.is_empty() {
                // Nothing of this frame goes out live (metadata over HTTP-FLV).
                continue;
            }
            *out.get_mut(count)? = IoSlice::new(bytes);
            count += 1;
        }
        Some(count)
    }

    /// After writing `written` bytes of the [`Outbox::shared_slices`] of `frames`: queue
    /// the rest, as if they had been pushed before the write. Returns the frames dropped,
    /// as [`Outbox::push`] does.
    pub fn push_unwritten<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a Arc<Frame>>,
        written: usize,
    ) -> u64 {
        for frame in frames {
            self.push_frame(frame);
        }
        // Before the limit: a viewer that falls behind keeps the frame it has started.
        self.advance(written);
        if self.live > self.limit {
            self.skip()
        } else {
            0
        }
    }

    /// Queue one of the connection's own messages, after everything queued so far.
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.units.push_back(Unit {
                bytes,
                kind: UnitKind::Own,
            });
        }
    }

    /// Drop the media not yet started and resume at the next keyframe (also when the
    /// stream's source lost frames for this viewer). Returns the frames dropped.
    pub fn skip(&mut self) -> u64 {
        let keep_front = usize::from(self.front_started);
        let mut dropped = 0;
        let mut index = 0;
        self.units.retain(|unit| {
            let keep = index < keep_front || unit.kind == UnitKind::Own;
            index += 1;
            dropped += u64::from(!keep);
            keep
        });
        self.live = self
            .units
            .iter()
            .filter(|unit| unit.kind == UnitKind::Live)
            .count();
        self.waiting_for_key = true;
        dropped
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The queued buffers, front first, into `out`; returns how many.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut count = 0;
        for (slot, unit) in out.iter_mut().zip(self.units.iter()) {
            *slot = IoSlice::new(&unit.bytes);
            count += 1;
        }
        count
    }

    /// `n` bytes from the front were written.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.units.front_mut() else {
                return;
            };
            if front.bytes.len() <= n {
                n -= front.bytes.len();
                if front.kind == UnitKind::Live {
                    self.live -= 1;
                }
                self.units.pop_front();
                self.front_started = false;
            } else {
                front.bytes.advance(n);
                self.front_started = true;
                n = 0;
            }
        }
    }

    /// What remains of a partly written unit (to finish before the connection writes
    /// anything else itself), dropping everything else.
    pub fn take_started(&mut self) -> Option<Bytes> {
        let started = self.front_started;
        self.front_started = false;
        self.live = 0;
        let front = self.units.pop_front();
        self.units.clear();
        front.filter(|_| started).map(|unit| unit.bytes)
    }

    /// `frame` as this viewer gets it, when that is the encoding every such viewer shares:
    /// the frame's buffer and the bytes of it to send. `None` when the viewer needs an
    /// encoding of its own (a stream id of its own, a segment mark for an edge).
    fn shared<'f>(&self, frame: &'f Frame) -> Option<(&'f Bytes, &'f [u8])> {
        match self.format {
            Format::Flv { marks: true, .. } if frame.segment.is_some() => None,
            _ => {
                let encoding = self.shares()?;
                Some((encoding.buffer(frame), encoding.bytes(frame)))
            }
        }
    }

    /// The encoding this viewer shares with others, frame by frame (but for the frames
    /// [`Outbox::shared`] excludes); `None` when it has one of its own.
    pub fn shares(&self) -> Option<Shared> {
        match self.format {
            Format::Rtmp { stream_id } if stream_id == MEDIA_STREAM_ID => Some(Shared::Rtmp),
            Format::Rtmp { .. } => None,
            Format::Flv { framing, .. } => Some(Shared::Flv(framing)),
            Format::Rtp => Some(Shared::Rtp),
        }
    }

    /// Remember the latest sequence headers, to resend after a skip.
    fn note_header(&mut self, frame: &Arc<Frame>) {
        match frame.kind {
            MediaKind::Video if frame.sequence_header => self.video_header = Some(frame.clone()),
            MediaKind::Audio if frame.sequence_header => self.audio_header = Some(frame.clone()),
            _ => {}
        }
    }

    fn push_frame(&mut self, frame: &Arc<Frame>) {
        self.note_header(frame);
        if self.waiting_for_key && frame.kind == MediaKind::Video && !frame.sequence_header {
            if !frame.key {
                return;
            }
            self.waiting_for_key = false;
            // Headers may have changed in what was skipped: the current ones go first.
            for header in [self.video_header.clone(), self.audio_header.clone()]
                .into_iter()
                .flatten()
            {
                self.encode(&header);
            }
        }
        self.encode(frame);
    }

    fn encode(&mut self, frame: &Frame) {
        let wanted = match frame.kind {
            MediaKind::Audio => self.tracks.audio,
            MediaKind::Video => self.tracks.video,
            MediaKind::Metadata => true,
        };
        if !wanted {
            return;
        }
        let flv_metadata =
            frame.kind == MediaKind::Metadata && matches!(self.format, Format::Flv { .. });
        if flv_metadata {
            // Only in the replay (see [`Shared::bytes`]).
            if self.pushing == UnitKind::Replay {
                let framing = match self.format {
                    Format::Flv { framing, .. } => framing,
                    Format::Rtmp { .. } | Format::Rtp => unreachable!("checked above"),
                };
                let bytes = framing.buffer(frame).slice_ref(framing.framed(frame));
                self.units.push_back(Unit {
                    bytes,
                    kind: UnitKind::Replay,
                });
            }
            return;
        }
        let bytes = match (self.shared(frame), self.format) {
            (Some((buffer, bytes)), _) => buffer.slice_ref(bytes),
            (None, Format::Rtmp { stream_id }) => frame.rtmp_chunks_for(stream_id),
            // RTP viewers always share the stream's packets.
            (None, Format::Rtp) => Shared::rtp(frame).clone(),
            // A frame starting a segment, for an edge: the mark goes ahead of it in one
            // unit, so that falling behind cannot drop one of the two (a mark without its
            // keyframe would mark the wrong one downstream).
            (None, Format::Flv { framing, .. }) => {
                let mut both = BytesMut::new();
                if let Some(mark) = frame.segment {
                    let tag =
                        flv::encode_tag(flv::TAG_SCRIPT, frame.timestamp as u32, &mark.to_script());
                    both.extend_from_slice(&framing.frame(&tag));
                }
                both.extend_from_slice(framing.framed(frame));
                both.freeze()
            }
        };
        if self.pushing == UnitKind::Live {
            self.live += 1;
        }
        self.units.push_back(Unit {
            bytes,
            kind: self.pushing,
        });
    }
}

#[cfg(test)]
mod tests;
