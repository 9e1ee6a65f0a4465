use super::*;
use crate::segment::Segmenter;
use crate::ts;

use std::collections::HashMap;

use m3u8_rs::{MediaPlaylist, Playlist};
use mpeg2ts::es::StreamType;
use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
use mpeg2ts::ts::{ReadTsPacket, TsPacket, TsPacketReader, TsPayload};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Realistic input: x264 High@3.1 720p SPS/PPS, AAC-LC 44.1 kHz stereo, 25 fps video and
// 23 ms AAC frames, all wrapped as FLV/RTMP payloads.
// ---------------------------------------------------------------------------------------

const SPS_720P: [u8; 26] = [
    0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40, 0x50, 0x05, 0xBB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x83, 0x19, 0x60,
];
/// x264 1080p High@4.0: the publisher changed its encoder settings.
const SPS_1080P: [u8; 27] = [
    0x67, 0x64, 0x00, 0x28, 0xAC, 0xD9, 0x40, 0x78, 0x02, 0x27, 0xE5, 0xC0, 0x44, 0x00, 0x00, 0x03,
    0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xF0, 0x3C, 0x60, 0xC6, 0x58,
];
const PPS: [u8; 6] = [0x68, 0xEB, 0xE3, 0xCB, 0x22, 0xC0];
/// AudioSpecificConfig: AAC-LC, 44.1 kHz, stereo.
const ASC: [u8; 2] = [0x12, 0x10];

const FRAME_MS: u64 = 40;
const AUDIO_MS: u64 = 23;

const VIDEO_PID: u16 = ts::VIDEO_PID;
const AUDIO_PID: u16 = ts::AUDIO_PID;
const PMT_PID: u16 = ts::PMT_PID;

fn avc_record(sps: &[u8]) -> Vec<u8> {
    // version 1, profile/compat/level from the SPS, 4-byte NAL lengths, 1 SPS, 1 PPS.
    let mut r = vec![0x01, sps[1], sps[2], sps[3], 0xFF, 0xE1];
    r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    r.extend_from_slice(sps);
    r.push(0x01);
    r.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
    r.extend_from_slice(&PPS);
    r
}

/// Bytes that never form a start code (all have the top bit set).
fn filler(len: usize, seed: u64) -> impl Iterator<Item = u8> {
    (0..len as u64).map(move |i| 0x80 | ((i.wrapping_mul(7).wrapping_add(seed)) % 0x7F) as u8)
}

fn sei_nal(ts: u64) -> Vec<u8> {
    // user_data_unregistered, 16-byte payload, rbsp trailing bits.
    let mut n = vec![0x06, 0x05, 0x10];
    n.extend(filler(16, ts));
    n.push(0x80);
    n
}

fn idr_nal(ts: u64) -> Vec<u8> {
    let mut n = vec![0x65, 0x88, 0x84];
    n.extend(filler(5_000 + (ts % 1_000) as usize, ts));
    n
}

fn slice_nal(ts: u64) -> Vec<u8> {
    let mut n = vec![0x41, 0x9A];
    n.extend(filler(300 + (ts % 700) as usize, ts));
    n
}

fn aac_raw(ts: u64) -> Vec<u8> {
    let mut r = vec![0x21, 0x10, 0x04];
    r.extend(filler(150 + (ts % 250) as usize, ts));
    r
}

fn nals_of(ts: u64, key: bool) -> Vec<Vec<u8>> {
    if key {
        vec![sei_nal(ts), idr_nal(ts)]
    } else {
        vec![slice_nal(ts)]
    }
}

/// The Annex B access unit a decoder must get for a frame.
fn expected_annexb(ts: u64, key: bool, sps: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 1, 0x09, 0xF0];
    let mut nals = Vec::new();
    if key {
        nals.push(sps.to_vec());
        nals.push(PPS.to_vec());
    }
    nals.extend(nals_of(ts, key));
    for n in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&n);
    }
    out
}

#[derive(Debug, Clone)]
enum Ev {
    VideoHeader { ts: u64, sps: &'static [u8] },
    Video { ts: u64, key: bool, cts: i32 },
    AudioHeader { ts: u64 },
    Audio { ts: u64 },
}

impl Ev {
    fn ts(&self) -> u64 {
        match *self {
            Ev::VideoHeader { ts, .. }
            | Ev::Video { ts, .. }
            | Ev::AudioHeader { ts }
            | Ev::Audio { ts } => ts,
        }
    }

    fn frame(&self, generation: u32) -> Frame {
        let (kind, ts, payload) = match self {
            Ev::VideoHeader { ts, sps } => {
                let mut p = vec![0x17, 0x00, 0, 0, 0];
                p.extend(avc_record(sps));
                (MediaKind::Video, *ts, p)
            }
            Ev::Video { ts, key, cts } => {
                let mut p = vec![if *key { 0x17 } else { 0x27 }, 0x01];
                p.extend_from_slice(&cts.to_be_bytes()[1..]);
                for n in nals_of(*ts, *key) {
                    p.extend_from_slice(&(n.len() as u32).to_be_bytes());
                    p.extend_from_slice(&n);
                }
                (MediaKind::Video, *ts, p)
            }
            Ev::AudioHeader { ts } => (MediaKind::Audio, *ts, vec![0xAF, 0x00, ASC[0], ASC[1]]),
            Ev::Audio { ts } => {
                let mut p = vec![0xAF, 0x01];
                p.extend(aac_raw(*ts));
                (MediaKind::Audio, *ts, p)
            }
        };
        let mut f = Frame::new(kind, ts, Bytes::from(payload));
        f.generation = generation;
        f
    }
}

/// Composition offsets as a B-frame encoder produces them.
fn cts_for(index: u64, key: bool) -> i32 {
    if key {
        80
    } else {
        [120, 0, 40, 80][(index % 4) as usize]
    }
}

/// Video every 40 ms over `[from, to)` with keyframes where `key(ts)` says, audio every
/// 23 ms, merged in timestamp order (video first on ties).
fn media(from: u64, to: u64, video: bool, audio: bool, key: impl Fn(u64) -> bool) -> Vec<Ev> {
    let mut evs = Vec::new();
    if video {
        let first = from.div_ceil(FRAME_MS);
        for i in first.. {
            let ts = i * FRAME_MS;
            if ts >= to {
                break;
            }
            let k = key(ts);
            evs.push(Ev::Video {
                ts,
                key: k,
                cts: cts_for(i, k),
            });
        }
    }
    if audio {
        let first = from.div_ceil(AUDIO_MS);
        for i in first.. {
            let ts = i * AUDIO_MS;
            if ts >= to {
                break;
            }
            evs.push(Ev::Audio { ts });
        }
    }
    evs.sort_by_key(Ev::ts); // stable: video before audio at equal timestamps
    evs
}

fn headers(ts: u64) -> Vec<Ev> {
    vec![
        Ev::VideoHeader { ts, sps: &SPS_720P },
        Ev::AudioHeader { ts },
    ]
}

fn gop(ms: u64) -> impl Fn(u64) -> bool {
    move |ts| ts % ms == 0
}

fn config(target_ms: u64, window: usize, retain_extra: usize) -> HlsConfig {
    HlsConfig {
        target_duration: Duration::from_millis(target_ms),
        window,
        retain_extra,
        ..HlsConfig::default()
    }
}

fn uri(seq: u64) -> String {
    format!("seg-{seq}.ts")
}

fn parse_playlist(text: &str) -> MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(Playlist::MediaPlaylist(p)) => p,
        Ok(Playlist::MasterPlaylist(_)) => panic!("parsed as a master playlist:\n{text}"),
        Err(e) => panic!("m3u8-rs rejected the playlist: {e:?}\n{text}"),
    }
}

