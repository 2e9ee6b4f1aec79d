//! Reading profiles back: Feast `Value` protobufs decoded to JSON.
//!
//! Promises: every value the daemon (or Feast) writes for the 16 field types
//! decodes to JSON that keeps its meaning: integers as numbers, NaN and
//! infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, bytes as
//! base64, `unix_timestamp` as RFC 3339 UTC text, lists as arrays, and a
//! missing or null value as `null`. Assumes values no larger than Redis holds.

use base64::Engine;
use serde_json::{json, Value as Json};

use super::{feast, ProfileStore, StoreError, StoreResult};
use crate::model::View;
use crate::time::Nanos;

/// One entity's values for one view, with the event time they carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub ts: Option<Nanos>,
    /// `(field name, value)` in view order; `null` where nothing is stored.
    pub values: Vec<(String, Json)>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn key(&mut self) -> Result<(u64, u64), String> {
        let k = self.varint()?;
        Ok((k >> 3, k & 7))
    }
    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => {
                let n = self.varint()? as usize;
                self.take(n).map(|_| ())
            }
            5 => self.take(4).map(|_| ()),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

fn float_json(v: f64) -> Json {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

fn seconds_json(s: i64) -> Json {
    chrono::DateTime::from_timestamp(s, 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or_else(|| json!(s))
}

fn bytes_json(b: &[u8]) -> Json {
    json!(base64::engine::general_purpose::STANDARD.encode(b))
}

fn text(b: &[u8]) -> Result<Json, String> {
    std::str::from_utf8(b)
        .map(|s| json!(s))
        .map_err(|_| "invalid UTF-8 in string".to_string())
}

/// Elements of a list message (field 1, packed or not) decoded by scalar kind.
fn list(body: &[u8], kind: u64) -> Result<Json, String> {
    let mut r = Reader { buf: body, pos: 0 };
    let mut out = Vec::new();
    while !r.done() {
        let (field, wire) = r.key()?;
        if field != 1 {
            r.skip(wire)?;
            continue;
        }
        match (kind, wire) {
            (11, 2) => {
                let n = r.varint()? as usize;
                out.push(bytes_json(r.take(n)?));
            }
            (12, 2) => {
                let n = r.varint()? as usize;
                out.push(text(r.take(n)?)?);
            }
            (_, 2) => {
                let n = r.varint()? as usize;
                let mut p = Reader {
                    buf: r.take(n)?,
                    pos: 0,
                };
                while !p.done() {
                    out.push(scalar_elem(&mut p, kind)?);
                }
            }
            _ => out.push(scalar_elem(&mut r, kind)?),
        }
    }
    Ok(Json::Array(out))
}

fn scalar_elem(r: &mut Reader<'_>, kind: u64) -> Result<Json, String> {
    Ok(match kind {
        13 => json!(r.varint()? as i64 as i32),
        14 => json!(r.varint()? as i64),
        15 => float_json(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))),
        16 => float_json(f64::from(f32::from_le_bytes(
            r.take(4)?.try_into().expect("4 bytes"),
        ))),
        17 => json!(r.varint()? != 0),
        18 => seconds_json(r.varint()? as i64),
        k => return Err(format!("unknown list kind {k}")),
    })
}

/// A serialized `feast.types.Value` as JSON.
pub fn decode_value(bytes: &[u8]) -> Result<Json, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut out = Json::Null;
    while !r.done() {
        let (field, wire) = r.key()?;
        out = match (field, wire) {
            (1, 2) => {
                let n = r.varint()? as usize;
                bytes_json(r.take(n)?)
            }
            (2, 2) => {
                let n = r.varint()? as usize;
                text(r.take(n)?)?
            }
            (3, 0) => json!(r.varint()? as i64 as i32),
            (4, 0) => json!(r.varint()? as i64),
            (5, 1) => float_json(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))),
            (6, 5) => float_json(f64::from(f32::from_le_bytes(
                r.take(4)?.try_into().expect("4 bytes"),
            ))),
            (7, 0) => json!(r.varint()? != 0),
            (8, 0) => seconds_json(r.varint()? as i64),
            (11..=18, 2) => {
                let n = r.varint()? as usize;
                list(r.take(n)?, field)?
            }
            (_, w) => {
                r.skip(w)?;
                Json::Null
            }
        };
    }
    Ok(out)
}

/// A serialized `google.protobuf.Timestamp` as nanoseconds since the epoch.
pub fn decode_timestamp(bytes: &[u8]) -> Result<Nanos, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let (mut secs, mut nanos) = (0i64, 0i64);
    while !r.done() {
        match r.key()? {
            (1, 0) => secs = r.varint()? as i64,
            (2, 0) => nanos = r.varint()? as i64,
            (_, w) => r.skip(w)?,
        }
    }
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// Whether a value of `view` stamped `ts` has outlived the view's `ttl` at
/// `now` (ttl counts from the row's timestamp; no ttl never expires).
pub fn expired(view: &View, ts: Nanos, now: Nanos) -> bool {
    view.ttl().is_some_and(|ttl| {
        let ttl = i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX);
        ts.saturating_add(ttl) <= now
    })
}

