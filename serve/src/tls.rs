//! TLS for the node's listeners: RTMPS, and HTTPS on the player port (and the control
//! API's), from a PEM certificate chain and key that are read again whenever the files
//! change (or on [`Certificates::reload`], which the binary calls on SIGHUP), so that a
//! renewed certificate is used by the next connection without a restart and without
//! touching the connections already open.
//!
//! TLS is ended in front of the plain handlers rather than inside them: the fan-out writes
//! a viewer's socket itself, with `sendmsg` from shared frame buffers and `sendfile` from
//! its tapes, which cannot encrypt. So each TLS connection gets a task that decrypts into
//! (and encrypts out of) one end of a loopback TCP pair, and the other end is served
//! exactly like a plain connection from the same client address. The extra copy is the
//! price of TLS; plain connections pay nothing for it.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// The first byte of a TLS record carrying a handshake (a ClientHello): no HTTP request
/// and no RTMP handshake begins with it.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why the certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Which application protocols a listener offers (ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2 and HTTP/1.1 (the player port, the control API).
    Http,
    /// None (RTMPS).
    None,
}

/// The node's certificate and key, as TLS configurations for its listeners.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Configs>,
    /// The files' modification times when last read.
    read_at: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

struct Configs {
    http: Arc<ServerConfig>,
    plain: Arc<ServerConfig>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificates({})", self.cert.display())
    }
}

impl Certificates {
    /// Read `cert` (a PEM chain, the server's certificate first) and `key` (a PEM private
    /// key): an error says which file is wrong and why.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificates>, TlsError> {
        let read_at = (modified(cert), modified(key));
        let current = configs(cert, key)?;
        Ok(Arc::new(Certificates {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(current),
            read_at: Mutex::new(read_at),
        }))
    }

    /// Read the files again. New connections get the new certificate; on an error the old
    /// one stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let read_at = (modified(&self.cert), modified(&self.key));
        let configs = configs(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = configs;
        *self.read_at.lock().unwrap_or_else(|e| e.into_inner()) = read_at;
        Ok(())
    }

    /// Reload whenever either file changes (looked at every second), for as long as the
    /// runtime runs. A renewal that writes the certificate and the key one after the other
    /// may be seen half done: the pair then fails to load, is logged, and is read again
    /// once the second file is written.
    pub fn watch(self: &Arc<Self>) {
        let certificates = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut told = false;
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let Some(certificates) = certificates.upgrade() else {
                    return;
                };
                let now = (modified(&certificates.cert), modified(&certificates.key));
                if now
                    == *certificates
                        .read_at
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                {
                    continue;
                }
                match certificates.reload() {
                    Ok(()) => {
                        told = false;
                        info!(cert = %certificates.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) if !told => {
                        told = true;
                        warn!(error = %e, "TLS certificate changed but cannot be used; keeping the previous one");
                    }
                    Err(_) => {}
                }
            }
        });
    }

    fn acceptor(&self, alpn: Alpn) -> TlsAcceptor {
        let configs = self.current.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(match alpn {
            Alpn::Http => configs.http.clone(),
            Alpn::None => configs.plain.clone(),
        })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn configs(cert: &Path, key: &Path) -> Result<Configs, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{}: no PEM certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("{}: {e}", key.display())))?;
    // ring, not aws-lc-rs (a lean build: no cmake, no large C library), as for relays;
    // rustls deprecates it for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let plain = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| TlsError(format!("{} and its key: {e}", cert.display())))?;
    let mut http = plain.clone();
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Configs {
        http: Arc::new(http),
        plain: Arc::new(plain),
    })
}

/// Whether a connection begins with a TLS handshake (peeked: the bytes stay unread).
pub async fn starts_as_tls(socket: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    match socket.peek(&mut first).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(first[0] == TLS_HANDSHAKE_RECORD),
    }
}

/// Where TLS connections are ended: a loopback listener that each one's plain end is
/// connected through.
pub struct Terminator {
    certificates: Arc<Certificates>,
    loopback: TcpListener,
    /// One pair is made at a time, so that what the listener accepts is the connection
    /// just made.
    pairing: tokio::sync::Mutex<()>,
}

impl Terminator {
    pub async fn new(certificates: Arc<Certificates>) -> io::Result<Terminator> {
        Ok(Terminator {
            certificates,
            loopback: TcpListener::bind("127.0.0.1:0").await?,
            pairing: tokio::sync::Mutex::new(()),
        })
    }

    /// Take `socket`'s TLS handshake (offering `alpn`) and return the plain end of the
    /// connection, to serve as if the client had connected in the clear. A task carries
    /// the bytes between the two until either side closes.
    pub async fn terminate(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        alpn: Alpn,
    ) -> io::Result<TcpStream> {
        let acceptor = self.certificates.acceptor(alpn);
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let (relay_end, plain_end) = self.pair().await?;
        tokio::spawn(async move {
            let (mut tls, mut relay_end) = (tls, relay_end);
            match tokio::io::copy_bidirectional(&mut tls, &mut relay_end).await {
                Ok(_) => {}
                Err(e) => debug!(%peer, error = %e, "TLS connection closed"),
            }
        });
        Ok(plain_end)
    }

    /// A connected loopback pair: (the end the TLS task writes, the end served plainly).
    async fn pair(&self) -> io::Result<(TcpStream, TcpStream)> {
        let _one_at_a_time = self.pairing.lock().await;
        let target = self.loopback.local_addr()?;
        let socket = TcpSocket::new_v4()?;
        // Small buffers between the two ends, so that a slow client's backlog shows on the
        // plain end, where the fan-out sees it, and not in a loopback buffer.
        let _ = socket.set_recv_buffer_size(64 * 1024);
        let relay_end = socket.connect(target).await?;
        let mine = relay_end.local_addr()?;
        loop {
            let (plain_end, from) = self.loopback.accept().await?;
            // Anything else on this machine connecting to the port is not ours.
            if from == mine {
                let _ = relay_end.set_nodelay(true);
                let _ = plain_end.set_nodelay(true);
                return Ok((relay_end, plain_end));
            }
        }
    }
}