// ---------------------------------------------------------------------------------------
// The harness: feeds events, keeps every segment ever made, checks the playlist after every
// push, and models which frames must end up in segments.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct ExpVideo {
    ts: u64,
    cts: i32,
    key: bool,
    annexb: Vec<u8>,
}

struct Harness {
    p: HlsPackager,
    /// Marks segment starts as the hub would.
    segmenter: Segmenter,
    seen_video: bool,
    cfg: HlsConfig,
    has_audio: bool,
    has_video: bool,
    /// The first segment opened: the program's tracks are fixed.
    settled: bool,
    generation: u32,
    first_sequence: u64,
    /// Every segment closed so far, in order.
    all: Vec<Arc<Segment>>,
    last_media_sequence: u64,
    last_discontinuity_sequence: u64,
    last_target: u64,
    /// Every playlist text seen (for tests that look at successive playlists).
    playlists: Vec<MediaPlaylist>,
    // The model.
    model_generation: Option<u32>,
    model_sps: Option<&'static [u8]>,
    model_aac: bool,
    accepting: bool,
    exp_video: Vec<ExpVideo>,
    exp_audio: Vec<(u64, Vec<u8>)>,
    /// Segments the segmenter began at a frame that is not a keyframe.
    cut_mid_gop: Vec<u64>,
    /// A mark fixed the stream's target duration.
    target_fixed: bool,
    /// The publisher stalled: a segment may last longer than its target duration.
    stalled: bool,
}

impl Harness {
    fn new(cfg: HlsConfig, first_sequence: u64, has_audio: bool, has_video: bool) -> Harness {
        Harness {
            p: HlsPackager::new(cfg.clone(), has_audio, has_video),
            segmenter: Segmenter::new(cfg.target_duration.as_millis() as u64, first_sequence),
            seen_video: false,
            cfg,
            has_audio,
            has_video,
            settled: false,
            generation: 0,
            first_sequence,
            all: Vec::new(),
            last_media_sequence: 0,
            last_discontinuity_sequence: 0,
            last_target: 0,
            playlists: Vec::new(),
            model_generation: None,
            model_sps: None,
            model_aac: false,
            accepting: false,
            exp_video: Vec::new(),
            exp_audio: Vec::new(),
            cut_mid_gop: Vec::new(),
            target_fixed: false,
            stalled: false,
        }
    }

    fn feed(&mut self, evs: &[Ev]) {
        for ev in evs {
            self.push(ev);
        }
    }

    fn push(&mut self, ev: &Ev) {
        if self.p.is_ended() {
            let frame = self.frame(ev);
            self.p.push(&frame);
            self.observe();
            return;
        }
        if self.model_generation.is_some_and(|g| g != self.generation) {
            self.accepting = false;
        }
        self.model_generation = Some(self.generation);
        match *ev {
            Ev::VideoHeader { sps, .. } => {
                // Headers seen before the first segment opens add their track.
                if !self.settled {
                    self.has_video = true;
                }
                if self.model_sps.is_some_and(|s| s != sps) {
                    self.accepting = false;
                }
                self.model_sps = Some(sps);
            }
            Ev::Video { ts, key, cts } => {
                if let (true, Some(sps)) = (self.has_video, self.model_sps) {
                    if key {
                        self.accepting = true;
                        self.settled = true;
                    }
                    if self.accepting {
                        let annexb = expected_annexb(ts, key, sps);
                        self.exp_video.push(ExpVideo {
                            ts,
                            cts,
                            key,
                            annexb,
                        });
                    }
                }
            }
            Ev::AudioHeader { .. } => {
                if !self.settled {
                    self.has_audio = true;
                }
                self.model_aac = true
            }
            Ev::Audio { ts } => {
                if self.model_aac {
                    if !self.has_video {
                        self.accepting = true;
                        self.settled = true;
                    }
                    if self.accepting && self.has_audio {
                        self.exp_audio.push((ts, aac_raw(ts)));
                    }
                }
            }
        }
        let frame = self.frame(ev);
        self.p.push(&frame);
        self.observe();
    }

    /// The frame as the hub hands it out: audio is a place to start until there is video,
    /// and segment starts are marked.
    fn frame(&mut self, ev: &Ev) -> Frame {
        let mut frame = ev.frame(self.generation);
        self.seen_video |= frame.kind == MediaKind::Video;
        if frame.kind == MediaKind::Audio {
            frame.key = !self.seen_video && !frame.sequence_header;
        }
        frame.segment = self.segmenter.observe(&frame);
        self.target_fixed |= frame.segment.is_some_and(|m| m.target_duration > 0);
        if let Some(mark) = frame.segment.filter(|_| !frame.key) {
            // A GOP too long for the target duration, cut where it would outgrow it.
            self.cut_mid_gop.push(mark.sequence);
        }
        frame
    }

    /// Whether segment `sequence` begins at a keyframe (all do but those cut mid-GOP).
    fn starts_on_key(&self, sequence: u64) -> bool {
        !self.cut_mid_gop.contains(&sequence)
    }

    fn next_sequence(&self) -> u64 {
        self.p.next_sequence().unwrap_or(self.first_sequence)
    }

    fn end(&mut self) {
        self.p.end();
        self.observe();
    }

    fn playlist(&self) -> MediaPlaylist {
        parse_playlist(&self.p.playlist(uri))
    }

