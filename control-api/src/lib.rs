//! ferrolive's control plane, on one port (default `:8090`):
//!
//! - livego-compatible REST: `/control/get`, `/control/reset`, `/control/delete`,
//!   `/stat/livestat` (same paths, response shapes and field names as livego, without its
//!   bugs: reset revokes the old key at once, delete removes key and room, status codes are
//!   right, key creation is rate-limited per client IP);
//! - a resource API under `/api/v1` (live rooms of every app with their stats, one room,
//!   rotate key, delete room, kick publisher, play URLs on the best edge and their redirect
//!   form) described by `/api/v1/openapi.json` (the checked-in `openapi.json`);
//! - gRPC `ferrolive.v1.Control` (same operations plus a `WatchRooms` event stream), gRPC
//!   health and reflection;
//! - `/healthz` and `/readyz`.
//!
//! A room's key is the same whatever app it is published under; a live stream is `app/room`,
//! so what acts on one (get, delete, kick, play) takes the app too, `live` by default
//! (see the `apps` module).
//!
//! Access control: with an admin token and/or a JWT secret configured, every control
//! endpoint needs `Authorization: Bearer <token or HS256 JWT>` (or livego's `?jwt=`). With
//! neither, the API only listens on loopback.

mod apps;
mod auth;
mod grpc;
mod outage;
mod recordings;
mod relays;
mod rest;
mod rooms;
mod server;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use registry::Registry;
use serve::admission::{Admission, ConnectionLimits};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use apps::DEFAULT_APP;
pub use auth::Auth;

/// Control API configuration.
#[derive(Clone)]
pub struct ApiConfig {
    /// Where REST and gRPC listen (one port).
    pub addr: SocketAddr,
    /// Static admin token accepted as `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// HS256 secret: JWTs signed with it are accepted as Bearer tokens or as `?jwt=`.
    pub jwt_secret: Option<String>,
    /// Key creations per minute per client IP (token bucket, burst of the same size);
    /// 0 disables the limit.
    pub key_rate_per_minute: u32,
    /// The apps requests may name (`?app=`, gRPC `app`); a request naming another is
    /// refused (400). Empty: any valid app name. The default app is `live`, or the first
    /// of these when they leave `live` out.
    pub apps: Vec<String>,
    /// Caps on open connections (see [`serve::admission`]).
    pub limits: ConnectionLimits,
    /// How long a graceful shutdown waits for open requests before returning anyway.
    pub shutdown_grace: Duration,
    /// The record folder the origins write (none: recordings are not listed here).
    pub record_dir: Option<std::path::PathBuf>,
    /// The cluster's play secret: the API mints play tokens and puts them in play URLs.
    pub play_secret: Option<media::token::PlaySecret>,
    /// A certificate: the port takes HTTPS (and gRPC over TLS) beside plain connections.
    pub tls: Option<Arc<serve::tls::Certificates>>,
}

/// The default caps on the control API's open connections.
pub const DEFAULT_LIMITS: ConnectionLimits = ConnectionLimits {
    total: 1000,
    per_ip: 64,
};

/// Secrets are shown only as `Some("<redacted>")`.
impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("ApiConfig")
            .field("addr", &self.addr)
            .field("admin_token", &redacted(&self.admin_token))
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("key_rate_per_minute", &self.key_rate_per_minute)
            .field("apps", &self.apps)
            .field("limits", &self.limits)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("record_dir", &self.record_dir)
            .finish()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 8090)),
            admin_token: None,
            jwt_secret: None,
            key_rate_per_minute: 60,
            apps: Vec::new(),
            limits: DEFAULT_LIMITS,
            shutdown_grace: Duration::from_secs(5),
            record_dir: None,
            play_secret: None,
            tls: None,
        }
    }
}

impl ApiConfig {
    fn auth(&self) -> Auth {
        Auth::new(self.admin_token.clone(), self.jwt_secret.clone())
    }
}

