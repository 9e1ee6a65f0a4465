//! HTTP/1.x request heads, sans-IO: take one complete head off the front of what a
//! connection has read, or say that more is needed. The player port's server (in `serve`)
//! reads into a buffer and calls [`take_head`] until it yields a head.
//!
//! Only what the player port needs is kept: method, target, keep-alive, HTTP/1.0 or not.
//! A body is taken only with a `Content-Length` (a WHEP offer): the server reads exactly
//! that many bytes, so the next request starts where it should. Chunked bodies are
//! refused: nothing on the player port needs one.
//!
//! [`response`] is the client side, response heads and chunked bodies, for a relay that
//! pulls HTTP-FLV.

use bytes::{Buf, BytesMut};

pub mod response;

/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 32;

/// One parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// The connection stays open after the response (HTTP/1.1 default; `Connection`
    /// header).
    pub keep_alive: bool,
    /// An HTTP/1.0 client, which does not understand chunked transfer encoding.
    pub http10: bool,
    /// The `User-Agent` header, cut to [`MAX_USER_AGENT`] bytes (with the client address,
    /// it tells HLS players apart, whose requests come on any connection).
    pub user_agent: String,
    /// The `Range` header, if any (see [`byte_range`]).
    pub range: Option<String>,
    /// A WebSocket handshake's `Sec-WebSocket-Key`, when the request asks to upgrade to
    /// WebSocket (`Upgrade: websocket`).
    pub websocket_key: Option<String>,
    /// The body's length (`Content-Length`; 0 without one). The server reads it, whatever
    /// the route, before answering.
    pub content_length: u64,
    /// The `Content-Type` header, cut to [`MAX_CONTENT_TYPE`] bytes.
    pub content_type: String,
    /// The token of an `Authorization: Bearer TOKEN` header (how OBS and other WHIP
    /// clients send a stream key); none when longer than [`MAX_BEARER_TOKEN`].
    pub bearer_token: Option<String>,
}

/// The longest `Content-Type` kept (`application/sdp` and its parameters).
pub const MAX_CONTENT_TYPE: usize = 128;

/// The longest bearer token kept (a channel key is far shorter).
pub const MAX_BEARER_TOKEN: usize = 256;

/// The longest `User-Agent` kept.
pub const MAX_USER_AGENT: usize = 256;
/// A `Range` header longer than this is not one we serve (a single range is short).
const MAX_RANGE: usize = 128;

/// A range with no byte of the resource in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// The part of a resource of `len` bytes that a `Range` header asks for, as an inclusive
/// `(first, last)` (RFC 9110, 14.1.2). `Ok(None)`: serve the whole resource (no header, a
/// unit other than bytes, several ranges, or a header that does not parse, which the RFC
/// lets a server ignore). `Err(Unsatisfiable)`: no byte of the resource is in the range
/// (416).
pub fn byte_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // The last `n` bytes.
        (true, _, Some(n)) if n > 0 && len > 0 => Ok(Some((len.saturating_sub(n), len - 1))),
        (true, _, Some(_)) => Err(Unsatisfiable),
        (false, Some(first), _) if first >= len => Err(Unsatisfiable),
        (false, Some(first), None) if last.trim().is_empty() => Ok(Some((first, len - 1))),
        (false, Some(first), Some(last)) if last >= first => Ok(Some((first, last.min(len - 1)))),
        _ => Ok(None),
    }
}

impl RequestHead {
    /// The target's path (before any `?`).
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target, |(path, _)| path)
    }

    /// The target's query (after the `?`; empty without one).
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }

    /// Whether the query has `param` (a `name=value` pair or a bare name) as one of its
    /// `&`-separated parts.
    pub fn query_has(&self, param: &str) -> bool {
        self.query().split('&').any(|part| part == param)
    }
}

/// Why a request head was refused. Each comes with the status that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The request line alone did not fit in the limit.
    #[error("request line over {0} bytes")]
    LineTooLong(usize),
    /// The head (request line and headers) did not fit in the limit.
    #[error("request head over {0} bytes")]
    HeadTooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

impl HeadError {
    /// The HTTP status that answers this error.
    pub fn status(&self) -> &'static str {
        match self {
            HeadError::LineTooLong(_) => "414 URI Too Long",
            HeadError::HeadTooLarge(_) => "431 Request Header Fields Too Large",
            HeadError::Malformed(_) => "400 Bad Request",
        }
    }
}

