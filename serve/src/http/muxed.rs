//! Players with a mux of their own: HTTP-TS (one continuous MPEG-TS: VLC, ffplay,
//! set-top boxes; [`media::ts::TsStream`]) and HTTP-fMP4 (one continuous fragmented MP4:
//! MSE players, `<video>`; [`media::fmp4::Fmp4Stream`]), each muxed by the player's own task
//! from the stream's frames.
//!
//! Unlike HTTP-FLV, the bytes are the player's own: a transport stream's continuity
//! counters and an MP4's sample times and fragment numbers run per connection, so they are
//! not encoded once for everyone. The cost is one mux per player.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use media::fmp4::Fmp4Stream;
use media::frame::Frame;
use media::http::RequestHead;
use media::hub::{Audience, Delivery, Subscriber};
use media::ts::TsStream;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::respond::{Reply, CORS};
use super::HttpError;
use crate::fanout::SlowViewerGuard;
use crate::io::{limit_send_buffer, read_some, shutdown_write, write_all};
use crate::metrics::{Protocol, ViewerGuard};
use crate::Node;

/// A player's own mux of the stream's frames.
pub(super) trait Mux: Send {
    /// Take `frame`, appending what it makes to `out`.
    fn push(&mut self, frame: &Frame, out: &mut BytesMut);
    /// A batch of frames ended: what the mux holds goes out.
    fn flush(&mut self, out: &mut BytesMut);
}

impl Mux for TsStream {
    fn push(&mut self, frame: &Frame, out: &mut BytesMut) {
        TsStream::push(self, frame, out);
    }
    fn flush(&mut self, out: &mut BytesMut) {
        self.finish(out);
    }
}

impl Mux for Fmp4Stream {
    fn push(&mut self, frame: &Frame, out: &mut BytesMut) {
        Fmp4Stream::push(self, frame, out);
    }
    fn flush(&mut self, out: &mut BytesMut) {
        Fmp4Stream::flush(self, out);
    }
}

/// Which continuous format a player asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Muxed {
    Ts,
    Fmp4,
}

impl Muxed {
    fn protocol(self) -> Protocol {
        match self {
            Muxed::Ts => Protocol::HttpTs,
            Muxed::Fmp4 => Protocol::HttpFmp4,
        }
    }

    fn mux(self) -> Box<dyn Mux> {
        match self {
            Muxed::Ts => Box::new(TsStream::new()),
            Muxed::Fmp4 => Box::new(Fmp4Stream::new()),
        }
    }

    /// The response head, for an HTTP/1.0 client (a body until close) or not (chunked).
    fn response_head(self, http10: bool) -> String {
        let content_type = match self {
            Muxed::Ts => "video/mp2t",
            Muxed::Fmp4 => "video/mp4",
        };
        let (version, encoding) = if http10 {
            ("1.0", "")
        } else {
            ("1.1", "Transfer-Encoding: chunked\r\n")
        };
        format!(
            "HTTP/{version} 200 OK\r\nContent-Type: {content_type}\r\n{encoding}{CORS}\
             Cache-Control: no-cache, no-store\r\nConnection: close\r\n\r\n"
        )
    }
}

/// A write gathers what the hub has ready, up to about this much.
const GATHER: usize = 64 * 1024;
/// A chunk's size line: 8 hex digits and CRLF.
const CHUNK_HEAD: usize = 10;

/// Answer a request for `stream` muxed as `muxed`: the stream until it ends or the player
/// leaves, or 404 (the socket is given back for the next request).
pub(super) async fn serve_muxed(
    mut socket: TcpStream,
    peer: SocketAddr,
    request: &RequestHead,
    stream: Option<String>,
    muxed: Muxed,
    node: &Arc<Node>,
) -> Result<Option<TcpStream>, HttpError> {
    let head_only = request.method == "HEAD";
    let frames = match stream {
        Some(key) => node.subscribe(&key, Audience::Viewer).await,
        None => None,
    };
    let Some(frames) = frames else {
        Reply::not_found("stream")
            .write(&mut socket, head_only, request.keep_alive)
            .await?;
        return Ok(Some(socket));
    };
    if head_only {
        let head = muxed.response_head(request.http10);
        socket.write_all(head.as_bytes()).await?;
        return Ok(None);
    }
    stream_muxed(socket, peer, frames, (muxed, request.http10), node).await?;
    Ok(None)
}

/// Stream `frames` muxed as `muxed` until the stream ends or the player leaves.
async fn stream_muxed(
    socket: TcpStream,
    peer: SocketAddr,
    mut frames: Subscriber,
    (muxed, http10): (Muxed, bool),
    node: &Arc<Node>,
) -> Result<(), HttpError> {
    let _viewer = ViewerGuard::new(node.metrics.clone(), muxed.protocol(), frames.name());
    limit_send_buffer(&socket, node.config.viewer_send_buffer);
    let name = frames.name().to_owned();
    let protocol = muxed.protocol().label();
    debug!(stream = %name, %peer, protocol, "viewer start");
    write_all(
        &socket,
        muxed.response_head(http10).as_bytes(),
        &node.metrics,
    )
    .await?;
    let mut mux = muxed.mux();
    let mut slow = SlowViewerGuard::default();
    let mut out = BytesMut::new();
    let mut scratch = BytesMut::with_capacity(512);
    let mut ended = false;
    // A chunked body's chunk size goes in front of what is muxed, in a fixed width (HTTP
    // allows leading zeros), so that the chunk is made in place.
    let chunk_head = if http10 { 0 } else { CHUNK_HEAD };
    while !ended {
        out.resize(chunk_head, b'0');
        let first = tokio::select! {
            delivery = frames.next() => delivery,
            read = read_some(&socket, &mut scratch) => match read {
                // The player hung up (or sent something we ignore).
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {
                    scratch.clear();
                    continue;
                }
            },
        };
        // What else is ready goes in the same write.
        let mut next = Some(first);
        while let Some(delivery) = next.take() {
            match delivery {
                Delivery::Frame(frame) => mux.push(&frame, &mut out),
                Delivery::Skipped(n) => {
                    if let Err(e) = slow.skipped(n, &node.metrics, Instant::now()) {
                        info!(stream = %name, %peer, protocol, error = %e, "dropping viewer");
                        return Err(e.into());
                    }
                }
                Delivery::End => {
                    ended = true;
                    break;
                }
            }
            if out.len() < GATHER {
                next = frames.try_next();
            }
        }
        mux.flush(&mut out);
        let len = out.len() - chunk_head;
        if len > 0 {
            if chunk_head > 0 {
                let size = format!("{len:08x}\r\n");
                out[..chunk_head].copy_from_slice(size.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            write_all(&socket, &out, &node.metrics).await?;
        }
        out.clear();
        if out.capacity() > GATHER * 2 {
            // A replay or a keyframe made it large: do not keep that per player.
            out = BytesMut::new();
        }
    }
    debug!(stream = %name, %peer, protocol, "stream ended; closing viewer");
    if !http10 {
        write_all(&socket, b"0\r\n\r\n", &node.metrics).await?;
    }
    shutdown_write(&socket);
    Ok(())
}
