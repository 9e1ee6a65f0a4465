//! MPEG-2 transport stream muxing (ISO/IEC 13818-1) for HLS segments, plus the
//! conversion of FLV/RTMP codec payloads (AVCC/HVCC NAL units, raw AAC) into the
//! elementary stream formats TS carries (Annex B, ADTS).
//!
//! Sans-IO: everything is appended to caller-owned buffers; the caller decides
//! where segments start (call [`TsMuxer::write_tables`] there).

use bytes::{BufMut, BytesMut};

use crate::frame::{Frame, MediaKind};

use super::codec::{
    length_prefixed_nalus, parse_audio_tag, parse_video_tag, AacConfig, AudioCodec, AvcConfig,
    HevcConfig, VideoCodec, VideoPacketKind,
};

/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the video elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the audio elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// Size of every transport stream packet.
pub const TS_PACKET_SIZE: usize = 188;

const PAT_PID: u16 = 0;
const SYNC_BYTE: u8 = 0x47;
/// Packet bytes after the 4-byte header: adaptation field plus payload.
const PACKET_BODY: usize = TS_PACKET_SIZE - 4;
/// Program number of the single program; also used as transport_stream_id.
const PROGRAM_NUMBER: u16 = 1;
/// PTS/DTS/PCR bases are 33-bit counters of a 90 kHz clock.
const MASK_33: u64 = (1 << 33) - 1;

const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_HEVC: u8 = 0x24;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
const STREAM_ID_VIDEO: u8 = 0xE0;
const STREAM_ID_AUDIO: u8 = 0xC0;

/// Largest raw AAC frame an ADTS header can describe (13-bit frame length incl. header).
const MAX_ADTS_PAYLOAD: usize = 0x1FFF - 7;

/// Annex B start code used in front of every NAL unit we emit.
const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// H.264 access unit delimiter, primary_pic_type 7 (any slice type).
const AVC_AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];
/// HEVC access unit delimiter (NAL type 35, temporal id 1), pic_type 2 (any).
const HEVC_AUD: [u8; 7] = [0, 0, 0, 1, 0x46, 0x01, 0x50];

const AVC_NAL_SPS: u8 = 7;
const AVC_NAL_PPS: u8 = 8;
const AVC_NAL_AUD: u8 = 9;
const HEVC_NAL_VPS: u8 = 32;
const HEVC_NAL_SPS: u8 = 33;
const HEVC_NAL_PPS: u8 = 34;
const HEVC_NAL_AUD: u8 = 35;

/// Why a payload could not be converted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TsError {
    /// ADTS frame_length is 13 bits, so longer frames cannot be framed (and are
    /// not valid AAC anyway); writing a wrong length would desync every decoder.
    #[error("AAC frame of {0} bytes is too long for ADTS")]
    AacFrameTooLong(usize),
}

/// Video codec carried in the transport stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsVideo {
    H264,
    H265,
}

/// Which elementary streams the program has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsTracks {
    pub video: Option<TsVideo>,
    /// AAC in ADTS.
    pub audio: bool,
}

/// Muxes one HLS segment. Its bytes depend only on what goes into it and on the segment's
/// sequence number, never on earlier segments, so that every node writes the same segment
/// the same way, whenever it started: the PAT and PMT (one each per segment) count their
/// continuity from the sequence number, which keeps them continuous from one segment to
/// the next; the audio and video PIDs count from 0 in each segment, and their first packet
/// says so with the discontinuity indicator, which tells a demuxer reading segment after
/// segment not to take the jump for lost packets.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    tracks: TsTracks,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
    /// No packet of the PID was written yet in this segment.
    fresh_video: bool,
    fresh_audio: bool,
}

/// Adaptation field contents of the first packet of a PES.
#[derive(Debug, Clone, Copy, Default)]
struct FirstPacket {
    /// PCR base in 90 kHz units (already masked).
    pcr: Option<u64>,
    random_access: bool,
    /// The continuity counter does not follow on from the PID's last packet.
    discontinuity: bool,
}

impl TsMuxer {
    /// The muxer of segment `sequence`.
    pub fn for_segment(tracks: TsTracks, sequence: u64) -> Self {
        let cc = (sequence & 0x0F) as u8;
        Self {
            tracks,
            cc_pat: cc,
            cc_pmt: cc,
            cc_video: 0,
            cc_audio: 0,
            fresh_video: true,
            fresh_audio: true,
        }
    }

    pub fn tracks(&self) -> TsTracks {
        self.tracks
    }

