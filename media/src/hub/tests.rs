//! Tests for the stream hub.

use super::*;
use crate::amf::{self, Amf0Value};
use crate::flv;
use crate::frame::{Frame, MediaKind};
use crate::rtmp::chunk::{ChunkReader, ChunkWriter, RtmpMessage};
use crate::rtmp::message::MEDIA_STREAM_ID;
use crate::test_payloads::*;
use bytes::Bytes;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::AUDIO_HOLD_MS;

/// Enhanced RTMP video: IsExHeader | frame type << 4 | packet type, FourCC, body.
fn enhanced(frame_type: u8, packet_type: u8, fourcc: &[u8; 4], body: &[u8]) -> Bytes {
    let mut p = vec![0x80 | (frame_type << 4) | packet_type];
    p.extend_from_slice(fourcc);
    p.extend_from_slice(body);
    Bytes::from(p)
}

fn config(backlog: usize) -> HubConfig {
    HubConfig {
        backlog,
        ..HubConfig::default()
    }
}

#[derive(Debug, PartialEq)]
enum Got {
    Frame(Bytes),
    Skipped(u64),
    End,
}

fn got(d: Delivery) -> Got {
    match d {
        Delivery::Frame(f) => Got::Frame(f.payload.clone()),
        Delivery::Skipped(n) => Got::Skipped(n),
        Delivery::End => Got::End,
    }
}

/// Everything queued for the viewer, stopping after End.
fn drain(sub: &mut Subscriber) -> Vec<Got> {
    let mut out = Vec::new();
    while let Some(d) = sub.try_next() {
        let g = got(d);
        let end = g == Got::End;
        out.push(g);
        if end {
            break;
        }
    }
    out
}

fn drain_frames(sub: &mut Subscriber) -> Vec<Arc<Frame>> {
    let mut out = Vec::new();
    while let Some(d) = sub.try_next() {
        match d {
            Delivery::Frame(f) => out.push(f),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn frames(payloads: &[Bytes]) -> Vec<Got> {
    payloads.iter().cloned().map(Got::Frame).collect()
}

struct Feed<'a> {
    publisher: &'a mut Publisher,
    now: Instant,
}

impl Feed<'_> {
    fn video(&mut self, ts: u32, p: Bytes) -> &mut Self {
        self.publisher
            .push(MediaKind::Video, ts, p, self.now)
            .unwrap();
        self
    }
    fn audio(&mut self, ts: u32, p: Bytes) -> &mut Self {
        self.publisher
            .push(MediaKind::Audio, ts, p, self.now)
            .unwrap();
        self
    }
    fn meta(&mut self, p: Bytes) -> &mut Self {
        self.publisher
            .push(MediaKind::Metadata, 0, p, self.now)
            .unwrap();
        self
    }
}

fn feed(publisher: &mut Publisher, now: Instant) -> Feed<'_> {
    Feed { publisher, now }
}

// --- joining a stream ---

/// Audio transcoded from a publisher's Opus keeps it on its way through the hub: live, and
/// in the sequence headers and GOP a later subscriber starts with.
#[test]
fn the_opus_behind_transcoded_audio_reaches_every_subscriber() {
    use crate::frame::PublishedOpus;
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let early = hub.subscribe("room", Audience::Viewer).unwrap();
    let opus = |n: u8| Arc::new(PublishedOpus::Header(Bytes::from(vec![n])));
    feed(&mut p, now).video(0, vseq(1)).video(0, vkey(2));
    p.push_transcoded(MediaKind::Audio, 0, aseq(3), Some(opus(3)), now)
        .unwrap();
    p.push_transcoded(MediaKind::Audio, 10, araw(4), Some(opus(4)), now)
        .unwrap();
    feed(&mut p, now).video(40, vinter(5));
    let late = hub.subscribe("room", Audience::Viewer).unwrap();
    for mut sub in [early, late] {
        let carried: Vec<Option<Arc<PublishedOpus>>> = drain_frames(&mut sub)
            .iter()
            .filter(|f| f.kind == MediaKind::Audio)
            .map(|f| f.published_opus.clone())
            .collect();
        assert_eq!(carried, [Some(opus(3)), Some(opus(4))]);
    }
}

#[test]
fn new_subscriber_gets_metadata_headers_then_gop_from_last_keyframe() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now)
        .video(0, vseq(1))
        .audio(0, aseq(2))
        .meta(meta(3))
        .video(0, vkey(4))
        .audio(10, araw(5))
        .video(33, vinter(6))
        .video(66, vkey(7))
        .audio(70, araw(8))
        .video(100, vinter(9));
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    assert!(sub.has_audio() && sub.has_video());
    assert_eq!(
        drain(&mut sub),
        frames(&[meta(3), vseq(1), aseq(2), vkey(7), araw(8), vinter(9)])
    );
    feed(&mut p, now)
        .video(133, vinter(10))
        .audio(140, araw(11));
    assert_eq!(
        drain(&mut sub),
        frames(&[vinter(10)]),
        "audio waits for video"
    );
    feed(&mut p, now).video(166, vinter(12));
    assert_eq!(drain(&mut sub), frames(&[araw(11), vinter(12)]));
}

