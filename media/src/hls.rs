//! HLS packaging: a live stream's frames cut into MPEG-TS segments at keyframes, and the
//! sliding-window media playlist that lists them (RFC 8216).
//!
//! Sans-IO: [`HlsPackager::push`] takes frames from the hub, [`HlsPackager::playlist`] and
//! [`HlsPackager::segment`] answer what the HTTP side asks for.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::codec::{self, AacConfig, AvcConfig, HevcConfig, VideoCodec, VideoPacketKind};
use crate::hub::Frame;
use crate::rtmp::session::MediaKind;
use crate::ts::{self, TsMuxer, TsTracks, TsVideo};

#[derive(Debug, Clone)]
pub struct HlsConfig {
    /// A segment is cut at the first keyframe once it is this long.
    pub target_duration: Duration,
    /// Segments listed in the playlist.
    pub window: usize,
    /// Segments kept (and served) after they leave the playlist, for players that read the
    /// playlist just before it moved on.
    pub retain_extra: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            target_duration: Duration::from_secs(2),
            window: 6,
            retain_extra: 4,
        }
    }
}

/// One finished segment.
#[derive(Debug)]
pub struct Segment {
    pub sequence: u64,
    pub duration_ms: u64,
    /// Preceded by `#EXT-X-DISCONTINUITY`: the publisher changed or its codec parameters did.
    pub discontinuity: bool,
    pub data: Bytes,
}

struct OpenSegment {
    start_ms: u64,
    last_ms: u64,
    discontinuity: bool,
    data: BytesMut,
}

/// Audio frames are gathered into one PES (fewer TS packets) until this many are waiting
/// or video needs to go out.
const AUDIO_FRAMES_PER_PES: usize = 6;

/// AAC frames (as ADTS) waiting to go out together in one PES.
#[derive(Default)]
struct PendingAudio {
    adts: Vec<u8>,
    frames: usize,
    /// PTS of the first waiting frame, 90 kHz.
    pts: u64,
}

impl PendingAudio {
    /// Add a raw AAC frame; false when it cannot be carried in ADTS.
    fn push(&mut self, config: &AacConfig, raw: &[u8], timestamp_ms: u64) -> bool {
        if ts::aac_to_adts(config, raw, &mut self.adts).is_err() {
            return false;
        }
        if self.frames == 0 {
            self.pts = timestamp_ms * 90;
        }
        self.frames += 1;
        true
    }

    fn flush(&mut self, open: &mut OpenSegment, muxer: &mut TsMuxer) {
        if self.frames > 0 {
            muxer.write_audio(&mut open.data, self.pts, &self.adts);
            self.adts.clear();
            self.frames = 0;
        }
    }
}

pub struct HlsPackager {
    config: HlsConfig,
    tracks: TsTracks,
    /// One muxer for the whole stream, so continuity counters run on across segments;
    /// created when the first segment opens (the tracks are known by then).
    muxer: Option<TsMuxer>,
    segments: VecDeque<Arc<Segment>>,
    open: Option<OpenSegment>,
    next_sequence: u64,
    /// Discontinuities that have left the playlist (EXT-X-DISCONTINUITY-SEQUENCE).
    discontinuity_sequence: u64,
    /// Largest EXTINF so far, rounded up: EXT-X-TARGETDURATION never shrinks.
    target_duration_secs: u64,
    avc: Option<AvcConfig>,
    hevc: Option<HevcConfig>,
    aac: Option<AacConfig>,
    video_header: Option<Bytes>,
    audio_header: Option<Bytes>,
    generation: Option<u32>,
    /// The next segment follows a break in the stream.
    pending_discontinuity: bool,
    audio: PendingAudio,
    /// Spacing of the last video frames (audio frames when there is no video).
    frame_interval_ms: u64,
    ended: bool,
    scratch: Vec<u8>,
}

impl HlsPackager {
    /// `first_sequence` numbers the first segment. `has_audio`/`has_video` say which tracks
    /// the stream is known to carry; sequence headers seen before the first segment opens
    /// add to them, and from then on the program (PMT) is fixed.
    pub fn new(config: HlsConfig, first_sequence: u64, has_audio: bool, has_video: bool) -> Self {
        let target_duration_secs = config.target_duration.as_secs_f64().ceil().max(1.0) as u64;
        HlsPackager {
            config,
            tracks: TsTracks {
                video: has_video.then_some(TsVideo::H264),
                audio: has_audio,
            },
            muxer: None,
            segments: VecDeque::new(),
            open: None,
            next_sequence: first_sequence,
            discontinuity_sequence: 0,
            target_duration_secs,
            avc: None,
            hevc: None,
            aac: None,
            video_header: None,
            audio_header: None,
            generation: None,
            pending_discontinuity: false,
            audio: PendingAudio::default(),
            frame_interval_ms: 40,
            ended: false,
            scratch: Vec::new(),
        }
    }

