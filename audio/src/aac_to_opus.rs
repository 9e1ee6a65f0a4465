//! AAC to Opus, for WebRTC viewers of a stream whose publisher sends AAC (every RTMP
//! encoder does): once per stream, whatever the number of viewers.
//!
//! AAC access units (raw, as FLV carries them, configured by the AudioSpecificConfig of
//! the sequence header) with their times in milliseconds go in; 20 ms Opus packets at
//! 48 kHz with their times come out. The AAC is decoded with `rusty_aac`, resampled to
//! 48 kHz when it is at another rate ([`Resampler`]: 44.1 kHz is what ffmpeg and OBS send
//! most), and encoded with the system's libopus.
//!
//! Time: the first access unit's time anchors the output; from there each packet is
//! exactly 20 ms after the one before, counted in samples, so rounding never drifts. An
//! access unit that arrives far from where the samples so far say it should (a gap in
//! the publisher's audio, a viewer-side skip, a new publisher) starts a new run anchored
//! at its own time, never before the last packet put out.

use opus::{Application, Bitrate, Channels, Encoder};
use rusty_aac::AacDecoder;

/// Opus's (and WebRTC's) clock.
pub const OPUS_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms Opus packet at 48 kHz.
const FRAME: usize = 960;
/// The packet duration, in milliseconds.
pub const PACKET_MS: u64 = 20;
/// An access unit this far from where its predecessors end starts a new run.
const DISCONTINUITY_MS: i64 = 200;
/// Largest Opus packet libopus may make (RFC 6716 allows 1275 bytes per frame).
const MAX_PACKET: usize = 1500;
/// What the Opus encoder spends: enough for transparent stereo music.
const STEREO_BITRATE: i32 = 96_000;
const MONO_BITRATE: i32 = 48_000;
/// Resampling filter: input samples each side of an output sample.
const HALF_TAPS: usize = 16;
/// Phases the resampler's table may hold (rates whose ratio needs more are refused:
/// none of the AAC sampling frequencies does).
const MAX_PHASES: usize = 1024;

/// Why AAC cannot be turned into Opus.
#[derive(Debug, thiserror::Error)]
pub enum AacToOpusError {
    #[error("AudioSpecificConfig not understood: {0}")]
    Config(String),
    #[error("no resampling from {0} Hz to 48 kHz")]
    Rate(u32),
    #[error("opus encoder: {0}")]
    Opus(#[from] opus::Error),
}

/// One Opus packet and its time on the stream's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    pub data: Vec<u8>,
    pub timestamp_ms: u64,
}

/// The transcoder of one stream's audio.
pub struct AacToOpus {
    decoder: AacDecoder,
    /// Channels of the Opus output: 1 for mono AAC, else 2 (more are folded into two).
    channels: usize,
    input_rate: u32,
    resampler: Resampler,
    encoder: Encoder,
    /// Resampled samples not yet encoded, interleaved.
    pending: Vec<f32>,
    /// The current run: the time of its first output sample, input frames taken in so far,
    /// packets put out so far.
    run: Option<Run>,
    /// The time of the last packet put out.
    last_out_ms: Option<u64>,
    /// Samples per channel of the last decoded access unit (silence of that length
    /// stands in for one that does not decode, so the timeline stays whole).
    frame_len: usize,
    /// Access units that did not decode.
    undecodable: u64,
    scratch: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    anchor_ms: u64,
    input_frames: u64,
    packets: u64,
}

impl AacToOpus {
    /// A transcoder for the AAC that `audio_specific_config` (the sequence header's
    /// payload after the FLV audio tag header) describes.
    pub fn new(audio_specific_config: &[u8]) -> Result<AacToOpus, AacToOpusError> {
        let decoder = AacDecoder::with_config_bytes(audio_specific_config)
            .map_err(|e| AacToOpusError::Config(e.to_string()))?;
        let input_rate = decoder
            .output_sample_rate()
            .ok_or_else(|| AacToOpusError::Config("no sampling rate".into()))?;
        let source_channels = rusty_aac::parse_audio_specific_config(audio_specific_config)
            .map_err(|e| AacToOpusError::Config(e.to_string()))?
            .channels;
        let channels = if source_channels == 1 { 1 } else { 2 };
        let resampler = Resampler::new(input_rate, OPUS_RATE, channels)
            .ok_or(AacToOpusError::Rate(input_rate))?;
        let (opus_channels, bitrate) = match channels {
            1 => (Channels::Mono, MONO_BITRATE),
            _ => (Channels::Stereo, STEREO_BITRATE),
        };
        let mut encoder = Encoder::new(OPUS_RATE, opus_channels, Application::Audio)?;
        encoder.set_bitrate(Bitrate::Bits(bitrate))?;
        Ok(AacToOpus {
            decoder,
            channels,
            input_rate,
            resampler,
            encoder,
            pending: Vec::with_capacity(FRAME * 2 * channels),
            run: None,
            last_out_ms: None,
            frame_len: 1024,
            undecodable: 0,
            scratch: vec![0; MAX_PACKET],
        })
    }

