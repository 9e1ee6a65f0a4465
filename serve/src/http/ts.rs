//! HTTP-TS: one continuous MPEG-TS per player (VLC, ffplay, set-top boxes), muxed by its
//! own task from the stream's frames ([`media::ts::TsStream`]).
//!
//! Unlike HTTP-FLV, the bytes are the player's own: a transport stream's continuity
//! counters run per connection, so they cannot be encoded once for everyone. Players of
//! HTTP-TS are few; the cost is one mux per player.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use media::flv;
use media::hub::{Delivery, Subscriber};
use media::ts::TsStream;
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::respond::CORS;
use super::HttpError;
use crate::fanout::SlowViewerGuard;
use crate::io::{limit_send_buffer, read_some, shutdown_write, write_all};
use crate::metrics::{Protocol, ViewerGuard};
use crate::Node;

/// A write gathers what the hub has ready, up to about this much.
const GATHER: usize = 256 * 1024;

pub(super) fn ts_response_head(http10: bool) -> String {
    let (version, encoding) = if http10 {
        ("1.0", "")
    } else {
        ("1.1", "Transfer-Encoding: chunked\r\n")
    };
    format!(
        "HTTP/{version} 200 OK\r\nContent-Type: video/mp2t\r\n{encoding}{CORS}\
         Cache-Control: no-cache, no-store\r\nConnection: close\r\n\r\n"
    )
}

/// Stream `frames` as MPEG-TS until the stream ends or the player leaves.
pub(super) async fn stream_ts(
    socket: TcpStream,
    peer: SocketAddr,
    mut frames: Subscriber,
    http10: bool,
    node: &Arc<Node>,
) -> Result<(), HttpError> {
    let _viewer = ViewerGuard::new(node.metrics.clone(), Protocol::HttpTs);
    limit_send_buffer(&socket, node.config.viewer_send_buffer);
    let name = frames.name().to_owned();
    debug!(stream = %name, %peer, "http-ts viewer start");
    write_all(&socket, ts_response_head(http10).as_bytes(), &node.metrics).await?;
    let mut mux = TsStream::new();
    let mut slow = SlowViewerGuard::default();
    let mut out = BytesMut::with_capacity(GATHER);
    let mut scratch = BytesMut::with_capacity(512);
    let mut ended = false;
    while !ended {
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
                        info!(stream = %name, %peer, error = %e, "dropping http-ts viewer");
                        return Err(e.into());
                    }
                }
                Delivery::End => {
                    mux.finish(&mut out);
                    ended = true;
                    break;
                }
            }
            if out.len() < GATHER {
                next = frames.try_next();
            }
        }
        if !out.is_empty() {
            let body = out.split();
            let body = if http10 {
                body.freeze()
            } else {
                flv::http_chunk(&body)
            };
            write_all(&socket, &body, &node.metrics).await?;
        }
    }
    debug!(stream = %name, %peer, "stream ended; closing http-ts viewer");
    if !http10 {
        write_all(&socket, b"0\r\n\r\n", &node.metrics).await?;
    }
    shutdown_write(&socket);
    Ok(())
}
