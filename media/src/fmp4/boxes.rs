//! Writing ISO BMFF boxes (ISO/IEC 14496-12 4.2): a 32-bit size, a four-character type,
//! then the body. The body is written first and its size patched in afterwards, so the
//! writers below never have to compute a size up front.

use bytes::BufMut;

/// A box whose body `body` writes.
pub(super) fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    patch_size(out, start);
}

/// A full box: a box whose body starts with a version byte and 24 bits of flags.
pub(super) fn full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |out| {
        out.put_u32((u32::from(version) << 24) | (flags & 0x00FF_FFFF));
        body(out);
    });
}

/// Write the size of the box that starts at `start` and runs to the end of `out`.
fn patch_size(out: &mut [u8], start: usize) {
    // Every box this module writes is bounded far below 4 GiB (configuration records are
    // capped, fragments are cut by size); the media data box has its own header
    // ([`mdat_header`]). Saturating keeps a broken invariant from panicking.
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// The header of an `mdat` holding `payload_len` bytes: 8 bytes, or 16 with a 64-bit
/// size when the box would not fit a 32-bit one.
pub(super) fn mdat_header(payload_len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    match u32::try_from(payload_len + 8) {
        Ok(size) => {
            out.put_u32(size);
            out.put_slice(b"mdat");
        }
        Err(_) => {
            out.put_u32(1); // size 1: the 64-bit largesize follows the type
            out.put_slice(b"mdat");
            out.put_u64(payload_len + 16);
        }
    }
    out
}

/// A unity transformation matrix (tkhd, mvhd): 16.16 fixed point, except the last column 2.30.
pub(super) fn put_unity_matrix(out: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        out.put_u32(v);
    }
}

/// The ISO 639-2/T language code "und" (undetermined) packed into 15 bits, as mdhd wants it.
pub(super) const LANGUAGE_UND: u16 =
    ((b'u' as u16 - 0x60) << 10) | ((b'n' as u16 - 0x60) << 5) | (b'd' as u16 - 0x60);
