//! RTSP 1.0 (RFC 2326) for players and publishers, sans-IO: message framing with
//! interleaved RTP in the same byte stream ([`message`]), the `Transport` header
//! ([`transport`]), which stream a URL names ([`path`]), the server session ([`session`])
//! that a network driver feeds bytes and answers events, a stream's frames to RTP
//! ([`send`]) and a publisher's track from RTP to FLV tag bodies ([`receive`]).
//!
//! RTSP only negotiates; media is RTP ([`crate::rtp`]) described by SDP ([`crate::sdp`]).
//! A driver serving players runs, per connection, a [`ServerSession`]; per stream, one
//! [`StreamSender`] ([`send`]: the SDP's tracks and a packetizer per track) whose packets it
//! writes to each playing session's socket (TCP) or UDP ports. A driver taking a publisher gives each announced track a [`TrackReceiver`]
//! (from the codec [`crate::sdp`] reads), feeds it the session's `Rtp` events (or UDP
//! datagrams) and pushes the FLV tag bodies it returns to the hub.

pub mod message;
pub mod path;
pub mod receive;
pub mod send;
pub mod session;
pub mod transport;

pub use message::{read_message, write_interleaved, Message, Method, Request, Response};
pub use path::StreamPath;
pub use receive::{TagBody, TrackReceiver};
pub use send::StreamSender;
pub use session::{AnswerError, RtpInfo, ServerSession, SessionEvent, State, TrackSetup};
pub use transport::{Lower, Transport};

/// Why an RTSP byte stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtspError {
    #[error("message head longer than {} bytes", message::MAX_HEAD)]
    HeadTooLarge,
    #[error("message body longer than {} bytes", message::MAX_BODY)]
    BodyTooLarge,
    #[error("more than {} headers", message::MAX_HEADERS)]
    TooManyHeaders,
    #[error("message head is not UTF-8")]
    NotText,
    #[error("malformed start line")]
    MalformedStartLine,
    #[error("malformed header")]
    MalformedHeader,
    #[error("unsupported protocol version {0:?}")]
    Version(String),
}
