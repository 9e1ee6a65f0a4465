//! A real redis-server on a free port, for the end-to-end tests and the registry's tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, send_signal};

/// A redis-server child process without persistence (a restart starts empty), killed when
/// dropped. It can be killed and restarted on the same port, and paused (SIGSTOP: it
/// accepts connections but answers nothing) to test what clients do meanwhile.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    /// On a free port. Tests run in parallel, so a port found free may be taken before
    /// redis-server binds it: then it tries another.
    pub fn start() -> Redis {
        for _ in 0..5 {
            if let Some(child) = try_start_on(free_port(), &[]) {
                return child;
            }
        }
        panic!("redis-server did not start on any free port");
    }

    /// On `port`, which must be free (to bring a Redis back where clients expect it).
    pub fn start_on(port: u16) -> Redis {
        try_start_on(port, &[]).unwrap_or_else(|| panic!("redis-server did not start on {port}"))
    }

    /// A replica of `master`, on a free port.
    pub fn replica_of(master: &Redis) -> Redis {
        let master_port = master.port.to_string();
        for _ in 0..5 {
            let args = ["--replicaof", "127.0.0.1", &master_port];
            if let Some(replica) = try_start_on(free_port(), &args) {
                return replica;
            }
        }
        panic!("redis-server (replica) did not start on any free port");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server process is there (running or paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kill the server (SIGKILL, so nothing is flushed or said goodbye). Restart it with
    /// [`Redis::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port after [`Redis::stop`], empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        *self = Redis::start_on(self.port);
    }

    /// SIGSTOP: connections are accepted by the kernel but nothing is answered.
    pub fn pause(&self) {
        assert!(send_signal(self.pid(), "STOP"), "SIGSTOP redis-server");
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        assert!(send_signal(self.pid(), "CONT"), "SIGCONT redis-server");
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // SIGKILL ends a paused server too; continuing it first is cheap insurance
            // that a test never leaves one stopped, holding its port.
            send_signal(child.id(), "CONT");
        }
        self.stop();
    }
}

/// `None` when another process holds the port (a check that only connects could be
/// answered by another test's server, so the answering process id is compared).
fn try_start_on(port: u16, extra: &[&str]) -> Option<Redis> {
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        // A replica's full sync writes an RDB file: into a directory of the test's own,
        // not wherever the tests run.
        .arg("--dir")
        .arg(crate::temp_dir(&format!("redis-{port}")))
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is required: run the test command from README.md, which installs it");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if let Some(pid) = redis_pid(port) {
            if pid == child.id() {
                return Some(Redis {
                    child: Some(child),
                    port,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The process id of the redis-server answering on `port`, if one does.
fn redis_pid(port: u16) -> Option<u32> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("process_id:") || !reply.ends_with(b"\r\n") {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    let line = text.lines().find_map(|l| l.strip_prefix("process_id:"))?;
    line.trim().parse().ok()
}

/// A Redis Sentinel (redis-server in sentinel mode) watching `master` as the service
/// `service`: it declares the master down after a second without an answer and fails over
/// to a replica on its own (a quorum of one).
pub struct Sentinel {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Sentinel {
    pub fn start(master: &Redis, service: &str) -> Sentinel {
        for _ in 0..5 {
            let port = free_port();
            let dir = crate::temp_dir(&format!("sentinel-{port}"));
            let conf = dir.join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {service} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 5000\n\
                 sentinel parallel-syncs {service} 1\n",
                dir.display(),
                master.port
            );
            std::fs::write(&conf, text).unwrap();
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is required (sentinel mode)");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if redis_pid(port) == Some(child.id()) {
                    return Sentinel { child, port, dir };
                }
                assert!(Instant::now() < deadline, "redis sentinel did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("redis sentinel did not start on any free port");
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PING's answer, or `None` when nothing answers within `timeout`.
    fn ping(port: u16, timeout: Duration) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.write_all(b"PING\r\n").ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    fn stops_restarts_on_its_port_pauses_and_resumes() {
        let mut redis = Redis::start();
        let port = redis.port;
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
        let second = Duration::from_secs(1);
        assert_eq!(ping(port, second).as_deref(), Some("+PONG\r\n"));
        redis.stop();
        assert!(!redis.is_running());
        assert_eq!(ping(port, second), None);
        redis.restart();
        assert_eq!(redis.port, port);
        assert_eq!(ping(port, second).as_deref(), Some("+PONG\r\n"));
        redis.pause();
        assert_eq!(ping(port, Duration::from_millis(300)), None);
        redis.resume();
        assert_eq!(ping(port, second).as_deref(), Some("+PONG\r\n"));
        // Dropped while paused: killed all the same, its port free again.
        redis.pause();
        drop(redis);
        assert_eq!(ping(port, second), None);
    }
}