    /// Channels of the Opus packets (1 or 2).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Access units that did not decode so far (each was replaced by silence).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Take one access unit at `timestamp_ms`; the Opus packets now complete go to `out`.
    pub fn push(
        &mut self,
        access_unit: &[u8],
        timestamp_ms: u64,
        out: &mut Vec<OpusPacket>,
    ) -> Result<(), AacToOpusError> {
        self.place(timestamp_ms);
        let decoded = match self.decoder.decode(access_unit, None) {
            Ok(decoded) if decoded.channels > 0 && decoded.frames() > 0 => decoded,
            // Nothing to decode (an empty unit): nothing in the timeline either.
            Err(rusty_aac::Error::Again) => return Ok(()),
            _ => {
                self.undecodable += 1;
                let silence = vec![0.0; self.frame_len * self.channels];
                return self.take_pcm(&silence, out);
            }
        };
        self.frame_len = decoded.frames();
        let pcm = fold_channels(
            &decoded.samples,
            usize::from(decoded.channels),
            self.channels,
        );
        self.take_pcm(&pcm, out)
    }

    /// Start a new run at `timestamp_ms` when the access unit is not where the samples so
    /// far end.
    fn place(&mut self, timestamp_ms: u64) {
        if let Some(run) = &self.run {
            let expected = run.anchor_ms + run.input_frames * 1000 / u64::from(self.input_rate);
            let drift = timestamp_ms as i64 - expected as i64;
            if drift.abs() <= DISCONTINUITY_MS {
                return;
            }
        }
        // A new run never goes back before what viewers already have.
        let anchor_ms = match self.last_out_ms {
            Some(last) => timestamp_ms.max(last + PACKET_MS),
            None => timestamp_ms,
        };
        self.run = Some(Run {
            anchor_ms,
            input_frames: 0,
            packets: 0,
        });
        self.pending.clear();
        self.resampler.reset();
    }

    fn take_pcm(&mut self, pcm: &[f32], out: &mut Vec<OpusPacket>) -> Result<(), AacToOpusError> {
        let Some(run) = &mut self.run else {
            return Ok(());
        };
        run.input_frames += (pcm.len() / self.channels) as u64;
        self.resampler.process(pcm, &mut self.pending);
        let frame_samples = FRAME * self.channels;
        let mut taken = 0;
        while self.pending.len() - taken >= frame_samples {
            let frame = &self.pending[taken..taken + frame_samples];
            taken += frame_samples;
            let len = self.encoder.encode_float(frame, &mut self.scratch)?;
            let timestamp_ms = run.anchor_ms + run.packets * PACKET_MS;
            run.packets += 1;
            self.last_out_ms = Some(timestamp_ms);
            out.push(OpusPacket {
                data: self.scratch[..len].to_vec(),
                timestamp_ms,
            });
        }
        self.pending.drain(..taken);
        Ok(())
    }
}

/// `samples` (interleaved, `from` channels) as `to` channels (1 or 2): mono stays, more
/// than two keep the front pair (AAC's first two channels are front left and right, or
/// centre and a pair: either way what a stereo listener should hear most).
fn fold_channels(samples: &[f32], from: usize, to: usize) -> Vec<f32> {
    if from == to {
        return samples.to_vec();
    }
    let frames = samples.chunks_exact(from.max(1));
    match to {
        1 => frames
            .map(|f| f.iter().sum::<f32>() / from as f32)
            .collect(),
        _ if from == 1 => frames.flat_map(|f| [f[0], f[0]]).collect(),
        _ => frames.flat_map(|f| [f[0], f[1]]).collect(),
    }
}

/// A rational-ratio resampler: a windowed-sinc filter (Blackman window, `2 x HALF_TAPS`
/// taps) in one phase per output position between two input samples, precomputed.
/// Output sample `n` is input time `n x from / to` exactly, so the time of every output
/// sample is known.
struct Resampler {
    /// Output positions per input step, and input steps per output position (the ratio
    /// in lowest terms: 160 and 147 for 44.1 kHz to 48 kHz).
    up: u64,
    down: u64,
    channels: usize,
    /// `up` phases of `2 x HALF_TAPS` coefficients.
    table: Vec<f32>,
    /// Input kept for the filter, interleaved; `history[0]` is input frame `base`.
    history: Vec<f32>,
    base: u64,
    /// The next output frame.
    next: u64,
    passthrough: bool,
}

