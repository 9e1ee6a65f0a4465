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

use std::rc::Rc;

/// Maximum container nesting (objects, arrays, vectors, dictionaries) accepted by the decoders.
pub const MAX_DEPTH: usize = 64;

/// Default cap on the estimated memory of everything one decoder materialises.
pub const DEFAULT_MEMORY_LIMIT: usize = 16 << 20;

/// Approximate memory charged per decoded value node.
const NODE_COST: usize = std::mem::size_of::<Amf0Value>();
/// Approximate memory charged per property (key + value slot), on top of the value itself.
const PROP_COST: usize = std::mem::size_of::<(String, Amf0Value)>();
/// Upper bound on capacity reserved up front from any declared count.
const MAX_PREALLOC: usize = 1024;

const AMF0_NUMBER: u8 = 0x00;
const AMF0_BOOLEAN: u8 = 0x01;
const AMF0_STRING: u8 = 0x02;
const AMF0_OBJECT: u8 = 0x03;
const AMF0_NULL: u8 = 0x05;
const AMF0_UNDEFINED: u8 = 0x06;
const AMF0_REFERENCE: u8 = 0x07;
const AMF0_ECMA_ARRAY: u8 = 0x08;
const AMF0_OBJECT_END: u8 = 0x09;
const AMF0_STRICT_ARRAY: u8 = 0x0A;
const AMF0_DATE: u8 = 0x0B;
const AMF0_LONG_STRING: u8 = 0x0C;
const AMF0_UNSUPPORTED: u8 = 0x0D;
const AMF0_XML_DOCUMENT: u8 = 0x0F;
const AMF0_TYPED_OBJECT: u8 = 0x10;
const AMF0_AVMPLUS: u8 = 0x11;

const AMF3_UNDEFINED: u8 = 0x00;
const AMF3_NULL: u8 = 0x01;
const AMF3_FALSE: u8 = 0x02;
const AMF3_TRUE: u8 = 0x03;
const AMF3_INTEGER: u8 = 0x04;
const AMF3_DOUBLE: u8 = 0x05;
const AMF3_STRING: u8 = 0x06;
const AMF3_XML_DOC: u8 = 0x07;
const AMF3_DATE: u8 = 0x08;
const AMF3_ARRAY: u8 = 0x09;
const AMF3_OBJECT: u8 = 0x0A;
const AMF3_XML: u8 = 0x0B;
const AMF3_BYTE_ARRAY: u8 = 0x0C;
const AMF3_VECTOR_INT: u8 = 0x0D;
const AMF3_VECTOR_UINT: u8 = 0x0E;
const AMF3_VECTOR_DOUBLE: u8 = 0x0F;
const AMF3_VECTOR_OBJECT: u8 = 0x10;
const AMF3_DICTIONARY: u8 = 0x11;

/// Largest value representable in an AMF3 U29.
const U29_MAX: u32 = 0x1FFF_FFFF;
/// AMF3 integers are signed 29-bit.
const AMF3_INT_MIN: f64 = -268_435_456.0;
const AMF3_INT_MAX: f64 = 268_435_455.0;

/// A decoded AMF value. AMF3 values are mapped onto this type as well.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    /// AMF0 string and long string both decode here; the encoder picks long string (0x0C) when
    /// the UTF-8 length exceeds 0xFFFF.
    String(String),
    /// Anonymous object, properties in wire order.
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    /// Associative array; the encoder writes the u32 count as `len`.
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    Date {
        millis: f64,
        timezone: i16,
    },
    XmlDocument(String),
    TypedObject {
        class_name: String,
        properties: Vec<(String, Amf0Value)>,
    },
    /// Only produced from AMF3 byte arrays; the AMF0 encoder writes it as an AMF3-switched value
    /// (0x11 marker followed by an AMF3 byte array).
    ByteArray(Vec<u8>),
    /// AMF0 0x0D "unsupported" marker.
    Unsupported,
}

impl Amf0Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// Properties of an Object / EcmaArray / TypedObject, in wire order.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            Amf0Value::TypedObject { properties, .. } => Some(properties),
            _ => None,
        }
    }

    /// Property lookup on Object / EcmaArray / TypedObject (first match wins on duplicates).
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// True for both AMF null and undefined, which RTMP peers use interchangeably.
    pub fn is_null_or_undefined(&self) -> bool {
        matches!(self, Amf0Value::Null | Amf0Value::Undefined)
    }
}

