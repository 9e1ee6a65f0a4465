//! The player HTTP port: HTTP-FLV streams, HLS playlists and segments, `/metrics`,
//! `/healthz` and `/readyz`.
//!
//! A small HTTP/1.1 server of our own rather than a framework: an FLV viewer is handed to
//! its stream's fan-out, which writes shared frame buffers (each already an HTTP chunk)
//! straight to the socket with vectored writes. Request heads are parsed by
//! [`media::http`]; [`routes`] maps each to a handler here.

mod files;
mod flv;
mod muxed;
mod respond;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use media::http::{take_head, HeadError, RequestHead};
use media::hub::Audience;
use media::outbox::FlvFraming;
use media::segment::MARKS_QUERY;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use self::flv::{flv_response_head, stream_flv};
use self::muxed::{serve_muxed, Muxed};
use self::respond::{connection_header, not_found, respond, respond_cached, CORS};
use self::routes::{route, Route};
use crate::admission;
use crate::fanout::EgressError;
use crate::hls::sessions::SessionKey;
use crate::hls::{NoPlaylist, PlaylistRefusal};
use crate::metrics::{GaugeGuard, Metrics};
use crate::Node;

const MAX_HEAD: usize = 8 * 1024;
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REQUESTS_PER_CONNECTION: usize = 1000;
/// How long, and how many bytes, a refused request may still send before the socket closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let (socket, peer, admitted) = node
            .http_admission
            .accept(&listener, admission::refuse_http)
            .await;
        let node = node.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let _open = GaugeGuard::new(node.metrics.clone(), |m| &m.http_connections);
            Metrics::add(&node.metrics.http_connections_total, 1);
            match connection(socket, peer, &node).await {
                Ok(()) => {}
                Err(e) if e.is_rejection() => {
                    Metrics::add(&node.metrics.connections_rejected_total, 1);
                    info!(%peer, error = %e, "http connection rejected");
                }
                Err(e) => debug!(%peer, error = %e, "http connection closed"),
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("no request in time")]
    Timeout,
    #[error(transparent)]
    Egress(#[from] EgressError),
}

impl HttpError {
    /// Whether the connection was closed for what the peer did wrong (a bad request, a
    /// stall), rather than ended by the peer.
    fn is_rejection(&self) -> bool {
        match self {
            HttpError::Head(_) | HttpError::Timeout => true,
            HttpError::Egress(e) => e.is_stall(),
            HttpError::Io(_) => false,
        }
    }
}

