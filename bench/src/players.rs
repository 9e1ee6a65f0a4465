//! HTTP-FLV, WebSocket-FLV, HTTP-TS and HLS players.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use media::flv::{FlvReader, TAG_VIDEO};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::http::{self, Url};
use crate::marker;
use crate::stats::Tracker;

const READ_SIZE: usize = 16 * 1024;

/// One HTTP-FLV player: GET, de-chunk, demux, count video tags.
pub async fn flv_player(url: &Url, t: &mut Tracker) -> anyhow::Result<()> {
    let mut body = BytesMut::with_capacity(READ_SIZE);
    let mut flv = FlvReader::new();
    stream_body(url, t, |data, t| {
        body.extend_from_slice(data);
        while let Some(tag) = flv.read(&mut body).context("FLV")? {
            if tag.tag_type == TAG_VIDEO {
                t.video(&tag.payload);
            }
        }
        Ok(())
    })
    .await
}

/// One HTTP-TS player: GET, de-chunk, and for each video access unit its first bytes, where
/// the bench marker is; each is counted and timed as an HTTP-FLV video tag is.
pub async fn http_ts_player(url: &Url, t: &mut Tracker) -> anyhow::Result<()> {
    let mut ts = TsCounter {
        keep_starts: true,
        ..TsCounter::default()
    };
    stream_body(url, t, |data, t| {
        ts.feed(data);
        for start in ts.take_starts() {
            t.coded_frame(marker::find_annexb(&start));
        }
        Ok(())
    })
    .await
}

/// GET `url` and hand its body, de-chunked, to `sink` piece by piece until it ends.
async fn stream_body(
    url: &Url,
    t: &mut Tracker,
    mut sink: impl FnMut(&[u8], &mut Tracker) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(url.addr()).await.context("connect")?;
    let _ = stream.set_nodelay(true);
    let mut raw = BytesMut::with_capacity(READ_SIZE);
    let head = http::get(&mut stream, url, false, &mut raw).await?;
    if head.status != 200 {
        bail!("HTTP {}", head.status);
    }
    let mut body_state = head.body;
    loop {
        let mut failed = Ok(());
        let done = body_state.feed(&mut raw, &mut |d: &[u8]| {
            if failed.is_ok() {
                failed = sink(d, t);
            }
        })?;
        failed?;
        if done {
            return Ok(());
        }
        if !read_more(&mut stream, &mut raw, t).await? {
            return Ok(());
        }
    }
}

/// Reads the video of a transport stream fed in arbitrary pieces: counts the video PES
/// starts and, with `keep_starts`, keeps the first [`TS_AU_START`] bytes of each video
/// access unit, where the bench marker is ([`TsCounter::take_starts`]).
#[derive(Default)]
pub struct TsCounter {
    carry: Vec<u8>,
    pub video_pes: u64,
    pub keep_starts: bool,
    /// The access unit being gathered, until it holds enough to find the marker.
    gathering: Option<Vec<u8>>,
    starts: Vec<Vec<u8>>,
}

/// How much of an access unit is kept to look for the marker.
const TS_AU_START: usize = 512;

impl TsCounter {
    pub fn feed(&mut self, mut data: &[u8]) {
        if !self.carry.is_empty() {
            let need = 188 - self.carry.len();
            let take = need.min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < 188 {
                return;
            }
            let packet = std::mem::take(&mut self.carry);
            self.packet(&packet);
            self.carry = packet;
            self.carry.clear();
        }
        let mut chunks = data.chunks_exact(188);
        for p in &mut chunks {
            self.packet(p);
        }
        self.carry.extend_from_slice(chunks.remainder());
    }

    /// The starts of the access units complete so far.
    pub fn take_starts(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.starts.drain(..)
    }

    /// The end of the stream (an HLS segment's): the start of the access unit still being
    /// gathered, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.gathering.take()
    }

    fn packet(&mut self, p: &[u8]) {
        if p[0] != 0x47 {
            return;
        }
        let mut at = 4;
        match (p[3] >> 4) & 3 {
            1 => {}
            3 => at += 1 + usize::from(p[4]),
            _ => return,
        }
        let Some(payload) = p.get(at..) else {
            return;
        };
        if p[1] & 0x40 != 0 {
            let is_video = payload.len() >= 9
                && payload[..3] == [0, 0, 1]
                && (0xE0..=0xEF).contains(&payload[3]);
            if !is_video {
                return;
            }
            self.video_pes += 1;
            if self.keep_starts {
                self.starts.extend(self.gathering.take());
                let data = payload
                    .get(9 + usize::from(payload[8])..)
                    .unwrap_or_default();
                self.gathering = Some(Vec::with_capacity(TS_AU_START));
                self.gather(data);
            }
        } else if self.video_pid(p) {
            self.gather(payload);
        }
    }

    /// Whether `p` continues the video PES being gathered (ferrolive's video PID).
    fn video_pid(&self, p: &[u8]) -> bool {
        self.gathering.is_some() && u16::from_be_bytes([p[1], p[2]]) & 0x1FFF == 0x100
    }

    fn gather(&mut self, data: &[u8]) {
        if let Some(au) = &mut self.gathering {
            au.extend_from_slice(&data[..data.len().min(TS_AU_START - au.len())]);
            if au.len() >= TS_AU_START {
                self.starts.extend(self.gathering.take());
            }
        }
    }
}

