//! Tests for the fan-out, end to end: a real hub, real loopback sockets, each viewer's
//! connection driven the way `http::stream_flv` drives it, and what each viewer's client
//! reads parsed back into frames.
//!
//! Every picture carries its index, so a test can tell exactly which frames a viewer got.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use media::flv;
use media::frame::MediaKind;
use media::hub::{Audience, Hub, HubConfig, Join, Publisher, Segmenting};
use media::outbox::{FlvFraming, Format};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;
use crate::metrics::Metrics;

const NAME: &str = "live/room";
/// Bare FLV tags: what a viewer reads is a sequence of tags and nothing else.
const FORMAT: Format = Format::Flv {
    framing: FlvFraming::UntilClose,
    marks: false,
};
/// Long enough for any step on a busy machine; a hang fails after this instead of blocking.
const PATIENCE: Duration = Duration::from_secs(5);
/// Every this many pictures is a keyframe (by index).
const GOP: u32 = 30;
const SMALL: usize = 16;
/// Pictures too large for a [`SMALL_LINK`] socket: its viewer falls behind unless it reads.
const LARGE: usize = 20 * 1024;
/// Kernel buffers, each way, of a viewer on a small link.
const SMALL_LINK: usize = 8 * 1024;
/// First index of a stream published again, so its frames cannot pass for the old ones'.
const AGAIN: u32 = 3000;

// ---- Payloads -------------------------------------------------------------------------

/// An AVC sequence header whose record parses (one 1-byte SPS, no PPS).
fn sequence_header() -> Bytes {
    Bytes::from_static(&[
        0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0, 1, 0x67, 0,
    ])
}

/// Picture `index` (a keyframe every [`GOP`]) of `len` bytes.
fn picture(index: u32, len: usize) -> Bytes {
    let frame_type = if index.is_multiple_of(GOP) {
        0x17
    } else {
        0x27
    };
    let mut payload = vec![frame_type, 0x01, 0, 0, 0];
    payload.extend_from_slice(&index.to_be_bytes());
    payload.resize(len.max(payload.len()), 0xAB);
    Bytes::from(payload)
}

/// A video frame as a viewer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Video {
    Header,
    Key(u32),
    Inter(u32),
}

impl Video {
    fn of_index(index: u32) -> Video {
        if index.is_multiple_of(GOP) {
            Video::Key(index)
        } else {
            Video::Inter(index)
        }
    }

    fn parse(payload: &[u8]) -> Video {
        let index = || u32::from_be_bytes(payload[5..9].try_into().unwrap());
        match payload[..2] {
            [0x17, 0x00] => Video::Header,
            [0x17, 0x01] => Video::Key(index()),
            [0x27, 0x01] => Video::Inter(index()),
            _ => panic!("not one of our payloads: {payload:02x?}"),
        }
    }
}

fn push_header(publisher: &mut Publisher) {
    publisher
        .push(MediaKind::Video, 0, sequence_header(), Instant::now())
        .unwrap();
}

fn push_pictures(publisher: &mut Publisher, indices: std::ops::RangeInclusive<u32>, len: usize) {
    for index in indices {
        publisher
            .push(
                MediaKind::Video,
                index * 10,
                picture(index, len),
                Instant::now(),
            )
            .unwrap();
    }
}

/// Asserts `got` is the stream a viewer should see from keyframe `first` on: the sequence
/// header, then every picture from `first` to `last` once, in order.
fn assert_whole_stream(got: &[Video], first: u32, last: u32, who: &str) {
    assert_eq!(first % GOP, 0, "{who}: test expects to start at a keyframe");
    let expected: Vec<Video> = std::iter::once(Video::Header)
        .chain((first..=last).map(Video::of_index))
        .collect();
    let Some(at) = (0..got.len().max(expected.len())).find(|&i| got.get(i) != expected.get(i))
    else {
        return;
    };
    let start = at.saturating_sub(2);
    let around = |v: &[Video]| v.iter().skip(start).take(5).copied().collect::<Vec<_>>();
    panic!(
        "{who}: tag {at} differs (got {} tags, expected {}): got {:?}, expected {:?}",
        got.len(),
        expected.len(),
        around(got),
        around(&expected),
    );
}

// ---- Sockets and viewers ----------------------------------------------------------------

