//! A WebRTC publisher's media as the hub's FLV tag bodies, and when to ask it for a
//! keyframe. Plain data in, plain data out: the session task feeds what str0m gives (H.264
//! access units in Annex B, Opus packets, each with its RTP time and when it arrived) and
//! pushes what comes out.
//!
//! - **Timeline.** Both tracks go on one clock in milliseconds from the session's first
//!   packet: each track's first packet is placed where it arrived, and from there its own
//!   RTP clock (90 kHz video, 48 kHz audio) counts, and each track's times never go back.
//!   Arrival is only near capture (encoding and pacing delay each track differently), so
//!   once both tracks' RTCP sender reports have come (which tie each RTP clock to the
//!   sender's one wall clock), the track placed early is moved forward by the difference,
//!   once: a skip between two pictures, or a moment of concealed audio, never time going
//!   back.
//! - **Video.** H.264 becomes an AVC sequence header built from the in-band SPS and PPS
//!   (again whenever they change), then AVCC pictures, keyframes flagged, composition time
//!   0 ([`VideoTagBuilder`], as for an RTSP publisher).
//! - **Audio.** Opus is transcoded to AAC-LC once here ([`OpusToAac`]) for FLV, RTMP and
//!   MPEG-TS: an AAC sequence header, then raw AAC frames. Each carries the Opus it was made
//!   from ([`PublishedOpus`]: the Opus sequence header on the AAC one, and on each AAC frame
//!   the packets whose time falls in its 1024 samples), which fMP4 and WebRTC carry
//!   instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use audio::opus_to_aac::OpusToAac;
use bytes::Bytes;
use media::codec::avc::annexb_nal_units;
use media::frame::{MediaKind, PublishedOpus};
use media::rtp::depacketize::{AccessUnit, NalFormat};
use media::rtp::flv::{AudioTagBuilder, VideoTagBuilder};

/// One tag body for the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag {
    pub kind: MediaKind,
    pub ms: u64,
    pub body: Bytes,
    /// On AAC: the publisher's Opus it was made from.
    pub published_opus: Option<Arc<PublishedOpus>>,
}

/// How long the first tags wait for the other track to begin (a publisher without one of
/// them is let through after this).
const HOLD_AT_START: u64 = 500;
/// Tags held at most, whatever the times say (a publisher's RTP times are its own).
const MAX_HELD: usize = 256;

/// An AAC frame's span, 1024 samples at 48 kHz, in thirds of a millisecond (64/3 ms).
const AAC_FRAME_THIRDS_MS: u64 = 64;
/// Opus packets kept for AAC frames yet to come: the transcoder's look-ahead is a few
/// frames, so more means it made none for them (packets it could not decode), and the
/// oldest go.
const MAX_OPUS_WAITING: usize = 50;

/// H.264's NAL unit type of an access unit delimiter, which FLV does not carry (the
/// MPEG-TS muxer writes its own).
const AUD: u8 = 9;

/// An RTCP sender report: the sender's wall clock at one RTP time of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SenderReport {
    /// The RTP time, as on the wire (32 bits).
    pub rtp: u32,
    /// The wall clock (NTP), in ms since the Unix epoch.
    pub unix_ms: i64,
}

/// Sender reports that put the tracks further apart than this are not believed (a sender
/// whose tracks' clocks are not one).
const MAX_ALIGNMENT: i64 = 1000;

/// One track's RTP clock placed on the session's timeline.
#[derive(Debug)]
struct TrackClock {
    rate: u64,
    /// The first packet's RTP time and where it was placed (ms).
    first: Option<(u64, u64)>,
    /// Added to the placement by the alignment of the tracks.
    shift: u64,
    last_ms: u64,
    /// Where this track is placed minus the sender's wall clock (ms), from its first
    /// sender report.
    offset: Option<i64>,
}

impl TrackClock {
    fn new(rate: u64) -> Self {
        TrackClock {
            rate,
            first: None,
            shift: 0,
            last_ms: 0,
            offset: None,
        }
    }

    /// `rtp` (str0m's RTP time, its 32-bit wrap undone) in ms on the timeline; `arrived_ms`
    /// places the track's first packet; `report` is the track's latest sender report.
    fn ms(&mut self, rtp: u64, arrived_ms: u64, report: Option<SenderReport>) -> u64 {
        let (first_rtp, first_ms) = *self.first.get_or_insert((rtp, arrived_ms));
        // A packet from before the first (reordered) is shown with it.
        let elapsed = rtp.saturating_sub(first_rtp).saturating_mul(1000) / self.rate;
        let placed = first_ms.saturating_add(self.shift).saturating_add(elapsed);
        if let (None, Some(report)) = (self.offset, report) {
            // Ticks from the report to this packet, across the 32-bit wrap.
            let ticks = i64::from((rtp as u32).wrapping_sub(report.rtp) as i32);
            let wall = report.unix_ms + ticks * 1000 / self.rate as i64;
            self.offset = Some(placed as i64 - wall);
        }
        let ms = placed.max(self.last_ms);
        self.last_ms = ms;
        ms
    }
}