    fn pcr_pid(&self) -> u16 {
        if self.tracks.video.is_some() {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }

    /// PAT and PMT, one packet each; write at the start of every segment so each
    /// segment is decodable on its own.
    pub fn write_tables(&mut self, out: &mut BytesMut) {
        let mut pat = Vec::with_capacity(16);
        pat.put_u8(0x00); // table_id: program_association_section
        pat.put_u16(0xB000 | 13); // syntax indicator, '0', reserved, section_length
        pat.put_u16(PROGRAM_NUMBER); // transport_stream_id
        pat.put_u8(0xC1); // reserved, version 0, current_next_indicator
        pat.put_u8(0); // section_number
        pat.put_u8(0); // last_section_number
        pat.put_u16(PROGRAM_NUMBER);
        pat.put_u16(0xE000 | PMT_PID);
        pat.put_u32(crc32_mpeg2(&pat));
        write_section(out, PAT_PID, &mut self.cc_pat, &pat);

        let mut streams: Vec<(u8, u16)> = Vec::with_capacity(2);
        if let Some(video) = self.tracks.video {
            let stream_type = match video {
                TsVideo::H264 => STREAM_TYPE_H264,
                TsVideo::H265 => STREAM_TYPE_HEVC,
            };
            streams.push((stream_type, VIDEO_PID));
        }
        if self.tracks.audio {
            streams.push((STREAM_TYPE_AAC_ADTS, AUDIO_PID));
        }
        // program_number .. program_info_length (9) + 5 per stream + CRC (4).
        let section_length = 9 + 5 * streams.len() as u16 + 4;
        let mut pmt = Vec::with_capacity(32);
        pmt.put_u8(0x02); // table_id: TS_program_map_section
        pmt.put_u16(0xB000 | section_length);
        pmt.put_u16(PROGRAM_NUMBER);
        pmt.put_u8(0xC1);
        pmt.put_u8(0);
        pmt.put_u8(0);
        pmt.put_u16(0xE000 | self.pcr_pid());
        pmt.put_u16(0xF000); // program_info_length 0
        for (stream_type, pid) in streams {
            pmt.put_u8(stream_type);
            pmt.put_u16(0xE000 | pid);
            pmt.put_u16(0xF000); // ES_info_length 0
        }
        pmt.put_u32(crc32_mpeg2(&pmt));
        write_section(out, PMT_PID, &mut self.cc_pmt, &pmt);
    }

    /// One video access unit in Annex B as one PES (PES_packet_length 0, as
    /// allowed for video). Timestamps are 90 kHz and masked to 33 bits. The first
    /// packet carries the PCR (= dts) and, for keyframes, random_access_indicator.
    /// Ignored when the muxer has no video track (the PMT would not list the PID).
    pub fn write_video(
        &mut self,
        out: &mut BytesMut,
        pts: u64,
        dts: u64,
        key: bool,
        annexb: &[u8],
    ) {
        if self.tracks.video.is_none() {
            return;
        }
        let pts = pts & MASK_33;
        let dts = dts & MASK_33;
        let (header, len) = pes_header(
            STREAM_ID_VIDEO,
            Some(pts),
            Some(dts).filter(|&d| d != pts),
            0,
            true,
        );
        let first = FirstPacket {
            pcr: Some(dts),
            random_access: key,
            discontinuity: std::mem::take(&mut self.fresh_video),
        };
        write_pes(
            out,
            VIDEO_PID,
            &mut self.cc_video,
            first,
            &header[..len],
            annexb,
        );
    }

    /// One or more ADTS frames with the PTS of the first. Without a video track the
    /// first packet also carries the PCR (= pts) and random_access_indicator.
    /// Payloads too long for one bounded PES (audio may not use length 0) are
    /// split; the continuation PES carry no PTS.
    /// Ignored when the muxer has no audio track.
    pub fn write_audio(&mut self, out: &mut BytesMut, pts: u64, adts: &[u8]) {
        if !self.tracks.audio {
            return;
        }
        let pts = pts & MASK_33;
        let audio_only = self.tracks.video.is_none();
        let mut rest = adts;
        let mut first_pes = true;
        loop {
            let pts_field = first_pes.then_some(pts);
            // Bytes after PES_packet_length: 3 flag/length bytes plus the PTS.
            let header_tail = 3 + if first_pes { 5 } else { 0 };
            let chunk_len = rest.len().min(usize::from(u16::MAX) - header_tail);
            let (chunk, tail) = rest.split_at(chunk_len);
            // Fits by construction of chunk_len.
            let packet_length = (header_tail + chunk_len) as u16;
            let (header, len) =
                pes_header(STREAM_ID_AUDIO, pts_field, None, packet_length, first_pes);
            let first = FirstPacket {
                pcr: (audio_only && first_pes).then_some(pts),
                random_access: audio_only && first_pes,
                discontinuity: std::mem::take(&mut self.fresh_audio),
            };
            write_pes(
                out,
                AUDIO_PID,
                &mut self.cc_audio,
                first,
                &header[..len],
                chunk,
            );
            rest = tail;
            first_pes = false;
            if rest.is_empty() {
                break;
            }
        }
    }
}

/// Next 4-bit continuity counter value; counts packets with payload per PID.
fn next_cc(cc: &mut u8) -> u8 {
    let value = *cc & 0x0F;
    *cc = (value + 1) & 0x0F;
    value
}

/// A PSI section in a single packet: pointer_field 0, the section, 0xFF padding.
fn write_section(out: &mut BytesMut, pid: u16, cc: &mut u8, section: &[u8]) {
    debug_assert!(section.len() < PACKET_BODY);
    out.reserve(TS_PACKET_SIZE);
    let start = out.len();
    out.put_u8(SYNC_BYTE);
    out.put_u16(0x4000 | pid); // payload_unit_start_indicator
    out.put_u8(0x10 | next_cc(cc)); // payload only
    out.put_u8(0); // pointer_field
    out.put_slice(section);
    let used = out.len() - start;
    out.put_bytes(0xFF, TS_PACKET_SIZE.saturating_sub(used));
}

/// PES header up to and including the optional fields; returns bytes and length.
/// `dts` must only be given when it differs from `pts`.
fn pes_header(
    stream_id: u8,
    pts: Option<u64>,
    dts: Option<u64>,
    packet_length: u16,
    aligned: bool,
) -> ([u8; 19], usize) {
    let mut h = [0u8; 19];
    h[..4].copy_from_slice(&[0, 0, 1, stream_id]);
    h[4..6].copy_from_slice(&packet_length.to_be_bytes());
    // '10', not scrambled, priority 0, data_alignment_indicator, no copyright, copy.
    h[6] = 0x80 | if aligned { 0x04 } else { 0 };
    let mut len = 9;
    match (pts, dts) {
        (Some(pts), Some(dts)) => {
            h[7] = 0xC0;
            h[8] = 10;
            h[9..14].copy_from_slice(&timestamp_field(0b0011, pts));
            h[14..19].copy_from_slice(&timestamp_field(0b0001, dts));
            len += 10;
        }
        (Some(pts), None) => {
            h[7] = 0x80;
            h[8] = 5;
            h[9..14].copy_from_slice(&timestamp_field(0b0010, pts));
            len += 5;
        }
        // A DTS without PTS is forbidden; callers never pass it.
        (None, _) => {
            h[7] = 0;
            h[8] = 0;
        }
    }
    (h, len)
}

/// 5-byte PTS/DTS field: 4-bit prefix, then 3+15+15 bits each followed by a marker bit.
fn timestamp_field(prefix: u8, ts: u64) -> [u8; 5] {
    let ts = ts & MASK_33;
    [
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8 & 0x7F) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8 & 0x7F) << 1) | 1,
    ]
}

