//! AMF3: decoder (string, object and traits reference tables) and a minimal encoder.

use std::rc::Rc;

use super::amf0::clip;
use super::read::*;
use super::{Amf0Value, AmfError, MAX_DEPTH};

pub(super) const AMF3_UNDEFINED: u8 = 0x00;
pub(super) const AMF3_NULL: u8 = 0x01;
pub(super) const AMF3_FALSE: u8 = 0x02;
pub(super) const AMF3_TRUE: u8 = 0x03;
pub(super) const AMF3_INTEGER: u8 = 0x04;
pub(super) const AMF3_DOUBLE: u8 = 0x05;
pub(super) const AMF3_STRING: u8 = 0x06;
pub(super) const AMF3_XML_DOC: u8 = 0x07;
pub(super) const AMF3_DATE: u8 = 0x08;
pub(super) const AMF3_ARRAY: u8 = 0x09;
pub(super) const AMF3_OBJECT: u8 = 0x0A;
pub(super) const AMF3_XML: u8 = 0x0B;
pub(super) const AMF3_BYTE_ARRAY: u8 = 0x0C;
pub(super) const AMF3_VECTOR_INT: u8 = 0x0D;
pub(super) const AMF3_VECTOR_UINT: u8 = 0x0E;
pub(super) const AMF3_VECTOR_DOUBLE: u8 = 0x0F;
pub(super) const AMF3_VECTOR_OBJECT: u8 = 0x10;
pub(super) const AMF3_DICTIONARY: u8 = 0x11;

/// Largest value representable in an AMF3 U29.
pub(super) const U29_MAX: u32 = 0x1FFF_FFFF;
/// AMF3 integers are signed 29-bit.
pub(super) const AMF3_INT_MIN: f64 = -268_435_456.0;
pub(super) const AMF3_INT_MAX: f64 = 268_435_455.0;

/// Trait information shared by objects of one class.
#[derive(Debug)]
pub(super) struct Traits {
    class_name: String,
    dynamic: bool,
    members: Vec<String>,
}

/// One AMF3 context: string, object and traits reference tables.
pub(super) struct Amf3Decoder<'b> {
    strings: Vec<String>,
    objects: Vec<Slot>,
    traits: Vec<Rc<Traits>>,
    budget: &'b mut Budget,
}

/// Result of reading a U29 header whose low bit selects reference vs inline.
pub(super) enum Header {
    Ref(Amf0Value),
    Inline(u32),
}

impl<'b> Amf3Decoder<'b> {
    pub(super) fn new(budget: &'b mut Budget) -> Self {
        Amf3Decoder {
            strings: Vec::new(),
            objects: Vec::new(),
            traits: Vec::new(),
            budget,
        }
    }

    /// UTF-8-vr: inline (low bit 1) or a reference into the string table. Empty strings are
    /// never added to the table.
    pub(super) fn string(&mut self, buf: &mut &[u8]) -> Result<String, AmfError> {
        let v = read_u29(buf)?;
        if v & 1 == 0 {
            let idx = v >> 1;
            let s = self
                .strings
                .get(idx as usize)
                .ok_or(AmfError::BadReference(idx))?;
            self.budget.charge(s.len())?;
            return Ok(s.clone());
        }
        let s = self.budget.string(take(buf, (v >> 1) as usize)?)?;
        if !s.is_empty() {
            self.budget.charge_table(s.len())?;
            self.strings.push(s.clone());
        }
        Ok(s)
    }

    fn header(&mut self, buf: &mut &[u8]) -> Result<Header, AmfError> {
        let v = read_u29(buf)?;
        if v & 1 == 0 {
            Ok(Header::Ref(resolve(&self.objects, self.budget, v >> 1)?))
        } else {
            Ok(Header::Inline(v >> 1))
        }
    }

    /// Reserves an object-table slot for a container about to be decoded.
    fn open(&mut self, depth: usize) -> Result<(usize, usize), AmfError> {
        if depth >= MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        self.objects.push(None);
        Ok((self.objects.len() - 1, self.budget.tree))
    }

    fn close(
        &mut self,
        (slot, start): (usize, usize),
        value: Amf0Value,
    ) -> Result<Amf0Value, AmfError> {
        let cost = self.budget.tree.saturating_sub(start) + NODE_COST;
        fill(&mut self.objects, self.budget, slot, &value, cost)?;
        Ok(value)
    }

