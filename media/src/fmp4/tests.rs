use super::*;
use crate::test_payloads::{araw, aseq, meta, vinter, vkey, vseq};
use bytes::BytesMut;

use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// A box walker: reads the writer's output back, checking that every box fits its parent
// exactly.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Mp4Box<'a> {
    kind: [u8; 4],
    /// Where the box starts in the buffer it was read from.
    at: usize,
    /// The whole box and its body.
    bytes: &'a [u8],
    body: &'a [u8],
}

impl<'a> Mp4Box<'a> {
    fn kind(&self) -> &str {
        std::str::from_utf8(&self.kind).unwrap()
    }

    /// A full box's version and flags, and the body after them.
    fn full(&self) -> (u8, u32, Reader<'a>) {
        let vf = u32::from_be_bytes(self.body[..4].try_into().unwrap());
        ((vf >> 24) as u8, vf & 0xFF_FFFF, Reader(&self.body[4..]))
    }

    /// The boxes a container box holds.
    fn children(&self) -> Vec<Mp4Box<'a>> {
        walk(self.body).unwrap_or_else(|e| panic!("in {}: {e}", self.kind()))
    }

    /// The only child of this kind.
    fn child(&self, kind: &str) -> Mp4Box<'a> {
        let found: Vec<_> = self
            .children()
            .into_iter()
            .filter(|b| b.kind() == kind)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{} {kind} boxes in {}",
            found.len(),
            self.kind()
        );
        found[0]
    }

    /// The only box at a path of children, e.g. `mdia/minf/stbl`.
    fn path(&self, path: &str) -> Mp4Box<'a> {
        path.split('/').fold(*self, |b, kind| b.child(kind))
    }
}

/// The boxes `data` consists of: each at least a header, none running past the end, no
/// bytes left over.
fn walk(data: &[u8]) -> Result<Vec<Mp4Box<'_>>, String> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < 8 {
            return Err(format!("{} stray bytes at {at}", rest.len()));
        }
        let size = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let (header, size) = match size {
            1 if rest.len() >= 16 => (16, u64::from_be_bytes(rest[8..16].try_into().unwrap())),
            0 | 1 => return Err(format!("box size {size} at {at}")),
            n => (8, u64::from(n)),
        };
        let size = usize::try_from(size).map_err(|e| e.to_string())?;
        if size < header || size > rest.len() {
            return Err(format!("box of {size} bytes at {at}, {} left", rest.len()));
        }
        boxes.push(Mp4Box {
            kind: rest[4..8].try_into().unwrap(),
            at,
            bytes: &rest[..size],
            body: &rest[header..size],
        });
        at += size;
    }
    Ok(boxes)
}

const CONTAINERS: [&str; 10] = [
    "moov", "trak", "mdia", "minf", "dinf", "stbl", "mvex", "moof", "traf", "mfra",
];

/// Walk `data` and every container in it, down to the codec boxes in sample entries;
/// panics naming the first box that does not fit.
fn check_nesting(data: &[u8]) {
    for b in walk(data).unwrap() {
        let kind = b.kind();
        if CONTAINERS.contains(&kind) {
            check_nesting(b.body);
        } else if kind == "dref" {
            check_nesting(&b.body[8..]);
        } else if kind == "stsd" {
            let (_, _, mut r) = b.full();
            let count = r.u32() as usize;
            let entries = walk(r.0).unwrap();
            assert_eq!(entries.len(), count, "stsd entry count");
            for entry in entries {
                check_nesting(&entry.body[sample_entry_len(entry.kind())..]);
            }
        }
    }
}

/// Bytes of a sample entry's own fields, before its child boxes.
fn sample_entry_len(kind: &str) -> usize {
    match kind {
        "avc1" | "hvc1" | "av01" | "vp09" => 78,
        "mp4a" | "Opus" => 28,
        other => panic!("unexpected sample entry {other}"),
    }
}

/// A big-endian cursor that panics when it runs out: output it cannot read is wrong.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        self.u32() as i32
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
}

// ---------------------------------------------------------------------------------------
// Fragments read back.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct ReadSample {
    dts: u64,
    duration: u32,
    composition_offset: i32,
    sync: bool,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Traf {
    track: u32,
    samples: Vec<ReadSample>,
}

#[derive(Debug)]
struct Fragment {
    sequence: u32,
    trafs: Vec<Traf>,
}

impl Fragment {
    fn track(&self, id: u32) -> Option<&Traf> {
        self.trafs.iter().find(|t| t.track == id)
    }
    fn samples(&self, id: u32) -> &[ReadSample] {
        self.track(id).map_or(&[], |t| &t.samples)
    }
}

