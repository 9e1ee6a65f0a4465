//! RTSP 1.0 messages (RFC 2326 6, 7) and interleaved binary frames (10.12), read from and
//! written to one TCP byte stream.
//!
//! httparse only knows `HTTP/x.y`, so the head reader is our own: it looks for the blank
//! line within [`MAX_HEAD`] bytes, reads at most [`MAX_HEADERS`] headers, and takes a body of
//! at most [`MAX_BODY`] bytes by `Content-Length`. An incomplete message consumes nothing,
//! so [`read_message`] can be called again when more bytes arrive, however they were split.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::RtspError;

/// The most bytes a message head (start line and headers) may take.
pub const MAX_HEAD: usize = 8 * 1024;
/// The most bytes a body may take: an SDP is a few hundred.
pub const MAX_BODY: usize = 64 * 1024;
/// The most header lines a head may have.
pub const MAX_HEADERS: usize = 64;

/// A request method. Methods this crate does not know keep their name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Options,
    Describe,
    Announce,
    Setup,
    Play,
    Pause,
    Record,
    Teardown,
    GetParameter,
    SetParameter,
    Other(String),
}

impl Method {
    fn parse(name: &str) -> Method {
        match name {
            "OPTIONS" => Method::Options,
            "DESCRIBE" => Method::Describe,
            "ANNOUNCE" => Method::Announce,
            "SETUP" => Method::Setup,
            "PLAY" => Method::Play,
            "PAUSE" => Method::Pause,
            "RECORD" => Method::Record,
            "TEARDOWN" => Method::Teardown,
            "GET_PARAMETER" => Method::GetParameter,
            "SET_PARAMETER" => Method::SetParameter,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Options => "OPTIONS",
            Method::Describe => "DESCRIBE",
            Method::Announce => "ANNOUNCE",
            Method::Setup => "SETUP",
            Method::Play => "PLAY",
            Method::Pause => "PAUSE",
            Method::Record => "RECORD",
            Method::Teardown => "TEARDOWN",
            Method::GetParameter => "GET_PARAMETER",
            Method::SetParameter => "SET_PARAMETER",
            Method::Other(name) => name,
        }
    }
}

/// Header lines in order, names as sent; looked up case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_string(), value.into()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// `CSeq`, as a number.
    pub fn cseq(&self) -> Option<u32> {
        self.get("CSeq")?.trim().parse().ok()
    }

    /// The session id of a `Session` header (without its `;timeout=`).
    pub fn session(&self) -> Option<&str> {
        let value = self.get("Session")?;
        Some(value.split(';').next().unwrap_or(value).trim())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request URI as sent (`rtsp://host/app/room/trackID=0`, or `*`).
    pub uri: String,
    pub headers: Headers,
    pub body: Bytes,
}