async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    node: &Arc<Node>,
) -> Result<(), HttpError> {
    let _ = socket.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(1024);
    for served in 0..MAX_REQUESTS_PER_CONNECTION {
        let wait = if served == 0 {
            FIRST_REQUEST_TIMEOUT
        } else {
            KEEP_ALIVE_TIMEOUT
        };
        let request = match tokio::time::timeout(wait, read_request(&mut socket, &mut buf)).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(HttpError::Head(e))) => {
                let why = format!("{e}\n");
                respond(
                    &mut socket,
                    e.status(),
                    "text/plain",
                    why.as_bytes(),
                    false,
                    false,
                )
                .await?;
                drain_before_close(&mut socket).await;
                return Err(e.into());
            }
            Ok(Err(e)) => return Err(e),
            // An idle keep-alive connection simply ends.
            Err(_) if served > 0 => return Ok(()),
            Err(_) => return Err(HttpError::Timeout),
        };
        match handle(socket, peer, &request, node).await? {
            Some(returned) if request.keep_alive => socket = returned,
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Answer one request. Gives the socket back for the next request, unless the answer was a
/// stream (which took it) or closes the connection.
async fn handle(
    mut socket: TcpStream,
    peer: SocketAddr,
    request: &RequestHead,
    node: &Arc<Node>,
) -> Result<Option<TcpStream>, HttpError> {
    let head_only = request.method == "HEAD";
    let keep = request.keep_alive;
    match route(&request.method, request.path()) {
        Route::Preflight => {
            let head = format!(
                "HTTP/1.1 204 No Content\r\n{CORS}Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n\
                 Access-Control-Allow-Headers: *\r\nAccess-Control-Max-Age: 86400\r\nContent-Length: 0\r\n{}\r\n",
                connection_header(keep)
            );
            socket.write_all(head.as_bytes()).await?;
        }
        Route::Health => {
            respond(
                &mut socket,
                "200 OK",
                "text/plain",
                b"ok\n",
                head_only,
                keep,
            )
            .await?;
        }
        // Ready while accepting work; a draining node says no so balancers move on.
        Route::Ready => {
            let (status, body): (&str, &[u8]) = if node.is_shutting_down() {
                ("503 Service Unavailable", b"shutting down\n")
            } else {
                ("200 OK", b"ready\n")
            };
            respond(&mut socket, status, "text/plain", body, head_only, keep).await?;
        }
        Route::Metrics => {
            let refused = node.rtmp_admission.refused() + node.http_admission.refused();
            let mut body = node.metrics.render(&node.hub, refused);
            node.role.metrics(&mut body);
            respond(
                &mut socket,
                "200 OK",
                "text/plain; version=0.0.4",
                body.as_bytes(),
                head_only,
                keep,
            )
            .await?;
        }
        Route::Flv { stream } => {
            // An edge pulling the stream also wants to know where HLS segments begin.
            let marks = request.query_has(MARKS_QUERY);
            let audience = if marks {
                Audience::Relay
            } else {
                Audience::Viewer
            };
            let join = match stream {
                Some(key) => node.join(&key, audience).await,
                None => None,
            };
            let Some(join) = join else {
                not_found(&mut socket, b"stream not found\n", head_only, keep).await?;
                return Ok(Some(socket));
            };
            let framing = match &request.websocket_key {
                Some(_) if !head_only => FlvFraming::WebSocket,
                _ if request.http10 => FlvFraming::UntilClose,
                _ => FlvFraming::Chunked,
            };
            let head = flv_response_head(framing, request.websocket_key.as_deref());
            if head_only {
                socket.write_all(head.as_bytes()).await?;
                return Ok(None);
            }
            stream_flv(socket, peer, join, (framing, head), marks, node).await?;
            return Ok(None);
        }
        Route::Ts { stream } => {
            return serve_muxed(socket, peer, request, stream, Muxed::Ts, node).await
        }
        Route::Mp4 { stream } => {
            return serve_muxed(socket, peer, request, stream, Muxed::Fmp4, node).await
        }
        Route::Playlist { stream, room } => {
            let playlist = match stream {
                Some(key) => {
                    let uri = |sequence: u64| format!("{room}/{sequence}.ts");
                    let client = SessionKey::new(&key, peer.ip(), &request.user_agent);
                    node.hls.playlist(node, &key, &client, uri).await
                }
                None => Err(NoPlaylist::NotLive),
            };
            respond_playlist(
                &mut socket,
                playlist.map(Bytes::from).map_err(PlaylistRefusal::No),
                head_only,
                keep,
            )
            .await?;
        }
        Route::CmafPlaylist { stream } => {
            let query = |name: &str| {
                request.query().split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == name).then_some(v)
                })
            };
            let msn = query("_HLS_msn").and_then(|v| v.parse::<u64>().ok());
            let part = query("_HLS_part").and_then(|v| v.parse::<usize>().ok());
            let skip = query("_HLS_skip").is_some_and(|v| v == "YES" || v == "v2");
            let playlist = match stream {
                Some(key) => {
                    let client = SessionKey::new(&key, peer.ip(), &request.user_agent);
                    let wait_for = msn.map(|msn| (msn, part));
                    node.hls
                        .cmaf_playlist(node, &key, &client, wait_for, skip)
                        .await
                }
                None => Err(PlaylistRefusal::No(NoPlaylist::NotLive)),
            };
            respond_playlist(&mut socket, playlist, head_only, keep).await?;
        }
        Route::CmafFile { stream, name } => {
            let file = match stream {
                Some(key) => {
                    let client = SessionKey::new(&key, peer.ip(), &request.user_agent);
                    node.hls.cmaf_file(node, &key, name, client).await
                }
                None => None,
            };
            match file {
                Some((content_type, bytes)) => {
                    respond_cached(
                        &mut socket,
                        "200 OK",
                        content_type,
                        "public, max-age=86400, immutable",
                        &bytes,
                        head_only,
                        keep,
                    )
                    .await?
                }
                None => not_found(&mut socket, b"not found\n", head_only, keep).await?,
            }
        }
        Route::Segment { stream } => {
            let segment = stream.and_then(|(key, sequence)| {
                let client = SessionKey::new(&key, peer.ip(), &request.user_agent);
                node.hls.segment(node, &key, sequence, client)
            });
            match segment {
                // A segment URL is never reused for other content: cache it for long.
                Some(segment) => {
                    respond_cached(
                        &mut socket,
                        "200 OK",
                        "video/mp2t",
                        "public, max-age=86400, immutable",
                        &segment.data,
                        head_only,
                        keep,
                    )
                    .await?
                }
                None => not_found(&mut socket, b"segment not found\n", head_only, keep).await?,
            }
        }
        Route::Recording { file } => match (file, &node.config.record_dir) {
            (Some(file), Some(dir)) => {
                files::serve_recording(&mut socket, dir, file, request, head_only, keep).await?
            }
            _ => not_found(&mut socket, b"recording not found\n", head_only, keep).await?,
        },
        Route::NotFound => not_found(&mut socket, b"not found\n", head_only, keep).await?,
        Route::MethodNotAllowed => {
            respond(
                &mut socket,
                "405 Method Not Allowed",
                "text/plain",
                b"method not allowed\n",
                false,
                false,
            )
            .await?;
            return Ok(None);
        }
    }
    Ok(Some(socket))
}

