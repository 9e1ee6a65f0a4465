//! Plain HTTP requests and an HTTP-FLV viewer, read with the project's own FLV demuxer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use media::flv::{FlvHeader, FlvReader, FlvTag};

/// A plain HTTP response, body read until close or content-length.
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

pub fn http_request(addr: SocketAddr, request: &str) -> Option<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    // Long enough for a first HLS playlist, which waits for its first segment.
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok);
            match length {
                Some(len) if buf.len() >= end + 4 + len => {
                    return Some(Response {
                        status,
                        head,
                        body: buf[end + 4..end + 4 + len].to_vec(),
                    })
                }
                // Streams (no content-length): the head is all we want.
                None => {
                    return Some(Response {
                        status,
                        head,
                        body: buf[end + 4..].to_vec(),
                    })
                }
                _ => {}
            }
        }
    }
    None
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<Response> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

/// A raw HTTP-FLV viewer: decodes chunked transfer and FLV tags with the project's demuxer.
pub struct FlvViewer {
    socket: TcpStream,
    raw: Vec<u8>,
    body: BytesMut,
    flv: FlvReader,
    pub head: String,
    chunk_left: usize,
    ended: bool,
}

/// A connection to `addr` whose reads give up after 10 s (a test waits, it never hangs).
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
}

impl FlvViewer {
    pub fn connect(addr: SocketAddr, room: &str) -> FlvViewer {
        let mut socket = connect(addr);
        write!(
            socket,
            "GET /live/{room}.flv HTTP/1.1\r\nHost: test\r\n\r\n"
        )
        .unwrap();
        let mut viewer = FlvViewer {
            socket,
            raw: Vec::new(),
            body: BytesMut::new(),
            flv: FlvReader::new(),
            head: String::new(),
            chunk_left: 0,
            ended: false,
        };
        while !viewer.raw.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(viewer.fill(), "connection closed before response head");
        }
        let end = viewer
            .raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        viewer.head = String::from_utf8_lossy(&viewer.raw[..end]).into_owned();
        viewer.raw.drain(..end);
        assert!(
            viewer.head.starts_with("HTTP/1.1 200"),
            "unexpected response: {}",
            viewer.head
        );
        viewer
    }

    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        match self.socket.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Move de-chunked bytes from `raw` to `body`. Returns false at the terminating chunk.
    fn dechunk(&mut self) -> bool {
        loop {
            if self.chunk_left > 0 {
                let n = self.chunk_left.min(self.raw.len());
                if n == 0 {
                    return true;
                }
                self.body.extend_from_slice(&self.raw[..n]);
                self.raw.drain(..n);
                self.chunk_left -= n;
                continue;
            }
            // A size line, preceded by the CRLF that ends the previous chunk's data.
            let Some(pos) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return true;
            };
            if pos == 0 {
                self.raw.drain(..2);
                continue;
            }
            let line = String::from_utf8_lossy(&self.raw[..pos]).into_owned();
            let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
            self.raw.drain(..pos + 2);
            if size == 0 {
                self.ended = true;
                return false;
            }
            self.chunk_left = size;
        }
    }

    /// Next FLV tag, or `None` once the stream ended (or nothing came for 10 s).
    pub fn next_tag(&mut self) -> Option<FlvTag> {
        loop {
            if let Some(tag) = self.flv.read(&mut self.body).expect("valid FLV") {
                return Some(tag);
            }
            if self.ended {
                return None;
            }
            let before = self.body.len();
            if self.dechunk() && self.body.len() == before && !self.fill() {
                return None;
            }
        }
    }

    /// How long `next_tag` waits for data before giving up (10 s unless set).
    pub fn set_timeout(&self, timeout: Duration) {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Whether the server ended the stream with the chunked terminator.
    pub fn ended(&self) -> bool {
        self.ended
    }

    pub fn flv_header(&self) -> Option<FlvHeader> {
        self.flv.header()
    }
}
