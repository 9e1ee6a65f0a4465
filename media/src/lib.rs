//! Media protocols without I/O: AMF, RTMP, FLV, codec configurations, and the stream hub
//! that fans one publisher out to many viewers.

pub mod amf;
pub mod codec;
pub mod flv;
pub mod frame;
pub mod hls;
pub mod hub;
pub mod outbox;
pub mod rtmp;
pub mod segment;
#[cfg(test)]
mod test_payloads;
pub mod timestamp;
pub mod ts;
