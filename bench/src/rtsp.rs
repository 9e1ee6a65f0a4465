//! RTSP players over TCP: OPTIONS, DESCRIBE, a SETUP per track with interleaved channels,
//! PLAY, then the interleaved RTP until the stream ends. media's sans-IO RTSP code frames
//! the requests and reads responses and interleaved frames off the one byte stream.
//!
//! Nothing is depacketized: an access unit is the video packets of one RTP timestamp (it
//! ends at the marker bit, or at a packet of another timestamp when the marked one is
//! missing), and the bench marker is looked for in its first packets. The publisher puts
//! its SEI first in every frame and a packetizer sends a NAL unit that small whole, so it
//! is the first packet's payload, or the second's on keyframes (after the aggregation
//! packet of parameter sets). That keeps a player at a few comparisons per packet.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use media::rtp::RtpPacket;
use media::rtsp::{read_message, Message, Method, Request, Response, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::Url;
use crate::marker;
use crate::stats::Tracker;

/// Initial read buffer; it grows only as far as one read needs.
const READ_SIZE: usize = 16 * 1024;
/// How often a playing session says it is still there (servers time out silent sessions,
/// typically after 60 s).
const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// The packets at the start of an access unit searched for the bench marker: the
/// parameter sets' aggregation packet, the SEI, and some slack for an access unit
/// delimiter or a server that sends parameter sets one per packet.
const MARKER_PACKETS: u32 = 4;
/// The port `ferrolive standalone` serves RTSP on unless told otherwise (`--rtsp-addr`).
pub const DEFAULT_PORT: u16 = 8554;

/// The RTSP URL of the stream published at `publish` (`rtmp://host:port/app/room`): the
/// same host and path on ferrolive's default RTSP port.
pub fn url_of_published(publish: &str) -> anyhow::Result<Url> {
    let publish = Url::parse(publish)?;
    Ok(Url {
        scheme: "rtsp".to_owned(),
        port: DEFAULT_PORT,
        ..publish
    })
}

/// `rtsp://host:port/path` as written in requests.
fn uri(url: &Url) -> String {
    format!("rtsp://{}{}", url.addr(), url.path)
}

/// One RTSP player: plays until the stream ends or the caller's timeout drops it.
pub async fn player(url: &Url, t: &mut Tracker) -> anyhow::Result<()> {
    let stream = TcpStream::connect(url.addr()).await.context("connect")?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        rbuf: BytesMut::with_capacity(READ_SIZE),
        wbuf: BytesMut::with_capacity(512),
        cseq: 0,
        session: None,
    };
    let request_uri = uri(url);
    conn.request(t, Method::Options, &request_uri, &[]).await?;
    let described = conn
        .request(
            t,
            Method::Describe,
            &request_uri,
            &[("Accept", "application/sdp")],
        )
        .await?;
    let base = described
        .headers
        .get("Content-Base")
        .or_else(|| described.headers.get("Content-Location"))
        .unwrap_or(&request_uri)
        .to_owned();
    let sdp = media::sdp::parse(&described.body).context("DESCRIBE: SDP")?;
    let mut tracks = Vec::new();
    for media in &sdp.media {
        let video = match media.media.as_str() {
            "video" => true,
            "audio" => false,
            _ => continue, // nothing to count in other media
        };
        // Track N on channels 2N and 2N+1, as ferrolive answers any TCP SETUP.
        let channel = u8::try_from(2 * tracks.len()).context("too many tracks")?;
        let transport = format!("RTP/AVP/TCP;unicast;interleaved={channel}-{}", channel + 1);
        let control = control_url(&base, media.control.as_deref().unwrap_or("*"));
        let answer = conn
            .request(t, Method::Setup, &control, &[("Transport", &transport)])
            .await?;
        if conn.session.is_none() {
            conn.session = answer.headers.session().map(str::to_owned);
        }
        // The channels the server picked, which need not be the ones asked for.
        let channel = answer
            .headers
            .get("Transport")
            .and_then(Transport::parse)
            .and_then(|t| t.interleaved)
            .map_or(channel, |(rtp, _)| rtp);
        tracks.push(Track {
            channel,
            video,
            next_sequence: None,
        });
    }
    if !tracks.iter().any(|t| t.video) {
        bail!("DESCRIBE: no video track");
    }
    if conn.session.is_none() {
        bail!("SETUP: no Session header");
    }
    conn.request(t, Method::Play, &request_uri, &[]).await?;

    let mut rtp = Receiver { tracks, unit: None };
    let keep_alive = tokio::time::sleep(KEEP_ALIVE);
    tokio::pin!(keep_alive);
    loop {
        while let Some(message) = read_message(&mut conn.rbuf).context("from the server")? {
            match message {
                Message::Interleaved { channel, payload } => rtp.packet(channel, payload, t)?,
                Message::Response(response) => check(&Method::GetParameter, &response)?,
                // ferrolive asks players nothing; another server's request goes unanswered.
                Message::Request(_) => {}
            }
        }
        conn.reserve();
        tokio::select! {
            read = conn.stream.read_buf(&mut conn.rbuf) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                t.bytes(n);
            }
            () = &mut keep_alive => {
                conn.send(Method::GetParameter, &request_uri, &[]).await?;
                keep_alive.as_mut().reset(tokio::time::Instant::now() + KEEP_ALIVE);
            }
        }
    }
}

