//! One continuous fragmented MP4 for a player (HTTP-fMP4: MSE players, `<video>`), from
//! the frames the hub gives a viewer: the init segment once the sequence headers are in
//! and the first picture comes, then a fragment for each batch of frames
//! ([`Fmp4Stream::flush`]), so that a player is never more than a batch behind. New codec
//! parameters start a new init segment (MSE players take it; a `<video>` reading the body as
//! one file stops there).

use bytes::{Bytes, BytesMut};

use super::Fmp4Writer;
use crate::frame::{Frame, MediaKind};

/// A sequence header as it came (its payload and time).
#[derive(Debug, Clone, PartialEq)]
struct Header {
    payload: Bytes,
    timestamp: u64,
}

impl Header {
    fn of(frame: &Frame) -> Header {
        Header {
            payload: frame.payload.clone(),
            timestamp: frame.timestamp,
        }
    }

    fn frame(&self, kind: MediaKind) -> Frame {
        Frame::new(kind, self.timestamp, self.payload.clone())
    }
}

#[derive(Debug, Default)]
pub struct Fmp4Stream {
    video: Option<Header>,
    audio: Option<Header>,
    /// Writing since the last init segment; `None` until media comes (or after new
    /// headers).
    writer: Option<Fmp4Writer>,
    /// The writer's init segment is yet to go out, ahead of its first fragment.
    init_pending: bool,
    /// The headers do not make a writer (a codec MP4 does not carry here): say so once.
    unplayable: bool,
}

impl Fmp4Stream {
    pub fn new() -> Fmp4Stream {
        Fmp4Stream::default()
    }

    /// Take `frame`, appending what it completes to `out` (a WHIP publisher's audio as the
    /// Opus it sent: see [`Frame::as_published`]).
    pub fn push(&mut self, frame: &Frame, out: &mut BytesMut) {
        frame.as_published(|frame| self.push_one(frame, out));
    }

    fn push_one(&mut self, frame: &Frame, out: &mut BytesMut) {
        if frame.sequence_header {
            let slot = match frame.kind {
                MediaKind::Video => &mut self.video,
                MediaKind::Audio => &mut self.audio,
                MediaKind::Metadata => return,
            };
            let header = Header::of(frame);
            if slot.as_ref().map(|h| &h.payload) != Some(&header.payload) {
                *slot = Some(header);
                // New parameters: what was written goes out, a new init segment follows.
                self.flush(out);
                self.writer = None;
                self.unplayable = false;
            }
            return;
        }
        if frame.kind == MediaKind::Metadata || self.unplayable {
            return;
        }
        if self.writer.is_none() {
            let video = self.video.as_ref().map(|h| h.frame(MediaKind::Video));
            let audio = self.audio.as_ref().map(|h| h.frame(MediaKind::Audio));
            match Fmp4Writer::new(video.as_ref(), audio.as_ref()) {
                Ok(writer) => {
                    self.writer = Some(writer);
                    self.init_pending = true;
                }
                Err(_) => {
                    self.unplayable = true;
                    return;
                }
            }
        }
        let fragment = self.writer.as_mut().and_then(|w| w.push(frame));
        self.write(fragment, out);
    }

    /// The end of a batch: what is held goes out as a fragment.
    pub fn flush(&mut self, out: &mut BytesMut) {
        let fragment = self.writer.as_mut().and_then(Fmp4Writer::cut);
        self.write(fragment, out);
    }

    /// A fragment goes out, after the init segment if it is the writer's first. (Made
    /// then, the init segment has what the first keyframe told, such as VP9's picture size.)
    fn write(&mut self, fragment: Option<Bytes>, out: &mut BytesMut) {
        let (Some(fragment), Some(writer)) = (fragment, &self.writer) else {
            return;
        };
        if std::mem::take(&mut self.init_pending) {
            out.extend_from_slice(&writer.init());
        }
        out.extend_from_slice(&fragment);
    }

    /// Whether the stream's headers cannot be carried in MP4.
    pub fn unplayable(&self) -> bool {
        self.unplayable
    }
}
