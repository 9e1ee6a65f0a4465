//! A track as its sequence header describes it: codec, configuration, timescale, picture
//! size or channels; its sample entry (the `stsd` child that tells a decoder how to set up)
//! and its RFC 6381 codecs string.

use std::fmt::Write;

use bytes::{BufMut, Bytes};

use super::boxes::{boxed, full_box};
use super::Fmp4Error;
use crate::codec::{
    av1_sequence_resolution, avc_sps_resolution, hevc_sps_resolution, parse_audio_tag,
    parse_video_tag, AacConfig, AudioCodec, Av1Config, AvcConfig, CodecError, HevcConfig, OpusHead,
    VideoCodec, VideoPacketKind, Vp9Config,
};
use crate::frame::{Frame, MediaKind};

/// Video timescale: the 90 kHz clock MPEG uses everywhere. Millisecond timestamps convert
/// to it exactly, and CMAF/HLS players expect it.
const VIDEO_TIMESCALE: u32 = 90_000;
/// Opus always decodes at 48 kHz, whatever the input rate was (RFC 7845 5.1).
const OPUS_TIMESCALE: u32 = 48_000;
/// AAC frames hold 1024 samples per channel (960-sample framing is not used over RTMP).
const AAC_FRAME_SAMPLES: u32 = 1024;
/// Configuration records are a few dozen bytes; a larger one is refused so that every box
/// stays small and every size fits its field.
const MAX_RECORD: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(super) enum Codec {
    Avc { record: Bytes },
    Hevc { record: Bytes },
    Av1 { record: Bytes, config: Av1Config },
    Vp9 { config: Vp9Config },
    Aac { asc: Bytes, config: AacConfig },
    Opus { head: OpusHead },
}

#[derive(Debug, Clone)]
pub(super) struct TrackConfig {
    pub codec: Codec,
    pub timescale: u32,
    /// Picture size; 0 while not known (VP9 until its first keyframe).
    pub width: u32,
    pub height: u32,
}

impl TrackConfig {
    /// The track of a video sequence header.
    pub fn video(header: &Frame) -> Result<TrackConfig, Fmp4Error> {
        let info = parse_video_tag(&header.payload)
            .filter(|i| {
                header.kind == MediaKind::Video && i.packet == VideoPacketKind::SequenceHeader
            })
            .ok_or(Fmp4Error::NotSequenceHeader("video"))?;
        let record = header.payload.slice(info.data_offset..);
        // A picture size that cannot be read is left 0: decoders take it from the stream,
        // and a parser of ours that lacks some syntax must not stop a recording.
        let (codec, size) = match info.codec {
            VideoCodec::Avc => {
                let config =
                    AvcConfig::parse(checked(&record, "AVC")?).map_err(config_err("AVC"))?;
                let size = config
                    .sps
                    .first()
                    .and_then(|sps| avc_sps_resolution(sps).ok());
                (Codec::Avc { record }, size)
            }
            VideoCodec::Hevc => {
                let config =
                    HevcConfig::parse(checked(&record, "HEVC")?).map_err(config_err("HEVC"))?;
                let size = config
                    .sps
                    .first()
                    .and_then(|sps| hevc_sps_resolution(sps).ok());
                (Codec::Hevc { record }, size)
            }
            VideoCodec::Av1 => {
                let config =
                    Av1Config::parse(checked(&record, "AV1")?).map_err(config_err("AV1"))?;
                let obus = &record[config.config_obus_offset..];
                let size = av1_sequence_resolution(obus).ok().flatten();
                (Codec::Av1 { record, config }, size)
            }
            VideoCodec::Vp9 => {
                let config =
                    Vp9Config::parse(checked(&record, "VP9")?).map_err(config_err("VP9"))?;
                // The record has no picture size; the first keyframe gives it.
                (Codec::Vp9 { config }, None)
            }
            VideoCodec::Other(code) => {
                return Err(Fmp4Error::UnsupportedCodec {
                    kind: "video",
                    codec: codec_name(code, "FLV video codec id"),
                })
            }
        };
        let (width, height) = size.unwrap_or((0, 0));
        Ok(TrackConfig {
            codec,
            timescale: VIDEO_TIMESCALE,
            width,
            height,
        })
    }

