//! What the bench publishes: a synthetic H.264+AAC-tagged stream of a given bit rate, or the
//! tags of an FLV file, looped. Video frames get the marker (sequence + send time) at send time.

use anyhow::{bail, Context};
use bytes::Bytes;
use media::amf::{self, Amf0Value};
use media::codec::{parse_video_tag, AvcConfig, VideoCodec, VideoPacketKind};
use media::flv::{FlvReader, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use media::frame::MediaKind;

/// A real AVCDecoderConfigurationRecord (x264, 1280x720, constrained baseline, level 3.1).
pub const AVC_RECORD: [u8; 38] = [
    0x01, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0x00, 0x17, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16,
    0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x23, 0xc6, 0x0c, 0xa8, 0x01,
    0x00, 0x04, 0x68, 0xce, 0x0f, 0xc8,
];

/// AAC-LC, 44.1 kHz, stereo AudioSpecificConfig.
const AAC_ASC: [u8; 2] = [0x12, 0x10];
const AUDIO_RATE: u64 = 44_100;
const AUDIO_SAMPLES: u64 = 1024;
/// Bit rate of the synthetic audio (part of --bitrate-kbps).
const AUDIO_KBPS: u64 = 64;
/// A keyframe is this many times the size of an inter frame.
const KEY_WEIGHT: u64 = 8;

/// One thing to send, `ts` milliseconds into the stream.
#[derive(Debug, Clone)]
pub struct Item {
    pub ts: u32,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// An AVC coded frame: the marker goes between `header5` and `rest`.
    Video {
        header5: [u8; 5],
        nal_length_size: u8,
        rest: Bytes,
    },
    /// Sent as is.
    Raw { kind: MediaKind, payload: Bytes },
}

pub enum Source {
    Synthetic(Synthetic),
    File(FileSource),
}

impl Source {
    /// Metadata (`onMetaData` and its object) and sequence headers, sent once before the
    /// media.
    pub fn headers(&self) -> Vec<(MediaKind, Bytes)> {
        match self {
            Source::Synthetic(s) => s.headers(),
            Source::File(f) => f.headers.clone(),
        }
    }

    pub fn next_item(&mut self) -> Item {
        match self {
            Source::Synthetic(s) => s.next_item(),
            Source::File(f) => f.next_item(),
        }
    }
}

pub struct Synthetic {
    fps: f64,
    gop_frames: u64,
    inter_size: usize,
    key_size: usize,
    filler: Bytes,
    audio: Bytes,
    video_n: u64,
    audio_n: u64,
    bitrate_kbps: u64,
}

/// Bytes without zeros (so no accidental start codes) of pseudo-random content.
fn filler(len: usize) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(0x5EED);
    (0..len)
        .map(|_| rng.u8(1..=255))
        .collect::<Vec<u8>>()
        .into()
}

impl Synthetic {
    pub fn new(bitrate_kbps: u64, fps: f64, gop_secs: f64) -> anyhow::Result<Synthetic> {
        if !(fps > 0.0 && fps <= 240.0) {
            bail!("--fps must be in (0, 240]");
        }
        if gop_secs.is_nan() || gop_secs <= 0.0 {
            bail!("--gop-secs must be positive");
        }
        let gop_frames = ((fps * gop_secs).round() as u64).max(1);
        let video_bps = (bitrate_kbps.saturating_sub(AUDIO_KBPS) * 1000 / 8).max(1000);
        let per_gop = video_bps as f64 * gop_frames as f64 / fps;
        let unit = per_gop / (KEY_WEIGHT + gop_frames - 1) as f64;
        let inter_size = (unit as usize).max(64);
        let key_size = (unit * KEY_WEIGHT as f64) as usize;
        let audio_len = (AUDIO_KBPS * 1000 / 8 * AUDIO_SAMPLES / AUDIO_RATE) as usize;
        let mut audio = vec![0xAF, 0x01];
        audio.extend_from_slice(&filler(audio_len));
        Ok(Synthetic {
            fps,
            gop_frames,
            inter_size,
            key_size: key_size.max(inter_size),
            filler: filler(key_size.max(inter_size)),
            audio: audio.into(),
            video_n: 0,
            audio_n: 0,
            bitrate_kbps,
        })
    }

