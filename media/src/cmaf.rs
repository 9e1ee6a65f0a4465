//! CMAF HLS packaging: a live stream's frames cut into fragmented-MP4 segments at the
//! hub's segment marks, and each segment into parts of at most `part_target` for
//! low-latency HLS (RFC 8216bis).
//!
//! Sans-IO, like [`crate::hls::HlsPackager`]: [`CmafPackager::push`] takes frames, the
//! HTTP side asks for the init segment, segments and parts.
//!
//! The same bytes on every node: each segment is written by a writer of its own, on the
//! timeline of the node that marked it ([`SegmentMark::timestamp`]), with fragment numbers
//! from the segment's number, and a part ends at the first frame `part_target` or more after
//! the part began. None of that depends on what came before the segment, so an edge that
//! started late writes a segment as the origin did.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::fmp4::Fmp4Writer;
use crate::frame::{Frame, MediaKind, SegmentMark};

/// Init segments kept (one more for each codec change while segments need the older).
const MAX_INITS: usize = 4;

/// How a stream is packaged.
#[derive(Debug, Clone)]
pub struct CmafConfig {
    /// EXT-X-PART-INF's PART-TARGET: a part ends at the first frame this long or more
    /// after it began.
    pub part_target: Duration,
    /// Segments listed in the playlist.
    pub window: usize,
    /// Segments kept after they leave the playlist's window (for players that lag).
    pub retain: usize,
}

impl Default for CmafConfig {
    fn default() -> Self {
        CmafConfig {
            part_target: Duration::from_millis(333),
            window: 6,
            retain: 4,
        }
    }
}

/// A part of a segment: one or more fragments (`moof` + `mdat`).
#[derive(Debug)]
pub struct Part {
    pub duration_ms: u64,
    /// It begins with a keyframe (EXT-X-PART's INDEPENDENT=YES).
    pub independent: bool,
    pub data: Bytes,
}

/// A whole segment: its parts, one after the other.
#[derive(Debug)]
pub struct CmafSegment {
    pub sequence: u64,
    /// Which init segment its fragments need ([`CmafPackager::init`]).
    pub init: u32,
    /// Its discontinuity sequence number, as marked.
    pub discontinuity: u64,
    /// EXT-X-PROGRAM-DATE-TIME, as marked (Unix ms; 0: none).
    pub program_date_ms: u64,
    pub duration_ms: u64,
    /// Its parts, whose bytes are slices of `data`.
    pub parts: Vec<Arc<Part>>,
    /// The whole segment: its parts one after the other, joined once when it ended.
    pub data: Bytes,
}

/// The segment being written.
struct OpenSegment {
    sequence: u64,
    discontinuity: u64,
    program_date_ms: u64,
    /// On the marking node's timeline.
    start_ms: u64,
    /// Added to this node's timestamps to put them on that timeline.
    offset: i64,
    writer: Fmp4Writer,
    parts: Vec<Arc<Part>>,
    /// The open part: when it began, whether with a keyframe, what it holds so far.
    part_start_ms: u64,
    part_independent: bool,
    part_data: BytesMut,
}

pub struct CmafPackager {
    config: CmafConfig,
    video_header: Option<Frame>,
    audio_header: Option<Frame>,
    /// The current init segment and its number (it changes with the codec parameters).
    init: Option<(u32, Bytes)>,
    /// Init segments that segments still held need, with their numbers.
    inits: VecDeque<(u32, Bytes)>,
    segments: VecDeque<Arc<CmafSegment>>,
    open: Option<OpenSegment>,
    /// EXT-X-TARGETDURATION as the marks fix it (0: no mark said yet).
    marked_target: u64,
    /// Sequence headers changed since the init segment was made.
    headers_changed: bool,
    ended: bool,
    /// The playlist as last rendered, in full and as a delta update, until the packager
    /// moves on: every player blocked on a part asks for the same text at once.
    rendered: [Option<Bytes>; 2],
}

impl CmafPackager {
    pub fn new(config: CmafConfig) -> CmafPackager {
        CmafPackager {
            config,
            video_header: None,
            audio_header: None,
            init: None,
            inits: VecDeque::new(),
            segments: VecDeque::new(),
            open: None,
            marked_target: 0,
            headers_changed: false,
            ended: false,
            rendered: [None, None],
        }
    }

