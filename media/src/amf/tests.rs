//! AMF0/AMF3 round trips, hostile inputs and memory bounds.

use super::amf0::*;
use super::amf3::*;
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
    let bytes =
        b"\x03\x00\x05inner\x03\x00\x01b\x01\x01\x00\x00\x09\x00\x05again\x07\x00\x01\x00\x00\x09";
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