    fn headers(&self) -> Vec<(MediaKind, Bytes)> {
        let meta = Amf0Value::EcmaArray(vec![
            ("width".into(), Amf0Value::Number(1280.0)),
            ("height".into(), Amf0Value::Number(720.0)),
            ("framerate".into(), Amf0Value::Number(self.fps)),
            ("videocodecid".into(), Amf0Value::Number(7.0)),
            (
                "videodatarate".into(),
                Amf0Value::Number((self.bitrate_kbps - AUDIO_KBPS.min(self.bitrate_kbps)) as f64),
            ),
            ("audiocodecid".into(), Amf0Value::Number(10.0)),
            ("audiodatarate".into(), Amf0Value::Number(AUDIO_KBPS as f64)),
            (
                "audiosamplerate".into(),
                Amf0Value::Number(AUDIO_RATE as f64),
            ),
            ("audiosamplesize".into(), Amf0Value::Number(16.0)),
            ("stereo".into(), Amf0Value::Boolean(true)),
            (
                "encoder".into(),
                Amf0Value::String("ferrolive-bench synthetic".into()),
            ),
        ]);
        let script = amf::encode_all(&[Amf0Value::String("onMetaData".into()), meta]);
        let mut video = vec![0x17, 0, 0, 0, 0];
        video.extend_from_slice(&AVC_RECORD);
        let mut audio = vec![0xAF, 0x00];
        audio.extend_from_slice(&AAC_ASC);
        vec![
            (MediaKind::Metadata, script.into()),
            (MediaKind::Video, video.into()),
            (MediaKind::Audio, audio.into()),
        ]
    }

    fn video_ts(&self, n: u64) -> u64 {
        (n as f64 * 1000.0 / self.fps).round() as u64
    }

    fn audio_ts(&self, n: u64) -> u64 {
        n * AUDIO_SAMPLES * 1000 / AUDIO_RATE
    }

    fn next_item(&mut self) -> Item {
        let (vts, ats) = (self.video_ts(self.video_n), self.audio_ts(self.audio_n));
        if ats < vts {
            self.audio_n += 1;
            return Item {
                ts: ats as u32,
                kind: Kind::Raw {
                    kind: MediaKind::Audio,
                    payload: self.audio.clone(),
                },
            };
        }
        let key = self.video_n.is_multiple_of(self.gop_frames);
        self.video_n += 1;
        let size = if key { self.key_size } else { self.inter_size };
        // One slice NAL (IDR or non-IDR) filling the frame to its size.
        let nal_len = size.saturating_sub(5 + 4).max(2);
        let mut rest = Vec::with_capacity(4 + nal_len);
        rest.extend_from_slice(&(nal_len as u32).to_be_bytes());
        rest.push(if key { 0x65 } else { 0x41 });
        rest.extend_from_slice(&self.filler[..nal_len - 1]);
        let header5 = [if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        Item {
            ts: vts as u32,
            kind: Kind::Video {
                header5,
                nal_length_size: 4,
                rest: rest.into(),
            },
        }
    }
}

pub struct FileSource {
    headers: Vec<(MediaKind, Bytes)>,
    items: Vec<Item>,
    pos: usize,
    /// Added to timestamps on each loop.
    offset: u64,
    span: u64,
}

impl FileSource {
    pub fn open(path: &std::path::Path) -> anyhow::Result<FileSource> {
        let data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        Self::from_bytes(&data).with_context(|| format!("FLV file {}", path.display()))
    }

    pub fn from_bytes(data: &[u8]) -> anyhow::Result<FileSource> {
        let mut buf = bytes::BytesMut::from(data);
        let mut reader = FlvReader::new();
        let mut headers = Vec::new();
        let mut items = Vec::new();
        let mut nal_length_size = 4;
        let mut first_ts = None;
        while let Some(tag) = reader.read(&mut buf)? {
            match tag.tag_type {
                TAG_SCRIPT if headers.iter().all(|(k, _)| *k != MediaKind::Metadata) => {
                    headers.insert(0, (MediaKind::Metadata, tag.payload));
                }
                TAG_VIDEO | TAG_AUDIO => {
                    let video = tag.tag_type == TAG_VIDEO;
                    if video {
                        if let Some(info) = parse_video_tag(&tag.payload) {
                            if info.packet == VideoPacketKind::SequenceHeader {
                                if info.codec == VideoCodec::Avc && !info.enhanced {
                                    if let Ok(cfg) =
                                        AvcConfig::parse(&tag.payload[info.data_offset..])
                                    {
                                        nal_length_size = cfg.nal_length_size;
                                    }
                                }
                                if headers.iter().all(|(k, _)| *k != MediaKind::Video) {
                                    headers.push((MediaKind::Video, tag.payload));
                                }
                                continue;
                            }
                        }
                    } else if tag.payload.len() >= 2
                        && tag.payload[0] >> 4 == 10
                        && tag.payload[1] == 0
                    {
                        if headers.iter().all(|(k, _)| *k != MediaKind::Audio) {
                            headers.push((MediaKind::Audio, tag.payload));
                        }
                        continue;
                    }
                    let first = *first_ts.get_or_insert(tag.timestamp);
                    let ts = tag.timestamp.saturating_sub(first);
                    let info = video.then(|| parse_video_tag(&tag.payload)).flatten();
                    let kind = match info {
                        Some(i)
                            if i.codec == VideoCodec::Avc
                                && !i.enhanced
                                && i.packet == VideoPacketKind::Frame
                                && tag.payload.len() >= 5 =>
                        {
                            let mut header5 = [0u8; 5];
                            header5.copy_from_slice(&tag.payload[..5]);
                            Kind::Video {
                                header5,
                                nal_length_size,
                                rest: tag.payload.slice(5..),
                            }
                        }
                        _ => Kind::Raw {
                            kind: if video {
                                MediaKind::Video
                            } else {
                                MediaKind::Audio
                            },
                            payload: tag.payload,
                        },
                    };
                    items.push(Item { ts, kind });
                }
                _ => {}
            }
        }
        if items.is_empty() {
            bail!("no audio or video tags");
        }
        let last = items.iter().map(|i| u64::from(i.ts)).max().unwrap_or(0);
        // Loop after the last tag plus one typical frame interval.
        let span = last + 40;
        Ok(FileSource {
            headers,
            items,
            pos: 0,
            offset: 0,
            span,
        })
    }

