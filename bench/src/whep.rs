//! WHEP (WebRTC) players: each is a full str0m `Rtc` (not ICE-lite) with its own UDP socket
//! that posts a receive-only offer (H.264 in packetization mode 1, Opus) to
//! `/APP/ROOM/whep`, connects (ICE, DTLS-SRTP) to the answer's candidate and receives the
//! media in str0m's frame mode: a video event is a whole depacketized access unit.
//!
//! Cheap by design, since the bench shares the machine with the server: one tokio task per
//! viewer on the bench's runtime (one thread by default), one DTLS certificate for all
//! (a key generation each would cost more than the handshake), str0m's statistics events
//! left off, and a socket read until it is empty on each wake-up rather than one wake-up
//! per datagram.
//!
//! Every video frame is counted and timed by the bench marker in its Annex B data (the
//! server passes the publisher's SEI through), as an HTTP-TS access unit is. A viewer
//! "decodes" when its first frame is a keyframe and every later one is complete and follows
//! the previous one without a gap (str0m's `MediaData::contiguous`): what a decoder needs
//! to show every picture without asking for a keyframe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use str0m::change::SdpAnswer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::Codec;
use str0m::media::{Direction, MediaData, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::http::Url;
use crate::marker;
use crate::stats::Tracker;

/// Largest answer (head and SDP) read from the server.
const MAX_ANSWER: usize = 64 * 1024;
/// Largest read: a batch of datagrams the kernel hands over whole (UDP_GRO), at most an
/// IP packet's 64 KiB.
const MAX_READ: usize = 64 * 1024;
/// Each viewer's socket receive buffer. A joining viewer gets the GOP cache's pictures as
/// fast as the server sends them (a 2 s GOP of a 2.7 Mbit/s stream is about 700 KB), and
/// the one bench thread reads hundreds of sockets in turn: with the kernel's default
/// (208 KB here) the burst overflows it and the losses are asked again (NACK), which is
/// the bench's doing, not the server's.
const RECEIVE_BUFFER: usize = 1 << 20;
/// H.264 payload types offered, all in packetization mode 1 (fragmented NAL units: mode 0
/// cannot carry a picture bigger than a packet), with their RTX types: str0m's defaults
/// for the Baseline, Constrained Baseline, Main and High profiles.
const H264_MODE_1: [(u8, u8, u32); 4] = [
    (127, 121, 0x42001f),
    (108, 109, 0x42e01f),
    (123, 119, 0x4d001f),
    (114, 115, 0x64001f),
];

/// What every viewer of the run shares: the crypto provider and one DTLS certificate.
pub struct Identity {
    crypto: Arc<CryptoProvider>,
    certificate: DtlsCert,
}

impl Identity {
    pub fn new() -> anyhow::Result<Identity> {
        let crypto = str0m::crypto::from_feature_flags();
        let certificate = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| anyhow!("OpenSSL made no DTLS certificate"))?;
        Ok(Identity {
            crypto: Arc::new(crypto),
            certificate,
        })
    }
}

/// What one viewer saw of the picture's decodability (see the module's comment).
#[derive(Debug, Default)]
pub struct Decoding {
    /// Video frames received so far.
    pub frames: u64,
    /// The first frame was not a keyframe.
    pub first_not_key: bool,
    /// Frames after a gap (str0m's `contiguous` false).
    pub not_contiguous: u64,
}

impl Decoding {
    /// Note one video frame.
    pub fn frame(&mut self, key: bool, contiguous: bool) {
        if self.frames == 0 && !key {
            self.first_not_key = true;
        }
        if !contiguous {
            self.not_contiguous += 1;
        }
        self.frames += 1;
    }
}

