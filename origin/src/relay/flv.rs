//! HTTP-FLV pulls: `GET http(s)://…flv` over the relay transport, a minimal HTTP/1.1 client
//! (media's sans-IO response heads and chunked decoder), and the body demuxed into frames
//! with [`FlvReader`].

use std::collections::VecDeque;

use base64::Engine;
use bytes::BytesMut;
use media::flv::{self, FlvReader};
use media::frame::{Frame, MediaKind};
use media::http::response::{take_response_head, BodyLength, ChunkedDecoder, ResponseHead};
use media::rtmp::url::RelayUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use super::rtmp::{scrub, RelayError};
use super::transport::{Conn, Tls};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest FLV tag accepted.
const MAX_TAG: usize = 16 * 1024 * 1024;
/// Redirects followed (to an absolute `http(s)://` URL or another path on the same server).
const MAX_REDIRECTS: usize = 5;
/// How much is read from the socket at a time.
const READ_SIZE: usize = 64 * 1024;
/// A script tag that is metadata: AMF0 string marker, length 10, `onMetaData`.
const ON_METADATA: &[u8] = b"\x02\x00\x0aonMetaData";

/// An HTTP-FLV stream being pulled.
pub struct FlvPull {
    io: Conn,
    url: RelayUrl,
    body: Body,
    /// Read from the socket, not yet taken into the body.
    raw: BytesMut,
    /// Body bytes not yet demuxed.
    flv: BytesMut,
    reader: FlvReader,
    frames: VecDeque<Frame>,
    /// The body ended (its last chunk, its length, or the server's close).
    ended: bool,
}

/// How the body is framed, and how far it has come.
enum Body {
    Chunked(ChunkedDecoder),
    Length(u64),
    UntilClose,
}

impl FlvPull {
    /// GET the URL (following up to 5 redirects) and read until the FLV file header, all by
    /// `deadline`. Any status but 200 is [`RelayError::Http`].
    pub async fn connect(
        url: &RelayUrl,
        tls: &Tls,
        deadline: Instant,
    ) -> Result<FlvPull, RelayError> {
        let mut url = url.clone();
        let mut redirects = 0;
        let (io, head, rest) = loop {
            if url.scheme().is_rtmp() {
                return Err(RelayError::Unsupported {
                    url: url.redacted(),
                    what: "not an http:// or https:// URL",
                });
            }
            let (io, head, rest) = request(&url, tls, deadline).await?;
            let redirect = matches!(head.status, 301 | 302 | 303 | 307 | 308);
            match head.location.as_deref() {
                Some(location) if redirect && redirects < MAX_REDIRECTS => {
                    url = follow(&url, location)?;
                    redirects += 1;
                }
                _ if head.status == 200 => break (io, head, rest),
                _ => {
                    return Err(RelayError::Http {
                        url: url.redacted(),
                        status: head.status,
                        reason: scrub(&head.reason, &url),
                    })
                }
            }
        };
        let body = match head.body {
            BodyLength::Chunked => Body::Chunked(ChunkedDecoder::new()),
            BodyLength::Length(n) => Body::Length(n),
            BodyLength::UntilClose => Body::UntilClose,
        };
        let mut pull = FlvPull {
            io,
            url,
            body,
            raw: rest,
            flv: BytesMut::new(),
            reader: FlvReader::with_max_tag_size(MAX_TAG),
            frames: VecDeque::new(),
            ended: false,
        };
        pull.take_body()?;
        let header = async {
            while pull.reader.header().is_none() {
                if pull.ended {
                    return Err(pull.closed("before the FLV header"));
                }
                pull.read().await?;
            }
            Ok(())
        };
        match timeout_at(deadline, header).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(RelayError::Timeout {
                    url: pull.url.redacted(),
                    during: "waiting for the FLV header",
                })
            }
        }
        Ok(pull)
    }

    /// The next frame: `onMetaData` script tags as metadata (other script tags are
    /// dropped), audio and video tags as they are, with the tag's 32-bit timestamp. `None`
    /// once the body ended where it should (its last chunk or its length); a body cut
    /// short is an error, except one that runs until the server closes. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Frame>, RelayError> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(Some(frame));
            }
            if self.ended {
                return Ok(None);
            }
            self.read().await?;
        }
    }

    /// Read once from the socket and demux what it brings.
    async fn read(&mut self) -> Result<(), RelayError> {
        self.raw.reserve(READ_SIZE);
        let n = self
            .io
            .read_buf(&mut self.raw)
            .await
            .map_err(|source| RelayError::Io {
                url: self.url.redacted(),
                source,
            })?;
        if n == 0 {
            return match self.body {
                Body::UntilClose => {
                    self.ended = true;
                    Ok(())
                }
                _ => Err(self.closed("in the middle of the body")),
            };
        }
        self.take_body()
    }

    /// Body bytes as they came off the socket (in `raw`): unframed, demuxed into frames.
    fn take_body(&mut self) -> Result<(), RelayError> {
        match &mut self.body {
            Body::Chunked(decoder) => {
                let done = decoder.decode(&mut self.raw, &mut self.flv).map_err(|e| {
                    RelayError::Protocol {
                        url: self.url.redacted(),
                        message: e.to_string(),
                    }
                })?;
                self.ended |= done;
            }
            Body::Length(left) => {
                let take = (*left).min(self.raw.len() as u64);
                *left -= take;
                self.ended |= *left == 0;
                self.flv
                    .extend_from_slice(&self.raw.split_to(take as usize));
                // Nothing may follow the body on a connection we close.
                self.raw.clear();
            }
            Body::UntilClose => {
                self.flv.extend_from_slice(&self.raw);
                self.raw.clear();
            }
        }
        loop {
            let tag = self
                .reader
                .read(&mut self.flv)
                .map_err(|e| RelayError::Protocol {
                    url: self.url.redacted(),
                    message: e.to_string(),
                })?;
            let Some(tag) = tag else {
                return Ok(());
            };
            let kind = match tag.tag_type {
                flv::TAG_AUDIO => MediaKind::Audio,
                flv::TAG_VIDEO => MediaKind::Video,
                flv::TAG_SCRIPT if tag.payload.starts_with(ON_METADATA) => MediaKind::Metadata,
                _ => continue,
            };
            if kind != MediaKind::Metadata && tag.payload.is_empty() {
                continue;
            }
            let timestamp = u64::from(tag.timestamp);
            self.frames
                .push_back(Frame::new(kind, timestamp, tag.payload));
        }
    }

    fn closed(&self, during: &'static str) -> RelayError {
        RelayError::Closed {
            url: self.url.redacted(),
            during,
        }
    }
}