/// A connected loopback pair: the server's side (for the fan-out) and the viewer's.
async fn socket_pair(viewer_receive_buffer: Option<u32>) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpSocket::new_v4().unwrap();
    if let Some(size) = viewer_receive_buffer {
        // Before connecting, so that the window it advertises is small from the start.
        client.set_recv_buffer_size(size).unwrap();
    }
    let (client, accepted) = tokio::join!(
        client.connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    (accepted.unwrap().0, client.unwrap())
}

/// A viewer's connection task, as `http::stream_flv` runs it once the fan-out has the
/// viewer: pump, wait for what the pump says, until the stream ends; then close.
async fn drive(membership: Membership, socket: Arc<TcpStream>) -> Result<(), EgressError> {
    loop {
        let pump = membership.pump()?;
        if pump == Pump::Ended {
            break;
        }
        membership.ready(pump).await?;
    }
    drop(membership);
    socket2::SockRef::from(&*socket).shutdown(std::net::Shutdown::Write)?;
    Ok(())
}

struct Viewer {
    driver: JoinHandle<Result<(), EgressError>>,
    client: TagReader,
    /// The keyframe its join replay starts with: where its video must start.
    replay_key: Option<u32>,
}

/// Hand a viewer that joined with `join` to the fan-out and start its connection task.
fn attach_viewer(
    lanes: &Arc<Lanes>,
    join: Join,
    server: TcpStream,
    client: TcpStream,
    metrics: &Arc<Metrics>,
) -> Viewer {
    attach_viewer_as(FORMAT, lanes, join, server, client, metrics)
}

fn attach_viewer_as(
    format: Format,
    lanes: &Arc<Lanes>,
    join: Join,
    server: TcpStream,
    client: TcpStream,
    metrics: &Arc<Metrics>,
) -> Viewer {
    let replay_key = join
        .replay
        .iter()
        .find_map(|frame| match Video::parse(&frame.payload) {
            Video::Key(index) => Some(index),
            _ => None,
        });
    let server = Arc::new(server);
    let membership = lanes.attach(join, server.clone(), format, Pace::Player, metrics);
    Viewer {
        driver: tokio::spawn(drive(membership, server)),
        client: TagReader::new(client),
        replay_key,
    }
}

/// A new viewer of [`NAME`] whose socket buffers hold less than one [`LARGE`] picture.
async fn small_link_viewer(hub: &Hub, lanes: &Arc<Lanes>, metrics: &Arc<Metrics>) -> Viewer {
    let (server, client) = socket_pair(Some(SMALL_LINK as u32)).await;
    crate::io::limit_send_buffer(&server, SMALL_LINK);
    let join = hub.join(NAME, Audience::Viewer).expect("stream is live");
    attach_viewer(lanes, join, server, client, metrics)
}

/// A new viewer of the live stream [`NAME`].
async fn new_viewer(hub: &Hub, lanes: &Arc<Lanes>, metrics: &Arc<Metrics>) -> Viewer {
    let (server, client) = socket_pair(None).await;
    let join = hub.join(NAME, Audience::Viewer).expect("stream is live");
    attach_viewer(lanes, join, server, client, metrics)
}

impl Viewer {
    /// Everything the viewer receives until its stream ends, and how its connection ended.
    async fn finish(mut self) -> (Vec<Video>, Result<(), EgressError>) {
        let got = self.client.read_to_end().await;
        let driven = timeout(PATIENCE, self.driver)
            .await
            .expect("connection task did not end")
            .unwrap();
        (got, driven)
    }

    /// The viewer hangs up: its connection task stops, dropping its membership.
    async fn leave(&mut self) {
        self.driver.abort();
        let _ = (&mut self.driver).await;
    }
}

/// Reads a viewer's FLV tags as they arrive.
struct TagReader {
    socket: TcpStream,
    buf: BytesMut,
}

impl TagReader {
    fn new(socket: TcpStream) -> TagReader {
        TagReader {
            socket,
            buf: BytesMut::new(),
        }
    }

    /// The next tag; `None` when the server closed the connection after a whole tag.
    async fn next(&mut self) -> Option<Video> {
        loop {
            if let Some(video) = self.parse() {
                return Some(video);
            }
            let read = timeout(PATIENCE, self.socket.read_buf(&mut self.buf))
                .await
                .expect("viewer waited too long for a tag")
                .unwrap();
            if read == 0 {
                assert!(self.buf.is_empty(), "connection closed inside a tag");
                return None;
            }
        }
    }