    pub(super) fn value(&mut self, buf: &mut &[u8], depth: usize) -> Result<Amf0Value, AmfError> {
        let marker = read_u8(buf)?;
        self.budget.charge(NODE_COST)?;
        Ok(match marker {
            AMF3_UNDEFINED => Amf0Value::Undefined,
            AMF3_NULL => Amf0Value::Null,
            AMF3_FALSE => Amf0Value::Boolean(false),
            AMF3_TRUE => Amf0Value::Boolean(true),
            AMF3_INTEGER => {
                let v = read_u29(buf)?;
                // Sign-extend the 29-bit two's complement value.
                let n = ((v << 3) as i32) >> 3;
                Amf0Value::Number(f64::from(n))
            }
            AMF3_DOUBLE => Amf0Value::Number(read_f64(buf)?),
            AMF3_STRING => Amf0Value::String(self.string(buf)?),
            AMF3_XML_DOC | AMF3_XML => match self.header(buf)? {
                Header::Ref(v) => v,
                Header::Inline(len) => {
                    let slot = self.open(0)?;
                    let s = self.budget.string(take(buf, len as usize)?)?;
                    self.close(slot, Amf0Value::XmlDocument(s))?
                }
            },
            AMF3_DATE => match self.header(buf)? {
                Header::Ref(v) => v,
                Header::Inline(_) => {
                    let slot = self.open(0)?;
                    let millis = read_f64(buf)?;
                    self.close(
                        slot,
                        Amf0Value::Date {
                            millis,
                            timezone: 0,
                        },
                    )?
                }
            },
            AMF3_BYTE_ARRAY => match self.header(buf)? {
                Header::Ref(v) => v,
                Header::Inline(len) => {
                    // Slot first so the payload counts into the cost charged per reference.
                    let slot = self.open(0)?;
                    let bytes = take(buf, len as usize)?;
                    self.budget.charge(bytes.len())?;
                    self.close(slot, Amf0Value::ByteArray(bytes.to_vec()))?
                }
            },
            AMF3_ARRAY => match self.header(buf)? {
                Header::Ref(v) => v,
                Header::Inline(dense) => self.array(buf, depth, dense)?,
            },
            AMF3_OBJECT => self.object(buf, depth)?,
            AMF3_VECTOR_INT | AMF3_VECTOR_UINT | AMF3_VECTOR_DOUBLE | AMF3_VECTOR_OBJECT => {
                match self.header(buf)? {
                    Header::Ref(v) => v,
                    Header::Inline(count) => self.vector(marker, buf, depth, count)?,
                }
            }
            AMF3_DICTIONARY => match self.header(buf)? {
                Header::Ref(v) => v,
                Header::Inline(count) => self.dictionary(buf, depth, count)?,
            },
            other => return Err(AmfError::UnknownAmf3Marker(other)),
        })
    }

    /// Array: associative part (until an empty key), then `dense` values. Without an
    /// associative part it is a StrictArray; otherwise an EcmaArray with dense items first,
    /// keyed by their index.
    fn array(&mut self, buf: &mut &[u8], depth: usize, dense: u32) -> Result<Amf0Value, AmfError> {
        let slot = self.open(depth)?;
        let mut assoc = Vec::new();
        loop {
            let key = self.string(buf)?;
            if key.is_empty() {
                break;
            }
            self.budget.charge(PROP_COST)?;
            let value = self.value(buf, depth + 1)?;
            assoc.push((key, value));
        }
        let mut items = Vec::with_capacity(prealloc(dense, buf.len(), 1));
        for _ in 0..dense {
            items.push(self.value(buf, depth + 1)?);
        }
        let value = if assoc.is_empty() {
            Amf0Value::StrictArray(items)
        } else {
            let mut props = Vec::with_capacity(items.len().saturating_add(assoc.len()));
            for (i, item) in items.into_iter().enumerate() {
                let key = i.to_string();
                self.budget.charge(PROP_COST + key.len())?;
                props.push((key, item));
            }
            props.extend(assoc);
            Amf0Value::EcmaArray(props)
        };
        self.close(slot, value)
    }

