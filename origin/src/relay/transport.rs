//! The byte stream under a relay: TCP for `rtmp://` and `http://`, TLS on TCP for `rtmps://`
//! and `https://`, opened by a deadline.
//!
//! TLS is rustls (ring) trusting the system's roots (`rustls-native-certs`, which also
//! reads `SSL_CERT_FILE` and `SSL_CERT_DIR`), plus the CA certificates of `--relay-ca`.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use media::rtmp::url::RelayUrl;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

/// What a connection is to its driver: bytes both ways.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP connection when it is a plain one (which another writer can take over),
    /// else itself.
    fn into_tcp(self: Box<Self>) -> Result<TcpStream, Conn>;
}

impl Io for TcpStream {
    fn into_tcp(self: Box<Self>) -> Result<TcpStream, Conn> {
        Ok(*self)
    }
}

impl Io for TlsStream<TcpStream> {
    fn into_tcp(self: Box<Self>) -> Result<TcpStream, Conn> {
        Err(self)
    }
}

/// An open connection, plain or TLS.
pub type Conn = Box<dyn Io>;

/// The TLS client configuration of every relay: which certificates are trusted.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Trust the system's root certificates and, with `extra_ca`, the CA certificates in
    /// that PEM file (all of them; a file without any, or with one that does not parse, is
    /// an error). A system without roots is only a warning: plain relays still work.
    pub fn new(extra_ca: Option<&Path>) -> Result<Tls, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            debug!(%error, "a system root certificate could not be loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        debug!(added, ignored, "system root certificates");
        if let Some(path) = extra_ca {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{shown}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{shown}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("{shown}: no PEM certificate in the file"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{shown}: not a usable CA certificate: {e}"))?;
            }
        }
        if roots.is_empty() {
            warn!("no trusted root certificates: rtmps:// and https:// relays will fail (see --relay-ca)");
        }
        // ring, not aws-lc-rs (a lean build: no cmake, no large C library). rustls deprecates ring's
        // provider because it has no post-quantum key exchange, which relays can do without.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The TLS handshake over `tcp` with `url`'s host as the server name (SNI and the name
    /// the certificate must carry), finished by `deadline`.
    pub(crate) async fn handshake(
        &self,
        url: &RelayUrl,
        tcp: TcpStream,
        deadline: Instant,
    ) -> io::Result<TlsStream<TcpStream>> {
        let host = url.host();
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host} is not a valid TLS server name"),
            )
        })?;
        match timeout_at(deadline, self.connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(io::Error::new(
                e.kind(),
                format!("TLS handshake with {host}: {e}"),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake with {host} timed out"),
            )),
        }
    }
}

/// Open a connection to `url`'s host and port by `deadline`: TCP (no Nagle delay), with
/// TLS for `rtmps://` and `https://`.
pub async fn connect(url: &RelayUrl, tls: &Tls, deadline: Instant) -> io::Result<Conn> {
    let tcp = connect_tcp(url, deadline).await?;
    if url.scheme().is_tls() {
        Ok(Box::new(tls.handshake(url, tcp, deadline).await?))
    } else {
        Ok(Box::new(tcp))
    }
}

/// Resolve the host and connect to its addresses in turn, each getting an equal share of
/// the time left (so one that drops packets leaves time for the next).
pub(crate) async fn connect_tcp(url: &RelayUrl, deadline: Instant) -> io::Result<TcpStream> {
    let (host, port) = (url.host(), url.port());
    let addrs: Vec<_> = match timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => return Err(io::Error::new(e.kind(), format!("resolving {host}: {e}"))),
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("resolving {host} timed out"),
            ))
        }
    };
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let share = left / (addrs.len() - i) as u32;
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Ok(Err(e)) => {
                last = Some(io::Error::new(
                    e.kind(),
                    format!("connecting to {addr}: {e}"),
                ))
            }
            Err(_) => {
                last = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
    }))
}