/// A keep-alive HTTP connection to one host, reopened when needed.
pub(crate) struct Client {
    conn: Option<(String, TcpStream)>,
    raw: BytesMut,
}

impl Client {
    pub(crate) fn new() -> Client {
        Client {
            conn: None,
            raw: BytesMut::with_capacity(READ_SIZE),
        }
    }

    /// GETs `url`, passing body bytes to `sink`; returns the status.
    pub(crate) async fn get(
        &mut self,
        url: &Url,
        t: &mut Tracker,
        sink: &mut impl FnMut(&[u8]),
    ) -> anyhow::Result<u16> {
        let mut may_retry = true;
        loop {
            let (mut stream, reused) = match self.conn.take() {
                Some((addr, stream)) if addr == url.addr() => (stream, true),
                _ => {
                    let s = TcpStream::connect(url.addr()).await.context("connect")?;
                    let _ = s.set_nodelay(true);
                    self.raw.clear();
                    (s, false)
                }
            };
            match fetch(&mut stream, url, &mut self.raw, t, sink).await {
                Ok((status, keep)) => {
                    if keep {
                        self.conn = Some((url.addr(), stream));
                    }
                    return Ok(status);
                }
                // A reused connection the server closed meanwhile: retry once on a new one.
                Err(_) if reused && may_retry => may_retry = false,
                Err(e) => return Err(e),
            }
        }
    }
}

async fn fetch(
    stream: &mut TcpStream,
    url: &Url,
    raw: &mut BytesMut,
    t: &mut Tracker,
    sink: &mut impl FnMut(&[u8]),
) -> anyhow::Result<(u16, bool)> {
    let before = raw.len();
    let head = http::get(stream, url, true, raw).await?;
    t.bytes(raw.len().saturating_sub(before));
    let mut body = head.body;
    loop {
        if body.feed(raw, sink)? {
            return Ok((head.status, head.keep_alive));
        }
        if raw.capacity() - raw.len() < 1024 {
            raw.reserve(READ_SIZE);
        }
        let n = stream.read_buf(raw).await?;
        if n == 0 {
            if body == http::Body::UntilClose {
                return Ok((head.status, false));
            }
            bail!("connection closed mid-body");
        }
        t.bytes(n);
    }
}

struct Playlist {
    target: Duration,
    media_sequence: u64,
    segments: Vec<String>,
}

fn parse_playlist(text: &str) -> anyhow::Result<Playlist> {
    if !text.starts_with("#EXTM3U") {
        bail!("not an M3U8 playlist");
    }
    let mut p = Playlist {
        target: Duration::from_secs(2),
        media_sequence: 0,
        segments: Vec::new(),
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = Duration::from_secs_f64(v.trim().parse::<f64>().unwrap_or(2.0).max(0.1));
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.trim().parse().unwrap_or(0);
        } else if line.starts_with("#EXT-X-STREAM-INF") {
            bail!("master playlists are not supported: point --url-hls at a media playlist");
        } else if !line.is_empty() && !line.starts_with('#') {
            p.segments.push(line.to_owned());
        }
    }
    Ok(p)
}

