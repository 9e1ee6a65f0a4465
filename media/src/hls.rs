//! HLS packaging: a live stream's frames cut into MPEG-TS segments at keyframes, and the
//! sliding-window media playlist that lists them (RFC 8216).
//!
//! Sans-IO: [`HlsPackager::push`] takes frames from the hub, [`HlsPackager::playlist`] and
//! [`HlsPackager::segment`] answer what the HTTP side asks for.
//!
//! The packager does not choose where segments begin or how they are numbered: the hub
//! marks those frames ([`crate::segment`]), so every node packaging a stream lists the same
//! segments under the same media sequence numbers.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::codec;
use crate::frame::{Frame, MediaKind, SegmentMark};
use crate::ts::{PendingAudio, TsCodecs, TsMuxer, TsTracks, TsVideo, VideoHeaderError};

#[derive(Debug, Clone)]
pub struct HlsConfig {
    /// The shortest EXT-X-TARGETDURATION announced (the hub's segment target).
    pub target_duration: Duration,
    /// Segments listed in the playlist.
    pub window: usize,
    /// Segments kept (and served) after they leave the playlist, for players that read the
    /// playlist just before it moved on.
    pub retain_extra: usize,
    /// Low-latency HLS (the fMP4 playlist): the part target duration.
    pub part_target: Duration,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            target_duration: Duration::from_secs(2),
            window: 6,
            retain_extra: 4,
            part_target: Duration::from_millis(333),
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
    /// Its discontinuity sequence number (RFC 8216 section 6.2.2).
    pub discontinuity_number: u64,
    pub data: Bytes,
}

struct OpenSegment {
    sequence: u64,
    start_ms: u64,
    /// Added to this node's timestamps to write them on the timeline of the node that
    /// marked the segment (see [`SegmentMark::timestamp`]).
    offset: i64,
    /// The last video and audio frames in the segment.
    last_video_ms: Option<u64>,
    last_audio_ms: Option<u64>,
    muxer: TsMuxer,
    discontinuity: bool,
    discontinuity_number: u64,
    data: BytesMut,
}

/// What the packager remembers of the last segment it began.
#[derive(Clone, Copy)]
struct Begun {
    sequence: u64,
    discontinuity_number: u64,
}

pub struct HlsPackager {
    config: HlsConfig,
    tracks: TsTracks,
    /// The first segment opened: the program's tracks are fixed from then on.
    settled: bool,
    segments: VecDeque<Arc<Segment>>,
    open: Option<OpenSegment>,
    last_begun: Option<Begun>,
    /// Added to the marks' sequence numbers once they went backwards.
    renumber: u64,
    /// Added to the marks' discontinuity numbers for breaks only this node saw (an edge
    /// losing its upstream).
    local_breaks: u64,
    /// EXT-X-TARGETDURATION as the marks fix it (0: no mark said yet).
    marked_target: u64,
    codecs: TsCodecs,
    video_header: Option<Bytes>,
    audio_header: Option<Bytes>,
    generation: Option<u32>,
    /// The next segment follows a break in the stream.
    pending_discontinuity: bool,
    audio: PendingAudio,
    /// Spacing of the last video frames and of the last audio frames: how long the last
    /// frame of each lasts, at the end of the stream.
    video_interval_ms: u64,
    audio_interval_ms: u64,
    /// Why the stream cannot be packaged, if it cannot (said once by the caller).
    problem: Option<String>,
    ended: bool,
    scratch: Vec<u8>,
}

impl HlsPackager {
    /// `has_audio`/`has_video` say which tracks the stream is known to carry; sequence
    /// headers seen before the first segment opens add to them, and from then on the
    /// program (PMT) is fixed.
    pub fn new(config: HlsConfig, has_audio: bool, has_video: bool) -> Self {
        HlsPackager {
            config,
            tracks: TsTracks {
                video: has_video.then_some(TsVideo::H264),
                audio: has_audio,
            },
            settled: false,
            segments: VecDeque::new(),
            open: None,
            last_begun: None,
            renumber: 0,
            local_breaks: 0,
            marked_target: 0,
            codecs: TsCodecs::default(),
            video_header: None,
            audio_header: None,
            generation: None,
            pending_discontinuity: false,
            audio: PendingAudio::default(),
            video_interval_ms: 40,
            audio_interval_ms: 23,
            problem: None,
            ended: false,
            scratch: Vec::new(),
        }
    }