    /// Object: traits (inline, by reference, or externalizable), sealed member values in trait
    /// order, then dynamic members until an empty key.
    fn object(&mut self, buf: &mut &[u8], depth: usize) -> Result<Amf0Value, AmfError> {
        let v = read_u29(buf)?;
        if v & 1 == 0 {
            return resolve(&self.objects, self.budget, v >> 1);
        }
        let slot = self.open(depth)?;
        let traits = if v & 2 == 0 {
            let idx = v >> 2;
            self.traits
                .get(idx as usize)
                .cloned()
                .ok_or(AmfError::BadReference(idx))?
        } else if v & 4 != 0 {
            let class_name = self.string(buf)?;
            return Err(AmfError::Externalizable(class_name));
        } else {
            let dynamic = v & 8 != 0;
            let count = v >> 4;
            let class_name = self.string(buf)?;
            let mut members = Vec::with_capacity(prealloc(count, buf.len(), 1));
            for _ in 0..count {
                members.push(self.string(buf)?);
            }
            let traits = Rc::new(Traits {
                class_name,
                dynamic,
                members,
            });
            self.traits.push(Rc::clone(&traits));
            traits
        };
        let mut props = Vec::with_capacity(traits.members.len().min(buf.len()).min(MAX_PREALLOC));
        for name in &traits.members {
            self.budget.charge(PROP_COST + name.len())?;
            let value = self.value(buf, depth + 1)?;
            props.push((name.clone(), value));
        }
        if traits.dynamic {
            loop {
                let key = self.string(buf)?;
                if key.is_empty() {
                    break;
                }
                self.budget.charge(PROP_COST)?;
                let value = self.value(buf, depth + 1)?;
                props.push((key, value));
            }
        }
        let value = if traits.class_name.is_empty() {
            Amf0Value::Object(props)
        } else {
            self.budget.charge(traits.class_name.len())?;
            Amf0Value::TypedObject {
                class_name: traits.class_name.clone(),
                properties: props,
            }
        };
        self.close(slot, value)
    }

    /// Vectors of int/uint/double/object all become a StrictArray of the items.
    fn vector(
        &mut self,
        marker: u8,
        buf: &mut &[u8],
        depth: usize,
        count: u32,
    ) -> Result<Amf0Value, AmfError> {
        let slot = self.open(depth)?;
        let _fixed = read_u8(buf)?;
        let elem_size = match marker {
            AMF3_VECTOR_INT | AMF3_VECTOR_UINT => 4,
            AMF3_VECTOR_DOUBLE => 8,
            _ => {
                let _type_name = self.string(buf)?;
                1
            }
        };
        let mut items = Vec::with_capacity(prealloc(count, buf.len(), elem_size));
        for _ in 0..count {
            let item = match marker {
                AMF3_VECTOR_INT => {
                    self.budget.charge(NODE_COST)?;
                    Amf0Value::Number(f64::from(i32::from_be_bytes(read_array(buf)?)))
                }
                AMF3_VECTOR_UINT => {
                    self.budget.charge(NODE_COST)?;
                    Amf0Value::Number(f64::from(read_u32(buf)?))
                }
                AMF3_VECTOR_DOUBLE => {
                    self.budget.charge(NODE_COST)?;
                    Amf0Value::Number(read_f64(buf)?)
                }
                _ => self.value(buf, depth + 1)?,
            };
            items.push(item);
        }
        self.close(slot, Amf0Value::StrictArray(items))
    }

    /// Dictionary: `count` key/value pairs; keys must be stringifiable primitives.
    fn dictionary(
        &mut self,
        buf: &mut &[u8],
        depth: usize,
        count: u32,
    ) -> Result<Amf0Value, AmfError> {
        let slot = self.open(depth)?;
        let _weak_keys = read_u8(buf)?;
        let mut props = Vec::with_capacity(prealloc(count, buf.len(), 2));
        for _ in 0..count {
            let key = match self.value(buf, depth + 1)? {
                Amf0Value::String(s) => s,
                Amf0Value::Number(n) => number_key(n),
                Amf0Value::Boolean(b) => b.to_string(),
                Amf0Value::Null => "null".to_owned(),
                Amf0Value::Undefined => "undefined".to_owned(),
                _ => return Err(AmfError::UnsupportedDictionaryKey),
            };
            self.budget.charge(PROP_COST + key.len())?;
            let value = self.value(buf, depth + 1)?;
            props.push((key, value));
        }
        self.close(slot, Amf0Value::EcmaArray(props))
    }
}