#[test]
fn frames_are_classified() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now)
        .video(0, vseq(1))
        .audio(0, aseq(2))
        .video(0, vkey(3))
        .video(40, vinter(4))
        .audio(20, araw(5))
        .meta(meta(6))
        .video(80, vinter(7));
    let flags: Vec<(MediaKind, bool, bool)> = drain_frames(&mut sub)
        .iter()
        .map(|f| (f.kind, f.key, f.sequence_header))
        .collect();
    assert_eq!(
        flags,
        [
            (MediaKind::Video, false, true),
            (MediaKind::Audio, false, true),
            (MediaKind::Video, true, false),
            (MediaKind::Video, false, false),
            (MediaKind::Audio, false, false),
            (MediaKind::Metadata, false, false),
            (MediaKind::Video, false, false),
        ]
    );
}

#[test]
fn subscriber_joining_without_cached_keyframe_waits_for_one() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now).video(0, vseq(1)).video(0, vinter(2));
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now)
        .video(40, vinter(3))
        .audio(40, araw(4))
        .video(80, vkey(5))
        .video(120, vinter(6));
    assert_eq!(
        drain(&mut sub),
        frames(&[vseq(1), araw(4), vkey(5), vinter(6)])
    );
    assert_eq!(sub.skipped(), 1);
}

fn check_enhanced_gop(fourcc: &[u8; 4], key_body: &[u8]) {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    // A configuration record every codec's check accepts (an HEVC one with no arrays).
    let record = [&[1u8][..], &[0; 20], &[0x03, 0]].concat();
    let seq = enhanced(1, 0, fourcc, &record);
    let key1 = enhanced(1, 1, fourcc, &[key_body, &[1]].concat());
    let inter = enhanced(2, 1, fourcc, &[key_body, &[2]].concat());
    let key2 = enhanced(1, 1, fourcc, &[key_body, &[3]].concat());
    let inter2 = enhanced(2, 1, fourcc, &[key_body, &[4]].concat());
    // CodedFramesX (packet type 3) keyframes count as well.
    let key_x = enhanced(1, 3, fourcc, &[5, 5]);
    let inter_x = enhanced(2, 3, fourcc, &[6, 6]);
    feed(&mut p, now)
        .video(0, seq.clone())
        .video(0, key1)
        .video(40, inter)
        .video(80, key2.clone())
        .video(120, inter2.clone());
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    let got = drain_frames(&mut sub);
    let payloads: Vec<Bytes> = got.iter().map(|f| f.payload.clone()).collect();
    assert_eq!(payloads, [seq.clone(), key2, inter2]);
    assert!(got[0].sequence_header && !got[0].key);
    assert!(got[1].key && !got[1].sequence_header);
    assert!(!got[2].key);

    feed(&mut p, now)
        .video(160, key_x.clone())
        .video(200, inter_x.clone());
    let mut late = hub.subscribe("room", Audience::Viewer).unwrap();
    assert_eq!(drain(&mut late), frames(&[seq, key_x, inter_x]));
}

#[test]
fn enhanced_hevc_sequence_start_and_keyframes_make_a_gop() {
    // CodedFrames for HEVC carry a 3-byte composition time before the data.
    check_enhanced_gop(b"hvc1", &[0, 0, 0, 0x26, 0x01]);
}

#[test]
fn enhanced_av1_sequence_start_and_keyframes_make_a_gop() {
    check_enhanced_gop(b"av01", &[0x12, 0x00]);
}

#[test]
fn subscribe_to_unknown_stream_is_none() {
    let hub = Hub::new(HubConfig::default());
    assert!(hub.subscribe("nope", Audience::Viewer).is_none());
    assert!(!hub.is_live("nope"));
    let _p = hub.publish("room", Instant::now()).unwrap();
    assert!(hub.subscribe("nope", Audience::Viewer).is_none());
    assert!(hub.subscribe("room", Audience::Viewer).is_some());
}

#[test]
fn list_reports_streams() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now).audio(0, araw(1));
    let _a = hub.subscribe("room", Audience::Viewer).unwrap();
    let _b = hub.subscribe("room", Audience::Viewer).unwrap();
    let list = hub.list();
    assert_eq!(list.len(), 1);
    let info = &list[0];
    assert_eq!(
        (info.name.as_str(), info.viewers, info.generation),
        ("room", 2, 1)
    );
    assert!(info.has_publisher && info.has_audio && !info.has_video);
    drop(p);
    assert!(!hub.list()[0].has_publisher);
}

// --- publishers ---

#[test]
fn second_publisher_while_first_is_active_is_refused() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    assert_eq!(
        hub.publish("room", now).err(),
        Some(PublishError::AlreadyPublishing)
    );
    let later = now + Duration::from_secs(1);
    feed(&mut p, later).audio(0, araw(1));
    let almost_stale =
        later + HubConfig::default().publisher_stale_after - Duration::from_millis(1);
    assert_eq!(
        hub.publish("room", almost_stale).err(),
        Some(PublishError::AlreadyPublishing)
    );
    assert!(hub.publish("other", now).is_ok());
}

