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
use media::websocket::{self, ClientFrame};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::respond::CORS;
use super::HttpError;
use crate::fanout::{EgressError, Membership, Pace, Pump};
use crate::io::{limit_send_buffer, read_some, shutdown_write, write_all};
use crate::metrics::{GaugeGuard, Protocol, ViewerGuard};
use crate::Node;

/// The response head of an FLV stream framed as `framing`; for WebSocket, the handshake's
/// answer to `websocket_key`.
pub(super) fn flv_response_head(framing: FlvFraming, websocket_key: Option<&str>) -> String {
    let (version, encoding) = match framing {
        FlvFraming::Chunked => ("1.1", "Transfer-Encoding: chunked\r\n"),
        FlvFraming::UntilClose => ("1.0", ""),
        FlvFraming::WebSocket => {
            let accept = websocket::accept_key(websocket_key.unwrap_or_default());
            return format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
        }
    };
    format!(
        "HTTP/{version} 200 OK\r\nContent-Type: video/x-flv\r\n{encoding}{CORS}\
         Cache-Control: no-cache, no-store\r\nConnection: close\r\n\r\n"
    )
}

/// How long an HTTP-FLV viewer of a stream with no known track yet waits for one.
const TRACKS_WAIT: Duration = Duration::from_secs(1);

/// Stream a live FLV framed as `framing` after the response `head`, until the stream ends
/// or the viewer leaves. With `marks`, segment marks go along (for edges; players never
/// ask for them).
pub(super) async fn stream_flv(
    socket: TcpStream,
    peer: SocketAddr,
    join: Join,
    (framing, head): (FlvFraming, String),
    marks: bool,
    node: &Arc<Node>,
) -> Result<(), HttpError> {
    // An edge pulling the stream is a relay, not a viewer.
    let protocol = match framing {
        FlvFraming::WebSocket => Protocol::WebSocketFlv,
        _ => Protocol::HttpFlv,
    };
    let _watching: Box<dyn Send> = match marks {
        true => Box::new(GaugeGuard::new(node.metrics.clone(), |m| &m.relays)),
        false => Box::new(ViewerGuard::new(
            node.metrics.clone(),
            protocol,
            join.watching.name(),
        )),
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
    let mut head = BytesMut::from(head.as_bytes());
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
                // The viewer hung up.
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) if framing == FlvFraming::WebSocket => {
                    match answer_websocket(&mut scratch, &membership) {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(e) => break Err(e),
                    }
                }
                // What an HTTP-FLV player sends after its request is ignored.
                Ok(_) => scratch.clear(),
            },
        }
    };
    if let Err(e) = result {
        info!(stream = %name, %peer, error = %e, "dropping http-flv viewer");
        return Err(e.into());
    }
    debug!(stream = %name, %peer, "stream ended; closing http-flv viewer");
    match framing {
        FlvFraming::Chunked => write_all(&socket, b"0\r\n\r\n", &node.metrics).await?,
        FlvFraming::WebSocket => write_all(&socket, &websocket::close(1000), &node.metrics).await?,
        FlvFraming::UntilClose => {}
    }
    shutdown_write(&socket);
    Ok(())
}

/// Answer what a WebSocket-FLV player sent: pings get their pong; `false` once it closed
/// (its close is answered). A client that breaks the protocol is let go.
fn answer_websocket(read: &mut BytesMut, membership: &Membership) -> Result<bool, EgressError> {
    loop {
        match websocket::read_client_frame(read) {
            Ok(None) => return Ok(true),
            Ok(Some(ClientFrame::Ping(payload))) => membership.send(websocket::pong(&payload))?,
            Ok(Some(ClientFrame::Close(_))) => {
                membership.send(websocket::close(1000))?;
                return Ok(false);
            }
            Ok(Some(ClientFrame::Other)) => {}
            Err(e) => {
                let _ = membership.send(websocket::close(1002));
                return Err(EgressError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e,
                )));
            }
        }
    }
}
