//! `ferrolive`: one binary, one subcommand per node role.

mod config;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, Parser, Subcommand};
use edge::{EdgeConfig, PullConfig};
use media::hls::HlsConfig;
use media::hub::{HubConfig, Segmenting};
use origin::OriginConfig;
use registry::{EmbeddedRegistry, NodeAddrs, NodeIdentity, NodeRole, RedisRegistry, Registry};
use serve::admission::{fit_to_open_files, ConnectionLimits};
use serve::hooks::{HookEvent, HookUrl, HookUrls, HooksConfig};
use serve::tls::Certificates;
use serve::NodeConfig;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "ferrolive",
    version,
    about = "Live-streaming origin/edge server: RTMP in; RTMP, HTTP-FLV and HLS out"
)]
struct Cli {
    /// A TOML file with any of these options (without `--`) and `[app.NAME]` sections
    /// (`hls-segment`, `hls-window`); flags and FERROLIVE_* variables override it.
    #[arg(long, global = true, env = "FERROLIVE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    standalone: StandaloneArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: ingest, playback and the control API (the default).
    Standalone(StandaloneArgs),
    /// A cluster origin: RTMP ingest with key checks, leases in Redis, playback.
    Origin(OriginArgs),
    /// A cluster edge: serves players, pulling each stream from its origin on the first request.
    Edge(EdgeArgs),
    /// The control API alone, against the cluster's Redis.
    ControlApi(ControlApiArgs),
    /// Load generator: RTMP, HTTP-FLV and HLS players against any server, optionally with
    /// its own publisher to measure latency.
    Bench(bench::BenchArgs),
}

/// Listeners and media behaviour shared by every node that carries streams.
#[derive(Args, Clone)]
struct MediaArgs {
    /// RTMP listen address (publish and play).
    #[arg(long, env = "FERROLIVE_RTMP_ADDR", default_value = "0.0.0.0:1935")]
    rtmp_addr: SocketAddr,
    /// Player HTTP listen address: /live/{room}.flv, .m3u8, /metrics, /healthz.
    #[arg(long, env = "FERROLIVE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// RTSP listen address (play any stream over TCP or UDP; publish with the channel key).
    #[arg(long, env = "FERROLIVE_RTSP_ADDR", default_value = "0.0.0.0:8554")]
    rtsp_addr: SocketAddr,
    /// Seconds an RTSP session over UDP may go without a request or an RTCP packet (it
    /// is then closed; players send them every few seconds).
    #[arg(long, env = "FERROLIVE_RTSP_SESSION_TIMEOUT", default_value_t = 60)]
    rtsp_session_timeout: u64,
    /// WebRTC (WHEP) UDP address, shared by every WebRTC viewer (players post their offer
    /// to /APP/ROOM/whep on the player port).
    #[arg(
        long,
        env = "FERROLIVE_WEBRTC_UDP_ADDR",
        default_value = "0.0.0.0:8189"
    )]
    webrtc_udp_addr: SocketAddr,
    /// The IP address WebRTC players are told to send to (default: the advertised host
    /// when it is an address, else the address each offer came in on).
    #[arg(long, env = "FERROLIVE_WEBRTC_PUBLIC_IP")]
    webrtc_public_ip: Option<IpAddr>,
    /// RTMPS listen address (publish and play over TLS; needs --tls-cert and --tls-key).
    /// OBS and most services use port 443.
    #[arg(long, env = "FERROLIVE_RTMPS_ADDR", requires = "tls_cert")]
    rtmps_addr: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive.
    #[arg(long, env = "FERROLIVE_LOG", default_value = "info")]
    log: String,
    /// Publish by room name without a channel key (development only, like livego's rtmp_noauth).
    #[arg(long, env = "FERROLIVE_RTMP_NOAUTH")]
    rtmp_noauth: bool,
    /// Seconds viewers stay attached when a publisher vanishes without unpublishing,
    /// waiting for it to reconnect.
    #[arg(long, env = "FERROLIVE_RECONNECT_GRACE", default_value_t = 5.0)]
    reconnect_grace: f64,
    /// Seconds of silence after which a publisher counts as stale and a new publisher of
    /// the same stream takes over.
    #[arg(long, env = "FERROLIVE_PUBLISHER_STALE", default_value_t = 2.0)]
    publisher_stale: f64,
    /// Frames a viewer may have waiting (beyond what its socket buffers) before it skips
    /// to the next keyframe; each stream's shared ring also keeps this many writes.
    #[arg(long, env = "FERROLIVE_VIEWER_BACKLOG", default_value_t = 256)]
    viewer_backlog: usize,
    /// Milliseconds a viewer's picture may wait for the next one to share its write. 40
    /// writes two pictures at a time at 30 fps (half the syscalls; every other picture
    /// waits one frame interval); 0 writes each picture as it arrives.
    #[arg(long, env = "FERROLIVE_MERGE_WINDOW_MS", default_value_t = 40)]
    merge_window_ms: u64,
    /// Kernel send buffer per viewer socket, in bytes (0: kernel autotuning). Smaller
    /// keeps slow viewers' lag low; larger suits high bit rates over long round trips.
    #[arg(long, env = "FERROLIVE_VIEWER_SEND_BUFFER", default_value_t = 256 * 1024)]
    viewer_send_buffer: usize,
    /// HLS: seconds a segment lasts at least (cut at the next keyframe after this), 1 or
    /// more. Origins decide; edges follow their origin's segments.
    #[arg(long, env = "FERROLIVE_HLS_SEGMENT", default_value_t = 2.0)]
    hls_segment: f64,
    /// HLS: segments listed in a live playlist.
    #[arg(long, env = "FERROLIVE_HLS_WINDOW", default_value_t = 6)]
    hls_window: usize,
    /// Low-latency HLS (`/APP/ROOM/index.m3u8`): milliseconds a part lasts at most (a part
    /// ends at the first frame 85% of this or more after it began), 100 or more and less
    /// than a segment. Players hold back three parts.
    #[arg(long, env = "FERROLIVE_HLS_PART_MS", default_value_t = 333)]
    hls_part_ms: u64,
    /// With a secret, every play (RTMP, HTTP-FLV, HLS and its segments and parts, every
    /// protocol) needs `?token=`, signed with it (the control API mints them); the same on
    /// every node and the control API. Edges check tokens themselves.
    #[arg(long, env = "FERROLIVE_PLAY_SECRET", hide_env_values = true)]
    play_secret: Option<String>,
    #[command(flatten)]
    hooks: HookArgs,
    /// A directory with the console's player libraries (`hls.min.js`, `mpegts.js`) for
    /// networks without the internet; without it the console's pages load them from a CDN.
    #[arg(long, env = "FERROLIVE_CONSOLE_ASSETS")]
    console_assets: Option<PathBuf>,
    /// Seconds a graceful shutdown (SIGTERM or Ctrl-C) may take: stop accepting, end the
    /// streams for their players, release the stream leases and the node heartbeat. The
    /// process exits after it even if the registry does not answer.
    #[arg(long, env = "FERROLIVE_SHUTDOWN_GRACE", default_value_t = 5.0)]
    shutdown_grace: f64,
    /// Open RTMP connections allowed in all (lowered to fit the open files limit).
    #[arg(long, env = "FERROLIVE_RTMP_MAX_CONNECTIONS", default_value_t = 5000)]
    rtmp_max_connections: usize,
    /// Open RTMP connections allowed from one IP address.
    #[arg(
        long,
        env = "FERROLIVE_RTMP_MAX_CONNECTIONS_PER_IP",
        default_value_t = 2000
    )]
    rtmp_max_connections_per_ip: usize,
    /// MiB that the unfinished messages of RTMP connections not publishing may declare,
    /// all together (each may declare 64 KiB); a connection that would take the node over
    /// it is closed.
    #[arg(long, env = "FERROLIVE_RTMP_INCOMPLETE_MIB", default_value_t = 64)]
    rtmp_incomplete_mib: usize,
    /// Open player HTTP connections allowed in all (lowered to fit the open files limit).
    #[arg(long, env = "FERROLIVE_HTTP_MAX_CONNECTIONS", default_value_t = 10000)]
    http_max_connections: usize,
    /// Open player HTTP connections allowed from one IP address.
    #[arg(
        long,
        env = "FERROLIVE_HTTP_MAX_CONNECTIONS_PER_IP",
        default_value_t = 2000
    )]
    http_max_connections_per_ip: usize,
    /// Player HTTP requests one client address may make per second, in bursts of as many
    /// (0: no limit); more are answered 429. Players behind one NAT share an address: an
    /// LL-HLS player makes about 6 requests a second, an HLS player one every second or two.
    #[arg(long, env = "FERROLIVE_HTTP_REQUESTS_PER_IP", default_value_t = 0)]
    http_requests_per_ip: u32,
    /// Publishes one channel key (or, with --rtmp-noauth, one room name) may start per
    /// minute, in bursts of as many (0: no limit); more are refused with
    /// NetStream.Publish.BadName before the key is even looked up.
    #[arg(long, env = "FERROLIVE_PUBLISHES_PER_KEY", default_value_t = 30)]
    publishes_per_key: u32,
}