#[test]
fn stale_publisher_is_replaced_and_viewers_follow_the_new_one() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut old = hub.publish("room", now).unwrap();
    assert_eq!(old.generation(), 1);
    feed(&mut old, now)
        .video(0, vseq(1))
        .audio(0, aseq(2))
        .video(0, vkey(3));
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    drain(&mut sub);

    let stale = now + hub.config.publisher_stale_after;
    let mut new = hub.publish("room", stale).unwrap();
    assert_eq!(new.generation(), 2);
    assert_eq!(
        old.push(MediaKind::Video, 40, vinter(4), stale),
        Err(Replaced)
    );
    feed(&mut new, stale)
        .video(0, vseq(5))
        .audio(0, aseq(6))
        .video(0, vkey(7));

    let got = drain_frames(&mut sub);
    let payloads: Vec<Bytes> = got.iter().map(|f| f.payload.clone()).collect();
    assert_eq!(payloads, [vseq(5), aseq(6), vkey(7)]);
    assert!(got.iter().all(|f| f.generation == 2));
    assert_eq!(hub.list()[0].generation, 2);

    // The replaced publisher going away does not unseat the new one.
    drop(old);
    assert_eq!(
        hub.publish("room", stale).err(),
        Some(PublishError::AlreadyPublishing)
    );
    feed(&mut new, stale).video(40, vinter(8));
    assert_eq!(drain(&mut sub), frames(&[vinter(8)]));
    // A new viewer gets the new headers.
    let mut late = hub.subscribe("room", Audience::Viewer).unwrap();
    assert_eq!(
        drain(&mut late),
        frames(&[vseq(5), aseq(6), vkey(7), vinter(8)])
    );
}

#[test]
fn first_generation_frames_are_numbered_one() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now).audio(0, araw(1));
    assert_eq!(drain_frames(&mut sub)[0].generation, 1);
}

#[test]
fn replaced_publisher_finish_does_not_end_the_stream() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let old = hub.publish("room", now).unwrap();
    let stale = now + hub.config.publisher_stale_after;
    let mut new = hub.publish("room", stale).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    old.finish(&hub);
    assert!(hub.is_live("room"));
    feed(&mut new, stale).audio(0, araw(1));
    assert_eq!(drain(&mut sub), frames(&[araw(1)]));
}

// --- timestamps ---

#[test]
fn new_publisher_continues_the_stream_clock() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut sub = {
        let mut p = hub.publish("room", now).unwrap();
        let sub = hub.subscribe("room", Audience::Viewer).unwrap();
        feed(&mut p, now)
            .video(5000, vkey(1))
            .audio(5000, araw(2))
            .video(7000, vinter(3))
            .audio(6990, araw(4));
        sub
    };
    let mut p2 = hub.publish("room", now).unwrap();
    feed(&mut p2, now)
        .video(0, vkey(5))
        .audio(0, araw(6))
        .video(40, vinter(7))
        .audio(23, araw(8))
        .meta(meta(9))
        .video(80, vinter(10));
    let got = drain_frames(&mut sub);
    let ts: Vec<(MediaKind, u64)> = got.iter().map(|f| (f.kind, f.timestamp)).collect();
    assert_eq!(
        ts,
        [
            (MediaKind::Video, 0),
            (MediaKind::Audio, 0),
            (MediaKind::Video, 2000),
            (MediaKind::Audio, 1990),
            (MediaKind::Video, 2000),
            (MediaKind::Audio, 2000),
            (MediaKind::Video, 2040),
            (MediaKind::Audio, 2023),
            (MediaKind::Metadata, 2040),
            (MediaKind::Video, 2080),
        ]
    );
}

#[test]
fn wire_timestamp_wrap_stays_monotonic() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now)
        .video(u32::MAX - 50, vkey(1))
        .video(u32::MAX - 10, vinter(2))
        .video(29, vinter(3))
        .video(69, vinter(4));
    let ts: Vec<u64> = drain_frames(&mut sub).iter().map(|f| f.timestamp).collect();
    assert_eq!(ts, [0, 40, 80, 120]);
}

#[test]
fn audio_and_video_clocks_are_separate() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    // Interleaving with slightly out-of-order tracks must not hold either clock.
    feed(&mut p, now)
        .video(100, vkey(1))
        .audio(90, araw(2))
        .video(140, vinter(3))
        .audio(113, araw(4))
        .video(180, vinter(5));
    let ts: Vec<u64> = drain_frames(&mut sub).iter().map(|f| f.timestamp).collect();
    assert_eq!(ts, [0, 0, 40, 23, 80]);
}

// --- ending ---