    fn parse(&mut self) -> Option<Video> {
        let header = self.buf.get(..flv::TAG_HEADER_LEN)?;
        let size = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        assert_eq!(header[0], flv::TAG_VIDEO, "tag type");
        let total = flv::TAG_HEADER_LEN + size + 4;
        if self.buf.len() < total {
            return None;
        }
        let tag = self.buf.split_to(total);
        let previous_size = u32::from_be_bytes(tag[total - 4..].try_into().unwrap());
        assert_eq!(previous_size as usize, flv::TAG_HEADER_LEN + size);
        Some(Video::parse(&tag[flv::TAG_HEADER_LEN..total - 4]))
    }

    /// Tags up to and including picture `last`.
    async fn read_until(&mut self, last: u32) -> Vec<Video> {
        let mut got = Vec::new();
        while let Some(video) = self.next().await {
            got.push(video);
            if matches!(video, Video::Key(i) | Video::Inter(i) if i == last) {
                return got;
            }
        }
        panic!("stream ended before picture {last}: got {got:?}");
    }

    async fn read_to_end(&mut self) -> Vec<Video> {
        let mut got = Vec::new();
        while let Some(video) = self.next().await {
            got.push(video);
        }
        got
    }

    /// Read and discard until the server closes: the bytes read.
    async fn drain(&mut self) -> usize {
        let mut total = self.buf.len();
        loop {
            self.buf.clear();
            let read = timeout(PATIENCE, self.socket.read_buf(&mut self.buf))
                .await
                .expect("server did not close the connection")
                .unwrap();
            if read == 0 {
                return total;
            }
            total += read;
        }
    }
}

/// Waits until `condition` holds, failing after [`PATIENCE`].
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A hub whose viewers may fall only 32 frames behind, so slow viewers show quickly.
fn setup_short_backlog() -> (Arc<Hub>, Arc<Lanes>, Arc<Metrics>) {
    setup(HubConfig {
        backlog: 32,
        ..HubConfig::default()
    })
}

fn setup(config: HubConfig) -> (Arc<Hub>, Arc<Lanes>, Arc<Metrics>) {
    (
        Hub::new(config),
        Arc::new(Lanes::new(Duration::ZERO)),
        Arc::new(Metrics::default()),
    )
}

// ---- Tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_joining_while_frames_flow_get_every_frame_once_in_order() {
    const FRAMES: u32 = 600;
    const LATE_VIEWERS: usize = 40;
    let (hub, lanes, metrics) = setup(HubConfig::default());
    let mut publisher = hub.publish(NAME, Instant::now()).unwrap();
    // This one starts the lane, so that the others all join a fan-out already running.
    let first = new_viewer(&hub, &lanes, &metrics).await;

    let (pushed_tx, pushed) = watch::channel(0u32);
    let (attached_tx, mut attached) = mpsc::channel::<()>(LATE_VIEWERS);
    let publishing = tokio::spawn({
        let hub = hub.clone();
        async move {
            push_header(&mut publisher);
            let mut next = 0;
            while next < FRAMES {
                // In bursts, so that viewers join both ahead of the fan-out (batches sent
                // that it has not taken) and behind it (batches it took since their join).
                let last = (next + fastrand::u32(0..4)).min(FRAMES - 1);
                push_pictures(&mut publisher, next..=last, SMALL);
                next = last + 1;
                pushed_tx.send_replace(next);
                if fastrand::bool() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
            // The end waits for every viewer to attach: a join after it finds no stream.
            for _ in 0..LATE_VIEWERS {
                attached.recv().await.unwrap();
            }
            publisher.finish(&hub);
        }
    });

    let late_viewers: Vec<_> = (0..LATE_VIEWERS)
        .map(|_| {
            let (hub, lanes, metrics) = (hub.clone(), lanes.clone(), metrics.clone());
            let mut pushed = pushed.clone();
            let attached_tx = attached_tx.clone();
            // Not between the sequence header and the first keyframe: a viewer joining
            // there gets the header again ahead of the keyframe (the outbox's rule).
            let join_after = fastrand::u32(1..FRAMES - 20);
            tokio::spawn(async move {
                let (server, client) = socket_pair(None).await;
                pushed.wait_for(|n| *n >= join_after).await.unwrap();
                let join = hub.join(NAME, Audience::Viewer).expect("stream is live");
                // A real connection writes its response head between joining and attaching.
                for _ in 0..fastrand::u8(0..3) {
                    tokio::task::yield_now().await;
                }
                let viewer = attach_viewer(&lanes, join, server, client, &metrics);
                attached_tx.send(()).await.unwrap();
                let first_key = viewer.replay_key.expect("joined after the first keyframe");
                (join_after, first_key, viewer.finish().await)
            })
        })
        .collect();

    let (got, driven) = first.finish().await;
    assert_whole_stream(&got, 0, FRAMES - 1, "first viewer");
    driven.unwrap();
    for (n, viewer) in late_viewers.into_iter().enumerate() {
        let (join_after, first_key, (got, driven)) = viewer.await.unwrap();
        let who = format!("viewer {n}, joined after frame {join_after}");
        assert_whole_stream(&got, first_key, FRAMES - 1, &who);
        driven.unwrap();
    }
    timeout(PATIENCE, publishing).await.unwrap().unwrap();
    assert_eq!(lanes.lane_count(), 0, "the lane outlived its stream");
    // Past TAPE_AT viewers, the lane sent from tapes.
    assert!(metrics.bytes_out_zero_copy_total.load(Ordering::Relaxed) > 0);
}