/// TLS: RTMPS, and HTTPS beside HTTP on the same ports.
#[derive(Args, Clone)]
struct TlsArgs {
    /// PEM certificate chain (the server's certificate first). With --tls-key, the player
    /// port and the control API take HTTPS beside HTTP, and --rtmps-addr listens. The files
    /// are read again when they change, or on SIGHUP.
    #[arg(
        long,
        env = "FERROLIVE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "FERROLIVE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The certificate, read now (an error names the file), reloaded on SIGHUP.
    fn load(&self) -> anyhow::Result<Option<Arc<Certificates>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let certificates = Certificates::load(cert, key)?;
        reload_on_sighup(&certificates);
        Ok(Some(certificates))
    }
}

/// Read the certificate again on every SIGHUP.
fn reload_on_sighup(certificates: &Arc<Certificates>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        warn!("cannot watch SIGHUP: the certificate is reloaded when its files change");
        return;
    };
    let certificates = Arc::downgrade(certificates);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(certificates) = certificates.upgrade() else {
                return;
            };
            match certificates.reload() {
                Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => {
                    warn!(error = %e, "SIGHUP: cannot reload the TLS certificate; keeping the previous one")
                }
            }
        }
    });
}

/// HTTP hooks: URLs told of (or asked about) publishes, plays, recordings and relays. An
/// `[app.NAME]` section of the config file may set its own (`on-play = "http://..."`).
#[derive(Args, Clone)]
struct HookArgs {
    /// Asked before a publish starts (origins): a 2xx allows, anything else refuses.
    #[arg(long, env = "FERROLIVE_ON_PUBLISH", value_name = "URL")]
    on_publish: Option<String>,
    /// Asked before a play starts (every protocol; an HLS player once per session).
    #[arg(long, env = "FERROLIVE_ON_PLAY", value_name = "URL")]
    on_play: Option<String>,
    /// Told when a publish ends.
    #[arg(long, env = "FERROLIVE_ON_UNPUBLISH", value_name = "URL")]
    on_unpublish: Option<String>,
    /// Told when a player that was let in stops.
    #[arg(long, env = "FERROLIVE_ON_STOP", value_name = "URL")]
    on_stop: Option<String>,
    /// Told when a recorded file is finished.
    #[arg(long, env = "FERROLIVE_ON_RECORD_DONE", value_name = "URL")]
    on_record_done: Option<String>,
    /// Told when a forward or pull goes live, fails or ends.
    #[arg(long, env = "FERROLIVE_ON_RELAY", value_name = "URL")]
    on_relay: Option<String>,
    /// Seconds on_publish and on_play wait for an answer (and each attempt at a
    /// notification may take).
    #[arg(long, env = "FERROLIVE_HOOK_TIMEOUT", default_value_t = 2.0)]
    hook_timeout: f64,
    /// Let publishes and plays go on when on_publish or on_play does not answer in time or
    /// cannot be reached (default: refuse them).
    #[arg(long, env = "FERROLIVE_HOOK_FAIL_OPEN")]
    hook_fail_open: bool,
    /// Sign every hook body: `X-Ferrolive-Signature: sha256=HEX`, the HMAC-SHA256 of the
    /// body under this secret.
    #[arg(long, env = "FERROLIVE_HOOK_SECRET", hide_env_values = true)]
    hook_secret: Option<String>,
}

