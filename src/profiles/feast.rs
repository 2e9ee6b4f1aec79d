//! Feast's Redis online-store encoding, byte for byte (`entity_key_serialization_version: 3`).
//!
//! Promises: keys, hash-field names and values that Feast's `get_online_features`
//! reads back as the same values and types. Pure functions, no I/O; every
//! encoder appends to a caller-owned buffer so a page is encoded without
//! per-cell allocations.
//!
//! Layout (see `feast/infra/key_encoding_utils.py`, `online_stores/redis.py`):
//! - key: serialized entity key followed by the project name;
//! - hash field per feature: murmur3-32 (seed 0) of `"{feature_view}:{feature}"`, 4 bytes LE;
//! - value: a serialized `feast.types.Value` protobuf;
//! - `_ts:{feature_view}`: a serialized `google.protobuf.Timestamp`.
//!
//! The unit tests hold golden bytes printed by Feast itself
//! (`tests/support/feast_golden.py`); `tests/support/FEAST_NOTES.md` has the read-side
//! semantics (NULLs, timestamps, ttl) these encoders are chosen for.

/// Feast `ValueType` enum numbers used inside the serialized entity key.
const VALUE_TYPE_STRING: u32 = 2;

/// Redis key of one entity's hash: serialized entity key (one string join key) + project.
pub fn entity_key(join_key: &str, value: &[u8], project: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(20 + join_key.len() + value.len() + project.len());
    push_entity_key(&mut k, join_key, value, project);
    k
}

/// Appends the Redis key of one entity's hash to `out`.
pub fn push_entity_key(out: &mut Vec<u8>, join_key: &str, value: &[u8], project: &str) {
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&VALUE_TYPE_STRING.to_le_bytes());
    out.extend_from_slice(&(join_key.len() as u32).to_le_bytes());
    out.extend_from_slice(join_key.as_bytes());
    out.extend_from_slice(&VALUE_TYPE_STRING.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(project.as_bytes());
}

/// Hash field holding one feature's value.
pub fn feature_field(feature_view: &str, feature: &str) -> [u8; 4] {
    murmur3_32(format!("{feature_view}:{feature}").as_bytes(), 0).to_le_bytes()
}

/// Hash field holding the event timestamp of a feature view's values.
pub fn ts_field(feature_view: &str) -> String {
    format!("_ts:{feature_view}")
}

/// `google.protobuf.Timestamp` for a UTC instant in nanoseconds since the epoch.
/// Zero-valued fields are omitted, as proto3 serializers do.
pub fn push_timestamp(out: &mut Vec<u8>, nanos_since_epoch: i64) {
    let seconds = nanos_since_epoch.div_euclid(1_000_000_000);
    let nanos = nanos_since_epoch.rem_euclid(1_000_000_000);
    if seconds != 0 {
        out.push(0x08);
        push_varint(out, seconds as u64);
    }
    if nanos != 0 {
        out.push(0x10);
        push_varint(out, nanos as u64);
    }
}

/// Field numbers of `feast.types.Value`'s `val` oneof.
mod tag {
    pub const BYTES: u32 = 1;
    pub const STRING: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const DOUBLE: u32 = 5;
    pub const FLOAT: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const UNIX_TIMESTAMP: u32 = 8;
    pub const BYTES_LIST: u32 = 11;
    pub const STRING_LIST: u32 = 12;
    pub const INT32_LIST: u32 = 13;
    pub const INT64_LIST: u32 = 14;
    pub const DOUBLE_LIST: u32 = 15;
    pub const FLOAT_LIST: u32 = 16;
    pub const BOOL_LIST: u32 = 17;
    pub const UNIX_TIMESTAMP_LIST: u32 = 18;
}

const WIRE_VARINT: u32 = 0;
const WIRE_I64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_I32: u32 = 5;

fn push_key(out: &mut Vec<u8>, field: u32, wire: u32) {
    push_varint(out, u64::from((field << 3) | wire));
}