    /// The sequence number the next segment will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Segments listed in the playlist right now.
    pub fn listed(&self) -> impl Iterator<Item = &Arc<Segment>> {
        let skip = self.segments.len().saturating_sub(self.config.window);
        self.segments.iter().skip(skip)
    }

    pub fn has_segments(&self) -> bool {
        !self.segments.is_empty()
    }

    /// A segment still held (listed or recently listed).
    pub fn segment(&self, sequence: u64) -> Option<Arc<Segment>> {
        let first = self.segments.front()?.sequence;
        let index = usize::try_from(sequence.checked_sub(first)?).ok()?;
        self.segments.get(index).cloned()
    }

    pub fn push(&mut self, frame: &Frame) {
        if self.ended {
            return;
        }
        if self.generation.is_some_and(|g| g != frame.generation) {
            // A new publisher: its timestamps and maybe its codec parameters differ.
            self.break_stream();
        }
        self.generation = Some(frame.generation);
        match frame.kind {
            MediaKind::Metadata => {}
            MediaKind::Video if frame.sequence_header => self.on_video_header(frame),
            MediaKind::Audio if frame.sequence_header => self.on_audio_header(frame),
            MediaKind::Video => self.on_video(frame),
            MediaKind::Audio => self.on_audio(frame),
        }
    }

    /// The stream ended: close the last segment; the playlist gets EXT-X-ENDLIST.
    pub fn end(&mut self) {
        self.close_segment(None);
        self.ended = true;
    }

    fn break_stream(&mut self) {
        self.close_segment(None);
        self.pending_discontinuity = true;
    }

    fn on_video_header(&mut self, frame: &Frame) {
        // Tracks are settled when the first segment opens; after that the program stays
        // as it is (a PMT change mid-stream would need every player to reset).
        let settled = self.muxer.is_some();
        if (settled && self.tracks.video.is_none())
            || self.video_header.as_ref() == Some(&frame.payload)
        {
            return;
        }
        let Some(info) = codec::parse_video_tag(&frame.payload) else {
            return;
        };
        let record = &frame.payload[info.data_offset..];
        let (avc, hevc) = match info.codec {
            VideoCodec::Avc => (AvcConfig::parse(record).ok(), None),
            VideoCodec::Hevc => (None, HevcConfig::parse(record).ok()),
            _ => (None, None),
        };
        if avc.is_none() && hevc.is_none() {
            return;
        }
        if self.video_header.is_some() {
            // New parameters mid-stream: players must reset their decoder.
            self.break_stream();
        }
        self.video_header = Some(frame.payload.clone());
        let video = Some(if hevc.is_some() {
            TsVideo::H265
        } else {
            TsVideo::H264
        });
        if self.tracks.video != video {
            self.tracks.video = video;
            self.muxer = None;
        }
        self.avc = avc;
        self.hevc = hevc;
    }

    fn on_audio_header(&mut self, frame: &Frame) {
        if self.audio_header.as_ref() == Some(&frame.payload) {
            return;
        }
        let Some(info) = codec::parse_audio_tag(&frame.payload) else {
            return;
        };
        if info.codec != codec::AudioCodec::Aac {
            return;
        }
        let Ok(config) = AacConfig::parse(&frame.payload[info.data_offset..]) else {
            return;
        };
        if self.muxer.is_none() {
            self.tracks.audio = true;
        } else if !self.tracks.audio {
            return;
        }
        if self.audio_header.is_some() {
            self.break_stream();
        }
        self.audio_header = Some(frame.payload.clone());
        self.aac = Some(config);
    }

    fn on_video(&mut self, frame: &Frame) {
        let Some(info) = codec::parse_video_tag(&frame.payload) else {
            return;
        };
        let configured = self.avc.is_some() || self.hevc.is_some();
        if info.packet != VideoPacketKind::Frame || self.tracks.video.is_none() || !configured {
            return;
        }
        let data = &frame.payload[info.data_offset..];
        let key = frame.key;
        if key {
            self.start_segment_at(frame.timestamp);
        }
        self.scratch.clear();
        match (&self.avc, &self.hevc) {
            (Some(avc), _) => ts::avc_to_annexb(avc, data, key, &mut self.scratch),
            (None, Some(hevc)) => ts::hevc_to_annexb(hevc, data, key, &mut self.scratch),
            // Excluded by `configured` above.
            (None, None) => return,
        }
        let (Some(open), Some(muxer)) = (self.open.as_mut(), self.muxer.as_mut()) else {
            return;
        };
        let dts = frame.timestamp * 90;
        let pts = (frame.timestamp as i64 + i64::from(info.composition_time)).max(0) as u64 * 90;
        self.audio.flush(open, muxer);
        muxer.write_video(&mut open.data, pts, dts, key, &self.scratch);
        if frame.timestamp > open.last_ms {
            self.frame_interval_ms = (frame.timestamp - open.last_ms).min(1000);
        }
        open.last_ms = open.last_ms.max(frame.timestamp);
    }

