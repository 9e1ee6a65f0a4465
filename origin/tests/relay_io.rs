//! The relay connection layer against real servers: pushes to ferrolive and nginx-rtmp
//! played back by ffmpeg, pulls over RTMP and HTTP-FLV while ffmpeg publishes, RTMPS and
//! HTTPS through a TLS terminator with a test CA, and peers that misbehave.
//!
//! Needs the `ferrolive` binary built (`cargo build --release`, or `FERROLIVE_BIN`), ffmpeg,
//! and nginx with the RTMP module (`apt-get install -y nginx libnginx-mod-rtmp`); the nginx
//! tests say so and return when it is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use media::flv::{self, FlvReader};
use media::frame::{Frame, MediaKind};
use media::hub::{Hub, HubConfig};
use media::rtmp::url::RelayUrl;
use origin::relay::flv::FlvPull;
use origin::relay::rtmp::{RelayError, RtmpPull, RtmpPush};
use origin::relay::transport::Tls;
use origin::relay::Forwards;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serve::fanout::Lanes;
use serve::metrics::Metrics;
use serve::Shared;
use testkit::{free_port, temp_dir, Decoded, Server, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::time::Instant;

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn url(s: &str) -> RelayUrl {
    RelayUrl::parse(s).unwrap()
}

fn within(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn plain() -> Tls {
    Tls::new(None).unwrap()
}

// ------------------------------------------------------------------ media

/// A 6 s H.264 + AAC FLV made by ffmpeg once per test process, as frames.
fn sample() -> &'static [Arc<Frame>] {
    static FRAMES: OnceLock<Vec<Arc<Frame>>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        testkit::require_ffmpeg();
        let path = temp_dir("relay-sample").join("sample.flv");
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args([
                "-t",
                "6",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-g", "25", "-c:a", "aac", "-b:a", "64k", "-f", "flv"])
            .arg(&path)
            .status()
            .expect("run ffmpeg");
        assert!(status.success(), "ffmpeg could not make the sample");
        let frames = read_flv(&std::fs::read(&path).unwrap());
        assert!(frames.len() > 300, "{} frames in the sample", frames.len());
        frames.into_iter().map(Arc::new).collect()
    })
}

fn read_flv(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut reader = FlvReader::new();
    let mut frames = Vec::new();
    while let Some(tag) = reader.read(&mut buf).unwrap() {
        let kind = match tag.tag_type {
            flv::TAG_AUDIO => MediaKind::Audio,
            flv::TAG_VIDEO => MediaKind::Video,
            flv::TAG_SCRIPT => MediaKind::Metadata,
            _ => continue,
        };
        frames.push(Frame::new(kind, u64::from(tag.timestamp), tag.payload));
    }
    frames
}

/// Send the sample in real time (by its timestamps).
async fn push_sample(push: &mut RtmpPush) -> Result<(), RelayError> {
    let start = Instant::now();
    for frame in sample() {
        tokio::time::sleep_until(start + Duration::from_millis(frame.timestamp)).await;
        push.send(frame).await?;
    }
    Ok(())
}

/// ffmpeg decoding `url` for up to `seconds`, in a blocking thread.
async fn decode(url: String, seconds: f32) -> Decoded {
    tokio::task::spawn_blocking(move || testkit::decode(&url, seconds))
        .await
        .unwrap()
}

/// Frames written into an FLV file and decoded by ffmpeg: what a pull got is playable.
fn decode_frames(frames: &[Frame], name: &str) -> Decoded {
    let mut file = flv::header(true, true).to_vec();
    for frame in frames {
        file.extend_from_slice(&flv::encode_tag(
            frame.flv_tag_type(),
            frame.timestamp as u32,
            &frame.payload,
        ));
    }
    let path = temp_dir("relay-pulled").join(format!("{name}.flv"));
    std::fs::write(&path, file).unwrap();
    testkit::decode(path.to_str().unwrap(), 100.0)
}

/// What a pull must have got from ffmpeg's test source.
fn check_pulled(frames: &[Frame], what: &str) {
    let count = |kind| frames.iter().filter(|f| f.kind == kind).count();
    let video_headers = frames
        .iter()
        .filter(|f| f.kind == MediaKind::Video && f.sequence_header)
        .count();
    let audio_headers = frames
        .iter()
        .filter(|f| f.kind == MediaKind::Audio && f.sequence_header)
        .count();
    let keys = frames.iter().filter(|f| f.key).count();
    let first: Vec<_> = frames
        .iter()
        .take(6)
        .map(|f| (f.kind, f.timestamp, f.sequence_header, f.key))
        .collect();
    assert!(
        count(MediaKind::Metadata) >= 1,
        "{what}: no metadata; first frames {first:?}"
    );
    assert!(
        video_headers >= 1 && audio_headers >= 1,
        "{what}: no sequence headers"
    );
    assert!(keys >= 2, "{what}: {keys} keyframes");
    assert!(
        count(MediaKind::Video) >= 50,
        "{what}: {} video frames",
        count(MediaKind::Video)
    );
    assert!(
        count(MediaKind::Audio) >= 50,
        "{what}: {} audio frames",
        count(MediaKind::Audio)
    );
    let decoded = decode_frames(frames, what);
    assert!(
        decoded.video >= 50 && decoded.audio >= 50,
        "{what}: decoded {} video and {} audio frames: {}",
        decoded.video,
        decoded.audio,
        decoded.errors
    );
}

/// The pulls, for [`pull_to_end`].
trait Pull {
    fn next(&mut self) -> impl std::future::Future<Output = Result<Option<Frame>, RelayError>>;
}

impl Pull for RtmpPull {
    fn next(&mut self) -> impl std::future::Future<Output = Result<Option<Frame>, RelayError>> {
        RtmpPull::next(self)
    }
}

impl Pull for FlvPull {
    fn next(&mut self) -> impl std::future::Future<Output = Result<Option<Frame>, RelayError>> {
        FlvPull::next(self)
    }
}

/// Everything a pull gives until its clean end, bounded by `limit`.
async fn pull_to_end(mut pull: impl Pull, limit: Duration) -> Vec<Frame> {
    let mut frames = Vec::new();
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, pull.next()).await {
            Ok(Ok(Some(frame))) => frames.push(frame),
            Ok(Ok(None)) => return frames,
            Ok(Err(e)) => panic!("pull failed after {} frames: {e}", frames.len()),
            Err(_) => panic!(
                "pull did not end within {limit:?} ({} frames)",
                frames.len()
            ),
        }
    }
}