    /// The track of an audio sequence header.
    pub fn audio(header: &Frame) -> Result<TrackConfig, Fmp4Error> {
        let info = parse_audio_tag(&header.payload)
            .filter(|i| header.kind == MediaKind::Audio && i.is_sequence_header)
            .ok_or(Fmp4Error::NotSequenceHeader("audio"))?;
        let data = header.payload.slice(info.data_offset..);
        let (codec, timescale) = match info.codec {
            AudioCodec::Aac => {
                let config = AacConfig::parse(checked(&data, "AAC")?).map_err(config_err("AAC"))?;
                (Codec::Aac { asc: data, config }, config.sample_rate)
            }
            AudioCodec::Opus => {
                let head = OpusHead::parse(checked(&data, "Opus")?).map_err(config_err("Opus"))?;
                (Codec::Opus { head }, OPUS_TIMESCALE)
            }
            AudioCodec::Mp3 => {
                return Err(Fmp4Error::UnsupportedCodec {
                    kind: "audio",
                    codec: "MP3".into(),
                })
            }
            AudioCodec::Other(code) => {
                return Err(Fmp4Error::UnsupportedCodec {
                    kind: "audio",
                    codec: codec_name(code, "FLV sound format"),
                })
            }
        };
        Ok(TrackConfig {
            codec,
            timescale,
            width: 0,
            height: 0,
        })
    }

    pub fn is_video(&self) -> bool {
        matches!(
            self.codec,
            Codec::Avc { .. } | Codec::Hevc { .. } | Codec::Av1 { .. } | Codec::Vp9 { .. }
        )
    }

    pub fn video_codec(&self) -> Option<VideoCodec> {
        match self.codec {
            Codec::Avc { .. } => Some(VideoCodec::Avc),
            Codec::Hevc { .. } => Some(VideoCodec::Hevc),
            Codec::Av1 { .. } => Some(VideoCodec::Av1),
            Codec::Vp9 { .. } => Some(VideoCodec::Vp9),
            _ => None,
        }
    }

    pub fn audio_codec(&self) -> Option<AudioCodec> {
        match self.codec {
            Codec::Aac { .. } => Some(AudioCodec::Aac),
            Codec::Opus { .. } => Some(AudioCodec::Opus),
            _ => None,
        }
    }

    /// The fixed duration of every frame, where the codec has one (AAC).
    pub fn frame_duration(&self) -> Option<u32> {
        match self.codec {
            Codec::Aac { .. } => Some(AAC_FRAME_SAMPLES),
            _ => None,
        }
    }

    /// The duration given to a last sample when no earlier one says how long samples last.
    pub fn fallback_duration(&self) -> u32 {
        match self.codec {
            Codec::Aac { .. } => AAC_FRAME_SAMPLES,
            // 20 ms, the usual Opus frame.
            Codec::Opus { .. } => OPUS_TIMESCALE / 50,
            // One frame at 25 fps.
            _ => VIDEO_TIMESCALE / 25,
        }
    }

    fn channels(&self) -> u16 {
        match &self.codec {
            Codec::Aac { config, .. } => match config.channels {
                // channelConfiguration 7 is 7.1; 0 leaves it to an in-band element, where
                // stereo is the best guess (decoders read the real layout from the stream).
                7 => 8,
                0 => 2,
                n => u16::from(n),
            },
            Codec::Opus { head } => u16::from(head.channels),
            _ => 0,
        }
    }

    /// RFC 6381 codecs parameter of the track.
    pub fn codecs(&self) -> String {
        match &self.codec {
            Codec::Avc { record } => {
                // avc1.PPCCLL: profile, constraint flags and level from the record.
                let mut s = String::from("avc1.");
                for b in record.get(1..4).unwrap_or_default() {
                    let _ = write!(s, "{b:02x}");
                }
                s
            }
            Codec::Hevc { record } => hevc_codecs(record),
            Codec::Av1 { config, .. } => format!(
                "av01.{}.{:02}{}.{:02}",
                config.seq_profile,
                config.seq_level_idx_0,
                if config.high_tier { 'H' } else { 'M' },
                config.bit_depth
            ),
            Codec::Vp9 { config } => format!(
                "vp09.{:02}.{:02}.{:02}",
                config.profile, config.level, config.bit_depth
            ),
            Codec::Aac { asc, .. } => format!("mp4a.40.{}", first_object_type(asc)),
            // The sample entry is 'Opus', but browsers (MSE, WebCodecs) and DASH know the
            // codec as "opus".
            Codec::Opus { .. } => "opus".into(),
        }
    }