    /// Record new segments and check every playlist invariant.
    fn observe(&mut self) {
        let mut next = self
            .all
            .last()
            .map_or(self.first_sequence, |s| s.sequence + 1);
        assert!(
            self.next_sequence() <= next + 1,
            "one push closes at most one segment"
        );
        while next < self.next_sequence() {
            let s = self
                .p
                .segment(next)
                .expect("a segment just closed must be held");
            assert_eq!(s.sequence, next);
            self.all.push(s);
            next += 1;
        }
        // Segments are listed once the marks fixed the target duration (or the stream ended).
        assert!(!self.p.has_segments() || !self.all.is_empty());

        let text = self.p.playlist(uri);
        let pl = parse_playlist(&text);
        assert_eq!(pl.version, Some(3), "{text}");
        assert!(
            pl.unknown_tags.is_empty(),
            "unknown tags {:?}\n{text}",
            pl.unknown_tags
        );
        assert_eq!(pl.end_list, self.p.is_ended(), "{text}");

        // Listed: the newest `window` segments, consecutive, named by sequence, once a mark
        // has fixed the target duration (or the stream ended).
        let listable = self.target_fixed || self.p.is_ended();
        let listed: Vec<&Arc<Segment>> = self
            .all
            .iter()
            .skip(self.all.len().saturating_sub(self.cfg.window))
            .filter(|_| listable)
            .collect();
        assert_eq!(pl.segments.len(), listed.len(), "{text}");
        // Before any segment began there is no number to show (and nothing is served).
        let unlisted = self.all.first().map(|s| s.sequence);
        let first = listed
            .first()
            .map_or(unlisted.or(self.p.next_sequence()).unwrap_or(0), |s| {
                s.sequence
            });
        assert_eq!(
            pl.media_sequence, first,
            "MEDIA-SEQUENCE is the first listed\n{text}"
        );
        assert!(
            pl.media_sequence >= self.last_media_sequence,
            "MEDIA-SEQUENCE went back\n{text}"
        );
        self.last_media_sequence = pl.media_sequence;

        // RFC 8216 compares EXTINF, rounded to the nearest whole second, with the target
        // duration, which may not change while a playlist lists segments.
        let min_target = (self.cfg.target_duration.as_millis() as u64 + 500) / 1000;
        assert!(pl.target_duration >= min_target.max(1), "{text}");
        if !pl.segments.is_empty() {
            assert!(
                self.last_target == 0 || pl.target_duration == self.last_target,
                "TARGETDURATION changed from {}\n{text}",
                self.last_target
            );
            self.last_target = pl.target_duration;
        }
        for (m, s) in pl.segments.iter().zip(&listed) {
            assert_eq!(m.uri, uri(s.sequence));
            assert!(s.duration_ms > 0);
            let expected = super::extinf_ms(s.duration_ms, pl.target_duration);
            assert!(
                (f64::from(m.duration) * 1000.0 - expected as f64).abs() < 0.6,
                "EXTINF {} vs {} ms",
                m.duration,
                s.duration_ms
            );
            assert!(
                f64::from(m.duration).round() as u64 <= pl.target_duration,
                "EXTINF {} above TARGETDURATION {}\n{text}",
                m.duration,
                pl.target_duration
            );
            assert!(
                s.duration_ms < pl.target_duration * 1000 + 500 || self.stalled,
                "a segment outgrew the target duration without a stall"
            );
            assert_eq!(m.discontinuity, s.discontinuity, "{text}");
            assert!(m.byte_range.is_none() && m.key.is_none() && m.unknown_tags.is_empty());
        }

        // EXT-X-DISCONTINUITY-SEQUENCE: discontinuity tags that have left the playlist
        // (RFC 8216 4.3.3.3).
        let gone = self
            .all
            .iter()
            .filter(|s| s.sequence < pl.media_sequence && s.discontinuity)
            .count() as u64;
        assert_eq!(
            pl.discontinuity_sequence, gone,
            "DISCONTINUITY-SEQUENCE\n{text}"
        );
        assert!(pl.discontinuity_sequence >= self.last_discontinuity_sequence);
        self.last_discontinuity_sequence = pl.discontinuity_sequence;

        // Held segments: listed plus up to `retain_extra` before them; nothing else.
        let held_from = pl
            .media_sequence
            .saturating_sub(self.cfg.retain_extra as u64)
            .max(self.first_sequence);
        for s in &self.all {
            let got = self.p.segment(s.sequence);
            if s.sequence >= held_from {
                let got =
                    got.unwrap_or_else(|| panic!("segment {} should still be served", s.sequence));
                assert!(Arc::ptr_eq(&got, s));
            } else {
                assert!(got.is_none(), "segment {} should be gone", s.sequence);
            }
        }
        assert!(self.p.segment(self.next_sequence()).is_none());

        if self.playlists.last() != Some(&pl) {
            self.playlists.push(pl);
        }
    }

    fn tracks(&self) -> (bool, bool) {
        (self.has_video, self.has_audio)
    }

    /// Parse every segment with mpeg2ts and compare the media with the model.
    fn check_media(&self) -> Vec<SegInfo> {
        let infos: Vec<SegInfo> = self
            .all
            .iter()
            .map(|s| check_segment(&s.data, self.tracks(), self.starts_on_key(s.sequence)))
            .collect();
        let got_video: Vec<&PesRec> = infos
            .iter()
            .flat_map(|i| i.pes.iter().filter(|p| p.pid == VIDEO_PID))
            .collect();
        assert_eq!(
            got_video.len(),
            self.exp_video.len(),
            "video access units in segments"
        );
        for (got, exp) in got_video.iter().zip(&self.exp_video) {
            let dts = exp.ts * 90;
            let pts = (exp.ts as i64 + i64::from(exp.cts)).max(0) as u64 * 90;
            assert_eq!(got.pts, Some(pts), "PTS of frame {}", exp.ts);
            assert_eq!(
                got.dts,
                if pts == dts { None } else { Some(dts) },
                "DTS of frame {}",
                exp.ts
            );
            assert_eq!(got.rai, exp.key, "random access on frame {}", exp.ts);
            assert_eq!(got.data, exp.annexb, "access unit of frame {}", exp.ts);
        }
        // Audio: the raw AAC frames in order; each PES's PTS is its first frame's.
        let mut expected = self.exp_audio.iter();
        for p in infos
            .iter()
            .flat_map(|i| i.pes.iter().filter(|p| p.pid == AUDIO_PID))
        {
            let frames = adts_frames(&p.data);
            assert!(!frames.is_empty());
            for (k, raw) in frames.iter().enumerate() {
                let (ts, exp) = expected
                    .next()
                    .expect("more audio in segments than was accepted");
                if k == 0 {
                    assert_eq!(p.pts, Some(ts * 90), "audio PES PTS");
                }
                assert_eq!(raw, exp, "audio frame {ts}");
            }
        }
        assert!(
            expected.next().is_none(),
            "accepted audio missing from segments"
        );
        infos
    }
}

// ---------------------------------------------------------------------------------------
// Segment parsing with mpeg2ts.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct PesRec {
    pid: u16,
    stream_id: u8,
    pts: Option<u64>,
    dts: Option<u64>,
    /// PCR base (90 kHz) of the first packet.
    pcr: Option<u64>,
    rai: bool,
    data: Vec<u8>,
}

#[derive(Debug)]
struct SegInfo {
    pes: Vec<PesRec>,
    /// (first, last) continuity counter per PID.
    cc: HashMap<u16, (u8, u8)>,
}

impl SegInfo {
    fn first_video_dts(&self) -> Option<u64> {
        self.pes
            .iter()
            .find(|p| p.pid == VIDEO_PID)
            .map(|p| p.dts.or(p.pts).unwrap())
    }

    fn video(&self) -> impl Iterator<Item = &PesRec> {
        self.pes.iter().filter(|p| p.pid == VIDEO_PID)
    }

    fn audio(&self) -> impl Iterator<Item = &PesRec> {
        self.pes.iter().filter(|p| p.pid == AUDIO_PID)
    }
}

fn read_packets(data: &[u8]) -> Vec<TsPacket> {
    let mut reader = TsPacketReader::new(data);
    let mut packets = Vec::new();
    while let Some(p) = reader.read_ts_packet().expect("mpeg2ts rejected a packet") {
        packets.push(p);
    }
    packets
}

