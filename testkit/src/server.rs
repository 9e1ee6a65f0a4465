//! The real `ferrolive` binary as a child process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ffmpeg::require_ffmpeg;
use crate::http::{http_get, http_request};
use crate::{free_port, free_udp_port, send_signal, temp_dir};

/// The `ferrolive` binary the tests run: `$FERROLIVE_BIN` if set, else the one cargo
/// built next to the running test. Test executables live in `<target>/<profile>/deps/`
/// and cargo builds the root package's binary into `<target>/<profile>/` before running
/// its integration tests, which is where `CARGO_BIN_EXE_ferrolive` points (that variable
/// only exists when compiling the root package's own tests, so a library cannot use it).
/// Tests of other packages get a binary only if the workspace was built: they fall back
/// to the other profile's, and to `None` when there is none.
pub fn ferrolive_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FERROLIVE_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let target_dir = profile_dir.parent()?;
    [
        profile_dir.to_path_buf(),
        target_dir.join("debug"),
        target_dir.join("release"),
    ]
    .into_iter()
    .map(|dir| dir.join(format!("ferrolive{}", std::env::consts::EXE_SUFFIX)))
    .find(|path| path.is_file())
}

/// A running `ferrolive` node, killed when dropped.
pub struct Server {
    child: Child,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    /// Its RTSP listener (none for the control API).
    pub rtsp: Option<SocketAddr>,
    /// Its WebRTC UDP socket (none for the control API).
    pub webrtc: Option<SocketAddr>,
}

fn local_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