pub fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn push_len_prefixed(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    push_key(out, field, WIRE_LEN);
    push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A NULL value: an empty `Value` message (no oneof member set), as Feast writes
/// NULLs; every Feast reader returns null for it. Not `null_val`: the Python SDK's
/// `to_dict()` decodes that as `0`.
pub fn push_null(_out: &mut Vec<u8>) {}

pub fn push_bytes(out: &mut Vec<u8>, v: &[u8]) {
    push_len_prefixed(out, tag::BYTES, v);
}
pub fn push_string(out: &mut Vec<u8>, v: &str) {
    push_len_prefixed(out, tag::STRING, v.as_bytes());
}
pub fn push_int32(out: &mut Vec<u8>, v: i32) {
    push_key(out, tag::INT32, WIRE_VARINT);
    // int32 negatives are sign-extended to 64 bits on the wire.
    push_varint(out, i64::from(v) as u64);
}
pub fn push_int64(out: &mut Vec<u8>, v: i64) {
    push_key(out, tag::INT64, WIRE_VARINT);
    push_varint(out, v as u64);
}
/// NaN and infinities are stored as is and Feast reads them back as such; note
/// that Feast's own materialization would have written a NaN scalar as NULL.
pub fn push_double(out: &mut Vec<u8>, v: f64) {
    push_key(out, tag::DOUBLE, WIRE_I64);
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn push_float(out: &mut Vec<u8>, v: f32) {
    push_key(out, tag::FLOAT, WIRE_I32);
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn push_bool(out: &mut Vec<u8>, v: bool) {
    push_key(out, tag::BOOL, WIRE_VARINT);
    out.push(u8::from(v));
}
/// Feast's NaT sentinel (`np.datetime64("NaT").astype(int)`), which its own
/// materialization writes for a null timestamp. The Python SDK reads it back as
/// `None`, but the HTTP feature server returns the raw integer; write NULLs with
/// `push_null`, which both read as null. Kept for recognising Feast-written data.
pub const UNIX_TIMESTAMP_NULL: i64 = i64::MIN;

/// Range of `unix_timestamp_val` seconds the Python SDK can read back: `datetime`'s
/// years 1..=9999. A value outside it makes `datetime.fromtimestamp` raise inside
/// `OnlineResponse.to_dict()`, failing the whole request, not just that feature;
/// write NULL instead. (The HTTP feature server returns raw seconds and is unaffected.)
pub const UNIX_TIMESTAMP_MIN_SECONDS: i64 = -62_135_596_800;
pub const UNIX_TIMESTAMP_MAX_SECONDS: i64 = 253_402_300_799;

/// Feast's `unix_timestamp_val`: whole seconds since the epoch (not ms, not µs);
/// Feast reads it back with `datetime.fromtimestamp(v, tz=utc)`. Callers truncating
/// sub-second instants should floor (`div_euclid`), as Feast's scalar
/// materialization does (1969-12-31T23:59:59.5Z -> -1).
pub fn push_unix_timestamp(out: &mut Vec<u8>, seconds: i64) {
    push_key(out, tag::UNIX_TIMESTAMP, WIRE_VARINT);
    push_varint(out, seconds as u64);
}

/// Writes a list value: `body` appends the list message's content (see the
/// `push_*_elements` helpers) and the length prefix is patched in afterwards.
fn push_list(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    push_key(out, field, WIRE_LEN);
    let mut inner = Vec::new();
    body(&mut inner);
    push_varint(out, inner.len() as u64);
    out.extend_from_slice(&inner);
}

/// Packed repeated field 1 of a list message.
fn push_packed(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let mut packed = Vec::new();
    body(&mut packed);
    if !packed.is_empty() {
        push_len_prefixed(out, 1, &packed);
    }
}

pub fn push_bytes_list<'a>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'a [u8]>) {
    push_list(out, tag::BYTES_LIST, |b| {
        for v in items {
            push_len_prefixed(b, 1, v);
        }
    });
}
pub fn push_string_list<'a>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'a str>) {
    push_list(out, tag::STRING_LIST, |b| {
        for v in items {
            push_len_prefixed(b, 1, v.as_bytes());
        }
    });
}
pub fn push_int32_list(out: &mut Vec<u8>, items: impl IntoIterator<Item = i32>) {
    push_list(out, tag::INT32_LIST, |b| {
        push_packed(b, |p| {
            items
                .into_iter()
                .for_each(|v| push_varint(p, i64::from(v) as u64))
        })
    });
}
pub fn push_int64_list(out: &mut Vec<u8>, items: impl IntoIterator<Item = i64>) {
    push_list(out, tag::INT64_LIST, |b| {
        push_packed(b, |p| {
            items.into_iter().for_each(|v| push_varint(p, v as u64))
        })
    });
}
pub fn push_unix_timestamp_list(out: &mut Vec<u8>, seconds: impl IntoIterator<Item = i64>) {
    push_list(out, tag::UNIX_TIMESTAMP_LIST, |b| {
        push_packed(b, |p| {
            seconds.into_iter().for_each(|v| push_varint(p, v as u64))
        })
    });
}
pub fn push_double_list(out: &mut Vec<u8>, items: impl IntoIterator<Item = f64>) {
    push_list(out, tag::DOUBLE_LIST, |b| {
        push_packed(b, |p| {
            items
                .into_iter()
                .for_each(|v| p.extend_from_slice(&v.to_le_bytes()))
        })
    });
}
pub fn push_float_list(out: &mut Vec<u8>, items: impl IntoIterator<Item = f32>) {
    push_list(out, tag::FLOAT_LIST, |b| {
        push_packed(b, |p| {
            items
                .into_iter()
                .for_each(|v| p.extend_from_slice(&v.to_le_bytes()))
        })
    });
}
pub fn push_bool_list(out: &mut Vec<u8>, items: impl IntoIterator<Item = bool>) {
    push_list(out, tag::BOOL_LIST, |b| {
        push_packed(b, |p| items.into_iter().for_each(|v| p.push(u8::from(v))))
    });
}

/// MurmurHash3 x86 32-bit, as the `mmh3` Python package computes it.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of `tests/support/feast_golden.py` run against the pinned Feast
    /// (tests/support/requirements-feast.txt). Regenerate and paste on a Feast upgrade;
    /// `encode` below must then know every name.
    const GOLDEN: &[(&str, &str)] = &[
        ("ek_abc", "01000000020000000d000000646f6d61696e5f75736572696402000000070000006162632d313233"),
        ("key_abc", "01000000020000000d000000646f6d61696e5f75736572696402000000070000006162632d3132336d795f70726f6a656374"),
        ("ek_empty", "01000000020000000d000000646f6d61696e5f7573657269640200000000000000"),
        ("key_empty", "01000000020000000d000000646f6d61696e5f75736572696402000000000000006d795f70726f6a656374"),
        ("ek_non_ascii", "01000000020000000d000000646f6d61696e5f7573657269640200000009000000c3bce28692f09f9880"),
        ("key_non_ascii", "01000000020000000d000000646f6d61696e5f7573657269640200000009000000c3bce28692f09f98806d795f70726f6a656374"),
        ("field_simple", "c5057389"),
        ("field_short", "d898a0bc"),
        ("field_non_ascii", "ed007d42"),
        ("field_empty_feature", "a2f1916c"),
        ("murmur_len0", "00000000"),
        ("murmur_len1", "b269253c"),
        ("murmur_len2", "5fd7bf9b"),
        ("murmur_len3", "fa93ddb3"),
        ("murmur_len4", "6a67ed43"),
        ("murmur_len5", "f69a9be8"),
        ("murmur_len6", "85c08161"),
        ("murmur_len7", "069b3c88"),
        ("murmur_len8", "c4ccdd49"),
        ("ts_epoch", ""),
        ("ts_whole", "0880e2cfaa06"),
        ("ts_micros", "0880e2cfaa06108094ef3a"),
        ("ts_pre1970_whole", "0880ddfaffffffffffff01"),
        ("ts_pre1970_frac", "08ffffffffffffffffff011080cab5ee01"),
        ("ts_nanos", "0880e2cfaa0610959aef3a"),
        ("ts_minus_1ns", "08ffffffffffffffffff0110ff93ebdc03"),
        ("ts_1ns", "1001"),
        ("null", ""),
        ("bytes_empty", "0a00"),
        ("bytes_bin", "0a0300ff80"),
        ("string_empty", "1200"),
        ("string_abc", "1203616263"),
        ("string_non_ascii", "1209c3bce28692f09f9880"),
        ("string_long", "12c8017878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878"),
        ("int32_0", "1800"),
        ("int32_1", "1801"),
        ("int32_neg1", "18ffffffffffffffffff01"),
        ("int32_min", "1880808080f8ffffffff01"),
        ("int32_max", "18ffffffff07"),
        ("int32_300", "18ac02"),
        ("int64_0", "2000"),
        ("int64_neg1", "20ffffffffffffffffff01"),
        ("int64_min", "2080808080808080808001"),
        ("int64_max", "20ffffffffffffffff7f"),
        ("int64_300", "20ac02"),
        ("double_0", "290000000000000000"),
        ("double_neg0", "290000000000000080"),
        ("double_1_5", "29000000000000f83f"),
        ("double_nan", "29000000000000f87f"),
        ("double_inf", "29000000000000f07f"),
        ("double_neg_inf", "29000000000000f0ff"),
        ("float_0", "3500000000"),
        ("float_1_5", "350000c03f"),
        ("float_nan", "350000c07f"),
        ("float_inf", "350000807f"),
        ("float_neg_inf", "35000080ff"),
        ("float_max", "35ffff7f7f"),
        ("bool_true", "3801"),
        ("bool_false", "3800"),
        ("unix_ts_0", "4000"),
        ("unix_ts_2023", "4080e2cfaa06"),
        ("unix_ts_neg1", "40ffffffffffffffffff01"),
        ("unix_ts_nat", "4080808080808080808001"),
        ("bytes_list_empty", "5a00"),
        ("bytes_list", "5a060a000a0200ff"),
        ("string_list_empty", "6200"),
        ("string_list", "620d0a01610a000a06c3bcf09f9880"),
        ("int32_list_empty", "6a00"),
        ("int32_list", "6a1d0a1b0001ffffffffffffffffff0180808080f8ffffffff01ffffffff07"),
        ("int64_list_empty", "7200"),
        ("int64_list", "72200a1e00ffffffffffffffffff0180808080808080808001ffffffffffffffff7f"),
        ("double_list_empty", "7a00"),
        ("double_list", "7a2a0a28000000000000f83f000000000000f87f000000000000f07f000000000000f0ff0000000000000080"),
        ("float_list_empty", "820100"),
        ("float_list", "8201120a100000c03f0000c07f0000807f000080ff"),
        ("bool_list_empty", "8a0100"),
        ("bool_list", "8a01050a03010001"),
        ("unix_ts_list_empty", "920100"),
        ("unix_ts_list", "9201120a1080e2cfaa06ffffffffffffffffff0100"),
    ];

    const JOIN_KEY: &str = "domain_userid";
    const PROJECT: &str = "my_project";
    const NON_ASCII: &str = "ü→😀";

    /// The Rust encoding of the case that `feast_golden.py` builds under `name`.
    fn encode(name: &str) -> Vec<u8> {
        let mut o = Vec::new();
        // An empty project leaves the bare serialized entity key.
        let entity = |v: &str| entity_key(JOIN_KEY, v.as_bytes(), "");
        match name {
            "ek_abc" => o = entity("abc-123"),
            "ek_empty" => o = entity(""),
            "ek_non_ascii" => o = entity(NON_ASCII),
            "key_abc" => o = entity_key(JOIN_KEY, b"abc-123", PROJECT),
            "key_empty" => o = entity_key(JOIN_KEY, b"", PROJECT),
            "key_non_ascii" => push_entity_key(&mut o, JOIN_KEY, NON_ASCII.as_bytes(), PROJECT),
            "field_simple" => o = feature_field("ecommerce_v1", "TOTAL_TRANSACTIONS").to_vec(),
            "field_short" => o = feature_field("v_v1", "a").to_vec(),
            "field_non_ascii" => o = feature_field("größe_v2", "ß→😀").to_vec(),
            "field_empty_feature" => o = feature_field("fv_v1", "").to_vec(),
            n if n.starts_with("murmur_len") => {
                let len: usize = n["murmur_len".len()..].parse().unwrap();
                o = murmur3_32(&b"abcdefgh"[..len], 0).to_le_bytes().to_vec();
            }
            "ts_epoch" => push_timestamp(&mut o, 0),
            "ts_whole" => push_timestamp(&mut o, 1_700_000_000 * NS),
            "ts_micros" => push_timestamp(&mut o, 1_700_000_000 * NS + 123_456_000),
            "ts_pre1970_whole" => push_timestamp(&mut o, -86_400 * NS),
            "ts_pre1970_frac" => push_timestamp(&mut o, -500_000_000),
            "ts_nanos" => push_timestamp(&mut o, 1_700_000_000 * NS + 123_456_789),
            "ts_minus_1ns" => push_timestamp(&mut o, -1),
            "ts_1ns" => push_timestamp(&mut o, 1),
            "null" => push_null(&mut o),
            "bytes_empty" => push_bytes(&mut o, b""),
            "bytes_bin" => push_bytes(&mut o, b"\x00\xff\x80"),
            "string_empty" => push_string(&mut o, ""),
            "string_abc" => push_string(&mut o, "abc"),
            "string_non_ascii" => push_string(&mut o, NON_ASCII),
            "string_long" => push_string(&mut o, &"x".repeat(200)),
            "int32_0" => push_int32(&mut o, 0),
            "int32_1" => push_int32(&mut o, 1),
            "int32_neg1" => push_int32(&mut o, -1),
            "int32_min" => push_int32(&mut o, i32::MIN),
            "int32_max" => push_int32(&mut o, i32::MAX),
            "int32_300" => push_int32(&mut o, 300),
            "int64_0" => push_int64(&mut o, 0),
            "int64_neg1" => push_int64(&mut o, -1),
            "int64_min" => push_int64(&mut o, i64::MIN),
            "int64_max" => push_int64(&mut o, i64::MAX),
            "int64_300" => push_int64(&mut o, 300),
            "double_0" => push_double(&mut o, 0.0),
            "double_neg0" => push_double(&mut o, -0.0),
            "double_1_5" => push_double(&mut o, 1.5),
            "double_nan" => push_double(&mut o, f64::NAN),
            "double_inf" => push_double(&mut o, f64::INFINITY),
            "double_neg_inf" => push_double(&mut o, f64::NEG_INFINITY),
            "float_0" => push_float(&mut o, 0.0),
            "float_1_5" => push_float(&mut o, 1.5),
            "float_nan" => push_float(&mut o, f32::NAN),
            "float_inf" => push_float(&mut o, f32::INFINITY),
            "float_neg_inf" => push_float(&mut o, f32::NEG_INFINITY),
            "float_max" => push_float(&mut o, f32::MAX),
            "bool_true" => push_bool(&mut o, true),
            "bool_false" => push_bool(&mut o, false),
            "unix_ts_0" => push_unix_timestamp(&mut o, 0),
            "unix_ts_2023" => push_unix_timestamp(&mut o, 1_700_000_000),
            "unix_ts_neg1" => push_unix_timestamp(&mut o, -1),
            "unix_ts_nat" => push_unix_timestamp(&mut o, UNIX_TIMESTAMP_NULL),
            "bytes_list_empty" => push_bytes_list(&mut o, []),
            "bytes_list" => push_bytes_list(&mut o, [&b""[..], &b"\x00\xff"[..]]),
            "string_list_empty" => push_string_list(&mut o, []),
            "string_list" => push_string_list(&mut o, ["a", "", "ü😀"]),
            "int32_list_empty" => push_int32_list(&mut o, []),
            "int32_list" => push_int32_list(&mut o, [0, 1, -1, i32::MIN, i32::MAX]),
            "int64_list_empty" => push_int64_list(&mut o, []),
            "int64_list" => push_int64_list(&mut o, [0, -1, i64::MIN, i64::MAX]),
            "double_list_empty" => push_double_list(&mut o, []),
            "double_list" => push_double_list(
                &mut o,
                [1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0],
            ),
            "float_list_empty" => push_float_list(&mut o, []),
            "float_list" => {
                push_float_list(&mut o, [1.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY])
            }
            "bool_list_empty" => push_bool_list(&mut o, []),
            "bool_list" => push_bool_list(&mut o, [true, false, true]),
            "unix_ts_list_empty" => push_unix_timestamp_list(&mut o, []),
            "unix_ts_list" => push_unix_timestamp_list(&mut o, [1_700_000_000, -1, 0]),
            other => panic!("golden case {other:?} has no Rust encoding; add it to `encode`"),
        }
        o
    }

    const NS: i64 = 1_000_000_000;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn matches_feast_golden_bytes() {
        let mismatches: Vec<String> = GOLDEN
            .iter()
            .filter_map(|(name, want)| {
                let got = hex(&encode(name));
                (got != *want).then(|| format!("{name}: got {got}, feast {want}"))
            })
            .collect();
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    #[test]
    fn ts_field_is_prefixed_view_name() {
        assert_eq!(ts_field("ecommerce_v1"), "_ts:ecommerce_v1");
    }

    #[test]
    fn murmur3_known_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }
}
