//! A minimal RTMP client (handshake, connect, createStream, play/publish, acknowledgements,
//! ping answers) on media's sans-IO handshake, chunk and AMF code.

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use media::amf::{self, Amf0Value};
use media::rtmp::chunk::{ChunkReader, ChunkWriter, RtmpMessage};
use media::rtmp::handshake::ClientHandshake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::Url;
use crate::stats::Tracker;

// The server's message types and chunk stream ids serve a client just as well.
pub use media::rtmp::message::{msg_type, CSID_AUDIO, CSID_COMMAND, CSID_CONTROL, CSID_VIDEO};
const CSID_STREAM: u32 = 8;
/// Chunk size the publisher announces (what ffmpeg and OBS use).
const PUBLISH_CHUNK_SIZE: u32 = 4096;
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

pub struct RtmpConn {
    pub stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    reader: ChunkReader,
    writer: ChunkWriter,
    /// Bytes received on the socket so far (handshake included).
    pub received: u64,
    acked: u64,
    window: u32,
}

fn string(s: &str) -> Amf0Value {
    Amf0Value::String(s.to_owned())
}

impl RtmpConn {
    /// TCP connect, handshake, `connect` command; returns once the server accepted it.
    pub async fn connect(url: &RtmpUrl) -> anyhow::Result<RtmpConn> {
        let mut stream = TcpStream::connect(url.url.addr())
            .await
            .context("connect")?;
        let _ = stream.set_nodelay(true);
        let mut random = [0u8; 1528];
        fastrand::fill(&mut random);
        let mut hs = ClientHandshake::new(random);
        let mut wbuf = BytesMut::with_capacity(4096);
        let mut rbuf = BytesMut::with_capacity(READ_SIZE);
        hs.start(&mut wbuf);
        stream.write_all(&wbuf).await?;
        wbuf.clear();
        let mut received = 0u64;
        loop {
            let done = hs.feed(&mut rbuf, &mut wbuf).context("handshake")?;
            if !wbuf.is_empty() {
                stream.write_all(&wbuf).await?;
                wbuf.clear();
            }
            if done {
                break;
            }
            let n = stream.read_buf(&mut rbuf).await?;
            if n == 0 {
                bail!("closed during handshake");
            }
            received += n as u64;
        }
        let mut conn = RtmpConn {
            stream,
            rbuf,
            wbuf,
            reader: ChunkReader::new(),
            writer: ChunkWriter::new(),
            received,
            acked: 0,
            window: 0,
        };
        let props = Amf0Value::Object(vec![
            ("app".into(), string(&url.app)),
            ("type".into(), string("nonprivate")),
            (
                "flashVer".into(),
                string("FMLE/3.0 (compatible; ferrolive-bench)"),
            ),
            ("tcUrl".into(), string(&url.tc_url())),
            ("fpad".into(), Amf0Value::Boolean(false)),
            ("capabilities".into(), Amf0Value::Number(15.0)),
            ("audioCodecs".into(), Amf0Value::Number(3191.0)),
            ("videoCodecs".into(), Amf0Value::Number(252.0)),
            ("videoFunction".into(), Amf0Value::Number(1.0)),
            ("objectEncoding".into(), Amf0Value::Number(0.0)),
        ]);
        conn.command(0, vec![string("connect"), Amf0Value::Number(1.0), props])
            .await?;
        conn.wait_result(1.0).await.context("connect")?;
        Ok(conn)
    }

    pub async fn send(
        &mut self,
        csid: u32,
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        let msg = RtmpMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload,
        };
        self.writer.write(&msg, &mut self.wbuf);
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    pub async fn command(&mut self, stream_id: u32, values: Vec<Amf0Value>) -> anyhow::Result<()> {
        let csid = if stream_id == 0 {
            CSID_COMMAND
        } else {
            CSID_STREAM
        };
        self.send(
            csid,
            msg_type::COMMAND_AMF0,
            stream_id,
            0,
            amf::encode_all(&values).into(),
        )
        .await
    }

    async fn control(&mut self, type_id: u8, body: &[u8]) -> anyhow::Result<()> {
        self.send(CSID_CONTROL, type_id, 0, 0, Bytes::copy_from_slice(body))
            .await
    }

