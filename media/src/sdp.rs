//! SDP (RFC 4566) as RTSP uses it: the session description a server answers DESCRIBE with,
//! made from a stream's FLV sequence headers, and the one a publisher ANNOUNCEs (ffmpeg's
//! RTSP muxer, GStreamer's rtspclientsink), read into tracks.
//!
//! Both directions meet in [`Codec`], a track's codec with the parameters RTP needs:
//!
//! - play: [`Codec::from_sequence_header`] for each track the stream has, then
//!   [`describe`]; the same payload types and clock rates go to the packetizers
//!   ([`crate::rtp::packetize`]).
//! - publish: [`parse`], then [`MediaDescription::codec`] for each track, which makes its
//!   [`crate::rtsp::TrackReceiver`]. H.264 and HEVC parameter sets from `sprop-*` and the
//!   AAC `config=` are what the FLV sequence headers are made of; the AAC AU-header layout
//!   is what the depacketizer reads.
//!
//! Only what RTSP needs is read: the media lines, `rtpmap`, `fmtp` and `control` of each
//! medium's first payload type. Reading is bounded by the input (the RTSP body limit) and
//! [`MAX_MEDIA`], and never panics.

use std::fmt::Write as _;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;

use crate::codec::{
    parse_audio_tag, parse_video_tag, AacConfig, AudioCodec, AvcConfig, HevcConfig, VideoCodec,
    VideoPacketKind,
};
use crate::frame::MediaKind;
use crate::rtp::{AuHeaderLayout, OPUS_CLOCK_RATE, VIDEO_CLOCK_RATE};

/// The most media sections a description may have; a stream has two.
pub const MAX_MEDIA: usize = 8;

/// Base64 as encoders write it in `sprop-*`: padded or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotText,
    #[error("more than {MAX_MEDIA} media sections")]
    TooManyMedia,
    #[error("malformed {0} line")]
    Malformed(&'static str),
    #[error("codec {0:?} is not supported")]
    Unsupported(String),
    #[error("malformed {0} parameter")]
    Parameter(&'static str),
}

/// A track's codec and the parameters its RTP packetization carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Parameter sets may be empty when a publisher sends them in band only.
    H264 {
        sps: Vec<Bytes>,
        pps: Vec<Bytes>,
    },
    H265 {
        vps: Vec<Bytes>,
        sps: Vec<Bytes>,
        pps: Vec<Bytes>,
    },
    Aac {
        /// The AudioSpecificConfig.
        config: Bytes,
        sample_rate: u32,
        channels: u8,
        layout: AuHeaderLayout,
    },
    Opus {
        channels: u8,
    },
}

impl Codec {
    /// The codec of an FLV sequence header (AVC, HEVC, AAC, Opus); `None` for other codecs
    /// and for anything that is not a readable sequence header.
    pub fn from_sequence_header(kind: MediaKind, tag: &[u8]) -> Option<Codec> {
        match kind {
            MediaKind::Video => {
                let info = parse_video_tag(tag)?;
                if info.packet != VideoPacketKind::SequenceHeader {
                    return None;
                }
                let record = tag.get(info.data_offset..)?;
                match info.codec {
                    VideoCodec::Avc => {
                        let config = AvcConfig::parse(record).ok()?;
                        Some(Codec::H264 {
                            sps: config.sps,
                            pps: config.pps,
                        })
                    }
                    VideoCodec::Hevc => {
                        let config = HevcConfig::parse(record).ok()?;
                        Some(Codec::H265 {
                            vps: config.vps,
                            sps: config.sps,
                            pps: config.pps,
                        })
                    }
                    _ => None,
                }
            }
            MediaKind::Audio => {
                let info = parse_audio_tag(tag)?;
                if !info.is_sequence_header {
                    return None;
                }
                let data = tag.get(info.data_offset..)?;
                match info.codec {
                    AudioCodec::Aac => {
                        aac(Bytes::copy_from_slice(data), AuHeaderLayout::AAC_HBR).ok()
                    }
                    AudioCodec::Opus => {
                        let head = crate::codec::OpusHead::parse(data).ok()?;
                        Some(Codec::Opus {
                            channels: head.channels.min(2),
                        })
                    }
                    _ => None,
                }
            }
            MediaKind::Metadata => None,
        }
    }

