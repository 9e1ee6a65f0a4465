//! A hook server for the tests: answers the node's HTTP hooks as the test says, per action
//! (a status and a delay, or no answer at all), and keeps every call it got.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One call a hook server got.
#[derive(Debug, Clone)]
pub struct HookCall {
    /// The body's `action` (`on_publish`, ...).
    pub action: String,
    /// The JSON body.
    pub body: String,
    /// `X-Ferrolive-Signature`, if any.
    pub signature: Option<String>,
}

pub struct HookServer {
    pub addr: SocketAddr,
    answers: Arc<Mutex<HashMap<String, (u16, Duration)>>>,
    calls: Arc<Mutex<Vec<HookCall>>>,
}

impl HookServer {
    /// A server answering 200 at once to everything until told otherwise.
    pub fn start() -> HookServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answers: Arc<Mutex<HashMap<String, (u16, Duration)>>> = Arc::default();
        let calls: Arc<Mutex<Vec<HookCall>>> = Arc::default();
        let (a, c) = (answers.clone(), calls.clone());
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let (answers, calls) = (a.clone(), c.clone());
                std::thread::spawn(move || serve(socket, &answers, &calls));
            }
        });
        HookServer {
            addr,
            answers,
            calls,
        }
    }

    /// The URL of this server for the hook `action`.
    pub fn url(&self, action: &str) -> String {
        format!("http://{}/{action}", self.addr)
    }

    /// Answer `action` with `status` after `delay`.
    pub fn answer(&self, action: &str, status: u16, delay: Duration) {
        (self.answers.lock().unwrap()).insert(action.to_owned(), (status, delay));
    }

    /// The calls so far of `action`.
    pub fn calls(&self, action: &str) -> Vec<HookCall> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| c.action == action)
            .cloned()
            .collect()
    }

    /// Wait up to `within` for a call of `action` whose body contains `needle`.
    pub fn wait_for(&self, action: &str, needle: &str, within: Duration) -> Option<HookCall> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .calls(action)
                .into_iter()
                .find(|c| c.body.contains(needle));
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(
    mut socket: std::net::TcpStream,
    answers: &Mutex<HashMap<String, (u16, Duration)>>,
    calls: &Mutex<Vec<HookCall>>,
) {
    let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let n = socket.read(&mut buf).unwrap_or(0);
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                break (head.to_owned(), body.to_owned());
            }
        }
        if n == 0 {
            return;
        }
    };
    let action = body
        .split_once("\"action\":\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    let signature = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Ferrolive-Signature: "))
        .map(str::to_owned);
    let answer = answers.lock().unwrap().get(&action).copied();
    calls.lock().unwrap().push(HookCall {
        action,
        body,
        signature,
    });
    let (status, delay) = answer.unwrap_or((200, Duration::ZERO));
    std::thread::sleep(delay);
    let _ = write!(
        socket,
        "HTTP/1.1 {status} Hook\r\nContent-Length: 0\r\n\r\n"
    );
}
