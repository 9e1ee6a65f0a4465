//! The HTTP/1.1 and HTTP/2 server the routes run in, with the same defences as the media
//! ports: a cap on open connections in all and per client address (see
//! [`serve::admission`]), a deadline for the first request, an idle deadline, and a
//! graceful shutdown bounded by a grace period.
//!
//! Deadlines, all per connection:
//! - a client has [`FIRST_REQUEST_TIMEOUT`] to send its first request; over HTTP/1.1 every
//!   request head has as long (hyper's header read timeout), so an idle keep-alive
//!   connection also closes after it;
//! - a connection with no request for [`IDLE_TIMEOUT`] is shut down gracefully: an HTTP/2
//!   connection (gRPC) gets a GOAWAY and keeps its open streams, such as `WatchRooms`, to
//!   their end;
//! - an HTTP/2 peer that stops answering pings is dropped (keep-alive).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serve::admission::{refuse_http, Admission, Admitted};
use serve::tls::{starts_as_tls, Alpn, Terminator};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::Service;

/// Time a new connection has to send its first request, and an HTTP/1.1 client each
/// request head.
pub(crate) const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no new request for this long is closed (gracefully).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP2_MAX_STREAMS: u32 = 100;

/// Serve `router` to the connections `admission` lets in until `stop` turns true; then
/// stop accepting, shut every connection down gracefully and wait up to `grace` for them.
/// Returns whether every connection finished within the grace.
pub(crate) async fn serve(
    listener: TcpListener,
    admission: Arc<Admission>,
    tls: Option<Arc<Terminator>>,
    router: axum::Router,
    stop: watch::Receiver<bool>,
    grace: Duration,
) -> bool {
    let mut connections = JoinSet::new();
    let mut stopped = stop.clone();
    loop {
        tokio::select! {
            (socket, peer, admitted) = admission.accept(&listener, refuse_http) => {
                let tls = tls.clone();
                connections.spawn(connection(socket, peer, admitted, tls, router.clone(), stop.clone()));
            }
            // Reap finished connections so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped.wait_for(|stopped| *stopped) => break,
        }
    }
    drop(listener);
    // Returning drops the set, which aborts what is still open after the grace.
    tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok()
}

/// One client connection, HTTP/1.1 or HTTP/2 (prior knowledge, as gRPC clients speak it),
/// in the clear or (with a certificate) over TLS.
async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    _admitted: Admitted,
    tls: Option<Arc<Terminator>>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    if let Some(tls) = tls {
        let is_tls = tokio::time::timeout(FIRST_REQUEST_TIMEOUT, starts_as_tls(&socket)).await;
        if matches!(is_tls, Ok(Ok(true))) {
            socket = match tls.terminate(socket, peer, Alpn::Http).await {
                Ok(plain) => plain,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "control API TLS handshake failed");
                    return;
                }
            };
        }
    }
    let http2 = match tokio::time::timeout(
        FIRST_REQUEST_TIMEOUT,
        serve::io::starts_as_http2(&socket),
    )
    .await
    {
        Ok(Ok(http2)) => http2,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "control API connection closed before a request");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "control API connection closed: no request in time");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            activity.request_started();
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move { Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|e| match e {})) }
        })
    };
    let io = TokioIo::new(socket);
    let served: Pin<Box<dyn GracefulConnection>> = if http2 {
        Box::pin(
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(HTTP2_PING_INTERVAL)
                .keep_alive_timeout(HTTP2_PING_TIMEOUT)
                .max_concurrent_streams(HTTP2_MAX_STREAMS)
                .serve_connection(io, service),
        )
    } else {
        Box::pin(
            http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(FIRST_REQUEST_TIMEOUT)
                .serve_connection(io, service),
        )
    };
    drive(served, peer, &activity, &mut stop).await;
}

/// Serve until the connection ends; shut it down gracefully when it has been idle too
/// long or the server stops.
async fn drive(
    mut served: Pin<Box<dyn GracefulConnection>>,
    peer: SocketAddr,
    activity: &Activity,
    stop: &mut watch::Receiver<bool>,
) {
    let mut closing = false;
    loop {
        let idle_deadline = activity.deadline();
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "control API connection ended");
                }
                return;
            }
            _ = stop.wait_for(|stopped| *stopped), if !closing => {
                served.as_mut().shut_down_gracefully();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_deadline), if !closing => {
                if activity.deadline() <= Instant::now() {
                    tracing::debug!(%peer, "control API connection idle: closing");
                    served.as_mut().shut_down_gracefully();
                    closing = true;
                }
            }
        }
    }
}

/// When the connection last began a request.
struct Activity {
    /// `None` until the first request.
    last_request: Mutex<Option<Instant>>,
    opened: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity {
            last_request: Mutex::new(None),
            opened: Instant::now(),
        }
    }

    fn request_started(&self) {
        *self.last() = Some(Instant::now());
    }

    /// When the connection counts as idle: [`FIRST_REQUEST_TIMEOUT`] after it opened until
    /// its first request, [`IDLE_TIMEOUT`] after its latest request since.
    fn deadline(&self) -> Instant {
        match *self.last() {
            None => self.opened + FIRST_REQUEST_TIMEOUT,
            Some(last) => last + IDLE_TIMEOUT,
        }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.last_request
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A hyper connection of either protocol.
trait GracefulConnection: Future<Output = Result<(), hyper::Error>> + Send {
    fn shut_down_gracefully(self: Pin<&mut Self>);
}

// The bounds are those hyper puts on `graceful_shutdown`, for the service built above.
impl<S> GracefulConnection for http1::Connection<TokioIo<TcpStream>, S>
where
    Self: Future<Output = Result<(), hyper::Error>> + Send,
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body, Error = Infallible>,
{
    fn shut_down_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<S> GracefulConnection for http2::Connection<TokioIo<TcpStream>, S, TokioExecutor>
where
    Self: Future<Output = Result<(), hyper::Error>> + Send,
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body, Error = Infallible>,
    S::Future: Send + 'static,
{
    fn shut_down_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