/// Wait until ffmpeg's stream is live on `server` and under way: ferrolive gives HTTP-FLV
/// players the metadata only in what it replays to them, so one that joins before the
/// metadata arrived never gets it.
fn started(server: &Server) {
    server.wait_live("src");
    std::thread::sleep(Duration::from_millis(500));
}

/// Retry `connect` until the stream is there (a publisher is starting).
async fn retry<T, F, Fut>(mut connect: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RelayError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect().await {
            Ok(t) => return t,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

// ------------------------------------------------------------------ nginx-rtmp

/// nginx with the RTMP module as a child process, its own config and a free port.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// `None` (after saying why) when nginx or its RTMP module is not installed.
    fn start() -> Option<Nginx> {
        Nginx::start_with("")
    }

    /// The same with more directives for the RTMP server block.
    fn start_with(directives: &str) -> Option<Nginx> {
        let installed = Command::new("nginx")
            .arg("-v")
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && Path::new(RTMP_MODULE).is_file();
        if !installed {
            eprintln!("SKIPPED: nginx with the RTMP module is not installed (apt-get install -y nginx libnginx-mod-rtmp)");
            return None;
        }
        for _ in 0..5 {
            let port = free_port();
            let dir = temp_dir(&format!("nginx-{port}"));
            let conf = format!(
                "load_module {RTMP_MODULE};
worker_processes 1;
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        {directives}
        application live {{
            live on;
            wait_key on;
            wait_video on;
        }}
    }}
}}
",
                dir = dir.display()
            );
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let mut child = Command::new("nginx")
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start nginx");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Nginx { child, port, dir });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nginx did not start on any free port");
    }

    fn url(&self, app: &str, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{name}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------ TLS

/// A test CA and a certificate it signed for `names` (host names or IP addresses).
struct TestPki {
    ca_pem: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn pki(name: &str, names: &[&str]) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("ferrolive relay test CA {name}"),
    );
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let params = CertificateParams::new(names).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_pem = temp_dir(&format!("relay-pki-{name}")).join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    TestPki {
        ca_pem,
        chain: vec![cert.der().clone(), ca.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// A TLS terminator in front of `upstream`: accepts TLS with the PKI's certificate and
/// forwards the plain bytes. Runs until the runtime ends.
async fn tls_terminator(pki: &TestPki, upstream: SocketAddr) -> u16 {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), PrivateKeyDer::Pkcs8(pki.key.clone_key()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

// ------------------------------------------------------------------ pushes

#[test]
fn push_to_ferrolive_plays_back() {
    let server = Server::start(&[]);
    let rt = runtime();
    rt.block_on(async {
        let target = url(&server.rtmp_url("pushed"));
        let mut push = RtmpPush::connect(&target, &plain(), within(10))
            .await
            .unwrap();
        let player = tokio::spawn(decode(server.flv_url("pushed"), 3.0));
        push_sample(&mut push).await.unwrap();
        assert!(
            push.bytes_sent() > 100_000,
            "{} bytes sent",
            push.bytes_sent()
        );
        push.close().await;
        let decoded = player.await.unwrap();
        assert!(
            decoded.video >= 25 && decoded.audio >= 25,
            "decoded {} video, {} audio frames: {}",
            decoded.video,
            decoded.audio,
            decoded.errors
        );
        assert!(decoded.errors.is_empty(), "{}", decoded.errors);
    });
}

#[test]
fn push_to_nginx_plays_back() {
    let Some(nginx) = Nginx::start() else {
        return;
    };
    let rt = runtime();
    rt.block_on(async {
        let target = url(&nginx.url("live", "pushed"));
        let mut push = RtmpPush::connect(&target, &plain(), within(10))
            .await
            .unwrap();
        let player = tokio::spawn(decode(nginx.url("live", "pushed"), 3.0));
        push_sample(&mut push).await.unwrap();
        push.close().await;
        let decoded = player.await.unwrap();
        assert!(
            decoded.video >= 25 && decoded.audio >= 25,
            "decoded {} video, {} audio frames: {}",
            decoded.video,
            decoded.audio,
            decoded.errors
        );
    });
}

// ------------------------------------------------------------------ pulls

#[test]
fn rtmp_pull_from_nginx_while_ffmpeg_publishes() {
    let Some(nginx) = Nginx::start() else {
        return;
    };
    let _ffmpeg = testkit::publish(&nginx.url("live", "src"), Source::AudioVideo, 25, 4);
    let rt = runtime();
    let frames = rt.block_on(async {
        let source = url(&nginx.url("live", "src"));
        // nginx-rtmp plays a name before it is published, and waits.
        let pull = RtmpPull::connect(&source, &plain(), within(10))
            .await
            .unwrap();
        pull_to_end(pull, Duration::from_secs(20)).await
    });
    check_pulled(&frames, "rtmp pull from nginx");
}

#[test]
fn rtmp_pull_from_ferrolive_while_ffmpeg_publishes() {
    let server = Server::start(&[]);
    let _ffmpeg = testkit::publish(&server.rtmp_url("src"), Source::AudioVideo, 25, 4);
    started(&server);
    let rt = runtime();
    let frames = rt.block_on(async {
        let source = url(&server.rtmp_url("src"));
        let tls = plain();
        let pull = retry(|| RtmpPull::connect(&source, &tls, within(10))).await;
        pull_to_end(pull, Duration::from_secs(20)).await
    });
    check_pulled(&frames, "rtmp pull from ferrolive");
}

#[test]
fn http_flv_pull_from_ferrolive_while_ffmpeg_publishes() {
    let server = Server::start(&[]);
    let _ffmpeg = testkit::publish(&server.rtmp_url("src"), Source::AudioVideo, 25, 4);
    started(&server);
    let rt = runtime();
    let frames = rt.block_on(async {
        let source = url(&server.flv_url("src"));
        let tls = plain();
        let pull = retry(|| FlvPull::connect(&source, &tls, within(10))).await;
        pull_to_end(pull, Duration::from_secs(20)).await
    });
    check_pulled(&frames, "http-flv pull from ferrolive");
}

#[test]
fn http_flv_pull_follows_a_redirect() {
    let server = Server::start(&[]);
    let _ffmpeg = testkit::publish(&server.rtmp_url("src"), Source::AudioVideo, 25, 0);
    server.wait_live("src");
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let location = server.flv_url("src");
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = vec![0; 4096];
            let _ = tcp.read(&mut head).await;
            let answer =
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
            let _ = tcp.write_all(answer.as_bytes()).await;
        });
        let source = url(&format!("http://127.0.0.1:{port}/live/src.flv"));
        let mut pull = FlvPull::connect(&source, &plain(), within(10))
            .await
            .unwrap();
        let first = pull.next().await.unwrap().unwrap();
        assert_eq!(first.kind, MediaKind::Metadata);
    });
}

