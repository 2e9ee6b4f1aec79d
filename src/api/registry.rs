//! Registry endpoints as the Signals SDK calls them.
//!
//! Promises: `POST registry/views/` creates (201, echoing the view) or answers
//! 400 when that name and version exist, which is what makes SDK 0.1.5 retry
//! with `PUT .../versions/{v}`; an invalid view is a 422 listing every
//! problem by key, and nothing is stored. `GET` replies carry `entity_key`,
//! `view_or_entity_ttl`, `feast_name` and `stream_source_name` as the SDK's
//! `ViewResponse` demands. `DELETE` stops syncing and forgets the watermark;
//! profile values stay unless `?purge=true`. `feature_store/apply` starts the
//! first run of views applied since the last call. SDK 0.4.x
//! `attribute_groups` / `attribute_keys` are the same views and entities
//! under their new names (`attribute_key` for `entity`; `is_published: false`
//! stops syncing like `online: false`). Input is parsed strictly: a version
//! in a path is digits without sign or leading zero (else 400 naming
//! `version`); `online`, `offline` and `is_published` must be JSON booleans;
//! names and text obey the limits of `model` (entity names the rule of a
//! view's `entity.name`); a problem never quotes more than a few dozen
//! characters of a value, control characters escaped.
//!
//! Assumes entities are only names (join key = name): the built-in four are
//! always known; others applied here are kept for listing, and a view may use
//! any entity whose column exists.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value as Json_};

use super::{json_body, ApiError, ApiResult, Shared};
use crate::model::{identifier_problem, quoted, text_problem, View, ViewId, BUILTIN_ENTITIES};
use crate::registry::{self, Applied};
use crate::scheduler::Command;

/// Which SDK generation's names a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// 0.1.x: views keyed by `entity`.
    View,
    /// 0.3+/0.4.x: attribute groups keyed by `attribute_key`.
    Group,
}

impl Dialect {
    fn noun(self) -> &'static str {
        match self {
            Dialect::View => "view",
            Dialect::Group => "attribute group",
        }
    }
}

/// A version from a path: decimal digits only, no sign, no leading zero,
/// 1 to `u32::MAX` (`+1`, `01`, `0`, `-1` and `4294967296` are 400s naming
/// the key, so one view has exactly one spelling of its URL).
pub fn parse_version(raw: &str) -> ApiResult<u32> {
    let bad =
        |why: &str| ApiError::bad_request(format!("version: `{}` in the path {why}", quoted(raw)));
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not a whole number (digits only, such as 1)"));
    }
    if raw.starts_with('0') {
        return Err(bad("must be 1 or more, written without leading zeros"));
    }
    raw.parse::<u32>()
        .map_err(|_| bad(&format!("is larger than the maximum of {}", u32::MAX)))
}

/// Refuses a present `key` that is not a JSON boolean (`0`, `null` and
/// `"false"` are not), naming the key.
fn boolean_key(obj: &Map<String, Json_>, key: &str) -> Option<String> {
    match obj.get(key) {
        None | Some(Json_::Bool(_)) => None,
        Some(other) => Some(format!(
            "{key}: expected true or false, not `{}`",
            quoted(&other.to_string())
        )),
    }
}

/// Checks the keys a view cannot do without, so a missing one is named the
/// way `View::problems` names the rest (serde would say "missing field").
fn required_keys(obj: &Map<String, Json_>) -> Vec<String> {
    let absent = |o: &Map<String, Json_>, k: &str| o.get(k).is_none_or(Json_::is_null);
    let mut p = Vec::new();
    for key in ["name", "entity", "batch_source", "fields"] {
        if absent(obj, key) {
            p.push(match key {
                "batch_source" => "batch_source: required (this server syncs views read from a warehouse table; stream views are not supported)".to_string(),
                "fields" if obj.contains_key("attributes") => "fields: required (attributes computed from events are not supported; list the table's columns as fields)".to_string(),
                _ => format!("{key}: required"),
            });
        }
    }
    match obj.get("entity") {
        Some(Json_::Object(e)) if absent(e, "name") => p.push("entity.name: required".into()),
        Some(Json_::Object(_)) | None | Some(Json_::Null) => {}
        Some(_) => {
            p.push("entity: expected an object such as {\"name\": \"domain_userid\"}".into())
        }
    }
    match obj.get("batch_source") {
        Some(Json_::Object(b)) => {
            for key in ["table", "timestamp_field"] {
                if absent(b, key) {
                    p.push(format!("batch_source.{key}: required"));
                }
            }
        }
        Some(Json_::Null) | None => {}
        Some(_) => p.push("batch_source: expected an object".into()),
    }
    match obj.get("fields") {
        Some(Json_::Array(fields)) => {
            if fields.is_empty() {
                p.push("fields: a view needs at least one field".into());
            }
            for (i, f) in fields.iter().enumerate() {
                match f {
                    Json_::Object(f) => {
                        for key in ["name", "type"] {
                            if absent(f, key) {
                                p.push(format!("fields[{i}].{key}: required"));
                            }
                        }
                    }
                    _ => p.push(format!(
                        "fields[{i}]: expected an object with name and type"
                    )),
                }
            }
        }
        Some(Json_::Null) | None => {}
        Some(_) => p.push("fields: expected a list".into()),
    }
    p
}

