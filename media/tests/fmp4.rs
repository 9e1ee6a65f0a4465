//! `Fmp4Writer` against ffmpeg: streams that ffmpeg encodes (as FLV, the way a publisher
//! sends them) go through the writer into an MP4 file, which ffprobe must read back with
//! the same codecs, every frame, the same duration and a keyframe first; and so must the
//! file a crash would leave.
//!
//! ffmpeg writes HEVC, AV1, VP9 and Opus to FLV only from version 6.1 (Enhanced RTMP) on.
//! With an older ffmpeg the stream is encoded to MP4 instead and its packets, as ffprobe
//! dumps them, are wrapped the way an Enhanced RTMP publisher sends them. Without ffmpeg,
//! or without an encoder, a test says why and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::{Bytes, BytesMut};
use media::codec::{parse_audio_tag, parse_video_tag, VideoPacketKind};
use media::flv::{self, FlvReader};
use media::fmp4::Fmp4Writer;
use media::frame::{Frame, MediaKind};

/// What ffmpeg encodes: video and audio encoder arguments and the codec names ffprobe
/// gives them.
struct Case {
    name: &'static str,
    video: &'static [&'static str],
    audio: &'static [&'static str],
    sample_rate: u32,
    codecs: [&'static str; 2],
}

const ENCODE_SECONDS: f64 = 6.0;

#[test]
fn avc_and_aac() {
    run(&Case {
        name: "avc-aac",
        video: &[
            "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-bf", "2",
        ],
        audio: &["-c:a", "aac"],
        sample_rate: 44_100,
        codecs: ["h264", "aac"],
    });
}

#[test]
fn hevc_and_aac() {
    run(&Case {
        name: "hevc-aac",
        video: &[
            "-c:v",
            "libx265",
            "-preset",
            "veryfast",
            "-g",
            "50",
            "-bf",
            "2",
            "-x265-params",
            "log-level=error",
        ],
        audio: &["-c:a", "aac"],
        sample_rate: 48_000,
        codecs: ["hevc", "aac"],
    });
}

#[test]
fn av1_and_opus() {
    // SVT-AV1 is much faster than libaom; either will do.
    let svt = ffmpeg_encoders().is_some_and(|e| has_encoder(&e, "libsvtav1"));
    let video: &[&str] = if svt {
        &["-c:v", "libsvtav1", "-preset", "12", "-g", "50"]
    } else {
        &["-c:v", "libaom-av1", "-cpu-used", "8", "-g", "50"]
    };
    run(&Case {
        name: "av1-opus",
        video,
        audio: &["-c:a", "libopus"],
        sample_rate: 48_000,
        codecs: ["av1", "opus"],
    });
}

#[test]
fn vp9_and_opus() {
    run(&Case {
        name: "vp9-opus",
        video: &[
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            "50",
        ],
        audio: &["-c:a", "libopus"],
        sample_rate: 48_000,
        codecs: ["vp9", "opus"],
    });
}