/// Between its join and its attach a viewer's connection writes its response head, so the
/// fan-out may have moved on: the viewer catches up from its own place in the stream's
/// ring, or, when the ring has moved past it, starts again at the first keyframe the ring
/// still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_attaching_long_after_its_join_catches_up_or_skips_to_a_keyframe() {
    // The smallest ring the hub makes.
    let remembered = 16;
    let (hub, lanes, metrics) = setup(HubConfig {
        backlog: remembered as usize,
        ..HubConfig::default()
    });
    let mut publisher = hub.publish(NAME, Instant::now()).unwrap();
    push_header(&mut publisher);
    push_pictures(&mut publisher, 0..=2, SMALL);
    let mut steady = new_viewer(&hub, &lanes, &metrics).await;
    let (caught_up_server, caught_up_client) = socket_pair(None).await;
    let (skipping_server, skipping_client) = socket_pair(None).await;

    // Exactly as many batches as the ring holds go by between join and attach.
    let join = hub.join(NAME, Audience::Viewer).unwrap();
    let last = 2 + remembered;
    // One at a time, each seen through: the fan-out keeps up, only the joined viewer's
    // place in the ring falls back.
    for index in 3..=last {
        push_pictures(&mut publisher, index..=index, SMALL);
        steady.client.read_until(index).await;
    }
    let caught_up = attach_viewer(&lanes, join, caught_up_server, caught_up_client, &metrics);

    // One more than it holds.
    let join = hub.join(NAME, Audience::Viewer).unwrap();
    let first = last + 1;
    let last = last + remembered + 1;
    for index in first..=last {
        push_pictures(&mut publisher, index..=index, SMALL);
        steady.client.read_until(index).await;
    }
    // Its oldest batch is gone: it resumes at the first keyframe the ring still has.
    let skipped_to = (first + 1).next_multiple_of(GOP);
    assert!(skipped_to < last, "the test needs a keyframe in the ring");
    let skipping = attach_viewer(&lanes, join, skipping_server, skipping_client, &metrics);

    let end = last + 5;
    let mut rest = Vec::new();
    for index in last + 1..=end {
        push_pictures(&mut publisher, index..=index, SMALL);
        rest.extend(steady.client.read_until(index).await);
    }
    publisher.finish(&hub);
    for (viewer, first, who) in [
        (caught_up, 0, "caught up"),
        (skipping, skipped_to, "skipping"),
    ] {
        let (got, driven) = viewer.finish().await;
        assert_whole_stream(&got, first, end, who);
        driven.unwrap();
    }
    let expected: Vec<Video> = (last + 1..=end).map(Video::of_index).collect();
    assert_eq!(rest, expected);
    assert_eq!(steady.client.read_to_end().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_closes_when_its_viewers_leave_and_a_new_viewer_starts_another() {
    let (hub, lanes, metrics) = setup(HubConfig::default());
    let mut publisher = hub.publish(NAME, Instant::now()).unwrap();
    push_header(&mut publisher);
    push_pictures(&mut publisher, 0..=5, SMALL);

    let mut leaving = new_viewer(&hub, &lanes, &metrics).await;
    push_pictures(&mut publisher, 6..=9, SMALL);
    let got = leaving.client.read_until(9).await;
    assert_whole_stream(&got, 0, 9, "leaving viewer");
    assert_eq!(lanes.lane_count(), 1);

    leaving.leave().await;
    // The fan-out notices at its next batch: it closes, and lets go of the socket.
    push_pictures(&mut publisher, 10..=10, SMALL);
    eventually("the lane closes", || lanes.lane_count() == 0).await;
    assert_eq!(leaving.client.read_to_end().await, []);

    push_pictures(&mut publisher, 11..=14, SMALL);
    let next = new_viewer(&hub, &lanes, &metrics).await;
    assert_eq!(lanes.lane_count(), 1);
    push_pictures(&mut publisher, 15..=40, SMALL);
    publisher.finish(&hub);
    let (got, driven) = next.finish().await;
    assert_whole_stream(&got, 0, 40, "next viewer");
    driven.unwrap();
    assert_eq!(lanes.lane_count(), 0);
}

// The new viewer usually comes while the old lane is still in place (its fan-out, on a
// thread of its own, has yet to see the end); either way it must get the new stream.
#[tokio::test(flavor = "current_thread")]
async fn a_stream_published_again_gets_a_new_fan_out() {
    let (hub, lanes, metrics) = setup(HubConfig::default());
    let mut old = hub.publish(NAME, Instant::now()).unwrap();
    push_header(&mut old);
    push_pictures(&mut old, 0..=2, SMALL);
    let mut old_viewer = new_viewer(&hub, &lanes, &metrics).await;
    let got = old_viewer.client.read_until(2).await;
    assert_whole_stream(&got, 0, 2, "old viewer");
    let (server, client) = socket_pair(None).await;

    old.finish(&hub);
    let new = publish_again(&hub);
    let new_viewer = attach_viewer(
        &lanes,
        hub.join(NAME, Audience::Viewer).unwrap(),
        server,
        client,
        &metrics,
    );

    let (got, driven) = old_viewer.finish().await;
    assert_eq!(got, [], "old viewer after the end");
    driven.unwrap();
    finish_again(new, &hub, new_viewer).await;
}

/// The stream [`NAME`] published again, with its first pictures from [`AGAIN`] on.
fn publish_again(hub: &Hub) -> Publisher {
    let mut new = hub.publish(NAME, Instant::now()).unwrap();
    push_header(&mut new);
    push_pictures(&mut new, AGAIN..=AGAIN + 2, SMALL);
    new
}

/// The rest of a stream published again, up to its end; `viewer` must get all of it.
async fn finish_again(mut new: Publisher, hub: &Hub, viewer: Viewer) {
    push_pictures(&mut new, AGAIN + 3..=AGAIN + 40, SMALL);
    new.finish(hub);
    let (got, driven) = viewer.finish().await;
    assert_whole_stream(&got, AGAIN, AGAIN + 40, "new viewer");
    driven.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_does_not_read_falls_behind_without_holding_up_others() {
    let (hub, lanes, metrics) = setup_short_backlog();
    one_viewer_stalls(hub, lanes, &metrics).await;
    assert_eq!(metrics.bytes_out_zero_copy_total.load(Ordering::Relaxed), 0);
}

/// The same with the lane's batches on tapes: what a full socket leaves of a write from
/// a tape is queued as the rest of the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_does_not_read_falls_behind_without_holding_up_others_on_tapes() {
    let (hub, lanes, metrics) = setup_short_backlog();
    let lanes = Arc::new(Arc::into_inner(lanes).unwrap().with_tapes_at(1));
    one_viewer_stalls(hub, lanes, &metrics).await;
    assert!(metrics.bytes_out_zero_copy_total.load(Ordering::Relaxed) > 0);
}

/// Two viewers on links too small for a frame; one reads, the other does not.
async fn one_viewer_stalls(hub: Arc<Hub>, lanes: Arc<Lanes>, metrics: &Arc<Metrics>) {
    const FRAMES: u32 = 300;
    let mut publisher = hub.publish(NAME, Instant::now()).unwrap();
    // Both on links too small for a frame: the fan-out leaves most of each write to the
    // viewer's connection task.
    let reading = small_link_viewer(&hub, &lanes, metrics).await;
    let mut stalled = small_link_viewer(&hub, &lanes, metrics).await;

    let publishing = tokio::spawn({
        let hub = hub.clone();
        async move {
            push_header(&mut publisher);
            for index in 0..FRAMES {
                push_pictures(&mut publisher, index..=index, LARGE);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            publisher.finish(&hub);
        }
    });
    let (got, driven) = reading.finish().await;
    assert_whole_stream(&got, 0, FRAMES - 1, "reading viewer");
    driven.unwrap();
    timeout(PATIENCE, publishing).await.unwrap().unwrap();

    // The stalled viewer skipped ahead until the fan-out gave up on it.
    assert!(metrics.frames_skipped_total.load(Ordering::Relaxed) > 0);
    assert_eq!(
        metrics.viewers_dropped_slow_total.load(Ordering::Relaxed),
        1
    );
    // Once the viewer reads again, its connection learns why it was dropped, and closes.
    let read = stalled.client.drain().await;
    assert!(read < FRAMES as usize * LARGE / 2, "read {read} bytes");
    let driven = timeout(PATIENCE, &mut stalled.driver)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(driven, Err(EgressError::TooSlow(_))), "{driven:?}");
}

// ---- Races between joining, attaching and the fan-out ----------------------------------

/// Two viewers join before the stream has a lane; the one that joined later attaches
/// first and starts the lane at its own place in the stream. The earlier one is admitted
/// to a lane already past its join, and must still get its whole replay and every batch
/// after it, not skip to the next keyframe (up to a GOP of nothing for a viewer who just
/// arrived). In `http::stream_flv` the viewers' head writes sit between join and attach,
/// so the first viewers of a stream race like this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_joined_before_the_lane_started_gets_its_whole_replay() {
    let (hub, lanes, metrics) = setup(HubConfig::default());
    let mut publisher = hub.publish(NAME, Instant::now()).unwrap();
    push_header(&mut publisher);
    push_pictures(&mut publisher, 0..=2, SMALL);
    let (earlier_server, earlier_client) = socket_pair(None).await;
    let (later_server, later_client) = socket_pair(None).await;

    let earlier_join = hub.join(NAME, Audience::Viewer).unwrap();
    push_pictures(&mut publisher, 3..=3, SMALL);
    let later_join = hub.join(NAME, Audience::Viewer).unwrap();
    let later = attach_viewer(&lanes, later_join, later_server, later_client, &metrics);
    let earlier = attach_viewer(
        &lanes,
        earlier_join,
        earlier_server,
        earlier_client,
        &metrics,
    );
    push_pictures(&mut publisher, 4..=40, SMALL);
    publisher.finish(&hub);

    let (got, driven) = later.finish().await;
    assert_whole_stream(&got, 0, 40, "later viewer");
    driven.unwrap();
    let (got, driven) = earlier.finish().await;
    assert_whole_stream(&got, 0, 40, "earlier viewer");
    driven.unwrap();
}

