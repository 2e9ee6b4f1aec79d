//! `POST /api/v1/profiles/delete`: erasure of entities' profiles over HTTP.
//!
//! Promises: `{"entities": {"<join key>": ["value", ...]}, "view": "NAME[:VERSION]"}`
//! (`view` optional: every view of the entity without it) erases as
//! `materializer erase` does (see `registry::erase`) and answers 200 with
//! `{"removed", "entities", "erased_at", "view"}`. One join key per request,
//! at most `api.max_entities` values; a join key or view no registered view
//! matches is a 404, a malformed body a 422 naming the key.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value as Json_;

use super::{json_body, ApiError, ApiResult, Shared};

pub async fn delete_profiles(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Json_>> {
    let body = json_body(body)?;
    let Some(Json_::Object(entities)) = body.get("entities") else {
        return Err(ApiError::unprocessable(
            "entities: expected an object of one join key to a list of values",
        ));
    };
    let mut keys = entities.iter();
    let (Some((join_key, values)), None) = (keys.next(), keys.next()) else {
        return Err(ApiError::unprocessable(
            "entities: name exactly one join key per request",
        ));
    };
    let Json_::Array(items) = values else {
        return Err(ApiError::unprocessable(format!(
            "entities.{join_key}: expected a list of values"
        )));
    };
    let values = items
        .iter()
        .map(|v| match v {
            Json_::String(s) => Ok(s.clone()),
            Json_::Number(n) => Ok(n.to_string()),
            other => Err(ApiError::unprocessable(format!(
                "entities.{join_key}: `{other}` is not an identifier (text or number)"
            ))),
        })
        .collect::<ApiResult<Vec<String>>>()?;
    let limit = state.limits.max_entities;
    if values.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "entities.{join_key}: {} values; the limit is {limit} (api.max_entities)",
                values.len()
            ),
        ));
    }
    let view = match body.get("view") {
        None | Some(Json_::Null) => None,
        Some(Json_::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "view: expected NAME or NAME:VERSION",
            ))
        }
    };
    match crate::registry::erase(&state.store, join_key, &values, view).await? {
        Ok(e) => {
            tracing::info!(join_key = %join_key, entities = e.entities, removed = e.removed, view = ?e.view, "entities erased");
            Ok(Json(serde_json::to_value(e).map_err(anyhow::Error::from)?))
        }
        Err(why) => Err(ApiError::not_found(why)),
    }
}
