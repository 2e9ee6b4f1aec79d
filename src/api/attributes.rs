//! `POST /api/v1/get-online-attributes`: reading the Profiles Store the way
//! the Signals SDK asks.
//!
//! Promises: accepts `entities` (0.1.x) or `attribute_keys` (0.4.x), a map of
//! join key to a list of identifiers, and `attributes` as
//! `"{view}_v{version}:{attribute}"`; answers column-shaped JSON: each join
//! key with its identifiers, and per attribute one value per identifier, in
//! order (`null` where the entity has no profile). Names are the attribute's
//! own, or `{feature_view}__{attribute}` with `full_attribute_names` (Feast's
//! convention). An unknown view or attribute is a 404 that names it; a
//! malformed request is a 422 naming the key. Values decode as
//! `profiles::read` documents; only the attributes asked for are read, so a
//! stored value that cannot be decoded fails only the requests that ask for
//! it (a 500 naming the field). Services (`service`) are not supported.
//!
//! A request names at most `api.max_entities` identifiers and asks for at most
//! `api.max_cells` values (entities x attributes), else it is a 413 naming the
//! limit, so the work and memory of one request stay bounded. A request costs
//! one round trip per Redis node: every view's distinct entities go in one
//! read (`ProfileStore::read_views`), and views come from memory
//! ([`super::views`]), checked against the registry as of now before an
//! unknown view or attribute is answered 404.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{Map, Value as Json_};

use super::{json_body, ApiError, ApiResult, Shared};
use crate::model::View;

/// One view's share of a request.
struct Read<'a> {
    view: &'a View,
    /// The view's fields asked for (indices into `view.fields`), ascending.
    fields: Vec<usize>,
    /// The distinct identifiers asked for, sorted.
    ids: Vec<&'a str>,
}

/// One requested attribute, resolved.
struct Wanted {
    feast_name: String,
    /// Index into the view's fields.
    field: usize,
    column: String,
}

/// The requested attributes against `views`: a 404 names an unknown view or
/// attribute, a 422 an attribute whose join key the request lacks or a
/// column asked for twice.
fn resolve(
    views: &HashMap<String, View>,
    attributes: &[String],
    keys: &BTreeMap<String, Vec<Option<String>>>,
    full: bool,
) -> ApiResult<Vec<Wanted>> {
    let mut wanted: Vec<Wanted> = Vec::with_capacity(attributes.len());
    for (i, a) in attributes.iter().enumerate() {
        let (fv, name) = a.split_once(':').ok_or_else(|| {
            ApiError::unprocessable(format!(
                "attributes[{i}]: `{a}` is not `{{view}}_v{{version}}:{{attribute}}`"
            ))
        })?;
        let view = views.get(fv).ok_or_else(|| {
            ApiError::not_found(format!(
                "attributes[{i}]: `{a}`: no view `{fv}` is registered"
            ))
        })?;
        let field = view
            .fields
            .iter()
            .position(|f| f.name == name)
            .or_else(|| {
                view.fields
                    .iter()
                    .position(|f| f.name.eq_ignore_ascii_case(name))
            })
            .ok_or_else(|| {
                let names: Vec<&str> = view.fields.iter().map(|f| f.name.as_str()).collect();
                ApiError::not_found(format!(
                    "attributes[{i}]: `{a}`: view `{fv}` has no attribute `{name}` (it has {})",
                    names.join(", ")
                ))
            })?;
        if !keys.contains_key(view.entity.join_key()) {
            return Err(ApiError::unprocessable(format!(
                "entities: attribute `{a}` is keyed by `{}`, which the request does not give",
                view.entity.join_key()
            )));
        }
        let field_name = &view.fields[field].name;
        let column = if full {
            format!("{fv}__{field_name}")
        } else {
            field_name.clone()
        };
        if wanted.iter().any(|w| w.column == column) || keys.contains_key(&column) {
            return Err(ApiError::unprocessable(format!(
                "attributes[{i}]: `{a}`: the name `{column}` is asked for twice; set full_attribute_names to tell them apart"
            )));
        }
        wanted.push(Wanted {
            feast_name: fv.to_string(),
            field,
            column,
        });
    }
    Ok(wanted)
}

fn identifiers(key: &str, v: &Json_) -> ApiResult<Vec<Option<String>>> {
    let Json_::Array(items) = v else {
        return Err(ApiError::unprocessable(format!(
            "entities.{key}: expected a list of identifiers"
        )));
    };
    items
        .iter()
        .map(|i| match i {
            Json_::String(s) => Ok(Some(s.clone())),
            Json_::Number(n) => Ok(Some(n.to_string())),
            Json_::Null => Ok(None),
            other => Err(ApiError::unprocessable(format!(
                "entities.{key}: `{other}` is not an identifier (text or number)"
            ))),
        })
        .collect()
}

