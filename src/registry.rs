//! The registry of applied views: read from files, validated, kept in Redis.
//!
//! Promises: `apply` validates every view first and stores none of them if any
//! is invalid (nothing half-applied); errors name the file, the view and the
//! key. Re-applying an identical view changes nothing; re-applying a view whose
//! source, entity or fields changed under the same version forgets its
//! watermark, so the next run reads the whole table into the new shape.
//! Assumes views are small (a Redis hash holds them all).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use redis::AsyncCommands;

use crate::model::{View, ViewId};
use crate::profiles::ProfileStore;

const VIEWS_KEY: &str = "views";

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

/// Like [`read_globs`], but file by file: a file that cannot be read or holds
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

/// The parts of a view that decide what a run reads and writes.
fn sync_shape(v: &View) -> serde_json::Value {
    serde_json::json!({
        "entity": v.entity.name,
        "source": [&v.batch_source.database, &v.batch_source.schema,
                   &v.batch_source.table, &v.batch_source.timestamp_field],
        "fields": v.fields.iter().map(|f| (&f.name, &f.type_name)).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Unchanged,
    Updated,
    /// Source, entity or fields changed: the watermark was forgotten.
    Reshaped,
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
    let mut conn = store.conn();
    let key = store.state_key(VIEWS_KEY);
    let mut out = Vec::new();
    for v in views {
        let id = v.id();
        let old: Option<String> = conn.hget(&key, id.to_string()).await?;
        let old: Option<View> = old.and_then(|s| serde_json::from_str(&s).ok());
        let outcome = match &old {
            None => Applied::Created,
            Some(o) if o == v => Applied::Unchanged,
            Some(o) if sync_shape(o) != sync_shape(v) => Applied::Reshaped,
            Some(_) => Applied::Updated,
        };
        if outcome != Applied::Unchanged {
            let _: () = conn
                .hset(&key, id.to_string(), serde_json::to_string(v)?)
                .await?;
        }
        if outcome == Applied::Reshaped {
            store.reset_watermark(&id, None).await?;
        }
        out.push((id, outcome));
    }
    Ok(out)
}

/// Every registered view, ordered by name and version.
pub async fn list(store: &ProfileStore) -> Result<Vec<View>> {
    let mut conn = store.conn();
    let all: BTreeMap<String, String> = conn.hgetall(store.state_key(VIEWS_KEY)).await?;
    let mut views = Vec::with_capacity(all.len());
    for (id, json) in all {
        match serde_json::from_str::<View>(&json)
            .map_err(|e| e.to_string())
            .and_then(|v| v.validate().map(|()| v))
        {
            Ok(v) => views.push(v),
            Err(e) => {
                tracing::error!(view = %id, error = %e, "registry entry is unreadable; skipped")
            }
        }
    }
    views.sort_by_key(View::id);
    Ok(views)
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
    let mut conn = store.conn();
    let json: Option<String> = conn
        .hget(store.state_key(VIEWS_KEY), id.to_string())
        .await?;
    json.map(|s| serde_json::from_str(&s).with_context(|| format!("registry entry `{id}`")))
        .transpose()
}

/// What [`delete`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Entity hashes whose fields of this view were removed (0 without purge).
    pub purged_entities: u64,
}

/// Unregisters a view: no more runs, and its watermark, last run and last full
/// read are forgotten, so registering it again resyncs from scratch. With
/// `purge`, the view's values and `_ts:` field are also removed from every
/// entity hash (other views' fields on the same hash stay); this SCANs the
/// keys of the view's entity, so it costs a pass over them. A run that is in
/// flight during a purge may write a page back; purge again after it ends.
/// `None` when the view is not registered.
pub async fn delete(store: &ProfileStore, id: &ViewId, purge: bool) -> Result<Option<Deleted>> {
    let Some(view) = get(store, id).await? else {
        return Ok(None);
    };
    let mut conn = store.conn();
    let _: () = conn
        .hdel(store.state_key(VIEWS_KEY), id.to_string())
        .await?;
    store.reset_watermark(id, None).await?;
    let _: () = conn
        .del(store.state_key(&format!("run:{}:{}", id.name, id.version)))
        .await?;
    let purged_entities = if purge {
        purge_values(store, &view).await?
    } else {
        0
    };
    Ok(Some(Deleted { purged_entities }))
}

/// Escapes the glob metacharacters of Redis `MATCH` in a binary key part.
fn glob_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

async fn purge_values(store: &ProfileStore, view: &View) -> Result<u64> {
    use crate::profiles::feast;
    // Every key of this entity starts with the serialized join key and ends
    // with the project; the value in between varies.
    let empty = feast::entity_key(view.entity.join_key(), b"", "");
    let mut pattern = glob_escape(&empty[..empty.len() - 4]);
    pattern.push(b'*');
    pattern.extend(glob_escape(store.project().as_bytes()));
    let fields = crate::profiles::view_hash_fields(view);
    let mut conn = store.conn();
    let mut cursor: u64 = 0;
    let mut purged = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.hdel(k, &fields);
            }
            let removed: Vec<u64> = pipe.query_async(&mut conn).await?;
            purged += removed.iter().filter(|n| **n > 0).count() as u64;
        }
        if next == 0 {
            return Ok(purged);
        }
        cursor = next;
    }
}

/// Every registered view with its watermark, lease holder and last run: what
/// `status --json` prints and `GET /api/v1/sync/status` returns.
pub async fn status(store: &ProfileStore) -> Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    for v in list(store).await? {
        let id = v.id();
        let wm = store.watermark(&id).await?;
        let run = store.last_run(&id).await?;
        rows.push(serde_json::json!({
            "view": v.name,
            "version": v.version,
            "feast_name": v.feast_name(),
            "online": v.online,
            "table": crate::sync::table_of(&v).to_string(),
            "watermark": wm.map(crate::sync::format_nanos),
            "lease_holder": store.lease_holder(&id).await?,
            "last_run": run,
        }));
    }
    Ok(rows)
}
