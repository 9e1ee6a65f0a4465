//! RTMP: handshake, chunk stream, the messages both ends name, and the server and client
//! session state machines, and the URLs a relay pushes to or pulls from.

pub mod chunk;
pub mod client;
pub mod handshake;
pub mod message;
pub mod session;
pub mod url;
