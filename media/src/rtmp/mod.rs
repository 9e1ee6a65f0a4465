//! RTMP: handshake, chunk stream and the server session state machine.

pub mod chunk;
pub mod handshake;
pub mod session;
