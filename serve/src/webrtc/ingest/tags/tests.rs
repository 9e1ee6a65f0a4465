use super::*;

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84];
const SPS_2: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

fn annexb(nals: &[&[u8]]) -> Vec<u8> {
    nals.iter()
        .flat_map(|n| [0, 0, 0, 1].iter().chain(n.iter()).copied())
        .collect()
}

/// A tag's FLV frame type and AVC packet type.
fn video_kind(tag: &Tag) -> (u8, u8) {
    (tag.body[0] >> 4, tag.body[1])
}

#[test]
fn pictures_come_after_a_sequence_header_made_of_their_parameter_sets() {
    let t0 = Instant::now();
    let mut tags = IngestTags::new();
    // Audio has begun (the tags wait for both tracks: see below).
    tags.audio(&[0xf8], (0, None), t0);
    // Nothing decodes before parameter sets.
    assert!(tags
        .video(&annexb(&[&[0x41, 1]]), (1_000, None), t0)
        .is_empty());
    let key = tags.video(
        &annexb(&[&[0x09, 0xf0], SPS, PPS, &[0x65, 2]]),
        (4_000, None),
        t0,
    );
    let key: Vec<Tag> = key
        .into_iter()
        .filter(|t| t.kind == MediaKind::Video)
        .collect();
    assert_eq!(
        key.iter().map(video_kind).collect::<Vec<_>>(),
        vec![(1, 0), (1, 1)],
        "a sequence header, then a keyframe"
    );
    // The keyframe holds the picture only, length-prefixed, composition time 0; the AUD is
    // gone.
    assert_eq!(&key[1].body[..], &[0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 2]);
    // 90 kHz: 3000 ticks after the first packet is 33 ms after it.
    assert_eq!(key[1].ms, 33);
    let inter = tags.video(&annexb(&[&[0x41, 3]]), (7_000, None), t0);
    assert_eq!(
        inter.iter().map(video_kind).collect::<Vec<_>>(),
        vec![(2, 1)]
    );
    assert_eq!(inter[0].ms, 66);
    // New parameter sets: a new sequence header.
    let changed = tags.video(&annexb(&[SPS_2, PPS, &[0x65, 4]]), (10_000, None), t0);
    assert_eq!(
        changed.iter().map(video_kind).collect::<Vec<_>>(),
        vec![(1, 0), (1, 1)]
    );
}

/// The first tags wait until both tracks have begun, then go with each track's sequence
/// header first, so that every output starts with both; a publisher of one track is let
/// through after 500 ms.
#[test]
fn tags_wait_at_the_start_until_both_tracks_have_begun() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut tags = IngestTags::new();
    let key = annexb(&[SPS, PPS, &[0x65, 1]]);
    // Audio first: its sequence header at the first packet, held.
    assert!(tags.audio(&[0xf8], (0, None), t0).is_empty());
    assert!(tags.audio(&[0xf8], (960, None), at(20)).is_empty());
    let out = tags.video(&key, (0, None), at(40));
    let kinds: Vec<(MediaKind, u8)> = out.iter().map(|t| (t.kind, t.body[1])).collect();
    assert_eq!(
        kinds,
        [
            (MediaKind::Audio, 0),
            (MediaKind::Video, 0),
            (MediaKind::Video, 1)
        ],
        "both sequence headers, then the picture"
    );
    assert_eq!(
        tags.video(&annexb(&[&[0x41, 2]]), (3_600, None), at(80))
            .len(),
        1
    );
    // No audio: held until 500 ms of pictures, then all of them; then as they come.
    let mut silent = IngestTags::new();
    for i in 0..13u64 {
        assert!(
            silent.video(&key, (i * 3_600, None), at(i * 40)).is_empty(),
            "{i}"
        );
    }
    let released = silent.video(&key, (13 * 3_600, None), at(520));
    assert_eq!(released.len(), 15, "a sequence header and 14 pictures");
    assert_eq!(silent.video(&key, (14 * 3_600, None), at(560)).len(), 1);
}

#[test]
fn tracks_are_placed_where_they_first_arrived_and_never_go_back() {
    let t0 = Instant::now();
    let mut tags = IngestTags::new();
    let mut clocks = (TrackClock::new(90_000), TrackClock::new(48_000));
    // Audio first, at 0; video 120 ms later.
    assert_eq!(clocks.1.ms(5_000_000, tags.arrived_ms(t0), None), 0);
    let later = t0 + Duration::from_millis(120);
    assert_eq!(clocks.0.ms(123_456, tags.arrived_ms(later), None), 120);
    assert_eq!(clocks.0.ms(123_456 + 9_000, 0, None), 220);
    // Reordered: not before what was already given.
    assert_eq!(clocks.0.ms(123_456 + 4_500, 0, None), 220);
    assert_eq!(clocks.0.ms(100, 0, None), 220);
    assert_eq!(clocks.1.ms(5_000_000 + 48_000, 0, None), 1_000);
}