pub async fn get_online_attributes(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Json_>> {
    let body = json_body(body)?;
    let Json_::Object(req) = body else {
        return Err(ApiError::unprocessable(
            "request body: expected a JSON object",
        ));
    };
    if let Some(s) = req.get("service").filter(|s| !s.is_null()) {
        return Err(ApiError::unprocessable(format!(
            "service: {s} — services are not supported by this server; ask for `attributes` instead"
        )));
    }
    let mut keys: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for form in ["entities", "attribute_keys"] {
        match req.get(form) {
            None | Some(Json_::Null) => {}
            Some(Json_::Object(m)) => {
                for (k, v) in m {
                    keys.insert(k.clone(), identifiers(k, v)?);
                }
            }
            Some(_) => {
                return Err(ApiError::unprocessable(format!(
                    "{form}: expected an object such as {{\"domain_userid\": [\"abc-123\"]}}"
                )))
            }
        }
    }
    if keys.is_empty() {
        return Err(ApiError::unprocessable(
            "entities: required, e.g. {\"domain_userid\": [\"abc-123\"]} (or attribute_keys)",
        ));
    }
    let named: usize = keys.values().map(Vec::len).sum();
    if named > state.limits.max_entities {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "entities: {named} identifiers, more than the {} one request may name (api.max_entities); split the request",
                state.limits.max_entities
            ),
        ));
    }
    let rows = keys.values().next().map_or(0, Vec::len);
    if keys.values().any(|ids| ids.len() != rows) {
        return Err(ApiError::unprocessable(
            "entities: every list of identifiers must have the same length (one row each)",
        ));
    }
    let attributes: Vec<String> = match req.get("attributes") {
        Some(Json_::Array(a)) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::unprocessable(format!("attributes[{i}]: expected text"))
                })
            })
            .collect::<ApiResult<_>>()?,
        _ => return Err(ApiError::unprocessable(
            "attributes: required, a non-empty list such as [\"my_view_v1:TOTAL_TRANSACTIONS\"]",
        )),
    };
    let cells = rows.saturating_mul(attributes.len());
    if cells > state.limits.max_cells {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "attributes: {rows} entities x {} attributes = {cells} values, more than the {} one request may ask for (api.max_cells); split the request",
                attributes.len(),
                state.limits.max_cells
            ),
        ));
    }
    let full = req
        .get("full_attribute_names")
        .and_then(Json_::as_bool)
        .unwrap_or(false);

    let mut views = state.views.get(&state.store).await?;
    let wanted = match resolve(&views, &attributes, &keys, full) {
        Ok(wanted) => wanted,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            // The copy in memory may predate a view or attribute applied
            // elsewhere a moment ago: only the registry as of now may say
            // it does not exist.
            views = state.views.refresh(&state.store).await?;
            resolve(&views, &attributes, &keys, full)?
        }
        Err(e) => return Err(e),
    };

    // Each view once, for the distinct entities and only the attributes it
    // is asked for; all views in one read (one round trip per Redis node).
    let mut reads: Vec<Read<'_>> = Vec::new();
    for w in &wanted {
        let view = &views[&w.feast_name];
        match reads.iter_mut().find(|r| std::ptr::eq(r.view, view)) {
            Some(r) => r.fields.push(w.field),
            None => {
                let mut ids: Vec<&str> = keys[view.entity.join_key()]
                    .iter()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                reads.push(Read {
                    view,
                    fields: vec![w.field],
                    ids,
                });
            }
        }
    }
    for r in &mut reads {
        r.fields.sort_unstable();
        r.fields.dedup();
    }
    // A view narrowed to the attributes asked: Redis sends, and we decode,
    // only those (and the timestamp the ttl needs).
    let narrowed: Vec<Cow<'_, View>> = reads
        .iter()
        .map(|r| {
            if r.fields.len() == r.view.fields.len() {
                Cow::Borrowed(r.view)
            } else {
                Cow::Owned(View {
                    fields: r.fields.iter().map(|&f| r.view.fields[f].clone()).collect(),
                    ..r.view.clone()
                })
            }
        })
        .collect();
    let asked: Vec<(&View, &[&str])> = narrowed
        .iter()
        .zip(&reads)
        .map(|(v, r)| (v.as_ref(), &r.ids[..]))
        .collect();
    let found = state.store.read_views(&asked).await?;

    let mut out = Map::new();
    for (k, ids) in &keys {
        out.insert(k.clone(), Json_::from(ids.clone()));
    }
    for w in &wanted {
        let (r, profiles) = reads
            .iter()
            .zip(&found)
            .find(|(r, _)| r.view.feast_name() == w.feast_name)
            .expect("every wanted view is read");
        // Ascending in both the view and the narrowed view.
        let field = r.fields.binary_search(&w.field).expect("asked field");
        let column: Vec<Json_> = keys[r.view.entity.join_key()]
            .iter()
            .map(|id| {
                id.as_deref()
                    .and_then(|id| r.ids.binary_search(&id).ok())
                    .and_then(|at| profiles[at].as_ref())
                    .and_then(|p| p.values.get(field))
                    .map_or(Json_::Null, |(_, v)| v.clone())
            })
            .collect();
        out.insert(w.column.clone(), Json_::Array(column));
    }
    Ok(Json(Json_::Object(out)))
}