// ------------------------------------------------------------------ TLS

/// Forwards as an origin runs them: one over plain RTMP (the stream's fan-out writes it,
/// as it writes to RTMP viewers) and one over RTMPS (its own task writes each frame) both
/// deliver the whole stream, and end it at the destination when it ends.
#[test]
fn forwards_over_rtmp_and_rtmps_deliver_the_stream() {
    let server = Server::start(&[]);
    let pki = pki("forwards", &["localhost"]);
    let rt = runtime();
    rt.block_on(async {
        let port = tls_terminator(&pki, server.rtmp).await;
        let shared = Shared {
            hub: Hub::new(HubConfig::default()),
            lanes: Arc::new(Lanes::new(Duration::from_millis(40))),
            metrics: Arc::new(Metrics::default()),
            hooks: Arc::new(serve::hooks::Hooks::none()),
        };
        let tls = Arc::new(Tls::new(Some(&pki.ca_pem)).unwrap());
        let forwards = Forwards::new(&shared, tls.clone(), Vec::new());
        let mut publisher = shared
            .hub
            .publish("live/src", std::time::Instant::now())
            .unwrap();
        let publishing = async {
            let start = Instant::now();
            for (n, frame) in sample().iter().enumerate() {
                if n == 3 {
                    // The stream is live (metadata and headers in): forward it.
                    let plain = url(&format!("rtmp://{}/live/plain", server.rtmp));
                    let secure = url(&format!("rtmps://localhost:{port}/live/secure"));
                    assert!(forwards.add("live/src", "plain", plain));
                    assert!(forwards.add("live/src", "secure", secure));
                }
                tokio::time::sleep_until(start + Duration::from_millis(frame.timestamp)).await;
                let now = std::time::Instant::now();
                let payload = frame.payload.clone();
                publisher
                    .push(frame.kind, frame.timestamp as u32, payload, now)
                    .unwrap();
            }
            publisher.finish(&shared.hub);
        };
        let play = |name: &'static str| {
            let target = url(&format!("rtmp://{}/live/{name}", server.rtmp));
            async move {
                let tls = plain();
                let pull = retry(|| RtmpPull::connect(&target, &tls, within(10))).await;
                pull_to_end(pull, Duration::from_secs(20)).await
            }
        };
        let ((), via_plain, via_tls) = tokio::join!(publishing, play("plain"), play("secure"));
        check_pulled(&via_plain, "forward over RTMP");
        check_pulled(&via_tls, "forward over RTMPS");
        let states = forwards.states();
        assert!(states.is_empty(), "forwards still running: {states:?}");
        assert!(
            shared
                .metrics
                .relay_bytes_total
                .load(std::sync::atomic::Ordering::Relaxed)
                > 100_000
        );
    });
}