#[test]
fn vanished_publisher_keeps_stream_until_end_if_orphaned() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let generation = p.generation();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now).video(0, vseq(1)).video(0, vkey(2));
    drop(p);
    assert!(hub.is_live("room"));
    let mut waiting = hub
        .subscribe("room", Audience::Viewer)
        .expect("still subscribable");
    assert_eq!(drain(&mut waiting), frames(&[vseq(1), vkey(2)]));

    hub.end_if_orphaned("room", generation);
    assert!(!hub.is_live("room"));
    assert!(hub.subscribe("room", Audience::Viewer).is_none());
    assert!(hub.list().is_empty());
    assert_eq!(
        drain(&mut sub),
        [Got::Frame(vseq(1)), Got::Frame(vkey(2)), Got::End]
    );
    assert_eq!(drain(&mut waiting), [Got::End]);
}

#[test]
fn end_if_orphaned_ignores_a_stream_that_was_taken_over() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let p = hub.publish("room", now).unwrap();
    let generation = p.generation();
    drop(p);
    let mut p2 = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    hub.end_if_orphaned("room", generation);
    assert!(hub.is_live("room"));
    feed(&mut p2, now).audio(0, araw(1));
    assert_eq!(drain(&mut sub), frames(&[araw(1)]));
    // Even once the new publisher vanished too, the old generation's timer is stale.
    let generation2 = p2.generation();
    drop(p2);
    hub.end_if_orphaned("room", generation);
    assert!(hub.is_live("room"));
    hub.end_if_orphaned("room", generation2);
    assert!(!hub.is_live("room"));
}

#[test]
fn end_if_orphaned_ignores_an_attached_publisher() {
    let hub = Hub::new(HubConfig::default());
    let p = hub.publish("room", Instant::now()).unwrap();
    hub.end_if_orphaned("room", p.generation());
    assert!(hub.is_live("room"));
    hub.end_if_orphaned("unknown", 1);
}

#[test]
fn finish_ends_the_stream_after_queued_frames() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now)
        .video(0, vseq(1))
        .video(0, vkey(2))
        .audio(0, araw(3));
    let first_generation = p.generation();
    p.finish(&hub);
    assert!(!hub.is_live("room"));
    assert!(hub.subscribe("room", Audience::Viewer).is_none());
    assert_eq!(
        drain(&mut sub),
        [
            Got::Frame(vseq(1)),
            Got::Frame(vkey(2)),
            Got::Frame(araw(3)),
            Got::End
        ]
    );
    // The name is free again, as a fresh stream.
    let p2 = hub.publish("room", now).unwrap();
    assert!(
        p2.generation() > first_generation,
        "generations are never reused"
    );
    let mut fresh = hub.subscribe("room", Audience::Viewer).unwrap();
    assert!(
        drain(&mut fresh).is_empty(),
        "nothing of the ended stream is replayed"
    );
}

// --- slow viewers ---

#[test]
fn lagging_subscriber_skips_to_a_keyframe_with_headers_resent() {
    let hub = Hub::new(config(16));
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now)
        .video(0, vseq(1))
        .audio(0, aseq(2))
        .video(0, vkey(100));
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    for i in 0..40u8 {
        let f = if i % 10 == 0 { vkey(i) } else { vinter(i) };
        feed(&mut p, now).video(40 * u32::from(i + 1), f);
        if i == 5 {
            // New headers inside what the viewer will miss.
            feed(&mut p, now).video(0, vseq(3));
        }
    }
    let got = drain(&mut sub);
    assert_eq!(got[..3], frames(&[vseq(1), aseq(2), vkey(100)]));
    let Got::Skipped(n) = got[3] else {
        panic!("{:?}", got[3])
    };
    assert_eq!(
        n,
        40 - 16,
        "the ring keeps the last 16 of 40 batches (the new header went with frame 6)"
    );
    // The current headers, then straight to the next keyframe.
    let mut expected = frames(&[vseq(3), aseq(2), vkey(30)]);
    expected.extend((31..40).map(|i| Got::Frame(vinter(i))));
    assert_eq!(got[4..], expected);
    assert_eq!(
        sub.skipped(),
        n + 6,
        "inter frames 24..=29 were dropped too"
    );
}

#[test]
fn lagging_subscriber_never_gets_inter_video_before_a_keyframe() {
    for backlog in [16usize, 17, 40] {
        let hub = Hub::new(config(backlog));
        let now = Instant::now();
        let mut p = hub.publish("room", now).unwrap();
        feed(&mut p, now).video(0, vseq(1)).video(0, vkey(0));
        let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
        drain(&mut sub);
        for i in 1..=200u32 {
            let f = if i % 7 == 0 {
                vkey(i as u8)
            } else {
                vinter(i as u8)
            };
            feed(&mut p, now)
                .video(i * 40, f)
                .audio(i * 40, araw(i as u8));
        }
        let mut saw_skip = false;
        let mut need_key = false;
        while let Some(d) = sub.try_next() {
            match d {
                Delivery::Skipped(_) => {
                    saw_skip = true;
                    need_key = true;
                }
                Delivery::Frame(f) if f.kind == MediaKind::Video && !f.sequence_header => {
                    assert!(
                        !need_key || f.key,
                        "backlog {backlog}: inter frame after a skip"
                    );
                    need_key = false;
                }
                Delivery::Frame(_) => {}
                Delivery::End => panic!("ended"),
            }
        }
        assert!(saw_skip, "backlog {backlog}");
    }
}

