//! `ferrolive bench`: a load generator for any RTMP / HTTP-FLV / HLS / RTSP server.
//!
//! N players per protocol (WebRTC viewers too: [`whep`]), one tokio task each with small
//! reused buffers, optionally the bench's own RTMP publisher (synthetic H.264+AAC-tagged
//! stream or an FLV file in real time) whose video frames carry a sequence number and send
//! time, so every player measures frames lost and publisher-to-player latency. Reports a
//! table and JSON.

pub mod histogram;
pub mod http;
pub mod llhls;
pub mod marker;
pub mod players;
pub mod rtmp;
pub mod rtsp;
pub mod source;
pub mod stats;
pub mod whep;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use media::frame::MediaKind;
use tokio::time::Instant;

pub use stats::Report;
use stats::{Outcome, Proto, Shared, Tracker};

/// Options of `ferrolive bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// RTMP players.
    #[arg(long, default_value_t = 0)]
    pub rtmp: usize,
    /// HTTP-FLV players.
    #[arg(long, default_value_t = 0)]
    pub flv: usize,
    /// HLS pollers.
    #[arg(long, default_value_t = 0)]
    pub hls: usize,
    /// WebSocket-FLV players.
    #[arg(long, default_value_t = 0)]
    pub ws: usize,
    /// HTTP-TS players.
    #[arg(long, default_value_t = 0)]
    pub ts: usize,
    /// Low-latency HLS players (blocking reloads, every part).
    #[arg(long, default_value_t = 0)]
    pub llhls: usize,
    /// RTSP players (RTP interleaved over TCP).
    #[arg(long, default_value_t = 0)]
    pub rtsp: usize,
    /// WebRTC viewers (WHEP: an offer posted to --url-whep, then ICE, DTLS-SRTP, RTP).
    #[arg(long, default_value_t = 0)]
    pub whep: usize,
    /// rtmp://host:port/app/room (default: the --publish URL).
    #[arg(long)]
    pub url_rtmp: Option<String>,
    /// http://host:port/app/room.flv
    #[arg(long)]
    pub url_flv: Option<String>,
    /// http://host:port/app/room.m3u8 (a media playlist)
    #[arg(long)]
    pub url_hls: Option<String>,
    /// ws://host:port/app/room.flv
    #[arg(long)]
    pub url_ws: Option<String>,
    /// http://host:port/app/room.ts
    #[arg(long)]
    pub url_ts: Option<String>,
    /// http://host:port/app/room/index.m3u8 (a low-latency media playlist with parts)
    #[arg(long)]
    pub url_llhls: Option<String>,
    /// rtsp://host:port/app/room (default: the --publish URL's host and path on port 8554,
    /// ferrolive's default --rtsp-addr)
    #[arg(long)]
    pub url_rtsp: Option<String>,
    /// http://host:port/app/room/whep (the WHEP endpoint on the player port)
    #[arg(long)]
    pub url_whep: Option<String>,
    /// Players started per second.
    #[arg(long, default_value_t = 200.0)]
    pub ramp_per_sec: f64,
    /// Publish our own stream to rtmp://host:port/app/KEY (enables latency and loss numbers).
    #[arg(long)]
    pub publish: Option<String>,
    /// What to publish: "synthetic" or the path of an FLV file (sent in real time, looped).
    #[arg(long, default_value = "synthetic")]
    pub source: String,
    /// Synthetic source: total bit rate (video + 64 kbit/s audio).
    #[arg(long, default_value_t = 2700)]
    pub bitrate_kbps: u64,
    /// Synthetic source: video frames per second.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Synthetic source: seconds between keyframes.
    #[arg(long, default_value_t = 2.0)]
    pub gop_secs: f64,
    /// Length of the measurement in seconds (players ramp up within it).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// A gap between video frames longer than this (ms) counts as a stall.
    #[arg(long, default_value_t = 500)]
    pub stall_ms: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Runtime worker threads for `bench::main` (1: everything on one core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// No per-second progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Default for BenchArgs {
    fn default() -> Self {
        use clap::{Args as _, FromArgMatches};
        let cmd = BenchArgs::augment_args(clap::Command::new("bench"));
        BenchArgs::from_arg_matches(&cmd.get_matches_from(["bench"])).expect("defaults parse")
    }
}

/// Runs the bench on its own runtime (`--threads`), prints the table and writes `--json`.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(run(args))?;
    report.print_table();
    Ok(())
}

/// How long players keep reading after the publisher stopped, for frames still in flight.
const GRACE: Duration = Duration::from_millis(1000);
/// Wait after Publish.Start before players start, so the stream exists everywhere.
const WARMUP: Duration = Duration::from_millis(500);

