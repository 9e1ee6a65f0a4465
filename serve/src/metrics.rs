//! Process-wide counters, rendered in the Prometheus text format on `/metrics`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use media::hub::Hub;

/// Counters of one node. Gauges (open connections) go up and down; the rest only grow.
#[derive(Default)]
pub struct Metrics {
    pub rtmp_connections: AtomicU64,
    pub rtmp_connections_total: AtomicU64,
    pub rtsp_connections: AtomicU64,
    pub http_connections: AtomicU64,
    pub http_connections_total: AtomicU64,
    /// Connections closed for a protocol error, a timeout or a peer that would not read.
    pub connections_rejected_total: AtomicU64,
    pub publishes_total: AtomicU64,
    /// Players attached now (RTMP, HTTP-FLV, HLS sessions).
    pub viewers: AtomicU64,
    /// Of `viewers`, by protocol ([`Protocol::index`]).
    pub viewers_by_protocol: [AtomicU64; Protocol::ALL.len()],
    /// Of `viewers`, by stream and protocol (for the console; not a metric, whose labels
    /// would grow with the streams).
    stream_viewers: Mutex<HashMap<String, [u64; Protocol::ALL.len()]>>,
    /// Other nodes pulling streams from this one now.
    pub relays: AtomicU64,
    pub bytes_in_total: AtomicU64,
    pub bytes_out_total: AtomicU64,
    /// Of `bytes_out_total`, sent to viewers from a stream's tape without a copy.
    pub bytes_out_zero_copy_total: AtomicU64,
    pub frames_skipped_total: AtomicU64,
    /// Audio and video messages dropped because they cannot be valid for their codec.
    pub invalid_media_total: AtomicU64,
    pub viewers_dropped_slow_total: AtomicU64,
    /// WebRTC packets dropped because the shared UDP socket's buffer was full.
    pub webrtc_packets_dropped_total: AtomicU64,
    /// Streams packetized for WebRTC now (one feed per stream, however many sessions).
    pub webrtc_feeds: AtomicU64,
    /// Of `webrtc_feeds`, those transcoding the stream's AAC to Opus.
    pub webrtc_audio_transcoders: AtomicU64,
    /// Keyframe requests (PLI, FIR) of WebRTC viewers answered from the GOP cache.
    pub webrtc_keyframe_answers_total: AtomicU64,
    /// Edge: streams pulled from an origin on a miss (one per pull, however many viewers).
    pub upstream_pulls_total: AtomicU64,
    /// Edge: pulls running now (starting, live or re-pulling).
    pub upstreams: AtomicU64,
    /// Edge: upstreams re-established after a loss.
    pub upstream_repulls_total: AtomicU64,
    /// Origin: streams being recorded now.
    pub recordings: AtomicU64,
    /// Origin: recordings ended because a file could not be written.
    pub record_errors_total: AtomicU64,
    /// Origin: forwards and pulls connected and relaying now.
    pub relays_live: AtomicU64,
    /// Origin: media bytes forwarded to other servers.
    pub relay_bytes_total: AtomicU64,
    /// Origin: forward and pull attempts that failed (each is tried again).
    pub relay_retries_total: AtomicU64,
    /// Origin: frames a forward dropped because its destination was too slow.
    pub relay_frames_skipped_total: AtomicU64,
}

/// Keeps a gauge raised while alive.
pub struct GaugeGuard {
    metrics: Arc<Metrics>,
    gauge: fn(&Metrics) -> &AtomicU64,
}

impl GaugeGuard {
    pub fn new(metrics: Arc<Metrics>, gauge: fn(&Metrics) -> &AtomicU64) -> Self {
        gauge(&metrics).fetch_add(1, Relaxed);
        GaugeGuard { metrics, gauge }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(1, Relaxed);
    }
}

/// How a player plays, for its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    HttpFlv,
    WebSocketFlv,
    Hls,
    HttpTs,
    HttpFmp4,
    Rtsp,
    WebRtc,
}