/// Errors from decoding AMF0/AMF3.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AmfError {
    #[error("unexpected end of AMF input")]
    Truncated,
    /// Reserved or unknown AMF0 type (MovieClip, RecordSet, a stray object-end, >0x11): the
    /// length of such a value is unknowable, so decoding cannot continue past it.
    #[error("unknown or unsupported AMF0 marker 0x{0:02x}")]
    UnknownMarker(u8),
    #[error("unknown AMF3 marker 0x{0:02x}")]
    UnknownAmf3Marker(u8),
    #[error("AMF nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("AMF reference {0} out of range")]
    BadReference(u32),
    /// A reference to a container that is still being decoded (a cycle): not representable as
    /// a tree of values.
    #[error("circular AMF reference {0}")]
    CircularReference(u32),
    #[error("decoded AMF data exceeds the memory budget")]
    TooLarge,
    #[error("AMF3 externalizable object of class {0:?} cannot be decoded")]
    Externalizable(String),
    #[error("AMF3 dictionary key cannot be turned into a string")]
    UnsupportedDictionaryKey,
}

// ---------------------------------------------------------------------------------------------
// Byte reading helpers: all bounds-checked, none panics.

fn read_u8(buf: &mut &[u8]) -> Result<u8, AmfError> {
    let (&b, rest) = buf.split_first().ok_or(AmfError::Truncated)?;
    *buf = rest;
    Ok(b)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], AmfError> {
    if buf.len() < n {
        return Err(AmfError::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn read_array<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], AmfError> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(buf, N)?);
    Ok(out)
}

fn read_u16(buf: &mut &[u8]) -> Result<u16, AmfError> {
    Ok(u16::from_be_bytes(read_array(buf)?))
}

fn read_i16(buf: &mut &[u8]) -> Result<i16, AmfError> {
    Ok(i16::from_be_bytes(read_array(buf)?))
}

fn read_u32(buf: &mut &[u8]) -> Result<u32, AmfError> {
    Ok(u32::from_be_bytes(read_array(buf)?))
}

fn read_f64(buf: &mut &[u8]) -> Result<f64, AmfError> {
    Ok(f64::from_be_bytes(read_array(buf)?))
}