/// NAL unit types of an Annex B stream.
fn nal_types(annexb: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < annexb.len() {
        if annexb[i..i + 3] == [0, 0, 1] {
            types.push(annexb[i + 3] & 0x1F);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}

/// Raw AAC frames of a run of ADTS frames (checks sync word and lengths).
fn adts_frames(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= 7, "truncated ADTS header");
        assert_eq!(
            (data[0], data[1] & 0xF6),
            (0xFF, 0xF0),
            "ADTS sync word / layer"
        );
        assert_eq!(data[1] & 1, 1, "protection_absent");
        assert_eq!(data[2] >> 6, 1, "AAC-LC profile");
        assert_eq!((data[2] >> 2) & 0x0F, 4, "44.1 kHz");
        assert_eq!(((data[2] & 1) << 2) | (data[3] >> 6), 2, "stereo");
        let len = (usize::from(data[3] & 0x03) << 11)
            | (usize::from(data[4]) << 3)
            | usize::from(data[5] >> 5);
        assert!(len >= 7 && len <= data.len(), "ADTS frame length {len}");
        frames.push(data[7..len].to_vec());
        data = &data[len..];
    }
    frames
}

/// Everything a player needs from one segment on its own: PAT, PMT, continuous counters,
/// a keyframe first, PCR where the PMT says.
/// Checks one segment's structure; `on_key`: it must begin at a keyframe (all segments but
/// those that cut a GOP too long for the target duration).
fn check_segment(data: &[u8], (video, audio): (bool, bool), on_key: bool) -> SegInfo {
    assert_eq!(data.len() % 188, 0);
    assert!(data.chunks(188).all(|c| c[0] == 0x47));
    let packets = read_packets(data);
    assert_eq!(packets.len(), data.len() / 188);
    assert!(packets.len() >= 3);

    match &packets[0].payload {
        Some(TsPayload::Pat(pat)) => {
            assert_eq!(packets[0].header.pid.as_u16(), 0);
            assert_eq!(pat.table.len(), 1);
            assert_eq!(pat.table[0].program_map_pid.as_u16(), PMT_PID);
        }
        other => panic!("segment does not start with a PAT: {other:?}"),
    }
    let pcr_pid = if video { VIDEO_PID } else { AUDIO_PID };
    match &packets[1].payload {
        Some(TsPayload::Pmt(pmt)) => {
            assert_eq!(packets[1].header.pid.as_u16(), PMT_PID);
            assert_eq!(pmt.pcr_pid.map(|p| p.as_u16()), Some(pcr_pid));
            let es: Vec<_> = pmt
                .es_info
                .iter()
                .map(|e| (e.stream_type, e.elementary_pid.as_u16()))
                .collect();
            let mut expected = Vec::new();
            if video {
                expected.push((StreamType::H264, VIDEO_PID));
            }
            if audio {
                expected.push((StreamType::AdtsAac, AUDIO_PID));
            }
            assert_eq!(es, expected);
        }
        other => panic!("second packet is not a PMT: {other:?}"),
    }

    let mut cc: HashMap<u16, (u8, u8)> = HashMap::new();
    let mut seen_pids: Vec<u16> = Vec::new();
    let mut pes: Vec<PesRec> = Vec::new();
    let mut open: HashMap<u16, usize> = HashMap::new();
    for p in &packets {
        let pid = p.header.pid.as_u16();
        assert!(
            matches!(pid, 0 | PMT_PID | VIDEO_PID | AUDIO_PID),
            "unexpected PID {pid:#x}"
        );
        if pid == VIDEO_PID {
            assert!(video, "video PID not in the PMT");
        }
        if pid == AUDIO_PID {
            assert!(audio, "audio PID not in the PMT");
        }
        let c = p.header.continuity_counter.as_u8();
        match cc.get_mut(&pid) {
            Some((_, last)) => {
                assert_eq!(c, (*last + 1) % 16, "continuity counter on PID {pid:#x}");
                *last = c;
            }
            None => {
                cc.insert(pid, (c, c));
            }
        }
        let af = p.adaptation_field.as_ref();
        // Each segment's counters stand on their own: the elementary streams' first
        // packets say their counters restart; the tables' counters follow the sequence.
        let elementary = pid == VIDEO_PID || pid == AUDIO_PID;
        let first_of_pid = !seen_pids.contains(&pid);
        seen_pids.push(pid);
        assert_eq!(
            af.is_some_and(|a| a.discontinuity_indicator),
            elementary && first_of_pid,
            "discontinuity indicator on PID {pid:#x}"
        );
        match &p.payload {
            Some(TsPayload::Pes(x)) => {
                open.insert(pid, pes.len());
                pes.push(PesRec {
                    pid,
                    stream_id: x.header.stream_id.as_u8(),
                    pts: x.header.pts.map(|t| t.as_u64()),
                    dts: x.header.dts.map(|t| t.as_u64()),
                    pcr: af.and_then(|a| a.pcr).map(|c| c.as_u64() / 300),
                    rai: af.is_some_and(|a| a.random_access_indicator),
                    data: x.data.to_vec(),
                });
            }
            Some(TsPayload::Raw(raw)) => {
                let i = *open
                    .get(&pid)
                    .expect("continuation without a PES start in this segment");
                pes[i].data.extend_from_slice(raw);
                assert!(af.is_none_or(|a| a.pcr.is_none() && !a.random_access_indicator));
            }
            Some(TsPayload::Pat(_) | TsPayload::Pmt(_)) => {}
            other => panic!("unexpected payload {other:?}"),
        }
    }
    assert_eq!(
        packets
            .iter()
            .filter(|p| matches!(p.payload, Some(TsPayload::Pat(_))))
            .count(),
        1
    );
    assert_eq!(
        packets
            .iter()
            .filter(|p| matches!(p.payload, Some(TsPayload::Pmt(_))))
            .count(),
        1
    );

    // The independent PES reassembly agrees (and accepts every PES length).
    let mut reader = PesPacketReader::new(TsPacketReader::new(data));
    let mut reassembled: HashMap<u8, Vec<Vec<u8>>> = HashMap::new();
    while let Some(p) = reader.read_pes_packet().expect("mpeg2ts rejected a PES") {
        reassembled
            .entry(p.header.stream_id.as_u8())
            .or_default()
            .push(p.data);
    }
    for (id, list) in &reassembled {
        let mine: Vec<&Vec<u8>> = pes
            .iter()
            .filter(|p| p.stream_id == *id)
            .map(|p| &p.data)
            .collect();
        assert_eq!(mine, list.iter().collect::<Vec<_>>(), "stream {id:#x}");
    }
    assert_eq!(reassembled.values().map(Vec::len).sum::<usize>(), pes.len());

    let first_media = pes.first().expect("segment without media");
    if video {
        let first = pes
            .iter()
            .find(|p| p.pid == VIDEO_PID)
            .expect("video segment without video");
        assert!(
            first.rai || !on_key,
            "first video PES of a segment must be a random access point"
        );
        assert!(
            std::ptr::eq(first, first_media),
            "a video segment starts with its keyframe"
        );
    } else {
        assert!(
            first_media.rai && first_media.pcr.is_some(),
            "audio-only segment starts with PCR + RAI"
        );
    }
    for p in &pes {
        assert!(p.pts.is_some(), "every PES carries a PTS");
        if p.pid == VIDEO_PID {
            assert_eq!(p.stream_id, 0xE0);
            // PCR = DTS on every video PES: never after the DTS it must precede.
            assert_eq!(p.pcr, Some(p.dts.or(p.pts).unwrap()));
            let types = nal_types(&p.data);
            assert_eq!(types.first(), Some(&9), "access unit starts with an AUD");
            assert_eq!(p.data[..6], [0, 0, 0, 1, 0x09, 0xF0]);
            if p.rai {
                let idr = types
                    .iter()
                    .position(|&t| t == 5)
                    .expect("keyframe without an IDR");
                let sps = types
                    .iter()
                    .position(|&t| t == 7)
                    .expect("keyframe without an SPS");
                let pps = types
                    .iter()
                    .position(|&t| t == 8)
                    .expect("keyframe without a PPS");
                assert!(sps < pps && pps < idr, "SPS, PPS before the IDR: {types:?}");
            } else {
                assert!(!types.contains(&5), "IDR without random_access_indicator");
            }
        } else {
            assert_eq!(p.stream_id, 0xC0);
            assert!(!adts_frames(&p.data).is_empty());
            if video {
                assert_eq!((p.pcr, p.rai), (None, false));
            } else {
                assert_eq!(p.pcr, p.pts, "audio-only: PCR on the audio PID");
            }
        }
    }
    SegInfo { pes, cc }
}