#[test]
fn skip_to_keyframe_after_dropping_in_flight_frames() {
    let hub = Hub::new(config(16));
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now).video(0, vseq(1)).audio(0, aseq(2));
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    drain(&mut sub);
    feed(&mut p, now)
        .video(0, vkey(3))
        .video(40, vinter(4))
        .audio(40, araw(5));
    assert_eq!(
        drain(&mut sub).len(),
        2,
        "the audio waits for the next picture"
    );
    // The viewer dropped those 2 frames unsent.
    sub.skip_to_keyframe(2);
    feed(&mut p, now)
        .video(80, vinter(6))
        .audio(80, araw(7))
        .video(120, vkey(8));
    assert_eq!(
        drain(&mut sub),
        frames(&[vseq(1), aseq(2), araw(5), araw(7), vkey(8)])
    );
    assert_eq!(sub.skipped(), 3);
}

#[test]
fn skip_to_keyframe_while_replaying_the_gop_does_not_send_its_inter_frames() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now).video(0, vseq(1)).video(0, vkey(2));
    for i in 3..10u8 {
        feed(&mut p, now).video(40 * u32::from(i), vinter(i));
    }
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    // The driver takes the header and the keyframe, cannot send them and drops them.
    assert_eq!(got(sub.try_next().unwrap()), Got::Frame(vseq(1)));
    assert_eq!(got(sub.try_next().unwrap()), Got::Frame(vkey(2)));
    sub.skip_to_keyframe(2);
    feed(&mut p, now).video(400, vkey(10));
    let after: Vec<Arc<Frame>> = drain_frames(&mut sub);
    let first_video = after
        .iter()
        .find(|f| f.kind == MediaKind::Video && !f.sequence_header)
        .unwrap();
    assert!(first_video.key, "resumed at {:?}", first_video.payload);
}

#[test]
fn audio_only_stream_frames_are_all_keys() {
    let hub = Hub::new(config(16));
    let now = Instant::now();
    let mut p = hub.publish("radio", now).unwrap();
    feed(&mut p, now).audio(0, aseq(1));
    let mut sub = hub.subscribe("radio", Audience::Viewer).unwrap();
    assert!(sub.has_audio() && !sub.has_video());
    for i in 0..40u8 {
        feed(&mut p, now).audio(23 * u32::from(i), araw(i));
    }
    let mut late = hub.subscribe("radio", Audience::Viewer).unwrap();
    assert_eq!(drain(&mut late), frames(&[aseq(1)]), "no GOP for audio");

    let got = drain(&mut sub);
    assert_eq!(got[0], Got::Frame(aseq(1)));
    assert_eq!(got[1], Got::Skipped(24));
    // Header resent, then audio resumes at once.
    assert_eq!(got[2], Got::Frame(aseq(1)));
    assert_eq!(got[3..], frames(&(24..40).map(araw).collect::<Vec<_>>()));

    feed(&mut p, now).audio(1000, araw(99));
    let f = drain_frames(&mut late);
    assert!(f[0].key && !f[0].sequence_header);
}

#[test]
fn audio_is_not_key_once_there_is_video() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now)
        .audio(0, araw(1))
        .video(0, vkey(2))
        .audio(20, araw(3))
        .video(40, vinter(4));
    let keys: Vec<bool> = drain_frames(&mut sub).iter().map(|f| f.key).collect();
    assert_eq!(keys, [true, true, false, false]);
}

// --- GOP bounds ---

#[test]
fn gop_longer_than_max_frames_is_dropped() {
    let hub = Hub::new(HubConfig {
        gop_max_frames: 3,
        ..HubConfig::default()
    });
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now)
        .video(0, vseq(1))
        .video(0, vkey(2))
        .video(40, vinter(3))
        .video(80, vinter(4));
    let mut full = hub.subscribe("room", Audience::Viewer).unwrap();
    assert_eq!(
        drain(&mut full),
        frames(&[vseq(1), vkey(2), vinter(3), vinter(4)])
    );

    feed(&mut p, now)
        .video(120, vinter(5))
        .video(160, vinter(6));
    let mut late = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now).video(200, vinter(7)).video(240, vkey(8));
    assert_eq!(drain(&mut late), frames(&[vseq(1), vkey(8)]));
    // Live viewers are not affected.
    assert_eq!(
        drain(&mut full),
        frames(&[vinter(5), vinter(6), vinter(7), vkey(8)])
    );
}

#[test]
fn gop_larger_than_max_bytes_is_dropped() {
    let hub = Hub::new(HubConfig {
        gop_max_bytes: 20,
        ..HubConfig::default()
    });
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    // Seven bytes each: two fit, the third does not.
    feed(&mut p, now).video(0, vkey(1)).video(40, vinter(2));
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    assert_eq!(drain(&mut sub), frames(&[vkey(1), vinter(2)]));
    feed(&mut p, now).video(80, vinter(3));
    let mut late = hub.subscribe("room", Audience::Viewer).unwrap();
    assert!(drain(&mut late).is_empty());
}

