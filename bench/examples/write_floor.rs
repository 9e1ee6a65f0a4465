//! The floor under any server's fan-out CPU on this machine: one thread that does nothing
//! but write `bytes` to each of `viewers` loopback TCP connections `rate` times a second
//! (non-blocking, TCP_NODELAY, as a server writes one picture to each viewer), while
//! another thread drains them. Prints the writing thread's CPU time, to compare with a
//! server's CPU for the same number of viewers (see bench/README.md).
//!
//! ```sh
//! cargo run --release -p bench --example write_floor -- [viewers] [bytes] [rate] [seconds]
//! ```
//! Defaults: 1000 viewers, 11000 bytes (2.67 Mbit/s at 30 pictures a second), 30, 20.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

fn main() -> io::Result<()> {
    let arg = |i: usize, default: u64| -> u64 {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (viewers, bytes, rate, seconds) = (arg(1, 1000), arg(2, 11_000), arg(3, 30), arg(4, 20));

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..viewers {
        let reader = TcpStream::connect(addr)?;
        let (writer, _) = listener.accept()?;
        writer.set_nodelay(true)?;
        writer.set_nonblocking(true)?;
        reader.set_nonblocking(true)?;
        writers.push(writer);
        readers.push(reader);
    }
    std::thread::spawn(move || drain(readers));

    let picture = vec![0x5Au8; bytes as usize];
    let ticks = rate * seconds;
    let start = Instant::now();
    let cpu_before = thread_cpu()?;
    let mut short = 0u64;
    for tick in 0..ticks {
        for writer in &mut writers {
            match writer.write(&picture) {
                Ok(n) if n == picture.len() => {}
                Ok(_) => short += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => short += 1,
                Err(e) => return Err(e),
            }
        }
        let next = start + Duration::from_secs_f64((tick + 1) as f64 / rate as f64);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let cpu = thread_cpu()? - cpu_before;
    let writes = ticks * viewers;
    println!(
        "{viewers} viewers x {rate} writes/s x {bytes} bytes for {seconds} s: writer CPU {:.2} s, \
         {:.2} us per write ({short} writes short)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / writes as f64,
    );
    Ok(())
}

/// Reads every connection as fast as data comes, like a well-behaved player.
fn drain(readers: Vec<TcpStream>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a tokio runtime for the readers");
    runtime.block_on(async move {
        for reader in readers {
            let Ok(mut reader) = tokio::net::TcpStream::from_std(reader) else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(1..) = reader.read(&mut buf).await {}
            });
        }
        std::future::pending::<()>().await
    });
}

/// CPU time of the calling thread so far (user and system), from the kernel's schedstat.
fn thread_cpu() -> io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable /proc/thread-self/schedstat"))?;
    Ok(Duration::from_nanos(nanos))
}
