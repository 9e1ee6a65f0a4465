//! Regenerates the seed inputs in fuzz/seeds/ with the media crate's own encoders:
//! `cargo run --example gen_seeds` (from fuzz/). Seeds of the split-aware targets (handshake,
//! chunk, session, flv) start with the split header byte (0 = feed in one piece).

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use media::amf::{self, Amf0Value};
use media::flv;
use media::rtmp::chunk::{ChunkWriter, RtmpMessage};
use media::rtmp::handshake::{make_complex_c1, DigestSchema, HANDSHAKE_SIZE};

const SPS_720P: [u8; 26] = [
    0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40, 0x50, 0x05, 0xBB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x83, 0x19, 0x60,
];
const PPS: [u8; 4] = [0x68, 0xEB, 0xEC, 0xB2];

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn s(v: &str) -> Amf0Value {
    Amf0Value::String(v.into())
}

fn n(v: f64) -> Amf0Value {
    Amf0Value::Number(v)
}

fn obj(props: &[(&str, Amf0Value)]) -> Amf0Value {
    Amf0Value::Object(
        props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// Chunks `msgs` with a fresh writer, honouring Set Chunk Size messages like a client would.
fn chunked(msgs: &[(u32, u32, u8, u32, Vec<u8>)]) -> Vec<u8> {
    let mut writer = ChunkWriter::new();
    let mut out = BytesMut::new();
    for (csid, timestamp, type_id, stream_id, payload) in msgs {
        let msg = RtmpMessage {
            csid: *csid,
            timestamp: *timestamp,
            type_id: *type_id,
            stream_id: *stream_id,
            payload: Bytes::from(payload.clone()),
        };
        writer.write(&msg, &mut out);
        if *type_id == 1 {
            writer.set_chunk_size(u32::from_be_bytes(payload[..4].try_into().unwrap()));
        }
    }
    out.to_vec()
}

fn command(values: &[Amf0Value]) -> Vec<u8> {
    amf::encode_all(values)
}

fn avcc() -> Vec<u8> {
    let mut r = vec![1, 0x64, 0x00, 0x1F, 0xFF, 0xE1];
    r.extend_from_slice(&(SPS_720P.len() as u16).to_be_bytes());
    r.extend_from_slice(&SPS_720P);
    r.push(1);
    r.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
    r.extend_from_slice(&PPS);
    r
}

fn with_split_header(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(body);
    v
}

/// Prints what a session makes of a seed (handshake added as the session target does), so a
/// broken seed shows up here rather than as silently lost coverage.
fn check_session(name: &str, chunks: &[u8]) {
    use media::rtmp::session::{ServerSession, SessionEvent};
    let mut input = BytesMut::new();
    input.extend_from_slice(&[3]);
    input.extend_from_slice(&[0; 2 * HANDSHAKE_SIZE]);
    input.extend_from_slice(chunks);
    let mut session = ServerSession::new([0; 1528]);
    let mut events = Vec::new();
    let mut accept = true;
    loop {
        let before = input.len();
        let result = session.feed(&mut input, &mut events);
        let got = !events.is_empty();
        for e in events.drain(..) {
            match &e {
                SessionEvent::Publish { .. } if accept => session.accept_publish(),
                SessionEvent::Publish { .. } => {
                    session.reject_publish("NetStream.Publish.BadName", "")
                }
                SessionEvent::Play { .. } if accept => session.accept_play("x"),
                SessionEvent::Play { .. } => {
                    session.reject_play("NetStream.Play.StreamNotFound", "")
                }
                _ => {}
            }
            if matches!(e, SessionEvent::Publish { .. } | SessionEvent::Play { .. }) {
                accept = !accept;
            }
            let text = format!("{e:?}");
            println!("  {name}: {}", &text[..text.len().min(100)]);
        }
        if let Err(e) = result {
            println!("  {name}: error {e}");
            break;
        }
        if input.len() == before && !got {
            break;
        }
    }
    println!("  {name}: {} bytes left unparsed", input.len());
}

/// x265's SPS for 320x240.
const HEVC_SPS: [u8; 42] = [
    0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03,
    0x00, 0x3C, 0xA0, 0x0A, 0x08, 0x0F, 0x16, 0x59, 0x59, 0x52, 0x93, 0x0B, 0xC0, 0x5A, 0x02, 0x00,
    0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x32, 0x10,
];
/// libaom's av1C for 208x120, with its sequence header OBU.
const AV1C: [u8; 16] = [
    0x81, 0x00, 0x0C, 0x00, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x03, 0xB6, 0x7F, 0x73, 0x6B, 0xE4, 0x01,
];
/// vpcC with its full box version and flags, as ffmpeg sends it.
const VPCC: [u8; 12] = [1, 0, 0, 0, 0, 10, 0x82, 1, 1, 1, 0, 0];
/// The start of libvpx's first keyframe of a 176x144 stream.
const VP9_KEYFRAME: [u8; 10] = [0x82, 0x49, 0x83, 0x42, 0x00, 0x0A, 0xF0, 0x08, 0xF6, 0x06];
const OPUS_HEAD: &[u8] = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00";

/// An Enhanced RTMP packet: first byte, FourCC, body.
fn enhanced(first: u8, fourcc: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend_from_slice(fourcc);
    p.extend_from_slice(body);
    p
}

/// An input of the fmp4 target: both headers, then `(op, ts delta, payload)` records.
fn fmp4_input(video: &[u8], audio: &[u8], records: &[(u8, i16, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for header in [video, audio] {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header);
    }
    for (op, delta, payload) in records {
        out.push(*op);
        out.extend_from_slice(&delta.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

/// Two seconds of 25 fps video (a keyframe every second) and audio frames every `audio_ms`,
/// interleaved, with a cut after 1.5 s: `(op, ts delta, payload)` records.
fn av_records(key: &[u8], inter: &[u8], audio: &[u8], audio_ms: i16) -> Vec<(u8, i16, Vec<u8>)> {
    let mut events: Vec<(i16, u8, Vec<u8>)> = Vec::new();
    for i in 0..50 {
        let frame = if i % 25 == 0 { key } else { inter };
        events.push((i * 40, 1, frame.to_vec()));
    }
    for t in (0..2000).step_by(audio_ms as usize) {
        events.push((t as i16, 0, audio.to_vec()));
    }
    events.push((1500, 3, Vec::new()));
    events.sort_by_key(|e| e.0);
    let mut last = 0;
    events
        .into_iter()
        .map(|(t, op, payload)| {
            let delta = t - last;
            last = t;
            (op, delta, payload)
        })
        .collect()
}

fn main() {
    // --- handshake: complex C1 in both schemas, and a simple one fed in odd pieces.
    for (name, schema) in [
        ("complex_keyfirst", DigestSchema::KeyFirst),
        ("complex_digestfirst", DigestSchema::DigestFirst),
    ] {
        let mut v = vec![0, 3];
        v.extend_from_slice(&make_complex_c1(&[7; HANDSHAKE_SIZE - 8], schema));
        v.extend_from_slice(&[0x55; HANDSHAKE_SIZE]);
        v.extend_from_slice(b"\x03after");
        write("handshake", name, &v);
    }
    let mut v = vec![2, 1, 0, 0x00, 0x06, 3];
    v.extend_from_slice(&[0; 2 * HANDSHAKE_SIZE]);
    write("handshake", "simple_split", &v);

    // --- chunk: header compression, extended timestamps, big csids, chunk size, abort.
    let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let chunk = chunked(&[
        (2, 0, 1, 0, 4096u32.to_be_bytes().to_vec()),
        (
            3,
            0,
            20,
            0,
            command(&[s("connect"), n(1.0), obj(&[("app", s("live"))])]),
        ),
        (6, 0, 9, 1, big.clone()),
        (6, 40, 9, 1, big.clone()),
        (6, 80, 9, 1, big[..300].to_vec()),
        (4, 0x0100_0000, 8, 1, big[..4500].to_vec()),
        (4, 0x0100_0400, 8, 1, big[..4500].to_vec()),
        (70, 5, 8, 1, vec![0xAF, 1, 2, 3]),
        (400, 0xFF_FFFF, 18, 1, vec![2, 0, 0]),
        (2, 0, 2, 0, 6u32.to_be_bytes().to_vec()),
        (2, 0, 3, 0, 1234u32.to_be_bytes().to_vec()),
    ]);
    write("chunk", "mixed", &with_split_header(&chunk));
    let mut small = vec![3, 1, 0, 7, 0, 200, 0];
    small.extend_from_slice(&chunked(&[
        (3, 0xFF_FFFF, 9, 1, big[..400].to_vec()),
        (3, 0x0100_0000, 9, 1, big[..400].to_vec()),
        (5, 10, 9, 1, Vec::new()),
    ]));
    write("chunk", "extended_split", &small);

    // --- session: publisher and player flows (the target adds the handshake itself).
    let metadata = command(&[
        s("@setDataFrame"),
        s("onMetaData"),
        Amf0Value::EcmaArray(vec![
            ("width".into(), n(1280.0)),
            ("height".into(), n(720.0)),
        ]),
    ]);
    let mut avc_seq = vec![0x17, 0, 0, 0, 0];
    avc_seq.extend_from_slice(&avcc());
    let mut aggregate = Vec::new();
    for (i, (tag_type, payload)) in [
        (9u8, vec![0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]),
        (8, vec![0xAF, 1, 0x21]),
        (18, metadata[16..].to_vec()),
    ]
    .into_iter()
    .enumerate()
    {
        aggregate.extend_from_slice(&flv::tag_header(
            tag_type,
            100 + i as u32 * 10,
            payload.len(),
        ));
        aggregate.extend_from_slice(&payload);
        aggregate.extend_from_slice(&flv::tag_trailer(payload.len()));
    }
    let publish = chunked(&[
        (2, 0, 5, 0, 2_500_000u32.to_be_bytes().to_vec()),
        (2, 0, 1, 0, 4096u32.to_be_bytes().to_vec()),
        (
            3,
            0,
            20,
            0,
            command(&[
                s("connect"),
                n(1.0),
                obj(&[
                    ("app", s("live/")),
                    ("objectEncoding", n(0.0)),
                    ("tcUrl", s("rtmp://h/live")),
                ]),
            ]),
        ),
        (
            3,
            0,
            20,
            0,
            command(&[s("releaseStream"), n(2.0), Amf0Value::Null, s("room")]),
        ),
        (
            3,
            0,
            20,
            0,
            command(&[s("FCPublish"), n(3.0), Amf0Value::Null, s("room")]),
        ),
        (
            3,
            0,
            20,
            0,
            command(&[s("createStream"), n(4.0), Amf0Value::Null]),
        ),
        (
            8,
            0,
            20,
            1,
            command(&[
                s("publish"),
                n(5.0),
                Amf0Value::Null,
                s("room?token=abc"),
                s("live"),
            ]),
        ),
        (4, 0, 18, 1, metadata.clone()),
        (6, 0, 9, 1, avc_seq),
        (4, 0, 8, 1, vec![0xAF, 0, 0x12, 0x10]),
        (6, 33, 9, 1, vec![0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88]),
        (6, 66, 22, 1, aggregate),
        (2, 0, 4, 0, vec![0, 6, 0, 0, 0, 9]),
        (
            3,
            0,
            20,
            0,
            command(&[s("getStreamLength"), n(6.0), Amf0Value::Null, s("room")]),
        ),
        (
            3,
            0,
            20,
            0,
            command(&[s("FCUnpublish"), n(7.0), Amf0Value::Null, s("room")]),
        ),
        (
            3,
            0,
            20,
            0,
            command(&[s("deleteStream"), n(8.0), Amf0Value::Null, n(1.0)]),
        ),
        // Second publish: rejected by the alternating fuzz driver.
        (
            8,
            0,
            20,
            1,
            command(&[s("publish"), n(9.0), Amf0Value::Null, s("other")]),
        ),
    ]);
    check_session("publish", &publish);
    write("session", "publish", &with_split_header(&publish));
    let mut amf3_cmd = vec![0];
    amf3_cmd.extend_from_slice(&command(&[
        s("play"),
        n(4.0),
        Amf0Value::Null,
        s("room"),
        n(-2.0),
    ]));
    let play = chunked(&[
        (
            3,
            0,
            20,
            0,
            command(&[
                s("connect"),
                n(1.0),
                obj(&[("app", s("live?x=1")), ("objectEncoding", n(3.0))]),
            ]),
        ),
        (
            3,
            0,
            20,
            0,
            command(&[s("createStream"), n(2.0), Amf0Value::Null]),
        ),
        (2, 0, 4, 0, vec![0, 3, 0, 0, 0, 1, 0, 0, 0x0B, 0xB8]),
        (8, 0, 17, 1, amf3_cmd.clone()),
        (
            8,
            0,
            20,
            1,
            command(&[
                s("receiveAudio"),
                n(0.0),
                Amf0Value::Null,
                Amf0Value::Boolean(false),
            ]),
        ),
        (
            8,
            0,
            20,
            1,
            command(&[
                s("receiveVideo"),
                n(0.0),
                Amf0Value::Null,
                Amf0Value::Boolean(true),
            ]),
        ),
        (
            8,
            0,
            20,
            1,
            command(&[s("closeStream"), n(0.0), Amf0Value::Null]),
        ),
        (8, 0, 17, 1, amf3_cmd),
        (
            8,
            0,
            20,
            1,
            command(&[s("play"), n(5.0), Amf0Value::Null, s("again")]),
        ),
    ]);
    check_session("play", &play);
    let mut play_split = vec![2, 0x11, 0, 0x40, 0];
    play_split.extend_from_slice(&play);
    write("session", "play_split", &play_split);

    // --- amf: AMF0 command, metadata, references, AMF3 switch; raw AMF3 for decode_amf3.
    write(
        "amf",
        "connect",
        &command(&[
            s("connect"),
            n(1.0),
            obj(&[
                ("app", s("live")),
                ("tcUrl", s("rtmp://h/live")),
                ("flashVer", s("FMLE/3.0")),
            ]),
        ]),
    );
    write("amf", "metadata", &metadata);
    let mut misc = command(&[
        Amf0Value::Date {
            millis: 1.5e12,
            timezone: 0,
        },
        Amf0Value::XmlDocument("<a/>".into()),
        Amf0Value::TypedObject {
            class_name: "C".into(),
            properties: vec![("x".into(), Amf0Value::Undefined)],
        },
        Amf0Value::StrictArray(vec![
            n(f64::NAN),
            Amf0Value::Boolean(true),
            Amf0Value::Unsupported,
        ]),
        Amf0Value::ByteArray(vec![1, 2, 3]),
    ]);
    misc.extend_from_slice(&[0x07, 0x00, 0x00, 0x0C, 0, 0, 0, 1, b'L']);
    write("amf", "misc_with_ref", &misc);
    let mut amf3 = Vec::new();
    amf::encode_amf3(
        &Amf0Value::StrictArray(vec![
            obj(&[("a", n(1.0)), ("b", n(0.5))]),
            s("x"),
            Amf0Value::EcmaArray(vec![("k".into(), Amf0Value::Null)]),
        ]),
        &mut amf3,
    );
    write("amf", "amf3_array", &amf3);
    // AMF3 with string/object/trait references, a vector and a dictionary, hand-written.
    write(
        "amf",
        "amf3_refs",
        &[
            0x09, 0x07, 0x01, // array, 3 dense, no assoc
            0x0A, 0x13, 0x01, 0x03, b'a', 0x04, 0x05, // object, 1 sealed member "a" = int 5
            0x0A, 0x01, 0x04, 0x06, // object by trait ref 0, a = 6
            0x0A, 0x02, // object ref 1
        ],
    );
    write(
        "amf",
        "amf3_vector_dict",
        &[0x11, 0x0D, 0x05, 0x00, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF],
    );
    write(
        "amf",
        "amf3_dict",
        &[0x11, 0x03, 0x00, 0x06, 0x03, b'k', 0x04, 0x01],
    );

    // --- flv: header, script, AVC sequence header and frames, AAC.
    let mut f = flv::header(true, true).to_vec();
    f.extend_from_slice(&flv::encode_tag(18, 0, &metadata[16..]));
    let mut seq = vec![0x17, 0, 0, 0, 0];
    seq.extend_from_slice(&avcc());
    f.extend_from_slice(&flv::encode_tag(9, 0, &seq));
    f.extend_from_slice(&flv::encode_tag(8, 0, &[0xAF, 0, 0x12, 0x10]));
    f.extend_from_slice(&flv::encode_tag(
        9,
        0x0100_0021,
        &[0x27, 1, 0, 0, 0x21, 0, 0, 0, 1, 0x41],
    ));
    write("flv", "stream", &with_split_header(&f));
    let mut fs = vec![1, 10, 0];
    fs.extend_from_slice(&f);
    write("flv", "stream_split", &fs);

    // --- codec: each parser's happy path.
    write("codec", "avcc", &avcc());
    write("codec", "sps", &SPS_720P);
    write("codec", "avc_seq_tag", &seq);
    write("codec", "aac_asc", &[0x12, 0x10]);
    write("codec", "he_aac_asc", &[0x2B, 0x92, 0x08, 0x00]);
    write("codec", "aac_tag", &[0xAF, 0x00, 0x12, 0x10]);
    let mut hvcc = vec![
        1, 1, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5D, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0,
        0x0F, 3,
    ];
    for nal_type in [32u8, 33, 34] {
        hvcc.extend_from_slice(&[0x80 | nal_type, 0, 1, 0, 4, nal_type << 1, 1, 0xAA, 0xBB]);
    }
    write("codec", "hvcc", &hvcc);
    let mut ex = vec![0x90];
    ex.extend_from_slice(b"hvc1");
    ex.extend_from_slice(&hvcc);
    write("codec", "enhanced_hevc_seq", &ex);
    write(
        "codec",
        "enhanced_modex",
        &[
            0x97, 0x01, 0x10, 0x00, 0x01, b'a', b'v', b'c', b'1', 0, 0, 1, 0, 0, 0, 1, 0x65,
        ],
    );
    write(
        "codec",
        "enhanced_audio_opus",
        &[
            0x90, b'O', b'p', b'u', b's', b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd',
        ],
    );
    write(
        "codec",
        "nalus",
        &[0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 0, 0, 0, 0, 1, 0x41],
    );
    write("codec", "hevc_sps", &HEVC_SPS);
    write("codec", "av1c", &AV1C);
    write(
        "codec",
        "av1_obus",
        &[
            0x12, 0x00, 0x0A, 0x0A, 0, 0, 0, 0x03, 0xB6, 0x7F, 0x73, 0x6B, 0xE4, 0x01,
        ],
    );
    write("codec", "vpcc", &VPCC);
    write("codec", "vp9_keyframe", &VP9_KEYFRAME);
    write("codec", "opus_head", OPUS_HEAD);

    // --- fmp4: each codec's sequence start and frames.
    let aac = [0xAF, 0, 0x12, 0x10];
    let aac_frame = [0xAF, 1, 0x21, 0x10, 0x04];
    let opus = enhanced(0x90, b"Opus", OPUS_HEAD);
    let opus_frame = enhanced(0x91, b"Opus", &[0xFC, 0xFF, 0xFE]);
    let avc_key = [0x17, 1, 0, 0, 0x50, 0, 0, 0, 2, 0x65, 0x88];
    let avc_inter = [0x27, 1, 0, 0, 0x28, 0, 0, 0, 2, 0x41, 0x9A];
    write(
        "fmp4",
        "avc_aac",
        &fmp4_input(
            &seq,
            &aac,
            &av_records(&avc_key, &avc_inter, &aac_frame, 23),
        ),
    );
    let mut hvcc_sps = hvcc[..22].to_vec();
    hvcc_sps.extend_from_slice(&[1, 0x80 | 33, 0, 1, 0, HEVC_SPS.len() as u8]);
    hvcc_sps.extend_from_slice(&HEVC_SPS);
    let hevc_key = enhanced(0x91, b"hvc1", &[0, 0, 0x50, 0, 0, 0, 2, 0x26, 0x01]);
    let hevc_inter = enhanced(0xA1, b"hvc1", &[0, 0, 0x28, 0, 0, 0, 2, 0x02, 0x01]);
    write(
        "fmp4",
        "hevc_opus",
        &fmp4_input(
            &enhanced(0x90, b"hvc1", &hvcc_sps),
            &opus,
            &av_records(&hevc_key, &hevc_inter, &opus_frame, 20),
        ),
    );
    let av1_key = enhanced(0x91, b"av01", &[0x12, 0x00, 0x32, 0x02, 0xAA, 0xBB]);
    let av1_inter = enhanced(0xA1, b"av01", &[0x12, 0x00, 0x32, 0x01, 0xCC]);
    write(
        "fmp4",
        "av1_aac",
        &fmp4_input(
            &enhanced(0x90, b"av01", &AV1C),
            &aac,
            &av_records(&av1_key, &av1_inter, &aac_frame, 23),
        ),
    );
    let vp9_key = enhanced(0x91, b"vp09", &VP9_KEYFRAME);
    let vp9_inter = enhanced(0xA1, b"vp09", &[0x86, 0x00, 0x40]);
    write(
        "fmp4",
        "vp9_opus",
        &fmp4_input(
            &enhanced(0x90, b"vp09", &VPCC),
            &opus,
            &av_records(&vp9_key, &vp9_inter, &opus_frame, 20),
        ),
    );
    write(
        "fmp4",
        "audio_only",
        &fmp4_input(&[], &aac, &av_records(&[], &[], &aac_frame, 23)),
    );
    rtsp_seeds();
    println!("seeds written");
}

/// Seeds for `rtsp` (ffmpeg playing over TCP and publishing, VLC playing over UDP, in the
/// session id the target uses), `sdp` (what ffmpeg announces, what the server describes)
/// and `rtp` (an H.264 keyframe and AAC frames packetized, as `len u8 | packet` records).
fn rtsp_seeds() {
    use media::rtp::{AudioPacketizer, PacketizerParams, VideoPacketizer};
    use media::sdp::{self, Codec, Track};

    let announced = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
a=tool:libavformat 60.16.100\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAH6zZQFA=,aOvjyw==; profile-level-id=64001F\r\n\
a=control:streamid=0\r\nm=audio 0 RTP/AVP 97\r\nb=AS:128\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=1210\r\n\
a=control:streamid=1\r\n";
    let agent = "User-Agent: Lavf60.16.100\r\n";
    let play = format!(
        "OPTIONS rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nCSeq: 1\r\n{agent}\r\n\
DESCRIBE rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nAccept: application/sdp\r\nCSeq: 2\r\n{agent}\r\n\
SETUP rtsp://127.0.0.1:8554/live/room/trackID=0 RTSP/1.0\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nCSeq: 3\r\n{agent}\r\n\
SETUP rtsp://127.0.0.1:8554/live/room/trackID=1 RTSP/1.0\r\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3\r\nCSeq: 4\r\n{agent}Session: F00D\r\n\r\n\
PLAY rtsp://127.0.0.1:8554/live/room/ RTSP/1.0\r\nRange: npt=0.000-\r\nCSeq: 5\r\n{agent}Session: F00D\r\n\r\n\
$\x01\x00\x04rtcp\
GET_PARAMETER rtsp://127.0.0.1:8554/live/room/ RTSP/1.0\r\nCSeq: 6\r\n{agent}Session: F00D\r\n\r\n\
TEARDOWN rtsp://127.0.0.1:8554/live/room/ RTSP/1.0\r\nCSeq: 7\r\n{agent}Session: F00D\r\n\r\n"
    );
    write("rtsp", "ffmpeg_play_tcp", &with_split_header(play.as_bytes()));
    let publish = format!(
        "OPTIONS rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nCSeq: 1\r\n{agent}\r\n\
ANNOUNCE rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nContent-Type: application/sdp\r\nCSeq: 2\r\n{agent}Content-Length: {}\r\n\r\n{announced}\
SETUP rtsp://127.0.0.1:8554/live/room/streamid=0 RTSP/1.0\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\nCSeq: 3\r\n{agent}\r\n\
SETUP rtsp://127.0.0.1:8554/live/room/streamid=1 RTSP/1.0\r\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3;mode=record\r\nCSeq: 4\r\n{agent}Session: F00D\r\n\r\n\
RECORD rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nRange: npt=0.000-\r\nCSeq: 5\r\n{agent}Session: F00D\r\n\r\n\
$\x00\x00\x04rtp0$\x03\x00\x04rtcp\
TEARDOWN rtsp://127.0.0.1:8554/live/room RTSP/1.0\r\nCSeq: 6\r\n{agent}Session: F00D\r\n\r\n",
        announced.len()
    );
    write("rtsp", "ffmpeg_publish_tcp", &with_split_header(publish.as_bytes()));
    let udp = "DESCRIBE rtsp://h/live/room?token=abc RTSP/1.0\r\nCSeq: 2\r\n\r\n\
SETUP rtsp://h/live/room?token=abc/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=50000-50001\r\n\r\n\
PLAY rtsp://h/live/room?token=abc/ RTSP/1.0\r\nCSeq: 4\r\nSession: F00D\r\n\r\n";
    write("rtsp", "vlc_play_udp", &with_split_header(udp.as_bytes()));

    write("sdp", "ffmpeg_h264_aac", announced.as_bytes());
    let mut video_header = vec![0x17, 0, 0, 0, 0];
    video_header.extend_from_slice(&avcc());
    let aac_header = [0xAF, 0, 0x12, 0x10];
    let described = sdp::describe(
        &[
            Track {
                codec: Codec::from_sequence_header(media::frame::MediaKind::Video, &video_header).unwrap(),
                payload_type: 96,
            },
            Track {
                codec: Codec::from_sequence_header(media::frame::MediaKind::Audio, &aac_header).unwrap(),
                payload_type: 97,
            },
            Track { codec: Codec::Opus { channels: 2 }, payload_type: 98 },
        ],
        "127.0.0.1",
    );
    write("sdp", "described_h264_aac_opus", described.as_bytes());

    let params = PacketizerParams { max_payload: 200, ..PacketizerParams::new(0, 96, 1, 0, 0) };
    let mut video = VideoPacketizer::new(params);
    let mut audio = AudioPacketizer::new(params);
    video.push(&video_header, 0);
    audio.push(&aac_header, 0);
    let mut keyframe = vec![0x17, 1, 0, 0, 0, 0, 0, 2, 0];
    keyframe.extend(std::iter::once(0x65).chain((0..511).map(|i| i as u8)));
    let aac_frame = [0xAF, 1, 0x21, 0x10, 0x04, 0x60, 0x8C, 0x1C];
    let mut records = Vec::new();
    for packets in [video.push(&keyframe, 0), audio.push(&aac_frame, 0), audio.push(&aac_frame, 23)]
        .into_iter()
        .flatten()
    {
        for packet in packets.datagrams() {
            records.push(u8::try_from(packet.len()).unwrap());
            records.extend_from_slice(&packet);
        }
    }
    write("rtp", "h264_keyframe_aac", &records);
}
