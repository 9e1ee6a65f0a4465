//! FLV demuxer: read() in a loop until None/Err, input fed in fuzzer-chosen pieces. Checks
//! that tags, error and unconsumed bytes do not depend on the split, and errors are sticky.
//! Also looks for the last whole tag of the input read as the end of a cut-off file.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use media::flv::{last_tag_time, FlvError, FlvHeader, FlvReader, FlvTag};

#[path = "split.rs"]
mod split;

#[derive(Debug, PartialEq)]
struct Outcome {
    tags: Vec<FlvTag>,
    error: Option<FlvError>,
    leftover: Vec<u8>,
    header: Option<FlvHeader>,
}

fn run(mut reader: FlvReader, pieces: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut tags = Vec::new();
    let mut error = None;
    'outer: for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match reader.read(&mut buf) {
                Ok(Some(tag)) => {
                    assert!(tag.tag_type <= 0x1F);
                    tags.push(tag);
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(
                        reader.read(&mut buf),
                        Err(e.clone()),
                        "errors must be sticky"
                    );
                    error = Some(e);
                    break 'outer;
                }
            }
            assert!(buf.len() <= before);
        }
    }
    Outcome {
        tags,
        leftover: if error.is_none() {
            buf.to_vec()
        } else {
            Vec::new()
        },
        error,
        header: reader.header(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, payload) = split::split(data);
    let whole = run(FlvReader::new(), &[payload]);
    let split = run(FlvReader::new(), &split::pieces(&sizes, payload));
    assert_eq!(whole, split, "outcome depends on how the input was split");
    // A tight tag size cap exercises the TagTooLarge path on small inputs.
    let small = run(FlvReader::with_max_tag_size(64), &[payload]);
    assert!(small.tags.iter().all(|t| t.payload.len() <= 64));
    let _ = last_tag_time(payload);
});
