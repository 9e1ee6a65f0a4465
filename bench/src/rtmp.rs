//! RTMP for the bench's players and publisher: a thin tokio driver over media's sans-IO
//! client session, which owns the protocol (handshake, commands, acknowledgements, pings).

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use media::frame::MediaKind;
use media::rtmp::client::{encoder_properties, ClientEvent, ClientSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::Url;
use crate::stats::Tracker;

/// Initial read buffer; it grows only as far as one read needs.
const READ_SIZE: usize = 16 * 1024;

/// `rtmp://host[:port]/app[/inst]/stream[?query]`: app is everything before the last '/'.
#[derive(Debug, Clone)]
pub struct RtmpUrl {
    pub url: Url,
    pub app: String,
    pub stream: String,
}

impl RtmpUrl {
    pub fn parse(s: &str) -> anyhow::Result<RtmpUrl> {
        let url = Url::parse(s)?;
        if url.scheme != "rtmp" {
            bail!("not an rtmp:// URL: {s}");
        }
        let path = url.path.trim_start_matches('/');
        let (app, stream) = path
            .rsplit_once('/')
            .filter(|(a, s)| !a.is_empty() && !s.is_empty())
            .ok_or_else(|| anyhow!("RTMP URL needs /app/stream: {s}"))?;
        Ok(RtmpUrl {
            app: app.to_owned(),
            stream: stream.to_owned(),
            url,
        })
    }

    pub fn tc_url(&self) -> String {
        format!("rtmp://{}/{}", self.url.addr(), self.app)
    }
}

/// One connection: the socket, the session, and the bytes read but not yet parsed.
pub struct RtmpConn {
    pub stream: TcpStream,
    session: ClientSession,
    rbuf: BytesMut,
    /// Bytes received on the socket so far (handshake included).
    pub received: u64,
}

impl RtmpConn {
    /// TCP connect, handshake, `connect` command; returns once the server accepted it.
    pub async fn connect(url: &RtmpUrl) -> anyhow::Result<RtmpConn> {
        let stream = TcpStream::connect(url.url.addr())
            .await
            .context("connect")?;
        let _ = stream.set_nodelay(true);
        let mut random = [0u8; 1528];
        fastrand::fill(&mut random);
        let mut session = ClientSession::new(random);
        session.connect(
            &url.app,
            &url.tc_url(),
            encoder_properties("ferrolive-bench"),
        )?;
        let mut conn = RtmpConn {
            stream,
            session,
            rbuf: BytesMut::with_capacity(READ_SIZE),
            received: 0,
        };
        conn.flush().await?;
        conn.wait_for("connect", |e| matches!(e, ClientEvent::Connected { .. }))
            .await?;
        Ok(conn)
    }

    pub fn session(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    /// Writes what the session queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.session.has_output() {
            let out = self.session.take_output();
            self.stream.write_all(&out).await?;
        }
        Ok(())
    }

    /// Audio, video or metadata on the published stream, written at once.
    pub async fn send_media(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        self.session.send_media(kind, timestamp, payload)?;
        self.flush().await
    }

    /// Reads more from the socket, feeds the session (events go to `events`) and sends
    /// what it answers; returns the byte count (0 at EOF).
    pub async fn fill(&mut self, events: &mut Vec<ClientEvent>) -> anyhow::Result<usize> {
        let n = self.read().await?;
        self.feed(events).await?;
        Ok(n)
    }

    /// The same for a player: media goes to `on_media` as it is parsed, the rest to
    /// `events` (see [`ClientSession::feed_with_media`]).
    pub async fn fill_with_media(
        &mut self,
        events: &mut Vec<ClientEvent>,
        on_media: impl FnMut(MediaKind, u32, Bytes),
    ) -> anyhow::Result<usize> {
        let n = self.read().await?;
        self.session
            .feed_with_media(&mut self.rbuf, events, on_media)
            .context("from the server")?;
        self.flush().await?;
        Ok(n)
    }

    async fn read(&mut self) -> anyhow::Result<usize> {
        self.reserve();
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        self.received += n as u64;
        Ok(n)
    }

    /// The same without waiting (for the publisher, which mostly writes).
    pub async fn try_fill(
        &mut self,
        events: &mut Vec<ClientEvent>,
    ) -> anyhow::Result<Option<usize>> {
        self.reserve();
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(n) => {
                self.received += n as u64;
                self.feed(events).await?;
                Ok(Some(n))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn reserve(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_SIZE);
        }
    }

    async fn feed(&mut self, events: &mut Vec<ClientEvent>) -> anyhow::Result<()> {
        self.session
            .feed(&mut self.rbuf, events)
            .context("from the server")?;
        self.flush().await
    }

    /// Reads until an event `done` accepts; fails on an error status or a close.
    async fn wait_for(
        &mut self,
        what: &str,
        done: impl Fn(&ClientEvent) -> bool,
    ) -> anyhow::Result<()> {
        let mut events = Vec::new();
        loop {
            let n = self.fill(&mut events).await.context(what.to_owned())?;
            for event in events.drain(..) {
                check_status(&event).context(what.to_owned())?;
                if done(&event) {
                    return Ok(());
                }
            }
            if n == 0 {
                bail!("{what}: connection closed by the server");
            }
        }
    }
}

