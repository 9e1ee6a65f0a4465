//! A fault-injecting TCP proxy: this kernel has no netem and no iptables, so the tests put
//! one of these between two processes (a node and Redis, an edge and its origin) and cut,
//! slow, blackhole or reset the link between them, each direction on its own.
//!
//! Every fault applies to the connections open now and to those made later: a blocked
//! link accepts new connections but carries nothing until it is healed, as a cut cable
//! would (the peers see silence, not a refusal).
//!
//! For UDP (WebRTC's media), [`LossyUdpRelay`] loses some of what a server sends.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Which way bytes go: from the client (who connects to the proxy) to the server behind
/// it, or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToServer,
    ToClient,
}

/// What happens to the bytes going one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Carried at once.
    #[default]
    None,
    /// Held until the link heals (then delivered, as TCP would after a partition).
    Block,
    /// Carried after this long.
    Delay(Duration),
    /// Thrown away (a blackhole: the sender sees its bytes taken).
    Drop,
}

#[derive(Default)]
struct Links {
    to_server: Fault,
    to_client: Fault,
    /// Raised to reset every connection open now.
    resets: u64,
}

impl Links {
    fn fault(&self, direction: Direction) -> Fault {
        match direction {
            Direction::ToServer => self.to_server,
            Direction::ToClient => self.to_client,
        }
    }
}

/// A TCP proxy in front of `target`, listening on `listen`.
pub struct FaultProxy {
    pub addr: SocketAddr,
    links: Arc<(Mutex<Links>, Condvar)>,
}

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1.
    pub fn start(target: SocketAddr) -> FaultProxy {
        FaultProxy::start_on("127.0.0.1:0".parse().unwrap(), target)
    }

    /// A proxy on `listen` (another loopback address with the target's port, say, for a
    /// node that advertises a host and not a port).
    pub fn start_on(listen: SocketAddr, target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(listen).unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<(Mutex<Links>, Condvar)> = Arc::default();
        let shared = links.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let links = shared.clone();
                std::thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(target) else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let resets = links.0.lock().unwrap().resets;
                    let pairs = [
                        (&client, &server, Direction::ToServer),
                        (&server, &client, Direction::ToClient),
                    ];
                    std::thread::scope(|scope| {
                        for (from, to, direction) in pairs {
                            let links = &links;
                            scope.spawn(move || pump(from, to, direction, links, resets));
                        }
                    });
                });
            }
        });
        FaultProxy { addr, links }
    }

    /// Make `direction` `fault` from now on.
    pub fn set(&self, direction: Direction, fault: Fault) {
        let (lock, changed) = &*self.links;
        let mut links = lock.lock().unwrap();
        match direction {
            Direction::ToServer => links.to_server = fault,
            Direction::ToClient => links.to_client = fault,
        }
        changed.notify_all();
    }

    /// Both directions `fault`.
    pub fn set_both(&self, fault: Fault) {
        self.set(Direction::ToServer, fault);
        self.set(Direction::ToClient, fault);
    }

    /// Cut the link (both ways) until [`FaultProxy::heal`].
    pub fn block(&self) {
        self.set_both(Fault::Block);
    }

    pub fn heal(&self) {
        self.set_both(Fault::None);
    }

    /// Reset every connection open now (later ones are carried as the faults say).
    pub fn reset(&self) {
        let (lock, changed) = &*self.links;
        lock.lock().unwrap().resets += 1;
        changed.notify_all();
    }
}

