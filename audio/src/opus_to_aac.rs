//! Opus to AAC-LC, once per stream: a WebRTC (WHIP) publisher sends Opus, and FLV, RTMP,
//! MPEG-TS HLS and recordings carry AAC.
//!
//! Opus packets come in with their times in milliseconds (from the RTP clock: exact for
//! whole-millisecond packets such as browsers' 20 ms, and a rounded time is within the
//! jitter allowed); AAC access units of 1024 samples at 48 kHz go out, each with
//! the time of its first sample, counted in samples so that consecutive frames are exactly
//! 1024 samples apart (21 or 22 ms as rounded). Short gaps (lost packets) are concealed
//! with libopus's packet loss concealment, then silence; a packet that does not decode is
//! concealed the same way; a gap longer than [`MAX_FILL`] starts the timeline afresh.
//!
//! The AAC encoder ([`rusty_aac`]) encodes a whole buffer at once and has no streaming
//! mode, but each frame it makes is a function of the block before it and its own block
//! (the MDCT overlap) plus the transient flags around it (the window sequence). So every
//! block is encoded from a window of four, `[previous, block, next, after next]`, and only
//! the frame of `block` and `next` is kept: it decodes to `block`, and it is the frame a
//! continuous encoder would have made, up to a window decision at the window's edges.
//! That costs five frame encodings per frame and one block (21 ms) of look-ahead beyond
//! the one AAC needs anyway.

use std::collections::VecDeque;

use rusty_aac::{AacEncoder, AacEncoderConfig};

/// Opus's and the AAC output's sampling rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one AAC-LC frame.
pub const AAC_FRAME: usize = 1024;
/// The longest Opus packet, in samples per channel (120 ms).
const MAX_OPUS_PACKET: usize = 5760;
/// Samples a packet may come early or late without being a gap or an overlap (network
/// jitter on the RTP clock is nil, but a publisher's clock may be rounded): 2.5 ms.
const JITTER: i64 = 120;
/// Gaps up to this long are filled (concealment, then silence): the audio stays one
/// continuous timeline. Longer ones (a publisher that paused) restart it.
pub const MAX_FILL: i64 = SAMPLE_RATE as i64; // 1 s
/// Concealment is pointless past this (libopus fades it out); the rest of a gap is silence.
const MAX_CONCEAL: i64 = 2 * MAX_OPUS_PACKET as i64;
/// AAC bit rate per channel.
const BITRATE_PER_CHANNEL: u32 = 64_000;
/// Blocks in an encoding window: the one before, the one encoded, and two after.
const WINDOW: usize = 4;

/// One AAC-LC access unit (a raw `raw_data_block`, as FLV and MP4 carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacFrame {
    pub data: Vec<u8>,
    /// The time of its first sample, in milliseconds on the input's clock.
    pub ms: u64,
}

/// The transcoder of one stream's audio.
pub struct OpusToAac {
    /// Set up by the first packet whose channel count can be read.
    state: Option<Running>,
}

struct Running {
    channels: usize,
    decoder: opus::Decoder,
    /// Where the next decoded sample goes, in samples at 48 kHz (the end of `pending`).
    next: i64,
    /// Decoded, interleaved samples not yet making a whole block.
    pending: Vec<f32>,
    /// The last blocks (interleaved, `AAC_FRAME` samples each), oldest first.
    window: VecDeque<Vec<f32>>,
    /// Where `window`'s first block begins, in samples.
    window_start: i64,
    /// Samples per channel of the last packet decoded (what a concealed packet stands for).
    last_duration: usize,
    /// The decoder's output buffer.
    scratch: Vec<f32>,
}

impl Default for OpusToAac {
    fn default() -> Self {
        Self::new()
    }
}

impl OpusToAac {
    pub fn new() -> OpusToAac {
        OpusToAac { state: None }
    }

    /// The channel count of the AAC output (that of the first packet), once known.
    pub fn channels(&self) -> Option<u8> {
        self.state.as_ref().map(|s| s.channels as u8)
    }

    /// The AudioSpecificConfig of the AAC output (the sequence header's body), once the
    /// channel count is known. It never changes afterwards.
    pub fn audio_specific_config(&self) -> Option<Vec<u8>> {
        let channels = self.channels()?;
        Some(rusty_aac::audio_specific_config_bytes(
            SAMPLE_RATE,
            u16::from(channels),
        ))
    }

    /// Take one Opus packet starting at `ms`; the AAC frames now complete, in order.
    /// Never fails: a packet that cannot be decoded is concealed or skipped.
    pub fn push(&mut self, packet: &[u8], ms: u64) -> Vec<AacFrame> {
        let at =
            i64::try_from(ms.saturating_mul(u64::from(SAMPLE_RATE) / 1000)).unwrap_or(i64::MAX / 2);
        let running = match &mut self.state {
            Some(running) => running,
            None => {
                // The channel count is read from the packet's TOC byte; before the first
                // packet that has one, there is nothing to set up.
                let Ok(channels) = opus::packet::get_nb_channels(packet) else {
                    return Vec::new();
                };
                let Ok(decoder) = opus::Decoder::new(SAMPLE_RATE, channels) else {
                    return Vec::new();
                };
                self.state
                    .insert(Running::new(decoder, channels as usize, at))
            }
        };
        running.push(packet, at)
    }
}

