//! Live counters shared by all players, the per-player tracker, and the final report.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use media::codec::{parse_video_tag, VideoPacketKind};
use serde::Serialize;

use crate::histogram::{AtomicHistogram, Histogram};
use crate::marker;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Rtmp = 0,
    Flv = 1,
    Hls = 2,
    WsFlv = 3,
    Ts = 4,
    Llhls = 5,
    Rtsp = 6,
    Whep = 7,
}

impl Proto {
    pub const ALL: [Proto; 8] = [
        Proto::Rtmp,
        Proto::Flv,
        Proto::Hls,
        Proto::WsFlv,
        Proto::Ts,
        Proto::Llhls,
        Proto::Rtsp,
        Proto::Whep,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Proto::Rtmp => "rtmp",
            Proto::Flv => "http-flv",
            Proto::Hls => "hls",
            Proto::WsFlv => "ws-flv",
            Proto::Ts => "http-ts",
            Proto::Llhls => "ll-hls",
            Proto::Rtsp => "rtsp",
            Proto::Whep => "webrtc",
        }
    }
}

/// Counters of one protocol, updated by its players as they go (for progress and histograms).
#[derive(Default, Debug)]
pub struct Live {
    pub started: AtomicU64,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub ttff: AtomicHistogram,
    pub latency: AtomicHistogram,
}

/// Everything the tasks of one run share.
#[derive(Debug)]
pub struct Shared {
    pub live: [Live; Proto::ALL.len()],
    /// Video frames the bench's own publisher has sent (= next sequence number).
    pub sent_frames: AtomicU64,
    pub publishing: bool,
    /// Gaps between video frames longer than this count as stalls.
    pub stall_us: u64,
    /// (end of measurement, when players stop), set once the publisher is live.
    pub times: OnceLock<(Instant, Instant)>,
    /// LL-HLS: the blocking reloads answered, by the part they waited for.
    reloads: Mutex<HashMap<(u64, u64), Vec<ReloadAnswer>>>,
}

/// One answer to a blocking playlist reload (`_HLS_msn`/`_HLS_part`), in [`marker::now_us`]
/// time.
#[derive(Debug, Clone, Copy)]
struct ReloadAnswer {
    sent_us: u64,
    arrived_us: u64,
}

impl Shared {
    pub fn new(publishing: bool, stall_ms: u64) -> Arc<Shared> {
        Arc::new(Shared {
            live: Default::default(),
            sent_frames: AtomicU64::new(0),
            publishing,
            stall_us: stall_ms * 1000,
            times: OnceLock::new(),
            reloads: Mutex::default(),
        })
    }

    /// An LL-HLS player's blocking reload for part `part` of segment `msn`, sent at
    /// `sent_us`, was answered (200) at `arrived_us`.
    pub fn reload_answered(&self, (msn, part): (u64, u64), sent_us: u64, arrived_us: u64) {
        let mut reloads = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        reloads.entry((msn, part)).or_default().push(ReloadAnswer {
            sent_us,
            arrived_us,
        });
    }

    /// How far apart the players got the answers to their blocking reloads, one sample per
    /// answer: its arrival minus the earliest arrival of an answer for the same part at any
    /// player of this process. That earliest answer stands for the moment the part came to
    /// exist (it is later by one loopback round trip and the bench's own scheduling), so a
    /// sample is how long after its part existed the server answered that player, on top of
    /// what the first player waited. Only answers to requests sent before that earliest
    /// arrival count: a request sent later found the part there and did not block.
    pub fn reload_spread(&self) -> Histogram {
        let reloads = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        let mut spread = Histogram::new();
        for answers in reloads.values() {
            reload_spread_of(
                answers.iter().map(|a| (a.sent_us, a.arrived_us)),
                &mut spread,
            );
        }
        spread
    }
}

/// Records into `spread` the samples of one part's answers, (sent, arrived) pairs: see
/// [`Shared::reload_spread`].
pub fn reload_spread_of(answers: impl Iterator<Item = (u64, u64)> + Clone, spread: &mut Histogram) {
    let Some(earliest) = answers.clone().map(|(_, arrived)| arrived).min() else {
        return;
    };
    for (sent, arrived) in answers {
        if sent <= earliest {
            spread.record(arrived - earliest);
        }
    }
}