#[test]
fn new_publisher_drops_the_old_gop() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let p = {
        let mut p = hub.publish("room", now).unwrap();
        feed(&mut p, now).video(0, vseq(1)).video(0, vkey(2));
        p
    };
    drop(p);
    let mut p2 = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p2, now).video(0, vinter(3)).video(40, vkey(4));
    assert_eq!(drain(&mut sub), frames(&[vseq(1), vkey(4)]));
}

/// A publisher that reconnects continues where the old stream ends: its first picture is
/// shown right after the old stream's last (B-frames show a picture after later-decoded
/// ones, and a keyframe some time after it is decoded), with its own audio/video offset
/// kept.
#[test]
fn a_new_publisher_starts_after_the_old_stream_ends() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    // A picture with a composition time offset of `cts` ms.
    let picture = |key: bool, cts: u8, id: u8| {
        Bytes::from(vec![
            if key { 0x17 } else { 0x27 },
            1,
            0,
            0,
            cts,
            0,
            0,
            0,
            1,
            id,
        ])
    };
    let mut p = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    // I P B B in decode order, shown at 80, 200, 120 and 160: the video ends at 240.
    feed(&mut p, now)
        .video(0, vseq(1))
        .video(0, picture(true, 80, 2))
        .audio(10, araw(3))
        .video(40, picture(false, 160, 4))
        .audio(33, araw(5))
        .video(80, picture(false, 40, 6))
        .video(120, picture(false, 40, 10));
    drop(p);
    let mut p2 = hub.publish("room", now).unwrap();
    // The new publisher's audio starts 10 ms before its video; its keyframe, like the old
    // one, is shown 80 ms after it is decoded.
    feed(&mut p2, now)
        .video(5000, vseq(7))
        .audio(4990, araw(8))
        .video(5000, picture(true, 80, 9));
    let times: Vec<(MediaKind, u64)> = drain_frames(&mut sub)
        .iter()
        .filter(|f| !f.sequence_header)
        .map(|f| (f.kind, f.timestamp))
        .collect();
    // Decoded at 160, the new keyframe is shown at 240, where the old video ends; its
    // audio, 10 ms earlier than its video, starts at 150.
    assert_eq!(
        times,
        [
            (MediaKind::Video, 0),
            (MediaKind::Audio, 10),
            (MediaKind::Video, 40),
            (MediaKind::Audio, 33),
            (MediaKind::Video, 80),
            (MediaKind::Video, 120),
            (MediaKind::Audio, 150),
            (MediaKind::Video, 160),
        ]
    );
}

/// A packager or an edge starting cold gets the last few HLS segments, from a segment
/// start, with the sequence headers in effect there: enough for a player to start three
/// target durations behind live.
#[test]
fn a_history_subscriber_starts_at_the_last_segments() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now).video(0, vseq(1)).audio(0, aseq(2));
    for i in 0..250u32 {
        let ts = i * 40;
        let picture = if i % 25 == 0 {
            vkey(i as u8)
        } else {
            vinter(i as u8)
        };
        feed(&mut p, now)
            .video(ts, picture)
            .audio(ts + 10, araw(i as u8));
    }
    let mut sub = hub.subscribe_history("room", Audience::Internal).unwrap();
    let got = drain_frames(&mut sub);
    assert!(
        got[0].sequence_header && got[1].sequence_header,
        "headers first"
    );
    let marked: Vec<u64> = got
        .iter()
        .filter(|f| f.segment.is_some())
        .map(|f| f.timestamp)
        .collect();
    // Segments every 2 s: three complete ones and the one being filled (8 s on).
    assert_eq!(marked, [2000, 4000, 6000, 8000]);
    assert_eq!(got[2].timestamp, 2000);
    assert!(got[2].key);
    // An ordinary viewer still starts at the GOP.
    let mut viewer = hub.subscribe("room", Audience::Viewer).unwrap();
    let first_picture = drain_frames(&mut viewer)
        .into_iter()
        .find(|f| !f.sequence_header)
        .unwrap();
    assert_eq!(first_picture.timestamp, 9000);
}

// --- serialized forms ---

#[test]
fn flv_http_chunk_is_one_chunk_holding_one_tag() {
    let payload: Bytes = (0..300u32).map(|i| i as u8).collect::<Vec<_>>().into();
    let frame = Frame::new(MediaKind::Video, 0x0123_4567, payload.clone());
    let chunk = frame.flv_http_chunk().clone();
    let crlf = chunk.windows(2).position(|w| w == b"\r\n").unwrap();
    let len = usize::from_str_radix(std::str::from_utf8(&chunk[..crlf]).unwrap(), 16).unwrap();
    assert_eq!(len, 11 + 300 + 4);
    let body = &chunk[crlf + 2..];
    assert_eq!(body.len(), len + 2);
    assert_eq!(&body[len..], b"\r\n");

    let mut flv_bytes = BytesMut::from(&flv::header(true, true)[..]);
    flv_bytes.extend_from_slice(&body[..len]);
    let mut reader = flv::FlvReader::new();
    let tag = reader.read(&mut flv_bytes).unwrap().unwrap();
    assert_eq!((tag.tag_type, tag.timestamp), (flv::TAG_VIDEO, 0x0123_4567));
    assert_eq!(tag.payload, payload);
    assert!(reader.read(&mut flv_bytes).unwrap().is_none());
    assert!(flv_bytes.is_empty(), "trailer is consumed");
    assert_eq!(&body[len - 4..len], &(11u32 + 300).to_be_bytes());
    // Built once, shared.
    assert_eq!(frame.flv_http_chunk().as_ptr(), chunk.as_ptr());
}