/// A request body as a valid view, or a 422 naming every problem.
fn parse_view(body: Json_, dialect: Dialect) -> ApiResult<View> {
    let Json_::Object(mut obj) = body else {
        return Err(ApiError::unprocessable(format!(
            "request body: expected a JSON object (one {})",
            dialect.noun()
        )));
    };
    if dialect == Dialect::Group {
        if let Some(key) = obj.remove("attribute_key") {
            let name = key.get("name").cloned().unwrap_or(Json_::Null);
            obj.entry("entity").or_insert(json!({ "name": name }));
        }
    }
    let name = quoted(obj.get("name").and_then(Json_::as_str).unwrap_or(""));
    let invalid = |problems: Vec<String>| {
        let mut e = ApiError::unprocessable(format!(
            "{} `{name}`: {}",
            dialect.noun(),
            problems.join("; ")
        ));
        e.problems = problems;
        e
    };
    let mut flags: Vec<String> = ["online", "offline"]
        .into_iter()
        .filter_map(|key| boolean_key(&obj, key))
        .collect();
    if dialect == Dialect::Group {
        flags.extend(boolean_key(&obj, "is_published"));
        if obj.remove("is_published") == Some(Json_::Bool(false)) {
            obj.insert("online".into(), Json_::Bool(false));
        }
    }
    if !flags.is_empty() {
        return Err(invalid(flags));
    }
    let missing = required_keys(&obj);
    if !missing.is_empty() {
        return Err(invalid(missing));
    }
    let view: View = serde_path_to_error::deserialize(Json_::Object(obj)).map_err(|e| {
        let path = e.path().to_string();
        // serde quotes a mistyped value whole: cut it.
        invalid(vec![format!("{path}: {}", quoted(&e.inner().to_string()))])
    })?;
    let problems = view.problems();
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    Ok(view)
}

/// A view as `GET` returns it: the stored JSON plus what `ViewResponse` requires.
pub fn view_json(v: &View) -> Json_ {
    let mut j = serde_json::to_value(v).expect("a view serializes");
    j["entity_key"] = json!(v.entity.join_key());
    j["view_or_entity_ttl"] = json!(v.ttl);
    j["feast_name"] = json!(v.feast_name());
    j["stream_source_name"] = Json_::Null;
    j
}

fn shaped(v: &View, dialect: Dialect) -> Json_ {
    let mut j = view_json(v);
    if dialect == Dialect::Group {
        if let Some(entity) = j.as_object_mut().and_then(|o| o.remove("entity")) {
            j["attribute_key"] = entity;
        }
        // What 0.4.x's `AttributeGroupResponse` requires besides the view.
        j["attribute_key"]["blobl_path"] = Json_::Null;
        j["attribute_key_or_name"] = json!(v.entity.join_key());
        j["attribute_group_or_attribute_key_ttl"] = json!(v.ttl);
        j["full_name"] = json!(v.feast_name());
        j["is_published"] = json!(v.online);
    }
    j
}

/// Stores the view, tells the scheduler, and remembers views whose first run
/// `feature_store/apply` should start.
async fn store_view(state: &Shared, view: &View) -> ApiResult<Applied> {
    let id = view.id();
    let before = registry::get(&state.store, &id).await?;
    let applied = registry::apply(&state.store, std::slice::from_ref(view))
        .await?
        .pop()
        .map(|(_, a)| a)
        .unwrap_or(Applied::Unchanged);
    announce(state, view, applied, before.as_ref()).await;
    Ok(applied)
}

