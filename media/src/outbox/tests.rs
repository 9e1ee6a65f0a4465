//! Tests for the per-viewer outbox: encoding, partial writes, track filtering and skipping.

use super::*;
use crate::frame::SegmentMark;
use crate::rtmp::chunk::ChunkReader;
use crate::test_payloads::*;
use bytes::BytesMut;

fn video(ts: u64, payload: Bytes) -> Arc<Frame> {
    Arc::new(Frame::new(MediaKind::Video, ts, payload))
}
fn audio(ts: u64, payload: Bytes) -> Arc<Frame> {
    Arc::new(Frame::new(MediaKind::Audio, ts, payload))
}
fn metadata(payload: Bytes) -> Arc<Frame> {
    Arc::new(Frame::new(MediaKind::Metadata, 0, payload))
}
/// Metadata, both sequence headers, a keyframe, audio and an inter frame.
fn stream_start() -> [Arc<Frame>; 6] {
    [
        metadata(meta(1)),
        video(0, vseq(2)),
        audio(0, aseq(3)),
        video(0, vkey(4)),
        audio(20, araw(5)),
        video(40, vinter(6)),
    ]
}
fn marked(ts: u64, payload: Bytes, mark: SegmentMark) -> Arc<Frame> {
    let mut frame = Frame::new(MediaKind::Video, ts, payload);
    frame.segment = Some(mark);
    Arc::new(frame)
}

fn rtmp(limit: usize) -> Outbox {
    Outbox::new(
        Format::Rtmp {
            stream_id: MEDIA_STREAM_ID,
        },
        limit,
    )
}

fn flv(framing: FlvFraming, marks: bool, limit: usize) -> Outbox {
    Outbox::new(Format::Flv { framing, marks }, limit)
}

/// What an RTMP viewer on the media stream should receive for `frames`, one unit each.
fn chunks(frames: &[&Arc<Frame>]) -> Vec<Bytes> {
    frames.iter().map(|f| f.rtmp_chunks().clone()).collect()
}

/// The buffers `io_slices` hands out right now, copied.
fn slices(outbox: &Outbox) -> Vec<Bytes> {
    let mut out = [IoSlice::new(&[]); MAX_IOVECS];
    let count = outbox.io_slices(&mut out);
    out[..count]
        .iter()
        .map(|s| Bytes::copy_from_slice(s))
        .collect()
}

/// Write out everything queued, a vectored write at a time; the units, front first.
fn drain(outbox: &mut Outbox) -> Vec<Bytes> {
    let mut units = Vec::new();
    while !outbox.is_empty() {
        let batch = slices(outbox);
        assert!(!batch.is_empty(), "a non-empty outbox hands out buffers");
        outbox.advance(batch.iter().map(Bytes::len).sum());
        units.extend(batch);
    }
    units
}

fn script_tag(framing: FlvFraming, ts: u64, mark: SegmentMark) -> Bytes {
    framing.frame(&flv::encode_tag(
        flv::TAG_SCRIPT,
        ts as u32,
        &mark.to_script(),
    ))
}

const MARK: SegmentMark = SegmentMark {
    sequence: 1_700_000_000,
    discontinuity: 2,
    timestamp: 324_028,
    target_duration: 2,
    program_date_ms: 0,
};

// --- encoding ---

#[test]
fn rtmp_on_media_stream_queues_each_frames_shared_chunks_in_order() {
    let frames = stream_start();
    let mut outbox = rtmp(100);
    assert_eq!(outbox.push(&frames), 0);

    // Shared with the frame, not copied per viewer.
    let mut out = [IoSlice::new(&[])];
    assert_eq!(outbox.io_slices(&mut out), 1);
    assert_eq!(out[0].as_ptr(), frames[0].rtmp_chunks().as_ptr());

    assert_eq!(
        drain(&mut outbox),
        chunks(&frames.iter().collect::<Vec<_>>())
    );
}

