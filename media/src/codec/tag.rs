//! The codec header at the start of an FLV/RTMP audio or video payload: legacy FLV
//! (codec id, frame type, AVC/AAC packet type) and Enhanced RTMP (FourCC, packet types,
//! ModEx).

pub(super) const fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*code)
}

pub(super) const FOURCC_AVC: u32 = fourcc(b"avc1");
pub(super) const FOURCC_HEVC: u32 = fourcc(b"hvc1");
pub(super) const FOURCC_AV1: u32 = fourcc(b"av01");
pub(super) const FOURCC_VP9: u32 = fourcc(b"vp09");
pub(super) const FOURCC_AAC: u32 = fourcc(b"mp4a");
pub(super) const FOURCC_MP3: u32 = fourcc(b".mp3");
pub(super) const FOURCC_OPUS: u32 = fourcc(b"Opus");

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
    /// Carries coded audio: a legacy packet that is not a sequence header, or Enhanced
    /// RTMP CodedFrames (not SequenceEnd, MultichannelConfig or a multitrack packet).
    pub coded: bool,
    /// Byte offset in the payload where codec data starts; always `<= payload.len()`.
    pub data_offset: usize,
}

pub(super) fn frame_kind(frame_type: u8) -> VideoFrameKind {
    match frame_type {
        1 | 4 => VideoFrameKind::Key,
        2 | 3 => VideoFrameKind::Inter,
        _ => VideoFrameKind::Other,
    }
}

impl VideoCodec {
    /// The codec's short name as the control API and recordings list it.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Avc => "h264",
            VideoCodec::Hevc => "h265",
            VideoCodec::Av1 => "av1",
            VideoCodec::Vp9 => "vp9",
            VideoCodec::Other(_) => "other",
        }
    }
}

impl AudioCodec {
    /// The codec's short name as the control API and recordings list it.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Aac => "aac",
            AudioCodec::Mp3 => "mp3",
            AudioCodec::Opus => "opus",
            AudioCodec::Other(_) => "other",
        }
    }
}

pub(super) fn video_codec_from_fourcc(code: u32) -> VideoCodec {
    match code {
        FOURCC_AVC => VideoCodec::Avc,
        FOURCC_HEVC => VideoCodec::Hevc,
        FOURCC_AV1 => VideoCodec::Av1,
        FOURCC_VP9 => VideoCodec::Vp9,
        other => VideoCodec::Other(other),
    }
}

pub(super) fn audio_codec_from_fourcc(code: u32) -> AudioCodec {
    match code {
        FOURCC_AAC => AudioCodec::Aac,
        FOURCC_MP3 => AudioCodec::Mp3,
        FOURCC_OPUS => AudioCodec::Opus,
        other => AudioCodec::Other(other),
    }
}

pub(super) fn read_fourcc(payload: &[u8], pos: usize) -> Option<u32> {
    let b = payload.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Sign-extended big-endian 24-bit integer.
pub(super) fn si24(b: &[u8]) -> Option<i32> {
    let b = b.get(..3)?;
    // Place the 24 bits at the top of an i32, then shift back arithmetically.
    Some(i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8)
}

/// Skip Enhanced RTMP ModEx blocks (packet type 7, shared by audio and video):
/// `size` (UI8 + 1, or UI16 + 1 when the UI8 says 256), data, then a byte whose low
/// nibble is the next packet type. Returns the final packet type and position.
/// Modifiers (today only a nanosecond timestamp offset) are ignored.
pub(super) fn skip_mod_ex(
    payload: &[u8],
    mut packet_type: u8,
    mut pos: usize,
) -> Option<(u8, usize)> {
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

pub(super) fn parse_legacy_video(payload: &[u8], b0: u8) -> Option<VideoTagInfo> {
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

pub(super) fn parse_enhanced_video(payload: &[u8], b0: u8) -> Option<VideoTagInfo> {
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
    const CODED_FRAMES: u8 = 1;
    const MULTITRACK: u8 = 5;
    const MANY_TRACKS_MANY_CODECS: u8 = 2;

    let b0 = *payload.first()?;
    let sound_format = b0 >> 4;
    let legacy = |codec| {
        Some(AudioTagInfo {
            codec,
            is_sequence_header: false,
            coded: true,
            data_offset: 1,
        })
    };
    match sound_format {
        AAC => {
            let packet_type = *payload.get(1)?;
            Some(AudioTagInfo {
                codec: AudioCodec::Aac,
                is_sequence_header: packet_type == 0,
                coded: packet_type == 1,
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
                    coded: false,
                    data_offset: pos,
                });
            }
            let codec = audio_codec_from_fourcc(read_fourcc(payload, pos)?);
            Some(AudioTagInfo {
                codec,
                is_sequence_header: packet_type == SEQUENCE_START,
                coded: packet_type == CODED_FRAMES,
                data_offset: pos + 4,
            })
        }
        other => legacy(AudioCodec::Other(u32::from(other))),
    }
}