/// Tells the scheduler about a stored view, and remembers it for
/// `feature_store/apply` when it turned online or was reshaped.
async fn announce(state: &Shared, view: &View, applied: Applied, before: Option<&View>) {
    let id = view.id();
    let turned_online = view.online && before.is_none_or(|b| !b.online);
    if view.online && (turned_online || applied == Applied::Reshaped) {
        state
            .pending
            .lock()
            .expect("pending lock")
            .insert(id.clone());
    }
    tracing::info!(view = %id, outcome = ?applied, "view applied over HTTP");
    state.scheduler.send(Command::Refresh).await;
}

async fn create(
    state: Shared,
    body: Result<Bytes, BytesRejection>,
    d: Dialect,
) -> ApiResult<(StatusCode, Json<Json_>)> {
    let view = parse_view(json_body(body)?, d)?;
    if !registry::create(&state.store, &view).await? {
        let base = match d {
            Dialect::View => "views",
            Dialect::Group => "attribute_groups",
        };
        return Err(ApiError::bad_request(format!(
            "{} `{}` version {} already exists; change it with PUT /api/v1/registry/{base}/{}/versions/{}",
            d.noun(),
            view.name,
            view.version,
            view.name,
            view.version
        )));
    }
    announce(&state, &view, Applied::Created, None).await;
    Ok((StatusCode::CREATED, Json(shaped(&view, d))))
}

async fn put(
    state: Shared,
    name: String,
    version: String,
    body: Result<Bytes, BytesRejection>,
    d: Dialect,
) -> ApiResult<Json<Json_>> {
    let version = parse_version(&version)?;
    let view = parse_view(json_body(body)?, d)?;
    if view.name != name || view.version != version {
        return Err(ApiError::unprocessable(format!(
            "name/version: the body names `{}` version {}, the path `{}` version {version}",
            view.name,
            view.version,
            quoted(&name)
        )));
    }
    store_view(&state, &view).await?;
    Ok(Json(shaped(&view, d)))
}

async fn one(
    state: Shared,
    name: String,
    version: Option<String>,
    d: Dialect,
) -> ApiResult<Json<Json_>> {
    let view = match version {
        Some(v) => {
            let id = ViewId {
                name: name.clone(),
                version: parse_version(&v)?,
            };
            registry::get(&state.store, &id).await?.ok_or_else(|| {
                ApiError::not_found(format!(
                    "{} `{}` version {} is not registered",
                    d.noun(),
                    quoted(&name),
                    id.version
                ))
            })?
        }
        None => registry::list(&state.store)
            .await?
            .into_iter()
            .filter(|v| v.name == name)
            .max_by_key(|v| v.version)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no {} named `{}` is registered",
                    d.noun(),
                    quoted(&name)
                ))
            })?,
    };
    Ok(Json(shaped(&view, d)))
}

async fn list(state: Shared, q: BTreeMap<String, String>, d: Dialect) -> ApiResult<Json<Json_>> {
    let flag = |key: &str| -> ApiResult<Option<bool>> {
        q.get(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "{key}: `{v}` is not true or false"
                ))),
            })
            .transpose()
    };
    let (offline, online) = (flag("offline")?, flag("online")?);
    let views: Vec<Json_> = registry::list(&state.store)
        .await?
        .iter()
        .filter(|v| offline.is_none_or(|o| v.offline == o))
        .filter(|v| online.is_none_or(|o| v.online == o))
        .filter(|v| q.get("name").is_none_or(|n| &v.name == n))
        .map(|v| shaped(v, d))
        .collect();
    Ok(Json(Json_::Array(views)))
}