/// One player's bookkeeping. Cheap: a few counters, no buffers.
#[derive(Debug)]
pub struct Tracker {
    pub shared: Arc<Shared>,
    pub proto: Proto,
    pub start_us: u64,
    pub first_frame_us: Option<u64>,
    pub last_frame_us: Option<u64>,
    pub frames: u64,
    pub bytes: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub stalls: u32,
    pub max_gap_us: u64,
    /// HLS: media segments downloaded.
    pub segments: u64,
    /// LL-HLS: parts downloaded, and parts the player had to skip (gone, or not found).
    pub parts: u64,
    pub parts_missing: u64,
    /// LL-HLS: blocking reloads answered 503 (the part did not come in time).
    pub reload_timeouts: u64,
    /// RTSP: RTP packets received on the video and audio tracks, and packets missing
    /// (gaps in a track's sequence numbers).
    pub rtp_video_packets: u64,
    pub rtp_audio_packets: u64,
    pub rtp_packets_lost: u64,
    /// WHEP: the first video frame was not a keyframe; video frames that did not follow
    /// the one before (a gap in the packets); audio frames (Opus packets) received.
    pub whep_first_not_key: bool,
    pub whep_not_contiguous: u64,
    pub whep_audio_frames: u64,
}

impl Tracker {
    pub fn new(shared: Arc<Shared>, proto: Proto) -> Tracker {
        shared.live[proto as usize].started.fetch_add(1, Relaxed);
        Tracker {
            shared,
            proto,
            start_us: marker::now_us(),
            first_frame_us: None,
            last_frame_us: None,
            frames: 0,
            bytes: 0,
            first_seq: None,
            last_seq: None,
            stalls: 0,
            max_gap_us: 0,
            segments: 0,
            parts: 0,
            parts_missing: 0,
            reload_timeouts: 0,
            rtp_video_packets: 0,
            rtp_audio_packets: 0,
            rtp_packets_lost: 0,
            whep_first_not_key: false,
            whep_not_contiguous: 0,
            whep_audio_frames: 0,
        }
    }

    fn live(&self) -> &Live {
        &self.shared.live[self.proto as usize]
    }

    pub fn bytes(&mut self, n: usize) {
        self.bytes += n as u64;
        self.live().bytes.fetch_add(n as u64, Relaxed);
    }

    /// A video frame (or, for HLS, a PES start / segment) arrived now.
    pub fn frame_arrived(&mut self, now: u64) {
        match self.last_frame_us {
            None => {
                self.first_frame_us = Some(now);
                let live = self.live();
                live.connected.fetch_add(1, Relaxed);
                live.ttff.record(now.saturating_sub(self.start_us));
            }
            Some(last) => {
                let gap = now.saturating_sub(last);
                self.max_gap_us = self.max_gap_us.max(gap);
                if gap > self.shared.stall_us {
                    self.stalls += 1;
                }
            }
        }
        self.last_frame_us = Some(now);
    }

    /// An RTMP/FLV video payload: counts coded frames, and reads the bench marker if present.
    pub fn video(&mut self, payload: &[u8]) {
        let Some(info) = parse_video_tag(payload) else {
            return;
        };
        if info.packet != VideoPacketKind::Frame {
            return;
        }
        self.coded_frame(marker::find(payload));
    }

    /// A coded video frame arrived now, with the bench marker it carries, if any.
    pub fn coded_frame(&mut self, marker: Option<(u64, u64)>) {
        self.coded_frame_at(marker, marker::now_us());
    }

    /// A coded video frame arrived at `now` (LL-HLS: when the part holding it had arrived),
    /// with the bench marker it carries, if any.
    pub fn coded_frame_at(&mut self, marker: Option<(u64, u64)>, now: u64) {
        if let Some((seq, sent)) = marker {
            if self.last_seq.is_some_and(|last| seq <= last) {
                return; // a repeat (should not happen on a live stream)
            }
            self.first_seq.get_or_insert(seq);
            self.last_seq = Some(seq);
            // Frames sent before this player connected come from the server's GOP cache:
            // their age says nothing about the live path, so only live frames are timed.
            if sent >= self.start_us {
                self.live().latency.record(now.saturating_sub(sent));
            }
        }
        self.frame_arrived(now);
        self.frames += 1;
        self.live().frames.fetch_add(1, Relaxed);
    }