/// A fragment (`moof` + `mdat`) read back. Checks that the samples' data, found through
/// each trun's data_offset, exactly covers the mdat payload in order.
fn read_fragment(bytes: &[u8]) -> Fragment {
    check_nesting(bytes);
    let top = walk(bytes).unwrap();
    let kinds: Vec<_> = top.iter().map(|b| b.kind()).collect();
    assert_eq!(kinds, ["moof", "mdat"]);
    let (moof, mdat) = (top[0], top[1]);
    let mdat_payload = mdat.at + (mdat.bytes.len() - mdat.body.len());
    let (_, _, mut r) = moof.child("mfhd").full();
    let sequence = r.u32();
    let mut trafs = Vec::new();
    let mut next_data = mdat_payload;
    for traf in moof.children().into_iter().filter(|b| b.kind() == "traf") {
        let (_, tfhd_flags, mut r) = traf.child("tfhd").full();
        assert_eq!(tfhd_flags, DEFAULT_BASE_IS_MOOF, "tfhd flags");
        let track = r.u32();
        let (version, _, mut r) = traf.child("tfdt").full();
        assert_eq!(version, 1);
        let mut dts = r.u64();
        let (version, flags, mut r) = traf.child("trun").full();
        assert_eq!(version, 1, "trun version 1: signed composition offsets");
        assert_eq!(
            flags & !TRUN_COMPOSITION_OFFSET,
            TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS
        );
        let count = r.u32();
        let data_offset = usize::try_from(r.i32()).unwrap();
        assert_eq!(data_offset, next_data, "track {track}: data_offset");
        let mut samples = Vec::new();
        let mut at = data_offset;
        for _ in 0..count {
            let duration = r.u32();
            let size = r.u32() as usize;
            let sample_flags = r.u32();
            assert!(
                sample_flags == SYNC_SAMPLE || sample_flags == NON_SYNC_SAMPLE,
                "sample flags {sample_flags:08x}"
            );
            let composition_offset = if flags & TRUN_COMPOSITION_OFFSET != 0 {
                r.i32()
            } else {
                0
            };
            assert!(at + size <= bytes.len(), "sample data past the mdat");
            samples.push(ReadSample {
                dts,
                duration,
                composition_offset,
                sync: sample_flags == SYNC_SAMPLE,
                data: bytes[at..at + size].to_vec(),
            });
            dts += u64::from(duration);
            at += size;
        }
        assert!(r.0.is_empty(), "trailing bytes in trun");
        next_data = at;
        trafs.push(Traf { track, samples });
    }
    assert_eq!(next_data, bytes.len(), "samples do not cover the mdat");
    Fragment { sequence, trafs }
}

// ---------------------------------------------------------------------------------------
// Input.
// ---------------------------------------------------------------------------------------

fn video(timestamp: u64, payload: Bytes) -> Frame {
    Frame::new(MediaKind::Video, timestamp, payload)
}

fn audio(timestamp: u64, payload: Bytes) -> Frame {
    Frame::new(MediaKind::Audio, timestamp, payload)
}

/// A legacy AVC coded frame with a composition time offset; its NAL data is `[0x65|0x41,
/// id]`.
fn avc(key: bool, composition_ms: i32, id: u8) -> Bytes {
    let cts = composition_ms.to_be_bytes();
    let (b0, nal) = if key { (0x17, 0x65) } else { (0x27, 0x41) };
    Bytes::from(vec![b0, 0x01, cts[1], cts[2], cts[3], nal, id])
}

/// An Enhanced RTMP video packet: frame type 1 (key) or 2, packet type, FourCC, body.
pub(crate) fn ex_video(key: bool, packet_type: u8, fourcc: &[u8; 4], body: &[u8]) -> Bytes {
    let frame_type = if key { 1 } else { 2 };
    let mut p = vec![0x80 | (frame_type << 4) | packet_type];
    p.extend_from_slice(fourcc);
    p.extend_from_slice(body);
    Bytes::from(p)
}

/// An Enhanced RTMP audio packet (SoundFormat 9): packet type, FourCC, body.
pub(crate) fn ex_audio(packet_type: u8, fourcc: &[u8; 4], body: &[u8]) -> Bytes {
    let mut p = vec![0x90 | packet_type];
    p.extend_from_slice(fourcc);
    p.extend_from_slice(body);
    Bytes::from(p)
}

/// x265's SPS for 320x240 and an hvcC record around it.
const HEVC_SPS_320X240: [u8; 42] = [
    0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03,
    0x00, 0x3C, 0xA0, 0x0A, 0x08, 0x0F, 0x16, 0x59, 0x59, 0x52, 0x93, 0x0B, 0xC0, 0x5A, 0x02, 0x00,
    0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x32, 0x10,
];
fn hvcc() -> Vec<u8> {
    let mut r = vec![
        0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3C, 0xF0, 0x00,
        0xFC, 0xFD, 0xF8, 0xF8, 0x00, 0x00, 0x0F,
    ];
    r.extend_from_slice(&[1, 0x80 | 33, 0, 1, 0, HEVC_SPS_320X240.len() as u8]);
    r.extend_from_slice(&HEVC_SPS_320X240);
    r
}
/// libaom's av1C for 208x120, with its sequence header OBU.
const AV1C_208X120: [u8; 16] = [
    0x81, 0x00, 0x0C, 0x00, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x03, 0xB6, 0x7F, 0x73, 0x6B, 0xE4, 0x01,
];
/// vpcC (with its full box version and flags, as ffmpeg sends it): profile 0, level 1.0,
/// 8 bits, 4:2:0 colocated, BT.709.
const VPCC: [u8; 12] = [1, 0, 0, 0, 0, 10, 0x82, 1, 1, 1, 0, 0];
/// The start of libvpx's first keyframe of a 176x144 stream.
const VP9_KEYFRAME_176X144: [u8; 10] = [0x82, 0x49, 0x83, 0x42, 0x00, 0x0A, 0xF0, 0x08, 0xF6, 0x06];
/// libopus's OpusHead: stereo, pre-skip 312, 48 kHz input.
const OPUS_HEAD: &[u8] = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00";