/// Carry `from`'s bytes to `to` under the faults of `direction` until either side closes
/// or the connection is reset.
fn pump(
    mut from: &TcpStream,
    mut to: &TcpStream,
    direction: Direction,
    links: &(Mutex<Links>, Condvar),
    resets: u64,
) {
    // Short reads, so that a reset is noticed on an idle connection too.
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    let reset = |links: &Links| links.resets != resets;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if reset(&links.0.lock().unwrap()) {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        let (lock, changed) = links;
        let mut state = lock.lock().unwrap();
        // Held while blocked (checking for resets now and then).
        while state.fault(direction) == Fault::Block && !reset(&state) {
            state = changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        if reset(&state) {
            break;
        }
        let fault = state.fault(direction);
        drop(state);
        match fault {
            Fault::Drop => continue,
            Fault::Delay(delay) => {
                let until = Instant::now() + delay;
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            }
            Fault::None | Fault::Block => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // A reset closes both ways at once (the peers see the connection end).
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Each of [`LossyUdpRelay`]'s sockets toward the target asks for this receive buffer.
const RECEIVE_BUFFER: usize = 4 << 20;

/// A UDP relay in front of `target` that loses one datagram in `every` of those the
/// target sends back (after the first [`LossyUdpRelay::SPARED`], so that ICE and DTLS get
/// going), as a lossy link to a viewer would. Each client address gets a socket of its
/// own towards the target, so the target sees one peer per client.
pub struct LossyUdpRelay {
    pub addr: SocketAddr,
    lost: Arc<AtomicU64>,
}

impl LossyUdpRelay {
    /// Datagrams of each client's link carried before the losses begin.
    pub const SPARED: u64 = 100;

    /// A relay on `listen` (another loopback address with the target's port, for a node
    /// that advertises an address and not a port).
    pub fn start(listen: SocketAddr, target: SocketAddr, every: u64) -> LossyUdpRelay {
        let front = Arc::new(UdpSocket::bind(listen).unwrap());
        let addr = front.local_addr().unwrap();
        let lost = Arc::new(AtomicU64::new(0));
        let counted = lost.clone();
        std::thread::spawn(move || {
            let mut links: HashMap<SocketAddr, UdpSocket> = HashMap::new();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok((n, client)) = front.recv_from(&mut buf) {
                let link = links.entry(client).or_insert_with(|| {
                    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
                    // As a browser's: room for a joining viewer's burst (the GOP at once,
                    // sent in segmentation-offload batches), so that the only losses are
                    // the relay's own (the kernel caps it at net.core.rmem_max).
                    let _ = socket2::SockRef::from(&back).set_recv_buffer_size(RECEIVE_BUFFER);
                    back.connect(target).unwrap();
                    let replies = back.try_clone().unwrap();
                    let (front, lost) = (front.clone(), counted.clone());
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut sent = 0u64;
                        while let Ok(n) = replies.recv(&mut buf) {
                            sent += 1;
                            if sent > Self::SPARED && sent.is_multiple_of(every) {
                                lost.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            let _ = front.send_to(&buf[..n], client);
                        }
                    });
                    back
                });
                let _ = link.send(&buf[..n]);
            }
        });
        LossyUdpRelay { addr, lost }
    }

    /// Datagrams lost so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut socket in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buf) {
                        if n == 0 || socket.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(socket: &mut TcpStream, byte: u8) -> Option<Duration> {
        let started = Instant::now();
        socket.write_all(&[byte]).ok()?;
        let mut got = [0u8; 1];
        socket.read_exact(&mut got).ok()?;
        (got[0] == byte).then(|| started.elapsed())
    }

    #[test]
    fn links_can_be_cut_delayed_blackholed_and_reset() {
        let proxy = FaultProxy::start(echo_server());
        let mut socket = TcpStream::connect(proxy.addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        assert!(round_trip(&mut socket, 1).unwrap() < Duration::from_millis(100));

        proxy.set(
            Direction::ToClient,
            Fault::Delay(Duration::from_millis(200)),
        );
        let slow = round_trip(&mut socket, 2).unwrap();
        assert!(slow >= Duration::from_millis(200), "{slow:?}");

        // Blocked: nothing comes back; healed: what was held arrives.
        proxy.block();
        assert!(round_trip(&mut socket, 3).is_none());
        proxy.heal();
        let mut held = [0u8; 1];
        socket.read_exact(&mut held).unwrap();
        assert_eq!(held[0], 3);

        // Blackholed: taken and lost.
        proxy.set(Direction::ToServer, Fault::Drop);
        assert!(round_trip(&mut socket, 4).is_none());
        proxy.heal();
        assert_eq!(round_trip(&mut socket, 5).map(|_| ()), Some(()));

        proxy.reset();
        let mut end = [0u8; 1];
        assert!(matches!(socket.read(&mut end), Ok(0) | Err(_)));
        // New connections are carried.
        let mut again = TcpStream::connect(proxy.addr).unwrap();
        again
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        assert!(round_trip(&mut again, 6).is_some());
    }

    /// Past the spared start, one datagram in `every` from the server is lost, and none
    /// from the client.
    #[test]
    fn the_udp_relay_loses_one_reply_in_every() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        let relay = LossyUdpRelay::start("127.0.0.1:0".parse().unwrap(), target, 10);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut got = 0;
        let mut buf = [0u8; 2048];
        for i in 0..300u32 {
            client.send_to(&i.to_be_bytes(), relay.addr).unwrap();
            if client.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
        // 200 past the spared 100, one in ten of them lost.
        assert_eq!((got, relay.lost()), (280, 20));
    }
}