    /// The init segment the segments from now on need, and its number.
    pub fn init(&self) -> Option<(u32, Bytes)> {
        self.init.clone()
    }

    /// Init segment `number`, while segments that need it may be asked for.
    pub fn init_segment(&self, number: u32) -> Option<Bytes> {
        let found = self.inits.iter().find(|(n, _)| *n == number);
        found.map(|(_, bytes)| bytes.clone())
    }

    /// A finished segment still held.
    pub fn segment(&self, sequence: u64) -> Option<Arc<CmafSegment>> {
        self.segments
            .iter()
            .find(|s| s.sequence == sequence)
            .cloned()
    }

    /// Part `index` of segment `sequence`, finished or in the open segment.
    pub fn part(&self, sequence: u64, index: usize) -> Option<Arc<Part>> {
        match &self.open {
            Some(open) if open.sequence == sequence => open.parts.get(index).cloned(),
            _ => self.segment(sequence)?.parts.get(index).cloned(),
        }
    }

    /// Where the packager is: the segment being written and the parts it has finished
    /// (`None` before the first segment).
    pub fn position(&self) -> Option<(u64, usize)> {
        match (&self.open, self.segments.back()) {
            (Some(open), _) => Some((open.sequence, open.parts.len())),
            (None, Some(last)) => Some((last.sequence + 1, 0)),
            (None, None) => None,
        }
    }

    /// Whether segment `sequence` is finished, or with `part`, has that part. A part past
    /// the last of a finished segment stands for the next segment's first (RFC 8216bis: a
    /// player asks for the part after the last it has without knowing the segment ended).
    pub fn has(&self, sequence: u64, part: Option<usize>) -> bool {
        let Some((open, done)) = self.position() else {
            return false;
        };
        match part {
            None => sequence < open,
            Some(p) if sequence == open => p < done,
            Some(p) if sequence < open => match self.segment(sequence) {
                Some(segment) if p >= segment.parts.len() => self.has(sequence + 1, Some(0)),
                // The part exists, or the segment is too old to wait for anything.
                _ => true,
            },
            Some(_) => false,
        }
    }

    pub fn has_segments(&self) -> bool {
        !self.segments.is_empty()
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// EXT-X-TARGETDURATION (seconds).
    pub fn target_duration(&self) -> u64 {
        self.marked_target.max(1)
    }

    /// Finished segments still held, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Arc<CmafSegment>> {
        self.segments.iter()
    }

    /// The parts of the segment being written, and its number.
    pub fn open_parts(&self) -> Option<(u64, &[Arc<Part>])> {
        self.open.as_ref().map(|o| (o.sequence, &o.parts[..]))
    }

    /// Take the stream's next frame (a WHIP publisher's audio as the Opus it sent: see
    /// [`Frame::as_published`]).
    pub fn push(&mut self, frame: &Frame) {
        frame.as_published(|frame| self.push_one(frame));
    }

    fn push_one(&mut self, frame: &Frame) {
        if self.ended {
            return;
        }
        let before = self.position();
        match frame.kind {
            MediaKind::Metadata => {}
            MediaKind::Video | MediaKind::Audio if frame.sequence_header => self.header(frame),
            MediaKind::Video | MediaKind::Audio => self.media(frame),
        }
        // Whatever the playlist lists changes only with the position.
        if self.position() != before {
            self.rendered = [None, None];
        }
    }

    /// The stream ended: the open segment is finished.
    pub fn end(&mut self) {
        self.close_segment(None);
        self.ended = true;
        self.rendered = [None, None];
    }

    fn header(&mut self, frame: &Frame) {
        let slot = match frame.kind {
            MediaKind::Video => &mut self.video_header,
            _ => &mut self.audio_header,
        };
        if slot.as_ref().is_some_and(|h| h.payload == frame.payload) {
            return;
        }
        *slot = Some(Frame::new(
            frame.kind,
            frame.timestamp,
            frame.payload.clone(),
        ));
        // New parameters take a new init segment, from the next segment on.
        self.close_segment(None);
        self.headers_changed = true;
    }

