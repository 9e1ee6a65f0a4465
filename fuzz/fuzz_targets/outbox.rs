//! A viewer's outbox under any sequence of operations: live batches, catch-up, replay,
//! the connection's own messages, partial writes, skips, track changes, leaving, and writes
//! straight from the frames' shared buffers. Nothing panics, every write reported is of
//! bytes actually queued, what a skip drops is never the connection's own messages, and
//! the shared buffers are exactly what the outbox would have queued.
//! Each record is `op | arg | count`, followed for frame ops by `count` frame kinds.
#![no_main]

use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use media::frame::{Frame, Tracks};
use media::outbox::{FlvFraming, Format, Outbox, MAX_IOVECS};
use media::frame::MediaKind;
use media::frame::SegmentMark;

fn frame(kind: u8, ts: u64) -> Arc<Frame> {
    let (media_kind, payload): (MediaKind, &'static [u8]) = match kind % 6 {
        0 => (MediaKind::Video, &[0x17, 0x00, 0, 0, 0, 0x01, 0x64]),
        1 => (MediaKind::Video, &[0x17, 0x01, 0, 0, 0, 0x65, 0x88]),
        2 => (MediaKind::Video, &[0x27, 0x01, 0, 0, 0, 0x41, 0x9a]),
        3 => (MediaKind::Audio, &[0xAF, 0x00, 0x12, 0x10]),
        4 => (MediaKind::Audio, &[0xAF, 0x01, 0x21, 0x00]),
        _ => (MediaKind::Metadata, &[0x02, 0x00, 0x01, b'x']),
    };
    let mut frame = Frame::new(media_kind, ts, Bytes::from_static(payload));
    if kind & 0x80 != 0 {
        frame.segment = Some(SegmentMark {
            sequence: ts,
            discontinuity: 0,
            timestamp: ts,
            target_duration: 2,
            program_date_ms: 0,
        });
    }
    Arc::new(frame)
}

/// Everything queued, front first (writing it out).
fn drained(outbox: &mut Outbox) -> Vec<u8> {
    let mut bytes = Vec::new();
    while !outbox.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let count = outbox.io_slices(&mut slices);
        slices[..count].iter().for_each(|s| bytes.extend_from_slice(s));
        let offered = slices[..count].iter().map(|s| s.len()).sum();
        assert!(offered > 0, "a non-empty outbox hands out bytes");
        outbox.advance(offered);
    }
    bytes
}

fn queued(outbox: &Outbox) -> usize {
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let count = outbox.io_slices(&mut slices);
    slices[..count].iter().map(|s| s.len()).sum()
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let format = match first % 3 {
        0 => Format::Rtmp { stream_id: 1 },
        1 => Format::Rtmp { stream_id: 7 },
        _ => Format::Flv {
            framing: match (first & 4 != 0, first & 0x80 != 0) {
                (false, _) => FlvFraming::Chunked,
                (true, false) => FlvFraming::UntilClose,
                (true, true) => FlvFraming::WebSocket,
            },
            marks: first & 8 != 0,
        },
    };
    let mut outbox = Outbox::new(format, usize::from(first >> 4));
    let mut ts = 0u64;
    while rest.len() >= 3 {
        let (op, arg, count) = (rest[0], rest[1], usize::from(rest[2] % 16));
        rest = &rest[3..];
        let kinds = &rest[..count.min(rest.len())];
        rest = &rest[kinds.len()..];
        let frames: Vec<Arc<Frame>> = kinds
            .iter()
            .map(|&k| {
                ts += u64::from(arg);
                frame(k, ts)
            })
            .collect();
        match op % 9 {
            0 => {
                outbox.push(&frames);
            }
            1 => outbox.catch_up(&frames),
            2 => outbox.replay(&frames, arg & 1 != 0),
            3 => outbox.push_bytes(Bytes::from(vec![0xEE; usize::from(arg)])),
            4 => {
                // A partial write of up to what is offered.
                let offered = queued(&outbox);
                let written = usize::from(arg).min(offered);
                outbox.advance(written);
            }
            5 => {
                outbox.skip();
            }
            6 => outbox.set_tracks(Tracks {
                audio: arg & 1 != 0,
                video: arg & 2 != 0,
            }),
            7 => {
                // Written straight from the frames, `arg` bytes of it taken.
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                if let Some(count) = outbox.shared_slices(&frames, &mut slices) {
                    let shared: Vec<u8> = slices[..count].iter().flat_map(|s| s.iter().copied()).collect();
                    // Only offered with nothing queued and nothing of its own to encode: a
                    // fresh outbox would queue the same.
                    let mut fresh = Outbox::new(format, usize::MAX);
                    fresh.push(&frames);
                    assert_eq!(shared, drained(&mut fresh));
                    let written = usize::from(arg).min(shared.len());
                    if outbox.push_unwritten(&frames, written) == 0 {
                        assert_eq!(queued(&outbox), shared.len() - written);
                    }
                }
            }
            _ => {
                let _ = outbox.take_started();
                assert!(outbox.is_empty());
            }
        }
        assert_eq!(outbox.is_empty(), queued(&outbox) == 0);
    }
    // Writing everything empties the outbox.
    drained(&mut outbox);
});
