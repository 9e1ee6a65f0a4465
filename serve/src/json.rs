//! The little JSON the node writes itself (`/api/streams`, hook bodies): strings escaped
//! as JSON wants, without a serializer dependency for a handful of flat objects.

use std::fmt::Write as _;

/// `text` as a JSON string.
pub(crate) fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_are_escaped_for_json() {
        assert_eq!(super::string("live/a"), "\"live/a\"");
        assert_eq!(super::string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