pub(crate) fn hevc_header() -> Frame {
    video(0, ex_video(true, 0, b"hvc1", &hvcc()))
}
pub(crate) fn av1_header() -> Frame {
    video(0, ex_video(true, 0, b"av01", &AV1C_208X120))
}
fn vp9_header() -> Frame {
    video(0, ex_video(true, 0, b"vp09", &VPCC))
}
pub(crate) fn opus_header() -> Frame {
    audio(0, ex_audio(0, b"Opus", OPUS_HEAD))
}

/// What a writer gave out: the init segment, each fragment, and what `finish` returned.
struct Output {
    init: Bytes,
    fragments: Vec<Bytes>,
    tail: Bytes,
}

impl Output {
    fn file(&self) -> Vec<u8> {
        let mut file = self.init.to_vec();
        for f in &self.fragments {
            file.extend_from_slice(f);
        }
        file.extend_from_slice(&self.tail);
        file
    }

    /// All fragments read back, the one in `finish`'s output included.
    fn read(&self) -> Vec<Fragment> {
        let mut out: Vec<_> = self.fragments.iter().map(|f| read_fragment(f)).collect();
        let tail = walk(&self.tail).unwrap();
        if tail.len() == 3 {
            let len = tail[0].bytes.len() + tail[1].bytes.len();
            out.push(read_fragment(&self.tail[..len]));
        }
        out
    }

    /// Every sample of a track, in order.
    fn samples(&self, track: u32) -> Vec<ReadSample> {
        self.read()
            .iter()
            .flat_map(|f| f.samples(track).to_vec())
            .collect()
    }
}

/// Push `frames` through a writer made from the headers, then finish.
fn record(video_header: Option<&Frame>, audio_header: Option<&Frame>, frames: &[Frame]) -> Output {
    let mut writer = Fmp4Writer::new(video_header, audio_header).unwrap();
    let mut fragments = Vec::new();
    for frame in frames {
        fragments.extend(writer.push(frame));
    }
    let tail = writer.finish();
    Output {
        init: writer.init(),
        fragments,
        tail,
    }
}

/// 25 fps AVC with keyframes where `key` says (presented 80 ms after decoding), and AAC-LC 44.1 kHz frames at their
/// millisecond timestamps, interleaved by time as a publisher sends them; starting at
/// stream time `start` ms.
fn av_stream(start: u64, video_frames: usize, key: impl Fn(usize) -> bool) -> Vec<Frame> {
    let end_ms = video_frames as u64 * 40;
    let mut frames: Vec<Frame> = (0..video_frames)
        .map(|i| video(start + i as u64 * 40, avc(key(i), 80, i as u8)))
        .collect();
    let audio_ms = (0..).map(|i: u64| (i * 1024 * 1000 + 22050) / 44100);
    for (i, ms) in audio_ms.take_while(|&ms| ms < end_ms).enumerate() {
        frames.push(audio(start + ms, araw(i as u8)));
    }
    frames.sort_by_key(|f| f.timestamp); // stable: video first at equal times
    frames
}

// ---------------------------------------------------------------------------------------
// The init segment.
// ---------------------------------------------------------------------------------------

#[test]
fn init_segment_for_avc_and_aac() {
    let writer = Fmp4Writer::new(Some(&video(0, vseq(1))), Some(&audio(0, aseq(2)))).unwrap();
    let init = writer.init();
    check_nesting(&init);
    let top = walk(&init).unwrap();
    let kinds: Vec<_> = top.iter().map(|b| b.kind()).collect();
    assert_eq!(kinds, ["ftyp", "moov"]);
    assert_eq!(&top[0].body[..4], b"iso6");

    let moov = top[1];
    let kinds: Vec<_> = moov
        .children()
        .iter()
        .map(|b| b.kind().to_owned())
        .collect();
    assert_eq!(kinds, ["mvhd", "trak", "trak", "mvex"]);
    let traks: Vec<_> = moov
        .children()
        .into_iter()
        .filter(|b| b.kind() == "trak")
        .collect();

    let expect = [(1, 90_000, b"vide", "avc1"), (2, 44_100, b"soun", "mp4a")];
    for (trak, (id, timescale, handler, entry)) in traks.iter().zip(expect) {
        let (_, flags, mut r) = trak.child("tkhd").full();
        assert_eq!(flags, 3, "enabled, in movie");
        r.take(8);
        assert_eq!(r.u32(), id);
        let (_, _, mut r) = trak.path("mdia/mdhd").full();
        r.take(8);
        assert_eq!(r.u32(), timescale);
        let (_, _, mut r) = trak.path("mdia/hdlr").full();
        r.take(4);
        assert_eq!(r.take(4), handler);
        let stbl = trak.path("mdia/minf/stbl");
        let (_, _, mut r) = stbl.child("stsd").full();
        assert_eq!(r.u32(), 1);
        let entries = walk(r.0).unwrap();
        assert_eq!(entries[0].kind(), entry);
        // No samples in the moov: they are all in fragments.
        for table in ["stts", "stsc", "stco"] {
            assert_eq!(stbl.child(table).full().2.u32(), 0, "{table} entries");
        }
    }

    // avcC is the record as the publisher sent it.
    let avc1 = walk(&traks[0].path("mdia/minf/stbl/stsd").body[8..]).unwrap()[0];
    let avcc = walk(&avc1.body[78..]).unwrap()[0];
    assert_eq!((avcc.kind(), avcc.body), ("avcC", &vseq(1)[5..]));

    // mp4a: 2 channels, 16 bits, 44.1 kHz; the esds ends with the AudioSpecificConfig.
    let mp4a = walk(&traks[1].path("mdia/minf/stbl/stsd").body[8..]).unwrap()[0];
    let mut r = Reader(&mp4a.body[16..]);
    assert_eq!((r.u16(), r.u16()), (2, 16));
    r.take(4);
    assert_eq!(r.u32(), 44_100 << 16);
    let esds = walk(&mp4a.body[28..]).unwrap()[0];
    assert_eq!(esds.kind(), "esds");
    let asc = &aseq(2)[2..];
    let (_, _, r) = esds.full();
    let at =
        r.0.windows(asc.len())
            .position(|w| w == asc)
            .expect("ASC in esds");
    assert_eq!(
        r.0[at - 2..at],
        [0x05, asc.len() as u8],
        "DecoderSpecificInfo tag, size"
    );

    let trex: Vec<u32> = moov
        .child("mvex")
        .children()
        .iter()
        .map(|b| {
            assert_eq!(b.kind(), "trex");
            b.full().2.u32()
        })
        .collect();
    assert_eq!(trex, [1, 2]);
    assert_eq!(writer.codecs(), "avc1.64001f,mp4a.40.2");
}

