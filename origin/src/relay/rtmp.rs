//! RTMP relays: async drivers over media's sans-IO [`ClientSession`]. [`RtmpPush`] publishes
//! a stream to another server (YouTube, Twitch, Facebook, nginx-rtmp, another ferrolive),
//! [`RtmpPull`] plays one from it.
//!
//! The session owns the protocol (handshake, commands, acknowledgements, pings, chunk
//! sizes); a driver moves bytes. While it writes, it also reads, so that whatever the server
//! says (acknowledgement windows, pings, an error status, a close) is handled as it comes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use media::amf::Amf0Value;
use media::frame::{Frame, MediaKind};
use media::rtmp::client::{encoder_properties, ClientError, ClientEvent, ClientSession, Status};
use media::rtmp::handshake::{ClientHandshake, DigestSchema, RANDOM_SIZE};
use media::rtmp::message::{user_control, MEDIA_STREAM_ID};
use media::rtmp::url::RelayUrl;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::transport::{self, Conn, Tls};

/// How much is read from the socket at a time.
const READ_SIZE: usize = 16 * 1024;
/// How long [`RtmpPush::close`] gives the goodbye (deleteStream, TLS close) to go out.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// Longest server-given text (a status description) kept in an error.
const MAX_TEXT: usize = 200;