fn durations(h: &Harness) -> Vec<u64> {
    h.all.iter().map(|s| s.duration_ms).collect()
}

fn video_starts(infos: &[SegInfo]) -> Vec<u64> {
    infos
        .iter()
        .map(|i| i.first_video_dts().expect("video") / 90)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn segments_cut_only_at_keyframes_once_long_enough() {
    // GOP 1.6 s against a 2 s target: a cut is due at 2 s, but the next keyframe is at 3.2 s.
    let mut h = Harness::new(config(2_000, 10, 2), 7, true, true);
    h.feed(&headers(0));
    h.feed(&media(0, 16_000, true, true, gop(1_600)));
    h.end();
    let infos = h.check_media();
    // 0, 3.2, 6.4, 9.6, 12.8 s; the last one closed by end().
    assert_eq!(video_starts(&infos), vec![0, 3_200, 6_400, 9_600, 12_800]);
    assert_eq!(&durations(&h)[..4], &[3_200; 4]);
    let pl = h.playlist();
    assert_eq!(pl.media_sequence, 7);
    // 3.2 s rounds to 3 (RFC 8216 compares EXTINF rounded to the nearest second).
    assert_eq!(pl.target_duration, 3);
    for (m, want) in pl.segments.iter().zip([3.2f32; 4]) {
        assert_eq!(m.duration, want);
    }
    // Every segment holds exactly the frames between its keyframe and the next one.
    for (info, start) in infos.iter().zip([0u64, 3_200, 6_400, 9_600, 12_800]) {
        let dts: Vec<u64> = info
            .video()
            .map(|p| p.dts.or(p.pts).unwrap() / 90)
            .collect();
        let want: Vec<u64> = (start..(start + 3_200).min(16_000)).step_by(40).collect();
        assert_eq!(dts, want);
        assert_eq!(
            info.video().filter(|p| p.rai).count(),
            2,
            "two GOPs per segment"
        );
    }
}

#[test]
fn irregular_keyframes_and_extinf() {
    // Keyframes at 0, 1.96 (too early), 4.04 (cut: 4.04 s), 6.04 (exactly 2 s later: cut),
    // 6.44 (too early), 8.44 (cut), 10.84 (cut), then end.
    let keys = [0, 1_960, 4_040, 6_040, 6_440, 8_440, 10_840];
    let mut h = Harness::new(config(2_000, 6, 4), 0, true, true);
    h.feed(&headers(0));
    h.feed(&media(0, 12_000, true, true, |ts| keys.contains(&ts)));
    let before_end = h.playlist();
    assert_eq!(before_end.segments.len(), 4);
    assert!(!before_end.end_list);
    h.end();
    let infos = h.check_media();
    assert_eq!(video_starts(&infos), vec![0, 4_040, 6_040, 8_440, 10_840]);
    assert_eq!(&durations(&h)[..4], &[4_040, 2_000, 2_400, 2_400]);
    let pl = h.playlist();
    let extinf: Vec<f32> = pl.segments.iter().map(|s| s.duration).collect();
    assert_eq!(&extinf[..4], &[4.04, 2.0, 2.4, 2.4]);
    // The first segment fixed it: 4.04 s rounds to 4.
    assert_eq!(pl.target_duration, 4);
    assert_eq!(before_end.target_duration, 4);
}

#[test]
fn sliding_window_and_retention() {
    let (window, retain) = (3, 2);
    let mut h = Harness::new(config(1_000, window, retain), 1_000, true, true);
    h.feed(&headers(0));
    h.feed(&media(0, 12_000, true, true, gop(1_000)));
    // Cuts at 1..=11 s: segments 1000..=1010 closed, [11 s, ...) open.
    assert_eq!(h.all.len(), 11);
    let pl = h.playlist();
    assert_eq!(pl.segments.len(), window);
    assert_eq!(pl.media_sequence, 1_008);
    let uris: Vec<&str> = pl.segments.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, ["seg-1008.ts", "seg-1009.ts", "seg-1010.ts"]);
    // Left the window but still served: 1006, 1007; older ones: gone.
    for seq in 1_000..1_012u64 {
        let held = h.p.segment(seq).is_some();
        assert_eq!(held, (1_006..=1_010).contains(&seq), "segment {seq}");
    }
    assert!(h.p.segment(u64::MAX).is_none());
    // Successive playlists: window filled up one by one, then slid by one each time.
    let seqs: Vec<(u64, usize)> = h
        .playlists
        .iter()
        .map(|p| (p.media_sequence, p.segments.len()))
        .collect();
    let mut want = vec![(0, 0), (1_000, 0), (1_000, 1), (1_000, 2), (1_000, 3)];
    want.extend((1_001..=1_008).map(|s| (s, 3)));
    assert_eq!(seqs, want);
    h.end();
    h.check_media();
}

#[test]
fn segment_transport_stream_structure() {
    let mut h = Harness::new(config(2_000, 6, 4), 0, true, true);
    h.feed(&headers(0));
    h.feed(&media(0, 8_000, true, true, gop(1_000)));
    h.end();
    let infos = h.check_media();
    assert_eq!(infos.len(), 4);
    for info in &infos {
        // Continuous counters within the segment on every PID; tables once each.
        assert_eq!(info.cc.len(), 4);
        let first = &info.pes[0];
        assert_eq!(first.pid, VIDEO_PID);
        assert!(first.rai);
        assert_eq!(nal_types(&first.data), vec![9, 7, 8, 6, 5]);
        // The SPS/PPS inserted are the publisher's, byte for byte.
        assert_eq!(&first.data[10..10 + SPS_720P.len()], &SPS_720P);
        // Keyframe: DTS = ts * 90, PTS = (ts + 80 ms) * 90.
        let dts = first.dts.unwrap();
        assert_eq!(first.pts, Some(dts + 80 * 90));
        assert_eq!(dts % (1_000 * 90), 0);
        assert!(info.audio().count() > 0);
        for a in info.audio() {
            assert_eq!(&a.data[..2], &[0xFF, 0xF1]);
        }
        // Audio carried with the video of the same time span.
        let last_audio = info.audio().last().unwrap();
        let n = adts_frames(&last_audio.data).len() as u64;
        let last_audio_ms = last_audio.pts.unwrap() / 90 + (n - 1) * AUDIO_MS;
        assert!(last_audio_ms >= dts / 90 + 2_000 - AUDIO_MS && last_audio_ms < dts / 90 + 2_000);
    }
}