impl Resampler {
    fn new(from: u32, to: u32, channels: usize) -> Option<Resampler> {
        if from == 0 || to == 0 {
            return None;
        }
        let g = gcd(u64::from(from), u64::from(to));
        let (up, down) = (u64::from(to) / g, u64::from(from) / g);
        if up as usize > MAX_PHASES {
            return None;
        }
        let taps = 2 * HALF_TAPS;
        // Cut below the lower of the two Nyquist frequencies, a little inside it so the
        // transition band does not fold back.
        let cutoff = 0.92 * (up as f64 / down as f64).min(1.0);
        let mut table = Vec::with_capacity(up as usize * taps);
        for phase in 0..up {
            let fraction = phase as f64 / up as f64;
            let start = table.len();
            for tap in 0..taps {
                // Distance from the output position to input sample `tap`.
                let distance = fraction + (HALF_TAPS as f64 - 1.0) - tap as f64;
                let x = distance * cutoff;
                let sinc = if x.abs() < 1e-9 {
                    1.0
                } else {
                    (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
                };
                let w = (distance / HALF_TAPS as f64 + 1.0) / 2.0;
                let tau = 2.0 * std::f64::consts::PI * w;
                let window = 0.42 - 0.5 * tau.cos() + 0.08 * (2.0 * tau).cos();
                table.push((sinc * window.max(0.0)) as f32);
            }
            // Each phase passes a constant unchanged.
            let sum: f32 = table[start..].iter().sum();
            if sum.abs() > f32::EPSILON {
                table[start..].iter_mut().for_each(|c| *c /= sum);
            }
        }
        let mut resampler = Resampler {
            up,
            down,
            channels,
            table,
            history: Vec::new(),
            base: 0,
            next: 0,
            passthrough: from == to,
        };
        resampler.reset();
        Some(resampler)
    }

    /// Forget the input: the next sample starts a new signal (silence before it).
    fn reset(&mut self) {
        self.history.clear();
        // Silence before the first sample, so output sample 0 is input sample 0's time.
        self.history.resize((HALF_TAPS - 1) * self.channels, 0.0);
        self.base = 0;
        self.next = 0;
    }

    /// Resample `input` (interleaved) onto the end of `out`.
    fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.passthrough {
            out.extend_from_slice(input);
            return;
        }
        let ch = self.channels;
        let taps = 2 * HALF_TAPS;
        self.history.extend_from_slice(input);
        let available = (self.history.len() / ch) as u64;
        loop {
            let position = self.next * self.down;
            // History frame `i` is input frame `i - (HALF_TAPS - 1)`, so the filter for
            // output `next` reads history frames `first .. first + taps`.
            let first = position / self.up;
            let phase = (position % self.up) as usize;
            if first + taps as u64 > self.base + available {
                break;
            }
            let coefficients = &self.table[phase * taps..(phase + 1) * taps];
            let start = ((first - self.base) as usize) * ch;
            for c in 0..ch {
                let mut acc = 0.0f32;
                for (k, coefficient) in coefficients.iter().enumerate() {
                    acc += coefficient * self.history[start + k * ch + c];
                }
                out.push(acc);
            }
            self.next += 1;
        }
        // Keep what the next output's filter still reads.
        let needed = (self.next * self.down) / self.up;
        let drop_frames = needed.saturating_sub(self.base) as usize;
        let drop_frames = drop_frames.min(self.history.len() / ch);
        self.history.drain(..drop_frames * ch);
        self.base += drop_frames as u64;
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusty_aac::{audio_specific_config_bytes, AacEncoder, AacEncoderConfig};

    /// `seconds` of a `frequency` sine at `rate`, stereo, as AAC access units with their
    /// times, and the AudioSpecificConfig.
    fn aac_tone(rate: u32, frequency: f32, seconds: f32) -> (Vec<u8>, Vec<(Vec<u8>, u64)>) {
        let frames = (rate as f32 * seconds) as usize;
        let mut pcm = Vec::with_capacity(frames * 2);
        for n in 0..frames {
            let s = 0.5 * (2.0 * std::f32::consts::PI * frequency * n as f32 / rate as f32).sin();
            pcm.extend([s, s]);
        }
        let mut encoder = AacEncoder::new(AacEncoderConfig::default());
        encoder.push_pcm(&pcm, 2, rate).unwrap();
        encoder.finish();
        let mut units = Vec::new();
        let mut index = 0u64;
        while let Ok(packet) = encoder.next_packet() {
            units.push((packet.data, index * 1024 * 1000 / u64::from(rate)));
            index += 1;
        }
        (audio_specific_config_bytes(rate, 2), units)
    }

    /// Decode Opus packets back to mono PCM at 48 kHz.
    fn decode(packets: &[OpusPacket], channels: usize) -> Vec<f32> {
        let opus_channels = if channels == 1 {
            Channels::Mono
        } else {
            Channels::Stereo
        };
        let mut decoder = opus::Decoder::new(OPUS_RATE, opus_channels).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0f32; 5760 * channels];
        for packet in packets {
            let n = decoder.decode_float(&packet.data, &mut buf, false).unwrap();
            assert_eq!(n, FRAME, "every packet is 20 ms");
            pcm.extend(buf[..n * channels].chunks(channels).map(|f| f[0]));
        }
        pcm
    }