/// One WHEP viewer of `url` (`http://host:port/APP/ROOM/whep`): plays until the server ends
/// the session or the caller's timeout drops it.
pub async fn player(url: &Url, identity: &Identity, t: &mut Tracker) -> anyhow::Result<()> {
    // The offer names our socket's address as our candidate. An ICE-lite server never
    // sends to an address it did not hear from, but str0m wants a local candidate to pair
    // with the server's: the address this host reaches the server's HTTP port from.
    let mut http = TcpStream::connect(url.addr()).await.context("connect")?;
    let local_ip = http.local_addr()?.ip();
    let socket = bind_udp(SocketAddr::new(local_ip, 0)).context("bind the UDP socket")?;
    let local = socket.local_addr()?;

    let mut config = Rtc::builder()
        .set_crypto_provider(identity.crypto.clone())
        .set_dtls_cert(identity.certificate.clone())
        .clear_codecs()
        .enable_opus(true, false);
    for (pt, rtx, profile) in H264_MODE_1 {
        config
            .codec_config()
            .add_h264(pt.into(), Some(rtx.into()), true, profile);
    }
    let mut rtc = config.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").context("local candidate")?);
    let mut changes = rtc.sdp_api();
    let video = changes.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    changes.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = changes
        .apply()
        .ok_or_else(|| anyhow!("str0m made no offer"))?;

    let answer = post_offer(&mut http, url, &offer.to_sdp_string()).await?;
    drop(http);
    let answer = SdpAnswer::from_sdp_string(&answer).context("the answer is not SDP")?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .context("accept the answer")?;

    let mut buf = vec![0u8; MAX_READ];
    let mut decoding = Decoding::default();
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    loop {
        // str0m's rule: after each input, poll until it says when it next wants the time.
        let wake = match drain(&mut rtc, &socket, video, &mut decoding, t) {
            Ok(wake) => wake,
            Err(e) => break Err(e),
        };
        if !rtc.is_alive() {
            break Ok(());
        }
        let wake = tokio::time::Instant::from_std(wake);
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            readable = socket.readable() => {
                if let Err(e) = readable {
                    break Err(e.into());
                }
                // Every datagram waiting, one wake-up for all.
                let mut failed = None;
                'read: loop {
                    let (n, source, segment) = match receive(&socket, &mut buf) {
                        Ok(received) => received,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // An ICMP error for an earlier send: the server's socket is gone.
                        Err(e) => {
                            failed = Some(anyhow::Error::from(e).context("UDP receive"));
                            break;
                        }
                    };
                    t.bytes(n);
                    for datagram in buf[..n].chunks(segment) {
                        // Not STUN, DTLS or RTP: nothing for the Rtc.
                        let Ok(contents) = datagram.try_into() else { continue };
                        let input = Input::Receive(
                            Instant::now(),
                            Receive { proto: Protocol::Udp, source, destination: local, contents },
                        );
                        if let Err(e) = rtc.handle_input(input) {
                            failed = Some(e.into());
                            break 'read;
                        }
                        if let Err(e) = drain(&mut rtc, &socket, video, &mut decoding, t) {
                            failed = Some(e);
                            break 'read;
                        }
                    }
                }
                if let Some(e) = failed {
                    break Err(e);
                }
            }
            () = &mut timer => {
                if let Err(e) = rtc.handle_input(Input::Timeout(Instant::now())) {
                    break Err(e.into());
                }
            }
        }
    }
}

/// A non-blocking UDP socket on `addr` with a receive buffer of [`RECEIVE_BUFFER`].
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: the kernel caps it at net.core.rmem_max, and the default still works.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    enable_gro(&socket);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Ask the kernel to hand over a sender's GSO batch (a picture's packets, as the server
/// sends them) in one read, as UDP_GRO does, rather than split it into datagrams queued
/// one by one: on loopback that split is the sender's work. Best effort: without it every
/// read is one datagram.
#[cfg(target_os = "linux")]
fn enable_gro(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and an int option value that lives across the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn enable_gro(_: &socket2::Socket) {}

/// One read: the bytes, where they came from, and the size of each datagram in them (all
/// of it, unless the kernel handed over a GRO batch).
#[cfg(target_os = "linux")]
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, usize)> {
    use std::os::fd::AsRawFd;
    socket.try_io(tokio::io::Interest::READABLE, || {
        // SAFETY: recvmsg(2) with a message header whose name (socket2's storage), data and
        // control buffers are live, writable and of the lengths given; the control messages
        // are read with the CMSG macros within the length the kernel returned.
        let ((n, segment), source) = unsafe {
            socket2::SockAddr::try_init(|name, name_len| {
                let mut data = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                let mut control = [0u64; 8];
                let mut message: libc::msghdr = std::mem::zeroed();
                message.msg_name = name.cast();
                message.msg_namelen = *name_len;
                message.msg_iov = &mut data;
                message.msg_iovlen = 1;
                message.msg_control = control.as_mut_ptr().cast();
                message.msg_controllen = std::mem::size_of_val(&control) as _;
                let n = libc::recvmsg(socket.as_raw_fd(), &mut message, 0);
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                *name_len = message.msg_namelen;
                let n = n as usize;
                let mut segment = n;
                let mut header = libc::CMSG_FIRSTHDR(&message);
                while !header.is_null() {
                    if (*header).cmsg_level == libc::SOL_UDP && (*header).cmsg_type == libc::UDP_GRO
                    {
                        let size =
                            std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>());
                        segment = usize::try_from(size).unwrap_or(n);
                    }
                    header = libc::CMSG_NXTHDR(&message, header);
                }
                Ok((n, segment))
            })?
        };
        let source = source
            .as_socket()
            .ok_or_else(|| std::io::Error::other("a datagram from no IP address"))?;
        Ok((n, source, segment.max(1)))
    })
}

