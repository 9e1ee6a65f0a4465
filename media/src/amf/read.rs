//! Byte reading helpers (all bounds-checked, none panics) and the memory budget and
//! reference tables both decoders share.

use super::{Amf0Value, AmfError, DEFAULT_MEMORY_LIMIT};

/// Approximate memory charged per decoded value node.
pub(super) const NODE_COST: usize = std::mem::size_of::<Amf0Value>();
/// Approximate memory charged per property (key + value slot), on top of the value itself.
pub(super) const PROP_COST: usize = std::mem::size_of::<(String, Amf0Value)>();
/// Upper bound on capacity reserved up front from any declared count.
pub(super) const MAX_PREALLOC: usize = 1024;

pub(super) fn read_u8(buf: &mut &[u8]) -> Result<u8, AmfError> {
    let (&b, rest) = buf.split_first().ok_or(AmfError::Truncated)?;
    *buf = rest;
    Ok(b)
}

pub(super) fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], AmfError> {
    if buf.len() < n {
        return Err(AmfError::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

pub(super) fn read_array<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], AmfError> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(buf, N)?);
    Ok(out)
}

pub(super) fn read_u16(buf: &mut &[u8]) -> Result<u16, AmfError> {
    Ok(u16::from_be_bytes(read_array(buf)?))
}

pub(super) fn read_i16(buf: &mut &[u8]) -> Result<i16, AmfError> {
    Ok(i16::from_be_bytes(read_array(buf)?))
}

pub(super) fn read_u32(buf: &mut &[u8]) -> Result<u32, AmfError> {
    Ok(u32::from_be_bytes(read_array(buf)?))
}

pub(super) fn read_f64(buf: &mut &[u8]) -> Result<f64, AmfError> {
    Ok(f64::from_be_bytes(read_array(buf)?))
}

/// AMF3 variable-length 29-bit unsigned integer: up to three 7-bit groups with a continuation
/// bit, then a full 8-bit final byte.
pub(super) fn read_u29(buf: &mut &[u8]) -> Result<u32, AmfError> {
    let mut v: u32 = 0;
    for _ in 0..3 {
        let b = read_u8(buf)?;
        v = (v << 7) | u32::from(b & 0x7F);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    let b = read_u8(buf)?;
    Ok((v << 8) | u32::from(b))
}

/// Capacity to reserve for `declared` elements of at least `min_size` bytes each: never more
/// than the remaining input could hold, and never more than a fixed cap.
pub(super) fn prealloc(declared: u32, remaining: usize, min_size: usize) -> usize {
    (declared as usize)
        .min(remaining / min_size.max(1))
        .min(MAX_PREALLOC)
}

/// Tracks the estimated memory materialised by one decoder.
#[derive(Debug, Clone)]
pub(super) struct Budget {
    /// Everything charged so far: value trees plus reference-table copies.
    used: usize,
    /// Only the value trees; deltas of this measure a container's own size, so table copies of
    /// nested containers are not counted again into their parents (which would double per level).
    pub(super) tree: usize,
    limit: usize,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Self {
        Budget {
            used: 0,
            tree: 0,
            limit,
        }
    }

    /// Charges memory that becomes part of the decoded value tree.
    pub(super) fn charge(&mut self, n: usize) -> Result<(), AmfError> {
        self.tree = self.tree.saturating_add(n);
        self.charge_table(n)
    }

    /// Charges memory held only by a reference table.
    pub(super) fn charge_table(&mut self, n: usize) -> Result<(), AmfError> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            Err(AmfError::TooLarge)
        } else {
            Ok(())
        }
    }

    pub(super) fn string(&mut self, bytes: &[u8]) -> Result<String, AmfError> {
        self.charge(bytes.len())?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Reference-table slot: `None` while the container is still being decoded, then the finished
/// value and the memory it cost (charged again each time the reference is copied).
pub(super) type Slot = Option<(Amf0Value, usize)>;

pub(super) fn resolve(
    table: &[Slot],
    budget: &mut Budget,
    idx: u32,
) -> Result<Amf0Value, AmfError> {
    match table.get(idx as usize) {
        None => Err(AmfError::BadReference(idx)),
        Some(None) => Err(AmfError::CircularReference(idx)),
        Some(Some((value, cost))) => {
            budget.charge(*cost)?;
            Ok(value.clone())
        }
    }
}

/// Stores a finished container in its slot, charging for the table's copy too.
pub(super) fn fill(
    table: &mut [Slot],
    budget: &mut Budget,
    slot: usize,
    value: &Amf0Value,
    cost: usize,
) -> Result<(), AmfError> {
    budget.charge_table(cost)?;
    if let Some(entry) = table.get_mut(slot) {
        *entry = Some((value.clone(), cost));
    }
    Ok(())
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(DEFAULT_MEMORY_LIMIT)
    }
}
