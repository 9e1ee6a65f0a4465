//! Bounds-checked readers: bytes of a configuration record, bits of an RBSP or an
//! AudioSpecificConfig.

use bytes::Bytes;

use super::CodecError;

/// Byte cursor over a configuration record; every read is bounds-checked.
pub(super) struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError::Truncated)?;
        let out = self.data.get(self.pos..end).ok_or(CodecError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Bytes not read yet.
    pub(super) fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// An unsigned LEB128 value (AV1's leb128()): at most 8 bytes, at most 32 bits of value.
    pub(super) fn leb128(&mut self) -> Result<u32, CodecError> {
        let mut value: u64 = 0;
        for i in 0..8 {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| CodecError::Invalid("leb128 too large"));
            }
        }
        Err(CodecError::Invalid("leb128 longer than 8 bytes"))
    }

    /// `count` parameter sets, each prefixed by a 16-bit length. The count is at
    /// most 16 bits and every set consumes input, so growth is bounded by the input.
    pub(super) fn param_sets(
        &mut self,
        count: usize,
        out: &mut Vec<Bytes>,
    ) -> Result<(), CodecError> {
        for _ in 0..count {
            let len = usize::from(self.u16()?);
            out.push(Bytes::copy_from_slice(self.take(len)?));
        }
        Ok(())
    }
}

/// MSB-first bit reader with Exp-Golomb helpers, for RBSP and AudioSpecificConfig.
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, bit: 0 }
    }

    /// The picture size left by a parameter set's cropping window (H.264 frame_cropping,
    /// H.265 conformance_window): its flag, then four ue(v) offsets in chroma sample units,
    /// which depend on the chroma format (`chroma_format_idc`, 0 when the colour planes are
    /// coded separately) and, for H.264 field pictures, on `field_factor` 2 rows.
    pub(super) fn cropped_size(
        &mut self,
        (width, height): (u64, u64),
        chroma_array_type: u32,
        field_factor: u64,
    ) -> Result<(u32, u32), CodecError> {
        let (mut crop_x, mut crop_y) = (0u64, 0u64);
        if self.flag()? {
            let left = u64::from(self.ue()?);
            let right = u64::from(self.ue()?);
            let top = u64::from(self.ue()?);
            let bottom = u64::from(self.ue()?);
            let (unit_x, unit_y) = match chroma_array_type {
                1 => (2, 2 * field_factor),
                2 => (2, field_factor),
                _ => (1, field_factor),
            };
            crop_x = unit_x * (left + right);
            crop_y = unit_y * (top + bottom);
        }
        if crop_x >= width || crop_y >= height {
            return Err(CodecError::Invalid("cropping exceeds picture size"));
        }
        let to_u32 = |v: u64| u32::try_from(v).map_err(|_| CodecError::Invalid("picture size"));
        Ok((to_u32(width - crop_x)?, to_u32(height - crop_y)?))
    }

    pub(super) fn flag(&mut self) -> Result<bool, CodecError> {
        let byte = *self.data.get(self.bit / 8).ok_or(CodecError::Truncated)?;
        let set = (byte >> (7 - self.bit % 8)) & 1 == 1;
        self.bit += 1;
        Ok(set)
    }

    /// Skip `n` bits; fails (and stays put) if fewer remain.
    pub(super) fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        let end = self.bit.checked_add(n).ok_or(CodecError::Truncated)?;
        if end > self.data.len().saturating_mul(8) {
            return Err(CodecError::Truncated);
        }
        self.bit = end;
        Ok(())
    }

    /// Up to 32 bits as an unsigned integer.
    pub(super) fn bits(&mut self, n: u32) -> Result<u32, CodecError> {
        debug_assert!(n <= 32);
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.flag()?);
        }
        u32::try_from(v).map_err(|_| CodecError::Invalid("bit field too wide"))
    }

    /// Unsigned Exp-Golomb code, ue(v).
    pub(super) fn ue(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return Err(CodecError::Invalid("Exp-Golomb code too long"));
            }
        }
        let rest = u64::from(self.bits(zeros)?);
        u32::try_from((1u64 << zeros) - 1 + rest)
            .map_err(|_| CodecError::Invalid("Exp-Golomb value overflow"))
    }

    /// Signed Exp-Golomb code, se(v).
    pub(super) fn se(&mut self) -> Result<i64, CodecError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Strip emulation prevention bytes (the 0x03 in 00 00 03) to get the RBSP.
pub(super) fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}