/// After answering a request we will not read, let the client finish sending before the
/// socket closes: closing with unread bytes makes the kernel reset the connection, and the
/// reset can destroy the answer before the client has read it. Bounded in time and bytes.
async fn drain_before_close(socket: &mut TcpStream) {
    let _ = socket.shutdown().await;
    let mut sink = [0u8; 16 * 1024];
    let mut left = DRAIN_LIMIT;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while left > 0 {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Read one request head. `Ok(None)` when the peer closed before sending anything.
async fn read_request(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<Option<RequestHead>, HttpError> {
    loop {
        if let Some(head) = take_head(buf, MAX_HEAD)? {
            return Ok(Some(head));
        }
        if socket.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Malformed("truncated request").into())
            };
        }
    }
}

/// A playlist, or why there is none, in the status a player understands.
async fn respond_playlist(
    socket: &mut TcpStream,
    playlist: Result<Bytes, PlaylistRefusal>,
    head_only: bool,
    keep: bool,
) -> Result<(), HttpError> {
    let (status, body) = match playlist {
        // Short-lived: a live playlist changes every segment.
        Ok(body) => {
            let kind = "application/vnd.apple.mpegurl";
            respond_cached(socket, "200 OK", kind, "max-age=1", &body, head_only, keep).await?;
            return Ok(());
        }
        Err(PlaylistRefusal::No(NoPlaylist::NotLive)) => {
            not_found(socket, b"stream not found\n", head_only, keep).await?;
            return Ok(());
        }
        // The stream is there, HLS cannot carry it: say why.
        Err(PlaylistRefusal::No(NoPlaylist::Cannot(why))) => (
            "503 Service Unavailable",
            format!("stream cannot be packaged as HLS: {why}\n"),
        ),
        Err(PlaylistRefusal::TooFarAhead) => (
            "400 Bad Request",
            "_HLS_msn is more than two segments ahead\n".to_owned(),
        ),
        Err(PlaylistRefusal::NotInTime) => (
            "503 Service Unavailable",
            "the segment or part asked for did not come in time\n".to_owned(),
        ),
    };
    respond(
        socket,
        status,
        "text/plain",
        body.as_bytes(),
        head_only,
        keep,
    )
    .await?;
    Ok(())
}
