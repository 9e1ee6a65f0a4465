//! Sending a stream to one viewer: batching queued frames into vectored writes, skipping
//! ahead for a viewer that fell behind, and dropping one that stays behind.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use media::hub::{Delivery, Frame, Subscriber};
use media::rtmp::session::MediaKind;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::metrics::Metrics;

/// A viewer whose socket accepts nothing for this long is gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A viewer that has to skip ahead this many times within [`SKIP_WINDOW`] is disconnected:
/// its link cannot carry the stream.
const MAX_SKIPS: u32 = 3;
const SKIP_WINDOW: Duration = Duration::from_secs(60);
/// Upper bound on the buffers handed to one `writev` call.
const MAX_IOVECS: usize = 64;

/// Why a viewer's stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("viewer fell behind {0} times")]
    TooSlow(u32),
    #[error("viewer did not read for {0:?}")]
    WriteTimeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Tracks how often a viewer had to skip ahead.
#[derive(Default)]
pub struct SlowViewerGuard {
    skips: VecDeque<Instant>,
}

impl SlowViewerGuard {
    /// Record a skip of `frames`; an error when the viewer keeps falling behind.
    pub fn skipped(
        &mut self,
        frames: u64,
        metrics: &Metrics,
        now: Instant,
    ) -> Result<(), EgressError> {
        Metrics::add(&metrics.frames_skipped_total, frames);
        self.skips.push_back(now);
        while self
            .skips
            .front()
            .is_some_and(|t| now.duration_since(*t) > SKIP_WINDOW)
        {
            self.skips.pop_front();
        }
        if self.skips.len() as u32 >= MAX_SKIPS {
            Metrics::add(&metrics.viewers_dropped_slow_total, 1);
            return Err(EgressError::TooSlow(MAX_SKIPS));
        }
        Ok(())
    }
}

/// Which tracks a viewer asked for (RTMP receiveAudio / receiveVideo).
#[derive(Clone, Copy)]
pub struct TrackFilter {
    pub audio: bool,
    pub video: bool,
}

impl Default for TrackFilter {
    fn default() -> Self {
        TrackFilter {
            audio: true,
            video: true,
        }
    }
}

impl TrackFilter {
    pub fn wants(&self, frame: &Frame) -> bool {
        match frame.kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
            MediaKind::Metadata => true,
        }
    }
}

/// Frames ready to go out, gathered from what the subscriber has queued. Each viewer
/// keeps one and refills it, so batches cost no allocation.
#[derive(Default)]
pub struct Batch {
    pub frames: Vec<Arc<Frame>>,
    pub ended: bool,
}

/// Wait for at least one delivery, then take everything else already queued into `batch`
/// (emptied first) so it leaves in one write.
pub async fn next_batch(
    sub: &mut Subscriber,
    slow: &mut SlowViewerGuard,
    metrics: &Metrics,
    batch: &mut Batch,
) -> Result<(), EgressError> {
    batch.frames.clear();
    batch.ended = false;
    let mut delivery = Some(sub.next().await);
    while let Some(d) = delivery {
        match d {
            Delivery::Frame(frame) => batch.frames.push(frame),
            Delivery::Skipped(n) => slow.skipped(n, metrics, Instant::now())?,
            Delivery::End => {
                batch.ended = true;
                break;
            }
        }
        if batch.frames.len() >= MAX_IOVECS {
            break;
        }
        delivery = sub.try_next();
    }
    Ok(())
}

/// Write every buffer (each a whole frame or message), as few syscalls as the socket
/// allows. When `behind(units left)` says the viewer is not keeping up, the buffers not yet started
/// are dropped and their count returned, so the caller skips to the next keyframe instead
/// of sending stale video. A socket that takes nothing for [`WRITE_TIMEOUT`] is an error.
pub async fn write_units<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bufs: &mut VecDeque<Bytes>,
    behind: impl Fn(usize) -> bool,
    metrics: &Metrics,
) -> Result<usize, EgressError> {
    let mut dropped = 0;
    let mut front_started = false;
    while !bufs.is_empty() {
        // On the stack: this runs for every batch of every viewer.
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (slot, buf) in slices.iter_mut().zip(bufs.iter()) {
            *slot = IoSlice::new(buf);
            count += 1;
        }
        let write = writer.write_vectored(&slices[..count]);
        let n = match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(result) => result?,
            Err(_) => return Err(EgressError::WriteTimeout(WRITE_TIMEOUT)),
        };
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero).into());
        }
        Metrics::add(&metrics.bytes_out_total, n as u64);
        let mut left = n;
        while left > 0 {
            let Some(front) = bufs.front_mut() else { break };
            if front.len() <= left {
                left -= front.len();
                bufs.pop_front();
                front_started = false;
            } else {
                front.advance(left);
                front_started = true;
                left = 0;
            }
        }
        if bufs.len() > 1 && behind(bufs.len()) {
            let keep = usize::from(front_started);
            dropped += bufs.len() - keep;
            bufs.truncate(keep);
        }
    }
    Ok(dropped)
}