/// 6-byte PCR: 33-bit base, 6 reserved '1' bits, 9-bit extension 0.
fn pcr_field(base: u64) -> [u8; 6] {
    let value = ((base & MASK_33) << 15) | (0x3F << 9);
    let b = value.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Split `header` + `data` into packets on `pid`. Every packet is filled to 188
/// bytes: the last one (or a short first one) is padded by adaptation field
/// stuffing, never by PES stuffing, so the PES length stays exact.
fn write_pes(
    out: &mut BytesMut,
    pid: u16,
    cc: &mut u8,
    first: FirstPacket,
    header: &[u8],
    data: &[u8],
) {
    let total = header.len() + data.len();
    // Upper bound: one extra packet for the adaptation field of the first.
    out.reserve((total / PACKET_BODY + 2) * TS_PACKET_SIZE);
    let mut pos = 0;
    let mut is_first = true;
    loop {
        let af = if is_first {
            first
        } else {
            FirstPacket::default()
        };
        // Adaptation field bytes that must be present: length + flags (+ PCR).
        let af_required = match (af.pcr, af.random_access || af.discontinuity) {
            (Some(_), _) => 8,
            (None, true) => 2,
            (None, false) => 0,
        };
        let take = (total - pos).min(PACKET_BODY - af_required);
        let af_size = PACKET_BODY - take;

        out.put_u8(SYNC_BYTE);
        out.put_u16(if is_first { 0x4000 } else { 0 } | pid);
        let control = if af_size > 0 { 0x30 } else { 0x10 };
        out.put_u8(control | next_cc(cc));
        if af_size > 0 {
            // af_size <= 184, so the length byte fits.
            out.put_u8((af_size - 1) as u8);
            if af_size > 1 {
                let flags = if af.discontinuity { 0x80 } else { 0 }
                    | if af.random_access { 0x40 } else { 0 }
                    | if af.pcr.is_some() { 0x10 } else { 0 };
                out.put_u8(flags);
                let mut used = 2;
                if let Some(base) = af.pcr {
                    out.put_slice(&pcr_field(base));
                    used += 6;
                }
                out.put_bytes(0xFF, af_size - used);
            }
        }
        put_range(out, header, data, pos, take);
        pos += take;
        is_first = false;
        if pos >= total {
            break;
        }
    }
}

/// Append `len` bytes starting at `start` of the concatenation `a ++ b`.
fn put_range(out: &mut BytesMut, a: &[u8], b: &[u8], start: usize, len: usize) {
    let end = start + len;
    if let Some(part) = a.get(start.min(a.len())..end.min(a.len())) {
        out.put_slice(part);
    }
    let b_start = start.saturating_sub(a.len());
    let b_end = end.saturating_sub(a.len());
    if let Some(part) = b.get(b_start..b_end) {
        out.put_slice(part);
    }
}

/// CRC-32/MPEG-2 lookup table (polynomial 0x04C11DB7, MSB first).
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32/MPEG-2 (init 0xFFFFFFFF, no reflection, no final xor), as PSI sections use.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

/// Audio frames are gathered into one PES (fewer TS packets) until this many are waiting
/// or video needs to go out.
const AUDIO_FRAMES_PER_PES: usize = 6;

/// AAC frames (as ADTS) waiting to go out together in one PES.
#[derive(Debug, Default)]
pub(crate) struct PendingAudio {
    adts: Vec<u8>,
    frames: usize,
    /// PTS of the first waiting frame, 90 kHz.
    pts: u64,
}

impl PendingAudio {
    /// Add a raw AAC frame; false when it cannot be carried in ADTS.
    pub(crate) fn push(&mut self, config: &AacConfig, raw: &[u8], timestamp_ms: u64) -> bool {
        if aac_to_adts(config, raw, &mut self.adts).is_err() {
            return false;
        }
        if self.frames == 0 {
            self.pts = timestamp_ms * 90;
        }
        self.frames += 1;
        true
    }

    /// Enough frames wait to fill a PES.
    pub(crate) fn is_full(&self) -> bool {
        self.frames >= AUDIO_FRAMES_PER_PES
    }

    /// Write what waits as one PES.
    pub(crate) fn flush(&mut self, muxer: &mut TsMuxer, out: &mut BytesMut) {
        if self.frames > 0 {
            muxer.write_audio(out, self.pts, &self.adts);
            self.adts.clear();
            self.frames = 0;
        }
    }
}

/// One continuous transport stream, for an HTTP-TS player (VLC, ffplay, set-top boxes),
/// from the frames the hub gives a viewer: headers, then the stream from a keyframe. It
/// starts at the first picture (audio before it is dropped; an audio-only stream starts at
/// once) with its tracks fixed from the headers seen by then, and the program tables go
/// ahead of every keyframe, so that a player may also start at any of them. Each picture
/// is one PES; audio is gathered a few frames per PES.
#[derive(Debug)]
pub struct TsStream {
    codecs: TsCodecs,
    /// Set at the first frame written.
    muxer: Option<TsMuxer>,
    audio: PendingAudio,
    scratch: Vec<u8>,
}

impl Default for TsStream {
    fn default() -> Self {
        Self::new()
    }
}

impl TsStream {
    pub fn new() -> TsStream {
        TsStream {
            codecs: TsCodecs::default(),
            muxer: None,
            audio: PendingAudio::default(),
            scratch: Vec::new(),
        }
    }

    /// Mux `frame`, appending what it makes to `out`.
    pub fn push(&mut self, frame: &Frame, out: &mut BytesMut) {
        match frame.kind {
            MediaKind::Metadata => {}
            MediaKind::Video if frame.sequence_header => {
                if let Ok((video, config)) = TsCodecs::parse_video_header(&frame.payload) {
                    // The program is fixed once started: a new codec cannot join it.
                    let fits = self
                        .muxer
                        .as_ref()
                        .is_none_or(|m| m.tracks().video == Some(video));
                    if fits {
                        self.codecs.set_video(config);
                    }
                }
            }
            MediaKind::Audio if frame.sequence_header => {
                if let Some(config) = TsCodecs::parse_audio_header(&frame.payload) {
                    self.codecs.set_audio(config);
                }
            }
            MediaKind::Video => self.video(frame, out),
            MediaKind::Audio => self.audio(frame, out),
        }
    }

    /// The stream ends: write the audio still waiting.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if let Some(muxer) = &mut self.muxer {
            self.audio.flush(muxer, out);
        }
    }

    fn video(&mut self, frame: &Frame, out: &mut BytesMut) {
        self.scratch.clear();
        let Some(composition_time) =
            self.codecs
                .video_frame(&frame.payload, frame.key, &mut self.scratch)
        else {
            return;
        };
        if self.muxer.is_none() && !frame.key {
            return;
        }
        let codecs = &self.codecs;
        let muxer = self.muxer.get_or_insert_with(|| {
            TsMuxer::for_segment(
                TsTracks {
                    video: codecs.video(),
                    audio: codecs.aac().is_some(),
                },
                0,
            )
        });
        self.audio.flush(muxer, out);
        if frame.key {
            muxer.write_tables(out);
        }
        let dts = frame.timestamp;
        let pts = dts.saturating_add_signed(i64::from(composition_time));
        muxer.write_video(out, pts * 90, dts * 90, frame.key, &self.scratch);
    }

    fn audio(&mut self, frame: &Frame, out: &mut BytesMut) {
        let Some((config, raw)) = self.codecs.raw_aac(&frame.payload) else {
            return;
        };
        let muxer = match &mut self.muxer {
            Some(muxer) => muxer,
            // An audio-only stream starts at once; with video, at its first picture.
            None if !self.codecs.has_video() => {
                let tracks = TsTracks {
                    video: None,
                    audio: true,
                };
                let muxer = self.muxer.insert(TsMuxer::for_segment(tracks, 0));
                muxer.write_tables(out);
                muxer
            }
            None => return,
        };
        if self.audio.push(&config, raw, frame.timestamp) && self.audio.is_full() {
            self.audio.flush(muxer, out);
        }
    }
}

/// The codec configurations that carry FLV frames in a transport stream: H.264 or HEVC
/// parameter sets (put in front of keyframes, in Annex B), AAC's for the ADTS headers.
/// What the HLS packager and HTTP-TS share.
#[derive(Debug, Clone, Default)]
pub struct TsCodecs {
    avc: Option<AvcConfig>,
    hevc: Option<HevcConfig>,
    aac: Option<AacConfig>,
}

/// Why a video sequence header cannot configure a transport stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoHeaderError {
    /// Not a video tag at all: nothing to say.
    NotVideo,
    /// A codec TS does not carry here (AV1, VP9).
    Unsupported(VideoCodec),
    /// Its configuration record does not parse.
    Unparsable,
}

impl TsCodecs {
    /// A video sequence header: the configuration it gives and the video it makes.
    pub fn parse_video_header(payload: &[u8]) -> Result<(TsVideo, VideoConfig), VideoHeaderError> {
        let info = parse_video_tag(payload).ok_or(VideoHeaderError::NotVideo)?;
        let record = &payload[info.data_offset..];
        match info.codec {
            VideoCodec::Avc => AvcConfig::parse(record)
                .map(|c| (TsVideo::H264, VideoConfig::Avc(c)))
                .map_err(|_| VideoHeaderError::Unparsable),
            VideoCodec::Hevc => HevcConfig::parse(record)
                .map(|c| (TsVideo::H265, VideoConfig::Hevc(c)))
                .map_err(|_| VideoHeaderError::Unparsable),
            other => Err(VideoHeaderError::Unsupported(other)),
        }
    }