#[test]
fn rtmps_push_and_pull_through_a_tls_terminator() {
    let server = Server::start(&[]);
    let pki = pki("rtmps", &["localhost"]);
    let rt = runtime();
    rt.block_on(async {
        let port = tls_terminator(&pki, server.rtmp).await;
        let tls = Tls::new(Some(&pki.ca_pem)).unwrap();
        let target = url(&format!("rtmps://localhost:{port}/live/secure"));
        let mut push = RtmpPush::connect(&target, &tls, within(10)).await.unwrap();
        let pull = RtmpPull::connect(&target, &tls, within(10));
        let pushing = async {
            push_sample(&mut push).await.unwrap();
            push.close().await;
        };
        let pulling = async {
            // The push started: play it back through TLS too.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let pull = pull.await.unwrap();
            pull_to_end(pull, Duration::from_secs(20)).await
        };
        let ((), frames) = tokio::join!(pushing, pulling);
        check_pulled(&frames, "rtmps pull");
    });
}

#[test]
fn https_flv_pull_through_a_tls_terminator() {
    let server = Server::start(&[]);
    let _ffmpeg = testkit::publish(&server.rtmp_url("src"), Source::AudioVideo, 25, 4);
    started(&server);
    let pki = pki("https", &["127.0.0.1"]);
    let rt = runtime();
    let frames = rt.block_on(async {
        let port = tls_terminator(&pki, server.http).await;
        let tls = Tls::new(Some(&pki.ca_pem)).unwrap();
        let source = url(&format!("https://127.0.0.1:{port}/live/src.flv"));
        let pull = retry(|| FlvPull::connect(&source, &tls, within(10))).await;
        pull_to_end(pull, Duration::from_secs(20)).await
    });
    check_pulled(&frames, "https-flv pull");
}

