//! A blocking RTMP client: a thin std::net driver over media's sans-IO
//! [`ClientSession`], for tests that need exact control over what is sent (or that
//! nothing is read).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use media::amf::Amf0Value;
use media::rtmp::chunk::RtmpMessage;
use media::rtmp::client::{ClientEvent, ClientSession, ClientState};

/// How long a read waits before the client gives up on the server.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RtmpClient {
    /// The connection, for tests that write raw bytes or keep it open without reading.
    pub socket: TcpStream,
    session: ClientSession,
    input: BytesMut,
    /// Events read from the socket and not yet taken by [`RtmpClient::next_event`].
    pending: VecDeque<ClientEvent>,
    /// Every event but media since the connection opened: what [`RtmpClient::wait_for`]
    /// looks through.
    seen: Vec<ClientEvent>,
}

impl RtmpClient {
    /// TCP connection and handshake with `addr`, nothing else: for tests that go on with
    /// raw bytes on [`RtmpClient::socket`] or with [`RtmpClient::session`].
    pub fn handshaken(addr: SocketAddr) -> RtmpClient {
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut client = RtmpClient {
            socket,
            session: ClientSession::new([7; 1528]),
            input: BytesMut::new(),
            pending: VecDeque::new(),
            seen: Vec::new(),
        };
        client.flush();
        while !client.session.handshake_done() {
            assert!(client.read_more(), "server closed during handshake");
        }
        client.flush();
        client
    }

    /// Handshake and `connect` to `app` (tcUrl `rtmp://addr/app`); returns once the server
    /// accepted it.
    pub fn connect(addr: SocketAddr, app: &str) -> RtmpClient {
        let mut client = RtmpClient::handshaken(addr);
        let tc_url = format!("rtmp://{addr}/{app}");
        client
            .session
            .connect(app, &tc_url, Vec::new())
            .expect("a fresh session connects");
        client.flush();
        loop {
            match client.next_event() {
                Some(ClientEvent::Connected { .. }) => return client,
                Some(ClientEvent::Status(status)) if status.is_error() => {
                    panic!("server refused connect: {}", status.code)
                }
                Some(_) => {}
                None => panic!("server closed before answering connect"),
            }
        }
    }

    /// The session, to queue what the methods here do not (then [`RtmpClient::flush`]).
    pub fn session(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    /// Send whatever the session queued.
    pub fn flush(&mut self) {
        if self.session.has_output() {
            let out = self.session.take_output();
            self.socket.write_all(&out).unwrap();
        }
    }

    /// Send the command `values` (name, transaction id, command object, arguments) as is.
    pub fn command(&mut self, stream_id: u32, values: Vec<Amf0Value>) {
        self.session.send_command(stream_id, &values);
        self.flush();
    }

    /// Send one message exactly as given (through the session's chunk writer).
    pub fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, timestamp: u32, payload: &[u8]) {
        self.session.send_message(&RtmpMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: Bytes::copy_from_slice(payload),
        });
        self.flush();
    }

    /// The next event from the server, reading as needed; `None` once the connection
    /// closed or nothing came for 10 s.
    pub fn next_event(&mut self) -> Option<ClientEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if !self.read_more() {
                return None;
            }
        }
    }

    /// Read until `needle` shows up in what the server sent since the connection opened (a
    /// status code or description, a string in a command or data message). False if the
    /// connection closes or 10 s pass first. Events read on the way are not given again by
    /// [`RtmpClient::next_event`].
    pub fn wait_for(&mut self, needle: &str) -> bool {
        if self.seen.iter().any(|event| mentions(event, needle)) {
            return true;
        }
        while let Some(event) = self.next_event() {
            if mentions(&event, needle) {
                return true;
            }
        }
        false
    }

    /// Publish `room` (createStream first); true when the server answered Publish.Start,
    /// false when it refused or closed.
    pub fn publish(&mut self, room: &str) -> bool {
        self.session
            .publish(room, "live")
            .expect("connected, not publishing or playing yet");
        self.flush();
        loop {
            match self.next_event() {
                Some(ClientEvent::Publishing) => return true,
                Some(ClientEvent::Status(status)) if status.is_error() => return false,
                Some(_) => {}
                None => return false,
            }
        }
    }

    /// Ask to play `room`: returns once `play` went out (after createStream's answer),
    /// without reading what the server answers to it.
    pub fn play(&mut self, room: &str) {
        self.session
            .play(room)
            .expect("connected, not publishing or playing yet");
        self.flush();
        while self.session.state() == ClientState::CreatingStream && self.read_more() {}
    }

    /// End the publish (FCUnpublish, deleteStream).
    pub fn unpublish(&mut self) {
        self.session
            .delete_stream()
            .expect("a stream to delete: publish first");
        self.flush();
    }

    /// Read once and feed the session, sending what it answers; false once the connection
    /// closed or timed out.
    fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 16384];
        let n = match self.socket.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        self.input.extend_from_slice(&buf[..n]);
        let mut events = Vec::new();
        if let Err(e) = self.session.feed(&mut self.input, &mut events) {
            panic!("the server sent what the RTMP client cannot read: {e}");
        }
        for event in events {
            if !matches!(event, ClientEvent::Media { .. }) {
                self.seen.push(event.clone());
            }
            self.pending.push_back(event);
        }
        self.flush();
        true
    }
}

