//! End-to-end: clients that attack a node — oversized, slow, idle or many — are refused
//! within their limits while legitimate publishers and players carry on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use testkit::*;

/// Send `request` (written from another thread: the server may answer before it is all
/// sent) and return the status line of the answer.
fn status_line_for(addr: SocketAddr, request: Vec<u8>) -> String {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = socket.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match socket.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no answer from {addr}: {e} (got {answer:?})"),
        }
    }
    drop(socket);
    let _ = sending.join();
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn oversized_request_lines_and_heads_are_answered_414_and_431() {
    let server = Server::start(&[]);
    for (port, addr) in [("player", server.http), ("control API", server.api)] {
        let long_line = format!(
            "GET /live/{}.flv HTTP/1.1\r\nHost: t\r\n\r\n",
            "a".repeat(100_000)
        );
        let status = status_line_for(addr, long_line.into_bytes());
        assert!(status.contains(" 414 "), "{port}: {status}");

        let mut huge_head = b"GET /healthz HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..10_000 {
            huge_head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "b".repeat(90)).as_bytes());
        }
        huge_head.extend_from_slice(b"\r\n");
        assert!(huge_head.len() > 1_000_000);
        let status = status_line_for(addr, huge_head);
        assert!(status.contains(" 431 "), "{port}: {status}");
    }
}

/// Write `bytes` one at a time, a second apart, until the server closes the connection;
/// how long it stayed open (`None`: still open after `give_up`).
fn drip_until_closed(mut socket: TcpStream, bytes: &[u8], give_up: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut sink = [0u8; 4096];
    for byte in bytes.iter().cycle() {
        if started.elapsed() > give_up {
            return None;
        }
        if socket.write_all(&[*byte]).is_err() {
            return Some(started.elapsed());
        }
        // Reading also paces the drip: a timeout is the second between two bytes.
        match socket.read(&mut sink) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => std::thread::sleep(Duration::from_secs(1)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    unreachable!("the drip cycles forever")
}

/// One byte a second resets any per-read timer: the handshake and the `connect` after it
/// share one 10 s deadline, and the player already watching does not notice.
#[test]
fn slow_drip_negotiations_are_closed_within_ten_seconds() {
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("steady"), Source::AudioVideo, 25, 0);
    server.wait_live("steady");
    let rtmp = server.rtmp;

    let in_handshake = std::thread::spawn(move || {
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&[0u8; 1536]);
        drip_until_closed(
            TcpStream::connect(rtmp).unwrap(),
            &c0c1,
            Duration::from_secs(20),
        )
    });
    let in_connect = std::thread::spawn(move || {
        let client = RtmpClient::handshaken(rtmp);
        // The header of a 200-byte AMF0 command on csid 3, then its body byte by byte.
        let mut connect = vec![0x03, 0, 0, 0, 0, 0, 200, 0x14, 0, 0, 0, 0];
        connect.extend_from_slice(&[0x02, 0x00, 0x07]);
        connect.extend_from_slice(b"connect");
        drip_until_closed(client.socket, &connect, Duration::from_secs(20))
    });

    let watched = decode(&server.flv_url("steady"), 13.0);
    for (stage, attack) in [("handshake", in_handshake), ("connect", in_connect)] {
        let open = attack.join().unwrap();
        let open = open.unwrap_or_else(|| panic!("a drip in the {stage} was never closed"));
        assert!(
            open < Duration::from_secs(13),
            "a drip in the {stage} stayed {open:?}"
        );
    }
    assert!(watched.errors.trim().is_empty(), "{}", watched.errors);
    assert!(
        watched.video >= 300,
        "the player decoded only {} frames",
        watched.video
    );
}