/// Take one request head off the front of `buf`, whose heads may be at most `max_head`
/// bytes: `Ok(None)` while the head is incomplete (read more and call again), the head once
/// it is complete (its bytes are consumed, what follows stays in `buf`).
pub fn take_head(buf: &mut BytesMut, max_head: usize) -> Result<Option<RequestHead>, HeadError> {
    let end = find_head_end(buf);
    if end.map_or(buf.len() >= max_head, |end| end > max_head) {
        // Which limit the client ran into: the request line alone, or the whole head.
        let line_end = buf.iter().position(|&b| b == b'\n');
        return Err(match line_end {
            Some(p) if p < max_head => HeadError::HeadTooLarge(max_head),
            _ => HeadError::LineTooLong(max_head),
        });
    }
    let Some(end) = end else {
        return Ok(None);
    };
    let head = parse_head(&buf[..end]);
    buf.advance(end);
    head.map(Some)
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_head(head: &[u8]) -> Result<RequestHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HeadError::Malformed("unparsable request head")),
    }
    let version = req.version.unwrap_or(0);
    let mut keep_alive = version == 1;
    let mut user_agent = String::new();
    let mut range = None;
    let (mut upgrade_websocket, mut websocket_key) = (false, None);
    let (mut content_length, mut content_type) = (None, String::new());
    let mut bearer_token = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("authorization") {
            bearer_token = bearer(h.value);
        }
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket = h.value.eq_ignore_ascii_case(b"websocket");
        }
        // A key is 16 bytes in base64: 24 characters.
        if h.name.eq_ignore_ascii_case("sec-websocket-key") && h.value.len() <= 64 {
            websocket_key = Some(String::from_utf8_lossy(h.value).into_owned());
        }
        if h.name.eq_ignore_ascii_case("range") && h.value.len() <= MAX_RANGE {
            range = Some(String::from_utf8_lossy(h.value).into_owned());
        }
        if h.name.eq_ignore_ascii_case("user-agent") {
            let value = &h.value[..h.value.len().min(MAX_USER_AGENT)];
            user_agent = String::from_utf8_lossy(value).into_owned();
        }
        if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
        if h.name.eq_ignore_ascii_case("content-type") {
            let value = &h.value[..h.value.len().min(MAX_CONTENT_TYPE)];
            content_type = String::from_utf8_lossy(value).into_owned();
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(HeadError::Malformed("invalid Content-Length"))?;
            // Two different lengths: where the next request starts is anyone's guess
            // (request smuggling), so the request is refused (RFC 9112, 6.3).
            if content_length.is_some_and(|l| l != length) {
                return Err(HeadError::Malformed("conflicting Content-Length headers"));
            }
            content_length = Some(length);
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Malformed(
                "chunked request bodies are not accepted here",
            ));
        }
    }
    Ok(RequestHead {
        method: req.method.unwrap_or("").to_owned(),
        target: req.path.unwrap_or("").to_owned(),
        keep_alive,
        http10: version == 0,
        user_agent,
        range,
        websocket_key: websocket_key.filter(|_| upgrade_websocket),
        content_length: content_length.unwrap_or(0),
        content_type,
        bearer_token,
    })
}