#[test]
fn an_untrusted_certificate_is_a_clear_error() {
    let server = Server::start(&[]);
    let pki = pki("untrusted", &["localhost"]);
    let rt = runtime();
    rt.block_on(async {
        let port = tls_terminator(&pki, server.rtmp).await;
        let target = url(&format!("rtmps://localhost:{port}/live/secure"));
        let Err(e) = RtmpPush::connect(&target, &plain(), within(10)).await else {
            panic!("a certificate from an unknown CA was trusted");
        };
        assert!(matches!(e, RelayError::Tls { .. }), "{e:?}");
        assert!(!e.unreachable());
        let text = e.to_string();
        assert!(
            text.contains("certificate") && text.contains("UnknownIssuer"),
            "{text}"
        );
        // The right CA, the wrong name: the certificate is for localhost only.
        let tls = Tls::new(Some(&pki.ca_pem)).unwrap();
        let target = url(&format!("rtmps://127.0.0.1:{port}/live/secure"));
        let Err(e) = RtmpPush::connect(&target, &tls, within(10)).await else {
            panic!("a certificate for another name was accepted");
        };
        eprintln!("{e}");
        assert!(matches!(e, RelayError::Tls { .. }), "{e:?}");
        assert!(e.to_string().contains("not valid for name"), "{e}");
    });
}

#[test]
fn extra_ca_files_are_checked() {
    let dir = temp_dir("relay-ca-files");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let e = Tls::new(Some(&empty)).unwrap_err();
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = Tls::new(Some(&dir.join("missing.pem"))).unwrap_err();
    assert!(e.contains("missing.pem"), "{e}");
    let pki = pki("files", &["localhost"]);
    assert!(Tls::new(Some(&pki.ca_pem)).is_ok());
}

// ------------------------------------------------------------------ bad peers

#[test]
fn a_server_that_never_answers_fails_by_the_deadline() {
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let started = Instant::now();
        let target = url(&format!("rtmp://127.0.0.1:{port}/live/key"));
        let Err(e) = RtmpPush::connect(&target, &plain(), within(1)).await else {
            panic!("a silent server accepted a publish");
        };
        let took = started.elapsed();
        assert!(
            matches!(
                e,
                RelayError::Timeout {
                    during: "handshake",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(2),
            "{took:?}"
        );
        let Err(e) = RtmpPull::connect(&target, &plain(), within(1)).await else {
            panic!("a silent server accepted a play");
        };
        assert!(matches!(e, RelayError::Timeout { .. }), "{e:?}");
        let source = url(&format!("http://127.0.0.1:{port}/live/key.flv"));
        let Err(e) = FlvPull::connect(&source, &plain(), within(1)).await else {
            panic!("a silent server answered");
        };
        assert!(matches!(e, RelayError::Timeout { .. }), "{e:?}");
    });
}

/// A server that answers anything with `answer` (then closes).
async fn answering(answer: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(answer).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    port
}