    /// Carry video with `config` from now on.
    pub fn set_video(&mut self, config: VideoConfig) {
        (self.avc, self.hevc) = match config {
            VideoConfig::Avc(avc) => (Some(avc), None),
            VideoConfig::Hevc(hevc) => (None, Some(hevc)),
        };
    }

    /// An AAC sequence header's configuration, if it is one.
    pub fn parse_audio_header(payload: &[u8]) -> Option<AacConfig> {
        let info = parse_audio_tag(payload)?;
        if info.codec != AudioCodec::Aac {
            return None;
        }
        AacConfig::parse(&payload[info.data_offset..]).ok()
    }

    pub fn set_audio(&mut self, config: AacConfig) {
        self.aac = Some(config);
    }

    pub fn has_video(&self) -> bool {
        self.avc.is_some() || self.hevc.is_some()
    }

    /// The video configured, if any.
    pub fn video(&self) -> Option<TsVideo> {
        match (&self.avc, &self.hevc) {
            (Some(_), _) => Some(TsVideo::H264),
            (None, Some(_)) => Some(TsVideo::H265),
            (None, None) => None,
        }
    }

    pub fn aac(&self) -> Option<&AacConfig> {
        self.aac.as_ref()
    }

    /// A picture (an FLV video tag that is not a header) in Annex B, appended to `out`:
    /// its composition time offset (ms), or `None` when it is not a picture the
    /// configuration carries.
    pub fn video_frame(&self, payload: &[u8], key: bool, out: &mut Vec<u8>) -> Option<i32> {
        let info = parse_video_tag(payload)?;
        if info.packet != VideoPacketKind::Frame {
            return None;
        }
        let data = &payload[info.data_offset..];
        match (&self.avc, &self.hevc) {
            (Some(avc), _) => avc_to_annexb(avc, data, key, out),
            (None, Some(hevc)) => hevc_to_annexb(hevc, data, key, out),
            (None, None) => return None,
        }
        Some(info.composition_time)
    }

    /// The raw AAC of an FLV audio tag that is not a header, if AAC is configured.
    pub fn raw_aac<'a>(&self, payload: &'a [u8]) -> Option<(AacConfig, &'a [u8])> {
        let config = self.aac?;
        let info = parse_audio_tag(payload)?;
        Some((config, &payload[info.data_offset..]))
    }
}

/// The video configuration of a transport stream.
#[derive(Debug, Clone)]
pub enum VideoConfig {
    Avc(AvcConfig),
    Hevc(HevcConfig),
}

fn put_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&START_CODE);
    out.extend_from_slice(nal);
}

/// Convert FLV AVC coded-frame data (length-prefixed NAL units, i.e. the payload
/// after the FLV video header) into an Annex B access unit: AUD, then for
/// keyframes SPS+PPS from `config` unless the access unit carries both itself,
/// then the NAL units. AUDs in the input are dropped (ours replaces them).
/// Truncated input yields the NAL units before the truncation.
pub fn avc_to_annexb(config: &AvcConfig, data: &[u8], key: bool, out: &mut Vec<u8>) {
    let nal_type = |nal: &[u8]| nal.first().map_or(0, |b| b & 0x1F);
    let size = config.nal_length_size;
    out.reserve(data.len() + AVC_AUD.len());
    out.extend_from_slice(&AVC_AUD);
    if key {
        let (mut has_sps, mut has_pps) = (false, false);
        for nal in length_prefixed_nalus(data, size) {
            match nal_type(nal) {
                AVC_NAL_SPS => has_sps = true,
                AVC_NAL_PPS => has_pps = true,
                _ => {}
            }
        }
        if !(has_sps && has_pps) {
            for ps in config.sps.iter().chain(&config.pps) {
                put_nal(out, ps);
            }
        }
    }
    for nal in length_prefixed_nalus(data, size).filter(|n| nal_type(n) != AVC_NAL_AUD) {
        put_nal(out, nal);
    }
}

/// HEVC counterpart of [`avc_to_annexb`]: AUD (type 35), then for keyframes
/// VPS+SPS+PPS from `config` unless the access unit carries all three.
pub fn hevc_to_annexb(config: &HevcConfig, data: &[u8], key: bool, out: &mut Vec<u8>) {
    let nal_type = |nal: &[u8]| nal.first().map_or(0, |b| (b >> 1) & 0x3F);
    let size = config.nal_length_size;
    out.reserve(data.len() + HEVC_AUD.len());
    out.extend_from_slice(&HEVC_AUD);
    if key {
        let (mut has_vps, mut has_sps, mut has_pps) = (false, false, false);
        for nal in length_prefixed_nalus(data, size) {
            match nal_type(nal) {
                HEVC_NAL_VPS => has_vps = true,
                HEVC_NAL_SPS => has_sps = true,
                HEVC_NAL_PPS => has_pps = true,
                _ => {}
            }
        }
        if !(has_vps && has_sps && has_pps) {
            for ps in config.vps.iter().chain(&config.sps).chain(&config.pps) {
                put_nal(out, ps);
            }
        }
    }
    for nal in length_prefixed_nalus(data, size).filter(|n| nal_type(n) != HEVC_NAL_AUD) {
        put_nal(out, nal);
    }
}