    /// HLS: a video PES start counted in a segment (no stall accounting: segments arrive in
    /// bursts).
    pub fn hls_frames(&mut self, n: u64) {
        self.frames += n;
        self.live().frames.fetch_add(n, Relaxed);
    }

    /// HLS: a video frame of a segment that arrived at `arrived`, with the bench marker it
    /// carries, if any: its latency is the segment's arrival minus the frame's send time.
    /// Frames sent before this player started (the segment it starts with) are not timed.
    pub fn segment_frame(&mut self, marker: Option<(u64, u64)>, arrived: u64) {
        if let Some((_, sent)) = marker {
            if sent >= self.start_us {
                self.live().latency.record(arrived.saturating_sub(sent));
            }
        }
    }

    pub fn finish(self, result: Result<(), String>, stopped_early: bool) -> Outcome {
        let end_us = self
            .shared
            .times
            .get()
            .map(|(end, _)| marker::now_us().saturating_sub(end.elapsed().as_micros() as u64))
            .unwrap_or_else(marker::now_us);
        let connected = self.first_frame_us.is_some();
        let mut stalls = self.stalls;
        let mut max_gap = self.max_gap_us;
        if let Some(last) = self.last_frame_us {
            if self.proto != Proto::Hls {
                let tail = end_us.saturating_sub(last);
                if tail > self.shared.stall_us {
                    stalls += 1;
                }
                max_gap = max_gap.max(tail);
            }
        }
        if !connected {
            self.live().failed.fetch_add(1, Relaxed);
        }
        let error = match (result, connected) {
            (Err(e), _) => Some(e),
            (Ok(()), false) => Some("no video before the end".to_owned()),
            (Ok(()), true) if stopped_early => Some("stream ended early".to_owned()),
            _ => None,
        };
        Outcome {
            proto: self.proto,
            connected,
            dropped: connected && stopped_early,
            error,
            bytes: self.bytes,
            active_us: end_us.saturating_sub(self.start_us),
            frames: self.frames,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            stalls,
            max_gap_us: max_gap,
            segments: self.segments,
            parts: self.parts,
            parts_missing: self.parts_missing,
            reload_timeouts: self.reload_timeouts,
            rtp_video_packets: self.rtp_video_packets,
            rtp_audio_packets: self.rtp_audio_packets,
            rtp_packets_lost: self.rtp_packets_lost,
            whep_first_not_key: self.whep_first_not_key,
            whep_not_contiguous: self.whep_not_contiguous,
            whep_audio_frames: self.whep_audio_frames,
        }
    }
}

/// What one player ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub proto: Proto,
    pub connected: bool,
    /// Connected, then lost the stream before the end of the run.
    pub dropped: bool,
    pub error: Option<String>,
    pub bytes: u64,
    pub active_us: u64,
    pub frames: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub stalls: u32,
    pub max_gap_us: u64,
    pub segments: u64,
    pub parts: u64,
    pub parts_missing: u64,
    pub reload_timeouts: u64,
    pub rtp_video_packets: u64,
    pub rtp_audio_packets: u64,
    pub rtp_packets_lost: u64,
    pub whep_first_not_key: bool,
    pub whep_not_contiguous: u64,
    pub whep_audio_frames: u64,
}

/// p50 / p99 / max in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

impl Quantiles {
    pub fn of(h: &Histogram) -> Option<Quantiles> {
        let ms = |v: u64| (v as f64 / 10.0).round() / 100.0;
        Some(Quantiles {
            p50_ms: ms(h.percentile(0.5)?),
            p99_ms: ms(h.percentile(0.99)?),
            max_ms: ms(h.max()?),
            samples: h.count(),
        })
    }
}

