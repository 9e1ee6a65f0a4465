//! Fragmented MP4 (ISO/IEC 14496-12 movie fragments) from a stream's frames: what the
//! recorder writes to MP4 files and what CMAF/low-latency HLS serves.
//!
//! Sans-IO: [`Fmp4Writer::init`] gives the `ftyp` + `moov` a file or a CMAF init segment
//! starts with; [`Fmp4Writer::push`] takes frames and hands back each fragment (`moof` +
//! `mdat`) once it is complete; [`Fmp4Writer::finish`] gives the last fragment and an `mfra`
//! index. Written in that order, the bytes are a file that plays at any moment while it grows,
//! and a file cut off anywhere loses at most the fragment being written.
//!
//! Time: video runs on a 90 kHz clock, audio on its sample rate (Opus: 48 kHz). The first
//! frame written is time 0 and both tracks keep their offset to each other. A sample lasts
//! until the next sample of its track, so each sample is held back until the next arrives.
//!
//! Files: `boxes` writes boxes, `entry` turns sequence headers into tracks and sample
//! entries, `stream` is a continuous fMP4 for a player ([`Fmp4Stream`]), [`read`] reads back
//! what a listing of recordings needs.

mod boxes;
mod entry;
pub mod read;
mod stream;
#[cfg(test)]
pub(crate) mod tests;

use bytes::{BufMut, Bytes};

use crate::codec::av1::OBU_TEMPORAL_DELIMITER;
use crate::codec::{
    av1_obus, av1_sequence_resolution, parse_audio_tag, parse_video_tag, vp9_frame_resolution,
    CodecError, VideoFrameKind, VideoPacketKind,
};
use crate::frame::{Frame, MediaKind};
use boxes::{boxed, full_box, mdat_header, put_unity_matrix, LANGUAGE_UND};
use entry::{Codec, TrackConfig};
pub use stream::Fmp4Stream;

