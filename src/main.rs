//! `ferrolive`: one binary, one subcommand per node role.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use media::hls::HlsConfig;
use media::hub::HubConfig;
use node::NodeConfig;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "ferrolive", version, about = "Live-streaming origin/edge server: RTMP in; RTMP, HTTP-FLV out")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    standalone: StandaloneArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: publish and play on one node (the default).
    Standalone(StandaloneArgs),
}

#[derive(Args, Clone)]
struct StandaloneArgs {
    /// RTMP listen address (publish and play).
    #[arg(long, env = "FERROLIVE_RTMP_ADDR", default_value = "0.0.0.0:1935")]
    rtmp_addr: SocketAddr,
    /// Player HTTP listen address: /live/{room}.flv, /metrics, /healthz.
    #[arg(long, env = "FERROLIVE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Control API listen address (keys and rooms; used once the control plane lands).
    #[arg(long, env = "FERROLIVE_API_ADDR", default_value = "0.0.0.0:8090")]
    api_addr: SocketAddr,
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive.
    #[arg(long, env = "FERROLIVE_LOG", default_value = "info")]
    log: String,
    /// Seconds viewers stay attached when a publisher vanishes without unpublishing,
    /// waiting for it to reconnect.
    #[arg(long, env = "FERROLIVE_RECONNECT_GRACE", default_value_t = 5.0)]
    reconnect_grace: f64,
    /// Seconds of silence after which a publisher counts as stale and a new publisher of
    /// the same stream takes over.
    #[arg(long, env = "FERROLIVE_PUBLISHER_STALE", default_value_t = 2.0)]
    publisher_stale: f64,
    /// Frames a viewer may fall behind before it skips to the next keyframe.
    #[arg(long, env = "FERROLIVE_VIEWER_BACKLOG", default_value_t = 1024)]
    viewer_backlog: usize,
    /// Kernel send buffer per viewer socket, in bytes (0: kernel autotuning). Smaller
    /// keeps slow viewers' lag low; larger suits high bit rates over long round trips.
    #[arg(long, env = "FERROLIVE_VIEWER_SEND_BUFFER", default_value_t = 256 * 1024)]
    viewer_send_buffer: usize,
    /// HLS: seconds a segment lasts at least (cut at the next keyframe after this).
    #[arg(long, env = "FERROLIVE_HLS_SEGMENT", default_value_t = 2.0)]
    hls_segment: f64,
    /// HLS: segments listed in a live playlist.
    #[arg(long, env = "FERROLIVE_HLS_WINDOW", default_value_t = 6)]
    hls_window: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Standalone(args)) => args,
        None => cli.standalone,
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .init();
    let seconds = |name: &str, v: f64| {
        Duration::try_from_secs_f64(v).with_context(|| format!("invalid --{name}: {v}"))
    };
    let config = NodeConfig {
        rtmp_addr: args.rtmp_addr,
        http_addr: args.http_addr,
        reconnect_grace: seconds("reconnect-grace", args.reconnect_grace)?,
        viewer_send_buffer: args.viewer_send_buffer,
        hub: HubConfig {
            backlog: args.viewer_backlog,
            publisher_stale_after: seconds("publisher-stale", args.publisher_stale)?,
            ..HubConfig::default()
        },
        hls: HlsConfig {
            target_duration: seconds("hls-segment", args.hls_segment)?,
            window: args.hls_window.max(1),
            ..HlsConfig::default()
        },
    };
    let _ = args.api_addr;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        node::run(config, shutdown_signal()).await.context("node failed")
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