/// The sample entry of the only track in an init segment: its type, picture size, and the
/// codec box in it (type and body).
fn sample_entry(init: &[u8]) -> (String, [u16; 2], String, Vec<u8>) {
    let top = walk(init).unwrap();
    let stsd = top[1].path("trak/mdia/minf/stbl/stsd");
    let entry = walk(&stsd.body[8..]).unwrap()[0];
    let mut r = Reader(&entry.body[24..]);
    let size = [r.u16(), r.u16()];
    let codec_box = walk(&entry.body[sample_entry_len(entry.kind())..]).unwrap()[0];
    (
        entry.kind().to_owned(),
        size,
        codec_box.kind().to_owned(),
        codec_box.body.to_vec(),
    )
}

#[test]
fn sample_entries_for_enhanced_rtmp_codecs() {
    let hevc = Fmp4Writer::new(Some(&hevc_header()), None).unwrap();
    check_nesting(&hevc.init());
    assert_eq!(
        sample_entry(&hevc.init()),
        ("hvc1".into(), [320, 240], "hvcC".into(), hvcc())
    );
    assert_eq!(hevc.codecs(), "hvc1.1.6.L60.90");

    let av1 = Fmp4Writer::new(Some(&av1_header()), None).unwrap();
    check_nesting(&av1.init());
    assert_eq!(
        sample_entry(&av1.init()),
        (
            "av01".into(),
            [208, 120],
            "av1C".into(),
            AV1C_208X120.to_vec()
        )
    );
    assert_eq!(av1.codecs(), "av01.0.00M.08");
    let init = av1.init();
    let ftyp = walk(&init).unwrap()[0];
    assert!(ftyp.body.chunks(4).any(|b| b == b"av01"), "av01 brand");

    // VP9: vpcC version 1 with the record; the picture size comes with the first keyframe.
    let mut vp9 = Fmp4Writer::new(Some(&vp9_header()), None).unwrap();
    let init_len = vp9.init().len();
    assert_eq!(
        sample_entry(&vp9.init()),
        ("vp09".into(), [0, 0], "vpcC".into(), VPCC.to_vec())
    );
    assert_eq!(vp9.codecs(), "vp09.00.10.08");
    vp9.push(&video(0, ex_video(true, 1, b"vp09", &VP9_KEYFRAME_176X144)));
    assert_eq!(sample_entry(&vp9.init()).1, [176, 144]);
    assert_eq!(
        vp9.init().len(),
        init_len,
        "fragment offsets count on the init size"
    );

    let opus = Fmp4Writer::new(None, Some(&opus_header())).unwrap();
    check_nesting(&opus.init());
    let (kind, _, codec_box, dops) = sample_entry(&opus.init());
    assert_eq!((kind.as_str(), codec_box.as_str()), ("Opus", "dOps"));
    // Version 0, 2 channels, pre-skip 312, 48000 Hz, gain 0, family 0: big-endian now.
    assert_eq!(dops, [0, 2, 0x01, 0x38, 0, 0, 0xBB, 0x80, 0, 0, 0]);
    assert_eq!(opus.codecs(), "opus");
    let init = opus.init();
    let top = walk(&init).unwrap();
    let (_, _, mut r) = top[1].path("trak/mdia/mdhd").full();
    r.take(8);
    assert_eq!(r.u32(), 48_000);
}

#[test]
fn headers_that_make_no_track() {
    assert_eq!(
        Fmp4Writer::new(None, None).unwrap_err(),
        Fmp4Error::NoTracks
    );
    assert_eq!(
        Fmp4Writer::new(Some(&video(0, vkey(1))), None).unwrap_err(),
        Fmp4Error::NotSequenceHeader("video")
    );
    assert_eq!(
        Fmp4Writer::new(None, Some(&video(0, vseq(1)))).unwrap_err(),
        Fmp4Error::NotSequenceHeader("audio")
    );
    assert_eq!(
        Fmp4Writer::new(Some(&video(0, ex_video(true, 0, b"vp08", &[1]))), None).unwrap_err(),
        Fmp4Error::UnsupportedCodec {
            kind: "video",
            codec: "vp08".into()
        }
    );
    assert_eq!(
        Fmp4Writer::new(None, Some(&audio(0, ex_audio(0, b"ac-3", &[1])))).unwrap_err(),
        Fmp4Error::UnsupportedCodec {
            kind: "audio",
            codec: "ac-3".into()
        }
    );
    let broken_avc = video(0, Bytes::from_static(&[0x17, 0, 0, 0, 0, 2, 0x64]));
    assert!(matches!(
        Fmp4Writer::new(Some(&broken_avc), None).unwrap_err(),
        Fmp4Error::Config { codec: "AVC", .. }
    ));
}

