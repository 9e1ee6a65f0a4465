//! Fragmented MP4 writer: `Fmp4Writer::new` from two header frames, then `push`, `cut` and
//! `finish`. Whatever the payloads and timestamps, nothing panics and all output is whole,
//! well-nested boxes: ftyp + moov, then moof + mdat per fragment, then mfra, which its mfro
//! measures; duration_ms never goes back.
//!
//! Layout: the video header's and the audio header's `len u16 LE | payload` (length 0: no
//! header), then records `op | ts delta i16 LE | len u16 LE | payload`, op % 4: 0 audio,
//! 1 video, 2 metadata, 3 cut (payload ignored). An op with the top bit set multiplies the
//! delta by 65536, for jumps of hours.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use media::fmp4::{Fmp4Stream, Fmp4Writer};
use media::frame::{Frame, MediaKind};

/// Boxes that hold only boxes.
const CONTAINERS: [&[u8; 4]; 10] = [
    b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"mvex", b"moof", b"traf", b"mfra",
];

/// The types of the boxes `data` consists of; asserts that they fill it exactly, and so do
/// the boxes in each container.
fn boxes(data: &[u8]) -> Vec<[u8; 4]> {
    let mut kinds = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        assert!(rest.len() >= 8, "{} stray bytes", rest.len());
        let (header, size) = match u32::from_be_bytes(rest[..4].try_into().unwrap()) {
            1 => (
                16,
                u64::from_be_bytes(rest[8..16].try_into().unwrap()) as usize,
            ),
            n => (8, n as usize),
        };
        assert!(
            size >= header && size <= rest.len(),
            "box size {size}, {} left",
            rest.len()
        );
        let kind: [u8; 4] = rest[4..8].try_into().unwrap();
        if CONTAINERS.contains(&&kind) {
            boxes(&rest[header..size]);
        }
        kinds.push(kind);
        at += size;
    }
    kinds
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn header(rest: &mut &[u8], kind: MediaKind) -> Option<Frame> {
    let len = take(rest, 2)?;
    let len = usize::from(u16::from_le_bytes([len[0], len[1]])).min(rest.len());
    let payload = take(rest, len)?;
    (len > 0).then(|| Frame::new(kind, 0, Bytes::copy_from_slice(payload)))
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let video = header(&mut rest, MediaKind::Video);
    let audio = header(&mut rest, MediaKind::Audio);
    let Ok(mut writer) = Fmp4Writer::new(video.as_ref(), audio.as_ref()) else {
        return;
    };
    assert_eq!(boxes(&writer.init()), [*b"ftyp", *b"moov"]);
    // A player's continuous stream (HTTP-fMP4) of the same frames, headers first.
    let mut stream = Fmp4Stream::new();
    let mut streamed = BytesMut::new();
    for header in video.iter().chain(&audio) {
        let mut header = Frame::new(header.kind, 0, header.payload.clone());
        header.sequence_header = true;
        stream.push(&header, &mut streamed);
    }
    let mut duration = 0;
    let mut ts: u64 = 1 << 32;
    let mut check = |fragment: Option<Bytes>, duration_ms: u64| {
        if let Some(fragment) = fragment {
            assert_eq!(boxes(&fragment), [*b"moof", *b"mdat"]);
        }
        assert!(duration_ms >= duration, "duration went back");
        duration = duration_ms;
    };
    while let Some(record) = take(&mut rest, 5) {
        let op = record[0];
        let scale = if op & 0x80 != 0 { 65536 } else { 1 };
        let delta = i64::from(i16::from_le_bytes([record[1], record[2]])) * scale;
        ts = ts.saturating_add_signed(delta);
        let len = usize::from(u16::from_le_bytes([record[3], record[4]])).min(rest.len());
        let payload = Bytes::copy_from_slice(take(&mut rest, len).unwrap());
        let kind = match op % 4 {
            0 => MediaKind::Audio,
            1 => MediaKind::Video,
            2 => MediaKind::Metadata,
            _ => {
                let fragment = writer.cut();
                check(fragment, writer.duration_ms());
                stream.flush(&mut streamed);
                continue;
            }
        };
        let frame = Frame::new(kind, ts, payload);
        let fragment = writer.push(&frame);
        check(fragment, writer.duration_ms());
        stream.push(&frame, &mut streamed);
    }
    stream.flush(&mut streamed);
    // Whole boxes: an init segment, then fragments (a new init when a header changed).
    let kinds = boxes(&streamed);
    assert!(kinds.is_empty() || kinds[..2] == [*b"ftyp", *b"moov"], "{kinds:?}");
    let end = writer.finish();
    let kinds = boxes(&end);
    assert!(
        kinds == [*b"mfra"] || kinds == [*b"moof", *b"mdat", *b"mfra"],
        "finish gave {kinds:?}"
    );
    let mfro_size = u32::from_be_bytes(end[end.len() - 4..].try_into().unwrap()) as usize;
    assert!(mfro_size <= end.len(), "mfro size {mfro_size}");
    let mfra_size = u32::from_be_bytes(end[end.len() - mfro_size..][..4].try_into().unwrap());
    assert_eq!(mfra_size as usize, mfro_size, "mfro names the mfra's size");
    assert!(writer.finish().is_empty() && writer.cut().is_none());
});