/// An error status (a refused publish or play, a refused connect) as an error.
fn check_status(event: &ClientEvent) -> anyhow::Result<()> {
    match event {
        ClientEvent::Status(status) if status.is_error() => bail!("{}", status.code),
        _ => Ok(()),
    }
}

/// One RTMP player: plays until the caller's timeout drops it, feeding `t`.
pub async fn player(url: &RtmpUrl, t: &mut Tracker) -> anyhow::Result<()> {
    let mut conn = RtmpConn::connect(url).await?;
    conn.session.play(&url.stream)?;
    conn.flush().await?;
    let mut counted = conn.received;
    t.bytes(counted as usize);
    let mut events = Vec::new();
    loop {
        let n = conn
            .fill_with_media(&mut events, |kind, _, payload| {
                if kind == MediaKind::Video {
                    t.video(&payload);
                }
            })
            .await?;
        for event in events.drain(..) {
            check_status(&event)?;
        }
        if n == 0 {
            return Ok(());
        }
        t.bytes((conn.received - counted) as usize);
        counted = conn.received;
    }
}

/// Publishes: connect, then (the session's flow) releaseStream/FCPublish, createStream,
/// publish; returns once the server said Publish.Start.
pub async fn start_publish(url: &RtmpUrl) -> anyhow::Result<RtmpConn> {
    let mut conn = RtmpConn::connect(url).await?;
    conn.session.publish(&url.stream, "live")?;
    conn.flush().await?;
    conn.wait_for("publish", |e| matches!(e, ClientEvent::Publishing))
        .await?;
    Ok(conn)
}

/// Fails on an error status from the server (a kick, say); other events do not matter
/// to the publisher.
pub fn check_events(events: &mut Vec<ClientEvent>) -> anyhow::Result<()> {
    for event in events.drain(..) {
        check_status(&event).context("server status")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_urls() {
        let u = RtmpUrl::parse("rtmp://127.0.0.1:1935/live/room").unwrap();
        assert_eq!((u.app.as_str(), u.stream.as_str()), ("live", "room"));
        assert_eq!(u.tc_url(), "rtmp://127.0.0.1:1935/live");
        let u = RtmpUrl::parse("rtmp://h/a/b/key?x=1").unwrap();
        assert_eq!(
            (u.app.as_str(), u.stream.as_str(), u.url.port),
            ("a/b", "key?x=1", 1935)
        );
        assert!(RtmpUrl::parse("rtmp://h/onlyapp").is_err());
    }
}
