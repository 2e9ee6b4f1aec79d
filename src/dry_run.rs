//! `sync --dry-run`: what a run would do to each entity of its window, found by
//! comparing the decoded rows with what Redis holds, without writing anything.
//!
//! Contract:
//! - [`classify`] decides like `newest_wins.lua` decides whether to write
//!   (shape generation first, then the timestamp, an equal one overwriting;
//!   an erasure tombstone refuses rows stamped at or before it), and then
//!   compares the values byte for byte: the encoders are deterministic, so
//!   the bytes a run would send equal the stored bytes exactly when the
//!   values are the same. A missing field and an empty one are both Feast's
//!   null.
//! - Entities are counted once, by their latest row in the window (an equal
//!   time keeps the row read later, as a page does); each is compared with
//!   what Redis held before the dry run, so the counts say how the window
//!   would change the store, not how many script calls would write.
//! - Only reads: one pipelined `HMGET` per part of a page. Memory holds one
//!   small entry per entity of the window (its time, its kind, the indexes
//!   of fields that differ), not its values.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::profiles::{feast, read, ProfileStore, StoreResult, Upsert, WriteSpec};
use crate::time::{format_nanos, Nanos};

/// Samples kept per kind.
pub const SAMPLES: usize = 3;

/// What a run would do to one entity's values of the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Redis holds nothing of the view for the entity: the row would be written.
    New,
    /// The row would be written and some value differs from the stored one
    /// (a newer row, a correction at the same time, or a newer shape).
    Changed,
    /// The row would be skipped: Redis holds a newer time, a newer shape
    /// generation, or an erasure tombstone at or after the row.
    Stale,
    /// The row would be written with the values Redis holds (only the
    /// timestamp may move forward).
    Unchanged,
}

impl Change {
    pub const ALL: [Change; 4] = [
        Change::New,
        Change::Changed,
        Change::Stale,
        Change::Unchanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Changed => "changed",
            Change::Stale => "stale",
            Change::Unchanged => "unchanged",
        }
    }
}

/// What Redis holds of one view for one entity, raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// `_ts:{feature_view}`.
    pub ts: Option<Nanos>,
    /// `_gen:{feature_view}`; 0 when absent.
    pub generation: u64,
    /// The later of the entity's and the view's erasure tombstones.
    pub erased: Option<Nanos>,
    /// Each field's serialized value, in view order.
    pub values: Vec<Option<Vec<u8>>>,
}

impl Stored {
    /// Nothing of the view is stored (no time, no values).
    fn is_empty(&self) -> bool {
        self.ts.is_none() && self.values.iter().all(Option::is_none)
    }
}

/// The verdict on one row, and the indexes of the fields whose stored value
/// it would change (empty unless [`Change::Changed`]).
pub fn classify(
    row_ts: Nanos,
    row_values: &[(u32, &[u8])],
    delete: bool,
    generation: u64,
    stored: &Stored,
) -> (Change, Vec<u32>) {
    if stored.erased.is_some_and(|e| row_ts <= e) {
        return (Change::Stale, Vec::new());
    }
    if stored.generation > generation {
        return (Change::Stale, Vec::new());
    }
    if stored.generation == generation && stored.ts.is_some_and(|t| t > row_ts) {
        return (Change::Stale, Vec::new());
    }
    let stored_value = |i: usize| stored.values.get(i).and_then(|v| v.as_deref());
    let differs: Vec<u32> = if delete {
        // A soft-deleted row removes every value: a change where one is stored.
        (0..stored.values.len())
            .filter(|&i| stored_value(i).is_some_and(|v| !v.is_empty()))
            .map(|i| i as u32)
            .collect()
    } else {
        row_values
            .iter()
            .filter(|(i, v)| stored_value(*i as usize).unwrap_or_default() != *v)
            .map(|(i, _)| *i)
            .collect()
    };
    if stored.is_empty() && !delete {
        return (Change::New, Vec::new());
    }
    if differs.is_empty() {
        (Change::Unchanged, differs)
    } else {
        (Change::Changed, differs)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    ts: Nanos,
    stored_ts: Option<Nanos>,
    change: Change,
    fields: Vec<u32>,
}

/// The verdicts of one dry run so far, per entity.
#[derive(Debug, Default)]
pub struct DryRun {
    entities: HashMap<String, Entry>,
}

/// One sampled entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub entity: String,
    /// The time of the entity's latest row in the window.
    pub row_timestamp: String,
    /// The time Redis holds, if any.
    pub stored_timestamp: Option<String>,
    /// The fields whose value would change (changed entities only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// What a dry run found: entities by kind, with a few samples of each (the
/// entities with the smallest keys, so the same data gives the same samples).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub entities: u64,
    pub new: u64,
    pub changed: u64,
    pub stale: u64,
    pub unchanged: u64,
    pub samples: BTreeMap<Change, Vec<Sample>>,
}