    pub fn media_kind(&self) -> MediaKind {
        match self {
            Codec::H264 { .. } | Codec::H265 { .. } => MediaKind::Video,
            Codec::Aac { .. } | Codec::Opus { .. } => MediaKind::Audio,
        }
    }

    /// The RTP clock rate: 90 kHz video, the AAC sample rate, 48 kHz Opus.
    pub fn clock_rate(&self) -> u32 {
        match self {
            Codec::H264 { .. } | Codec::H265 { .. } => VIDEO_CLOCK_RATE,
            Codec::Aac { sample_rate, .. } => *sample_rate,
            Codec::Opus { .. } => OPUS_CLOCK_RATE,
        }
    }

    /// The video parameter sets, VPS first, for [`crate::rtp::flv::VideoTagBuilder::new`].
    pub fn parameter_sets(&self) -> Vec<Bytes> {
        match self {
            Codec::H264 { sps, pps } => [sps.as_slice(), pps].concat(),
            Codec::H265 { vps, sps, pps } => [vps.as_slice(), sps, pps].concat(),
            _ => Vec::new(),
        }
    }

    /// The `rtpmap` encoding (name, clock rate and, for audio, channels).
    fn rtpmap(&self) -> String {
        match self {
            Codec::H264 { .. } => format!("H264/{VIDEO_CLOCK_RATE}"),
            Codec::H265 { .. } => format!("H265/{VIDEO_CLOCK_RATE}"),
            Codec::Aac {
                sample_rate,
                channels,
                ..
            } => format!("MPEG4-GENERIC/{sample_rate}/{channels}"),
            // RFC 7587 7: always 48000/2, whatever the stream's channels.
            Codec::Opus { .. } => format!("opus/{OPUS_CLOCK_RATE}/2"),
        }
    }

    /// The `fmtp` parameters, if the codec has any.
    fn fmtp(&self) -> Option<String> {
        let encode = |sets: &[Bytes]| {
            sets.iter()
                .map(|set| BASE64.encode(set))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Codec::H264 { sps, pps } => {
                let mut fmtp = String::from("packetization-mode=1");
                if let Some(profile) = sps.first().and_then(|sps| sps.get(1..4)) {
                    let _ = write!(
                        fmtp,
                        ";profile-level-id={:02X}{:02X}{:02X}",
                        profile[0], profile[1], profile[2]
                    );
                }
                if !sps.is_empty() || !pps.is_empty() {
                    let sets = [sps.as_slice(), pps].concat();
                    let _ = write!(fmtp, ";sprop-parameter-sets={}", encode(&sets));
                }
                Some(fmtp)
            }
            Codec::H265 { vps, sps, pps } => Some(format!(
                "sprop-vps={};sprop-sps={};sprop-pps={}",
                encode(vps),
                encode(sps),
                encode(pps)
            )),
            Codec::Aac { config, .. } => {
                let hex: String = config.iter().map(|b| format!("{b:02X}")).collect();
                Some(format!(
                    "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config={hex}"
                ))
            }
            // What the stream carries, so that a mono stream's receiver need not mix down.
            Codec::Opus { channels } => Some(format!("sprop-stereo={}", u8::from(*channels > 1))),
        }
    }
}

/// An AAC codec from its AudioSpecificConfig.
fn aac(config: Bytes, layout: AuHeaderLayout) -> Result<Codec, SdpError> {
    let parsed = AacConfig::parse(&config).map_err(|_| SdpError::Parameter("config"))?;
    Ok(Codec::Aac {
        sample_rate: parsed.sample_rate,
        channels: parsed.channels,
        config,
        layout,
    })
}

