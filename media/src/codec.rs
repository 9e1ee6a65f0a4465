//! Codec-level headers inside FLV/RTMP audio and video payloads (legacy FLV and
//! Enhanced RTMP), plus the codec configuration records a server needs to inspect:
//! AVC/HEVC decoder configuration records, H.264 SPS dimensions, AAC
//! AudioSpecificConfig and ADTS framing.
//!
//! Everything here reads borrowed slices and never panics on malformed input.

use bytes::Bytes;

const fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*code)
}

const FOURCC_AVC: u32 = fourcc(b"avc1");
const FOURCC_HEVC: u32 = fourcc(b"hvc1");
const FOURCC_AV1: u32 = fourcc(b"av01");
const FOURCC_VP9: u32 = fourcc(b"vp09");
const FOURCC_AAC: u32 = fourcc(b"mp4a");
const FOURCC_MP3: u32 = fourcc(b".mp3");
const FOURCC_OPUS: u32 = fourcc(b"Opus");

/// Video codec of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Avc,
    Hevc,
    Av1,
    Vp9,
    /// Legacy FLV CodecID (< 16) or Enhanced RTMP FourCC (big-endian); 0 when the
    /// packet does not name a codec (command frames, multi-codec multitrack).
    Other(u32),
}

/// Frame type of a video tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFrameKind {
    /// Key frame (1) or server-generated key frame (4): a decoder can start here.
    Key,
    /// Inter frame (2) or disposable inter frame (3).
    Inter,
    /// Command frame (5), reserved values, or a metadata packet (frame type ignored).
    Other,
}

/// What a video tag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoPacketKind {
    /// Decoder configuration record (avcC / hvcC / av1C / vpcC).
    SequenceHeader,
    /// Coded picture data.
    Frame,
    EndOfSequence,
    /// Enhanced RTMP AMF-encoded metadata (e.g. HDR colour info).
    Metadata,
    /// Command frames, multitrack packets, MPEG-2 TS sequence starts, reserved types.
    Other,
}

/// Result of [`parse_video_tag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTagInfo {
    pub codec: VideoCodec,
    pub frame: VideoFrameKind,
    pub packet: VideoPacketKind,
    /// Composition time offset (PTS - DTS) in milliseconds; 0 unless a coded frame carries one.
    pub composition_time: i32,
    /// True for the Enhanced RTMP (FourCC) header form.
    pub enhanced: bool,
    /// Byte offset in the payload where codec data (AVCC NALUs / config record / OBUs)
    /// starts; always `<= payload.len()`.
    pub data_offset: usize,
}

/// Audio codec of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    Mp3,
    Opus,
    /// Legacy SoundFormat (< 16) or Enhanced RTMP audio FourCC (big-endian); 0 when
    /// a multi-codec multitrack packet names no single codec.
    Other(u32),
}

/// Result of [`parse_audio_tag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTagInfo {
    pub codec: AudioCodec,
    /// AAC AudioSpecificConfig or Enhanced RTMP SequenceStart (e.g. OpusHead).
    pub is_sequence_header: bool,
    /// Byte offset in the payload where codec data starts; always `<= payload.len()`.
    pub data_offset: usize,
}

/// Why a codec structure could not be parsed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("codec data truncated")]
    Truncated,
    #[error("unsupported configuration record version {0}")]
    UnsupportedVersion(u8),
    #[error("expected an SPS NAL unit, got NAL type {0}")]
    NotSps(u8),
    #[error("reserved AAC sampling frequency index {0}")]
    ReservedSamplingIndex(u8),
    #[error("invalid codec data: {0}")]
    Invalid(&'static str),
}

fn frame_kind(frame_type: u8) -> VideoFrameKind {
    match frame_type {
        1 | 4 => VideoFrameKind::Key,
        2 | 3 => VideoFrameKind::Inter,
        _ => VideoFrameKind::Other,
    }
}

fn video_codec_from_fourcc(code: u32) -> VideoCodec {
    match code {
        FOURCC_AVC => VideoCodec::Avc,
        FOURCC_HEVC => VideoCodec::Hevc,
        FOURCC_AV1 => VideoCodec::Av1,
        FOURCC_VP9 => VideoCodec::Vp9,
        other => VideoCodec::Other(other),
    }
}

fn audio_codec_from_fourcc(code: u32) -> AudioCodec {
    match code {
        FOURCC_AAC => AudioCodec::Aac,
        FOURCC_MP3 => AudioCodec::Mp3,
        FOURCC_OPUS => AudioCodec::Opus,
        other => AudioCodec::Other(other),
    }
}

fn read_fourcc(payload: &[u8], pos: usize) -> Option<u32> {
    let b = payload.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Sign-extended big-endian 24-bit integer.
fn si24(b: &[u8]) -> Option<i32> {
    let b = b.get(..3)?;
    // Place the 24 bits at the top of an i32, then shift back arithmetically.
    Some(i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8)
}

/// Skip Enhanced RTMP ModEx blocks (packet type 7, shared by audio and video):
/// `size` (UI8 + 1, or UI16 + 1 when the UI8 says 256), data, then a byte whose low
/// nibble is the next packet type. Returns the final packet type and position.
/// Modifiers (today only a nanosecond timestamp offset) are ignored.
fn skip_mod_ex(payload: &[u8], mut packet_type: u8, mut pos: usize) -> Option<(u8, usize)> {
    const MOD_EX: u8 = 7;
    // Each round consumes at least 3 bytes, so the loop is bounded by the payload.
    while packet_type == MOD_EX {
        let mut size = usize::from(*payload.get(pos)?) + 1;
        pos += 1;
        if size == 256 {
            let b = payload.get(pos..pos + 2)?;
            size = usize::from(u16::from_be_bytes([b[0], b[1]])) + 1;
            pos += 2;
        }
        pos = pos.checked_add(size)?;
        packet_type = *payload.get(pos)? & 0x0F;
        pos += 1;
    }
    Some((packet_type, pos))
}

/// Parse the header of an RTMP/FLV video payload: legacy FLV (CodecID 7 AVC, and 12
/// HEVC as used by several Chinese CDNs) or Enhanced RTMP (IsExHeader bit, FourCC).
/// Returns `None` if the payload is too short to tell.
pub fn parse_video_tag(payload: &[u8]) -> Option<VideoTagInfo> {
    let b0 = *payload.first()?;
    if b0 & 0x80 != 0 {
        parse_enhanced_video(payload, b0)
    } else {
        parse_legacy_video(payload, b0)
    }
}

fn parse_legacy_video(payload: &[u8], b0: u8) -> Option<VideoTagInfo> {
    let frame_type = b0 >> 4;
    let codec = match b0 & 0x0F {
        7 => VideoCodec::Avc,
        12 => VideoCodec::Hevc,
        id => VideoCodec::Other(u32::from(id)),
    };
    let mut info = VideoTagInfo {
        codec,
        frame: frame_kind(frame_type),
        packet: VideoPacketKind::Other,
        composition_time: 0,
        enhanced: false,
        data_offset: 1,
    };
    if frame_type == 5 {
        // Video info/command frame: a UI8 command instead of picture data.
        return Some(info);
    }
    if !matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) {
        // Old codecs (H.263, VP6, screen video) have no packet type byte.
        info.packet = VideoPacketKind::Frame;
        return Some(info);
    }
    info.packet = match *payload.get(1)? {
        0 => VideoPacketKind::SequenceHeader,
        1 => VideoPacketKind::Frame,
        2 => VideoPacketKind::EndOfSequence,
        _ => VideoPacketKind::Other,
    };
    match payload.get(2..5) {
        Some(cts) => {
            if info.packet == VideoPacketKind::Frame {
                info.composition_time = si24(cts)?;
            }
            info.data_offset = 5;
        }
        // Some encoders send a bare 2-byte end-of-sequence; nothing else is usable short.
        None if info.packet == VideoPacketKind::EndOfSequence => info.data_offset = payload.len(),
        None => return None,
    }
    Some(info)
}