/// Whether `needle` is part of a text the event carries.
fn mentions(event: &ClientEvent, needle: &str) -> bool {
    match event {
        ClientEvent::Status(status) => [&status.level, &status.code, &status.description]
            .iter()
            .any(|t| t.contains(needle)),
        ClientEvent::Connected {
            properties,
            information,
        } => value_mentions(properties, needle) || value_mentions(information, needle),
        ClientEvent::Command(values) | ClientEvent::Data(values) => {
            values.iter().any(|v| value_mentions(v, needle))
        }
        _ => false,
    }
}

fn value_mentions(value: &Amf0Value, needle: &str) -> bool {
    match value {
        Amf0Value::String(s) | Amf0Value::XmlDocument(s) => s.contains(needle),
        Amf0Value::Object(properties)
        | Amf0Value::EcmaArray(properties)
        | Amf0Value::TypedObject { properties, .. } => properties
            .iter()
            .any(|(key, v)| key.contains(needle) || value_mentions(v, needle)),
        Amf0Value::StrictArray(items) => items.iter().any(|v| value_mentions(v, needle)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use media::frame::{Frame, MediaKind};
    use media::rtmp::session::{ServerSession, SessionEvent};

    use super::*;

    /// A one-connection RTMP server on media's server session, in a thread: answers
    /// publish and play as `accept` says, sends a player one video frame and closes.
    /// Returns what it saw.
    fn serve_one(accept: bool) -> (SocketAddr, JoinHandle<Vec<SessionEvent>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            let mut session = ServerSession::new([9; 1528]);
            let mut input = BytesMut::new();
            let mut seen = Vec::new();
            let mut buf = [0u8; 16384];
            loop {
                let n = socket.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    return seen;
                }
                input.extend_from_slice(&buf[..n]);
                loop {
                    let mut events = Vec::new();
                    session.feed(&mut input, &mut events).unwrap();
                    if events.is_empty() {
                        break;
                    }
                    for event in events {
                        let mut frame = None;
                        match &event {
                            SessionEvent::Publish { .. } if accept => session.accept_publish(),
                            SessionEvent::Play { name, .. } if accept => {
                                session.accept_play(name);
                                let payload = Bytes::from_static(&[0x17, 1, 0, 0, 0, 42]);
                                frame = Some(Frame::new(MediaKind::Video, 40, payload));
                            }
                            SessionEvent::Publish { .. } => {
                                session.reject_publish("NetStream.Publish.BadName", "taken")
                            }
                            _ => {}
                        }
                        seen.push(event);
                        socket.write_all(&session.take_output()).unwrap();
                        if let Some(frame) = frame {
                            let id = session.play_stream_id().unwrap();
                            socket.write_all(&frame.rtmp_chunks_for(id)).unwrap();
                            return seen;
                        }
                    }
                }
                socket.write_all(&session.take_output()).unwrap();
            }
        });
        (addr, server)
    }

    #[test]
    fn publishes_sends_and_unpublishes() {
        let (addr, server) = serve_one(true);
        let mut client = RtmpClient::connect(addr, "live");
        assert!(client.publish("room"));
        assert!(client.wait_for("NetStream.Publish.Start"), "seen before");
        client.send(6, 9, 1, 0, &[0x17, 0, 0, 0, 0, 1]);
        client.unpublish();
        drop(client);
        let seen = server.join().unwrap();
        assert!(
            matches!(&seen[0], SessionEvent::Publish { app, name, .. } if app == "live" && name == "room")
        );
        assert_eq!(
            seen[1],
            SessionEvent::Media {
                kind: MediaKind::Video,
                timestamp: 0,
                payload: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1])
            }
        );
        assert_eq!(seen[2], SessionEvent::Unpublish);
    }

    #[test]
    fn a_refused_publish_is_false() {
        let (addr, _server) = serve_one(false);
        let mut client = RtmpClient::connect(addr, "live");
        assert!(!client.publish("room"));
        assert!(client.wait_for("BadName"));
    }

    #[test]
    fn plays_and_reads_events() {
        let (addr, server) = serve_one(true);
        let mut client = RtmpClient::connect(addr, "live");
        client.play("room");
        assert_eq!(client.session().state(), ClientState::PlayRequested);
        assert!(client.wait_for("NetStream.Play.Start"));
        let media = std::iter::from_fn(|| client.next_event()).find_map(|event| match event {
            ClientEvent::Media {
                kind, timestamp, ..
            } => Some((kind, timestamp)),
            _ => None,
        });
        assert_eq!(media, Some((MediaKind::Video, 40)));
        // The server closed after the frame.
        assert!(!client.wait_for("never sent"));
        server.join().unwrap();
    }
}