impl HookArgs {
    fn config(&self, sections: &AppSections) -> anyhow::Result<HooksConfig> {
        let urls = |set: &[(HookEvent, &Option<String>)]| -> anyhow::Result<HookUrls> {
            let mut urls = HookUrls::default();
            for (event, url) in set {
                if let Some(url) = url.as_deref().filter(|u| !u.is_empty()) {
                    urls.set(*event, HookUrl::parse(url).map_err(anyhow::Error::msg)?);
                }
            }
            Ok(urls)
        };
        let global = urls(&[
            (HookEvent::Publish, &self.on_publish),
            (HookEvent::Play, &self.on_play),
            (HookEvent::Unpublish, &self.on_unpublish),
            (HookEvent::Stop, &self.on_stop),
            (HookEvent::RecordDone, &self.on_record_done),
            (HookEvent::Relay, &self.on_relay),
        ])?;
        let mut apps = BTreeMap::new();
        for (app, section) in sections {
            if section.hooks.is_empty() {
                continue;
            }
            let mut own = HookUrls::default();
            for (event, url) in &section.hooks {
                let url = HookUrl::parse(url).map_err(|e| anyhow::anyhow!("[app.{app}] {e}"))?;
                own.set(*event, url);
            }
            apps.insert(app.clone(), own);
        }
        Ok(HooksConfig {
            global,
            apps,
            timeout: seconds("hook-timeout", self.hook_timeout)?,
            fail_open: self.hook_fail_open,
            secret: (self.hook_secret.as_deref())
                .filter(|s| !s.is_empty())
                .map(|s| media::token::HmacKey::new(s.as_bytes())),
            node: String::new(),
        })
    }
}

/// Recording (standalone and origin).
#[derive(Args, Clone)]
struct RecordArgs {
    /// Record live streams under this folder (DIR/APP/ROOM/<UTC start>.EXT); off without it.
    #[arg(long, env = "FERROLIVE_RECORD_DIR", value_name = "DIR")]
    record_dir: Option<PathBuf>,
    /// What to record: flv, mp4 (fragmented, playable while it grows) or flv,mp4.
    #[arg(long, env = "FERROLIVE_RECORD_FORMAT", default_value = "mp4", value_parser = record_formats)]
    record_format: RecordFormats,
    /// Seconds a file lasts at least: the next begins at the first keyframe after it.
    #[arg(long, env = "FERROLIVE_RECORD_SEGMENT", default_value_t = 600.0)]
    record_segment: f64,
    /// Apps whose streams are recorded from their start, comma-separated (default: all);
    /// the control API starts and stops the recording of any live room.
    #[arg(long, env = "FERROLIVE_RECORD_APPS", value_name = "LIST", value_parser = app_list)]
    record_apps: Option<AppList>,
    /// Delete recordings last written more than this many hours ago.
    #[arg(long, env = "FERROLIVE_RECORD_KEEP_HOURS", value_name = "HOURS")]
    record_keep_hours: Option<f64>,
    /// Delete the oldest recordings while they take more than this many GB (10^9 bytes).
    #[arg(long, env = "FERROLIVE_RECORD_MAX_GB", value_name = "GB")]
    record_max_gb: Option<f64>,
}

/// Relays: forwards to other servers and pulls from them.
#[derive(Args, Clone)]
struct RelayArgs {
    /// Forward streams to another server: APP/ROOM=URL, APP or ROOM `*` for any, `{app}`
    /// and `{room}` in the rtmp:// or rtmps:// URL replaced. Repeat for more (the
    /// environment variable: space-separated).
    #[arg(
        long,
        env = "FERROLIVE_RELAY_PUSH",
        value_name = "RULE",
        value_delimiter = ' '
    )]
    relay_push: Vec<String>,
    /// Feed a room from another server, always: APP/ROOM=URL (rtmp://, rtmps://,
    /// http(s)://...flv). Repeat for more.
    #[arg(
        long,
        env = "FERROLIVE_RELAY_PULL",
        value_name = "RULE",
        value_delimiter = ' '
    )]
    relay_pull: Vec<String>,
    /// The same, started by the room's first viewer and stopped once nobody has watched
    /// for --relay-pull-idle.
    #[arg(
        long,
        env = "FERROLIVE_RELAY_PULL_ON_DEMAND",
        value_name = "RULE",
        value_delimiter = ' '
    )]
    relay_pull_on_demand: Vec<String>,
    /// Seconds an on-demand pull goes on without anyone watching.
    #[arg(long, env = "FERROLIVE_RELAY_PULL_IDLE", default_value_t = 10.0)]
    relay_pull_idle: f64,
    /// CA certificates (PEM) trusted for rtmps:// and https:// relays besides the system's.
    #[arg(long, env = "FERROLIVE_RELAY_CA", value_name = "FILE")]
    relay_ca: Option<PathBuf>,
}

