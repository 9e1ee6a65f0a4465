//! WebSocket (RFC 6455), the server side of what WebSocket-FLV players (mpegts.js, flv.js)
//! need, sans-IO: the handshake's accept key, the head of each binary message the server
//! sends, and a reader of what the client sends (close, ping; anything else is read and
//! ignored, within bounds).
//!
//! A server's frames are not masked; a client's must be (RFC 6455 5.1), and a client that
//! does not mask is refused.

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};

/// The GUID RFC 6455 appends to the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest frame a client may send. Players send nothing but control frames (at most
/// 125 bytes); a little room for clients that say hello.
pub const MAX_CLIENT_FRAME: usize = 4096;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The `Sec-WebSocket-Accept` answer to a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.trim().as_bytes());
    sha1.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes())
}

/// The head of an unmasked, final binary frame of `len` bytes: put it before the payload.
pub fn binary_head(len: usize, out: &mut BytesMut) {
    head(OP_BINARY, len, out);
}

/// `payload` as one binary message.
pub fn binary(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    binary_head(payload.len(), &mut out);
    out.extend_from_slice(payload);
    out.freeze()
}

/// A close frame with status `code` (1000: normal closure, 1002: protocol error).
pub fn close(code: u16) -> Bytes {
    let mut out = BytesMut::with_capacity(4);
    head(OP_CLOSE, 2, &mut out);
    out.extend_from_slice(&code.to_be_bytes());
    out.freeze()
}

/// The answer to a ping carrying `payload`.
pub fn pong(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 2);
    head(OP_PONG, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out.freeze()
}

fn head(opcode: u8, len: usize, out: &mut BytesMut) {
    out.extend_from_slice(&[0x80 | opcode]);
    match len {
        0..=125 => out.extend_from_slice(&[len as u8]),
        126..=0xFFFF => {
            out.extend_from_slice(&[126]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.extend_from_slice(&[127]);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// What a client said, as far as a server streaming to it cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// The client closes, with its status code if it gave one.
    Close(Option<u16>),
    /// Answer with [`pong`] of this payload.
    Ping(Bytes),
    /// Data or a pong: nothing to do.
    Other,
}

/// Why a client's bytes are not WebSocket a server accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("client frame not masked")]
    Unmasked,
    #[error("client frame of {0} bytes is larger than allowed")]
    TooLarge(u64),
    #[error("reserved bits or opcode {0:#x}")]
    Reserved(u8),
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControl,
}

/// Take one frame the client sent off the front of `buf`: `Ok(None)` while it is
/// incomplete (read more and call again).
pub fn read_client_frame(buf: &mut BytesMut) -> Result<Option<ClientFrame>, WsError> {
    let [first, second, ..] = buf[..] else {
        return Ok(None);
    };
    let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
    if first & 0x70 != 0 {
        return Err(WsError::Reserved(first));
    }
    let control = match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
        OP_CLOSE | OP_PING | OP_PONG => true,
        other => return Err(WsError::Reserved(other)),
    };
    if second & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let (len, at) = match second & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if control && (!fin || len > 125) {
        return Err(WsError::BadControl);
    }
    if len > MAX_CLIENT_FRAME as u64 {
        return Err(WsError::TooLarge(len));
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask: [u8; 4] = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    buf.advance(at + 4);
    let mut payload = buf.split_to(len);
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok(Some(match opcode {
        OP_CLOSE => ClientFrame::Close(
            payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]])),
        ),
        OP_PING => ClientFrame::Ping(payload.freeze()),
        _ => ClientFrame::Other,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a client sends it: masked.
    fn client_frame(opcode: u8, payload: &[u8]) -> BytesMut {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = BytesMut::new();
        head(opcode, payload.len(), &mut out);
        out[1] |= 0x80;
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn the_accept_key_of_rfc_6455() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn binary_heads_by_length() {
        assert_eq!(&binary(b"hi")[..], &[0x82, 2, b'h', b'i']);
        let medium = binary(&[0; 300]);
        assert_eq!(&medium[..4], &[0x82, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let large = binary(&[0; 70_000]);
        assert_eq!(&large[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn client_frames_are_unmasked_and_read_whole() {
        let mut buf = client_frame(OP_PING, b"are you there");
        buf.extend_from_slice(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()));
        buf.extend_from_slice(&client_frame(OP_TEXT, b"hello"));
        let last = buf.split_off(buf.len() - 3);
        assert_eq!(
            read_client_frame(&mut buf),
            Ok(Some(ClientFrame::Ping(Bytes::from_static(
                b"are you there"
            ))))
        );
        assert_eq!(
            read_client_frame(&mut buf),
            Ok(Some(ClientFrame::Close(Some(1000))))
        );
        assert_eq!(read_client_frame(&mut buf), Ok(None), "incomplete");
        buf.extend_from_slice(&last);
        assert_eq!(read_client_frame(&mut buf), Ok(Some(ClientFrame::Other)));
        assert!(buf.is_empty());
        assert_eq!(&pong(b"x")[..], &[0x8A, 1, b'x']);
        assert_eq!(&close(1000)[..], &[0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn what_a_client_may_not_send() {
        let mut unmasked = BytesMut::from(&binary(b"x")[..]);
        assert_eq!(read_client_frame(&mut unmasked), Err(WsError::Unmasked));
        let mut huge = client_frame(OP_BINARY, &[]);
        huge[1] = 0x80 | 127;
        huge.truncate(2);
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            read_client_frame(&mut huge),
            Err(WsError::TooLarge(u64::MAX))
        );
        let mut long_ping = client_frame(OP_PING, &[0; 126]);
        assert_eq!(read_client_frame(&mut long_ping), Err(WsError::BadControl));
        let mut reserved = client_frame(0x3, b"");
        assert_eq!(read_client_frame(&mut reserved), Err(WsError::Reserved(3)));
    }

    proptest::proptest! {
        /// Whatever arrives, the reader answers without panicking and never takes more
        /// than it was given.
        #[test]
        fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = read_client_frame(&mut buf) {}
        }
    }
}
