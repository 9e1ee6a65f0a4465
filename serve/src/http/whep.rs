//! WHEP (WebRTC-HTTP Egress Protocol): `POST /{app}/{room}/whep` with an SDP offer
//! answers `201 Created` with the SDP answer and the session's resource in `Location`;
//! `DELETE` of that resource ends the session. The media goes over the node's WebRTC
//! UDP socket ([`crate::webrtc`]); this is only the signalling.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use media::http::RequestHead;
use media::hub::Audience;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::respond::{connection_header, Reply, CORS};
use super::HttpError;
use crate::metrics::Protocol;
use crate::webrtc::{OpenError, Viewer};
use crate::Node;

/// Answer a WHEP offer (`body`) to play `stream`.
pub(super) async fn offer(
    socket: &mut TcpStream,
    peer: SocketAddr,
    request: &RequestHead,
    stream: Option<String>,
    body: Bytes,
    node: &Arc<Node>,
) -> Result<(), HttpError> {
    let keep = request.keep_alive;
    let Some(webrtc) = &node.webrtc else {
        return Reply::not_found("WebRTC").write(socket, false, keep).await;
    };
    // RFC 9725: the offer is `application/sdp`.
    if !request
        .content_type
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        let why = "a WHEP offer is Content-Type: application/sdp\n";
        return Reply::text("415 Unsupported Media Type", why)
            .write(socket, false, keep)
            .await;
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return Reply::text("400 Bad Request", "the offer is not UTF-8\n")
            .write(socket, false, keep)
            .await;
    };
    let Some(key) = stream else {
        return Reply::not_found("stream").write(socket, false, keep).await;
    };
    let stop_notice = match node
        .ask_to_play(&key, request.query(), peer, Protocol::WebRtc)
        .await
    {
        Ok(notice) => notice,
        Err(refusal) => {
            return Reply::text("403 Forbidden", format!("{refusal}\n"))
                .write(socket, false, keep)
                .await;
        }
    };
    // A viewer like any other: the GOP first, and on an edge the pull starts here.
    let Some(frames) = node.subscribe(&key, Audience::Viewer).await else {
        if let Some(notice) = stop_notice {
            notice.disarm();
        }
        return Reply::not_found("stream").write(socket, false, keep).await;
    };
    let via = socket.local_addr()?.ip();
    let viewer = Viewer {
        frames,
        peer,
        stop_notice,
    };
    let opened = webrtc.open(&key, offer, via, viewer, node.shutting_down());
    let (id, answer) = match opened {
        Ok(opened) => opened,
        Err(e @ OpenError::TooMany(_)) => {
            return Reply::text("503 Service Unavailable", format!("{e}\n"))
                .write(socket, false, keep)
                .await;
        }
        Err(e) => {
            return Reply::text("400 Bad Request", format!("{e}\n"))
                .write(socket, false, keep)
                .await
        }
    };
    let location = format!("{}/{id}", request.path());
    let head = format!(
        "HTTP/1.1 201 Created\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\
         Location: {location}\r\n{CORS}Access-Control-Expose-Headers: Location\r\n\
         Cache-Control: no-cache\r\n{}\r\n",
        answer.len(),
        connection_header(keep),
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(answer.as_bytes()).await?;
    Ok(())
}

/// End WHEP session `session` of `stream` (a DELETE of its resource).
pub(super) fn delete(stream: Option<String>, session: &str, node: &Node) -> Reply {
    let closed = match (&node.webrtc, stream) {
        (Some(webrtc), Some(key)) => webrtc.close(&key, session),
        _ => false,
    };
    if closed {
        Reply::text("200 OK", "session ended\n")
    } else {
        Reply::not_found("session")
    }
}