impl RelayArgs {
    fn config(&self) -> anyhow::Result<origin::RelayConfig> {
        let rule = |flag: &str, rule: &str| format!("--{flag} {rule:?}");
        let mut pull = Vec::new();
        for (flag, rules, on_demand) in [
            ("relay-pull", &self.relay_pull, false),
            ("relay-pull-on-demand", &self.relay_pull_on_demand, true),
        ] {
            for r in rules.iter().filter(|r| !r.is_empty()) {
                pull.push(
                    origin::PullRule::parse(r, on_demand)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", rule(flag, r)))?,
                );
            }
        }
        Ok(origin::RelayConfig {
            push: (self.relay_push.iter().filter(|r| !r.is_empty()))
                .map(|r| {
                    origin::ForwardRule::parse(r)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", rule("relay-push", r)))
                })
                .collect::<anyhow::Result<_>>()?,
            pull,
            pull_idle: seconds("relay-pull-idle", self.relay_pull_idle)?,
        })
    }

    fn tls(&self) -> anyhow::Result<std::sync::Arc<origin::relay::transport::Tls>> {
        let tls = origin::relay::transport::Tls::new(self.relay_ca.as_deref())
            .map_err(|e| anyhow::anyhow!("--relay-ca: {e}"))?;
        Ok(std::sync::Arc::new(tls))
    }
}

/// `--record-format`: formats without repeats.
#[derive(Debug, Clone, PartialEq)]
struct RecordFormats(Vec<origin::RecordFormat>);

fn record_formats(list: &str) -> Result<RecordFormats, String> {
    let mut formats = Vec::new();
    for name in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let format = match name {
            "flv" => origin::RecordFormat::Flv,
            "mp4" => origin::RecordFormat::Mp4,
            other => return Err(format!("{other:?} is not a recording format (flv, mp4)")),
        };
        if !formats.contains(&format) {
            formats.push(format);
        }
    }
    if formats.is_empty() {
        return Err("name at least one format (flv, mp4)".into());
    }
    Ok(RecordFormats(formats))
}

impl RecordArgs {
    fn config(&self) -> anyhow::Result<Option<origin::RecordConfig>> {
        let Some(dir) = self.record_dir.clone() else {
            return Ok(None);
        };
        Ok(Some(origin::RecordConfig {
            dir,
            formats: self.record_format.0.clone(),
            segment: seconds("record-segment", self.record_segment)?,
            apps: self
                .record_apps
                .clone()
                .map(|AppList(apps)| apps)
                .unwrap_or_default(),
            retention: serve::recordings::Retention {
                keep: self
                    .record_keep_hours
                    .map(|hours| seconds("record-keep-hours", hours * 3600.0))
                    .transpose()?,
                max_bytes: match self.record_max_gb {
                    Some(gb) if gb.is_finite() && gb >= 0.0 => Some((gb * 1e9) as u64),
                    Some(gb) => bail!("invalid --record-max-gb: {gb}"),
                    None => None,
                },
            },
        }))
    }
}

/// The control API's caps on open connections.
#[derive(Args, Clone)]
struct ApiLimitArgs {
    /// Open control API connections allowed in all (lowered to fit the open files limit).
    #[arg(long, env = "FERROLIVE_API_MAX_CONNECTIONS", default_value_t = control_api::DEFAULT_LIMITS.total)]
    api_max_connections: usize,
    /// Open control API connections allowed from one IP address.
    #[arg(long, env = "FERROLIVE_API_MAX_CONNECTIONS_PER_IP", default_value_t = control_api::DEFAULT_LIMITS.per_ip)]
    api_max_connections_per_ip: usize,
}

impl ApiLimitArgs {
    fn limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            total: self.api_max_connections,
            per_ip: self.api_max_connections_per_ip,
        }
    }
}

/// Who may use the control API.
#[derive(Args, Clone)]
struct ApiAuthArgs {
    /// Bearer token required on every control endpoint.
    #[arg(long, env = "FERROLIVE_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// HS256 secret for livego-style `jwt` tokens (query `?jwt=` or Bearer).
    #[arg(long, env = "FERROLIVE_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// Channel keys created or reset per minute per client address.
    #[arg(long, env = "FERROLIVE_KEY_RATE", default_value_t = 60)]
    key_rate_per_minute: u32,
}

/// Which apps exist: on nodes and in the control API.
#[derive(Args, Clone)]
struct AppsArgs {
    /// Apps that exist, comma-separated (e.g. `live,game`): nodes refuse to publish or
    /// play any other (NetStream.Publish.BadName, 404 / StreamNotFound), and the control
    /// API refuses any other in `?app=` and gRPC `app` (400). Absent or empty: any valid
    /// app name. Requests to the control API that name no app mean `live`, or the first of
    /// these when they leave `live` out.
    #[arg(long, env = "FERROLIVE_APPS", value_name = "LIST", value_parser = app_list)]
    apps: Option<AppList>,
}

impl AppsArgs {
    /// The apps listed (empty: any).
    fn list(&self) -> Vec<String> {
        self.apps
            .clone()
            .map(|AppList(apps)| apps)
            .unwrap_or_default()
    }
}