/// Why a writer could not be made from a stream's sequence headers.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Fmp4Error {
    #[error("no track: neither a video nor an audio sequence header was given")]
    NoTracks,
    #[error("the {0} header frame is not a sequence header")]
    NotSequenceHeader(&'static str),
    #[error("unsupported {kind} codec {codec}")]
    UnsupportedCodec { kind: &'static str, codec: String },
    #[error("{codec} configuration record: {error}")]
    Config {
        codec: &'static str,
        error: CodecError,
    },
}

/// A fragment closes once it holds this much media (or before a video keyframe).
const FRAGMENT_MS: u64 = 1000;
/// ... or this many samples or bytes, whatever the timestamps say: a stream whose clock
/// stands still must not grow a fragment without bound.
const MAX_FRAGMENT_SAMPLES: usize = 2048;
const MAX_FRAGMENT_BYTES: usize = 32 << 20;
/// Random access points indexed per track in the `mfra` (more than 12 days of 1 s
/// fragments); later fragments are still written, just not indexed.
const MAX_RANDOM_ACCESS: usize = 1 << 20;

/// Sample flags (ISO/IEC 14496-12 8.8.3.1): a sync sample depends on no other
/// (sample_depends_on 2); any other sample depends on others (1) and is not a sync sample.
const SYNC_SAMPLE: u32 = 0x0200_0000;
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// tfhd: data offsets count from the start of the moof.
const DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// trun: which optional fields are present.
const TRUN_DATA_OFFSET: u32 = 0x000001;
const TRUN_DURATION: u32 = 0x000100;
const TRUN_SIZE: u32 = 0x000200;
const TRUN_FLAGS: u32 = 0x000400;
const TRUN_COMPOSITION_OFFSET: u32 = 0x000800;

#[derive(Debug, Clone)]
struct Sample {
    /// Decode time in the track's timescale.
    dts: u64,
    duration: u32,
    /// Composition (presentation) time minus decode time.
    composition_offset: i32,
    sync: bool,
    data: Bytes,
}

/// An `mfra` entry: where a fragment's first sync sample of a track is.
#[derive(Debug, Clone, Copy)]
struct RandomAccess {
    /// Presentation time of the sample, in the track's timescale.
    time: u64,
    moof_offset: u64,
    /// 1-based position of the track's traf in the moof, and of the sample in its trun.
    traf: u32,
    sample: u32,
}

#[derive(Debug)]
struct Track {
    id: u32,
    config: TrackConfig,
    /// The latest sample, waiting for the next one to say how long it lasts.
    pending: Option<Sample>,
    /// Finished samples of the open fragment, with their total size and duration.
    samples: Vec<Sample>,
    bytes: usize,
    span: u64,
    /// Decode time of the last sample taken, and the earliest the next may have.
    last_dts: Option<u64>,
    min_next: u64,
    last_duration: Option<u32>,
    /// End of the last sample written out in a fragment.
    written_end: u64,
    random_access: Vec<RandomAccess>,
}

impl Track {
    fn new(id: u32, config: TrackConfig) -> Track {
        Track {
            id,
            config,
            pending: None,
            samples: Vec::new(),
            bytes: 0,
            span: 0,
            last_dts: None,
            min_next: 0,
            last_duration: None,
            written_end: 0,
            random_access: Vec::new(),
        }
    }

    /// The decode time of a sample whose timestamp says `t`.
    fn decode_time(&self, t: u64) -> u64 {
        let mut dts = t;
        // Codecs with a fixed frame length (AAC) count frames while the timestamps agree
        // within half a frame, so that millisecond rounding does not make durations jitter;
        // a real gap or jump is followed.
        if let (Some(last), Some(frame)) = (self.last_dts, self.config.frame_duration()) {
            let expected = last.saturating_add(u64::from(frame));
            if t.abs_diff(expected) <= u64::from(frame / 2) {
                dts = expected;
            }
        }
        // Only forward. A sample's duration must fit 32 bits, so a jump of more than that
        // (over 13 hours of video) is shortened.
        let dts = dts.max(self.min_next);
        match &self.pending {
            Some(p) => dts.min(p.dts.saturating_add(u64::from(u32::MAX))),
            None => dts,
        }
    }

    /// The next sample starts at `dts` (from [`Track::decode_time`]): the pending one now
    /// knows its duration and is finished.
    fn finish_pending(&mut self, dts: u64) {
        if let Some(mut p) = self.pending.take() {
            let duration = u32::try_from(dts.saturating_sub(p.dts)).unwrap_or(u32::MAX);
            p.duration = duration;
            self.last_duration = Some(duration);
            self.finish_sample(p);
        }
    }

    /// The new latest sample, after [`Track::finish_pending`].
    fn hold(&mut self, sample: Sample) {
        self.last_dts = Some(sample.dts);
        self.min_next = sample.dts.saturating_add(1);
        self.pending = Some(sample);
    }

    /// Finish the pending sample now, with the last duration seen (the caller cuts).
    fn flush(&mut self) {
        if let Some(mut p) = self.pending.take() {
            let duration = self
                .last_duration
                .unwrap_or_else(|| self.config.fallback_duration());
            p.duration = duration;
            // The next sample may not start before this one ends.
            self.min_next = p.dts.saturating_add(u64::from(duration));
            self.finish_sample(p);
        }
    }

    fn finish_sample(&mut self, sample: Sample) {
        self.bytes += sample.data.len();
        self.span += u64::from(sample.duration);
        self.samples.push(sample);
    }

    fn span_ms(&self) -> u64 {
        to_ms(self.span, self.config.timescale)
    }
}

/// Writes a stream's frames as fragmented MP4. See the module documentation.
#[derive(Debug)]
pub struct Fmp4Writer {
    /// The video track first (track ID 1), then audio.
    tracks: Vec<Track>,
    video: Option<usize>,
    audio: Option<usize>,
    /// Stream timestamp (ms) of the first frame written: time 0.
    origin_ms: Option<u64>,
    /// Video frames before the first keyframe cannot be decoded and are dropped.
    video_started: bool,
    /// The next fragment's sequence number (mfhd), from 1.
    sequence: u32,
    /// Bytes handed out so far, counting the init segment: where the next moof starts in
    /// a file written from [`Fmp4Writer::init`] on.
    written: u64,
    finished: bool,
}

impl Fmp4Writer {
    /// From the stream's sequence-header frames (either may be `None`: audio-only or
    /// video-only).
    pub fn new(
        video_header: Option<&Frame>,
        audio_header: Option<&Frame>,
    ) -> Result<Fmp4Writer, Fmp4Error> {
        let mut configs = Vec::new();
        if let Some(header) = video_header {
            configs.push(TrackConfig::video(header)?);
        }
        if let Some(header) = audio_header {
            configs.push(TrackConfig::audio(header)?);
        }
        if configs.is_empty() {
            return Err(Fmp4Error::NoTracks);
        }
        let tracks: Vec<Track> = configs
            .into_iter()
            .zip(1..)
            .map(|(config, id)| Track::new(id, config))
            .collect();
        let mut writer = Fmp4Writer {
            video: tracks.iter().position(|t| t.config.is_video()),
            audio: tracks.iter().position(|t| !t.config.is_video()),
            tracks,
            origin_ms: None,
            video_started: false,
            sequence: 1,
            written: 0,
            finished: false,
        };
        // The init segment's size does not change when a picture size becomes known (the
        // fields are fixed-width), so fragment offsets can count from it now.
        writer.written = writer.init().len() as u64;
        Ok(writer)
    }

    /// Time 0 is the stream time `origin_ms` instead of the first frame's: a CMAF
    /// packager writes every segment on the stream's own timeline, so that the same
    /// frames make the same bytes on every node, whenever it started.
    pub fn with_time_origin(mut self, origin_ms: u64) -> Fmp4Writer {
        self.origin_ms = Some(origin_ms);
        self
    }

    /// The next fragment's sequence number (`mfhd`): a CMAF packager numbers fragments
    /// from the segment's own number.
    pub fn with_next_sequence(mut self, sequence: u32) -> Fmp4Writer {
        self.sequence = sequence;
        self
    }

    /// `ftyp` + `moov` (with `mvex`/`trex`; durations 0): what a file or a CMAF init
    /// segment starts with.
    ///
    /// For VP9 the picture size is only known from the first keyframe (the configuration
    /// record has none): until one was pushed it is written as 0x0. A recorder should
    /// write the init segment when the first fragment comes out.
    pub fn init(&self) -> Bytes {
        let mut out = Vec::with_capacity(1024);
        boxed(&mut out, b"ftyp", |o| {
            o.put_slice(b"iso6"); // major brand: movie fragments with tfdt, trun v1
            o.put_u32(0);
            o.put_slice(b"iso6");
            o.put_slice(b"mp41");
            if self.has_codec(|c| matches!(c, Codec::Av1 { .. })) {
                o.put_slice(b"av01");
            }
        });
        boxed(&mut out, b"moov", |o| {
            full_box(o, b"mvhd", 0, 0, |o| {
                o.put_u32(0); // creation_time
                o.put_u32(0); // modification_time
                o.put_u32(1000); // timescale
                o.put_u32(0); // duration: unknown, the fragments say
                o.put_u32(0x0001_0000); // rate 1.0
                o.put_u16(0x0100); // volume 1.0
                o.put_bytes(0, 10); // reserved
                put_unity_matrix(o);
                o.put_bytes(0, 24); // pre_defined
                o.put_u32(self.tracks.len() as u32 + 1); // next_track_ID
            });
            for track in &self.tracks {
                write_trak(o, track);
            }
            boxed(o, b"mvex", |o| {
                for track in &self.tracks {
                    full_box(o, b"trex", 0, 0, |o| {
                        o.put_u32(track.id);
                        o.put_u32(1); // default_sample_description_index
                        o.put_u32(0); // default duration, size, flags: every trun says
                        o.put_u32(0);
                        o.put_u32(0);
                    });
                }
            });
        });
        Bytes::from(out)
    }

    /// A media frame (audio or video; sequence headers, metadata and anything that is not
    /// coded media of the tracks' codecs are ignored, and so are video frames before the
    /// first keyframe). Returns a finished fragment (`moof` + `mdat`) when one is complete.
    ///
    /// The tracks keep the configuration they were made with: when a sequence header
    /// changes (new resolution, other codec), finish this writer and start another.
    ///
    /// A fragment ends before a video keyframe, or once it holds at least 1 s of media
    /// (measured on the video track when it has samples, else on audio), whichever comes
    /// first. With keyframes more than 1 s apart, a fragment may thus begin with a
    /// non-sync sample.
    pub fn push(&mut self, frame: &Frame) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        let (index, data, sync, composition_ms) = self.accept(frame)?;
        let origin = *self.origin_ms.get_or_insert(frame.timestamp);
        let track = &mut self.tracks[index];
        let timescale = track.config.timescale;
        let t = to_ticks(frame.timestamp.saturating_sub(origin), timescale);
        let dts = track.decode_time(t);
        let composition_offset = i64::from(composition_ms) * i64::from(timescale) / 1000;
        let sample = Sample {
            dts,
            duration: 0,
            composition_offset: composition_offset.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
            sync,
            data,
        };
        // The pending sample of this track is finished first, so that a fragment closed
        // before this frame holds it.
        track.finish_pending(dts);
        let is_video = Some(index) == self.video;
        let out = if (is_video && sync && self.holds_samples()) || self.fragment_full() {
            self.close_fragment()
        } else {
            None
        };
        self.tracks[index].hold(sample);
        out
    }

    /// Close the current fragment now, if it holds samples (the caller cuts, e.g. at a
    /// segment boundary). Each track's latest sample goes in with the duration of the one
    /// before it; the next sample of the track starts no earlier than that ends.
    pub fn cut(&mut self) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        for track in &mut self.tracks {
            track.flush();
        }
        self.close_fragment()
    }

    /// The rest as a last fragment, then an `mfra` (a `tfra` per track and the `mfro`)
    /// indexing every fragment's first sync sample per track, so that players can seek in
    /// the finished file. Nothing is written after this.
    pub fn finish(&mut self) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        let mut out = self.cut().map(Vec::from).unwrap_or_default();
        self.finished = true;
        self.write_mfra(&mut out);
        self.written += out.len() as u64;
        Bytes::from(out)
    }

    /// Media time written out so far, in ms: the end of the longest track's last sample
    /// in a fragment handed out.
    pub fn duration_ms(&self) -> u64 {
        self.tracks
            .iter()
            .map(|t| to_ms(t.written_end, t.config.timescale))
            .max()
            .unwrap_or(0)
    }

    /// RFC 6381 codecs string of the tracks, video first, e.g. `avc1.64001f,mp4a.40.2`.
    pub fn codecs(&self) -> String {
        self.tracks
            .iter()
            .map(|t| t.config.codecs())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn has_codec(&self, f: impl Fn(&Codec) -> bool) -> bool {
        self.tracks.iter().any(|t| f(&t.config.codec))
    }

    /// What of a frame goes into which track: the track's index, the sample data, whether
    /// it is a sync sample, and its composition time offset in ms. `None`: not for us.
    fn accept(&mut self, frame: &Frame) -> Option<(usize, Bytes, bool, i32)> {
        match frame.kind {
            MediaKind::Video => {
                let index = self.video?;
                let info = parse_video_tag(&frame.payload)?;
                let track = &mut self.tracks[index];
                if info.packet != VideoPacketKind::Frame
                    || Some(info.codec) != track.config.video_codec()
                {
                    return None;
                }
                let key = info.frame == VideoFrameKind::Key;
                if !key && !self.video_started {
                    return None;
                }
                let data = frame.payload.slice(info.data_offset..);
                let data = match track.config.codec {
                    Codec::Av1 { .. } => without_temporal_delimiters(data),
                    _ => data,
                };
                if data.is_empty() {
                    return None;
                }
                if key {
                    self.video_started = true;
                    learn_picture_size(&mut track.config, &data);
                }
                Some((index, data, key, info.composition_time))
            }
            MediaKind::Audio => {
                let index = self.audio?;
                let info = parse_audio_tag(&frame.payload)?;
                if !info.coded || Some(info.codec) != self.tracks[index].config.audio_codec() {
                    return None;
                }
                let data = frame.payload.slice(info.data_offset..);
                if data.is_empty() {
                    return None;
                }
                Some((index, data, true, 0))
            }
            MediaKind::Metadata => None,
        }
    }

    fn holds_samples(&self) -> bool {
        self.tracks.iter().any(|t| !t.samples.is_empty())
    }

    fn fragment_full(&self) -> bool {
        let video = self
            .video
            .map(|i| &self.tracks[i])
            .filter(|t| !t.samples.is_empty());
        let held_ms = match video {
            Some(v) => v.span_ms(),
            None => self.tracks.iter().map(Track::span_ms).max().unwrap_or(0),
        };
        let samples: usize = self.tracks.iter().map(|t| t.samples.len()).sum();
        let bytes: usize = self.tracks.iter().map(|t| t.bytes).sum();
        held_ms >= FRAGMENT_MS || samples >= MAX_FRAGMENT_SAMPLES || bytes >= MAX_FRAGMENT_BYTES
    }

    /// The open fragment as `moof` + `mdat`, if it holds samples.
    fn close_fragment(&mut self) -> Option<Bytes> {
        if !self.holds_samples() {
            return None;
        }
        let moof_offset = self.written;
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);

        let payload_len: usize = self.tracks.iter().map(|t| t.bytes).sum();
        let mut out = Vec::with_capacity(payload_len + 256);
        // Where each trun's data_offset field is, and where its samples start in the mdat
        // payload: patched once the moof's size is known.
        let mut data_offsets: Vec<(usize, usize)> = Vec::new();
        boxed(&mut out, b"moof", |o| {
            full_box(o, b"mfhd", 0, 0, |o| o.put_u32(sequence));
            let mut payload_at = 0;
            let with_samples = self.tracks.iter_mut().filter(|t| !t.samples.is_empty());
            for (traf, track) in (1..).zip(with_samples) {
                write_traf(o, track, &mut data_offsets, payload_at);
                payload_at += track.bytes;
                if let Some(i) = track.samples.iter().position(|s| s.sync) {
                    if track.random_access.len() < MAX_RANDOM_ACCESS {
                        let s = &track.samples[i];
                        let time = (i128::from(s.dts) + i128::from(s.composition_offset)).max(0);
                        track.random_access.push(RandomAccess {
                            time: u64::try_from(time).unwrap_or(u64::MAX),
                            moof_offset,
                            traf,
                            sample: i as u32 + 1,
                        });
                    }
                }
            }
        });
        let header = mdat_header(payload_len as u64);
        let moof_len = out.len();
        for (at, payload_at) in data_offsets {
            let offset = i32::try_from(moof_len + header.len() + payload_at).unwrap_or(i32::MAX);
            out[at..at + 4].copy_from_slice(&offset.to_be_bytes());
        }
        out.extend_from_slice(&header);
        for track in &mut self.tracks {
            if let Some(last) = track.samples.last() {
                track.written_end = last.dts.saturating_add(u64::from(last.duration));
            }
            for sample in track.samples.drain(..) {
                out.extend_from_slice(&sample.data);
            }
            track.bytes = 0;
            track.span = 0;
        }
        self.written += out.len() as u64;
        Some(Bytes::from(out))
    }

    fn write_mfra(&self, out: &mut Vec<u8>) {
        let start = out.len();
        boxed(out, b"mfra", |o| {
            for track in &self.tracks {
                full_box(o, b"tfra", 1, 0, |o| {
                    o.put_u32(track.id);
                    // length_size_of_traf_num, _trun_num, _sample_num: 4 bytes each.
                    o.put_u32(0x3F);
                    o.put_u32(track.random_access.len() as u32);
                    for entry in &track.random_access {
                        o.put_u64(entry.time);
                        o.put_u64(entry.moof_offset);
                        o.put_u32(entry.traf);
                        o.put_u32(1); // trun_number: one trun per traf
                        o.put_u32(entry.sample);
                    }
                });
            }
            // mfro (16 bytes) ends the mfra and gives its size, so that a reader can find
            // the index from the end of the file.
            let mfra_size = (o.len() - start + 16) as u32;
            full_box(o, b"mfro", 0, 0, |o| o.put_u32(mfra_size));
        });
    }
}

