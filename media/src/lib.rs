//! Media protocols and formats without I/O: AMF, RTMP, RTSP with RTP and SDP, FLV, codec
//! configurations, MPEG-TS, fragmented MP4, HLS, HTTP request heads, and the stream hub that
//! fans one publisher out to many viewers.
//!
//! [`frame`] is the vocabulary at the bottom that every format shares; nothing in it names
//! a format, the hub or a protocol session.

pub mod amf;
pub mod calendar;
pub mod cmaf;
pub mod codec;
pub mod flv;
pub mod fmp4;
pub mod frame;
pub mod hls;
pub mod http;
pub mod hub;
pub mod metadata;
pub mod names;
pub mod outbox;
pub mod rtmp;
pub mod rtp;
pub mod rtsp;
pub mod sdp;
pub mod segment;
#[cfg(test)]
mod test_payloads;
pub mod timestamp;
pub mod token;
pub mod ts;
pub mod websocket;