pub async fn create_view(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Json_>)> {
    create(s, body, Dialect::View).await
}
pub async fn create_group(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Json_>)> {
    create(s, body, Dialect::Group).await
}
pub async fn put_view(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Json_>> {
    put(s, name, version, body, Dialect::View).await
}
pub async fn put_group(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Json_>> {
    put(s, name, version, body, Dialect::Group).await
}
pub async fn get_view(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Json_>> {
    one(s, name, Some(version), Dialect::View).await
}
pub async fn get_group(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Json_>> {
    one(s, name, Some(version), Dialect::Group).await
}
pub async fn get_latest_view(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Json_>> {
    one(s, name, None, Dialect::View).await
}
pub async fn get_latest_group(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Json_>> {
    one(s, name, None, Dialect::Group).await
}
pub async fn list_views(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<Json_>> {
    list(s, q, Dialect::View).await
}
pub async fn list_groups(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<Json_>> {
    list(s, q, Dialect::Group).await
}

/// `DELETE .../versions/{v}[?purge=true]`: stop syncing; keep the data unless purged.
pub async fn delete_view(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<Json_>> {
    let id = ViewId {
        name,
        version: parse_version(&version)?,
    };
    let purge = match q.get("purge").map(|p| p.to_ascii_lowercase()) {
        None => false,
        Some(p) if p == "true" || p == "1" => true,
        Some(p) if p == "false" || p == "0" => false,
        Some(p) => {
            return Err(ApiError::bad_request(format!(
                "purge: `{p}` is not true or false"
            )))
        }
    };
    let deleted = registry::delete(&state.store, &id, purge)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "view `{}` version {} is not registered",
                quoted(&id.name),
                id.version
            ))
        })?;
    state.pending.lock().expect("pending lock").remove(&id);
    state.metrics.forget(&id);
    state.scheduler.send(Command::Forget(id.clone())).await;
    tracing::info!(view = %id, purge, purged_entities = deleted.purged_entities, "view deleted over HTTP");
    Ok(Json(json!({
        "name": id.name,
        "version": id.version,
        "deleted": true,
        "purged": purge,
        "purged_entities": deleted.purged_entities,
    })))
}

/// `POST feature_store/apply`: views applied since the last call run now
/// instead of at the scheduler's next registry read.
pub async fn feature_store_apply(State(state): State<Shared>) -> ApiResult<Json<Json_>> {
    let pending: Vec<ViewId> = std::mem::take(&mut *state.pending.lock().expect("pending lock"))
        .into_iter()
        .collect();
    let mut started = Vec::new();
    for id in pending {
        if registry::get(&state.store, &id)
            .await?
            .is_some_and(|v| v.online)
        {
            state.scheduler.send(Command::RunNow(id.clone())).await;
            started.push(id.to_string());
        }
    }
    state.scheduler.send(Command::Refresh).await;
    Ok(Json(
        json!({ "status": "applied", "runs_started": started }),
    ))
}

/// An entity body: an object whose `name` follows the rule of a view's
/// `entity.name` (a warehouse identifier, see `model::identifier_problem`)
/// and whose `description`, if any, is bounded text.
fn parse_entity(body: Json_) -> ApiResult<(String, Json_)> {
    let Json_::Object(obj) = &body else {
        return Err(ApiError::unprocessable(
            "request body: expected a JSON object such as {\"name\": \"user_id\"}",
        ));
    };
    let name = match obj.get("name") {
        Some(Json_::String(name)) => name.clone(),
        None | Some(Json_::Null) => return Err(ApiError::unprocessable("name: required")),
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "name: expected text, not `{}`",
                quoted(&other.to_string())
            )))
        }
    };
    let problem = identifier_problem("name", &name).or_else(|| match obj.get("description") {
        None | Some(Json_::Null) => None,
        Some(Json_::String(d)) => text_problem("description", d),
        Some(other) => Some(format!(
            "description: expected text, not `{}`",
            quoted(&other.to_string())
        )),
    });
    if let Some(problem) = problem {
        return Err(ApiError::unprocessable(format!("entity: {problem}")));
    }
    Ok((name, body))
}

async fn stored_entities(state: &Shared) -> ApiResult<BTreeMap<String, Json_>> {
    let all = state.store.entities().await?;
    Ok(all
        .into_iter()
        .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|v| (k, v)))
        .collect())
}

pub async fn list_entities(State(state): State<Shared>) -> ApiResult<Json<Json_>> {
    let mut out: Vec<Json_> = BUILTIN_ENTITIES
        .iter()
        .map(|n| json!({ "name": n }))
        .collect();
    out.extend(
        stored_entities(&state)
            .await?
            .into_iter()
            .filter(|(k, _)| !BUILTIN_ENTITIES.contains(&k.as_str()))
            .map(|(_, v)| v),
    );
    Ok(Json(Json_::Array(out)))
}