    fn media(&mut self, frame: &Frame) {
        if let Some(mark) = frame.segment {
            self.begin_segment(mark, frame.timestamp);
        }
        let part_target = self.config.part_target.as_millis() as u64;
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let at = frame.timestamp.saturating_add_signed(open.offset);
        // A part ends at the first frame (of either track: audio's are close together) at
        // 85% of the part target or later, so that it lasts at most the part target and,
        // unless last in its segment, at least 85% of it, as RFC 8216bis asks.
        if at.saturating_sub(open.part_start_ms) * 100 >= part_target * 85 {
            Self::close_part(open, at);
            open.part_independent = frame.key && frame.kind == MediaKind::Video;
        }
        let shifted = Frame::new(frame.kind, at, frame.payload.clone());
        if let Some(fragment) = open.writer.push(&shifted) {
            open.part_data.extend_from_slice(&fragment);
        }
    }

    /// A marked frame at `start_ms` (this node's time): the open segment ends and segment
    /// `mark` begins.
    fn begin_segment(&mut self, mark: SegmentMark, start_ms: u64) {
        let offset = mark.timestamp as i64 - start_ms as i64;
        if mark.target_duration > 0 {
            self.marked_target = mark.target_duration;
        }
        self.close_segment(Some(mark.timestamp));
        let writer = Fmp4Writer::new(self.video_header.as_ref(), self.audio_header.as_ref());
        let Ok(writer) = writer else { return };
        if std::mem::take(&mut self.headers_changed) {
            let number = self.init.as_ref().map_or(0, |(n, _)| n + 1);
            self.init = Some((number, writer.init()));
            self.inits.push_back((number, writer.init()));
            if self.inits.len() > MAX_INITS {
                self.inits.pop_front();
            }
        }
        // Fragments numbered from the segment's own number: the same on every node.
        // (1024 numbers per segment: a part per 30 ms of a 30 s segment.)
        let sequence = (mark.sequence as u32).wrapping_mul(1024).wrapping_add(1);
        self.open = Some(OpenSegment {
            sequence: mark.sequence,
            discontinuity: mark.discontinuity,
            program_date_ms: mark.program_date_ms,
            start_ms: mark.timestamp,
            offset,
            writer: writer.with_time_origin(0).with_next_sequence(sequence),
            parts: Vec::new(),
            part_start_ms: mark.timestamp,
            part_independent: true,
            part_data: BytesMut::new(),
        });
    }

    /// The open part ends at `end_ms`.
    fn close_part(open: &mut OpenSegment, end_ms: u64) {
        if let Some(fragment) = open.writer.cut() {
            open.part_data.extend_from_slice(&fragment);
        }
        if open.part_data.is_empty() {
            return;
        }
        open.parts.push(Arc::new(Part {
            duration_ms: end_ms.saturating_sub(open.part_start_ms).max(1),
            independent: open.part_independent,
            data: open.part_data.split().freeze(),
        }));
        open.part_start_ms = end_ms;
    }

    /// Finish the open segment at `end_ms` (the next segment's start), or where its media
    /// ends when the stream stops or breaks.
    fn close_segment(&mut self, end_ms: Option<u64>) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        let end = end_ms.unwrap_or_else(|| {
            let written = open.writer.duration_ms();
            open.start_ms.max(written)
        });
        Self::close_part(&mut open, end);
        let Some((init, _)) = self.init else { return };
        let mut joined = BytesMut::with_capacity(open.parts.iter().map(|p| p.data.len()).sum());
        for part in &open.parts {
            joined.extend_from_slice(&part.data);
        }
        let data = joined.freeze();
        // The parts from now on share the segment's bytes instead of holding a copy.
        let mut at = 0;
        let parts = (open.parts.iter())
            .map(|part| {
                let len = part.data.len();
                at += len;
                Arc::new(Part {
                    duration_ms: part.duration_ms,
                    independent: part.independent,
                    data: data.slice(at - len..at),
                })
            })
            .collect();
        self.segments.push_back(Arc::new(CmafSegment {
            sequence: open.sequence,
            init,
            discontinuity: open.discontinuity,
            program_date_ms: open.program_date_ms,
            duration_ms: end.saturating_sub(open.start_ms).max(1),
            parts,
            data,
        }));
        while self.segments.len() > self.config.window + self.config.retain {
            self.segments.pop_front();
        }
    }
}