/// `--apps`: valid app names, without repeats, in the order given.
#[derive(Debug, Clone, PartialEq)]
struct AppList(Vec<String>);

fn app_list(list: &str) -> Result<AppList, String> {
    let mut apps: Vec<String> = Vec::new();
    for app in list.split(',').map(str::trim).filter(|app| !app.is_empty()) {
        if !registry::is_valid_name(app) {
            return Err(format!(
                "{app:?} is not a valid app name (1 to 64 characters from A-Z a-z 0-9 - _ . ~, \
                 not starting with '.')"
            ));
        }
        if !apps.iter().any(|known| known == app) {
            apps.push(app.to_owned());
        }
    }
    Ok(AppList(apps))
}

#[derive(Args, Clone)]
struct StandaloneArgs {
    #[command(flatten)]
    media: MediaArgs,
    /// Control API listen address (REST and gRPC).
    #[arg(long, env = "FERROLIVE_API_ADDR", default_value = "0.0.0.0:8090")]
    api_addr: SocketAddr,
    #[command(flatten)]
    api_limits: ApiLimitArgs,
    /// Where channel keys are kept across restarts (embedded store).
    #[arg(long, env = "FERROLIVE_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Use this Redis instead of the embedded store.
    #[arg(long, env = "FERROLIVE_REDIS_URL")]
    redis_url: Option<String>,
    #[arg(long, env = "FERROLIVE_REDIS_PREFIX", default_value = "ferrolive:")]
    redis_prefix: String,
    #[command(flatten)]
    auth: ApiAuthArgs,
    #[command(flatten)]
    apps: AppsArgs,
    #[command(flatten)]
    record: RecordArgs,
    #[command(flatten)]
    relay: RelayArgs,
}

/// The cluster's Redis (origins, edges and the cluster's control API).
#[derive(Args, Clone)]
struct ClusterRedisArgs {
    /// The cluster's Redis.
    #[arg(
        long,
        env = "FERROLIVE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    #[arg(long, env = "FERROLIVE_REDIS_PREFIX", default_value = "ferrolive:")]
    redis_prefix: String,
}

impl ClusterRedisArgs {
    async fn connect(&self) -> anyhow::Result<Arc<dyn Registry>> {
        Ok(Arc::new(
            RedisRegistry::connect(&self.redis_url, &self.redis_prefix).await?,
        ))
    }
}

/// How a node joins the cluster.
#[derive(Args, Clone)]
struct ClusterArgs {
    #[command(flatten)]
    redis: ClusterRedisArgs,
    /// This node's id in the registry (default: the host name).
    #[arg(long, env = "FERROLIVE_NODE_ID")]
    node_id: Option<String>,
    /// Region label, used to send players to a nearby edge. Empty means `default` (as
    /// the Kubernetes downward API gives a node topology label the pod does not carry).
    #[arg(long, env = "FERROLIVE_REGION", default_value = "default")]
    region: String,
    /// Host other nodes and players reach this node at; its ports are its listeners'.
    #[arg(long, env = "FERROLIVE_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// Accept a loopback or unspecified advertised host (a cluster on one machine).
    #[arg(long, env = "FERROLIVE_ALLOW_LOOPBACK_ADVERTISE")]
    allow_loopback_advertise: bool,
}

#[derive(Args, Clone)]
struct OriginArgs {
    #[command(flatten)]
    media: MediaArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    apps: AppsArgs,
    #[command(flatten)]
    record: RecordArgs,
    #[command(flatten)]
    relay: RelayArgs,
}

#[derive(Args, Clone)]
struct EdgeArgs {
    #[command(flatten)]
    media: MediaArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    apps: AppsArgs,
    /// Seconds a viewer of a stream that is not live waits for it before a 404 /
    /// NetStream.Play.StreamNotFound.
    #[arg(long, env = "FERROLIVE_EDGE_PLAY_WAIT", default_value_t = 3.0)]
    edge_play_wait: f64,
    /// Seconds viewers are held, and the owning origin looked up and pulled again, after an
    /// upstream broke (longer than the 6 s lease TTL, so a broadcaster that moves to
    /// another origin after its origin died is picked up).
    #[arg(long, env = "FERROLIVE_UPSTREAM_GRACE", default_value_t = 15.0)]
    upstream_grace: f64,
    /// Seconds an upstream may be silent before the edge counts it lost and re-pulls (sooner
    /// when the stream's own pace says so: four of its longest recent gaps, at least 1 s).
    #[arg(long, env = "FERROLIVE_UPSTREAM_TIMEOUT", default_value_t = 3.0)]
    upstream_timeout: f64,
    /// Seconds a pulled stream may have no viewers before the pull stops.
    #[arg(long, env = "FERROLIVE_EDGE_IDLE_GRACE", default_value_t = 10.0)]
    edge_idle_grace: f64,
}