fn run(case: &Case) {
    let Some(encoders) = ffmpeg_encoders() else {
        eprintln!(
            "skipped {}: ffmpeg and ffprobe are not installed",
            case.name
        );
        return;
    };
    for encoder in [case.video[1], case.audio[1]] {
        if !has_encoder(&encoders, encoder) {
            eprintln!("skipped {}: ffmpeg has no {encoder} encoder", case.name);
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!(
        "ferrolive-fmp4-{}-{}",
        case.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (source, frames) = encode(case, &dir);
    let coded = |kind| frames.iter().filter(|f| is_coded(f, kind)).count();
    let sent = [coded(MediaKind::Video), coded(MediaKind::Audio)];
    assert!(
        sent[0] >= 140 && sent[1] >= 200,
        "{}: frames {sent:?}",
        case.name
    );

    // Through the writer, keeping the file as it was after each fragment.
    let header = |kind| frames.iter().find(|f| f.kind == kind && f.sequence_header);
    let mut writer = Fmp4Writer::new(header(MediaKind::Video), header(MediaKind::Audio)).unwrap();
    let mut file = Vec::new();
    let mut fragment_ends = Vec::new();
    for frame in &frames {
        if let Some(fragment) = writer.push(frame) {
            if file.is_empty() {
                // Written once the first fragment is out (VP9 learns its picture size
                // from the first keyframe).
                file.extend_from_slice(&writer.init());
            }
            file.extend_from_slice(&fragment);
            fragment_ends.push(file.len());
        }
    }
    file.extend_from_slice(&writer.finish());
    let mp4 = dir.join("out.mp4");
    std::fs::write(&mp4, &file).unwrap();
    assert!(
        fragment_ends.len() >= 4,
        "{}: {} fragments",
        case.name,
        fragment_ends.len()
    );

    let output = probe(&mp4, true);
    let codecs: Vec<&str> = output.streams.iter().map(|s| s.codec.as_str()).collect();
    assert_eq!(codecs, case.codecs, "{}", case.name);
    let counted: Vec<usize> = output.streams.iter().map(|s| s.frames).collect();
    assert_eq!(counted, sent, "{}: frames decoded from the MP4", case.name);
    let expected = probe(&source, false).duration;
    assert!(
        (output.duration - expected).abs() <= 0.1,
        "{}: duration {} s, source {expected} s",
        case.name,
        output.duration
    );
    let written = writer.duration_ms() as f64 / 1000.0;
    assert!(
        (written - expected).abs() <= 0.1,
        "{}: duration_ms {written}",
        case.name
    );
    assert!(
        first_video_frame_is_key(&mp4),
        "{}: first video frame",
        case.name
    );

    // What a crash leaves: the file up to the end of a fragment, or into the middle of
    // the next one. Both still open, with both tracks, and hold the fragments before.
    let whole = fragment_ends.len() / 2;
    for (cut, what) in [
        (fragment_ends[whole - 1], "after a fragment"),
        (
            (fragment_ends[whole - 1] + fragment_ends[whole]) / 2,
            "inside a fragment",
        ),
    ] {
        let truncated = dir.join("truncated.mp4");
        std::fs::write(&truncated, &file[..cut]).unwrap();
        let left = probe(&truncated, true);
        let codecs: Vec<&str> = left.streams.iter().map(|s| s.codec.as_str()).collect();
        assert_eq!(codecs, case.codecs, "{}: truncated {what}", case.name);
        let video_frames = left.streams[0].frames;
        assert!(
            video_frames >= whole * 20 && video_frames < sent[0],
            "{}: truncated {what}: {video_frames} video frames",
            case.name
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A coded frame (not a sequence header or other signalling) of the kind.
fn is_coded(frame: &Frame, kind: MediaKind) -> bool {
    frame.kind == kind
        && match kind {
            MediaKind::Video => {
                parse_video_tag(&frame.payload).is_some_and(|i| i.packet == VideoPacketKind::Frame)
            }
            _ => parse_audio_tag(&frame.payload).is_some_and(|i| i.coded),
        }
}

/// ffmpeg's list of encoders, if ffmpeg and ffprobe both run.
fn ffmpeg_encoders() -> Option<String> {
    let ffprobe = Command::new("ffprobe").arg("-version").output().ok()?;
    let ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .ok()?;
    (ffprobe.status.success() && ffmpeg.status.success())
        .then(|| String::from_utf8_lossy(&ffmpeg.stdout).into_owned())
}

fn has_encoder(encoders: &str, name: &str) -> bool {
    encoders
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(name))
}

/// Encode the case's test stream; the file made and its frames as a publisher sends them.
fn encode(case: &Case, dir: &Path) -> (PathBuf, Vec<Frame>) {
    let ffmpeg = |path: &Path, format: &str| {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
            .args(["-f", "lavfi", "-i"])
            .arg(format!(
                "sine=frequency=440:sample_rate={}",
                case.sample_rate
            ))
            .args(["-t", &ENCODE_SECONDS.to_string()])
            .args(case.video)
            .args(case.audio)
            .args(["-f", format])
            .arg(path)
            .output()
            .unwrap()
    };
    let flv_path = dir.join("source.flv");
    let flv = ffmpeg(&flv_path, "flv");
    if flv.status.success() {
        let frames = read_flv(&std::fs::read(&flv_path).unwrap());
        return (flv_path, frames);
    }
    eprintln!(
        "{}: this ffmpeg cannot write the codecs to FLV ({}); wrapping the packets of an \
         MP4 as Enhanced RTMP instead",
        case.name,
        String::from_utf8_lossy(&flv.stderr)
            .lines()
            .find(|l| l.contains("flv @"))
            .unwrap_or("")
            .trim()
    );
    let mp4_path = dir.join("source.mp4");
    let mp4 = ffmpeg(&mp4_path, "mp4");
    assert!(
        mp4.status.success(),
        "{}",
        String::from_utf8_lossy(&mp4.stderr)
    );
    let frames = enhanced_rtmp_frames(&mp4_path);
    (mp4_path, frames)
}

fn read_flv(data: &[u8]) -> Vec<Frame> {
    let mut reader = FlvReader::new();
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    while let Some(tag) = reader.read(&mut buf).unwrap() {
        let kind = match tag.tag_type {
            flv::TAG_AUDIO => MediaKind::Audio,
            flv::TAG_VIDEO => MediaKind::Video,
            flv::TAG_SCRIPT => MediaKind::Metadata,
            _ => continue,
        };
        frames.push(Frame::new(kind, u64::from(tag.timestamp), tag.payload));
    }
    assert!(buf.is_empty(), "trailing bytes in the FLV");
    frames
}

// ---------------------------------------------------------------------------------------
// An MP4's packets as Enhanced RTMP frames, from ffprobe's dump.
// ---------------------------------------------------------------------------------------

/// A section of ffprobe's default output (`[STREAM]`, `[PACKET]`): its fields, with hex
/// dumps (`data`, `extradata`) decoded.
#[derive(Debug, Default)]
struct Section {
    name: String,
    fields: Vec<(String, String)>,
    data: Vec<(String, Vec<u8>)>,
}

impl Section {
    fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
    fn bytes(&self, key: &str) -> &[u8] {
        self.data
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&[], |(_, v)| v.as_slice())
    }
    /// A time field in whole milliseconds.
    fn ms(&self, key: &str) -> i64 {
        let seconds: f64 = self
            .get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} in {self:?}"));
        (seconds * 1000.0).round() as i64
    }
}

fn ffprobe_sections(path: &Path) -> Vec<Section> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_packets",
            "-show_data",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut sections = Vec::new();
    let mut current = Section::default();
    for line in text.lines() {
        // Sections nested in these (side data) add their fields to them.
        if line == "[STREAM]" || line == "[PACKET]" {
            current = Section::default();
        } else if line == "[/STREAM]" || line == "[/PACKET]" {
            current.name = line[2..line.len() - 1].to_owned();
            sections.push(std::mem::take(&mut current));
        } else if line.starts_with('[') {
            continue;
        } else if is_hex_dump(line) {
            // "00000000: 0000 0bc4 2801 ...  ascii": 16 bytes in a 40-column field.
            let hex: String = line[10..50.min(line.len())].split_whitespace().collect();
            let bytes =
                (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap());
            current
                .data
                .last_mut()
                .expect("dump after a key")
                .1
                .extend(bytes);
        } else if let Some((key, value)) = line.split_once('=') {
            if value.is_empty() && (key == "data" || key == "extradata") {
                current.data.push((key.to_owned(), Vec::new()));
            } else {
                current.fields.push((key.to_owned(), value.to_owned()));
            }
        }
    }
    sections
}

fn is_hex_dump(line: &str) -> bool {
    line.len() > 10
        && line.as_bytes()[8] == b':'
        && line[..8].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The MP4's packets as a publisher would send them over Enhanced RTMP (AAC the legacy
/// way), timestamps moved so that the earliest is 0.
fn enhanced_rtmp_frames(path: &Path) -> Vec<Frame> {
    let sections = ffprobe_sections(path);
    let streams: Vec<&Section> = sections.iter().filter(|s| s.name == "STREAM").collect();
    let packets: Vec<&Section> = sections.iter().filter(|s| s.name == "PACKET").collect();
    let start = packets.iter().map(|p| p.ms("dts_time")).min().unwrap();
    let mut frames = Vec::new();
    for stream in &streams {
        let (kind, payload) = sequence_start(stream);
        frames.push(Frame::new(kind, 0, payload));
    }
    for packet in packets {
        let index: usize = packet.get("stream_index").parse().unwrap();
        let codec = streams[index].get("codec_name");
        let dts = packet.ms("dts_time");
        let cts = packet.ms("pts_time") - dts;
        let key = packet.get("flags").starts_with('K');
        let data = packet.bytes("data");
        let (kind, payload) = match codec {
            "aac" => (MediaKind::Audio, [&[0xAF, 0x01], data].concat()),
            "opus" => (MediaKind::Audio, [&[0x91], &b"Opus"[..], data].concat()),
            video => {
                let frame_type: u8 = if key { 1 } else { 2 };
                let mut p = vec![0x80 | (frame_type << 4) | 1];
                p.extend_from_slice(fourcc(video));
                if video == "hevc" {
                    p.extend_from_slice(&(cts as i32).to_be_bytes()[1..]);
                } else {
                    assert_eq!(cts, 0, "{video} is not reordered");
                }
                p.extend_from_slice(data);
                (MediaKind::Video, p)
            }
        };
        frames.push(Frame::new(kind, (dts - start) as u64, Bytes::from(payload)));
    }
    // Interleaved by time, as they go over the wire.
    frames.sort_by_key(|f| f.timestamp);
    frames
}

fn fourcc(codec: &str) -> &'static [u8; 4] {
    match codec {
        "hevc" => b"hvc1",
        "av1" => b"av01",
        "vp9" => b"vp09",
        other => panic!("no Enhanced RTMP FourCC for {other}"),
    }
}

/// The sequence start of a stream: its configuration record.
fn sequence_start(stream: &Section) -> (MediaKind, Bytes) {
    let codec = stream.get("codec_name");
    let extradata = stream.bytes("extradata");
    let payload = match codec {
        "aac" => [&[0xAF, 0x00], extradata].concat(),
        "opus" => [&[0x90], &b"Opus"[..], extradata].concat(),
        // ffmpeg keeps no vpcC: profile 0, level 3.0, 8 bits 4:2:0, colours unspecified.
        "vp9" => [
            &[0x90],
            &b"vp09"[..],
            &[1, 0, 0, 0, 0, 30, 0x82, 2, 2, 2, 0, 0],
        ]
        .concat(),
        video => [&[0x90], &fourcc(video)[..], extradata].concat(),
    };
    let kind = if stream.get("codec_type") == "video" {
        MediaKind::Video
    } else {
        MediaKind::Audio
    };
    (kind, Bytes::from(payload))
}

// ---------------------------------------------------------------------------------------
// Reading the result back.
// ---------------------------------------------------------------------------------------

struct Probe {
    streams: Vec<Stream>,
    duration: f64,
}

struct Stream {
    codec: String,
    frames: usize,
}

/// ffprobe `-of flat` output as key/value pairs.
fn ffprobe_flat(path: &Path, args: &[&str]) -> Vec<(String, String)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "flat"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Codecs and decoded frames of each stream, and the duration; the file must open.
fn probe(path: &Path, count_frames: bool) -> Probe {
    let mut args = vec![
        "-show_entries",
        "stream=codec_name,nb_read_frames:format=duration",
    ];
    if count_frames {
        args.push("-count_frames");
    }
    let flat = ffprobe_flat(path, &args);
    let get = |key: String| flat.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
    let streams = (0..)
        .map_while(|i| {
            let codec = get(format!("streams.stream.{i}.codec_name"))?;
            let frames = get(format!("streams.stream.{i}.nb_read_frames"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Some(Stream { codec, frames })
        })
        .collect();
    let duration = get("format.duration".into())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    Probe { streams, duration }
}

fn first_video_frame_is_key(path: &Path) -> bool {
    let flat = ffprobe_flat(
        path,
        &[
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame",
        ],
    );
    flat.first()
        .is_some_and(|(k, v)| k == "frames.frame.0.key_frame" && v == "1")
}