#[test]
fn flv_http_chunk_tag_types() {
    for (kind, tag_type) in [
        (MediaKind::Audio, flv::TAG_AUDIO),
        (MediaKind::Metadata, flv::TAG_SCRIPT),
    ] {
        let frame = Frame::new(kind, 42, Bytes::from_static(b"abc"));
        let chunk = frame.flv_http_chunk();
        assert!(chunk.starts_with(b"12\r\n"), "{kind:?}: 0x12 = 18 bytes");
        assert_eq!(chunk[4], tag_type);
    }
}

/// A reader that has seen the Set Chunk Size 4096 the session sends after connect.
fn reader_at_4096() -> ChunkReader {
    let mut reader = ChunkReader::new();
    let mut buf = BytesMut::new();
    let msg = RtmpMessage {
        csid: 2,
        timestamp: 0,
        type_id: crate::rtmp::message::msg_type::SET_CHUNK_SIZE,
        stream_id: 0,
        payload: Bytes::copy_from_slice(&4096u32.to_be_bytes()),
    };
    ChunkWriter::new().write(&msg, &mut buf);
    reader.read(&mut buf).unwrap().unwrap();
    assert_eq!(reader.chunk_size(), 4096);
    reader
}

#[test]
fn rtmp_chunks_decode_to_the_original_message() {
    use crate::rtmp::message::msg_type;
    let big: Bytes = (0..10_000u32)
        .map(|i| (i * 31) as u8)
        .collect::<Vec<_>>()
        .into();
    for (kind, type_id, ts, payload) in [
        (
            MediaKind::Video,
            msg_type::VIDEO,
            0x0100_0005u64,
            big.clone(),
        ),
        (MediaKind::Audio, msg_type::AUDIO, 1234, araw(1)),
        (MediaKind::Metadata, msg_type::DATA_AMF0, 0, meta(2)),
    ] {
        let frame = Frame::new(kind, ts, payload.clone());
        let mut reader = reader_at_4096();
        let mut buf = BytesMut::from(&frame.rtmp_chunks()[..]);
        let msg = reader.read(&mut buf).unwrap().expect("one whole message");
        assert!(buf.is_empty());
        assert_eq!(
            (msg.type_id, msg.timestamp, msg.stream_id),
            (type_id, ts as u32, MEDIA_STREAM_ID)
        );
        assert_eq!(msg.payload, payload);

        let mut reader = reader_at_4096();
        let mut buf = BytesMut::from(&frame.rtmp_chunks_for(3)[..]);
        let msg = reader.read(&mut buf).unwrap().unwrap();
        assert_eq!((msg.stream_id, msg.payload), (3, payload));
    }
}

#[test]
fn rtmp_chunks_use_4096_byte_chunks() {
    let frame = Frame::new(MediaKind::Video, 0, Bytes::from(vec![0x27; 5000]));
    // Type-0 header (12 bytes), 4096 bytes, one type-3 header (1 byte), 904 bytes.
    assert_eq!(frame.rtmp_chunks().len(), 12 + 5000 + 1);
}

#[test]
fn stale_end_if_orphaned_does_not_end_a_recreated_stream() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let a = hub.publish("room", now).unwrap();
    let a_generation = a.generation();
    drop(a); // A's connection drops: the driver arms a grace timer for (room, 1).
    let b = hub.publish("room", now).unwrap(); // A reconnects as B...
    b.finish(&hub); // ...and unpublishes cleanly: the stream is gone.
    let c = hub.publish("room", now).unwrap(); // A new stream under the same name.
    drop(c); // C's connection drops: C gets its own grace period.
    hub.end_if_orphaned("room", a_generation); // A's timer fires.
    assert!(
        hub.is_live("room"),
        "A's stale timer ended C's stream before C's grace period"
    );
}

#[test]
fn publish_racing_end_if_orphaned_always_yields_a_live_stream() {
    let mut lost = 0;
    for _ in 0..20_000 {
        let hub = Hub::new(HubConfig::default());
        let now = Instant::now();
        drop(hub.publish("room", now).unwrap());
        let barrier = std::sync::Barrier::new(2);
        let publisher = std::thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                hub.end_if_orphaned("room", 1);
            });
            barrier.wait();
            hub.publish("room", now)
        });
        if let Ok(p) = publisher {
            if !hub.is_live("room") {
                lost += 1;
            }
            drop(p);
        }
        if lost > 0 {
            break;
        }
    }
    assert_eq!(lost, 0, "publishers attached to an ended, unlisted stream");
}