#[test]
fn rtmp_on_another_stream_id_encodes_for_that_stream() {
    let frames = [video(0, vkey(1)), audio(33, araw(2))];
    let mut outbox = Outbox::new(Format::Rtmp { stream_id: 3 }, 100);
    outbox.push(&frames);
    let units = drain(&mut outbox);

    let expected: Vec<Bytes> = frames.iter().map(|f| f.rtmp_chunks_for(3)).collect();
    assert_eq!(units, expected);
    assert_ne!(units[0], frames[0].rtmp_chunks());

    let mut buf = BytesMut::new();
    units.iter().for_each(|u| buf.extend_from_slice(u));
    let mut reader = ChunkReader::new();
    for frame in &frames {
        let msg = reader.read(&mut buf).unwrap().expect("a whole message");
        assert_eq!(msg.stream_id, 3);
        assert_eq!(u64::from(msg.timestamp), frame.timestamp);
        assert_eq!(msg.payload, frame.payload);
    }
    assert!(buf.is_empty());
}

#[test]
fn flv_chunked_queues_each_frames_http_chunk() {
    let frames = [
        metadata(meta(1)),
        video(0, vseq(2)),
        video(0, vkey(3)),
        audio(21, araw(4)),
    ];
    let mut outbox = flv(FlvFraming::Chunked, false, 100);
    // Metadata reaches an HTTP-FLV viewer when it starts (in its replay), not mid-stream.
    outbox.replay(&frames[..1], false);
    outbox.push(&frames);

    let expected: Vec<Bytes> = frames.iter().map(|f| f.flv_http_chunk().clone()).collect();
    assert_eq!(drain(&mut outbox), expected);
}

/// mpegts.js takes a second onMetaData mid-stream for a broken stream: live metadata
/// (a publisher's update, a new publisher) does not go to HTTP-FLV viewers. RTMP viewers
/// get it.
#[test]
fn live_metadata_goes_to_rtmp_viewers_only() {
    let frames = [video(0, vkey(1)), metadata(meta(2)), video(40, vinter(3))];
    let mut flv_viewer = flv(FlvFraming::Chunked, false, 100);
    flv_viewer.push(&frames);
    let expected: Vec<Bytes> = [&frames[0], &frames[2]]
        .iter()
        .map(|f| f.flv_http_chunk().clone())
        .collect();
    assert_eq!(drain(&mut flv_viewer), expected);
    let mut rtmp_viewer = Outbox::new(
        Format::Rtmp {
            stream_id: MEDIA_STREAM_ID,
        },
        100,
    );
    rtmp_viewer.push(&frames);
    assert_eq!(drain(&mut rtmp_viewer).len(), 3);
}

#[test]
fn flv_until_close_queues_bare_tags() {
    // 300 bytes: the chunk size line has several hex digits.
    let big: Bytes = [0x17, 0x01, 0, 0, 0]
        .into_iter()
        .chain((0..295u32).map(|i| i as u8))
        .collect::<Vec<_>>()
        .into();
    let frames = [
        metadata(meta(1)),
        video(0x0102_0304, big),
        audio(10, araw(3)),
    ];
    let mut outbox = flv(FlvFraming::UntilClose, false, 100);
    outbox.replay(&frames[..1], false);
    outbox.push(&frames);

    let expected: Vec<Bytes> = [
        (flv::TAG_SCRIPT, &frames[0]),
        (flv::TAG_VIDEO, &frames[1]),
        (flv::TAG_AUDIO, &frames[2]),
    ]
    .into_iter()
    .map(|(tag_type, f)| flv::encode_tag(tag_type, f.timestamp as u32, &f.payload))
    .collect();
    assert_eq!(drain(&mut outbox), expected);
}

#[test]
fn flv_marks_send_a_script_tag_ahead_of_the_marked_frame() {
    for framing in [FlvFraming::Chunked, FlvFraming::UntilClose] {
        let frames = [marked(4000, vkey(1), MARK), video(4040, vinter(2))];
        let mut outbox = flv(framing, true, 100);
        outbox.push(&frames);

        // The mark and its keyframe are one unit, so that no skip can part them.
        let mut marked_key = BytesMut::from(&script_tag(framing, 4000, MARK)[..]);
        marked_key.extend_from_slice(framing.framed(&frames[0]));
        let units = drain(&mut outbox);
        let expected = vec![
            marked_key.freeze(),
            Bytes::copy_from_slice(framing.framed(&frames[1])),
        ];
        assert_eq!(units, expected, "{framing:?}");
    }
}

