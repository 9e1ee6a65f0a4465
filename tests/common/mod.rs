//! Helpers for end-to-end tests: the real `ferrolive` binary, real ffmpeg/ffprobe, and a
//! small HTTP-FLV reader built on the project's own demuxer.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use media::flv::{FlvReader, FlvTag};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn require_ffmpeg() {
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "{tool} is required: run the test command from README.md, which installs it"
        );
    }
}

/// A running `ferrolive` node, killed when dropped.
pub struct Server {
    child: Child,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
}

fn local_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

impl Server {
    /// `ferrolive standalone` publishing by room name (no channel keys), fresh data dir.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_after(None, extra)
    }

    /// The same, started by `sh` after the shell command `setup` (say, a `ulimit`).
    pub fn start_after(setup: Option<&str>, extra: &[&str]) -> Server {
        let data = temp_dir(&format!("data-{}", free_port()));
        let mut args = vec!["--rtmp-noauth", "--data-dir", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        Server::spawn_after(setup, "standalone", &args)
    }

    /// `ferrolive <subcommand>` with fresh listener ports and `args`. Tests run in
    /// parallel, so a port found free may be taken before the node binds it: then it tries
    /// other ports.
    pub fn spawn(subcommand: &str, args: &[&str]) -> Server {
        Server::spawn_after(None, subcommand, args)
    }

    fn spawn_after(setup: Option<&str>, subcommand: &str, args: &[&str]) -> Server {
        for _ in 0..5 {
            let (rtmp, http, api) = (local_addr(), local_addr(), local_addr());
            if let Some(server) = Server::try_spawn_at(setup, subcommand, args, rtmp, http, api) {
                return server;
            }
        }
        panic!("{subcommand} did not start on any free ports");
    }

    /// The same on given addresses (to restart a node where it was).
    pub fn spawn_at(
        subcommand: &str,
        args: &[&str],
        rtmp: SocketAddr,
        http: SocketAddr,
        api: SocketAddr,
    ) -> Server {
        Server::try_spawn_at(None, subcommand, args, rtmp, http, api)
            .unwrap_or_else(|| panic!("{subcommand} exited while starting (its ports taken?)"))
    }

    /// `None` when the node exits while starting (a node that cannot bind exits at once;
    /// a check that only asks the port could be answered by another test's server).
    fn try_spawn_at(
        setup: Option<&str>,
        subcommand: &str,
        args: &[&str],
        rtmp: SocketAddr,
        http: SocketAddr,
        api: SocketAddr,
    ) -> Option<Server> {
        require_ffmpeg();
        let binary = env!("CARGO_BIN_EXE_ferrolive");
        let mut cmd = match setup {
            Some(setup) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("{setup} && exec \"$0\" \"$@\"")]);
                sh.arg(binary);
                sh
            }
            None => Command::new(binary),
        };
        cmd.arg(subcommand);
        if subcommand != "control-api" {
            cmd.args([
                "--rtmp-addr",
                &rtmp.to_string(),
                "--http-addr",
                &http.to_string(),
            ]);
        }
        if subcommand != "origin" && subcommand != "edge" {
            cmd.args(["--api-addr", &api.to_string()]);
        }
        let child = cmd
            .args(["--log", "info"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ferrolive");
        let server = Server {
            child,
            rtmp,
            http,
            api,
        };
        let (probe, path) = if subcommand == "control-api" {
            (api, "/healthz")
        } else {
            (http, "/healthz")
        };
        let mut server = server;
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(probe, path).map(|r| r.status) != Some(200) {
            if !server.is_running() {
                return None;
            }
            assert!(Instant::now() < deadline, "{subcommand} did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(50));
        server.is_running().then_some(server)
    }

    /// The node's process id (`sh` execs it, so also under [`Server::start_after`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the process abruptly, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit (bounded).
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn rtmp_url(&self, room: &str) -> String {
        format!("rtmp://{}/live/{room}", self.rtmp)
    }

    pub fn flv_url(&self, room: &str) -> String {
        format!("http://{}/live/{room}.flv", self.http)
    }

    /// Value of one metric on `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let body = http_get(self.http, "/metrics").expect("metrics").body;
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }

    /// A JSON body from the control API (`method` GET/POST/DELETE), with its status.
    pub fn api(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let r = http_request(
            self.api,
            &format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .expect("control API response");
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait until `room` plays over HTTP-FLV.
    pub fn wait_live(&self, room: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(r) = http_get(self.http, &format!("/live/{room}.flv")) {
                if r.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "stream {room} never went live");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process id of the redis-server answering on `port`, if one does.
fn redis_pid(port: u16) -> Option<u32> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("process_id:") || !reply.ends_with(b"\r\n") {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    let line = text.lines().find_map(|l| l.strip_prefix("process_id:"))?;
    line.trim().parse().ok()
}

/// A real redis-server on a free port, killed when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// On a free port. Tests run in parallel, so a port found free may be taken before
    /// redis-server binds it: then it tries another.
    pub fn start() -> Redis {
        for _ in 0..5 {
            if let Some(redis) = Redis::try_start_on(free_port()) {
                return redis;
            }
        }
        panic!("redis-server did not start on any free port");
    }

    pub fn start_on(port: u16) -> Redis {
        Redis::try_start_on(port).unwrap_or_else(|| panic!("redis-server did not start on {port}"))
    }

    /// `None` when another process holds the port (a check that only connects could be
    /// answered by another test's server).
    fn try_start_on(port: u16) -> Option<Redis> {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server is required: run the test command from README.md, which installs it",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            if let Some(pid) = redis_pid(port) {
                if pid == child.id() {
                    return Some(Redis { child, port });
                }
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a publish of `url` is accepted: ffmpeg still running after `within` means the
/// server took it; an early exit means it was refused.
pub fn publish_accepted(url: &str, within: Duration) -> (bool, Proc) {
    let mut p = publish(url, Source::AudioVideo, 25, 0);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if p.0.try_wait().unwrap().is_some() {
            return (false, p);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (true, p)
}

/// The `data` string of a livego-style `{"status":..,"data":".."}` body.
pub fn livego_data(body: &str) -> String {
    let start = body.find("\"data\":\"").expect("data field") + 8;
    body[start..].split('"').next().unwrap().to_owned()
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What to publish.
#[derive(Clone, Copy, PartialEq)]
pub enum Source {
    AudioVideo,
    AudioOnly,
    VideoOnly,
}

/// ffmpeg publishing a test source in real time with `gop` frames per keyframe at 25 fps.
/// `seconds` of 0 publishes until killed.
pub fn publish(url: &str, source: Source, gop: u32, seconds: u32) -> Proc {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-re"]);
    if source != Source::AudioOnly {
        cmd.args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"]);
    }
    if source != Source::VideoOnly {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
    }
    if seconds > 0 {
        cmd.args(["-t", &seconds.to_string()]);
    }
    if source != Source::AudioOnly {
        let gop = gop.to_string();
        cmd.args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
        ]);
        cmd.args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"]);
    }
    if source != Source::VideoOnly {
        cmd.args(["-c:a", "aac", "-b:a", "64k"]);
    }
    cmd.args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Proc(cmd.spawn().expect("start ffmpeg publisher"))
}

/// Frames decoded per stream by ffmpeg reading `url` for `seconds`.
pub struct Decoded {
    pub video: usize,
    pub audio: usize,
    pub errors: String,
    pub elapsed: Duration,
}

pub fn decode(url: &str, seconds: f32) -> Decoded {
    let started = Instant::now();
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-rw_timeout",
            "10000000",
            "-i",
            url,
        ])
        .args(["-t", &seconds.to_string(), "-f", "framecrc", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg player");
    decoded_from(out, started.elapsed())
}

/// Decode until the stream ends by itself (no time limit), bounded by `limit`.
pub fn decode_to_end(url: &str, limit: Duration) -> (Decoded, bool) {
    let started = Instant::now();
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            url,
            "-f",
            "framecrc",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ffmpeg player");
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (decoded_from(out, started.elapsed()), false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (decoded_from(out, started.elapsed()), true)
}

fn decoded_from(out: Output, elapsed: Duration) -> Decoded {
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    // framecrc numbers streams in input order; find which index is audio from the header.
    let (video, audio) = if text.contains("#media_type 0: audio") {
        (count("1,"), count("0,"))
    } else {
        (count("0,"), count("1,"))
    };
    Decoded {
        video,
        audio,
        errors: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    }
}

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

impl FlvViewer {
    pub fn connect(addr: SocketAddr, room: &str) -> FlvViewer {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
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

    pub fn flv_header(&self) -> Option<media::flv::FlvHeader> {
        self.flv.header()
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrolive-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A minimal RTMP client on the project's own handshake, chunk and AMF code, for tests
/// that need exact control over what is sent (or that nothing is read).
pub struct RtmpClient {
    pub socket: TcpStream,
    writer: media::rtmp::chunk::ChunkWriter,
    out: BytesMut,
    seen: Vec<u8>,
}

impl RtmpClient {
    pub fn connect(addr: SocketAddr, app: &str) -> RtmpClient {
        use media::amf::Amf0Value::*;
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = BytesMut::new();
        let mut hs = media::rtmp::handshake::ClientHandshake::new([7; 1528]);
        hs.start(&mut out);
        socket.write_all(&out).unwrap();
        out.clear();
        let mut input = BytesMut::new();
        let mut buf = [0u8; 4096];
        while !hs.feed(&mut input, &mut out).unwrap() {
            let n = socket.read(&mut buf).unwrap();
            assert!(n > 0, "server closed during handshake");
            input.extend_from_slice(&buf[..n]);
        }
        let mut client = RtmpClient {
            socket,
            writer: Default::default(),
            out,
            seen: input.to_vec(),
        };
        let tc_url = format!("rtmp://{addr}/{app}");
        let props = Object(vec![
            ("app".into(), String(app.into())),
            ("tcUrl".into(), String(tc_url)),
        ]);
        client.command(0, vec![String("connect".into()), Number(1.0), props]);
        client.command(0, vec![String("createStream".into()), Number(2.0), Null]);
        client
    }

    pub fn command(&mut self, stream_id: u32, values: Vec<media::amf::Amf0Value>) {
        let payload = media::amf::encode_all(&values);
        self.send(3, 20, stream_id, 0, &payload);
    }

    pub fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, timestamp: u32, payload: &[u8]) {
        let msg = media::rtmp::chunk::RtmpMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        self.writer.write(&msg, &mut self.out);
        self.socket.write_all(&self.out).unwrap();
        self.out.clear();
    }

    /// Read until `needle` shows up in what the server sent (status codes are plain text
    /// inside the AMF). False if the connection closes or 10 s pass first.
    pub fn wait_for(&mut self, needle: &str) -> bool {
        let mut buf = [0u8; 8192];
        loop {
            if self
                .seen
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                return true;
            }
            match self.socket.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Publish `room`; true when the server answered Publish.Start.
    pub fn publish(&mut self, room: &str) -> bool {
        use media::amf::Amf0Value::*;
        self.command(
            1,
            vec![
                String("publish".into()),
                Number(0.0),
                Null,
                String(room.into()),
                String("live".into()),
            ],
        );
        self.wait_for("NetStream.Publish.Start")
    }

    pub fn play(&mut self, room: &str) {
        use media::amf::Amf0Value::*;
        self.command(
            1,
            vec![
                String("play".into()),
                Number(0.0),
                Null,
                String(room.into()),
            ],
        );
    }

    pub fn unpublish(&mut self) {
        use media::amf::Amf0Value::*;
        self.command(
            0,
            vec![
                String("deleteStream".into()),
                Number(0.0),
                Null,
                Number(1.0),
            ],
        );
    }
}
