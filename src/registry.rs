//! The registry of applied views: read from files, validated, kept in Redis.
//!
//! Promises: `apply` validates every view first and stores none of them if any
//! is invalid (nothing half-applied); errors name the file, the view and the
//! key. Every change is a compare-and-set against the entry as read, so
//! concurrent appliers never half-apply and of concurrent creators exactly one
//! wins. Re-applying an identical view changes nothing; re-applying a view
//! whose source (table, timestamp field, NTZ zone), entity, fields or ttl
//! changed under the same version is a reshape: a new shape generation, the
//! watermark forgotten, and the next completed run leaves exactly what the new
//! shape writes. Assumes views are small (a Redis hash holds them all).

use std::collections::BTreeMap;
use std::path::Path;

use crate::model::{View, ViewId};
use crate::profiles::state::Change;
use crate::profiles::ProfileStore;
use anyhow::{bail, Context, Result};

/// Reads views from a JSON or TOML file holding one view or a list of views
/// (JSON array; TOML `[[views]]`).
pub fn read_file(path: &Path) -> Result<Vec<View>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let value: serde_json::Value = if is_toml {
        let t: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        let v = serde_json::to_value(t)?;
        match v.get("views") {
            Some(list) => list.clone(),
            None => v,
        }
    } else {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))?
    };
    let items = match value {
        serde_json::Value::Array(items) => items,
        single => vec![single],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let view: View = serde_json::from_value(v)
                .map_err(|e| anyhow::anyhow!("{}: view #{}: {}", path.display(), i + 1, e))?;
            view.validate()
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))?;
            Ok(view)
        })
        .collect()
}

/// Reads the view files matching `patterns`, file by file: a file that cannot be read or holds
/// an invalid view is reported (its path and the problem) and skipped, so one
/// bad file does not stop the other views of its directory from syncing.
pub fn read_globs_each(patterns: &[String], base: &Path) -> (Vec<View>, Vec<String>) {
    let mut views = Vec::new();
    let mut problems = Vec::new();
    for pattern in patterns {
        let full = if Path::new(pattern).is_absolute() {
            pattern.clone()
        } else {
            base.join(pattern).to_string_lossy().into_owned()
        };
        let paths = match glob::glob(&full) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("registry.files: bad pattern `{pattern}`: {e}"));
                continue;
            }
        };
        let mut matched = false;
        for p in paths {
            matched = true;
            match p.map_err(anyhow::Error::from).and_then(|p| read_file(&p)) {
                Ok(v) => views.extend(v),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        if !matched {
            tracing::warn!(pattern = %full, "registry.files: pattern matches no file");
        }
    }
    (views, problems)
}

/// The parts of a view that decide what a run reads and writes (the zone of its
/// NTZ timestamps and its soft-delete column included), and how long its values live: a change to any of
/// them is a reshape.
fn sync_shape(v: &View) -> serde_json::Value {
    serde_json::json!({
        "entity": v.entity.name,
        "source": [&v.batch_source.database, &v.batch_source.schema,
                   &v.batch_source.table, &v.batch_source.timestamp_field,
                   &v.batch_source.ntz_time_zone, &v.batch_source.soft_delete_column],
        "fields": v.fields.iter().map(|f| (&f.name, &f.type_name)).collect::<Vec<_>>(),
        "ttl": v.ttl(),
    })
}