impl CmafPackager {
    /// The low-latency media playlist of the last `window` segments (RFC 8216bis), with the
    /// parts of the segments that end in its last three target durations and of the open segment,
    /// and a preload hint for the next part. With `skip`, a delta update: the segments
    /// older than its skip boundary are one EXT-X-SKIP. URIs are relative: `init{n}.mp4`,
    /// `{sequence}.m4s`, `{sequence}.{part}.m4s`.
    pub fn playlist(&mut self, skip: bool) -> Bytes {
        let slot = usize::from(skip);
        if let Some(text) = &self.rendered[slot] {
            return text.clone();
        }
        let text = Bytes::from(self.render(skip));
        self.rendered[slot] = Some(text.clone());
        text
    }

    fn render(&self, skip: bool) -> String {
        use std::fmt::Write;
        let target = self.marked_target.max(1);
        let part_target = self.config.part_target.as_secs_f64();
        let held: Vec<&Arc<CmafSegment>> = self.segments.iter().collect();
        let listed = &held[held.len().saturating_sub(self.config.window)..];
        let (first, first_discontinuity) = match (listed.first(), &self.open) {
            (Some(s), _) => (s.sequence, s.discontinuity),
            (None, Some(o)) => (o.sequence, o.discontinuity),
            (None, None) => (0, 0),
        };
        let mut out = String::with_capacity(4096);
        let skip_until = 6 * target;
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={skip_until}\n\
             #EXT-X-PART-INF:PART-TARGET={part_target:.3}\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{first_discontinuity}\n",
            3.0 * part_target
        );
        // Milliseconds from each listed segment's start to the end of the playlist.
        let open_ms: u64 = self
            .open
            .as_ref()
            .map_or(0, |o| o.parts.iter().map(|p| p.duration_ms).sum());
        let mut to_end_ms: u64 = open_ms + listed.iter().map(|s| s.duration_ms).sum::<u64>();
        let mut map = None;
        let mut skipped = 0;
        let mut discontinuity = first_discontinuity;
        for segment in listed {
            let start_to_end = to_end_ms;
            to_end_ms -= segment.duration_ms;
            if skip && start_to_end > skip_until * 1000 {
                // The first segment shown names its init segment again.
                skipped += 1;
                discontinuity = segment.discontinuity;
                continue;
            }
            if skipped > 0 {
                let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
                skipped = 0;
            }
            let head = SegmentHead {
                init: segment.init,
                discontinuity: segment.discontinuity,
                program_date_ms: segment.program_date_ms,
            };
            head.write(&mut out, &mut map, &mut discontinuity);
            // Parts for every segment that ends within three target durations of the end.
            if to_end_ms < 3 * target * 1000 {
                write_parts(&mut out, segment.sequence, &segment.parts);
            }
            let _ = write!(
                out,
                "#EXTINF:{:.3},\n{}.m4s\n",
                segment.duration_ms as f64 / 1000.0,
                segment.sequence
            );
        }
        if let (Some(open), Some((init, _))) = (&self.open, &self.init) {
            let head = SegmentHead {
                init: *init,
                discontinuity: open.discontinuity,
                program_date_ms: open.program_date_ms,
            };
            head.write(&mut out, &mut map, &mut discontinuity);
            write_parts(&mut out, open.sequence, &open.parts);
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}.{}.m4s\"",
                open.sequence,
                open.parts.len()
            );
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// What a playlist says ahead of a segment's parts and EXTINF.
struct SegmentHead {
    init: u32,
    discontinuity: u64,
    program_date_ms: u64,
}

