//! RTMP: handshake, chunk stream, the messages both ends name, and the server and client
//! session state machines.

pub mod chunk;
pub mod client;
pub mod handshake;
pub mod message;
pub mod session;