impl Protocol {
    pub const ALL: [Protocol; 8] = [
        Protocol::Rtmp,
        Protocol::HttpFlv,
        Protocol::WebSocketFlv,
        Protocol::Hls,
        Protocol::HttpTs,
        Protocol::HttpFmp4,
        Protocol::Rtsp,
        Protocol::WebRtc,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Its label in the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::HttpFlv => "http-flv",
            Protocol::WebSocketFlv => "ws-flv",
            Protocol::Hls => "hls",
            Protocol::HttpTs => "http-ts",
            Protocol::HttpFmp4 => "http-fmp4",
            Protocol::Rtsp => "rtsp",
            Protocol::WebRtc => "webrtc",
        }
    }
}

/// Counts one player of `stream` in `viewers` and in its protocol's counts while alive.
pub struct ViewerGuard {
    metrics: Arc<Metrics>,
    protocol: Protocol,
    stream: String,
}

impl ViewerGuard {
    pub fn new(metrics: Arc<Metrics>, protocol: Protocol, stream: &str) -> Self {
        metrics.viewers.fetch_add(1, Relaxed);
        metrics.viewers_by_protocol[protocol.index()].fetch_add(1, Relaxed);
        let stream = stream.to_owned();
        metrics.stream_viewers().entry(stream.clone()).or_default()[protocol.index()] += 1;
        ViewerGuard {
            metrics,
            protocol,
            stream,
        }
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.metrics.viewers.fetch_sub(1, Relaxed);
        self.metrics.viewers_by_protocol[self.protocol.index()].fetch_sub(1, Relaxed);
        let mut by_stream = self.metrics.stream_viewers();
        if let Some(counts) = by_stream.get_mut(&self.stream) {
            counts[self.protocol.index()] = counts[self.protocol.index()].saturating_sub(1);
            if counts.iter().all(|&n| n == 0) {
                by_stream.remove(&self.stream);
            }
        }
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    fn stream_viewers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, [u64; Protocol::ALL.len()]>> {
        self.stream_viewers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Players of `stream` now, by protocol ([`Protocol::index`]).
    pub fn viewers_of(&self, stream: &str) -> [u64; Protocol::ALL.len()] {
        self.stream_viewers()
            .get(stream)
            .copied()
            .unwrap_or_default()
    }

    /// `refused`: connections refused at the door (see [`crate::admission`]).
    pub fn render(&self, hub: &Hub, refused: u64) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Relaxed);
        let streams = hub.list();
        let published = streams.iter().filter(|s| s.has_publisher).count() as u64;
        metric(
            "ferrolive_streams",
            "gauge",
            "Streams with a live publisher.",
            published,
        );
        metric(
            "ferrolive_viewers",
            "gauge",
            "Players attached to streams (all protocols).",
            get(&self.viewers),
        );
        metric(
            "ferrolive_relays",
            "gauge",
            "Other nodes (edges) pulling streams from this one.",
            get(&self.relays),
        );
        metric(
            "ferrolive_rtmp_connections",
            "gauge",
            "Open RTMP connections.",
            get(&self.rtmp_connections),
        );
        metric(
            "ferrolive_rtmp_connections_total",
            "counter",
            "RTMP connections accepted.",
            get(&self.rtmp_connections_total),
        );
        metric(
            "ferrolive_rtsp_connections",
            "gauge",
            "Open RTSP connections.",
            get(&self.rtsp_connections),
        );
        metric(
            "ferrolive_http_connections",
            "gauge",
            "Open player HTTP connections.",
            get(&self.http_connections),
        );
        metric(
            "ferrolive_http_connections_total",
            "counter",
            "Player HTTP connections accepted.",
            get(&self.http_connections_total),
        );
        metric(
            "ferrolive_connections_refused_total",
            "counter",
            "Connections closed at once because their listener, or their address, had as many open as allowed.",
            refused,
        );
        metric(
            "ferrolive_connections_rejected_total",
            "counter",
            "Connections closed for bad input, a timeout or a stalled peer.",
            get(&self.connections_rejected_total),
        );
        metric(
            "ferrolive_publishes_total",
            "counter",
            "Publish sessions accepted.",
            get(&self.publishes_total),
        );
        metric(
            "ferrolive_bytes_in_total",
            "counter",
            "Bytes received from clients.",
            get(&self.bytes_in_total),
        );
        metric(
            "ferrolive_bytes_out_total",
            "counter",
            "Bytes sent to clients.",
            get(&self.bytes_out_total),
        );
        metric(
            "ferrolive_bytes_out_zero_copy_total",
            "counter",
            "Of the bytes sent, those sent to viewers from a stream's shared copy (sendfile).",
            get(&self.bytes_out_zero_copy_total),
        );
        metric(
            "ferrolive_frames_skipped_total",
            "counter",
            "Frames dropped for viewers that fell behind.",
            get(&self.frames_skipped_total),
        );
        metric(
            "ferrolive_invalid_media_total",
            "counter",
            "Audio and video messages dropped because they cannot be valid for their codec.",
            get(&self.invalid_media_total),
        );
        metric(
            "ferrolive_viewers_dropped_slow_total",
            "counter",
            "Viewers disconnected for staying behind.",
            get(&self.viewers_dropped_slow_total),
        );
        metric(
            "ferrolive_webrtc_packets_dropped_total",
            "counter",
            "WebRTC packets dropped because the UDP socket's send buffer was full.",
            get(&self.webrtc_packets_dropped_total),
        );
        metric(
            "ferrolive_webrtc_feeds",
            "gauge",
            "Streams packetized for WebRTC now, once each for all their sessions.",
            get(&self.webrtc_feeds),
        );
        metric(
            "ferrolive_webrtc_audio_transcoders",
            "gauge",
            "Streams whose AAC is transcoded to Opus for WebRTC now, once each.",
            get(&self.webrtc_audio_transcoders),
        );
        metric(
            "ferrolive_webrtc_keyframe_answers_total",
            "counter",
            "WebRTC keyframe requests (PLI, FIR) answered by resending the GOP cache.",
            get(&self.webrtc_keyframe_answers_total),
        );
        metric(
            "ferrolive_upstream_pulls_total",
            "counter",
            "Edge: pulls of a stream from its origin started on a miss.",
            get(&self.upstream_pulls_total),
        );
        metric(
            "ferrolive_upstreams",
            "gauge",
            "Edge: streams being pulled from origins now.",
            get(&self.upstreams),
        );
        metric(
            "ferrolive_upstream_repulls_total",
            "counter",
            "Edge: upstreams re-established after losing the origin.",
            get(&self.upstream_repulls_total),
        );
        metric(
            "ferrolive_recordings",
            "gauge",
            "Origin: streams being recorded now.",
            get(&self.recordings),
        );
        metric(
            "ferrolive_record_errors_total",
            "counter",
            "Origin: recordings ended because a file could not be written (a full or slow disk).",
            get(&self.record_errors_total),
        );
        metric(
            "ferrolive_relays_live",
            "gauge",
            "Origin: forwards and pulls connected and relaying now.",
            get(&self.relays_live),
        );
        metric(
            "ferrolive_relay_bytes_total",
            "counter",
            "Origin: media bytes forwarded to other servers.",
            get(&self.relay_bytes_total),
        );
        metric(
            "ferrolive_relay_retries_total",
            "counter",
            "Origin: forward and pull attempts that failed (each is tried again).",
            get(&self.relay_retries_total),
        );
        metric(
            "ferrolive_relay_frames_skipped_total",
            "counter",
            "Origin: frames a forward dropped because its destination was too slow.",
            get(&self.relay_frames_skipped_total),
        );
        let _ = writeln!(out, "# HELP ferrolive_protocol_viewers Players attached now, by protocol.\n# TYPE ferrolive_protocol_viewers gauge");
        for protocol in Protocol::ALL {
            let _ = writeln!(
                out,
                "ferrolive_protocol_viewers{{protocol=\"{}\"}} {}",
                protocol.label(),
                get(&self.viewers_by_protocol[protocol.index()])
            );
        }
        let _ = writeln!(out, "# HELP ferrolive_stream_viewers Viewers of one stream.\n# TYPE ferrolive_stream_viewers gauge");
        for s in &streams {
            let _ = writeln!(
                out,
                "ferrolive_stream_viewers{{stream=\"{}\"}} {}",
                escape_label(&s.name),
                s.viewers
            );
        }
        out
    }
}

/// `v` as a Prometheus label value.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