    /// Announce our outgoing chunk size and switch to it.
    pub async fn set_chunk_size(&mut self, size: u32) -> anyhow::Result<()> {
        self.control(msg_type::SET_CHUNK_SIZE, &size.to_be_bytes())
            .await?;
        self.writer.set_chunk_size(size);
        Ok(())
    }

    /// Bytes arrived on the socket: acknowledge once the peer's window is reached.
    async fn count(&mut self, n: usize) -> anyhow::Result<()> {
        self.received += n as u64;
        if self.window > 0 && self.received - self.acked >= u64::from(self.window) {
            self.acked = self.received;
            self.control(
                msg_type::ACKNOWLEDGEMENT,
                &(self.received as u32).to_be_bytes(),
            )
            .await?;
        }
        Ok(())
    }

    /// Parses a buffered message, if any; handles window ack size and ping requests.
    pub async fn poll_message(&mut self) -> anyhow::Result<Option<RtmpMessage>> {
        let Some(msg) = self.reader.read(&mut self.rbuf).context("chunk stream")? else {
            return Ok(None);
        };
        match msg.type_id {
            msg_type::WINDOW_ACK_SIZE if msg.payload.len() >= 4 => {
                self.window = u32::from_be_bytes(msg.payload[..4].try_into().unwrap_or_default());
            }
            msg_type::USER_CONTROL if msg.payload.len() >= 6 && msg.payload[..2] == [0, 6] => {
                let mut pong = [0u8, 7, 0, 0, 0, 0];
                pong[2..].copy_from_slice(&msg.payload[2..6]);
                self.control(msg_type::USER_CONTROL, &pong).await?;
            }
            _ => {}
        }
        Ok(Some(msg))
    }

    /// Reads more from the socket; returns the byte count (0 at EOF).
    pub async fn fill(&mut self) -> anyhow::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_SIZE);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        self.count(n).await?;
        Ok(n)
    }

    /// Reads without waiting (for the publisher, which mostly writes).
    pub async fn try_fill(&mut self) -> anyhow::Result<Option<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_SIZE);
        }
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(n) => {
                self.count(n).await?;
                Ok(Some(n))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn next_message(&mut self) -> anyhow::Result<RtmpMessage> {
        loop {
            if let Some(msg) = self.poll_message().await? {
                return Ok(msg);
            }
            if self.fill().await? == 0 {
                bail!("connection closed by the server");
            }
        }
    }

    /// Waits for `_result` / `_error` of transaction `tid`, failing on error statuses.
    pub async fn wait_result(&mut self, tid: f64) -> anyhow::Result<Vec<Amf0Value>> {
        loop {
            let msg = self.next_message().await?;
            let Some(values) = command_values(&msg) else {
                continue;
            };
            let name = values.first().and_then(Amf0Value::as_str).unwrap_or("");
            let id = values.get(1).and_then(Amf0Value::as_f64).unwrap_or(-1.0);
            match name {
                "_result" if id == tid => return Ok(values),
                "_error" if id == tid => bail!("server answered _error: {}", describe(&values)),
                "onStatus" => check_status(&values)?,
                _ => {}
            }
        }
    }

    /// Waits for an onStatus with `code`; any error status fails.
    pub async fn wait_status(&mut self, code: &str) -> anyhow::Result<()> {
        loop {
            let msg = self.next_message().await?;
            let Some(values) = command_values(&msg) else {
                continue;
            };
            if values.first().and_then(Amf0Value::as_str) == Some("onStatus") {
                check_status(&values)?;
                if status_code(&values) == Some(code) {
                    return Ok(());
                }
            }
        }
    }

    /// createStream; returns the message stream id.
    pub async fn create_stream(&mut self, tid: f64) -> anyhow::Result<u32> {
        self.command(
            0,
            vec![
                string("createStream"),
                Amf0Value::Number(tid),
                Amf0Value::Null,
            ],
        )
        .await?;
        let values = self.wait_result(tid).await.context("createStream")?;
        let id = values
            .get(3)
            .and_then(Amf0Value::as_f64)
            .ok_or_else(|| anyhow!("createStream result without id"))?;
        Ok(id as u32)
    }
}