/// A segment's bytes depend on nothing before it, so that every node writes the same
/// segment the same way however late it started: the elementary streams' continuity
/// counters start at 0 in each segment (their first packet says so), and the tables'
/// counters follow the sequence number, which keeps them continuous.
#[test]
fn continuity_counters_stand_on_their_own_in_each_segment() {
    let mut h = Harness::new(config(2_000, 6, 4), 0, true, true);
    h.feed(&headers(0));
    h.feed(&media(0, 8_000, true, true, gop(1_000)));
    h.end();
    let infos = h.check_media();
    for (info, segment) in infos.iter().zip(&h.all) {
        assert_eq!(info.cc[&VIDEO_PID].0, 0);
        assert_eq!(info.cc[&AUDIO_PID].0, 0);
        let tables = (segment.sequence % 16) as u8;
        assert_eq!((info.cc[&0].0, info.cc[&PMT_PID].0), (tables, tables));
    }
}

#[test]
fn generation_change_is_a_discontinuity() {
    let mut h = Harness::new(config(2_000, 3, 2), 500, true, true);
    h.feed(&headers(0));
    h.feed(&media(0, 5_000, true, true, gop(1_000)));
    assert_eq!(h.all.len(), 2);
    // A new publisher: headers again (identical), timestamps continuing; its first two
    // frames are inter frames (a decoder cannot start there), then a keyframe at 5.08 s.
    h.generation = 1;
    h.feed(&headers(5_000));
    // The break closed the open segment [4 s, 5 s) before anything of the new publisher.
    assert_eq!(h.all.len(), 3);
    assert!(!h.all[2].discontinuity);
    assert!(
        (960..=1_100).contains(&h.all[2].duration_ms),
        "{}",
        h.all[2].duration_ms
    );
    h.feed(&media(5_000, 20_000, true, true, |ts| {
        ts == 5_080 || (ts >= 6_000 && ts % 1_000 == 0)
    }));
    h.end();
    let infos = h.check_media();
    let starts = video_starts(&infos);
    // After 5.08 s the keyframes come at whole seconds: waiting past 7 s for one would
    // make a segment of 2.92 s, longer than the target duration (2) allows.
    assert_eq!(&starts[..5], &[0, 2_000, 4_000, 5_080, 7_000]);
    let disc: Vec<bool> = h.all.iter().map(|s| s.discontinuity).collect();
    assert_eq!(disc.iter().filter(|&&d| d).count(), 1);
    assert!(disc[3], "the new publisher's first segment");
    // Nothing of the new publisher before its first keyframe, nothing of the old after.
    assert!(infos[2]
        .video()
        .all(|p| p.dts.or(p.pts).unwrap() < 5_000 * 90));
    assert!(infos[2].audio().all(|p| p.pts.unwrap() < 5_000 * 90));
    assert!(infos[3].audio().all(|p| p.pts.unwrap() >= 5_080 * 90));
    // The playlist while segment 503 was listed, and after it left.
    let with: Vec<&MediaPlaylist> = h
        .playlists
        .iter()
        .filter(|p| p.segments.iter().any(|s| s.uri == uri(503)))
        .collect();
    assert!(!with.is_empty());
    for p in &with {
        let s = p.segments.iter().find(|s| s.uri == uri(503)).unwrap();
        assert!(s.discontinuity);
        assert_eq!(p.discontinuity_sequence, 0);
        assert_eq!(p.segments.iter().filter(|s| s.discontinuity).count(), 1);
    }
    let last = h.playlists.last().unwrap();
    assert!(last.media_sequence > 503);
    assert_eq!(last.discontinuity_sequence, 1);
    assert!(last.segments.iter().all(|s| !s.discontinuity));
    let seqs: Vec<u64> = h.playlists.iter().map(|p| p.media_sequence).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn discontinuity_sequence_counts_even_without_retained_segments() {
    // As above with retain_extra 0: the segment leaving the window is dropped at once, and
    // the harness checks EXT-X-DISCONTINUITY-SEQUENCE after every push.
    let mut h = Harness::new(config(2_000, 3, 0), 0, true, true);
    h.feed(&headers(0));
    h.feed(&media(0, 5_000, true, true, gop(1_000)));
    h.generation = 1;
    h.feed(&headers(5_000));
    h.feed(&media(5_000, 20_000, true, true, gop(1_000)));
    assert_eq!(h.playlist().discontinuity_sequence, 1);
}

#[test]
fn changed_sequence_header_is_a_discontinuity_identical_one_is_not() {
    let mut h = Harness::new(config(2_000, 10, 2), 0, true, true);
    h.feed(&headers(0));
    h.feed(&media(0, 3_000, true, true, gop(1_000)));
    // New encoder settings mid-segment (segment [2 s, ...) open).
    h.feed(&[Ev::VideoHeader {
        ts: 3_000,
        sps: &SPS_1080P,
    }]);
    assert_eq!(h.all.len(), 2, "the new header closed the open segment");
    h.feed(&media(3_000, 6_500, true, true, gop(1_000)));
    // The same header again, mid-GOP and right before a keyframe: no effect.
    h.feed(&[
        Ev::VideoHeader {
            ts: 6_500,
            sps: &SPS_1080P,
        },
        Ev::AudioHeader { ts: 6_500 },
    ]);
    h.feed(&media(6_500, 8_000, true, true, gop(1_000)));
    h.feed(&[Ev::VideoHeader {
        ts: 8_000,
        sps: &SPS_1080P,
    }]);
    h.feed(&media(8_000, 12_000, true, true, gop(1_000)));
    h.end();
    let infos = h.check_media();
    assert_eq!(
        video_starts(&infos),
        vec![0, 2_000, 3_000, 5_000, 7_000, 9_000, 11_000]
    );
    let disc: Vec<bool> = h.all.iter().map(|s| s.discontinuity).collect();
    assert_eq!(disc, [false, false, true, false, false, false, false]);
    // Keyframes after the change carry the new SPS; before it the old one.
    for (i, info) in infos.iter().enumerate() {
        let sps: &[u8] = if i >= 2 { &SPS_1080P } else { &SPS_720P };
        for k in info.video().filter(|p| p.rai) {
            assert_eq!(&k.data[10..10 + sps.len()], sps, "segment {i}");
        }
    }
    let pl = h.playlist();
    let tags: Vec<bool> = pl.segments.iter().map(|s| s.discontinuity).collect();
    assert_eq!(tags, disc);
}

/// A segment that ends with the stream lasts as long as its video: its last picture as
/// long as the pictures before it, whatever audio came after that picture.
#[test]
fn the_last_segment_lasts_as_long_as_its_video() {
    let mut h = Harness::new(config(2_000, 6, 4), 0, true, true);
    h.feed(&headers(0));
    // Pictures up to 5.28 s, audio up to 5.313 s; the last segment begins at 4 s.
    h.feed(&media(0, 5_320, true, true, gop(1_000)));
    h.end();
    let last = h.all.last().unwrap();
    assert_eq!(last.duration_ms, 5_280 + FRAME_MS - 4_000);
    let pl = h.playlist();
    assert_eq!(pl.segments.last().unwrap().duration, 1.32);
}

#[test]
fn end_closes_the_last_segment_and_lists_endlist() {
    let mut h = Harness::new(config(2_000, 6, 4), 0, true, true);
    h.feed(&headers(0));
    h.feed(&media(0, 6_000, true, true, gop(1_000)));
    assert_eq!(h.all.len(), 2);
    assert!(!h.playlist().end_list);
    assert!(!h.p.is_ended());
    h.end();
    assert!(h.p.is_ended());
    assert_eq!(h.all.len(), 3);
    let pl = h.playlist();
    assert!(pl.end_list);
    assert_eq!(pl.segments.len(), 3);
    let text = h.p.playlist(uri);
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    // The last segment has everything up to the last frame, pending audio included.
    let last = h.all[2].duration_ms;
    assert!((1_960..=2_100).contains(&last), "{last}");
    let infos = h.check_media();
    let v = infos[2].video().last().unwrap();
    assert_eq!(v.dts.or(v.pts).unwrap() / 90, 5_960);
    let a = infos[2].audio().last().unwrap();
    let n = adts_frames(&a.data).len() as u64;
    assert_eq!(a.pts.unwrap() / 90 + (n - 1) * AUDIO_MS, 5_980);
    // Nothing changes afterwards.
    let next = h.next_sequence();
    h.feed(&media(6_000, 9_000, true, true, gop(1_000)));
    h.end();
    assert_eq!(h.next_sequence(), next);
    assert_eq!(h.p.playlist(uri), text);
}

#[test]
fn audio_only_stream() {
    let mut h = Harness::new(config(2_000, 6, 4), 0, true, false);
    h.feed(&[Ev::AudioHeader { ts: 0 }]);
    h.feed(&media(0, 10_000, false, true, |_| false));
    h.end();
    let infos = h.check_media();
    // Cut at the first audio frame at or after start + 2 s: 87 * 23 = 2001 ms.
    let starts: Vec<u64> = infos.iter().map(|i| i.pes[0].pts.unwrap() / 90).collect();
    assert_eq!(starts, vec![0, 2_001, 4_002, 6_003, 8_004]);
    assert_eq!(&durations(&h)[..4], &[2_001; 4]);
    let pl = h.playlist();
    assert_eq!(pl.segments[0].duration, 2.001);
    assert_eq!(pl.target_duration, 2);
    for info in &infos {
        assert!(info.cc.keys().all(|&pid| pid != VIDEO_PID));
        assert!(info
            .pes
            .iter()
            .all(|p| p.pid == AUDIO_PID && p.pcr.is_some()));
        // Frames are gathered, but never across a segment boundary.
        assert!(info.pes.len() > 1);
    }
}

#[test]
fn video_only_stream() {
    let mut h = Harness::new(config(2_000, 6, 4), 0, false, true);
    h.feed(&[Ev::VideoHeader {
        ts: 0,
        sps: &SPS_720P,
    }]);
    h.feed(&media(0, 7_000, true, false, gop(1_000)));
    h.end();
    let infos = h.check_media();
    assert_eq!(video_starts(&infos), vec![0, 2_000, 4_000, 6_000]);
    for info in &infos {
        assert!(info.pes.iter().all(|p| p.pid == VIDEO_PID));
        assert!(!info.cc.contains_key(&AUDIO_PID));
    }
}

#[test]
fn frames_before_the_first_keyframe_are_dropped() {
    let mut h = Harness::new(config(2_000, 6, 4), 0, true, true);
    h.feed(&headers(0));
    // Joining mid-GOP: inter frames and audio until the keyframe at 440 ms.
    h.feed(&media(0, 4_000, true, true, |ts| ts == 440 || ts == 2_440));
    assert!(h.p.playlist(uri).contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
    h.end();
    let infos = h.check_media();
    assert_eq!(video_starts(&infos), vec![440, 2_440]);
    assert_eq!(h.all[0].duration_ms, 2_000);
    let first = &infos[0];
    assert!(first.pes.iter().all(|p| p.pts.unwrap() >= 440 * 90));
    assert_eq!(first.audio().next().unwrap().pts, Some(460 * 90));
}

#[test]
fn audio_only_packager_keeps_its_program() {
    // `HlsPackager::new`: has_audio/has_video "fix the PMT". Here the hub saw no video when
    // packaging started, and the publisher's video header came later.
    let mut h = Harness::new(config(2_000, 6, 4), 0, true, false);
    h.feed(&[Ev::AudioHeader { ts: 0 }]);
    h.feed(&media(0, 3_000, false, true, |_| false));
    h.feed(&[Ev::VideoHeader {
        ts: 3_000,
        sps: &SPS_720P,
    }]);
    h.feed(&media(3_000, 10_000, true, true, gop(1_000)));
    h.end();
    // check_segment: PMT audio only, PCR on audio, segments cut on audio every ~2 s.
    let infos = h.check_media();
    let starts: Vec<u64> = infos.iter().map(|i| i.pes[0].pts.unwrap() / 90).collect();
    // Once the stream has video its segments begin at video keyframes (4, 6, 8 s: the one
    // at 4 s is 1999 ms after the last start, within half a frame of the target); the
    // program stays audio-only.
    assert_eq!(starts, vec![0, 2_001, 4_002, 6_003, 8_004]);
}

#[test]
fn keyframe_before_sequence_header_does_not_start_a_segment() {
    let mut h = Harness::new(config(2_000, 6, 4), 0, true, true);
    h.feed(&[
        Ev::AudioHeader { ts: 0 },
        Ev::Video {
            ts: 0,
            key: true,
            cts: 0,
        },
    ]);
    h.feed(&[Ev::VideoHeader {
        ts: 40,
        sps: &SPS_720P,
    }]);
    h.feed(&media(40, 5_000, true, true, gop(1_000)));
    h.end();
    // check_segment asserts every segment starts with a keyframe.
    let infos = h.check_media();
    assert_eq!(video_starts(&infos)[0], 1_000);
}

// ---------------------------------------------------------------------------------------
// Property test
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Video { gap: u64, key: bool },
    Audio { gap: u64 },
    Reconnect,
    NewVideoHeader,
    Gap(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (prop_oneof![Just(40u64), 0u64..80], prop::bool::weighted(0.06))
            .prop_map(|(gap, key)| Step::Video { gap, key }),
        8 => prop_oneof![Just(23u64), 0u64..50].prop_map(|gap| Step::Audio { gap }),
        1 => Just(Step::Reconnect),
        1 => Just(Step::NewVideoHeader),
        1 => (0u64..6_000).prop_map(Step::Gap),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_streams_keep_playlists_valid(
        tracks in prop_oneof![Just((true, true)), Just((true, false)), Just((false, true))],
        target_ms in 500u64..4_500,
        window in 1usize..6,
        retain in 1usize..4,
        first_sequence in prop_oneof![Just(0u64), 0u64..u64::from(u32::MAX)],
        steps in prop::collection::vec(step(), 0..600),
        end in any::<bool>(),
    ) {
        let (has_video, has_audio) = tracks;
        let mut h = Harness::new(config(target_ms, window, retain), first_sequence, has_audio, has_video);
        if has_video {
            h.feed(&[Ev::VideoHeader { ts: 0, sps: &SPS_720P }]);
        }
        h.feed(&[Ev::AudioHeader { ts: 0 }]);
        let (mut video_ts, mut audio_ts) = (0u64, 0u64);
        let mut sps: &'static [u8] = &SPS_720P;
        let mut n = 0u64;
        for s in steps {
            match s {
                // A stream without a video header sends no video either.
                Step::Video { .. } if !has_video => {}
                Step::Video { gap, key } => {
                    video_ts += gap;
                    n += 1;
                    h.push(&Ev::Video { ts: video_ts, key, cts: cts_for(n, key) });
                }
                Step::Audio { gap } => {
                    audio_ts += gap;
                    h.push(&Ev::Audio { ts: audio_ts });
                }
                Step::Reconnect => {
                    h.generation += 1;
                    let ts = video_ts.max(audio_ts);
                    if has_video {
                        h.push(&Ev::VideoHeader { ts, sps });
                    }
                    h.push(&Ev::AudioHeader { ts });
                }
                Step::NewVideoHeader if has_video => {
                    sps = if sps == &SPS_720P[..] { &SPS_1080P } else { &SPS_720P };
                    h.push(&Ev::VideoHeader { ts: video_ts, sps });
                }
                Step::NewVideoHeader => {}
                Step::Gap(ms) => {
                    video_ts += ms;
                    audio_ts += ms;
                    h.stalled = true;
                }
            }
        }
        if end {
            h.end();
            // Everything accepted is in the segments, in order, with the right timestamps.
            h.check_media();
        } else {
            for s in &h.all {
                check_segment(&s.data, h.tracks(), h.starts_on_key(s.sequence));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Numbering from the marks: what lets several nodes list the same segments
// ---------------------------------------------------------------------------------------

/// Frames as an origin's hub hands them out: marked by `segmenter`, generation `generation`.
fn marked(segmenter: &mut Segmenter, evs: &[Ev], generation: u32) -> Vec<Frame> {
    evs.iter()
        .map(|ev| {
            let mut frame = ev.frame(generation);
            frame.segment = segmenter.observe(&frame);
            frame
        })
        .collect()
}

fn packager(frames: &[Frame]) -> HlsPackager {
    let mut p = HlsPackager::new(config(2_000, 4, 2), true, true);
    for f in frames {
        p.push(f);
    }
    p
}

#[test]
fn packagers_started_apart_list_the_same_segments() {
    let mut segmenter = Segmenter::new(2_000, 1_795_000_000);
    let mut frames = marked(&mut segmenter, &headers(0), 1);
    frames.extend(marked(
        &mut segmenter,
        &media(0, 5_000, true, true, gop(1_000)),
        1,
    ));
    // The publisher reconnects: a discontinuity that will have left both windows.
    frames.extend(marked(&mut segmenter, &headers(5_000), 2));
    frames.extend(marked(
        &mut segmenter,
        &media(5_000, 30_000, true, true, gop(1_000)),
        2,
    ));
    let early = packager(&frames);
    // The second node starts packaging 13.3 s in, mid-GOP.
    let late_start = frames.iter().position(|f| f.timestamp >= 13_300).unwrap();
    let mut late_frames = marked(&mut Segmenter::new(2_000, 0), &headers(0), 2);
    for f in &mut late_frames {
        f.segment = None;
    }
    late_frames.extend(frames[late_start..].iter().map(|f| {
        let mut copy = Frame::new(f.kind, f.timestamp, f.payload.clone());
        copy.generation = f.generation;
        copy.segment = f.segment;
        copy
    }));
    let late = packager(&late_frames);
    let text = early.playlist(uri);
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
    assert_eq!(late.playlist(uri), text);
    let pl = parse_playlist(&text);
    // Segments 0-14 closed (starts at 0, 2, 4, then 5, 7, ... 27 s), the last 4 listed.
    assert_eq!(pl.media_sequence, 1_795_000_000 + 11);
    assert_eq!(pl.segments.len(), 4);
}

/// A segment is the same bytes on every node: an edge that started packaging later, and
/// whose own clock runs 5 minutes behind the origin's (it placed the stream on its
/// timeline when it began pulling), writes each segment exactly as the origin does.
#[test]
fn packagers_started_apart_write_the_same_bytes() {
    let mut segmenter = Segmenter::new(2_000, 1_795_000_000);
    let mut frames = marked(&mut segmenter, &headers(300_000), 1);
    frames.extend(marked(
        &mut segmenter,
        &media(300_000, 320_000, true, true, gop(1_000)),
        1,
    ));
    let origin = packager(&frames);
    let late_start = frames.iter().position(|f| f.timestamp >= 306_700).unwrap();
    let mut edge_frames = marked(&mut Segmenter::new(2_000, 0), &headers(0), 1);
    for f in &mut edge_frames {
        f.segment = None;
    }
    edge_frames.extend(frames[late_start..].iter().map(|f| {
        let mut copy = Frame::new(f.kind, f.timestamp - 300_000, f.payload.clone());
        copy.generation = f.generation;
        copy.segment = f.segment;
        copy
    }));
    let edge = packager(&edge_frames);
    let pl = parse_playlist(&edge.playlist(uri));
    assert_eq!(pl.segments.len(), 4);
    for sequence in (pl.media_sequence..).take(pl.segments.len()) {
        let (a, b) = (
            origin.segment(sequence).unwrap(),
            edge.segment(sequence).unwrap(),
        );
        assert_eq!(a.duration_ms, b.duration_ms);
        assert!(a.data == b.data, "segment {sequence} differs");
    }
    assert_eq!(edge.playlist(uri), origin.playlist(uri));
}

/// Segments 100-103 (0-6.1 s) from one source, then the stream moves to another whose
/// segments are numbered from `then`.
fn moved_to_another_source(then: u64) -> HlsPackager {
    let mut first = Segmenter::new(2_000, 100);
    let mut frames = marked(&mut first, &headers(0), 1);
    frames.extend(marked(
        &mut first,
        &media(0, 6_100, true, true, gop(2_000)),
        1,
    ));
    let mut second = Segmenter::new(2_000, then);
    frames.extend(marked(&mut second, &headers(6_100), 2));
    let keys = |ts: u64| ts % 2_000 == 120;
    frames.extend(marked(
        &mut second,
        &media(6_120, 10_100, true, true, keys),
        2,
    ));
    packager(&frames)
}

#[test]
fn numbers_that_jump_start_the_listing_again() {
    // Another origin took over, numbering from its own start.
    let p = moved_to_another_source(900);
    let pl = parse_playlist(&p.playlist(uri));
    assert_eq!(pl.media_sequence, 900);
    assert!(pl.segments[0].discontinuity);
    assert_eq!(pl.discontinuity_sequence, 0);
    assert!(p.segment(101).is_none(), "the old listing is gone");
    assert!(p.segment(900).is_some());
}

#[test]
fn numbers_that_go_back_are_counted_on() {
    let p = moved_to_another_source(50);
    let pl = parse_playlist(&p.playlist(uri));
    let uris: Vec<&str> = pl.segments.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(
        uris,
        ["seg-101.ts", "seg-102.ts", "seg-103.ts", "seg-104.ts"]
    );
    // 100-103 from the first source (103 cut short by the break), then 50 counted as 104.
    assert!(pl.segments[3].discontinuity && !pl.segments[2].discontinuity);
}
