//! The server side of one RTSP connection as a sans-IO state machine.
//!
//! The driver feeds received bytes with [`ServerSession::feed`], gets [`SessionEvent`]s
//! back and sends what [`ServerSession::take_output`] gives. What needs the rest of the
//! system (does this stream exist? may this client publish? which UDP ports?) comes out as
//! an event that waits for the driver's answer: `accept_*` or [`ServerSession::reject`].
//! Until then the session reads no further request, so answers go out in request order.
//! OPTIONS, GET_PARAMETER (keep-alives), TEARDOWN and every error answer are the session's
//! own.
//!
//! States (RFC 2326 A.1): `Init` until a SETUP is accepted, `Ready` with tracks set up,
//! then `Playing` after PLAY or `Recording` after RECORD (which needs an ANNOUNCE first).
//! A method in the wrong state gets 455, an unknown one 501, a request without CSeq 400, a
//! request naming another session 454.
//!
//! Channels: a TCP track N is always answered with interleaved channels 2N and 2N+1, so
//! the packets a stream's packetizer frames once are right for every viewer (see
//! [`crate::rtp`]).
//!
//! No clock and no randomness: the session id and the timeout it advertises are the
//! caller's; the driver keeps the time and closes a session whose keep-alives
//! ([`SessionEvent::KeepAlive`], RTCP) stop.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::message::{read_message, Message, Method, Request, Response};
use super::path::StreamPath;
use super::transport::{Lower, Transport};
use super::RtspError;
use crate::sdp::{self, SessionDescription};

/// What the session tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A player asks what the stream carries: answer with
    /// [`ServerSession::accept_describe`] (the SDP) or reject (404).
    Describe { path: StreamPath },
    /// A publisher announces what it will send: [`ServerSession::accept_announce`] or
    /// reject (403, 401, or 455 if the stream is already published).
    Announce {
        path: StreamPath,
        description: SessionDescription,
    },
    /// A track's transport: [`ServerSession::accept_setup`] (with server ports for UDP)
    /// or reject. `transport` is what the answer will say (for TCP, the channels chosen).
    /// For a publisher, `track` is the index of the announced media section.
    Setup {
        path: StreamPath,
        track: usize,
        transport: Transport,
    },
    /// Start sending: [`ServerSession::accept_play`] or reject.
    Play { path: StreamPath },
    /// The publisher starts sending: [`ServerSession::accept_record`] or reject.
    Record { path: StreamPath },
    /// The client ended the session (already answered). Stop sending; close when it does.
    Teardown,
    /// The client showed it is alive (OPTIONS or GET_PARAMETER in its session; answered).
    KeepAlive,
    /// An interleaved RTP packet from the publisher, for a track set up over TCP.
    Rtp { track: usize, packet: Bytes },
    /// An interleaved RTCP packet (a player's receiver reports, a publisher's sender
    /// reports), for a track set up over TCP.
    Rtcp { track: usize, packet: Bytes },
}

/// A track set up in this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSetup {
    pub track: usize,
    /// As answered: the channels (TCP) or the client's and server's ports (UDP).
    pub transport: Transport,
    /// The URL the client set it up with (`RTP-Info` names tracks by it).
    pub url: String,
}

/// Where the stream's packets begin for one track, for a PLAY answer's `RTP-Info`: the
/// sequence number and RTP timestamp of the first packet this viewer will get (from
/// [`crate::rtp::RtpPackets::first_sequence_and_timestamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpInfo {
    pub track: usize,
    pub sequence: u16,
    pub rtp_time: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Init,
    Ready,
    Playing,
    Recording,
}

/// Why an answer could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("no {0} request is waiting for an answer")]
    NotPending(&'static str),
}

/// A request waiting for the driver's answer: the event it was told as, with what the
/// answer needs besides (the CSeq to echo, the URL asked for).
#[derive(Debug)]
struct Pending {
    cseq: u32,
    url: String,
    event: SessionEvent,
}

impl Pending {
    /// Whether this is the request that the `accept_*` of `method` answers.
    fn is(&self, method: &str) -> bool {
        let waiting = match self.event {
            SessionEvent::Describe { .. } => "DESCRIBE",
            SessionEvent::Announce { .. } => "ANNOUNCE",
            SessionEvent::Setup { .. } => "SETUP",
            SessionEvent::Play { .. } => "PLAY",
            SessionEvent::Record { .. } => "RECORD",
            _ => "",
        };
        waiting == method
    }
}