// ---------------------------------------------------------------------------------------
// Fragments.
// ---------------------------------------------------------------------------------------

#[test]
fn fragments_close_before_keyframes_and_at_one_second() {
    // Keyframes at 0, 0.4 s and 2.4 s: fragments of 10 frames (cut before the keyframe),
    // 25 (1 s), 25 (1 s) and 10 (the rest at finish); with audio in each.
    let frames = av_stream(0, 70, |i| [0, 10, 60].contains(&i));
    let out = record(Some(&video(0, vseq(1))), Some(&audio(0, aseq(2))), &frames);
    let fragments = out.read();
    let counts: Vec<usize> = fragments.iter().map(|f| f.samples(1).len()).collect();
    assert_eq!(counts, [10, 25, 25, 10]);
    let sequences: Vec<u32> = fragments.iter().map(|f| f.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    let first_sync: Vec<bool> = fragments.iter().map(|f| f.samples(1)[0].sync).collect();
    assert_eq!(first_sync, [true, true, false, true]);

    // Every video frame once, in order, with its data, sync flag and 40 ms duration.
    let video = out.samples(1);
    assert_eq!(video.len(), 70);
    for (i, s) in video.iter().enumerate() {
        let key = [0, 10, 60].contains(&i);
        assert_eq!(s.data, [if key { 0x65 } else { 0x41 }, i as u8]);
        assert_eq!(s.sync, key, "sample {i}");
        assert_eq!((s.dts, s.duration), (i as u64 * 3600, 3600), "sample {i}");
    }
    // Audio: every frame, all sync, in the fragment that was open when it was followed.
    let audio = out.samples(2);
    let sent = frames.iter().filter(|f| f.kind == MediaKind::Audio).count();
    assert_eq!(audio.len(), sent);
    assert!(audio
        .iter()
        .enumerate()
        .all(|(i, s)| s.sync && s.data == [0x21, i as u8]));
    // Each fragment's audio begins where the one before ended (tfdt continuity).
    let mut end = 0;
    for f in &fragments {
        let samples = f.samples(2);
        assert_eq!(samples[0].dts, end);
        end = samples
            .last()
            .map_or(end, |s| s.dts + u64::from(s.duration));
    }
}

#[test]
fn fragment_held_samples_and_duration() {
    let mut writer = Fmp4Writer::new(Some(&video(0, vseq(1))), None).unwrap();
    assert_eq!(writer.push(&video(1000, vkey(0))), None);
    assert_eq!(writer.push(&video(1040, vinter(1))), None);
    // A keyframe closes the fragment with the two frames before it.
    let first = read_fragment(&writer.push(&video(1080, vkey(2))).unwrap());
    assert_eq!(first.samples(1).len(), 2);
    assert_eq!(writer.duration_ms(), 80);
    // cut() gives the held keyframe with the last duration seen (40 ms); the next frame,
    // although its timestamp says 1100, starts where it ends.
    let cut = read_fragment(&writer.cut().unwrap());
    assert_eq!(cut.sequence, 2);
    assert_eq!(cut.samples(1)[0].dts, 7200);
    assert_eq!(cut.samples(1)[0].duration, 3600);
    assert_eq!(writer.duration_ms(), 120);
    assert_eq!(writer.cut(), None, "nothing held");
    writer.push(&video(1100, vinter(3)));
    writer.push(&video(1200, vinter(4)));
    let tail = writer.finish();
    let top = walk(&tail).unwrap();
    let kinds: Vec<_> = top.iter().map(|b| b.kind()).collect();
    assert_eq!(kinds, ["moof", "mdat", "mfra"]);
    let last = read_fragment(&tail[..top[0].bytes.len() + top[1].bytes.len()]);
    let times: Vec<_> = last
        .samples(1)
        .iter()
        .map(|s| (s.dts, s.duration))
        .collect();
    assert_eq!(times, [(10_800, 7200), (18_000, 7200)]);
    assert_eq!(writer.duration_ms(), 280);
    // Finished: nothing more comes out.
    assert_eq!(writer.push(&video(1240, vkey(5))), None);
    assert_eq!(writer.cut(), None);
    assert!(writer.finish().is_empty());
}

#[test]
fn fragments_close_when_the_clock_stands_still() {
    // A publisher stamping every frame 0: each sample gets one tick, and a fragment
    // closes by its sample count instead of its duration.
    let mut frames = vec![video(0, vkey(0))];
    frames.extend((1..5000).map(|i| video(0, vinter(i as u8))));
    let out = record(Some(&video(0, vseq(1))), None, &frames);
    let counts: Vec<usize> = out.read().iter().map(|f| f.samples(1).len()).collect();
    assert_eq!(counts, [MAX_FRAGMENT_SAMPLES, MAX_FRAGMENT_SAMPLES, 904]);
    assert!(out.samples(1).iter().all(|s| s.duration == 1));
}

#[test]
fn frames_that_are_not_samples_are_skipped() {
    let frames = [
        // Before the first keyframe: undecodable.
        video(0, vinter(0)),
        video(0, vseq(9)),
        Frame::new(MediaKind::Metadata, 0, meta(1)),
        video(40, vkey(1)),
        audio(40, aseq(9)),
        // Another codec than the track's, an empty frame, end of sequence.
        video(60, ex_video(false, 1, b"hvc1", &[0, 0, 0, 1, 2])),
        video(70, Bytes::from_static(&[0x27, 0x01, 0, 0, 0])),
        video(75, Bytes::from_static(&[0x17, 0x02, 0, 0, 0])),
        audio(80, Bytes::from_static(&[0xAF, 0x01])),
        audio(80, ex_audio(2, b"mp4a", &[])),
        audio(85, ex_audio(1, b"Opus", &[1, 2])),
        video(80, vinter(2)),
        audio(90, araw(3)),
    ];
    let out = record(Some(&video(0, vseq(1))), Some(&audio(0, aseq(2))), &frames);
    let video: Vec<_> = out
        .samples(1)
        .into_iter()
        .map(|s| (s.dts, s.data))
        .collect();
    assert_eq!(video, [(0, vec![0x65, 1]), (3600, vec![0x41, 2])]);
    let audio: Vec<_> = out
        .samples(2)
        .into_iter()
        .map(|s| (s.dts, s.data))
        .collect();
    assert_eq!(audio, [(2205, vec![0x21, 3])]);
}

#[test]
fn timestamps_start_at_zero_and_only_go_forward() {
    // The stream clock is at 50 s when recording starts; the publisher's clock then steps
    // back 2 s and repeats a timestamp.
    let ts = [50_000, 50_040, 50_080, 48_080, 48_120, 48_120, 50_200];
    let frames: Vec<Frame> = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| video(t, if i == 0 { vkey(0) } else { vinter(i as u8) }))
        .collect();
    let out = record(Some(&video(0, vseq(1))), None, &frames);
    let samples = out.samples(1);
    assert_eq!(samples.len(), ts.len());
    assert_eq!(samples[0].dts, 0);
    for pair in samples.windows(2) {
        assert!(pair[1].dts > pair[0].dts, "{pair:?}");
        assert_eq!(pair[0].dts + u64::from(pair[0].duration), pair[1].dts);
    }
    // Where the clock agrees with itself again, the frame is back on time.
    assert_eq!(samples[6].dts, 200 * 90);
}