/// Runs the whole benchmark and returns the report (also written to `--json` if given).
pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    // Players per protocol, in `Proto` order.
    let counts = [
        args.rtmp, args.flv, args.hls, args.ws, args.ts, args.llhls, args.rtsp, args.whep,
    ];
    let total: usize = counts.iter().sum();
    if total == 0 && args.publish.is_none() {
        bail!(
            "nothing to do: give --rtmp/--flv/--hls/--ws/--ts/--llhls/--rtsp/--whep players and/or --publish"
        );
    }
    if args.duration.is_nan() || args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    let rtmp_url = match (&args.url_rtmp, &args.publish) {
        (Some(u), _) | (None, Some(u)) => Some(rtmp::RtmpUrl::parse(u)?),
        _ => None,
    };
    if args.rtmp > 0 && rtmp_url.is_none() {
        bail!("--rtmp needs --url-rtmp (or --publish)");
    }
    // The URLs of the other players, in `Proto` order (none for RTMP).
    let parse = |url: &Option<String>| url.as_deref().map(http::Url::parse).transpose();
    let rtsp_url = match (&args.url_rtsp, &args.publish) {
        (Some(url), _) => Some(http::Url::parse(url)?),
        (None, Some(publish)) => Some(rtsp::url_of_published(publish)?),
        (None, None) => None,
    };
    if let Some(url) = rtsp_url.as_ref().filter(|u| u.scheme != "rtsp") {
        bail!("--url-rtsp is not an rtsp:// URL: {url:?}");
    }
    let urls = [
        None,
        parse(&args.url_flv)?,
        parse(&args.url_hls)?,
        parse(&args.url_ws)?,
        parse(&args.url_ts)?,
        parse(&args.url_llhls)?,
        rtsp_url,
        parse(&args.url_whep)?,
    ];
    for (proto, flag) in [
        (Proto::Flv, "flv"),
        (Proto::Hls, "hls"),
        (Proto::WsFlv, "ws"),
        (Proto::Ts, "ts"),
        (Proto::Llhls, "llhls"),
        (Proto::Rtsp, "rtsp"),
        (Proto::Whep, "whep"),
    ] {
        if counts[proto as usize] > 0 && urls[proto as usize].is_none() {
            bail!("--{flag} needs --url-{flag}");
        }
    }
    // One DTLS certificate for every WebRTC viewer, made before anything is timed.
    let identity = if args.whep > 0 {
        Some(Arc::new(whep::Identity::new()?))
    } else {
        None
    };
    marker::now_us(); // start the shared clock

    let shared = Shared::new(args.publish.is_some(), args.stall_ms);
    let duration = Duration::from_secs_f64(args.duration);

    // The publisher first: players need a live stream.
    let publisher = match &args.publish {
        Some(url) => {
            let url = rtmp::RtmpUrl::parse(url)?;
            let source = if args.source == "synthetic" {
                source::Source::Synthetic(source::Synthetic::new(
                    args.bitrate_kbps,
                    args.fps,
                    args.gop_secs,
                )?)
            } else {
                source::Source::File(source::FileSource::open(std::path::Path::new(
                    &args.source,
                ))?)
            };
            let conn = tokio::time::timeout(Duration::from_secs(10), rtmp::start_publish(&url))
                .await
                .map_err(|_| {
                    anyhow!(
                        "publish to {}: no answer in 10 s",
                        args.publish.as_deref().unwrap_or("")
                    )
                })?
                .with_context(|| format!("publish to {}", args.publish.as_deref().unwrap_or("")))?;
            let shared = shared.clone();
            Some(tokio::spawn(async move {
                publish_loop(conn, source, shared).await
            }))
        }
        None => None,
    };
    if publisher.is_some() {
        tokio::time::sleep(WARMUP).await;
    }
    let start = Instant::now();
    let end = start + duration;
    let stop = if publisher.is_some() {
        end + GRACE
    } else {
        end
    };
    let _ = shared.times.set((end.into_std(), stop.into_std()));

    let udp_drops_before = (args.whep > 0)
        .then(whep::udp_receive_buffer_errors)
        .flatten();
    let progress = (!args.quiet).then(|| tokio::spawn(progress(shared.clone(), start, end, total)));

    // Interleave the protocols so each ramps up at the same pace.
    let mut order = Vec::with_capacity(total);
    let mut left = counts;
    while order.len() < total {
        for p in Proto::ALL {
            if left[p as usize] > 0 {
                left[p as usize] -= 1;
                order.push(p);
            }
        }
    }
    let ramp = args.ramp_per_sec.max(0.001);
    let mut handles = Vec::with_capacity(total);
    for (i, proto) in order.into_iter().enumerate() {
        let at = start + Duration::from_secs_f64(i as f64 / ramp);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let shared = shared.clone();
        let rtmp_url = rtmp_url.clone();
        let url = urls[proto as usize].clone();
        let identity = identity.clone();
        handles.push(tokio::spawn(async move {
            let mut t = Tracker::new(shared, proto);
            let result = match (proto, rtmp_url, url) {
                (Proto::Rtmp, Some(url), _) => {
                    tokio::time::timeout_at(stop, rtmp::player(&url, &mut t)).await
                }
                (Proto::Flv, _, Some(url)) => {
                    tokio::time::timeout_at(stop, players::flv_player(&url, &mut t)).await
                }
                (Proto::Hls, _, Some(url)) => {
                    tokio::time::timeout_at(stop, players::hls_player(&url, &mut t)).await
                }
                (Proto::WsFlv, _, Some(url)) => {
                    tokio::time::timeout_at(stop, players::ws_flv_player(&url, &mut t)).await
                }
                (Proto::Ts, _, Some(url)) => {
                    tokio::time::timeout_at(stop, players::http_ts_player(&url, &mut t)).await
                }
                (Proto::Llhls, _, Some(url)) => {
                    tokio::time::timeout_at(stop, llhls::llhls_player(&url, &mut t)).await
                }
                (Proto::Rtsp, _, Some(url)) => {
                    tokio::time::timeout_at(stop, rtsp::player(&url, &mut t)).await
                }
                (Proto::Whep, _, Some(url)) => match identity {
                    Some(identity) => {
                        tokio::time::timeout_at(stop, whep::player(&url, &identity, &mut t)).await
                    }
                    None => Ok(Err(anyhow!("no DTLS identity for WebRTC"))),
                },
                // Players are only made for protocols with a URL (checked above).
                _ => Ok(Err(anyhow!("no URL for this protocol"))),
            };
            match result {
                Err(_elapsed) => t.finish(Ok(()), false),
                // The stream ended by itself; after the publisher stopped that is expected.
                Ok(Ok(())) => {
                    let early = Instant::now() < end;
                    t.finish(Ok(()), early)
                }
                Ok(Err(e)) => {
                    let early = Instant::now() < end;
                    let connected = t.first_frame_us.is_some();
                    t.finish(
                        if connected && !early {
                            Ok(())
                        } else {
                            Err(format!("{e:#}"))
                        },
                        early,
                    )
                }
            }
        }));
    }
    let not_started = total - handles.len();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(total);
    for h in handles {
        outcomes.push(h.await.context("player task")?);
    }
    let (published, publisher_error) = match publisher {
        Some(h) => match h.await.context("publisher task")? {
            Ok(()) => (Some(shared.sent_frames.load(Relaxed)), None),
            Err(e) => (
                Some(shared.sent_frames.load(Relaxed)),
                Some(format!("{e:#}")),
            ),
        },
        None => (None, None),
    };
    if let Some(p) = progress {
        p.abort();
    }
    if not_started > 0 {
        eprintln!(
            "bench: {not_started} players not started: --ramp-per-sec too low for --duration"
        );
    }

    let mut protocols = Vec::new();
    let mut ttff_all = histogram::Histogram::new();
    let mut lat_all = histogram::Histogram::new();
    for proto in Proto::ALL {
        let count = counts[proto as usize];
        if count == 0 {
            continue;
        }
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.proto == proto).collect();
        let live = &shared.live[proto as usize];
        let (ttff, latency) = (live.ttff.snapshot(), live.latency.snapshot());
        ttff_all.merge(&ttff);
        lat_all.merge(&latency);
        let mut report = stats::proto_report(
            proto.name(),
            &mine,
            &ttff,
            &latency,
            published,
            proto != Proto::Hls,
        );
        if proto == Proto::Whep {
            report.udp_receive_buffer_errors = udp_drops_before
                .zip(whep::udp_receive_buffer_errors())
                .map(|(before, after)| after.saturating_sub(before));
        }
        if proto == Proto::Llhls {
            report.llhls_reload_spread_ms = stats::Quantiles::of(&shared.reload_spread());
        }
        protocols.push(report);
    }
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let non_hls: Vec<&Outcome> = outcomes.iter().filter(|o| o.proto != Proto::Hls).collect();
    let mut overall = stats::proto_report("overall", &all, &ttff_all, &lat_all, published, true);
    // Frame accounting (stalls, received vs sent) only covers per-frame protocols.
    let frames = stats::proto_report("overall", &non_hls, &ttff_all, &lat_all, published, true);
    overall.frames_received = frames.frames_received;
    overall.frames_expected = frames.frames_expected;
    overall.frames_received_pct = frames.frames_received_pct;
    overall.frames_received_pct_worst_player = frames.frames_received_pct_worst_player;
    overall.stalls = frames.stalls;
    overall.players_with_stalls = frames.players_with_stalls;
    overall.max_gap_ms = frames.max_gap_ms;
    let report = Report {
        duration_secs: args.duration,
        publishing: args.publish.is_some(),
        frames_published: published,
        publisher_error,
        protocols,
        overall,
    };
    if let Some(path) = &args.json {
        report
            .write_json(path)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(report)
}

