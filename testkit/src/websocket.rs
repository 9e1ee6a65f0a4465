//! A WebSocket client for the tests: the handshake (with the sample key of RFC 6455,
//! whose accept value the RFC gives), then frames as the server sends them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A WebSocket client: the handshake, then frames as the server sends them.
pub struct WebSocket {
    socket: TcpStream,
    /// Read and not yet taken.
    buf: Vec<u8>,
}

/// One frame from the server: its opcode and payload.
pub type Message = (u8, Vec<u8>);

impl WebSocket {
    /// Open `path` on `addr`; the answer's status line and headers if it is not 101.
    pub fn open(addr: SocketAddr, path: &str) -> Result<WebSocket, String> {
        let mut socket = crate::http::connect(addr);
        // The sample key of RFC 6455 1.3, whose accept value the RFC gives.
        write!(
            socket,
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut ws = WebSocket {
            socket,
            buf: Vec::new(),
        };
        let head = loop {
            if let Some(end) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
                ws.buf.drain(..end + 4);
                break head;
            }
            if !ws.fill() {
                return Err(format!("closed during the handshake: {:?}", ws.buf));
            }
        };
        let upgraded = head.starts_with("HTTP/1.1 101")
            && head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        if upgraded {
            Ok(ws)
        } else {
            Err(head)
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.socket.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame, `None` once the connection closed.
    pub fn next_message(&mut self) -> Option<Message> {
        loop {
            if let Some((message, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(message);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Send a masked frame, as a client must.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        assert!(payload.len() < 126);
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.socket.write_all(&frame).unwrap();
    }
}

/// A whole unmasked frame at the front of `buf`, and its length.
fn parse_server_frame(buf: &[u8]) -> Option<(Message, usize)> {
    let (first, second) = (*buf.first()?, *buf.get(1)?);
    assert_eq!(second & 0x80, 0, "a server's frames are not masked");
    assert_eq!(first & 0x80, 0x80, "each message is one final frame");
    let (len, at) = match second & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        short => (short as usize, 2),
    };
    let payload = buf.get(at..at + len)?;
    Some(((first & 0x0F, payload.to_vec()), at + len))
}
