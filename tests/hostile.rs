//! End-to-end: clients that attack a node — oversized, slow, idle or many — are refused
//! within their limits while legitimate publishers and players carry on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use testkit::*;

/// The player that watched through an attack decoded cleanly at least `frames` pictures.
fn assert_kept_playing(watched: &Decoded, frames: usize) {
    assert!(watched.errors.trim().is_empty(), "{}", watched.errors);
    assert!(
        watched.video >= frames,
        "the player decoded only {} frames",
        watched.video
    );
}

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
    assert_kept_playing(&watched, 300);
}

/// Open `count` connections to `addr` that never send a byte.
fn idle_connections(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let socket = TcpStream::connect(addr).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            socket
        })
        .collect()
}

/// How many of `sockets` the server has closed.
fn closed(sockets: &[TcpStream]) -> usize {
    sockets.iter().filter(|socket| is_closed(socket)).count()
}

/// Whether the server closed `socket`: reading (past any answer, such as a 503) finds the
/// end of the stream or an error other than the read timeout.
fn is_closed(mut socket: &TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Connections that say nothing, and requests that drip, on every port: all closed by their
/// 10 s deadlines, while a player watches throughout.
#[test]
fn idle_and_dripping_connections_are_closed_within_their_deadlines() {
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("calm"), Source::AudioVideo, 25, 0);
    server.wait_live("calm");

    let started = std::time::Instant::now();
    let idle: Vec<(&str, Vec<TcpStream>)> = [
        ("RTMP", server.rtmp),
        ("player HTTP", server.http),
        ("control API", server.api),
    ]
    .into_iter()
    .map(|(port, addr)| (port, idle_connections(addr, 20)))
    .collect();
    let drips: Vec<_> = [("player HTTP", server.http), ("control API", server.api)]
        .into_iter()
        .map(|(port, addr)| {
            std::thread::spawn(move || {
                let request =
                    b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                (
                    port,
                    drip_until_closed(
                        TcpStream::connect(addr).unwrap(),
                        request,
                        Duration::from_secs(20),
                    ),
                )
            })
        })
        .collect();

    let watched = decode(&server.flv_url("calm"), 13.0);
    for (port, sockets) in &idle {
        assert_eq!(
            closed(sockets),
            20,
            "{port}: idle connections still open after {:?}",
            started.elapsed()
        );
    }
    for drip in drips {
        let (port, open) = drip.join().unwrap();
        let open = open.unwrap_or_else(|| panic!("{port}: a dripping request was never closed"));
        assert!(
            open < Duration::from_secs(13),
            "{port}: a dripping request stayed {open:?}"
        );
    }
    assert_kept_playing(&watched, 300);
}

/// With few file descriptors, a flood of idle connections on any one port takes only that
/// port's share: the others go on serving players and the API.
#[test]
fn a_flood_on_one_port_leaves_the_other_ports_serving() {
    // 256 open files: each of the three listeners may hold (256 - 64) / 3 = 64 connections.
    let server = Server::start_after(Some("ulimit -n 256"), &[]);
    let _publisher = publish(&server.rtmp_url("steady"), Source::AudioVideo, 25, 0);
    server.wait_live("steady");
    let ports = [
        ("RTMP", server.rtmp),
        ("player HTTP", server.http),
        ("control API", server.api),
    ];
    for (flooded, addr) in ports {
        let flood = idle_connections(addr, 300);
        // The other ports serve as if nothing happened...
        if flooded != "RTMP" {
            let mut player = RtmpClient::connect(server.rtmp, "live");
            player.play("steady");
            assert!(
                player.wait_for("NetStream.Play.Start"),
                "{flooded} flooded: an RTMP player was not served"
            );
        }
        if flooded != "player HTTP" {
            let watched = decode(&server.flv_url("steady"), 2.0);
            assert!(
                watched.video >= 25,
                "{flooded} flooded: an HTTP-FLV player decoded {} frames",
                watched.video
            );
        }
        if flooded != "control API" {
            let (status, _) = server.api("GET", "/api/v1/rooms", None);
            assert_eq!(
                status, 200,
                "{flooded} flooded: the control API did not answer"
            );
        }
        // ...because the flood's surplus was closed at once.
        assert!(
            closed(&flood) >= 300 - 64,
            "{flooded}: the flood's surplus was kept open"
        );
        drop(flood);
        std::thread::sleep(Duration::from_millis(300));
    }
    // RTMP and player HTTP refusals (the control API counts its own).
    assert!(server.metric("ferrolive_connections_refused_total") >= 2 * (300 - 64));
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// A connected (not publishing) RTMP client that begins a video message of `declared`
/// bytes and sends `sent` of them; whether the server closed it within two seconds.
fn begin_message(rtmp: SocketAddr, declared: usize, sent: usize) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let mut client = RtmpClient::connect(rtmp, "live");
        // Chunks of 128 bytes from here, whatever the client set before.
        client.session().set_chunk_size(128);
        client.flush();
        let mut socket = client.socket;
        let length = (declared as u32).to_be_bytes();
        // Type 0 header on csid 6: timestamp 0, the length, video, stream id 1.
        let mut bytes = vec![
            0x06, 0, 0, 0, length[1], length[2], length[3], 9, 1, 0, 0, 0,
        ];
        // A type 3 header between chunks.
        for (i, chunk) in vec![0x17u8; sent].chunks(128).enumerate() {
            if i > 0 {
                bytes.push(0xC6);
            }
            bytes.extend_from_slice(chunk);
        }
        let _ = socket.write_all(&bytes);
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        is_closed(&socket)
    })
}

