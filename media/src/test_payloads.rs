//! Small audio/video/metadata payloads for unit tests. Each ends with an id byte so
//! every frame is recognisable.

use bytes::Bytes;

use crate::amf::{self, Amf0Value};

/// An AVC sequence header whose record parses (one 1-byte SPS, no PPS); the id trails it.
pub fn vseq(id: u8) -> Bytes {
    Bytes::from(vec![
        0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0, 1, 0x67, 0, id,
    ])
}
pub fn vkey(id: u8) -> Bytes {
    Bytes::from(vec![0x17, 0x01, 0, 0, 0, 0x65, id])
}
pub fn vinter(id: u8) -> Bytes {
    Bytes::from(vec![0x27, 0x01, 0, 0, 0, 0x41, id])
}
pub fn aseq(id: u8) -> Bytes {
    Bytes::from(vec![0xAF, 0x00, 0x12, 0x10, id])
}
pub fn araw(id: u8) -> Bytes {
    Bytes::from(vec![0xAF, 0x01, 0x21, id])
}
pub fn meta(id: u8) -> Bytes {
    Bytes::from(amf::encode_all(&[
        Amf0Value::String("onMetaData".into()),
        Amf0Value::EcmaArray(vec![("id".into(), Amf0Value::Number(f64::from(id)))]),
    ]))
}