    /// The sample entry: a visual or audio sample entry with the codec's configuration box.
    pub fn write_sample_entry(&self, out: &mut Vec<u8>) {
        match &self.codec {
            Codec::Avc { record } => self.visual_entry(out, b"avc1", |o| {
                boxed(o, b"avcC", |o| o.put_slice(record));
            }),
            // hvc1: decoders are set up from the record (in-band parameter sets, which some
            // encoders repeat at keyframes, are tolerated by every decoder we know).
            Codec::Hevc { record } => self.visual_entry(out, b"hvc1", |o| {
                boxed(o, b"hvcC", |o| o.put_slice(record));
            }),
            Codec::Av1 { record, .. } => self.visual_entry(out, b"av01", |o| {
                boxed(o, b"av1C", |o| o.put_slice(record));
            }),
            Codec::Vp9 { config } => self.visual_entry(out, b"vp09", |o| {
                // VP codec binding: vpcC is a full box, version 1.
                full_box(o, b"vpcC", 1, 0, |o| {
                    o.put_u8(config.profile);
                    o.put_u8(config.level);
                    o.put_u8(
                        (config.bit_depth << 4)
                            | ((config.chroma_subsampling & 0x07) << 1)
                            | u8::from(config.full_range),
                    );
                    o.put_u8(config.colour_primaries);
                    o.put_u8(config.transfer_characteristics);
                    o.put_u8(config.matrix_coefficients);
                    o.put_u16(0); // codecInitializationDataSize: always 0 for VP9
                });
            }),
            Codec::Aac { asc, config } => {
                self.audio_entry(out, b"mp4a", config.sample_rate, |o| write_esds(o, asc));
            }
            Codec::Opus { head } => self.audio_entry(out, b"Opus", OPUS_TIMESCALE, |o| {
                write_dops(o, head);
            }),
        }
    }

    /// VisualSampleEntry (ISO/IEC 14496-12 12.1.3) followed by the codec's box.
    fn visual_entry(
        &self,
        out: &mut Vec<u8>,
        kind: &[u8; 4],
        codec_box: impl FnOnce(&mut Vec<u8>),
    ) {
        boxed(out, kind, |o| {
            o.put_bytes(0, 6); // reserved
            o.put_u16(1); // data_reference_index
            o.put_bytes(0, 16); // pre_defined, reserved, pre_defined[3]
            o.put_u16(clamp_u16(self.width));
            o.put_u16(clamp_u16(self.height));
            o.put_u32(0x0048_0000); // 72 dpi
            o.put_u32(0x0048_0000);
            o.put_u32(0); // reserved
            o.put_u16(1); // frame_count
            o.put_bytes(0, 32); // compressorname: empty
            o.put_u16(0x0018); // depth: colour, no alpha
            o.put_i16(-1); // pre_defined
            codec_box(o);
        });
    }

    /// AudioSampleEntry (ISO/IEC 14496-12 12.2.3) followed by the codec's box.
    fn audio_entry(
        &self,
        out: &mut Vec<u8>,
        kind: &[u8; 4],
        sample_rate: u32,
        codec_box: impl FnOnce(&mut Vec<u8>),
    ) {
        boxed(out, kind, |o| {
            o.put_bytes(0, 6);
            o.put_u16(1); // data_reference_index
            o.put_bytes(0, 8); // reserved
            o.put_u16(self.channels());
            o.put_u16(16); // samplesize
            o.put_u32(0); // pre_defined, reserved
                          // 16.16 fixed point; rates above 65535 Hz do not fit and are left to the
                          // codec's own configuration.
            o.put_u32(if sample_rate <= 0xFFFF {
                sample_rate << 16
            } else {
                0
            });
            codec_box(o);
        });
    }
}

/// Refuse a record too large to be real.
fn checked<'a>(record: &'a [u8], codec: &'static str) -> Result<&'a [u8], Fmp4Error> {
    if record.len() > MAX_RECORD {
        return Err(Fmp4Error::Config {
            codec,
            error: CodecError::Invalid("configuration record too large"),
        });
    }
    Ok(record)
}