/// Open a connection, send the GET and read the response head; what was read past the
/// head is the start of the body.
async fn request(
    url: &RelayUrl,
    tls: &Tls,
    deadline: Instant,
) -> Result<(Conn, ResponseHead, BytesMut), RelayError> {
    let mut io = RelayError::open(url, tls, deadline).await?;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrolive-relay\r\nAccept: */*\r\nConnection: close\r\n",
        url.path(),
        url.authority()
    );
    if let Some(user) = url.user() {
        let credentials = format!("{user}:{}", url.password().unwrap_or(""));
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    let io_error = |source| RelayError::Io {
        url: url.redacted(),
        source,
    };
    let exchange = async {
        io.write_all(request.as_bytes()).await.map_err(io_error)?;
        io.flush().await.map_err(io_error)?;
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        loop {
            let head =
                take_response_head(&mut buf, MAX_HEAD).map_err(|e| RelayError::Protocol {
                    url: url.redacted(),
                    message: e.to_string(),
                })?;
            if let Some(head) = head {
                return Ok((head, buf));
            }
            if io.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                return Err(RelayError::Closed {
                    url: url.redacted(),
                    during: "before the response head",
                });
            }
        }
    };
    match timeout_at(deadline, exchange).await {
        Ok(Ok((head, rest))) => Ok((io, head, rest)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RelayError::Timeout {
            url: url.redacted(),
            during: "waiting for the response head",
        }),
    }
}

/// Where a redirect leads: an absolute `http(s)://` URL, or a path on the same server.
fn follow(from: &RelayUrl, location: &str) -> Result<RelayUrl, RelayError> {
    let target = if location.starts_with('/') && !location.starts_with("//") {
        format!(
            "{}://{}{location}",
            from.scheme().as_str(),
            from.authority()
        )
    } else {
        location.to_owned()
    };
    match RelayUrl::parse(&target) {
        Ok(url) if !url.scheme().is_rtmp() => Ok(url),
        _ => Err(RelayError::Protocol {
            url: from.redacted(),
            message: "redirected to a URL that is not http:// or https://".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_lead_to_http_urls_only() {
        let from = RelayUrl::parse("https://a.example:8443/live/x.flv?t=1").unwrap();
        let to = |location: &str| follow(&from, location).map(|u| u.redacted());
        assert_eq!(
            to("/edge/x.flv").unwrap(),
            "https://a.example:8443/edge/x.…"
        );
        let absolute = follow(&from, "http://b.example/live/x.flv?t=2").unwrap();
        assert_eq!(
            (absolute.host(), absolute.path()),
            ("b.example", "/live/x.flv?t=2")
        );
        assert!(to("rtmp://b.example/live/x").is_err());
        assert!(to("//b.example/x.flv").is_err());
        assert!(to("x.flv").is_err());
    }
}
