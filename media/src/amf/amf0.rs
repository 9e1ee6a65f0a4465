//! AMF0: decoder (with its reference table) and encoder.

use super::amf3::{encode_amf3, Amf3Decoder};
use super::read::*;
use super::{Amf0Value, AmfError, DEFAULT_MEMORY_LIMIT, MAX_DEPTH};

pub(super) const AMF0_NUMBER: u8 = 0x00;
pub(super) const AMF0_BOOLEAN: u8 = 0x01;
pub(super) const AMF0_STRING: u8 = 0x02;
pub(super) const AMF0_OBJECT: u8 = 0x03;
pub(super) const AMF0_NULL: u8 = 0x05;
pub(super) const AMF0_UNDEFINED: u8 = 0x06;
pub(super) const AMF0_REFERENCE: u8 = 0x07;
pub(super) const AMF0_ECMA_ARRAY: u8 = 0x08;
pub(super) const AMF0_OBJECT_END: u8 = 0x09;
pub(super) const AMF0_STRICT_ARRAY: u8 = 0x0A;
pub(super) const AMF0_DATE: u8 = 0x0B;
pub(super) const AMF0_LONG_STRING: u8 = 0x0C;
pub(super) const AMF0_UNSUPPORTED: u8 = 0x0D;
pub(super) const AMF0_XML_DOCUMENT: u8 = 0x0F;
pub(super) const AMF0_TYPED_OBJECT: u8 = 0x10;
pub(super) const AMF0_AVMPLUS: u8 = 0x11;

/// Decodes AMF0 values one at a time, keeping the reference table (0x07) and memory budget
/// shared across all values of one message.
///
/// On error the decoder's tables may hold unfinished entries; use a fresh decoder per message.
#[derive(Debug, Clone)]
pub struct Amf0Decoder {
    refs: Vec<Slot>,
    budget: Budget,
}

impl Default for Amf0Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Amf0Decoder {
    pub fn new() -> Self {
        Self::with_memory_limit(DEFAULT_MEMORY_LIMIT)
    }

    /// Decoder whose total materialised data (estimated bytes, including copies made for
    /// references) is capped at `limit`; beyond that decoding fails with [`AmfError::TooLarge`].
    pub fn with_memory_limit(limit: usize) -> Self {
        Amf0Decoder {
            refs: Vec::new(),
            budget: Budget::new(limit),
        }
    }

    /// Decode one value from the front of `buf`, advancing it past the value. References (0x07)
    /// index the complex values (objects, typed objects, ECMA and strict arrays) decoded so far by
    /// this decoder; the 0x11 marker switches to AMF3 for one value (with fresh AMF3 tables).
    /// `buf` is left untouched on error.
    pub fn decode(&mut self, buf: &mut &[u8]) -> Result<Amf0Value, AmfError> {
        let mut cur = *buf;
        let value = self.value(&mut cur, 0)?;
        *buf = cur;
        Ok(value)
    }

    pub(super) fn value(&mut self, buf: &mut &[u8], depth: usize) -> Result<Amf0Value, AmfError> {
        let marker = read_u8(buf)?;
        self.budget.charge(NODE_COST)?;
        Ok(match marker {
            AMF0_NUMBER => Amf0Value::Number(read_f64(buf)?),
            AMF0_BOOLEAN => Amf0Value::Boolean(read_u8(buf)? != 0),
            AMF0_STRING => {
                let len = read_u16(buf)?;
                Amf0Value::String(self.budget.string(take(buf, len.into())?)?)
            }
            AMF0_LONG_STRING => {
                let len = read_u32(buf)?;
                Amf0Value::String(self.budget.string(take(buf, len as usize)?)?)
            }
            AMF0_XML_DOCUMENT => {
                let len = read_u32(buf)?;
                Amf0Value::XmlDocument(self.budget.string(take(buf, len as usize)?)?)
            }
            AMF0_NULL => Amf0Value::Null,
            AMF0_UNDEFINED => Amf0Value::Undefined,
            AMF0_UNSUPPORTED => Amf0Value::Unsupported,
            AMF0_DATE => {
                let millis = read_f64(buf)?;
                let timezone = read_i16(buf)?;
                Amf0Value::Date { millis, timezone }
            }
            AMF0_REFERENCE => {
                let idx = read_u16(buf)?;
                resolve(&self.refs, &mut self.budget, idx.into())?
            }
            AMF0_OBJECT | AMF0_ECMA_ARRAY | AMF0_STRICT_ARRAY | AMF0_TYPED_OBJECT => {
                self.complex(marker, buf, depth)?
            }
            AMF0_AVMPLUS => {
                let mut amf3 = Amf3Decoder::new(&mut self.budget);
                amf3.value(buf, depth)?
            }
            other => return Err(AmfError::UnknownMarker(other)),
        })
    }