fn config_err(codec: &'static str) -> impl Fn(CodecError) -> Fmp4Error {
    move |error| Fmp4Error::Config { codec, error }
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// A codec's name for an error: its FourCC when it is printable, else the legacy FLV id.
fn codec_name(code: u32, legacy: &str) -> String {
    let bytes = code.to_be_bytes();
    if code >= 16 && bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else if code < 16 {
        format!("{legacy} {code}")
    } else {
        format!("0x{code:08x}")
    }
}

/// `hvc1.` + profile space and idc, compatibility flags (bit-reversed, hex), tier and
/// level, and the constraint bytes without trailing zero bytes (ISO/IEC 14496-15 E.3).
fn hevc_codecs(record: &[u8]) -> String {
    let Some(r) = record.get(..13) else {
        return "hvc1".into();
    };
    let space = ["", "A", "B", "C"][usize::from(r[1] >> 6)];
    let tier = if r[1] & 0x20 != 0 { 'H' } else { 'L' };
    let compatibility = u32::from_be_bytes([r[2], r[3], r[4], r[5]]).reverse_bits();
    let mut s = format!(
        "hvc1.{space}{}.{compatibility:x}.{tier}{}",
        r[1] & 0x1F,
        r[12]
    );
    let constraints = &r[6..12];
    let used = constraints
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    for b in &constraints[..used] {
        let _ = write!(s, ".{b:X}");
    }
    s
}

/// The audio object type an AudioSpecificConfig starts with (5 bits, 31 escaping to
/// 32 + 6 more bits): what `mp4a.40.N` names, e.g. 5 for explicitly signalled HE-AAC.
fn first_object_type(asc: &[u8]) -> u8 {
    let b0 = asc.first().copied().unwrap_or(0);
    let aot = b0 >> 3;
    if aot == 31 {
        let b1 = asc.get(1).copied().unwrap_or(0);
        32 + (((b0 & 0x07) << 3) | (b1 >> 5))
    } else {
        aot
    }
}

/// ES descriptor box (ISO/IEC 14496-14 5.6) carrying the AudioSpecificConfig.
fn write_esds(out: &mut Vec<u8>, asc: &[u8]) {
    const ES_DESCRIPTOR: u8 = 0x03;
    const DECODER_CONFIG: u8 = 0x04;
    const DECODER_SPECIFIC_INFO: u8 = 0x05;
    const SL_CONFIG: u8 = 0x06;
    const OBJECT_TYPE_AAC: u8 = 0x40; // Audio ISO/IEC 14496-3
    const STREAM_TYPE_AUDIO: u8 = 0x05;

    let mut decoder_config = vec![OBJECT_TYPE_AAC, (STREAM_TYPE_AUDIO << 2) | 0x01];
    decoder_config.put_bytes(0, 3); // bufferSizeDB
    decoder_config.put_u32(0); // maxBitrate
    decoder_config.put_u32(0); // avgBitrate
    descriptor(&mut decoder_config, DECODER_SPECIFIC_INFO, asc);

    let mut es = Vec::new();
    es.put_u16(0); // ES_ID: 0 in files, the track ID names the stream
    es.put_u8(0); // no dependency, URL or OCR stream
    descriptor(&mut es, DECODER_CONFIG, &decoder_config);
    descriptor(&mut es, SL_CONFIG, &[0x02]); // predefined: reserved for MP4 files

    full_box(out, b"esds", 0, 0, |o| descriptor(o, ES_DESCRIPTOR, &es));
}

/// An MPEG-4 descriptor: tag, size in the expandable 7-bits-per-byte form, body.
fn descriptor(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    // Bodies are below MAX_RECORD plus a few bytes, far under the 28 bits four bytes hold.
    let len = body.len().min((1 << 28) - 1);
    let groups = (1..=4).find(|&n| len < 1 << (7 * n)).unwrap_or(4);
    for i in (0..groups).rev() {
        let more = if i > 0 { 0x80 } else { 0 };
        out.put_u8(more | ((len >> (7 * i)) & 0x7F) as u8);
    }
    out.put_slice(body);
}

/// Opus specific box (Opus in ISOBMFF 4.3.2): the OpusHead fields, big-endian, version 0.
fn write_dops(out: &mut Vec<u8>, head: &OpusHead) {
    boxed(out, b"dOps", |o| {
        o.put_u8(0);
        o.put_u8(head.channels);
        o.put_u16(head.pre_skip);
        o.put_u32(head.input_sample_rate);
        o.put_i16(head.output_gain);
        o.put_u8(head.mapping_family);
        if head.mapping_family != 0 {
            o.put_u8(head.stream_count);
            o.put_u8(head.coupled_count);
            o.put_slice(&head.mapping);
        }
    });
}