    /// The sequence number of the segment being filled, or of the next one.
    fn next_sequence(&self) -> Option<u64> {
        match (&self.open, self.last_begun) {
            (Some(open), _) => Some(open.sequence),
            (None, Some(last)) => Some(last.sequence + 1),
            (None, None) => None,
        }
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Segments listed in the playlist right now. None are until a mark has fixed the
    /// target duration (the stream broke during its first segment), unless the stream
    /// ended: a playlist's target duration may not change once it lists segments.
    pub fn listed(&self) -> impl Iterator<Item = &Arc<Segment>> {
        let listable = self.marked_target > 0 || self.ended;
        let shown = if listable { self.segments.len() } else { 0 };
        let skip = self.segments.len() - shown.min(self.config.window);
        self.segments.iter().skip(skip)
    }

    pub fn has_segments(&self) -> bool {
        self.listed().next().is_some()
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
        if (self.settled && self.tracks.video.is_none())
            || self.video_header.as_ref() == Some(&frame.payload)
        {
            return;
        }
        let (video, config) = match TsCodecs::parse_video_header(&frame.payload) {
            Ok(parsed) => parsed,
            Err(VideoHeaderError::NotVideo) => return,
            Err(VideoHeaderError::Unsupported(other)) => {
                self.problem = Some(format!(
                    "its video codec ({other:?}) cannot be carried in MPEG-TS HLS (H.264 and HEVC can)"
                ));
                return;
            }
            Err(VideoHeaderError::Unparsable) => {
                self.problem = Some("its video sequence header does not parse".into());
                return;
            }
        };
        self.problem = None;
        if self.video_header.is_some() {
            // New parameters mid-stream: players must reset their decoder.
            self.break_stream();
        }
        self.video_header = Some(frame.payload.clone());
        // From the next segment on, its program says so.
        self.tracks.video = Some(video);
        self.codecs.set_video(config);
    }

    fn on_audio_header(&mut self, frame: &Frame) {
        if self.audio_header.as_ref() == Some(&frame.payload) {
            return;
        }
        let Some(config) = TsCodecs::parse_audio_header(&frame.payload) else {
            return;
        };
        if !self.settled {
            self.tracks.audio = true;
        } else if !self.tracks.audio {
            return;
        }
        if self.audio_header.is_some() {
            self.break_stream();
        }
        self.audio_header = Some(frame.payload.clone());
        self.codecs.set_audio(config);
    }

    fn on_video(&mut self, frame: &Frame) {
        if codec::parse_video_tag(&frame.payload).is_none() {
            return;
        }
        if self.tracks.video.is_none() {
            // An audio-only program (video came after it was fixed) still cuts where the
            // stream's segments begin.
            if let Some(mark) = frame.segment {
                self.begin_segment(mark, frame.timestamp);
            }
            return;
        }
        let configured = self.codecs.has_video();
        if !configured && self.problem.is_none() {
            self.problem = Some("its video has no usable sequence header".into());
        }
        if !configured {
            return;
        }
        self.scratch.clear();
        let key = frame.key;
        let Some(composition_time) =
            self.codecs
                .video_frame(&frame.payload, key, &mut self.scratch)
        else {
            return;
        };
        if let Some(mark) = frame.segment {
            self.begin_segment(mark, frame.timestamp);
        }
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let dts = frame.timestamp.saturating_add_signed(open.offset);
        let pts = dts.saturating_add_signed(i64::from(composition_time));
        self.audio.flush(&mut open.muxer, &mut open.data);
        open.muxer
            .write_video(&mut open.data, pts * 90, dts * 90, key, &self.scratch);
        if let Some(last) = open.last_video_ms.replace(frame.timestamp) {
            note_interval(&mut self.video_interval_ms, last, frame.timestamp);
        }
    }

    fn on_audio(&mut self, frame: &Frame) {
        let Some((config, raw)) = self.codecs.raw_aac(&frame.payload) else {
            return;
        };
        if let Some(mark) = frame.segment.filter(|_| self.tracks.video.is_none()) {
            // Audio-only: the hub marks audio frames.
            self.begin_segment(mark, frame.timestamp);
        }
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if !self.tracks.audio {
            return;
        }
        let pts = frame.timestamp.saturating_add_signed(open.offset);
        if !self.audio.push(&config, raw, pts) {
            // Too long for an ADTS header: not an AAC frame any decoder would take.
            return;
        }
        if let Some(last) = open.last_audio_ms.replace(frame.timestamp) {
            note_interval(&mut self.audio_interval_ms, last, frame.timestamp);
        }
        if self.audio.is_full() {
            self.audio.flush(&mut open.muxer, &mut open.data);
        }
    }

    /// A marked frame at `start_ms`: the open segment ends and segment `mark` begins.
    fn begin_segment(&mut self, mark: SegmentMark, start_ms: u64) {
        self.close_segment(Some(start_ms));
        let mut sequence = mark.sequence + self.renumber;
        let mut discontinuity_number = mark.discontinuity + self.local_breaks;
        let mut discontinuity = std::mem::take(&mut self.pending_discontinuity);
        if let Some(last) = self.last_begun {
            let expected = last.sequence + 1;
            if sequence < expected {
                // The numbers went back (a new source with a slower clock): count on.
                self.renumber = expected - mark.sequence;
                sequence = expected;
                discontinuity = true;
            } else if sequence > expected {
                // The numbers jumped (the stream moved to another origin). A playlist
                // cannot skip numbers, so the listing starts again from here.
                self.segments.clear();
                discontinuity = true;
            }
            discontinuity |= discontinuity_number != last.discontinuity_number;
            if discontinuity && discontinuity_number <= last.discontinuity_number {
                // A break the marks do not count: count it here.
                self.local_breaks += last.discontinuity_number + 1 - discontinuity_number;
                discontinuity_number = last.discontinuity_number + 1;
            }
        } else {
            // Whatever came before, this packager's first segment starts its listing.
            discontinuity = false;
        }
        self.last_begun = Some(Begun {
            sequence,
            discontinuity_number,
        });
        if mark.target_duration > 0 {
            self.marked_target = mark.target_duration;
        }
        self.settled = true;
        let mut muxer = TsMuxer::for_segment(self.tracks, sequence);
        let mut data = BytesMut::with_capacity(256 * 1024);
        muxer.write_tables(&mut data);
        self.open = Some(OpenSegment {
            sequence,
            start_ms,
            offset: mark.timestamp as i64 - start_ms as i64,
            last_video_ms: None,
            last_audio_ms: None,
            muxer,
            discontinuity,
            discontinuity_number,
            data,
        });
    }

    /// Close the open segment; `next_start_ms` is where the next one begins (its duration's
    /// end), or `None` when the stream stops or breaks here.
    fn close_segment(&mut self, next_start_ms: Option<u64>) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        self.audio.flush(&mut open.muxer, &mut open.data);
        // Without a next segment, the last frame lasts about as long as the ones before it:
        // the segment lasts as long as its video (its audio, if it has no video), as a
        // segment that ends at the next mark does.
        let end = next_start_ms.unwrap_or_else(|| {
            let video = open.last_video_ms.map(|t| t + self.video_interval_ms);
            let audio = open.last_audio_ms.map(|t| t + self.audio_interval_ms);
            video.or(audio).unwrap_or(open.start_ms)
        });
        let duration_ms = end.saturating_sub(open.start_ms).max(1);
        let segment = Arc::new(Segment {
            sequence: open.sequence,
            duration_ms,
            discontinuity: open.discontinuity,
            discontinuity_number: open.discontinuity_number,
            data: open.data.freeze(),
        });
        self.segments.push_back(segment);
        while self.segments.len() > self.config.window + self.config.retain_extra {
            self.segments.pop_front();
        }
    }