fn parse_enhanced_video(payload: &[u8], b0: u8) -> Option<VideoTagInfo> {
    const SEQUENCE_START: u8 = 0;
    const CODED_FRAMES: u8 = 1;
    const SEQUENCE_END: u8 = 2;
    const CODED_FRAMES_X: u8 = 3;
    const METADATA: u8 = 4;
    const MULTITRACK: u8 = 6;
    const MANY_TRACKS_MANY_CODECS: u8 = 2;

    let frame_type = (b0 >> 4) & 0x07;
    let (packet_type, mut pos) = skip_mod_ex(payload, b0 & 0x0F, 1)?;
    let mut info = VideoTagInfo {
        codec: VideoCodec::Other(0),
        frame: frame_kind(frame_type),
        packet: VideoPacketKind::Other,
        composition_time: 0,
        enhanced: true,
        data_offset: pos,
    };

    if frame_type == 5 && packet_type != METADATA {
        // Command frame: a UI8 command follows directly, without a FourCC.
        return Some(info);
    }
    if packet_type == MULTITRACK {
        // Track multiplexing is not modelled here; report the shared codec if any.
        let multitrack_type = *payload.get(pos)? >> 4;
        pos += 1;
        if multitrack_type != MANY_TRACKS_MANY_CODECS {
            info.codec = video_codec_from_fourcc(read_fourcc(payload, pos)?);
            pos += 4;
        }
        info.data_offset = pos;
        return Some(info);
    }

    info.codec = video_codec_from_fourcc(read_fourcc(payload, pos)?);
    pos += 4;
    info.packet = match packet_type {
        SEQUENCE_START => VideoPacketKind::SequenceHeader,
        CODED_FRAMES | CODED_FRAMES_X => VideoPacketKind::Frame,
        SEQUENCE_END => VideoPacketKind::EndOfSequence,
        METADATA => VideoPacketKind::Metadata,
        // MPEG2TSSequenceStart carries a TS descriptor, not a config record.
        _ => VideoPacketKind::Other,
    };
    if packet_type == METADATA {
        info.frame = VideoFrameKind::Other;
    }
    if packet_type == CODED_FRAMES && matches!(info.codec, VideoCodec::Avc | VideoCodec::Hevc) {
        info.composition_time = si24(payload.get(pos..)?)?;
        pos += 3;
    }
    info.data_offset = pos;
    Some(info)
}

/// Parse the header of an RTMP/FLV audio payload: legacy SoundFormat (10 AAC, 2/14
/// MP3) or Enhanced RTMP (SoundFormat 9, FourCC 'mp4a', '.mp3', 'Opus', ...).
/// Returns `None` if the payload is too short to tell.
///
/// Enhanced packets other than SequenceStart (coded frames, SequenceEnd,
/// MultichannelConfig, multitrack) all report `is_sequence_header == false`.
pub fn parse_audio_tag(payload: &[u8]) -> Option<AudioTagInfo> {
    const EX_HEADER: u8 = 9;
    const AAC: u8 = 10;
    const SEQUENCE_START: u8 = 0;
    const MULTITRACK: u8 = 5;
    const MANY_TRACKS_MANY_CODECS: u8 = 2;

    let b0 = *payload.first()?;
    let sound_format = b0 >> 4;
    let legacy = |codec| {
        Some(AudioTagInfo {
            codec,
            is_sequence_header: false,
            data_offset: 1,
        })
    };
    match sound_format {
        AAC => {
            let packet_type = *payload.get(1)?;
            Some(AudioTagInfo {
                codec: AudioCodec::Aac,
                is_sequence_header: packet_type == 0,
                data_offset: 2,
            })
        }
        2 | 14 => legacy(AudioCodec::Mp3),
        EX_HEADER => {
            let (packet_type, mut pos) = skip_mod_ex(payload, b0 & 0x0F, 1)?;
            if packet_type == MULTITRACK {
                let multitrack_type = *payload.get(pos)? >> 4;
                pos += 1;
                let mut codec = AudioCodec::Other(0);
                if multitrack_type != MANY_TRACKS_MANY_CODECS {
                    codec = audio_codec_from_fourcc(read_fourcc(payload, pos)?);
                    pos += 4;
                }
                return Some(AudioTagInfo {
                    codec,
                    is_sequence_header: false,
                    data_offset: pos,
                });
            }
            let codec = audio_codec_from_fourcc(read_fourcc(payload, pos)?);
            Some(AudioTagInfo {
                codec,
                is_sequence_header: packet_type == SEQUENCE_START,
                data_offset: pos + 4,
            })
        }
        other => legacy(AudioCodec::Other(u32::from(other))),
    }
}

/// Byte cursor over a configuration record; every read is bounds-checked.
struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError::Truncated)?;
        let out = self.data.get(self.pos..end).ok_or(CodecError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// `count` parameter sets, each prefixed by a 16-bit length. The count is at
    /// most 16 bits and every set consumes input, so growth is bounded by the input.
    fn param_sets(&mut self, count: usize, out: &mut Vec<Bytes>) -> Result<(), CodecError> {
        for _ in 0..count {
            let len = usize::from(self.u16()?);
            out.push(Bytes::copy_from_slice(self.take(len)?));
        }
        Ok(())
    }
}

