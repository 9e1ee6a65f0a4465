//! A session's datagrams to its viewer, sent a batch at a time with UDP generic
//! segmentation offload (GSO, Linux's `UDP_SEGMENT`): one `sendmsg` carries a picture's
//! packets, which are all of one size but the last, and the kernel routes, builds and
//! (with a NIC that offloads it) splits them once per batch instead of once per packet.
//! Per-packet sends were most of a WebRTC viewer's cost to the node.
//!
//! [`Batcher`] is the policy, plain data: which datagrams go together. [`send`] does it on
//! the socket, and falls back to one send per datagram for good if the kernel refuses
//! GSO.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;

/// Most segments in one send (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
const MAX_SEGMENTS: usize = 64;
/// Most bytes in one send: an IP packet's 64 KiB, less the headers.
const MAX_BYTES: usize = 65_000;

/// Datagrams for one destination, all `segment` bytes long but the last, which may be
/// shorter.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Batch<'a> {
    pub destination: SocketAddr,
    pub datagrams: &'a [Vec<u8>],
    pub segment: usize,
}

/// Gathers datagrams into [`Batch`]es, in the order they came. It keeps the datagrams
/// str0m made as they are (the kernel gathers them for the send), so no packet is copied.
#[derive(Debug, Default)]
pub(super) struct Batcher {
    datagrams: Vec<Vec<u8>>,
    /// Their bytes in all.
    bytes: usize,
    destination: Option<SocketAddr>,
    segment: usize,
    /// A shorter datagram ended the batch: nothing more may join it.
    closed: bool,
}

impl Batcher {
    /// Add `datagram` for `destination`; the batch before it goes to `send` first when
    /// the datagram cannot join it.
    pub fn push(
        &mut self,
        destination: SocketAddr,
        datagram: Vec<u8>,
        send: &mut impl FnMut(Batch<'_>),
    ) {
        if datagram.is_empty() {
            return;
        }
        let fits = self.destination == Some(destination)
            && !self.closed
            && datagram.len() <= self.segment
            && self.datagrams.len() < MAX_SEGMENTS
            && self.bytes + datagram.len() <= MAX_BYTES;
        if !fits {
            self.flush(send);
            self.destination = Some(destination);
            self.segment = datagram.len();
        }
        self.closed = datagram.len() < self.segment;
        self.bytes += datagram.len();
        self.datagrams.push(datagram);
    }

    /// Send what is gathered.
    pub fn flush(&mut self, send: &mut impl FnMut(Batch<'_>)) {
        if let Some(destination) = self.destination.take() {
            if !self.datagrams.is_empty() {
                send(Batch {
                    destination,
                    datagrams: &self.datagrams,
                    segment: self.segment,
                });
            }
        }
        self.datagrams.clear();
        self.bytes = 0;
        self.closed = false;
    }
}

/// Cleared the first time the kernel refuses a GSO send: every send is then one datagram.
static GSO: AtomicBool = AtomicBool::new(true);

/// Send `batch` without waiting: the datagrams a full socket buffer (or an error) lost.
pub(super) fn send(socket: &UdpSocket, batch: &Batch<'_>) -> usize {
    if batch.datagrams.len() > 1 && GSO.load(Ordering::Relaxed) {
        match send_segmented(socket, batch) {
            Ok(()) => return 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return batch.datagrams.len(),
            // EINVAL, EIO, ENOPROTOOPT: no GSO here (an old kernel, a device without it).
            Err(e) => {
                if GSO.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "UDP segmentation offload refused: WebRTC sends one datagram at a time");
                }
            }
        }
    }
    (batch.datagrams.iter())
        .filter(|datagram| socket.try_send_to(datagram, batch.destination).is_err())
        .count()
}

