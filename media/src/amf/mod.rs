//! AMF0 encoder/decoder and AMF3 decoder (with a minimal AMF3 encoder) for RTMP commands and
//! metadata.
//!
//! Input is treated as hostile: every read is bounds-checked, nesting depth is capped at
//! [`MAX_DEPTH`], preallocation never trusts a declared count, and the total size of the decoded
//! tree (including copies made when resolving references) is charged against a memory budget so
//! that reference chains cannot blow up exponentially.
//!
//! Strings are decoded with lossy UTF-8 conversion: some encoders put legacy-encoded text in
//! metadata, and dropping the whole message for one bad title is worse than a replacement char.
//!
//! Files: [`value`] is the decoded value and the errors; `read` the bounds-checked reading and
//! the memory budget both decoders share; [`amf0`] and [`amf3`] each format's decoder and
//! encoder.

mod amf0;
mod amf3;
mod read;
mod value;

pub use amf0::{decode_all, encode, encode_all, Amf0Decoder};
pub use amf3::{decode_amf3, encode_amf3};
pub use value::{Amf0Value, AmfError};

/// Maximum container nesting (objects, arrays, vectors, dictionaries) accepted by the decoders.
pub const MAX_DEPTH: usize = 64;

/// Default cap on the estimated memory of everything one decoder materialises.
pub const DEFAULT_MEMORY_LIMIT: usize = 16 << 20;

#[cfg(test)]
mod tests;