/// Move the track placed early (relative to the other, by their sender reports) forward,
/// once both have reports: by how much audio was placed late (negative: early), or `None`
/// before both have reports.
fn align(video: &mut TrackClock, audio: &mut TrackClock) -> Option<i64> {
    let (Some(video_offset), Some(audio_offset)) = (video.offset, audio.offset) else {
        return None;
    };
    let late = audio_offset - video_offset;
    if late.abs() <= MAX_ALIGNMENT {
        let track = if late > 0 { video } else { audio };
        track.shift += late.unsigned_abs();
    }
    Some(late)
}

/// A publisher's two tracks into tag bodies.
pub(crate) struct IngestTags {
    /// The arrival of the session's first packet: the timeline's zero.
    epoch: Option<Instant>,
    video_clock: TrackClock,
    audio_clock: TrackClock,
    video: VideoTagBuilder,
    audio: OpusToAac,
    audio_header_sent: bool,
    /// Tags held at the start until both tracks have begun (at most [`HOLD_AT_START`]),
    /// so that the hub has both sequence headers before any media: the first HLS init
    /// segment, the first recorded file and every player then have both tracks. `None`
    /// once they went.
    held: Option<Vec<Tag>>,
    /// The publisher's Opus packets (as tag bodies) not yet given to an AAC frame, with
    /// their times.
    opus_waiting: Vec<(u64, Bytes)>,
    /// How much audio was placed late, once the tracks are aligned by their sender
    /// reports (not moved when more than [`MAX_ALIGNMENT`]).
    pub aligned: Option<i64>,
}

impl IngestTags {
    pub fn new() -> Self {
        IngestTags {
            epoch: None,
            video_clock: TrackClock::new(90_000),
            audio_clock: TrackClock::new(48_000),
            video: VideoTagBuilder::new(NalFormat::H264, &[]),
            audio: OpusToAac::new(),
            audio_header_sent: false,
            held: Some(Vec::new()),
            opus_waiting: Vec::new(),
            aligned: None,
        }
    }

    fn arrived_ms(&mut self, arrived: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(arrived);
        arrived.saturating_duration_since(epoch).as_millis() as u64
    }

    /// Align the tracks once their reports allow (applies from the next packet on).
    fn align(&mut self) {
        if self.aligned.is_none() {
            self.aligned = align(&mut self.video_clock, &mut self.audio_clock);
        }
    }

    /// One H.264 access unit (Annex B) at `rtp` on the 90 kHz clock (with the track's
    /// latest sender report): a sequence header if
    /// its parameter sets are new, then the picture (none before parameter sets came).
    pub fn video(
        &mut self,
        annexb: &[u8],
        (rtp, report): (u64, Option<SenderReport>),
        arrived: Instant,
    ) -> Vec<Tag> {
        let arrived_ms = self.arrived_ms(arrived);
        let ms = self.video_clock.ms(rtp, arrived_ms, report);
        self.align();
        let mut nal_units = annexb_nal_units(&Bytes::copy_from_slice(annexb));
        nal_units.retain(|nal| nal.first().is_some_and(|b| b & 0x1F != AUD));
        let unit = AccessUnit {
            timestamp_ms: ms,
            nal_units,
        };
        let tags = (self.video.push(&unit).into_iter())
            .map(|body| Tag {
                kind: MediaKind::Video,
                ms,
                body,
                published_opus: None,
            })
            .collect();
        self.hold_at_start(tags, ms)
    }