/// A track's SETUP URL: its `a=control`, absolute or relative to `base` (appended with a
/// '/' as ffmpeg and live555 do, whether or not the base ends with one).
fn control_url(base: &str, control: &str) -> String {
    if control.contains("://") {
        control.to_owned()
    } else if control == "*" || control.is_empty() {
        base.to_owned()
    } else {
        format!("{}/{}", base.trim_end_matches('/'), control)
    }
}

/// A non-200 answer to `method` as an error.
fn check(method: &Method, response: &Response) -> anyhow::Result<()> {
    if response.status != 200 {
        bail!(
            "{}: {} {}",
            method.as_str(),
            response.status,
            response.reason
        );
    }
    Ok(())
}

/// One player's connection while it negotiates.
struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    cseq: u32,
    /// The session id, from the first SETUP answer on.
    session: Option<String>,
}

impl Conn {
    /// Sends a request (with the session, once there is one).
    async fn send(
        &mut self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.cseq += 1;
        let mut request =
            Request::new(method, uri, self.cseq).header("User-Agent", "ferrolive-bench");
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        if let Some(session) = &self.session {
            request = request.header("Session", session.clone());
        }
        self.wbuf.clear();
        request.encode(&mut self.wbuf);
        self.stream.write_all(&self.wbuf).await?;
        Ok(())
    }

    /// Sends a request and reads until its answer, which must be 200. What follows the
    /// answer (PLAY's first packets) stays in the read buffer.
    async fn request(
        &mut self,
        t: &mut Tracker,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        self.send(method.clone(), uri, headers).await?;
        loop {
            while let Some(message) =
                read_message(&mut self.rbuf).with_context(|| method.as_str().to_owned())?
            {
                if let Message::Response(response) = message {
                    if response.headers.cseq() == Some(self.cseq) {
                        check(&method, &response)?;
                        return Ok(response);
                    }
                }
            }
            self.reserve();
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                bail!("{}: connection closed by the server", method.as_str());
            }
            t.bytes(n);
        }
    }

    fn reserve(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_SIZE);
        }
    }
}

/// A set-up track: the channel its RTP comes on, and the sequence number expected next.
struct Track {
    channel: u8,
    video: bool,
    next_sequence: Option<u16>,
}

/// The video access unit being received.
struct Unit {
    timestamp: u32,
    packets: u32,
    marker: Option<(u64, u64)>,
}

/// Counts a player's RTP: packets, gaps in sequence numbers, video access units.
struct Receiver {
    tracks: Vec<Track>,
    unit: Option<Unit>,
}

impl Receiver {
    fn packet(&mut self, channel: u8, payload: Bytes, t: &mut Tracker) -> anyhow::Result<()> {
        // RTCP (the odd channels) and channels we did not set up are only bytes.
        let Some(track) = self.tracks.iter_mut().find(|tr| tr.channel == channel) else {
            return Ok(());
        };
        let packet = RtpPacket::parse(payload).context("RTP")?;
        let sequence = packet.header.sequence;
        if let Some(expected) = track.next_sequence {
            let gap = sequence.wrapping_sub(expected);
            // More than half the circle ahead is a packet from the past, not a loss.
            if gap < 0x8000 {
                t.rtp_packets_lost += u64::from(gap);
            }
        }
        track.next_sequence = Some(sequence.wrapping_add(1));
        if !track.video {
            t.rtp_audio_packets += 1;
            return Ok(());
        }
        t.rtp_video_packets += 1;
        let timestamp = packet.header.timestamp;
        // A new timestamp ends the last access unit even if its marked packet is missing.
        if self.unit.as_ref().is_some_and(|u| u.timestamp != timestamp) {
            self.end_unit(t);
        }
        let unit = self.unit.get_or_insert(Unit {
            timestamp,
            packets: 0,
            marker: None,
        });
        if unit.marker.is_none() && unit.packets < MARKER_PACKETS {
            unit.marker = marker::find_sample(&packet.payload);
        }
        unit.packets += 1;
        if packet.header.marker {
            self.end_unit(t);
        }
        Ok(())
    }