/// Why a relay connection failed or ended. Its text names the URL redacted (never a key).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The URL is not one this driver takes (an `http://` URL given to RTMP).
    #[error("{url}: {what}")]
    Unsupported { url: String, what: &'static str },
    /// The host could not be resolved or reached (refused, no route, connect timeout).
    #[error("{url}: cannot connect: {source}")]
    Unreachable { url: String, source: io::Error },
    /// The TLS handshake failed: an untrusted or mismatched certificate, a TLS error.
    #[error("{url}: {source}")]
    Tls { url: String, source: io::Error },
    /// The server did not finish the negotiation by the deadline.
    #[error("{url}: no answer by the deadline ({during})")]
    Timeout { url: String, during: &'static str },
    /// The server refused: an error status (`NetStream.Publish.BadName`,
    /// `NetConnection.Connect.Rejected`, `NetStream.Play.StreamNotFound`...).
    #[error("{url}: refused by the server: {code}{}", described(description))]
    Refused {
        url: String,
        code: String,
        description: String,
    },
    /// An HTTP answer other than 200 (HTTP-FLV pulls).
    #[error("{url}: HTTP {status} {reason}")]
    Http {
        url: String,
        status: u16,
        reason: String,
    },
    /// The server closed the connection (`during` says when).
    #[error("{url}: connection closed by the server {during}")]
    Closed { url: String, during: &'static str },
    /// Reading or writing failed.
    #[error("{url}: {source}")]
    Io { url: String, source: io::Error },
    /// The server sent what the protocol does not allow.
    #[error("{url}: protocol error: {message}")]
    Protocol { url: String, message: String },
}

fn described(description: &str) -> String {
    if description.is_empty() {
        String::new()
    } else {
        format!(" ({description})")
    }
}

impl RelayError {
    /// The server could not be reached at all (rather than reached, then refused or
    /// lost): a relay retries these at a steady pace.
    pub fn unreachable(&self) -> bool {
        matches!(self, RelayError::Unreachable { .. })
    }

    /// The error of opening the transport: resolving and connecting are `Unreachable`, the
    /// TLS handshake `Tls` (or `Timeout`).
    pub(crate) async fn open(
        url: &RelayUrl,
        tls: &Tls,
        deadline: Instant,
    ) -> Result<Conn, RelayError> {
        let redacted = url.redacted();
        let tcp = transport::connect_tcp(url, deadline)
            .await
            .map_err(|source| RelayError::Unreachable {
                url: redacted.clone(),
                source,
            })?;
        if !url.scheme().is_tls() {
            return Ok(Box::new(tcp));
        }
        match tls.handshake(url, tcp, deadline).await {
            Ok(tls) => Ok(Box::new(tls)),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(RelayError::Timeout {
                url: redacted,
                during: "TLS handshake",
            }),
            Err(source) => Err(RelayError::Tls {
                url: redacted,
                source,
            }),
        }
    }
}

/// Server text fit for a log line: no control characters, bounded, and the secret of `url`
/// (an RTMP stream name, the last segment of an HTTP path) cut out should the server quote
/// it.
pub(crate) fn scrub(text: &str, url: &RelayUrl) -> String {
    let mut text: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect();
    let last = if url.scheme().is_rtmp() {
        url.stream()
    } else {
        url.path().rsplit('/').next().unwrap_or("")
    };
    let name = last.split('?').next().unwrap_or("");
    if name.len() >= 4 {
        text = text.replace(name, "…");
    }
    text
}

/// Media messages written in one go at most (a write per two pictures needs a handful).
const MAX_SLICES: usize = 64;

/// A stream being published to another server.
pub struct RtmpPush {
    link: Link,
}

impl RtmpPush {
    /// Connect, handshake, `connect` to the app (with its tcUrl), create a stream and
    /// publish the URL's stream name as `live`, all by `deadline`; returns once the server
    /// said `NetStream.Publish.Start`. A refusal is [`RelayError::Refused`] with the
    /// server's status code and description.
    pub async fn connect(
        url: &RelayUrl,
        tls: &Tls,
        deadline: Instant,
    ) -> Result<RtmpPush, RelayError> {
        let mut link = Link::open(url, tls, deadline).await?;
        link.session
            .publish(url.stream(), "live")
            .map_err(|e| link.protocol(e))?;
        link.queue_output();
        let after = link
            .negotiate(deadline, "publish", |e| {
                matches!(e, ClientEvent::Publishing)
            })
            .await?;
        for event in after {
            on_publish_event(event, &link.url)?;
        }
        Ok(RtmpPush { link })
    }

    /// Send one frame: audio and video as they are (enhanced RTMP included) with their
    /// timestamp on RTMP's 32-bit clock, metadata as `@setDataFrame("onMetaData", ...)`.
    /// Returns once the frame is written to the socket; meanwhile whatever the server sent
    /// is handled, and a server that closed, failed or sent garbage ends it with an error.
    ///
    /// It waits as long as the server does not read: bound it with a timeout. Dropping it
    /// midway is safe (the frame stays queued and goes out before anything else).
    pub async fn send(&mut self, frame: &Frame) -> Result<(), RelayError> {
        self.queue(frame, frame.wire_timestamp())?;
        self.flush().await
    }

    /// Queue one frame at `timestamp` (RTMP's 32-bit clock) without writing it, so that
    /// frames that come together go out in one write ([`RtmpPush::flush`]). Audio and video
    /// at their own time go out as the bytes every RTMP viewer gets
    /// ([`Frame::rtmp_chunks`]: encoded once and shared, not copied) when the server gave
    /// the stream id those carry, as servers do.
    pub fn queue(&mut self, frame: &Frame, timestamp: u32) -> Result<(), RelayError> {
        let shared = frame.kind != MediaKind::Metadata
            && timestamp == frame.wire_timestamp()
            && self.link.session.stream_id() == Some(MEDIA_STREAM_ID);
        let bytes = if shared {
            frame.rtmp_chunks().clone()
        } else {
            self.link
                .session
                .media_chunks(frame.kind, timestamp, &frame.payload)
                .map_err(|e| self.link.protocol(e))?
        };
        self.link.media.push_back(bytes);
        Ok(())
    }

    /// Write everything queued, handling what the server sends meanwhile (see
    /// [`RtmpPush::send`]).
    pub async fn flush(&mut self) -> Result<(), RelayError> {
        loop {
            match self.link.pump(Until::Flushed).await? {
                None => return Ok(()),
                Some(0) => return Err(self.link.closed("while publishing")),
                Some(_) => self.take_events()?,
            }
        }
    }

    /// Wait for the server to say something and handle it (answer pings, acknowledge),
    /// writing anything still pending meanwhile. For a caller that waits for its next frame
    /// in a `select!` with this: it is cancel-safe, and an error means the push is over.
    pub async fn service(&mut self) -> Result<(), RelayError> {
        match self.link.pump(Until::Read).await? {
            Some(0) => Err(self.link.closed("while publishing")),
            _ => self.take_events(),
        }
    }

    /// Bytes written to the socket so far (handshake, commands and media; before TLS).
    pub fn bytes_sent(&self) -> u64 {
        self.link.sent
    }

    /// End politely: FCUnpublish and deleteStream, then close the connection (TLS
    /// close_notify), giving it up to 2 s.
    pub async fn close(mut self) {
        if self.link.session.delete_stream().is_ok() {
            self.link.queue_output();
        }
        let _ = tokio::time::timeout(CLOSE_WITHIN, async {
            while let Ok(Some(n)) = self.link.pump(Until::Flushed).await {
                if n == 0 {
                    return;
                }
                // Answers to the goodbye are not waited for.
                self.link.rbuf.clear();
            }
            let _ = self.link.io.shutdown().await;
        })
        .await;
    }

    /// Over plain TCP, once everything queued is written ([`RtmpPush::flush`]): the socket,
    /// for another writer to send the media (the stream's fan-out, as to an RTMP viewer),
    /// and the [`Answers`] that keep the session going. Otherwise the push as it is.
    pub fn into_plain(self) -> Result<(TcpStream, Answers), Box<RtmpPush>> {
        let link = self.link;
        if !link.wbuf.is_empty() || !link.media.is_empty() {
            return Err(Box::new(RtmpPush { link }));
        }
        let Link {
            io,
            session,
            rbuf,
            url,
            ..
        } = link;
        match io.into_tcp() {
            Ok(tcp) => Ok((tcp, Answers { session, rbuf, url })),
            Err(io) => Err(Box::new(RtmpPush {
                link: Link {
                    io,
                    session,
                    rbuf,
                    url,
                    wbuf: BytesMut::new(),
                    media: VecDeque::new(),
                    unflushed: false,
                    scratch: vec![0; READ_SIZE].into_boxed_slice(),
                    sent: 0,
                },
            })),
        }
    }

    fn take_events(&mut self) -> Result<(), RelayError> {
        let mut events = Vec::new();
        self.link.feed(&mut events)?;
        for event in events {
            on_publish_event(event, &self.link.url)?;
        }
        Ok(())
    }
}

/// What a server says to a stream being published to it: an error when that is the end.
fn on_publish_event(event: ClientEvent, url: &RelayUrl) -> Result<(), RelayError> {
    match event {
        ClientEvent::Status(status) if status.is_error() => Err(refused(&status, url)),
        ClientEvent::Command(values)
            if values.first().and_then(Amf0Value::as_str) == Some("close") =>
        {
            Err(closed(url, "(it sent close)"))
        }
        // Acknowledgements, pings and window sizes are the session's; answers to
        // releaseStream and FCPublish, onBWDone, anything played back: nothing to do.
        _ => Ok(()),
    }
}

/// The session of a publish whose socket another writer took over ([`RtmpPush::into_plain`]):
/// it takes what the server sends and says what to answer.
pub struct Answers {
    session: ClientSession,
    rbuf: BytesMut,
    url: RelayUrl,
}

impl Answers {
    /// The stream id the server gave the publish (media messages carry it).
    pub fn stream_id(&self) -> u32 {
        self.session.stream_id().unwrap_or(MEDIA_STREAM_ID)
    }

    /// Take `read`, bytes from the server (empty: it closed). Returns what to send back
    /// (acknowledgements, ping answers); an error when the server refused, closed or sent
    /// what the protocol does not allow.
    pub fn take(&mut self, read: &[u8]) -> Result<Option<Bytes>, RelayError> {
        if read.is_empty() {
            return Err(closed(&self.url, "while publishing"));
        }
        self.rbuf.extend_from_slice(read);
        let mut events = Vec::new();
        let fed = self.session.feed(&mut self.rbuf, &mut events);
        fed.map_err(|e| protocol(e, &self.url))?;
        for event in events {
            on_publish_event(event, &self.url)?;
        }
        Ok(self.output())
    }

    /// The goodbye: FCUnpublish and deleteStream.
    pub fn goodbye(&mut self) -> Option<Bytes> {
        self.session.delete_stream().ok()?;
        self.output()
    }

    fn output(&mut self) -> Option<Bytes> {
        self.session
            .has_output()
            .then(|| self.session.take_output().freeze())
    }
}

/// A stream being played from another server.
pub struct RtmpPull {
    link: Link,
    frames: VecDeque<Frame>,
    /// The server said the stream ended: what is queued goes out, then `None`.
    ended: bool,
}

impl RtmpPull {
    /// Connect, handshake, `connect` to the app, create a stream and play the URL's stream
    /// name, all by `deadline`; returns once the server said `NetStream.Play.Start`. A
    /// refusal (`NetStream.Play.StreamNotFound`...) is [`RelayError::Refused`].
    pub async fn connect(
        url: &RelayUrl,
        tls: &Tls,
        deadline: Instant,
    ) -> Result<RtmpPull, RelayError> {
        let mut link = Link::open(url, tls, deadline).await?;
        link.session
            .play(url.stream())
            .map_err(|e| link.protocol(e))?;
        link.queue_output();
        let after = link
            .negotiate(deadline, "play", |e| matches!(e, ClientEvent::Playing))
            .await?;
        let mut pull = RtmpPull {
            link,
            frames: VecDeque::new(),
            ended: false,
        };
        for event in after {
            pull.on_event(event)?;
        }
        Ok(pull)
    }

    /// The next frame as the server sent it: metadata (`onMetaData` and its object),
    /// sequence headers, audio and video, with the wire's 32-bit timestamp (a hub extends
    /// it). `None` once the stream ended cleanly: `NetStream.Play.Stop`,
    /// `NetStream.Play.UnpublishNotify`, `NetStream.Play.Complete` or Stream EOF; a close
    /// before that is an error. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Frame>, RelayError> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(Some(frame));
            }
            if self.ended {
                return Ok(None);
            }
            if self.link.pump(Until::Read).await? == Some(0) {
                return Err(self.link.closed("while playing"));
            }
            let mut events = Vec::new();
            self.link.feed(&mut events)?;
            for event in events {
                self.on_event(event)?;
            }
        }
    }

    fn on_event(&mut self, event: ClientEvent) -> Result<(), RelayError> {
        if self.ended {
            return Ok(());
        }
        match event {
            ClientEvent::Media {
                kind,
                timestamp,
                payload,
            } => self
                .frames
                .push_back(Frame::new(kind, u64::from(timestamp), payload)),
            ClientEvent::Status(status) if status.is_error() => {
                return Err(self.link.refused(&status))
            }
            ClientEvent::Status(status) => {
                self.ended = matches!(
                    status.code.as_str(),
                    "NetStream.Play.Stop"
                        | "NetStream.Play.UnpublishNotify"
                        | "NetStream.Play.Complete"
                );
            }
            ClientEvent::UserControl { event, .. } if event == user_control::STREAM_EOF => {
                self.ended = true;
            }
            ClientEvent::Command(values)
                if values.first().and_then(Amf0Value::as_str) == Some("close") =>
            {
                return Err(self.link.closed("(it sent close)"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// What [`Link::pump`] runs until.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Everything queued is written (or something was read first).
    Flushed,
    /// Something was read (writing what is queued meanwhile).
    Read,
}

/// One RTMP connection: the socket, the session, and the bytes between them.
struct Link {
    io: Conn,
    session: ClientSession,
    /// Read, not yet fed to the session.
    rbuf: BytesMut,
    /// Queued for the socket: the session's own output, then whole media messages (shared
    /// bytes, written without a copy).
    wbuf: BytesMut,
    media: VecDeque<Bytes>,
    /// Written since the last flush of the stream (TLS buffers records).
    unflushed: bool,
    scratch: Box<[u8]>,
    sent: u64,
    url: RelayUrl,
}

impl Link {
    /// The transport, then the session with the handshake and `connect` queued.
    async fn open(url: &RelayUrl, tls: &Tls, deadline: Instant) -> Result<Link, RelayError> {
        if !url.scheme().is_rtmp() {
            return Err(RelayError::Unsupported {
                url: url.redacted(),
                what: "not an rtmp:// or rtmps:// URL",
            });
        }
        let io = RelayError::open(url, tls, deadline).await?;
        let mut random = [0u8; RANDOM_SIZE];
        fastrand::fill(&mut random);
        // The digest handshake, as ffmpeg and OBS do: some servers want it, and the session
        // falls back to the plain one with servers that answer plainly.
        let handshake = ClientHandshake::new_complex(random, DigestSchema::DigestFirst);
        let mut link = Link {
            io,
            session: ClientSession::with_handshake(handshake),
            rbuf: BytesMut::with_capacity(READ_SIZE),
            wbuf: BytesMut::new(),
            media: VecDeque::new(),
            unflushed: false,
            scratch: vec![0; READ_SIZE].into_boxed_slice(),
            sent: 0,
            url: url.clone(),
        };
        link.session
            .connect(url.app(), &url.tc_url(), encoder_properties("ferrolive"))
            .map_err(|e| link.protocol(e))?;
        link.queue_output();
        Ok(link)
    }

    /// Run the session's command flow until an event `done` accepts, by `deadline`. An
    /// error status is a refusal. Returns the events that came after the accepted one.
    async fn negotiate(
        &mut self,
        deadline: Instant,
        what: &'static str,
        done: impl Fn(&ClientEvent) -> bool,
    ) -> Result<Vec<ClientEvent>, RelayError> {
        let during = if what == "publish" {
            "negotiating the publish"
        } else {
            "negotiating the play"
        };
        let negotiation = async {
            let mut events = Vec::new();
            loop {
                if self.pump(Until::Read).await? == Some(0) {
                    return Err(self.closed(during));
                }
                self.feed(&mut events)?;
                let mut drained = events.drain(..);
                for event in drained.by_ref() {
                    if let ClientEvent::Status(status) = &event {
                        if status.is_error() {
                            return Err(self.refused(status));
                        }
                    }
                    if done(&event) {
                        return Ok(drained.collect());
                    }
                }
            }
        };
        match timeout_at(deadline, negotiation).await {
            Ok(result) => result,
            Err(_) => Err(RelayError::Timeout {
                url: self.url.redacted(),
                during: if !self.session.handshake_done() {
                    "handshake"
                } else {
                    during
                },
            }),
        }
    }

    /// Move what the session queued to the socket's queue.
    fn queue_output(&mut self) {
        if self.session.has_output() {
            let out = self.session.take_output();
            if self.wbuf.is_empty() {
                self.wbuf = out;
            } else {
                self.wbuf.extend_from_slice(&out);
            }
        }
    }

    /// Feed what was read to the session; its answers are queued for the socket.
    fn feed(&mut self, events: &mut Vec<ClientEvent>) -> Result<(), RelayError> {
        let fed = self.session.feed(&mut self.rbuf, events);
        self.queue_output();
        fed.map_err(|e| self.protocol(e))
    }

    /// Write what is queued and read: `Some(n)` once `n` bytes were read (0: the server
    /// closed), `None` once everything is written (with [`Until::Flushed`]). Cancel-safe:
    /// what was read or is left to write stays in the buffers.
    async fn pump(&mut self, until: Until) -> Result<Option<usize>, RelayError> {
        poll_fn(|cx| self.poll_pump(cx, until))
            .await
            .map_err(|source| RelayError::Io {
                url: self.url.redacted(),
                source,
            })
    }

    fn poll_pump(&mut self, cx: &mut Context<'_>, until: Until) -> Poll<io::Result<Option<usize>>> {
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    self.sent += n as u64;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        // Whole media messages only after the session's output: the two never interleave
        // within a message, as each is a chunk stream of its own.
        while self.wbuf.is_empty() && !self.media.is_empty() {
            let slices: Vec<io::IoSlice<'_>> = self
                .media
                .iter()
                .take(MAX_SLICES)
                .map(|b| io::IoSlice::new(b))
                .collect();
            match Pin::new(&mut self.io).poll_write_vectored(cx, &slices) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(mut n)) => {
                    self.sent += n as u64;
                    self.unflushed = true;
                    while let Some(front) = self.media.front_mut().filter(|_| n > 0) {
                        let taken = n.min(front.len());
                        front.advance(taken);
                        n -= taken;
                        if front.is_empty() {
                            self.media.pop_front();
                        }
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        if self.wbuf.is_empty() && self.media.is_empty() && self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        let mut buf = ReadBuf::new(&mut self.scratch);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                self.rbuf.extend_from_slice(buf.filled());
                return Poll::Ready(Ok(Some(buf.filled().len())));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        if until == Until::Flushed
            && self.wbuf.is_empty()
            && self.media.is_empty()
            && !self.unflushed
        {
            return Poll::Ready(Ok(None));
        }
        Poll::Pending
    }

    fn protocol(&self, e: ClientError) -> RelayError {
        protocol(e, &self.url)
    }

    fn refused(&self, status: &Status) -> RelayError {
        refused(status, &self.url)
    }

    fn closed(&self, during: &'static str) -> RelayError {
        closed(&self.url, during)
    }
}

fn protocol(e: ClientError, url: &RelayUrl) -> RelayError {
    RelayError::Protocol {
        url: url.redacted(),
        message: e.to_string(),
    }
}

fn refused(status: &Status, url: &RelayUrl) -> RelayError {
    RelayError::Refused {
        url: url.redacted(),
        code: scrub(&status.code, url),
        description: scrub(&status.description, url),
    }
}

fn closed(url: &RelayUrl, during: &'static str) -> RelayError {
    RelayError::Closed {
        url: url.redacted(),
        during,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_scrubbed_of_the_key() {
        let url = RelayUrl::parse("rtmp://h/live/sk_secretkey?token=1").unwrap();
        assert_eq!(
            scrub("Stream sk_secretkey\nis not allowed", &url),
            "Stream …is not allowed"
        );
        assert_eq!(scrub(&"x".repeat(500), &url).len(), MAX_TEXT);
        let url = RelayUrl::parse("https://h/live/secretroom.flv?t=1").unwrap();
        assert_eq!(scrub("no secretroom.flv here", &url), "no … here");
    }

    #[test]
    fn errors_show_the_url_redacted() {
        let url = RelayUrl::parse("rtmp://h/live/sk_secretkey").unwrap();
        let e = RelayError::Refused {
            url: url.redacted(),
            code: "NetStream.Publish.BadName".into(),
            description: "Already publishing".into(),
        };
        assert_eq!(
            e.to_string(),
            "rtmp://h/live/sk_s…: refused by the server: NetStream.Publish.BadName (Already publishing)"
        );
    }
}
