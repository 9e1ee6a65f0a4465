//! Test support shared by the end-to-end tests (`tests/`), the registry's Redis tests and
//! the bench's test: the real `ferrolive` binary ([`Server`]), a real `redis-server`
//! ([`Redis`]), nginx with the RTMP module ([`Nginx`]), ffmpeg and ffprobe as publisher and player, plain HTTP and HTTP-FLV readers
//! built on the project's own demuxer, a blocking RTMP client ([`RtmpClient`]) on
//! media's sans-IO client session, a hook server ([`HookServer`]) and a fault-injecting TCP
//! proxy ([`FaultProxy`]).
//!
//! Everything here panics on failure with a message saying what went wrong: it only ever
//! runs inside tests.

pub mod browser;
mod faults;
mod ffmpeg;
mod hooks;
mod http;
pub mod llhls;
mod nginx;
mod redis;
mod rtmp;
mod server;
pub mod websocket;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;

pub use faults::{Direction, Fault, FaultProxy, LossyUdpRelay};
pub use ffmpeg::{
    decode, decode_to_end, publish, publish_accepted, publish_av1, publish_hevc, publish_with,
    require_ffmpeg, Decoded, Source,
};
pub use hooks::{HookCall, HookServer};
pub use http::{http_get, http_request, FlvViewer, Response};
pub use nginx::{require_nginx, Nginx};
pub use redis::{Redis, Sentinel};
pub use rtmp::RtmpClient;
pub use server::{ferrolive_binary, livego_data, Server};

/// A port nothing listens on right now. Tests run in parallel, so another may take it
/// before it is used: whoever binds it must be ready to try another (see [`Server`] and
/// [`Redis`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port on loopback that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the system's temp dir, named after the test process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrolive-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send `signal` (`TERM`, `STOP`, `CONT`...) to process `pid` with kill(1); whether it was
/// delivered.
fn send_signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}