/// The methods the session answers, for OPTIONS.
const PUBLIC: &str = "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, TEARDOWN, GET_PARAMETER";

const SERVER: &str = "ferrolive";

pub struct ServerSession {
    id: String,
    timeout_secs: u32,
    state: State,
    out: BytesMut,
    pending: Option<Pending>,
    /// The stream this session is about, from its first DESCRIBE, ANNOUNCE or SETUP.
    stream: Option<StreamPath>,
    announced: Option<SessionDescription>,
    tracks: Vec<TrackSetup>,
}

impl ServerSession {
    /// `id` is the session id to hand out (random-ish, the caller's pick, never reused
    /// while this one lives); `timeout_secs` is how long the driver waits for a keep-alive,
    /// advertised in the `Session` header.
    pub fn new(id: String, timeout_secs: u32) -> ServerSession {
        ServerSession {
            id,
            timeout_secs,
            state: State::Init,
            out: BytesMut::new(),
            pending: None,
            stream: None,
            announced: None,
            tracks: Vec::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn session_id(&self) -> &str {
        &self.id
    }

    /// The tracks set up so far.
    pub fn tracks(&self) -> &[TrackSetup] {
        &self.tracks
    }

    /// The publisher's description, once its ANNOUNCE was accepted.
    pub fn announced(&self) -> Option<&SessionDescription> {
        self.announced.as_ref()
    }

    /// Bytes queued for the client.
    pub fn take_output(&mut self) -> BytesMut {
        self.out.split()
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether a request waits for the driver's answer (feeding reads nothing until then).
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Consume the messages whole in `input`, pushing events. Stops after an event that
    /// waits for an answer; feed again (with the rest) after answering. An error means the
    /// byte stream cannot be read on (a head or body over its limit, garbage): close.
    pub fn feed(
        &mut self,
        input: &mut BytesMut,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtspError> {
        while self.pending.is_none() {
            match read_message(input)? {
                None => break,
                Some(Message::Request(request)) => self.on_request(request, events),
                // A client has no reason to answer us; nothing we send asks it to.
                Some(Message::Response(_)) => {}
                Some(Message::Interleaved { channel, payload }) => {
                    self.on_interleaved(channel, payload, events)
                }
            }
        }
        Ok(())
    }

    fn on_interleaved(&self, channel: u8, packet: Bytes, events: &mut Vec<SessionEvent>) {
        let Some(setup) = self
            .tracks
            .iter()
            .find(|t| matches!(t.transport.interleaved, Some((rtp, rtcp)) if rtp == channel || rtcp == channel))
        else {
            return;
        };
        let track = setup.track;
        let is_rtp = setup
            .transport
            .interleaved
            .is_some_and(|(rtp, _)| rtp == channel);
        if !is_rtp {
            events.push(SessionEvent::Rtcp { track, packet });
        } else if self.state == State::Recording {
            events.push(SessionEvent::Rtp { track, packet });
        }
    }

    fn on_request(&mut self, request: Request, events: &mut Vec<SessionEvent>) {
        let Some(cseq) = request.headers.cseq() else {
            self.respond(Response::new(400, None));
            return;
        };
        let in_session = match request.headers.session() {
            Some(id) if id != self.id || self.tracks.is_empty() => {
                self.respond(Response::new(454, Some(cseq)));
                return;
            }
            Some(_) => true,
            None => false,
        };
        let state = self.state;
        match request.method {
            Method::Options => {
                self.respond(Response::new(200, Some(cseq)).header("Public", PUBLIC));
                if in_session {
                    events.push(SessionEvent::KeepAlive);
                }
            }
            Method::GetParameter => {
                let response = self.with_session(Response::new(200, Some(cseq)));
                self.respond(response);
                if in_session {
                    events.push(SessionEvent::KeepAlive);
                }
            }
            Method::Describe => match self.stream_of(&request.uri) {
                Some(path) => {
                    self.wait(cseq, request.uri, SessionEvent::Describe { path }, events);
                }
                None => self.respond(Response::new(404, Some(cseq))),
            },
            Method::Announce => {
                if state != State::Init || self.announced.is_some() {
                    return self.respond(Response::new(455, Some(cseq)));
                }
                let Some(path) = self.stream_of(&request.uri) else {
                    return self.respond(Response::new(404, Some(cseq)));
                };
                let is_sdp = request
                    .headers
                    .get("Content-Type")
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"));
                if !is_sdp {
                    return self.respond(Response::new(415, Some(cseq)));
                }
                match sdp::parse(&request.body) {
                    Ok(description) if !description.media.is_empty() => {
                        let event = SessionEvent::Announce { path, description };
                        self.wait(cseq, request.uri, event, events);
                    }
                    _ => self.respond(Response::new(400, Some(cseq))),
                }
            }
            Method::Setup => self.on_setup(cseq, request, events),
            Method::Play | Method::Record => {
                // A player's session plays, a publisher's (one that announced) records.
                let play = request.method == Method::Play;
                let allowed = if play {
                    matches!(state, State::Ready | State::Playing) && self.announced.is_none()
                } else {
                    state == State::Ready && self.announced.is_some()
                };
                if !allowed {
                    return self.respond(Response::new(455, Some(cseq)));
                }
                if !in_session {
                    return self.respond(Response::new(454, Some(cseq)));
                }
                let Some(path) = self.stream_of(&request.uri) else {
                    return self.respond(Response::new(404, Some(cseq)));
                };
                let event = if play {
                    SessionEvent::Play { path }
                } else {
                    SessionEvent::Record { path }
                };
                self.wait(cseq, request.uri, event, events);
            }
            Method::Teardown => {
                if state == State::Init && !in_session {
                    return self.respond(Response::new(455, Some(cseq)));
                }
                self.respond(Response::new(200, Some(cseq)));
                self.state = State::Init;
                self.tracks.clear();
                self.announced = None;
                events.push(SessionEvent::Teardown);
            }
            Method::Pause | Method::SetParameter | Method::Other(_) => {
                self.respond(Response::new(501, Some(cseq)).header("Public", PUBLIC))
            }
        }
    }

    fn on_setup(&mut self, cseq: u32, request: Request, events: &mut Vec<SessionEvent>) {
        if !matches!(self.state, State::Init | State::Ready) {
            return self.respond(Response::new(455, Some(cseq)));
        }
        let Some(path) = self.stream_of(&request.uri) else {
            return self.respond(Response::new(404, Some(cseq)));
        };
        let track = match &self.announced {
            Some(description) => announced_track(description, &request.uri, &path),
            // Our own SDP names tracks trackID=N; a single-track client may set up the
            // stream's own URL.
            None => match &path.control {
                None => Some(0),
                Some(_) => path.track_id(),
            },
        };
        let Some(track) = track else {
            return self.respond(Response::new(404, Some(cseq)));
        };
        let Some(mut transport) = request.headers.get("Transport").and_then(Transport::choose)
        else {
            return self.respond(Response::new(461, Some(cseq)));
        };
        if transport.lower == Lower::Tcp {
            let Some(rtp) = u8::try_from(track).ok().and_then(|t| t.checked_mul(2)) else {
                return self.respond(Response::new(404, Some(cseq)));
            };
            transport.interleaved = Some((rtp, rtp + 1));
        }
        transport.record = self.announced.is_some();
        let event = SessionEvent::Setup {
            path,
            track,
            transport,
        };
        self.wait(cseq, request.uri, event, events);
    }

    /// The stream `uri` names, if it is this session's stream or the session has none yet
    /// (an accepted ANNOUNCE or SETUP binds the session to its stream).
    fn stream_of(&self, uri: &str) -> Option<StreamPath> {
        let path = StreamPath::parse(uri)?;
        match &self.stream {
            Some(stream) if !stream.same_stream(&path) => None,
            _ => Some(path),
        }
    }

    /// Tell the driver `event` and wait for its answer.
    fn wait(
        &mut self,
        cseq: u32,
        url: String,
        event: SessionEvent,
        events: &mut Vec<SessionEvent>,
    ) {
        events.push(event.clone());
        self.pending = Some(Pending { cseq, url, event });
    }

    fn respond(&mut self, response: Response) {
        response.header("Server", SERVER).encode(&mut self.out);
    }

    fn with_session(&self, response: Response) -> Response {
        if self.tracks.is_empty() {
            response
        } else {
            response.header(
                "Session",
                format!("{};timeout={}", self.id, self.timeout_secs),
            )
        }
    }

    /// Take the pending request if it is the one the `accept_*` of `method` answers.
    fn take_pending(&mut self, method: &'static str) -> Result<Pending, AnswerError> {
        match self.pending.take_if(|pending| pending.is(method)) {
            Some(pending) => Ok(pending),
            None => Err(AnswerError::NotPending(method)),
        }
    }

    /// Answer DESCRIBE with the stream's description ([`crate::sdp::describe`]).
    pub fn accept_describe(&mut self, sdp: &str) -> Result<(), AnswerError> {
        let Pending { cseq, url, .. } = self.take_pending("DESCRIBE")?;
        let base = if url.ends_with('/') {
            url
        } else {
            format!("{url}/")
        };
        let response = Response::new(200, Some(cseq))
            .header("Content-Base", base)
            .body("application/sdp", Bytes::copy_from_slice(sdp.as_bytes()));
        self.respond(response);
        Ok(())
    }

    /// Accept an ANNOUNCE: the publisher may set up its tracks.
    pub fn accept_announce(&mut self) -> Result<(), AnswerError> {
        let pending = self.take_pending("ANNOUNCE")?;
        let (cseq, SessionEvent::Announce { path, description }) = (pending.cseq, pending.event)
        else {
            return Err(AnswerError::NotPending("ANNOUNCE"));
        };
        self.stream = Some(path);
        self.announced = Some(description);
        self.respond(Response::new(200, Some(cseq)));
        Ok(())
    }

    /// Accept a SETUP. For UDP, `server_port` is the RTP and RTCP ports the driver bound
    /// for this track; `ssrc` is the track's (the stream's packetizer's, for a player).
    pub fn accept_setup(
        &mut self,
        server_port: Option<(u16, u16)>,
        ssrc: Option<u32>,
    ) -> Result<(), AnswerError> {
        let Pending { cseq, url, event } = self.take_pending("SETUP")?;
        let SessionEvent::Setup {
            path,
            track,
            mut transport,
        } = event
        else {
            return Err(AnswerError::NotPending("SETUP"));
        };
        if transport.lower == Lower::Udp {
            transport.server_port = server_port;
        }
        transport.ssrc = ssrc;
        self.stream = Some(path);
        self.tracks.retain(|t| t.track != track);
        self.tracks.push(TrackSetup {
            track,
            transport: transport.clone(),
            url,
        });
        if self.state == State::Init {
            self.state = State::Ready;
        }
        let response = self.with_session(
            Response::new(200, Some(cseq)).header("Transport", transport.to_string()),
        );
        self.respond(response);
        Ok(())
    }

    /// Accept a PLAY; `rtp_info` says where each track's packets begin for this viewer
    /// (tracks without an entry are left out of `RTP-Info`).
    pub fn accept_play(&mut self, rtp_info: &[RtpInfo]) -> Result<(), AnswerError> {
        let cseq = self.take_pending("PLAY")?.cseq;
        let mut info = String::new();
        for entry in rtp_info {
            let Some(setup) = self.tracks.iter().find(|t| t.track == entry.track) else {
                continue;
            };
            if !info.is_empty() {
                info.push(',');
            }
            let _ = write!(
                info,
                "url={};seq={};rtptime={}",
                setup.url, entry.sequence, entry.rtp_time
            );
        }
        let mut response = self
            .with_session(Response::new(200, Some(cseq)))
            .header("Range", "npt=0.000-");
        if !info.is_empty() {
            response = response.header("RTP-Info", info);
        }
        self.respond(response);
        self.state = State::Playing;
        Ok(())
    }

    /// Accept a RECORD: interleaved RTP from the publisher now comes out as
    /// [`SessionEvent::Rtp`].
    pub fn accept_record(&mut self) -> Result<(), AnswerError> {
        let cseq = self.take_pending("RECORD")?.cseq;
        let response = self.with_session(Response::new(200, Some(cseq)));
        self.respond(response);
        self.state = State::Recording;
        Ok(())
    }

    /// Refuse the waiting request with `status` (404 no such stream, 401/403 not allowed,
    /// 453 no ports left, 455 already published, 503 overloaded...).
    pub fn reject(&mut self, status: u16) -> Result<(), AnswerError> {
        let cseq = self
            .pending
            .take()
            .ok_or(AnswerError::NotPending("any"))?
            .cseq;
        self.respond(Response::new(status, Some(cseq)));
        Ok(())
    }
}

/// The index of the announced media section a SETUP URI names: its control is the URI's
/// last segment, or the whole URI (absolute controls, as GStreamer may write them).
fn announced_track(
    description: &SessionDescription,
    uri: &str,
    path: &StreamPath,
) -> Option<usize> {
    let uri = uri.trim_end_matches('/');
    description.media.iter().position(|media| {
        let Some(control) = media.control.as_deref() else {
            return false;
        };
        let control = control.trim_end_matches('/');
        control == uri || Some(control) == path.control.as_deref()
    })
}

#[cfg(test)]
mod tests;
