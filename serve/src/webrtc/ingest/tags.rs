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
//! - **Audio.** Opus is transcoded to AAC-LC once here ([`OpusToAac`]), so every player and
//!   recording of the stream gets AAC: an AAC sequence header, then raw AAC frames.

use std::time::{Duration, Instant};

use audio::opus_to_aac::OpusToAac;
use bytes::Bytes;
use media::codec::avc::annexb_nal_units;
use media::frame::MediaKind;
use media::rtp::depacketize::{AccessUnit, NalFormat};
use media::rtp::flv::{AudioTagBuilder, VideoTagBuilder};

/// One tag body for the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag {
    pub kind: MediaKind,
    pub ms: u64,
    pub body: Bytes,
}

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
        (self.video.push(&unit).into_iter())
            .map(|body| Tag {
                kind: MediaKind::Video,
                ms,
                body,
            })
            .collect()
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
        let Some(config) = self.audio.audio_specific_config() else {
            return tags;
        };
        let builder = AudioTagBuilder::Aac {
            config: config.into(),
        };
        for frame in frames {
            if !self.audio_header_sent {
                self.audio_header_sent = true;
                tags.push(Tag {
                    kind: MediaKind::Audio,
                    ms: frame.ms,
                    body: builder.sequence_header(),
                });
            }
            tags.push(Tag {
                kind: MediaKind::Audio,
                ms: frame.ms,
                body: builder.frame(&frame.data),
            });
        }
        tags
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
