//! Reading recordings back (`fmp4::read`): a box header, a `moov` body, and a `moof` body
//! against that movie. Nothing panics; a parsed header never claims less than itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::fmp4::read::{box_header, Movie};

fuzz_target!(|data: &[u8]| {
    if let Some((_, size, header)) = box_header(data) {
        assert!(size >= header as u64);
    }
    // The first half as the movie, the rest as a fragment of it.
    let (moov, moof) = data.split_at(data.len() / 2);
    if let Some(movie) = Movie::parse(moov) {
        assert!(!movie.codecs().is_empty());
        let _ = movie.fragment_end_ms(moof);
        let _ = movie.fragment_end_ms(data);
    }
    let _ = Movie::parse(data);
});