/// A track of a stream as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub codec: Codec,
    /// Dynamic payload type (96 and up).
    pub payload_type: u8,
}

/// The control attribute of track `index`: SETUP requests name `<base>/trackID=<index>`.
pub fn track_control(index: usize) -> String {
    format!("trackID={index}")
}

/// The description of a live stream with `tracks` (in track order: track N is
/// `trackID=N`). `origin_address` goes into the `o=` line (the server's address, for
/// clients that log it).
pub fn describe(tracks: &[Track], origin_address: &str) -> String {
    let mut sdp = String::new();
    let address_type = if origin_address.contains(':') {
        "IP6"
    } else {
        "IP4"
    };
    let _ = write!(
        sdp,
        "v=0\r\no=- 0 0 IN {address_type} {origin_address}\r\ns=ferrolive\r\nc=IN {address_type} {}\r\nt=0 0\r\na=control:*\r\na=range:npt=now-\r\n",
        if address_type == "IP6" { "::" } else { "0.0.0.0" }
    );
    for (index, track) in tracks.iter().enumerate() {
        let media = match track.codec.media_kind() {
            MediaKind::Video => "video",
            _ => "audio",
        };
        let pt = track.payload_type;
        let _ = write!(
            sdp,
            "m={media} 0 RTP/AVP {pt}\r\na=rtpmap:{pt} {}\r\n",
            track.codec.rtpmap()
        );
        if let Some(fmtp) = track.codec.fmtp() {
            let _ = write!(sdp, "a=fmtp:{pt} {fmtp}\r\n");
        }
        let _ = write!(sdp, "a=control:{}\r\n", track_control(index));
    }
    sdp
}

/// One media section of an announced description, reduced to its first payload type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaDescription {
    /// `video`, `audio`, or whatever else the `m=` line says.
    pub media: String,
    pub payload_type: u8,
    /// The `rtpmap` encoding name as written (compare case-insensitively).
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    /// `fmtp` parameters in order, keys as written.
    pub fmtp: Vec<(String, String)>,
    /// The `a=control` URL, relative or absolute.
    pub control: Option<String>,
}

impl MediaDescription {
    /// An `fmtp` parameter, its key compared case-insensitively.
    pub fn fmtp(&self, key: &str) -> Option<&str> {
        self.fmtp
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The codec this section announces, with its parameters.
    pub fn codec(&self) -> Result<Codec, SdpError> {
        let sets = |key: &'static str| -> Result<Vec<Bytes>, SdpError> {
            let Some(value) = self.fmtp(key) else {
                return Ok(Vec::new());
            };
            value
                .split(',')
                .filter(|set| !set.trim().is_empty())
                .map(|set| {
                    BASE64
                        .decode(set.trim())
                        .map(Bytes::from)
                        .map_err(|_| SdpError::Parameter(key))
                })
                .collect()
        };
        let encoding = self.encoding.to_ascii_uppercase();
        match encoding.as_str() {
            "H264" => {
                let (mut sps, mut pps) = (Vec::new(), Vec::new());
                for set in sets("sprop-parameter-sets")? {
                    match set.first().map(|h| h & 0x1F) {
                        Some(7) => sps.push(set),
                        Some(8) => pps.push(set),
                        _ => {}
                    }
                }
                Ok(Codec::H264 { sps, pps })
            }
            "H265" => Ok(Codec::H265 {
                vps: sets("sprop-vps")?,
                sps: sets("sprop-sps")?,
                pps: sets("sprop-pps")?,
            }),
            "MPEG4-GENERIC" => {
                let mode = self.fmtp("mode").unwrap_or("");
                if !mode.eq_ignore_ascii_case("AAC-hbr") && !mode.eq_ignore_ascii_case("AAC-lbr") {
                    return Err(SdpError::Unsupported(format!(
                        "MPEG4-GENERIC mode {mode:?}"
                    )));
                }
                let config = self.fmtp("config").ok_or(SdpError::Parameter("config"))?;
                let config = hex(config).ok_or(SdpError::Parameter("config"))?;
                let length = |key: &'static str| -> Result<u8, SdpError> {
                    match self.fmtp(key) {
                        None => Ok(0),
                        Some(v) => v
                            .trim()
                            .parse::<u8>()
                            .ok()
                            .filter(|&n| n <= 32)
                            .ok_or(SdpError::Parameter(key)),
                    }
                };
                let layout = AuHeaderLayout {
                    size_length: length("sizelength")?,
                    index_length: length("indexlength")?,
                    index_delta_length: length("indexdeltalength")?,
                };
                if layout.size_length == 0 {
                    return Err(SdpError::Parameter("sizelength"));
                }
                aac(Bytes::from(config), layout)
            }
            "OPUS" => Ok(Codec::Opus {
                channels: if self.fmtp("sprop-stereo") == Some("0") {
                    1
                } else {
                    2
                },
            }),
            _ => Err(SdpError::Unsupported(self.encoding.clone())),
        }
    }
}