/// When a stream's last viewer leaves and the stream ends before its fan-out saw another
/// batch, the old lane is still in place; published again at once, the new stream's first
/// viewer must get a fan-out of its own, not join the old lane (which would end it as
/// soon as the old fan-out sees the old stream's end). Lanes are matched to streams by
/// [`Watching::stream_id`], which a new stream never shares with an old one.
// Whether the old fan-out has run between the stream's end and the new viewer's attach
// depends on its thread; the new viewer must get the new stream either way.
#[tokio::test(flavor = "current_thread")]
async fn a_stream_published_again_after_its_viewers_left_gets_a_new_fan_out() {
    let (hub, lanes, metrics) = setup(HubConfig::default());
    let mut old = hub.publish(NAME, Instant::now()).unwrap();
    push_header(&mut old);
    push_pictures(&mut old, 0..=2, SMALL);
    let mut old_viewer = new_viewer(&hub, &lanes, &metrics).await;
    old_viewer.client.read_until(2).await;
    old_viewer.leave().await;
    let (server, client) = socket_pair(None).await;

    old.finish(&hub);
    let new = publish_again(&hub);
    let join = hub.join(NAME, Audience::Viewer).unwrap();
    let new_viewer = attach_viewer(&lanes, join, server, client, &metrics);
    finish_again(new, &hub, new_viewer).await;
}

