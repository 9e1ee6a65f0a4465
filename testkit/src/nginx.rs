//! A real nginx with the RTMP module (Debian's `nginx` and `libnginx-mod-rtmp`) on a free
//! port: a peer for relays, which publishers push to and players pull from.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, temp_dir};

/// Where Debian puts the RTMP module.
const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// An nginx-rtmp child process serving application `live`, killed when dropped.
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// On a free port (tries others if it was taken meanwhile).
    pub fn start() -> Nginx {
        require_nginx();
        for _ in 0..5 {
            if let Some(nginx) = Nginx::try_start_on(free_port()) {
                return nginx;
            }
        }
        panic!("nginx did not start on any free port");
    }

    fn try_start_on(port: u16) -> Option<Nginx> {
        let dir = temp_dir(&format!("nginx-{port}"));
        let config = format!(
            "load_module {RTMP_MODULE};\n\
             worker_processes 1;\n\
             daemon off;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
                 application live {{ live on; }} }} }}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let mut child = Command::new(nginx_binary())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Nginx { child, port, dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// `rtmp://127.0.0.1:PORT/live/{room}`.
    pub fn url(&self, room: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{room}", self.port)
    }

    /// What nginx logged, for a failing test's message.
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> String {
    std::env::var("NGINX").unwrap_or_else(|_| "nginx".into())
}

/// Panics with what to install unless nginx and its RTMP module are there.
pub fn require_nginx() {
    assert!(
        Command::new(nginx_binary()).arg("-v").output().is_ok()
            && std::path::Path::new(RTMP_MODULE).exists(),
        "nginx with the RTMP module is required: run the test command from README.md, \
         which installs nginx and libnginx-mod-rtmp"
    );
}