/// Before it publishes, a connection may not begin a message bigger than commands need, and
/// the node caps the unfinished messages of all connections together.
#[test]
fn unpublished_connections_cannot_hold_large_messages() {
    let server = Server::start(&["--rtmp-incomplete-mib", "1"]);
    let _publisher = publish(&server.rtmp_url("firm"), Source::AudioVideo, 25, 0);
    server.wait_live("firm");
    let before = rss(server.pid());
    let watching = {
        let url = server.flv_url("firm");
        std::thread::spawn(move || decode(&url, 6.0))
    };

    // Fifty connections each beginning a 16 MiB message and sending 1 MiB of it.
    let huge: Vec<_> = (0..50)
        .map(|_| begin_message(server.rtmp, 16 * 1024 * 1024 - 1, 1024 * 1024))
        .collect();
    let closed_huge = huge
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&c| c)
        .count();
    assert_eq!(
        closed_huge, 50,
        "connections holding huge messages were kept"
    );
    let grown = rss(server.pid()).saturating_sub(before);
    assert!(grown < 16 * 1024 * 1024, "memory grew by {grown} bytes");

    // Forty connections within their own limit (60 KiB each) but over the node's 1 MiB.
    let many: Vec<_> = (0..40)
        .map(|_| begin_message(server.rtmp, 60 * 1024, 30 * 1024))
        .collect();
    let closed_many = many
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&c| c)
        .count();
    assert!(
        (20..40).contains(&closed_many),
        "{closed_many} of 40 connections closed (the cap holds about 17)"
    );

    let watched = watching.join().unwrap();
    assert_kept_playing(&watched, 120);
}

/// A connection to `addr` from the local address `from` (any of 127.0.0.0/8 is ours).
fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let socket: TcpStream = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

/// One address that opens as many connections as it may gets no more, on any port, while
/// every other address is served.
#[test]
fn one_address_cannot_take_every_slot() {
    let server = Server::start(&[
        "--rtmp-max-connections-per-ip",
        "5",
        "--http-max-connections-per-ip",
        "5",
        "--api-max-connections-per-ip",
        "5",
    ]);
    for (port, addr) in [
        ("RTMP", server.rtmp),
        ("player HTTP", server.http),
        ("control API", server.api),
    ] {
        let _held: Vec<TcpStream> = (0..5).map(|_| connect_from([127, 0, 0, 2], addr)).collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut sixth = connect_from([127, 0, 0, 2], addr);
        if port != "RTMP" {
            let mut answer = String::new();
            let _ = sixth.read_to_string(&mut answer);
            assert!(answer.starts_with("HTTP/1.1 503 "), "{port}: {answer:?}");
        }
        assert!(
            is_closed(&sixth),
            "{port}: a sixth connection from one address was kept"
        );
        // Another address is served.
        if port == "RTMP" {
            let _client = RtmpClient::connect(addr, "live");
        } else {
            assert_eq!(
                http_get(addr, "/healthz").map(|r| r.status),
                Some(200),
                "{port}"
            );
        }
    }
}

/// The rate limits an operator sets: player HTTP requests per address per second (429,
/// then served again once the second has passed) and publishes per channel key per
/// minute (refused before the key is looked up); other addresses and keys are unaffected.
#[test]
fn request_and_publish_rates_are_limited() {
    require_ffmpeg();
    let server = Server::start(&["--http-requests-per-ip", "5", "--publishes-per-key", "2"]);
    let statuses: Vec<u16> = (0..8)
        .map(|_| http_get(server.http, "/healthz").map_or(0, |r| r.status))
        .collect();
    // Five a second (the start-up probe took one of them).
    let served = statuses.iter().filter(|&&s| s == 200).count();
    assert!((3..=5).contains(&served), "{statuses:?}");
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(limited, 8 - served, "{statuses:?}");
    let refused = http_get(server.http, "/healthz").unwrap();
    assert!(String::from_utf8_lossy(&refused.body).contains("retry in"));
    // Another address is served meanwhile.
    let mut other = connect_from([127, 0, 0, 2], server.http);
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = other.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        http_get(server.http, "/healthz").map(|r| r.status),
        Some(200)
    );

    let url = server.rtmp_url("busy");
    for n in 0..2 {
        let (accepted, mut publisher) = publish_accepted(&url, Duration::from_secs(2));
        assert!(accepted, "publish {n} within the limit");
        publisher.kill();
    }
    let (accepted, _) = publish_accepted(&url, Duration::from_secs(2));
    assert!(!accepted, "a third publish within the minute");
    let (accepted, _other) = publish_accepted(&server.rtmp_url("calm"), Duration::from_secs(2));
    assert!(accepted, "another key is not limited");
}