/// The fan-out gives up on a viewer that keeps falling behind and wakes its connection,
/// whose socket is full: the connection must close at once with `TooSlow`, not wait for
/// the viewer to read or for [`WRITE_TIMEOUT`] (meanwhile holding the socket and a slot
/// in every count of viewers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_dropped_for_falling_behind_is_disconnected_at_once() {
    let (hub, lanes, metrics) = setup_short_backlog();
    let mut publisher = hub.publish(NAME, Instant::now()).unwrap();
    let mut stalled = small_link_viewer(&hub, &lanes, &metrics).await;

    push_header(&mut publisher);
    let dropped = || metrics.viewers_dropped_slow_total.load(Ordering::Relaxed) == 1;
    let mut index = 0;
    while !dropped() {
        assert!(index < 1000, "the viewer was never dropped");
        push_pictures(&mut publisher, index..=index, LARGE);
        index += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let driven = timeout(Duration::from_secs(1), &mut stalled.driver)
        .await
        .expect("the connection still waits for its socket")
        .unwrap();
    assert!(matches!(driven, Err(EgressError::TooSlow(_))), "{driven:?}");
}

/// RTMP's receiveVideo: a viewer that turns video off gets none, and when it turns it
/// back on, video resumes at the next keyframe behind its sequence header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_turned_off_and_on_resumes_at_a_keyframe() {
    let (hub, lanes, metrics) = setup(HubConfig::default());
    let mut publisher = hub.publish(NAME, Instant::now()).unwrap();
    push_header(&mut publisher);
    push_pictures(&mut publisher, 0..=0, SMALL);
    let (server, client) = socket_pair(None).await;
    let join = hub.join(NAME, Audience::Viewer).expect("stream is live");
    let server = Arc::new(server);
    let membership = lanes.attach(join, server.clone(), FORMAT, Pace::Player, &metrics);

    membership.update_tracks(|tracks| tracks.video = false);
    push_pictures(&mut publisher, 1..=GOP - 1, SMALL);
    membership.update_tracks(|tracks| tracks.video = true);
    push_pictures(&mut publisher, GOP..=GOP + 1, SMALL);
    publisher.finish(&hub);

    let driver = tokio::spawn(drive(membership, server));
    let got = TagReader::new(client).read_to_end().await;
    let expected = [
        Video::Header,
        Video::Key(0),
        Video::Header,
        Video::Key(GOP),
        Video::Inter(GOP + 1),
    ];
    assert_eq!(got, expected);
    timeout(PATIENCE, driver).await.unwrap().unwrap().unwrap();
}