#[test]
fn a_server_that_sends_garbage_is_an_error() {
    let rt = runtime();
    rt.block_on(async {
        let port = answering(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        let target = url(&format!("rtmp://127.0.0.1:{port}/live/key"));
        let Err(e) = RtmpPush::connect(&target, &plain(), within(5)).await else {
            panic!("garbage accepted");
        };
        assert!(matches!(e, RelayError::Protocol { .. }), "{e:?}");
        eprintln!("{e}");

        // A valid plain handshake, then chunk garbage.
        let mut answer = vec![3u8];
        answer.extend_from_slice(&[0u8; 1536 * 2]);
        answer.extend_from_slice(&[0xff; 64]);
        answer.extend_from_slice(&[0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x14, 1, 0, 0, 0]);
        let port = answering(Box::leak(answer.into_boxed_slice())).await;
        let target = url(&format!("rtmp://127.0.0.1:{port}/live/key"));
        let Err(e) = RtmpPull::connect(&target, &plain(), within(5)).await else {
            panic!("garbage accepted");
        };
        eprintln!("{e}");
        assert!(!matches!(e, RelayError::Timeout { .. }), "{e:?}");

        // HTTP: not FLV, and a status that is not 200.
        let port = answering(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>").await;
        let source = url(&format!("http://127.0.0.1:{port}/live/key.flv"));
        let Err(e) = FlvPull::connect(&source, &plain(), within(5)).await else {
            panic!("HTML taken for FLV");
        };
        assert!(matches!(e, RelayError::Protocol { .. }), "{e:?}");
        let port = answering(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
        let source = url(&format!("http://127.0.0.1:{port}/live/key.flv"));
        let Err(e) = FlvPull::connect(&source, &plain(), within(5)).await else {
            panic!("403 taken for a stream");
        };
        assert!(matches!(e, RelayError::Http { status: 403, .. }), "{e:?}");
        let port = answering(b"\x00garbage\r\n\r\n").await;
        let source = url(&format!("http://127.0.0.1:{port}/live/key.flv"));
        assert!(FlvPull::connect(&source, &plain(), within(5))
            .await
            .is_err());
    });
}

#[test]
fn nobody_listening_is_unreachable() {
    let rt = runtime();
    rt.block_on(async {
        let port = free_port();
        let target = url(&format!("rtmp://127.0.0.1:{port}/live/key"));
        let Err(e) = RtmpPush::connect(&target, &plain(), within(5)).await else {
            panic!("connected to nothing");
        };
        assert!(e.unreachable(), "{e:?}");
        let target = url("rtmp://no-such-host.invalid/live/key");
        let Err(e) = RtmpPush::connect(&target, &plain(), within(5)).await else {
            panic!("resolved .invalid");
        };
        assert!(e.unreachable(), "{e:?}");
    });
}

#[test]
fn ferrolive_refuses_an_unknown_key_with_its_status() {
    let data = temp_dir(&format!("relay-auth-{}", free_port()));
    let server = Server::spawn("standalone", &["--data-dir", data.to_str().unwrap()]);
    let rt = runtime();
    rt.block_on(async {
        let key = "sk_notAKeyThisServerKnows";
        let target = url(&server.rtmp_url(key));
        let Err(e) = RtmpPush::connect(&target, &plain(), within(10)).await else {
            panic!("an unknown key was accepted");
        };
        let text = e.to_string();
        eprintln!("{text}");
        assert!(matches!(&e, RelayError::Refused { code, .. } if code == "NetStream.Publish.BadName"), "{e:?}");
        assert!(text.contains("NetStream.Publish.BadName"), "{text}");
        assert!(!text.contains(key), "the key is shown whole: {text}");
        assert!(!e.unreachable());

        // Nothing to play: a refusal too, over RTMP and HTTP-FLV.
        let Err(e) = RtmpPull::connect(&url(&server.rtmp_url("nothing")), &plain(), within(10)).await else {
            panic!("played a stream that is not live");
        };
        assert!(matches!(&e, RelayError::Refused { code, .. } if code == "NetStream.Play.StreamNotFound"), "{e:?}");
        let Err(e) = FlvPull::connect(&url(&server.flv_url("nothing")), &plain(), within(10)).await else {
            panic!("pulled a stream that is not live");
        };
        assert!(matches!(e, RelayError::Http { status: 404, .. }), "{e:?}");
    });
}

#[test]
fn nginx_refusals_and_a_lost_connection() {
    let Some(mut nginx) = Nginx::start() else {
        return;
    };
    let rt = runtime();
    rt.block_on(async {
        // An app nginx does not have.
        let target = url(&nginx.url("nosuchapp", "key"));
        let Err(e) = RtmpPush::connect(&target, &plain(), within(10)).await else {
            panic!("nginx took a publish to an unknown app");
        };
        eprintln!("unknown app: {e}");
        assert!(!e.unreachable());

        // A name already published.
        let target = url(&nginx.url("live", "taken"));
        let mut first = RtmpPush::connect(&target, &plain(), within(10))
            .await
            .unwrap();
        let Err(e) = RtmpPush::connect(&target, &plain(), within(10)).await else {
            panic!("nginx took a second publisher");
        };
        eprintln!("second publisher: {e}");
        assert!(
            matches!(&e, RelayError::Refused { code, .. } if code == "NetStream.Publish.BadName"),
            "{e:?}"
        );

        // nginx goes away while we publish: the push ends with an error, soon.
        for frame in &sample()[..20] {
            first.send(frame).await.unwrap();
        }
        nginx.kill();
        let lost = async {
            for frame in sample().iter().cycle() {
                first.send(frame).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<(), RelayError>(())
        };
        match tokio::time::timeout(Duration::from_secs(10), lost).await {
            Ok(Err(e)) => eprintln!("lost: {e}"),
            Ok(Ok(())) => unreachable!(),
            Err(_) => panic!("a push to a dead server did not fail"),
        }
    });
}

#[test]
fn service_answers_pings_while_idle_and_sees_a_close() {
    // nginx pings a connection that was silent for 1 s and drops it when the answer does
    // not come within 1 s.
    let Some(mut nginx) = Nginx::start_with("ping 1s; ping_timeout 1s;") else {
        return;
    };
    let rt = runtime();
    rt.block_on(async {
        let target = url(&nginx.url("live", "idle"));
        let mut push = RtmpPush::connect(&target, &plain(), within(10))
            .await
            .unwrap();
        // Nothing to send for 4 s: service() handles what the server sends, and a select!
        // drops it every 100 ms.
        let idle_until = Instant::now() + Duration::from_secs(4);
        let mut heard = 0;
        while Instant::now() < idle_until {
            tokio::select! {
                r = push.service() => {
                    r.unwrap();
                    heard += 1;
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        assert!(
            heard >= 2,
            "nginx sent {heard} times in 4 s of silence: no pings?"
        );
        // Still publishing: the pings were answered.
        for frame in &sample()[..20] {
            push.send(frame).await.unwrap();
        }
        nginx.kill();
        let e = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Err(e) = push.service().await {
                    return e;
                }
            }
        })
        .await
        .expect("service() did not see the close");
        assert!(
            matches!(e, RelayError::Closed { .. } | RelayError::Io { .. }),
            "{e:?}"
        );
    });
}

#[test]
fn relay_chain_from_nginx_to_ferrolive() {
    let Some(nginx) = Nginx::start() else {
        return;
    };
    let server = Server::start(&[]);
    let _ffmpeg = testkit::publish(&nginx.url("live", "src"), Source::AudioVideo, 25, 6);
    let rt = runtime();
    rt.block_on(async {
        let tls = plain();
        let mut pull = RtmpPull::connect(&url(&nginx.url("live", "src")), &tls, within(10))
            .await
            .unwrap();
        let mut push = RtmpPush::connect(&url(&server.rtmp_url("relayed")), &tls, within(10))
            .await
            .unwrap();
        // What a pull gives goes out on a push as it is.
        let player = tokio::spawn(decode(server.flv_url("relayed"), 3.0));
        let mut frames = 0;
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(20), pull.next())
            .await
            .expect("the pull stalled")
            .unwrap()
        {
            push.send(&frame).await.unwrap();
            frames += 1;
        }
        push.close().await;
        assert!(frames > 200, "{frames} frames relayed");
        let decoded = player.await.unwrap();
        assert!(
            decoded.video >= 25 && decoded.audio >= 25,
            "decoded {} video, {} audio frames: {}",
            decoded.video,
            decoded.audio,
            decoded.errors
        );
        assert!(decoded.errors.is_empty(), "{}", decoded.errors);
    });
}
