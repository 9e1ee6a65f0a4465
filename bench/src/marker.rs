//! The per-frame marker the bench's publisher embeds in every video frame: a sequence number
//! and the send time, so players can count lost frames and measure publisher-to-player latency.
//!
//! It travels as an H.264 SEI NAL unit (user_data_unregistered, with our own UUID) placed first
//! in the AVCC frame, right after the 5-byte FLV/RTMP AVC video header. That keeps the frame a
//! valid length-prefixed AVC access unit, so servers that parse NALUs (HLS muxers, keyframe
//! detectors) are not disturbed. The numbers are written 7 bits per byte with the top bit set,
//! so the SEI contains no zero bytes and needs no emulation prevention.

use std::sync::OnceLock;
use std::time::Instant;

/// UUID of our SEI payload (no zero bytes).
pub const UUID: [u8; 16] = *b"ferrolive-bench!";
/// Bytes of one encoded number.
const NUM_LEN: usize = 10;
/// SEI payload: UUID + sequence + send time.
const SEI_PAYLOAD_LEN: usize = 16 + 2 * NUM_LEN;
/// The SEI NAL unit without its length prefix: NAL header, payload type, size, payload,
/// rbsp trailing bits.
pub const SEI_NAL_LEN: usize = 3 + SEI_PAYLOAD_LEN + 1;
/// How far into a video payload players look for the marker.
const SEARCH_WINDOW: usize = 5 + 4 + 3 + 16;

/// Microseconds since the first call in this process (the clock publisher and players share).
pub fn now_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn put_num(v: u64, out: &mut Vec<u8>) {
    for i in (0..NUM_LEN).rev() {
        out.push(0x80 | ((v >> (7 * i)) & 0x7F) as u8);
    }
}

fn get_num(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &x in b.get(..NUM_LEN)? {
        if x & 0x80 == 0 {
            return None;
        }
        v = (v << 7) | u64::from(x & 0x7F);
    }
    Some(v)
}

/// Appends the length-prefixed SEI NAL carrying `seq` and `send_us` (`nal_length_size` of
/// 1, 2 or 4 bytes, as the stream's AVC decoder configuration record says).
pub fn put_sei(seq: u64, send_us: u64, nal_length_size: u8, out: &mut Vec<u8>) {
    let len = SEI_NAL_LEN as u32;
    match nal_length_size {
        1 => out.push(len as u8),
        2 => out.extend_from_slice(&(len as u16).to_be_bytes()),
        3 => out.extend_from_slice(&len.to_be_bytes()[1..]),
        _ => out.extend_from_slice(&len.to_be_bytes()),
    }
    out.push(0x06); // nal_unit_type 6: SEI
    out.push(0x05); // payloadType 5: user_data_unregistered
    out.push(SEI_PAYLOAD_LEN as u8);
    out.extend_from_slice(&UUID);
    put_num(seq, out);
    put_num(send_us, out);
    out.push(0x80); // rbsp_stop_one_bit
}

/// A video payload: `header5` (the AVC video tag header), our SEI, then `rest` (the frame's
/// own length-prefixed NAL units).
pub fn marked_video(
    header5: &[u8],
    seq: u64,
    send_us: u64,
    nal_length_size: u8,
    rest: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(header5.len() + 4 + SEI_NAL_LEN + rest.len());
    out.extend_from_slice(header5);
    put_sei(seq, send_us, nal_length_size, &mut out);
    out.extend_from_slice(rest);
    out
}

/// The (sequence, send time in us) a video payload carries, if it has our marker.
pub fn find(payload: &[u8]) -> Option<(u64, u64)> {
    let window = payload.get(5..)?;
    let window = &window[..window.len().min(SEARCH_WINDOW)];
    let at = window.windows(UUID.len()).position(|w| w == UUID)?;
    let nums = payload.get(5 + at + UUID.len()..)?;
    Some((get_num(nums)?, get_num(nums.get(NUM_LEN..)?)?))
}