#[derive(Args, Clone)]
struct ControlApiArgs {
    /// Control API listen address (REST and gRPC).
    #[arg(long, env = "FERROLIVE_API_ADDR", default_value = "0.0.0.0:8090")]
    api_addr: SocketAddr,
    #[command(flatten)]
    redis: ClusterRedisArgs,
    #[arg(long, env = "FERROLIVE_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    auth: ApiAuthArgs,
    #[command(flatten)]
    apps: AppsArgs,
    #[command(flatten)]
    api_limits: ApiLimitArgs,
    /// Seconds a graceful shutdown (SIGTERM or Ctrl-C) waits for open requests and
    /// `WatchRooms` streams to finish.
    #[arg(long, env = "FERROLIVE_SHUTDOWN_GRACE", default_value_t = 5.0)]
    shutdown_grace: f64,
    /// The origins' record folder (shared with them), for listing and deleting recordings.
    #[arg(long, env = "FERROLIVE_RECORD_DIR", value_name = "DIR")]
    record_dir: Option<PathBuf>,
    /// The nodes' play secret: the API mints play tokens
    /// (`POST /api/v1/rooms/{room}/play-token`) and puts them in play URLs.
    #[arg(long, env = "FERROLIVE_PLAY_SECRET", hide_env_values = true)]
    play_secret: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line naming what failed (the chain of contexts), not a backtrace.
            eprintln!("ferrolive: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut app_sections = BTreeMap::new();
    if let Some(path) = config::file_in(&args) {
        let root = Cli::command();
        let named = args.get(1).and_then(|a| root.find_subcommand(a));
        let command = named
            .or_else(|| root.find_subcommand("standalone"))
            .expect("standalone is a subcommand");
        let file = config::ConfigFile::read(&path, command)?;
        args = file.merge_into(args, command);
        app_sections = file.apps;
    }
    let cli = Cli::parse_from(args);
    let command = cli.command.unwrap_or(Command::Standalone(cli.standalone));
    let log = match &command {
        Command::Standalone(a) => &a.media.log,
        Command::Origin(a) => &a.media.log,
        Command::Edge(a) => &a.media.log,
        Command::ControlApi(a) => &a.log,
        // Its own runtime and output: a table on stdout, progress on stderr.
        Command::Bench(args) => {
            let _ = raise_open_files_limit();
            return bench::main(args.clone());
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .init();
    match raise_open_files_limit() {
        Ok(Some((from, to))) => info!(from, to, "open files limit raised"),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "could not raise the open files limit"),
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async move {
        match command {
            Command::Standalone(args) => standalone(args, &app_sections).await,
            Command::Origin(args) => origin(args, &app_sections).await,
            Command::Edge(args) => edge(args, &app_sections).await,
            Command::ControlApi(args) => control_api_only(args).await,
            Command::Bench(_) => unreachable!("bench returned before the runtime was built"),
        }
    });
    // The node finished its graceful shutdown (bounded by its grace): do not wait for
    // whatever is left (blocking look-ups, connections past the grace).
    runtime.shutdown_background();
    result
}

/// Every player is an open file, and most systems start a process with a soft limit of
/// 1024 of them: about a thousand players. Take the hard limit instead, as nginx's
/// `worker_rlimit_nofile` and Go programs do. Returns the soft limit before and after, if
/// it changed (`u64::MAX`: unlimited).
fn raise_open_files_limit() -> std::io::Result<Option<(u64, u64)>> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(None);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            ..limit
        },
    )?;
    let count = |n: Option<u64>| n.unwrap_or(u64::MAX);
    Ok(Some((count(limit.current), count(limit.maximum))))
}

async fn standalone(args: StandaloneArgs, apps: &AppSections) -> anyhow::Result<()> {
    let registry: Arc<dyn Registry> = match &args.redis_url {
        Some(url) => Arc::new(RedisRegistry::connect(url, &args.redis_prefix).await?),
        None => Arc::new(
            EmbeddedRegistry::open(&args.data_dir)
                .await
                .with_context(|| format!("opening the key store in {}", args.data_dir.display()))?,
        ),
    };
    let mut node = node_config(&args.media, &args.apps, apps)?;
    node.record_dir = args.record.record_dir.clone();
    node.hooks.node = "standalone".into();
    let mut api = api_config(
        args.api_addr,
        &args.auth,
        &args.apps,
        &args.api_limits,
        args.media.shutdown_grace,
    )?;
    api.record_dir = args.record.record_dir.clone();
    api.play_secret = play_secret(&args.media.play_secret);
    api.tls = node.tls.clone();
    fit_connection_caps(&mut [
        &mut node.rtmp_limits,
        &mut node.http_limits,
        &mut api.limits,
    ]);
    let identity = NodeIdentity {
        id: "standalone".into(),
        role: NodeRole::Standalone,
        region: "default".into(),
        addrs: NodeAddrs {
            rtmp: node.rtmp_addr.to_string(),
            http: node.http_addr.to_string(),
        },
    };
    let config = OriginConfig {
        node,
        registry: registry.clone(),
        require_key: !args.media.rtmp_noauth,
        identity,
        record: args.record.config()?,
        relay: args.relay.config()?,
        tls: args.relay.tls()?,
        publishes_per_key: args.media.publishes_per_key,
    };
    announce_auth(&args.media);
    let api_task = tokio::spawn(control_api::run(api, registry, shutdown_signal()));
    let origin = origin::run(config, shutdown_signal());
    tokio::pin!(origin);
    tokio::select! {
        result = &mut origin => result?,
        result = api_task => {
            result.context("control API task")?.context("control API")?;
            // The API stopped on the signal: let the node finish its own graceful shutdown.
            origin.await?;
        }
    }
    Ok(())
}

async fn origin(args: OriginArgs, apps: &AppSections) -> anyhow::Result<()> {
    let mut node = node_config(&args.media, &args.apps, apps)?;
    node.record_dir = args.record.record_dir.clone();
    fit_connection_caps(&mut [&mut node.rtmp_limits, &mut node.http_limits]);
    let (registry, identity) = cluster_identity(&args.cluster, &mut node, NodeRole::Origin).await?;
    node.hooks.node = identity.id.clone();
    info!(node = %identity.id, rtmp = %identity.addrs.rtmp, http = %identity.addrs.http, "origin advertises");
    announce_auth(&args.media);
    let config = OriginConfig {
        node,
        registry,
        require_key: !args.media.rtmp_noauth,
        identity,
        record: args.record.config()?,
        relay: args.relay.config()?,
        tls: args.relay.tls()?,
        publishes_per_key: args.media.publishes_per_key,
    };
    Ok(origin::run(config, shutdown_signal()).await?)
}