    /// The frequency of `pcm` at 48 kHz, from its zero crossings.
    fn frequency(pcm: &[f32]) -> f32 {
        let crossings = pcm.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
        crossings as f32 * OPUS_RATE as f32 / pcm.len() as f32
    }

    fn rms(pcm: &[f32]) -> f32 {
        (pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len() as f32).sqrt()
    }

    fn transcode(rate: u32) {
        let (config, units) = aac_tone(rate, 1000.0, 2.0);
        let mut transcoder = AacToOpus::new(&config).unwrap();
        assert_eq!(transcoder.channels(), 2);
        let mut packets = Vec::new();
        for (unit, ms) in &units {
            transcoder.push(unit, *ms, &mut packets).unwrap();
        }
        assert_eq!(transcoder.undecodable(), 0);
        // Two seconds in, about a hundred 20 ms packets out, 20 ms apart from the start.
        assert!(packets.len() >= 95, "{} packets", packets.len());
        for (i, packet) in packets.iter().enumerate() {
            assert_eq!(packet.timestamp_ms, i as u64 * PACKET_MS);
        }
        // Past the codecs' start-up, the tone is there: same pitch, similar level (a sine
        // of amplitude 0.5 has an RMS of 0.354).
        let pcm = decode(&packets, 2);
        let steady = &pcm[OPUS_RATE as usize / 5..pcm.len() - OPUS_RATE as usize / 10];
        let hz = frequency(steady);
        assert!((hz - 1000.0).abs() < 5.0, "{hz} Hz at {rate} Hz in");
        let level = rms(steady);
        assert!((level - 0.354).abs() < 0.06, "RMS {level} at {rate} Hz in");
    }

    #[test]
    fn a_tone_at_48khz_comes_out_as_the_same_tone() {
        transcode(48_000);
    }

    #[test]
    fn a_tone_at_44_1khz_is_resampled_to_the_same_tone() {
        transcode(44_100);
    }

    #[test]
    fn a_gap_starts_a_new_run_and_time_never_goes_back() {
        let (config, units) = aac_tone(44_100, 440.0, 1.0);
        let mut transcoder = AacToOpus::new(&config).unwrap();
        let mut packets = Vec::new();
        let (first, second) = units.split_at(units.len() / 2);
        for (unit, ms) in first {
            transcoder.push(unit, 1000 + ms, &mut packets).unwrap();
        }
        let before = packets.len();
        // The second half comes 5 s later (the publisher's audio paused).
        for (unit, ms) in second {
            transcoder.push(unit, 6000 + ms, &mut packets).unwrap();
        }
        assert!(packets[0].timestamp_ms == 1000);
        let resumed = &packets[before..];
        assert!(resumed[0].timestamp_ms >= 6000 + second[0].1);
        for pair in packets.windows(2) {
            assert!(pair[1].timestamp_ms > pair[0].timestamp_ms);
        }
        for pair in resumed.windows(2) {
            assert_eq!(pair[1].timestamp_ms - pair[0].timestamp_ms, PACKET_MS);
        }
    }

    #[test]
    fn garbage_is_silence_in_its_place() {
        let (config, units) = aac_tone(48_000, 440.0, 0.5);
        let mut transcoder = AacToOpus::new(&config).unwrap();
        let mut packets = Vec::new();
        for (i, (unit, ms)) in units.iter().enumerate() {
            let unit: &[u8] = if i == 5 { &[0xff, 0xff, 0x01] } else { unit };
            transcoder.push(unit, *ms, &mut packets).unwrap();
        }
        assert!(transcoder.undecodable() <= 1);
        for (i, packet) in packets.iter().enumerate() {
            assert_eq!(packet.timestamp_ms, i as u64 * PACKET_MS);
        }
        assert!(AacToOpus::new(&[0xff]).is_err());
    }

    #[test]
    fn the_resampler_keeps_a_constant_and_the_length() {
        let mut resampler = Resampler::new(44_100, 48_000, 1).unwrap();
        let mut out = Vec::new();
        for _ in 0..100 {
            resampler.process(&[0.25; 441], &mut out);
        }
        // 44100 in, 48000 out less the filter's look-ahead.
        assert!(out.len() <= 48_000 && out.len() >= 48_000 - 2 * HALF_TAPS * 2);
        assert!(out[100..].iter().all(|s| (s - 0.25).abs() < 1e-3));
    }
}