/// Sends the source in real time until the end of the measurement, then idles (answering the
/// server) until players stop, so the stream does not end under them.
async fn publish_loop(
    mut conn: rtmp::RtmpConn,
    mut source: source::Source,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    for (kind, payload) in source.headers() {
        conn.send_media(kind, 0, payload).await?;
    }
    let origin = Instant::now();
    let mut seq: u64 = 0;
    let mut item = source.next_item();
    let mut last_ts = 0u32;
    let mut events = Vec::new();
    loop {
        let (end, stop) = match shared.times.get() {
            Some(&(end, stop)) => (Some(Instant::from_std(end)), Instant::from_std(stop)),
            None => (None, Instant::now() + Duration::from_secs(3600)),
        };
        let sending = end.is_none_or(|e| Instant::now() < e);
        // Pace by media time; a timestamp going backwards is sent at once.
        let due = origin + Duration::from_millis(u64::from(item.ts.max(last_ts)));
        let wake = if sending {
            due.min(end.unwrap_or(due))
        } else {
            stop
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            r = conn.stream.readable() => {
                r?;
                if conn.try_fill(&mut events).await? == Some(0) {
                    bail!("server closed the publishing connection");
                }
                rtmp::check_events(&mut events)?;
                continue;
            }
        }
        let now = Instant::now();
        if now >= stop {
            return Ok(());
        }
        if !sending || end.is_some_and(|e| now >= e) || now < due {
            continue;
        }
        last_ts = item.ts.max(last_ts);
        match item.kind {
            source::Kind::Video {
                header5,
                nal_length_size,
                rest,
            } => {
                let payload =
                    marker::marked_video(&header5, seq, marker::now_us(), nal_length_size, &rest);
                conn.send_media(MediaKind::Video, item.ts, payload.into())
                    .await?;
                seq += 1;
                shared.sent_frames.store(seq, Relaxed);
            }
            source::Kind::Raw { kind, payload } => {
                conn.send_media(kind, item.ts, payload).await?;
            }
        }
        item = source.next_item();
    }
}