/// AMF3 variable-length 29-bit unsigned integer: up to three 7-bit groups with a continuation
/// bit, then a full 8-bit final byte.
fn read_u29(buf: &mut &[u8]) -> Result<u32, AmfError> {
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
fn prealloc(declared: u32, remaining: usize, min_size: usize) -> usize {
    (declared as usize)
        .min(remaining / min_size.max(1))
        .min(MAX_PREALLOC)
}

/// Tracks the estimated memory materialised by one decoder.
#[derive(Debug, Clone)]
struct Budget {
    /// Everything charged so far: value trees plus reference-table copies.
    used: usize,
    /// Only the value trees; deltas of this measure a container's own size, so table copies of
    /// nested containers are not counted again into their parents (which would double per level).
    tree: usize,
    limit: usize,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Budget {
            used: 0,
            tree: 0,
            limit,
        }
    }

    /// Charges memory that becomes part of the decoded value tree.
    fn charge(&mut self, n: usize) -> Result<(), AmfError> {
        self.tree = self.tree.saturating_add(n);
        self.charge_table(n)
    }

    /// Charges memory held only by a reference table.
    fn charge_table(&mut self, n: usize) -> Result<(), AmfError> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            Err(AmfError::TooLarge)
        } else {
            Ok(())
        }
    }

    fn string(&mut self, bytes: &[u8]) -> Result<String, AmfError> {
        self.charge(bytes.len())?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Reference-table slot: `None` while the container is still being decoded, then the finished
/// value and the memory it cost (charged again each time the reference is copied).
type Slot = Option<(Amf0Value, usize)>;

fn resolve(table: &[Slot], budget: &mut Budget, idx: u32) -> Result<Amf0Value, AmfError> {
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
fn fill(
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

// ---------------------------------------------------------------------------------------------
// AMF0 decoding

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

    fn value(&mut self, buf: &mut &[u8], depth: usize) -> Result<Amf0Value, AmfError> {
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

impl Default for Budget {
    fn default() -> Self {
        Budget::new(DEFAULT_MEMORY_LIMIT)
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

// ---------------------------------------------------------------------------------------------
// AMF3 decoding

/// Trait information shared by objects of one class.
#[derive(Debug)]
struct Traits {
    class_name: String,
    dynamic: bool,
    members: Vec<String>,
}

/// One AMF3 context: string, object and traits reference tables.
struct Amf3Decoder<'b> {
    strings: Vec<String>,
    objects: Vec<Slot>,
    traits: Vec<Rc<Traits>>,
    budget: &'b mut Budget,
}

/// Result of reading a U29 header whose low bit selects reference vs inline.
enum Header {
    Ref(Amf0Value),
    Inline(u32),
}

impl<'b> Amf3Decoder<'b> {
    fn new(budget: &'b mut Budget) -> Self {
        Amf3Decoder {
            strings: Vec::new(),
            objects: Vec::new(),
            traits: Vec::new(),
            budget,
        }
    }

    /// UTF-8-vr: inline (low bit 1) or a reference into the string table. Empty strings are
    /// never added to the table.
    fn string(&mut self, buf: &mut &[u8]) -> Result<String, AmfError> {
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

    fn value(&mut self, buf: &mut &[u8], depth: usize) -> Result<Amf0Value, AmfError> {
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
fn number_key(n: f64) -> String {
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

// ---------------------------------------------------------------------------------------------
// Encoding

/// Longest prefix of `s` that fits in `max` bytes without splitting a character.
fn clip(s: &str, max: usize) -> &str {
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
fn write_short_str(s: &str, out: &mut Vec<u8>) {
    let s = clip(s, u16::MAX as usize);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a u32-length-prefixed string, clipped to u32::MAX bytes.
fn write_long_str(s: &str, out: &mut Vec<u8>) {
    let s = clip(s, u32::MAX as usize);
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_properties(props: &[(String, Amf0Value)], out: &mut Vec<u8>) {
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

fn write_u29(v: u32, out: &mut Vec<u8>) {
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
fn u29_len(len: usize, flag_bits: u32) -> u32 {
    u32::try_from(len)
        .unwrap_or(u32::MAX)
        .min(U29_MAX >> flag_bits)
}

/// Inline AMF3 string (never a reference), clipped to the U29 length limit.
fn write_amf3_str(s: &str, out: &mut Vec<u8>) {
    let s = clip(s, (U29_MAX >> 1) as usize);
    write_u29(((s.len() as u32) << 1) | 1, out);
    out.extend_from_slice(s.as_bytes());
}

/// Object with sealed traits holding every property, so that any key (even "") round-trips.
fn write_amf3_object(class_name: &str, props: &[(String, Amf0Value)], out: &mut Vec<u8>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &str) -> Amf0Value {
        Amf0Value::String(v.to_owned())
    }

    fn num(n: f64) -> Amf0Value {
        Amf0Value::Number(n)
    }

    fn props(list: &[(&str, Amf0Value)]) -> Vec<(String, Amf0Value)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// `connect` as sent by ffmpeg / OBS (FMLE-style flashVer), byte for byte.
    const CONNECT: &[u8] = b"\x02\x00\x07connect\
\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\
\x03\
\x00\x03app\x02\x00\x04live\
\x00\x04type\x02\x00\x0anonprivate\
\x00\x08flashVer\x02\x00\x1fFMLE/3.0 (compatible; FMSc/1.0)\
\x00\x05tcUrl\x02\x00\x1artmp://localhost:1935/live\
\x00\x00\x09";

    fn connect_values() -> Vec<Amf0Value> {
        vec![
            s("connect"),
            num(1.0),
            Amf0Value::Object(props(&[
                ("app", s("live")),
                ("type", s("nonprivate")),
                ("flashVer", s("FMLE/3.0 (compatible; FMSc/1.0)")),
                ("tcUrl", s("rtmp://localhost:1935/live")),
            ])),
        ]
    }

    #[test]
    fn connect_command_decodes_and_encodes_exactly() {
        let values = decode_all(CONNECT).unwrap();
        assert_eq!(values, connect_values());
        assert_eq!(
            values[2].get("app").and_then(Amf0Value::as_str),
            Some("live")
        );
        assert_eq!(values[1].as_f64(), Some(1.0));
        assert_eq!(values[2].get("missing"), None);
        assert_eq!(encode_all(&connect_values()), CONNECT);
    }

    #[test]
    fn scalar_encodings() {
        let cases: Vec<(Amf0Value, &[u8])> = vec![
            (num(0.0), b"\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
            (num(-2.5), b"\x00\xc0\x04\x00\x00\x00\x00\x00\x00"),
            (Amf0Value::Boolean(true), b"\x01\x01"),
            (Amf0Value::Boolean(false), b"\x01\x00"),
            (s(""), b"\x02\x00\x00"),
            (s("é"), b"\x02\x00\x02\xc3\xa9"),
            (Amf0Value::Null, b"\x05"),
            (Amf0Value::Undefined, b"\x06"),
            (Amf0Value::Unsupported, b"\x0d"),
            (
                Amf0Value::XmlDocument("<a/>".into()),
                b"\x0f\x00\x00\x00\x04<a/>",
            ),
            (
                Amf0Value::Date {
                    millis: 1.0,
                    timezone: -60,
                },
                b"\x0b\x3f\xf0\x00\x00\x00\x00\x00\x00\xff\xc4",
            ),
            (
                Amf0Value::StrictArray(vec![num(1.0), Amf0Value::Null]),
                b"\x0a\x00\x00\x00\x02\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x05",
            ),
            (
                Amf0Value::TypedObject {
                    class_name: "C".into(),
                    properties: props(&[("x", Amf0Value::Boolean(true))]),
                },
                b"\x10\x00\x01C\x00\x01x\x01\x01\x00\x00\x09",
            ),
            (
                Amf0Value::ByteArray(vec![1, 2, 3]),
                b"\x11\x0c\x07\x01\x02\x03",
            ),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            encode(&value, &mut out);
            assert_eq!(out, bytes, "encoding {value:?}");
            let mut cur = bytes;
            assert_eq!(Amf0Decoder::new().decode(&mut cur).unwrap(), value);
            assert!(cur.is_empty());
        }
    }

    #[test]
    fn long_strings() {
        let long = "x".repeat(0x1_0000);
        let mut out = Vec::new();
        encode(&s(&long), &mut out);
        assert_eq!(&out[..5], b"\x0c\x00\x01\x00\x00");
        assert_eq!(out.len(), 5 + 0x1_0000);
        assert_eq!(decode_all(&out).unwrap(), vec![s(&long)]);

        let max_short = "y".repeat(0xFFFF);
        out.clear();
        encode(&s(&max_short), &mut out);
        assert_eq!(&out[..3], b"\x02\xff\xff");

        // A short string sent as a long string still decodes as a String.
        assert_eq!(
            decode_all(b"\x0c\x00\x00\x00\x02hi").unwrap(),
            vec![s("hi")]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        assert_eq!(
            decode_all(b"\x02\x00\x02a\xff").unwrap(),
            vec![s("a\u{fffd}")]
        );
    }

    #[test]
    fn references_resolve_to_earlier_complex_values() {
        // [ {a: 1}, [ref 0], ref 1 ]
        let bytes = b"\x03\x00\x01a\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x00\x00\x09\
\x0a\x00\x00\x00\x01\x07\x00\x00\
\x07\x00\x01";
        let obj = Amf0Value::Object(props(&[("a", num(1.0))]));
        let arr = Amf0Value::StrictArray(vec![obj.clone()]);
        assert_eq!(decode_all(bytes).unwrap(), vec![obj, arr.clone(), arr]);
    }

    #[test]
    fn reference_numbering_counts_parents_before_children() {
        // {inner: {b: true}, again: ref 1}: outer is slot 0, inner is slot 1.
        let bytes = b"\x03\x00\x05inner\x03\x00\x01b\x01\x01\x00\x00\x09\x00\x05again\x07\x00\x01\x00\x00\x09";
        let inner = Amf0Value::Object(props(&[("b", Amf0Value::Boolean(true))]));
        let expected = Amf0Value::Object(props(&[("inner", inner.clone()), ("again", inner)]));
        assert_eq!(decode_all(bytes).unwrap(), vec![expected]);
    }

    #[test]
    fn bad_and_circular_references() {
        assert_eq!(decode_all(b"\x07\x00\x00"), Err(AmfError::BadReference(0)));
        // Object whose property refers to itself.
        assert_eq!(
            decode_all(b"\x03\x00\x01a\x07\x00\x00\x00\x00\x09"),
            Err(AmfError::CircularReference(0))
        );
    }

    #[test]
    fn reference_bomb_hits_memory_budget() {
        // Level 0: [long string]; level i: [ref i-1, ref i-1] — doubles per 11 bytes of input.
        let mut bytes = b"\x0a\x00\x00\x00\x01\x02\xff\xff".to_vec();
        bytes.extend(std::iter::repeat_n(b'z', 0xFFFF));
        for i in 1u16..40 {
            bytes.extend_from_slice(b"\x0a\x00\x00\x00\x02\x07");
            bytes.extend_from_slice(&(i - 1).to_be_bytes());
            bytes.push(0x07);
            bytes.extend_from_slice(&(i - 1).to_be_bytes());
        }
        assert_eq!(decode_all(&bytes), Err(AmfError::TooLarge));
        // A tight budget is honoured as well.
        let mut small = Amf0Decoder::with_memory_limit(1000);
        let mut cur = &bytes[..];
        assert_eq!(small.decode(&mut cur), Err(AmfError::TooLarge));
    }

    #[test]
    fn amf3_byte_array_reference_bomb_hits_memory_budget() {
        // [bytes(60000), ref 1, ref 1, ...]: 2 input bytes per 60 KB copy.
        let refs = 2000u32;
        let mut bytes = vec![AMF3_ARRAY];
        write_u29(((refs + 1) << 1) | 1, &mut bytes);
        bytes.push(0x01);
        bytes.push(AMF3_BYTE_ARRAY);
        write_u29((60_000 << 1) | 1, &mut bytes);
        bytes.extend(std::iter::repeat_n(0xAB, 60_000));
        for _ in 0..refs {
            bytes.extend_from_slice(&[AMF3_BYTE_ARRAY, 0x02]);
        }
        assert_eq!(decode_amf3(&mut &bytes[..]), Err(AmfError::TooLarge));
        // The same shape with few references is fine, and references copy the bytes.
        let mut few = vec![
            AMF3_ARRAY,
            0x05,
            0x01,
            AMF3_BYTE_ARRAY,
            0x05,
            1,
            2,
            AMF3_BYTE_ARRAY,
            0x02,
        ];
        let expected = Amf0Value::StrictArray(vec![Amf0Value::ByteArray(vec![1, 2]); 2]);
        assert_eq!(decode_amf3(&mut &few[..]), Ok(expected));
        few[8] = 0x00; // reference to the still-open array itself
        assert_eq!(
            decode_amf3(&mut &few[..]),
            Err(AmfError::CircularReference(0))
        );
    }

    #[test]
    fn ecma_array_with_and_without_end_marker() {
        let with_end = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x02\
\x00\x08duration\x00\x00\x00\x00\x00\x00\x00\x00\x00\
\x00\x05width\x00\x40\x9e\x00\x00\x00\x00\x00\x00\
\x00\x00\x09";
        let expected = vec![
            s("onMetaData"),
            Amf0Value::EcmaArray(props(&[("duration", num(0.0)), ("width", num(1920.0))])),
        ];
        assert_eq!(decode_all(with_end).unwrap(), expected);
        assert_eq!(encode_all(&expected), with_end.to_vec());
        // Missing end marker at end of buffer, and an advisory count that is wrong.
        let mut no_end = with_end[..with_end.len() - 3].to_vec();
        no_end[17] = 7;
        assert_eq!(decode_all(&no_end).unwrap(), expected);
        // Only "00 00" of the end marker present.
        assert_eq!(
            decode_all(&with_end[..with_end.len() - 1]).unwrap(),
            expected
        );
        // A plain object still needs its end marker.
        assert_eq!(decode_all(b"\x03\x00\x01a\x05"), Err(AmfError::Truncated));
        // ...and an ECMA array cut mid-property is still an error.
        assert_eq!(
            decode_all(&with_end[..with_end.len() - 5]),
            Err(AmfError::Truncated)
        );
    }

    #[test]
    fn empty_key_is_not_confused_with_end_marker() {
        let value = Amf0Value::Object(props(&[("", num(2.0)), ("k", Amf0Value::Null)]));
        let bytes = encode_all(std::slice::from_ref(&value));
        assert_eq!(&bytes[..4], b"\x03\x00\x00\x00");
        assert_eq!(decode_all(&bytes).unwrap(), vec![value]);
    }

    #[test]
    fn unknown_markers() {
        for marker in [0x04u8, 0x09, 0x0E, 0x12, 0xFF] {
            let mut cur: &[u8] = &[marker, 0, 0];
            assert_eq!(
                Amf0Decoder::new().decode(&mut cur),
                Err(AmfError::UnknownMarker(marker))
            );
            assert_eq!(cur.len(), 3, "buffer untouched on error");
        }
        // decode_all keeps what came before, at top level...
        let mut bytes = b"\x02\x00\x04play\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        bytes.extend_from_slice(b"\x04\x05\x05");
        assert_eq!(decode_all(&bytes).unwrap(), vec![s("play"), num(0.0)]);
        // ...and when the unknown marker is nested inside a top-level value.
        let mut nested = b"\x05".to_vec();
        nested.extend_from_slice(b"\x03\x00\x01a\x0e\x00\x00\x09\x05");
        assert_eq!(decode_all(&nested).unwrap(), vec![Amf0Value::Null]);
        // Unknown AMF3 marker inside a 0x11 switch is handled the same way.
        assert_eq!(decode_all(b"\x05\x11\x20").unwrap(), vec![Amf0Value::Null]);
    }

    #[test]
    fn truncation_at_every_prefix_errors() {
        let nested = Amf0Value::Object(props(&[
            ("s", s("hello")),
            ("n", num(3.5)),
            (
                "e",
                Amf0Value::EcmaArray(props(&[("k", Amf0Value::Boolean(true))])),
            ),
            ("a", Amf0Value::StrictArray(vec![Amf0Value::Null, s("x")])),
            (
                "d",
                Amf0Value::Date {
                    millis: 5.0,
                    timezone: 0,
                },
            ),
            (
                "t",
                Amf0Value::TypedObject {
                    class_name: "T".into(),
                    properties: vec![],
                },
            ),
            ("x", Amf0Value::XmlDocument("<x/>".into())),
            ("b", Amf0Value::ByteArray(vec![9; 4])),
            ("o3", Amf0Value::Undefined),
        ]));
        let mut bytes = Vec::new();
        encode(&nested, &mut bytes);
        for len in 0..bytes.len() {
            let mut cur = &bytes[..len];
            assert!(
                Amf0Decoder::new().decode(&mut cur).is_err(),
                "prefix {len} decoded"
            );
        }
        let mut cur = &bytes[..];
        assert_eq!(Amf0Decoder::new().decode(&mut cur).unwrap(), nested);

        // Long string: cut in the header and in the body.
        let mut long = Vec::new();
        encode(&s(&"L".repeat(70_000)), &mut long);
        for len in (1..8).chain([long.len() - 1]) {
            assert_eq!(
                decode_all(&long[..len]),
                Err(AmfError::Truncated),
                "prefix {len}"
            );
        }

        // decode_all on prefixes: an error or strictly fewer values, never a panic.
        for len in 0..CONNECT.len() {
            if let Ok(values) = decode_all(&CONNECT[..len]) {
                assert!(values.len() < 3 && connect_values().starts_with(&values));
            }
        }
    }

    #[test]
    fn depth_bomb_is_rejected() {
        let amf0 = b"\x0a\x00\x00\x00\x01".repeat(100_000);
        assert_eq!(decode_all(&amf0), Err(AmfError::TooDeep));
        let objects = b"\x03\x00\x01a".repeat(100_000);
        assert_eq!(decode_all(&objects), Err(AmfError::TooDeep));
        let amf3 = b"\x09\x03\x01".repeat(100_000);
        assert_eq!(decode_amf3(&mut &amf3[..]), Err(AmfError::TooDeep));
        // Switching to AMF3 does not reset the depth.
        let mut mixed = b"\x0a\x00\x00\x00\x01".repeat(40);
        mixed.push(0x11);
        mixed.extend(b"\x09\x03\x01".repeat(40));
        assert_eq!(decode_all(&mixed), Err(AmfError::TooDeep));
        // Exactly MAX_DEPTH levels is fine.
        let mut ok = b"\x0a\x00\x00\x00\x01".repeat(MAX_DEPTH);
        ok.push(0x05);
        assert_eq!(decode_all(&ok).map(|v| v.len()), Ok(1));
        let mut too_deep = b"\x0a\x00\x00\x00\x01".repeat(MAX_DEPTH + 1);
        too_deep.push(0x05);
        assert_eq!(decode_all(&too_deep), Err(AmfError::TooDeep));
    }

    #[test]
    fn huge_declared_counts_do_not_allocate() {
        assert_eq!(
            decode_all(b"\x0a\xff\xff\xff\xff\x05"),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_all(b"\x0c\xff\xff\xff\xff"),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_amf3(&mut &b"\x09\xff\xff\xff\xff\x01"[..]),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_amf3(&mut &b"\x0d\xff\xff\xff\xff\x00"[..]),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_amf3(&mut &b"\x0a\xff\xff\xff\xfb\x01"[..]),
            Err(AmfError::Truncated)
        );
    }

    fn amf3(bytes: &[u8]) -> Result<Amf0Value, AmfError> {
        let mut cur = bytes;
        let v = decode_amf3(&mut cur)?;
        assert!(cur.is_empty(), "trailing bytes after {v:?}");
        Ok(v)
    }

    #[test]
    fn amf3_integers_and_u29() {
        let cases: &[(&[u8], f64)] = &[
            (b"\x04\x00", 0.0),
            (b"\x04\x7f", 127.0),
            (b"\x04\x81\x00", 128.0),
            (b"\x04\xff\x7f", 16383.0),
            (b"\x04\x81\x80\x00", 16384.0),
            (b"\x04\xbf\xff\xff\xff", 268_435_455.0),
            (b"\x04\xc0\x80\x80\x00", -268_435_456.0),
            (b"\x04\xff\xff\xff\xff", -1.0),
        ];
        for (bytes, n) in cases {
            assert_eq!(amf3(bytes).unwrap(), num(*n), "{bytes:?}");
            let mut out = Vec::new();
            encode_amf3(&num(*n), &mut out);
            assert_eq!(&out, bytes);
        }
        assert_eq!(
            amf3(b"\x05\x3f\xf8\x00\x00\x00\x00\x00\x00").unwrap(),
            num(1.5)
        );
        // Out-of-range and -0.0 integers fall back to doubles.
        let mut out = Vec::new();
        encode_amf3(&num(268_435_456.0), &mut out);
        encode_amf3(&num(-0.0), &mut out);
        assert_eq!(out[0], AMF3_DOUBLE);
        assert_eq!(out[9], AMF3_DOUBLE);
    }

    #[test]
    fn amf3_simple_markers() {
        assert_eq!(amf3(b"\x00").unwrap(), Amf0Value::Undefined);
        assert_eq!(amf3(b"\x01").unwrap(), Amf0Value::Null);
        assert_eq!(amf3(b"\x02").unwrap(), Amf0Value::Boolean(false));
        assert_eq!(amf3(b"\x03").unwrap(), Amf0Value::Boolean(true));
        assert_eq!(amf3(b"\x06\x07abc").unwrap(), s("abc"));
        assert_eq!(
            amf3(b"\x07\x07<a>").unwrap(),
            Amf0Value::XmlDocument("<a>".into())
        );
        assert_eq!(
            amf3(b"\x0b\x07<b>").unwrap(),
            Amf0Value::XmlDocument("<b>".into())
        );
        assert_eq!(
            amf3(b"\x08\x01\x42\x70\x00\x00\x00\x00\x00\x00").unwrap(),
            Amf0Value::Date {
                millis: 2f64.powi(40),
                timezone: 0
            }
        );
        assert_eq!(
            amf3(b"\x0c\x05\xaa\xbb").unwrap(),
            Amf0Value::ByteArray(vec![0xaa, 0xbb])
        );
        assert_eq!(amf3(b"\x12"), Err(AmfError::UnknownAmf3Marker(0x12)));
    }

    #[test]
    fn amf3_string_references() {
        // Dynamic anonymous object {a: "x", b: "x"}; the second "x" is string ref 1
        // (table: "a"=0, "x"=1, "b"=2). Empty class name is not added to the table.
        let bytes = b"\x0a\x0b\x01\x03a\x06\x03x\x03b\x06\x02\x01";
        let expected = Amf0Value::Object(props(&[("a", s("x")), ("b", s("x"))]));
        assert_eq!(amf3(bytes).unwrap(), expected);
        assert_eq!(amf3(b"\x06\x02"), Err(AmfError::BadReference(1)));
    }

    #[test]
    fn amf3_traits_and_object_references() {
        // [Foo{x: 1}, Foo{x: 2} via traits ref 0, ref to object 1]
        let bytes = b"\x09\x07\x01\
\x0a\x13\x07Foo\x03x\x04\x01\
\x0a\x01\x04\x02\
\x0a\x02";
        let foo = |n: f64| Amf0Value::TypedObject {
            class_name: "Foo".into(),
            properties: props(&[("x", num(n))]),
        };
        assert_eq!(
            amf3(bytes).unwrap(),
            Amf0Value::StrictArray(vec![foo(1.0), foo(2.0), foo(1.0)])
        );
        // The array itself (slot 0) is still open when referenced from inside.
        assert_eq!(
            amf3(b"\x09\x03\x01\x09\x00"),
            Err(AmfError::CircularReference(0))
        );
        assert_eq!(amf3(b"\x0a\x05"), Err(AmfError::BadReference(1)));
    }

    #[test]
    fn amf3_arrays_with_associative_part() {
        // dense [true], assoc {k: null}
        let bytes = b"\x09\x03\x03k\x01\x01\x03";
        assert_eq!(
            amf3(bytes).unwrap(),
            Amf0Value::EcmaArray(props(&[
                ("0", Amf0Value::Boolean(true)),
                ("k", Amf0Value::Null)
            ]))
        );
        assert_eq!(
            amf3(b"\x09\x01\x01").unwrap(),
            Amf0Value::StrictArray(vec![])
        );
    }

    #[test]
    fn amf3_externalizable_is_an_error() {
        let bytes = b"\x0a\x07\x07Ext\x00";
        assert_eq!(amf3(bytes), Err(AmfError::Externalizable("Ext".into())));
    }

    #[test]
    fn amf3_vectors_and_dictionary() {
        assert_eq!(
            amf3(b"\x0d\x05\x00\xff\xff\xff\xff\x00\x00\x00\x02").unwrap(),
            Amf0Value::StrictArray(vec![num(-1.0), num(2.0)])
        );
        assert_eq!(
            amf3(b"\x0e\x03\x01\xff\xff\xff\xff").unwrap(),
            Amf0Value::StrictArray(vec![num(4_294_967_295.0)])
        );
        assert_eq!(
            amf3(b"\x0f\x03\x00\x3f\xf0\x00\x00\x00\x00\x00\x00").unwrap(),
            Amf0Value::StrictArray(vec![num(1.0)])
        );
        assert_eq!(
            amf3(b"\x10\x05\x00\x01\x06\x03a\x01").unwrap(),
            Amf0Value::StrictArray(vec![s("a"), Amf0Value::Null])
        );
        // Dictionary {1: "one", "k": true, false: null}
        assert_eq!(
            amf3(b"\x11\x07\x00\x04\x01\x06\x07one\x06\x03k\x03\x02\x01").unwrap(),
            Amf0Value::EcmaArray(props(&[
                ("1", s("one")),
                ("k", Amf0Value::Boolean(true)),
                ("false", Amf0Value::Null),
            ]))
        );
        // An object key cannot be stringified.
        assert_eq!(
            amf3(b"\x11\x03\x00\x09\x01\x01\x01"),
            Err(AmfError::UnsupportedDictionaryKey)
        );
    }

    #[test]
    fn amf3_inside_amf0_uses_fresh_tables() {
        // Two AMF3-switched strings in one AMF0 message: the second "x" is inline again, and a
        // string reference in the second switch would be out of range.
        let bytes = b"\x11\x06\x03x\x11\x06\x03x";
        assert_eq!(decode_all(bytes).unwrap(), vec![s("x"), s("x")]);
        assert_eq!(
            decode_all(b"\x11\x06\x03x\x11\x06\x00"),
            Err(AmfError::BadReference(0))
        );
        // AMF3 values do not occupy AMF0 reference slots.
        let bytes = b"\x11\x09\x01\x01\x03\x00\x00\x09\x07\x00\x00";
        assert_eq!(
            decode_all(bytes).unwrap(),
            vec![
                Amf0Value::StrictArray(vec![]),
                Amf0Value::Object(vec![]),
                Amf0Value::Object(vec![])
            ]
        );
    }

    #[test]
    fn amf3_truncation_at_every_prefix_errors() {
        let value = Amf0Value::StrictArray(vec![
            Amf0Value::TypedObject {
                class_name: "C".into(),
                properties: props(&[("a", num(1e300)), ("b", num(7.0))]),
            },
            Amf0Value::EcmaArray(props(&[("k", s("v"))])),
            Amf0Value::Date {
                millis: 3.0,
                timezone: 0,
            },
            Amf0Value::ByteArray(vec![1, 2]),
            Amf0Value::XmlDocument("<x/>".into()),
            num(300_000.0),
        ]);
        let mut bytes = Vec::new();
        encode_amf3(&value, &mut bytes);
        assert_eq!(amf3(&bytes).unwrap(), value);
        for len in 0..bytes.len() {
            assert!(
                decode_amf3(&mut &bytes[..len]).is_err(),
                "prefix {len} decoded"
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // Property tests

    fn arb_string() -> BoxedStrategy<String> {
        prop::collection::vec(any::<char>(), 0..12)
            .prop_map(String::from_iter)
            .boxed()
    }

    fn arb_f64() -> BoxedStrategy<f64> {
        prop_oneof![
            any::<f64>().prop_filter("NaN never compares equal", |f| !f.is_nan()),
            (-1000i32..1000).prop_map(f64::from),
        ]
        .boxed()
    }

    /// Arbitrary value trees; `amf3` restricts to what the AMF3 encoder maps back losslessly.
    fn arb_value(amf3: bool) -> impl Strategy<Value = Amf0Value> {
        let tz = if amf3 {
            Just(0i16).boxed()
        } else {
            any::<i16>().boxed()
        };
        let leaf = prop_oneof![
            arb_f64().prop_map(Amf0Value::Number),
            any::<bool>().prop_map(Amf0Value::Boolean),
            arb_string().prop_map(Amf0Value::String),
            Just(Amf0Value::Null),
            Just(Amf0Value::Undefined),
            (arb_f64(), tz).prop_map(|(millis, timezone)| Amf0Value::Date { millis, timezone }),
            arb_string().prop_map(Amf0Value::XmlDocument),
            prop::collection::vec(any::<u8>(), 0..16).prop_map(Amf0Value::ByteArray),
        ];
        let leaf = if amf3 {
            leaf.boxed()
        } else {
            prop_oneof![leaf, Just(Amf0Value::Unsupported)].boxed()
        };
        leaf.prop_recursive(4, 48, 6, move |inner| {
            let pairs = prop::collection::vec((arb_string(), inner.clone()), 0..6);
            let ecma_pairs = if amf3 {
                prop::collection::vec(
                    (
                        arb_string().prop_filter("non-empty", |k| !k.is_empty()),
                        inner.clone(),
                    ),
                    1..6,
                )
                .boxed()
            } else {
                pairs.clone().boxed()
            };
            let class = if amf3 {
                arb_string().prop_filter("typed", |c| !c.is_empty()).boxed()
            } else {
                arb_string().boxed()
            };
            prop_oneof![
                pairs.clone().prop_map(Amf0Value::Object),
                ecma_pairs.prop_map(Amf0Value::EcmaArray),
                prop::collection::vec(inner.clone(), 0..6).prop_map(Amf0Value::StrictArray),
                (class, pairs).prop_map(|(class_name, properties)| Amf0Value::TypedObject {
                    class_name,
                    properties
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn amf0_round_trip(values in prop::collection::vec(arb_value(false), 0..4)) {
            let bytes = encode_all(&values);
            prop_assert_eq!(decode_all(&bytes).unwrap(), values);
        }

        #[test]
        fn amf3_round_trip(value in arb_value(true)) {
            let mut bytes = Vec::new();
            encode_amf3(&value, &mut bytes);
            let mut cur = &bytes[..];
            prop_assert_eq!(decode_amf3(&mut cur).unwrap(), value);
            prop_assert!(cur.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_all(&bytes);
            let _ = decode_amf3(&mut &bytes[..]);
        }

        #[test]
        fn mutated_encodings_never_panic(
            value in arb_value(false),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut amf0 = encode_all(std::slice::from_ref(&value));
            let mut amf3 = Vec::new();
            encode_amf3(&value, &mut amf3);
            for (idx, byte) in &edits {
                let i = idx.index(amf0.len());
                amf0[i] = *byte;
                let j = idx.index(amf3.len());
                amf3[j] = *byte;
            }
            let _ = decode_all(&amf0);
            let _ = decode_amf3(&mut &amf3[..]);
        }
    }
}