/// ISO 14496-15 AVCDecoderConfigurationRecord (the AVC sequence header payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile: u8,
    pub compatibility: u8,
    pub level: u8,
    /// Size in bytes of the NALU length prefixes in coded frames (1, 2 or 4 per
    /// spec; 3 is passed through since [`length_prefixed_nalus`] copes with it).
    pub nal_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

impl AvcConfig {
    /// Parse an avcC record. Trailing high-profile extension fields are ignored.
    pub fn parse(record: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(record);
        let version = r.u8()?;
        if version != 1 {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let profile = r.u8()?;
        let compatibility = r.u8()?;
        let level = r.u8()?;
        let nal_length_size = (r.u8()? & 0x03) + 1;
        let num_sps = usize::from(r.u8()? & 0x1F);
        let mut sps = Vec::new();
        r.param_sets(num_sps, &mut sps)?;
        let num_pps = usize::from(r.u8()?);
        let mut pps = Vec::new();
        r.param_sets(num_pps, &mut pps)?;
        Ok(Self {
            profile,
            compatibility,
            level,
            nal_length_size,
            sps,
            pps,
        })
    }
}

/// ISO 14496-15 HEVCDecoderConfigurationRecord, reduced to what a server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    /// Size in bytes of the NALU length prefixes in coded frames (1, 2 or 4 per
    /// spec; 3 is passed through since [`length_prefixed_nalus`] copes with it).
    pub nal_length_size: u8,
    pub vps: Vec<Bytes>,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

impl HevcConfig {
    /// Parse an hvcC record; NAL arrays other than VPS/SPS/PPS (e.g. SEI) are skipped.
    ///
    /// The version byte is not checked: some old muxers wrote 0 there.
    pub fn parse(record: &[u8]) -> Result<Self, CodecError> {
        const NAL_VPS: u8 = 32;
        const NAL_SPS: u8 = 33;
        const NAL_PPS: u8 = 34;
        /// Fixed-size fields from configurationVersion through the byte holding
        /// lengthSizeMinusOne.
        const FIXED_LEN: usize = 22;

        let mut r = ByteReader::new(record);
        let fixed = r.take(FIXED_LEN)?;
        let nal_length_size = (fixed[FIXED_LEN - 1] & 0x03) + 1;
        let mut config = Self {
            nal_length_size,
            vps: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
        };
        let num_arrays = r.u8()?;
        for _ in 0..num_arrays {
            let nal_type = r.u8()? & 0x3F;
            let count = usize::from(r.u16()?);
            let mut scratch = Vec::new();
            let target = match nal_type {
                NAL_VPS => &mut config.vps,
                NAL_SPS => &mut config.sps,
                NAL_PPS => &mut config.pps,
                _ => &mut scratch,
            };
            r.param_sets(count, target)?;
        }
        Ok(config)
    }
}

/// MSB-first bit reader with Exp-Golomb helpers, for RBSP and AudioSpecificConfig.
struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, bit: 0 }
    }

    fn flag(&mut self) -> Result<bool, CodecError> {
        let byte = *self.data.get(self.bit / 8).ok_or(CodecError::Truncated)?;
        let set = (byte >> (7 - self.bit % 8)) & 1 == 1;
        self.bit += 1;
        Ok(set)
    }

    /// Up to 32 bits as an unsigned integer.
    fn bits(&mut self, n: u32) -> Result<u32, CodecError> {
        debug_assert!(n <= 32);
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.flag()?);
        }
        u32::try_from(v).map_err(|_| CodecError::Invalid("bit field too wide"))
    }

    /// Unsigned Exp-Golomb code, ue(v).
    fn ue(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return Err(CodecError::Invalid("Exp-Golomb code too long"));
            }
        }
        let rest = u64::from(self.bits(zeros)?);
        u32::try_from((1u64 << zeros) - 1 + rest)
            .map_err(|_| CodecError::Invalid("Exp-Golomb value overflow"))
    }

    /// Signed Exp-Golomb code, se(v).
    fn se(&mut self) -> Result<i64, CodecError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Strip emulation prevention bytes (the 0x03 in 00 00 03) to get the RBSP.
fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Skip one scaling_list() of `size` coefficients (H.264 7.3.2.1.1.1).
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), CodecError> {
    let mut last: i64 = 8;
    let mut next: i64 = 8;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Display width and height from an H.264 SPS NAL unit (with its 1-byte NAL header),
/// applying frame cropping. Handles emulation prevention bytes, the high-profile
/// chroma/bit-depth/scaling-list fields, and interlaced (field) coding.
pub fn avc_sps_resolution(sps: &[u8]) -> Result<(u32, u32), CodecError> {
    let nal_header = *sps.first().ok_or(CodecError::Truncated)?;
    if nal_header & 0x1F != 7 {
        return Err(CodecError::NotSps(nal_header & 0x1F));
    }
    let rbsp = unescape_rbsp(&sps[1..]);
    let mut r = BitReader::new(&rbsp);

    let profile_idc = r.bits(8)?;
    let _constraints_and_level = r.bits(16)?;
    let _sps_id = r.ue()?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(CodecError::Invalid("chroma_format_idc"));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        let _bit_depth_luma = r.ue()?;
        let _bit_depth_chroma = r.ue()?;
        let _qpprime_y_zero_transform_bypass = r.flag()?;
        if r.flag()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let _log2_max_frame_num = r.ue()?;
    match r.ue()? {
        0 => {
            let _log2_max_poc_lsb = r.ue()?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.flag()?;
            let _offset_for_non_ref_pic = r.se()?;
            let _offset_for_top_to_bottom_field = r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(CodecError::Invalid("num_ref_frames_in_pic_order_cnt_cycle"));
            }
            for _ in 0..cycle {
                let _offset_for_ref_frame = r.se()?;
            }
        }
        2 => {}
        _ => return Err(CodecError::Invalid("pic_order_cnt_type")),
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps_in_frame_num_allowed = r.flag()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.flag()?;
    }
    let _direct_8x8_inference = r.flag()?;
    let field_factor: u64 = if frame_mbs_only { 1 } else { 2 };
    let width = width_mbs * 16;
    let height = height_map_units * 16 * field_factor;

    let (mut crop_x, mut crop_y) = (0u64, 0u64);
    if r.flag()? {
        let left = u64::from(r.ue()?);
        let right = u64::from(r.ue()?);
        let top = u64::from(r.ue()?);
        let bottom = u64::from(r.ue()?);
        // Crop offsets are in chroma sample units (H.264 eq. 7-19 .. 7-22).
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (unit_x, unit_y) = match chroma_array_type {
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        crop_x = unit_x * (left + right);
        crop_y = unit_y * (top + bottom);
    }
    if crop_x >= width || crop_y >= height {
        return Err(CodecError::Invalid("cropping exceeds picture size"));
    }
    let to_u32 = |v: u64| u32::try_from(v).map_err(|_| CodecError::Invalid("picture size"));
    Ok((to_u32(width - crop_x)?, to_u32(height - crop_y)?))
}

/// Sampling frequencies for indices 0..=12 (ISO 14496-3 Table 1.18).
const AAC_SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// ISO 14496-3 AudioSpecificConfig (the AAC sequence header payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC-LC). With explicit SBR/PS signalling (5/29) this
    /// is the underlying core type, as ADTS and decoders configure from it.
    pub object_type: u8,
    /// Sampling frequency index; 15 means an explicit rate was given.
    pub sampling_index: u8,
    /// Core sampling rate in Hz (without SBR doubling).
    pub sample_rate: u32,
    /// channelConfiguration field: 1..=6 that many channels, 7 = 7.1 (8 channels),
    /// 0 = defined by an in-band program config element.
    pub channels: u8,
}