// ---- Merge window -------------------------------------------------------------------------

/// Stream time between the pictures of the merge tests: under a second, so the fan-out
/// takes it for the stream's rate.
const MERGE_INTERVAL_MS: u32 = 999;
/// Fits one interval, not two: a write covers two pictures.
const MERGE_WINDOW: Duration = Duration::from_millis(1900);

fn push_picture(publisher: &mut Publisher, index: u32) {
    publisher
        .push(
            MediaKind::Video,
            index * MERGE_INTERVAL_MS,
            picture(index, SMALL),
            Instant::now(),
        )
        .unwrap();
}

/// What a viewer received and when, read in the background.
#[derive(Clone, Default)]
struct Arrivals(Arc<std::sync::Mutex<Vec<(Video, Instant)>>>);

impl Arrivals {
    fn record(mut client: TagReader) -> (Arrivals, JoinHandle<()>) {
        let arrivals = Arrivals::default();
        let recording = tokio::spawn({
            let arrivals = arrivals.clone();
            async move {
                while let Some(video) = client.next().await {
                    arrivals.lock().push((video, Instant::now()));
                }
            }
        });
        (arrivals, recording)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Video, Instant)>> {
        self.0.lock().unwrap()
    }

    /// When picture `index` arrived, if it did.
    fn picture(&self, index: u32) -> Option<Instant> {
        let wanted = Video::of_index(index);
        self.lock()
            .iter()
            .find_map(|(video, at)| (*video == wanted).then_some(*at))
    }

    fn videos(&self) -> Vec<Video> {
        self.lock().iter().map(|(video, _)| *video).collect()
    }
}

