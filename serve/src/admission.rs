//! Who may open a connection: each listener caps its open connections, in all and from one
//! IP address, so that a flood on one port takes neither the others' file descriptors nor
//! every slot of its own.
//!
//! A connection over a cap is accepted and closed at once (HTTP listeners first write a
//! 503), rather than left in the kernel's backlog where it would hold the queue for
//! everyone behind it. Refusals are counted and logged at most every ten seconds.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// A listener's caps on open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub total: usize,
    /// Open connections from one IP address.
    pub per_ip: usize,
}

/// Open files a process keeps for what is not a client connection: its listeners, Redis,
/// edge pulls, HLS and recording files, logs.
pub const RESERVED_FILES: u64 = 64;

/// Lower `limits` (one per listener of a process) so that together they fit in `open_files`
/// descriptors, less [`RESERVED_FILES`]: when they do not already, each listener may use an
/// equal share. Returns whether anything was lowered.
pub fn fit_to_open_files(limits: &mut [&mut ConnectionLimits], open_files: u64) -> bool {
    let wanted: u64 = limits.iter().map(|l| l.total as u64).sum();
    let available = open_files.saturating_sub(RESERVED_FILES);
    if wanted <= available || limits.is_empty() {
        return false;
    }
    let share = (available / limits.len() as u64).max(1) as usize;
    for limit in limits.iter_mut() {
        limit.total = limit.total.min(share);
        limit.per_ip = limit.per_ip.min(limit.total);
    }
    true
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} connections are open, the most this listener allows")]
    Full(usize),
    #[error("{0} connections are open from this address, the most it may have")]
    PerIp(usize),
}

/// The connections open on one listener, and its refusals.
pub struct Admission {
    /// The listener, for logs ("RTMP", "player HTTP", "control API").
    what: &'static str,
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
    refused: AtomicU64,
    quiet: Mutex<QuietLog>,
}

#[derive(Default)]
struct Counts {
    open: usize,
    by_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(what: &'static str, limits: ConnectionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            what,
            limits,
            counts: Mutex::default(),
            refused: AtomicU64::new(0),
            quiet: Mutex::new(QuietLog::new(LOG_EVERY)),
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts().open
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Count a connection from `ip` in, if the caps allow it; it counts until the returned
    /// [`Admitted`] is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        // An IPv4 client reaching a dual-stack socket is the same client as over IPv4.
        let ip = ip.to_canonical();
        let mut counts = self.counts();
        if counts.open >= self.limits.total {
            return Err(Refused::Full(counts.open));
        }
        let from_ip = counts.by_ip.entry(ip).or_default();
        if *from_ip >= self.limits.per_ip {
            return Err(Refused::PerIp(*from_ip));
        }
        *from_ip += 1;
        counts.open += 1;
        Ok(Admitted {
            admission: self.clone(),
            ip,
        })
    }

    /// The next connection this listener admits. Connections over a cap are handed to
    /// `refuse` (to tell the client why, without waiting for it) and closed; failures to
    /// accept (out of file descriptors) back off instead of spinning. Both are logged at
    /// most every ten seconds.
    pub async fn accept(
        self: &Arc<Self>,
        listener: &TcpListener,
        refuse: fn(&TcpStream),
    ) -> (TcpStream, SocketAddr, Admitted) {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    if let Some(times) = self.quiet().note(Instant::now()) {
                        warn!(listener = self.what, error = %e, times, "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.admit(peer.ip()) {
                Ok(admitted) => return (socket, peer, admitted),
                Err(why) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    refuse(&socket);
                    if let Some(times) = self.quiet().note(Instant::now()) {
                        warn!(listener = self.what, %peer, reason = %why, times, "refusing connections");
                    }
                }
            }
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn quiet(&self) -> MutexGuard<'_, QuietLog> {
        self.quiet
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection counted by its listener's [`Admission`] while it lives.
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        counts.open -= 1;
        if let Some(n) = counts.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
    }
}

/// For HTTP listeners: a 503 written without waiting (a client that does not read it
/// simply does not get it).
pub fn refuse_http(socket: &TcpStream) {
    let _ = socket.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
    );
}

/// For RTMP: nothing to say before a handshake; the connection just closes.
pub fn refuse_quietly(_: &TcpStream) {}

const LOG_EVERY: Duration = Duration::from_secs(10);

/// How often something that can happen thousands of times a second is logged: the first
/// time, then at most once per period, with how many times it happened meanwhile.
struct QuietLog {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl QuietLog {
    fn new(every: Duration) -> Self {
        QuietLog {
            every,
            last: None,
            unlogged: 0,
        }
    }

    /// It happened at `now`: `Some(times since the last line)` when a line is due.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self.last.is_some_and(|last| now < last + self.every) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn caps_in_all_and_per_address() {
        let admission = Admission::new(
            "test",
            ConnectionLimits {
                total: 3,
                per_ip: 2,
            },
        );
        let a1 = admission.admit(ip(1)).unwrap();
        let _a2 = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.admit(ip(1)).err(), Some(Refused::PerIp(2)));
        let _b1 = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(3)).err(), Some(Refused::Full(3)));
        drop(a1);
        assert_eq!(admission.open(), 2);
        let _a3 = admission.admit(ip(1)).unwrap();
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let admission = Admission::new(
            "test",
            ConnectionLimits {
                total: 10,
                per_ip: 1,
            },
        );
        let _v4 = admission.admit(ip(1)).unwrap();
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(matches!(admission.admit(mapped), Err(Refused::PerIp(1))));
    }

    #[test]
    fn released_addresses_are_forgotten() {
        let admission = Admission::new(
            "test",
            ConnectionLimits {
                total: 100_000,
                per_ip: 1,
            },
        );
        for i in 0..=255 {
            drop(admission.admit(ip(i)).unwrap());
        }
        assert!(admission.counts().by_ip.is_empty());
        assert_eq!(admission.open(), 0);
    }

    #[test]
    fn caps_shrink_to_equal_shares_of_the_open_files() {
        let (mut rtmp, mut http, mut api) = (
            ConnectionLimits {
                total: 5_000,
                per_ip: 2_000,
            },
            ConnectionLimits {
                total: 20_000,
                per_ip: 2_000,
            },
            ConnectionLimits {
                total: 40,
                per_ip: 10,
            },
        );
        assert!(!fit_to_open_files(
            &mut [&mut rtmp, &mut http, &mut api],
            1 << 20
        ));
        assert_eq!(rtmp.total, 5_000);

        assert!(fit_to_open_files(
            &mut [&mut rtmp, &mut http, &mut api],
            256
        ));
        assert_eq!((rtmp.total, rtmp.per_ip), (64, 64));
        assert_eq!((http.total, http.per_ip), (64, 64));
        assert_eq!((api.total, api.per_ip), (40, 10));
    }

    #[test]
    fn refusals_are_logged_once_per_period_with_a_count() {
        let mut log = QuietLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.note(t0), Some(1));
        for ms in 1..1000 {
            assert_eq!(log.note(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(log.note(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(log.note(t0 + Duration::from_secs(11)), None);
    }
}