#[test]
fn flv_without_marks_sends_the_marked_frame_alone() {
    let frames = [marked(4000, vkey(1), MARK), video(4040, vinter(2))];
    let mut outbox = flv(FlvFraming::Chunked, false, 100);
    outbox.push(&frames);

    let expected: Vec<Bytes> = frames.iter().map(|f| f.flv_http_chunk().clone()).collect();
    assert_eq!(drain(&mut outbox), expected);
}

// --- partial writes ---

#[test]
fn advance_resumes_mid_unit_and_crosses_unit_boundaries() {
    let frames = [video(0, vkey(1)), audio(0, araw(2)), video(40, vinter(3))];
    let [first, second, third] = [0, 1, 2].map(|i| frames[i].rtmp_chunks().clone());
    let mut outbox = rtmp(100);
    outbox.push(&frames);

    outbox.advance(3);
    assert_eq!(
        slices(&outbox),
        vec![first.slice(3..), second.clone(), third.clone()]
    );

    // The rest of the first unit and two bytes of the second in one write.
    outbox.advance(first.len() - 3 + 2);
    assert_eq!(slices(&outbox), vec![second.slice(2..), third.clone()]);

    outbox.advance(second.len() - 2);
    assert_eq!(slices(&outbox), vec![third.clone()]);

    outbox.advance(third.len());
    assert!(outbox.is_empty());
    assert!(slices(&outbox).is_empty());
}

#[test]
fn io_slices_fills_at_most_the_slots_given() {
    let frames = [video(0, vkey(1)), audio(0, araw(2)), video(40, vinter(3))];
    let mut outbox = rtmp(100);
    outbox.push(&frames);

    let mut out = [IoSlice::new(&[]); 2];
    assert_eq!(outbox.io_slices(&mut out), 2);
    assert_eq!(&*out[1], &frames[1].rtmp_chunks()[..]);
    assert_eq!(outbox.io_slices(&mut []), 0);
}

#[test]
fn take_started_returns_the_unwritten_rest_and_clears_everything() {
    let frames = [video(0, vkey(1)), audio(0, araw(2))];
    let mut outbox = rtmp(100);
    outbox.push(&frames);
    outbox.push_bytes(Bytes::from_static(b"reply"));

    outbox.advance(5);
    assert_eq!(
        outbox.take_started(),
        Some(frames[0].rtmp_chunks().slice(5..))
    );
    assert!(outbox.is_empty());

    // Nothing is left marked as started.
    outbox.push(&[video(40, vinter(3))]);
    assert_eq!(outbox.take_started(), None);
}

#[test]
fn take_started_is_none_when_the_front_was_not_started() {
    let frames = [video(0, vkey(1)), audio(0, araw(2))];
    let mut outbox = rtmp(100);
    outbox.push(&frames);
    assert_eq!(outbox.take_started(), None);
    assert!(outbox.is_empty());

    // A unit finished exactly at its end leaves the next one unstarted.
    outbox.push(&frames);
    outbox.advance(3);
    outbox.advance(frames[0].rtmp_chunks().len() - 3);
    assert_eq!(outbox.take_started(), None);
    assert!(outbox.is_empty());
}

// --- tracks ---

#[test]
fn a_track_turned_off_is_not_queued_and_metadata_always_is() {
    let frames = stream_start();
    let cases: [(Tracks, &[usize]); 2] = [
        (
            Tracks {
                audio: false,
                video: true,
            },
            &[0, 1, 3, 5],
        ),
        (
            Tracks {
                audio: true,
                video: false,
            },
            &[0, 2, 4],
        ),
    ];
    for (tracks, expected) in cases {
        let mut outbox = rtmp(100);
        outbox.set_tracks(tracks);
        outbox.push(&frames);
        let expected: Vec<&Arc<Frame>> = expected.iter().map(|&i| &frames[i]).collect();
        assert_eq!(drain(&mut outbox), chunks(&expected), "{tracks:?}");
    }
}