/// Whether two views read and write the same (see [`sync_shape`]).
pub fn same_shape(a: &View, b: &View) -> bool {
    sync_shape(a) == sync_shape(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Unchanged,
    Updated,
    /// Source, entity, fields or ttl changed: a new shape generation; the
    /// watermark was forgotten, and the next completed run replaces every value
    /// of the old shape.
    Reshaped,
}

/// How often a registry change is retried when another applier changed the
/// same entry in between (each retry reads the entry again).
const CAS_ATTEMPTS: usize = 16;

/// Stores one valid view, deciding against the entry as it is now; with
/// `only_create`, does nothing (returns `None`) if the view exists.
async fn put_one(store: &ProfileStore, v: &View, only_create: bool) -> Result<Option<Applied>> {
    let id = v.id();
    let json = serde_json::to_string(v)?;
    for _ in 0..CAS_ATTEMPTS {
        let old_entry = store.registry_entry(&id).await?;
        if only_create && old_entry.is_some() {
            return Ok(None);
        }
        let outcome = match &old_entry {
            None => Applied::Created,
            Some(e) if *e == json => Applied::Unchanged,
            // An entry this version cannot read is replaced like a reshape.
            Some(e) => match serde_json::from_str::<View>(e) {
                Ok(o) if o == *v => Applied::Unchanged,
                Ok(o) if same_shape(&o, v) => Applied::Updated,
                _ => Applied::Reshaped,
            },
        };
        if outcome == Applied::Unchanged {
            return Ok(Some(outcome));
        }
        let change = match outcome {
            Applied::Created => Change::Create,
            Applied::Updated => Change::Update,
            _ => Change::Reshape,
        };
        if store
            .registry_put(&id, old_entry.as_deref(), &json, change)
            .await?
        {
            return Ok(Some(outcome));
        }
    }
    bail!("view `{id}` kept changing under concurrent applies; try again")
}

/// Validates all views, then stores them.
pub async fn apply(store: &ProfileStore, views: &[View]) -> Result<Vec<(ViewId, Applied)>> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for v in views {
        if let Err(e) = v.validate() {
            problems.push(e);
        }
        if !seen.insert(v.id()) {
            problems.push(format!("view `{}` appears twice in one apply", v.id()));
        }
    }
    if !problems.is_empty() {
        bail!("nothing applied: {}", problems.join("; "));
    }
    let mut out = Vec::new();
    for v in views {
        let outcome = put_one(store, v, false).await?.expect("not create-only");
        out.push((v.id(), outcome));
    }
    Ok(out)
}

/// Registers a valid view only if no view of that name and version exists,
/// atomically: of many concurrent creators exactly one gets `true`.
pub async fn create(store: &ProfileStore, view: &View) -> Result<bool> {
    view.validate().map_err(|e| anyhow::anyhow!(e))?;
    Ok(put_one(store, view, true).await?.is_some())
}

/// Parses the registry's entries; an unreadable or invalid entry (stored by an
/// older version, or by hand) is logged and skipped, never fatal.
fn parse_entries(entries: BTreeMap<String, String>) -> Vec<View> {
    let mut views = Vec::with_capacity(entries.len());
    for (id, json) in entries {
        match serde_json::from_str::<View>(&json)
            .map_err(|e| e.to_string())
            .and_then(|v| v.validate().map(|()| v))
        {
            Ok(v) => views.push(v),
            Err(e) => {
                tracing::error!(view = ?id, error = %e, "registry entry is unreadable or invalid; skipped")
            }
        }
    }
    views.sort_by_key(View::id);
    views
}

/// Every registered view, ordered by name and version.
pub async fn list(store: &ProfileStore) -> Result<Vec<View>> {
    Ok(parse_entries(store.registry_snapshot().await?.entries))
}

/// [`list`] with the registry's revision, read at the same moment.
pub async fn list_with_revision(store: &ProfileStore) -> Result<(u64, Vec<View>)> {
    let snap = store.registry_snapshot().await?;
    Ok((snap.revision, parse_entries(snap.entries)))
}

/// Views matching `NAME` (every version) or `NAME:VERSION`.
pub async fn select(store: &ProfileStore, selector: &str) -> Result<Vec<View>> {
    let (name, version) = ViewId::parse_selector(selector).map_err(|e| anyhow::anyhow!(e))?;
    let found: Vec<View> = list(store)
        .await?
        .into_iter()
        .filter(|v| v.name == name && version.is_none_or(|n| n == v.version))
        .collect();
    if found.is_empty() {
        bail!("no registered view `{selector}`");
    }
    Ok(found)
}

/// One registered view, if any.
pub async fn get(store: &ProfileStore, id: &ViewId) -> Result<Option<View>> {
    store
        .registry_entry(id)
        .await?
        .map(|s| serde_json::from_str(&s).with_context(|| format!("registry entry `{id}`")))
        .transpose()
}

/// What [`erase`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Entities whose values were removed (others had none, or were erased before).
    pub removed: u64,
    /// Entities named (each now has a tombstone).
    pub entities: u64,
    /// The erasure time (RFC 3339): rows stamped at or before it never return.
    pub erased_at: String,
    /// `NAME:VERSION` of the one view erased; `None`: every view of the entity.
    pub view: Option<String>,
}