impl Report {
    pub fn count(&self, change: Change) -> u64 {
        match change {
            Change::New => self.new,
            Change::Changed => self.changed,
            Change::Stale => self.stale,
            Change::Unchanged => self.unchanged,
        }
    }
}

impl DryRun {
    /// Records the verdict on an entity's row, unless a later row of it was
    /// already judged (an equal time replaces: the later read wins, as in a page).
    fn record(&mut self, entity: &str, entry: Entry) {
        match self.entities.get_mut(entity) {
            Some(cur) if entry.ts < cur.ts => {}
            Some(cur) => *cur = entry,
            None => {
                self.entities.insert(entity.to_string(), entry);
            }
        }
    }

    /// Judges the latest rows of a page (as the run would write them) against
    /// what Redis holds now.
    pub async fn compare(
        &mut self,
        store: &ProfileStore,
        spec: &WriteSpec,
        rows: &[Upsert<'_>],
    ) -> StoreResult<()> {
        for part in rows.chunks(PART) {
            let stored = read_stored(store, spec, part.iter().map(|r| r.entity)).await?;
            for (row, stored) in part.iter().zip(stored) {
                let (change, fields) =
                    classify(row.ts, row.values, row.delete, spec.generation, &stored);
                let entry = Entry {
                    ts: row.ts,
                    stored_ts: stored.ts,
                    change,
                    fields,
                };
                self.record(row.entity, entry);
            }
        }
        Ok(())
    }

    /// The counts, and up to [`SAMPLES`] samples per kind; `field_names` in view order.
    pub fn report(&self, field_names: &[String]) -> Report {
        let mut r = Report {
            entities: self.entities.len() as u64,
            ..Report::default()
        };
        let mut picked: BTreeMap<Change, Vec<&str>> = BTreeMap::new();
        for (entity, e) in &self.entities {
            *match e.change {
                Change::New => &mut r.new,
                Change::Changed => &mut r.changed,
                Change::Stale => &mut r.stale,
                Change::Unchanged => &mut r.unchanged,
            } += 1;
            let keep = picked.entry(e.change).or_default();
            keep.push(entity);
            if keep.len() > SAMPLES {
                keep.sort_unstable();
                keep.pop();
            }
        }
        for (change, mut entities) in picked {
            entities.sort_unstable();
            let samples = entities
                .into_iter()
                .map(|name| {
                    let e = &self.entities[name];
                    Sample {
                        entity: name.to_string(),
                        row_timestamp: format_nanos(e.ts),
                        stored_timestamp: e.stored_ts.map(format_nanos),
                        fields: e
                            .fields
                            .iter()
                            .filter_map(|&i| field_names.get(i as usize).cloned())
                            .collect(),
                    }
                })
                .collect();
            r.samples.insert(change, samples);
        }
        r
    }
}

/// Entities read back in one pipeline.
const PART: usize = 8192;

/// What Redis holds of the view of `spec` for each entity, in order.
async fn read_stored<'a>(
    store: &ProfileStore,
    spec: &WriteSpec,
    entities: impl Iterator<Item = &'a str>,
) -> StoreResult<Vec<Stored>> {
    let all_views_erased = crate::profiles::erased_field(None);
    let mut names: Vec<&[u8]> = spec.fields.iter().map(|f| &f[..]).collect();
    names.extend([
        spec.ts_field.as_bytes(),
        spec.gen_field.as_bytes(),
        all_views_erased.as_bytes(),
        spec.erased_field.as_bytes(),
    ]);
    let (mut cmds, mut slots) = (Vec::new(), Vec::new());
    for e in entities {
        let key = feast::entity_key(&spec.join_key, e.as_bytes(), store.project());
        slots.push(crate::profiles::conn::slot(&key));
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(key).arg(&names);
        cmds.push(cmd);
    }
    if cmds.is_empty() {
        return Ok(Vec::new());
    }
    let n = spec.fields.len();
    let corrupt =
        |what: &str, e: String| crate::profiles::StoreError::Corrupt(format!("{what}: {e}"));
    let mut out = Vec::with_capacity(cmds.len());
    for reply in store.run_all(cmds, &slots).await? {
        let mut raw: Vec<Option<Vec<u8>>> =
            redis::from_redis_value(&reply).map_err(|e| corrupt("profile reply", e.to_string()))?;
        let erased_view = raw.pop().flatten();
        let erased_all = raw.pop().flatten();
        let generation = raw.pop().flatten();
        let ts = raw.pop().flatten();
        debug_assert_eq!(raw.len(), n);
        let time = |b: Option<Vec<u8>>| {
            b.map(|b| read::decode_timestamp(&b))
                .transpose()
                .map_err(|e| corrupt(&spec.ts_field, e))
        };
        let generation = match generation {
            None => 0,
            Some(g) => String::from_utf8_lossy(&g)
                .parse()
                .map_err(|_| corrupt(&spec.gen_field, "not a number".into()))?,
        };
        out.push(Stored {
            ts: time(ts)?,
            generation,
            erased: time(erased_all)?.max(time(erased_view)?),
            values: raw,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(ts: Option<Nanos>, generation: u64, values: &[Option<&[u8]>]) -> Stored {
        Stored {
            ts,
            generation,
            erased: None,
            values: values.iter().map(|v| v.map(<[u8]>::to_vec)).collect(),
        }
    }

    const A: &[u8] = b"\x18\x01";
    const B: &[u8] = b"\x18\x02";

    #[test]
    fn nothing_stored_is_new() {
        let s = stored(None, 0, &[None, None]);
        assert_eq!(classify(5, &[(0, A), (1, B)], false, 0, &s).0, Change::New);
    }

    #[test]
    fn a_newer_stored_time_makes_the_row_stale_and_an_equal_one_overwrites() {
        let s = stored(Some(10), 0, &[Some(A), Some(A)]);
        assert_eq!(
            classify(9, &[(0, B), (1, B)], false, 0, &s).0,
            Change::Stale
        );
        // Equal time: a correction lands, so it is a change, field by field.
        assert_eq!(
            classify(10, &[(0, A), (1, B)], false, 0, &s),
            (Change::Changed, vec![1])
        );
        assert_eq!(
            classify(10, &[(0, A), (1, A)], false, 0, &s),
            (Change::Unchanged, vec![])
        );
        // Newer with the same values: only the time would move.
        assert_eq!(
            classify(11, &[(0, A), (1, A)], false, 0, &s).0,
            Change::Unchanged
        );
    }

    #[test]
    fn shape_generations_decide_before_times() {
        let s = stored(Some(10), 2, &[Some(A)]);
        // An older generation never writes, however new its row.
        assert_eq!(classify(99, &[(0, B)], false, 1, &s).0, Change::Stale);
        // A newer generation always writes, however old its row.
        assert_eq!(
            classify(1, &[(0, B)], false, 3, &s),
            (Change::Changed, vec![0])
        );
        assert_eq!(classify(1, &[(0, A)], false, 3, &s).0, Change::Unchanged);
    }

    #[test]
    fn a_missing_value_equals_a_null_one() {
        let s = stored(Some(10), 0, &[None, Some(b"")]);
        assert_eq!(
            classify(10, &[(0, b""), (1, b"")], false, 0, &s).0,
            Change::Unchanged
        );
        assert_eq!(
            classify(10, &[(0, A), (1, b"")], false, 0, &s),
            (Change::Changed, vec![0])
        );
    }

    #[test]
    fn tombstones_refuse_rows_at_or_before_them() {
        let mut s = stored(None, 0, &[None]);
        s.erased = Some(10);
        assert_eq!(classify(10, &[(0, A)], false, 0, &s).0, Change::Stale);
        assert_eq!(classify(11, &[(0, A)], false, 0, &s).0, Change::New);
    }

    #[test]
    fn a_soft_delete_changes_only_what_is_stored() {
        let s = stored(Some(10), 0, &[Some(A), None]);
        assert_eq!(classify(11, &[], true, 0, &s), (Change::Changed, vec![0]));
        let gone = stored(Some(10), 0, &[None, None]);
        assert_eq!(classify(11, &[], true, 0, &gone).0, Change::Unchanged);
        assert_eq!(classify(9, &[], true, 0, &s).0, Change::Stale);
    }

    #[test]
    fn each_entity_counts_once_by_its_latest_row_and_samples_are_the_smallest_keys() {
        let mut d = DryRun::default();
        let e = |ts, change| Entry {
            ts,
            stored_ts: Some(5),
            change,
            fields: vec![1],
        };
        d.record("b", e(10, Change::Stale));
        d.record("b", e(20, Change::Changed));
        d.record("b", e(15, Change::Stale));
        for name in ["z", "y", "x", "w", "v"] {
            d.record(name, e(1, Change::New));
        }
        let r = d.report(&["F0".into(), "F1".into()]);
        assert_eq!((r.entities, r.new, r.changed, r.stale), (6, 5, 1, 0));
        let names: Vec<&str> = r.samples[&Change::New]
            .iter()
            .map(|s| s.entity.as_str())
            .collect();
        assert_eq!(names, ["v", "w", "x"]);
        assert_eq!(r.samples[&Change::Changed][0].fields, ["F1"]);
        assert!(!r.samples.contains_key(&Change::Stale));
    }
}