    fn on_audio(&mut self, frame: &Frame) {
        let Some(config) = self.aac else { return };
        let Some(info) = codec::parse_audio_tag(&frame.payload) else {
            return;
        };
        if self.tracks.video.is_none() && self.tracks.audio {
            // Audio-only: any frame may start a segment.
            self.start_segment_at(frame.timestamp);
        }
        let (Some(open), Some(muxer)) = (self.open.as_mut(), self.muxer.as_mut()) else {
            return;
        };
        if !self.tracks.audio {
            return;
        }
        if !self
            .audio
            .push(&config, &frame.payload[info.data_offset..], frame.timestamp)
        {
            // Too long for an ADTS header: not an AAC frame any decoder would take.
            return;
        }
        if self.tracks.video.is_none() && frame.timestamp > open.last_ms {
            self.frame_interval_ms = (frame.timestamp - open.last_ms).min(1000);
        }
        open.last_ms = open.last_ms.max(frame.timestamp);
        if self.audio.frames >= AUDIO_FRAMES_PER_PES {
            self.audio.flush(open, muxer);
        }
    }

    /// A keyframe (audio-only: any frame) at `timestamp_ms`: close the open segment if it
    /// reached the target duration, and open one if none is open.
    fn start_segment_at(&mut self, timestamp_ms: u64) {
        let target = self.config.target_duration.as_millis() as u64;
        if self
            .open
            .as_ref()
            .is_some_and(|s| timestamp_ms.saturating_sub(s.start_ms) >= target)
        {
            self.close_segment(Some(timestamp_ms));
        }
        if self.open.is_none() {
            self.open_segment(timestamp_ms);
        }
    }

    fn open_segment(&mut self, start_ms: u64) {
        let tracks = self.tracks;
        let muxer = self.muxer.get_or_insert_with(|| TsMuxer::new(tracks));
        let mut data = BytesMut::with_capacity(256 * 1024);
        muxer.write_tables(&mut data);
        self.open = Some(OpenSegment {
            start_ms,
            last_ms: start_ms,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            data,
        });
    }

    /// Close the open segment; `next_start_ms` is where the next one begins (its duration's
    /// end), or `None` when the stream stops or breaks here.
    fn close_segment(&mut self, next_start_ms: Option<u64>) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        if let Some(muxer) = self.muxer.as_mut() {
            self.audio.flush(&mut open, muxer);
        }
        // Without a next segment, the last frame lasts about as long as the ones before it.
        let end = next_start_ms.unwrap_or(open.last_ms + self.frame_interval_ms);
        let duration_ms = end.saturating_sub(open.start_ms).max(1);
        self.target_duration_secs = self.target_duration_secs.max(duration_ms.div_ceil(1000));
        let segment = Arc::new(Segment {
            sequence: self.next_sequence,
            duration_ms,
            discontinuity: open.discontinuity,
            data: open.data.freeze(),
        });
        self.next_sequence += 1;
        self.segments.push_back(segment);
        // The segment that just left the listed window takes its discontinuity with it.
        let leaving = self.segments.len().checked_sub(self.config.window + 1);
        if leaving
            .and_then(|i| self.segments.get(i))
            .is_some_and(|s| s.discontinuity)
        {
            self.discontinuity_sequence += 1;
        }
        while self.segments.len() > self.config.window + self.config.retain_extra {
            self.segments.pop_front();
        }
    }

    /// The media playlist; `uri` names a segment by its sequence number.
    pub fn playlist(&self, uri: impl Fn(u64) -> String) -> String {
        let mut out = String::with_capacity(512);
        let listed: Vec<&Arc<Segment>> = self.listed().collect();
        let first = listed.first().map_or(self.next_sequence, |s| s.sequence);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            self.target_duration_secs, self.discontinuity_sequence
        );
        for s in listed {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(
                out,
                "#EXTINF:{:.3},\n{}\n",
                s.duration_ms as f64 / 1000.0,
                uri(s.sequence)
            );
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

#[cfg(test)]
mod tests;
