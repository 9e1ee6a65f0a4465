//! Just enough HTTP/1.1 for players: URLs, a request, the response head, and a body decoder
//! (content-length, chunked, or until close) that hands out slices without buffering bodies.

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head we accept.
const MAX_HEAD: usize = 16 * 1024;

/// `scheme://host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> anyhow::Result<Url> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| anyhow!("not a URL: {s}"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" | "ws" => 80,
            "rtmp" => 1935,
            "rtsp" => 554,
            other => bail!("unsupported scheme {other} in {s}"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.contains(']') => {
                (h, p.parse().with_context(|| format!("bad port in {s}"))?)
            }
            _ => (authority, default_port),
        };
        if host.is_empty() {
            bail!("no host in {s}");
        }
        Ok(Url {
            scheme,
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// `host:port` for connecting.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolve a (playlist) reference against this URL.
    pub fn join(&self, reference: &str) -> anyhow::Result<Url> {
        if reference.contains("://") {
            return Url::parse(reference);
        }
        let path = if reference.starts_with('/') {
            reference.to_owned()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{reference}")
        };
        Ok(Url {
            path,
            ..self.clone()
        })
    }
}

pub fn request(url: &Url, keep_alive: bool) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrolive-bench\r\nAccept: */*\r\nConnection: {}\r\n\r\n",
        url.path,
        url.addr(),
        if keep_alive { "keep-alive" } else { "close" }
    )
}

/// What the response head says about the body.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub body: Body,
    pub keep_alive: bool,
}

/// Sends a GET and reads the response head; body bytes already read stay in `buf`.
pub async fn get(
    stream: &mut TcpStream,
    url: &Url,
    keep_alive: bool,
    buf: &mut BytesMut,
) -> anyhow::Result<Head> {
    stream
        .write_all(request(url, keep_alive).as_bytes())
        .await?;
    loop {
        if let Some(head) = parse_head(buf)? {
            return Ok(head);
        }
        if buf.len() > MAX_HEAD {
            bail!("response head over {MAX_HEAD} bytes");
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            bail!("connection closed before the response head");
        }
    }
}

/// Parses (and consumes) a complete response head from `buf`.
pub fn parse_head(buf: &mut BytesMut) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).context("malformed HTTP response")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let mut chunked = false;
    let mut length = None;
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.contains("chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<u64>().ok();
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.contains("close");
        }
    }
    let body = if chunked {
        Body::Chunked(Chunk::Size)
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        keep_alive = false;
        Body::UntilClose
    };
    buf.advance(len);
    Ok(Some(Head {
        status,
        body,
        keep_alive,
    }))
}

/// Incremental body decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl Body {
    /// Decodes what `raw` holds, consuming it and passing body bytes to `sink`. Returns true
    /// once the body is complete (never for `UntilClose`: the caller ends it at EOF).
    pub fn feed(
        &mut self,
        raw: &mut BytesMut,
        sink: &mut impl FnMut(&[u8]),
    ) -> anyhow::Result<bool> {
        loop {
            match self {
                Body::UntilClose => {
                    if !raw.is_empty() {
                        sink(raw);
                        raw.clear();
                    }
                    return Ok(false);
                }
                Body::Length(left) => {
                    let n = (*left).min(raw.len() as u64) as usize;
                    if n > 0 {
                        sink(&raw[..n]);
                        raw.advance(n);
                        *left -= n as u64;
                    }
                    return Ok(*left == 0);
                }
                Body::Chunked(state) => match *state {
                    Chunk::Done => return Ok(true),
                    Chunk::Data(left) => {
                        let n = left.min(raw.len() as u64) as usize;
                        if n == 0 {
                            return Ok(false);
                        }
                        sink(&raw[..n]);
                        raw.advance(n);
                        *state = if left == n as u64 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - n as u64)
                        };
                    }
                    Chunk::DataEnd => {
                        if raw.len() < 2 {
                            return Ok(false);
                        }
                        if &raw[..2] != b"\r\n" {
                            bail!("chunk data not followed by CRLF");
                        }
                        raw.advance(2);
                        *state = Chunk::Size;
                    }
                    Chunk::Size | Chunk::Trailer => {
                        let Some(pos) = raw.windows(2).position(|w| w == b"\r\n") else {
                            if raw.len() > 4096 {
                                bail!("chunk size line too long");
                            }
                            return Ok(false);
                        };
                        let line = std::str::from_utf8(&raw[..pos]).context("chunk size line")?;
                        if *state == Chunk::Trailer {
                            *state = if line.is_empty() {
                                Chunk::Done
                            } else {
                                Chunk::Trailer
                            };
                        } else {
                            let hex = line.split(';').next().unwrap_or("").trim();
                            let size = u64::from_str_radix(hex, 16)
                                .with_context(|| format!("chunk size {hex:?}"))?;
                            *state = if size == 0 {
                                Chunk::Trailer
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        raw.advance(pos + 2);
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080/live/room.m3u8?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/live/room.m3u8?x=1")
        );
        assert_eq!(u.join("room/5.ts").unwrap().path, "/live/room/5.ts");
        assert_eq!(u.join("/a/b.ts").unwrap().path, "/a/b.ts");
        assert_eq!(u.join("http://other:81/c.ts").unwrap().addr(), "other:81");
        let r = Url::parse("rtmp://example.com/app/key").unwrap();
        assert_eq!((r.port, r.path.as_str()), (1935, "/app/key"));
    }

    #[test]
    fn chunked_body_in_pieces() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        for split in 1..wire.len() {
            let mut raw = BytesMut::new();
            let mut head = None;
            let mut out = Vec::new();
            let mut done = false;
            for part in [&wire[..split], &wire[split..]] {
                raw.extend_from_slice(part);
                if head.is_none() {
                    head = parse_head(&mut raw).unwrap();
                }
                if let Some(h) = head.as_mut() {
                    done = h
                        .body
                        .feed(&mut raw, &mut |d: &[u8]| out.extend_from_slice(d))
                        .unwrap();
                }
            }
            assert!(done, "split {split}");
            assert_eq!(out, b"hello world");
            assert!(raw.is_empty());
        }
    }

    #[test]
    fn content_length_body_leaves_the_rest() {
        let mut raw = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP"[..]);
        let mut head = parse_head(&mut raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert!(head.keep_alive);
        let mut out = Vec::new();
        assert!(head
            .body
            .feed(&mut raw, &mut |d: &[u8]| out.extend_from_slice(d))
            .unwrap());
        assert_eq!(out, b"abc");
        assert_eq!(&raw[..], b"HTTP");
    }
}