    fn next_item(&mut self) -> Item {
        if self.pos == self.items.len() {
            self.pos = 0;
            self.offset += self.span;
        }
        let mut item = self.items[self.pos].clone();
        self.pos += 1;
        item.ts = (u64::from(item.ts) + self.offset) as u32;
        item
    }
}

impl FileSource {
    #[cfg(test)]
    fn headers(&self) -> &[(MediaKind, Bytes)] {
        &self.headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marker;

    #[test]
    fn avc_record_is_valid() {
        let cfg = AvcConfig::parse(&AVC_RECORD).unwrap();
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(
            media::codec::avc_sps_resolution(&cfg.sps[0]).unwrap(),
            (1280, 720)
        );
    }

    #[test]
    fn synthetic_rate_gop_and_marker_round_trip() {
        let mut s = Synthetic::new(2700, 30.0, 2.0).unwrap();
        let (mut video_bytes, mut audio_bytes, mut keys, mut frames) = (0usize, 0usize, 0, 0u64);
        let mut last_ts = 0;
        // 10 seconds of stream.
        loop {
            let item = s.next_item();
            if item.ts >= 10_000 {
                break;
            }
            assert!(item.ts >= last_ts, "timestamps go forward");
            last_ts = item.ts;
            match item.kind {
                Kind::Video {
                    header5,
                    nal_length_size,
                    rest,
                } => {
                    // What the publisher sends: marked with a sequence number and send time.
                    let payload = marker::marked_video(
                        &header5,
                        frames,
                        1_000_000 + frames,
                        nal_length_size,
                        &rest,
                    );
                    let info = parse_video_tag(&payload).unwrap();
                    assert_eq!(info.packet, VideoPacketKind::Frame);
                    assert_eq!(marker::find(&payload), Some((frames, 1_000_000 + frames)));
                    // Still a well-formed AVCC access unit: NAL lengths add up.
                    let nalus: Vec<&[u8]> =
                        media::codec::length_prefixed_nalus(&payload[5..], 4).collect();
                    assert_eq!(nalus.len(), 2);
                    assert_eq!(nalus[0][0] & 0x1F, 6);
                    assert_eq!(
                        nalus.iter().map(|n| n.len() + 4).sum::<usize>(),
                        payload.len() - 5
                    );
                    if header5[0] == 0x17 {
                        keys += 1;
                    }
                    video_bytes += payload.len();
                    frames += 1;
                }
                Kind::Raw { kind, payload } => {
                    assert_eq!(kind, MediaKind::Audio);
                    audio_bytes += payload.len();
                }
            }
        }
        assert_eq!(frames, 300);
        assert_eq!(keys, 5);
        let kbps = (video_bytes + audio_bytes) as f64 * 8.0 / 10.0 / 1000.0;
        assert!((2600.0..2800.0).contains(&kbps), "{kbps} kbps");
        let audio_frames = audio_bytes / s.audio.len();
        assert!((430..=432).contains(&audio_frames), "{audio_frames}");
    }

    #[test]
    fn file_source_loops_with_growing_timestamps() {
        let mut flv = media::flv::header(true, true).to_vec();
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.extend_from_slice(&AVC_RECORD);
        flv.extend_from_slice(&media::flv::encode_tag(TAG_VIDEO, 0, &seq));
        for i in 0..3u32 {
            let frame = [0x27, 1, 0, 0, 0, 0, 0, 0, 2, 0x41, 0x9A];
            flv.extend_from_slice(&media::flv::encode_tag(TAG_VIDEO, 100 + i * 40, &frame));
        }
        let mut f = FileSource::from_bytes(&flv).unwrap();
        assert_eq!(f.headers().len(), 1);
        let ts: Vec<u32> = (0..6).map(|_| f.next_item().ts).collect();
        assert_eq!(ts, [0, 40, 80, 120, 160, 200]);
    }
}