/// Numbers of one protocol (or all of them).
#[derive(Debug, Clone, Serialize)]
pub struct ProtoReport {
    pub protocol: String,
    pub players: u64,
    pub connected: u64,
    pub failed: u64,
    pub dropped: u64,
    pub ttff_ms: Option<Quantiles>,
    pub bitrate_kbps_mean: Option<f64>,
    pub bitrate_kbps_min: Option<f64>,
    pub frames_received: u64,
    /// Frames the bench's publisher sent while each player watched (sum over players).
    pub frames_expected: Option<u64>,
    pub frames_received_pct: Option<f64>,
    pub frames_received_pct_worst_player: Option<f64>,
    pub stalls: u64,
    pub players_with_stalls: u64,
    pub max_gap_ms: Option<f64>,
    pub latency_ms: Option<Quantiles>,
    pub hls_segments: u64,
    /// LL-HLS: parts downloaded, parts skipped (gone or not found before the player got to
    /// them), blocking reloads answered 503.
    pub llhls_parts: u64,
    pub llhls_parts_missing: u64,
    pub llhls_reload_timeouts: u64,
    /// LL-HLS: the spread of the answers to blocking reloads (see [`Shared::reload_spread`]).
    pub llhls_reload_spread_ms: Option<Quantiles>,
    /// RTSP: RTP packets received on video and audio tracks, and packets missing (gaps in
    /// a track's sequence numbers: frames the server skipped or lost).
    pub rtp_video_packets: u64,
    pub rtp_audio_packets: u64,
    pub rtp_packets_lost: u64,
    /// Video frames received per connected player: the mean and the fewest.
    pub frames_per_player_mean: Option<f64>,
    pub frames_per_player_min: Option<u64>,
    /// WebRTC: connected viewers whose pictures would not all decode (the first frame not
    /// a keyframe, or a frame after a gap), of them those that started without a keyframe,
    /// frames after a gap (all viewers), and audio frames received.
    pub whep_viewers_not_decoding: u64,
    pub whep_first_not_key: u64,
    pub whep_frames_not_contiguous: u64,
    pub whep_audio_frames: u64,
    /// WebRTC: datagrams the machine dropped for full UDP receive buffers during the run
    /// (see [`crate::whep::udp_receive_buffer_errors`]).
    pub udp_receive_buffer_errors: Option<u64>,
    /// Error message -> players.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub duration_secs: f64,
    pub publishing: bool,
    pub frames_published: Option<u64>,
    pub publisher_error: Option<String>,
    pub protocols: Vec<ProtoReport>,
    pub overall: ProtoReport,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn proto_report(
    name: &str,
    outcomes: &[&Outcome],
    ttff: &Histogram,
    latency: &Histogram,
    published: Option<u64>,
    measure_frames: bool,
) -> ProtoReport {
    let connected: Vec<&&Outcome> = outcomes.iter().filter(|o| o.connected).collect();
    let rates: Vec<f64> = connected
        .iter()
        .filter(|o| o.active_us > 0)
        .map(|o| o.bytes as f64 * 8.0 / (o.active_us as f64 / 1e6) / 1000.0)
        .collect();
    let mut errors = BTreeMap::new();
    for o in outcomes {
        if let Some(e) = &o.error {
            *errors.entry(e.clone()).or_insert(0) += 1;
        }
    }
    // Expected frames: from the first marked frame a player saw to the last one published.
    let (mut expected, mut got, mut worst) = (0u64, 0u64, None::<f64>);
    if let (Some(total), true) = (published, measure_frames) {
        for o in &connected {
            let Some(first) = o.first_seq else {
                worst = Some(0.0);
                continue;
            };
            let want = total.saturating_sub(first).max(1);
            expected += want;
            got += o.frames.min(want);
            let pct = 100.0 * o.frames.min(want) as f64 / want as f64;
            worst = Some(worst.map_or(pct, |w: f64| w.min(pct)));
        }
    }
    let measured = published.is_some() && measure_frames;
    ProtoReport {
        protocol: name.to_owned(),
        players: outcomes.len() as u64,
        connected: connected.len() as u64,
        failed: (outcomes.len() - connected.len()) as u64,
        dropped: outcomes.iter().filter(|o| o.dropped).count() as u64,
        ttff_ms: Quantiles::of(ttff),
        bitrate_kbps_mean: (!rates.is_empty())
            .then(|| round2(rates.iter().sum::<f64>() / rates.len() as f64)),
        bitrate_kbps_min: rates.iter().copied().reduce(f64::min).map(round2),
        frames_received: outcomes.iter().map(|o| o.frames).sum(),
        frames_expected: measured.then_some(expected),
        frames_received_pct: (measured && expected > 0)
            .then(|| round2(100.0 * got as f64 / expected as f64)),
        frames_received_pct_worst_player: if measured { worst.map(round2) } else { None },
        stalls: if measure_frames {
            outcomes.iter().map(|o| u64::from(o.stalls)).sum()
        } else {
            0
        },
        players_with_stalls: if measure_frames {
            outcomes.iter().filter(|o| o.stalls > 0).count() as u64
        } else {
            0
        },
        max_gap_ms: if measure_frames {
            connected
                .iter()
                .map(|o| o.max_gap_us)
                .max()
                .map(|us| round2(us as f64 / 1000.0))
        } else {
            None
        },
        latency_ms: Quantiles::of(latency),
        hls_segments: outcomes.iter().map(|o| o.segments).sum(),
        llhls_parts: outcomes.iter().map(|o| o.parts).sum(),
        llhls_parts_missing: outcomes.iter().map(|o| o.parts_missing).sum(),
        llhls_reload_timeouts: outcomes.iter().map(|o| o.reload_timeouts).sum(),
        llhls_reload_spread_ms: None,
        rtp_video_packets: outcomes.iter().map(|o| o.rtp_video_packets).sum(),
        rtp_audio_packets: outcomes.iter().map(|o| o.rtp_audio_packets).sum(),
        rtp_packets_lost: outcomes.iter().map(|o| o.rtp_packets_lost).sum(),
        frames_per_player_mean: (!connected.is_empty()).then(|| {
            round2(connected.iter().map(|o| o.frames).sum::<u64>() as f64 / connected.len() as f64)
        }),
        frames_per_player_min: connected.iter().map(|o| o.frames).min(),
        whep_viewers_not_decoding: connected
            .iter()
            .filter(|o| o.whep_first_not_key || o.whep_not_contiguous > 0)
            .count() as u64,
        whep_first_not_key: connected.iter().filter(|o| o.whep_first_not_key).count() as u64,
        whep_frames_not_contiguous: outcomes.iter().map(|o| o.whep_not_contiguous).sum(),
        whep_audio_frames: outcomes.iter().map(|o| o.whep_audio_frames).sum(),
        udp_receive_buffer_errors: None,
        errors,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    pub fn write_json(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_json() + "\n")?;
        Ok(())
    }

    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let w = |s: &mut String, cols: [String; 11]| {
            s.push_str(&format!(
                "{:<9} {:>7} {:>6} {:>5} {:>5} {:>15} {:>13} {:>17} {:>7} {:>7} {:>20}\n",
                cols[0],
                cols[1],
                cols[2],
                cols[3],
                cols[4],
                cols[5],
                cols[6],
                cols[7],
                cols[8],
                cols[9],
                cols[10]
            ));
        };
        w(
            &mut s,
            [
                "protocol",
                "players",
                "ok",
                "fail",
                "drop",
                "ttff p50/p99 ms",
                "kbps mean/min",
                "frames recv/sent",
                "recv %",
                "stalls",
                "latency p50/p99/max",
            ]
            .map(String::from),
        );
        for r in self.protocols.iter().chain(std::iter::once(&self.overall)) {
            let frames = match r.frames_expected {
                Some(e) => format!("{}/{}", r.frames_received, e),
                None => r.frames_received.to_string(),
            };
            let stalls = if r.protocol == "hls" {
                "-".to_owned()
            } else {
                r.stalls.to_string()
            };
            w(
                &mut s,
                [
                    r.protocol.clone(),
                    r.players.to_string(),
                    r.connected.to_string(),
                    r.failed.to_string(),
                    r.dropped.to_string(),
                    r.ttff_ms
                        .map_or("-".into(), |q| format!("{:.1}/{:.1}", q.p50_ms, q.p99_ms)),
                    format!(
                        "{}/{}",
                        opt(r.bitrate_kbps_mean, 0),
                        opt(r.bitrate_kbps_min, 0)
                    ),
                    frames,
                    opt(r.frames_received_pct, 2),
                    stalls,
                    r.latency_ms.map_or("-".into(), |q| {
                        format!("{:.1}/{:.1}/{:.1}", q.p50_ms, q.p99_ms, q.max_ms)
                    }),
                ],
            );
        }
        if let Some(n) = self.frames_published {
            s.push_str(&format!(
                "published: {n} video frames in {:.0} s",
                self.duration_secs
            ));
            if let Some(e) = &self.publisher_error {
                s.push_str(&format!(" (publisher error: {e})"));
            }
            s.push('\n');
        }
        for r in &self.protocols {
            for (e, n) in &r.errors {
                s.push_str(&format!("{} errors: {n} x {e}\n", r.protocol));
            }
            if r.protocol == "hls" && r.players > 0 {
                s.push_str(&format!(
                    "hls: {} segments downloaded (latency: segment arrival - frame send; no stall accounting)\n",
                    r.hls_segments
                ));
            }
            if r.protocol == "rtsp" && r.players > 0 {
                s.push_str(&format!(
                    "rtsp: {} video and {} audio RTP packets, {} missing (gaps in sequence numbers)\n",
                    r.rtp_video_packets, r.rtp_audio_packets, r.rtp_packets_lost
                ));
            }
            if r.protocol == "webrtc" && r.players > 0 {
                s.push_str(&format!(
                    "webrtc: {} of {} viewers not decoding ({} without a keyframe first, {} frames after a gap); \
                     video frames per viewer mean/min {}/{}; {} audio frames\n",
                    r.whep_viewers_not_decoding,
                    r.connected,
                    r.whep_first_not_key,
                    r.whep_frames_not_contiguous,
                    opt(r.frames_per_player_mean, 0),
                    r.frames_per_player_min.map_or("-".to_owned(), |n| n.to_string()),
                    r.whep_audio_frames
                ));
                if let Some(n) = r.udp_receive_buffer_errors {
                    s.push_str(&format!(
                        "webrtc: {n} datagrams dropped on this machine for full UDP receive buffers during the run\n"
                    ));
                }
            }
            if r.protocol == "ll-hls" && r.players > 0 {
                s.push_str(&format!(
                    "ll-hls: {} parts downloaded, {} missing, {} reloads answered 503 (latency: part arrival - frame send)\n",
                    r.llhls_parts, r.llhls_parts_missing, r.llhls_reload_timeouts
                ));
                if let Some(q) = r.llhls_reload_spread_ms {
                    s.push_str(&format!(
                        "ll-hls: blocking reload answer spread p50/p99/max {:.1}/{:.1}/{:.1} ms over {} answers \
                         (each answer's arrival - the earliest arrival of an answer for the same part)\n",
                        q.p50_ms, q.p99_ms, q.max_ms, q.samples
                    ));
                }
            }
        }
        s
    }

    pub fn print_table(&self) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.table().as_bytes());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_spread_counts_only_requests_that_waited() {
        let mut spread = Histogram::new();
        // Earliest answer at 1000; two more that were waiting (sent before it), one request
        // sent after it, which found the part there and did not block.
        let answers = [(100, 1_000), (200, 1_030), (900, 1_045), (1_010, 1_012)];
        reload_spread_of(answers.iter().copied(), &mut spread);
        assert_eq!(spread.count(), 3);
        assert_eq!(spread.min(), Some(0));
        assert_eq!(spread.max(), Some(45));
        reload_spread_of(std::iter::empty(), &mut spread);
        assert_eq!(spread.count(), 3);

        let shared = Shared::new(true, 500);
        shared.reload_answered((7, 0), 10, 500);
        shared.reload_answered((7, 0), 20, 520);
        shared.reload_answered((7, 1), 30, 900);
        let all = shared.reload_spread();
        assert_eq!((all.count(), all.max()), (3, Some(20)));
    }
}
