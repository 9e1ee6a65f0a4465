//! A fan-out's tapes: each batch appended once per encoding its viewers share, so that a
//! viewer's write is one `sendfile` of a span of the tape (see [`super::tape`]).

use std::collections::VecDeque;
use std::ops::Range;

use media::frame::Batch;
use media::outbox::Shared;

use super::pass::{Seat, Taken};
use super::tape::Tape;

/// A lane starts putting its batches on tapes once it has this many viewers. A tape holds
/// up to 2 MiB more than the viewers need (see [`tape`]); below this, copying into
/// each socket costs little and takes no more memory.
pub(super) const TAPE_AT: usize = 16;

/// A fan-out's tapes, one per shared encoding its viewers use ([`Shared::index`]). A tape
/// that cannot be made or written is dropped: its viewers are written to as before.
#[derive(Default)]
pub(super) struct Tapes {
    tapes: [Option<Tape>; Shared::ALL.len()],
    /// A tape could not be made or written: make no more. (A new tape in the place of one
    /// dropped would also put batches at offsets that the batches taken before mean on
    /// the old one.)
    failed: bool,
}

impl Tapes {
    /// Make the tapes that the encodings of `seats` need.
    pub(super) fn open_for(&mut self, seats: &[Seat]) {
        for shares in seats.iter().filter_map(|seat| seat.shares) {
            let slot = &mut self.tapes[shares.index()];
            if slot.is_none() && !self.failed {
                match Tape::new() {
                    Ok(tape) => *slot = Some(tape),
                    Err(e) => {
                        tracing::warn!("fan-out without zero-copy sends: {e}");
                        self.failed = true;
                    }
                }
            }
        }
    }

    /// Put `frames` on every tape; returns where they went.
    pub(super) fn record(
        &mut self,
        frames: Option<&Batch>,
    ) -> [Option<Range<u64>>; Shared::ALL.len()] {
        let mut spans = [const { None }; Shared::ALL.len()];
        let Some(frames) = frames else {
            return spans;
        };
        for (shares, slot) in Shared::ALL.into_iter().zip(&mut self.tapes) {
            let Some(tape) = slot else { continue };
            match tape.append(frames.iter().map(|frame| shares.bytes(frame))) {
                Ok(span) => spans[shares.index()] = Some(span),
                Err(e) => {
                    tracing::warn!("fan-out stops zero-copy sends: {e}");
                    *slot = None;
                    self.failed = true;
                }
            }
        }
        spans
    }

    pub(super) fn get(&self, shares: Shared) -> Option<&Tape> {
        self.tapes[shares.index()].as_ref()
    }

    /// Give back what no viewer needs: everything before the batches still `taken`.
    pub(super) fn release(&mut self, taken: &VecDeque<Taken>) {
        for (index, slot) in self.tapes.iter_mut().enumerate() {
            let Some(tape) = slot else { continue };
            let needed = taken
                .iter()
                .find_map(|batch| Some(batch.spans[index].as_ref()?.start));
            if let Err(e) = tape.release_before(needed) {
                tracing::warn!("fan-out stops zero-copy sends: {e}");
                *slot = None;
                self.failed = true;
            }
        }
    }
}