fn command_values(msg: &RtmpMessage) -> Option<Vec<Amf0Value>> {
    let body = match msg.type_id {
        msg_type::COMMAND_AMF0 => &msg.payload[..],
        msg_type::COMMAND_AMF3 => msg.payload.get(1..)?,
        _ => return None,
    };
    amf::decode_all(body).ok()
}

fn status_code(values: &[Amf0Value]) -> Option<&str> {
    values
        .iter()
        .skip(2)
        .find_map(|v| v.get("code"))
        .and_then(Amf0Value::as_str)
}

fn check_status(values: &[Amf0Value]) -> anyhow::Result<()> {
    let info = values.iter().skip(2).find(|v| v.get("code").is_some());
    let level = info
        .and_then(|v| v.get("level"))
        .and_then(Amf0Value::as_str)
        .unwrap_or("");
    if level == "error" {
        bail!("{}", describe(values));
    }
    Ok(())
}

fn describe(values: &[Amf0Value]) -> String {
    status_code(values)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{values:?}"))
}

/// One RTMP player: plays until the caller's timeout drops it, feeding `t`.
pub async fn player(url: &RtmpUrl, t: &mut Tracker) -> anyhow::Result<()> {
    let mut conn = RtmpConn::connect(url).await?;
    let sid = conn.create_stream(2.0).await?;
    let play = vec![
        string("play"),
        Amf0Value::Number(0.0),
        Amf0Value::Null,
        string(&url.stream),
        Amf0Value::Number(-2.0),
    ];
    conn.command(sid, play).await?;
    // SetBufferLength (3 s) as Flash/ffmpeg send it; some servers wait for it.
    let mut set_buffer = [0u8; 10];
    set_buffer[1] = 3;
    set_buffer[2..6].copy_from_slice(&sid.to_be_bytes());
    set_buffer[6..].copy_from_slice(&3000u32.to_be_bytes());
    conn.control(msg_type::USER_CONTROL, &set_buffer).await?;
    let mut counted = conn.received;
    t.bytes(counted as usize);
    loop {
        while let Some(msg) = conn.poll_message().await? {
            match msg.type_id {
                msg_type::VIDEO => t.video(&msg.payload),
                msg_type::COMMAND_AMF0 | msg_type::COMMAND_AMF3 => {
                    if let Some(values) = command_values(&msg) {
                        if values.first().and_then(Amf0Value::as_str) == Some("onStatus") {
                            check_status(&values)?;
                        }
                    }
                }
                _ => {}
            }
        }
        let n = conn.fill().await?;
        if n == 0 {
            return Ok(());
        }
        t.bytes((conn.received - counted) as usize);
        counted = conn.received;
    }
}

/// Publishes: connect, chunk size, releaseStream/FCPublish, createStream, publish.
pub async fn start_publish(url: &RtmpUrl) -> anyhow::Result<(RtmpConn, u32)> {
    let mut conn = RtmpConn::connect(url).await?;
    conn.set_chunk_size(PUBLISH_CHUNK_SIZE).await?;
    let name = string(&url.stream);
    conn.command(
        0,
        vec![
            string("releaseStream"),
            Amf0Value::Number(2.0),
            Amf0Value::Null,
            name.clone(),
        ],
    )
    .await?;
    conn.command(
        0,
        vec![
            string("FCPublish"),
            Amf0Value::Number(3.0),
            Amf0Value::Null,
            name.clone(),
        ],
    )
    .await?;
    let sid = conn.create_stream(4.0).await?;
    conn.command(
        sid,
        vec![
            string("publish"),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            name,
            string("live"),
        ],
    )
    .await?;
    conn.wait_status("NetStream.Publish.Start")
        .await
        .context("publish")?;
    Ok((conn, sid))
}

/// `@setDataFrame` + the given script data body.
pub fn set_data_frame(script: &[u8]) -> Bytes {
    let mut out = amf::encode_all(&[string("@setDataFrame")]);
    out.extend_from_slice(script);
    let mut b = BytesMut::with_capacity(out.len());
    b.put_slice(&out);
    b.freeze()
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