fn read_object_type(r: &mut BitReader<'_>) -> Result<u8, CodecError> {
    let aot = r.bits(5)?;
    let aot = if aot == 31 { 32 + r.bits(6)? } else { aot };
    // At most 32 + 63 = 95, so the conversion cannot fail.
    u8::try_from(aot).map_err(|_| CodecError::Invalid("audio object type"))
}

fn read_sampling(r: &mut BitReader<'_>) -> Result<(u8, u32), CodecError> {
    let index = r.bits(4)? as u8;
    let rate = match index {
        15 => r.bits(24)?,
        i => *AAC_SAMPLE_RATES
            .get(usize::from(i))
            .ok_or(CodecError::ReservedSamplingIndex(i))?,
    };
    if rate == 0 {
        return Err(CodecError::Invalid("sampling frequency 0"));
    }
    Ok((index, rate))
}

impl AacConfig {
    /// Parse the leading fields of an AudioSpecificConfig; the codec-specific
    /// remainder (GASpecificConfig, sync extensions) is ignored.
    pub fn parse(asc: &[u8]) -> Result<Self, CodecError> {
        let mut r = BitReader::new(asc);
        let mut object_type = read_object_type(&mut r)?;
        if object_type == 0 {
            return Err(CodecError::Invalid("audio object type 0"));
        }
        let (sampling_index, sample_rate) = read_sampling(&mut r)?;
        let channels = r.bits(4)? as u8;
        if object_type == 5 || object_type == 29 {
            // Explicit hierarchical SBR/PS: extension rate, then the core object type.
            let _extension_sampling = read_sampling(&mut r)?;
            object_type = read_object_type(&mut r)?;
        }
        Ok(Self {
            object_type,
            sampling_index,
            sample_rate,
            channels,
        })
    }

    /// 7-byte ADTS header (MPEG-4, no CRC) for one raw AAC frame of `payload_len` bytes.
    ///
    /// ADTS can only express object types 1..=4, indices 0..=12 and channel
    /// configurations 0..=7: other object types are written as AAC-LC, an explicit
    /// rate as the nearest standard index, and channel configs above 7 as 0.
    /// Frame length saturates at the 13-bit maximum.
    pub fn adts_header(&self, payload_len: usize) -> [u8; 7] {
        let profile = if (1..=4).contains(&self.object_type) {
            self.object_type - 1
        } else {
            1
        };
        let index = if self.sampling_index <= 12 {
            self.sampling_index
        } else {
            nearest_sampling_index(self.sample_rate)
        };
        let channels = if self.channels <= 7 { self.channels } else { 0 };
        let frame_len = payload_len.saturating_add(7).min(0x1FFF) as u32;
        const BUFFER_FULLNESS_VBR: u32 = 0x7FF;
        [
            0xFF,
            0xF1, // sync low bits, MPEG-4, layer 0, protection absent
            (profile << 6) | (index << 2) | (channels >> 2),
            ((channels & 0x03) << 6) | (frame_len >> 11) as u8,
            (frame_len >> 3) as u8,
            (((frame_len & 0x07) << 5) | (BUFFER_FULLNESS_VBR >> 6)) as u8,
            (((BUFFER_FULLNESS_VBR & 0x3F) << 2) as u8), // one raw data block
        ]
    }
}

fn nearest_sampling_index(rate: u32) -> u8 {
    let mut best = 0;
    for (i, &r) in AAC_SAMPLE_RATES.iter().enumerate() {
        if r.abs_diff(rate) < AAC_SAMPLE_RATES[best].abs_diff(rate) {
            best = i;
        }
    }
    best as u8
}

