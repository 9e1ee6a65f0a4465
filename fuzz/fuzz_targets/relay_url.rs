//! `rtmp::url::RelayUrl::parse` on arbitrary text, and what an accepted URL gives: its parts,
//! its tcUrl and its redacted form never panic, the redacted form shows the user and
//! authority but never the password, nor an RTMP stream name whole, and `expand` of the
//! input as a template keeps everything but the placeholders.
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
    let userinfo = match (url.user(), url.password()) {
        (Some(user), Some(_)) => format!("{user}:…@"),
        (Some(user), None) => format!("{user}@"),
        _ => String::new(),
    };
    // The user is shown (the password may well be a substring of it), the password not.
    let prefix = format!("{}://{userinfo}{}/", url.scheme().as_str(), url.authority());
    let rest = redacted
        .strip_prefix(&prefix)
        .expect("redacted as scheme://userinfo@authority/");
    if url.scheme().is_rtmp() {
        let shown = rest
            .strip_prefix(&format!("{}/", url.app()))
            .expect("the app is shown whole");
        let shown = shown.split('?').next().unwrap_or("");
        let name = url.stream().split('?').next().unwrap_or("");
        // A strict beginning of the name, then an ellipsis.
        if !name.is_empty() {
            let head = shown.strip_suffix('…').expect("the name is cut short");
            assert!(
                name.starts_with(head) && head.chars().count() < name.chars().count(),
                "stream name in {redacted}"
            );
        }
    }
    // What is accepted parses again the same way from its parts.
    if url.scheme().is_rtmp() {
        let again = format!("{}/{}", url.tc_url(), url.stream());
        let again = RelayUrl::parse(&again).expect("an accepted URL's parts parse");
        assert_eq!((again.app(), again.stream()), (url.app(), url.stream()));
    }
});