// --- falling behind ---

#[test]
fn falling_behind_drops_unstarted_media_but_keeps_the_started_front_and_own_messages() {
    let key = video(0, vkey(1));
    let reply_a = Bytes::from_static(b"reply a");
    let reply_b = Bytes::from_static(b"reply b");
    // Three live frames allowed; the replies do not count.
    let mut outbox = rtmp(3);

    assert_eq!(outbox.push(std::slice::from_ref(&key)), 0);
    outbox.advance(2);
    outbox.push_bytes(reply_a.clone());
    assert_eq!(
        outbox.push(&[video(40, vinter(2)), audio(40, araw(3))]),
        0,
        "at the limit"
    );
    outbox.push_bytes(reply_b.clone());
    assert_eq!(outbox.push(&[video(80, vinter(4))]), 3, "beyond the limit");

    assert_eq!(
        drain(&mut outbox),
        vec![key.rtmp_chunks().slice(2..), reply_a, reply_b]
    );
}

#[test]
fn after_falling_behind_video_resumes_at_a_keyframe_behind_the_latest_headers() {
    let mut outbox = rtmp(4);
    let old_headers = [video(0, vseq(1)), audio(0, aseq(2))];
    assert_eq!(outbox.push(&old_headers), 0);
    drain(&mut outbox);

    // The skipped batch changed both headers.
    let (vseq_new, aseq_new) = (video(100, vseq(3)), audio(100, aseq(4)));
    let skipped = [
        vseq_new.clone(),
        aseq_new.clone(),
        video(100, vkey(5)),
        video(140, vinter(6)),
        audio(140, araw(7)),
    ];
    assert_eq!(outbox.push(&skipped), 5);
    assert!(outbox.is_empty());

    // Audio keeps flowing while video waits for a keyframe.
    let sound = audio(180, araw(9));
    assert_eq!(outbox.push(&[video(180, vinter(8)), sound.clone()]), 0);
    assert_eq!(drain(&mut outbox), chunks(&[&sound]));

    let (key, inter) = (video(220, vkey(10)), video(260, vinter(11)));
    assert_eq!(outbox.push(&[key.clone(), inter.clone()]), 0);
    assert_eq!(
        drain(&mut outbox),
        chunks(&[&vseq_new, &aseq_new, &key, &inter])
    );
}

#[test]
fn skip_waits_for_the_next_keyframe() {
    let mut outbox = rtmp(100);
    assert_eq!(outbox.skip(), 0);
    let key = video(40, vkey(2));
    outbox.push(&[video(0, vinter(1)), key.clone()]);
    // No headers seen yet: none to resend.
    assert_eq!(drain(&mut outbox), chunks(&[&key]));
}

#[test]
fn replay_does_not_count_toward_the_limit() {
    let replay = stream_start();
    let mut outbox = rtmp(2);
    outbox.replay(&replay, false);
    let live = video(80, vinter(7));
    assert_eq!(outbox.push(std::slice::from_ref(&live)), 0);

    let mut expected = chunks(&replay.iter().collect::<Vec<_>>());
    expected.extend(chunks(&[&live]));
    assert_eq!(drain(&mut outbox), expected);
}

#[test]
fn replay_written_in_part_leaves_live_units_counted_against_the_limit() {
    let replay = [
        video(0, vseq(1)),
        audio(0, aseq(2)),
        video(0, vkey(3)),
        audio(20, araw(4)),
    ];
    let mut outbox = rtmp(2);
    outbox.replay(&replay, false);
    outbox.advance(replay[0].rtmp_chunks().len() + replay[1].rtmp_chunks().len());

    assert_eq!(
        outbox.push(&[video(40, vinter(5)), video(80, vinter(6))]),
        0
    );
    // The third live unit is one too many: the two replay units left go too.
    assert_eq!(outbox.push(&[video(120, vinter(7))]), 5);
    assert!(outbox.is_empty());
}