/// A merging viewer's picture waits for the next picture (or at most the window) to share
/// its write, and viewers take turns: while one holds a picture, the other has it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_viewers_take_turns_and_a_held_picture_waits_at_most_the_window() {
    let (hub, _, metrics) = setup(HubConfig::default());
    let lanes = Arc::new(Lanes::new(MERGE_WINDOW));
    let mut publisher = hub.publish(NAME, Instant::now()).unwrap();
    push_header(&mut publisher);
    push_picture(&mut publisher, 0);
    let mut viewers = Vec::new();
    for _ in 0..2 {
        let Viewer { driver, client, .. } = new_viewer(&hub, &lanes, &metrics).await;
        let (arrivals, recording) = Arrivals::record(client);
        viewers.push((arrivals, recording, driver));
    }
    let (a, b) = (viewers[0].0.clone(), viewers[1].0.clone());

    // The fan-out's first batch tells it nothing of the stream's rate: written at once.
    push_picture(&mut publisher, 1);
    eventually("both viewers have picture 1", || {
        a.picture(1).is_some() && b.picture(1).is_some()
    })
    .await;

    let pushed_2 = Instant::now();
    push_picture(&mut publisher, 2);
    eventually("a viewer has picture 2", || {
        a.picture(2).is_some() || b.picture(2).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (at_once, held) = match (a.picture(2), b.picture(2)) {
        (Some(_), None) => (&a, &b),
        (None, Some(_)) => (&b, &a),
        both => panic!("one viewer should hold picture 2, not {both:?}"),
    };

    let pushed_3 = Instant::now();
    push_picture(&mut publisher, 3);
    eventually("the held picture 2 goes out with picture 3", || {
        held.picture(3).is_some()
    })
    .await;
    let held_2 = held.picture(2).expect("picture 2 before picture 3");
    assert!(held_2 >= pushed_3, "picture 2 was not held");
    assert!(
        held_2 < pushed_2 + MERGE_WINDOW,
        "picture 2 waited for the window, not for picture 3"
    );

    eventually("picture 3 leaves when its window ends", || {
        at_once.picture(3).is_some()
    })
    .await;
    assert!(
        at_once.picture(3).unwrap() >= pushed_3 + MERGE_WINDOW,
        "the viewer that had picture 2 at once should hold picture 3"
    );

    publisher.finish(&hub);
    for (n, (arrivals, recording, driver)) in viewers.into_iter().enumerate() {
        timeout(PATIENCE, recording).await.unwrap().unwrap();
        timeout(PATIENCE, driver).await.unwrap().unwrap().unwrap();
        assert_whole_stream(&arrivals.videos(), 0, 3, &format!("viewer {n}"));
    }
}

/// An edge pulling a stream is never held back by the merge window: its own viewers would
/// wait twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_pulling_a_stream_is_never_held_back() {
    // An edge's marks come from upstream; none here, so the edge reads only video tags.
    let (hub, _, metrics) = setup(HubConfig {
        segments: Segmenting::Upstream,
        ..HubConfig::default()
    });
    let lanes = Arc::new(Lanes::new(MERGE_WINDOW));
    let mut publisher = hub.publish(NAME, Instant::now()).unwrap();
    push_header(&mut publisher);
    push_picture(&mut publisher, 0);
    let (server, client) = socket_pair(None).await;
    let join = hub.join(NAME, Audience::Viewer).expect("stream is live");
    let edge_pull = Format::Flv {
        framing: FlvFraming::UntilClose,
        marks: true,
    };
    let Viewer { driver, client, .. } =
        attach_viewer_as(edge_pull, &lanes, join, server, client, &metrics);
    let (edge, recording) = Arrivals::record(client);

    for index in 1..=4 {
        let pushed = Instant::now();
        push_picture(&mut publisher, index);
        eventually(&format!("the edge has picture {index}"), || {
            edge.picture(index).is_some()
        })
        .await;
        assert!(
            edge.picture(index).unwrap() < pushed + MERGE_WINDOW,
            "picture {index} was held"
        );
    }
    publisher.finish(&hub);
    timeout(PATIENCE, recording).await.unwrap().unwrap();
    timeout(PATIENCE, driver).await.unwrap().unwrap().unwrap();
    assert_whole_stream(&edge.videos(), 0, 4, "edge");
}
