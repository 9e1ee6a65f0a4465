//! A publisher's `onMetaData`: what the hub learns from it, and what live viewers get of it.
//!
//! Encoders write metadata for files: a looping file's `duration` and `filesize` reach the
//! publish, and a player that believes them shows a seek bar for a 60 s stream. Live
//! viewers get the metadata without them, as SRS and nginx-rtmp send it.

use bytes::Bytes;

use crate::amf::{self, Amf0Value};
use crate::frame::Tracks;

/// Fields that describe a file, not a live stream.
const FILE_FIELDS: [&str; 2] = ["duration", "filesize"];

/// The tracks the metadata announces (`audiocodecid` / `videocodecid`), before their frames
/// arrive.
pub fn declared_tracks(payload: &[u8]) -> Tracks {
    let mut declared = Tracks::NONE;
    for value in &amf::decode_all(payload).unwrap_or_default() {
        if let Amf0Value::EcmaArray(fields) | Amf0Value::Object(fields) = value {
            for (name, _) in fields {
                declared.audio |= name == "audiocodecid";
                declared.video |= name == "videocodecid";
            }
        }
    }
    declared
}

/// The metadata as live viewers get it: without the fields that only describe a file.
/// Metadata that does not decode is passed on as it is.
pub fn for_live(payload: Bytes) -> Bytes {
    let Ok(mut values) = amf::decode_all(&payload) else {
        return payload;
    };
    let mut removed = false;
    for value in &mut values {
        if let Amf0Value::EcmaArray(fields) | Amf0Value::Object(fields) = value {
            let before = fields.len();
            fields.retain(|(name, _)| !FILE_FIELDS.contains(&name.as_str()));
            removed |= fields.len() != before;
        }
    }
    if removed {
        Bytes::from(amf::encode_all(&values))
    } else {
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_metadata(fields: Vec<(&str, Amf0Value)>) -> Bytes {
        Bytes::from(amf::encode_all(&[
            Amf0Value::String("onMetaData".into()),
            Amf0Value::EcmaArray(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        ]))
    }

    #[test]
    fn live_metadata_has_no_duration_or_filesize() {
        let file = on_metadata(vec![
            ("duration", Amf0Value::Number(60.0)),
            ("width", Amf0Value::Number(1280.0)),
            ("filesize", Amf0Value::Number(1e6)),
            ("videocodecid", Amf0Value::Number(7.0)),
        ]);
        let live = for_live(file);
        assert_eq!(
            live,
            on_metadata(vec![
                ("width", Amf0Value::Number(1280.0)),
                ("videocodecid", Amf0Value::Number(7.0)),
            ])
        );
        assert_eq!(
            declared_tracks(&live),
            Tracks {
                audio: false,
                video: true
            }
        );
        // Nothing to remove, or nothing readable: the same bytes.
        let plain = on_metadata(vec![("audiocodecid", Amf0Value::Number(10.0))]);
        assert_eq!(for_live(plain.clone()), plain);
        let junk = Bytes::from_static(b"\x02\x00");
        assert_eq!(for_live(junk.clone()), junk);
    }
}