/// Erases entities `values` of entity `join_key`: every view's values, or
/// those of the views `selector` names (NAME or NAME:VERSION). Refuses an
/// entity no registered view uses, and a selector naming no view of it, so a
/// typo never passes for an erasure: those are the inner `Err`, saying why.
pub async fn erase(
    store: &ProfileStore,
    join_key: &str,
    values: &[String],
    selector: Option<&str>,
) -> Result<std::result::Result<Erased, String>> {
    let views = list(store).await?;
    let of_entity: Vec<&View> = views
        .iter()
        .filter(|v| v.entity.join_key() == join_key)
        .collect();
    if of_entity.is_empty() {
        return Ok(Err(format!(
            "no registered view has entity `{}`",
            crate::model::printable(join_key)
        )));
    }
    let at = crate::time::now();
    let (removed, view) = match selector {
        None => (store.erase(join_key, values, None, at).await?, None),
        Some(selector) => {
            let (name, version) =
                ViewId::parse_selector(selector).map_err(|e| anyhow::anyhow!(e))?;
            let chosen: Vec<&View> = of_entity
                .iter()
                .copied()
                .filter(|v| v.name == name && version.is_none_or(|n| n == v.version))
                .collect();
            if chosen.is_empty() {
                return Ok(Err(format!(
                    "no registered view `{}` has entity `{}`",
                    crate::model::printable(selector),
                    crate::model::printable(join_key)
                )));
            }
            let mut removed = 0;
            for v in &chosen {
                removed = removed.max(store.erase(join_key, values, Some(v), at).await?);
            }
            (removed, Some(selector.to_string()))
        }
    };
    Ok(Ok(Erased {
        removed,
        entities: values.len() as u64,
        erased_at: crate::time::format_nanos(at),
        view,
    }))
}

/// What [`delete`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Entity hashes whose fields of this view were removed (0 without purge).
    pub purged_entities: u64,
}

/// Unregisters a view: no more runs, and its watermark, last run and last full
/// read are forgotten, so registering it again resyncs from scratch (and its
/// first completed run removes what this registration left). With `purge`,
/// the view's values and `_ts:` field are also removed from every entity hash
/// (other views' fields on the same hash stay); this SCANs the keys of the
/// view's entity, so it costs a pass over them. A run in flight cannot commit
/// afterwards, but may write a page back; purge again after it ends.
/// `None` when the view is not registered.
pub async fn delete(store: &ProfileStore, id: &ViewId, purge: bool) -> Result<Option<Deleted>> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(entry) = store.registry_entry(id).await? else {
            return Ok(None);
        };
        if !store.registry_delete(id, &entry).await? {
            continue;
        }
        let purged_entities = match serde_json::from_str::<View>(&entry) {
            Ok(view) if purge => store.purge_view(&view).await?,
            _ => 0,
        };
        return Ok(Some(Deleted { purged_entities }));
    }
    bail!("view `{id}` kept changing under concurrent applies; try again")
}

/// One registered view with its watermark, lease holder and last run: what
/// `status` prints, `status --json` lists and `GET /api/v1/sync/status` returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ViewStatus {
    pub view: String,
    pub version: u32,
    pub feast_name: String,
    pub online: bool,
    pub table: String,
    pub watermark: Option<String>,
    pub lease_holder: Option<String>,
    pub last_run: Option<crate::profiles::RunRecord>,
}

/// Every registered view's [`ViewStatus`], ordered by name and version.
pub async fn status(store: &ProfileStore) -> Result<Vec<ViewStatus>> {
    let mut rows = Vec::new();
    for v in list(store).await? {
        let id = v.id();
        rows.push(ViewStatus {
            feast_name: v.feast_name(),
            online: v.online,
            table: crate::sync::table_of(&v).to_string(),
            watermark: store.watermark(&id).await?.map(crate::time::format_nanos),
            lease_holder: store.lease_holder(&id).await?,
            last_run: store.last_run(&id).await?,
            view: v.name,
            version: v.version,
        });
    }
    Ok(rows)
}
