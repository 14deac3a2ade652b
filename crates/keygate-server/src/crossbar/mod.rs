//! The Crossbar-compatible API, `/v2`: the Kazoo conventions that seeds 000 and 001 show, over
//! the same services as the native API. This module only adapts: envelopes in and out, the
//! Crossbar error shape, Crossbar paging. It owns no business rules.
//!
//! Every answer is `{"data": …, "status": "success"|"error", "request_id": …}` (plus
//! `auth_token` when a token was used), never an empty body. Errors carry the HTTP code as a
//! string: `{"error": "401", "message": "unauthorized", "status": "error", …}`, with
//! validation errors as `{field: {rule: message}}` under `data`.

pub mod accounts;
pub mod auth;
pub mod users;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::Principal;
use crate::http::ApiError;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(auth::api_auth))
        .routes(routes!(auth::user_auth))
        .routes(routes!(auth::token_info, auth::logout))
        .routes(routes!(accounts::get_account, accounts::update_account))
        .routes(routes!(accounts::get_api_key, accounts::recreate_api_key))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::replace_user,
            users::patch_user,
            users::delete_user
        ))
}

/// Whether a path belongs to this surface, so shared fallbacks answer in its shape.
pub fn owns(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

/// A successful answer.
pub struct Envelope {
    pub status: StatusCode,
    pub data: Value,
    pub auth_token: Option<String>,
    /// Top-level additions: paging keys.
    pub extra: Map<String, Value>,
}

impl Envelope {
    pub fn ok(data: impl Serialize, who: Option<&Principal>) -> Self {
        Envelope {
            status: StatusCode::OK,
            data: serde_json::to_value(data).unwrap_or(Value::Null),
            auth_token: who.and_then(|w| w.token.as_ref()).map(|t| t.raw.clone()),
            extra: Map::new(),
        }
    }

    pub fn created(mut self) -> Self {
        self.status = StatusCode::CREATED;
        self
    }
}

impl IntoResponse for Envelope {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        if let Some(token) = self.auth_token {
            body.insert("auth_token".into(), Value::String(token));
        }
        body.insert("data".into(), self.data);
        body.insert(
            "request_id".into(),
            json!(crate::http::request_id::current()),
        );
        body.insert("status".into(), json!("success"));
        (self.status, axum::Json(Value::Object(body))).into_response()
    }
}

/// An error in Crossbar's shape, made from the native one.
pub struct CbError(pub ApiError);

impl<E: Into<ApiError>> From<E> for CbError {
    fn from(e: E) -> Self {
        CbError(e.into())
    }
}

pub type CbResult = Result<Envelope, CbError>;

/// The short message Crossbar puts beside each code.
fn message_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 => "invalid data",
        401 => "unauthorized",
        402 => "insufficient credits",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        409 => "conflict",
        429 => "too many requests",
        _ => "internal server error",
    }
}

/// `{field: {rule: message}}` from a native validation error.
fn validation_data(details: &Value, message: &str) -> Value {
    let field = details["field"].as_str().unwrap_or("data");
    let reason = details["reason"].as_str().unwrap_or(message);
    let rule = if reason.starts_with("missing field") || reason.contains("is required") {
        "required"
    } else if reason.starts_with("invalid type") {
        "type"
    } else if reason.starts_with("unknown variant") || reason.starts_with("must be") {
        "enum"
    } else if reason.starts_with("unknown field") {
        "additionalProperties"
    } else {
        "invalid"
    };
    // serde names a missing field in the reason, not the path.
    let field = match (rule, reason.split('`').nth(1)) {
        ("required", Some(name)) if field == "data" || field == "body" => name,
        _ => field,
    };
    json!({ field: { rule: reason } })
}

impl IntoResponse for CbError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let data = match (&self.0, self.0.details()) {
            (ApiError::InvalidInput { .. }, Some(details)) => {
                validation_data(&details, &self.0.to_string())
            }
            (_, Some(mut details)) => {
                details["message"] = json!(self.0.public_message());
                details
            }
            (_, None) => json!({ "message": self.0.public_message() }),
        };
        let body = json!({
            "data": data,
            "error": status.as_u16().to_string(),
            "message": message_for(status),
            "status": "error",
            "request_id": crate::http::request_id::current(),
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.0.retry_after_secs() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Any native extractor, with its rejection in Crossbar's shape.
pub struct Cb<E>(pub E);

impl<E> FromRequestParts<AppState> for Cb<E>
where
    E: FromRequestParts<AppState, Rejection = ApiError>,
{
    type Rejection = CbError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, CbError> {
        E::from_request_parts(parts, state)
            .await
            .map(Cb)
            .map_err(CbError)
    }
}

/// A request body wrapped as Crossbar wants it: `{"data": {…}}`.
pub struct Data<T>(pub T);

#[derive(Deserialize)]
struct Wrapped<T> {
    data: T,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Data<T> {
    type Rejection = CbError;

    async fn from_request(req: Request, state: &S) -> Result<Self, CbError> {
        let crate::http::extract::Json(raw) =
            crate::http::extract::Json::<Value>::from_request(req, state).await?;
        if !raw.get("data").is_some_and(Value::is_object) {
            return Err(CbError(ApiError::InvalidInput {
                message: "wrap the request in {\"data\": {…}}".into(),
                details: Some(
                    json!({"field": "data", "reason": "is required: wrap the request in {\"data\": {…}}"}),
                ),
            }));
        }
        let wrapped: Wrapped<T> = crate::http::extract::parse_json(raw.to_string().as_bytes())
            .map_err(|e| match e {
                ApiError::InvalidInput {
                    message,
                    details: Some(mut d),
                } => {
                    if let Some(f) = d["field"].as_str() {
                        d["field"] = json!(f.strip_prefix("data.").unwrap_or(f));
                    }
                    CbError(ApiError::InvalidInput {
                        message,
                        details: Some(d),
                    })
                }
                other => CbError(other),
            })?;
        Ok(Data(wrapped.data))
    }
}

/// Crossbar paging parameters.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct CbPaging {
    /// Items per page (default 50, at most 100).
    pub page_size: Option<u32>,
    /// The `next_start_key` of the previous page.
    pub start_key: Option<String>,
    /// `false`: every item in one answer.
    pub paginate: Option<bool>,
}
