//! RTMP: handshake, chunk stream, the messages both ends name, and the server session
//! state machine.

pub mod chunk;
pub mod handshake;
pub mod message;
pub mod session;
