//! `rtmp::url::RelayUrl::parse` on arbitrary text, and what an accepted URL gives: its parts,
//! its tcUrl and its redacted form never panic, the redacted form never holds the password
//! or a stream name of 8 characters or more whole, and `expand` of the input as a template
//! keeps everything but the placeholders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtmp::url::{expand, RelayUrl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let expanded = expand(text, "live", "room");
    assert!(expanded.len() + 2 * text.matches('{').count() >= text.len());
    let Ok(url) = RelayUrl::parse(text) else {
        return;
    };
    let redacted = url.redacted();
    let _ = (url.tc_url(), url.authority(), format!("{url:?}"));
    if let Some(password) = url.password().filter(|p| !p.is_empty()) {
        let shown = redacted.split_once("://").map_or("", |(_, rest)| rest);
        let userinfo = shown.split_once('@').map_or("", |(userinfo, _)| userinfo);
        assert!(!userinfo.contains(password), "password in {redacted}");
    }
    let name = url.stream().split('?').next().unwrap_or("");
    if name.chars().count() >= 8 {
        let last = redacted.rsplit_once('/').map_or("", |(_, last)| last);
        assert!(!last.contains(name), "stream name in {redacted}");
    }
    // What is accepted parses again the same way from its parts.
    if url.scheme().is_rtmp() {
        let again = format!("{}/{}", url.tc_url(), url.stream());
        let again = RelayUrl::parse(&again).expect("an accepted URL's parts parse");
        assert_eq!((again.app(), again.stream()), (url.app(), url.stream()));
    }
});