    /// `tags` now (made at `ms`), or held with those before them until both tracks have
    /// begun or [`HOLD_AT_START`] passed; then all of them, each track's sequence header
    /// ahead of any media.
    fn hold_at_start(&mut self, tags: Vec<Tag>, ms: u64) -> Vec<Tag> {
        let Some(held) = &mut self.held else {
            return tags;
        };
        held.extend(tags);
        let began = |kind| held.iter().any(|tag| tag.kind == kind);
        let both = began(MediaKind::Video) && began(MediaKind::Audio);
        let waited = held
            .first()
            .is_some_and(|first| ms >= first.ms.saturating_add(HOLD_AT_START));
        if !both && !waited && held.len() < MAX_HELD {
            return Vec::new();
        }
        // Each track's first tag (its sequence header) ahead; the rest as they came.
        let mut seen = (false, false);
        let mut held: Vec<(bool, Tag)> = (self.held.take().unwrap_or_default().into_iter())
            .map(|tag| {
                let seen = match tag.kind {
                    MediaKind::Video => &mut seen.0,
                    _ => &mut seen.1,
                };
                (std::mem::replace(seen, true), tag)
            })
            .collect();
        held.sort_by_key(|(later, _)| *later);
        held.into_iter().map(|(_, tag)| tag).collect()
    }

    /// One Opus packet at `rtp` on the 48 kHz clock (with the track's latest sender
    /// report): the AAC frames it completes (the
    /// first after the AAC sequence header).
    pub fn audio(
        &mut self,
        packet: &[u8],
        (rtp, report): (u64, Option<SenderReport>),
        arrived: Instant,
    ) -> Vec<Tag> {
        let arrived_ms = self.arrived_ms(arrived);
        let ms = self.audio_clock.ms(rtp, arrived_ms, report);
        self.align();
        let frames = self.audio.push(packet, ms);
        let mut tags = Vec::with_capacity(frames.len() + 1);
        let (Some(config), Some(channels)) =
            (self.audio.audio_specific_config(), self.audio.channels())
        else {
            return tags;
        };
        let opus = AudioTagBuilder::Opus { channels };
        if self.opus_waiting.len() == MAX_OPUS_WAITING {
            self.opus_waiting.remove(0);
        }
        self.opus_waiting.push((ms, opus.frame(packet)));
        let aac = AudioTagBuilder::Aac {
            config: config.into(),
        };
        // The sequence header as soon as the channels are known (the first AAC frame
        // comes later, by the transcoder's look-ahead).
        if !self.audio_header_sent {
            self.audio_header_sent = true;
            tags.push(Tag {
                kind: MediaKind::Audio,
                ms,
                body: aac.sequence_header(),
                published_opus: Some(Arc::new(PublishedOpus::Header(opus.sequence_header()))),
            });
        }
        for frame in frames {
            // The packets that begin before this frame ends.
            let ends = frame
                .ms
                .saturating_mul(3)
                .saturating_add(AAC_FRAME_THIRDS_MS);
            let taken = self
                .opus_waiting
                .partition_point(|(at, _)| at.saturating_mul(3) < ends);
            let packets = (self.opus_waiting.drain(..taken))
                .map(|(at, body)| ((at as i64).saturating_sub(frame.ms as i64), body))
                .collect();
            tags.push(Tag {
                kind: MediaKind::Audio,
                ms: frame.ms,
                body: aac.frame(&frame.data),
                published_opus: Some(Arc::new(PublishedOpus::Packets(packets))),
            });
        }
        self.hold_at_start(tags, ms)
    }
}

/// How often a publisher is asked for a keyframe once the stream has one: browsers send
/// keyframes only when asked, and the GOP cache (what a new viewer starts with) and HLS
/// segments (cut at keyframes) are as long as the gaps between them.
pub(crate) const KEYFRAME_EVERY: Duration = Duration::from_secs(2);
/// How often while the stream has no keyframe yet (a request or its answer may be lost).
pub(crate) const KEYFRAME_RETRY: Duration = Duration::from_millis(500);

/// When to ask the publisher for a keyframe (a PLI).
#[derive(Debug, Default)]
pub(crate) struct KeyframeAsks {
    last_asked: Option<Instant>,
    /// When the last keyframe came, if one did.
    last_keyframe: Option<Instant>,
}

impl KeyframeAsks {
    /// A keyframe came.
    pub fn keyframe(&mut self, now: Instant) {
        self.last_keyframe = Some(now);
    }

    /// Packets of a picture were lost: what follows may not decode until a keyframe, so
    /// ask as when the stream has none.
    pub fn broken(&mut self) {
        self.last_keyframe = None;
    }

    /// Whether to ask now; if so, asking is noted.
    pub fn due(&mut self, now: Instant) -> bool {
        let every = match self.last_keyframe {
            Some(_) => KEYFRAME_EVERY,
            None => KEYFRAME_RETRY,
        };
        // The last keyframe counts as an answer: a publisher that sends them on its own
        // often enough is not asked.
        let since = self.last_asked.max(self.last_keyframe);
        let due = since.is_none_or(|since| now.duration_since(since) >= every);
        if due {
            self.last_asked = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests;