    /// A whole access unit arrived now: one frame, timed as an FLV tag is when it is read.
    fn end_unit(&mut self, t: &mut Tracker) {
        if let Some(unit) = self.unit.take() {
            t.coded_frame(unit.marker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls() {
        let base = "rtsp://h:8554/live/room/";
        assert_eq!(
            control_url(base, "trackID=1"),
            "rtsp://h:8554/live/room/trackID=1"
        );
        assert_eq!(
            control_url("rtsp://h/live/room", "trackID=0"),
            "rtsp://h/live/room/trackID=0"
        );
        assert_eq!(control_url(base, "*"), base);
        assert_eq!(control_url(base, "rtsp://o/x/y"), "rtsp://o/x/y");
    }

    /// The interleaved packets of marked frames as ferrolive's packetizer makes them:
    /// every frame is counted once, with its marker, and a missing packet is counted.
    #[test]
    fn access_units_markers_and_lost_packets() {
        use media::codec::AvcConfig;
        use media::rtp::{PacketizerParams, VideoPacketizer};
        use media::rtsp::write_interleaved;

        let sps = Bytes::from_static(&[0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40, 0x50]);
        let pps = Bytes::from_static(&[0x68, 0xEB, 0xE3, 0xCB]);
        let config = AvcConfig::from_parameter_sets(vec![sps], vec![pps]).unwrap();
        let mut packetizer = VideoPacketizer::new(PacketizerParams::new(0, 96, 1, 65_530, 0));
        let header = [&[0x17, 0, 0, 0, 0][..], &config.record()].concat();
        assert!(packetizer.push(&header, 0).is_none());
        let mut stream = BytesMut::new();
        for seq in 0..3u64 {
            let key = seq == 0;
            // A slice of 3000 bytes: three fragments after the SEI.
            let mut slice = vec![0, 0, 0x0B, 0xB8, if key { 0x65 } else { 0x41 }];
            slice.resize(4 + 3000, 0x5A);
            let header5 = [if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
            let tag = marker::marked_video(&header5, seq, 1_000 + seq, 4, &slice);
            let packets = packetizer.push(&tag, seq * 33).unwrap();
            stream.extend_from_slice(packets.interleaved());
            // RTCP on the odd channel is not RTP.
            write_interleaved(1, &[0x80, 200, 0, 6], &mut stream);
        }

        let shared = crate::stats::Shared::new(true, 500);
        let mut t = Tracker::new(shared, crate::stats::Proto::Rtsp);
        let mut receiver = Receiver {
            tracks: vec![Track {
                channel: 0,
                video: true,
                next_sequence: None,
            }],
            unit: None,
        };
        let mut dropped = false;
        while let Some(message) = read_message(&mut stream).unwrap() {
            let Message::Interleaved { channel, payload } = message else {
                panic!("not interleaved");
            };
            // The first packet of the last frame (its SEI) goes missing.
            let last_frame = t.frames == 2;
            if channel == 0 && last_frame && !dropped && receiver.unit.is_none() {
                dropped = true;
                continue;
            }
            receiver.packet(channel, payload, &mut t).unwrap();
        }
        assert_eq!(t.frames, 3);
        assert_eq!(
            (t.first_seq, t.last_seq),
            (Some(0), Some(1)),
            "the last SEI was lost"
        );
        assert_eq!(t.rtp_packets_lost, 1);
        // Keyframe: parameter sets, SEI, 3 fragments; the others: SEI, 3 fragments.
        assert_eq!(t.rtp_video_packets, 5 + 4 + 3);
    }

    #[test]
    fn default_url_is_the_published_room_on_the_rtsp_port() {
        let url = url_of_published("rtmp://127.0.0.1:1935/live/bench").unwrap();
        assert_eq!(uri(&url), "rtsp://127.0.0.1:8554/live/bench");
    }
}