async fn edge(args: EdgeArgs, apps: &AppSections) -> anyhow::Result<()> {
    let mut node = node_config(&args.media, &args.apps, apps)?;
    fit_connection_caps(&mut [&mut node.rtmp_limits, &mut node.http_limits]);
    let pull = PullConfig {
        play_wait: seconds("edge-play-wait", args.edge_play_wait)?,
        upstream_grace: seconds("upstream-grace", args.upstream_grace)?,
        idle_grace: seconds("edge-idle-grace", args.edge_idle_grace)?,
        upstream_timeout: seconds("upstream-timeout", args.upstream_timeout)?,
        play_secret: node.play_secret.clone(),
    };
    let (registry, identity) = cluster_identity(&args.cluster, &mut node, NodeRole::Edge).await?;
    node.hooks.node = identity.id.clone();
    info!(node = %identity.id, rtmp = %identity.addrs.rtmp, http = %identity.addrs.http, "edge advertises");
    let config = EdgeConfig {
        node,
        registry,
        identity,
        pull,
    };
    Ok(edge::run(config, shutdown_signal()).await?)
}

/// How a cluster node registers: Redis, and who it is there (its id and the addresses
/// it advertises).
async fn cluster_identity(
    cluster: &ClusterArgs,
    node: &mut NodeConfig,
    role: NodeRole,
) -> anyhow::Result<(Arc<dyn Registry>, NodeIdentity)> {
    let registry = cluster.redis.connect().await?;
    let host = advertised_host(cluster)?;
    // WebRTC players reach a cluster node where other nodes do, unless told otherwise.
    if let Some(webrtc) = node.webrtc.as_mut().filter(|w| w.public_ip.is_none()) {
        webrtc.public_ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
    }
    let identity = NodeIdentity {
        id: node_id(cluster),
        role,
        region: match cluster.region.trim() {
            "" => "default".to_owned(),
            region => region.to_owned(),
        },
        addrs: NodeAddrs {
            rtmp: format!("{host}:{}", node.rtmp_addr.port()),
            http: format!("{host}:{}", node.http_addr.port()),
        },
    };
    Ok((registry, identity))
}

async fn control_api_only(args: ControlApiArgs) -> anyhow::Result<()> {
    let mut api = api_config(
        args.api_addr,
        &args.auth,
        &args.apps,
        &args.api_limits,
        args.shutdown_grace,
    )?;
    api.record_dir = args.record_dir;
    api.play_secret = play_secret(&args.play_secret);
    api.tls = args.tls.load()?;
    fit_connection_caps(&mut [&mut api.limits]);
    let registry = args.redis.connect().await?;
    control_api::run(api, registry, shutdown_signal())
        .await
        .context("control API")
}

fn api_config(
    addr: SocketAddr,
    auth: &ApiAuthArgs,
    apps: &AppsArgs,
    limits: &ApiLimitArgs,
    shutdown_grace: f64,
) -> anyhow::Result<control_api::ApiConfig> {
    Ok(control_api::ApiConfig {
        addr,
        admin_token: auth.admin_token.clone(),
        jwt_secret: auth.jwt_secret.clone(),
        key_rate_per_minute: auth.key_rate_per_minute,
        apps: apps.list(),
        limits: limits.limits(),
        shutdown_grace: seconds("shutdown-grace", shutdown_grace)?,
        record_dir: None,
        play_secret: None,
        tls: None,
    })
}

/// Every listener's connections are open files: when the process may not open as many
/// files as the listeners' caps add up to, lower the caps so that a flood on one listener
/// cannot take the descriptors the others need.
fn fit_connection_caps(caps: &mut [&mut ConnectionLimits]) {
    use rustix::process::{getrlimit, Resource};
    let Some(open_files) = getrlimit(Resource::Nofile).current else {
        return;
    };
    if fit_to_open_files(caps, open_files) {
        let caps: Vec<usize> = caps.iter().map(|c| c.total).collect();
        warn!(open_files, ?caps, "the open files limit is lower than the connection caps together: each listener's cap is now an equal share of it");
    }
}

fn announce_auth(media: &MediaArgs) {
    if media.rtmp_noauth {
        warn!("--rtmp-noauth: anyone may publish to any room name");
    } else {
        info!("publishing needs a channel key: GET /control/get?room=NAME on the control API");
    }
}

/// The config file's `[app.NAME]` sections.
type AppSections = BTreeMap<String, config::AppSection>;

