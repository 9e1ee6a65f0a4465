//! The player HTTP port: HTTP-FLV streams, HLS playlists and segments, `/metrics` and
//! `/healthz`.
//!
//! A small HTTP/1.1 server of our own rather than a framework: an FLV viewer is handed to
//! its stream's fan-out, which writes shared frame buffers (each already an HTTP chunk)
//! straight to the socket with vectored writes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use media::flv;
use media::frame::Tracks;
use media::hub::Join;
use media::outbox::{FlvFraming, Format};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::egress::{EgressError, Pump};
use crate::metrics::{GaugeGuard, Metrics};
use crate::{read_some, stream_key, write_all, Node};

const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REQUESTS_PER_CONNECTION: usize = 1000;

const CORS: &str = "Access-Control-Allow-Origin: *\r\n";

pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _open = GaugeGuard::new(node.metrics.clone(), |m| &m.http_connections);
            Metrics::add(&node.metrics.http_connections_total, 1);
            if let Err(e) = connection(socket, peer, &node).await {
                Metrics::add(&node.metrics.connections_rejected_total, 1);
                debug!(%peer, error = %e, "http connection closed");
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head over {MAX_HEAD} bytes")]
    TooLarge,
    #[error(transparent)]
    Egress(#[from] EgressError),
}

struct Request {
    method: String,
    path: String,
    keep_alive: bool,
    /// An HTTP/1.0 client, which does not understand chunked transfer encoding.
    http10: bool,
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
            Ok(Err(HttpError::Malformed(why))) => {
                respond(
                    &mut socket,
                    "400 Bad Request",
                    "text/plain",
                    why.as_bytes(),
                    false,
                    false,
                )
                .await?;
                return Err(HttpError::Malformed(why));
            }
            Ok(Err(e)) => return Err(e),
            // An idle keep-alive connection simply ends.
            Err(_) if served > 0 => return Ok(()),
            Err(_) => return Err(HttpError::Malformed("no request in time")),
        };
        let head_only = request.method == "HEAD";
        let path = request.path.split('?').next().unwrap_or("");
        let keep = request.keep_alive;
        match (request.method.as_str(), path) {
            ("OPTIONS", _) => {
                let head = format!(
                    "HTTP/1.1 204 No Content\r\n{CORS}Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n\
                     Access-Control-Allow-Headers: *\r\nAccess-Control-Max-Age: 86400\r\nContent-Length: 0\r\n{}\r\n",
                    connection_header(keep)
                );
                socket.write_all(head.as_bytes()).await?;
            }
            ("GET" | "HEAD", "/healthz") => {
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
            ("GET" | "HEAD", "/readyz") => {
                let (status, body): (&str, &[u8]) = if node.is_shutting_down() {
                    ("503 Service Unavailable", b"shutting down\n")
                } else {
                    ("200 OK", b"ready\n")
                };
                respond(&mut socket, status, "text/plain", body, head_only, keep).await?;
            }
            ("GET" | "HEAD", "/metrics") => {
                let body = node.metrics.render(&node.hub);
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
            ("GET" | "HEAD", p) if p.ends_with(".flv") => {
                let join = match flv_stream_key(p) {
                    Some(key) => node.join(&key).await,
                    None => None,
                };
                let Some(join) = join else {
                    not_found(&mut socket, b"stream not found\n", head_only, keep).await?;
                    if keep {
                        continue;
                    }
                    return Ok(());
                };
                let framing = if request.http10 {
                    FlvFraming::UntilClose
                } else {
                    FlvFraming::Chunked
                };
                if head_only {
                    let head = flv_response_head(framing);
                    socket.write_all(head.as_bytes()).await?;
                    return Ok(());
                }
                // An edge pulling the stream also wants to know where HLS segments begin.
                let marks = request.path.contains(SEGMENT_MARKS_QUERY);
                return stream_flv(socket, peer, join, framing, marks, node).await;
            }
            ("GET" | "HEAD", p) if p.ends_with(".m3u8") => {
                let playlist = match hls_stream(p, ".m3u8") {
                    Some((key, room)) => {
                        let uri = |sequence: u64| format!("{room}/{sequence}.ts");
                        node.hls.playlist(node, &key, uri).await
                    }
                    None => None,
                };
                match playlist {
                    // Short-lived: a live playlist changes every segment.
                    Some(body) => {
                        respond_cached(
                            &mut socket,
                            "200 OK",
                            "application/vnd.apple.mpegurl",
                            "max-age=1",
                            body.as_bytes(),
                            head_only,
                            keep,
                        )
                        .await?
                    }
                    None => not_found(&mut socket, b"stream not found\n", head_only, keep).await?,
                }
            }
            ("GET" | "HEAD", p) if p.ends_with(".ts") => {
                let segment =
                    hls_segment(p).and_then(|(key, sequence)| node.hls.segment(&key, sequence));
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
            ("GET" | "HEAD", _) => {
                not_found(&mut socket, b"not found\n", head_only, keep).await?;
            }
            _ => {
                respond(
                    &mut socket,
                    "405 Method Not Allowed",
                    "text/plain",
                    b"method not allowed\n",
                    false,
                    false,
                )
                .await?;
                return Ok(());
            }
        }
        if !keep {
            return Ok(());
        }
    }
    Ok(())
}

/// `/{app}/{room}.flv` -> the hub's stream key.
fn flv_stream_key(path: &str) -> Option<String> {
    hls_stream(path, ".flv").map(|(key, _)| key)
}

/// `/{app}/{room}{suffix}` -> (stream key, room).
fn hls_stream<'a>(path: &'a str, suffix: &str) -> Option<(String, &'a str)> {
    let rest = path.strip_prefix('/')?.strip_suffix(suffix)?;
    let (app, room) = rest.split_once('/')?;
    Some((stream_key(app, room)?, room))
}

/// `/{app}/{room}/{sequence}.ts` -> (stream key, sequence).
fn hls_segment(path: &str) -> Option<(String, u64)> {
    let rest = path.strip_prefix('/')?.strip_suffix(".ts")?;
    let (stream, sequence) = rest.rsplit_once('/')?;
    let (app, room) = stream.split_once('/')?;
    Some((stream_key(app, room)?, sequence.parse().ok()?))
}

async fn not_found(
    socket: &mut TcpStream,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> Result<(), HttpError> {
    respond(
        socket,
        "404 Not Found",
        "text/plain",
        body,
        head_only,
        keep_alive,
    )
    .await
}

fn connection_header(keep_alive: bool) -> &'static str {
    if keep_alive {
        "Connection: keep-alive\r\n"
    } else {
        "Connection: close\r\n"
    }
}

async fn respond(
    socket: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> Result<(), HttpError> {
    respond_cached(
        socket,
        status,
        content_type,
        "no-cache",
        body,
        head_only,
        keep_alive,
    )
    .await
}

async fn respond_cached(
    socket: &mut TcpStream,
    status: &str,
    content_type: &str,
    cache_control: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> Result<(), HttpError> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{CORS}Cache-Control: {cache_control}\r\n{}\r\n",
        body.len(),
        connection_header(keep_alive)
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    socket.write_all(&out).await?;
    Ok(())
}

/// Read one request head. `Ok(None)` when the peer closed before sending anything.
async fn read_request(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<Option<Request>, HttpError> {
    loop {
        if let Some(end) = find_head_end(buf) {
            let head = buf.split_to(end);
            return parse_head(&head).map(Some);
        }
        if buf.len() >= MAX_HEAD {
            return Err(HttpError::TooLarge);
        }
        if socket.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(HttpError::Malformed("truncated request"))
            };
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_head(head: &[u8]) -> Result<Request, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HttpError::Malformed("unparsable request head")),
    }
    let version = req.version.unwrap_or(0);
    let mut keep_alive = version == 1;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
        let has_body = (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || h.name.eq_ignore_ascii_case("transfer-encoding");
        if has_body {
            return Err(HttpError::Malformed("request bodies are not accepted here"));
        }
    }
    Ok(Request {
        method: req.method.unwrap_or("").to_owned(),
        path: req.path.unwrap_or("").to_owned(),
        keep_alive,
        http10: version == 0,
    })
}

fn flv_response_head(framing: FlvFraming) -> String {
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

/// In an FLV request's query: send each [`SegmentMark`] as a script tag ahead of its frame.
pub const SEGMENT_MARKS_QUERY: &str = "segment_marks=1";

/// Stream a live FLV until the stream ends or the viewer leaves. With `marks`, segment
/// marks go along (for edges; players never ask for them).
async fn stream_flv(
    socket: TcpStream,
    peer: SocketAddr,
    join: Join,
    framing: FlvFraming,
    marks: bool,
    node: &Arc<Node>,
) -> Result<(), HttpError> {
    let _viewer = GaugeGuard::new(node.metrics.clone(), |m| &m.viewers);
    crate::limit_send_buffer(&socket, node.config.viewer_send_buffer);
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
        .attach(join, socket.clone(), format, &node.metrics);
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
    let _ = socket2::SockRef::from(&*socket).shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flv_paths_map_to_stream_keys() {
        assert_eq!(
            flv_stream_key("/live/room1.flv").as_deref(),
            Some("live/room1")
        );
        assert_eq!(flv_stream_key("/live/../x.flv"), None);
        assert_eq!(flv_stream_key("/live/a/b.flv"), None);
        assert_eq!(flv_stream_key("/room.flv"), None);
    }

    #[test]
    fn hls_paths_map_to_streams_and_segments() {
        assert_eq!(
            hls_stream("/live/room.m3u8", ".m3u8"),
            Some(("live/room".into(), "room"))
        );
        assert_eq!(hls_stream("/live/../etc.m3u8", ".m3u8"), None);
        assert_eq!(
            hls_segment("/live/room/1700000000.ts"),
            Some(("live/room".into(), 1_700_000_000))
        );
        assert_eq!(hls_segment("/live/room/x.ts"), None);
        assert_eq!(hls_segment("/live/a/b/1.ts"), None);
        assert_eq!(hls_segment("/live/../1.ts"), None);
    }

    #[test]
    fn request_heads_parse_and_refuse_bodies() {
        let r = parse_head(b"GET /live/a.flv HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.keep_alive),
            ("GET", "/live/a.flv", true)
        );
        let r = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        assert!(parse_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").is_err());
        assert!(parse_head(b"\x00\x01garbage\r\n\r\n").is_err());
    }
}
