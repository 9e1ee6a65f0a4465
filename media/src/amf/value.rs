//! The decoded value (AMF3 values map onto it too) and what can go wrong decoding one.

use super::MAX_DEPTH;

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