/// One HLS poller: fetches the playlist every target-duration/2 and downloads new segments.
/// Each video frame of a segment is timed by the marker in its first bytes: its latency is
/// the segment's arrival (the whole segment read) minus the frame's send time.
pub async fn hls_player(url: &Url, t: &mut Tracker) -> anyhow::Result<()> {
    let mut client = Client::new();
    let mut text = Vec::with_capacity(1024);
    let mut last: Option<u64> = None;
    loop {
        let started = Instant::now();
        text.clear();
        let status = client
            .get(url, t, &mut |d: &[u8]| text.extend_from_slice(d))
            .await
            .context("playlist")?;
        if status != 200 {
            bail!("playlist: HTTP {status}");
        }
        let playlist = parse_playlist(&String::from_utf8_lossy(&text))?;
        let count = playlist.segments.len() as u64;
        for (i, uri) in playlist.segments.iter().enumerate() {
            let seq = playlist.media_sequence + i as u64;
            // Start at the live edge (the newest segment), then take every new one.
            let wanted = match last {
                None => i as u64 + 1 == count,
                Some(l) => seq > l,
            };
            if !wanted {
                continue;
            }
            let seg_url = url.join(uri)?;
            let mut ts = TsCounter {
                keep_starts: true,
                ..TsCounter::default()
            };
            let mut markers = Vec::new();
            let status = client
                .get(&seg_url, t, &mut |d: &[u8]| {
                    ts.feed(d);
                    markers.extend(ts.take_starts().map(|start| marker::find_annexb(&start)));
                })
                .await
                .context("segment")?;
            if status != 200 {
                bail!("segment {uri}: HTTP {status}");
            }
            let arrived = marker::now_us();
            // The segment's last access unit, shorter than what is gathered of each.
            markers.extend(ts.finish().map(|start| marker::find_annexb(&start)));
            last = Some(seq);
            t.segments += 1;
            t.frame_arrived(arrived);
            t.hls_frames(ts.video_pes);
            for found in markers {
                t.segment_frame(found, arrived);
            }
        }
        tokio::time::sleep_until(started + playlist.target / 2).await;
    }
}

/// One WebSocket-FLV player: the upgrade, then each binary message is the FLV header or one
/// tag; video tags are counted and timed as HTTP-FLV's are.
pub async fn ws_flv_player(url: &Url, t: &mut Tracker) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(url.addr()).await.context("connect")?;
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: ZmVycm9saXZlLWJlbmNoIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        url.path,
        url.addr()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = BytesMut::with_capacity(READ_SIZE);
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            if !raw.starts_with(b"HTTP/1.1 101") {
                bail!("no upgrade: {}", String::from_utf8_lossy(&raw[..end]));
            }
            let _ = raw.split_to(end + 4);
            break;
        }
        if raw.len() > 8192 || stream.read_buf(&mut raw).await? == 0 {
            bail!("no upgrade");
        }
    }
    let mut flv = FlvReader::new();
    let mut body = BytesMut::with_capacity(READ_SIZE);
    loop {
        while let Some((opcode, payload)) = ws_frame(&mut raw)? {
            match opcode {
                0x2 => body.extend_from_slice(&payload),
                0x8 => return Ok(()),
                _ => {}
            }
        }
        while let Some(tag) = flv.read(&mut body).context("FLV")? {
            if tag.tag_type == TAG_VIDEO {
                t.video(&tag.payload);
            }
        }
        if !read_more(&mut stream, &mut raw, t).await? {
            return Ok(());
        }
    }
}

/// Read what the server sent next into `raw`; false once it closed.
async fn read_more(
    stream: &mut TcpStream,
    raw: &mut BytesMut,
    t: &mut Tracker,
) -> anyhow::Result<bool> {
    if raw.capacity() - raw.len() < 1024 {
        raw.reserve(READ_SIZE);
    }
    let n = stream.read_buf(raw).await?;
    t.bytes(n);
    Ok(n > 0)
}

/// One whole unmasked frame from a server off the front of `buf`: its opcode and payload.
fn ws_frame(buf: &mut BytesMut) -> anyhow::Result<Option<(u8, BytesMut)>> {
    let (Some(&first), Some(&second)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        bail!("a masked frame from the server");
    }
    let (len, at) = match second & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into()?) as usize, 10),
            None => return Ok(None),
        },
        short => (usize::from(short), 2),
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let _ = buf.split_to(at);
    Ok(Some((first & 0x0F, buf.split_to(len))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_counter_counts_video_pes_starts_across_pieces() {
        let mut stream = Vec::new();
        for i in 0..10u8 {
            let mut p = [0xFFu8; 188];
            p[0] = 0x47;
            p[1] = if i % 2 == 0 { 0x41 } else { 0x01 }; // PUSI on even packets
            p[2] = 0x00;
            p[3] = 0x10 | (i & 0xF);
            p[4..8].copy_from_slice(&[0, 0, 1, if i == 4 { 0xC0 } else { 0xE0 }]);
            stream.extend_from_slice(&p);
        }
        for piece in [1, 7, 188, 200, 1000] {
            let mut c = TsCounter::default();
            for part in stream.chunks(piece) {
                c.feed(part);
            }
            assert_eq!(c.video_pes, 4, "piece {piece}"); // packets 0, 2, 6, 8 (4 is audio)
        }
    }

    #[test]
    fn playlist_parsing() {
        let p = parse_playlist("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\nroom/7.ts\n#EXTINF:2.0,\nroom/8.ts\n").unwrap();
        assert_eq!((p.target, p.media_sequence), (Duration::from_secs(2), 7));
        assert_eq!(p.segments, ["room/7.ts", "room/8.ts"]);
        assert!(parse_playlist("nope").is_err());
    }
}
