//! The transcoders, on what a publisher may send: the input's first byte picks the way and
//! how the rest is cut into packets. AAC to Opus takes a configuration (AudioSpecificConfig)
//! then access units; Opus to AAC takes packets. Nothing panics, and what comes out keeps
//! its times in order.
#![no_main]

use audio::aac_to_opus::AacToOpus;
use audio::opus_to_aac::OpusToAac;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    let size = usize::from(how >> 1).max(1);
    let mut packets = rest.chunks(size);
    if how & 1 == 0 {
        let Some(config) = packets.next() else { return };
        let Ok(mut transcoder) = AacToOpus::new(config) else { return };
        let mut out = Vec::new();
        for (i, unit) in packets.enumerate() {
            let _ = transcoder.push(unit, i as u64 * 21, &mut out);
        }
        assert!(out.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
    } else {
        let mut transcoder = OpusToAac::new();
        let mut made = Vec::new();
        for (i, packet) in packets.enumerate() {
            made.extend(transcoder.push(packet, i as u64 * 20));
        }
        assert!(made.windows(2).all(|w| w[0].ms <= w[1].ms));
    }
});
