use super::*;
use proptest::prelude::*;

/// 20 ms of Opus at 48 kHz.
const PACKET: usize = 960;
const TONE_HZ: f32 = 1000.0;
const AMPLITUDE: f32 = 0.5;

/// `seconds` of a sine tone, encoded to 20 ms Opus packets by libopus.
fn opus_tone(channels: opus::Channels, seconds: usize) -> Vec<Vec<u8>> {
    let n = channels as usize;
    let mut encoder =
        opus::Encoder::new(SAMPLE_RATE, channels, opus::Application::Audio).expect("encoder");
    encoder
        .set_bitrate(opus::Bitrate::Bits(64_000 * n as i32))
        .expect("bit rate");
    let packets = seconds * SAMPLE_RATE as usize / PACKET;
    (0..packets)
        .map(|p| {
            let pcm: Vec<f32> = (0..PACKET)
                .flat_map(|i| {
                    let t = (p * PACKET + i) as f32 / SAMPLE_RATE as f32;
                    let v = AMPLITUDE * (2.0 * std::f32::consts::PI * TONE_HZ * t).sin();
                    std::iter::repeat_n(v, n)
                })
                .collect();
            encoder.encode_vec_float(&pcm, 4000).expect("encode")
        })
        .collect()
}

/// Decode AAC frames with rusty_aac's decoder: interleaved PCM.
fn decode_aac(config: &[u8], frames: &[AacFrame]) -> (usize, Vec<f32>) {
    let mut decoder = rusty_aac::AacDecoder::with_config_bytes(config).expect("config");
    let mut channels = 0;
    let mut pcm = Vec::new();
    for frame in frames {
        let decoded = decoder
            .decode(&frame.data, None)
            .expect("an AAC frame decodes");
        assert_eq!(decoded.sample_rate, SAMPLE_RATE);
        assert_eq!(decoded.frames(), AAC_FRAME);
        channels = decoded.channels as usize;
        pcm.extend_from_slice(&decoded.samples);
    }
    (channels, pcm)
}

/// The tone's frequency by zero crossings, and its RMS, of one channel.
fn frequency_and_rms(channel: &[f32]) -> (f32, f32) {
    let crossings = channel
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    let seconds = channel.len() as f32 / SAMPLE_RATE as f32;
    let rms = (channel.iter().map(|v| v * v).sum::<f32>() / channel.len() as f32).sqrt();
    (crossings as f32 / 2.0 / seconds, rms)
}

fn transcode(packets: &[Vec<u8>], skip: impl Fn(usize) -> bool) -> (OpusToAac, Vec<AacFrame>) {
    let mut transcoder = OpusToAac::new();
    let mut frames = Vec::new();
    for (i, packet) in packets.iter().enumerate() {
        if skip(i) {
            continue;
        }
        frames.extend(transcoder.push(packet, 1000 + (i * 20) as u64));
    }
    (transcoder, frames)
}

/// Consecutive frames are exactly 1024 samples apart, from the first packet's time.
fn assert_continuous(frames: &[AacFrame], first_ms: u64) {
    for (k, frame) in frames.iter().enumerate() {
        let expected = first_ms + (k as u64 * AAC_FRAME as u64) / 48;
        assert_eq!(frame.ms, expected, "frame {k}");
    }
}

#[test]
fn a_tone_comes_out_as_the_same_tone() {
    for channels in [opus::Channels::Mono, opus::Channels::Stereo] {
        let packets = opus_tone(channels, 2);
        let (transcoder, frames) = transcode(&packets, |_| false);
        let n = channels as usize;
        assert_eq!(transcoder.channels(), Some(n as u8));
        // 2 s of input; the last two blocks wait for their look-ahead.
        assert_eq!(frames.len(), 2 * 48_000 / AAC_FRAME - 2, "{n} channels");
        assert_continuous(&frames, 1000);
        let config = transcoder.audio_specific_config().expect("config");
        // AAC-LC (2), 48 kHz (index 3), the channels.
        assert_eq!(config, vec![0x11, 0x80 | (n as u8) << 3]);
        let (decoded_channels, pcm) = decode_aac(&config, &frames);
        assert_eq!(decoded_channels, n);
        for c in 0..n {
            // Past the codecs' start-up.
            let channel: Vec<f32> = pcm.iter().skip(c).step_by(n).skip(4800).copied().collect();
            let (frequency, rms) = frequency_and_rms(&channel);
            assert!((frequency - TONE_HZ).abs() < 10.0, "{frequency} Hz");
            let expected = AMPLITUDE / std::f32::consts::SQRT_2;
            assert!(
                (rms / expected - 1.0).abs() < 0.15,
                "rms {rms}, expected {expected}"
            );
        }
    }
}

#[test]
fn lost_and_garbled_packets_are_concealed_and_time_goes_on() {
    let mut packets = opus_tone(opus::Channels::Mono, 1);
    // Garbled: a TOC byte that promises more than the packet has.
    packets[20] = vec![0xff, 0xff, 0x03];
    // Packets 10 and 30..33 are lost.
    let (transcoder, frames) = transcode(&packets, |i| i == 10 || (30..33).contains(&i));
    assert_continuous(&frames, 1000);
    assert_eq!(frames.len(), 48_000 / AAC_FRAME - 2);
    let config = transcoder.audio_specific_config().expect("config");
    let (_, pcm) = decode_aac(&config, &frames);
    // The tone is still there after the losses.
    let (frequency, _) = frequency_and_rms(&pcm[pcm.len() - 9600..]);
    assert!((frequency - TONE_HZ).abs() < 10.0, "{frequency} Hz");
}

#[test]
fn a_long_pause_starts_a_new_timeline_and_late_packets_are_dropped() {
    let packets = opus_tone(opus::Channels::Mono, 1);
    let mut transcoder = OpusToAac::new();
    let mut frames = Vec::new();
    for (i, packet) in packets.iter().take(25).enumerate() {
        frames.extend(transcoder.push(packet, (i * 20) as u64));
    }
    // A packet from the past changes nothing.
    assert!(transcoder.push(&packets[3], 60).is_empty());
    let before = frames.len();
    for (i, packet) in packets.iter().skip(25).enumerate() {
        frames.extend(transcoder.push(packet, 10_000 + (i * 20) as u64));
    }
    assert_continuous(&frames[..before], 0);
    assert_continuous(&frames[before..], 10_000);
}

#[test]
fn nothing_comes_of_garbage_before_the_first_packet() {
    let mut transcoder = OpusToAac::new();
    assert!(transcoder.push(&[], 0).is_empty());
    assert_eq!(transcoder.audio_specific_config(), None);
}

proptest! {
    // Each case encodes up to a minute of audio: a few dozen cases are plenty.
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever arrives as Opus, with whatever times, nothing panics and what comes out
    /// goes forward in time.
    #[test]
    fn arbitrary_packets_never_panic(
        packets in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..300), 0u64..3000),
            0..60,
        )
    ) {
        let mut transcoder = OpusToAac::new();
        let mut ms = 0u64;
        let mut last = None;
        for (packet, step) in packets {
            ms += step;
            for frame in transcoder.push(&packet, ms) {
                prop_assert!(last.is_none_or(|last| frame.ms > last));
                last = Some(frame.ms);
            }
        }
    }
}