/// Shared by every handler, REST and gRPC.
#[derive(Clone)]
pub(crate) struct AppState {
    pub registry: Arc<dyn Registry>,
    pub auth: Arc<Auth>,
    /// The apps requests may name.
    pub apps: Arc<apps::Apps>,
    pub limiter: Arc<serve::ratelimit::RateLimiter>,
    /// Becomes `true` when the server shuts down (ends `WatchRooms` streams).
    pub shutdown: watch::Receiver<bool>,
    pub record_dir: Option<Arc<std::path::Path>>,
    pub play_secret: Option<media::token::PlaySecret>,
}

impl AppState {
    pub(crate) fn new(
        config: &ApiConfig,
        registry: Arc<dyn Registry>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        AppState {
            registry,
            auth: Arc::new(config.auth()),
            apps: Arc::new(apps::Apps::new(&config.apps)),
            limiter: Arc::new(serve::ratelimit::RateLimiter::per_minute(
                config.key_rate_per_minute,
            )),
            shutdown,
            record_dir: config.record_dir.as_deref().map(Arc::from),
            play_secret: config.play_secret.clone(),
        }
    }
}

/// Serve REST and gRPC on `config.addr` until `shutdown` resolves.
///
/// With neither `admin_token` nor `jwt_secret` set, a non-loopback `addr` is replaced by
/// `127.0.0.1:<port>` (and a warning says so): an unauthenticated control API is never
/// reachable from the network.
pub async fn run(
    config: ApiConfig,
    registry: Arc<dyn Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (addr, restricted) = listen_addr(&config);
    if restricted {
        tracing::warn!(
            requested = %config.addr,
            bound = %addr,
            "control API: no admin token or JWT secret configured, so listening on loopback \
             only; configure an admin token (or JWT secret) to serve it on the requested address"
        );
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    serve(listener, config, registry, shutdown).await
}

/// Where [`run`] listens: `config.addr`, or `127.0.0.1:<port>` (and `true`) when no
/// credential is configured and `config.addr` is not loopback.
pub(crate) fn listen_addr(config: &ApiConfig) -> (SocketAddr, bool) {
    let auth = config.auth();
    if !auth.enabled() && !config.addr.ip().is_loopback() {
        (
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), config.addr.port()),
            true,
        )
    } else {
        (config.addr, false)
    }
}

/// Serve REST and gRPC on an already-bound listener until `shutdown` resolves (then wait up
/// to [`ApiConfig::shutdown_grace`] for open requests).
pub async fn serve(
    listener: TcpListener,
    config: ApiConfig,
    registry: Arc<dyn Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let apps = match config.apps.as_slice() {
        [] => "any".to_owned(),
        apps => apps.join(","),
    };
    tracing::info!(addr = %local, auth = config.auth().describe(), apps, "control API listening (REST + gRPC)");

    let (stop_tx, stop_rx) = watch::channel(false);
    let outage = AbortOnDrop(tokio::spawn(outage::watch(registry.clone())));
    let app = app(AppState::new(&config, registry, stop_rx.clone())).await;
    let admission = Admission::new("control API", config.limits);
    let tls = match &config.tls {
        Some(certificates) => {
            certificates.watch();
            Some(Arc::new(
                serve::tls::Terminator::new(certificates.clone()).await?,
            ))
        }
        None => None,
    };
    let server = tokio::spawn(server::serve(
        listener,
        admission,
        tls,
        app,
        stop_rx,
        config.shutdown_grace,
    ));
    shutdown.await;
    // Also ends `WatchRooms` streams, so that their connections can close.
    let _ = stop_tx.send(true);
    tracing::info!(addr = %local, "control API shutting down");
    match server.await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(addr = %local, "control API: requests still open after the grace period, closing")
        }
        Err(e) => tracing::warn!(addr = %local, error = %e, "control API server task failed"),
    }
    drop(outage);
    Ok(())
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The whole service: gRPC routes, with the REST router as the fallback for everything else.
pub(crate) async fn app(state: AppState) -> axum::Router {
    grpc::routes(state.clone())
        .await
        .fallback_service(rest::router(state))
}

#[cfg(test)]
mod tests;
