//! AMF0 (decode_all) and AMF3 (decode_amf3) decoders on arbitrary bytes, plus round trips:
//! whatever decodes must re-encode to bytes that decode to a value that re-encodes to the same
//! bytes (compared as bytes, so NaN payloads and -0.0 need no special casing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::amf::{self, AmfError};

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = amf::decode_all(data) {
        let encoded = amf::encode_all(&values);
        match amf::decode_all(&encoded) {
            Ok(again) => {
                assert_eq!(
                    again.len(),
                    values.len(),
                    "value count changed in AMF0 round trip"
                );
                assert_eq!(
                    amf::encode_all(&again),
                    encoded,
                    "AMF0 round trip not stable"
                );
            }
            // The memory budget is an estimate charged differently for reference copies and
            // for lossy UTF-8 (replacement chars are longer than the bytes they replace), so
            // our own re-encoding of a value that just fit may exceed it. Not a bug.
            Err(AmfError::TooLarge) => {}
            Err(e) => panic!("AMF0 re-encoding does not decode: {e:?}"),
        }
    }

    let mut cur = data;
    if let Ok(value) = amf::decode_amf3(&mut cur) {
        assert!(cur.len() <= data.len());
        // The AMF3 encoder is lossy by design (see encode_amf3), but one pass must reach a
        // fixed point.
        let mut encoded = Vec::new();
        amf::encode_amf3(&value, &mut encoded);
        let mut rest = &encoded[..];
        match amf::decode_amf3(&mut rest) {
            Ok(again) => {
                assert!(rest.is_empty(), "AMF3 re-encoding has trailing bytes");
                let mut encoded_again = Vec::new();
                amf::encode_amf3(&again, &mut encoded_again);
                assert_eq!(encoded_again, encoded, "AMF3 round trip not stable");
            }
            Err(AmfError::TooLarge) => {}
            Err(e) => panic!("AMF3 re-encoding does not decode: {e:?}"),
        }
    }
});