/// An FLV raw AAC frame -> one ADTS frame (7-byte header from the
/// AudioSpecificConfig, then the data). Nothing is written on error.
pub fn aac_to_adts(config: &AacConfig, raw: &[u8], out: &mut Vec<u8>) -> Result<(), TsError> {
    if raw.len() > MAX_ADTS_PAYLOAD {
        return Err(TsError::AacFrameTooLong(raw.len()));
    }
    out.reserve(raw.len() + 7);
    out.extend_from_slice(&config.adts_header(raw.len()));
    out.extend_from_slice(raw);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mpeg2ts::es::StreamType;
    use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
    use mpeg2ts::ts::{ReadTsPacket, TsPacket, TsPacketReader, TsPayload};
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Event {
        Tables,
        Video {
            pts: u64,
            dts: u64,
            key: bool,
            data: Vec<u8>,
        },
        Audio {
            pts: u64,
            data: Vec<u8>,
        },
    }

    fn mux(tracks: TsTracks, events: &[Event]) -> BytesMut {
        let mut muxer = TsMuxer::for_segment(tracks, 0);
        assert_eq!(muxer.tracks(), tracks);
        let mut out = BytesMut::new();
        muxer.write_tables(&mut out);
        for e in events {
            match e {
                Event::Tables => muxer.write_tables(&mut out),
                Event::Video {
                    pts,
                    dts,
                    key,
                    data,
                } => muxer.write_video(&mut out, *pts, *dts, *key, data),
                Event::Audio { pts, data } => muxer.write_audio(&mut out, *pts, data),
            }
        }
        out
    }

    fn read_packets(stream: &[u8]) -> Vec<TsPacket> {
        let mut reader = TsPacketReader::new(stream);
        let mut packets = Vec::new();
        while let Some(p) = reader.read_ts_packet().expect("mpeg2ts rejected a packet") {
            packets.push(p);
        }
        packets
    }

    /// (stream_id, pts, dts, data) of every PES, as reassembled by mpeg2ts.
    type PesInfo = (u8, Option<u64>, Option<u64>, Vec<u8>);
    fn read_pes(stream: &[u8]) -> Vec<PesInfo> {
        let mut reader = PesPacketReader::new(TsPacketReader::new(stream));
        let mut all = Vec::new();
        while let Some(p) = reader.read_pes_packet().expect("mpeg2ts rejected a PES") {
            let h = p.header;
            all.push((
                h.stream_id.as_u8(),
                h.pts.map(|t| t.as_u64()),
                h.dts.map(|t| t.as_u64()),
                p.data,
            ));
        }
        all
    }

    /// Checks everything the independent parser can tell about `stream` against
    /// the events it was muxed from (audio events must each fit in one PES).
    fn check_stream(tracks: TsTracks, events: &[Event], stream: &[u8]) {
        assert_eq!(stream.len() % TS_PACKET_SIZE, 0);
        for chunk in stream.chunks(TS_PACKET_SIZE) {
            assert_eq!(chunk[0], SYNC_BYTE);
        }
        let packets = read_packets(stream);
        assert_eq!(packets.len(), stream.len() / TS_PACKET_SIZE);

        // PAT then PMT.
        match &packets[0].payload {
            Some(TsPayload::Pat(pat)) => {
                assert_eq!(packets[0].header.pid.as_u16(), PAT_PID);
                assert_eq!(pat.table.len(), 1);
                assert_eq!(pat.table[0].program_num, 1);
                assert_eq!(pat.table[0].program_map_pid.as_u16(), PMT_PID);
            }
            other => panic!("first packet is not a PAT: {other:?}"),
        }
        let mut expected_es = Vec::new();
        match tracks.video {
            Some(TsVideo::H264) => expected_es.push((StreamType::H264, VIDEO_PID)),
            Some(TsVideo::H265) => expected_es.push((StreamType::H265, VIDEO_PID)),
            None => {}
        }
        if tracks.audio {
            expected_es.push((StreamType::AdtsAac, AUDIO_PID));
        }
        let pcr_pid = if tracks.video.is_some() {
            VIDEO_PID
        } else {
            AUDIO_PID
        };
        match &packets[1].payload {
            Some(TsPayload::Pmt(pmt)) => {
                assert_eq!(packets[1].header.pid.as_u16(), PMT_PID);
                assert_eq!(pmt.program_num, 1);
                assert_eq!(pmt.pcr_pid.map(|p| p.as_u16()), Some(pcr_pid));
                let es: Vec<_> = pmt
                    .es_info
                    .iter()
                    .map(|e| (e.stream_type, e.elementary_pid.as_u16()))
                    .collect();
                assert_eq!(es, expected_es);
            }
            other => panic!("second packet is not a PMT: {other:?}"),
        }

        // Continuity counters: +1 per packet on each PID, no gaps.
        let mut last_cc: HashMap<u16, u8> = HashMap::new();
        for p in &packets {
            assert!(p.payload.is_some());
            let cc = p.header.continuity_counter.as_u8();
            if let Some(prev) = last_cc.insert(p.header.pid.as_u16(), cc) {
                assert_eq!(cc, (prev + 1) % 16, "pid {:#x}", p.header.pid.as_u16());
            }
        }

        // First-packet adaptation fields: PCR and random access exactly where expected, and
        // the discontinuity indicator on the first packet of each elementary stream only
        // (its counter starts at 0 in every segment).
        let mut video_starts = Vec::new();
        let mut audio_starts = Vec::new();
        let mut seen_pids = Vec::new();
        for p in &packets {
            let pid = p.header.pid.as_u16();
            let af = p.adaptation_field.as_ref();
            let pcr = af.and_then(|a| a.pcr).map(|c| c.as_u64());
            let rai = af.is_some_and(|a| a.random_access_indicator);
            let first_of_pid = !seen_pids.contains(&pid);
            seen_pids.push(pid);
            let elementary = pid == VIDEO_PID || pid == AUDIO_PID;
            assert_eq!(
                af.is_some_and(|a| a.discontinuity_indicator),
                elementary && first_of_pid,
                "discontinuity indicator on pid {pid:#x}"
            );
            if let Some(a) = af {
                assert!(a.opcr.is_none() && a.splice_countdown.is_none());
            }
            match &p.payload {
                Some(TsPayload::Pes(_)) if pid == VIDEO_PID => video_starts.push((pcr, rai)),
                Some(TsPayload::Pes(_)) if pid == AUDIO_PID => audio_starts.push((pcr, rai)),
                Some(TsPayload::Raw(_)) => {
                    assert_eq!((pcr, rai), (None, false), "continuation packet")
                }
                _ => assert!(af.is_none()),
            }
        }
        let mut video_expected = Vec::new();
        let mut audio_expected = Vec::new();
        let mut video_pes = Vec::new();
        let mut audio_pes = Vec::new();
        for e in events {
            match e {
                Event::Video {
                    pts,
                    dts,
                    key,
                    data,
                } => {
                    let (pts, dts) = (pts & MASK_33, dts & MASK_33);
                    video_expected.push((Some(dts * 300), *key));
                    video_pes.push((
                        STREAM_ID_VIDEO,
                        Some(pts),
                        (dts != pts).then_some(dts),
                        data.clone(),
                    ));
                }
                Event::Audio { pts, data } => {
                    let pts = pts & MASK_33;
                    let audio_only = tracks.video.is_none();
                    audio_expected.push((audio_only.then_some(pts * 300), audio_only));
                    audio_pes.push((STREAM_ID_AUDIO, Some(pts), None, data.clone()));
                }
                Event::Tables => {}
            }
        }
        assert_eq!(video_starts, video_expected);
        assert_eq!(audio_starts, audio_expected);

        let pes = read_pes(stream);
        let got_video: Vec<_> = pes
            .iter()
            .filter(|p| p.0 == STREAM_ID_VIDEO)
            .cloned()
            .collect();
        let got_audio: Vec<_> = pes
            .iter()
            .filter(|p| p.0 == STREAM_ID_AUDIO)
            .cloned()
            .collect();
        assert_eq!(pes.len(), got_video.len() + got_audio.len());
        assert_eq!(got_video, video_pes);
        assert_eq!(got_audio, audio_pes);
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn crc32_mpeg2_known_vectors() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        assert_eq!(crc32_mpeg2(b""), 0xFFFF_FFFF);
        // The PAT for program 1 -> PMT PID 0x1000, transport_stream_id 1 (as in
        // ffmpeg-made HLS segments) ends in CRC 2A B1 04 B2.
        let pat = [
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00,
        ];
        assert_eq!(crc32_mpeg2(&pat), 0x2AB1_04B2);
        // Appending the CRC makes the whole section's CRC zero.
        let mut with_crc = pat.to_vec();
        with_crc.extend_from_slice(&0x2AB1_04B2u32.to_be_bytes());
        assert_eq!(crc32_mpeg2(&with_crc), 0);
    }

    #[test]
    fn table_packets_byte_exact() {
        let mut muxer = TsMuxer::for_segment(
            TsTracks {
                video: Some(TsVideo::H264),
                audio: true,
            },
            0,
        );
        let mut out = BytesMut::new();
        muxer.write_tables(&mut out);
        assert_eq!(out.len(), 2 * TS_PACKET_SIZE);
        let pat_head = [
            0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00,
            0x01, 0xF0, 0x00, 0x2A, 0xB1, 0x04, 0xB2,
        ];
        assert_eq!(&out[..pat_head.len()], &pat_head);
        assert!(out[pat_head.len()..TS_PACKET_SIZE]
            .iter()
            .all(|&b| b == 0xFF));
        let pmt = &out[TS_PACKET_SIZE..];
        let pmt_head = [
            0x47, 0x50, 0x00, 0x10, 0x00, // header, pointer field
            0x02, 0xB0, 0x17, 0x00, 0x01, 0xC1, 0x00, 0x00, 0xE1, 0x00, 0xF0,
            0x00, // PCR PID 0x100
            0x1B, 0xE1, 0x00, 0xF0, 0x00, // H.264 on 0x100
            0x0F, 0xE1, 0x01, 0xF0, 0x00, // AAC on 0x101
        ];
        assert_eq!(&pmt[..pmt_head.len()], &pmt_head);
        let crc = crc32_mpeg2(&pmt[5..pmt_head.len()]).to_be_bytes();
        assert_eq!(&pmt[pmt_head.len()..pmt_head.len() + 4], &crc);
        assert!(pmt[pmt_head.len() + 4..].iter().all(|&b| b == 0xFF));
        // Counters advance per PID across segments.
        muxer.write_tables(&mut out);
        assert_eq!(out[2 * TS_PACKET_SIZE + 3], 0x11);
        assert_eq!(out[3 * TS_PACKET_SIZE + 3], 0x11);
    }

    #[test]
    fn timestamp_and_pcr_fields() {
        // PTS 90000 (1 s), PTS-only prefix '0010': the familiar 21 00 05 BF 21.
        assert_eq!(
            timestamp_field(0b0010, 90_000),
            [0x21, 0x00, 0x05, 0xBF, 0x21]
        );
        // All 33 bits set, DTS prefix.
        assert_eq!(
            timestamp_field(0b0001, MASK_33),
            [0x1F, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        assert_eq!(timestamp_field(0b0011, 0), [0x31, 0x00, 0x01, 0x00, 0x01]);
        assert_eq!(pcr_field(0), [0, 0, 0, 0, 0x7E, 0x00]);
        assert_eq!(pcr_field(MASK_33), [0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0x00]);
        assert_eq!(pcr_field(1 << 33), pcr_field(0));
        assert_eq!(pcr_field(1), [0, 0, 0, 0, 0xFE, 0x00]);
    }

    #[test]
    fn pes_header_layout() {
        let mut muxer = TsMuxer::for_segment(
            TsTracks {
                video: Some(TsVideo::H264),
                audio: false,
            },
            0,
        );
        let mut out = BytesMut::new();
        muxer.write_video(&mut out, 93_600, 90_000, true, &[0, 0, 0, 1, 0x09, 0xF0]);
        assert_eq!(out.len(), TS_PACKET_SIZE);
        // Header: PUSI, PID 0x100, AF + payload, CC 0.
        assert_eq!(&out[..4], &[0x47, 0x41, 0x00, 0x30]);
        // AF fills what the 25-byte PES does not; its length byte excludes itself.
        let payload_len = 19 + 6;
        assert_eq!(usize::from(out[4]), PACKET_BODY - payload_len - 1);
        // discontinuity (the PID's first packet in the segment) + random_access + PCR flag
        assert_eq!(out[5], 0xD0);
        assert_eq!(&out[6..12], &pcr_field(90_000));
        assert!(out[12..TS_PACKET_SIZE - payload_len]
            .iter()
            .all(|&b| b == 0xFF));
        let pes = &out[TS_PACKET_SIZE - payload_len..];
        assert_eq!(
            pes,
            &[
                0x00, 0x00, 0x01, 0xE0, 0x00, 0x00, 0x84, 0xC0, 0x0A, // start, len 0, flags
                0x31, 0x00, 0x05, 0xDB, 0x41, // PTS 93600
                0x11, 0x00, 0x05, 0xBF, 0x21, // DTS 90000
                0x00, 0x00, 0x00, 0x01, 0x09, 0xF0,
            ]
        );
    }

    #[test]
    fn last_packet_stuffing_of_one_and_two_bytes() {
        let tracks = TsTracks {
            video: Some(TsVideo::H264),
            audio: false,
        };
        // First packet: 184 - 8 (AF with PCR) - 14 (PES header) = 162 data bytes.
        for (extra, af_len_byte) in [(183usize, None), (182, Some(0u8)), (184, None)] {
            let data = pattern(162 + extra, 7);
            let events = [Event::Video {
                pts: 5,
                dts: 5,
                key: false,
                data,
            }];
            let out = mux(tracks, &events);
            assert_eq!(out.len(), 4 * TS_PACKET_SIZE);
            let last = &out[3 * TS_PACKET_SIZE..];
            match (extra, af_len_byte) {
                (184, _) => assert_eq!(last[3] & 0x30, 0x10, "full packet: payload only"),
                (183, _) => assert_eq!((last[3] & 0x30, last[4]), (0x30, 0), "1-byte AF"),
                (_, Some(len)) => assert_eq!(
                    (last[3] & 0x30, last[4], last[5]),
                    (0x30, len + 1, 0),
                    "2-byte AF"
                ),
                _ => unreachable!(),
            }
            check_stream(tracks, &events, &out);
        }
    }

    #[test]
    fn h264_and_aac_stream_parses_back() {
        let tracks = TsTracks {
            video: Some(TsVideo::H264),
            audio: true,
        };
        let big = (1u64 << 32) + 12_345;
        let events = vec![
            Event::Video {
                pts: 3_600,
                dts: 0,
                key: true,
                data: pattern(20_000, 1),
            },
            Event::Audio {
                pts: 100,
                data: pattern(371, 2),
            },
            Event::Video {
                pts: 7_200,
                dts: 3_600,
                key: false,
                data: pattern(3_000, 3),
            },
            Event::Audio {
                pts: 2_190,
                data: pattern(1, 4),
            },
            Event::Tables,
            // Above 2^32 and above 2^33 (masked to 33 bits).
            Event::Video {
                pts: big,
                dts: big,
                key: true,
                data: pattern(183, 5),
            },
            Event::Audio {
                pts: (1 << 33) + 77,
                data: pattern(700, 6),
            },
            Event::Video {
                pts: u64::MAX,
                dts: u64::MAX - 3_000,
                key: false,
                data: Vec::new(),
            },
            Event::Audio {
                pts: 0,
                data: Vec::new(),
            },
        ];
        check_stream(tracks, &events, &mux(tracks, &events));
    }

    /// An HTTP-TS stream starts at the first keyframe (audio before it is dropped), puts
    /// the tables ahead of every keyframe and keeps its continuity counters running.
    #[test]
    fn a_continuous_stream_starts_at_a_keyframe_with_tables_ahead_of_each() {
        use crate::frame::{Frame, MediaKind};
        use crate::test_payloads::{araw, aseq, vinter, vkey, vseq};
        let frame = |kind, ts, payload| Frame::new(kind, ts, payload);
        let mut stream = TsStream::new();
        let mut out = BytesMut::new();
        let frames = [
            frame(MediaKind::Video, 0, vseq(1)),
            frame(MediaKind::Audio, 0, aseq(2)),
            frame(MediaKind::Audio, 10, araw(3)),
            frame(MediaKind::Video, 40, vinter(4)),
            frame(MediaKind::Video, 80, vkey(5)),
            frame(MediaKind::Audio, 90, araw(6)),
            frame(MediaKind::Video, 120, vinter(7)),
            frame(MediaKind::Video, 160, vkey(8)),
            frame(MediaKind::Audio, 170, araw(9)),
        ];
        for f in &frames {
            stream.push(f, &mut out);
        }
        stream.finish(&mut out);
        let packets = read_packets(&out);
        let pids: Vec<u16> = packets.iter().map(|p| p.header.pid.as_u16()).collect();
        assert_eq!(pids.first(), Some(&0), "starts with the PAT");
        assert_eq!(
            pids.iter().filter(|&&p| p == 0).count(),
            2,
            "tables per keyframe"
        );
        let pes = read_pes(&out);
        let video_pts: Vec<u64> = (pes.iter())
            .filter(|p| p.0 == STREAM_ID_VIDEO)
            .filter_map(|p| p.1)
            .collect();
        assert_eq!(video_pts, [80 * 90, 120 * 90, 160 * 90]);
        let audio_pts: Vec<u64> = (pes.iter())
            .filter(|p| p.0 == STREAM_ID_AUDIO)
            .filter_map(|p| p.1)
            .collect();
        assert_eq!(
            audio_pts,
            [90 * 90, 170 * 90],
            "audio before the first picture is dropped"
        );
        // Video's counters run on across the keyframe (a discontinuity only at the start).
        let video_ccs: Vec<u8> = (packets.iter())
            .filter(|p| p.header.pid.as_u16() == VIDEO_PID)
            .map(|p| p.header.continuity_counter.as_u8())
            .collect();
        assert!(
            video_ccs.windows(2).all(|w| w[1] == (w[0] + 1) % 16),
            "{video_ccs:?}"
        );
    }

    #[test]
    fn hevc_video_only_stream() {
        let tracks = TsTracks {
            video: Some(TsVideo::H265),
            audio: false,
        };
        let events: Vec<Event> = (0..40)
            .map(|i| Event::Video {
                pts: i * 3_000 + 6_000,
                dts: i * 3_000,
                key: i % 10 == 0,
                data: pattern(900 + i as usize * 37, i as u8),
            })
            .collect();
        let out = mux(tracks, &events);
        check_stream(tracks, &events, &out);
        // Audio on a muxer without an audio track is dropped, not written to an undeclared PID.
        let mut muxer = TsMuxer::for_segment(tracks, 0);
        let mut buf = BytesMut::new();
        muxer.write_audio(&mut buf, 0, &[1, 2, 3]);
        assert!(buf.is_empty());
    }

    #[test]
    fn audio_only_carries_pcr_and_random_access() {
        let tracks = TsTracks {
            video: None,
            audio: true,
        };
        let events: Vec<Event> = (0..30)
            .map(|i| Event::Audio {
                pts: 1_000 + i * 1_920,
                data: pattern(200 + i as usize * 11, 9),
            })
            .collect();
        check_stream(tracks, &events, &mux(tracks, &events));
        let mut muxer = TsMuxer::for_segment(tracks, 0);
        let mut buf = BytesMut::new();
        muxer.write_video(&mut buf, 0, 0, true, &[1, 2, 3]);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_audio_is_split_into_bounded_pes() {
        let tracks = TsTracks {
            video: Some(TsVideo::H264),
            audio: true,
        };
        let data = pattern(150_000, 3);
        let mut muxer = TsMuxer::for_segment(tracks, 0);
        let mut out = BytesMut::new();
        muxer.write_tables(&mut out);
        muxer.write_audio(&mut out, 1234, &data);
        let pes = read_pes(&out);
        assert_eq!(pes.len(), 3);
        assert_eq!((pes[0].1, pes[1].1, pes[2].1), (Some(1234), None, None));
        assert_eq!(pes[0].3.len(), 65_535 - 8);
        assert_eq!(pes[1].3.len(), 65_535 - 3);
        let joined: Vec<u8> = pes.iter().flat_map(|p| p.3.iter().copied()).collect();
        assert_eq!(joined, data);
    }

    fn avc_config(nal_length_size: u8) -> AvcConfig {
        AvcConfig {
            profile: 100,
            compatibility: 0,
            level: 31,
            nal_length_size,
            sps: vec![Bytes::from_static(&[0x67, 0x64, 0x00, 0x1F])],
            pps: vec![Bytes::from_static(&[0x68, 0xEB, 0xEC, 0xB2])],
        }
    }

    fn avcc(size: u8, nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes()[4 - usize::from(size)..]);
            v.extend_from_slice(n);
        }
        v
    }

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [0, 0, 0, 1].iter().chain(n.iter()).copied())
            .collect()
    }

    #[test]
    fn avc_keyframe_gets_parameter_sets() {
        let cfg = avc_config(4);
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00];
        let sei: &[u8] = &[0x06, 0x05, 0x01];
        let mut out = Vec::new();
        avc_to_annexb(&cfg, &avcc(4, &[sei, idr]), true, &mut out);
        assert_eq!(
            out,
            annexb(&[&[0x09, 0xF0], &cfg.sps[0], &cfg.pps[0], sei, idr])
        );
        assert_eq!(&out[..6], &[0, 0, 0, 1, 0x09, 0xF0]);

        // In-band SPS/PPS (and an AUD) present: nothing duplicated.
        let sps: &[u8] = &[0x67, 0x42, 0x00, 0x1E];
        let pps: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];
        let mut out = Vec::new();
        avc_to_annexb(
            &cfg,
            &avcc(4, &[&[0x09, 0x10], sps, pps, idr]),
            true,
            &mut out,
        );
        assert_eq!(out, annexb(&[&[0x09, 0xF0], sps, pps, idr]));

        // Only an in-band PPS: the config's sets are still needed.
        let mut out = Vec::new();
        avc_to_annexb(&cfg, &avcc(4, &[pps, idr]), true, &mut out);
        assert_eq!(
            out,
            annexb(&[&[0x09, 0xF0], &cfg.sps[0], &cfg.pps[0], pps, idr])
        );

        // Non-key frame: no parameter sets; 2-byte lengths.
        let cfg2 = avc_config(2);
        let slice: &[u8] = &[0x41, 0x9A, 0x00];
        let mut out = Vec::new();
        avc_to_annexb(&cfg2, &avcc(2, &[slice, &[0x09, 0x30]]), false, &mut out);
        assert_eq!(out, annexb(&[&[0x09, 0xF0], slice]));
    }

    #[test]
    fn avc_truncated_input() {
        let cfg = avc_config(4);
        let slice: &[u8] = &[0x41, 0x9A, 0x00];
        let mut data = avcc(4, &[slice, &[0x41, 1, 2, 3, 4, 5]]);
        data.truncate(data.len() - 2);
        let mut out = Vec::new();
        avc_to_annexb(&cfg, &data, false, &mut out);
        assert_eq!(out, annexb(&[&[0x09, 0xF0], slice]));
        // A length prefix claiming 4 GiB.
        let mut out = Vec::new();
        avc_to_annexb(&cfg, &[0xFF, 0xFF, 0xFF, 0xFF, 0x65], true, &mut out);
        assert_eq!(out, annexb(&[&[0x09, 0xF0], &cfg.sps[0], &cfg.pps[0]]));
        // Invalid length size from a hostile config: only AUD (+ config sets).
        let mut out = Vec::new();
        avc_to_annexb(&avc_config(0), &avcc(4, &[slice]), false, &mut out);
        assert_eq!(out, AVC_AUD);
        for len in 0..data.len() {
            avc_to_annexb(&cfg, &data[..len], true, &mut Vec::new());
        }
    }

    #[test]
    fn hevc_conversion() {
        let vps: &[u8] = &[0x40, 0x01, 0x0C];
        let sps: &[u8] = &[0x42, 0x01, 0x01];
        let pps: &[u8] = &[0x44, 0x01, 0xC1];
        let cfg = HevcConfig {
            nal_length_size: 4,
            vps: vec![Bytes::from_static(&[0x40, 0x01, 0xAA])],
            sps: vec![Bytes::from_static(&[0x42, 0x01, 0xBB])],
            pps: vec![Bytes::from_static(&[0x44, 0x01, 0xCC])],
        };
        let aud: &[u8] = &[0x46, 0x01, 0x50];
        let idr: &[u8] = &[0x26, 0x01, 0xAF, 0x00]; // IDR_W_RADL (19)
        let trail: &[u8] = &[0x02, 0x01, 0xD0]; // TRAIL_R (1)

        let mut out = Vec::new();
        hevc_to_annexb(&cfg, &avcc(4, &[idr]), true, &mut out);
        assert_eq!(
            out,
            annexb(&[aud, &cfg.vps[0], &cfg.sps[0], &cfg.pps[0], idr])
        );
        assert_eq!(&out[..7], &[0, 0, 0, 1, 0x46, 0x01, 0x50]);

        let mut out = Vec::new();
        hevc_to_annexb(
            &cfg,
            &avcc(4, &[&[0x46, 0x01, 0x10], vps, sps, pps, idr]),
            true,
            &mut out,
        );
        assert_eq!(out, annexb(&[aud, vps, sps, pps, idr]));

        // SPS and PPS in band but no VPS: config sets inserted.
        let mut out = Vec::new();
        hevc_to_annexb(&cfg, &avcc(4, &[sps, pps, idr]), true, &mut out);
        assert_eq!(
            out,
            annexb(&[aud, &cfg.vps[0], &cfg.sps[0], &cfg.pps[0], sps, pps, idr])
        );

        let mut out = Vec::new();
        hevc_to_annexb(&cfg, &avcc(4, &[trail, aud]), false, &mut out);
        assert_eq!(out, annexb(&[aud, trail]));

        let data = avcc(4, &[trail, idr]);
        for len in 0..data.len() {
            let mut out = Vec::new();
            hevc_to_annexb(&cfg, &data[..len], false, &mut out);
            assert!(out.starts_with(&HEVC_AUD));
            assert!(out.len() <= HEVC_AUD.len() + data.len());
        }
    }

    #[test]
    fn aac_to_adts_frames() {
        let cfg = AacConfig::parse(&[0x12, 0x10]).expect("AAC-LC 44.1 kHz stereo");
        let raw = pattern(100, 0x21);
        let mut out = vec![0xEE];
        aac_to_adts(&cfg, &raw, &mut out).expect("fits");
        assert_eq!(&out[1..8], &cfg.adts_header(100));
        // Independent check of the header from the ADTS layout (frame length 107).
        assert_eq!(&out[1..8], &[0xFF, 0xF1, 0x50, 0x80, 0x0D, 0x7F, 0xFC]);
        assert_eq!(&out[8..], &raw[..]);

        let mut out = Vec::new();
        aac_to_adts(&cfg, &[], &mut out).expect("empty frame");
        assert_eq!(out, cfg.adts_header(0));
        let max = vec![0; MAX_ADTS_PAYLOAD];
        let mut out = Vec::new();
        aac_to_adts(&cfg, &max, &mut out).expect("largest frame");
        assert_eq!(out.len(), 0x1FFF);
        let mut out = Vec::new();
        assert_eq!(
            aac_to_adts(&cfg, &[0; MAX_ADTS_PAYLOAD + 1], &mut out),
            Err(TsError::AacFrameTooLong(MAX_ADTS_PAYLOAD + 1))
        );
        assert!(out.is_empty());
    }

    fn tracks_strategy() -> impl Strategy<Value = TsTracks> {
        prop_oneof![
            Just(TsTracks {
                video: Some(TsVideo::H264),
                audio: true
            }),
            Just(TsTracks {
                video: Some(TsVideo::H265),
                audio: true
            }),
            Just(TsTracks {
                video: Some(TsVideo::H264),
                audio: false
            }),
            Just(TsTracks {
                video: None,
                audio: true
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn random_streams_parse_back(
            tracks in tracks_strategy(),
            raw in proptest::collection::vec(
                (0u8..10, 0usize..5000, 0u64..(1 << 34), 0u64..20_000, any::<bool>(), any::<u8>()),
                0..16,
            ),
        ) {
            let events: Vec<Event> = raw
                .into_iter()
                .map(|(kind, size, pts, cts, key, seed)| {
                    let video = match (tracks.video.is_some(), tracks.audio) {
                        (true, true) => kind < 5,
                        (v, _) => v,
                    };
                    if kind == 9 {
                        Event::Tables
                    } else if video {
                        Event::Video { pts: pts + cts, dts: pts, key, data: pattern(size, seed) }
                    } else {
                        Event::Audio { pts, data: pattern(size, seed) }
                    }
                })
                .collect();
            check_stream(tracks, &events, &mux(tracks, &events));
        }

        #[test]
        fn annexb_round_trip(
            size in prop_oneof![Just(1u8), Just(2u8), Just(4u8)],
            key in any::<bool>(),
            nals in proptest::collection::vec(
                (prop_oneof![Just(0x65u8), Just(0x41), Just(0x06), Just(0x01)], proptest::collection::vec(any::<u8>(), 0..200)),
                0..8,
            ),
        ) {
            let nals: Vec<Vec<u8>> = nals.into_iter().map(|(h, mut rest)| { rest.insert(0, h); rest }).collect();
            let refs: Vec<&[u8]> = nals.iter().map(Vec::as_slice).collect();
            let cfg = avc_config(size);
            let mut out = Vec::new();
            avc_to_annexb(&cfg, &avcc(size, &refs), key, &mut out);
            let mut expected: Vec<&[u8]> = vec![&[0x09, 0xF0]];
            if key {
                expected.push(&cfg.sps[0]);
                expected.push(&cfg.pps[0]);
            }
            expected.extend(refs.iter().copied());
            prop_assert_eq!(out, annexb(&expected));
        }

        #[test]
        fn conversions_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), key in any::<bool>(), size in 0u8..6) {
            let mut out = Vec::new();
            avc_to_annexb(&avc_config(size), &data, key, &mut out);
            // Each NAL (>= 1 byte) with a prefix (>= 1 byte) gains at most 3 bytes.
            prop_assert!(out.len() <= AVC_AUD.len() + 16 + data.len() * 5 / 2);
            let cfg = HevcConfig { nal_length_size: size, vps: Vec::new(), sps: Vec::new(), pps: Vec::new() };
            let mut out = Vec::new();
            hevc_to_annexb(&cfg, &data, key, &mut out);
            prop_assert!(out.starts_with(&HEVC_AUD));
        }
    }
}