/// How far into an Annex B access unit (HTTP-TS) players look for the marker: past the
/// access unit delimiter and a keyframe's parameter sets.
const ANNEXB_SEARCH_WINDOW: usize = 512;

/// The (sequence, send time in us) an Annex B access unit carries, if it has our marker.
pub fn find_annexb(access_unit: &[u8]) -> Option<(u64, u64)> {
    find_within(access_unit, ANNEXB_SEARCH_WINDOW)
}

/// How much of an MP4 video sample (length-prefixed NAL units, the AVCC payload of an FLV
/// tag without its 5-byte header) players read to find the marker: our SEI comes first, and
/// this leaves room for an access unit delimiter before it.
pub const SAMPLE_SEARCH_WINDOW: usize = 96;

/// The (sequence, send time in us) an MP4 video sample carries, if it has our marker.
/// `sample` may be only the sample's first [`SAMPLE_SEARCH_WINDOW`] bytes.
pub fn find_sample(sample: &[u8]) -> Option<(u64, u64)> {
    find_within(sample, SAMPLE_SEARCH_WINDOW)
}

/// Our marker, its UUID within the first `window` bytes of `data`.
fn find_within(data: &[u8], window: usize) -> Option<(u64, u64)> {
    let searched = &data[..data.len().min(window)];
    let at = searched.windows(UUID.len()).position(|w| w == UUID)?;
    let nums = data.get(at + UUID.len()..)?;
    Some((get_num(nums)?, get_num(nums.get(NUM_LEN..)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_nal_length_sizes() {
        for size in [1u8, 2, 4] {
            for (seq, t) in [
                (0u64, 0u64),
                (1, 33_333),
                (123_456, u64::MAX >> 1),
                (u64::MAX, 7),
            ] {
                let p = marked_video(&[0x27, 1, 0, 0, 0], seq, t, size, &[0, 0, 0, 2, 0x41, 0x9A]);
                assert_eq!(find(&p), Some((seq, t)), "size {size}");
                // No zero bytes inside the SEI NAL (no emulation prevention needed).
                let sei = &p[5 + usize::from(size)..5 + usize::from(size) + SEI_NAL_LEN];
                assert!(!sei.contains(&0), "{sei:?}");
                assert_eq!(p.len(), 5 + usize::from(size) + SEI_NAL_LEN + 6);
            }
        }
    }

    #[test]
    fn annexb_access_units_carry_it_too() {
        let mut au = vec![0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1];
        let mut sei = Vec::new();
        put_sei(42, 1_000, 4, &mut sei);
        au.extend_from_slice(&sei[4..]);
        assert_eq!(find_annexb(&au), Some((42, 1_000)));
        assert_eq!(find_annexb(&au[..20]), None);
    }

    #[test]
    fn mp4_samples_carry_it_after_the_flv_header() {
        let p = marked_video(&[0x17, 1, 0, 0, 0], 9, 77, 4, &[0, 0, 0, 2, 0x65, 0x88]);
        assert_eq!(find_sample(&p[5..]), Some((9, 77)));
        assert_eq!(
            find_sample(&p[5..5 + SAMPLE_SEARCH_WINDOW.min(p.len() - 5)]),
            Some((9, 77))
        );
        // Cut inside the numbers: no marker rather than a wrong one.
        assert_eq!(find_sample(&p[5..40]), None);
        assert_eq!(find_sample(&[0, 0, 0, 2, 0x65, 0x88]), None);
    }

    #[test]
    fn unmarked_frames_have_no_marker() {
        assert_eq!(
            find(&[0x17, 1, 0, 0, 0, 0, 0, 0, 5, 0x65, 1, 2, 3, 4, 5]),
            None
        );
        assert_eq!(find(&[0x17]), None);
        assert_eq!(find(&[]), None);
    }
}