#[test]
fn replay_waiting_for_key_drops_inter_frames_until_a_keyframe() {
    let replay = [
        metadata(meta(1)),
        video(0, vseq(2)),
        audio(0, aseq(3)),
        video(0, vinter(4)),
        audio(20, araw(5)),
        video(40, vinter(6)),
        video(80, vkey(7)),
        video(120, vinter(8)),
    ];
    let mut outbox = rtmp(100);
    outbox.replay(&replay, true);

    let [meta, vseq, aseq, _, araw, _, key, inter] = &replay;
    // The headers are resent ahead of the keyframe.
    assert_eq!(
        drain(&mut outbox),
        chunks(&[meta, vseq, aseq, araw, vseq, aseq, key, inter])
    );
}

#[test]
fn replay_not_waiting_for_key_keeps_inter_frames() {
    let replay = [video(0, vseq(1)), video(40, vinter(2))];
    let mut outbox = rtmp(100);
    outbox.replay(&replay, false);
    assert_eq!(drain(&mut outbox), chunks(&[&replay[0], &replay[1]]));
}

// --- own messages ---

#[test]
fn empty_push_bytes_queues_nothing() {
    let mut outbox = rtmp(100);
    assert!(outbox.is_empty());
    outbox.push_bytes(Bytes::new());
    assert!(outbox.is_empty());
    assert!(slices(&outbox).is_empty());

    outbox.push_bytes(Bytes::from_static(b"x"));
    assert!(!outbox.is_empty());
    outbox.advance(1);
    assert!(outbox.is_empty());
}

#[test]
fn own_messages_ahead_of_the_replay_do_not_make_replay_count_as_live() {
    let replay = [
        video(0, vseq(1)),
        audio(0, aseq(2)),
        video(0, vkey(3)),
        audio(20, araw(4)),
        video(40, vinter(5)),
    ];
    let reply = Bytes::from_static(b"onStatus Play.Start");
    let mut outbox = rtmp(2);
    outbox.push_bytes(reply.clone());
    outbox.replay(&replay, false);
    outbox.advance(reply.len());
    assert_eq!(
        outbox.push(&[video(80, vinter(6)), video(120, vinter(7))]),
        0
    );
}

#[test]
fn video_turned_back_on_starts_at_a_keyframe() {
    let mut outbox = rtmp(100);
    outbox.set_tracks(Tracks {
        audio: true,
        video: false,
    });
    let (header, key) = (video(0, vseq(1)), video(0, vkey(2)));
    outbox.push(&[header.clone(), key]);
    drain(&mut outbox);
    outbox.set_tracks(Tracks::default());
    outbox.push(&[video(40, vinter(3))]);
    assert_eq!(drain(&mut outbox), Vec::<Bytes>::new());
    let next_key = video(80, vkey(4));
    outbox.push(std::slice::from_ref(&next_key));
    assert_eq!(drain(&mut outbox), chunks(&[&header, &next_key]));
}

#[test]
fn falling_behind_never_parts_a_segment_mark_from_its_keyframe() {
    let framing = FlvFraming::Chunked;
    let mut outbox = flv(framing, true, 2);
    let key = marked(0, vkey(1), MARK);
    outbox.push(std::slice::from_ref(&key));
    outbox.advance(1);
    outbox.push(&[video(40, vinter(2)), video(80, vinter(3))]);
    let units = drain(&mut outbox);
    assert_eq!(units.len(), 1, "only the started unit is left");
    assert!(units[0].ends_with(framing.framed(&key)));
}

// --- writing straight from the frames ---

/// The bytes of `out[..count]`, copied.
fn copied(out: &[IoSlice], count: usize) -> Vec<Bytes> {
    out[..count]
        .iter()
        .map(|s| Bytes::copy_from_slice(s))
        .collect()
}

