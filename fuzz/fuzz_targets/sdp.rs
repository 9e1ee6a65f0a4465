//! SDP: `sdp::parse` of any input never panics, nor does reading each section's codec; a
//! codec read is described again with `sdp::describe`, which must parse back to the same
//! codec (AAC with the AU-header layout the server writes, AAC-hbr).
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtp::AuHeaderLayout;
use media::sdp::{self, Codec, Track};

fn as_described(codec: Codec) -> Codec {
    match codec {
        Codec::Aac { config, sample_rate, channels, .. } => Codec::Aac {
            config,
            sample_rate,
            channels,
            layout: AuHeaderLayout::AAC_HBR,
        },
        other => other,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(description) = sdp::parse(data) else {
        return;
    };
    for media in &description.media {
        let Ok(codec) = media.codec() else {
            continue;
        };
        let text = sdp::describe(
            &[Track { codec: codec.clone(), payload_type: 96 }],
            "127.0.0.1",
        );
        let again = sdp::parse(text.as_bytes()).expect("a described stream parses");
        assert_eq!(again.media.len(), 1);
        assert_eq!(again.media[0].codec(), Ok(as_described(codec)), "{text}");
    }
});