impl SegmentHead {
    /// EXT-X-DISCONTINUITY when it starts a new discontinuity, EXT-X-MAP when it needs
    /// another init segment than the segment before (`map`), and its program date.
    fn write(&self, out: &mut String, map: &mut Option<u32>, discontinuity: &mut u64) {
        use std::fmt::Write;
        if self.discontinuity != *discontinuity {
            *discontinuity = self.discontinuity;
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if *map != Some(self.init) {
            *map = Some(self.init);
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"init{}.mp4\"", self.init);
        }
        if self.program_date_ms > 0 {
            let date = crate::calendar::rfc3339_millis(self.program_date_ms);
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{date}");
        }
    }
}

/// `playlist` with `query` added to every URI it lists (segments, parts, init segments,
/// the preload hint): a player's token, which relative URIs would not carry.
pub fn with_query(playlist: &[u8], query: &str) -> String {
    let text = String::from_utf8_lossy(playlist);
    let mut out = String::with_capacity(text.len() + 64 * query.len());
    let join = |uri: &str| if uri.contains('?') { '&' } else { '?' };
    for line in text.lines().filter(|l| !l.is_empty()) {
        match line.split_once("URI=\"") {
            // A URI line: a segment's.
            _ if !line.starts_with('#') => {
                out.push_str(&format!("{line}{}{query}", join(line)));
            }
            // A tag with a URI attribute: a part, the init segment, the preload hint.
            Some((head, rest)) => {
                let (uri, tail) = rest.split_once('"').unwrap_or((rest, ""));
                out.push_str(&format!("{head}URI=\"{uri}{}{query}\"{tail}", join(uri)));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn write_parts(out: &mut String, sequence: u64, parts: &[Arc<Part>]) {
    use std::fmt::Write;
    for (i, part) in parts.iter().enumerate() {
        let independent = if part.independent {
            ",INDEPENDENT=YES"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={:.3},URI=\"{sequence}.{i}.m4s\"{independent}",
            part.duration_ms as f64 / 1000.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_payloads::{araw, aseq, vinter, vkey, vseq};

    fn mark(sequence: u64, timestamp: u64) -> SegmentMark {
        SegmentMark {
            sequence,
            discontinuity: 0,
            timestamp,
            target_duration: 2,
            program_date_ms: DATE_0 + timestamp,
        }
    }

    /// The program date of timestamp 0: 2023-11-14T22:13:20Z.
    const DATE_0: u64 = 1_700_000_000_000;

    /// 25 fps video with a keyframe every second and a mark on each, audio every 23 ms;
    /// timestamps on this node's clock, `offset` behind the marking node's.
    fn stream(from_s: u64, to_s: u64, offset: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        for ms in (from_s * 1000..to_s * 1000).step_by(40) {
            let key = ms % 1000 == 0;
            let payload = if key {
                vkey((ms / 40) as u8)
            } else {
                vinter((ms / 40) as u8)
            };
            let mut f = Frame::new(MediaKind::Video, ms - offset, payload);
            if key {
                f.segment = Some(mark(ms / 1000, ms));
            }
            frames.push(f);
            for a in (ms..ms + 40).filter(|a| a % 23 == 0) {
                frames.push(Frame::new(MediaKind::Audio, a - offset, araw(a as u8)));
            }
        }
        frames
    }

    fn headers() -> [Frame; 2] {
        [
            Frame::new(MediaKind::Video, 0, vseq(1)),
            Frame::new(MediaKind::Audio, 0, aseq(2)),
        ]
    }

    fn packaged(frames: &[Frame]) -> CmafPackager {
        let config = CmafConfig {
            window: 10,
            ..CmafConfig::default()
        };
        packaged_with(config, frames)
    }

    fn packaged_with(config: CmafConfig, frames: &[Frame]) -> CmafPackager {
        let mut p = CmafPackager::new(config);
        for f in headers().iter().chain(frames) {
            p.push(f);
        }
        p
    }

    #[test]
    fn segments_are_cut_at_marks_and_parts_at_the_part_target() {
        let p = packaged(&stream(0, 4, 0));
        let segments: Vec<&Arc<CmafSegment>> = p.segments().collect();
        assert_eq!(
            segments.iter().map(|s| s.sequence).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        for s in &segments {
            assert_eq!(s.duration_ms, 1000);
            let durations: Vec<u64> = s.parts.iter().map(|p| p.duration_ms).collect();
            assert_eq!(durations.iter().sum::<u64>(), 1000, "{durations:?}");
            assert!(durations.iter().all(|&d| d <= 333), "{durations:?}");
            let (_, but_last) = durations.split_last().unwrap();
            assert!(
                but_last.iter().all(|&d| d * 100 >= 333 * 85),
                "{durations:?}"
            );
            let independent: Vec<bool> = s.parts.iter().map(|p| p.independent).collect();
            assert_eq!(independent, [true, false, false, false], "{durations:?}");
        }
        let (open, parts) = p.open_parts().unwrap();
        assert_eq!(open, 3);
        assert_eq!(parts.len(), 3);
    }

    /// An edge that starts two seconds late, with a clock 5 s behind the origin's, writes
    /// the segments both have as the same bytes.
    #[test]
    fn a_late_node_on_another_clock_writes_the_same_bytes() {
        let origin = packaged(&stream(0, 5, 0));
        let edge = packaged(&stream(2, 5, 0));
        let shifted: Vec<Frame> = stream(2, 5, 0)
            .into_iter()
            .map(|f| {
                let mut g = Frame::new(f.kind, f.timestamp + 5_000, f.payload.clone());
                g.segment = f.segment;
                g
            })
            .collect();
        let other_clock = packaged(&shifted);
        for node in [&edge, &other_clock] {
            for s in node.segments() {
                let same = origin
                    .segments()
                    .find(|o| o.sequence == s.sequence)
                    .unwrap();
                assert_eq!(s.data, same.data, "segment {}", s.sequence);
            }
            assert_eq!(node.segments().count(), 2);
        }
    }

    /// The playlist of a live stream: the LL-HLS tags, parts only near the live edge, a
    /// preload hint for the next part, and a delta update that skips the old segments.
    #[test]
    fn the_playlist_lists_parts_near_the_live_edge() {
        let mut p = packaged(&stream(0, 12, 0));
        let text = String::from_utf8(p.playlist(false).to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["#EXTM3U", "#EXT-X-VERSION:9"]);
        for tag in [
            "#EXT-X-TARGETDURATION:2",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.999,CAN-SKIP-UNTIL=12",
            "#EXT-X-PART-INF:PART-TARGET=0.333",
            "#EXT-X-MEDIA-SEQUENCE:1",
            "#EXT-X-DISCONTINUITY-SEQUENCE:0",
            "#EXT-X-MAP:URI=\"init0.mp4\"",
            // Segment 1 starts at 1 s.
            "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:21.000Z",
            // The open segment 11 at 11 s.
            "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:31.000Z",
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"11.3.m4s\"",
        ] {
            assert!(lines.contains(&tag), "{tag} missing from\n{text}");
        }
        let segments: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.ends_with(".m4s") && !l.starts_with('#'))
            .collect();
        assert_eq!(segments.len(), 10, "{text}");
        // Parts of the segments that end in the last three target durations (6 s: segments
        // 5..=10) and of the open one.
        let parted: std::collections::BTreeSet<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
            .filter_map(|l| l.split("URI=\"").nth(1)?.split('.').next())
            .collect();
        assert_eq!(
            parted.into_iter().collect::<Vec<_>>(),
            ["10", "11", "5", "6", "7", "8", "9"],
            "{text}"
        );
        // Nothing is older than the skip boundary (6 target durations) yet.
        assert_eq!(p.playlist(true), text.as_bytes());
        // 20 segments of 1 s and the open one: the 9 that start more than 12 s before the
        // end are skipped.
        let config = CmafConfig {
            window: 20,
            ..CmafConfig::default()
        };
        let mut long = packaged_with(config, &stream(0, 25, 0));
        let delta = String::from_utf8(long.playlist(true).to_vec()).unwrap();
        assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:4\n"), "{delta}");
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=9\n"),
            "{delta}"
        );
        assert!(
            !delta.contains("\n12.m4s\n") && delta.contains("\n13.m4s\n"),
            "{delta}"
        );
        // After the skip, the first segment shown names its init segment again.
        let after_skip = delta.split("#EXT-X-SKIP").nth(1).unwrap();
        assert!(
            after_skip.starts_with(":SKIPPED-SEGMENTS=9\n#EXT-X-MAP:URI=\"init0.mp4\"\n"),
            "{delta}"
        );
    }

    #[test]
    fn a_part_past_a_finished_segment_is_the_next_segments_first() {
        // Segments 0 and 1 finished (4 parts each), segment 2 open with 3 parts.
        let mut p = packaged(&stream(0, 3, 0));
        assert!(p.has(1, Some(3)) && p.has(1, Some(4)) && p.has(1, None));
        assert!(p.has(2, Some(2)) && !p.has(2, Some(3)) && !p.has(2, None));
        assert!(p.has(0, Some(9)), "segment 1 has its first part");
        assert!(p.has(0, Some(0)) && p.has(0, None), "old enough");
        // Segment 2 ends without a first part of segment 3 yet: its part 4 is not there.
        for f in stream(3, 4, 0).iter().take_while(|f| f.segment.is_none()) {
            p.push(f);
        }
        let open = p.position().unwrap();
        assert_eq!(open.0, 2);
        assert!(!p.has(2, Some(open.1)));
    }

    /// Enhanced-RTMP codecs package as the writer writes them: HEVC (`hvc1`) and AV1
    /// video, Opus audio, in segments and parts.
    #[test]
    fn hevc_av1_and_opus_are_packaged() {
        use crate::fmp4::tests::{av1_header, ex_audio, ex_video, hevc_header, opus_header};
        // HEVC coded frames without a composition offset (packet type 3): one NAL unit,
        // IDR (type 19) or trailing (type 1); AV1 temporal units of one frame OBU.
        let hevc = |key: bool, n: u8| {
            let nal = if key {
                [0x26, 0x01, n]
            } else {
                [0x02, 0x01, n]
            };
            let mut body = vec![0, 0, 0, 3];
            body.extend_from_slice(&nal);
            ex_video(key, 3, b"hvc1", &body)
        };
        let av1 = |key: bool, n: u8| ex_video(key, 1, b"av01", &[0x32, 0x02, n, n]);
        for (header, frame, entry) in [
            (
                hevc_header(),
                &hevc as &dyn Fn(bool, u8) -> Bytes,
                &b"hvcC"[..],
            ),
            (av1_header(), &av1, &b"av1C"[..]),
        ] {
            let mut p = packaged_with(CmafConfig::default(), &[]);
            p.push(&header);
            p.push(&opus_header());
            for ms in (0..3000u64).step_by(40) {
                let key = ms % 1000 == 0;
                let mut f = Frame::new(MediaKind::Video, ms, frame(key, (ms / 40) as u8));
                f.segment = key.then(|| mark(ms / 1000, ms));
                p.push(&f);
                let opus = ex_audio(1, b"Opus", &[0xFC, (ms / 20) as u8]);
                p.push(&Frame::new(MediaKind::Audio, ms, opus));
            }
            let (number, init) = p.init().unwrap();
            let has = |needle: &[u8]| init.windows(needle.len()).any(|w| w == needle);
            assert!(has(entry) && has(b"Opus") && has(b"dOps"), "init {number}");
            assert_eq!(p.segments().count(), 2);
            for s in p.segments() {
                assert_eq!(s.parts.len(), 4);
                assert!(s.parts[0].independent);
                assert!(s.data.windows(4).any(|w| w == b"mdat"));
            }
        }
    }

    /// A WHIP publisher's AAC (transcoded at ingest) carries the Opus it was made from:
    /// the packager writes the Opus, with its own times, and none of the AAC.
    #[test]
    fn a_whip_publishers_opus_is_packaged_instead_of_its_aac() {
        use crate::fmp4::tests::{ex_audio, opus_header};
        use crate::frame::PublishedOpus;
        let mut p = CmafPackager::new(CmafConfig::default());
        p.push(&Frame::new(MediaKind::Video, 0, vseq(1)));
        let mut aac_header = Frame::new(MediaKind::Audio, 0, aseq(2));
        aac_header.published_opus = Some(Arc::new(PublishedOpus::Header(
            opus_header().payload.clone(),
        )));
        p.push(&aac_header);
        let mut opus_sent = 0;
        for frame in stream(0, 3, 0) {
            if frame.kind == MediaKind::Video {
                p.push(&frame);
                continue;
            }
            // Each AAC frame with the Opus packet that begins in it, 5 ms earlier.
            let mut aac = Frame::new(MediaKind::Audio, frame.timestamp, frame.payload.clone());
            let packet = ex_audio(1, b"Opus", &[0xFC, 0xEE, opus_sent as u8]);
            aac.published_opus = Some(Arc::new(PublishedOpus::Packets(vec![(-5, packet)])));
            p.push(&aac);
            opus_sent += 1;
        }
        let (_, init) = p.init().unwrap();
        let has = |data: &[u8], needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
        assert!(has(&init, b"Opus") && has(&init, b"dOps"));
        assert!(!has(&init, b"mp4a"));
        let media: Vec<u8> = p.segments().flat_map(|s| s.data.to_vec()).collect();
        // Every Opus packet of the finished segments, and no AAC frame (araw's 0x21).
        assert!(has(&media, &[0xFC, 0xEE, 0]) && has(&media, &[0xFC, 0xEE, 40]));
        assert!(!has(&media, &[0x21, 23]));
    }

    #[test]
    fn a_query_is_added_to_every_uri() {
        let mut p = packaged(&stream(0, 3, 0));
        let text = with_query(&p.playlist(false), "token=1.x");
        let uris: Vec<&str> = text
            .lines()
            .filter_map(|l| match l.split_once("URI=\"") {
                Some((_, rest)) => rest.split('"').next(),
                None => (!l.starts_with('#')).then_some(l),
            })
            .collect();
        assert!(uris.len() > 10, "{text}");
        assert!(uris.iter().all(|u| u.ends_with("?token=1.x")), "{text}");
        assert!(
            text.contains("#EXT-X-MAP:URI=\"init0.mp4?token=1.x\"\n"),
            "{text}"
        );
        assert!(text.contains(",INDEPENDENT=YES\n"), "{text}");
    }

    /// The text is rendered once per change: until a part closes, every request gets the
    /// same bytes (the same allocation, even).
    #[test]
    fn the_playlist_is_rendered_once_per_part() {
        let frames = stream(0, 3, 0);
        let mut p = packaged(&frames[..frames.len() - 1]);
        let a = p.playlist(false);
        let b = p.playlist(false);
        assert_eq!(a.as_ptr(), b.as_ptr());
        // The last frame closes no part: still the same.
        p.push(&frames[frames.len() - 1]);
        assert_eq!(p.playlist(false).as_ptr(), a.as_ptr());
        // A part closes: new text.
        for f in stream(3, 4, 0) {
            p.push(&f);
        }
        assert_ne!(p.playlist(false), a);
        p.end();
        assert!(p.playlist(false).ends_with(b"#EXT-X-ENDLIST\n"));
    }

    /// A new publisher (a discontinuity) with other codec parameters (a new init segment):
    /// the playlist says both where the segments change.
    #[test]
    fn a_discontinuity_and_a_new_init_segment_are_announced() {
        let mut frames = stream(0, 3, 0);
        let mut later: Vec<Frame> = stream(3, 6, 0);
        for f in later.iter_mut() {
            if let Some(m) = f.segment.as_mut() {
                m.discontinuity = 1;
            }
        }
        frames.push(Frame::new(MediaKind::Video, 3000, vseq(9)));
        frames.extend(later);
        let mut p = packaged(&frames);
        let text = String::from_utf8(p.playlist(false).to_vec()).unwrap();
        let segment_3 = text.find("\n3.m4s\n").unwrap();
        let head_of_3 = &text[text.find("\n2.m4s\n").unwrap()..segment_3];
        assert!(
            head_of_3.starts_with(
                "\n2.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init1.mp4\"\n\
                 #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:23.000Z\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"), "{text}");
        assert!(p.init_segment(0).is_some() && p.init_segment(1).is_some());
    }
}