#[test]
fn shared_slices_are_what_push_would_queue_borrowed_from_the_frames() {
    let mut frames = stream_start().to_vec();
    // An edge gets an unmarked frame as it is; only a marked one needs its own encoding.
    frames.push(video(80, vinter(7)));
    for make in [
        || rtmp(100),
        || flv(FlvFraming::Chunked, false, 100),
        || flv(FlvFraming::UntilClose, false, 100),
        || flv(FlvFraming::Chunked, true, 100),
    ] {
        let mut pushed = make();
        pushed.push(&frames);
        let expected = drain(&mut pushed);

        let mut outbox = make();
        let mut out = [IoSlice::new(&[]); MAX_IOVECS];
        let count = outbox.shared_slices(&frames, &mut out).expect("shared");
        assert_eq!(copied(&out, count), expected);
        assert!(outbox.is_empty(), "nothing queued");
    }

    let mut out = [IoSlice::new(&[]); MAX_IOVECS];
    rtmp(100).shared_slices(&frames, &mut out);
    assert_eq!(
        out[0].as_ptr(),
        frames[0].rtmp_chunks().as_ptr(),
        "not copied"
    );
}

#[test]
fn shared_slices_is_none_when_a_viewer_needs_frames_of_its_own() {
    let frames = [video(0, vkey(1)), audio(20, araw(2))];
    let mut out = [IoSlice::new(&[]); MAX_IOVECS];

    let mut queued = rtmp(100);
    queued.push_bytes(Bytes::from_static(b"reply"));
    let mut no_audio = rtmp(100);
    no_audio.set_tracks(Tracks {
        audio: false,
        video: true,
    });
    let mut waiting = rtmp(100);
    waiting.skip();
    let mut cases = [
        ("something queued", queued),
        ("a track off", no_audio),
        ("waiting for a keyframe", waiting),
        (
            "a stream id of its own",
            Outbox::new(Format::Rtmp { stream_id: 3 }, 100),
        ),
    ];
    for (why, outbox) in &mut cases {
        assert_eq!(outbox.shared_slices(&frames, &mut out), None, "{why}");
    }

    let marked_key = [marked(0, vkey(3), MARK)];
    let mut edge = flv(FlvFraming::Chunked, true, 100);
    assert_eq!(
        edge.shared_slices(&marked_key, &mut out),
        None,
        "a marked frame"
    );

    let mut one_slot = [IoSlice::new(&[])];
    assert_eq!(
        rtmp(100).shared_slices(&frames, &mut one_slot),
        None,
        "too many"
    );
}

#[test]
fn push_unwritten_queues_what_a_write_left_as_if_pushed_before_it() {
    let frames = stream_start();
    let whole: Vec<u8> = chunks(&frames.iter().collect::<Vec<_>>()).concat();
    let first = frames[0].rtmp_chunks().len();
    for written in [0, 1, first, first + 3, whole.len() - 1] {
        let mut outbox = rtmp(100);
        let mut out = [IoSlice::new(&[]); MAX_IOVECS];
        outbox.shared_slices(&frames, &mut out).expect("shared");
        assert_eq!(outbox.push_unwritten(&frames, written), 0);
        assert_eq!(drain(&mut outbox).concat(), whole[written..], "{written}");
    }

    // Mid-frame, the rest of that frame must go out before anything else.
    let mut outbox = rtmp(100);
    outbox.push_unwritten(&frames, 1);
    assert_eq!(
        outbox.take_started(),
        Some(frames[0].rtmp_chunks().slice(1..))
    );
}

#[test]
fn push_unwritten_beyond_the_limit_keeps_the_frame_the_write_started() {
    let frames = stream_start();
    let mut outbox = rtmp(2);
    let started = frames[3].rtmp_chunks();
    let before: usize = frames[..3].iter().map(|f| f.rtmp_chunks().len()).sum();
    assert_eq!(
        outbox.push_unwritten(&frames, before + 5),
        2,
        "two frames dropped"
    );
    assert_eq!(drain(&mut outbox), vec![started.slice(5..)]);
}

#[test]
fn headers_seen_only_in_shared_slices_come_back_after_a_skip() {
    let frames = stream_start();
    let mut outbox = rtmp(100);
    let mut out = [IoSlice::new(&[]); MAX_IOVECS];
    outbox.shared_slices(&frames, &mut out).expect("shared");
    // All of it written: nothing queued, but the headers are remembered.
    outbox.skip();
    let key = video(80, vkey(9));
    outbox.push(std::slice::from_ref(&key));
    assert_eq!(drain(&mut outbox), chunks(&[&frames[1], &frames[2], &key]));
}
