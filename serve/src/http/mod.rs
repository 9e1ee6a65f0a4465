//! The player HTTP port: HTTP-FLV streams, HLS playlists and segments, `/metrics`,
//! `/healthz` and `/readyz`.
//!
//! A small HTTP/1.1 server of our own rather than a framework: an FLV viewer is handed to
//! its stream's fan-out, which writes shared frame buffers (each already an HTTP chunk)
//! straight to the socket with vectored writes. Request heads are parsed by
//! [`media::http`]; [`routes`] maps each to a handler here. Every answer that is one body
//! (HLS playlists, segments and parts, health, metrics) is a [`Reply`], which HTTP/2
//! clients get too ([`h2`]).

mod console;
mod files;
mod flv;
mod h2;
mod muxed;
mod respond;
pub mod routes;
mod whep;
mod whip;

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
use self::respond::{connection_header, respond, Reply, CORS};
use self::routes::{route, Route};
use crate::admission;
use crate::fanout::EgressError;
use crate::hls::sessions::SessionKey;
use crate::hls::{NoPlaylist, PlaylistRefusal};
use crate::io::starts_as_http2;
use crate::metrics::{GaugeGuard, Metrics, Protocol};
use crate::tls::{starts_as_tls, Alpn};
use crate::Node;

const MAX_HEAD: usize = 8 * 1024;
/// The largest request body read (a WHEP offer is a few KiB of SDP).
const MAX_BODY: u64 = 64 * 1024;
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
    #[error("http/2: {0}")]
    Http2(#[from] hyper::Error),
}

impl HttpError {
    /// Whether the connection was closed for what the peer did wrong (a bad request, a
    /// stall), rather than ended by the peer.
    fn is_rejection(&self) -> bool {
        match self {
            HttpError::Head(_) | HttpError::Timeout => true,
            HttpError::Egress(e) => e.is_stall(),
            HttpError::Io(_) | HttpError::Http2(_) => false,
        }
    }
}

async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    node: &Arc<Node>,
) -> Result<(), HttpError> {
    let _ = socket.set_nodelay(true);
    // With a certificate, the port takes HTTPS too: told apart by the first byte.
    if let Some(tls) = &node.tls {
        match tokio::time::timeout(FIRST_REQUEST_TIMEOUT, starts_as_tls(&socket)).await {
            Ok(Ok(true)) => socket = tls.terminate(socket, peer, Alpn::Http).await?,
            Ok(Ok(false)) => {}
            Ok(Err(_)) => return Ok(()),
            Err(_) => return Err(HttpError::Timeout),
        }
    }
    match tokio::time::timeout(FIRST_REQUEST_TIMEOUT, starts_as_http2(&socket)).await {
        Ok(Ok(true)) => return h2::serve(socket, peer, node.clone()).await,
        Ok(Ok(false)) => {}
        Ok(Err(_)) => return Ok(()),
        Err(_) => return Err(HttpError::Timeout),
    }
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
        // The body comes off the connection whatever the route, so that the next request
        // starts where it should; a body too large is refused and the connection closed.
        if request.content_length > MAX_BODY {
            let why = format!("request bodies are at most {MAX_BODY} bytes\n");
            Reply::text("413 Content Too Large", why)
                .write(&mut socket, false, false)
                .await?;
            drain_before_close(&mut socket).await;
            return Err(HeadError::Malformed("request body too large").into());
        }
        let body = match tokio::time::timeout(
            FIRST_REQUEST_TIMEOUT,
            read_body(&mut socket, &mut buf, request.content_length as usize),
        )
        .await
        {
            Ok(body) => body?,
            Err(_) => return Err(HttpError::Timeout),
        };
        if let Err(wait) = node.request_limits.take(peer.ip()) {
            Reply::too_many(wait)
                .write(&mut socket, request.method == "HEAD", request.keep_alive)
                .await?;
            if request.keep_alive {
                continue;
            }
            return Ok(());
        }
        match handle(socket, peer, &request, body, node).await? {
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
    body: Bytes,
    node: &Arc<Node>,
) -> Result<Option<TcpStream>, HttpError> {
    let head_only = request.method == "HEAD";
    let keep = request.keep_alive;
    let route = route(&request.method, request.path());
    if let Some(refused) = refuse_play(&route, request, peer, node) {
        refused.write(&mut socket, head_only, keep).await?;
        return Ok(Some(socket));
    }
    // A play that takes the connection asks the on_play hook first (an HLS player asks
    // once per session, see `Hls::ask_to_play`), and tells on_stop when it ends.
    let mut stop_notice = None;
    if let Some((stream, protocol)) = continuous_play(&route, request) {
        match node
            .ask_to_play(stream, request.query(), peer, protocol)
            .await
        {
            Ok(notice) => stop_notice = notice,
            Err(refused) => {
                let refused = Reply::text("403 Forbidden", format!("{refused}\n"));
                refused.write(&mut socket, head_only, keep).await?;
                return Ok(Some(socket));
            }
        }
    }
    let served = serve_route(socket, peer, (request, body), route, node).await;
    // The socket came back: it was not a play after all (no such stream).
    if let (Ok(Some(_)), Some(notice)) = (&served, stop_notice) {
        notice.disarm();
    }
    served
}

/// A play of a continuous stream (HTTP-FLV, WebSocket-FLV, HTTP-TS, HTTP-fMP4) by a
/// player: its stream and protocol. Edges pulling a stream are not players.
fn continuous_play<'a>(route: &'a Route<'_>, request: &RequestHead) -> Option<(&'a str, Protocol)> {
    if request.method == "HEAD" {
        return None;
    }
    let (stream, protocol) = match route {
        Route::Flv { stream } if request.query_has(MARKS_QUERY) => return None,
        Route::Flv { stream } if request.websocket_key.is_some() => {
            (stream, Protocol::WebSocketFlv)
        }
        Route::Flv { stream } => (stream, Protocol::HttpFlv),
        Route::Ts { stream } => (stream, Protocol::HttpTs),
        Route::Mp4 { stream } => (stream, Protocol::HttpFmp4),
        _ => return None,
    };
    Some((stream.as_deref()?, protocol))
}