#[cfg(target_os = "linux")]
fn send_segmented(socket: &UdpSocket, batch: &Batch<'_>) -> std::io::Result<()> {
    const SOL_UDP: i32 = 17;
    const UDP_SEGMENT: i32 = 103;
    // One control message, laid out as the kernel reads it: struct cmsghdr (cmsg_len, a
    // size_t; cmsg_level and cmsg_type, ints), then the segment size as a u16, padded to
    // a whole word (CMSG_SPACE).
    const WORD: usize = std::mem::size_of::<usize>();
    const HEADER: usize = WORD + 8;
    let segment = u16::try_from(batch.segment).map_err(std::io::Error::other)?;
    let mut control = [0u8; HEADER + WORD];
    control[..WORD].copy_from_slice(&(HEADER + 2).to_ne_bytes());
    control[WORD..WORD + 4].copy_from_slice(&SOL_UDP.to_ne_bytes());
    control[WORD + 4..HEADER].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
    control[HEADER..HEADER + 2].copy_from_slice(&segment.to_ne_bytes());
    let control = &control[..(HEADER + 2).next_multiple_of(WORD)];
    let destination = socket2::SockAddr::from(batch.destination);
    // The datagrams one after the other, as the kernel cuts them apart again.
    let mut buffers = [IoSlice::new(&[]); MAX_SEGMENTS];
    for (buffer, datagram) in buffers.iter_mut().zip(batch.datagrams) {
        *buffer = IoSlice::new(datagram);
    }
    let buffers = &buffers[..batch.datagrams.len().min(MAX_SEGMENTS)];
    let message = socket2::MsgHdr::new()
        .with_addr(&destination)
        .with_buffers(buffers)
        .with_control(control);
    let sent = socket2::SockRef::from(socket).sendmsg(&message, 0)?;
    if sent == buffers.iter().map(|b| b.len()).sum::<usize>() {
        Ok(())
    } else {
        Err(std::io::Error::other("a GSO send was cut short"))
    }
}

#[cfg(not(target_os = "linux"))]
fn send_segmented(_: &UdpSocket, _: &Batch<'_>) -> std::io::Result<()> {
    Err(std::io::Error::other("UDP segmentation offload is Linux's"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(datagrams: &[(u16, usize)]) -> Vec<(u16, Vec<usize>)> {
        let mut batcher = Batcher::default();
        let mut out = Vec::new();
        let mut record = |batch: Batch<'_>| {
            out.push((
                batch.destination.port(),
                batch.datagrams.iter().map(Vec::len).collect(),
            ))
        };
        for &(port, len) in datagrams {
            let destination = SocketAddr::from(([127, 0, 0, 1], port));
            batcher.push(destination, vec![0xab; len], &mut record);
        }
        batcher.flush(&mut record);
        out
    }

    /// A picture's packets go together, its shorter last one included; a packet for
    /// another address, a longer one, or one after a shorter one starts a new batch.
    #[test]
    fn a_pictures_packets_go_together() {
        assert_eq!(
            batches(&[
                (1, 1200),
                (1, 1200),
                (1, 700),
                (1, 1200),
                (2, 1200),
                (2, 90),
                (2, 90)
            ]),
            [
                (1, vec![1200, 1200, 700]),
                (1, vec![1200]),
                (2, vec![1200, 90]),
                (2, vec![90]),
            ]
        );
        assert_eq!(
            batches(&[(1, 100), (1, 1200)]),
            [(1, vec![100]), (1, vec![1200])]
        );
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn a_batch_stays_within_the_kernels_limits() {
        let large = vec![(1, 1100); 70];
        let sizes: Vec<usize> = batches(&large).iter().map(|(_, b)| b.len()).collect();
        assert_eq!(sizes, [59, 11]);
        let small = vec![(1, 100); 70];
        let sizes: Vec<usize> = batches(&small).iter().map(|(_, b)| b.len()).collect();
        assert_eq!(sizes, [64, 6]);
    }

    /// The kernel splits a batch into the datagrams it was made of.
    #[tokio::test]
    async fn the_receiver_gets_each_datagram() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let destination = receiver.local_addr().unwrap();
        let mut batcher = Batcher::default();
        let mut lost = 0;
        let mut send_it = |batch: Batch<'_>| lost += send(&sender, &batch);
        for (i, len) in [1200usize, 1200, 1200, 300].into_iter().enumerate() {
            batcher.push(destination, vec![i as u8; len], &mut send_it);
        }
        batcher.flush(&mut send_it);
        assert_eq!(lost, 0);
        // The kernel took the batch as one send: GSO was not given up.
        assert!(GSO.load(Ordering::Relaxed));
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        for _ in 0..4 {
            let len = receiver.recv(&mut buf).unwrap();
            got.push((buf[0], len));
        }
        assert_eq!(got, [(0, 1200), (1, 1200), (2, 1200), (3, 300)]);
    }
}