impl Request {
    pub fn new(method: Method, uri: impl Into<String>, cseq: u32) -> Request {
        let mut headers = Headers::default();
        headers.push("CSeq", cseq.to_string());
        Request {
            method,
            uri: uri.into(),
            headers,
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push(name, value);
        self
    }

    /// Append the request; `Content-Length` is added for a body.
    pub fn encode(&self, out: &mut BytesMut) {
        put_line(
            out,
            &format!("{} {} RTSP/1.0", self.method.as_str(), self.uri),
        );
        put_headers(out, &self.headers, &self.body);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

impl Response {
    /// A response with the standard reason phrase and the request's `CSeq` (none when the
    /// request had none, which is itself a 400).
    pub fn new(status: u16, cseq: Option<u32>) -> Response {
        let mut headers = Headers::default();
        if let Some(cseq) = cseq {
            headers.push("CSeq", cseq.to_string());
        }
        Response {
            status,
            reason: reason(status).to_string(),
            headers,
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push(name, value);
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> Response {
        self.headers.push("Content-Type", content_type);
        self.body = body.into();
        self
    }

    /// Append the response; `Content-Length` is added for a body.
    pub fn encode(&self, out: &mut BytesMut) {
        put_line(out, &format!("RTSP/1.0 {} {}", self.status, self.reason));
        put_headers(out, &self.headers, &self.body);
    }
}

/// The reason phrase of a status (RFC 2326 7.1.1).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        453 => "Not Enough Bandwidth",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version Not Supported",
        _ => "Error",
    }
}

/// A line, with any CR or LF in it replaced: a value echoed from a request (a URL) must
/// never end the head early.
fn put_line(out: &mut BytesMut, line: &str) {
    for byte in line.bytes() {
        out.put_u8(if byte == b'\r' || byte == b'\n' {
            b' '
        } else {
            byte
        });
    }
    out.put_slice(b"\r\n");
}

fn put_headers(out: &mut BytesMut, headers: &Headers, body: &[u8]) {
    for (name, value) in headers.iter() {
        put_line(out, &format!("{name}: {value}"));
    }
    if !body.is_empty() {
        put_line(out, &format!("Content-Length: {}", body.len()));
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

/// Append an interleaved frame (`$`, channel, 16-bit length, payload). Payloads over
/// 65535 bytes cannot be framed and are cut to that.
pub fn write_interleaved(channel: u8, payload: &[u8], out: &mut BytesMut) {
    let payload = &payload[..payload.len().min(usize::from(u16::MAX))];
    out.put_u8(b'$');
    out.put_u8(channel);
    out.put_u16(payload.len() as u16);
    out.put_slice(payload);
}

/// What one TCP stream of RTSP carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
    /// RTP or RTCP on an interleaved channel.
    Interleaved {
        channel: u8,
        payload: Bytes,
    },
}

/// Take the next whole message from `input`, or `None` if it is not all there yet (then
/// nothing is consumed, apart from blank lines between messages, which some clients send
/// as keep-alives).
pub fn read_message(input: &mut BytesMut) -> Result<Option<Message>, RtspError> {
    let blank = input
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    input.advance(blank);
    let Some(&first) = input.first() else {
        return Ok(None);
    };
    if first == b'$' {
        let Some(&[_, channel, hi, lo]) = input.get(..4) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if input.len() < 4 + len {
            return Ok(None);
        }
        input.advance(4);
        let payload = input.split_to(len).freeze();
        return Ok(Some(Message::Interleaved { channel, payload }));
    }
    let Some(head_len) = head_end(input)? else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&input[..head_len]).map_err(|_| RtspError::NotText)?;
    let mut lines = head.lines().map(|line| line.trim_end_matches('\r'));
    let start = lines.next().unwrap_or("");
    let mut headers = Headers::default();
    for line in lines.filter(|line| !line.is_empty()) {
        if headers.0.len() == MAX_HEADERS {
            return Err(RtspError::TooManyHeaders);
        }
        let (name, value) = line.split_once(':').ok_or(RtspError::MalformedHeader)?;
        headers.push(name.trim(), value.trim());
    }
    let body_len = match headers.get("Content-Length") {
        Some(len) => len
            .trim()
            .parse::<usize>()
            .map_err(|_| RtspError::MalformedHeader)?,
        None => 0,
    };
    if body_len > MAX_BODY {
        return Err(RtspError::BodyTooLarge);
    }
    let message = if let Some(status_line) = start.strip_prefix("RTSP/") {
        let mut parts = status_line.splitn(3, ' ');
        let _version = parts.next();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or(RtspError::MalformedStartLine)?;
        Message::Response(Response {
            status,
            reason: parts.next().unwrap_or("").to_string(),
            headers,
            body: Bytes::new(),
        })
    } else {
        let mut parts = start.split(' ').filter(|p| !p.is_empty());
        let (Some(method), Some(uri), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(RtspError::MalformedStartLine);
        };
        if !version.starts_with("RTSP/1.") {
            return Err(RtspError::Version(version.chars().take(16).collect()));
        }
        Message::Request(Request {
            method: Method::parse(method),
            uri: uri.to_string(),
            headers,
            body: Bytes::new(),
        })
    };
    if input.len() < head_len + body_len {
        return Ok(None);
    }
    input.advance(head_len);
    let body = input.split_to(body_len).freeze();
    Ok(Some(match message {
        Message::Request(request) => Message::Request(Request { body, ..request }),
        Message::Response(response) => Message::Response(Response { body, ..response }),
        interleaved => interleaved,
    }))
}

/// The length of the head including its blank line, if it is all in `input`; an error if
/// it would be longer than [`MAX_HEAD`].
fn head_end(input: &[u8]) -> Result<Option<usize>, RtspError> {
    let window = &input[..input.len().min(MAX_HEAD)];
    for (i, &byte) in window.iter().enumerate() {
        if byte != b'\n' {
            continue;
        }
        // A line ends here; the head ends if the next line is empty (CRLF or bare LF).
        match window.get(i + 1..) {
            Some([b'\n', ..]) => return Ok(Some(i + 2)),
            Some([b'\r', b'\n', ..]) => return Ok(Some(i + 3)),
            _ => {}
        }
    }
    if input.len() >= MAX_HEAD {
        return Err(RtspError::HeadTooLarge);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> (Vec<Message>, BytesMut) {
        let mut input = BytesMut::from(bytes);
        let mut messages = Vec::new();
        while let Some(message) = read_message(&mut input).unwrap() {
            messages.push(message);
        }
        (messages, input)
    }

    #[test]
    fn requests_responses_and_interleaved_frames_in_one_stream() {
        let stream = b"OPTIONS rtsp://h/live/room RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: Lavf60.16.100\r\n\r\n\
$\x01\x00\x03abc\
ANNOUNCE rtsp://h/live/room RTSP/1.0\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n\
RTSP/1.0 200 OK\r\nCSeq: 3\r\n\r\n";
        let (messages, rest) = read_all(stream);
        assert!(rest.is_empty());
        assert_eq!(messages.len(), 4);
        let Message::Request(options) = &messages[0] else {
            panic!()
        };
        assert_eq!(
            (&options.method, options.uri.as_str()),
            (&Method::Options, "rtsp://h/live/room")
        );
        assert_eq!(options.headers.cseq(), Some(1));
        assert_eq!(options.headers.get("user-agent"), Some("Lavf60.16.100"));
        assert_eq!(
            messages[1],
            Message::Interleaved {
                channel: 1,
                payload: Bytes::from_static(b"abc")
            }
        );
        let Message::Request(announce) = &messages[2] else {
            panic!()
        };
        assert_eq!(&announce.body[..], b"v=0\n");
        let Message::Response(response) = &messages[3] else {
            panic!()
        };
        assert_eq!((response.status, response.reason.as_str()), (200, "OK"));
    }

    #[test]
    fn any_split_gives_the_same_messages_and_incomplete_consumes_nothing() {
        let stream: &[u8] = b"SETUP rtsp://h/a/b/trackID=0 RTSP/1.0\nCSeq: 3\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\n\n$\x00\x00\x02hiDESCRIBE rtsp://h/a/b RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 2\r\n\r\nok";
        let (whole, _) = read_all(stream);
        assert_eq!(whole.len(), 3);
        for cut in 0..stream.len() {
            let mut input = BytesMut::from(&stream[..cut]);
            let mut messages = Vec::new();
            while let Some(message) = read_message(&mut input).unwrap() {
                messages.push(message);
            }
            let consumed = cut - input.len();
            input.extend_from_slice(&stream[cut..]);
            while let Some(message) = read_message(&mut input).unwrap() {
                messages.push(message);
            }
            assert_eq!(messages, whole, "cut at {cut}, {consumed} consumed first");
        }
    }

    #[test]
    fn limits_and_malformed_heads_are_errors() {
        let long = [b"OPTIONS * RTSP/1.0\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(
            read_message(&mut BytesMut::from(&long[..])),
            Err(RtspError::HeadTooLarge)
        );
        let big = b"ANNOUNCE / RTSP/1.0\r\nContent-Length: 65537\r\n\r\n";
        assert_eq!(
            read_message(&mut BytesMut::from(&big[..])),
            Err(RtspError::BodyTooLarge)
        );
        let headers = format!(
            "OPTIONS * RTSP/1.0\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            read_message(&mut BytesMut::from(headers.as_bytes())),
            Err(RtspError::TooManyHeaders)
        );
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"OPTIONS\r\n\r\n",
            b"PLAY / RTSP/1.0\r\nNoColon\r\n\r\n",
            b"\xFF / RTSP/1.0\r\n\r\n",
        ] {
            assert!(read_message(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn written_messages_read_back() {
        let mut out = BytesMut::new();
        Response::new(200, Some(4))
            .header("Session", "abc;timeout=60")
            .header("Content-Base", "rtsp://h/live/room\r\nInjected: 1")
            .body("application/sdp", Bytes::from_static(b"v=0\r\n"))
            .encode(&mut out);
        Request::new(Method::GetParameter, "rtsp://h/live/room", 5)
            .header("Session", "abc")
            .encode(&mut out);
        write_interleaved(3, b"rtcp", &mut out);
        let (messages, rest) = read_all(&out);
        assert!(rest.is_empty());
        let Message::Response(response) = &messages[0] else {
            panic!()
        };
        assert_eq!(response.headers.session(), Some("abc"));
        assert_eq!(
            response.headers.get("Injected"),
            None,
            "no header smuggled in by a URL"
        );
        assert_eq!(response.headers.get("Content-Length"), Some("5"));
        assert_eq!(&response.body[..], b"v=0\r\n");
        let Message::Request(request) = &messages[1] else {
            panic!()
        };
        assert_eq!(request.method, Method::GetParameter);
        assert_eq!(
            messages[2],
            Message::Interleaved {
                channel: 3,
                payload: Bytes::from_static(b"rtcp")
            }
        );
    }
}