/// NAL units of an AVCC/HVCC buffer (each prefixed by a big-endian length of
/// `nal_length_size` bytes, 1..=4). Empty units are skipped; iteration ends at the
/// first truncated length or unit, and yields nothing for an invalid length size.
pub fn length_prefixed_nalus(data: &[u8], nal_length_size: u8) -> impl Iterator<Item = &[u8]> {
    let size = usize::from(nal_length_size);
    let mut rest: &[u8] = if (1..=4).contains(&size) { data } else { &[] };
    std::iter::from_fn(move || loop {
        if rest.is_empty() || rest.len() < size {
            return None;
        }
        let (prefix, tail) = rest.split_at(size);
        let len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if tail.len() < len {
            rest = &[];
            return None;
        }
        let (nalu, after) = tail.split_at(len);
        rest = after;
        if !nalu.is_empty() {
            return Some(nalu);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// High profile 1280x720 SPS as emitted by x264 (contains emulation prevention bytes).
    const SPS_720P: [u8; 26] = [
        0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40, 0x50, 0x05, 0xBB, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x83, 0x19, 0x60,
    ];
    const PPS: [u8; 4] = [0x68, 0xEB, 0xEC, 0xB2];

    /// Test-side bit writer, used to build SPS/ASC bitstreams field by field from the specs.
    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        nbits: usize,
    }

    impl BitWriter {
        fn bits(&mut self, n: u32, v: u64) -> &mut Self {
            for i in (0..n).rev() {
                if self.nbits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                if (v >> i) & 1 == 1 {
                    let last = self.bytes.len() - 1;
                    self.bytes[last] |= 0x80 >> (self.nbits % 8);
                }
                self.nbits += 1;
            }
            self
        }
        fn ue(&mut self, v: u64) -> &mut Self {
            let code = v + 1;
            let len = 64 - code.leading_zeros();
            self.bits(len - 1, 0).bits(len, code)
        }
        fn se(&mut self, v: i64) -> &mut Self {
            self.ue(if v > 0 {
                2 * v as u64 - 1
            } else {
                2 * v.unsigned_abs()
            })
        }
        /// rbsp_trailing_bits, then escape into a NAL payload.
        fn finish_nal(&mut self, header: u8) -> Vec<u8> {
            self.bits(1, 1);
            while !self.nbits.is_multiple_of(8) {
                self.bits(1, 0);
            }
            let mut out = vec![header];
            let mut zeros = 0;
            for &b in &self.bytes {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    struct SpsSpec {
        profile: u8,
        poc_type: u8,
        width_mbs: u64,
        height_units: u64,
        frame_mbs_only: bool,
        crop: Option<[u64; 4]>,
        scaling: bool,
    }

    fn build_sps(s: &SpsSpec) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.bits(8, s.profile.into()).bits(8, 0).bits(8, 40).ue(0);
        if s.profile == 100 {
            w.ue(1).ue(0).ue(0).bits(1, 0);
            w.bits(1, s.scaling.into());
            if s.scaling {
                // List 0: delta -8 makes nextScale 0 ("use default"), ending the list early.
                w.bits(1, 1).se(-8);
                for _ in 1..6 {
                    w.bits(1, 0);
                }
                // List 6 (8x8): 64 explicit deltas.
                w.bits(1, 1);
                for i in 0..64 {
                    w.se(if i % 2 == 0 { 3 } else { -3 });
                }
                w.bits(1, 0);
            }
        }
        w.ue(0).ue(s.poc_type.into());
        match s.poc_type {
            0 => {
                w.ue(2);
            }
            1 => {
                w.bits(1, 0).se(-1).se(2).ue(2).se(5).se(-5);
            }
            _ => {}
        }
        w.ue(4)
            .bits(1, 0)
            .ue(s.width_mbs - 1)
            .ue(s.height_units - 1)
            .bits(1, s.frame_mbs_only.into());
        if !s.frame_mbs_only {
            w.bits(1, 1);
        }
        w.bits(1, 1);
        match s.crop {
            Some(c) => {
                w.bits(1, 1).ue(c[0]).ue(c[1]).ue(c[2]).ue(c[3]);
            }
            None => {
                w.bits(1, 0);
            }
        }
        w.bits(1, 0); // no VUI
        w.finish_nal(0x67)
    }

    fn avcc_record() -> Vec<u8> {
        let mut rec = vec![
            0x01,
            0x64,
            0x00,
            0x1F,
            0xFF,
            0xE1,
            0x00,
            SPS_720P.len() as u8,
        ];
        rec.extend_from_slice(&SPS_720P);
        rec.extend_from_slice(&[0x01, 0x00, PPS.len() as u8]);
        rec.extend_from_slice(&PPS);
        rec
    }

    fn hvcc_record() -> Vec<u8> {
        let mut rec = vec![
            0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5D, 0xF0,
            0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0x00, 0x00, 0x0F,
        ];
        rec.push(4); // numOfArrays
        for (nal_type, units) in [
            (32u8, vec![vec![0x40, 0x01, 0x0C]]),
            (33, vec![vec![0x42, 0x01], vec![0x42, 0x02, 0x03]]),
            (39, vec![vec![0x4E, 0x01]]),
            (34, vec![vec![0x44, 0x01, 0xC1]]),
        ] {
            rec.push(0x80 | nal_type);
            rec.extend_from_slice(&(units.len() as u16).to_be_bytes());
            for u in units {
                rec.extend_from_slice(&(u.len() as u16).to_be_bytes());
                rec.extend_from_slice(&u);
            }
        }
        rec
    }

    fn info(
        codec: VideoCodec,
        frame: VideoFrameKind,
        packet: VideoPacketKind,
        cts: i32,
        enhanced: bool,
        off: usize,
    ) -> VideoTagInfo {
        VideoTagInfo {
            codec,
            frame,
            packet,
            composition_time: cts,
            enhanced,
            data_offset: off,
        }
    }

    #[test]
    fn legacy_avc_sequence_header_and_frames() {
        let mut seq = vec![0x17, 0x00, 0x00, 0x00, 0x00];
        seq.extend_from_slice(&avcc_record());
        assert_eq!(
            parse_video_tag(&seq),
            Some(info(
                VideoCodec::Avc,
                VideoFrameKind::Key,
                VideoPacketKind::SequenceHeader,
                0,
                false,
                5
            ))
        );
        // Inter frame, composition time -70 (0xFFFFBA as SI24).
        let inter = [0x27, 0x01, 0xFF, 0xFF, 0xBA, 0x00, 0x00, 0x00, 0x01, 0x41];
        assert_eq!(
            parse_video_tag(&inter),
            Some(info(
                VideoCodec::Avc,
                VideoFrameKind::Inter,
                VideoPacketKind::Frame,
                -70,
                false,
                5
            ))
        );
        let key = [0x17, 0x01, 0x00, 0x00, 0x42, 0x00];
        assert_eq!(parse_video_tag(&key).map(|i| i.composition_time), Some(66));
        assert_eq!(
            parse_video_tag(&[0x17, 0x02, 0, 0, 0]).map(|i| i.packet),
            Some(VideoPacketKind::EndOfSequence)
        );
        assert_eq!(
            parse_video_tag(&[0x17, 0x02]),
            Some(info(
                VideoCodec::Avc,
                VideoFrameKind::Key,
                VideoPacketKind::EndOfSequence,
                0,
                false,
                2
            ))
        );
        // Legacy HEVC (codec id 12) as used by some CDNs.
        assert_eq!(
            parse_video_tag(&[0x1C, 0x00, 0, 0, 0, 1]),
            Some(info(
                VideoCodec::Hevc,
                VideoFrameKind::Key,
                VideoPacketKind::SequenceHeader,
                0,
                false,
                5
            ))
        );
        // Old codecs and command frames.
        assert_eq!(
            parse_video_tag(&[0x22, 0xAB]),
            Some(info(
                VideoCodec::Other(2),
                VideoFrameKind::Inter,
                VideoPacketKind::Frame,
                0,
                false,
                1
            ))
        );
        assert_eq!(
            parse_video_tag(&[0x57, 0x00]),
            Some(info(
                VideoCodec::Avc,
                VideoFrameKind::Other,
                VideoPacketKind::Other,
                0,
                false,
                1
            ))
        );
        assert_eq!(
            parse_video_tag(&[0x47, 0x01, 0, 0, 0]).map(|i| i.frame),
            Some(VideoFrameKind::Key)
        );
    }

    #[test]
    fn too_short_video_is_none() {
        for p in [
            &[][..],
            &[0x17],
            &[0x17, 0x01, 0x00],
            &[0x17, 0x00, 0, 0],
            &[0x90, b'h', b'v', b'c'],
            &[0x91, b'h', b'v', b'c', b'1', 0, 0],
        ] {
            assert_eq!(parse_video_tag(p), None, "{p:02x?}");
        }
    }

    #[test]
    fn enhanced_video_headers() {
        let mut seq = vec![0x90, b'h', b'v', b'c', b'1'];
        seq.extend_from_slice(&hvcc_record());
        assert_eq!(
            parse_video_tag(&seq),
            Some(info(
                VideoCodec::Hevc,
                VideoFrameKind::Key,
                VideoPacketKind::SequenceHeader,
                0,
                true,
                5
            ))
        );
        // CodedFrames with SI24 composition time for hvc1.
        assert_eq!(
            parse_video_tag(&[0xA1, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x21, 0, 0, 0, 1, 0x02]),
            Some(info(
                VideoCodec::Hevc,
                VideoFrameKind::Inter,
                VideoPacketKind::Frame,
                33,
                true,
                8
            ))
        );
        // CodedFramesX: no composition time field.
        assert_eq!(
            parse_video_tag(&[0xA3, b'h', b'v', b'c', b'1', 0, 0, 0, 1, 0x02]),
            Some(info(
                VideoCodec::Hevc,
                VideoFrameKind::Inter,
                VideoPacketKind::Frame,
                0,
                true,
                5
            ))
        );
        // AV1 key frame: CodedFrames without composition time for non-AVC/HEVC codecs.
        assert_eq!(
            parse_video_tag(&[0x91, b'a', b'v', b'0', b'1', 0x12, 0x00, 0x0A]),
            Some(info(
                VideoCodec::Av1,
                VideoFrameKind::Key,
                VideoPacketKind::Frame,
                0,
                true,
                5
            ))
        );
        assert_eq!(
            parse_video_tag(&[0x92, b'v', b'p', b'0', b'9']).map(|i| (i.codec, i.packet)),
            Some((VideoCodec::Vp9, VideoPacketKind::EndOfSequence))
        );
        assert_eq!(
            parse_video_tag(&[0x91, b'v', b'p', b'0', b'8']).map(|i| i.codec),
            Some(VideoCodec::Other(u32::from_be_bytes(*b"vp08")))
        );
        // Metadata: frame type ignored.
        assert_eq!(
            parse_video_tag(&[0x94, b'a', b'v', b'c', b'1', 0x02]),
            Some(info(
                VideoCodec::Avc,
                VideoFrameKind::Other,
                VideoPacketKind::Metadata,
                0,
                true,
                5
            ))
        );
        // MPEG2TSSequenceStart -> Other.
        assert_eq!(
            parse_video_tag(&[0x95, b'a', b'v', b'0', b'1']).map(|i| i.packet),
            Some(VideoPacketKind::Other)
        );
        // Command frame: UI8 command, no FourCC.
        assert_eq!(
            parse_video_tag(&[0xD1, 0x00]),
            Some(info(
                VideoCodec::Other(0),
                VideoFrameKind::Other,
                VideoPacketKind::Other,
                0,
                true,
                1
            ))
        );
        // Multitrack, OneTrack, shared FourCC.
        assert_eq!(
            parse_video_tag(&[0x96, 0x01, b'a', b'v', b'0', b'1', 0x00, 0x12]),
            Some(info(
                VideoCodec::Av1,
                VideoFrameKind::Key,
                VideoPacketKind::Other,
                0,
                true,
                6
            ))
        );
        // Multitrack, ManyTracksManyCodecs: no shared FourCC.
        assert_eq!(
            parse_video_tag(&[0xA6, 0x21, 0x00]).map(|i| (i.codec, i.data_offset)),
            Some((VideoCodec::Other(0), 2))
        );
        // ModEx (4 bytes of nanosecond offset) wrapping an avc1 CodedFrames packet.
        let modex = [
            0x97, 0x03, 0, 0, 0x01, 0xF4, 0x01, b'a', b'v', b'c', b'1', 0xFF, 0xFF, 0xFE, 0xAA,
        ];
        assert_eq!(
            parse_video_tag(&modex),
            Some(info(
                VideoCodec::Avc,
                VideoFrameKind::Key,
                VideoPacketKind::Frame,
                -2,
                true,
                14
            ))
        );
        // ModEx with the 16-bit size escape (0xFF -> UI16 + 1 = 2 bytes).
        let modex16 = [
            0x97, 0xFF, 0x00, 0x01, 0xAB, 0xCD, 0x03, b'h', b'v', b'c', b'1',
        ];
        assert_eq!(
            parse_video_tag(&modex16).map(|i| (i.packet, i.data_offset)),
            Some((VideoPacketKind::Frame, 11))
        );
    }

    #[test]
    fn audio_headers() {
        assert_eq!(
            parse_audio_tag(&[0xAF, 0x00, 0x12, 0x10]),
            Some(AudioTagInfo {
                codec: AudioCodec::Aac,
                is_sequence_header: true,
                data_offset: 2
            })
        );
        assert_eq!(
            parse_audio_tag(&[0xAF, 0x01, 0x21]),
            Some(AudioTagInfo {
                codec: AudioCodec::Aac,
                is_sequence_header: false,
                data_offset: 2
            })
        );
        assert_eq!(
            parse_audio_tag(&[0x2F, 0xFF]).map(|a| (a.codec, a.data_offset)),
            Some((AudioCodec::Mp3, 1))
        );
        assert_eq!(
            parse_audio_tag(&[0xE2]).map(|a| a.codec),
            Some(AudioCodec::Mp3)
        );
        assert_eq!(
            parse_audio_tag(&[0xB2, 0x00]).map(|a| a.codec),
            Some(AudioCodec::Other(11))
        );
        assert_eq!(
            parse_audio_tag(&[0x90, b'O', b'p', b'u', b's', b'O']),
            Some(AudioTagInfo {
                codec: AudioCodec::Opus,
                is_sequence_header: true,
                data_offset: 5
            })
        );
        assert_eq!(
            parse_audio_tag(&[0x91, b'm', b'p', b'4', b'a', 0x21]),
            Some(AudioTagInfo {
                codec: AudioCodec::Aac,
                is_sequence_header: false,
                data_offset: 5
            })
        );
        assert_eq!(
            parse_audio_tag(&[0x91, b'.', b'm', b'p', b'3']).map(|a| a.codec),
            Some(AudioCodec::Mp3)
        );
        assert_eq!(
            parse_audio_tag(&[0x95, 0x00, b'O', b'p', b'u', b's', 0x00]),
            Some(AudioTagInfo {
                codec: AudioCodec::Opus,
                is_sequence_header: false,
                data_offset: 6
            })
        );
        assert_eq!(
            parse_audio_tag(&[0x97, 0x00, 0x05, 0x00, b'm', b'p', b'4', b'a']),
            Some(AudioTagInfo {
                codec: AudioCodec::Aac,
                is_sequence_header: true,
                data_offset: 8
            })
        );
        for p in [
            &[][..],
            &[0xAF],
            &[0x90, b'O', b'p', b'u'],
            &[0x95, 0x00, b'O'],
            &[0x97, 0x05],
        ] {
            assert_eq!(parse_audio_tag(p), None, "{p:02x?}");
        }
    }

    #[test]
    fn avc_config_record() {
        let cfg = AvcConfig::parse(&avcc_record()).unwrap();
        assert_eq!(
            (
                cfg.profile,
                cfg.compatibility,
                cfg.level,
                cfg.nal_length_size
            ),
            (100, 0, 31, 4)
        );
        assert_eq!(cfg.sps, vec![Bytes::from_static(&SPS_720P)]);
        assert_eq!(cfg.pps, vec![Bytes::from_static(&PPS)]);
        assert_eq!(avc_sps_resolution(&cfg.sps[0]), Ok((1280, 720)));

        let rec = avcc_record();
        for len in 0..rec.len() {
            assert_eq!(
                AvcConfig::parse(&rec[..len]),
                Err(CodecError::Truncated),
                "len {len}"
            );
        }
        let mut bad = rec.clone();
        bad[0] = 0;
        assert_eq!(
            AvcConfig::parse(&bad),
            Err(CodecError::UnsupportedVersion(0))
        );
        let mut short_len = rec;
        short_len[4] = 0xFD; // lengthSizeMinusOne = 1
        assert_eq!(
            AvcConfig::parse(&short_len).map(|c| c.nal_length_size),
            Ok(2)
        );
    }

    #[test]
    fn hevc_config_record() {
        let rec = hvcc_record();
        let cfg = HevcConfig::parse(&rec).unwrap();
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.vps, vec![Bytes::from_static(&[0x40, 0x01, 0x0C])]);
        assert_eq!(
            cfg.sps,
            vec![
                Bytes::from_static(&[0x42, 0x01]),
                Bytes::from_static(&[0x42, 0x02, 0x03])
            ]
        );
        assert_eq!(cfg.pps, vec![Bytes::from_static(&[0x44, 0x01, 0xC1])]);
        for len in 0..rec.len() {
            assert_eq!(
                HevcConfig::parse(&rec[..len]),
                Err(CodecError::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn sps_resolution_1080p_with_crop() {
        let progressive = SpsSpec {
            profile: 100,
            poc_type: 0,
            width_mbs: 120,
            height_units: 68,
            frame_mbs_only: true,
            crop: Some([0, 0, 0, 4]),
            scaling: false,
        };
        assert_eq!(
            avc_sps_resolution(&build_sps(&progressive)),
            Ok((1920, 1080))
        );
        let uncropped = SpsSpec {
            crop: None,
            ..progressive
        };
        assert_eq!(avc_sps_resolution(&build_sps(&uncropped)), Ok((1920, 1088)));
        // Interlaced: map units are field MB rows, crop unit doubles.
        let interlaced = SpsSpec {
            height_units: 34,
            frame_mbs_only: false,
            crop: Some([0, 0, 0, 2]),
            ..progressive
        };
        assert_eq!(
            avc_sps_resolution(&build_sps(&interlaced)),
            Ok((1920, 1080))
        );
        // Scaling lists and pic_order_cnt_type 1 must be skipped correctly.
        let scaled = SpsSpec {
            scaling: true,
            poc_type: 1,
            ..progressive
        };
        assert_eq!(avc_sps_resolution(&build_sps(&scaled)), Ok((1920, 1080)));
        // Baseline (no chroma fields), horizontal crop.
        let baseline = SpsSpec {
            profile: 66,
            poc_type: 2,
            width_mbs: 40,
            height_units: 30,
            frame_mbs_only: true,
            crop: Some([1, 3, 0, 0]),
            scaling: false,
        };
        assert_eq!(avc_sps_resolution(&build_sps(&baseline)), Ok((632, 480)));
        // A well-known x264 1080p High@4.0 SPS.
        let x264_1080 = [
            0x67, 0x64, 0x00, 0x28, 0xAC, 0xD9, 0x40, 0x78, 0x02, 0x27, 0xE5, 0xC0, 0x44, 0x00,
            0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xF0, 0x3C, 0x60, 0xC6, 0x58,
        ];
        assert_eq!(avc_sps_resolution(&x264_1080), Ok((1920, 1080)));
    }

    #[test]
    fn sps_errors() {
        assert_eq!(avc_sps_resolution(&[]), Err(CodecError::Truncated));
        assert_eq!(avc_sps_resolution(&PPS), Err(CodecError::NotSps(8)));
        // The fields up to frame cropping end inside byte 10; VUI after them is not read.
        for len in 1..10 {
            assert_eq!(
                avc_sps_resolution(&SPS_720P[..len]),
                Err(CodecError::Truncated),
                "len {len}"
            );
        }
        assert_eq!(avc_sps_resolution(&SPS_720P[..10]), Ok((1280, 720)));
        let over_crop = SpsSpec {
            profile: 66,
            poc_type: 2,
            width_mbs: 2,
            height_units: 2,
            frame_mbs_only: true,
            crop: Some([8, 8, 0, 0]),
            scaling: false,
        };
        assert!(matches!(
            avc_sps_resolution(&build_sps(&over_crop)),
            Err(CodecError::Invalid(_))
        ));
        // Exp-Golomb with more than 31 leading zeros.
        assert!(matches!(
            avc_sps_resolution(&[0x67, 0x42, 0, 0x1E, 0, 0, 0, 0, 0, 0x01]),
            Err(CodecError::Invalid(_))
        ));
    }

    #[test]
    fn aac_config() {
        let lc = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!(
            lc,
            AacConfig {
                object_type: 2,
                sampling_index: 4,
                sample_rate: 44100,
                channels: 2
            }
        );
        // profile 1 (LC), index 4, channels 2, frame length 107.
        assert_eq!(
            lc.adts_header(100),
            [0xFF, 0xF1, 0x50, 0x80, 0x0D, 0x7F, 0xFC]
        );
        let mono48 = AacConfig::parse(&[0x11, 0x88]).unwrap();
        assert_eq!(
            mono48,
            AacConfig {
                object_type: 2,
                sampling_index: 3,
                sample_rate: 48000,
                channels: 1
            }
        );
        assert_eq!(
            mono48.adts_header(200),
            [0xFF, 0xF1, 0x4C, 0x40, 0x19, 0xFF, 0xFC]
        );

        // Escaped object type 31 -> 32 + 10 = 42, index 3, 2 channels.
        let mut w = BitWriter::default();
        w.bits(5, 31).bits(6, 10).bits(4, 3).bits(4, 2);
        assert_eq!(
            AacConfig::parse(&w.bytes),
            Ok(AacConfig {
                object_type: 42,
                sampling_index: 3,
                sample_rate: 48000,
                channels: 2
            })
        );
        // Explicit 24-bit frequency.
        let mut w = BitWriter::default();
        w.bits(5, 2).bits(4, 15).bits(24, 44100).bits(4, 1);
        let explicit = AacConfig::parse(&w.bytes).unwrap();
        assert_eq!(
            explicit,
            AacConfig {
                object_type: 2,
                sampling_index: 15,
                sample_rate: 44100,
                channels: 1
            }
        );
        assert_eq!(explicit.adts_header(0)[2], 0x50); // nearest index 4
                                                      // Explicit SBR: AOT 5 at 24 kHz, extension 48 kHz, core AAC-LC.
        let mut w = BitWriter::default();
        w.bits(5, 5).bits(4, 6).bits(4, 2).bits(4, 3).bits(5, 2);
        assert_eq!(
            AacConfig::parse(&w.bytes),
            Ok(AacConfig {
                object_type: 2,
                sampling_index: 6,
                sample_rate: 24000,
                channels: 2
            })
        );

        assert_eq!(AacConfig::parse(&[0x12]), Err(CodecError::Truncated));
        assert_eq!(
            AacConfig::parse(&[0x16, 0x90]),
            Err(CodecError::ReservedSamplingIndex(13))
        );
        assert!(AacConfig::parse(&[0x00, 0x10]).is_err());
        let mut w = BitWriter::default();
        w.bits(5, 2).bits(4, 15).bits(24, 0).bits(4, 1);
        assert!(AacConfig::parse(&w.bytes).is_err());
    }

    #[test]
    fn nalu_iteration() {
        let data = [
            0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 0, 0, 0, 0, 1, 0x06, 0, 0, 0, 9, 0x01,
        ];
        let units: Vec<&[u8]> = length_prefixed_nalus(&data, 4).collect();
        assert_eq!(units, vec![&[0x65, 0x88][..], &[0x06][..]]);
        let two = [0, 1, 0x09, 0, 2, 0x41, 0x9A, 0];
        assert_eq!(
            length_prefixed_nalus(&two, 2).collect::<Vec<_>>(),
            vec![&[0x09][..], &[0x41, 0x9A][..]]
        );
        assert_eq!(length_prefixed_nalus(&data, 0).count(), 0);
        assert_eq!(length_prefixed_nalus(&data, 5).count(), 0);
        assert_eq!(length_prefixed_nalus(&[], 4).count(), 0);
    }

    proptest! {
        #[test]
        fn header_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(v) = parse_video_tag(&data) {
                prop_assert!(v.data_offset <= data.len());
            }
            if let Some(a) = parse_audio_tag(&data) {
                prop_assert!(a.data_offset <= data.len());
            }
            let _ = AvcConfig::parse(&data);
            let _ = HevcConfig::parse(&data);
            let _ = AacConfig::parse(&data);
            let _ = avc_sps_resolution(&data);
            for size in 0..6u8 {
                let total: usize = length_prefixed_nalus(&data, size).map(<[u8]>::len).sum();
                prop_assert!(total <= data.len());
            }
        }

        #[test]
        fn mutated_records_never_panic(
            which in 0..4usize,
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut data = match which {
                0 => avcc_record(),
                1 => hvcc_record(),
                2 => SPS_720P.to_vec(),
                _ => build_sps(&SpsSpec { profile: 100, poc_type: 1, width_mbs: 120, height_units: 68, frame_mbs_only: false, crop: Some([1, 1, 1, 1]), scaling: true }),
            };
            for (i, v) in flips {
                let i = i.index(data.len());
                data[i] ^= v;
            }
            data.truncate(cut.index(data.len() + 1));
            let _ = AvcConfig::parse(&data);
            let _ = HevcConfig::parse(&data);
            if let Ok((w, h)) = avc_sps_resolution(&data) {
                prop_assert!(w > 0 && h > 0);
            }
        }

        #[test]
        fn nalus_round_trip(
            size in prop_oneof![Just(1u8), Just(2u8), Just(3u8), Just(4u8)],
            units in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 0..8),
        ) {
            let mut buf = Vec::new();
            for u in &units {
                buf.extend_from_slice(&(u.len() as u32).to_be_bytes()[4 - usize::from(size)..]);
                buf.extend_from_slice(u);
            }
            let got: Vec<Vec<u8>> = length_prefixed_nalus(&buf, size).map(<[u8]>::to_vec).collect();
            prop_assert_eq!(got, units);
        }

        #[test]
        fn adts_fields_round_trip(
            object_type in 1u8..=4,
            sampling_index in 0u8..=12,
            channels in 0u8..=7,
            payload_len in 0usize..8000,
        ) {
            let mut w = BitWriter::default();
            w.bits(5, object_type.into()).bits(4, sampling_index.into()).bits(4, channels.into());
            let cfg = AacConfig::parse(&w.bytes).unwrap();
            prop_assert_eq!(cfg.sample_rate, AAC_SAMPLE_RATES[usize::from(sampling_index)]);
            let h = cfg.adts_header(payload_len);
            prop_assert_eq!(&h[..2], &[0xFF, 0xF1][..]);
            prop_assert_eq!(h[2] >> 6, object_type - 1);
            prop_assert_eq!((h[2] >> 2) & 0x0F, sampling_index);
            prop_assert_eq!(((h[2] & 1) << 2) | (h[3] >> 6), channels);
            let frame_len = (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
            prop_assert_eq!(frame_len, payload_len + 7);
        }
    }
}