    /// EXT-X-TARGETDURATION: as the marks fixed it for the stream. Before a mark says (a
    /// stream that ended during its first segment), the configured target, or the longest
    /// segment, rounded as EXTINF is compared.
    pub fn target_duration(&self) -> u64 {
        if self.marked_target > 0 {
            return self.marked_target;
        }
        let configured = self.config.target_duration.as_secs_f64().ceil() as u64;
        let longest = self
            .segments
            .iter()
            .map(|s| s.duration_ms)
            .max()
            .unwrap_or(0);
        configured.max(longest.div_ceil(1000)).max(1)
    }

    /// Why the stream cannot be packaged, while it cannot.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// The media playlist; `uri` names a segment by its sequence number.
    pub fn playlist(&self, uri: impl Fn(u64) -> String) -> String {
        let mut out = String::with_capacity(512);
        let listed: Vec<&Arc<Segment>> = self.listed().collect();
        // Numbers come from the segments' marks, so two nodes listing the same segments
        // write the same header.
        // Before any is listed, the first that will be.
        let unlisted = self.segments.front().map(|s| s.sequence);
        let (first, discontinuity_sequence) =
            listed
                .first()
                .map_or((unlisted.or(self.next_sequence()).unwrap_or(0), 0), |s| {
                    let tagged = u64::from(s.discontinuity);
                    (s.sequence, s.discontinuity_number.saturating_sub(tagged))
                });
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}\n",
            self.target_duration()
        );
        let target = self.target_duration();
        for s in listed {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(
                out,
                "#EXTINF:{:.3},\n{}\n",
                extinf_ms(s.duration_ms, target) as f64 / 1000.0,
                uri(s.sequence)
            );
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// The EXTINF of a segment lasting `duration_ms` in a playlist whose target duration is
/// `target` seconds. Segments are cut to fit the target duration, but a publisher that
/// stalls mid-segment stretches one: its EXTINF is then capped at what the target allows
/// (players place segments by their timestamps; a playlist whose target duration changed
/// would be invalid).
pub fn extinf_ms(duration_ms: u64, target: u64) -> u64 {
    duration_ms.min(target * 1000 + 499)
}

/// Note the gap between two frames of a track as its frame interval (a gap of a second
/// or more is a pause, not a frame rate).
fn note_interval(interval: &mut u64, last: u64, now: u64) {
    let gap = now.saturating_sub(last);
    if gap > 0 && gap < 1000 {
        *interval = gap;
    }
}

#[cfg(test)]
mod tests;