pub async fn get_entity(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Json_>> {
    if BUILTIN_ENTITIES.contains(&name.as_str()) {
        return Ok(Json(json!({ "name": name })));
    }
    stored_entities(&state)
        .await?
        .remove(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("entity `{}` is not registered", quoted(&name))))
}

async fn save_entity(state: &Shared, name: &str, body: &Json_) -> ApiResult<()> {
    state.store.put_entity(name, &body.to_string()).await?;
    Ok(())
}

pub async fn create_entity(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Json_>)> {
    let (name, body) = parse_entity(json_body(body)?)?;
    if BUILTIN_ENTITIES.contains(&name.as_str())
        || stored_entities(&state).await?.contains_key(&name)
    {
        return Err(ApiError::bad_request(format!(
            "entity `{name}` already exists; change it with PUT /api/v1/registry/entities/{name}"
        )));
    }
    save_entity(&state, &name, &body).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn put_entity(
    State(state): State<Shared>,
    Path(path_name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Json_>> {
    let (name, body) = parse_entity(json_body(body)?)?;
    if name != path_name {
        return Err(ApiError::unprocessable(format!(
            "entity: name: the body names `{name}`, the path `{}`",
            quoted(&path_name)
        )));
    }
    // Built-ins are fixed (join key = name); echoing keeps the SDK's apply happy.
    if !BUILTIN_ENTITIES.contains(&name.as_str()) {
        save_entity(&state, &name, &body).await?;
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Json_ {
        json!({"name":"v","version":1,"entity":{"name":"domain_userid"},
               "batch_source":{"name":"s","database":"D","schema":"S","table":"T","timestamp_field":"UPDATED_AT"},
               "online":true,"owner":"user@company.com",
               "fields":[{"name":"A","type":"int32"}]})
    }

    fn problems_of(body: Json_) -> String {
        parse_view(body, Dialect::View).unwrap_err().detail
    }

    #[test]
    fn api_view_missing_timestamp_field_is_named() {
        let mut b = seed();
        b["batch_source"]
            .as_object_mut()
            .unwrap()
            .remove("timestamp_field");
        assert!(problems_of(b).contains("batch_source.timestamp_field: required"));
    }

    #[test]
    fn api_view_problems_name_the_field_type_owner_and_empty_fields() {
        let mut b = seed();
        b["fields"][0]["type"] = json!("int128");
        b["owner"] = json!("bob");
        let d = problems_of(b);
        assert!(d.contains("fields[0] `A`: unknown type `int128`"), "{d}");
        assert!(d.contains("owner: `bob` is not an email"), "{d}");
        let mut b = seed();
        b["fields"] = json!([]);
        assert!(problems_of(b).contains("fields: a view needs at least one field"));
    }

    #[test]
    fn api_attribute_group_maps_attribute_key_and_publish_state() {
        let mut b = seed();
        let key = b.as_object_mut().unwrap().remove("entity").unwrap();
        b["attribute_key"] = key;
        b["is_published"] = json!(false);
        let v = parse_view(b, Dialect::Group).unwrap();
        assert_eq!(v.entity.name, "domain_userid");
        assert!(!v.online);
        let out = shaped(&v, Dialect::Group);
        assert_eq!(out["attribute_key"]["name"], "domain_userid");
        assert_eq!(out["is_published"], false);
        assert_eq!(out["feast_name"], "v_v1");
    }

    #[test]
    fn api_view_mistyped_value_names_its_key() {
        let mut b = seed();
        b["fields"][0]["name"] = json!(5);
        let d = problems_of(b);
        assert!(
            d.contains("fields[0].name: invalid type: integer `5`"),
            "{d}"
        );
        let mut b = seed();
        b["version"] = json!("one");
        assert!(problems_of(b).contains("version: invalid type"));
    }

    #[test]
    fn versions_with_a_sign_a_leading_zero_or_out_of_u32_are_400s_naming_the_version() {
        for (raw, want) in [("1", 1), ("7", 7), ("4294967295", u32::MAX)] {
            assert_eq!(parse_version(raw).unwrap(), want, "{raw}");
        }
        for (raw, why) in [
            ("+1", "not a whole number"),
            ("-1", "not a whole number"),
            (" 1", "not a whole number"),
            ("1.0", "not a whole number"),
            ("", "not a whole number"),
            ("１", "not a whole number"),
            ("01", "without leading zeros"),
            ("00", "without leading zeros"),
            ("0", "must be 1 or more"),
            ("4294967296", "larger than the maximum of 4294967295"),
            ("99999999999999999999999", "larger than the maximum"),
        ] {
            let e = parse_version(raw).expect_err(raw);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{raw}");
            assert!(
                e.detail
                    .starts_with(&format!("version: `{raw}` in the path"))
                    && e.detail.contains(why),
                "{raw}: {}",
                e.detail
            );
        }
    }

    #[test]
    fn publish_flags_that_are_not_json_booleans_are_422s_naming_the_key() {
        let mut group = seed();
        let key = group.as_object_mut().unwrap().remove("entity").unwrap();
        group["attribute_key"] = key;
        for bad in [json!(0), json!(1), Json_::Null, json!("false"), json!([])] {
            let mut b = group.clone();
            b["is_published"] = bad.clone();
            let e = parse_view(b, Dialect::Group).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(
                e.problems,
                [format!("is_published: expected true or false, not `{bad}`")]
            );
            for key in ["online", "offline"] {
                for dialect in [Dialect::View, Dialect::Group] {
                    let mut b = if dialect == Dialect::View {
                        seed()
                    } else {
                        group.clone()
                    };
                    b[key] = bad.clone();
                    let e = parse_view(b, dialect).unwrap_err();
                    assert_eq!(
                        e.problems,
                        [format!("{key}: expected true or false, not `{bad}`")],
                        "{key} = {bad}"
                    );
                }
            }
        }
        let mut b = group.clone();
        b["is_published"] = json!(true);
        assert!(parse_view(b, Dialect::Group).unwrap().online);
    }

    #[test]
    fn entity_names_follow_the_view_entity_rule_and_are_never_echoed_whole() {
        for ok in ["user_id", "Ünïcode \"col\" name"] {
            let (name, _) = parse_entity(json!({ "name": ok })).unwrap();
            assert_eq!(name, ok);
        }
        let huge = "e".repeat(100_000);
        for (body, want) in [
            (
                json!({ "name": "a\u{0}b" }),
                "entity: name: `a\\u{0}b` holds a control",
            ),
            (json!({ "name": huge }), "entity: name: `eeee"),
            (json!({ "name": "" }), "entity: name: must not be empty"),
            (json!({ "name": 5 }), "name: expected text, not `5`"),
            (json!({}), "name: required"),
            (json!([]), "request body: expected a JSON object"),
            (
                json!({ "name": "ok", "description": "d".repeat(5000) }),
                "entity: description: is 5000 bytes long; the limit is 4096",
            ),
        ] {
            let e = parse_entity(body).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(
                e.detail.starts_with(want) && e.detail.len() < 300,
                "{}",
                e.detail
            );
        }
        // The same rule as a view's entity.
        let mut b = seed();
        b["entity"]["name"] = json!("a\u{0}b");
        assert!(problems_of(b).contains("entity.name: `a\\u{0}b` holds a control character"));
    }

    #[test]
    fn a_megabyte_name_or_mistyped_value_is_never_echoed_whole() {
        let huge = "n".repeat(1 << 20);
        let mut b = seed();
        b["name"] = json!(huge);
        let e = parse_view(b, Dialect::View).unwrap_err();
        assert!(
            e.detail.len() < 500 && e.detail.contains("the limit is 128"),
            "{}",
            e.detail
        );
        let mut b = seed();
        b["version"] = json!(huge);
        let e = parse_view(b, Dialect::View).unwrap_err();
        assert!(
            e.detail.len() < 500 && e.detail.contains("version: invalid type"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn api_view_response_has_what_the_sdk_validates() {
        let v = parse_view(seed(), Dialect::View).unwrap();
        let j = view_json(&v);
        assert_eq!(j["entity_key"], "domain_userid");
        assert_eq!(j["feast_name"], "v_v1");
        assert!(j.as_object().unwrap().contains_key("stream_source_name"));
        assert!(j.as_object().unwrap().contains_key("view_or_entity_ttl"));
    }
}