fn node_config(
    args: &MediaArgs,
    apps: &AppsArgs,
    sections: &AppSections,
) -> anyhow::Result<NodeConfig> {
    // Media sequence numbers start at the Unix time in seconds; shorter segments could
    // outrun the clock and reuse numbers when a stream is published again.
    if args.hls_segment < 1.0 {
        bail!("--hls-segment must be at least 1 second");
    }
    let hls_segment = seconds("hls-segment", args.hls_segment)?;
    let part_target = Duration::from_millis(args.hls_part_ms);
    if args.hls_part_ms < 100 || part_target >= hls_segment {
        bail!("--hls-part-ms must be at least 100 and less than --hls-segment");
    }
    let hls = HlsConfig {
        target_duration: hls_segment,
        window: args.hls_window.max(1),
        part_target,
        ..HlsConfig::default()
    };
    Ok(NodeConfig {
        rtmp_addr: args.rtmp_addr,
        http_addr: args.http_addr,
        rtmps_addr: args.rtmps_addr,
        rtsp_addr: Some(args.rtsp_addr),
        rtsp_session_timeout: Duration::from_secs(args.rtsp_session_timeout.max(1)),
        webrtc: Some(serve::webrtc::WebRtcConfig {
            udp_addr: args.webrtc_udp_addr,
            public_ip: args.webrtc_public_ip,
            limits: ConnectionLimits {
                total: args.http_max_connections,
                per_ip: args.http_max_connections_per_ip,
            },
        }),
        tls: args.tls.load()?,
        reconnect_grace: seconds("reconnect-grace", args.reconnect_grace)?,
        viewer_send_buffer: args.viewer_send_buffer,
        merge_window: Duration::from_millis(args.merge_window_ms),
        hub: HubConfig {
            backlog: args.viewer_backlog,
            publisher_stale_after: seconds("publisher-stale", args.publisher_stale)?,
            segments: Segmenting::Own {
                target: hls_segment,
            },
            ..HubConfig::default()
        },
        hls: hls.clone(),
        app_hls: sections
            .iter()
            .map(|(app, section)| {
                let own = HlsConfig {
                    target_duration: section.hls_segment.unwrap_or(hls.target_duration),
                    window: section.hls_window.unwrap_or(hls.window),
                    ..hls.clone()
                };
                (app.clone(), own)
            })
            .collect(),
        apps: apps.list(),
        shutdown_grace: seconds("shutdown-grace", args.shutdown_grace)?,
        rtmp_limits: ConnectionLimits {
            total: args.rtmp_max_connections,
            per_ip: args.rtmp_max_connections_per_ip,
        },
        http_limits: ConnectionLimits {
            total: args.http_max_connections,
            per_ip: args.http_max_connections_per_ip,
        },
        rtmp_incomplete_limit: args.rtmp_incomplete_mib.saturating_mul(1024 * 1024),
        record_dir: None,
        console_assets: args.console_assets.clone(),
        http_requests_per_ip: args.http_requests_per_ip,
        play_secret: play_secret(&args.play_secret),
        hooks: args.hooks.config(sections)?,
    })
}

/// The play secret of a flag (an empty one is none).
fn play_secret(flag: &Option<String>) -> Option<media::token::PlaySecret> {
    flag.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| media::token::PlaySecret::new(s.as_bytes()))
}

fn node_id(cluster: &ClusterArgs) -> String {
    cluster.node_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("node-{:08x}", fastrand::u32(..)))
    })
}

/// A duration flag given in (fractional) seconds.
fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("invalid --{name}: {v}"))
}

/// The advertised host must be reachable by other nodes: loopback and unspecified
/// addresses are refused unless explicitly allowed. An IPv6 address comes back in
/// brackets, ready to take a `:port`.
fn advertised_host(cluster: &ClusterArgs) -> anyhow::Result<String> {
    let Some(host) = cluster.advertise_host.clone() else {
        bail!("--advertise-host is required: the host other nodes reach this one at");
    };
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let local = host.eq_ignore_ascii_case("localhost")
        || ip.is_some_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if local && !cluster.allow_loopback_advertise {
        bail!("--advertise-host {host} is not reachable from other machines; pass --allow-loopback-advertise for a one-host cluster");
    }
    Ok(match ip {
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host,
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(arg: &str, allow_loopback: bool) -> anyhow::Result<String> {
        let cli = Cli::try_parse_from(["ferrolive", "origin", "--advertise-host", arg])?;
        let Some(Command::Origin(mut args)) = cli.command else {
            unreachable!("parsed as origin");
        };
        args.cluster.allow_loopback_advertise = allow_loopback;
        advertised_host(&args.cluster)
    }

    #[test]
    fn apps_are_a_checked_comma_separated_list() {
        let apps = |args: &[&str]| -> Result<Vec<String>, clap::Error> {
            let cli = Cli::try_parse_from(["ferrolive", "control-api"].iter().chain(args))?;
            let Some(Command::ControlApi(args)) = cli.command else {
                unreachable!("parsed as control-api");
            };
            Ok(args.apps.list())
        };
        assert_eq!(apps(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(apps(&["--apps", ""]).unwrap(), Vec::<String>::new());
        assert_eq!(
            apps(&["--apps", "live, game,,live"]).unwrap(),
            ["live", "game"]
        );
        let error = apps(&["--apps", "live,a/b"]).unwrap_err().to_string();
        assert!(error.contains("\"a/b\" is not a valid app name"), "{error}");
        // The standalone node takes it too.
        let cli = Cli::try_parse_from(["ferrolive", "standalone", "--apps", "game"]).unwrap();
        let Some(Command::Standalone(args)) = cli.command else {
            unreachable!("parsed as standalone");
        };
        assert_eq!(args.apps.list(), ["game"]);
    }

    #[test]
    fn advertised_hosts_take_a_port() {
        assert_eq!(host("10.0.0.5", false).unwrap(), "10.0.0.5");
        assert_eq!(host("edge-1.example", false).unwrap(), "edge-1.example");
        assert_eq!(host("2001:db8::7", false).unwrap(), "[2001:db8::7]");
        assert_eq!(host("[2001:db8::7]", false).unwrap(), "[2001:db8::7]");
        assert!(host("::1", false).is_err() && host("[::]", false).is_err());
        assert!(host("127.0.0.1", false).is_err() && host("localhost", false).is_err());
        assert_eq!(host("::1", true).unwrap(), "[::1]");
    }
}