/// Decodes one entity's hash fields (as [`super::view_hash_fields`] lists
/// them) into a profile; `None` when nothing of the view is stored, or its
/// values are past the view's ttl at `now`.
fn profile_of(view: &View, raw: Vec<Option<Vec<u8>>>, now: Nanos) -> StoreResult<Option<Profile>> {
    let n = view.fields.len();
    // No value at all: never written, erased, or deleted by a soft-delete
    // row (which leaves only its time). A null is stored as an empty value.
    if raw[..n].iter().all(Option::is_none) {
        return Ok(None);
    }
    let ts = raw[n]
        .as_deref()
        .map(decode_timestamp)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("_ts:{}: {e}", view.feast_name())))?;
    if ts.is_some_and(|ts| expired(view, ts, now)) {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(n);
    for (f, v) in view.fields.iter().zip(&raw) {
        let json = match v {
            Some(b) => {
                decode_value(b).map_err(|e| StoreError::Corrupt(format!("{}: {e}", f.name)))?
            }
            None => Json::Null,
        };
        values.push((f.name.clone(), json));
    }
    Ok(Some(Profile { ts, values }))
}

impl ProfileStore {
    /// The stored values of `view` for one entity; `None` when nothing is
    /// stored or the values are past the view's ttl.
    pub async fn read_profile(&self, view: &View, entity: &str) -> StoreResult<Option<Profile>> {
        Ok(self
            .read_profiles(view, std::slice::from_ref(&entity))
            .await?
            .pop()
            .flatten())
    }

    /// [`ProfileStore::read_profile`] for many entities in one pipelined round trip.
    pub async fn read_profiles<S: AsRef<str>>(
        &self,
        view: &View,
        entities: &[S],
    ) -> StoreResult<Vec<Option<Profile>>> {
        Ok(self
            .read_views(&[(view, entities)])
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// The profiles of several views' entities at once: one pipeline on one
    /// Redis, one per slot sent together on a cluster (about one round trip
    /// per node). Answers per request, per entity, in order.
    pub async fn read_views<S: AsRef<str>>(
        &self,
        requests: &[(&View, &[S])],
    ) -> StoreResult<Vec<Vec<Option<Profile>>>> {
        let cluster = self.conn.is_cluster();
        let mut cmds = Vec::new();
        let mut slots = Vec::new();
        for (view, entities) in requests {
            let fields = super::view_hash_fields(view);
            for e in entities.iter() {
                let key = feast::entity_key(
                    view.entity.join_key(),
                    e.as_ref().as_bytes(),
                    self.project(),
                );
                if cluster {
                    slots.push(super::conn::slot(&key));
                }
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(key).arg(&fields);
                cmds.push(cmd);
            }
        }
        let mut raw = if cmds.is_empty() {
            Vec::new()
        } else {
            self.run_all(cmds, &slots).await?
        }
        .into_iter();
        let now = crate::time::now();
        let mut out = Vec::with_capacity(requests.len());
        for (view, entities) in requests {
            let mut profiles = Vec::with_capacity(entities.len());
            for v in raw.by_ref().take(entities.len()) {
                let fields: Vec<Option<Vec<u8>>> = redis::from_redis_value(&v)
                    .map_err(|e| StoreError::Corrupt(format!("profile reply: {e}")))?;
                profiles.push(profile_of(view, fields, now)?);
            }
            out.push(profiles);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(f: impl FnOnce(&mut Vec<u8>)) -> Json {
        let mut b = Vec::new();
        f(&mut b);
        decode_value(&b).unwrap()
    }

    #[test]
    fn scalars_round_trip() {
        assert_eq!(round(|b| feast::push_int32(b, -5)), json!(-5));
        assert_eq!(round(|b| feast::push_int64(b, i64::MIN)), json!(i64::MIN));
        assert_eq!(round(|b| feast::push_double(b, f64::NAN)), json!("NaN"));
        assert_eq!(round(|b| feast::push_float(b, 1.5)), json!(1.5));
        assert_eq!(round(|b| feast::push_bool(b, false)), json!(false));
        assert_eq!(round(|b| feast::push_string(b, "ü")), json!("ü"));
        assert_eq!(round(|b| feast::push_bytes(b, b"hi")), json!("aGk="));
        assert_eq!(
            round(|b| feast::push_unix_timestamp(b, 0)),
            json!("1970-01-01T00:00:00Z")
        );
        assert_eq!(round(|_| {}), Json::Null);
    }

    #[test]
    fn lists_round_trip() {
        assert_eq!(
            round(|b| feast::push_int32_list(b, [1, -2])),
            json!([1, -2])
        );
        assert_eq!(
            round(|b| feast::push_string_list(b, ["a", ""])),
            json!(["a", ""])
        );
        assert_eq!(round(|b| feast::push_double_list(b, [0.5])), json!([0.5]));
        assert_eq!(
            round(|b| feast::push_bool_list(b, [true, false])),
            json!([true, false])
        );
        assert_eq!(round(|b| feast::push_int64_list(b, [])), json!([]));
    }

    #[test]
    fn timestamps_round_trip_before_and_after_1970() {
        for n in [0, 1_700_000_000_123_456_789, -1_500_000_000] {
            let mut b = Vec::new();
            feast::push_timestamp(&mut b, n);
            assert_eq!(decode_timestamp(&b).unwrap(), n);
        }
    }
}