#[test]
fn composition_offsets_are_signed_and_in_the_track_timescale() {
    let frames = [
        video(0, avc(true, 80, 0)),
        video(40, avc(false, 160, 1)),
        video(80, avc(false, 0, 2)),
        video(120, avc(false, -40, 3)),
    ];
    let out = record(Some(&video(0, vseq(1))), None, &frames);
    let offsets: Vec<i32> = out
        .samples(1)
        .iter()
        .map(|s| s.composition_offset)
        .collect();
    assert_eq!(offsets, [7200, 14_400, 0, -3600]);
}

#[test]
fn aac_durations_stay_1024_despite_millisecond_timestamps() {
    // 44.1 kHz: frames are 23.22 ms, sent at 0, 23, 46, 70, 93 ... ms.
    let mut frames: Vec<Frame> = (0..200u64)
        .map(|i| audio(7_000 + (i * 1024 * 1000 + 22050) / 44100, araw(i as u8)))
        .collect();
    // Then a real gap of half a second, which is kept.
    let resume = frames.last().unwrap().timestamp + 500;
    frames.extend((0..10u64).map(|i| audio(resume + (i * 1024 * 1000 + 22050) / 44100, araw(0))));
    let out = record(None, Some(&audio(0, aseq(2))), &frames);
    let samples = out.samples(1);
    assert_eq!(samples.len(), 210);
    for (i, s) in samples[..199].iter().enumerate() {
        assert_eq!((s.dts, s.duration), (i as u64 * 1024, 1024), "frame {i}");
    }
    let gap = samples[200].dts - samples[199].dts;
    assert!(
        (500 * 441 / 10..=524 * 441 / 10).contains(&gap),
        "gap {gap}"
    );
    assert!(samples[200..].windows(2).all(|w| w[0].duration == 1024));
    // Audio-only fragments close at 1 s (44 frames of 1024 at 44.1 kHz).
    let counts: Vec<usize> = out.read().iter().map(|f| f.samples(1).len()).collect();
    assert_eq!(counts[..4], [44, 44, 44, 44]);
}

#[test]
fn av1_samples_lose_their_temporal_delimiters() {
    let mut writer = Fmp4Writer::new(Some(&av1_header()), None).unwrap();
    // Temporal delimiter, a frame OBU (type 6) with 2 bytes; then a temporal unit with a
    // temporal delimiter between two OBUs.
    let frame_obu = [0x32, 0x02, 0xAA, 0xBB];
    let mut tu = vec![0x12, 0x00];
    tu.extend_from_slice(&frame_obu);
    writer.push(&video(0, ex_video(true, 1, b"av01", &tu)));
    let mut tu2 = frame_obu.to_vec();
    tu2.extend_from_slice(&[0x12, 0x00]);
    tu2.extend_from_slice(&frame_obu);
    writer.push(&video(40, ex_video(false, 1, b"av01", &tu2)));
    // A temporal unit of nothing but a delimiter is no sample.
    writer.push(&video(60, ex_video(false, 1, b"av01", &[0x12, 0x00])));
    let fragment = read_fragment(&writer.cut().unwrap());
    let data: Vec<_> = fragment.samples(1).iter().map(|s| s.data.clone()).collect();
    assert_eq!(data, [frame_obu.to_vec(), [frame_obu, frame_obu].concat()]);
}