/// `trak` with an empty sample table: the samples are all in fragments.
fn write_trak(out: &mut Vec<u8>, track: &Track) {
    let config = &track.config;
    let video = config.is_video();
    boxed(out, b"trak", |o| {
        // flags: track enabled, in movie
        full_box(o, b"tkhd", 0, 0x000003, |o| {
            o.put_u32(0); // creation_time
            o.put_u32(0); // modification_time
            o.put_u32(track.id);
            o.put_u32(0); // reserved
            o.put_u32(0); // duration
            o.put_bytes(0, 8); // reserved
            o.put_u16(0); // layer
            o.put_u16(0); // alternate_group
            o.put_u16(if video { 0 } else { 0x0100 }); // volume
            o.put_u16(0); // reserved
            put_unity_matrix(o);
            // width and height, 16.16 fixed point
            o.put_u32(config.width.min(0xFFFF) << 16);
            o.put_u32(config.height.min(0xFFFF) << 16);
        });
        boxed(o, b"mdia", |o| {
            full_box(o, b"mdhd", 0, 0, |o| {
                o.put_u32(0);
                o.put_u32(0);
                o.put_u32(config.timescale);
                o.put_u32(0); // duration
                o.put_u16(LANGUAGE_UND);
                o.put_u16(0); // pre_defined
            });
            full_box(o, b"hdlr", 0, 0, |o| {
                o.put_u32(0); // pre_defined
                o.put_slice(if video { b"vide" } else { b"soun" });
                o.put_bytes(0, 12); // reserved
                o.put_slice(if video {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            boxed(o, b"minf", |o| {
                if video {
                    // graphicsmode copy, opcolor 0
                    full_box(o, b"vmhd", 0, 1, |o| o.put_bytes(0, 8));
                } else {
                    // balance 0, reserved
                    full_box(o, b"smhd", 0, 0, |o| o.put_u32(0));
                }
                boxed(o, b"dinf", |o| {
                    full_box(o, b"dref", 0, 0, |o| {
                        o.put_u32(1);
                        // flags 1: the media data is in this file
                        full_box(o, b"url ", 0, 1, |_| {});
                    });
                });
                boxed(o, b"stbl", |o| {
                    full_box(o, b"stsd", 0, 0, |o| {
                        o.put_u32(1);
                        config.write_sample_entry(o);
                    });
                    full_box(o, b"stts", 0, 0, |o| o.put_u32(0));
                    full_box(o, b"stsc", 0, 0, |o| o.put_u32(0));
                    full_box(o, b"stsz", 0, 0, |o| {
                        o.put_u32(0); // sample_size
                        o.put_u32(0); // sample_count
                    });
                    full_box(o, b"stco", 0, 0, |o| o.put_u32(0));
                });
            });
        });
    });
}

/// A track's `traf`: tfhd, tfdt (version 1: 64-bit base decode time) and one trun
/// (version 1: signed composition offsets).
fn write_traf(
    out: &mut Vec<u8>,
    track: &Track,
    data_offsets: &mut Vec<(usize, usize)>,
    payload_at: usize,
) {
    let video = track.config.is_video();
    boxed(out, b"traf", |o| {
        full_box(o, b"tfhd", 0, DEFAULT_BASE_IS_MOOF, |o| o.put_u32(track.id));
        full_box(o, b"tfdt", 1, 0, |o| o.put_u64(track.samples[0].dts));
        let mut flags = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS;
        if video {
            flags |= TRUN_COMPOSITION_OFFSET;
        }
        full_box(o, b"trun", 1, flags, |o| {
            o.put_u32(track.samples.len() as u32);
            data_offsets.push((o.len(), payload_at));
            o.put_i32(0); // data_offset, patched
            for s in &track.samples {
                o.put_u32(s.duration);
                o.put_u32(u32::try_from(s.data.len()).unwrap_or(u32::MAX));
                o.put_u32(if s.sync { SYNC_SAMPLE } else { NON_SYNC_SAMPLE });
                if video {
                    o.put_i32(s.composition_offset);
                }
            }
        });
    });
}

/// VP9 and AV1 configuration records may not give the picture size: take it from the
/// first keyframe that does (VP9's uncompressed header, an AV1 sequence header OBU).
fn learn_picture_size(config: &mut TrackConfig, data: &[u8]) {
    if config.width != 0 && config.height != 0 {
        return;
    }
    let size = match config.codec {
        Codec::Vp9 { .. } => vp9_frame_resolution(data).ok().flatten(),
        Codec::Av1 { .. } => av1_sequence_resolution(data).ok().flatten(),
        _ => None,
    };
    if let Some((width, height)) = size {
        config.width = width;
        config.height = height;
    }
}

/// An AV1 temporal unit without its temporal delimiter OBUs, which the AV1 ISOBMFF binding
/// says samples should not carry. Left as it is when its OBUs do not parse.
fn without_temporal_delimiters(data: Bytes) -> Bytes {
    let Some(keep) = obus_to_keep(&data) else {
        return data;
    };
    match keep.as_slice() {
        [] => Bytes::new(),
        [(start, end)] => data.slice(*start..*end),
        ranges => {
            let mut out = Vec::with_capacity(data.len());
            for (start, end) in ranges {
                out.extend_from_slice(&data[*start..*end]);
            }
            Bytes::from(out)
        }
    }
}

/// The byte ranges of the OBUs other than temporal delimiters, adjacent ones merged;
/// `None` when the OBUs do not parse.
fn obus_to_keep(data: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut keep: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    for obu in av1_obus(data) {
        let obu = obu.ok()?;
        let len = obu.bytes.len();
        if obu.obu_type != OBU_TEMPORAL_DELIMITER {
            match keep.last_mut() {
                Some((_, end)) if *end == at => *end = at + len,
                _ => keep.push((at, at + len)),
            }
        }
        at += len;
    }
    Some(keep)
}

fn to_ticks(ms: u64, timescale: u32) -> u64 {
    let ticks = u128::from(ms) * u128::from(timescale) / 1000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

fn to_ms(ticks: u64, timescale: u32) -> u64 {
    let ms = u128::from(ticks) * 1000 / u128::from(timescale.max(1));
    u64::try_from(ms).unwrap_or(u64::MAX)
}
