//! Relays: live streams forwarded to other servers and streams pulled in from them, over
//! RTMP, RTMPS and HTTP(S)-FLV. This is their connection layer: the byte stream
//! ([`transport`], TCP or TLS), and the drivers that publish or play over RTMP ([`rtmp`])
//! and pull HTTP-FLV ([`flv`]). URLs are parsed and redacted by `media::rtmp::url`.

pub mod flv;
pub mod rtmp;
pub mod transport;