/// Answer a request that may go on: the route's handler.
async fn serve_route(
    mut socket: TcpStream,
    peer: SocketAddr,
    (request, body): (&RequestHead, Bytes),
    route: Route<'_>,
    node: &Arc<Node>,
) -> Result<Option<TcpStream>, HttpError> {
    let head_only = request.method == "HEAD";
    let keep = request.keep_alive;
    match route {
        Route::Preflight => {
            // `*` does not cover Authorization (the Fetch standard): a WHIP client in a
            // page sends its key as a bearer token.
            let head = format!(
                "HTTP/1.1 204 No Content\r\n{CORS}Access-Control-Allow-Methods: GET, HEAD, POST, DELETE, OPTIONS\r\n\
                 Access-Control-Allow-Headers: Authorization, *\r\nAccess-Control-Max-Age: 86400\r\nContent-Length: 0\r\n{}\r\n",
                connection_header(keep)
            );
            socket.write_all(head.as_bytes()).await?;
        }
        Route::Flv { stream } => {
            // An edge pulling the stream also wants to know where HLS segments begin.
            let marks = request.query_has(MARKS_QUERY);
            let audience = if marks {
                Audience::Relay
            } else {
                Audience::Viewer
            };
            if let Some(key) = stream
                .as_deref()
                .filter(|key| marks && !node.role.owns(key))
            {
                // 421: not the node to ask; the edge looks the owner up again.
                let why = format!("{key} is not owned here now\n");
                Reply::text("421 Misdirected Request", why)
                    .write(&mut socket, head_only, keep)
                    .await?;
                return Ok(Some(socket));
            }
            let join = match stream {
                Some(key) => node.join(&key, audience).await,
                None => None,
            };
            let Some(join) = join else {
                Reply::not_found("stream")
                    .write(&mut socket, head_only, keep)
                    .await?;
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
        Route::Whep { stream } => {
            whep::offer(&mut socket, peer, request, stream, body, node).await?
        }
        Route::WhepSession { stream, session } => {
            whep::delete(stream, session, node)
                .write(&mut socket, false, keep)
                .await?
        }
        Route::Whip { app, key } => {
            whip::offer(&mut socket, peer, request, (app, key), body, node).await?
        }
        Route::WhipSession { stream, session } => {
            whip::delete(stream, session, node)
                .write(&mut socket, false, keep)
                .await?
        }
        Route::Recording { file } => match (file, &node.config.record_dir) {
            (Some(file), Some(dir)) => {
                files::serve_recording(&mut socket, dir, file, request, head_only, keep).await?
            }
            _ => {
                Reply::not_found("recording")
                    .write(&mut socket, head_only, keep)
                    .await?
            }
        },
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
        one_body => {
            let reply = reply(one_body, request, peer, node).await;
            reply.write(&mut socket, head_only, keep).await?;
        }
    }
    Ok(Some(socket))
}

/// With a play secret, a play without a valid token for its stream is refused (403, with
/// the reason).
fn refuse_play(
    route: &Route<'_>,
    request: &RequestHead,
    peer: SocketAddr,
    node: &Node,
) -> Option<Reply> {
    let stream = route.played_stream()?;
    let refused = node
        .authorize_play(stream, request.query(), peer.ip())
        .err()?;
    Some(Reply::text("403 Forbidden", format!("{refused}\n")))
}

/// The answer to a request whose answer is one body, for HTTP/1.1 and HTTP/2 alike. The
/// continuous streams and recordings take the connection; over HTTP/2 they are refused.
async fn reply(
    route: Route<'_>,
    request: &RequestHead,
    peer: SocketAddr,
    node: &Arc<Node>,
) -> Reply {
    let client = |key: &str| SessionKey::new(key, peer.ip(), &request.user_agent);
    // An HLS player asks the on_play hook at its first playlist.
    if let Route::Playlist {
        stream: Some(key), ..
    }
    | Route::CmafPlaylist { stream: Some(key) } = &route
    {
        let query = request.query();
        if let Err(refused) = node
            .hls
            .ask_to_play(node, key, &client(key), query, peer)
            .await
        {
            return Reply::text("403 Forbidden", format!("{refused}\n"));
        }
    }
    match route {
        Route::Health => Reply::text("200 OK", "ok\n"),
        // Ready while accepting work; a draining node says no so balancers move on.
        Route::Ready if node.is_shutting_down() => {
            Reply::text("503 Service Unavailable", "shutting down\n")
        }
        Route::Ready => Reply::text("200 OK", "ready\n"),
        Route::Metrics => {
            let refused = node.rtmp_admission.refused() + node.http_admission.refused();
            let mut body = node.metrics.render(&node.hub, refused);
            node.role.metrics(&mut body);
            node.hooks.metrics(&mut body);
            Reply {
                content_type: "text/plain; version=0.0.4",
                ..Reply::text("200 OK", body)
            }
        }
        Route::Playlist { stream, room } => {
            let playlist = match stream {
                Some(key) => {
                    // Segment URIs carry the player's token: they need it too.
                    let token = node.token_to_carry(request.query());
                    let uri = |sequence: u64| match token {
                        Some(token) => format!("{room}/{sequence}.ts?token={token}"),
                        None => format!("{room}/{sequence}.ts"),
                    };
                    node.hls.playlist(node, &key, &client(&key), uri).await
                }
                None => Err(NoPlaylist::NotLive),
            };
            playlist_reply(playlist.map(Bytes::from).map_err(PlaylistRefusal::No))
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
                    let wait_for = msn.map(|msn| (msn, part));
                    let client = client(&key);
                    node.hls
                        .cmaf_playlist(node, &key, &client, wait_for, skip)
                        .await
                }
                None => Err(PlaylistRefusal::No(NoPlaylist::NotLive)),
            };
            let playlist = match node.token_to_carry(request.query()) {
                Some(token) => playlist
                    .map(|text| media::cmaf::with_query(&text, &format!("token={token}")).into()),
                None => playlist,
            };
            playlist_reply(playlist)
        }
        Route::CmafFile { stream, name } => {
            let file = match stream {
                Some(key) => node.hls.cmaf_file(node, &key, name, client(&key)).await,
                None => None,
            };
            match file {
                Some((content_type, body)) => Reply::immutable(content_type, body),
                None => Reply::not_found("file"),
            }
        }
        Route::Segment { stream } => {
            let segment = stream
                .and_then(|(key, sequence)| node.hls.segment(node, &key, sequence, client(&key)));
            match segment {
                Some(segment) => Reply::immutable("video/mp2t", segment.data.clone()),
                None => Reply::not_found("segment"),
            }
        }
        Route::Flv { .. }
        | Route::Ts { .. }
        | Route::Mp4 { .. }
        | Route::Recording { .. }
        | Route::Whep { .. }
        | Route::WhepSession { .. }
        | Route::Whip { .. }
        | Route::WhipSession { .. } => Reply::text(
            "505 HTTP Version Not Supported",
            "continuous streams, recordings, WHEP and WHIP are served over HTTP/1.1\n",
        ),
        Route::Preflight | Route::MethodNotAllowed => {
            Reply::text("405 Method Not Allowed", "method not allowed\n")
        }
        Route::NotFound => Reply::not_found("path"),
        Route::Console(page) => console::page(page, node.config.console_assets.as_deref()),
        Route::ConsoleFile(name) => console::own_file(name),
        Route::ConsoleLibrary(name) => {
            console::library(name, node.config.console_assets.as_deref()).await
        }
        Route::Streams => console::streams(node),
    }
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

/// Read a body of `length` bytes (what the head's reading left in `buf` first). Bounded
/// by the caller ([`MAX_BODY`]) and by its deadline.
async fn read_body(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
    length: usize,
) -> Result<Bytes, HttpError> {
    while buf.len() < length {
        if socket.read_buf(buf).await? == 0 {
            return Err(HeadError::Malformed("truncated request body").into());
        }
    }
    Ok(buf.split_to(length).freeze())
}

/// A playlist, or why there is none, in the status a player understands.
fn playlist_reply(playlist: Result<Bytes, PlaylistRefusal>) -> Reply {
    match playlist {
        // Short-lived: a live playlist changes every segment.
        Ok(body) => Reply {
            status: "200 OK",
            content_type: "application/vnd.apple.mpegurl",
            cache_control: "max-age=1",
            body,
        },
        Err(PlaylistRefusal::No(NoPlaylist::NotLive)) => Reply::not_found("stream"),
        // The stream is there, HLS cannot carry it: say why.
        Err(PlaylistRefusal::No(NoPlaylist::Cannot(why))) => Reply::text(
            "503 Service Unavailable",
            format!("stream cannot be packaged as HLS: {why}\n"),
        ),
        Err(PlaylistRefusal::TooFarAhead) => Reply::text(
            "400 Bad Request",
            "_HLS_msn is more than two segments ahead\n",
        ),
        Err(PlaylistRefusal::NotInTime) => Reply::text(
            "503 Service Unavailable",
            "the segment or part asked for did not come in time\n",
        ),
    }
}