    /// Containers take a reference slot before their children (matching the encoder's
    /// numbering) and fill it once complete.
    fn complex(
        &mut self,
        marker: u8,
        buf: &mut &[u8],
        depth: usize,
    ) -> Result<Amf0Value, AmfError> {
        if depth >= MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        let slot = self.refs.len();
        self.refs.push(None);
        let start = self.budget.tree;
        let value = match marker {
            AMF0_OBJECT => Amf0Value::Object(self.properties(buf, depth, false)?),
            AMF0_ECMA_ARRAY => {
                // The count is advisory: properties run until the end marker.
                let _count = read_u32(buf)?;
                Amf0Value::EcmaArray(self.properties(buf, depth, true)?)
            }
            AMF0_TYPED_OBJECT => {
                let len = read_u16(buf)?;
                let class_name = self.budget.string(take(buf, len.into())?)?;
                let properties = self.properties(buf, depth, false)?;
                Amf0Value::TypedObject {
                    class_name,
                    properties,
                }
            }
            _ => {
                let count = read_u32(buf)?;
                let mut items = Vec::with_capacity(prealloc(count, buf.len(), 1));
                for _ in 0..count {
                    items.push(self.value(buf, depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
        };
        let cost = self.budget.tree.saturating_sub(start) + NODE_COST;
        fill(&mut self.refs, &mut self.budget, slot, &value, cost)?;
        Ok(value)
    }

    /// Reads `key value` pairs until the 0x00 0x00 0x09 end marker. With `eof_ends` (ECMA
    /// arrays), running out of input at a property boundary also ends the list, because some
    /// encoders omit the end marker in onMetaData.
    fn properties(
        &mut self,
        buf: &mut &[u8],
        depth: usize,
        eof_ends: bool,
    ) -> Result<Vec<(String, Amf0Value)>, AmfError> {
        let mut props = Vec::new();
        loop {
            if eof_ends && buf.is_empty() {
                break;
            }
            let len = read_u16(buf)?;
            if len == 0 {
                if eof_ends && buf.is_empty() {
                    break;
                }
                if let Some((&AMF0_OBJECT_END, rest)) = buf.split_first() {
                    *buf = rest;
                    break;
                }
            }
            let key = self.budget.string(take(buf, len.into())?)?;
            self.budget.charge(PROP_COST)?;
            let value = self.value(buf, depth + 1)?;
            props.push((key, value));
        }
        Ok(props)
    }
}

/// Decode all values until the buffer is empty (a command: name, transaction id, args...).
/// Reference tables are shared across the values of one message.
///
/// Unknown types are skipped safely: when a top-level value runs into an unknown or reserved
/// marker (AMF0 MovieClip 0x04, RecordSet 0x0E, stray 0x09, anything above 0x11, or an unknown
/// AMF3 marker inside a 0x11 switch) — whether at its first byte or nested inside it — the values
/// decoded before that top-level value are returned and the rest of the message is ignored,
/// since the length of an unknown type cannot be known. Every other error fails the message.
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0Value>, AmfError> {
    let mut decoder = Amf0Decoder::new();
    let mut cur = buf;
    let mut values = Vec::new();
    while !cur.is_empty() {
        match decoder.decode(&mut cur) {
            Ok(v) => values.push(v),
            Err(AmfError::UnknownMarker(_) | AmfError::UnknownAmf3Marker(_)) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(values)
}

/// Longest prefix of `s` that fits in `max` bytes without splitting a character.
pub(super) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes a u16-length-prefixed string (property keys, class names); longer strings cannot be
/// represented and are clipped to 65535 bytes at a character boundary.
pub(super) fn write_short_str(s: &str, out: &mut Vec<u8>) {
    let s = clip(s, u16::MAX as usize);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a u32-length-prefixed string, clipped to u32::MAX bytes.
pub(super) fn write_long_str(s: &str, out: &mut Vec<u8>) {
    let s = clip(s, u32::MAX as usize);
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn write_properties(props: &[(String, Amf0Value)], out: &mut Vec<u8>) {
    for (key, value) in props {
        write_short_str(key, out);
        encode(value, out);
    }
    out.extend_from_slice(&[0x00, 0x00, AMF0_OBJECT_END]);
}

/// Encode one value as AMF0 (no references are emitted). Keys and class names longer than
/// 65535 bytes are clipped, since AMF0 cannot represent them.
pub fn encode(value: &Amf0Value, out: &mut Vec<u8>) {
    match value {
        Amf0Value::Number(n) => {
            out.push(AMF0_NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0Value::Boolean(b) => out.extend_from_slice(&[AMF0_BOOLEAN, u8::from(*b)]),
        Amf0Value::String(s) => {
            if s.len() <= u16::MAX as usize {
                out.push(AMF0_STRING);
                write_short_str(s, out);
            } else {
                out.push(AMF0_LONG_STRING);
                write_long_str(s, out);
            }
        }
        Amf0Value::Object(props) => {
            out.push(AMF0_OBJECT);
            write_properties(props, out);
        }
        Amf0Value::Null => out.push(AMF0_NULL),
        Amf0Value::Undefined => out.push(AMF0_UNDEFINED),
        Amf0Value::EcmaArray(props) => {
            out.push(AMF0_ECMA_ARRAY);
            let count = u32::try_from(props.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            write_properties(props, out);
        }
        Amf0Value::StrictArray(items) => {
            out.push(AMF0_STRICT_ARRAY);
            let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for item in items.iter().take(count as usize) {
                encode(item, out);
            }
        }
        Amf0Value::Date { millis, timezone } => {
            out.push(AMF0_DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&timezone.to_be_bytes());
        }
        Amf0Value::XmlDocument(s) => {
            out.push(AMF0_XML_DOCUMENT);
            write_long_str(s, out);
        }
        Amf0Value::TypedObject {
            class_name,
            properties,
        } => {
            out.push(AMF0_TYPED_OBJECT);
            write_short_str(class_name, out);
            write_properties(properties, out);
        }
        Amf0Value::ByteArray(_) => {
            out.push(AMF0_AVMPLUS);
            encode_amf3(value, out);
        }
        Amf0Value::Unsupported => out.push(AMF0_UNSUPPORTED),
    }
}

/// Encode a sequence of values back to back (e.g. a command: name, transaction id, args...).
pub fn encode_all(values: &[Amf0Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        encode(value, &mut out);
    }
    out
}
