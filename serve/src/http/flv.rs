//! HTTP-FLV: a viewer's response head and FLV header, then its stream's fan-out writes the
//! tags.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use media::flv;
use media::frame::Tracks;
use media::hub::Join;
use media::outbox::{FlvFraming, Format};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::respond::CORS;
use super::HttpError;
use crate::fanout::{Pace, Pump};
use crate::io::{limit_send_buffer, read_some, shutdown_write, write_all};
use crate::metrics::GaugeGuard;
use crate::Node;

pub(super) fn flv_response_head(framing: FlvFraming) -> String {
    let (version, encoding) = match framing {
        FlvFraming::Chunked => ("1.1", "Transfer-Encoding: chunked\r\n"),
        FlvFraming::UntilClose => ("1.0", ""),
    };
    format!(
        "HTTP/{version} 200 OK\r\nContent-Type: video/x-flv\r\n{encoding}{CORS}\
         Cache-Control: no-cache, no-store\r\nConnection: close\r\n\r\n"
    )
}

/// How long an HTTP-FLV viewer of a stream with no known track yet waits for one.
const TRACKS_WAIT: Duration = Duration::from_secs(1);

/// Stream a live FLV until the stream ends or the viewer leaves. With `marks`, segment
/// marks go along (for edges; players never ask for them).
pub(super) async fn stream_flv(
    socket: TcpStream,
    peer: SocketAddr,
    join: Join,
    framing: FlvFraming,
    marks: bool,
    node: &Arc<Node>,
) -> Result<(), HttpError> {
    // An edge pulling the stream is a relay, not a viewer.
    let _watching = match marks {
        true => GaugeGuard::new(node.metrics.clone(), |m| &m.relays),
        false => GaugeGuard::new(node.metrics.clone(), |m| &m.viewers),
    };
    limit_send_buffer(&socket, node.config.viewer_send_buffer);
    let name = join.watching.name().to_owned();
    debug!(stream = %name, %peer, "http-flv viewer start");
    // Players read the header's track flags once: a viewer that came before the
    // publisher's first messages waits (briefly) to learn the tracks.
    let deadline = tokio::time::Instant::now() + TRACKS_WAIT;
    let mut tracks = join.watching.tracks();
    while tracks == Tracks::NONE && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tracks = join.watching.tracks();
    }
    let mut head = BytesMut::from(flv_response_head(framing).as_bytes());
    head.extend_from_slice(&framing.frame(&flv::header(tracks.audio, tracks.video)));
    write_all(&socket, &head, &node.metrics).await?;

    // From here the stream's fan-out writes the media.
    let socket = Arc::new(socket);
    let format = Format::Flv { framing, marks };
    let membership = node
        .lanes
        .attach(join, socket.clone(), format, Pace::Player, &node.metrics);
    let mut scratch = BytesMut::with_capacity(512);
    let result = loop {
        let pump = match membership.pump() {
            Ok(Pump::Ended) => break Ok(()),
            Ok(pump) => pump,
            Err(e) => break Err(e),
        };
        tokio::select! {
            ready = membership.ready(pump) => if let Err(e) = ready {
                break Err(e);
            },
            read = read_some(&socket, &mut scratch) => match read {
                // The viewer hung up (or sent something we ignore).
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => scratch.clear(),
            },
        }
    };
    if let Err(e) = result {
        info!(stream = %name, %peer, error = %e, "dropping http-flv viewer");
        return Err(e.into());
    }
    debug!(stream = %name, %peer, "stream ended; closing http-flv viewer");
    if framing == FlvFraming::Chunked {
        write_all(&socket, b"0\r\n\r\n", &node.metrics).await?;
    }
    shutdown_write(&socket);
    Ok(())
}