#[test]
fn mfra_indexes_each_fragments_first_sync_sample() {
    let frames = av_stream(3_000, 130, |i| i % 50 == 0 || i == 20);
    let out = record(Some(&video(0, vseq(1))), Some(&audio(0, aseq(2))), &frames);
    let file = out.file();
    check_nesting(&file);
    let top = walk(&file).unwrap();
    let mfra = *top.last().unwrap();
    assert_eq!(mfra.kind(), "mfra");
    // mfro, last, gives the mfra's size so that a reader finds it from the end.
    let mfro = *mfra.children().last().unwrap();
    assert_eq!(mfro.kind(), "mfro");
    assert_eq!(mfro.full().2.u32() as usize, mfra.bytes.len());

    let moofs: Vec<_> = top.iter().filter(|b| b.kind() == "moof").collect();
    let fragments = out.read();
    assert_eq!(moofs.len(), fragments.len());
    let tfras: Vec<_> = mfra
        .children()
        .into_iter()
        .filter(|b| b.kind() == "tfra")
        .collect();
    assert_eq!(tfras.len(), 2);
    for tfra in tfras {
        let (version, _, mut r) = tfra.full();
        assert_eq!(version, 1);
        let track = r.u32();
        assert_eq!(r.u32(), 0x3F, "4-byte traf, trun and sample numbers");
        let entries = r.u32();
        let mut indexed = Vec::new();
        for _ in 0..entries {
            let (time, moof_offset) = (r.u64(), r.u64() as usize);
            let (traf_number, trun_number, sample_number) = (r.u32(), r.u32(), r.u32());
            let which = moofs
                .iter()
                .position(|m| m.at == moof_offset)
                .expect("a moof there");
            let trafs: Vec<_> = moofs[which]
                .children()
                .into_iter()
                .filter(|b| b.kind() == "traf")
                .collect();
            let traf = trafs[traf_number as usize - 1];
            assert_eq!(traf.child("tfhd").full().2.u32(), track);
            assert_eq!(trun_number, 1);
            let sample = &fragments[which].samples(track)[sample_number as usize - 1];
            assert!(sample.sync);
            let presentation = sample.dts as i64 + i64::from(sample.composition_offset);
            assert_eq!(time as i64, presentation);
            indexed.push(which);
        }
        // Each fragment with a sync sample of the track, once.
        let expected: Vec<usize> = (0..fragments.len())
            .filter(|&i| fragments[i].samples(track).iter().any(|s| s.sync))
            .collect();
        assert_eq!(indexed, expected, "track {track}");
    }
    // The video fragments: keyframes at 0, 0.8, 2 and 4 s and 1 s cuts in between.
    let first: Vec<(bool, u64)> = fragments
        .iter()
        .map(|f| (f.samples(1)[0].sync, f.samples(1)[0].dts / 3600))
        .collect();
    assert_eq!(
        first,
        [
            (true, 0),
            (true, 20),
            (false, 45),
            (true, 50),
            (false, 75),
            (true, 100),
            (false, 125)
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Anything in, well-formed boxes out.
// ---------------------------------------------------------------------------------------

fn video_headers() -> Vec<Bytes> {
    vec![
        vseq(1),
        hevc_header().payload.clone(),
        av1_header().payload.clone(),
        vp9_header().payload.clone(),
    ]
}

fn audio_headers() -> Vec<Bytes> {
    vec![aseq(2), opus_header().payload.clone()]
}

fn frame_payloads() -> Vec<Bytes> {
    vec![
        vkey(1),
        vinter(2),
        avc(false, -1000, 3),
        avc(true, 8_000_000, 4),
        araw(5),
        ex_video(true, 1, b"hvc1", &[0, 0, 0, 0, 0, 0, 0, 2, 0x26, 1]),
        ex_video(false, 3, b"hvc1", &[0, 0, 0, 2, 2, 1]),
        ex_video(true, 1, b"av01", &[0x12, 0x00, 0x32, 0x01, 0xAA]),
        ex_video(true, 1, b"vp09", &VP9_KEYFRAME_176X144),
        ex_video(false, 1, b"vp09", &[0x86, 0x00]),
        ex_audio(1, b"Opus", &[0xFC, 0xFF]),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Push {
        video: bool,
        /// Milliseconds after the previous frame (may go back).
        delta: i32,
        payload: Vec<u8>,
    },
    Cut,
}

/// Mostly one of the known headers as it is; else none, a mutated one or random bytes.
fn header(known: Vec<Bytes>) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        4 => proptest::sample::select(known.clone()).prop_map(|p| Some(p.to_vec())),
        1 => Just(None),
        1 => payload(known).prop_map(Some),
    ]
}

/// A known payload, possibly mutated, or random bytes.
fn payload(known: Vec<Bytes>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (proptest::sample::select(known), proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..3))
            .prop_map(|(p, flips)| {
                let mut p = p.to_vec();
                for (i, v) in flips {
                    let i = i.index(p.len());
                    p[i] ^= v;
                }
                p
            }),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    // Mostly small steps, some back; now and then a jump of 14 hours.
    let delta = prop_oneof![50 => -3000i32..5000, 1 => Just(50_400_000)];
    let push =
        (any::<bool>(), delta, payload(frame_payloads())).prop_map(|(video, delta, payload)| {
            Op::Push {
                video,
                delta,
                payload,
            }
        });
    let op = prop_oneof![20 => push, 1 => Just(Op::Cut)];
    proptest::collection::vec(op, 0..200)
}

proptest! {
    #[test]
    fn any_input_gives_well_formed_fragments(
        video_header in header(video_headers()),
        audio_header in header(audio_headers()),
        ops in ops(),
    ) {
        let video_header = video_header.map(|p| video(0, Bytes::from(p)));
        let audio_header = audio_header.map(|p| audio(0, Bytes::from(p)));
        let Ok(mut writer) = Fmp4Writer::new(video_header.as_ref(), audio_header.as_ref()) else {
            return Ok(());
        };
        let mut fragments = Vec::new();
        let mut t: i64 = 1_000_000;
        for op in ops {
            match op {
                Op::Push { video, delta, payload } => {
                    t = (t + i64::from(delta)).max(0);
                    let kind = if video { MediaKind::Video } else { MediaKind::Audio };
                    fragments.extend(writer.push(&Frame::new(kind, t as u64, Bytes::from(payload))));
                }
                Op::Cut => fragments.extend(writer.cut()),
            }
        }
        let output = Output { tail: writer.finish(), init: writer.init(), fragments };
        let file = output.file();
        check_nesting(&file);

        let read = output.read();
        let mut ends = [0u64; 3];
        for (i, fragment) in read.iter().enumerate() {
            prop_assert_eq!(fragment.sequence, i as u32 + 1);
            prop_assert!(!fragment.trafs.is_empty());
            for traf in &fragment.trafs {
                prop_assert!(!traf.samples.is_empty());
                for s in &traf.samples {
                    // Forward only, and no sample without data or duration.
                    prop_assert!(s.dts >= ends[traf.track as usize]);
                    prop_assert!(s.duration > 0 && !s.data.is_empty());
                    ends[traf.track as usize] = s.dts + u64::from(s.duration);
                }
            }
        }
        let last_end = writer.tracks.iter().map(|t| to_ms(ends[t.id as usize], t.config.timescale)).max();
        prop_assert_eq!(writer.duration_ms(), last_end.unwrap_or(0));
        let top = walk(&file).unwrap();
        prop_assert_eq!(top.last().unwrap().kind(), "mfra");
    }
}

// ---------------------------------------------------------------------------------------
// Reading back what a listing needs.
// ---------------------------------------------------------------------------------------

#[test]
fn a_listing_reads_codecs_and_duration_back() {
    use super::read::{box_header, Movie};
    // 3 s of 25 fps video with a keyframe a second, and AAC.
    let out = record(
        Some(&video(0, vseq(1))),
        Some(&audio(0, aseq(2))),
        &av_stream(5000, 75, |i| i % 25 == 0),
    );
    let file = out.file();
    let (kind, size, header) = box_header(&file).unwrap();
    assert_eq!(
        (&kind, size, header),
        (b"ftyp", walk(&file).unwrap()[0].bytes.len() as u64, 8)
    );
    let moov = walk(&out.init).unwrap()[1];
    let movie = Movie::parse(moov.body).unwrap();
    assert_eq!(movie.codecs(), ["h264", "aac"]);
    // Each fragment reaches as far as its samples: the last to the end of the stream.
    let ends: Vec<u64> = out
        .fragments
        .iter()
        .map(|f| movie.fragment_end_ms(walk(f).unwrap()[0].body).unwrap())
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert!((990..=1010).contains(&ends[0]), "{ends:?}");
    let last = walk(&out.tail).unwrap()[0];
    let end = movie.fragment_end_ms(last.body).unwrap();
    // (audio ends last: its frame that begins just before 3 s lasts 23 ms)
    assert!((2990..=3030).contains(&end), "{end}");
    // Garbage is no movie and no fragment.
    assert_eq!(Movie::parse(&[0, 0, 0, 9, b'x']), None);
    assert_eq!(movie.fragment_end_ms(&file[..5]), None);
    assert_eq!(box_header(&[0, 0, 0, 4, b'f', b'r', b'e', b'e']), None);
}

// ---------------------------------------------------------------------------------------
// A continuous stream for a player.
// ---------------------------------------------------------------------------------------

/// HTTP-fMP4: the init segment before the first fragment, a fragment per batch, nothing
/// before the first keyframe, and a new init segment when the parameters change.
#[test]
fn a_player_stream_is_init_then_a_fragment_per_batch() {
    let mut stream = Fmp4Stream::new();
    let mut out = BytesMut::new();
    let kinds = |out: &BytesMut| -> Vec<String> {
        walk(out)
            .unwrap()
            .iter()
            .map(|b| b.kind().to_owned())
            .collect()
    };
    stream.push(&video(0, vseq(1)), &mut out);
    stream.push(&audio(0, aseq(2)), &mut out);
    stream.push(&video(0, vinter(3)), &mut out);
    stream.flush(&mut out);
    assert!(
        out.is_empty(),
        "nothing before the first keyframe: {:?}",
        kinds(&out)
    );
    let frames = av_stream(40, 6, |i| i == 0);
    let (first, second) = frames.split_at(frames.len() / 2);
    for batch in [first, second] {
        for frame in batch {
            stream.push(frame, &mut out);
        }
        stream.flush(&mut out);
    }
    assert_eq!(
        kinds(&out),
        ["ftyp", "moov", "moof", "mdat", "moof", "mdat"]
    );
    check_nesting(&out);
    out.clear();
    // New parameters: a new init segment, then fragments again.
    stream.push(&video(280, vseq(9)), &mut out);
    stream.push(&video(280, avc(true, 0, 10)), &mut out);
    stream.flush(&mut out);
    assert_eq!(kinds(&out), ["ftyp", "moov", "moof", "mdat"]);
    assert!(!stream.unplayable());
}