/// One line per second on stderr: players, frames/s, p99 latency of the last second.
async fn progress(shared: Arc<Shared>, start: Instant, end: Instant, total: usize) {
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut prev_frames = 0u64;
    let mut prev_bytes = 0u64;
    let mut prev_lat = histogram::Histogram::new();
    loop {
        tick.tick().await;
        let sum = |f: &dyn Fn(&stats::Live) -> u64| shared.live.iter().map(f).sum::<u64>();
        let started = sum(&|l| l.started.load(Relaxed));
        let connected = sum(&|l| l.connected.load(Relaxed));
        let failed = sum(&|l| l.failed.load(Relaxed));
        let frames = sum(&|l| l.frames.load(Relaxed));
        let bytes = sum(&|l| l.bytes.load(Relaxed));
        let mut lat = histogram::Histogram::new();
        for l in &shared.live {
            lat.merge(&l.latency.snapshot());
        }
        let window = lat.since(&prev_lat);
        let p99 = window
            .percentile(0.99)
            .map_or("-".to_owned(), |us| format!("{:.1} ms", us as f64 / 1000.0));
        let elapsed = start.elapsed().as_secs_f64();
        eprintln!(
            "[{elapsed:5.1}s] players {connected}/{started} of {total} playing, {failed} failed | {} frames/s | {:.1} Mbit/s | p99 latency {p99}",
            frames - prev_frames,
            (bytes - prev_bytes) as f64 * 8.0 / 1e6,
        );
        prev_frames = frames;
        prev_bytes = bytes;
        prev_lat = lat;
        if Instant::now() >= end {
            return;
        }
    }
}
