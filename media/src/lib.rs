//! Media protocols without I/O: AMF, RTMP, FLV, codec configurations, and the stream hub
//! that fans one publisher out to many viewers.

pub mod amf;
pub mod codec;
pub mod flv;
pub mod hls;
pub mod hub;
pub mod rtmp;
pub mod segment;
pub mod timestamp;
pub mod ts;