// --- batching ---

#[test]
fn audio_goes_out_with_the_next_picture() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now).video(0, vseq(1)).video(0, vkey(2));
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    drain(&mut sub);
    feed(&mut p, now).audio(10, araw(3)).audio(33, araw(4));
    assert!(
        drain(&mut sub).is_empty(),
        "audio is held for the next video frame"
    );
    feed(&mut p, now).video(33, vinter(5));
    assert_eq!(sub.queued(), 1, "one batch in the ring");
    assert_eq!(drain(&mut sub), frames(&[araw(3), araw(4), vinter(5)]));
}

#[test]
fn audio_is_not_held_long_when_video_pauses() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now).video(0, vseq(1)).video(0, vkey(2));
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    drain(&mut sub);
    for i in 0..4u8 {
        feed(&mut p, now).audio(u32::from(i) * 23, araw(i + 1));
    }
    assert!(drain(&mut sub).is_empty(), "69 ms of audio held");
    feed(&mut p, now).audio(100, araw(5));
    assert_eq!(
        drain(&mut sub),
        frames(&[araw(1), araw(2), araw(3), araw(4), araw(5)]),
        "released after {AUDIO_HOLD_MS} ms of stream time"
    );
}

#[test]
fn audio_only_streams_are_not_held() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now).audio(0, aseq(1)).audio(0, araw(2));
    assert_eq!(drain(&mut sub), frames(&[aseq(1), araw(2)]));
}

#[test]
fn a_viewer_joining_mid_batch_gets_each_frame_once() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let mut early = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now)
        .video(0, vseq(1))
        .video(0, vkey(2))
        .audio(10, araw(3));
    let mut late = hub.subscribe("room", Audience::Viewer).unwrap();
    feed(&mut p, now).video(33, vinter(4));
    assert_eq!(
        drain(&mut early),
        frames(&[vseq(1), vkey(2), araw(3), vinter(4)])
    );
    assert_eq!(
        drain(&mut late),
        frames(&[vseq(1), vkey(2), araw(3), vinter(4)])
    );
}

#[test]
fn a_viewer_joining_mid_batch_does_not_split_it() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let mut early = hub.join("room", Audience::Viewer).unwrap().batches;
    feed(&mut p, now)
        .video(0, vseq(1))
        .video(0, vkey(2))
        .audio(10, araw(3));
    let late = hub.join("room", Audience::Viewer).unwrap();
    feed(&mut p, now).video(33, vinter(4));

    let payloads = |frames: &[Arc<Frame>]| -> Vec<Bytes> {
        frames.iter().map(|f| f.payload.clone()).collect()
    };
    let mut batches = Vec::new();
    while let Some(BatchEvent::Batch { frames, .. }) = early.try_next() {
        batches.push(payloads(&frames));
    }
    assert_eq!(
        batches,
        vec![vec![vseq(1), vkey(2)], vec![araw(3), vinter(4)]],
        "the audio still goes out with the next picture"
    );
    // The late viewer's replay stops short of the batch it gets with everyone else.
    assert_eq!(payloads(&late.replay), vec![vseq(1), vkey(2)]);
    let mut batches = late.batches;
    let Some(BatchEvent::Batch { frames, .. }) = batches.try_next() else {
        panic!("the late viewer gets the batch");
    };
    assert_eq!(payloads(&frames), vec![araw(3), vinter(4)]);
}

#[test]
fn ending_sends_what_is_held() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    feed(&mut p, now).video(0, vseq(1)).video(0, vkey(2));
    let mut sub = hub.subscribe("room", Audience::Viewer).unwrap();
    drain(&mut sub);
    feed(&mut p, now).audio(10, araw(3));
    p.finish(&hub);
    assert_eq!(drain(&mut sub), vec![Got::Frame(araw(3)), Got::End]);
}

#[test]
fn a_viewer_joining_before_any_frame_learns_the_tracks_from_metadata() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut p = hub.publish("room", now).unwrap();
    let announced = |fields: &[&str]| {
        Bytes::from(amf::encode_all(&[
            Amf0Value::String("onMetaData".into()),
            Amf0Value::EcmaArray(
                fields
                    .iter()
                    .map(|f| ((*f).to_owned(), Amf0Value::Number(7.0)))
                    .collect(),
            ),
        ]))
    };
    feed(&mut p, now).meta(announced(&["width", "videocodecid", "audiocodecid"]));
    let sub = hub.subscribe("room", Audience::Viewer).unwrap();
    assert!(sub.has_audio() && sub.has_video());
    feed(&mut p, now).meta(announced(&["audiocodecid"]));
    let radio = hub.subscribe("room", Audience::Viewer).unwrap();
    assert!(radio.has_audio() && !radio.has_video());
    feed(&mut p, now).meta(Bytes::from_static(b"not amf"));
    let unknown = hub.subscribe("room", Audience::Viewer).unwrap();
    assert!(!unknown.has_audio() && !unknown.has_video());
}
