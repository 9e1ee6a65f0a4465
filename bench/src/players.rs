//! HTTP-FLV and HLS players.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use media::flv::{FlvReader, TAG_VIDEO};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::http::{self, Url};
use crate::marker;
use crate::stats::Tracker;

const READ_SIZE: usize = 16 * 1024;

/// One HTTP-FLV player: GET, de-chunk, demux, count video tags.
pub async fn flv_player(url: &Url, t: &mut Tracker) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(url.addr()).await.context("connect")?;
    let _ = stream.set_nodelay(true);
    let mut raw = BytesMut::with_capacity(READ_SIZE);
    let head = http::get(&mut stream, url, false, &mut raw).await?;
    if head.status != 200 {
        bail!("HTTP {}", head.status);
    }
    let mut body_state = head.body;
    let mut body = BytesMut::with_capacity(READ_SIZE);
    let mut flv = FlvReader::new();
    loop {
        let done = body_state.feed(&mut raw, &mut |d: &[u8]| body.extend_from_slice(d))?;
        while let Some(tag) = flv.read(&mut body).context("FLV")? {
            if tag.tag_type == TAG_VIDEO {
                t.video(&tag.payload);
            }
        }
        if done {
            return Ok(());
        }
        if raw.capacity() - raw.len() < 1024 {
            raw.reserve(READ_SIZE);
        }
        let n = stream.read_buf(&mut raw).await?;
        if n == 0 {
            return Ok(());
        }
        t.bytes(n);
    }
}

/// Counts video PES starts in a transport stream fed in arbitrary pieces.
#[derive(Default)]
pub struct TsCounter {
    carry: Vec<u8>,
    pub video_pes: u64,
}

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

    fn packet(&mut self, p: &[u8]) {
        if p[0] != 0x47 || p[1] & 0x40 == 0 {
            return;
        }
        let mut at = 4;
        match (p[3] >> 4) & 3 {
            1 => {}
            3 => at += 1 + usize::from(p[4]),
            _ => return,
        }
        if let Some(h) = p.get(at..at + 4) {
            if h[..3] == [0, 0, 1] && (0xE0..=0xEF).contains(&h[3]) {
                self.video_pes += 1;
            }
        }
    }
}

/// A keep-alive HTTP connection to one host, reopened when needed.
struct Client {
    conn: Option<(String, TcpStream)>,
    raw: BytesMut,
}

impl Client {
    /// GETs `url`, passing body bytes to `sink`; returns the status.
    async fn get(
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
pub async fn hls_player(url: &Url, t: &mut Tracker) -> anyhow::Result<()> {
    let mut client = Client {
        conn: None,
        raw: BytesMut::with_capacity(READ_SIZE),
    };
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
            let mut ts = TsCounter::default();
            let status = client
                .get(&seg_url, t, &mut |d: &[u8]| ts.feed(d))
                .await
                .context("segment")?;
            if status != 200 {
                bail!("segment {uri}: HTTP {status}");
            }
            last = Some(seq);
            t.segments += 1;
            t.frame_arrived(marker::now_us());
            t.hls_frames(ts.video_pes);
        }
        tokio::time::sleep_until(started + playlist.target / 2).await;
    }
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