impl Server {
    /// `ferrolive standalone` publishing by room name (no channel keys), fresh data dir.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_after(None, extra)
    }

    /// The same, started by `sh` after the shell command `setup` (say, a `ulimit`).
    pub fn start_after(setup: Option<&str>, extra: &[&str]) -> Server {
        let data = temp_dir(&format!("data-{}", free_port()));
        let mut args = vec!["--rtmp-noauth", "--data-dir", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        Server::spawn_after(setup, "standalone", &args)
    }

    /// `ferrolive <subcommand>` with fresh listener ports and `args`. Tests run in
    /// parallel, so a port found free may be taken before the node binds it: then it tries
    /// other ports.
    pub fn spawn(subcommand: &str, args: &[&str]) -> Server {
        Server::spawn_after(None, subcommand, args)
    }

    fn spawn_after(setup: Option<&str>, subcommand: &str, args: &[&str]) -> Server {
        for _ in 0..5 {
            let (rtmp, http, api) = (local_addr(), local_addr(), local_addr());
            if let Some(server) = Server::try_spawn_at(setup, subcommand, args, rtmp, http, api) {
                return server;
            }
        }
        panic!("{subcommand} did not start on any free ports");
    }

    /// `ferrolive <role>` (origin or edge) in the cluster whose Redis is at `redis_url`, as
    /// node `id`, advertising loopback, with `extra` arguments.
    pub fn in_cluster(role: &str, id: &str, redis_url: &str, extra: &[&str]) -> Server {
        let mut args = vec![
            "--redis-url",
            redis_url,
            "--advertise-host",
            "127.0.0.1",
            "--allow-loopback-advertise",
            "--node-id",
            id,
        ];
        args.extend_from_slice(extra);
        Server::spawn(role, &args)
    }

    /// The same on given addresses (to restart a node where it was).
    pub fn spawn_at(
        subcommand: &str,
        args: &[&str],
        rtmp: SocketAddr,
        http: SocketAddr,
        api: SocketAddr,
    ) -> Server {
        Server::try_spawn_at(None, subcommand, args, rtmp, http, api)
            .unwrap_or_else(|| panic!("{subcommand} exited while starting (its ports taken?)"))
    }

    /// `None` when the node exits while starting (a node that cannot bind exits at once;
    /// a check that only asks the port could be answered by another test's server).
    fn try_spawn_at(
        setup: Option<&str>,
        subcommand: &str,
        args: &[&str],
        rtmp: SocketAddr,
        http: SocketAddr,
        api: SocketAddr,
    ) -> Option<Server> {
        // Checked here so that tests running ffprobe themselves fail with this message.
        require_ffmpeg();
        let binary = ferrolive_binary()
            .expect("the ferrolive binary is not built: run `cargo build` (or set FERROLIVE_BIN)");
        let mut cmd = match setup {
            Some(setup) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("{setup} && exec \"$0\" \"$@\"")]);
                sh.arg(&binary);
                sh
            }
            None => Command::new(&binary),
        };
        cmd.arg(subcommand);
        let (mut rtsp, mut webrtc) = (None, None);
        if subcommand != "control-api" {
            cmd.args([
                "--rtmp-addr",
                &rtmp.to_string(),
                "--http-addr",
                &http.to_string(),
            ]);
            if !args.contains(&"--rtsp-addr") {
                let addr = local_addr();
                cmd.args(["--rtsp-addr", &addr.to_string()]);
                rtsp = Some(addr);
            }
            // Every node binds WebRTC's UDP socket: not the default port, which the
            // servers of tests running in parallel would all want.
            if !args.contains(&"--webrtc-udp-addr") {
                let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
                cmd.args(["--webrtc-udp-addr", &addr.to_string()]);
                webrtc = Some(addr);
            }
        }
        if subcommand != "origin" && subcommand != "edge" {
            cmd.args(["--api-addr", &api.to_string()]);
        }
        // Info logs unless the test asks for another level (the flag may be given once).
        if !args.contains(&"--log") {
            cmd.args(["--log", "info"]);
        }
        let child = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ferrolive");
        let mut server = Server {
            child,
            rtmp,
            http,
            api,
            rtsp,
            webrtc,
        };
        let (probe, path) = if subcommand == "control-api" {
            (api, "/healthz")
        } else {
            (http, "/healthz")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(probe, path).map(|r| r.status) != Some(200) {
            if !server.is_running() {
                return None;
            }
            assert!(Instant::now() < deadline, "{subcommand} did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(50));
        server.is_running().then_some(server)
    }

    /// The node's process id (`sh` execs it, so also under [`Server::start_after`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the process abruptly, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit (bounded).
    pub fn terminate(&mut self) -> bool {
        send_signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn rtmp_url(&self, room: &str) -> String {
        format!("rtmp://{}/live/{room}", self.rtmp)
    }

    /// `rtsp://.../live/ROOM`.
    pub fn rtsp_url(&self, room: &str) -> String {
        let rtsp = self.rtsp.expect("a node with an RTSP listener");
        format!("rtsp://{rtsp}/live/{room}")
    }

    pub fn flv_url(&self, room: &str) -> String {
        format!("http://{}/live/{room}.flv", self.http)
    }

    /// Value of one metric on `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let body = http_get(self.http, "/metrics").expect("metrics").body;
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }

    /// A JSON body from the control API (`method` GET/POST/DELETE), with its status.
    pub fn api(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let r = http_request(
            self.api,
            &format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .expect("control API response");
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait until `room` (app `live`) has a publisher on this node that has sent its codec
    /// headers (so its metadata before them), as its `/api/streams` says (which needs no
    /// play token).
    pub fn wait_live(&self, room: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let entry = format!(
            "{{\"stream\":\"live/{room}\",\"app\":\"live\",\"room\":\"{room}\",\"publishing\":true"
        );
        let started = |list: &str| {
            list.split_once(&entry).is_some_and(|(_, rest)| {
                let fields = rest.split('}').next().unwrap_or_default();
                fields.contains("\"video\":\"") || fields.contains("\"audio\":\"")
            })
        };
        loop {
            if let Some(r) = http_get(self.http, "/api/streams") {
                if r.status == 200 && started(&String::from_utf8_lossy(&r.body)) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "stream {room} never went live");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data` string of a livego-style `{"status":..,"data":".."}` body.
pub fn livego_data(body: &str) -> String {
    let start = body.find("\"data\":\"").expect("data field") + 8;
    body[start..].split('"').next().unwrap().to_owned()
}