/// The token of an `Authorization` value `Bearer TOKEN` (the scheme in any case, RFC 6750).
fn bearer(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_BEARER_TOKEN)
        .then(|| token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn byte_ranges() {
        let r = |h: &str| byte_range(Some(h), 1000);
        assert_eq!(byte_range(None, 1000), Ok(None));
        assert_eq!(r("bytes=0-99"), Ok(Some((0, 99))));
        assert_eq!(r("bytes=500-"), Ok(Some((500, 999))));
        assert_eq!(r("bytes=900-5000"), Ok(Some((900, 999))));
        assert_eq!(r("bytes=-100"), Ok(Some((900, 999))));
        assert_eq!(r("bytes=-5000"), Ok(Some((0, 999))));
        assert_eq!(r("bytes=1000-"), Err(Unsatisfiable));
        assert_eq!(r("bytes=-0"), Err(Unsatisfiable));
        assert_eq!(byte_range(Some("bytes=0-"), 0), Err(Unsatisfiable));
        // What the RFC lets a server ignore: the whole resource.
        for ignored in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=9-3",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes",
        ] {
            assert_eq!(r(ignored), Ok(None), "{ignored}");
        }
    }

    fn take(bytes: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        take_head(&mut BytesMut::from(bytes), 8192)
    }

    #[test]
    fn request_heads_parse_with_their_body_length() {
        let r = take(b"GET /live/a.flv HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path(), r.keep_alive),
            ("GET", "/live/a.flv", true)
        );
        let r = take(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive && r.http10);
        let r = take(b"POST /live/a/whep HTTP/1.1\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.content_length, r.content_type.as_str()),
            (5, "application/sdp")
        );
        for refused in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n",
        ] {
            assert!(take(refused.as_bytes()).is_err(), "{refused}");
        }
        assert!(take(b"\x00\x01garbage\r\n\r\n").is_err());
    }

    #[test]
    fn bearer_tokens() {
        let token = |h: &str| take(h.as_bytes()).unwrap().unwrap().bearer_token;
        let post =
            |auth: &str| format!("POST /live/whip HTTP/1.1\r\nAuthorization: {auth}\r\n\r\n");
        assert_eq!(token(&post("Bearer k3y")).as_deref(), Some("k3y"));
        assert_eq!(token(&post("bearer  k3y ")).as_deref(), Some("k3y"));
        assert_eq!(token(&post("Basic dXNlcjpwYXNz")), None);
        assert_eq!(token(&post("Bearer")), None);
        assert_eq!(token(&post(&format!("Bearer {}", "k".repeat(300)))), None);
        assert_eq!(token("GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn connection_headers_decide_keep_alive() {
        let head = |h: &str| take(h.as_bytes()).unwrap().unwrap().keep_alive;
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn queries_are_split_from_paths() {
        let r = take(b"GET /live/a.flv?segment_marks=1&x HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.path(), r.query()), ("/live/a.flv", "segment_marks=1&x"));
        assert!(r.query_has("segment_marks=1") && r.query_has("x"));
        assert!(!r.query_has("segment_marks") && !r.query_has("marks=1"));
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_leaves_the_rest() {
        let mut buf = BytesMut::from(&b"GET /a HTTP/1.1\r\nHost: x\r\n"[..]);
        assert_eq!(take_head(&mut buf, 8192), Ok(None));
        buf.extend_from_slice(b"\r\nGET /b HTTP/1.1\r\n\r\n");
        assert_eq!(take_head(&mut buf, 8192).unwrap().unwrap().path(), "/a");
        assert_eq!(take_head(&mut buf, 8192).unwrap().unwrap().path(), "/b");
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_heads_say_which_limit() {
        let line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200));
        assert_eq!(
            take_head(&mut BytesMut::from(line.as_bytes()), 100),
            Err(HeadError::LineTooLong(100))
        );
        let head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(200));
        assert_eq!(
            take_head(&mut BytesMut::from(head.as_bytes()), 100),
            Err(HeadError::HeadTooLarge(100))
        );
        assert_eq!(HeadError::LineTooLong(1).status(), "414 URI Too Long");
    }

    proptest! {
        /// However the bytes arrive, the same heads come out, in order.
        #[test]
        fn split_reads_give_the_same_heads(cut in 0usize..80, paths in proptest::collection::vec("[a-z]{1,12}", 1..4)) {
            let wire: String = paths.iter().map(|p| format!("GET /{p} HTTP/1.1\r\nHost: h\r\n\r\n")).collect();
            let cut = cut.min(wire.len());
            let mut buf = BytesMut::from(&wire.as_bytes()[..cut]);
            let mut got = Vec::new();
            while let Some(head) = take_head(&mut buf, 8192).unwrap() {
                got.push(head.path().to_owned());
            }
            buf.extend_from_slice(&wire.as_bytes()[cut..]);
            while let Some(head) = take_head(&mut buf, 8192).unwrap() {
                got.push(head.path().to_owned());
            }
            let want: Vec<String> = paths.iter().map(|p| format!("/{p}")).collect();
            prop_assert_eq!(got, want);
        }
    }
}