impl Running {
    fn new(decoder: opus::Decoder, channels: usize, at: i64) -> Running {
        let mut running = Running {
            channels,
            decoder,
            next: at,
            pending: Vec::new(),
            window: VecDeque::new(),
            window_start: 0,
            last_duration: 960,
            scratch: vec![0.0; MAX_OPUS_PACKET * channels],
        };
        running.restart(at);
        running
    }

    /// Begin a fresh timeline at `at`: what was pending is dropped, and the first block's
    /// "previous block" is silence.
    fn restart(&mut self, at: i64) {
        self.next = at;
        self.pending.clear();
        self.window.clear();
        self.window.push_back(vec![0.0; AAC_FRAME * self.channels]);
        self.window_start = at - AAC_FRAME as i64;
    }

    fn push(&mut self, packet: &[u8], at: i64) -> Vec<AacFrame> {
        let gap = at - self.next;
        if gap < -JITTER {
            // Late or repeated: its time is already filled.
            return Vec::new();
        }
        if gap > MAX_FILL {
            self.restart(at);
        } else if gap > JITTER {
            self.fill(gap);
        }
        // An empty packet would ask libopus to conceal as much as the buffer holds.
        let decoded = match packet.is_empty() {
            true => None,
            false => self
                .decoder
                .decode_float(packet, &mut self.scratch, false)
                .ok(),
        };
        match decoded {
            Some(samples) if samples > 0 => {
                self.last_duration = samples;
                self.append(samples);
            }
            // Garbled or empty: stands for a packet of the last packet's length.
            _ => self.conceal(self.last_duration),
        }
        self.encode_blocks()
    }

    /// Fill `gap` samples: concealment while it is useful, then silence.
    fn fill(&mut self, gap: i64) {
        let concealed = gap.min(MAX_CONCEAL);
        let mut left = concealed as usize;
        while left > 0 {
            // libopus conceals whole 2.5 ms steps.
            let step = left.min(self.last_duration).min(MAX_OPUS_PACKET) / 120 * 120;
            if step == 0 {
                break;
            }
            self.conceal(step);
            left -= step;
        }
        let silence = (gap - concealed) as usize + left;
        self.pending
            .resize(self.pending.len() + silence * self.channels, 0.0);
        self.next += silence as i64;
    }

    /// `samples` of concealment (silence should libopus refuse).
    fn conceal(&mut self, samples: usize) {
        let wanted = samples.min(MAX_OPUS_PACKET) * self.channels;
        let made = match self
            .decoder
            .decode_float(&[], &mut self.scratch[..wanted], false)
        {
            Ok(made) => made.min(samples),
            Err(_) => 0,
        };
        self.append(made);
        if made < samples {
            let silence = samples - made;
            self.pending
                .resize(self.pending.len() + silence * self.channels, 0.0);
            self.next += silence as i64;
        }
    }

    /// Take `samples` per channel from the decoder's output.
    fn append(&mut self, samples: usize) {
        let len = (samples * self.channels).min(self.scratch.len());
        self.pending.extend_from_slice(&self.scratch[..len]);
        self.next += (len / self.channels) as i64;
    }

    /// Encode every block that now has its look-ahead.
    fn encode_blocks(&mut self) -> Vec<AacFrame> {
        let block_len = AAC_FRAME * self.channels;
        let mut frames = Vec::new();
        while self.pending.len() >= block_len {
            let rest = self.pending.split_off(block_len);
            let block = std::mem::replace(&mut self.pending, rest);
            self.window.push_back(block);
            if self.window.len() < WINDOW {
                continue;
            }
            // The window's second block is the one encoded.
            let start = self.window_start + AAC_FRAME as i64;
            if let Some(data) = self.encode_window() {
                frames.push(AacFrame {
                    data,
                    ms: (start.max(0) as u64) / u64::from(SAMPLE_RATE / 1000),
                });
            }
            self.window.pop_front();
            self.window_start += AAC_FRAME as i64;
        }
        frames
    }

    /// The frame of the window's second and third blocks, which decodes to the second.
    fn encode_window(&self) -> Option<Vec<u8>> {
        let mut encoder = AacEncoder::new(AacEncoderConfig {
            bitrate_bps: BITRATE_PER_CHANNEL * self.channels as u32,
            ..AacEncoderConfig::default()
        });
        let samples: Vec<f32> = self.window.iter().flatten().copied().collect();
        encoder
            .push_pcm(&samples, self.channels as u16, SAMPLE_RATE)
            .ok()?;
        encoder.finish();
        // Frame k covers blocks k-1 and k (frame 0 covers silence and block 0): the
        // third is the one wanted.
        encoder.next_packet().ok()?;
        encoder.next_packet().ok()?;
        let wanted = encoder.next_packet().ok()?;
        (wanted.pts == 2 * AAC_FRAME as i64).then_some(wanted.data)
    }
}

#[cfg(test)]
mod tests;