#[test]
fn sender_reports_move_the_track_placed_early_forward_once() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let report = |rtp, unix_ms| Some(SenderReport { rtp, unix_ms });
    let mut tags = IngestTags::new();
    let picture = annexb(&[SPS, PPS, &[0x65, 1]]);
    // Video arrives first; the audio captured 50 ms after it arrives 100 ms after it.
    tags.video(&picture, (90_000, None), at(0));
    let _ = tags.audio(&[0xf8], (48_000, None), at(100));
    // Their reports: video's RTP 90 000 was at 1 000 000 ms; audio's 48 000 at 1 000 050 ms,
    // which its report gives as RTP two seconds before that (across the 32-bit wrap).
    tags.video(&picture, (99_000, report(90_000, 1_000_000)), at(100));
    let two_seconds_before = 48_000u32.wrapping_sub(96_000);
    let audio_report = report(two_seconds_before, 1_000_050 - 2_000);
    let _ = tags.audio(&[0xf8], (48_960, audio_report), at(120));
    // Audio is placed 50 ms late (100 ms apart, 50 ms apart at capture): video moves 50 ms
    // forward, from the next picture on.
    assert_eq!(tags.aligned, Some(50));
    let next = tags.video(&picture, (108_000, None), at(200));
    assert_eq!(next.last().map(|t| t.ms), Some(200 + 50));
    // Once only.
    let later = tags.video(&picture, (117_000, report(117_000, 1_000_300)), at(300));
    assert_eq!(later.last().map(|t| t.ms), Some(300 + 50));
}

#[test]
fn opus_comes_out_as_aac_after_its_sequence_header() {
    let t0 = Instant::now();
    let mut tags = IngestTags::new();
    let mut out = Vec::new();
    // 20 ms CELT packets of silence (a TOC byte alone), past the 500 ms the first tags
    // wait for video.
    for i in 0..40u64 {
        out.extend(tags.audio(
            &[0xf8],
            (1_000 + i * 960, None),
            t0 + Duration::from_millis(i * 20),
        ));
    }
    assert!(out.len() > 10, "{}", out.len());
    assert!(out.iter().all(|tag| tag.kind == MediaKind::Audio));
    // AAC (sound format 10), a sequence header first, then raw frames.
    assert_eq!(&out[0].body[..2], &[0xaf, 0]);
    assert!(out[1..].iter().all(|tag| tag.body[..2] == [0xaf, 1]));
    // The audio specific config: AAC-LC, 48 kHz, mono.
    assert_eq!(&out[0].body[2..], &[0x11, 0x88]);
    let times: Vec<u64> = out[1..].iter().map(|tag| tag.ms).collect();
    assert!(
        times.windows(2).all(|w| matches!(w[1] - w[0], 21 | 22)),
        "{times:?}"
    );
    // Each carries the Opus it was made from: the Opus sequence header (an OpusHead for
    // one channel) on the AAC one; on each frame, the packets (as Enhanced RTMP coded
    // frames) that begin in its 1024 samples, every packet once and in order.
    let Some(PublishedOpus::Header(header)) = out[0].published_opus.as_deref() else {
        panic!("the Opus sequence header on the AAC one");
    };
    assert_eq!(&header[..13], b"\x90OpusOpusHead");
    assert_eq!(header[14], 1);
    let mut opus_times = Vec::new();
    for tag in &out[1..] {
        let Some(PublishedOpus::Packets(packets)) = tag.published_opus.as_deref() else {
            panic!("Opus packets on every AAC frame");
        };
        for (offset, packet) in packets {
            assert_eq!(&packet[..], b"\x91Opus\xf8");
            assert!((-1000..22).contains(offset), "{offset}");
            opus_times.push(tag.ms as i64 + offset);
        }
    }
    let expected: Vec<i64> = (0..opus_times.len() as i64).map(|i| i * 20).collect();
    assert_eq!(opus_times, expected);
    assert!(opus_times.len() >= 15, "{opus_times:?}");
}

#[test]
fn keyframes_are_asked_for_until_one_comes_then_every_two_seconds() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut asks = KeyframeAsks::default();
    assert!(asks.due(t0));
    assert!(!asks.due(at(100)));
    assert!(asks.due(at(500)));
    asks.keyframe(at(600));
    assert!(!asks.due(at(1_000)));
    assert!(!asks.due(at(2_500)));
    assert!(asks.due(at(2_600)));
    assert!(!asks.due(at(4_000)));
    // A publisher's own keyframe puts the next ask off.
    asks.keyframe(at(4_500));
    assert!(!asks.due(at(6_000)));
    assert!(asks.due(at(6_500)));
    // Lost packets: asked again as soon as a retry may be.
    asks.broken();
    assert!(!asks.due(at(6_900)));
    assert!(asks.due(at(7_000)));
}