/// Bytes from hex digits (an AAC `config=`); `None` if odd-length or not hex.
fn hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// A session description: its media sections, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionDescription {
    pub media: Vec<MediaDescription>,
}

/// Read an announced description. Session-level lines are skipped; each `m=` begins a
/// section, whose `rtpmap`, `fmtp` and `control` for its first payload type are kept.
pub fn parse(text: &[u8]) -> Result<SessionDescription, SdpError> {
    let text = std::str::from_utf8(text).map_err(|_| SdpError::NotText)?;
    let mut description = SessionDescription::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if description.media.len() == MAX_MEDIA {
                return Err(SdpError::TooManyMedia);
            }
            let mut fields = m.split_ascii_whitespace();
            let media = fields.next().ok_or(SdpError::Malformed("m="))?;
            let _port = fields.next().ok_or(SdpError::Malformed("m="))?;
            let _proto = fields.next().ok_or(SdpError::Malformed("m="))?;
            let payload_type = fields
                .next()
                .and_then(|pt| pt.parse::<u8>().ok())
                .filter(|&pt| pt < 128)
                .ok_or(SdpError::Malformed("m="))?;
            description.media.push(MediaDescription {
                media: media.to_string(),
                payload_type,
                ..MediaDescription::default()
            });
            continue;
        }
        let Some(section) = description.media.last_mut() else {
            continue;
        };
        let Some(attribute) = line.strip_prefix("a=") else {
            continue;
        };
        let (name, value) = attribute.split_once(':').unwrap_or((attribute, ""));
        match name {
            "control" => section.control = Some(value.trim().to_string()),
            "rtpmap" | "fmtp" => {
                let (pt, rest) = value
                    .split_once(' ')
                    .ok_or(SdpError::Malformed("a=rtpmap/fmtp"))?;
                if pt.trim().parse::<u8>().ok() != Some(section.payload_type) {
                    continue;
                }
                if name == "rtpmap" {
                    let mut parts = rest.trim().split('/');
                    section.encoding = parts.next().unwrap_or("").to_string();
                    section.clock_rate = parts
                        .next()
                        .and_then(|rate| rate.trim().parse().ok())
                        .ok_or(SdpError::Malformed("a=rtpmap"))?;
                    section.channels = match parts.next() {
                        Some(channels) => Some(
                            channels
                                .trim()
                                .parse()
                                .map_err(|_| SdpError::Malformed("a=rtpmap"))?,
                        ),
                        None => None,
                    };
                } else {
                    section.fmtp = rest
                        .split(';')
                        .filter_map(|p| {
                            let p = p.trim();
                            (!p.is_empty()).then(|| {
                                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                                (k.trim().to_string(), v.trim().to_string())
                            })
                        })
                        .collect();
                }
            }
            _ => {}
        }
    }
    Ok(description)
}

#[cfg(test)]
pub(crate) mod tests;