#[cfg(not(target_os = "linux"))]
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, usize)> {
    let (n, source) = socket.try_recv_from(buf)?;
    Ok((n, source, n.max(1)))
}

/// Datagrams the kernel dropped so far, on the whole machine, because a UDP socket's
/// receive buffer was full (`RcvbufErrors` in /proc/net/snmp; Linux only). Over a run, a
/// rise says viewers (or the server's socket) did not read in time: the load generator may
/// be the limit, and the losses cost retransmissions.
pub fn udp_receive_buffer_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// POST the offer on `http` (`Connection: close`) and return the answer's SDP.
async fn post_offer(http: &mut TcpStream, url: &Url, offer: &str) -> anyhow::Result<String> {
    let _ = http.set_nodelay(true);
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrolive-bench\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{offer}",
        url.path,
        url.addr(),
        offer.len()
    );
    http.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(4096);
    loop {
        if answer.len() > MAX_ANSWER {
            bail!("WHEP answer over {MAX_ANSWER} bytes");
        }
        let mut chunk = [0u8; 4096];
        let n = http.read(&mut chunk).await.context("read the answer")?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8(answer).context("the answer is not UTF-8")?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("the answer has no end of head"))?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status != "201" {
        let line = head.lines().next().unwrap_or_default();
        bail!("WHEP offer answered {line}: {}", body.trim());
    }
    Ok(body.to_owned())
}

/// Poll `rtc` until it wants the time: send what it made, count the frames it gives. When
/// it next wants the time.
fn drain(
    rtc: &mut Rtc,
    socket: &UdpSocket,
    video: str0m::media::Mid,
    decoding: &mut Decoding,
    t: &mut Tracker,
) -> anyhow::Result<Instant> {
    loop {
        match rtc.poll_output()? {
            Output::Timeout(at) => return Ok(at),
            Output::Transmit(out) => {
                // A full socket buffer loses the packet, as the network would; what a
                // viewer sends (STUN, DTLS, RTCP) is asked again or sent again.
                let _ = socket.try_send_to(&out.contents, out.destination);
            }
            Output::Event(Event::MediaData(data)) => media(&data, video, decoding, t),
            Output::Event(Event::IceConnectionStateChange(IceConnectionState::Disconnected)) => {
                bail!("ICE disconnected");
            }
            Output::Event(_) => {}
        }
    }
}

/// One depacketized frame.
fn media(data: &MediaData, video: str0m::media::Mid, decoding: &mut Decoding, t: &mut Tracker) {
    if data.mid != video || data.params.spec().codec != Codec::H264 {
        t.whep_audio_frames += 1;
        return;
    }
    decoding.frame(data.is_keyframe(), data.contiguous);
    // In the tracker at once: the run's end drops this player's future wherever it is.
    t.whep_first_not_key = decoding.first_not_key;
    t.whep_not_contiguous = decoding.not_contiguous;
    t.coded_frame(marker::find_annexb(&data.data));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_decodes_from_a_keyframe_without_gaps() {
        let mut d = Decoding::default();
        d.frame(true, true);
        d.frame(false, true);
        assert!(!d.first_not_key && d.not_contiguous == 0);
        d.frame(false, false);
        assert_eq!(d.not_contiguous, 1);

        let mut d = Decoding::default();
        d.frame(false, true);
        d.frame(true, true);
        assert!(d.first_not_key);
        assert_eq!((d.frames, d.not_contiguous), (2, 0));
    }
}