/// Formats a numeric dictionary key the way ActionScript would for integral values ("1", not
/// "1.0").
pub(super) fn number_key(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Decode an AMF3 value (used by the 0x11 marker and exposed for tests/fuzzing), with fresh
/// reference tables and the default memory budget. `buf` is advanced only on success.
pub fn decode_amf3(buf: &mut &[u8]) -> Result<Amf0Value, AmfError> {
    let mut budget = Budget::default();
    let mut decoder = Amf3Decoder::new(&mut budget);
    let mut cur = *buf;
    let value = decoder.value(&mut cur, 0)?;
    *buf = cur;
    Ok(value)
}

pub(super) fn write_u29(v: u32, out: &mut Vec<u8>) {
    let v = v & U29_MAX;
    if v < 0x80 {
        out.push(v as u8);
    } else if v < 0x4000 {
        out.extend_from_slice(&[(v >> 7) as u8 | 0x80, (v & 0x7F) as u8]);
    } else if v < 0x20_0000 {
        out.extend_from_slice(&[
            (v >> 14) as u8 | 0x80,
            ((v >> 7) & 0x7F) as u8 | 0x80,
            (v & 0x7F) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            (v >> 22) as u8 | 0x80,
            ((v >> 15) & 0x7F) as u8 | 0x80,
            ((v >> 8) & 0x7F) as u8 | 0x80,
            (v & 0xFF) as u8,
        ]);
    }
}

/// Largest length/count that fits in a U29 header next to its flag bits.
pub(super) fn u29_len(len: usize, flag_bits: u32) -> u32 {
    u32::try_from(len)
        .unwrap_or(u32::MAX)
        .min(U29_MAX >> flag_bits)
}

/// Inline AMF3 string (never a reference), clipped to the U29 length limit.
pub(super) fn write_amf3_str(s: &str, out: &mut Vec<u8>) {
    let s = clip(s, (U29_MAX >> 1) as usize);
    write_u29(((s.len() as u32) << 1) | 1, out);
    out.extend_from_slice(s.as_bytes());
}

/// Object with sealed traits holding every property, so that any key (even "") round-trips.
pub(super) fn write_amf3_object(
    class_name: &str,
    props: &[(String, Amf0Value)],
    out: &mut Vec<u8>,
) {
    out.push(AMF3_OBJECT);
    let count = u29_len(props.len(), 4);
    write_u29((count << 4) | 0b0011, out);
    write_amf3_str(class_name, out);
    let props = props.get(..count as usize).unwrap_or(props);
    for (key, _) in props {
        write_amf3_str(key, out);
    }
    for (_, value) in props {
        encode_amf3(value, out);
    }
}

/// Minimal AMF3 encoder without reference tables (no references are emitted), for tests and
/// for AMF0's ByteArray. Lossy spots, by necessity of the format: integral numbers within 29
/// bits use the integer type; Date timezones are dropped; `Unsupported` is written as undefined;
/// EcmaArray becomes an array with only an associative part, so an empty one decodes as an
/// empty StrictArray and empty keys (the terminator) are skipped; lengths beyond U29 are clipped.
pub fn encode_amf3(value: &Amf0Value, out: &mut Vec<u8>) {
    match value {
        Amf0Value::Number(n) => {
            let n = *n;
            let integral = n.fract() == 0.0
                && (AMF3_INT_MIN..=AMF3_INT_MAX).contains(&n)
                && !(n == 0.0 && n.is_sign_negative());
            if integral {
                out.push(AMF3_INTEGER);
                write_u29((n as i32) as u32 & U29_MAX, out);
            } else {
                out.push(AMF3_DOUBLE);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Amf0Value::Boolean(b) => out.push(if *b { AMF3_TRUE } else { AMF3_FALSE }),
        Amf0Value::String(s) => {
            out.push(AMF3_STRING);
            write_amf3_str(s, out);
        }
        Amf0Value::Object(props) => write_amf3_object("", props, out),
        Amf0Value::TypedObject {
            class_name,
            properties,
        } => write_amf3_object(class_name, properties, out),
        Amf0Value::Null => out.push(AMF3_NULL),
        Amf0Value::Undefined | Amf0Value::Unsupported => out.push(AMF3_UNDEFINED),
        Amf0Value::EcmaArray(props) => {
            out.push(AMF3_ARRAY);
            write_u29(1, out); // dense count 0, inline
            for (key, value) in props.iter().filter(|(k, _)| !k.is_empty()) {
                write_amf3_str(key, out);
                encode_amf3(value, out);
            }
            write_u29(1, out); // empty key ends the associative part
        }
        Amf0Value::StrictArray(items) => {
            out.push(AMF3_ARRAY);
            let count = u29_len(items.len(), 1);
            write_u29((count << 1) | 1, out);
            write_u29(1, out);
            for item in items.iter().take(count as usize) {
                encode_amf3(item, out);
            }
        }
        Amf0Value::Date { millis, .. } => {
            out.push(AMF3_DATE);
            write_u29(1, out);
            out.extend_from_slice(&millis.to_be_bytes());
        }
        Amf0Value::XmlDocument(s) => {
            out.push(AMF3_XML_DOC);
            write_amf3_str(s, out);
        }
        Amf0Value::ByteArray(bytes) => {
            out.push(AMF3_BYTE_ARRAY);
            let len = u29_len(bytes.len(), 1);
            write_u29((len << 1) | 1, out);
            out.extend_from_slice(bytes.get(..len as usize).unwrap_or(bytes));
        }
    }
}
