//! WHIP (WebRTC-HTTP Ingestion Protocol, RFC 9725): `POST /{app}/{key}/whip` with an SDP
//! offer publishes over WebRTC; the answer is `201 Created` with the SDP answer and the
//! session's resource in `Location` (`/{app}/{room}/whip/{session}`: the room, never the
//! key); `DELETE` of that resource ends the publish.
//!
//! **Where the key is.** The channel key is the path's (`/{app}/{key}/whip`). OBS 30+ posts
//! to the URL the user typed as its server, `http://HOST:8080/{app}/whip`, with the key as
//! its bearer token (`Authorization: Bearer KEY`): a path without a key takes the bearer
//! token's. Given both, they must be the same key. The role then admits the publish exactly
//! as an RTMP or RTSP publish (key, `on_publish` hook, one publisher per stream).
//!
//! Answers: 400 an offer that is not SDP or has nothing we take (H.264 in packetization
//! mode 1, Opus), 403 a wrong or missing key (or a refusal by the hook), 409 a stream that
//! has a publisher, 415 not `application/sdp`, 503 too many WebRTC sessions or the key
//! cannot be checked now. The media goes over the node's WebRTC UDP socket
//! ([`crate::webrtc`]); this is only the signalling.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use media::http::RequestHead;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::info;

use super::respond::{connection_header, Reply, CORS};
use super::HttpError;
use crate::metrics::{Metrics, Protocol};
use crate::webrtc::OpenError;
use crate::{Node, PublishRequest};

/// Answer a WHIP offer (`body`) to publish to `app` with the channel key of the path or,
/// without one, of the bearer token.
pub(super) async fn offer(
    socket: &mut TcpStream,
    peer: SocketAddr,
    request: &RequestHead,
    (app, path_key): (&str, Option<&str>),
    body: Bytes,
    node: &Arc<Node>,
) -> Result<(), HttpError> {
    let keep = request.keep_alive;
    let reply = match admit(socket, peer, request, (app, path_key), body, node).await {
        Ok(created) => {
            let head = format!(
                "HTTP/1.1 201 Created\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\
                 Location: {}\r\n{CORS}Access-Control-Expose-Headers: Location\r\n\
                 Cache-Control: no-cache\r\n{}\r\n",
                created.answer.len(),
                created.location,
                connection_header(keep),
            );
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(created.answer.as_bytes()).await?;
            return Ok(());
        }
        Err(reply) => reply,
    };
    reply.write(socket, false, keep).await
}

/// A publish begun.
struct Created {
    answer: String,
    location: String,
}

/// The checks, in the order that costs least: the request, the offer (nothing is claimed
/// for a bad one), the role, the session.
async fn admit(
    socket: &TcpStream,
    peer: SocketAddr,
    request: &RequestHead,
    (app, path_key): (&str, Option<&str>),
    body: Bytes,
    node: &Arc<Node>,
) -> Result<Created, Reply> {
    let Some(webrtc) = &node.webrtc else {
        return Err(Reply::not_found("WebRTC"));
    };
    let refused = |status, why: &str| {
        Metrics::add(&node.metrics.connections_rejected_total, 1);
        info!(%peer, %app, status, "whip publish refused: {why}");
        Reply::text(status, format!("{why}\n"))
    };
    if !request
        .content_type
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(refused(
            "415 Unsupported Media Type",
            "a WHIP offer is Content-Type: application/sdp",
        ));
    }
    let key = match (path_key, request.bearer_token.as_deref()) {
        (Some(path), Some(bearer)) if path != bearer => {
            return Err(refused(
                "403 Forbidden",
                "the path's key and the bearer token differ",
            ))
        }
        (Some(key), _) | (None, Some(key)) => key,
        (None, None) => {
            return Err(refused(
                "403 Forbidden",
                "no channel key: POST /APP/KEY/whip, or send it as Authorization: Bearer KEY",
            ))
        }
    };
    if node.is_shutting_down() {
        return Err(Reply::text("503 Service Unavailable", "shutting down\n"));
    }
    if !node.serves_app(app) {
        return Err(refused("404 Not Found", "unknown app"));
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return Err(refused("400 Bad Request", "the offer is not UTF-8"));
    };
    let via = socket
        .local_addr()
        .map_err(|_| Reply::text("500 Internal Server Error", "no local address\n"))?
        .ip();
    let answer = match webrtc.answer_publisher(offer, peer.ip(), via) {
        Ok(answer) => answer,
        Err(e @ OpenError::TooMany(_)) => {
            return Err(refused("503 Service Unavailable", &e.to_string()))
        }
        Err(e) => return Err(refused("400 Bad Request", &e.to_string())),
    };
    let publish = PublishRequest {
        app,
        name: key,
        query: request.query(),
        peer,
        protocol: Protocol::WebRtc,
    };
    let publishing = match node.role.publish(&publish).await {
        Ok(publishing) => publishing,
        Err(refusal) => {
            let status = if refusal.taken {
                "409 Conflict"
            } else if refusal.code == "NetStream.Publish.Failed" {
                "503 Service Unavailable"
            } else {
                "403 Forbidden"
            };
            return Err(refused(status, &refusal.description));
        }
    };
    let location = format!("/{}/whip", publishing.publisher.name());
    let sdp = answer.sdp.clone();
    let id = webrtc.start_publish(answer, publishing, peer, node.clone());
    Ok(Created {
        answer: sdp,
        location: format!("{location}/{id}"),
    })
}

/// End WHIP session `session` of `stream` (a DELETE of its resource).
pub(super) fn delete(stream: Option<String>, session: &str, node: &Node) -> Reply {
    let closed = match (&node.webrtc, stream) {
        (Some(webrtc), Some(key)) => webrtc.close_publish(&key, session),
        _ => false,
    };
    if closed {
        Reply::text("200 OK", "publish ended\n")
    } else {
        Reply::not_found("session")
    }
}
