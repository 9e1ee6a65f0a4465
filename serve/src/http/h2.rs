//! HTTP/2 over cleartext TCP (h2c with prior knowledge) on the player port, beside
//! HTTP/1.1: a connection that starts with the HTTP/2 preface is served by hyper. Every
//! answer that is one body is the same [`Reply`] HTTP/1.1 clients get; it is what LL-HLS
//! players multiplex (a blocking playlist reload and the hinted part at once, on one
//! connection). Each request is a task, so held blocking reloads cost memory, not threads.
//! The continuous streams stay on HTTP/1.1, where the fan-out writes to the socket itself.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE,
    USER_AGENT,
};
use hyper::server::conn::http2;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use media::http::{RequestHead, MAX_USER_AGENT};
use tokio::net::TcpStream;

use super::respond::Reply;
use super::routes::route;
use super::{refuse_play, reply, HttpError};
use crate::Node;

/// Requests one connection may have open at once (blocking reloads included).
const MAX_STREAMS: u32 = 256;
/// A silent connection is pinged this often and closed if the ping is not answered in time.
const PING_INTERVAL: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    node: Arc<Node>,
) -> Result<(), HttpError> {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let node = node.clone();
        async move { Ok::<_, Infallible>(answer(request, peer, &node).await) }
    });
    http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS)
        .serve_connection(TokioIo::new(socket), service)
        .await?;
    Ok(())
}

async fn answer(
    request: Request<Incoming>,
    peer: SocketAddr,
    node: &Arc<Node>,
) -> Response<Full<Bytes>> {
    let user_agent = request
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        // Visible ASCII only (to_str): any index is a character boundary.
        .map(|ua| ua[..ua.len().min(MAX_USER_AGENT)].to_owned())
        .unwrap_or_default();
    let head = RequestHead {
        method: request.method().as_str().to_owned(),
        target: request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        keep_alive: true,
        http10: false,
        user_agent,
        range: None,
        websocket_key: None,
        // Over HTTP/2 nothing reads a body: WHEP is answered over HTTP/1.1 only.
        content_length: 0,
        content_type: String::new(),
        bearer_token: None,
    };
    let head_only = head.method == "HEAD";
    let route = route(&head.method, head.path());
    let reply = match (
        node.request_limits.take(peer.ip()),
        refuse_play(&route, &head, peer, node),
    ) {
        (Err(wait), _) => Reply::too_many(wait),
        (Ok(()), Some(refused)) => refused,
        (Ok(()), None) => reply(route, &head, peer, node).await,
    };
    let length = reply.body.len();
    let status = StatusCode::from_u16(reply.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if head_only { Bytes::new() } else { reply.body };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(reply.cache_control));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}
